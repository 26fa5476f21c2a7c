/* dnsbl.c - DNS block and allow lists with weights, as Postfix's
 * postscreen_dnsbl_sites: each listed site adds its weight to the client's
 * score (an allow list has a negative weight), and a score at or over the
 * threshold refuses the client at connect, before the banner:
 *   dnsbl.sites = zen.example.test*3, bl.example.test=127.0.0.[2..11]*2,
 *                 list.dnswl.example.test=127.0.[0..255].[1..3]*-5
 *   dnsbl.threshold = 3
 * A site's optional =FILTER keeps only replies whose octets match (each
 * octet a number, [a..b] or [a;b;c]); without one any 127.x reply counts.
 * Domain lists (DBL) score the HELO name and the MAIL FROM domain at MAIL,
 * on top of the client's own score:
 *   dnsbl.domain_sites = dbl.example.test*3
 * Every list is asked in parallel (a thread per list, each through
 * posternd's resolver, whose cache keeps answers for their TTL). A list
 * that does not answer counts as not listing (logged). Trusted networks
 * are never checked. Sets dnsbl.score and dnsbl.listed.
 * CONNECT and MAIL are loop_first: with nothing to look up (a trusted
 * client, no lists for the stage) they finish on posternd's loop; with
 * lookups to make they ask for a worker (host->defer_to_worker), where the
 * threads may block. */
#include "postern_plugin.h"
#include "dns_records.h"
#include <arpa/inet.h>
#include <ctype.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SITES 32

struct octet_rule {              /* one octet of a filter: allowed values */
    unsigned char allow[256];
};

struct site {
    char name[256];
    bool filtered;
    struct octet_rule octet[4];
    int weight;
};

struct dnsbl {
    struct site ip_sites[MAX_SITES], domain_sites[MAX_SITES];
    int nip, ndomain;
    int threshold;
};

static const struct postern_host *host;

/* ---- one lookup per list, in parallel ------------------------------- */

struct query {
    const struct site *site;
    char name[600];
    bool listed;
    bool failed;
    pthread_t tid;
};

static bool reply_matches(const struct site *s, const unsigned char *a)
{
    if (!s->filtered)
        return a[0] == 127;
    for (int i = 0; i < 4; i++)
        if (!s->octet[i].allow[a[i]])
            return false;
    return true;
}

static void *run_query(void *arg)
{
    struct query *q = arg;
    struct dns_answer *ans = malloc(sizeof *ans);
    if (!ans) {
        q->failed = true;
        return NULL;
    }
    enum dns_status st = dns_lookup(host, q->name, ns_t_a, ans);
    q->failed = st == DNS_TEMPFAIL;
    ns_rr rr;
    for (int i = 0; st == DNS_OK && !q->listed && dns_record(ans, i, &rr) == 0; i++)
        if (ns_rr_rdlen(rr) == 4 && reply_matches(q->site, ns_rr_rdata(rr)))
            q->listed = true;
    free(ans);
    return NULL;
}

/* Ask every site about key (a reversed address or a domain); the summed
 * weights of those listing it, and their names appended to listed. */
static int score(const struct site *sites, int n, const char *key, postern_txn *t, char *listed, size_t size)
{
    struct query q[MAX_SITES];
    for (int i = 0; i < n; i++) {
        q[i] = (struct query){.site = &sites[i]};
        snprintf(q[i].name, sizeof q[i].name, "%s.%s", key, sites[i].name);
        if (pthread_create(&q[i].tid, NULL, run_query, &q[i]) != 0)
            run_query(&q[i]), q[i].tid = 0;
    }
    int total = 0;
    for (int i = 0; i < n; i++) {
        if (q[i].tid)
            pthread_join(q[i].tid, NULL);
        if (q[i].failed)
            host->log(t, POSTERN_LOG_WARN, "dnsbl: no answer for %s (counted as not listed)", q[i].name);
        if (!q[i].listed)
            continue;
        total += sites[i].weight;
        size_t len = strlen(listed);
        snprintf(listed + len, size - len, "%s%s", len ? " " : "", sites[i].name);
    }
    return total;
}

static int client_score(const struct dnsbl *d, postern_txn *t, char *listed, size_t size)
{
    unsigned char a[16];
    char key[80];
    int family;
    if (!dns_reversed_address(host->client_addr(t), key, sizeof key, a, &family))
        return 0;
    return score(d->ip_sites, d->nip, key, t, listed, size);
}

static void set_result(postern_txn *t, int total, const char *listed)
{
    char n[16];
    snprintf(n, sizeof n, "%d", total);
    host->var_set(t, "dnsbl.score", n);
    host->var_set(t, "dnsbl.listed", listed);
}

/* Lookups are to be made: on the loop, the call goes to a worker first. */
static bool deferred(postern_txn *t)
{
    return POSTERN_HOST_HAS(host, defer_to_worker) && host->defer_to_worker(t) == POSTERN_WOULDBLOCK;
}

static postern_verdict on_connect(postern_txn *t, void *state)
{
    struct dnsbl *d = state;
    if (host->client_trusted(t) || !d->nip || deferred(t))
        return POSTERN_CONTINUE;
    char listed[2048] = "", reply[2400];
    int total = client_score(d, t, listed, sizeof listed);
    set_result(t, total, listed);
    if (total < d->threshold)
        return POSTERN_CONTINUE;
    snprintf(reply, sizeof reply, "554 5.7.1 Service unavailable; client [%s] blocked using %s (score %d)",
             host->client_addr(t), listed, total);
    host->set_reply(t, reply);
    host->log(t, POSTERN_LOG_INFO, "dnsbl: [%s] refused: score %d from %s", host->client_addr(t), total, listed);
    return POSTERN_REJECT;
}

/* A plausible domain to look up: letters, digits, '-', '.', with a dot. */
static bool lookup_domain(const char *in, char *out, size_t size)
{
    size_t n = strlen(in);
    if (!n || n >= size || !strchr(in, '.') || in[0] == '[')
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!isalnum((unsigned char)in[i]) && in[i] != '-' && in[i] != '.')
            return false;
        out[i] = (char)tolower((unsigned char)in[i]);
    }
    out[n] = '\0';
    return true;
}

static postern_verdict on_mail(postern_txn *t, const char *sender, void *state)
{
    struct dnsbl *d = state;
    if (host->client_trusted(t) || !d->ndomain || deferred(t))
        return POSTERN_CONTINUE;
    char listed[2048] = "", reply[2600], helo[256], from[256];
    int total = d->nip ? client_score(d, t, listed, sizeof listed) : 0;
    const char *at = strrchr(sender, '@');
    bool have_helo = lookup_domain(host->helo_name(t), helo, sizeof helo);
    bool have_from = at && lookup_domain(at + 1, from, sizeof from);
    if (have_helo)
        total += score(d->domain_sites, d->ndomain, helo, t, listed, sizeof listed);
    if (have_from && (!have_helo || strcmp(helo, from)))
        total += score(d->domain_sites, d->ndomain, from, t, listed, sizeof listed);
    set_result(t, total, listed);
    if (total < d->threshold)
        return POSTERN_CONTINUE;
    snprintf(reply, sizeof reply, "554 5.7.1 <%s>: Sender address rejected: listed at %s (score %d)", sender,
             listed, total);
    host->set_reply(t, reply);
    return POSTERN_REJECT;
}

/* ---- options -------------------------------------------------------- */

/* One octet pattern: N, [a..b] or [a;b;c]. */
static int parse_octet(const char *p, size_t len, struct octet_rule *r)
{
    char buf[64];
    if (!len || len >= sizeof buf)
        return -1;
    snprintf(buf, sizeof buf, "%.*s", (int)len, p);
    memset(r->allow, 0, sizeof r->allow);
    if (buf[0] != '[') {
        char *end;
        long v = strtol(buf, &end, 10);
        return *end || v < 0 || v > 255 ? -1 : (r->allow[v] = 1, 0);
    }
    if (buf[len - 1] != ']')
        return -1;
    buf[len - 1] = '\0';
    char *save = NULL;
    for (char *w = strtok_r(buf + 1, ";", &save); w; w = strtok_r(NULL, ";", &save)) {
        char *end, *dots = strstr(w, "..");
        long lo = strtol(w, &end, 10), hi = lo;
        if (dots) {
            if (end != dots)
                return -1;
            hi = strtol(dots + 2, &end, 10);
        }
        if (*end || lo < 0 || hi > 255 || lo > hi)
            return -1;
        for (long v = lo; v <= hi; v++)
            r->allow[v] = 1;
    }
    return 0;
}

/* name[=a.b.c.d][*weight] */
static int parse_site(const char *spec, struct site *s)
{
    memset(s, 0, sizeof *s);
    s->weight = 1;
    char copy[512];
    snprintf(copy, sizeof copy, "%s", spec);
    char *star = strrchr(copy, '*');
    if (star) {
        char *end;
        s->weight = (int)strtol(star + 1, &end, 10);
        if (*end || end == star + 1 || s->weight < -100 || s->weight > 100)
            return -1;
        *star = '\0';
    }
    char *eq = strchr(copy, '=');
    if (eq) {
        *eq++ = '\0';
        const char *p = eq;
        for (int i = 0; i < 4; i++) {
            /* a bracketed octet ([0..255]) holds dots of its own */
            const char *close = p[0] == '[' ? strchr(p, ']') : NULL;
            size_t len = p[0] == '[' ? (close ? (size_t)(close - p) + 1 : 0) : strcspn(p, ".");
            if (parse_octet(p, len, &s->octet[i]) < 0 || (i < 3 && p[len] != '.') || (i == 3 && p[len]))
                return -1;
            p += len + (i < 3);
        }
        s->filtered = true;
    }
    if (!copy[0] || strlen(copy) >= sizeof s->name || copy[0] == '.')
        return -1;
    memcpy(s->name, copy, strlen(copy) + 1);     /* fits: checked above */
    return 0;
}

static int parse_sites(const char *key, const char *value, struct site *sites, int *n, char *err, size_t errlen)
{
    char copy[4096], *save = NULL;
    snprintf(copy, sizeof copy, "%s", value);
    for (char *w = strtok_r(copy, ", \t", &save); w; w = strtok_r(NULL, ", \t", &save))
        if (*n == MAX_SITES || parse_site(w, &sites[(*n)++]) < 0)
            return snprintf(err, errlen, "dnsbl.%s: bad site '%s' (NAME[=FILTER][*WEIGHT], at most %d)", key, w,
                            MAX_SITES), -1;
    return 0;
}

static int init(const struct postern_host *h, const struct postern_option *opts, size_t n, void **state, char *err,
                size_t errlen)
{
    host = h;
    if (POSTERN_HOST_REQUIRE(h, client_trusted, err, errlen) < 0)
        return -1;
    struct dnsbl *d = calloc(1, sizeof *d);
    if (!d)
        return -1;
    d->threshold = 1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *k = opts[i].key, *v = opts[i].value;
        char *end;
        if (!strcmp(k, "sites"))
            rc = parse_sites(k, v, d->ip_sites, &d->nip, err, errlen);
        else if (!strcmp(k, "domain_sites"))
            rc = parse_sites(k, v, d->domain_sites, &d->ndomain, err, errlen);
        else if (!strcmp(k, "threshold") && (d->threshold = (int)strtol(v, &end, 10), *v && !*end))
            rc = 0;
        else {
            snprintf(err, errlen, "unknown option or value dnsbl.%s = %s (known: sites, domain_sites, threshold)",
                     k, v);
            rc = -1;
        }
    }
    if (rc == 0 && !d->nip && !d->ndomain) {
        snprintf(err, errlen, "dnsbl.sites or dnsbl.domain_sites is required");
        rc = -1;
    }
    if (rc < 0) {
        free(d);
        return -1;
    }
    *state = d;
    return 0;
}

static void fini(void *state) { free(state); }

/* The options it takes (checked by posternd before init, documented in postern-plugins(5)). */
static const struct postern_option_spec options[] = {
    {"sites", POSTERN_OPT_TEXT, NULL, NULL, 1, "`NAME[=FILTER][*WEIGHT], …`: lists asked for the client address"},
    {"domain_sites", POSTERN_OPT_TEXT, NULL, NULL, 1, "the same for the HELO name and the MAIL FROM domain (DBL)"},
    {"threshold", POSTERN_OPT_NUMBER, NULL, "1", 0, "the score that refuses"},
    {NULL, 0, NULL, NULL, 0, NULL},
};

static const struct postern_plugin plugin = {
    .abi_version = POSTERN_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct postern_plugin),
    .name = "dnsbl",
    .init = init,
    .fini = fini,
    .on_connect = on_connect,
    .on_mail = on_mail,
    .loop_first_stages = POSTERN_LOOP_FIRST(POSTERN_STAGE_CONNECT) | POSTERN_LOOP_FIRST(POSTERN_STAGE_MAIL),
    .options = options,
};

const struct postern_plugin *postern_plugin_entry(void) { return &plugin; }
