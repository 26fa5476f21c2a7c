/* dmarc.c - DMARC (RFC 7489) with libopendmarc at EOM, from the results the
 * spf and dkim_verify plugins left in tx.vars (so it must come after them in
 * the chain). The _dmarc record is looked up through posternd's resolver,
 * at the From: domain and then at its organizational domain (public suffix
 * list from Debian's publicsuffix package). Alignment, p=/sp=, adkim/aspf
 * are libopendmarc's.
 *
 * Options (continue | reject | tempfail | quarantine):
 *   dmarc.reject = reject          what to do when the domain says p=reject
 *   dmarc.quarantine = quarantine  ... says p=quarantine
 *   dmarc.temperror = continue     the _dmarc lookup failed temporarily
 *   dmarc.psl = /usr/share/publicsuffix/public_suffix_list.dat
 * tx.vars["dmarc.action"], set by an earlier link (Lua), replaces the action.
 * Aggregate reports (dmarc_report.c): dmarc.report_dir, report_interval,
 * report_org, report_from, report_store_max.
 *
 * Sets: dmarc.result (pass | fail | none | temperror), dmarc.policy (the
 * policy to apply: none | quarantine | reject), dmarc.domain (From: domain),
 * authres.dmarc.
 */
#include "postern_plugin.h"
#include "dmarc_report.h"
#include "dns_records.h"
#include "plugin_util.h"
#include <ctype.h>
#include <opendmarc/dmarc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* exported by libopendmarc but missing from its header */
int opendmarc_get_tld(u_char *domain, u_char *tld, size_t tld_len);

struct dmarc {
    OPENDMARC_LIB_T lib;
    enum action on_reject, on_quarantine, on_temperror;
    struct dmarc_reporter *reporter;   /* NULL: no aggregate reports */
};

static void org_domain(const char *domain, char *org, size_t size);

static const struct postern_host *host;

static int init(const struct postern_host *h, const struct postern_option *opts, size_t n, void **state,
                char *err, size_t errlen)
{
    host = h;
    if (POSTERN_HOST_REQUIRE(h, hostname, err, errlen) < 0)
        return -1;
    struct dmarc *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    s->on_reject = ACT_REJECT;
    s->on_quarantine = ACT_QUARANTINE;
    const char *psl = "/usr/share/publicsuffix/public_suffix_list.dat";
    struct dmarc_report_options ro;
    dmarc_report_defaults(&ro);
    for (size_t i = 0; i < n; i++) {
        const char *k = opts[i].key;
        int r = dmarc_report_option(&ro, k, opts[i].value, err, errlen);
        if (r) {
            if (r > 0)
                continue;
            free(s);
            return -1;
        }
        enum action *a = !strcmp(k, "reject") ? &s->on_reject : !strcmp(k, "quarantine") ? &s->on_quarantine
                         : !strcmp(k, "temperror") ? &s->on_temperror : NULL;
        if (!strcmp(k, "psl")) {
            psl = opts[i].value;
        } else if (!a || parse_action(opts[i].value, a) < 0) {
            snprintf(err, errlen, a ? "%s: the action is continue, reject, tempfail or quarantine"
                                    : "unknown option '%s' (known: reject, quarantine, temperror, psl, report_dir, "
                                      "report_interval, report_org, report_from, report_store_max)", k);
            free(s);
            return -1;
        }
    }
    s->lib.tld_type = OPENDMARC_TLD_TYPE_MOZILLA;
    snprintf((char *)s->lib.tld_source_file, sizeof s->lib.tld_source_file, "%s", psl);
    if (opendmarc_policy_library_init(&s->lib) != DMARC_PARSE_OKAY) {
        snprintf(err, errlen, "cannot initialise libopendmarc with the public suffix list %s", psl);
        free(s);
        return -1;
    }
    /* a dry run (postern policy) records nothing for reports */
    s->reporter = POSTERN_HOST_HAS(h, dry_run) && h->dry_run() ? NULL
                                                               : dmarc_reporter_start(h, &ro, org_domain, err, errlen);
    if (!s->reporter && err[0]) {
        opendmarc_policy_library_shutdown(&s->lib);
        free(s);
        return -1;
    }
    *state = s;
    return 0;
}

static void fini(void *state)
{
    struct dmarc *s = state;
    dmarc_reporter_stop(s->reporter);
    opendmarc_policy_library_shutdown(&s->lib);
    free(s);
}

/* The v=DMARC1 TXT record at _dmarc.domain into rec. */
static enum dns_status dmarc_record(const char *domain, char *rec, size_t size)
{
    struct dns_answer *a = malloc(sizeof *a);
    if (!a)
        return DNS_TEMPFAIL;
    char name[300];
    snprintf(name, sizeof name, "_dmarc.%s", domain);
    enum dns_status st = dns_lookup(host, name, ns_t_txt, a);
    if (st == DNS_OK) {
        st = DNS_NODATA;
        for (int i = 0; i < a->count; i++)
            if (dns_txt(a, i, rec, size) >= 0 && !strncasecmp(rec, "v=DMARC1", 8)) {
                st = DNS_OK;
                break;
            }
    }
    free(a);
    return st;
}

static int spf_outcome(const char *r)
{
    if (!r)
        return DMARC_POLICY_SPF_OUTCOME_NONE;
    if (!strcmp(r, "pass"))
        return DMARC_POLICY_SPF_OUTCOME_PASS;
    if (!strcmp(r, "fail") || !strcmp(r, "softfail"))
        return DMARC_POLICY_SPF_OUTCOME_FAIL;
    return !strcmp(r, "temperror") ? DMARC_POLICY_SPF_OUTCOME_TMPFAIL : DMARC_POLICY_SPF_OUTCOME_NONE;
}

/* Hands the spf and dkim_verify results to libopendmarc. */
static void store_results(postern_txn *t, DMARC_POLICY_T *p)
{
    const char *spf = host->var_get(t, "spf.result"), *spf_dom = host->var_get(t, "spf.domain");
    const char *ident = host->var_get(t, "spf.identity");
    if (spf && spf_dom)
        opendmarc_policy_store_spf(p, (u_char *)spf_dom, spf_outcome(spf),
                                   ident && !strcmp(ident, "helo") ? DMARC_POLICY_SPF_ORIGIN_HELO
                                                                   : DMARC_POLICY_SPF_ORIGIN_MAILFROM, NULL);
    const char *sigs = host->var_get(t, "dkim.signatures");
    char copy[2048], *save = NULL;
    snprintf(copy, sizeof copy, "%s", sigs ? sigs : "");
    for (char *sig = strtok_r(copy, " ", &save); sig; sig = strtok_r(NULL, " ", &save)) {
        char *dom = strchr(sig, ':'), *sel = dom ? strchr(dom + 1, ':') : NULL;
        if (!sel)
            continue;
        *dom++ = '\0';
        *sel++ = '\0';
        int outcome = !strcmp(sig, "pass") ? DMARC_POLICY_DKIM_OUTCOME_PASS
                      : !strcmp(sig, "temperror") ? DMARC_POLICY_DKIM_OUTCOME_TMPFAIL : DMARC_POLICY_DKIM_OUTCOME_FAIL;
        opendmarc_policy_store_dkim(p, (u_char *)dom, (u_char *)sel, outcome, NULL);
    }
}

static void publish(postern_txn *t, const char *result, const char *policy, const char *domain, const char *why)
{
    char ar[700];
    host->var_set(t, "dmarc.result", result);
    host->var_set(t, "dmarc.policy", policy);
    host->var_set(t, "dmarc.domain", domain);
    snprintf(ar, sizeof ar, "dmarc=%s%s%s%s header.from=%s", result, why[0] ? " (" : "", why, why[0] ? ")" : "",
             domain[0] ? domain : "unknown");
    host->var_set(t, "authres.dmarc", ar);
    host->log(t, POSTERN_LOG_INFO, "dmarc: %s for %s (%s)", result, domain[0] ? domain : "?", why);
}

/* The action to take: the configured one, or an earlier link's dmarc.action. */
static enum action final_action(postern_txn *t, enum action a)
{
    const char *override = host->var_get(t, "dmarc.action");
    if (override && parse_action(override, &a) < 0)
        host->log(t, POSTERN_LOG_WARN, "dmarc: ignoring dmarc.action '%s'", override);
    return a;
}

static postern_verdict dmarc_act(postern_txn *t, enum action a, const char *domain, const char *what)
{
    char rej[400], tmp[400], why[300];
    snprintf(rej, sizeof rej, "550 5.7.1 Rejected by the DMARC policy of %.200s (%s)", domain, what);
    snprintf(tmp, sizeof tmp, "451 4.7.1 DMARC %s for %.200s, try again later", what, domain);
    snprintf(why, sizeof why, "DMARC policy of %.200s (%s)", domain, what);
    return act(host, t, a, rej, tmp, why);
}

/* The organizational domain: libopendmarc's PSL lookup, or the last two
 * labels (the PSL's default rule) when the TLD is not in the list. */
static void org_domain(const char *domain, char *org, size_t size)
{
    org[0] = '\0';
    if (opendmarc_get_tld((u_char *)domain, (u_char *)org, size) == 0 && org[0])
        return;
    const char *last = strrchr(domain, '.');
    const char *p = last;
    while (p && p > domain && p[-1] != '.')
        p--;
    snprintf(org, size, "%s", last && p > domain ? p : domain);
}

/* A record's p= or sp= value as a word; otherwise when it was not given. */
static const char *policy_word(int v, const char *otherwise)
{
    return v == DMARC_RECORD_P_REJECT ? "reject" : v == DMARC_RECORD_P_QUARANTINE ? "quarantine"
           : v == DMARC_RECORD_P_NONE ? "none" : otherwise;
}

/* What opendmarc_get_policy_to_enforce() asks to be done, as a disposition. */
static const char *enforced_word(int policy)
{
    return policy == DMARC_POLICY_REJECT ? "reject" : policy == DMARC_POLICY_QUARANTINE ? "quarantine" : "none";
}

/* The value of tag in a DMARC record ("fo=1:d" -> "1:d"), or "". */
static void record_tag(const char *rec, const char *tag, char *out, size_t size)
{
    out[0] = '\0';
    size_t n = strlen(tag);
    for (const char *p = rec; p && *p; p = strchr(p, ';') ? strchr(p, ';') + 1 : NULL) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!strncasecmp(p, tag, n) && (p[n] == '=' || p[n] == ' ')) {
            const char *v = strchr(p, '=');
            v = v ? v + 1 : "";
            while (*v == ' ')
                v++;
            size_t len = strcspn(v, "; \t");
            snprintf(out, size, "%.*s", (int)(len < size ? len : size - 1), v);
            return;
        }
    }
}

/* "result:domain:selector ..." (dkim.signatures) as "domain:selector:result,...". */
static void dkim_for_report(const char *sigs, char *out, size_t size)
{
    char copy[2048], *save = NULL;
    size_t len = 0;
    out[0] = '\0';
    snprintf(copy, sizeof copy, "%s", sigs ? sigs : "");
    for (char *sig = strtok_r(copy, " ", &save); sig; sig = strtok_r(NULL, " ", &save)) {
        char *dom = strchr(sig, ':'), *sel = dom ? strchr(dom + 1, ':') : NULL;
        if (!sel)
            continue;
        *dom++ = '\0';
        *sel++ = '\0';
        int n = snprintf(out + len, size - len, "%s%s:%s:%s", len ? "," : "", dom, sel, sig);
        if (n < 0 || (size_t)n >= size - len) {
            out[len] = '\0';
            break;
        }
        len += (size_t)n;
    }
}

/* One line for the aggregate report: what was evaluated and what was done. */
static void record_for_report(struct dmarc *s, postern_txn *t, DMARC_POLICY_T *p, const char *rec,
                              const char *policy_domain, const char *from, int policy, enum action a)
{
    char rua[1024] = "", fo[64], dkim[2048];
    u_char **list = opendmarc_policy_fetch_rua(p, NULL, 0, 1);
    for (int i = 0; list && list[i] && i < 16; i++)
        snprintf(rua + strlen(rua), sizeof rua - strlen(rua), "%s%s", i ? "," : "", (const char *)list[i]);
    if (!rua[0])
        return;                         /* no rua=: nobody to report to */
    int dkim_al = 0, spf_al = 0, pv = 0, spv = 0, adkim = 0, aspf = 0, pct = 100;
    opendmarc_policy_fetch_alignment(p, &dkim_al, &spf_al);
    opendmarc_policy_fetch_p(p, &pv);
    opendmarc_policy_fetch_sp(p, &spv);
    opendmarc_policy_fetch_adkim(p, &adkim);
    opendmarc_policy_fetch_aspf(p, &aspf);
    opendmarc_policy_fetch_pct(p, &pct);
    record_tag(rec, "fo", fo, sizeof fo);
    dkim_for_report(host->var_get(t, "dkim.signatures"), dkim, sizeof dkim);
    const char *applied = a == ACT_REJECT ? "reject" : a == ACT_QUARANTINE ? "quarantine" : "none";
    const char *requested = enforced_word(policy);
    /* the record asked for more than none but libopendmarc's pct= sampling let it through */
    bool subdomain = strcmp(policy_domain, from) != 0;
    const char *asked = subdomain ? policy_word(spv, policy_word(pv, "none")) : policy_word(pv, "none");
    const char *reason = strcmp(applied, requested) ? "local_policy"
                         : policy == DMARC_POLICY_NONE && strcmp(asked, "none") ? "sampled_out" : "";
    const char *sender = host->sender(t), *at = sender ? strrchr(sender, '@') : NULL;
    const char *env_from = at ? at + 1 : host->helo_name(t);
    const char *spf_dom = host->var_get(t, "spf.domain"), *spf_res = host->var_get(t, "spf.result");
    const char *ident = host->var_get(t, "spf.identity");
    struct dmarc_row row = {
        .policy_domain = policy_domain, .header_from = from, .source_ip = host->client_addr(t),
        .envelope_from = env_from ? env_from : "", .disposition = applied,
        .dkim_aligned = dkim_al == DMARC_POLICY_DKIM_ALIGNMENT_PASS ? "pass" : "fail",
        .spf_aligned = spf_al == DMARC_POLICY_SPF_ALIGNMENT_PASS ? "pass" : "fail", .reason = reason,
        .p = policy_word(pv, "none"), .sp = policy_word(spv, policy_word(pv, "none")),
        .adkim = adkim == DMARC_RECORD_A_STRICT ? "s" : "r", .aspf = aspf == DMARC_RECORD_A_STRICT ? "s" : "r",
        .fo = fo, .pct = pct > 0 && pct <= 100 ? pct : 100, .rua = rua,
        .spf_domain = spf_dom ? spf_dom : env_from ? env_from : "",
        .spf_scope = ident && !strcmp(ident, "helo") ? "helo" : "mfrom", .spf_result = spf_res ? spf_res : "none",
        .dkim = dkim,
    };
    dmarc_report_record(s->reporter, t, &row);
}

static postern_verdict evaluate(struct dmarc *s, postern_txn *t, DMARC_POLICY_T *p, const char *from)
{
    char rec[1024], org[256] = "";
    enum dns_status st = dmarc_record(from, rec, sizeof rec);
    if (st == DNS_NXDOMAIN || st == DNS_NODATA)
        org_domain(from, org, sizeof org);
    if (org[0] && strcmp(org, from))
        st = dmarc_record(org, rec, sizeof rec);
    else
        org[0] = '\0';
    if (st == DNS_WOULDBLOCK)
        return POSTERN_CONTINUE;      /* not cached: posternd calls again on a worker */
    if (st == DNS_TEMPFAIL) {
        publish(t, "temperror", "none", from, "DNS lookup of the _dmarc record failed");
        return dmarc_act(t, final_action(t, s->on_temperror), from, "temperror");
    }
    if (st != DNS_OK) {
        publish(t, "none", "none", from, "no DMARC record");
        return POSTERN_CONTINUE;
    }
    opendmarc_policy_store_from_domain(p, (u_char *)from);
    store_results(t, p);
    if (opendmarc_policy_store_dmarc(p, (u_char *)rec, (u_char *)from, org[0] ? (u_char *)org : NULL) !=
        DMARC_PARSE_OKAY) {
        publish(t, "permerror", "none", from, "unusable DMARC record");
        return POSTERN_CONTINUE;
    }
    int declared = 0;
    opendmarc_policy_fetch_p(p, &declared);
    const char *p_word = policy_word(declared, "none");
    int policy = opendmarc_get_policy_to_enforce(p);
    const char *requested = enforced_word(policy);
    enum action a = policy == DMARC_POLICY_REJECT ? final_action(t, s->on_reject)
                    : policy == DMARC_POLICY_QUARANTINE ? final_action(t, s->on_quarantine) : ACT_CONTINUE;
    char why[64];
    if (policy == DMARC_POLICY_PASS) {
        snprintf(why, sizeof why, "p=%s", p_word);
        publish(t, "pass", "none", from, why);
    } else if (policy == DMARC_POLICY_REJECT || policy == DMARC_POLICY_QUARANTINE || policy == DMARC_POLICY_NONE) {
        snprintf(why, sizeof why, "p=%s dis=%s", p_word, requested);
        publish(t, "fail", requested, from, why);
    } else {
        publish(t, "none", "none", from, "no DMARC record");
        return POSTERN_CONTINUE;
    }
    if (s->reporter && a != ACT_TEMPFAIL)    /* a tempfailed message is counted when it comes back */
        record_for_report(s, t, p, rec, org[0] ? org : from, from, policy, a);
    return policy == DMARC_POLICY_PASS || policy == DMARC_POLICY_NONE ? POSTERN_CONTINUE
                                                                      : dmarc_act(t, a, from, "dmarc=fail");
}

static postern_verdict on_eom(postern_txn *t, void *state)
{
    char from[256];
    from_domain(host, t, from, sizeof from);
    if (!from[0]) {
        publish(t, "permerror", "none", "", "no single From: address");
        return POSTERN_CONTINUE;
    }
    const char *ip = host->client_addr(t);
    DMARC_POLICY_T *p = opendmarc_policy_connect_init((u_char *)ip, strchr(ip, ':') ? DMARC_POLICY_IP_TYPE_IPV6
                                                                                   : DMARC_POLICY_IP_TYPE_IPV4);
    if (!p)
        return POSTERN_ERROR;
    postern_verdict v = evaluate(state, t, p, from);
    opendmarc_policy_connect_shutdown(p);
    return v;
}

/* The options it takes (checked by posternd before init, documented in postern-plugins(5)). */
static const struct postern_option_spec options[] = {
    {"reject", POSTERN_OPT_CHOICE, "continue|reject|tempfail|quarantine", "reject", 0, "the action for a failing domain whose policy is reject"},
    {"quarantine", POSTERN_OPT_CHOICE, "continue|reject|tempfail|quarantine", "quarantine", 0, "the action for a failing domain whose policy is quarantine"},
    {"temperror", POSTERN_OPT_CHOICE, "continue|reject|tempfail|quarantine", "continue", 0, "the action when the policy cannot be fetched"},
    {"psl", POSTERN_OPT_PATH, NULL, "/usr/share/publicsuffix/public_suffix_list.dat", 0, "the public suffix list"},
    {"report_dir", POSTERN_OPT_PATH, NULL, NULL, 0, "where aggregate report data is kept; unset: no reports"},
    {"report_interval", POSTERN_OPT_NUMBER, NULL, "86400", 0, "seconds per aggregate report"},
    {"report_org", POSTERN_OPT_TEXT, NULL, "hostname", 0, "the reports' org_name"},
    {"report_from", POSTERN_OPT_TEXT, NULL, "postmaster@HOSTNAME", 0, "the reports' From and envelope sender"},
    {"report_store_max", POSTERN_OPT_TEXT, NULL, "64M", 0, "the most report data kept"},
    {NULL, 0, NULL, NULL, 0, NULL},
};

static const struct postern_plugin plugin = {
    .abi_version = POSTERN_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct postern_plugin),
    .name = "dmarc",
    .init = init,
    .fini = fini,
    .on_eom = on_eom,
    .loop_first_stages = POSTERN_LOOP_FIRST(POSTERN_STAGE_EOM),
    .options = options,
};

const struct postern_plugin *postern_plugin_entry(void) { return &plugin; }
