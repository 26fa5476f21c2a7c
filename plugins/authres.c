/* authres.c - the one Authentication-Results header (RFC 8601).
 * At DATA it removes incoming Authentication-Results headers that claim our
 * authserv-id (a sender must not be able to forge our verdicts); at EOM it
 * adds one header built from the method results earlier links left in
 * tx.vars: authres.iprev, authres.spf, authres.dkim, authres.dmarc, in that order (a Lua
 * script may set them too).
 *
 *   authres.authserv_id = mx.example.com   (default: posternd's hostname)
 *
 * Chain: spf, dkim_verify, dmarc, authres, ... (dkim_verify must see the
 * header section before authres removes anything).
 */
#include "postern_plugin.h"
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct authres {
    char id[256];
};

static const struct postern_host *host;

static int init(const struct postern_host *h, const struct postern_option *opts, size_t n, void **state,
                char *err, size_t errlen)
{
    host = h;
    if (POSTERN_HOST_REQUIRE(h, hostname, err, errlen) < 0)
        return -1;
    struct authres *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    snprintf(s->id, sizeof s->id, "%s", h->hostname());
    for (size_t i = 0; i < n; i++) {
        if (strcmp(opts[i].key, "authserv_id") || !opts[i].value[0] || strpbrk(opts[i].value, " \t;")) {
            snprintf(err, errlen, "bad option '%s' (known: authserv_id = a host name)", opts[i].key);
            free(s);
            return -1;
        }
        snprintf(s->id, sizeof s->id, "%s", opts[i].value);
    }
    *state = s;
    return 0;
}

static void fini(void *state) { free(state); }

/* The authserv-id of a header value: the first token, up to ';' or space,
 * after any leading whitespace and (comments). */
static int claims_id(const char *value, const char *id)
{
    const char *p = value;
    for (;;) {
        while (isspace((unsigned char)*p))
            p++;
        if (*p != '(')
            break;
        const char *close = strchr(p, ')');
        if (!close)
            return 0;
        p = close + 1;
    }
    size_t n = strcspn(p, " \t\r\n;(");
    return n == strlen(id) && !strncasecmp(p, id, n);
}

static postern_verdict on_data(postern_txn *t, void *state)
{
    struct authres *s = state;
    for (size_t nth = 0; host->header_get(t, "Authentication-Results", nth);) {
        if (claims_id(host->header_get(t, "Authentication-Results", nth), s->id)) {
            host->log(t, POSTERN_LOG_INFO, "authres: removed an incoming Authentication-Results claiming %s", s->id);
            host->header_delete(t, "Authentication-Results", nth);
        } else {
            nth++;
        }
    }
    return POSTERN_CONTINUE;
}

static postern_verdict on_eom(postern_txn *t, void *state)
{
    struct authres *s = state;
    static const char *methods[] = {"authres.iprev", "authres.spf", "authres.dkim", "authres.dmarc"};
    char value[8192];
    size_t n = (size_t)snprintf(value, sizeof value, " %s", s->id);
    int any = 0;
    for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
        const char *m = host->var_get(t, methods[i]);
        if (m && m[0] && n < sizeof value) {
            n += (size_t)snprintf(value + n, sizeof value - n, ";\r\n\t%s", m);
            any = 1;
        }
    }
    const char *user = POSTERN_HOST_HAS(host, auth_user) ? host->auth_user(t) : NULL;
    if (user && n < sizeof value) {
        /* RFC 8601 2.7.4: the SMTP AUTH identity (a token, or quoted) */
        bool token = strspn(user, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@._+-") == strlen(user);
        char quoted[600];
        size_t q = 0;
        for (const char *p = user; *p && q + 3 < sizeof quoted; p++) {
            if (*p == '"' || *p == '\\')
                quoted[q++] = '\\';
            quoted[q++] = (unsigned char)*p < 0x20 ? ' ' : *p;
        }
        quoted[q] = '\0';
        n += (size_t)snprintf(value + n, sizeof value - n, token ? ";\r\n\tauth=pass smtp.auth=%s" :
                              ";\r\n\tauth=pass smtp.auth=\"%s\"", token ? user : quoted);
        any = 1;
    }
    if (!any && n < sizeof value)
        snprintf(value + n, sizeof value - n, "; none");
    return host->header_insert(t, 0, "Authentication-Results", value) == 0 ? POSTERN_CONTINUE : POSTERN_ERROR;
}

/* The options it takes (checked by posternd before init, documented in postern-plugins(5)). */
static const struct postern_option_spec options[] = {
    {"authserv_id", POSTERN_OPT_TEXT, NULL, "hostname", 0, "the authserv-id of our Authentication-Results"},
    {NULL, 0, NULL, NULL, 0, NULL},
};

static const struct postern_plugin plugin = {
    .abi_version = POSTERN_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct postern_plugin),
    .name = "authres",
    .init = init,
    .fini = fini,
    .on_data = on_data,
    .on_eom = on_eom,
    .nonblocking_stages = POSTERN_NONBLOCKING(POSTERN_STAGE_DATA) | POSTERN_NONBLOCKING(POSTERN_STAGE_EOM),
    .options = options,
};

const struct postern_plugin *postern_plugin_entry(void) { return &plugin; }
