/* lua_threads.c - the threads Lua handlers run on, so that the network
 * loop never waits for a script.
 *
 * A call the loop did not answer itself (lua_fast.c) is queued, perhaps
 * already started in the loop's state; any Lua thread takes it, runs it a slice at a time
 * (lua_call_step) and round-robins between the calls it has started, so a
 * busy script shares its thread. A watchdog thread looks every
 * WATCH_EVERY_MS:
 *   - a thread whose current slice has run over STUCK_MS is inside one C
 *     call the count hook cannot interrupt (a pathological string.match):
 *     it is set aside (retired) and a new thread takes the queue. A retired
 *     thread finishes what it started and exits; at most MAX_RETIRED exist.
 *   - a call not answered within lua_time_limit + 1 s is answered for
 *     (POSTERN_ERROR, so the message tempfails) and abandoned: from then on
 *     its transaction belongs to the caller again, tx methods raise, and
 *     the thread drops it when it comes back.
 * The call's lock (held by tx methods, see guarded() in postern_lua.c) is
 * only ever try-locked by the watchdog, so nobody waits on a script. */
#include "lua_call.h"
#include "event.h"
#include "hooks.h"
#include "inbox.h"
#include "log.h"
#include "metrics.h"
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <unistd.h>

#define STUCK_MS 100
#define WATCH_EVERY_MS 20
#define MAX_RETIRED 8
#define GRACE_MS 1000            /* beyond lua_time_limit before a call is abandoned */

struct lua_thread {
    pthread_t tid;
    struct lua_call *head, *tail;       /* calls it started, waiting for their next slice */
    _Atomic uint64_t slice_since_ms;    /* 0 outside a slice */
    bool retired;
    struct lua_thread *next;
};

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_cond = PTHREAD_COND_INITIALIZER;
static pthread_cond_t watch_cond = PTHREAD_COND_INITIALIZER;
static struct lua_call *queue_head, *queue_tail;    /* not started yet */
static struct lua_call *inflight;                   /* not answered yet */
static struct lua_thread *threads;
static int nwanted, nactive, nretired;
static bool stopping, started, watchdog_running;
static pthread_t watchdog;
static bool on_loop;
static bool loop_first;                             /* on_loop and lua_loop_first */
static struct inbox answered;                       /* answered calls, for the loop */
static int pending;                                 /* loop thread only */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- calls ---------------------------------------------------------- */

static void call_unref(struct lua_call *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&c->lock);
    free(c->arg);
    free(c);
}

static void fifo_push(struct lua_call **head, struct lua_call **tail, struct lua_call *c)
{
    c->next_q = NULL;
    if (*tail)
        (*tail)->next_q = c;
    else
        *head = c;
    *tail = c;
}

static struct lua_call *fifo_pop(struct lua_call **head, struct lua_call **tail)
{
    struct lua_call *c = *head;
    if (c && !(*head = c->next_q))
        *tail = NULL;
    return c;
}

static void fifo_remove(struct lua_call **head, struct lua_call **tail, struct lua_call *c)
{
    struct lua_call *prev = NULL;
    for (struct lua_call *p = *head; p; prev = p, p = p->next_q) {
        if (p != c)
            continue;
        if (prev)
            prev->next_q = p->next_q;
        else
            *head = p->next_q;
        if (*tail == p)
            *tail = prev;
        return;
    }
}

/* Hand the answer over (pool_lock held). On the loop it goes through the
 * inbox to on_answered; otherwise done() runs here and now. */
static void deliver(struct lua_call *c)
{
    if (c->prev_all)
        c->prev_all->next_all = c->next_all;
    else
        inflight = c->next_all;
    if (c->next_all)
        c->next_all->prev_all = c->prev_all;
    if (!on_loop) {
        c->done(c->done_ctx, c->answer_v, c->answer_reply);
        call_unref(c);
        return;
    }
    inbox_post(&answered, &c->answer);
}

/* The loop: an answered call's done(). */
static void on_answered(struct inbox_item *it)
{
    struct lua_call *c = (struct lua_call *)((char *)it - offsetof(struct lua_call, answer));
    pending--;
    c->done(c->done_ctx, c->answer_v, c->answer_reply);
    call_unref(c);
}

/* A call the loop answered itself (lua_fast.c). */
static void answer_now(struct lua_call *c)
{
    postern_verdict v = c->v;
    char reply[sizeof c->reply];
    memcpy(reply, c->reply, sizeof reply);
    lua_call_done_fn done = c->done;
    void *ctx = c->done_ctx;
    call_unref(c);
    done(ctx, v, reply);
}

void lua_call_submit(struct lua_script *s, txn_t *t, enum postern_stage st, const char *arg, size_t len,
                     lua_call_done_fn done, void *ctx)
{
    struct lua_call *c = calloc(1, sizeof *c);
    if (!c || (arg && !(c->arg = malloc(len ? len : 1))) || !started) {
        if (c)
            free(c->arg);
        free(c);
        log_error("%s: lua: %s", t->qid[0] ? t->qid : "-", started ? "out of memory" : "no Lua threads running");
        done(ctx, POSTERN_ERROR, "");
        return;
    }
    c->s = s;
    c->t = t;
    c->stage = (int)st;
    c->has_arg = arg != NULL;
    if (arg)
        memcpy(c->arg, arg, len);
    c->len = len;
    size_t qlen = strnlen(t->qid, sizeof c->qid - 1);
    memcpy(c->qid, t->qid, qlen);
    c->sid = t->sid;
    c->done = done;
    c->done_ctx = ctx;
    c->answer.run = on_answered;
    uint64_t submitted_ms = now_ms();
    pthread_mutex_init(&c->lock, NULL);
    atomic_init(&c->refs, 1);          /* the answer; a thread adds its own */
    atomic_init(&c->abandoned, false);
    if (on_loop) {
        static const char *const where[] = {[LUA_FAST_DONE] = "where=\"loop\"", [LUA_FAST_MOVE] = "where=\"moved\"",
                                            [LUA_FAST_NONE] = "where=\"thread\"",
                                            [LUA_FAST_AGAIN] = "where=\"restarted\""};
        enum lua_fast_result r = loop_first ? lua_call_fast(c) : LUA_FAST_NONE;
        metric_inc(M_LUA_CALLS, where[r]);
        if (r == LUA_FAST_DONE) {
            answer_now(c);
            return;
        }
        pending++;
    }
    c->deadline_ms = submitted_ms + (uint64_t)lua_script_time_limit_ms(s) + GRACE_MS;
    pthread_mutex_lock(&pool_lock);
    c->next_all = inflight;
    if (inflight)
        inflight->prev_all = c;
    inflight = c;
    fifo_push(&queue_head, &queue_tail, c);
    pthread_cond_signal(&work_cond);
    pthread_mutex_unlock(&pool_lock);
}

int lua_calls_pending(void) { return pending; }

/* ---- the threads ---------------------------------------------------- */

void lua_call_wake(struct lua_call *c)
{
    pthread_mutex_lock(&pool_lock);
    if (c->parked) {
        c->parked = false;
        fifo_push(&c->thread->head, &c->thread->tail, c);
        pthread_cond_broadcast(&work_cond);     /* its own thread may be asleep */
    } else {
        c->wake_pending = true;                 /* it has not parked yet: it will not */
    }
    pthread_mutex_unlock(&pool_lock);
}

/* One slice of c on thread th: 1 when c wants another, 2 when it waits
 * for a DNS answer, 0 when it is done. */
static int run_slice(struct lua_thread *th, struct lua_call *c)
{
    if (!atomic_load(&c->abandoned)) {
        atomic_store(&th->slice_since_ms, now_ms());
        int again = lua_call_step(c);
        atomic_store(&th->slice_since_ms, 0);
        if (again && !atomic_load(&c->abandoned))
            return again;
        pthread_mutex_lock(&c->lock);
        bool mine = !c->answered;      /* else the watchdog answered meanwhile */
        if (mine) {
            c->answer_v = c->v;
            memcpy(c->answer_reply, c->reply, sizeof c->answer_reply);
        }
        c->answered = true;
        pthread_mutex_unlock(&c->lock);
        /* before the answer: the loop's next call may want the state the loop lent */
        lua_call_release(c);
        if (mine) {
            pthread_mutex_lock(&pool_lock);
            deliver(c);
            pthread_mutex_unlock(&pool_lock);
        }
    }
    lua_call_release(c);
    call_unref(c);
    return 0;
}

static void *thread_main(void *arg)
{
    struct lua_thread *th = arg;
    pthread_mutex_lock(&pool_lock);
    for (;;) {
        struct lua_call *c = NULL;
        if (!th->retired && !stopping && (c = fifo_pop(&queue_head, &queue_tail))) {
            c->thread = th;
            atomic_fetch_add(&c->refs, 1);
        } else if (!(c = fifo_pop(&th->head, &th->tail))) {
            if (th->retired || stopping)
                break;
            pthread_cond_wait(&work_cond, &pool_lock);
            continue;
        }
        pthread_mutex_unlock(&pool_lock);
        int again = run_slice(th, c);
        pthread_mutex_lock(&pool_lock);
        if (again == 2 && !c->wake_pending) {
            c->parked = true;        /* lua_call_wake puts it back on this thread's queue */
        } else if (again) {
            c->wake_pending = false;
            fifo_push(&th->head, &th->tail, c);
        }
    }
    bool retired = th->retired;
    if (retired) {
        for (struct lua_thread **p = &threads; *p; p = &(*p)->next)
            if (*p == th) {
                *p = th->next;
                break;
            }
        nretired--;
    }
    pthread_mutex_unlock(&pool_lock);
    lua_thread_states_close();
    if (retired)
        free(th);      /* detached when it was retired; stop joins the others */
    return NULL;
}

/* pool_lock held. */
static int spawn_thread(void)
{
    struct lua_thread *th = calloc(1, sizeof *th);
    if (!th)
        return -1;
    atomic_init(&th->slice_since_ms, 0);
    if (pthread_create(&th->tid, NULL, thread_main, th) != 0) {
        free(th);
        return -1;
    }
    th->next = threads;
    threads = th;
    nactive++;
    return 0;
}

/* ---- the watchdog --------------------------------------------------- */

static void retire_stuck_threads(uint64_t now)
{
    for (struct lua_thread *th = threads; th; th = th->next) {
        uint64_t since = atomic_load(&th->slice_since_ms);
        if (th->retired || !since || now - since <= STUCK_MS)
            continue;
        th->retired = true;
        pthread_detach(th->tid);
        nactive--;
        nretired++;
        log_warn("lua: a handler has been inside one C call for over %d ms; its thread is set aside and "
                 "another takes the queue (%d set aside)", STUCK_MS, nretired);
    }
    while (nactive < nwanted && nretired + nactive < nwanted + MAX_RETIRED && spawn_thread() == 0)
        ;
    pthread_cond_broadcast(&work_cond);
}

static void abandon_overdue_calls(uint64_t now)
{
    for (struct lua_call *c = inflight, *next; c; c = next) {
        next = c->next_all;
        if (now <= c->deadline_ms || pthread_mutex_trylock(&c->lock) != 0)
            continue;          /* a tx method is running: next round */
        bool mine = !c->answered;
        if (mine) {
            c->answer_v = POSTERN_ERROR;
            c->answer_reply[0] = '\0';
        }
        c->answered = true;
        atomic_store(&c->abandoned, true);
        pthread_mutex_unlock(&c->lock);
        if (!mine)
            continue;
        char ids[64];
        log_ids(ids, sizeof ids, c->sid, c->qid);
        log_error("%slua: %s: the %s handlers did not finish within lua_time_limit + 1 s (%d ms; "
                  "stuck in one long C call?): message tempfailed, the call is abandoned", ids,
                  lua_script_path(c->s), stage_name((enum postern_stage)c->stage),
                  lua_script_time_limit_ms(c->s) + GRACE_MS);
        if (!c->thread) {
            fifo_remove(&queue_head, &queue_tail, c);
            lua_call_release(c);      /* one the loop started: its state is the loop's again */
        }
        deliver(c);
    }
}

static void *watchdog_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&pool_lock);
    while (!stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += WATCH_EVERY_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&watch_cond, &pool_lock, &ts);
        if (stopping)
            break;
        uint64_t now = now_ms();
        retire_stuck_threads(now);
        abandon_overdue_calls(now);
    }
    pthread_mutex_unlock(&pool_lock);
    return NULL;
}

int lua_threads_start(int nthreads, bool with_loop, bool try_loop_first)
{
    on_loop = with_loop;
    loop_first = with_loop && try_loop_first;
    if (on_loop && inbox_open(&answered) < 0)
        return -1;
    pthread_mutex_lock(&pool_lock);
    nwanted = nthreads;
    stopping = false;
    int rc = 0;
    for (int i = 0; i < nthreads && rc == 0; i++)
        rc = spawn_thread();
    if (rc == 0 && pthread_create(&watchdog, NULL, watchdog_main, NULL) == 0)
        watchdog_running = true;
    else
        rc = -1;
    started = rc == 0;
    pthread_mutex_unlock(&pool_lock);
    return rc;
}

bool lua_threads_stop(void)
{
    pthread_mutex_lock(&pool_lock);
    stopping = true;
    started = false;
    pthread_cond_broadcast(&work_cond);
    pthread_cond_broadcast(&watch_cond);
    pthread_mutex_unlock(&pool_lock);
    if (watchdog_running)
        pthread_join(watchdog, NULL);
    watchdog_running = false;
    /* the watchdog retires no more threads: join the active ones */
    pthread_mutex_lock(&pool_lock);
    struct lua_thread *list = NULL;
    for (struct lua_thread **p = &threads; *p;) {
        struct lua_thread *th = *p;
        if (th->retired) {
            p = &th->next;
            continue;
        }
        *p = th->next;
        th->next = list;
        list = th;
    }
    pthread_mutex_unlock(&pool_lock);
    while (list) {
        struct lua_thread *n = list->next;
        pthread_join(list->tid, NULL);
        free(list);
        list = n;
    }
    pthread_mutex_lock(&pool_lock);
    int stuck = nretired;
    nactive = 0;
    pthread_mutex_unlock(&pool_lock);
    if (stuck)
        log_warn("lua: %d thread(s) still inside a C call at exit; not waiting for them", stuck);
    if (on_loop)
        inbox_close(&answered);
    return stuck == 0;
}
