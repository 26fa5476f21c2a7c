/* workers.h - a small thread pool for work that may block (fsync, rename,
 * directory fsync). Jobs run on a worker; their completion runs back on the
 * event loop thread, through an inbox (inbox.h). */
#ifndef POSTERN_WORKERS_H
#define POSTERN_WORKERS_H
#include "inbox.h"

struct work {
    void (*run)(struct work *w);    /* on a worker thread */
    void (*done)(struct work *w);   /* on the loop thread afterwards */
    struct work *next;
    struct inbox_item finished;     /* workers.c's own */
};

int workers_start(int nthreads);
void workers_submit(struct work *w);
/* Jobs submitted but whose done() has not run yet. */
int workers_pending(void);
void workers_stop(void);

#endif
