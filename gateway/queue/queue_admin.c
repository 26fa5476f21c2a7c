/* queue_admin.c - the queue's admin commands (queue_cmd.h), for the
 * control socket and the console, on the messages queue.c holds
 * (queue_int.h): list, show and flush at once; hold, release, delete and
 * requeue on a set of messages, which is worked through in slices that
 * give way to the sessions between them (a bulk delete of 100,000
 * messages never stalls SMTP). */
#include "suspend.h"
#include "queue_int.h"
#include "event.h"
#include "queue_cmd.h"
#include "track.h"
#include "log.h"
#include "queue_view.h"
#include "smtp_parse.h"
#include "spool.h"
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>


/* m as queue_view.c presents it (the CLI reading the spool shows the same
 * columns). The arrays are the caller's to free; waiting needs 300 bytes. */
static bool view_of(const struct qmsg *m, struct queue_view *v, char *waiting, size_t wsize)
{
    const char **addrs = calloc(m->nrcpts ? m->nrcpts : 1, sizeof *addrs);
    const struct rcpt_state **sts = calloc(m->nrcpts ? m->nrcpts : 1, sizeof *sts);
    if (!addrs || !sts) {
        free(addrs);
        free(sts);
        return false;
    }
    for (size_t i = 0; i < m->nrcpts; i++) {
        addrs[i] = m->rcpts[i].addr;
        sts[i] = &m->rcpts[i].st;
    }
    waiting[0] = '\0';
    for (const struct qjob *j = m->jobs; j; j = j->next_of_msg)
        if (j->dj.waiting) {
            snprintf(waiting, wsize, "%s for %s", j->dj.waiting, j->dj.domain);
            break;
        }
    if (!waiting[0])
        queue_suspension_of(m, waiting, wsize);
    *v = (struct queue_view){.id = m->id, .size = m->size, .arrival = m->arrival, .sender = m->sender,
                             .held = m->held, .active = m->jobs_outstanding > 0, .hold_reason = qtext(m->hold_reason),
                             .decisions = m->decisions ? m->decisions : "", .queue_name = queue_named_queue_of(m),
                             .waiting = waiting, .nrcpts = m->nrcpts, .rcpts = addrs, .st = sts};
    return true;
}

static void view_free(struct queue_view *v)
{
    free((void *)v->rcpts);
    free((void *)v->st);
}


/* Does m match c's filters? (Only computed when c has some.) */
static bool filtered_in(const struct queue_cmd *c, const struct qmsg *m, int64_t now)
{
    if (!c->filtered)
        return true;
    struct queue_view v;
    char waiting[300];
    if (!view_of(m, &v, waiting, sizeof waiting))
        return false;
    bool ok = queue_cmd_filter_matches(c, &v, now);
    view_free(&v);
    return ok;
}

/* For qsort: the command whose order it is (one list at a time, loop thread). */
static const struct queue_cmd *sorting;

static int by_order(const void *a, const void *b)
{
    const struct qmsg *m = *(struct qmsg *const *)a, *n = *(struct qmsg *const *)b;
    struct queue_view v = {.id = m->id, .size = m->size, .arrival = m->arrival};
    struct queue_view w = {.id = n->id, .size = n->size, .arrival = n->arrival};
    return queue_cmd_compare(sorting, &v, &w);
}

/* list --offset/--limit/--sort: one page of the matching messages in that
 * order, and how many match (JSON: {"total", "offset", "messages"}). */
static int admin_list_page(const struct queue_cmd *c, struct buf *out)
{
    int64_t now = (int64_t)time(NULL);
    struct qmsg **all = malloc((queue_size() ? queue_size() : 1) * sizeof *all);
    if (!all) {
        buf_printf(out, "out of memory\n");
        return -1;
    }
    size_t n = 0;
    for (struct qmsg *m = queue_all(); m && n < queue_size(); m = m->next)
        if (filtered_in(c, m, now))
            all[n++] = m;
    sorting = c;
    qsort(all, n, sizeof *all, by_order);
    size_t from = (size_t)c->offset < n ? (size_t)c->offset : n;
    size_t to = c->limit && from + (size_t)c->limit < n ? from + (size_t)c->limit : n;
    if (c->json)
        buf_printf(out, "{\"total\": %zu, \"offset\": %zu, \"messages\": ", n, from);
    queue_view_list_begin(c->json, out);
    for (size_t i = from; i < to; i++) {
        struct queue_view v;
        char waiting[300];
        if (view_of(all[i], &v, waiting, sizeof waiting)) {
            queue_view_list_item(&v, c->json, i - from, now, out);
            view_free(&v);
        }
    }
    if (c->json) {
        buf_puts(out, to > from ? "\n]}\n" : "]}\n");
    } else {
        buf_printf(out, "-- %zu to %zu of %zu message(s)\n", to > from ? from + 1 : from, to, n);
    }
    free(all);
    return 0;
}

static int admin_list(const struct queue_cmd *c, struct buf *out)
{
    if (c->paged)
        return admin_list_page(c, out);
    int64_t now = (int64_t)time(NULL);
    size_t n = 0;
    queue_view_list_begin(c->json, out);
    for (struct qmsg *m = queue_all(); m; m = m->next) {
        struct queue_view v;
        char waiting[300];
        if (!view_of(m, &v, waiting, sizeof waiting))
            continue;
        if (queue_cmd_filter_matches(c, &v, now))
            queue_view_list_item(&v, c->json, n++, now, out);
        view_free(&v);
    }
    queue_view_list_end(c->json, n, out);
    return 0;
}

static struct qmsg *find_or_say(const char *id, struct buf *out)
{
    struct qmsg *m = qid_valid(id) ? queue_find(id) : NULL;
    if (!m)
        buf_printf(out, "no message with queue ID '%s'%s\n", id, queue_loading_note());
    return m;
}

static int admin_show(const struct queue_cmd *c, struct buf *out)
{
    struct qmsg *m = find_or_say(c->ids[0], out);
    struct queue_view v;
    char waiting[300];
    if (!m || !view_of(m, &v, waiting, sizeof waiting))
        return -1;
    int64_t now = (int64_t)time(NULL);
    if (c->json) {      /* the message as `list --json` gives it, alone */
        queue_view_list_begin(true, out);
        queue_view_list_item(&v, true, 0, now, out);
        queue_view_list_end(true, 1, out);
    } else {
        queue_view_show(&v, now, out);
    }
    view_free(&v);
    return 0;
}

static bool has_pending_for(const struct qmsg *m, const char *domain)
{
    for (size_t i = 0; i < m->nrcpts; i++)
        if (m->rcpts[i].st.status == RCPT_PENDING && !strcasecmp(addr_domain(m->rcpts[i].addr), domain))
            return true;
    return false;
}

/* Due now, if it waits for a retry (not held, not running). */
static bool retry_now(struct qmsg *m)
{
    if (m->held || m->jobs_outstanding || m->heap_idx < 0)
        return false;
    queue_unschedule(m);
    queue_schedule(m, 0);
    return true;
}

/* Every message with ID id (when set), or with a recipient pending in
 * domain (when set), or every one, tried now; how many. */
static size_t retry_matching(const char *id, const char *domain)
{
    size_t n = 0;
    for (struct qmsg *m = queue_all(); m; m = m->next)
        if ((id ? !strcmp(m->id, id) : (!domain || has_pending_for(m, domain))) && retry_now(m))
            n++;
    queue_run_due();
    return n;
}

/* summary --queue: pending recipients by named queue and age, as qshape
 * does by domain ("-" for mail in no queue). */
static int admin_summary_by_queue(struct buf *out)
{
    struct qshape q = {0};
    int64_t now = (int64_t)time(NULL);
    for (const struct qmsg *m = queue_all(); m; m = m->next) {
        const char *name = queue_named_queue_of(m);
        for (size_t i = 0; i < m->nrcpts; i++)
            if (m->rcpts[i].st.status == RCPT_PENDING)
                qshape_add(&q, name[0] ? name : "-", now - m->arrival);
    }
    qshape_print(&q, 100, out);
    qshape_free(&q);
    return 0;
}

/* flush [ID|DOMAIN]: every deferred message (to DOMAIN), now. */
static int admin_flush(const struct queue_cmd *c, struct buf *out)
{
    const char *arg = c->nargs ? c->args[0] : "";
    bool one_id = qid_valid(arg);
    if (one_id && !queue_find(arg))
        return find_or_say(arg, out) ? 0 : -1;
    size_t n = retry_matching(one_id ? arg : NULL, *arg ? arg : NULL);
    buf_printf(out, "%zu message(s) scheduled for immediate delivery\n", n);
    return 0;
}

/* suspend KIND NAME [DURATION]: no new delivery for it, until resumed or
 * for DURATION. */
static int admin_suspend(const struct queue_cmd *c, struct buf *out)
{
    enum suspend_kind k;
    long secs = c->nargs == 3 ? parse_duration(c->args[2]) : 0;
    if (suspend_kind_parse(c->args[0], &k) < 0 || !c->args[1][0] || secs < 0 || (c->nargs == 3 && secs == 0)) {
        buf_printf(out, "usage: queue suspend destination|source|queue|provider NAME [DURATION, e.g. 30m]\n");
        return -1;
    }
    int64_t until = secs ? (int64_t)time(NULL) + secs : SUSPEND_FOREVER;
    suspend_clear(k, c->args[1]);       /* the admin's word replaces an earlier end */
    if (suspend_set(k, c->args[1], until, "by the admin") < 0) {
        buf_printf(out, "too many suspensions (%d)\n", SUSPEND_MAX);
        return -1;
    }
    log_info("%s %s suspended by the admin %s", c->args[0], c->args[1], secs ? "for a while" : "until resumed");
    buf_printf(out, "%s %s suspended %s\n", c->args[0], c->args[1], secs ? "for a while" : "until resumed");
    return 0;
}

/* throttle destination|provider NAME RATE [DURATION]: at most RATE
 * deliveries a minute there, until resumed or for DURATION. */
static int admin_throttle(const struct queue_cmd *c, struct buf *out)
{
    enum suspend_kind k;
    long secs = c->nargs == 4 ? parse_duration(c->args[3]) : 0;
    char *end;
    long rate = strtol(c->args[2], &end, 10);
    if (suspend_kind_parse(c->args[0], &k) < 0 || (k != SUSPEND_DESTINATION && k != SUSPEND_PROVIDER) ||
        !c->args[1][0] || (*end && strcmp(end, "/min")) || rate < 1 || rate > THROTTLE_MAX_RATE || secs < 0 ||
        (c->nargs == 4 && secs == 0)) {
        buf_printf(out, "usage: queue throttle destination|provider NAME RATE (1-%d a minute) [DURATION, e.g. 30m]\n",
                   THROTTLE_MAX_RATE);
        return -1;
    }
    int64_t until = secs ? (int64_t)time(NULL) + secs : SUSPEND_FOREVER;
    suspend_clear(k, c->args[1]);       /* the admin's word replaces an earlier one */
    if (throttle_set(k, c->args[1], (int)rate, until, "by the admin") < 0) {
        buf_printf(out, "too many suspensions (%d)\n", SUSPEND_MAX);
        return -1;
    }
    log_info("%s %s throttled to %ld/min by the admin %s", c->args[0], c->args[1], rate,
             secs ? "for a while" : "until resumed");
    buf_printf(out, "%s %s throttled to %ld/min %s\n", c->args[0], c->args[1], rate,
               secs ? "for a while" : "until resumed");
    return 0;
}

/* Pending recipients a provider's suspension held back (their last reply
 * says so): retried now; how many messages. */
static size_t retry_held_by_provider(const char *name)
{
    char held[64];
    size_t n = 0;
    for (struct qmsg *m = queue_all(); m; m = m->next)
        for (size_t i = 0; i < m->nrcpts; i++)
            if (m->rcpts[i].st.status == RCPT_PENDING &&
                delivery_provider_held(rtext_str(m->rcpts[i].st.last_reply), held, sizeof held) && !strcasecmp(held, name)) {
                n += retry_now(m);
                break;
            }
    queue_run_due();
    return n;
}

/* resume KIND NAME: its waiting messages are retried now. */
static int admin_resume(const struct queue_cmd *c, struct buf *out)
{
    enum suspend_kind k;
    if (suspend_kind_parse(c->args[0], &k) < 0) {
        buf_printf(out, "usage: queue resume destination|source|queue|provider NAME\n");
        return -1;
    }
    if (!suspend_clear(k, c->args[1])) {
        buf_printf(out, "%s %s is neither suspended nor throttled\n", c->args[0], c->args[1]);
        return -1;
    }
    size_t n = k == SUSPEND_PROVIDER ? retry_held_by_provider(c->args[1])
                                     : retry_matching(NULL, k == SUSPEND_DESTINATION ? c->args[1] : NULL);
    log_info("%s %s resumed by the admin", c->args[0], c->args[1]);
    buf_printf(out, "%s %s resumed; %zu message(s) scheduled for delivery now\n", c->args[0], c->args[1], n);
    return 0;
}

/* ---- one message of a set ------------------------------------------- */

static void hold_one(struct qmsg *m, struct buf *out)
{
    if (!m->held) {
        m->held = true;
        queue_unschedule(m);
        queue_save_state(m);
        log_info("%s: put on hold by admin", m->id);
    }
    buf_printf(out, "%s: on hold%s\n", m->id, m->jobs_outstanding ? " after the running attempt" : "");
}

static bool kept(const struct queue_cmd *c, const char *addr)
{
    for (size_t i = 0; i < c->nkeep; i++)
        if (!strcasecmp(c->keep[i], addr))
            return true;
    return false;
}

/* Release to the kept recipients only (the console's checkboxes): the
 * other pending ones are dropped without a notice (an admin chose). */
static int keep_only(const struct queue_cmd *c, struct qmsg *m, struct buf *out)
{
    if (!m->held || m->jobs_outstanding) {
        buf_printf(out, "%s: only a held message can be released to some of its recipients\n", m->id);
        return -1;
    }
    for (size_t k = 0; k < c->nkeep; k++) {
        bool found = false;
        for (size_t i = 0; i < m->nrcpts; i++)
            found |= m->rcpts[i].st.status == RCPT_PENDING && !strcasecmp(m->rcpts[i].addr, c->keep[k]);
        if (!found) {
            buf_printf(out, "%s: no pending recipient <%.320s>\n", m->id, c->keep[k]);
            return -1;
        }
    }
    for (size_t i = 0; i < m->nrcpts; i++) {
        struct qrcpt *r = &m->rcpts[i];
        if (r->st.status != RCPT_PENDING || kept(c, r->addr))
            continue;
        r->st.status = RCPT_BOUNCED;           /* settled, and no notice is owed */
        rtext_printf(&r->st.last_reply, RCPT_REPLY_SIZE, "dropped by admin at release");
        track_event(&(struct track_event){.status = "dropped", .qid = m->id, .from = m->sender, .to = r->addr,
                                          .stage = "admin", .link = "admin", .reply = rtext_str(r->st.last_reply)});
        log_info("%s: to=<%s>, status=dropped (released to other recipients by admin)", m->id, r->addr);
    }
    return 0;
}

static bool named_for(const struct queue_cmd *c, const char *addr)
{
    for (size_t i = 0; i < c->nfor; i++)
        if (!strcasecmp(c->for_rcpts[i], addr))
            return true;
    return false;
}

/* --for: every named recipient must be one of m's, in one of the states
 * wanted (a release takes quarantined copies; a delete those not settled). */
static int check_for(const struct queue_cmd *c, const struct qmsg *m, bool release, struct buf *out)
{
    for (size_t k = 0; k < c->nfor; k++) {
        bool found = false;
        for (size_t i = 0; i < m->nrcpts; i++) {
            char st = m->rcpts[i].st.status;
            found |= !strcasecmp(m->rcpts[i].addr, c->for_rcpts[k]) &&
                     (st == RCPT_QUARANTINED || (!release && st == RCPT_PENDING));
        }
        if (!found) {
            buf_printf(out, "%s: no %s copy for <%.320s>\n", m->id, release ? "quarantined" : "pending or quarantined",
                       c->for_rcpts[k]);
            return -1;
        }
    }
    return 0;
}

static void track_rcpt(const struct qmsg *m, const struct qrcpt *r, const char *status, const char *why)
{
    track_event(&(struct track_event){.status = status, .qid = m->id, .from = m->sender, .to = r->addr,
                                      .stage = "admin", .link = "admin", .reply = why});
}

/* Copies in the spam quarantine (the --for ones, or all) become pending. */
static size_t release_spam(const struct queue_cmd *c, struct qmsg *m)
{
    size_t n = 0;
    for (size_t i = 0; i < m->nrcpts; i++) {
        struct qrcpt *r = &m->rcpts[i];
        if (r->st.status != RCPT_QUARANTINED || (c->nfor && !named_for(c, r->addr)))
            continue;
        r->st.status = RCPT_PENDING;
        r->st.next_try = 0;
        log_info("%s: to=<%s>, released from the spam quarantine", m->id, r->addr);
        track_rcpt(m, r, "released", "released from the spam quarantine");
        n++;
    }
    return n;
}

static int release_one(const struct queue_cmd *c, struct qmsg *m, struct buf *out)
{
    if (c->nkeep && keep_only(c, m, out) < 0)
        return -1;
    if (c->nfor && check_for(c, m, true, out) < 0)
        return -1;
    bool was_held = m->held && !c->nfor;
    size_t spam = release_spam(c, m);
    if (was_held) {
        m->held = false;
        log_info("%s: released by admin", m->id);
        for (size_t i = 0; i < m->nrcpts; i++)
            if (m->rcpts[i].st.status == RCPT_PENDING)
                track_rcpt(m, &m->rcpts[i], "released", "released by admin");
    }
    if (was_held || spam) {
        queue_save_state(m);
        if (!m->jobs_outstanding && !m->held) {
            queue_unschedule(m);
            queue_schedule(m, 0);
        }
    }
    buf_printf(out, "%s: released\n", m->id);
    return 0;
}

/* --for: only those recipients' copies go (no notice); the message goes
 * when nothing of it is left to deliver. */
static int delete_for(const struct queue_cmd *c, struct qmsg *m, struct buf *out)
{
    if (check_for(c, m, false, out) < 0)
        return -1;
    size_t left = 0;
    for (size_t i = 0; i < m->nrcpts; i++) {
        struct qrcpt *r = &m->rcpts[i];
        if ((r->st.status == RCPT_PENDING || r->st.status == RCPT_QUARANTINED) && named_for(c, r->addr)) {
            r->st.status = RCPT_BOUNCED;        /* settled, and no notice is owed */
            rtext_printf(&r->st.last_reply, RCPT_REPLY_SIZE, "deleted by admin");
            log_info("%s: to=<%s>, status=deleted (by admin)", m->id, r->addr);
            track_rcpt(m, r, "deleted", "deleted by admin");
        }
        left += r->st.status == RCPT_PENDING || r->st.status == RCPT_QUARANTINED;
    }
    buf_printf(out, "%s: deleted for %zu recipient(s)\n", m->id, c->nfor);
    queue_save_state(m);
    if (!left && !m->jobs_outstanding) {
        queue_unschedule(m);
        queue_remove_deleted(m);
    }
    return 0;
}

static void delete_one(struct qmsg *m, struct buf *out)
{
    buf_printf(out, "%s: deleted\n", m->id);
    if (m->jobs_outstanding) {
        m->deleted = true;   /* removed when the running attempt returns */
        return;
    }
    queue_unschedule(m);
    queue_remove_deleted(m);
}

static void requeue_one(struct qmsg *m, struct buf *out)
{
    bool now = retry_now(m);
    buf_printf(out, "%s: %s\n", m->id, now ? "scheduled for immediate delivery"
                                     : m->held ? "on hold (release it first)" : "being delivered now");
}

/* ---- a set of messages, in slices ------------------------------------ */

#define SLICE 200     /* messages per turn of the loop (about 40 ms of deletes) */

struct queue_admin_job {
    struct queue_cmd cmd;          /* its strings point into cmd.words or stay valid (copied below) */
    char (*ids)[QID_LEN];          /* the messages chosen when the command came */
    size_t n, next;
    size_t done, failed;
    bool named;                    /* the IDs were named (not ALL or a filter) */
    struct buf answer;
    queue_admin_done_fn fn;        /* NULL once the asker went away */
    void *ctx;
};

static const char *const verb_done[] = {[QV_HOLD] = "put on hold", [QV_RELEASE] = "released",
                                        [QV_DELETE] = "deleted", [QV_REQUEUE] = "scheduled for delivery"};

/* One message of the set. A single named message gets its own answer
 * line; in a larger set only failures do, then one count. */
static void act_on(struct queue_admin_job *j, struct qmsg *m, int64_t now)
{
    bool verbose = j->named && j->n == 1;
    struct buf line;
    buf_init(&line);
    int rc = 0;
    if (!filtered_in(&j->cmd, m, now)) {
        if (verbose)
            buf_printf(&j->answer, "%s: does not match the filter, left alone\n", m->id);
        buf_free(&line);
        return;
    }
    switch (j->cmd.verb) {
    case QV_HOLD: hold_one(m, &line); break;
    case QV_RELEASE: rc = release_one(&j->cmd, m, &line); break;
    case QV_DELETE:
        if (j->cmd.nfor)
            rc = delete_for(&j->cmd, m, &line);
        else
            delete_one(m, &line);
        break;
    default: requeue_one(m, &line); break;
    }
    if (verbose || rc < 0)
        buf_append(&j->answer, buf_head(&line), line.len);
    buf_free(&line);
    if (rc < 0)
        j->failed++;
    else
        j->done++;
}

static void job_free(struct queue_admin_job *j)
{
    buf_free(&j->answer);
    free(j->ids);
    free(j);
}

static void job_slice(void *arg);

/* One slice of j; false once j has answered and is freed. */
static bool job_turn(struct queue_admin_job *j)
{
    int64_t now = (int64_t)time(NULL);
    for (size_t end = j->next + SLICE; j->next < j->n && j->next < end; j->next++) {
        struct qmsg *m = queue_find(j->ids[j->next]);
        if (m)
            act_on(j, m, now);
        else if (j->named) {      /* gone since, or never there */
            buf_printf(&j->answer, "no message with queue ID '%s'%s\n", j->ids[j->next], queue_loading_note());
            j->failed++;
        }
    }
    if (j->cmd.verb == QV_RELEASE || j->cmd.verb == QV_REQUEUE)
        queue_run_due();
    if (j->next < j->n) {
        ev_soon(job_slice, j);        /* the sessions get their turn first */
        return true;
    }
    if (!j->named || j->n > 1)
        buf_printf(&j->answer, "%zu message(s) %s%s\n", j->done, verb_done[j->cmd.verb],
                   j->failed ? ", some not (see above)" : "");
    log_info("queue %s: %zu message(s) %s, %zu not", j->cmd.name, j->done, verb_done[j->cmd.verb], j->failed);
    if (j->fn)
        j->fn(j->ctx, j->failed ? -1 : 0, &j->answer);
    job_free(j);
    return false;
}

static void job_slice(void *arg) { job_turn(arg); }

/* The IDs the command names, or every message it selects now. */
static int choose(struct queue_admin_job *j)
{
    size_t cap = j->cmd.nids ? j->cmd.nids : queue_size();
    if (!(j->ids = calloc(cap ? cap : 1, sizeof *j->ids)))
        return -1;
    if (j->named) {
        for (size_t i = 0; i < j->cmd.nids; i++)
            snprintf(j->ids[j->n++], QID_LEN, "%s", j->cmd.ids[i]);
        return 0;
    }
    int64_t now = (int64_t)time(NULL);
    for (struct qmsg *m = queue_all(); m && j->n < cap; m = m->next)
        if (filtered_in(&j->cmd, m, now))
            memcpy(j->ids[j->n++], m->id, QID_LEN);
    return 0;
}

struct queue_admin_job *queue_admin_run(const struct queue_cmd *c, queue_admin_done_fn done, void *ctx)
{
    struct buf out;
    buf_init(&out);
    int rc;
    switch (c->verb) {
    case QV_LIST: rc = admin_list(c, &out); break;
    case QV_SHOW: rc = admin_show(c, &out); break;
    case QV_FLUSH: rc = admin_flush(c, &out); break;
    case QV_SUMMARY: rc = admin_summary_by_queue(&out); break;
    case QV_SUSPEND: rc = admin_suspend(c, &out); break;
    case QV_THROTTLE: rc = admin_throttle(c, &out); break;
    case QV_RESUME: rc = admin_resume(c, &out); break;
    case QV_SUSPENDED: suspend_list(&out, (int64_t)time(NULL), c->json); rc = 0; break;
    case QV_HOLD: case QV_RELEASE: case QV_DELETE: case QV_REQUEUE: {
        struct queue_admin_job *j = calloc(1, sizeof *j);
        if (j) {
            queue_cmd_copy(&j->cmd, c);
            j->named = c->nids > 0;
            buf_init(&j->answer);
        }
        if (j && choose(j) == 0) {
            j->fn = done;
            j->ctx = ctx;
            return job_turn(j) ? j : NULL;     /* a small set is answered before this returns */
        }
        if (j)
            job_free(j);
        buf_printf(&out, "out of memory\n");
        rc = -1;
        break;
    }
    default:
        buf_printf(&out, "queue %s reads the spool: run it with the postern command\n", c->name);
        rc = -1;
    }
    done(ctx, rc, &out);
    buf_free(&out);
    return NULL;
}

void queue_admin_detach(struct queue_admin_job *j)
{
    if (j)
        j->fn = NULL;
}

void queue_each_spam(queue_spam_fn fn, void *ctx)
{
    for (struct qmsg *m = queue_all(); m; m = m->next)
        for (size_t i = 0; i < m->nrcpts; i++)
            if (m->rcpts[i].st.status == RCPT_QUARANTINED && !m->deleted)
                fn(ctx, m->id, m->sender, m->rcpts[i].addr, rtext_str(m->rcpts[i].st.last_reply), m->arrival);
}
