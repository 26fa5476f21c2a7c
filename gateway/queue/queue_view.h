/* queue_view.h - how `postern queue list|show|summary` present a message,
 * whoever read it: the daemon from its queue, or the CLI from the spool
 * while the daemon is down. One formatter, so the columns never differ. */
#ifndef POSTERN_QUEUE_VIEW_H
#define POSTERN_QUEUE_VIEW_H
#include "buf.h"
#include "spool.h"
#include <stdbool.h>
#include <stdint.h>

struct queue_view {
    const char *id;
    uint64_t size;
    int64_t arrival;
    const char *sender;
    bool held;
    bool active;                 /* a delivery attempt is running (only the daemon knows) */
    const char *hold_reason;     /* "" = none */
    const char *decisions;       /* the decision log, "" = none */
    const char *waiting;         /* "rate limit for DOMAIN", "destination D suspended", or "" */
    const char *queue_name;      /* its named queue (the daemon's view), or "" */
    size_t nrcpts;
    const char *const *rcpts;    /* addresses */
    const struct rcpt_state *const *st;
};

/* A recipient's status as shown: "pending", "delivered", "quarantined" or "failed". */
const char *queue_view_rcpt_status(char st);
/* "hold", "active", "deferred" (tried before), "spam" (waiting only in the
 * spam quarantine) or "queued" (not yet tried). */
const char *queue_view_state(const struct queue_view *v);
/* `queue list`: begin, one item per message (the nth, from 0), end; as
 * text lines or (json) one array of objects. */
void queue_view_list_begin(bool json, struct buf *out);
void queue_view_list_item(const struct queue_view *v, bool json, size_t nth, int64_t now, struct buf *out);
void queue_view_list_end(bool json, size_t n, struct buf *out);
void queue_view_show(const struct queue_view *v, int64_t now, struct buf *out);
/* "2026-12-01 18:20:01 UTC" and "3m 20s". */
void queue_view_time(int64_t t, char *out, size_t size);
void queue_view_span(int64_t seconds, char *out, size_t size);

/* qshape: pending recipients by domain and age bucket. */
#define QSHAPE_BUCKETS 10        /* 5 10 20 40 80 160 320 640 1280 1280+ minutes */
struct qshape_row {
    char domain[256];
    unsigned total, by_age[QSHAPE_BUCKETS];
};
struct qshape {
    struct qshape_row *rows;
    size_t n, cap;
    struct qshape_row all;
};
void qshape_add(struct qshape *q, const char *domain, int64_t age_seconds);
void qshape_print(struct qshape *q, size_t max_rows, struct buf *out);
void qshape_free(struct qshape *q);

#endif
