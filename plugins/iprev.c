/* iprev.c - the "iprev" authentication method (RFC 8601 2.7.3): the
 * client's address is looked up in reverse (PTR), and each name found is
 * looked up forward (A or AAAA); the client passes when one of them maps
 * back to its address ("forward-confirmed reverse DNS"). At MAIL, once per
 * transaction (the resolver caches the answers for their TTL).
 *   pass       a name maps back to the client
 *   fail       PTR names exist, but none maps back (or they do not exist)
 *   permerror  no PTR published for the address (NXDOMAIN, or no answer)
 *   temperror  a lookup failed or timed out
 * Sets iprev.result, iprev.name (the confirmed name, or the first PTR) and
 * authres.iprev for the Authentication-Results header (authres plugin).
 *   iprev.fail = continue|reject|tempfail|quarantine     (default continue)
 *   iprev.permerror, iprev.temperror                     (default continue)
 * Trusted networks and logged-in clients are not checked. MAIL is a
 * loop_first stage: with the answers cached it runs on posternd's loop. */
#include "postern_plugin.h"
#include "dns_records.h"
#include "plugin_util.h"
#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_NAMES 10            /* PTR names tried (RFC 8601 2.7.3 leaves it to us; Postfix does 10 too) */

enum result { R_PASS, R_FAIL, R_PERMERROR, R_TEMPERROR, R_WOULDBLOCK /* not cached, on the loop */ };
static const char *result_names[] = {"pass", "fail", "permerror", "temperror"};

struct iprev {
    enum action action[4];
};

static const struct postern_host *host;

/* Does name have an address record equal to addr? 1 yes, 0 no, -1 temporary
 * failure, -2 not cached (on the loop). */
static int maps_back(const char *name, const unsigned char addr[16], int family, struct dns_answer *a)
{
    int type = family == AF_INET ? ns_t_a : ns_t_aaaa;
    enum dns_status st = dns_lookup(host, name, type, a);
    if (st == DNS_TEMPFAIL || st == DNS_WOULDBLOCK)
        return st == DNS_TEMPFAIL ? -1 : -2;
    for (int i = 0; st == DNS_OK && i < a->count; i++) {
        ns_rr rr;
        if (dns_record(a, i, &rr) == 0 && ns_rr_rdlen(rr) == (family == AF_INET ? 4 : 16) &&
            !memcmp(ns_rr_rdata(rr), addr, ns_rr_rdlen(rr)))
            return 1;
    }
    return 0;
}

static enum result evaluate(const char *client, char *name, size_t nsize)
{
    char buf[64];
    const char *ip = dns_unmapped_ip(client, buf);
    unsigned char addr[16];
    int family;
    char rev[128];
    name[0] = '\0';
    if (!dns_reversed_address(ip, rev, sizeof rev - 10, addr, &family))
        return R_PERMERROR;
    strcat(rev, family == AF_INET ? ".in-addr.arpa" : ".ip6.arpa");
    struct dns_answer *ptr = malloc(sizeof *ptr), *fwd = malloc(sizeof *fwd);
    enum result r = R_TEMPERROR;
    enum dns_status st = ptr && fwd ? dns_lookup(host, rev, ns_t_ptr, ptr) : DNS_TEMPFAIL;
    if (st == DNS_WOULDBLOCK)
        r = R_WOULDBLOCK;
    else if (st == DNS_NXDOMAIN || st == DNS_NODATA || (st == DNS_OK && ptr->count == 0))
        r = R_PERMERROR;
    else if (st == DNS_OK)
        r = R_FAIL;
    bool failed = false;
    for (int i = 0; st == DNS_OK && i < ptr->count && i < MAX_NAMES && r == R_FAIL; i++) {
        ns_rr rr;
        char n[NS_MAXDNAME];
        if (dns_record(ptr, i, &rr) < 0 ||
            ns_name_uncompress(ns_msg_base(ptr->msg), ns_msg_end(ptr->msg), ns_rr_rdata(rr), n, sizeof n) < 0)
            continue;
        if (!name[0])
            snprintf(name, nsize, "%s", n);
        int m = maps_back(n, addr, family, fwd);
        if (m == -2) {
            r = R_WOULDBLOCK;
            break;
        }
        failed |= m < 0;
        if (m == 1) {
            snprintf(name, nsize, "%s", n);
            r = R_PASS;
        }
    }
    if (r == R_FAIL && failed)
        r = R_TEMPERROR;           /* a forward lookup we could not make might have matched */
    free(ptr);
    free(fwd);
    return r;
}

static int init(const struct postern_host *h, const struct postern_option *opts, size_t n, void **state,
                char *err, size_t errlen)
{
    host = h;
    if (POSTERN_HOST_REQUIRE(h, dns_query, err, errlen) < 0 || POSTERN_HOST_REQUIRE(h, client_trusted, err, errlen) < 0)
        return -1;
    struct iprev *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int r = !strcmp(opts[i].key, "fail") ? R_FAIL : !strcmp(opts[i].key, "permerror") ? R_PERMERROR
                : !strcmp(opts[i].key, "temperror") ? R_TEMPERROR : -1;
        if (r < 0 || parse_action(opts[i].value, &s->action[r]) < 0) {
            snprintf(err, errlen, r < 0 ? "unknown option '%s' (known: fail, permerror, temperror)"
                                        : "%s: the action is continue, reject, tempfail or quarantine", opts[i].key);
            free(s);
            return -1;
        }
    }
    *state = s;
    return 0;
}

static void fini(void *state) { free(state); }

static postern_verdict on_mail(postern_txn *t, const char *sender, void *state)
{
    (void)sender;
    const struct iprev *s = state;
    const char *user = POSTERN_HOST_HAS(host, auth_user) ? host->auth_user(t) : NULL;
    if (host->client_trusted(t) || (user && user[0]))
        return POSTERN_CONTINUE;
    const char *ip = host->client_addr(t);
    char name[NS_MAXDNAME];
    enum result r = evaluate(ip, name, sizeof name);
    if (r == R_WOULDBLOCK)
        return POSTERN_CONTINUE;     /* posternd calls again on a worker */
    host->var_set(t, "iprev.result", result_names[r]);
    host->var_set(t, "iprev.name", name);
    /* RFC 8601 2.7.3: the property is policy.iprev, the address; the name goes in a comment */
    char ar[600], clean[256];
    snprintf(clean, sizeof clean, "%s", name);
    for (char *p = clean; *p; p++)
        if (*p == '(' || *p == ')' || *p == '\\' || (unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e)
            *p = '?';
    snprintf(ar, sizeof ar, clean[0] ? "iprev=%s policy.iprev=%s (%s)" : "iprev=%s policy.iprev=%s", result_names[r],
             ip, clean);
    host->var_set(t, "authres.iprev", ar);
    host->log(t, POSTERN_LOG_INFO, "iprev: %s for %s%s%s", result_names[r], ip, name[0] ? " name=" : "", name);
    char rej[300], tmp[300], why[300];
    snprintf(rej, sizeof rej, "550 5.7.25 Client address [%s] has no confirmed reverse DNS name", ip);
    snprintf(tmp, sizeof tmp, "450 4.7.25 Client address [%s]: reverse DNS lookup failed, try again later", ip);
    snprintf(why, sizeof why, "iprev %s for %s", result_names[r], ip);
    return r == R_PASS ? POSTERN_CONTINUE : act(host, t, s->action[r], rej, tmp, why);
}

/* The options it takes (checked by posternd before init, documented in postern-plugins(5)). */
static const struct postern_option_spec options[] = {
    {"fail", POSTERN_OPT_CHOICE, "continue|reject|tempfail|quarantine", "continue", 0, "the action for an iprev `fail` result"},
    {"permerror", POSTERN_OPT_CHOICE, "continue|reject|tempfail|quarantine", "continue", 0, "the action for an iprev `permerror` result"},
    {"temperror", POSTERN_OPT_CHOICE, "continue|reject|tempfail|quarantine", "continue", 0, "the action for an iprev `temperror` result"},
    {NULL, 0, NULL, NULL, 0, NULL},
};

static const struct postern_plugin plugin = {
    .abi_version = POSTERN_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct postern_plugin),
    .name = "iprev",
    .init = init,
    .fini = fini,
    .on_mail = on_mail,
    .loop_first_stages = POSTERN_LOOP_FIRST(POSTERN_STAGE_MAIL),
    .options = options,
};

const struct postern_plugin *postern_plugin_entry(void) { return &plugin; }
