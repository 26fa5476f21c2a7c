/* dns.c - libunbound context in async (thread) mode; its fd is watched by
 * the event loop and ub_process() delivers the callbacks on the loop thread. */
#include "dns.h"
#include "metrics.h"
#include "event.h"
#include "log.h"
#include "netaddr.h"
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unbound.h>

static struct ub_ctx *ctx;
static struct ev_watch watch;

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

/* The libunbound context: forwarding to server, or the system's resolver. */
static int context_setup(const char *server)
{
    ctx = ub_ctx_create();
    if (!ctx) {
        log_error("dns: cannot create the libunbound context");
        return -1;
    }
    int rc = 0;
    if (server) {
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
        /* libunbound answers the RFC 6761 name "test." itself (NXDOMAIN);
         * with an explicit server, let that server answer it (lab zones) */
        if (!rc)
            rc = ub_ctx_set_option(ctx, "local-zone:", "test. transparent");
        if (!rc)
            rc = ub_ctx_set_fwd(ctx, fwd);
    } else {
        rc = ub_ctx_resolvconf(ctx, NULL);
        if (!rc)
            rc = ub_ctx_hosts(ctx, NULL);
    }
    if (rc) {
        log_error("dns: resolver setup: %s", ub_strerror(rc));
        return -1;
    }
    return 0;
}

int dns_init(const char *server)
{
    if (context_setup(server) < 0)
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
    log_info("dns: resolving through %s", server ? server : "/etc/resolv.conf");
    return 0;
}

int dns_init_blocking(const char *server)
{
    if (context_setup(server) < 0)
        return -1;
    log_info("dns: resolving through %s (blocking lookups only)", server ? server : "/etc/resolv.conf");
    return 0;
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

static void qcache_put(const char *name, int type, const unsigned char *packet, int len, int ttl)
{
    unsigned char *copy = ttl > 0 && strlen(name) < sizeof qcache[0].name ? malloc((size_t)len) : NULL;
    if (!copy)
        return;
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
}

int dns_query_sync(const char *name, int rrtype, unsigned char *answer, size_t size)
{
    char labels[48];
    int n = qcache_get(name, rrtype, answer, size);
    if (n >= 0) {
        metric_inc(M_DNS_QUERIES, metric_labels(labels, sizeof labels, "result", "cache_hit", NULL));
        return n;
    }
    struct ub_result *r = NULL;
    int rc = ctx ? ub_resolve(ctx, name, rrtype, 1 /* IN */, &r) : UB_INITFAIL;
    if (rc) {
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
    qcache_clear();
    ub_ctx_delete(ctx);
    ctx = NULL;
}
