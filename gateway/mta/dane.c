/* dane.c - DANE for SMTP (RFC 7672) on top of dns.c (libunbound, which
 * validates DNSSEC itself from dns_trust_anchor).
 *
 * Per MX server: its address records insecure -> no DANE (2.2.2); else
 * the TLSA RRset at _PORT._tcp.HOST (first at the CNAME target, then at
 * the name itself). Secure usable records -> TLS authenticated by them;
 * secure records none of which is usable -> mandatory TLS ("encrypt");
 * no records or an insecure answer -> the policy's fallback (`dane`) or
 * not this server (`dane-only`); a bogus or failed lookup -> never this
 * server, which the caller turns into a deferral (2.1.1: bogus is never
 * "unsigned"). */
#include "dane.h"
#include "dns.h"
#include "log.h"
#include <arpa/inet.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unbound.h>

#define RR_TLSA 52
#define RCODE_NXDOMAIN 3

enum outcome { NO_RECORDS, USABLE, NONE_USABLE, FAILED };

struct dane_req;
struct host_lookup {             /* one TLSA lookup per distinct server name */
    struct dane_req *req;
    size_t first;                /* its first target */
    bool at_canon;               /* looking at the CNAME target now */
    enum outcome outcome;
    const char *no_records;      /* why NO_RECORDS: for dane-only's reason */
    bool bogus;                  /* FAILED by DNSSEC validation */
    struct dane_tlsa *tlsa;
    char why[256];
};

struct dane_req {
    struct mx_target *t;
    size_t n;
    char domain[256];
    bool mx_route;
    const struct tls_policy *policy;
    struct dane_skip *skip;
    dane_cb cb;
    void *arg;
    struct host_lookup *hosts;
    size_t nhosts;
    int outstanding;
};

/* Matching type 0 carries the whole certificate (selector 0) or public
 * key (1) in DER: usable only if all of it parses. */
static bool full_value_parses(uint8_t selector, const unsigned char *der, size_t len)
{
    if (len > 65535)
        return false;
    const unsigned char *p = der;
    bool ok;
    if (selector == 0) {
        X509 *x = d2i_X509(NULL, &p, (long)len);
        ok = x != NULL;
        X509_free(x);
    } else {
        EVP_PKEY *k = d2i_PUBKEY(NULL, &p, (long)len);
        ok = k != NULL;
        EVP_PKEY_free(k);
    }
    return ok && p == der + len;
}

int dane_parse_rdata(const unsigned char *rd, size_t len, struct dane_record *out)
{
    if (len < 4)
        return -1;      /* usage, selector, matching type, and some data */
    out->usage = rd[0];
    out->selector = rd[1];
    out->mtype = rd[2];
    out->len = len - 3;
    out->data = NULL;
    if (out->usage != 2 && out->usage != 3)
        return 0;       /* PKIX-TA(0), PKIX-EE(1) are not for SMTP (RFC 7672 3.1.3) */
    if (out->selector > 1 || out->mtype > 2)
        return 0;
    if ((out->mtype == 1 && out->len != 32) || (out->mtype == 2 && out->len != 64))
        return 0;       /* a digest of the wrong length matches nothing (RFC 7671 5.1) */
    if (out->mtype == 0 && !full_value_parses(out->selector, rd + 3, out->len))
        return 0;       /* a whole certificate or key that is not one */
    return 1;
}

struct dane_tlsa *dane_tlsa_ref(struct dane_tlsa *t)
{
    if (t)
        t->refs++;
    return t;
}

void dane_tlsa_unref(struct dane_tlsa *t)
{
    if (!t || --t->refs > 0)
        return;
    for (size_t i = 0; i < t->n; i++)
        free(t->rr[i].data);
    free(t);
}

bool dane_tlsa_same(const struct dane_tlsa *a, const struct dane_tlsa *b)
{
    if (a == b)
        return true;
    if (!a || !b || a->n != b->n || strcmp(a->base, b->base) || strcmp(a->names[0], b->names[0]) ||
        strcmp(a->names[1], b->names[1]))
        return false;
    for (size_t i = 0; i < a->n; i++) {
        const struct dane_record *x = &a->rr[i], *y = &b->rr[i];
        if (x->usage != y->usage || x->selector != y->selector || x->mtype != y->mtype || x->len != y->len ||
            memcmp(x->data, y->data, x->len))
            return false;
    }
    return true;
}

void mx_targets_release(struct mx_target *t, size_t n)
{
    for (size_t i = 0; t && i < n; i++) {
        dane_tlsa_unref(t[i].tlsa);
        t[i].tlsa = NULL;
    }
}

static int target_port(const struct mx_target *t)
{
    const struct sockaddr *sa = (const struct sockaddr *)&t->hop.addr;
    return ntohs(sa->sa_family == AF_INET6 ? ((const struct sockaddr_in6 *)sa)->sin6_port
                                           : ((const struct sockaddr_in *)sa)->sin_port);
}

/* The usable records of a secure TLSA answer, or NULL with h->outcome set. */
static struct dane_tlsa *usable_records(struct host_lookup *h, const struct ub_result *r, const char *base)
{
    struct dane_tlsa *set = calloc(1, sizeof *set);
    if (!set) {
        h->outcome = FAILED;
        snprintf(h->why, sizeof h->why, "out of memory");
        return NULL;
    }
    set->refs = 1;
    snprintf(set->base, sizeof set->base, "%s", base);
    for (int i = 0; r->data[i] && set->n < DANE_MAX_RECORDS; i++) {
        struct dane_record rec;
        if (dane_parse_rdata((const unsigned char *)r->data[i], (size_t)r->len[i], &rec) != 1)
            continue;
        rec.data = malloc(rec.len);
        if (!rec.data)
            continue;
        memcpy(rec.data, (const unsigned char *)r->data[i] + 3, rec.len);
        set->rr[set->n++] = rec;
    }
    if (set->n == 0) {
        free(set);
        h->outcome = NONE_USABLE;
        return NULL;
    }
    return set;
}

static void host_lookup_start(struct host_lookup *h);
static void req_finish(struct dane_req *q);

static void on_tlsa(void *arg, int err, struct ub_result *r)
{
    struct host_lookup *h = arg;
    struct mx_target *t = &h->req->t[h->first];
    const char *base = h->at_canon ? t->canon : t->host;
    if (err || !r || r->bogus || (r->rcode != 0 && r->rcode != RCODE_NXDOMAIN)) {
        h->outcome = FAILED;
        h->bogus = r && r->bogus;
        if (r && r->bogus)
            snprintf(h->why, sizeof h->why, "DNSSEC validation of the TLSA records of %.80s failed: %.90s", base,
                     r->why_bogus ? r->why_bogus : "bogus answer");
        else
            snprintf(h->why, sizeof h->why, "TLSA lookup for %.80s failed (%s)", base,
                     err ? ub_strerror(err) : r ? "server failure" : "no answer");
    } else if (!r->secure) {
        h->outcome = NO_RECORDS;      /* an insecure TLSA RRset is not used (2.2) */
        h->no_records = "its TLSA answer is not DNSSEC-signed";
    } else if (r->havedata) {
        h->tlsa = usable_records(h, r, base);
        if (h->tlsa)
            h->outcome = USABLE;
    } else if (h->at_canon) {         /* none at the CNAME target: try the name itself */
        h->at_canon = false;
        host_lookup_start(h);
        return;
    } else {
        h->outcome = NO_RECORDS;
        h->no_records = "it publishes no TLSA records";
    }
    if (--h->req->outstanding == 0)
        req_finish(h->req);
}

static void host_lookup_start(struct host_lookup *h)
{
    struct mx_target *t = &h->req->t[h->first];
    char name[300];
    snprintf(name, sizeof name, "_%d._tcp.%s", target_port(t), h->at_canon ? t->canon : t->host);
    if (dns_resolve(name, RR_TLSA, on_tlsa, h) < 0)
        on_tlsa(h, UB_NOMEM, NULL);
}

/* The names a DANE-TA(2) certificate may carry besides the base domain. */
static void reference_names(const struct dane_req *q, const struct mx_target *t, struct dane_tlsa *set)
{
    if (strcasecmp(set->base, t->host))
        snprintf(set->names[0], sizeof set->names[0], "%s", t->host);
    if (q->mx_route && t->mx_secure && strcasecmp(q->domain, t->host))
        snprintf(set->names[1], sizeof set->names[1], "%s", q->domain);   /* 3.2.2: a secure MX */
}

/* What one server gets under the job's policy. */
static void decide(struct dane_req *q, size_t i, const struct host_lookup *h)
{
    struct mx_target *t = &q->t[i];
    bool only = q->policy->level == TLS_DANE_ONLY;
    enum tls_level fallback = q->policy->fallback;
    switch (h->outcome) {
    case USABLE:
        t->tls = tls_policy_of_level(TLS_DANE);
        t->tlsa = dane_tlsa_ref(h->tlsa);
        return;
    case NONE_USABLE:
        if (!only) {      /* TLSA records say "TLS", but none can authenticate: encrypt */
            t->tls = tls_policy_of_level(fallback > TLS_ENCRYPT ? fallback : TLS_ENCRYPT);
            return;
        }
        snprintf(q->skip[i].why, sizeof q->skip[i].why,
                 "4.7.5 dane-only: the TLSA records of %.200s are all unusable for SMTP", t->host);
        q->skip[i].result = "tlsa-invalid";
        break;
    case NO_RECORDS:
        if (!only) {
            t->tls = tls_policy_of_level(fallback);
            return;
        }
        snprintf(q->skip[i].why, sizeof q->skip[i].why,
                 "4.7.5 dane-only: no DNSSEC-validated TLSA records for %.150s (%s)", t->host, h->no_records);
        q->skip[i].result = "dane-required";
        break;
    case FAILED:
        snprintf(q->skip[i].why, sizeof q->skip[i].why, "4.7.5 DANE: %s", h->why);
        q->skip[i].result = h->bogus ? "dnssec-invalid" : "validation-failure";
        break;
    }
    t->tls = NULL;
}

static void req_finish(struct dane_req *q)
{
    for (size_t i = 0; i < q->n; i++)
        for (size_t k = 0; k < q->nhosts; k++)
            if (!strcasecmp(q->t[i].host, q->t[q->hosts[k].first].host)) {
                decide(q, i, &q->hosts[k]);
                break;
            }
    for (size_t k = 0; k < q->nhosts; k++) {
        if (q->hosts[k].tlsa)
            reference_names(q, &q->t[q->hosts[k].first], q->hosts[k].tlsa);
        dane_tlsa_unref(q->hosts[k].tlsa);
    }
    dane_cb cb = q->cb;
    void *arg = q->arg;
    free(q->hosts);
    free(q);
    cb(arg);
}

void dane_resolve(struct mx_target *t, size_t n, const char *domain, bool mx_route, const struct tls_policy *policy,
                  struct dane_skip *skip, dane_cb cb, void *arg)
{
    struct dane_req *q = calloc(1, sizeof *q);
    struct host_lookup *hosts = q ? calloc(n ? n : 1, sizeof *hosts) : NULL;
    if (!hosts) {
        free(q);
        for (size_t i = 0; i < n; i++) {
            t[i].tls = NULL;
            snprintf(skip[i].why, sizeof skip[i].why, "4.3.0 DANE: out of memory");
        }
        cb(arg);
        return;
    }
    *q = (struct dane_req){.t = t, .n = n, .mx_route = mx_route, .policy = policy, .skip = skip, .cb = cb,
                           .arg = arg, .hosts = hosts};
    snprintf(q->domain, sizeof q->domain, "%s", domain);
    for (size_t i = 0; i < n; i++) {     /* one lookup per server name */
        size_t k = 0;
        while (k < q->nhosts && strcasecmp(t[q->hosts[k].first].host, t[i].host))
            k++;
        if (k < q->nhosts)
            continue;
        q->hosts[q->nhosts++] = (struct host_lookup){.req = q, .first = i, .at_canon = t[i].canon[0] != '\0',
                                                     .outcome = NO_RECORDS,
                                                     .no_records = "its address records are not DNSSEC-signed"};
    }
    /* count first: an answer may come back at once */
    size_t secure = 0;
    for (size_t k = 0; k < q->nhosts; k++)
        secure += t[q->hosts[k].first].addr_secure;
    q->outstanding = (int)secure + 1;
    for (size_t k = 0; k < q->nhosts; k++)
        if (t[q->hosts[k].first].addr_secure)
            host_lookup_start(&q->hosts[k]);
    if (--q->outstanding == 0)
        req_finish(q);
}

const struct tls_policy *dane_without_tlsa(const struct tls_policy *policy)
{
    return policy->level == TLS_DANE ? tls_policy_of_level(policy->fallback) : NULL;
}

const struct tls_policy *dane_waived(const struct tls_policy *policy) { return tls_policy_of_level(policy->fallback); }

int dane_ssl_setup(SSL *ssl, const struct dane_tlsa *tlsa)
{
    if (SSL_dane_enable(ssl, tlsa->base) <= 0)
        return -1;
    SSL_set_tlsext_host_name(ssl, tlsa->base);     /* RFC 7672 8.1: SNI is the TLSA base domain */
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    for (size_t i = 0; i < 2; i++)
        if (tlsa->names[i][0])
            SSL_add1_host(ssl, tlsa->names[i]);
    int usable = 0;
    for (size_t i = 0; i < tlsa->n; i++) {
        const struct dane_record *r = &tlsa->rr[i];
        usable += SSL_dane_tlsa_add(ssl, r->usage, r->selector, r->mtype, r->data, r->len) > 0;
    }
    if (!usable)
        return -1;
    SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
    return 0;
}

void dane_describe(SSL *ssl, char *out, size_t size)
{
    uint8_t usage = 0, selector = 0, mtype = 0;
    int depth = SSL_get0_dane_tlsa(ssl, &usage, &selector, &mtype, NULL, NULL);
    if (depth < 0)
        snprintf(out, size, "no TLSA record matched");
    else
        snprintf(out, size, "TLSA %u %u %u matched the certificate at depth %d", usage, selector, mtype, depth);
}
