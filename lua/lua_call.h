/* lua_call.h - one Lua link's run for one stage of one transaction, shared
 * by the binding (postern_lua.c: states, handlers, the tx object) and the
 * Lua threads (lua_threads.c: queueing, scheduling, the watchdog). Not part
 * of any public API. */
#ifndef POSTERN_LUA_CALL_H
#define POSTERN_LUA_CALL_H
#include "postern_lua.h"
#include "inbox.h"
#include <lua.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

struct lstate;
struct txref;
struct lua_thread;

/* Limits of one call; the extra space of every Lua coroutine points at one. */
struct lctx {
    struct lstate *ls;
    struct lua_call *call;       /* NULL while a script's top level is loaded */
    long budget, used;           /* instructions */
    long elapsed_us;             /* over all slices of the call */
    int time_limit_ms;
    int slice_left;              /* hook rounds before giving the thread to another call */
    struct timespec slice_start;
    bool killed;                 /* a limit was hit: every hook raises, pcall cannot catch it */
    bool fast;                   /* running on the network loop (lua_fast.c): leave it before anything long */
    bool restart;                /* on the loop where it could not yield: run the call again on a Lua thread */
};

struct lua_call {
    /* the request (set by the submitter, read-only afterwards) */
    struct lua_script *s;
    txn_t *t;                    /* touched only under lock while !abandoned */
    int stage;
    char *arg;
    size_t len;
    bool has_arg;
    char qid[32];                /* for log lines */
    unsigned long sid;           /* the SMTP session's number (0: the queue's) */
    lua_call_done_fn done;
    void *done_ctx;
    uint64_t deadline_ms;        /* answered for and abandoned after this */

    /* the run's result (the Lua thread's own) */
    postern_verdict v;
    char reply[512];
    /* the answer: written once, under lock, by whoever answers (the Lua
     * thread, or the watchdog abandoning the call); done() reads these */
    postern_verdict answer_v;
    char answer_reply[512];

    /* the run (owned by the Lua thread that started it) */
    struct lua_thread *thread;   /* NULL while queued */
    struct lstate *ls;
    lua_Integer next;            /* next handler, 1-based */
    lua_State *co;               /* the handler in progress, or NULL */
    int co_ref;
    struct txref *ref;
    struct lctx ctx;

    /* postern.dns: the coroutine waits for an answer, off every run queue */
    bool waiting_dns;            /* the Lua thread's: it yielded for a lookup */
    int dns_lookups;             /* made by this call (bounded) */
    struct dns_text_answer *dns; /* the answer, set before lua_call_wake */
    /* postern.incr/get/set with shared state: the same wait (waiting_dns) */
    int kv_status;               /* 0 answered, -1 failed */
    long long kv_n;
    char *kv_value;              /* get: the value (malloc'd), NULL = not set */
    bool parked, wake_pending;   /* under the pool lock */

    /* shared between the Lua thread and the watchdog */
    pthread_mutex_t lock;        /* held by a tx method while it uses t */
    atomic_bool abandoned;       /* the watchdog answered for it: t is the caller's again */
    bool answered;               /* done() was (or is being) called; under lock */
    atomic_int refs;             /* the submitter's queue entry and the thread */
    struct lua_call *next_q;     /* in a run queue */
    struct lua_call *prev_all, *next_all;   /* calls in flight */
    struct inbox_item answer;    /* through the inbox to the loop */
};

/* How long one of a script's calls may take before the watchdog abandons
 * it (lua_time_limit + grace). */
int lua_script_time_limit_ms(const struct lua_script *s);

/* On a Lua thread: run c for one slice. 1 when it gave the thread back
 * (call again later), 2 when it waits for a DNS answer (lua_call_wake puts
 * it back), 0 when finished with c->v and c->reply set. On the loop (the
 * fast path, c->ctx.fast) also 3: it cannot go on there, run it again
 * from the start on a Lua thread. */
int lua_call_step(struct lua_call *c);

/* lua_fast.c: the loop's first try at a call (posternd only). */
enum lua_fast_result {
    LUA_FAST_DONE,               /* answered: c->v, c->reply */
    LUA_FAST_MOVE,               /* started: a Lua thread resumes c->co in c->ls (lent to it) */
    LUA_FAST_NONE,               /* not started (no loop state free): a Lua thread runs it */
    LUA_FAST_AGAIN,              /* could not go on where it could not yield: a Lua thread runs it again */
};
enum lua_fast_result lua_call_fast(struct lua_call *c);
/* On a Lua thread starting a call: build the state the loop asked for. */
void lua_loop_state_build(struct lua_script *s);
/* Any thread: the answer c waited for is in; run it again. */
void lua_call_wake(struct lua_call *c);
/* On the Lua thread that ran it: drop c's coroutine and state reference. */
void lua_call_release(struct lua_call *c);
/* On a Lua thread that is about to exit: close its states. */
void lua_thread_states_close(void);

#endif
