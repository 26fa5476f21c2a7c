/* queue_int.h - what queue.c (the scheduler), queue_admin.c (the admin
 * commands) and queue_stages.c (QUEUE and DELIVER) lend each other;
 * nothing else includes it. */
#ifndef POSTERN_QUEUE_INT_H
#define POSTERN_QUEUE_INT_H
#include "queue.h"
#include "delivery.h"
#include "postern_plugin.h"
#include <stdint.h>

/* One delivery attempt of a message to one next hop. */
struct qjob {
    struct delivery_job dj;
    struct qmsg *m;
    const struct egress_pool *pool;   /* the recipients' egress pool (jobs are split by it), or NULL */
    struct qjob *next_of_msg;
};

/* Every message, in arrival order (m->next). */
struct qmsg *queue_all(void);
struct qmsg *queue_find(const char *id);
void queue_schedule(struct qmsg *m, int64_t when);
void queue_unschedule(struct qmsg *m);
void queue_save_state(struct qmsg *m);
/* The named queue m's first pending recipient goes in ("" for none), and
 * (into out, "" for none) the suspension that holds it back. */
const char *queue_named_queue_of(const struct qmsg *m);
void queue_suspension_of(const struct qmsg *m, char *out, size_t size);
/* m's hold reason ("" or NULL: none), copied. */
void qmsg_set_hold_reason(struct qmsg *m, const char *reason);
/* A message the admin deleted, with no attempt running: gone from the
 * spool and from memory, logged. */
void queue_remove_deleted(struct qmsg *m);
/* queue.c's, for queue_stages.c: dispatch now, a route a plugin set,
 * whether a stage is wanted for m. */
void queue_do_dispatch(struct qmsg *m);
bool queue_set_route(struct qrcpt *r, const char *text);
bool queue_stage_wanted(const struct qmsg *m, enum postern_stage st);
/* queue.c's, for queue_load.c: a message read from the spool at start
 * (flags and st: its sidecar's, st NULL when it had none that could be
 * read); takes e's strings and st's texts (st's entries are left empty).
 * False when it could not be queued. */
bool queue_add_loaded(struct envelope *e, size_t body_off, const struct msg_flags *flags,
                      struct rcpt_state *st);
/* queue.c's, for queue_outcome.c: m's recipients in a status; m leaves
 * the queue for good (its time in the queue observed, freed). */
size_t queue_count_status(const struct qmsg *m, char status);
void queue_drop(struct qmsg *m, int64_t now);
/* queue_outcome.c's: cfg for it; the job's callbacks for delivery (the
 * reply judge when back-off rules exist, each result, the end); after an
 * attempt, a DSN or a stage: remove, keep or reschedule m. */
void queue_outcome_init(const struct config *cfg);
void queue_outcome_attach(struct delivery_job *dj);
void queue_message_finished(struct qmsg *m);
/* queue_stages.c's: run QUEUE for a new message; run DELIVER (when wanted)
 * and then dispatch a due one. */
void queue_stage(struct qmsg *m);
void queue_dispatch(struct qmsg *m);

#endif
