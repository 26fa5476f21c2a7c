/* queue.h - the in-memory view of the spool and the scheduler: which
 * message is due, grouped into delivery jobs per next hop, and what happens
 * when a job comes back (done, deferred with backoff, failed, expired). */
#ifndef POSTERN_QUEUE_H
#define POSTERN_QUEUE_H
#include "config.h"
#include "spool.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct qrcpt {
    char *addr;
    struct rcpt_dsn dsn;         /* NOTIFY/ORCPT from the sender */
    struct rcpt_state st;
    struct nexthop *route;       /* a plugin's override (st.nexthop parsed), or NULL */
};

struct qjob;

struct qmsg {
    char id[QID_LEN];
    char *sender;
    struct qrcpt *rcpts;
    size_t nrcpts;
    int64_t arrival;
    size_t body_off;
    uint64_t size;
    enum smtp_body body;
    bool smtputf8;
    bool requiretls, tls_optional;   /* RFC 8689: MAIL REQUIRETLS, "TLS-Required: No" */
    enum dsn_ret ret;            /* DSN: RET= */
    char envid[DSN_MAX_ENVID + 1];
    bool held;
    char hold_reason[256];
    char *decisions;         /* the decision log ("explain"), NULL when no link decided anything */
    bool warned;             /* delay warning sent */
    bool queued;             /* the QUEUE stage has run */
    bool archive;            /* a plugin requested an archive copy */
    bool local;              /* made by posternd itself: a DSN, a plugin's submit_message */
    bool journal;            /* a journal report (POSTERN_SUBMIT_JOURNAL): the chain never runs for it */
    char client_ip[64];
    char helo[256];
    int hops;
    int attempts;
    int64_t next_try;
    int heap_idx;            /* -1 when not scheduled */
    int jobs_outstanding;
    struct qjob *jobs;       /* delivery attempts running now */
    bool deleted;            /* admin delete while a delivery was running */
    char *corrupt;           /* an attempt found the body breaks DATA's rules: why (moved to corrupt/) */
    struct qmsg *prev, *next;   /* every message, in arrival order */
    struct qmsg *hnext;         /* ID hash chain */
};

/* Does recipient r want notices of this kind (a DSN_NOTIFY_* bit)? Without
 * NOTIFY (RFC 3461 4.1): failure and delay notices, no success notice. */
static inline bool qrcpt_wants(const struct qrcpt *r, unsigned notify_bit)
{
    unsigned want = r->dsn.notify ? r->dsn.notify : DSN_NOTIFY_FAILURE | DSN_NOTIFY_DELAY;
    return (want & notify_bit) != 0;
}

void queue_init(const struct config *cfg);
/* A message just committed to the spool; takes ownership of e's strings. */
void queue_add_committed(struct envelope *e, size_t body_off);
/* Scan the spool at start and schedule everything pending. */
void queue_load_spool(void);
/* Dispatch due messages (called on every tick and after new mail). */
void queue_run_due(void);
size_t queue_size(void);
/* The queue-by-state and queue-by-age gauges (at most every 5 s). */
void queue_publish_metrics(void);

/* Queue administration (the control socket). Each writes a human-readable
 * answer to out and returns 0, or -1 with the error text in out. */
int queue_admin_list(bool json, struct buf *out);   /* json: an array of objects */
/* arg: "ID", or "--json ID" for the message as one `list --json` array */
int queue_admin_show(const char *arg, struct buf *out);
int queue_admin_hold(const char *id, struct buf *out);
/* arg: "ID" or "ID rcpt rcpt ...": release to those only, dropping the
 * other pending recipients (no bounce: an admin chose). */
int queue_admin_release(const char *arg, struct buf *out);
int queue_admin_delete(const char *id, struct buf *out);
/* arg: a queue ID, a recipient domain, or "" for everything. */
int queue_admin_flush(const char *arg, struct buf *out);

#endif
