/* mx.c - MX routing on top of dns.c. One request per domain: the MX query,
 * then A and AAAA for every MX host in parallel; when all answers are in,
 * mark our own entries, keep only better ones, and list the addresses,
 * each with what DNSSEC said about its MX and address records (DANE). */
#include "mx.h"
#include "dns.h"
#include "log.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unbound.h>

#define MAX_MX 32
#define MAX_ADDRS 8
#define RR_A 1
#define RR_MX 15
#define RR_AAAA 28
#define RCODE_NXDOMAIN 3

struct addr_lookup {
    struct route_req *req;
    size_t rec;
};

struct route_req {
    char domain[256];
    route_cb cb;
    void *arg;
    struct mx_record recs[MAX_MX];
    size_t nrec;
    bool implicit;                   /* no MX: the domain's own address */
    bool lmtp;                       /* the targets speak LMTP */
    struct sockaddr_storage addrs[MAX_MX][MAX_ADDRS];
    size_t naddrs[MAX_MX];
    struct addr_lookup lookups[MAX_MX];
    bool mx_secure;                  /* the MX answer was DNSSEC-validated */
    bool addr_insecure[MAX_MX];      /* some address answer for recs[i] was not */
    char canon[MAX_MX][256];         /* recs[i] after CNAMEs, when different */
    char bogus[200];                 /* why a validation failed, for the reason */
    int outstanding;
    bool tempfail;
    int port;                        /* where the servers listen */
};

static const struct config *cfg;

void mx_init(const struct config *c) { cfg = c; }

void mx_sort(struct mx_record *r, size_t n, unsigned (*rnd)(void))
{
    /* insertion sort by preference, then Fisher-Yates within equal runs */
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && r[j].pref < r[j - 1].pref; j--) {
            struct mx_record t = r[j];
            r[j] = r[j - 1];
            r[j - 1] = t;
        }
    for (size_t s = 0; s < n;) {
        size_t e = s;
        while (e < n && r[e].pref == r[s].pref)
            e++;
        for (size_t i = e - 1; i > s; i--) {
            size_t k = s + rnd() % (i - s + 1);
            struct mx_record t = r[i];
            r[i] = r[k];
            r[k] = t;
        }
        s = e;
    }
}

size_t mx_keep_better_than_self(struct mx_record *r, size_t n, bool *we_are_best)
{
    int best_self = -1;
    for (size_t i = 0; i < n; i++)
        if (r[i].self && (best_self < 0 || r[i].pref < best_self))
            best_self = r[i].pref;
    *we_are_best = false;
    if (best_self < 0)
        return n;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!r[i].self && r[i].pref < best_self)
            r[k++] = r[i];
    *we_are_best = k == 0;
    return k;
}

static void finish(struct route_req *q, enum route_status st, const char *reason, struct mx_target *t, size_t n)
{
    struct route_result res = {.status = st, .targets = t, .ntargets = n};
    snprintf(res.reason, sizeof res.reason, "%s", reason ? reason : "");
    q->cb(q->arg, &res);
    free(q);
}

/* Wire-format name in MX rdata to text without the final dot. */
static int wire_name(const unsigned char *p, size_t len, char *out, size_t cap)
{
    size_t o = 0, i = 0;
    while (i < len && p[i]) {
        size_t l = p[i++];
        if (l > 63 || i + l > len || o + l + 2 > cap)
            return -1;
        if (o)
            out[o++] = '.';
        memcpy(out + o, p + i, l);
        o += l;
        i += l;
    }
    out[o] = '\0';
    return i < len ? 0 : -1;
}

static bool is_our_address(const struct sockaddr_storage *a)
{
    for (int i = 0; i < cfg->nlisten; i++) {
        const struct sockaddr_storage *l = &cfg->listen[i].addr;
        if (l->ss_family != a->ss_family)
            continue;
        if (a->ss_family == AF_INET &&
            !memcmp(&((const struct sockaddr_in *)l)->sin_addr, &((const struct sockaddr_in *)a)->sin_addr, 4))
            return true;
        if (a->ss_family == AF_INET6 &&
            !memcmp(&((const struct sockaddr_in6 *)l)->sin6_addr, &((const struct sockaddr_in6 *)a)->sin6_addr, 16))
            return true;
    }
    return false;
}

static void make_target(struct mx_target *t, const struct route_req *q, size_t rec, const struct sockaddr_storage *a)
{
    const struct mx_record *r = &q->recs[rec];
    int port = q->port;
    memset(t, 0, sizeof *t);
    snprintf(t->host, sizeof t->host, "%s", r->host);
    t->mx_secure = q->mx_secure;
    t->addr_secure = !q->addr_insecure[rec];
    snprintf(t->canon, sizeof t->canon, "%s", q->canon[rec]);
    t->pref = r->pref;
    t->hop.addr = *a;
    char ip[64];
    sockaddr_ip_text((const struct sockaddr *)a, ip, sizeof ip);
    if (a->ss_family == AF_INET) {
        ((struct sockaddr_in *)&t->hop.addr)->sin_port = htons((uint16_t)port);
        t->hop.addrlen = sizeof(struct sockaddr_in);
    } else {
        ((struct sockaddr_in6 *)&t->hop.addr)->sin6_port = htons((uint16_t)port);
        t->hop.addrlen = sizeof(struct sockaddr_in6);
    }
    t->hop.lmtp = q->lmtp;
    snprintf(t->hop.text, sizeof t->hop.text, "%s:[%s]:%d", q->lmtp ? "lmtp" : "smtp", ip, port);
}

static void all_addresses_in(struct route_req *q)
{
    for (size_t i = 0; i < q->nrec; i++) {
        if (!strcasecmp(q->recs[i].host, cfg->hostname))
            q->recs[i].self = true;
        for (size_t k = 0; k < q->naddrs[i]; k++)
            if (is_our_address(&q->addrs[i][k]))
                q->recs[i].self = true;
    }
    /* keep addresses aligned with their records while filtering */
    struct mx_record kept[MAX_MX];
    memcpy(kept, q->recs, sizeof kept);
    bool best;
    size_t n = mx_keep_better_than_self(kept, q->nrec, &best);
    if (best) {
        char why[300];
        snprintf(why, sizeof why, "554 5.4.6 mail for %.200s loops back to myself (we are its best MX)", q->domain);
        finish(q, ROUTE_PERMFAIL, why, NULL, 0);
        return;
    }
    struct mx_target *t = calloc(MAX_MX * MAX_ADDRS, sizeof *t);
    size_t nt = 0;
    for (size_t j = 0; t && j < n; j++)
        for (size_t i = 0; i < q->nrec; i++)
            if (!strcmp(q->recs[i].host, kept[j].host) && q->recs[i].pref == kept[j].pref && !q->recs[i].self) {
                for (size_t k = 0; k < q->naddrs[i]; k++)
                    make_target(&t[nt++], q, i, &q->addrs[i][k]);
                q->recs[i].self = true;   /* used: do not list a duplicate twice */
            }
    if (nt) {
        finish(q, ROUTE_OK, NULL, t, nt);
        return;
    }
    free(t);
    char why[300];
    if (q->bogus[0])
        snprintf(why, sizeof why, "451 4.7.5 DNSSEC validation failed for the mail servers of %.80s: %.140s",
                 q->domain, q->bogus);
    else if (q->tempfail || !q->implicit)
        snprintf(why, sizeof why, "451 4.4.3 no address found for any mail server of %.200s", q->domain);
    else
        snprintf(why, sizeof why, "550 5.1.2 %.200s has no MX and no address record", q->domain);
    finish(q, q->tempfail || !q->implicit ? ROUTE_TEMPFAIL : ROUTE_PERMFAIL, why, NULL, 0);
}

/* The name a validated CNAME chain led to (DANE looks up TLSA there first). */
static void note_canonical(struct route_req *q, size_t rec, const char *canonname)
{
    char name[256];
    snprintf(name, sizeof name, "%s", canonname);
    size_t n = strlen(name);
    if (n && name[n - 1] == '.')
        name[n - 1] = '\0';
    if (strcasecmp(name, q->recs[rec].host))
        snprintf(q->canon[rec], sizeof q->canon[rec], "%s", name);
}

static void on_address(void *arg, int err, struct ub_result *r)
{
    struct addr_lookup *l = arg;
    struct route_req *q = l->req;
    if (r && r->bogus && !q->bogus[0])
        snprintf(q->bogus, sizeof q->bogus, "%s", r->why_bogus ? r->why_bogus : "bogus answer");
    if (!r || !r->secure)
        q->addr_insecure[l->rec] = true;
    if (r && r->secure && r->canonname && r->havedata)
        note_canonical(q, l->rec, r->canonname);
    if (err || !r || r->bogus || (r->rcode != 0 && r->rcode != RCODE_NXDOMAIN)) {
        q->tempfail = true;
    } else if (r->havedata) {
        for (int i = 0; r->data[i] && q->naddrs[l->rec] < MAX_ADDRS; i++) {
            struct sockaddr_storage ss;
            memset(&ss, 0, sizeof ss);
            if (r->qtype == RR_A && r->len[i] == 4) {
                ss.ss_family = AF_INET;
                memcpy(&((struct sockaddr_in *)&ss)->sin_addr, r->data[i], 4);
            } else if (r->qtype == RR_AAAA && r->len[i] == 16) {
                ss.ss_family = AF_INET6;
                memcpy(&((struct sockaddr_in6 *)&ss)->sin6_addr, r->data[i], 16);
            } else {
                continue;
            }
            q->addrs[l->rec][q->naddrs[l->rec]++] = ss;
        }
    }
    if (--q->outstanding == 0)
        all_addresses_in(q);
}

static void lookup_addresses(struct route_req *q)
{
    q->outstanding = (int)q->nrec * 2;
    int failed = 0;
    for (size_t i = 0; i < q->nrec; i++) {
        q->lookups[i] = (struct addr_lookup){q, i};
        if (dns_resolve(q->recs[i].host, RR_A, on_address, &q->lookups[i]) < 0)
            failed++;
        if (dns_resolve(q->recs[i].host, RR_AAAA, on_address, &q->lookups[i]) < 0)
            failed++;
    }
    if (failed) {
        q->tempfail = true;
        q->outstanding -= failed;
        if (q->outstanding == 0)
            all_addresses_in(q);
    }
}

static unsigned rnd_unsigned(void) { return (unsigned)rand(); }

static void on_mx(void *arg, int err, struct ub_result *r)
{
    struct route_req *q = arg;
    char why[300];
    if (err || !r) {
        snprintf(why, sizeof why, "451 4.4.3 DNS lookup of MX for %.200s failed", q->domain);
        finish(q, ROUTE_TEMPFAIL, why, NULL, 0);
        return;
    }
    if (r->bogus) {     /* never taken for "unsigned" (RFC 7672 2.1.1) */
        snprintf(why, sizeof why, "451 4.7.5 DNSSEC validation of the MX records of %.80s failed: %.140s",
                 q->domain, r->why_bogus ? r->why_bogus : "bogus answer");
        finish(q, ROUTE_TEMPFAIL, why, NULL, 0);
        return;
    }
    q->mx_secure = r->secure;
    if (r->rcode == RCODE_NXDOMAIN) {
        snprintf(why, sizeof why, "550 5.1.2 domain %.200s does not exist (NXDOMAIN)", q->domain);
        finish(q, ROUTE_PERMFAIL, why, NULL, 0);
        return;
    }
    if (r->rcode != 0) {
        snprintf(why, sizeof why, "451 4.4.3 DNS lookup of MX for %.200s failed (rcode %d)", q->domain, r->rcode);
        finish(q, ROUTE_TEMPFAIL, why, NULL, 0);
        return;
    }
    bool null_mx = false;
    for (int i = 0; r->havedata && r->data[i] && q->nrec < MAX_MX; i++) {
        struct mx_record *m = &q->recs[q->nrec];
        const unsigned char *d = (const unsigned char *)r->data[i];
        if (r->len[i] < 3 || wire_name(d + 2, (size_t)r->len[i] - 2, m->host, sizeof m->host) < 0)
            continue;
        m->pref = d[0] << 8 | d[1];
        m->self = false;
        if (!m->host[0]) {      /* "." : RFC 7505 null MX */
            null_mx = true;
            continue;
        }
        q->nrec++;
    }
    if (null_mx && q->nrec == 0) {
        snprintf(why, sizeof why, "556 5.1.10 %.200s does not accept mail (null MX)", q->domain);
        finish(q, ROUTE_PERMFAIL, why, NULL, 0);
        return;
    }
    if (!r->havedata) {         /* no MX: implicit MX on the domain itself */
        q->implicit = true;
        snprintf(q->recs[0].host, sizeof q->recs[0].host, "%s", q->domain);
        q->recs[0].pref = 0;
        q->nrec = 1;
    }
    mx_sort(q->recs, q->nrec, rnd_unsigned);
    lookup_addresses(q);
}

void mx_route(const char *domain, int port, bool use_mx, bool lmtp, route_cb cb, void *arg)
{
    struct route_req *q = calloc(1, sizeof *q);
    if (!q) {
        struct route_result res = {.status = ROUTE_TEMPFAIL};
        snprintf(res.reason, sizeof res.reason, "451 4.3.0 out of memory routing %.200s", domain);
        cb(arg, &res);
        return;
    }
    snprintf(q->domain, sizeof q->domain, "%s", domain);
    q->cb = cb;
    q->arg = arg;
    q->port = port;
    q->lmtp = lmtp;
    if (!use_mx) {              /* smtp:[host]: the host's own addresses; none defers (a config matter) */
        snprintf(q->recs[0].host, sizeof q->recs[0].host, "%s", domain);
        q->nrec = 1;
        lookup_addresses(q);
        return;
    }
    if (dns_resolve(domain, RR_MX, on_mx, q) < 0)
        on_mx(q, 1, NULL);
}
