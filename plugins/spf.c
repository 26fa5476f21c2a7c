/* spf.c - SPF (RFC 7208) with libspf2 at MAIL FROM: checks the MAIL FROM
 * domain, or the HELO name for the null sender, for the client address.
 * Every DNS query goes through posternd's resolver (host->dns_query) via a
 * libspf2 DNS layer of our own, so lab zones and dns_server apply.
 *
 * Options (each result's action: continue | reject | tempfail | quarantine):
 *   spf.fail = reject        spf.softfail = continue   spf.neutral = continue
 *   spf.none = continue      spf.pass = continue
 *   spf.temperror = tempfail spf.permerror = continue
 * A Lua handler (or plugin) earlier in the chain may set tx.vars["spf.action"]
 * to one of those words: it replaces the configured action for this message.
 *
 * Sets for later links (tx.vars in Lua): spf.result, spf.domain,
 * spf.identity ("mailfrom" or "helo"), spf.comment, and authres.spf (the
 * method's part of the Authentication-Results header).
 */
#include "postern_plugin.h"
#include "dns_records.h"
#include "plugin_util.h"
#include <spf2/spf.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *result_names[] = {"invalid", "neutral", "pass", "fail", "softfail", "none", "temperror",
                                     "permerror"};
#define NRESULTS (sizeof result_names / sizeof *result_names)

struct spf {
    SPF_server_t *server;
    SPF_dns_server_t *layer;       /* ours: SPF_server_new_dns() does not take it over */
    enum action action[NRESULTS];
};

static const struct postern_host *host;

/* ---- a libspf2 DNS layer on top of host->dns_query ---- */

/* Copies one record's data into rr->rr[idx] in libspf2's form. */
static int store_record(SPF_dns_rr_t *spfrr, int idx, struct dns_answer *a, int nth)
{
    ns_rr rr;
    if (dns_record(a, nth, &rr) < 0)
        return -1;
    const unsigned char *d = ns_rr_rdata(rr);
    char name[NS_MAXDNAME];
    switch (a->type) {
    case ns_t_a:
        if (ns_rr_rdlen(rr) != 4 || SPF_dns_rr_buf_realloc(spfrr, idx, sizeof(struct in_addr)))
            return -1;
        memcpy(&spfrr->rr[idx]->a, d, 4);
        return 0;
    case ns_t_aaaa:
        if (ns_rr_rdlen(rr) != 16 || SPF_dns_rr_buf_realloc(spfrr, idx, sizeof(struct in6_addr)))
            return -1;
        memcpy(&spfrr->rr[idx]->aaaa, d, 16);
        return 0;
    case ns_t_mx:
    case ns_t_ptr: {
        const unsigned char *nm = a->type == ns_t_mx ? d + 2 : d;
        if (ns_name_uncompress(ns_msg_base(a->msg), ns_msg_end(a->msg), nm, name, sizeof name) < 0)
            return -1;
        size_t n = strlen(name) + 1;
        if (SPF_dns_rr_buf_realloc(spfrr, idx, n))
            return -1;
        memcpy(spfrr->rr[idx]->ptr, name, n);
        return 0;
    }
    default: { /* TXT (and the old SPF type) */
        static __thread char txt[4096], spaced[8192];
        int n = dns_txt(a, nth, txt, sizeof txt);
        if (n < 0)
            return -1;
        /* A TXT that is not an SPF record is an explanation (exp=). libspf2
         * mangles its literal spaces (they come out as '%' and stop the
         * macro expansion); "%_" is the same space as a macro (RFC 7208 7.1). */
        if (strncasecmp(txt, "v=spf1", 6)) {
            size_t o = 0;
            for (int i = 0; i < n && o + 3 < sizeof spaced; i++) {
                if (txt[i] == ' ') {
                    spaced[o++] = '%';
                    spaced[o++] = '_';
                } else {
                    spaced[o++] = txt[i];
                }
            }
            spaced[o] = '\0';
            memcpy(txt, spaced, o + 1 < sizeof txt ? o + 1 : sizeof txt);
            txt[sizeof txt - 1] = '\0';
            n = (int)strlen(txt);
        }
        if (SPF_dns_rr_buf_realloc(spfrr, idx, (size_t)n + 1))
            return -1;
        memcpy(spfrr->rr[idx]->txt, txt, (size_t)n + 1);
        return 0;
    }
    }
}

/* libspf2 reports a DNS failure while fetching a record as permerror or
 * none; RFC 7208 4.4 and 5 say temperror. The layer notes failures here,
 * and answers that are not cached yet while on posternd's loop (MAIL is a
 * loop_first stage: on_mail then returns and is called again on a worker). */
static __thread bool dns_failed, dns_would_block;

static SPF_dns_rr_t *layer_lookup(SPF_dns_server_t *layer, const char *domain, ns_type type, int should_cache)
{
    (void)should_cache;
    struct dns_answer *a = malloc(sizeof *a);
    if (!a)
        return SPF_dns_rr_new_init(layer, domain, type, 0, TRY_AGAIN);
    static const SPF_dns_stat_t herrno_of[] = {[DNS_OK] = NETDB_SUCCESS, [DNS_NXDOMAIN] = HOST_NOT_FOUND,
                                               [DNS_NODATA] = NO_DATA, [DNS_TEMPFAIL] = TRY_AGAIN,
                                               [DNS_WOULDBLOCK] = TRY_AGAIN};
    enum dns_status st = dns_would_block ? DNS_WOULDBLOCK : dns_lookup(host, domain, type, a);
    dns_failed |= st == DNS_TEMPFAIL;
    dns_would_block |= st == DNS_WOULDBLOCK;
    SPF_dns_rr_t *spfrr = SPF_dns_rr_new_init(layer, domain, type, st == DNS_OK ? (int)a->ttl : 0, herrno_of[st]);
    int n = 0;
    for (int i = 0; spfrr && st == DNS_OK && i < a->count; i++)
        if (store_record(spfrr, n, a, i) == 0)
            n++;
    if (spfrr)
        spfrr->num_rr = n;
    free(a);
    return spfrr;
}

static SPF_dns_server_t *layer_new(void)
{
    SPF_dns_server_t *l = calloc(1, sizeof *l);
    if (l) {
        l->lookup = layer_lookup;
        l->name = "postern";
    }
    return l;
}

/* ---- the plugin ---- */

static int init(const struct postern_host *h, const struct postern_option *opts, size_t n, void **state,
                char *err, size_t errlen)
{
    host = h;
    if (POSTERN_HOST_REQUIRE(h, hostname, err, errlen) < 0)
        return -1;
    struct spf *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    s->action[SPF_RESULT_FAIL] = ACT_REJECT;
    s->action[SPF_RESULT_TEMPERROR] = ACT_TEMPFAIL;
    for (size_t i = 0; i < n; i++) {
        size_t r = 1;
        while (r < NRESULTS && strcmp(opts[i].key, result_names[r]))
            r++;
        if (r == NRESULTS || parse_action(opts[i].value, &s->action[r]) < 0) {
            snprintf(err, errlen, r == NRESULTS ? "unknown option '%s' (known: pass fail softfail neutral none "
                                                  "temperror permerror)"
                                                : "%s: the action is continue, reject, tempfail or quarantine",
                     opts[i].key);
            free(s);
            return -1;
        }
    }
    s->layer = layer_new();
    s->server = s->layer ? SPF_server_new_dns(s->layer, 0) : NULL;
    if (!s->server) {
        snprintf(err, errlen, "cannot create the libspf2 server");
        free(s->layer);
        free(s);
        return -1;
    }
    SPF_server_set_rec_dom(s->server, h->hostname());
    /* no default explanation: only a domain's own exp= goes into the reply */
    SPF_response_t *spf_resp = NULL;
    SPF_server_set_explanation(s->server, "", &spf_resp);
    SPF_response_free(spf_resp);
    *state = s;
    return 0;
}

static void fini(void *state)
{
    struct spf *s = state;
    SPF_server_free(s->server);
    free(s->layer);
    free(s);
}

/* Runs the check; fills comment and the explanation (exp=, expanded by
 * libspf2; "" when the record has none). */
static SPF_result_t check(struct spf *s, postern_txn *t, const char *identity, char *comment, size_t clen,
                          char *exp, size_t explen)
{
    SPF_request_t *req = SPF_request_new(s->server);
    if (!req)
        return SPF_RESULT_TEMPERROR;
    char client[64];
    const char *ip = dns_unmapped_ip(host->client_addr(t), client);
    SPF_errcode_t e = strchr(ip, ':') ? SPF_request_set_ipv6_str(req, ip) : SPF_request_set_ipv4_str(req, ip);
    const char *helo = host->helo_name(t);
    if (helo[0])
        SPF_request_set_helo_dom(req, helo);
    SPF_result_t r = SPF_RESULT_PERMERROR;
    SPF_response_t *resp = NULL;
    dns_failed = dns_would_block = false;
    if (e == SPF_E_SUCCESS && SPF_request_set_env_from(req, identity) == 0) {
        SPF_request_query_mailfrom(req, &resp);
        if (resp) {
            r = SPF_response_result(resp);
            const char *c = SPF_response_get_header_comment(resp);
            snprintf(comment, clen, "%s", c ? c : "");
            const char *x = r == SPF_RESULT_FAIL ? SPF_response_get_explanation(resp) : NULL;
            snprintf(exp, explen, "%s", x ? x : "");
            for (char *p = exp; *p; p++)         /* it goes into a reply line */
                if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
                    *p = '?';
        }
    } else {
        snprintf(comment, clen, "cannot evaluate %.200s from %.60s", identity, ip);
    }
    SPF_response_free(resp);
    SPF_request_free(req);
    if (dns_failed && (r == SPF_RESULT_INVALID || r == SPF_RESULT_PERMERROR || r == SPF_RESULT_NONE)) {
        r = SPF_RESULT_TEMPERROR;
        snprintf(comment, clen, "DNS lookup failed while evaluating %.200s", identity);
    }
    return r >= SPF_RESULT_NEUTRAL && r <= SPF_RESULT_PERMERROR ? r : SPF_RESULT_PERMERROR;
}

static void publish(postern_txn *t, const char *result, const char *domain, bool helo, const char *identity,
                    const char *comment)
{
    host->var_set(t, "spf.result", result);
    host->var_set(t, "spf.domain", domain);
    host->var_set(t, "spf.identity", helo ? "helo" : "mailfrom");
    host->var_set(t, "spf.comment", comment);
    char ar[1100];
    snprintf(ar, sizeof ar, "spf=%s smtp.%s=%s", result, helo ? "helo" : "mailfrom", helo ? domain : identity);
    host->var_set(t, "authres.spf", ar);
}

static postern_verdict spf_act(postern_txn *t, enum action a, SPF_result_t r, const char *domain, const char *exp)
{
    char rej[400], tmp[400], why[300];
    if (exp[0])       /* RFC 7208 6.2: the domain's own explanation */
        snprintf(rej, sizeof rej, "550 5.7.23 SPF %s for %.100s: %.250s", result_names[r], domain, exp);
    else
        snprintf(rej, sizeof rej, "550 5.7.23 SPF %s for %.200s: sender not authorized from %s", result_names[r],
                 domain, host->client_addr(t));
    snprintf(tmp, sizeof tmp, "451 4.7.24 SPF %s for %.200s, try again later", result_names[r], domain);
    snprintf(why, sizeof why, "SPF %s for %.200s", result_names[r], domain);
    return act(host, t, a, rej, tmp, why);
}

static postern_verdict on_mail(postern_txn *t, const char *sender, void *state)
{
    struct spf *s = state;
    const char *helo = host->helo_name(t);
    bool use_helo = !sender[0];
    if (use_helo && !helo[0])
        return POSTERN_CONTINUE;   /* nothing to check: no HELO and <> */
    char identity[512], comment[400] = "", exp[300] = "";
    snprintf(identity, sizeof identity, use_helo ? "postmaster@%.480s" : "%.500s", use_helo ? helo : sender);
    const char *at = strrchr(identity, '@');
    const char *domain = at ? at + 1 : identity;
    SPF_result_t r = check(s, t, identity, comment, sizeof comment, exp, sizeof exp);
    if (dns_would_block)
        return POSTERN_CONTINUE;     /* posternd calls again on a worker */
    publish(t, result_names[r], domain, use_helo, identity, comment);
    host->var_set(t, "spf.explanation", exp);
    host->log(t, POSTERN_LOG_INFO, "spf: %s for %s=%s from %s (%s)", result_names[r], use_helo ? "helo" : "mailfrom",
              domain, host->client_addr(t), comment);
    enum action a = s->action[r];
    const char *override = host->var_get(t, "spf.action");
    if (override && parse_action(override, &a) < 0)
        host->log(t, POSTERN_LOG_WARN, "spf: ignoring spf.action '%s' (continue, reject, tempfail, quarantine)",
                  override);
    return spf_act(t, a, r, domain, exp);
}

/* The options it takes (checked by posternd before init, documented in postern-plugins(5)). */
static const struct postern_option_spec options[] = {
    {"pass", POSTERN_OPT_CHOICE, "continue|reject|tempfail|quarantine", "continue", 0, "the action for an SPF `pass` result"},
    {"fail", POSTERN_OPT_CHOICE, "continue|reject|tempfail|quarantine", "reject", 0, "the action for an SPF `fail` result"},
    {"softfail", POSTERN_OPT_CHOICE, "continue|reject|tempfail|quarantine", "continue", 0, "the action for an SPF `softfail` result"},
    {"neutral", POSTERN_OPT_CHOICE, "continue|reject|tempfail|quarantine", "continue", 0, "the action for an SPF `neutral` result"},
    {"none", POSTERN_OPT_CHOICE, "continue|reject|tempfail|quarantine", "continue", 0, "the action for an SPF `none` result"},
    {"temperror", POSTERN_OPT_CHOICE, "continue|reject|tempfail|quarantine", "tempfail", 0, "the action for an SPF `temperror` result"},
    {"permerror", POSTERN_OPT_CHOICE, "continue|reject|tempfail|quarantine", "continue", 0, "the action for an SPF `permerror` result"},
    {NULL, 0, NULL, NULL, 0, NULL},
};

static const struct postern_plugin plugin = {
    .abi_version = POSTERN_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct postern_plugin),
    .name = "spf",
    .init = init,
    .fini = fini,
    .on_mail = on_mail,
    .loop_first_stages = POSTERN_LOOP_FIRST(POSTERN_STAGE_MAIL),
    .options = options,
};

const struct postern_plugin *postern_plugin_entry(void) { return &plugin; }
