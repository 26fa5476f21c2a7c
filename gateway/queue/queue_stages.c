/* queue_stages.c - the hook stages a queued message runs after the 250:
 * QUEUE once (its verdicts can still quarantine, discard or reroute, and
 * its changes are written back), DELIVER before each attempt (pending
 * recipients only). The message waits, off the heap, until the chain
 * answers; then it is dispatched or finished (queue.c). */
#include "queue_int.h"
#include "hooks.h"
#include "log.h"
#include "runtime.h"
#include "spool.h"
#include "txn.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- hook stages after the 250: QUEUE once, DELIVER per attempt ---- */

struct stage_ctx {
    struct qmsg *m;
    struct runtime *rt;        /* the generation whose chain runs the stage */
    txn_t t;
};

/* A transaction view of m for plugins; pins m until the stage is done. */
static struct stage_ctx *stage_ctx_new(struct qmsg *m, bool pending_only)
{
    struct stage_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    txn_t *t = &c->t;
    c->m = m;
    c->rt = runtime_hold();
    t->chain = c->rt->chain;
    t->data_fd = -1;
    snprintf(t->client_ip, sizeof t->client_ip, "%s", qtext(m->client_ip));
    snprintf(t->helo, sizeof t->helo, "%s", qtext(m->helo));
    t->local_origin = m->local;
    memcpy(t->qid, m->id, QID_LEN);
    t->sender = strdup(m->sender);
    for (size_t i = 0; i < m->nrcpts; i++) {
        const struct qrcpt *r = &m->rcpts[i];
        if (pending_only && r->st.status != RCPT_PENDING)
            continue;
        if (txn_add_rcpt(t, r->addr) == 0) {
            struct txn_rcpt *added = &t->rcpts[t->nrcpts - 1];
            if (rtext_has(r->st.nexthop))
                added->nexthop = strdup(r->st.nexthop.s);
            added->min_tls = (unsigned char)r->st.min_tls;
        }
    }
    t->prior_decisions = m->decisions;    /* m is pinned until the stage is done */
    t->body_off = m->body_off;
    t->stored_len = t->size = m->size;
    t->archive = m->archive;
    m->jobs_outstanding++;
    return c;
}

static void stage_ctx_free(struct stage_ctx *c)
{
    txn_free(&c->t);
    runtime_release(c->rt);
    free(c);
}

/* Routes plugins set through the transaction, back into the message;
 * true if any changed. */
static bool take_routes(struct qmsg *m, const txn_t *t)
{
    bool changed = false;
    for (size_t k = 0; k < t->nrcpts; k++) {
        const struct txn_rcpt *tr = &t->rcpts[k];
        for (size_t i = 0; i < m->nrcpts; i++)
            if (!strcmp(m->rcpts[i].addr, tr->addr) && tr->min_tls > m->rcpts[i].st.min_tls) {
                m->rcpts[i].st.min_tls = tr->min_tls;
                changed = true;
            }
        if (!tr->nexthop)
            continue;
        for (size_t i = 0; i < m->nrcpts; i++)
            if (!strcmp(m->rcpts[i].addr, tr->addr) && strcmp(rtext_str(m->rcpts[i].st.nexthop), tr->nexthop)) {
                queue_set_route(&m->rcpts[i], tr->nexthop);
                changed = true;
                log_info("%s: to=<%s>: next hop %s (set by a plugin)", m->id, m->rcpts[i].addr, tr->nexthop);
            }
    }
    return changed;
}

/* The decisions of a QUEUE or DELIVER stage join the message's log. */
static void note_decisions(struct qmsg *m, const txn_t *t)
{
    if (!t->decisions || !t->decisions[0])
        return;
    size_t have = m->decisions ? strlen(m->decisions) : 0, add = strlen(t->decisions);
    if (have + add >= DECISIONS_MAX)
        return;
    char *n = realloc(m->decisions, have + add + 1);
    if (!n)
        return;
    memcpy(n + have, t->decisions, add + 1);
    m->decisions = n;
}

/* A QUEUE or DELIVER verdict for the pending recipients; true = deliver on. */
static bool apply_verdict(struct qmsg *m, const txn_t *t, enum postern_stage st, postern_verdict v)
{
    note_decisions(m, t);
    if (v == POSTERN_CONTINUE || v == POSTERN_ACCEPT)
        return true;
    const char *by = t->verdict_by ? t->verdict_by : "?";
    log_info("%s: %s by %s at %s: %s", m->id, verdict_name(v), by, stage_name(st), t->reply);
    if (v == POSTERN_QUARANTINE) {
        m->held = true;
        char reason[251];
        snprintf(reason, sizeof reason, "%.250s", t->reply);
        qmsg_set_hold_reason(m, reason);
        return false;
    }
    if (v == POSTERN_TEMPFAIL)
        m->attempts++;
    for (size_t i = 0; i < m->nrcpts; i++) {
        struct qrcpt *r = &m->rcpts[i];
        if (r->st.status != RCPT_PENDING)
            continue;
        rtext_printf(&r->st.last_reply, RCPT_REPLY_SIZE, "%.250s", t->reply);
        if (v == POSTERN_REJECT)
            r->st.status = RCPT_FAILED;
        else if (v == POSTERN_DISCARD)
            r->st.status = RCPT_DONE;
    }
    return false;
}

static void queue_stage_done(void *ctx, postern_verdict v)
{
    struct stage_ctx *c = ctx;
    struct qmsg *m = c->m;
    m->jobs_outstanding--;
    bool changed = take_routes(m, &c->t);
    changed |= c->t.archive && !m->archive;
    m->archive |= c->t.archive;
    /* a TEMPFAIL here (say, the archive copy failed) runs the stage again
     * before any delivery: queue_dispatch() checks `queued` */
    m->queued = v != POSTERN_TEMPFAIL;
    bool go = apply_verdict(m, &c->t, POSTERN_STAGE_QUEUE, v);
    stage_ctx_free(c);
    if (m->deleted || !go) {
        queue_message_finished(m);
        return;
    }
    /* Only what must survive a crash is written: "queued" alone may be
     * lost (the stage then runs again, and plugins like archive dedupe). */
    if (changed || m->held)
        queue_save_state(m);
    if (m->held) {
        log_info("%s: on hold: %s", m->id, qtext(m->hold_reason));
        return;
    }
    queue_schedule(m, 0);
    queue_run_due();
}

/* After the commit (or after a restart that interrupted it): the QUEUE
 * stage, then scheduling. */
void queue_stage(struct qmsg *m)
{
    struct stage_ctx *c = queue_stage_wanted(m, POSTERN_STAGE_QUEUE) ? stage_ctx_new(m, false) : NULL;
    if (!c) {
        m->queued = true;
        if (m->held) {
            log_info("%s: on hold: %s", m->id, qtext(m->hold_reason));
            return;
        }
        queue_schedule(m, m->next_try);
        queue_run_due();
        return;
    }
    hooks_run_async(POSTERN_STAGE_QUEUE, &c->t, NULL, 0, queue_stage_done, c);
}

static void deliver_stage_done(void *ctx, postern_verdict v)
{
    struct stage_ctx *c = ctx;
    struct qmsg *m = c->m;
    m->jobs_outstanding--;
    take_routes(m, &c->t);
    free(m->egress);              /* this attempt's egress pool and queue, if the stage chose them */
    m->egress = c->t.egress;
    c->t.egress = NULL;
    free(m->queue_name);
    m->queue_name = c->t.queue_name;
    c->t.queue_name = NULL;
    bool go = apply_verdict(m, &c->t, POSTERN_STAGE_DELIVER, v);
    stage_ctx_free(c);
    if (m->deleted || !go) {
        queue_message_finished(m);
        return;
    }
    queue_do_dispatch(m);
}

void queue_dispatch(struct qmsg *m)
{
    if (!m->queued && queue_stage_wanted(m, POSTERN_STAGE_QUEUE)) {
        queue_stage(m);
        return;
    }
    struct stage_ctx *c = queue_stage_wanted(m, POSTERN_STAGE_DELIVER) ? stage_ctx_new(m, true) : NULL;
    if (!c) {
        queue_do_dispatch(m);
        return;
    }
    hooks_run_async(POSTERN_STAGE_DELIVER, &c->t, NULL, 0, deliver_stage_done, c);
}

