/* delivery.c - destinations and their connection pools (as OpenSMTPD's
 * mta.c is to mta_session.c; one connection's protocol is smtp_client.c).
 * A job is routed (transport address, host name, or MX; then DANE and
 * MTA-STS decide each server's TLS level),
 * paced (dest_rate_limit), then queued on the destination of its current
 * server; each destination runs up to dest_concurrency connections, reused
 * across jobs. Recipients left with a 4xx move on to the next MX server;
 * when there is none, every outcome goes back through the job's callbacks,
 * with one log line per recipient per attempt. */
#include "delivery.h"
#include "clock.h"
#include "kv.h"
#include "dane.h"
#include "runtime.h"
#include "metrics.h"
#include "event.h"
#include "log.h"
#include "mta_sts.h"
#include "mx.h"
#include "smtp_client.h"
#include "suspend.h"
#include "tlsrpt.h"
#include "track.h"
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Jobs waiting, first in first out (linked through job->next). */
struct job_fifo {
    struct delivery_job *head, *tail;
    size_t len;
};

static void fifo_push(struct job_fifo *q, struct delivery_job *j)
{
    j->next = NULL;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    q->len++;
}

static struct delivery_job *fifo_pop(struct job_fifo *q)
{
    struct delivery_job *j = q->head;
    if (j) {
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
        q->len--;
    }
    return j;
}

/* A destination's waiting jobs by priority (named queues): the highest
 * priority whose first job's queue is under its concurrency goes next. */
struct job_waiting {
    struct job_fifo level[QUEUE_PRIORITIES];
    size_t len;
};

static int job_priority(const struct delivery_job *j) { return j->queue ? j->queue->priority : 0; }

static bool queue_full(const struct named_queue *q)
{
    return q && q->concurrency && *q->in_flight >= q->concurrency;
}


static void waiting_push(struct job_waiting *w, struct delivery_job *j)
{
    fifo_push(&w->level[job_priority(j)], j);
    w->len++;
}

/* The level the next job comes from, or NULL (none, or all full). */
static struct job_fifo *waiting_next(struct job_waiting *w)
{
    for (int p = QUEUE_PRIORITIES - 1; p >= 0; p--)
        if (w->level[p].head && !queue_full(w->level[p].head->queue))
            return &w->level[p];
    return NULL;
}

static struct delivery_job *waiting_pop(struct job_waiting *w)
{
    struct job_fifo *f = waiting_next(w);
    if (!f)
        return NULL;
    w->len--;
    return fifo_pop(f);
}

/* Every waiting job, highest priority first, into one list; w is empty. */
static struct job_fifo waiting_take_all(struct job_waiting *w)
{
    struct job_fifo all = {0};
    for (int p = QUEUE_PRIORITIES - 1; p >= 0; p--)
        for (struct delivery_job *j; (j = fifo_pop(&w->level[p]));)
            fifo_push(&all, j);
    w->len = 0;
    return all;
}

struct dconn {
    struct smtp_client *cl;
    bool idle;                       /* ready and without a job */
    bool ready_once;                 /* past its greeting, EHLO, TLS, AUTH */
    struct dconn *next;
};

struct dest {
    struct runtime *rt;              /* held: tls and auth point into its config */
    struct nexthop hop;              /* a copy: MX targets are not in the config */
    const struct tls_policy *tls;
    struct dane_tlsa *tlsa;          /* held: TLS_DANE's records */
    char name[256];                  /* the server's host name (TLS verify), or "" */
    const struct sasl_entry *auth;   /* smtp_sasl_password_maps entry, or NULL */
    const struct egress_source *source;   /* connections' source and HELO (limits are per source, too) */
    const struct provider *provider;      /* the MX provider whose shared limit it counts in, or NULL */
    struct provider_use *use;             /* ... and its counters for this source (NULL: no limit) */
    bool tls_broken;                 /* "may" and the handshake failed: plain text next time */
    struct job_waiting waiting;      /* jobs for a connection, by priority */
    int nconns;
    struct dconn *conns;
    struct dest *next;
};

/* dest_rate_limit: the next start allowed for a recipient domain from one
 * egress source (each has its own reputation), and the jobs holding later
 * slots (in slot order); or the same for a named queue's rate (for_queue:
 * domain is the queue's name, source NULL). */
struct pace {
    char domain[256];
    const struct egress_source *source;
    bool for_queue;
    uint64_t next_ms;
    struct job_fifo paced;
    struct pace *next;
};

static const struct config *cfg;
static struct dest *dests;
static struct pace *paces;
static int busy;
static bool stopping;      /* shutting down: transactions in flight finish, no new ones start */

static void job_attempt_done(struct delivery_job *j);
static void dest_kick(struct dest *d);

void delivery_init(const struct config *c)
{
    cfg = c;
    smtp_client_init(c);
}

int delivery_busy(void) { return busy; }

/* ---- outcomes ----------------------------------------------------- */

static void settle_open(struct delivery_job *j, const char *reply)
{
    for (size_t k = 0; k < j->n; k++) {
        struct delivery_rcpt *r = &j->rcpts[k];
        if (r->cls)
            continue;
        r->cls = reply[0] == '5' ? 5 : reply[0] == '2' ? 2 : 4;
        snprintf(r->reply, sizeof r->reply, "%s", reply);
    }
}

static const char *status_word(int cls) { return cls == 2 ? "sent" : cls == 5 ? "bounced" : "deferred"; }

/* The enhanced status code of a reply ("250 2.0.0 Ok", "4.4.1 connect to
 * ..."), else the class's generic one: Postfix's dsn= field. */
static void dsn_of(const char *reply, int cls, char *out, size_t size)
{
    const char *p = reply;
    if (p[0] >= '2' && p[0] <= '5' && strspn(p, "0123456789") == 3 && (p[3] == ' ' || p[3] == '-'))
        p += 4;
    int a, b, c, n = 0;
    if (sscanf(p, "%1d.%3d.%3d%n", &a, &b, &c, &n) == 3 && n > 0 && a == cls)
        snprintf(out, size, "%d.%d.%d", a, b, c);
    else
        snprintf(out, size, "%d.0.0", cls);
}

/* One of Postfix's delays=a/b/c/d, in seconds. */
static void fmt_delay(char *out, size_t size, uint64_t from_ms, uint64_t to_ms)
{
    double s = from_ms && to_ms > from_ms ? (double)(to_ms - from_ms) / 1000.0 : 0;
    snprintf(out, size, s < 10 ? "%.2g" : "%.0f", s);
}

/* Recipient k's outcome is final for this attempt: log it, hand it back. */
static void report(struct delivery_job *j, size_t k)
{
    struct delivery_rcpt *r = &j->rcpts[k];
    if (!r->cls) {     /* every path settles; this only guards against a bug */
        r->cls = 4;
        snprintf(r->reply, sizeof r->reply, "4.3.0 delivery did not complete");
    }
    if (j->judge && r->remote[0] && r->cls != 2)
        j->judge(j, k);        /* back-off rules: may bounce it, or reroute it */
    long delay = (long)(time(NULL) - j->arrival);
    /* delays = in the queue before this attempt / routing (DNS, MX, MTA-STS) /
     * waiting for and setting up a connection / the transaction */
    uint64_t now = ev_now_ms(), arrived = (uint64_t)j->arrival * 1000;
    uint64_t t1 = j->started_ms ? j->started_ms : now, t2 = j->routed_ms ? j->routed_ms : t1;
    uint64_t t3 = j->sending_ms ? j->sending_ms : t2;
    /* the arrival is wall-clock time, the attempt's marks monotonic: the start on the wall clock */
    uint64_t started_wall = clock_wall_ms() - (now > t1 ? now - t1 : 0);
    char a[16], b[16], c[16], d[16], dsn[16];
    fmt_delay(a, sizeof a, arrived, started_wall);
    fmt_delay(b, sizeof b, t1, t2);
    fmt_delay(c, sizeof c, t2, t3);
    fmt_delay(d, sizeof d, t3, now);
    dsn_of(r->reply, r->cls, dsn, sizeof dsn);
    log_info("%s: to=<%s>, relay=%s, delay=%lds, delays=%s/%s/%s/%s, dsn=%s, status=%s (%s)", j->id, r->addr,
             r->relay[0] ? r->relay : "none", delay, a, b, c, d, dsn, status_word(r->cls), r->reply);
    char labels[64];
    const char *result = r->cls == 2 ? "delivered" : r->cls == 5 ? "bounced" : "deferred";
    track_event(&(struct track_event){.status = result, .qid = j->id, .from = j->sender, .to = r->addr,
                                      .stage = "deliver", .link = r->relay[0] ? r->relay : "none", .reply = r->reply,
                                      .size = j->size, .duration_ms = (long)(now - t1), .tls = r->tls});
    metric_inc(M_DELIVERIES, metric_labels(labels, sizeof labels, "result", result, NULL));
    metric_inc(M_DELIVERIES_BY_ROUTE, metric_labels(labels, sizeof labels, "route", j->hop->mx ? "mx" : "transport",
                                                    "result", result, NULL));
    j->result(j, k);
}

/* RFC 8689 4.2: no server offered REQUIRETLS: the message is returned. */
static void requiretls_final(struct delivery_job *j)
{
    for (size_t k = 0; k < j->n; k++) {
        struct delivery_rcpt *r = &j->rcpts[k];
        if (r->cls != 4 || !r->requiretls_unmet)
            continue;
        r->cls = 5;
        snprintf(r->reply, sizeof r->reply, "550 5.7.30 REQUIRETLS support required: no mail server for %.150s "
                 "offers REQUIRETLS", j->domain);
    }
}

static void job_finish(struct delivery_job *j)
{
    requiretls_final(j);
    if (j->started_ms)
        metric_observe(M_DELIVERY_SECONDS, (double)(ev_now_ms() - j->started_ms) / 1000.0);
    for (size_t k = 0; k < j->n; k++)
        report(j, k);
    mx_targets_release(j->cands, j->ncand);
    free(j->cands);
    j->cands = NULL;
    j->done(j);
}

/* ---- destinations ------------------------------------------------- */

static struct dest *dest_for(struct runtime *rt, const struct nexthop *hop, const struct tls_policy *tls,
                             struct dane_tlsa *tlsa, const char *name, const struct sasl_entry *auth,
                             const struct egress_source *source)
{
    for (struct dest *d = dests; d; d = d->next)
        if (d->rt == rt && nexthop_same(&d->hop, hop) && d->tls == tls && dane_tlsa_same(d->tlsa, tlsa) &&
            !strcmp(d->name, name) && d->auth == auth && d->source == source)
            return d;
    struct dest *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->rt = runtime_ref(rt);
    d->hop = *hop;
    d->tls = tls;
    d->tlsa = dane_tlsa_ref(tlsa);
    d->auth = auth;
    d->source = source;
    d->provider = provider_for_host(&rt->cfg.providers, name);
    d->use = d->provider ? provider_use_of(d->provider, source) : NULL;
    snprintf(d->name, sizeof d->name, "%s", name);
    d->next = dests;
    dests = d;
    return d;
}

static struct dconn *dconn_of(struct dest *d, struct smtp_client *cl)
{
    for (struct dconn *dc = d->conns; dc; dc = dc->next)
        if (dc->cl == cl)
            return dc;
    return NULL;
}

static bool provider_full(const struct dest *d) { return d->use && d->use->in_flight >= d->provider->concurrency; }

/* d's provider's rate a minute: its own, or lower while throttled; 0 = none. */
static int provider_rate(const struct dest *d)
{
    if (!d->use)
        return 0;
    int throttled = throttle_rate(SUSPEND_PROVIDER, d->provider->name, (int64_t)time(NULL));
    return throttled && (!d->provider->rate || throttled < d->provider->rate) ? throttled : d->provider->rate;
}

/* Whether d may start another transaction: not while stopping, nor while
 * its provider's shared limit is reached or its next start is not due. */
static bool dest_may_start(const struct dest *d)
{
    return !stopping && !provider_full(d) && !(d->use && d->use->next_ms > ev_now_ms() && provider_rate(d));
}

/* A transaction starts at d: counted in its provider's limits. */
static void provider_start(struct dest *d)
{
    if (!d->use)
        return;
    d->use->in_flight++;
    int rate = provider_rate(d);
    uint64_t now = ev_now_ms();
    if (rate)
        d->use->next_ms = (d->use->next_ms > now ? d->use->next_ms : now) + 60000u / (unsigned)rate;
}

static void conn_take_job(struct dest *d, struct dconn *dc)
{
    struct delivery_job *j = dest_may_start(d) ? waiting_pop(&d->waiting) : NULL;
    if (!j)
        return;
    dc->idle = false;
    busy++;
    if (j->queue)
        (*j->queue->in_flight)++;
    provider_start(d);
    j->sending_ms = ev_now_ms();
    smtp_client_start(dc->cl, j);
}

static void on_ready(void *owner, struct smtp_client *cl)
{
    struct dest *d = owner;
    struct dconn *dc = dconn_of(d, cl);
    if (!dc)
        return;
    dc->ready_once = dc->idle = true;
    if (dest_may_start(d) && waiting_next(&d->waiting))
        conn_take_job(d, dc);
    else
        smtp_client_idle(cl, false);
}

/* MTA-STS "enforce": verified TLS to an MX host the policy names. */
static const struct tls_policy sts_verify = {NULL, TLS_VERIFY, NULL, TLS_MAY};

/* A TLS report's count of one attempt at d (result NULL: it met the policy). */
static void count_tls(const struct dest *d, const struct delivery_job *j, const struct smtp_client *cl,
                      const char *result)
{
    if (d->tls->level != TLS_DANE && d->tls != &sts_verify)
        return;     /* no published policy applied: nothing to report */
    struct tlsrpt_attempt a = {.domain = j->domain, .type = d->tls->level == TLS_DANE ? TLSRPT_TLSA : TLSRPT_STS,
                               .mx_host = d->name, .receiving = &d->hop.addr, .sending_ip = smtp_client_local_ip(cl),
                               .tlsa = d->tlsa, .result = result};
    tlsrpt_count(&a);
}

static void on_job_done(void *owner, struct smtp_client *cl, struct delivery_job *j)
{
    struct dest *d = owner;
    if (smtp_client_tls_authenticated(cl))
        count_tls(d, j, cl, NULL);
    busy--;
    j->sessions++;         /* it got past EHLO (and TLS): smtp_mx_session_limit counts it */
    const struct named_queue *q = j->queue;
    bool was_full = queue_full(q) || provider_full(d);
    if (q)
        (*q->in_flight)--;
    if (d->use)
        d->use->in_flight--;
    job_attempt_done(j);
    if (was_full)          /* that queue's or provider's jobs may wait at any destination */
        for (struct dest *w = dests; w; w = w->next)
            if (w->waiting.len)
                dest_kick(w);
}

/* A connection is gone. If it never got ready, the destination is sick:
 * every waiting job is deferred too and retried on its own schedule,
 * rather than opening connection after connection against it. */
static void on_closed(void *owner, struct smtp_client *cl, bool never_ready, const char *why)
{
    struct dest *d = owner;
    for (struct dconn **pp = &d->conns; *pp; pp = &(*pp)->next)
        if ((*pp)->cl == cl) {
            struct dconn *dc = *pp;
            *pp = dc->next;
            free(dc);
            d->nconns--;
            break;
        }
    if (!never_ready) {
        dest_kick(d);
        return;
    }
    struct job_fifo failed = waiting_take_all(&d->waiting);
    for (struct delivery_job *j; (j = fifo_pop(&failed));) {
        if (smtp_client_tls_result(cl))
            count_tls(d, j, cl, smtp_client_tls_result(cl));
        settle_open(j, why);
        job_attempt_done(j);
    }
}

static const struct client_ops dest_ops = {on_ready, on_job_done, on_closed};

static bool conn_open(struct dest *d)
{
    struct client_peer peer = {.addr = d->hop.addr, .addrlen = d->hop.addrlen, .tls = d->tls, .tlsa = d->tlsa,
                               .tls_broken = &d->tls_broken, .auth = d->auth, .lmtp = d->hop.lmtp,
                               .source = d->source};
    snprintf(peer.name, sizeof peer.name, "%s", d->name);
    /* a client that fails at once has already called on_closed */
    struct smtp_client *cl = smtp_client_open(&peer, &dest_ops, d);
    struct dconn *dc = cl ? calloc(1, sizeof *dc) : NULL;
    if (!dc) {
        if (cl)
            smtp_client_idle(cl, true);     /* out of memory: let it go */
        return false;
    }
    dc->cl = cl;
    dc->next = d->conns;
    d->conns = dc;
    d->nconns++;
    return true;
}

/* Give waiting jobs to idle connections, open new ones up to the limit. */
static void dest_kick(struct dest *d)
{
    if (!dest_may_start(d))
        return;
    for (struct dconn *dc = d->conns, *next; dc && waiting_next(&d->waiting); dc = next) {
        next = dc->next;
        if (dc->idle)
            conn_take_job(d, dc);
    }
    size_t opening = 0;
    for (struct dconn *dc = d->conns; dc; dc = dc->next)
        opening += !dc->ready_once;
    while (waiting_next(&d->waiting) && opening < d->waiting.len && d->nconns < cfg->dest_concurrency && conn_open(d))
        opening++;
}

/* The credentials for a next hop: by its transport text, its host name,
 * then the recipient domain (Postfix's smtp_sasl_password_maps order). */
static const struct sasl_entry *auth_for(const struct delivery_job *j, const char *host)
{
    const struct config *jc = &j->rt->cfg;     /* where j->hop came from */
    const char *text = j->hop->text;
    const struct sasl_entry *a = config_sasl_for(jc, !strncmp(text, "smtp:", 5) ? text + 5 : text);
    if (!a && host[0])
        a = config_sasl_for(jc, host);
    return a ? a : config_sasl_for(jc, j->domain);
}

/* A server's own TLS level (DANE, MTA-STS), else the job's. */
static const struct tls_policy *target_policy(const struct delivery_job *j, const struct mx_target *t)
{
    return t && t->tls ? t->tls : j->tls;
}

/* The reply of a recipient whose provider is suspended: PROVIDER_HELD,
 * the name, PROVIDER_HELD_END. */
#define PROVIDER_HELD "451 4.4.5 provider "
#define PROVIDER_HELD_END " suspended"

bool delivery_provider_held(const char *reply, char *name, size_t size)
{
    if (strncmp(reply, PROVIDER_HELD, strlen(PROVIDER_HELD)))
        return false;
    const char *p = reply + strlen(PROVIDER_HELD);
    size_t n = strcspn(p, " ");
    if (!n || n >= size || strncmp(p + n, PROVIDER_HELD_END, strlen(PROVIDER_HELD_END)))
        return false;
    memcpy(name, p, n);
    name[n] = '\0';
    return true;
}

/* The server is a suspended provider's: j waits for the next round, which
 * is not an attempt (settled with held set). */
static bool provider_suspended(struct delivery_job *j, const struct dest *d)
{
    if (!d->provider || !suspend_until(SUSPEND_PROVIDER, d->provider->name, (int64_t)time(NULL)))
        return false;
    char why[DELIVERY_REPLY_MAX];
    snprintf(why, sizeof why, PROVIDER_HELD "%s" PROVIDER_HELD_END " (postern queue suspended)", d->provider->name);
    for (size_t k = 0; k < j->n; k++)
        j->rcpts[k].held = !j->rcpts[k].cls;
    settle_open(j, why);
    job_finish(j);
    return true;
}

static void enqueue(struct delivery_job *j, const struct nexthop *hop)
{
    const struct mx_target *t = j->cands ? &j->cands[j->cur] : NULL;
    const char *host = t ? t->host : "";
    struct dest *d = dest_for(j->rt, hop, target_policy(j, t), t ? t->tlsa : NULL, host, auth_for(j, host),
                              j->source);
    if (!d) {
        settle_open(j, "451 4.3.0 out of memory");
        job_finish(j);
        return;
    }
    j->provider = d->provider;
    if (provider_suspended(j, d))
        return;
    j->routed_ms = ev_now_ms();
    waiting_push(&d->waiting, j);
    dest_kick(d);
}

static bool has_deferred(const struct delivery_job *j)
{
    for (size_t k = 0; k < j->n; k++)
        if (j->rcpts[k].cls == 4)
            return true;
    return false;
}

/* An attempt on one server is over. Recipients with a 4xx go to the next
 * MX server if there is one; everything else is final now. */
static void job_attempt_done(struct delivery_job *j)
{
    if (j->corrupt || !(j->cands && j->cur + 1 < j->ncand && has_deferred(j))) {
        job_finish(j);
        return;
    }
    int session_limit = j->rt->cfg.smtp_mx_session_limit;
    if (session_limit > 0 && j->sessions >= session_limit) {
        log_info("%s: smtp_mx_session_limit (%d) reached for %s; the rest waits for the next attempt", j->id,
                 session_limit, j->domain);
        job_finish(j);
        return;
    }
    size_t n = 0;
    for (size_t k = 0; k < j->n; k++) {
        if (j->rcpts[k].cls != 4) {
            report(j, k);
            continue;
        }
        log_info("%s: to=<%s>: %s; trying the next mail server", j->id, j->rcpts[k].addr, j->rcpts[k].reply);
        struct delivery_rcpt keep = j->rcpts[k];
        keep.cls = 0;
        keep.requiretls_unmet = false;
        j->rcpts[n++] = keep;
    }
    j->n = n;
    j->cur++;
    log_info("%s: trying the next mail server for %s: %s (%s, preference %d)", j->id, j->domain,
             j->cands[j->cur].hop.text, j->cands[j->cur].host, j->cands[j->cur].pref);
    enqueue(j, &j->cands[j->cur].hop);
}

/* ---- routing ------------------------------------------------------ */

/* RFC 8689 4.2: a REQUIRETLS message goes only to servers whose
 * certificate is authenticated: by DANE (found through a validated MX
 * RRset, or named by a transport), or by a verify level (MTA-STS enforce,
 * the policy table, a plugin's demand). */
static bool requiretls_eligible(const struct delivery_job *j, const struct mx_target *t)
{
    enum tls_level l = target_policy(j, t)->level;
    return l == TLS_VERIFY || (l == TLS_DANE && (t->mx_secure || !j->hop->mx));
}

/* Deliver to the first server, after dropping those REQUIRETLS rules out. */
static void start_first(struct delivery_job *j)
{
    size_t keep = 0;
    for (size_t i = 0; i < j->ncand; i++) {
        if (!j->requiretls || requiretls_eligible(j, &j->cands[i])) {
            j->cands[keep++] = j->cands[i];
            continue;
        }
        log_info("%s: REQUIRETLS: not delivering to %s (%s): its certificate cannot be authenticated by DANE, "
                 "MTA-STS or a verify policy", j->id, j->cands[i].host, j->cands[i].hop.text);
        dane_tlsa_unref(j->cands[i].tlsa);
    }
    j->ncand = keep;
    if (keep == 0) {
        char why[DELIVERY_REPLY_MAX];
        snprintf(why, sizeof why, "550 5.7.30 REQUIRETLS support required: no mail server for %.100s can be "
                 "authenticated (DANE, MTA-STS or a verify policy)", j->domain);
        settle_open(j, why);
        job_finish(j);
        return;
    }
    enqueue(j, &j->cands[0].hop);
}

/* Servers authenticated by DANE keep their TLSA records whatever the
 * MTA-STS policy says (RFC 8461 2); the others follow the policy. */
static void on_sts(void *arg, const struct sts_policy *p)
{
    struct delivery_job *j = arg;
    if (p && p->mode != STS_NONE) {
        size_t keep = 0;
        for (size_t i = 0; i < j->ncand; i++) {
            struct mx_target *t = &j->cands[i];
            bool dane = target_policy(j, t)->level == TLS_DANE;
            bool ok = dane || sts_mx_matches(p, t->host);
            if (!ok)
                log_info("%s: MTA-STS%s: %s is not an MX host the policy of %s names", j->id,
                         p->mode == STS_TESTING ? " (testing)" : "", t->host, j->domain);
            if (!ok && p->mode != STS_TESTING) {
                dane_tlsa_unref(t->tlsa);
                continue;
            }
            if (!dane && p->mode == STS_ENFORCE && target_policy(j, t)->level < TLS_VERIFY)
                t->tls = &sts_verify;
            j->cands[keep++] = *t;
        }
        j->ncand = keep;
        if (keep == 0) {
            settle_open(j, "451 4.7.5 MTA-STS: no MX host matches the domain's policy");
            job_finish(j);
            return;
        }
    }
    start_first(j);
}

static void after_tls_levels(struct delivery_job *j)
{
    if (j->hop->mx && !j->tls_optional)
        mta_sts_lookup(j->domain, on_sts, j);    /* MTA-STS is about the recipient domain's MX */
    else
        start_first(j);
}

/* DANE has decided every server's level: drop those it ruled out. */
static void on_dane(void *arg)
{
    struct delivery_job *j = arg;
    size_t keep = 0;
    char first[320] = "";
    for (size_t i = 0; i < j->ncand; i++) {
        if (j->cands[i].tls) {
            j->cands[keep++] = j->cands[i];
            continue;
        }
        log_info("%s: not delivering to %s (%s): %s", j->id, j->cands[i].host, j->cands[i].hop.text,
                 j->skipped[i].why);
        struct tlsrpt_attempt a = {.domain = j->domain, .type = TLSRPT_TLSA, .mx_host = j->cands[i].host,
                                   .receiving = &j->cands[i].hop.addr, .result = j->skipped[i].result};
        tlsrpt_count(&a);
        if (!first[0])
            snprintf(first, sizeof first, "%s", j->skipped[i].why);
    }
    free(j->skipped);
    j->skipped = NULL;
    j->ncand = keep;
    if (keep == 0) {
        settle_open(j, first);
        job_finish(j);
        return;
    }
    after_tls_levels(j);
}

static void on_routed(void *arg, struct route_result *res)
{
    struct delivery_job *j = arg;
    if (res->status != ROUTE_OK) {
        settle_open(j, res->reason);
        job_finish(j);
        return;
    }
    j->cands = res->targets;
    j->ncand = res->ntargets;
    j->cur = 0;
    size_t address_limit = (size_t)j->rt->cfg.smtp_mx_address_limit;
    if (address_limit && j->ncand > address_limit) {     /* 1,000 MX records are not 1,000 connections */
        log_info("%s: %s has %zu MX addresses; trying the first %zu (smtp_mx_address_limit)", j->id, j->domain,
                 j->ncand, address_limit);
        mx_targets_release(j->cands + address_limit, j->ncand - address_limit);
        j->ncand = address_limit;
    }
    if (j->tls_optional && j->tls->level >= TLS_DANE)
        j->tls = dane_waived(j->tls);     /* "TLS-Required: No": the recipient's TLSA records do not bind */
    if (j->tls->level < TLS_DANE) {
        after_tls_levels(j);
        return;
    }
    j->skipped = calloc(j->ncand, sizeof *j->skipped);
    if (!j->skipped) {
        settle_open(j, "451 4.3.0 out of memory");
        job_finish(j);
        return;
    }
    dane_resolve(j->cands, j->ncand, j->domain, j->hop->mx, j->tls, j->skipped, on_dane, j);
}

/* A next hop given as an address: no name to look up TLSA records for. */
static void enqueue_address(struct delivery_job *j)
{
    if (j->hop->addr.ss_family == AF_UNIX) {     /* an LMTP socket here: TLS policies are for networks */
        enqueue(j, j->hop);
        return;
    }
    if (j->tls->level >= TLS_DANE && !(j->tls = dane_without_tlsa(j->tls))) {
        settle_open(j, "451 4.7.5 dane-only: the next hop is an address, which has no TLSA records");
        job_finish(j);
        return;
    }
    if (j->requiretls && j->tls->level != TLS_VERIFY) {
        settle_open(j, "550 5.7.30 REQUIRETLS support required: the next hop is an address without a verify "
                    "policy");
        job_finish(j);
        return;
    }
    enqueue(j, j->hop);
}

static void route(struct delivery_job *j)
{
    j->started_ms = ev_now_ms();
    if (j->hop->mx)
        mx_route(j->domain, cfg->smtp_port, true, false, on_routed, j);
    else if (j->hop->host[0])          /* smtp:host (MX of host) or smtp:[host] (its address) */
        mx_route(j->hop->host, j->hop->port, j->hop->lookup_mx, j->hop->lmtp, on_routed, j);
    else
        enqueue_address(j);
}

/* ---- pacing (dest_rate_limit) ------------------------------------- */

static struct pace *pace_for(const char *domain, const struct egress_source *source, bool for_queue)
{
    for (struct pace *p = paces; p; p = p->next)
        if (p->for_queue == for_queue && p->source == source && !strcasecmp(p->domain, domain))
            return p;
    struct pace *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->for_queue = for_queue;
    p->source = source;
    snprintf(p->domain, sizeof p->domain, "%s", domain);
    p->next = paces;
    paces = p;
    return p;
}

/* Redis's schedule for the domain, shared by every node: the next free
 * slot it reports pushes this node's own schedule on. Not waited for: the
 * pace a node keeps lags the others by the message in hand. */
static void shared_slot_answer(void *arg, const struct kv_answer *a)
{
    struct pace *p = arg;
    if (a->status < 0 || !a->shared)
        return;                  /* Redis down: each node paces on its own */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long wall = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    uint64_t next = ev_now_ms() + (uint64_t)(a->n > wall ? a->n - wall : 0);
    if (next > p->next_ms)
        p->next_ms = next;
}

/* Slot keeping on pace p at per_min a minute: true for now, else j waits
 * there, in order, with why. */
static bool take_pace(struct delivery_job *j, struct pace *p, int per_min, const char *why)
{
    uint64_t now = ev_now_ms(), slot = p->next_ms > now ? p->next_ms : now;
    p->next_ms = slot + 60000u / (unsigned)per_min;
    if (slot <= now)
        return true;
    j->not_before_ms = slot;
    j->waiting = why;
    fifo_push(&p->paced, j);
    return false;
}

/* A slot for j's named queue (its rate, node-local): now, or later. */
static bool take_queue_slot(struct delivery_job *j)
{
    struct pace *p = j->queue && j->queue->rate > 0 ? pace_for(j->queue->name, NULL, true) : NULL;
    return !p || take_pace(j, p, j->queue->rate, "queue rate limit");
}

/* A slot for j's domain: now, or a later one (j then waits, in order). */
static bool take_slot(struct delivery_job *j)
{
    int per_min = config_rate_limit_for(cfg, j->domain);
    int throttled = throttle_rate(SUSPEND_DESTINATION, j->domain, (int64_t)time(NULL));
    if (throttled && (!per_min || throttled < per_min))
        per_min = throttled;      /* a back-off rule or the admin lowered it for a while */
    struct pace *p = per_min > 0 ? pace_for(j->domain, j->source, false) : NULL;
    if (!p)
        return true;
    if (kv_shared()) {
        char key[300];
        size_t n = p->source ? (size_t)snprintf(key, sizeof key, "pace:%s:%s", p->source->name, p->domain)
                             : (size_t)snprintf(key, sizeof key, "pace:%s", p->domain);
        for (size_t i = 0; i < n && i < sizeof key; i++)
            key[i] = (char)tolower((unsigned char)key[i]);
        kv_pace(key, 60000 / per_min, shared_slot_answer, p);
    }
    return take_pace(j, p, per_min, throttled == per_min ? "rate limit (throttled)" : "rate limit");
}

static void release_paced(void)
{
    uint64_t now = ev_now_ms();
    for (struct pace *p = paces; p; p = p->next)
        while (p->paced.head && p->paced.head->not_before_ms <= now) {
            struct delivery_job *j = fifo_pop(&p->paced);
            j->waiting = NULL;
            if (!p->for_queue || take_slot(j))      /* past its queue's rate: now its domain's */
                route(j);
        }
}

void delivery_submit(struct delivery_job *j)
{
    j->waiting = NULL;
    if (take_queue_slot(j) && take_slot(j))
        route(j);
}

/* Destinations of an older generation (after a reload) go once their
 * last connection has closed, and let go of it. */
static void retire_old_dests(void)
{
    const struct runtime *now = runtime_current();
    for (struct dest **pp = &dests; *pp;) {
        struct dest *d = *pp;
        if (d->rt == now || d->conns || d->waiting.len) {
            pp = &d->next;
            continue;
        }
        *pp = d->next;
        runtime_release(d->rt);
        dane_tlsa_unref(d->tlsa);
        free(d);
    }
}

/* Destinations waiting on their provider's rate get their turn. */
static void kick_paced_providers(void)
{
    for (struct dest *d = dests; d; d = d->next)
        if (d->use && d->waiting.len && d->use->next_ms && d->use->next_ms <= ev_now_ms())
            dest_kick(d);
}

void delivery_tick(void)
{
    release_paced();
    kick_paced_providers();
    smtp_client_tick();
    retire_old_dests();
}

void delivery_close_idle(void)
{
    stopping = true;      /* from now on no job waiting for a connection starts */
    for (struct dest *d = dests; d; d = d->next)
        for (struct dconn *dc = d->conns; dc; dc = dc->next)
            if (dc->idle)
                smtp_client_idle(dc->cl, true);
    smtp_client_tick();
}
