/* queue_view.c - the one presentation of queued messages (see
 * queue_view.h): list lines, JSON, show, and the qshape table. */
#include "queue_view.h"
#include "array_grow.h"
#include "json_out.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

const char *queue_view_rcpt_status(char st)
{
    return st == RCPT_DONE || st == RCPT_RELAYED ? "delivered" : st == RCPT_PENDING ? "pending"
           : st == RCPT_QUARANTINED ? "quarantined" : "failed";
}

const char *queue_view_state(const struct queue_view *v)
{
    if (v->held)
        return "hold";
    if (v->active)
        return "active";
    bool pending = false, tried = false, spam = false;
    for (size_t i = 0; i < v->nrcpts; i++) {
        pending |= v->st[i]->status == RCPT_PENDING;
        tried |= v->st[i]->status == RCPT_PENDING && v->st[i]->attempts > 0;
        spam |= v->st[i]->status == RCPT_QUARANTINED;
    }
    return tried ? "deferred" : !pending && spam ? "spam" : "queued";
}

/* The last reply of a pending recipient (the one the list shows). */
static const char *last_error(const struct queue_view *v)
{
    const char *last = "";
    for (size_t i = 0; i < v->nrcpts; i++)
        if (v->st[i]->status == RCPT_PENDING && rtext_has(v->st[i]->last_reply))
            last = v->st[i]->last_reply.s;
    return last;
}

static void list_line(const struct queue_view *v, int64_t now, struct buf *out)
{
    buf_printf(out, "%s %10llu %7llds %-8s <%s>", v->id, (unsigned long long)v->size,
               (long long)(now - v->arrival), queue_view_state(v), v->sender);
    for (size_t i = 0; i < v->nrcpts; i++)
        if (v->st[i]->status == RCPT_PENDING)
            buf_printf(out, " <%s>", v->rcpts[i]);
    if (v->waiting[0])
        buf_printf(out, " waiting: %s", v->waiting);
    if (v->queue_name && v->queue_name[0])
        buf_printf(out, " queue: %s", v->queue_name);
    const char *last = last_error(v);
    buf_printf(out, "%s%s", last[0] ? " last: " : "", last);
    if (v->held && v->hold_reason[0])
        buf_printf(out, " reason: %s", v->hold_reason);
    buf_puts(out, "\n");
}

static void json_object(const struct queue_view *v, int64_t now, struct buf *out)
{
    buf_puts(out, "{\"id\":");
    json_out_string(out, v->id);
    buf_printf(out, ",\"size\":%llu,\"arrival\":%lld,\"age\":%lld,\"state\":", (unsigned long long)v->size,
               (long long)v->arrival, (long long)(now - v->arrival));
    json_out_string(out, queue_view_state(v));
    buf_puts(out, ",\"sender\":");
    json_out_string(out, v->sender);
    buf_puts(out, ",\"hold_reason\":");
    json_out_string(out, v->hold_reason);
    buf_puts(out, ",\"waiting\":");
    json_out_string(out, v->waiting);
    buf_puts(out, ",\"queue\":");
    json_out_string(out, v->queue_name ? v->queue_name : "");
    buf_puts(out, ",\"decisions\":[");      /* the decision log, one string per line */
    for (const char *d = v->decisions ? v->decisions : "", *nl; *d; d = *nl ? nl + 1 : nl) {
        nl = d + strcspn(d, "\n");
        char line[512];
        snprintf(line, sizeof line, "%.*s", (int)(nl - d), d);
        buf_puts(out, d == v->decisions ? "" : ",");
        json_out_string(out, line);
    }
    buf_puts(out, "]");
    buf_puts(out, ",\"recipients\":[");
    for (size_t i = 0; i < v->nrcpts; i++) {
        const struct rcpt_state *st = v->st[i];
        buf_puts(out, i ? ",{\"address\":" : "{\"address\":");
        json_out_string(out, v->rcpts[i]);
        buf_puts(out, ",\"status\":");
        json_out_string(out, queue_view_rcpt_status(st->status));
        buf_printf(out, ",\"attempts\":%d,\"next_try\":%lld,\"last_reply\":", st->attempts, (long long)st->next_try);
        json_out_string(out, rtext_str(st->last_reply));
        buf_puts(out, ",\"remote\":");
        json_out_string(out, rtext_str(st->remote));
        buf_puts(out, "}");
    }
    buf_puts(out, "]}");
}

void queue_view_list_begin(bool json, struct buf *out)
{
    buf_puts(out, json ? "[" : "ID                     SIZE     AGE STATE    SENDER RECIPIENTS (pending) LAST ERROR\n");
}

void queue_view_list_item(const struct queue_view *v, bool json, size_t nth, int64_t now, struct buf *out)
{
    if (!json) {
        list_line(v, now, out);
        return;
    }
    buf_puts(out, nth ? ",\n" : "\n");
    json_object(v, now, out);
}

void queue_view_list_end(bool json, size_t n, struct buf *out)
{
    if (json)
        buf_puts(out, "\n]\n");
    else
        buf_printf(out, "-- %zu message(s)\n", n);
}

void queue_view_time(int64_t t, char *out, size_t size)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, size, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

void queue_view_span(int64_t s, char *out, size_t size)
{
    if (s < 0)
        s = 0;
    if (s < 60)
        snprintf(out, size, "%llds", (long long)s);
    else if (s < 3600)
        snprintf(out, size, "%lldm %llds", (long long)(s / 60), (long long)(s % 60));
    else if (s < 86400)
        snprintf(out, size, "%lldh %lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
    else
        snprintf(out, size, "%lldd %lldh", (long long)(s / 86400), (long long)(s % 86400 / 3600));
}

/* The earliest next try of a pending recipient, or 0. */
static int64_t next_try(const struct queue_view *v)
{
    int64_t next = 0;
    for (size_t i = 0; i < v->nrcpts; i++)
        if (v->st[i]->status == RCPT_PENDING && (!next || v->st[i]->next_try < next))
            next = v->st[i]->next_try;
    return next;
}

void queue_view_show(const struct queue_view *v, int64_t now, struct buf *out)
{
    char when[64], ago[32];
    queue_view_time(v->arrival, when, sizeof when);
    queue_view_span(now - v->arrival, ago, sizeof ago);
    int attempts = 0;                 /* delivery rounds: the most any recipient has had */
    for (size_t i = 0; i < v->nrcpts; i++)
        attempts = v->st[i]->attempts > attempts ? v->st[i]->attempts : attempts;
    buf_printf(out, "id: %s\nstate: %s\narrival: %s (%s ago)\nsize: %llu\nattempts: %d\n", v->id, queue_view_state(v),
               when, ago, (unsigned long long)v->size, attempts);
    int64_t next = next_try(v);
    if (!v->held && next) {
        queue_view_time(next, when, sizeof when);
        queue_view_span(next - now, ago, sizeof ago);
        buf_printf(out, "next attempt: %s (in %s)\n", when, next > now ? ago : "0s");
    }
    if (v->held && v->hold_reason[0])
        buf_printf(out, "hold reason: %s\n", v->hold_reason);
    for (const char *d = v->decisions ? v->decisions : "", *nl; *d; d = *nl ? nl + 1 : nl) {
        nl = d + strcspn(d, "\n");
        buf_printf(out, "decided: %.*s\n", (int)(nl - d), d);      /* stage, link, verdict: reply */
    }
    if (v->waiting[0])
        buf_printf(out, "waiting: %s\n", v->waiting);
    if (v->queue_name && v->queue_name[0])
        buf_printf(out, "queue: %s\n", v->queue_name);
    buf_printf(out, "from: <%s>\n", v->sender);
    for (size_t i = 0; i < v->nrcpts; i++) {
        const struct rcpt_state *st = v->st[i];
        buf_printf(out, "rcpt: <%s> status=%s attempts=%d%s%s last=%s\n", v->rcpts[i], queue_view_rcpt_status(st->status),
                   st->attempts, rtext_has(st->nexthop) ? " nexthop=" : "",
                   rtext_str(st->nexthop), rtext_str(st->last_reply));
    }
}

/* ---- qshape ------------------------------------------------------- */

static int bucket_of(int64_t age_seconds)
{
    int64_t minutes = age_seconds / 60, limit = 5;
    for (int b = 0; b < QSHAPE_BUCKETS - 1; b++, limit *= 2)
        if (minutes < limit)
            return b;
    return QSHAPE_BUCKETS - 1;
}

void qshape_add(struct qshape *q, const char *domain, int64_t age_seconds)
{
    int b = bucket_of(age_seconds);
    q->all.total++;
    q->all.by_age[b]++;
    struct qshape_row *r = NULL;
    for (size_t i = 0; i < q->n && !r; i++)
        if (!strcasecmp(q->rows[i].domain, domain))
            r = &q->rows[i];
    if (!r) {
        struct qshape_row *rows = array_grow(q->rows, &q->cap, q->n + 1, sizeof *q->rows, 64);
        if (!rows)
            return;
        q->rows = rows;
        r = &q->rows[q->n++];
        memset(r, 0, sizeof *r);
        snprintf(r->domain, sizeof r->domain, "%s", domain);
    }
    r->total++;
    r->by_age[b]++;
}

static int by_total(const void *a, const void *b)
{
    const struct qshape_row *x = a, *y = b;
    return x->total != y->total ? (x->total < y->total ? 1 : -1) : strcmp(x->domain, y->domain);
}

static void qshape_row_print(const struct qshape_row *r, struct buf *out)
{
    buf_printf(out, "%30.30s %6u", r->domain, r->total);
    for (int b = 0; b < QSHAPE_BUCKETS; b++)
        buf_printf(out, " %5u", r->by_age[b]);
    buf_puts(out, "\n");
}

void qshape_print(struct qshape *q, size_t max_rows, struct buf *out)
{
    qsort(q->rows, q->n, sizeof *q->rows, by_total);
    buf_printf(out, "%30s %6s %5s %5s %5s %5s %5s %5s %5s %5s %5s %5s\n", "", "T", "5", "10", "20", "40", "80", "160",
               "320", "640", "1280", "1280+");
    snprintf(q->all.domain, sizeof q->all.domain, "TOTAL");
    qshape_row_print(&q->all, out);
    for (size_t i = 0; i < q->n && i < max_rows; i++)
        qshape_row_print(&q->rows[i], out);
}

void qshape_free(struct qshape *q)
{
    free(q->rows);
    memset(q, 0, sizeof *q);
}
