/* dns.c - libunbound context in async (thread) mode; its fd is watched by
 * the event loop and ub_process() delivers the callbacks on the loop thread. */
#include "dns.h"
#include "clock.h"
#include "metrics.h"
#include "event.h"
#include "log.h"
#include "netaddr.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unbound.h>
#include <unistd.h>

static struct ub_ctx *ctx;
static struct ev_watch watch;
static bool loop_driven;                 /* dns_init: the loop runs ub_process (or the pump) */
static pthread_t loop_thread;
static bool pump_running;                /* dns_init_blocking: a thread of ours runs ub_process */
static int pump_wake[2] = {-1, -1};      /* a byte written: the pump stops */
static _Atomic int timeout_ms = 5000;    /* dns_timeout, per blocking lookup */

struct pending {
    dns_cb cb;
    void *arg;
};

static void on_readable(void *c, uint32_t events)
{
    (void)c;
    (void)events;
    int rc = ub_process(ctx);
    if (rc != 0)
        log_error("dns: %s", ub_strerror(rc));
}

static void trampoline(void *mydata, int err, struct ub_result *result)
{
    struct pending *p = mydata;
    if (err)
        log_warn("dns: %s", ub_strerror(err));
    p->cb(p->arg, err, err ? NULL : result);
    if (result)
        ub_resolve_free(result);
    free(p);
}

/* libunbound's built-in local zones (unbound.conf(5), "local-zone"), all
 * but localhost's, handed to the configured server instead. */
static const char *forwarded_zones[] = {
    "test. transparent", "invalid. nodefault", "onion. nodefault", "home.arpa. nodefault",
    "resolver.arpa. nodefault", "service.arpa. nodefault",
    "0.in-addr.arpa. nodefault", "254.169.in-addr.arpa. nodefault", "2.0.192.in-addr.arpa. nodefault",
    "100.51.198.in-addr.arpa. nodefault", "113.0.203.in-addr.arpa. nodefault",
    "255.255.255.255.in-addr.arpa. nodefault",
    "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa. nodefault",
    "d.f.ip6.arpa. nodefault", "8.e.f.ip6.arpa. nodefault", "9.e.f.ip6.arpa. nodefault",
    "a.e.f.ip6.arpa. nodefault", "b.e.f.ip6.arpa. nodefault", "8.b.d.0.1.0.0.2.ip6.arpa. nodefault",
};

/* The libunbound context: forwarding to server, or the system's resolver;
 * validating DNSSEC itself from trust_anchor (never trusting another
 * resolver's AD bit), so answers carry secure/insecure/bogus (DANE). */
static int context_setup(const char *server, const char *trust_anchor)
{
    ctx = ub_ctx_create();
    if (!ctx) {
        log_error("dns: cannot create the libunbound context");
        return -1;
    }
    /* a server that once did not answer is asked again at once, not set
     * aside for minutes (one slow name must not fail every other lookup) */
    int rc = ub_ctx_set_option(ctx, "infra-keep-probing:", "yes");
    if (!rc && server) {
        /* "127.0.0.1:5353" -> "127.0.0.1@5353" (unbound's addr@port form) */
        char fwd[80];
        snprintf(fwd, sizeof fwd, "%s", server);
        char *colon = strrchr(fwd, ':');
        if (colon)
            *colon = '@';
        char *open = strchr(fwd, '['), *close = strchr(fwd, ']');
        if (open && close) {   /* "[::1]@53" -> "::1@53" */
            memmove(close, close + 1, strlen(close));
            memmove(open, open + 1, strlen(open));
        }
        rc = ub_ctx_set_option(ctx, "do-not-query-localhost:", "no");
        /* libunbound answers some names itself: "test." and the other RFC
         * 6761 names, and (RFC 6303) the reverse zones of private,
         * link-local and documentation ranges. With an explicit server,
         * everything goes to that server: SPF's ptr and %{p}, and reverse
         * lookups of 10/8, 192.168/16, 192.0.2/24, 2001:db8::/32 clients */
        for (size_t i = 0; !rc && i < sizeof forwarded_zones / sizeof forwarded_zones[0]; i++)
            rc = ub_ctx_set_option(ctx, "local-zone:", forwarded_zones[i]);
        if (!rc)
            rc = ub_ctx_set_option(ctx, "unblock-lan-zones:", "yes");
        if (!rc)
            rc = ub_ctx_set_option(ctx, "insecure-lan-zones:", "yes");
        if (!rc)
            rc = ub_ctx_set_fwd(ctx, fwd);
    } else if (!rc) {
        rc = ub_ctx_resolvconf(ctx, NULL);
        if (!rc)
            rc = ub_ctx_hosts(ctx, NULL);
    }
    if (!rc && trust_anchor && (rc = ub_ctx_add_ta_file(ctx, trust_anchor)) != 0) {
        log_error("dns: dns_trust_anchor %s: %s", trust_anchor, ub_strerror(rc));
        return -1;
    }
    if (rc) {
        log_error("dns: resolver setup: %s", ub_strerror(rc));
        return -1;
    }
    return 0;
}

int dns_init(const char *server, const char *trust_anchor)
{
    if (context_setup(server, trust_anchor) < 0)
        return -1;
    int rc = ub_ctx_async(ctx, 1);
    if (rc) {
        log_error("dns: resolver setup: %s", ub_strerror(rc));
        return -1;
    }
    if (ev_add(&watch, ub_fd(ctx), EPOLLIN, on_readable, NULL) < 0) {
        log_error("dns: cannot watch the resolver fd");
        return -1;
    }
    loop_driven = true;
    loop_thread = pthread_self();
    log_info("dns: resolving through %s%s%s", server ? server : "/etc/resolv.conf",
             trust_anchor ? ", DNSSEC trust anchor " : "", trust_anchor ? trust_anchor : "");
    return 0;
}

void dns_set_timeout(int ms) { timeout_ms = ms > 0 ? ms : 5000; }

/* Without posternd's loop (postern-milter, the CLI), this thread answers
 * the asynchronous lookups behind dns_query_sync, so that dns_timeout
 * bounds them there too. */
static void *pump(void *arg)
{
    (void)arg;
    struct pollfd p[2] = {{.fd = ub_fd(ctx), .events = POLLIN}, {.fd = pump_wake[0], .events = POLLIN}};
    while (!p[1].revents) {
        if (poll(p, 2, -1) > 0 && (p[0].revents & POLLIN)) {
            int rc = ub_process(ctx);
            if (rc != 0)
                log_error("dns: %s", ub_strerror(rc));
        }
    }
    return NULL;
}

int dns_init_blocking(const char *server, const char *trust_anchor)
{
    if (context_setup(server, trust_anchor) < 0)
        return -1;
    int rc = ub_ctx_async(ctx, 1), terr = 0;
    if (rc == 0 && pipe2(pump_wake, O_CLOEXEC) < 0)
        terr = errno;
    else if (rc == 0 && (terr = pthread_create(&loop_thread, NULL, pump, NULL)) != 0) {
        close(pump_wake[0]);
        close(pump_wake[1]);
    }
    if (rc == 0 && terr == 0) {
        pump_running = loop_driven = true;
    } else {
        log_warn("dns: no resolver thread (%s): lookups keep libunbound's own timing",
                 rc ? ub_strerror(rc) : strerror(terr));
    }
    log_info("dns: resolving through %s (blocking lookups only)", server ? server : "/etc/resolv.conf");
    return 0;
}

/* A policy run's canned answers: one resource record per line in zone
 * file form, "#" or ";" comments. Every other name is answered "no such
 * name" by a static local zone at the root: nothing leaves the machine. */
int dns_init_canned(const char *file, char *err, size_t errlen)
{
    err[0] = '\0';
    FILE *f = fopen(file, "r");
    if (!f) {
        snprintf(err, errlen, "--dns-file %s: %s", file, strerror(errno));
        return -1;
    }
    int rc = (ctx = ub_ctx_create()) ? ub_ctx_zone_add(ctx, ".", "static") : UB_NOMEM;
    char line[4096];
    for (int n = 1; rc == 0 && fgets(line, sizeof line, f); n++) {
        line[strcspn(line, "\r\n")] = '\0';
        const char *p = line + strspn(line, " \t");
        if (!*p || *p == '#' || *p == ';')
            continue;
        if ((rc = ub_ctx_data_add(ctx, p)) != 0)
            snprintf(err, errlen, "--dns-file %s line %d: %s: %s", file, n, ub_strerror(rc), p);
    }
    fclose(f);
    if (rc && !err[0])
        snprintf(err, errlen, "--dns-file %s: %s", file, ub_strerror(rc));
    return rc ? -1 : 0;
}

int dns_resolve(const char *name, int rrtype, dns_cb cb, void *arg)
{
    struct pending *p = malloc(sizeof *p);
    if (!p)
        return -1;
    p->cb = cb;
    p->arg = arg;
    int rc = ub_resolve_async(ctx, name, rrtype, 1 /* IN */, p, trampoline, NULL);
    if (rc) {
        log_error("dns: %s: %s", name, ub_strerror(rc));
        free(p);
        return -1;
    }
    return 0;
}

/* A small cache in front of the blocking lookups plugins make: ub_resolve()
 * builds a resolver worker per call, and the same few names (a DKIM key, a
 * _dmarc record, an SPF record) repeat message after message. Entries live
 * for the answer's TTL (at most an hour); the copied packet keeps its
 * original TTL fields. */
#define QCACHE_SLOTS 1024
struct qcache_entry {
    char name[256];
    int type;
    time_t expires;
    int len;
    unsigned char *packet;
};
static struct qcache_entry qcache[QCACHE_SLOTS];
static pthread_mutex_t qcache_lock = PTHREAD_MUTEX_INITIALIZER;

static struct qcache_entry *qcache_slot(const char *name, int type)
{
    uint32_t h = 2166136261u ^ (uint32_t)type;
    for (const char *p = name; *p; p++)
        h = (h ^ (uint32_t)(unsigned char)(*p | 0x20)) * 16777619u;
    return &qcache[h % QCACHE_SLOTS];
}

static int qcache_get(const char *name, int type, unsigned char *answer, size_t size)
{
    int n = -1;
    pthread_mutex_lock(&qcache_lock);
    struct qcache_entry *e = qcache_slot(name, type);
    if (e->packet && e->type == type && !strcasecmp(e->name, name) && e->expires > time(NULL) &&
        (size_t)e->len <= size) {
        memcpy(answer, e->packet, (size_t)e->len);
        n = e->len;
    }
    pthread_mutex_unlock(&qcache_lock);
    return n;
}

/* Whether it was kept (an answer with no TTL, or a name too long, is not). */
static bool qcache_put(const char *name, int type, const unsigned char *packet, int len, int ttl)
{
    unsigned char *copy = ttl > 0 && strlen(name) < sizeof qcache[0].name ? malloc((size_t)len) : NULL;
    if (!copy)
        return false;
    memcpy(copy, packet, (size_t)len);
    pthread_mutex_lock(&qcache_lock);
    struct qcache_entry *e = qcache_slot(name, type);
    free(e->packet);
    snprintf(e->name, sizeof e->name, "%s", name);
    e->type = type;
    e->len = len;
    e->packet = copy;
    e->expires = time(NULL) + (ttl < 3600 ? ttl : 3600);
    pthread_mutex_unlock(&qcache_lock);
    return true;
}

/* Can a query carry this name (RFC 1035 2.3.4: labels of 1-63 octets,
 * 255 octets on the wire, so 253 as text)? A trailing dot is allowed. */
static bool name_queryable(const char *name)
{
    size_t len = strlen(name);
    if (len && name[len - 1] == '.')
        len--;
    if (len == 0 || len > 253)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        if (name[i] != '.') {
            if (++label > 63)
                return false;
            continue;
        }
        if (label == 0)
            return false;       /* an empty label: "a..b", ".a" */
        label = 0;
    }
    return label > 0;
}

/* A reply that says "no such name" (RCODE 3), with no question. */
static int nxdomain_reply(unsigned char *answer, size_t size)
{
    static const unsigned char header[12] = {0, 0, 0x81, 0x83, 0, 0, 0, 0, 0, 0, 0, 0};  /* QR RD RA, NXDOMAIN */
    if (size < sizeof header)
        return -1;
    memcpy(answer, header, sizeof header);
    return (int)sizeof header;
}

/* One blocking lookup from a worker, answered on the loop thread (which
 * runs ub_process) or given up after dns_timeout. Both sides hold it; the
 * last to let go frees it. */
struct timed_query {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    int refs;
    int err;
    struct ub_result *result;
};

static void timed_unref(struct timed_query *q)
{
    pthread_mutex_lock(&q->lock);
    bool last = --q->refs == 0;
    pthread_mutex_unlock(&q->lock);
    if (!last)
        return;
    if (q->result)
        ub_resolve_free(q->result);
    pthread_cond_destroy(&q->cond);
    pthread_mutex_destroy(&q->lock);
    free(q);
}

static void timed_answer(void *arg, int err, struct ub_result *result)
{
    struct timed_query *q = arg;
    pthread_mutex_lock(&q->lock);
    q->done = true;
    q->err = err;
    q->result = result;
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->lock);
    timed_unref(q);
}

/* ub_resolve with a deadline: 0 and *out (the caller frees it), or an
 * unbound error code (UB_NOMEM, ..., or -1 for the timeout). */
static int resolve_timed(const char *name, int rrtype, struct ub_result **out)
{
    /* postern-milter (no loop), or the loop itself (a plugin init during a
     * reload): nobody else would process the answer, so libunbound's own timing */
    if (!loop_driven || pthread_equal(pthread_self(), loop_thread))
        return ub_resolve(ctx, name, rrtype, 1 /* IN */, out);
    struct timed_query *q = calloc(1, sizeof *q);
    if (!q)
        return UB_NOMEM;
    pthread_mutex_init(&q->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->cond, &ca);
    pthread_condattr_destroy(&ca);
    q->refs = 2;
    int id = 0;
    int rc = ub_resolve_async(ctx, name, rrtype, 1 /* IN */, q, timed_answer, &id);
    if (rc) {
        q->refs = 1;
        timed_unref(q);
        return rc;
    }
    struct timespec deadline = clock_deadline_ms(CLOCK_MONOTONIC, timeout_ms);
    pthread_mutex_lock(&q->lock);
    while (!q->done && pthread_cond_timedwait(&q->cond, &q->lock, &deadline) == 0)
        ;
    bool done = q->done;
    if (done) {
        rc = q->err;
        *out = q->result;
        q->result = NULL;
    }
    pthread_mutex_unlock(&q->lock);
    if (!done && ub_cancel(ctx, id) == 0)
        timed_unref(q);          /* cancelled: the answer will never come */
    timed_unref(q);
    return done ? rc : -1;
}

int dns_query_cached(const char *name, int rrtype, unsigned char *answer, size_t size)
{
    char labels[48];
    /* RFC 7208 4.3, 4.6.4, 5: a name no query can carry (from a record or
     * a macro expansion) does not exist; it is not a failure to retry */
    if (!name_queryable(name)) {
        metric_inc(M_DNS_QUERIES, metric_labels(labels, sizeof labels, "result", "unqueryable_name", NULL));
        return nxdomain_reply(answer, size);
    }
    int n = qcache_get(name, rrtype, answer, size);
    if (n >= 0)
        metric_inc(M_DNS_QUERIES, metric_labels(labels, sizeof labels, "result", "cache_hit", NULL));
    return n >= 0 ? n : DNS_NOT_CACHED;
}

int dns_query_sync(const char *name, int rrtype, unsigned char *answer, size_t size)
{
    char labels[48];
    int n = dns_query_cached(name, rrtype, answer, size);
    if (n != DNS_NOT_CACHED)
        return n;
    struct ub_result *r = NULL;
    int rc = ctx ? resolve_timed(name, rrtype, &r) : UB_INITFAIL;
    if (rc) {
        if (rc == -1)
            log_warn("dns: %s: no answer within dns_timeout (%d ms)", name, (int)timeout_ms);
        else
            log_warn("dns: %s: %s", name, ub_strerror(rc));
        metric_inc(M_DNS_QUERIES, metric_labels(labels, sizeof labels, "result", "failed", NULL));
        return -1;
    }
    metric_inc(M_DNS_QUERIES, metric_labels(labels, sizeof labels, "result", "answered", NULL));
    if (r->answer_packet && r->answer_len > 0 && (size_t)r->answer_len <= size) {
        memcpy(answer, r->answer_packet, (size_t)r->answer_len);
        n = r->answer_len;
        if (r->rcode == 0 || r->rcode == 3 /* NXDOMAIN */)    /* never cache failures */
            qcache_put(name, rrtype, answer, n, r->ttl);
    }
    ub_resolve_free(r);
    return n;
}

#define TEXT_ANSWER_MAX 32      /* records kept from one answer */

void dns_text_answer_free(struct dns_text_answer *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->n; i++)
        free(a->rr[i]);
    free(a->rr);
    free(a);
}

/* One record of r as text, or NULL. */
static char *record_text(const struct ub_result *r, int i)
{
    const unsigned char *d = (const unsigned char *)r->data[i];
    size_t len = (size_t)r->len[i];
    char out[2048];
    if ((r->qtype == 1 && len == 4) || (r->qtype == 28 && len == 16))
        return inet_ntop(r->qtype == 1 ? AF_INET : AF_INET6, d, out, sizeof out) ? strdup(out) : NULL;
    if (r->qtype == 16) {            /* TXT: character-strings, joined */
        size_t o = 0;
        for (size_t k = 0; k < len && o < sizeof out - 1;) {
            size_t l = d[k++];
            for (size_t c = 0; c < l && k < len && o < sizeof out - 1; c++, k++)
                out[o++] = d[k] >= ' ' && d[k] < 0x7f ? (char)d[k] : '?';
        }
        out[o] = '\0';
        return strdup(out);
    }
    size_t skip = r->qtype == 15 ? 2 : 0;    /* MX: preference, then a name; PTR: a name */
    if ((r->qtype != 15 && r->qtype != 12) || len <= skip)
        return NULL;
    size_t o = skip ? (size_t)snprintf(out, sizeof out, "%u ", d[0] << 8 | d[1]) : 0;
    bool first = true;
    for (size_t k = skip; k < len && d[k] && o < sizeof out - 66; first = false) {
        size_t l = d[k++];
        if (l > 63 || k + l > len)
            return NULL;
        if (!first)
            out[o++] = '.';
        for (size_t c = 0; c < l; c++)
            out[o++] = d[k + c] > ' ' && d[k + c] < 0x7f ? (char)d[k + c] : '?';
        k += l;
    }
    out[o] = '\0';
    return strdup(out);
}

static struct dns_text_answer *text_answer(int err, const struct ub_result *r)
{
    struct dns_text_answer *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->status = err || !r || r->bogus || (r->rcode != 0 && r->rcode != 3) ? -1 : 0;
    if (a->status == 0 && r->havedata) {
        size_t n = 0;
        while (r->data[n] && n < TEXT_ANSWER_MAX)
            n++;
        a->rr = calloc(n ? n : 1, sizeof *a->rr);
        for (size_t i = 0; a->rr && i < n; i++)
            if ((a->rr[a->n] = record_text(r, (int)i)))
                a->n++;
    }
    return a;
}

/* Lookups for dns_lookup_text and dns_fetch in flight, so that dns_tick
 * and shutdown can answer them. */
struct text_query {
    dns_text_cb cb;
    dns_fetch_cb fetch;          /* set for dns_fetch (cb is NULL) */
    char name[256];
    int type;
    void *arg;
    int id;
    uint64_t started_ms;
    struct text_query *prev, *next;
};
static struct text_query *text_queries;
static pthread_mutex_t text_lock = PTHREAD_MUTEX_INITIALIZER;

static void text_unlink(struct text_query *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        text_queries = q->next;
    if (q->next)
        q->next->prev = q->prev;
}

/* A dns_fetch answer into the cache, as dns_query_sync would keep it. */
static enum dns_fetch_result fetch_store(const struct text_query *q, int err, const struct ub_result *r)
{
    if (err || !r || !r->answer_packet || r->answer_len <= 0 || (r->rcode != 0 && r->rcode != 3))
        return DNS_FETCH_FAILED;
    return qcache_put(q->name, q->type, r->answer_packet, r->answer_len, r->ttl) ? DNS_FETCH_CACHED
                                                                                 : DNS_FETCH_UNCACHED;
}

/* A lookup that ended without an answer (timeout, shutdown). */
static void query_failed(struct text_query *q)
{
    if (q->fetch)
        q->fetch(q->arg, DNS_FETCH_FAILED, q->name, q->type);
    else
        q->cb(q->arg, text_answer(UB_SERVFAIL, NULL));
    free(q);
}

static void text_answered(void *arg, int err, struct ub_result *r)
{
    struct text_query *q = arg;
    pthread_mutex_lock(&text_lock);
    text_unlink(q);
    pthread_mutex_unlock(&text_lock);
    if (q->fetch)
        q->fetch(q->arg, fetch_store(q, err, r), q->name, q->type);
    else
        q->cb(q->arg, text_answer(err, r));
    if (r)
        ub_resolve_free(r);          /* the callback owns libunbound's result */
    free(q);
}

void dns_tick(void)
{
    uint64_t now = clock_mono_ms();
    struct text_query *late = NULL;
    pthread_mutex_lock(&text_lock);
    for (struct text_query *q = text_queries, *next; q; q = next) {
        next = q->next;
        if (now - q->started_ms < (uint64_t)timeout_ms)
            continue;
        text_unlink(q);
        ub_cancel(ctx, q->id);       /* its callback will not come */
        q->next = late;
        late = q;
    }
    pthread_mutex_unlock(&text_lock);
    for (struct text_query *q = late, *next; q; q = next) {
        next = q->next;
        log_warn("dns: %s%sa lookup got no answer within dns_timeout (%d ms)", q->name, q->name[0] ? ": " : "",
                 (int)timeout_ms);
        query_failed(q);
    }
}

/* Shutdown: every lookup still out is cancelled and answered as failed. */
static void text_queries_cancel(void)
{
    pthread_mutex_lock(&text_lock);
    struct text_query *q = text_queries;
    text_queries = NULL;
    pthread_mutex_unlock(&text_lock);
    while (q) {
        struct text_query *next = q->next;
        ub_cancel(ctx, q->id);
        query_failed(q);
        q = next;
    }
}

/* Ask for q's answer and keep q on the list until it comes (text_answered)
 * or dns_tick gives up; 0, or -1 with q freed. */
static int query_start(struct text_query *q, const char *name, int rrtype)
{
    /* libunbound's context is locked inside: any thread may ask; the answer
     * comes through ub_process on the loop (which waits for text_lock) */
    pthread_mutex_lock(&text_lock);
    int rc = ub_resolve_async(ctx, name, rrtype, 1 /* IN */, q, text_answered, &q->id);
    if (rc == 0) {
        q->next = text_queries;
        if (text_queries)
            text_queries->prev = q;
        text_queries = q;
    }
    pthread_mutex_unlock(&text_lock);
    if (rc != 0)
        free(q);
    return rc ? -1 : 0;
}

int dns_lookup_text(const char *name, int rrtype, dns_text_cb cb, void *arg)
{
    if (!ctx)
        return -1;
    if (!name_queryable(name)) {
        cb(arg, calloc(1, sizeof(struct dns_text_answer)));     /* no such name: no records */
        return 0;
    }
    if (!loop_driven || pump_running) {      /* no loop to answer on: blocking, within dns_timeout */
        struct ub_result *r = NULL;
        int rc = resolve_timed(name, rrtype, &r);
        cb(arg, text_answer(rc, r));
        if (r)
            ub_resolve_free(r);
        return 0;
    }
    struct text_query *q = malloc(sizeof *q);
    if (!q)
        return -1;
    *q = (struct text_query){.cb = cb, .arg = arg, .started_ms = clock_mono_ms()};
    return query_start(q, name, rrtype);
}

int dns_fetch(const char *name, int rrtype, dns_fetch_cb cb, void *arg)
{
    if (!ctx || !loop_driven || pump_running || !name_queryable(name) || strlen(name) >= 256)
        return -1;
    struct text_query *q = malloc(sizeof *q);
    if (!q)
        return -1;
    *q = (struct text_query){.fetch = cb, .arg = arg, .type = rrtype, .started_ms = clock_mono_ms()};
    snprintf(q->name, sizeof q->name, "%s", name);
    return query_start(q, name, rrtype);
}

static void qcache_clear(void)
{
    for (size_t i = 0; i < QCACHE_SLOTS; i++) {
        free(qcache[i].packet);
        qcache[i].packet = NULL;
    }
}

void dns_shutdown(void)
{
    if (!ctx)
        return;
    if (watch.fd > 0)
        ev_del(&watch);
    if (pump_running) {
        while (write(pump_wake[1], "x", 1) < 0 && errno == EINTR)
            ;
        pthread_join(loop_thread, NULL);
        close(pump_wake[0]);
        close(pump_wake[1]);
        pump_running = loop_driven = false;
    }
    text_queries_cancel();
    qcache_clear();
    ub_ctx_delete(ctx);
    ctx = NULL;
}
