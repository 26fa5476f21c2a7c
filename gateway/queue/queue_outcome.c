/* queue_outcome.c - what happens to a message when an attempt comes
 * back (Postfix's qmgr_deliver.c and qmgr_defer.c are the same role): each
 * recipient's result, back-off rules acting on a reply (suspend, throttle,
 * bounce, reroute), expiry after max_queue_lifetime and the spam
 * quarantine's lifetime, the delivery status notices owed, and then the
 * message removed (once its events are on disk), kept for the quarantine,
 * or rescheduled with back-off and its state saved. queue.c schedules and
 * dispatches; delivery.c reports here through the job's callbacks. */
#include "queue_int.h"
#include "backoff_rules.h"
#include "bounce.h"
#include "delivery.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "retry.h"
#include "runtime.h"
#include "spool.h"
#include "suspend.h"
#include "track.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const struct config *cfg;

void queue_outcome_init(const struct config *c) { cfg = c; }

/* Suspend or throttle (kind, name) by back-off rule b on reply d; logged
 * and counted once, when new. */
static void backoff_limit(const struct backoff_rule *b, enum suspend_kind kind, const char *name,
                          const struct delivery_rcpt *d)
{
    char reason[256];
    snprintf(reason, sizeof reason, "backoff: %.200s", d->reply);
    int64_t until = (int64_t)time(NULL) + b->seconds;
    bool throttle = b->action == BACKOFF_THROTTLE || b->action == BACKOFF_THROTTLE_PROVIDER;
    int rc = throttle ? throttle_set(kind, name, b->rate, until, reason) : suspend_set(kind, name, until, reason);
    if (rc < 0) {
        log_warn("%s %s: not %s (%d suspensions already)", suspend_kind_name(kind), name,
                 throttle ? "throttled" : "suspended", SUSPEND_MAX);
        return;
    }
    if (rc == 0)
        return;
    char labels[64], rate[32] = "";
    metric_inc(M_BACKOFF_ACTIONS, metric_labels(labels, sizeof labels, "action", backoff_action_name(b->action), NULL));
    if (throttle)
        snprintf(rate, sizeof rate, " to %d/min", b->rate);
    log_warn("%s %s %s%s for %lds: %s answered \"%s\" (backoff rule /%s/)", suspend_kind_name(kind), name,
             throttle ? "throttled" : "suspended", rate, b->seconds, d->remote, d->reply, b->text);
}

/* Rule b acts on recipient r itself: a 4xx bounced now, or retried at once
 * through another next hop (once: not again when it already goes there). */
static void backoff_recipient(struct qjob *j, const struct backoff_rule *b, struct delivery_rcpt *d,
                              struct qrcpt *r)
{
    char labels[64];
    if (d->cls != 4)
        return;
    if (b->action == BACKOFF_BOUNCE) {
        char was[DELIVERY_REPLY_MAX];
        snprintf(was, sizeof was, "%s", d->reply);
        snprintf(d->reply, sizeof d->reply, "554 5.4.0 a backoff rule bounces this answer: %.200s", was);
        d->cls = 5;
        log_warn("%s: to=<%s>: bounced: %s answered \"%s\" (backoff rule /%s/)", j->m->id, r->addr, d->remote, was,
                 b->text);
    } else if (strcmp(rtext_str(r->st.nexthop), b->nexthop) && queue_set_route(r, b->nexthop)) {
        j->m->retry_now = true;
        log_warn("%s: to=<%s>: rerouted to %s: %s answered \"%s\" (backoff rule /%s/)", j->m->id, r->addr, b->nexthop,
                 d->remote, d->reply, b->text);
    } else {
        return;
    }
    metric_inc(M_BACKOFF_ACTIONS, metric_labels(labels, sizeof labels, "action", backoff_action_name(b->action), NULL));
}

/* A back-off rule matching what the next hop said to recipient k acts: on
 * the recipient domain, the egress source or the provider of the attempt
 * (the domain when the attempt had none), or on the recipient itself. */
static void judge_reply(struct delivery_job *dj, size_t k)
{
    struct qjob *j = dj->owner;
    struct delivery_rcpt *d = &dj->rcpts[k];
    struct qrcpt *r = &j->m->rcpts[d->tag];
    const struct backoff_rule *b = backoff_match(&cfg->backoff, d->reply, dj->provider ? dj->provider->name : NULL);
    if (!b)
        return;
    switch (b->action) {
    case BACKOFF_BOUNCE:
    case BACKOFF_REROUTE:
        backoff_recipient(j, b, d, r);
        return;
    case BACKOFF_SUSPEND_SOURCE:
        if (dj->source) {
            backoff_limit(b, SUSPEND_SOURCE, dj->source->name, d);
            return;
        }
        break;
    case BACKOFF_SUSPEND_PROVIDER:
    case BACKOFF_THROTTLE_PROVIDER:
        if (dj->provider) {
            backoff_limit(b, SUSPEND_PROVIDER, dj->provider->name, d);
            return;
        }
        break;
    default:
        break;
    }
    backoff_limit(b, SUSPEND_DESTINATION, dj->domain, d);
}

/* Delivery's outcome for one recipient of this attempt (once each). One
 * held back by a provider's suspension stays pending, with no attempt
 * counted. */
static void job_result(struct delivery_job *dj, size_t k)
{
    struct qjob *j = dj->owner;
    struct delivery_rcpt *d = &dj->rcpts[k];
    struct qrcpt *r = &j->m->rcpts[d->tag];
    if (r->st.status != RCPT_PENDING)
        return;
    r->st.status = d->cls == 5 ? RCPT_FAILED : d->cls != 2 ? RCPT_PENDING
                 : qrcpt_wants(r, DSN_NOTIFY_SUCCESS) && !d->peer_dsn ? RCPT_RELAYED : RCPT_DONE;
    if (!d->held) {
        r->st.attempts++;
        j->m->tried = true;
    }
    rtext_printf(&r->st.last_reply, RCPT_REPLY_SIZE, "%s", d->reply);
    rtext_printf(&r->st.remote, RCPT_REMOTE_SIZE, "%s", d->remote);
    rtext_printf(&r->st.in_reply_to, RCPT_COMMAND_SIZE, "%s", d->in_reply_to);
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
        log_info("%s: to=<%s>, status=expired (after %lds in queue; last: %s)", m->id, r->addr,
                 (long)(now - m->arrival), rtext_str(r->st.last_reply));
        rtext_printf(&r->st.last_reply, RCPT_REPLY_SIZE, "4.4.7 delivery time expired; last error: %.180s",
                     rtext_str(r->st.last_reply));
        rtext_clear(&r->st.remote);    /* the text is ours now (it quotes the last reply) */
        track_event(&(struct track_event){.status = "bounced", .qid = m->id, .from = m->sender, .to = r->addr,
                                          .stage = "expire", .link = "posternd", .reply = rtext_str(r->st.last_reply)});
    }
    return true;
}

/* After spam_quarantine_lifetime the copies still in the spam quarantine
 * go, with no notice (nobody asked for them). true when it did that. */
static bool expire_spam(struct qmsg *m, int64_t now)
{
    if (now - m->arrival < cfg->spam_quarantine_lifetime)
        return false;
    for (size_t i = 0; i < m->nrcpts; i++) {
        struct qrcpt *r = &m->rcpts[i];
        if (r->st.status != RCPT_QUARANTINED)
            continue;
        r->st.status = RCPT_BOUNCED;         /* settled, and no notice is owed */
        rtext_printf(&r->st.last_reply, RCPT_REPLY_SIZE, "removed from the spam quarantine after %lds",
                 cfg->spam_quarantine_lifetime);
        log_info("%s: to=<%s>, status=expired (removed from the spam quarantine)", m->id, r->addr);
        track_event(&(struct track_event){.status = "deleted", .qid = m->id, .from = m->sender, .to = r->addr,
                                          .stage = "expire", .link = "posternd", .reply = rtext_str(r->st.last_reply)});
    }
    return true;
}

/* A DSN about m is queued (err 0) or could not be (kept for a later round). */
static void bounce_done(struct qmsg *m, enum dsn_kind kind, int err)
{
    m->jobs_outstanding--;
    if (err) {
        queue_save_state(m);
        if (!m->held && !m->deleted)
            queue_schedule(m, (int64_t)time(NULL) + cfg->retry_min);
        else if (m->deleted)
            queue_message_finished(m);
        return;
    }
    if (kind == DSN_DELAYED)
        m->warned = true;
    for (size_t i = 0; i < m->nrcpts; i++) {
        char *st = &m->rcpts[i].st.status;
        if (kind == DSN_FAILED && *st == RCPT_FAILED)
            *st = RCPT_BOUNCED;
        else if (kind == DSN_RELAYED && *st == RCPT_RELAYED)
            *st = RCPT_DONE;
    }
    queue_message_finished(m);
}

/* Settle without a notice what nobody wants to hear about: everything for
 * the null sender (never bounce a bounce), and what NOTIFY= excluded. */
static void settle_unwanted_notices(struct qmsg *m)
{
    for (size_t i = 0; i < m->nrcpts; i++) {
        struct qrcpt *r = &m->rcpts[i];
        if (r->st.status == RCPT_FAILED && (!m->sender[0] || !qrcpt_wants(r, DSN_NOTIFY_FAILURE))) {
            r->st.status = RCPT_BOUNCED;
            log_info("%s: to=<%s>: no non-delivery notification (%s)", m->id, r->addr,
                     m->sender[0] ? "NOTIFY excludes FAILURE" : "the sender is null");
        } else if (r->st.status == RCPT_RELAYED && (!m->sender[0] || !qrcpt_wants(r, DSN_NOTIFY_SUCCESS))) {
            r->st.status = RCPT_DONE;
        }
    }
}

/* Recipients a delay warning would name now. */
static size_t count_delay_wanted(const struct qmsg *m)
{
    size_t n = 0;
    for (size_t i = 0; i < m->nrcpts; i++)
        n += m->rcpts[i].st.status == RCPT_PENDING && qrcpt_wants(&m->rcpts[i], DSN_NOTIFY_DELAY);
    return n;
}

/* Starts a DSN when one is owed; returns true if m now waits for it. */
static bool notify_sender(struct qmsg *m, int64_t now)
{
    settle_unwanted_notices(m);
    enum dsn_kind kind;
    if (queue_count_status(m, RCPT_FAILED))
        kind = DSN_FAILED;
    else if (queue_count_status(m, RCPT_RELAYED))
        kind = DSN_RELAYED;
    else if (cfg->delay_warning_time && !m->warned && m->sender[0] && count_delay_wanted(m) &&
             now - m->arrival >= cfg->delay_warning_time)
        kind = DSN_DELAYED;
    else
        return false;
    m->jobs_outstanding++;
    bounce_start(m, kind, bounce_done);
    return true;
}

/* What to remove once the events are on disk. */
struct spooled {
    char id[QID_LEN];
    bool sidecar;
};

static void remove_spooled(void *arg)
{
    struct spooled *s = arg;
    spool_remove(s->id, s->sidecar);
    free(s);
}

/* The spool files of a message that has left the queue go once its last
 * events are on disk (at once without an event stream): after a crash
 * before that, the message is still there, and its events are made again. */
static void remove_after_events(const struct qmsg *m)
{
    struct spooled *s = outbox_on() ? malloc(sizeof *s) : NULL;
    if (!s) {
        spool_remove(m->id, !m->no_sidecar);
        return;
    }
    memcpy(s->id, m->id, sizeof s->id);
    s->sidecar = !m->no_sidecar;
    outbox_after_durable(remove_spooled, s);
}

void queue_remove_deleted(struct qmsg *m)
{
    for (size_t i = 0; i < m->nrcpts; i++)
        if (m->rcpts[i].st.status == RCPT_PENDING || m->rcpts[i].st.status == RCPT_QUARANTINED)
            track_event(&(struct track_event){.status = "deleted", .qid = m->id, .from = m->sender,
                                              .to = m->rcpts[i].addr, .stage = "admin", .link = "admin",
                                              .reply = "deleted by admin"});
    remove_after_events(m);
    log_info("%s: removed (deleted by admin)", m->id);
    queue_drop(m, (int64_t)time(NULL));
}

void queue_message_finished(struct qmsg *m)
{
    int64_t now = (int64_t)time(NULL);
    if (m->deleted) {
        queue_remove_deleted(m);
        return;
    }
    if (m->corrupt) {       /* nothing of it went out: kept aside for the admin, not bounced */
        spool_move_corrupt(m->id, m->corrupt);
        queue_drop(m, now);
        return;
    }
    size_t pending = queue_count_status(m, RCPT_PENDING);
    if (pending && expire_pending(m, now))
        pending = 0;
    if (notify_sender(m, now))
        return;   /* comes back through bounce_done */
    if (!pending && queue_count_status(m, RCPT_QUARANTINED) && !expire_spam(m, now)) {
        queue_save_state(m);      /* the spam quarantine keeps it, for those recipients only */
        queue_schedule(m, m->arrival + cfg->spam_quarantine_lifetime);
        return;
    }
    if (!pending) {
        remove_after_events(m);
        log_info("%s: removed", m->id);
        queue_drop(m, now);
        return;
    }
    long delay = m->retry_now ? 0
                 : retry_delay(m->attempts, cfg->retry_min, cfg->retry_max, (double)rand() / ((double)RAND_MAX + 1));
    m->retry_now = false;
    for (size_t i = 0; i < m->nrcpts; i++)
        if (m->rcpts[i].st.status == RCPT_PENDING)
            m->rcpts[i].st.next_try = now + delay;
    queue_save_state(m);
    if (m->held)
        log_info("%s: on hold", m->id);
    else
        queue_schedule(m, now + delay);
}

/* Every recipient of the attempt has its outcome. */
static void job_done(struct delivery_job *dj)
{
    struct qjob *j = dj->owner;
    struct qmsg *m = j->m;
    for (struct qjob **pp = &m->jobs; *pp; pp = &(*pp)->next_of_msg)
        if (*pp == j) {
            *pp = j->next_of_msg;
            break;
        }
    if (dj->corrupt && !m->corrupt)
        m->corrupt = dj->corrupt;
    else
        free(dj->corrupt);
    free(dj->rcpts);
    runtime_release(dj->rt);
    free(j);
    if (--m->jobs_outstanding > 0)
        return;
    if (!m->tried && m->attempts > 0)
        m->attempts--;          /* every recipient waited on a suspension: no attempt */
    queue_message_finished(m);
}

void queue_outcome_attach(struct delivery_job *dj)
{
    dj->judge = cfg->backoff.n ? judge_reply : NULL;
    dj->result = job_result;
    dj->done = job_done;
}
