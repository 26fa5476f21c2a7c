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
    /* Texts most messages lack or keep short are allocated to size, NULL for
     * none (qtext() reads them): a queued message is about 300 bytes, plus
     * its recipients, instead of 1 KB (issue 37). */
    char *envid;                 /* DSN: ENVID= */
    bool held;
    char *hold_reason;
    char *decisions;         /* the decision log ("explain"), NULL when no link decided anything */
    bool warned;             /* delay warning sent */
    bool queued;             /* the QUEUE stage has run */
    bool archive;            /* a plugin requested an archive copy */
    bool local;              /* made by posternd itself: a DSN, a plugin's submit_message */
    bool journal;            /* a journal report (POSTERN_SUBMIT_JOURNAL): the chain never runs for it */
    bool no_sidecar;         /* committed without ID.st and none saved since: none to read or remove */
    char *client_ip;
    char *helo;
    int hops;
    int attempts;
    int64_t next_try;
    int heap_idx;            /* -1 when not scheduled */
    int jobs_outstanding;
    struct qjob *jobs;       /* delivery attempts running now */
    bool deleted;            /* admin delete while a delivery was running */
    char *corrupt;           /* an attempt found the body breaks DATA's rules: why (moved to corrupt/) */
    char *egress;            /* the egress pool this attempt's DELIVER stage chose, or NULL */
    char *queue_name;        /* the named queue it chose, or NULL */
    bool tried;              /* this round reached a next hop for some recipient (else it is no attempt) */
    bool retry_now;          /* a back-off rule rerouted a recipient: the next round is at once */
    struct qmsg *prev, *next;   /* every message, in arrival order */
    struct qmsg *hnext;         /* ID hash chain */
};

/* One of a qmsg's allocated texts, "" for none. */
static inline const char *qtext(const char *s) { return s ? s : ""; }

/* Does recipient r want notices of this kind (a DSN_NOTIFY_* bit)? Without
 * NOTIFY (RFC 3461 4.1): failure and delay notices, no success notice. */
static inline bool qrcpt_wants(const struct qrcpt *r, unsigned notify_bit)
{
    unsigned want = r->dsn.notify ? r->dsn.notify : DSN_NOTIFY_FAILURE | DSN_NOTIFY_DELAY;
    return (want & notify_bit) != 0;
}

void queue_init(const struct config *cfg);
/* A message just committed to the spool; takes ownership of e's strings.
 * sidecar: the commit also wrote its ID.st (state decided before the 250);
 * without one, nothing looks for it (issue 37: two system calls a message). */
void queue_add_committed(struct envelope *e, size_t body_off, bool sidecar);
/* The same for a message posternd made itself (a DSN, a plugin's
 * submit_message): never a sidecar at commit. */
void queue_add_local(struct envelope *e, size_t body_off);
/* Scan the spool at start and schedule everything pending (queue_load.c):
 * a small queue before this returns, a large one in the background. */
void queue_load_spool(size_t read_before_ready);
/* "" once the whole queue is in memory, else " (the queue is still being
 * read ...)", for answers about a message that may not be loaded yet. */
const char *queue_loading_note(void);
/* At shutdown: the background reading stops (cancel: from the signal on,
 * nothing more is queued; stop: after the loop, the thread is joined). */
void queue_load_cancel(void);
void queue_load_stop(void);
/* Dispatch due messages (called on every tick and after new mail). */
void queue_run_due(void);
size_t queue_size(void);
/* Messages on the spool not yet read into the queue at start (0 once all are). */
size_t queue_load_pending(void);
/* The queue-by-state and queue-by-age gauges (at most every 5 s). */
void queue_publish_metrics(void);

/* Queue administration (queue_admin.c; commands parsed by queue_cmd.c).
 * done(ctx, rc, answer) runs once with 0 or -1 and the answer text: at
 * once, or for a set of messages after its last slice (each turn of the
 * loop does a slice, so sessions never wait on a large one). Returns the
 * job while it still runs, for queue_admin_detach when the asker leaves
 * (the job finishes without answering); else NULL. */
/* Every copy waiting in the spam quarantine (loop thread), for digests:
 * fn(ctx, queue ID, sender, recipient, reason, arrival) for each. */
typedef void (*queue_spam_fn)(void *ctx, const char *qid, const char *sender, const char *rcpt, const char *reason,
                              int64_t arrival);
void queue_each_spam(queue_spam_fn fn, void *ctx);

struct queue_cmd;
struct queue_admin_job;
typedef void (*queue_admin_done_fn)(void *ctx, int rc, struct buf *answer);
struct queue_admin_job *queue_admin_run(const struct queue_cmd *c, queue_admin_done_fn done, void *ctx);
void queue_admin_detach(struct queue_admin_job *j);

#endif
