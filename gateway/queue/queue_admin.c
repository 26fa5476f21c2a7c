/* queue_admin.c - the queue's admin commands, for the control socket and
 * the console: list, show, hold, release (to some recipients), delete and
 * flush, on the messages queue.c holds (queue_int.h). */
#include "queue_int.h"
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
    *v = (struct queue_view){.id = m->id, .size = m->size, .arrival = m->arrival, .sender = m->sender,
                             .held = m->held, .active = m->jobs_outstanding > 0, .hold_reason = m->hold_reason,
                             .decisions = m->decisions ? m->decisions : "",
                             .waiting = waiting, .nrcpts = m->nrcpts, .rcpts = addrs, .st = sts};
    return true;
}

static void view_free(struct queue_view *v)
{
    free((void *)v->rcpts);
    free((void *)v->st);
}

int queue_admin_list(bool json, struct buf *out)
{
    int64_t now = (int64_t)time(NULL);
    size_t n = 0;
    queue_view_list_begin(json, out);
    for (struct qmsg *m = queue_all(); m; m = m->next) {
        struct queue_view v;
        char waiting[300];
        if (!view_of(m, &v, waiting, sizeof waiting))
            continue;
        queue_view_list_item(&v, json, n++, now, out);
        view_free(&v);
    }
    queue_view_list_end(json, n, out);
    return 0;
}

static struct qmsg *find_or_say(const char *id, struct buf *out)
{
    struct qmsg *m = qid_valid(id) ? queue_find(id) : NULL;
    if (!m)
        buf_printf(out, "no message with queue ID '%s'\n", id);
    return m;
}

int queue_admin_show(const char *arg, struct buf *out)
{
    bool json = !strncmp(arg, "--json ", 7);      /* the message as `list --json` gives it, alone */
    struct qmsg *m = find_or_say(json ? arg + 7 : arg, out);
    struct queue_view v;
    char waiting[300];
    if (!m || !view_of(m, &v, waiting, sizeof waiting))
        return -1;
    int64_t now = (int64_t)time(NULL);
    if (json) {
        queue_view_list_begin(true, out);
        queue_view_list_item(&v, true, 0, now, out);
        queue_view_list_end(true, 1, out);
    } else {
        queue_view_show(&v, now, out);
    }
    view_free(&v);
    return 0;
}

int queue_admin_hold(const char *id, struct buf *out)
{
    struct qmsg *m = find_or_say(id, out);
    if (!m)
        return -1;
    if (!m->held) {
        m->held = true;
        queue_unschedule(m);
        queue_save_state(m);
        log_info("%s: put on hold by admin", m->id);
    }
    buf_printf(out, "%s: on hold%s\n", m->id, m->jobs_outstanding ? " after the running attempt" : "");
    return 0;
}

/* Drop the pending recipients not named in list (space-separated). */
/* Is r named in list (recipients as xtext words, space-separated)? */
static bool listed(const char *list, const char *addr)
{
    for (const char *p = list; *p; p += strspn(p, " ")) {
        size_t n = strcspn(p, " ");
        char word[1024], dec[1024];
        if (n < sizeof word) {
            memcpy(word, p, n);
            word[n] = '\0';
            if (xtext_decode(word, dec, sizeof dec) >= 0 && !strcasecmp(dec, addr))
                return true;
        }
        p += n;
    }
    return false;
}

/* Release to the listed recipients only (the console's checkboxes, as
 * xtext words): the other pending ones are dropped without a notice. */
static int keep_only(struct qmsg *m, const char *list, struct buf *out)
{
    for (const char *p = list; *p; p += strspn(p, " ")) {
        size_t n = strcspn(p, " ");
        char word[1024], dec[1024];
        bool found = false;
        if (n < sizeof word) {
            memcpy(word, p, n);
            word[n] = '\0';
            for (size_t i = 0; xtext_decode(word, dec, sizeof dec) >= 0 && i < m->nrcpts; i++)
                found |= m->rcpts[i].st.status == RCPT_PENDING && !strcasecmp(m->rcpts[i].addr, dec);
        }
        if (!found) {
            buf_printf(out, "%s: no pending recipient <%.*s>\n", m->id, (int)(n > 320 ? 320 : n), p);
            return -1;
        }
        p += n;
    }
    for (size_t i = 0; *list && i < m->nrcpts; i++) {
        struct qrcpt *r = &m->rcpts[i];
        if (r->st.status != RCPT_PENDING || listed(list, r->addr))
            continue;
        r->st.status = RCPT_BOUNCED;           /* settled, and no notice is owed */
        snprintf(r->st.last_reply, sizeof r->st.last_reply, "dropped by admin at release");
        log_info("%s: to=<%s>, status=dropped (released to other recipients by admin)", m->id, r->addr);
    }
    return 0;
}

int queue_admin_release(const char *arg, struct buf *out)
{
    char id[QID_LEN + 1] = "";
    size_t idlen = strcspn(arg, " ");
    if (idlen < sizeof id) {
        memcpy(id, arg, idlen);
        id[idlen] = '\0';
    }
    const char *list = arg + idlen;
    list += strspn(list, " ");
    struct qmsg *m = find_or_say(id, out);
    if (!m)
        return -1;
    if (*list && (!m->held || m->jobs_outstanding)) {
        buf_printf(out, "%s: only a held message can be released to some of its recipients\n", m->id);
        return -1;
    }
    if (*list && keep_only(m, list, out) < 0)
        return -1;
    if (m->held) {
        m->held = false;
        queue_save_state(m);
        log_info("%s: released by admin", m->id);
        if (!m->jobs_outstanding)
            queue_schedule(m, 0);
        queue_run_due();
    }
    buf_printf(out, "%s: released\n", m->id);
    return 0;
}

int queue_admin_delete(const char *id, struct buf *out)
{
    struct qmsg *m = find_or_say(id, out);
    if (!m)
        return -1;
    buf_printf(out, "%s: deleted\n", m->id);
    if (m->jobs_outstanding) {
        m->deleted = true;   /* removed when the running attempt returns */
        return 0;
    }
    queue_unschedule(m);
    queue_remove_deleted(m);
    return 0;
}

static bool has_pending_for(const struct qmsg *m, const char *domain)
{
    for (size_t i = 0; i < m->nrcpts; i++)
        if (m->rcpts[i].st.status == RCPT_PENDING && !strcasecmp(addr_domain(m->rcpts[i].addr), domain))
            return true;
    return false;
}

int queue_admin_flush(const char *arg, struct buf *out)
{
    bool one_id = qid_valid(arg);
    if (one_id && !queue_find(arg))
        return find_or_say(arg, out) ? 0 : -1;
    size_t n = 0;
    for (struct qmsg *m = queue_all(); m; m = m->next) {
        if (m->held || m->jobs_outstanding || m->heap_idx < 0)
            continue;
        if (one_id ? strcmp(m->id, arg) != 0 : (*arg && !has_pending_for(m, arg)))
            continue;
        queue_unschedule(m);
        queue_schedule(m, 0);
        n++;
    }
    queue_run_due();
    buf_printf(out, "%zu message(s) scheduled for immediate delivery\n", n);
    return 0;
}
