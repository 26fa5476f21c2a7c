/* inbox.h - completions that other threads hand to the event loop: a
 * thread posts an item, the loop runs it, in the order posted. One eventfd
 * wakes the loop for a whole batch. Used by the worker pool (workers.c) and
 * the Lua threads (lua/lua_threads.c). */
#ifndef POSTERN_INBOX_H
#define POSTERN_INBOX_H
#include "event.h"
#include <pthread.h>

struct inbox_item {
    void (*run)(struct inbox_item *it);     /* on the loop thread */
    struct inbox_item *next;
};

struct inbox {
    pthread_mutex_t lock;
    struct inbox_item *head;                /* newest first */
    struct ev_watch w;
};

/* Loop thread: 0, or -1 with errno. */
int inbox_open(struct inbox *in);
/* Any thread. */
void inbox_post(struct inbox *in, struct inbox_item *it);
/* Loop thread; items still posted are not run. */
void inbox_close(struct inbox *in);

#endif
