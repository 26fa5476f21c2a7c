/* tls_required.c - TLS demands per domain and sender.
 * Inbound: recipients in `domains` are refused with 530 5.7.0 unless the
 * client used STARTTLS (or implicit TLS).
 * Outbound: mail to `outbound_domains`, or from `outbound_senders`
 * ("user@dom" or "@dom"), is only delivered over TLS of `outbound_level`
 * (encrypt or verify); delivery defers rather than go out in plain text.
 *   tls_required.domains = secure.example, partner.example
 *   tls_required.outbound_domains = bank.example
 *   tls_required.outbound_senders = @legal.example, ceo@example.test
 *   tls_required.outbound_level = verify                (default encrypt) */
#include "postern_plugin.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ",a,b," lower-case lists, so ",x," is a whole-item search */
struct domains {
    char list[2048];            /* inbound: recipient domains */
    char out_domains[2048];     /* outbound: recipient domains */
    char out_senders[2048];     /* outbound: senders or @domains */
    char level[16];
};

static void add_list(char *list, size_t cap, const char *value)
{
    size_t o = strlen(list);
    if (o == 0)
        list[o++] = ',';
    for (const char *p = value; *p && o + 2 < cap; p++) {
        if (*p == ' ' || *p == '\t')
            continue;
        list[o++] = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
        if (*p == ',' && list[o - 2] == ',')
            o--;
    }
    if (list[o - 1] != ',')
        list[o++] = ',';
    list[o] = '\0';
}

static int in_list(const char *list, const char *item)
{
    char key[300];
    snprintf(key, sizeof key, ",%s,", item);
    for (char *p = key; *p; p++)
        *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    return strstr(list, key) != NULL;
}

static const struct postern_host *host;

static int init(const struct postern_host *h, const struct postern_option *opts, size_t n, void **state,
                char *err, size_t errlen)
{
    host = h;
    struct domains *d = calloc(1, sizeof *d);
    if (!d)
        return -1;
    snprintf(d->level, sizeof d->level, "encrypt");
    for (size_t i = 0; i < n; i++) {
        const char *k = opts[i].key, *v = opts[i].value;
        if (!strcmp(k, "domains"))
            add_list(d->list, sizeof d->list, v);
        else if (!strcmp(k, "outbound_domains"))
            add_list(d->out_domains, sizeof d->out_domains, v);
        else if (!strcmp(k, "outbound_senders"))
            add_list(d->out_senders, sizeof d->out_senders, v);
        else if (!strcmp(k, "outbound_level") && (!strcmp(v, "encrypt") || !strcmp(v, "verify")))
            snprintf(d->level, sizeof d->level, "%s", v);
        else {
            snprintf(err, errlen, "unknown option '%s = %s' (known: domains, outbound_domains, outbound_senders, "
                     "outbound_level = encrypt|verify)", k, v);
            free(d);
            return -1;
        }
    }
    *state = d;
    return 0;
}

static void fini(void *state) { free(state); }

static postern_verdict on_rcpt(postern_txn *t, const char *rcpt, void *state)
{
    const struct domains *d = state;
    const char *at = strrchr(rcpt, '@');
    if (!at || host->tls_active(t) || !in_list(d->list, at + 1))
        return POSTERN_CONTINUE;
    host->set_reply(t, "530 5.7.0 Must issue a STARTTLS command first (TLS required for this domain)");
    return POSTERN_REJECT;
}

/* Outbound: mark recipients whose copy must travel over TLS. */
static postern_verdict on_eom(postern_txn *t, void *state)
{
    const struct domains *d = state;
    const char *sender = host->sender(t), *sat = strrchr(sender, '@');
    int by_sender = in_list(d->out_senders, sender) || (sat && in_list(d->out_senders, sat));
    for (size_t i = 0; i < host->rcpt_count(t); i++) {
        const char *rcpt = host->rcpt(t, i), *at = strrchr(rcpt, '@');
        if (by_sender || (at && in_list(d->out_domains, at + 1))) {
            if (host->require_tls(t, rcpt, d->level) == 0)
                host->log(t, POSTERN_LOG_INFO, "tls_required: <%s> only over TLS (%s)", rcpt, d->level);
        }
    }
    return POSTERN_CONTINUE;
}

/* The options it takes (checked by posternd before init, documented in postern-plugins(5)). */
static const struct postern_option_spec options[] = {
    {"domains", POSTERN_OPT_TEXT, NULL, NULL, 0, "recipient domains that must have been received over TLS"},
    {"outbound_domains", POSTERN_OPT_TEXT, NULL, NULL, 0, "recipient domains that must be delivered over TLS"},
    {"outbound_senders", POSTERN_OPT_TEXT, NULL, NULL, 0, "senders whose mail must be delivered over TLS"},
    {"outbound_level", POSTERN_OPT_CHOICE, "encrypt|verify", "encrypt", 0, "the TLS level demanded outbound"},
    {NULL, 0, NULL, NULL, 0, NULL},
};

static const struct postern_plugin plugin = {
    .abi_version = POSTERN_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct postern_plugin),
    .name = "tls_required",
    .init = init,
    .fini = fini,
    .on_rcpt = on_rcpt,
    .on_eom = on_eom,
    .options = options,
};

const struct postern_plugin *postern_plugin_entry(void) { return &plugin; }
