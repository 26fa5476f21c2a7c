/* tls_required.c - PLACEHOLDER until STARTTLS lands (the TLS issue).
 * Refuses recipients in the listed domains unless the session is under
 * TLS. posternd does not offer STARTTLS yet, so today those domains are
 * simply refused with 530 5.7.0; the policy is already in place for when
 * the TLS state becomes real.
 *   tls_required.domains = secure.example, partner.example */
#include "postern_plugin.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct domains {
    char list[2048];   /* ",dom1,dom2," lower-case */
};

static const struct postern_host *host;

static int init(const struct postern_host *h, const struct postern_option *opts, size_t n, void **state,
                char *err, size_t errlen)
{
    host = h;
    struct domains *d = calloc(1, sizeof *d);
    if (!d)
        return -1;
    size_t o = 0;
    d->list[o++] = ',';
    for (size_t i = 0; i < n; i++) {
        if (strcmp(opts[i].key, "domains")) {
            snprintf(err, errlen, "unknown option '%s' (known: domains)", opts[i].key);
            free(d);
            return -1;
        }
        for (const char *p = opts[i].value; *p && o + 2 < sizeof d->list; p++)
            if (*p != ' ' && *p != '\t')
                d->list[o++] = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
        d->list[o++] = ',';
    }
    d->list[o] = '\0';
    *state = d;
    return 0;
}

static void fini(void *state) { free(state); }

static postern_verdict on_rcpt(postern_txn *t, const char *rcpt, void *state)
{
    const struct domains *d = state;
    const char *at = strrchr(rcpt, '@');
    if (!at || host->tls_active(t))
        return POSTERN_CONTINUE;
    char key[300];
    snprintf(key, sizeof key, ",%s,", at + 1);
    for (char *p = key; *p; p++)
        *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    if (!strstr(d->list, key))
        return POSTERN_CONTINUE;
    host->set_reply(t, "530 5.7.0 Must issue a STARTTLS command first (TLS required for this domain)");
    return POSTERN_REJECT;
}

static const struct postern_plugin plugin = {
    .abi_version = POSTERN_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct postern_plugin),
    .name = "tls_required",
    .init = init,
    .fini = fini,
    .on_rcpt = on_rcpt,
};

const struct postern_plugin *postern_plugin_entry(void) { return &plugin; }
