/* queue.c - a min-heap of messages keyed by next attempt time. Due messages
 * are split into one job per next hop and handed to delivery; when all jobs
 * of a message are back, the message is removed, or rescheduled with
 * backoff and its recipient state saved to the sidecar. */
#include "queue.h"
#include "delivery.h"
#include "log.h"
#include "retry.h"
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const struct config *cfg;
static struct qmsg **heap;
static size_t heap_len, heap_cap;
static size_t total_msgs;

#define MAX_DISPATCH_PER_RUN 2000

static void heap_swap(size_t a, size_t b)
{
    struct qmsg *t = heap[a];
    heap[a] = heap[b];
    heap[b] = t;
    heap[a]->heap_idx = (int)a;
    heap[b]->heap_idx = (int)b;
}

static void heap_up(size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (heap[p]->next_try <= heap[i]->next_try)
            break;
        heap_swap(i, p);
        i = p;
    }
}

static void heap_down(size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < heap_len && heap[l]->next_try < heap[m]->next_try)
            m = l;
        if (r < heap_len && heap[r]->next_try < heap[m]->next_try)
            m = r;
        if (m == i)
            return;
        heap_swap(i, m);
        i = m;
    }
}

static void schedule(struct qmsg *m, int64_t when)
{
    m->next_try = when;
    if (heap_len == heap_cap) {
        size_t nc = heap_cap ? heap_cap * 2 : 1024;
        struct qmsg **n = realloc(heap, nc * sizeof *n);
        if (!n) {
            log_error("%s: out of memory scheduling; will retry after restart", m->id);
            return;
        }
        heap = n;
        heap_cap = nc;
    }
    heap[heap_len] = m;
    m->heap_idx = (int)heap_len++;
    heap_up(heap_len - 1);
}

static struct qmsg *heap_pop(void)
{
    struct qmsg *top = heap[0];
    heap_len--;
    if (heap_len) {
        heap[0] = heap[heap_len];
        heap[0]->heap_idx = 0;
        heap_down(0);
    }
    top->heap_idx = -1;
    return top;
}

void queue_init(const struct config *c) { cfg = c; }

size_t queue_size(void) { return total_msgs; }

static void qmsg_free(struct qmsg *m)
{
    for (size_t i = 0; i < m->nrcpts; i++)
        free(m->rcpts[i].addr);
    free(m->rcpts);
    free(m->sender);
    free(m);
    total_msgs--;
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
    }
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
    m->heap_idx = -1;
    total_msgs++;
    return m;
}

void queue_add_committed(struct envelope *e, size_t body_off)
{
    struct qmsg *m = qmsg_from_envelope(e, body_off);
    if (!m) {
        log_error("%s: out of memory; the message stays in the spool until restart", e->id);
        return;
    }
    schedule(m, 0);
    queue_run_due();
}

static void load_one(const char *id, void *ctx)
{
    size_t *count = ctx;
    struct envelope e;
    size_t body_off;
    const char *err = "unknown";
    if (spool_load(id, &e, &body_off, &err) < 0) {
        spool_move_corrupt(id, err);
        return;
    }
    struct qmsg *m = qmsg_from_envelope(&e, body_off);
    envelope_free(&e);
    if (!m)
        return;
    struct rcpt_state *st = calloc(m->nrcpts, sizeof *st);
    if (st && spool_load_state(id, &m->held, st, m->nrcpts) == 0) {
        int64_t next = 0;
        for (size_t i = 0; i < m->nrcpts; i++) {
            m->rcpts[i].st = st[i];
            if (st[i].attempts > m->attempts)
                m->attempts = st[i].attempts;
            if (st[i].status == RCPT_PENDING && (next == 0 || st[i].next_try < next))
                next = st[i].next_try;
        }
        m->next_try = next;
    }
    free(st);
    (*count)++;
    if (!m->held)
        schedule(m, m->next_try);
}

void queue_load_spool(void)
{
    size_t count = 0;
    spool_scan(load_one, &count);
    log_info("spool: %zu message(s) loaded from the queue", count);
}

static struct djob *job_new(struct qmsg *m, const struct nexthop *hop)
{
    struct djob *j = calloc(1, sizeof *j);
    if (!j || !(j->idx = calloc(m->nrcpts, sizeof *j->idx))) {
        free(j);
        return NULL;
    }
    j->msg = m;
    j->hop = hop;
    return j;
}

/* Split the pending recipients of m by next hop and submit one job each. */
static void dispatch(struct qmsg *m)
{
    struct djob *jobs[64];
    size_t njobs = 0;
    m->attempts++;
    for (size_t i = 0; i < m->nrcpts; i++) {
        struct qrcpt *r = &m->rcpts[i];
        if (r->st.status != RCPT_PENDING)
            continue;
        const struct nexthop *hop = config_transport_for(cfg, addr_domain(r->addr));
        if (!hop) {
            r->st.status = RCPT_FAILED;
            snprintf(r->st.last_reply, sizeof r->st.last_reply, "554 5.4.4 no route to domain");
            log_info("%s: to=<%s>, status=failed (no transport for the domain)", m->id, r->addr);
            continue;
        }
        size_t k = 0;
        while (k < njobs && !nexthop_same(jobs[k]->hop, hop))
            k++;
        if (k == njobs) {
            if (njobs == sizeof jobs / sizeof jobs[0] || !(jobs[k] = job_new(m, hop))) {
                continue;   /* stays pending: retried next round */
            }
            njobs++;
        }
        jobs[k]->idx[jobs[k]->n++] = i;
    }
    m->jobs_outstanding = (int)njobs;
    if (njobs == 0) {
        m->jobs_outstanding = 1;    /* finish through the common path */
        struct djob empty = {.msg = m};
        queue_job_done(&empty);
        return;
    }
    for (size_t k = 0; k < njobs; k++)
        delivery_submit(jobs[k]);
}

void queue_run_due(void)
{
    int64_t now = (int64_t)time(NULL);
    for (int n = 0; heap_len && heap[0]->next_try <= now && n < MAX_DISPATCH_PER_RUN; n++)
        dispatch(heap_pop());
}

void queue_rcpt_result(struct djob *job, size_t k, int code, const char *reply)
{
    struct qrcpt *r = &job->msg->rcpts[job->idx[k]];
    if (r->st.status != RCPT_PENDING)
        return;
    r->st.status = code == 2 ? RCPT_DONE : code == 5 ? RCPT_FAILED : RCPT_PENDING;
    r->st.attempts++;
    snprintf(r->st.last_reply, sizeof r->st.last_reply, "%s", reply);
}

/* Give up on recipients still pending after max_queue_lifetime. */
static bool expire_pending(struct qmsg *m, int64_t now)
{
    if (now - m->arrival < cfg->max_queue_lifetime)
        return false;
    for (size_t i = 0; i < m->nrcpts; i++) {
        struct qrcpt *r = &m->rcpts[i];
        if (r->st.status != RCPT_PENDING)
            continue;
        r->st.status = RCPT_FAILED;
        log_info("%s: to=<%s>, status=failed (expired after %lds in queue; last: %s)", m->id, r->addr,
                 (long)(now - m->arrival), r->st.last_reply);
    }
    return true;
}

static void message_finished(struct qmsg *m)
{
    int64_t now = (int64_t)time(NULL);
    size_t pending = 0;
    for (size_t i = 0; i < m->nrcpts; i++)
        pending += m->rcpts[i].st.status == RCPT_PENDING;
    if (pending && expire_pending(m, now))
        pending = 0;
    if (!pending) {
        spool_remove(m->id);
        log_info("%s: removed", m->id);
        qmsg_free(m);
        return;
    }
    long delay = retry_delay(m->attempts, cfg->retry_min, cfg->retry_max, (double)rand() / ((double)RAND_MAX + 1));
    for (size_t i = 0; i < m->nrcpts; i++)
        if (m->rcpts[i].st.status == RCPT_PENDING)
            m->rcpts[i].st.next_try = now + delay;
    struct rcpt_state *st = malloc(m->nrcpts * sizeof *st);
    if (st) {
        for (size_t i = 0; i < m->nrcpts; i++)
            st[i] = m->rcpts[i].st;
        spool_save_state(m->id, m->held, st, m->nrcpts);
        free(st);
    }
    schedule(m, now + delay);
}

void queue_job_done(struct djob *job)
{
    struct qmsg *m = job->msg;
    if (job->idx) {
        for (size_t k = 0; k < job->n; k++)
            if (m->rcpts[job->idx[k]].st.status == RCPT_PENDING && !m->rcpts[job->idx[k]].st.last_reply[0])
                snprintf(m->rcpts[job->idx[k]].st.last_reply, sizeof m->rcpts[0].st.last_reply,
                         "delivery did not complete");
        free(job->idx);
        free(job);
    }
    if (--m->jobs_outstanding == 0)
        message_finished(m);
}
