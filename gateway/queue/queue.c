/* queue.c - every queued message: found by ID, listed in arrival order,
 * scheduled in a min-heap by next attempt time (queue_heap.c), made from a
 * new commit or from the spool at start (queue_load.c reads it). Due
 * messages are split into one job per next hop, pool and named queue and
 * handed to delivery; what happens when the jobs come back is
 * queue_outcome.c's, the hook stages before an attempt queue_stages.c's,
 * the admin commands (list, show, hold, release, delete, flush)
 * queue_admin.c's. */
#include "suspend.h"
#include "outbox.h"
#include "queue_int.h"
#include "queue_heap.h"
#include "track.h"
#include "bounce.h"
#include "delivery.h"
#include "hooks.h"
#include "runtime.h"
#include "log.h"
#include "metrics.h"
#include "smtp_parse.h"
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static const struct config *cfg;
/* The policies for recipients a plugin demanded TLS for under a "dane"
 * domain policy: DANE where the host has TLSA records, the demanded level
 * where it has none (other domains get tls_policy_of_level: no match=
 * names, so "verify" checks the MX host name). */
static const struct tls_policy demanded_dane[] = {
    {NULL, TLS_DANE, NULL, TLS_NONE}, {NULL, TLS_DANE, NULL, TLS_MAY}, {NULL, TLS_DANE, NULL, TLS_ENCRYPT},
    {NULL, TLS_DANE, NULL, TLS_VERIFY},
};

/* The domain's policy, raised to what a plugin demanded for the recipient. */
static const struct tls_policy *rcpt_tls(const char *domain, int min_tls)
{
    const struct tls_policy *tls = config_tls_policy_for(cfg, domain);
    if (tls->level == TLS_DANE && min_tls > (int)tls->fallback)
        return &demanded_dane[min_tls];
    if (tls->level < TLS_DANE && min_tls > (int)tls->level)
        return tls_policy_of_level((enum tls_level)min_tls);
    return tls;     /* dane-only authenticates every host: nothing to raise */
}
static struct queue_heap heap;    /* by next attempt (queue_heap.c) */
static size_t total_msgs;
static struct qmsg *all_head, *all_tail;

#define ID_BUCKETS 4096
static struct qmsg *by_id[ID_BUCKETS];

#define MAX_DISPATCH_PER_RUN 2000
/* After a crash, acceptance events are made again for messages that came
 * in this long before the newest event on disk (a long DATA included). */
#define EVENT_REPLAY_WINDOW_MS (600 * 1000)

static void schedule(struct qmsg *m, int64_t when)
{
    m->next_try = when;
    if (qheap_push(&heap, m) < 0)
        log_error("%s: out of memory scheduling; will retry after restart", m->id);
}

static void heap_remove(struct qmsg *m) { qheap_remove(&heap, m); }

static unsigned id_bucket(const char *id)
{
    unsigned h = 5381;
    for (; *id; id++)
        h = h * 33 + (unsigned char)*id;
    return h % ID_BUCKETS;
}

static void index_add(struct qmsg *m)
{
    unsigned b = id_bucket(m->id);
    m->hnext = by_id[b];
    by_id[b] = m;
    m->prev = all_tail;
    m->next = NULL;
    if (all_tail)
        all_tail->next = m;
    else
        all_head = m;
    all_tail = m;
}

static void index_remove(struct qmsg *m)
{
    for (struct qmsg **pp = &by_id[id_bucket(m->id)]; *pp; pp = &(*pp)->hnext)
        if (*pp == m) {
            *pp = m->hnext;
            break;
        }
    if (m->prev)
        m->prev->next = m->next;
    else
        all_head = m->next;
    if (m->next)
        m->next->prev = m->prev;
    else
        all_tail = m->prev;
}

struct qmsg *queue_find(const char *id)
{
    for (struct qmsg *m = by_id[id_bucket(id)]; m; m = m->hnext)
        if (!strcmp(m->id, id))
            return m;
    return NULL;
}

void queue_init(const struct config *c)
{
    cfg = c;
    queue_outcome_init(c);
    bounce_init(c, queue_add_local);
}

size_t queue_size(void) { return total_msgs; }

/* m leaves the queue for good: how long it stayed. */
static void residence_done(const struct qmsg *m, int64_t now)
{
    metric_observe(M_RESIDENCE_SECONDS, (double)(now > m->arrival ? now - m->arrival : 0));
}

/* The queue by state and by age, for /metrics: a walk over every message,
 * so at most once every 5 s (called from the loop's tick). */
void queue_publish_metrics(void)
{
    static int64_t last;
    int64_t now = (int64_t)time(NULL);
    if (now - last < 5 && last)
        return;
    last = now;
    metric_set(M_SUSPENSIONS, NULL, (int64_t)suspend_count());
    static const char *states[] = {"queued", "deferred", "active", "hold"};
    static const struct { const char *label; int64_t below; } ages[] = {
        {"5m", 300}, {"1h", 3600}, {"4h", 4 * 3600}, {"1d", 86400}, {"5d", 5 * 86400}, {"older", INT64_MAX}};
    int64_t by_state[4] = {0}, by_age[6] = {0};
    for (const struct qmsg *m = all_head; m; m = m->next) {
        bool tried = false;
        for (size_t i = 0; i < m->nrcpts; i++)
            tried |= m->rcpts[i].st.status == RCPT_PENDING && m->rcpts[i].st.attempts > 0;
        by_state[m->held ? 3 : m->jobs_outstanding ? 2 : tried ? 1 : 0]++;
        size_t a = 0;
        while (now - m->arrival >= ages[a].below)
            a++;
        by_age[a]++;
    }
    char labels[64];
    for (int i = 0; i < 4; i++)
        metric_set(M_QUEUE_BY_STATE, metric_labels(labels, sizeof labels, "state", states[i], NULL), by_state[i]);
    for (int i = 0; i < 6; i++)
        metric_set(M_QUEUE_BY_AGE, metric_labels(labels, sizeof labels, "age", ages[i].label, NULL), by_age[i]);
}

static void qmsg_free(struct qmsg *m)
{
    index_remove(m);
    for (size_t i = 0; i < m->nrcpts; i++) {
        free(m->rcpts[i].addr);
        free(m->rcpts[i].dsn.orcpt);
        free(m->rcpts[i].route);
        rcpt_state_clear(&m->rcpts[i].st);
    }
    free(m->rcpts);
    free(m->decisions);
    free(m->corrupt);
    free(m->sender);
    free(m->envid);
    free(m->hold_reason);
    free(m->client_ip);
    free(m->helo);
    free(m->egress);
    free(m->queue_name);
    free(m);
    total_msgs--;
}

void queue_drop(struct qmsg *m, int64_t now)
{
    residence_done(m, now);
    qmsg_free(m);
}

/* A copy of s for a qmsg text (NULL for ""); out of memory also leaves NULL,
 * which reads as "". */
static char *text_dup(const char *s) { return s && s[0] ? strdup(s) : NULL; }

void qmsg_set_hold_reason(struct qmsg *m, const char *reason)
{
    free(m->hold_reason);
    m->hold_reason = text_dup(reason);
}

/* Build a qmsg from a decoded envelope, taking its strings. */
static struct qmsg *qmsg_from_envelope(struct envelope *e, size_t body_off)
{
    struct qmsg *m = calloc(1, sizeof *m);
    struct qrcpt *r = calloc(e->nrcpts, sizeof *r);
    if (!m || !r) {
        free(m);
        free(r);
        return NULL;
    }
    memcpy(m->id, e->id, QID_LEN);
    m->sender = e->sender;
    e->sender = NULL;
    for (size_t i = 0; i < e->nrcpts; i++) {
        r[i].addr = e->rcpts[i];
        r[i].st.status = RCPT_PENDING;
        if (e->dsn) {
            r[i].dsn = e->dsn[i];
            e->dsn[i].orcpt = NULL;
        }
    }
    m->ret = e->ret;
    m->envid = text_dup(e->envid);
    free(e->rcpts);
    e->rcpts = NULL;
    m->rcpts = r;
    m->nrcpts = e->nrcpts;
    e->nrcpts = 0;
    m->arrival = e->arrival;
    m->body_off = body_off;
    m->size = e->size;
    m->body = e->body;
    m->smtputf8 = e->smtputf8;
    m->requiretls = e->requiretls;
    m->tls_optional = e->tls_optional;
    m->hops = e->hops;
    m->journal = !strcmp(e->proto, "JOURNAL");     /* a journal report: past the chain */
    m->local = m->journal || !strcmp(e->proto, "LOCAL");
    m->client_ip = text_dup(e->client_ip);
    m->helo = text_dup(e->helo);
    m->heap_idx = -1;
    total_msgs++;
    index_add(m);
    return m;
}

/* r's route parsed from the text its state holds (none for no text);
 * false, and the text cleared, if unparsable. */
static bool parse_route(struct qrcpt *r)
{
    free(r->route);
    r->route = NULL;
    if (!rtext_has(r->st.nexthop))
        return true;
    char err[200];
    struct nexthop *hop = malloc(sizeof *hop);
    if (!hop || nexthop_parse(r->st.nexthop.s, hop, err, sizeof err) < 0) {
        free(hop);
        rtext_clear(&r->st.nexthop);
        return false;
    }
    r->route = hop;
    return true;
}

/* A plugin's route for recipient r ("" clears it); false if unparsable. */
static bool set_route(struct qrcpt *r, const char *text)
{
    rtext_printf(&r->st.nexthop, RCPT_NEXTHOP_SIZE, "%s", text);
    return parse_route(r);
}


/* The sidecar's recipient states, routes and flags (spool_load_state) into m. */
static void apply_loaded_state(struct qmsg *m, const struct msg_flags *flags, struct rcpt_state *st)
{
    m->held = flags->held;
    m->warned = flags->warned;
    m->queued = flags->queued;
    m->archive = flags->archive;
    qmsg_set_hold_reason(m, flags->reason);
    free(m->decisions);
    m->decisions = flags->decisions[0] ? strdup(flags->decisions) : NULL;
    int64_t next = 0;
    for (size_t i = 0; i < m->nrcpts; i++) {
        struct rcpt_state *to = &m->rcpts[i].st;
        rcpt_state_clear(to);
        *to = st[i];                                 /* moved: st[i] no longer owns its texts */
        st[i] = (struct rcpt_state){0};
        if (rtext_has(to->nexthop)) {
            char hop[RCPT_NEXTHOP_SIZE];
            snprintf(hop, sizeof hop, "%s", to->nexthop.s);      /* for the log, if it is cleared */
            if (!parse_route(&m->rcpts[i]))
                log_warn("%s: ignoring unparsable route '%s' for <%s>", m->id, hop, m->rcpts[i].addr);
        }
        if (to->attempts > m->attempts)
            m->attempts = to->attempts;
        if (to->status == RCPT_PENDING && (next == 0 || to->next_try < next))
            next = to->next_try;
    }
    if (!queue_count_status(m, RCPT_PENDING) && queue_count_status(m, RCPT_QUARANTINED))
        next = m->arrival + cfg->spam_quarantine_lifetime;      /* only the spam quarantine keeps it */
    m->next_try = next;
}

/* Read the sidecar (if any) into m. */
static void apply_state(struct qmsg *m)
{
    struct rcpt_state *st = calloc(m->nrcpts, sizeof *st);
    struct msg_flags flags;
    if (st && spool_load_state(m->id, &flags, st, m->nrcpts) == 0)
        apply_loaded_state(m, &flags, st);
    rcpt_states_free(st, m->nrcpts);
}

/* Does the chain run this stage for m? Never for a journal report. */
static bool stage_wanted(const struct qmsg *m, enum postern_stage st)
{
    return !m->journal && hooks_wanted(NULL, st);
}


void queue_add_committed(struct envelope *e, size_t body_off, bool sidecar)
{
    struct qmsg *m = qmsg_from_envelope(e, body_off);
    if (!m) {
        log_error("%s: out of memory; the message stays in the spool until restart", e->id);
        return;
    }
    m->no_sidecar = !sidecar;
    if (sidecar)
        apply_state(m);   /* quarantine and routes decided before the 250 */
    queue_stage(m);
}

void queue_add_local(struct envelope *e, size_t body_off) { queue_add_committed(e, body_off, false); }

/* The event stream after a crash: the acceptance events of m, made again
 * (the same IDs) when it came in shortly before the newest event the
 * outbox had kept, as they may not have reached the disk. */
static void replay_acceptance(const struct qmsg *m)
{
    int64_t last = outbox_last_ms();
    if (!last || m->arrival * 1000 < last - EVENT_REPLAY_WINDOW_MS)
        return;
    for (size_t i = 0; i < m->nrcpts; i++) {
        bool spam = m->rcpts[i].st.status == RCPT_QUARANTINED;
        struct track_event e = {.status = spam ? "quarantined" : "queued", .qid = m->id, .from = m->sender,
                                .to = m->rcpts[i].addr, .client = qtext(m->client_ip), .helo = qtext(m->helo),
                                .stage = "eom", .link = spam ? "spam quarantine" : NULL, .size = m->size,
                                .reply = "made again after a restart"};
        outbox_add(&e, m->arrival * 1000);
    }
}

/* A message queue_load.c read from the spool at start: into the queue. */
bool queue_add_loaded(struct envelope *e, size_t body_off, const struct msg_flags *flags,
                      struct rcpt_state *st)
{
    struct qmsg *m = qmsg_from_envelope(e, body_off);
    envelope_free(e);
    if (!m)
        return false;
    if (st)
        apply_loaded_state(m, flags, st);
    if (outbox_on())
        replay_acceptance(m);
    if (!m->queued && stage_wanted(m, POSTERN_STAGE_QUEUE))
        queue_stage(m);    /* it never finished before the restart: run it again */
    else if (!m->held)
        schedule(m, m->next_try);
    return true;
}

/* One delivery attempt: the self-contained job delivery.c sees, and the
 * message it belongs to. */

/* The egress pool for m's recipients in rcpt_domain: the DELIVER stage's
 * choice, else the egress table's from/to rules; NULL: smtp_bind_address. */
static const struct egress_pool *egress_pool_of(const struct qmsg *m, const char *rcpt_domain)
{
    const struct egress_pool *p = m->egress ? egress_pool_named(&cfg->egress, m->egress) : NULL;
    return p ? p : egress_pool_for(&cfg->egress, addr_domain(m->sender), rcpt_domain);
}

/* The named queue likewise; NULL: priority 0, no limit of its own. */
static const struct named_queue *named_queue_of(const struct qmsg *m, const char *rcpt_domain)
{
    const struct named_queue *q = m->queue_name ? named_queue_find(&cfg->queues, m->queue_name) : NULL;
    return q ? q : named_queue_for(&cfg->queues, addr_domain(m->sender), rcpt_domain);
}

static bool source_usable(const struct egress_source *s)
{
    return !suspend_until(SUSPEND_SOURCE, s->name, (int64_t)time(NULL));
}

/* Why recipients in rcpt_domain of this pool and queue wait (a
 * suspension), or NULL when they may go. */
static const char *held_back(const char *rcpt_domain, const struct egress_pool *pool, const struct named_queue *nq,
                             int64_t now)
{
    if (suspend_until(SUSPEND_DESTINATION, rcpt_domain, now))
        return "destination";
    if (nq && suspend_until(SUSPEND_QUEUE, nq->name, now))
        return "queue";
    for (size_t i = 0; pool && i < pool->n; i++)
        if (source_usable(&cfg->egress.sources[pool->src[i]]))
            return NULL;
    return pool ? "every source of the egress pool" : NULL;
}

static struct qjob *job_new(struct qmsg *m, const struct nexthop *hop, const struct tls_policy *tls,
                            const char *domain, const struct egress_pool *pool, const struct named_queue *nq)
{
    struct qjob *j = calloc(1, sizeof *j);
    if (!j || !(j->dj.rcpts = calloc(m->nrcpts, sizeof *j->dj.rcpts))) {
        free(j);
        return NULL;
    }
    struct delivery_job *dj = &j->dj;
    j->m = m;
    memcpy(dj->id, m->id, QID_LEN);
    dj->sender = m->sender;
    dj->body_off = m->body_off;
    dj->size = m->size;
    dj->body = m->body;
    dj->smtputf8 = m->smtputf8;
    dj->requiretls = m->requiretls;
    dj->tls_optional = m->tls_optional;
    dj->ret = m->ret;
    dj->envid = qtext(m->envid);
    dj->arrival = m->arrival;
    dj->rt = runtime_hold();     /* hop and tls point into its config */
    dj->hop = hop;
    dj->tls = tls;
    j->pool = pool;
    dj->source = pool ? egress_pick(&cfg->egress, pool, source_usable) : NULL;
    dj->queue = nq;
    snprintf(dj->domain, sizeof dj->domain, "%s", domain);
    queue_outcome_attach(dj);
    dj->owner = j;
    return j;
}

static void job_add_rcpt(struct qjob *j, size_t i)
{
    const struct qrcpt *r = &j->m->rcpts[i];
    j->dj.rcpts[j->dj.n++] = (struct delivery_rcpt){.addr = r->addr, .notify = r->dsn.notify,
                                                    .orcpt = r->dsn.orcpt, .tag = i};
}

/* Split the pending recipients of m by next hop and submit one job each. */
static void do_dispatch(struct qmsg *m)
{
    struct qjob *jobs[64];
    size_t njobs = 0, waiting = 0;
    int64_t now = (int64_t)time(NULL);
    m->attempts++;
    m->tried = m->retry_now = false;
    for (size_t i = 0; i < m->nrcpts; i++) {
        struct qrcpt *r = &m->rcpts[i];
        if (r->st.status != RCPT_PENDING)
            continue;
        if (m->hops > cfg->max_hop_count) {
            r->st.status = RCPT_FAILED;
            rtext_printf(&r->st.last_reply, RCPT_REPLY_SIZE,
                     "554 5.4.6 too many hops (%d Received: headers): mail forwarding loop", m->hops);
            log_info("%s: to=<%s>, status=bounced (mail forwarding loop: %d hops)", m->id, r->addr, m->hops);
            continue;
        }
        const struct nexthop *hop = r->route ? r->route : config_transport_for(cfg, addr_domain(r->addr));
        if (!hop) {
            r->st.status = RCPT_FAILED;
            rtext_printf(&r->st.last_reply, RCPT_REPLY_SIZE, "554 5.4.4 no route to domain");
            log_info("%s: to=<%s>, status=failed (no transport for the domain)", m->id, r->addr);
            continue;
        }
        /* one job per next hop; MX routes are looked up per domain */
        const char *dom = addr_domain(r->addr);
        size_t k = 0;
        const struct tls_policy *tls = rcpt_tls(dom, r->st.min_tls);
        const struct egress_pool *pool = egress_pool_of(m, dom);
        const struct named_queue *nq = named_queue_of(m, dom);
        const char *why = held_back(dom, pool, nq, now);
        if (why) {
            if (!waiting++)
                log_info("%s: to=<%s>: waits: %s suspended", m->id, r->addr, why);
            continue;
        }
        while (k < njobs && !(nexthop_same(jobs[k]->dj.hop, hop) && jobs[k]->dj.tls == tls && jobs[k]->pool == pool &&
                              jobs[k]->dj.queue == nq && (!hop->mx || !strcasecmp(jobs[k]->dj.domain, dom))))
            k++;
        if (k == njobs) {
            if (njobs == sizeof jobs / sizeof jobs[0] || !(jobs[k] = job_new(m, hop, tls, dom, pool, nq)))
                continue;   /* stays pending: retried next round */
            njobs++;
        }
        job_add_rcpt(jobs[k], i);
    }
    m->jobs_outstanding = (int)njobs;
    if (njobs == 0) {
        if (waiting)
            m->attempts--;      /* a suspension is not an attempt: the retry back-off does not grow */
        queue_message_finished(m);
        return;
    }
    for (size_t k = 0; k < njobs; k++) {
        jobs[k]->next_of_msg = m->jobs;
        m->jobs = jobs[k];
    }
    for (size_t k = 0; k < njobs; k++)
        delivery_submit(&jobs[k]->dj);   /* may come back at once */
}


void queue_run_due(void)
{
    int64_t now = (int64_t)time(NULL);
    for (int n = 0; qheap_top(&heap) && qheap_top(&heap)->next_try <= now && n < MAX_DISPATCH_PER_RUN; n++)
        queue_dispatch(qheap_pop(&heap));
}







static void save_state(struct qmsg *m)
{
    struct rcpt_state *st = malloc(m->nrcpts * sizeof *st);
    if (!st)
        return;
    for (size_t i = 0; i < m->nrcpts; i++)
        st[i] = m->rcpts[i].st;             /* borrowed: the array goes, the texts stay m's */
    struct msg_flags f = {.held = m->held, .warned = m->warned, .queued = m->queued, .archive = m->archive};
    snprintf(f.reason, sizeof f.reason, "%s", qtext(m->hold_reason));
    snprintf(f.decisions, sizeof f.decisions, "%s", m->decisions ? m->decisions : "");
    spool_save_state(m->id, f, st, m->nrcpts);
    m->no_sidecar = false;      /* even a failed save may have left a file */
    free(st);
}

size_t queue_count_status(const struct qmsg *m, char status)
{
    size_t n = 0;
    for (size_t i = 0; i < m->nrcpts; i++)
        n += m->rcpts[i].st.status == status;
    return n;
}










/* ---- lent to queue_admin.c and queue_stages.c (queue_int.h) -------- */

static const struct qrcpt *first_pending(const struct qmsg *m)
{
    for (size_t i = 0; i < m->nrcpts; i++)
        if (m->rcpts[i].st.status == RCPT_PENDING)
            return &m->rcpts[i];
    return NULL;
}

const char *queue_named_queue_of(const struct qmsg *m)
{
    const struct qrcpt *r = first_pending(m);
    const struct named_queue *nq = r ? named_queue_of(m, addr_domain(r->addr)) : NULL;
    return nq ? nq->name : "";
}

void queue_suspension_of(const struct qmsg *m, char *out, size_t size)
{
    out[0] = '\0';
    const struct qrcpt *r = first_pending(m);
    if (!r)
        return;
    const char *dom = addr_domain(r->addr);
    int64_t now = (int64_t)time(NULL);
    const char *why = held_back(dom, egress_pool_of(m, dom), named_queue_of(m, dom), now);
    char provider[64];
    if (why)
        snprintf(out, size, "%s suspended (postern queue suspended)", why);
    else if (delivery_provider_held(rtext_str(r->st.last_reply), provider, sizeof provider) &&
             suspend_until(SUSPEND_PROVIDER, provider, now))
        snprintf(out, size, "provider %s suspended (postern queue suspended)", provider);
}

struct qmsg *queue_all(void) { return all_head; }
void queue_schedule(struct qmsg *m, int64_t when) { schedule(m, when); }
void queue_unschedule(struct qmsg *m) { heap_remove(m); }
void queue_save_state(struct qmsg *m) { save_state(m); }
void queue_do_dispatch(struct qmsg *m) { do_dispatch(m); }
bool queue_set_route(struct qrcpt *r, const char *text) { return set_route(r, text); }
bool queue_stage_wanted(const struct qmsg *m, enum postern_stage st) { return stage_wanted(m, st); }
