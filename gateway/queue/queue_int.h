/* queue_int.h - what queue.c (the scheduler) lends queue_admin.c (the admin
 * commands); nothing else includes it. */
#ifndef POSTERN_QUEUE_INT_H
#define POSTERN_QUEUE_INT_H
#include "queue.h"
#include "delivery.h"
#include <stdint.h>

/* One delivery attempt of a message to one next hop. */
struct qjob {
    struct delivery_job dj;
    struct qmsg *m;
    struct qjob *next_of_msg;
};

/* Every message, in arrival order (m->next). */
struct qmsg *queue_all(void);
struct qmsg *queue_find(const char *id);
void queue_schedule(struct qmsg *m, int64_t when);
void queue_unschedule(struct qmsg *m);
void queue_save_state(struct qmsg *m);
/* A message the admin deleted, with no attempt running: gone from the
 * spool and from memory, logged. */
void queue_remove_deleted(struct qmsg *m);

#endif
