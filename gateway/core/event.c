/* event.c - epoll loop with a 100 ms timerfd tick and a graveyard of objects
 * to free after each dispatch batch. */
#include "event.h"
#include "array_grow.h"
#include "clock.h"
#include "log.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_TICK_FNS 32
#define MAX_EVENTS 256

struct deferred {
    void *ptr;
    void (*fn)(void *);
};

static int epfd = -1;
static bool running;
static uint64_t now_ms;
static void (*tick_fns[MAX_TICK_FNS])(void);
static int ntick_fns;
static struct deferred *graveyard;
static size_t ngrave, capgrave;
static struct ev_watch tick_watch;
static struct deferred *soon;
static size_t nsoon, capsoon;
static struct ev_watch **kicks;     /* watches owed a synthetic EPOLLIN */
static size_t nkicks, capkicks;

void ev_update_time(void)
{
    now_ms = clock_mono_ms();
}

uint64_t ev_now_ms(void) { return now_ms; }

static void on_tick(void *ctx, uint32_t events)
{
    (void)ctx;
    (void)events;
    uint64_t expirations;
    ssize_t r = read(tick_watch.fd, &expirations, sizeof expirations);
    (void)r;
    for (int i = 0; i < ntick_fns; i++)
        tick_fns[i]();
}

int ev_init(void)
{
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        return -1;
    ev_update_time();
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (tfd < 0)
        return -1;
    struct itimerspec its = {{0, 100 * 1000000}, {0, 100 * 1000000}};
    if (timerfd_settime(tfd, 0, &its, NULL) < 0)
        return -1;
    return ev_add(&tick_watch, tfd, EPOLLIN, on_tick, NULL);
}

int ev_add(struct ev_watch *w, int fd, uint32_t mask, ev_handler fn, void *ctx)
{
    w->fd = fd;
    w->mask = w->armed = mask;
    w->fn = fn;
    w->ctx = ctx;
    w->kicked = false;
    struct epoll_event ev = {.events = mask, .data.ptr = w};
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

static int arm(struct ev_watch *w, uint32_t mask)
{
    w->armed = mask;
    struct epoll_event ev = {.events = mask, .data.ptr = w};
    return epoll_ctl(epfd, EPOLL_CTL_MOD, w->fd, &ev);
}

int ev_mod(struct ev_watch *w, uint32_t mask)
{
    w->mask = mask;
    if (w->armed == mask || w->fd < 0)
        return 0;
    if ((w->armed & ~(uint32_t)EPOLLIN) == mask)
        return 0;           /* only input taken away: lazily (see event.h) */
    return arm(w, mask);
}

/* The events of w to hand its owner: input it no longer wants is disarmed
 * now, and not handed on. */
static uint32_t wanted_events(struct ev_watch *w, uint32_t events)
{
    if (!(events & EPOLLIN) || (w->mask & EPOLLIN))
        return events;
    if (w->armed != w->mask)
        arm(w, w->mask);
    return events & ~(uint32_t)EPOLLIN;
}

void ev_del(struct ev_watch *w)
{
    if (w->fd >= 0)
        epoll_ctl(epfd, EPOLL_CTL_DEL, w->fd, NULL);
    w->fd = -1;
    if (w->kicked) {       /* its owner may be freed before the kick runs */
        for (size_t i = 0; i < nkicks; i++)
            if (kicks[i] == w)
                kicks[i] = NULL;
        w->kicked = false;
    }
}

void ev_kick(struct ev_watch *w)
{
    if (w->kicked || w->fd < 0)
        return;
    struct ev_watch **n = array_grow(kicks, &capkicks, nkicks + 1, sizeof *kicks, 64);
    if (!n) {
        log_error("out of memory queueing buffered input; it waits for the next event");
        return;
    }
    kicks = n;
    w->kicked = true;
    kicks[nkicks++] = w;
}

/* Deliver the kicks queued so far; a handler may queue its watch again
 * (more buffered input than one turn reads), for the next round. */
static void run_kicks(void)
{
    size_t n = nkicks;
    if (!n)
        return;
    for (size_t i = 0; i < n; i++) {
        struct ev_watch *w = kicks[i];
        if (!w)
            continue;
        kicks[i] = NULL;
        w->kicked = false;
        if (w->fd >= 0)
            w->fn(w->ctx, EPOLLIN);
    }
    memmove(kicks, kicks + n, (nkicks - n) * sizeof *kicks);
    nkicks -= n;
}

void ev_defer_free(void *ptr, void (*fn)(void *))
{
    struct deferred *n = array_grow(graveyard, &capgrave, ngrave + 1, sizeof *graveyard, 64);
    if (!n) {
        log_error("out of memory deferring a free; leaking %p", ptr);
        return;
    }
    graveyard = n;
    graveyard[ngrave++] = (struct deferred){ptr, fn};
}

static void bury_dead(void)
{
    /* fn may defer more frees; loop until empty */
    while (ngrave) {
        struct deferred d = graveyard[--ngrave];
        d.fn(d.ptr);
    }
}

void ev_soon(void (*fn)(void *), void *arg)
{
    struct deferred *n = array_grow(soon, &capsoon, nsoon + 1, sizeof *soon, 64);
    if (!n) {
        fn(arg);    /* cannot queue it: run it now rather than lose it */
        return;
    }
    soon = n;
    soon[nsoon++] = (struct deferred){arg, fn};
}

/* Run the calls queued so far (new ones wait for the next round). */
static void run_soon(void)
{
    size_t n = nsoon;
    if (!n)
        return;
    struct deferred *batch = malloc(n * sizeof *batch);
    if (!batch)
        return;
    memcpy(batch, soon, n * sizeof *batch);
    memmove(soon, soon + n, (nsoon - n) * sizeof *soon);
    nsoon -= n;
    for (size_t i = 0; i < n; i++)
        batch[i].fn(batch[i].ptr);
    free(batch);
}

void ev_on_tick(void (*fn)(void))
{
    if (ntick_fns == MAX_TICK_FNS) {     /* a programming error, found at every start: never silently */
        log_error("event loop: more than %d tick functions", MAX_TICK_FNS);
        abort();
    }
    tick_fns[ntick_fns++] = fn;
}

void ev_stop(void) { running = false; }

int ev_run(void)
{
    struct epoll_event evs[MAX_EVENTS];
    running = true;
    while (running) {
        int n = epoll_wait(epfd, evs, MAX_EVENTS, nsoon || nkicks ? 0 : 1000);
        ev_update_time();
        if (n < 0) {
            if (errno == EINTR)
                continue;
            log_error("epoll_wait: %s", strerror(errno));
            return -1;
        }
        for (int i = 0; i < n; i++) {
            struct ev_watch *w = evs[i].data.ptr;
            uint32_t events = w->fd >= 0 ? wanted_events(w, evs[i].events) : 0;
            if (events)
                w->fn(w->ctx, events);
        }
        run_kicks();
        run_soon();
        bury_dead();
    }
    return 0;
}
