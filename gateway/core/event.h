/* event.h - the single-threaded epoll event loop. Objects register a watch
 * (fd + callback); a periodic tick drives timeouts and the scheduler; objects
 * freed while events are being dispatched go through ev_defer_free so a
 * later event in the same batch never touches freed memory. */
#ifndef POSTERN_EVENT_H
#define POSTERN_EVENT_H
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>

typedef void (*ev_handler)(void *ctx, uint32_t events);

struct ev_watch {
    int fd;
    uint32_t mask;    /* the events the owner wants */
    uint32_t armed;   /* the events epoll has: mask, or mask + EPOLLIN not yet taken away */
    ev_handler fn;
    void *ctx;
    bool kicked;      /* an ev_kick is queued for it */
};

int ev_init(void);
int ev_add(struct ev_watch *w, int fd, uint32_t mask, ev_handler fn, void *ctx);
/* Input no longer wanted stays armed until some arrives (then it is
 * disarmed, unseen by the handler): a session that pauses its input while
 * a message commits, and takes it back, costs no epoll_ctl at all unless
 * the client writes in between (issue 37). */
int ev_mod(struct ev_watch *w, uint32_t mask);
/* Remove from epoll (fd stays open; the caller closes it). */
void ev_del(struct ev_watch *w);
/* Free ptr with fn after the current dispatch batch. */
void ev_defer_free(void *ptr, void (*fn)(void *));
/* Call fn(arg) after the current batch of events, before waiting again
 * (cooperative work that gave way to other sessions). */
void ev_soon(void (*fn)(void *), void *arg);
/* Call w's handler with EPOLLIN after the current batch, once however often
 * asked, unless w is removed first: for input the kernel no longer signals
 * because a library (OpenSSL) already holds it in user space. */
void ev_kick(struct ev_watch *w);
/* Functions called on every tick (about every 100 ms). */
void ev_on_tick(void (*fn)(void));
/* Run until ev_stop; returns 0. */
int ev_run(void);
void ev_stop(void);
/* Monotonic milliseconds, cached per loop iteration. */
uint64_t ev_now_ms(void);
void ev_update_time(void);

#endif
