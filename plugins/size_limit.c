/* size_limit.c - refuse messages over a size: at MAIL when the client
 * declares SIZE=, otherwise at the end of the message. (No BODY callback:
 * the answer waits for the end of DATA anyway, and posternd's own
 * message_size_limit already stops storing an oversized stream.)
 *   size_limit.max = 10M    (bytes; k, M, G suffixes)
 *   size_limit.reply = 552 5.3.4 Message too big for this domain   (optional) */
#include "postern_plugin.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct size_limit {
    uint64_t max;
    char reply[256];
};

static const struct postern_host *host;

static int parse_size(const char *v, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (end == v || errno || v[0] == '-')
        return -1;
    uint64_t mult = 1;
    switch (*end) {
    case '\0': break;
    case 'k': case 'K': mult = 1024; end++; break;
    case 'm': case 'M': mult = 1024 * 1024; end++; break;
    case 'g': case 'G': mult = 1024ULL * 1024 * 1024; end++; break;
    default: return -1;
    }
    if (*end)
        return -1;
    *out = n * mult;
    return 0;
}

static int init(const struct postern_host *h, const struct postern_option *opts, size_t n, void **state,
                char *err, size_t errlen)
{
    host = h;
    struct size_limit *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    snprintf(s->reply, sizeof s->reply, "552 5.3.4 Message size exceeds the limit of this gateway");
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(opts[i].key, "max")) {
            if (parse_size(opts[i].value, &s->max) < 0 || s->max == 0) {
                snprintf(err, errlen, "max: bad size '%s'", opts[i].value);
                free(s);
                return -1;
            }
        } else if (!strcmp(opts[i].key, "reply")) {
            snprintf(s->reply, sizeof s->reply, "%s", opts[i].value);
        } else {
            snprintf(err, errlen, "unknown option '%s' (known: max, reply)", opts[i].key);
            free(s);
            return -1;
        }
    }
    if (!s->max) {
        snprintf(err, errlen, "size_limit.max is required");
        free(s);
        return -1;
    }
    *state = s;
    return 0;
}

static void fini(void *state) { free(state); }

static postern_verdict refuse(postern_txn *t, const struct size_limit *s)
{
    host->set_reply(t, s->reply);
    return POSTERN_REJECT;
}

static postern_verdict on_mail(postern_txn *t, const char *sender, void *state)
{
    (void)sender;
    const struct size_limit *s = state;
    return host->declared_size(t) > s->max ? refuse(t, s) : POSTERN_CONTINUE;
}

static postern_verdict on_eom(postern_txn *t, void *state)
{
    const struct size_limit *s = state;
    return host->message_size(t) > s->max ? refuse(t, s) : POSTERN_CONTINUE;
}

/* The options it takes (checked by posternd before init, documented in postern-plugins(5)). */
static const struct postern_option_spec options[] = {
    {"max", POSTERN_OPT_TEXT, NULL, "", 0, "largest message, in bytes (`k`/`M`/`G`)"},
    {"reply", POSTERN_OPT_TEXT, NULL, "552 5.3.4 Message too big", 0, "the refusal's text"},
    {NULL, 0, NULL, NULL, 0, NULL},
};

static const struct postern_plugin plugin = {
    .abi_version = POSTERN_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct postern_plugin),
    .name = "size_limit",
    .init = init,
    .fini = fini,
    .on_mail = on_mail,
    .on_eom = on_eom,
    .options = options,
};

const struct postern_plugin *postern_plugin_entry(void) { return &plugin; }
