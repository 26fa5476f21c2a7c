/* dkim_verify.c - DKIM verification (RFC 6376) with libopendkim, streamed:
 * the header section goes in at DATA, each body chunk at BODY, and the
 * signatures are checked at EOM; the message is never held in memory.
 * Keys are fetched through posternd's resolver (host->dns_query).
 *
 * DATA and EOM are loop_first stages: with the key in posternd's DNS cache
 * (the usual case for mail from a signer seen before) they run on the loop
 * and cost no thread hand-off; otherwise the stage is called again on a
 * worker (libopendkim fetches keys at the end of the headers, and at EOM
 * only for a signature it could not process then). A message with more
 * than LOOP_MAX_SIGNATURES signatures goes to a worker anyway: checking
 * them is too much work for the loop, which serves every session.
 *
 * Options (continue | reject | tempfail | quarantine):
 *   dkim_verify.fail = continue       no signature passed, at least one failed
 *   dkim_verify.temperror = continue  a key lookup failed temporarily
 *   dkim_verify.max_signatures = 5    signatures checked per message (the
 *       first ones in the header; the rest are ignored, as OpenDKIM's
 *       MaximumSignaturesToVerify does), 1-50
 * (DMARC is usually the one to act; see the dmarc plugin.)
 *
 * Sets for later links: dkim.result (pass if any signature passed, else the
 * first signature's result, none without signatures), dkim.signatures
 * ("RESULT:DOMAIN:SELECTOR ..." one per signature, in order), and
 * authres.dkim (one "dkim=..." per signature, joined by "; ").
 */
#include "postern_plugin.h"
#include "plugin_util.h"
#include <opendkim/dkim.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOOP_MAX_SIGNATURES 2

struct dkimv {
    DKIM_LIB *lib;
    enum action on_fail, on_temperror;
    int max_signatures;
};

static const struct postern_host *host;

/* ---- libopendkim's DNS hooks on host->dns_query (synchronous) ---- */

struct query {
    int len;    /* reply length, -1 without a reply */
};

static int dns_start(void *srv, int type, unsigned char *name, unsigned char *buf, size_t buflen, void **qh)
{
    (void)srv;
    struct query *q = malloc(sizeof *q);
    if (!q)
        return DKIM_DNS_ERROR;
    q->len = host->dns_query(NULL, (const char *)name, type, buf, buflen);
    *qh = q;
    return DKIM_DNS_SUCCESS;
}

static int dns_wait(void *srv, void *qh, struct timeval *timeout, size_t *bytes, int *error, int *dnssec)
{
    (void)srv;
    (void)timeout;
    struct query *q = qh;
    if (dnssec)
        *dnssec = DKIM_DNSSEC_UNKNOWN;
    if (q->len < 0) {
        if (error)
            *error = 1;
        return DKIM_DNS_ERROR;
    }
    *bytes = (size_t)q->len;
    if (error)
        *error = 0;
    return DKIM_DNS_SUCCESS;
}

static int dns_cancel(void *srv, void *qh)
{
    (void)srv;
    free(qh);
    return DKIM_DNS_SUCCESS;
}

static int dns_init(void **srv)
{
    static int token;
    *srv = &token;
    return 0;
}

static void dns_close(void *srv) { (void)srv; }

/* Ignores the signatures past max_signatures (called at the end of the
 * headers, before any is processed). */
static DKIM_CBSTAT prescreen(DKIM *d, DKIM_SIGINFO **sigs, int nsigs)
{
    const struct dkimv *s = dkim_get_user_context(d);
    for (int i = s ? s->max_signatures : nsigs; i < nsigs; i++)
        dkim_sig_ignore(sigs[i]);
    return DKIM_CBSTAT_CONTINUE;
}

/* ---- the plugin ---- */

static int option(struct dkimv *s, const struct postern_option *o, char *err, size_t errlen)
{
    if (!strcmp(o->key, "max_signatures")) {
        char *end;
        long v = strtol(o->value, &end, 10);
        if (*end || end == o->value || v < 1 || v > 50) {
            snprintf(err, errlen, "max_signatures: a number from 1 to 50, not '%s'", o->value);
            return -1;
        }
        s->max_signatures = (int)v;
        return 0;
    }
    enum action *a = !strcmp(o->key, "fail") ? &s->on_fail : !strcmp(o->key, "temperror") ? &s->on_temperror : NULL;
    if (!a || parse_action(o->value, a) < 0) {
        snprintf(err, errlen, a ? "%s: the action is continue, reject, tempfail or quarantine"
                                : "unknown option '%s' (known: fail, temperror, max_signatures)", o->key);
        return -1;
    }
    return 0;
}

static int init(const struct postern_host *h, const struct postern_option *opts, size_t n, void **state,
                char *err, size_t errlen)
{
    host = h;
    if (POSTERN_HOST_REQUIRE(h, hostname, err, errlen) < 0)
        return -1;
    struct dkimv *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    s->max_signatures = 5;
    for (size_t i = 0; i < n; i++) {
        if (option(s, &opts[i], err, errlen) < 0) {
            free(s);
            return -1;
        }
    }
    s->lib = dkim_init(NULL, NULL);
    if (!s->lib) {
        snprintf(err, errlen, "dkim_init failed");
        free(s);
        return -1;
    }
    dkim_dns_set_init(s->lib, dns_init);
    dkim_dns_set_close(s->lib, dns_close);
    dkim_dns_set_query_start(s->lib, dns_start);
    dkim_dns_set_query_waitreply(s->lib, dns_wait);
    dkim_dns_set_query_cancel(s->lib, dns_cancel);
    dkim_set_prescreen(s->lib, prescreen);
    *state = s;
    return 0;
}

static void fini(void *state)
{
    struct dkimv *s = state;
    dkim_close(s->lib);
    free(s);
}

static void release(void *d) { dkim_free(d); }

/* Whether the message has more signatures than the loop should check. */
static bool many_signatures(postern_txn *t)
{
    return host->header_get(t, "DKIM-Signature", LOOP_MAX_SIGNATURES) != NULL;
}

/* Feeds "Name:value" for every header, then the end of the header section. */
static postern_verdict on_data(postern_txn *t, void *state)
{
    struct dkimv *s = state;
    if (POSTERN_HOST_HAS(host, defer_to_worker) && many_signatures(t) &&
        host->defer_to_worker(t) == POSTERN_WOULDBLOCK)
        return POSTERN_CONTINUE;     /* posternd calls again on a worker */
    DKIM_STAT st;
    DKIM *d = dkim_verify(s->lib, (const unsigned char *)host->queue_id(t), NULL, &st);
    if (!d) {
        host->log(t, POSTERN_LOG_ERROR, "dkim_verify: cannot start: %s", dkim_getresultstr(st));
        return POSTERN_ERROR;
    }
    host->data_set(t, s, d, release);
    dkim_set_user_context(d, s);
    char line[16384];
    const char *name, *value;
    for (size_t i = 0; host->header_at(t, i, &name, &value) == 0; i++) {
        size_t n = strlen(name), v = strlen(value);
        if (n + 1 + v > sizeof line)
            continue;       /* longer than libopendkim takes (and than we keep) */
        memcpy(line, name, n);
        line[n] = ':';
        memcpy(line + n + 1, value, v);
        dkim_header(d, (unsigned char *)line, n + 1 + v);
    }
    /* a key lookup that would have blocked on the loop fails here; posternd
     * then discards this call and makes it again on a worker, with a new
     * handle (nothing else is changed before EOM) */
    if (dkim_eoh(d) == DKIM_STAT_NOSIG)
        host->data_set(t, s, NULL, NULL);    /* nothing to verify: say none at EOM */
    return POSTERN_CONTINUE;
}

static postern_verdict on_body(postern_txn *t, const char *chunk, size_t len, void *state)
{
    DKIM *d = host->data_get(t, state);
    if (d)
        dkim_body(d, (unsigned char *)chunk, len);
    return POSTERN_CONTINUE;
}

/* RFC 8601 result of one signature, and a short reason for the comment. */
static const char *sig_result(DKIM_SIGINFO *sig, const char **why)
{
    unsigned flags = dkim_sig_getflags(sig);
    int err = dkim_sig_geterror(sig);
    *why = NULL;
    if ((flags & DKIM_SIGFLAG_PASSED) && dkim_sig_getbh(sig) == DKIM_SIGBH_MATCH)
        return "pass";
    if (err == DKIM_SIGERROR_KEYFAIL) {
        *why = "key lookup failed";
        return "temperror";
    }
    if (dkim_sig_getbh(sig) == DKIM_SIGBH_MISMATCH) {
        *why = "body hash mismatch";
        return "fail";
    }
    *why = err == DKIM_SIGERROR_OK ? "signature mismatch" : dkim_sig_geterrorstr(err);
    if (err == DKIM_SIGERROR_OK || err == DKIM_SIGERROR_BADSIG)
        return "fail";
    return "permerror";
}

static void publish(postern_txn *t, DKIM *d)
{
    DKIM_SIGINFO **sigs = NULL;
    int nsigs = 0;
    char sigvar[2048] = "", ar[4096] = "";
    const char *best = "none";
    size_t sv = 0, an = 0;
    int ignored = 0, counted = 0;
    if (d && dkim_getsiglist(d, &sigs, &nsigs) == DKIM_STAT_OK) {
        for (int i = 0; i < nsigs; i++) {
            if (dkim_sig_getflags(sigs[i]) & DKIM_SIGFLAG_IGNORE) {
                ignored++;        /* past max_signatures */
                continue;
            }
            const char *why, *r = sig_result(sigs[i], &why);
            const char *dom = (const char *)dkim_sig_getdomain(sigs[i]);
            const char *sel = (const char *)dkim_sig_getselector(sigs[i]);
            dom = dom ? dom : "";
            sel = sel ? sel : "";
            if (!counted++ || !strcmp(r, "pass"))
                best = !strcmp(best, "pass") ? best : r;
            if (sv < sizeof sigvar)
                sv += (size_t)snprintf(sigvar + sv, sizeof sigvar - sv, "%s%s:%s:%s", sv ? " " : "", r, dom, sel);
            if (an < sizeof ar)
                an += (size_t)snprintf(ar + an, sizeof ar - an, "%sdkim=%s%s%s%s header.d=%s header.s=%s",
                                       an ? "; " : "", r, why ? " (" : "", why ? why : "", why ? ")" : "", dom, sel);
        }
    }
    if (!an)
        snprintf(ar, sizeof ar, "dkim=none");
    host->var_set(t, "dkim.result", best);
    host->var_set(t, "dkim.signatures", sigvar);
    host->var_set(t, "authres.dkim", ar);
    char more[64] = "";
    if (ignored)
        snprintf(more, sizeof more, ", %d more ignored (max_signatures)", ignored);
    host->log(t, POSTERN_LOG_INFO, "dkim_verify: %s (%s)%s", best, sigvar[0] ? sigvar : "no signature", more);
}

static postern_verdict dkim_act(postern_txn *t, enum action a, const char *result)
{
    char rej[200], tmp[200], why[100];
    snprintf(rej, sizeof rej, "550 5.7.20 No passing DKIM signature (dkim=%s)", result);
    snprintf(tmp, sizeof tmp, "451 4.7.5 DKIM key lookup failed, try again later (dkim=%s)", result);
    snprintf(why, sizeof why, "DKIM %s", result);
    return act(host, t, a, rej, tmp, why);
}

/* Whether the key of every signature libopendkim has yet to process (it
 * fetches them in dkim_eom) is at hand: asked here first, so that on the
 * loop a key not cached yet sends EOM to a worker before dkim_eom runs
 * (which cannot be run twice). On a worker this fills the cache. */
static bool keys_at_hand(DKIM *d)
{
    DKIM_SIGINFO **sigs = NULL;
    int nsigs = 0;
    if (dkim_getsiglist(d, &sigs, &nsigs) != DKIM_STAT_OK)
        return true;
    for (int i = 0; i < nsigs; i++) {
        if ((dkim_sig_getflags(sigs[i]) & (DKIM_SIGFLAG_PROCESSED | DKIM_SIGFLAG_IGNORE)) ||
            dkim_sig_geterror(sigs[i]) != DKIM_SIGERROR_UNKNOWN)
            continue;
        const char *dom = (const char *)dkim_sig_getdomain(sigs[i]);
        const char *sel = (const char *)dkim_sig_getselector(sigs[i]);
        char name[600];
        static __thread unsigned char answer[16384];
        if (dom && sel && snprintf(name, sizeof name, "%s._domainkey.%s", sel, dom) < (int)sizeof name &&
            host->dns_query(NULL, name, 16 /* TXT */, answer, sizeof answer) == POSTERN_WOULDBLOCK)
            return false;
    }
    return true;
}

static postern_verdict on_eom(postern_txn *t, void *state)
{
    struct dkimv *s = state;
    DKIM *d = host->data_get(t, s);
    if (d && !keys_at_hand(d))
        return POSTERN_CONTINUE;     /* posternd calls again on a worker */
    if (d)
        dkim_eom(d, NULL);   /* per-signature results come from the list */
    publish(t, d);
    const char *r = host->var_get(t, "dkim.result");
    if (!strcmp(r, "fail") || !strcmp(r, "permerror"))
        return dkim_act(t, s->on_fail, r);
    if (!strcmp(r, "temperror"))
        return dkim_act(t, s->on_temperror, r);
    return POSTERN_CONTINUE;
}

/* The options it takes (checked by posternd before init, documented in postern-plugins(5)). */
static const struct postern_option_spec options[] = {
    {"fail", POSTERN_OPT_CHOICE, "continue|reject|tempfail|quarantine", "continue", 0, "the action when a signature fails"},
    {"temperror", POSTERN_OPT_CHOICE, "continue|reject|tempfail|quarantine", "continue", 0, "the action when a key cannot be fetched"},
    {"max_signatures", POSTERN_OPT_NUMBER, NULL, "5", 0, "signatures checked per message (1–50); the rest are ignored"},
    {NULL, 0, NULL, NULL, 0, NULL},
};

static const struct postern_plugin plugin = {
    .abi_version = POSTERN_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct postern_plugin),
    .name = "dkim_verify",
    .init = init,
    .fini = fini,
    .on_data = on_data,
    .on_body = on_body,
    .on_eom = on_eom,
    /* the body is only hashed; at the end of the headers libopendkim
     * fetches the key (DNS) and checks the header signature */
    .nonblocking_stages = POSTERN_NONBLOCKING(POSTERN_STAGE_BODY),
    .loop_first_stages = POSTERN_LOOP_FIRST(POSTERN_STAGE_DATA) | POSTERN_LOOP_FIRST(POSTERN_STAGE_EOM),
    .options = options,
};

const struct postern_plugin *postern_plugin_entry(void) { return &plugin; }
