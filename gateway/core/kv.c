/* kv.c - see kv.h. Local state: two fixed tables under one mutex (a key
 * that collides with another takes its slot and starts over: the tables
 * are a brake, not an accountant, and never grow). Shared state: each
 * operation is one Redis command (an incr is a small Lua script, so the
 * counter and its expiry are set in one step), keys prefixed "postern:". */
#include "kv.h"
#include "clock.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "redis.h"
#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOCAL_SLOTS 4096
#define KEY_PREFIX "postern:"

static const char incr_script[] =
    "local n = redis.call('INCR', KEYS[1]) if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end return n";
/* a slot in a shared schedule: the later of now and the next free one,
 * which moves gap on; returns the next free slot (wall-clock ms) */
static const char pace_script[] =
    "local now, gap = tonumber(ARGV[1]), tonumber(ARGV[2]) "
    "local nxt = tonumber(redis.call('GET', KEYS[1]) or '0') "
    "local slot = nxt > now and nxt or now "
    "redis.call('SET', KEYS[1], slot + gap, 'PX', gap + 60000) return slot + gap";

static _Atomic bool failure_open = true;
static _Atomic int wait_ms = 2200;      /* redis_timeout + 2 s: the loop answers before */

void kv_configure(const struct config *cfg)
{
    failure_open = cfg->redis_failure_open;
    wait_ms = cfg->redis_timeout_ms + 2000;
}

bool kv_shared(void) { return redis_configured(); }

/* ---- this process's state ---- */

struct local_slot {
    char key[KV_KEY_MAX];
    time_t expires;          /* 0 = never */
    long long n;
    char *value;             /* NULL: a counter (or nothing) */
};
static pthread_mutex_t local_lock = PTHREAD_MUTEX_INITIALIZER;
static struct local_slot counters[LOCAL_SLOTS], values[LOCAL_SLOTS];

static struct local_slot *slot_for(struct local_slot *table, const char *key, time_t now)
{
    unsigned h = 5381;
    for (const char *p = key; *p; p++)
        h = h * 33 + (unsigned char)*p;
    struct local_slot *s = &table[h % LOCAL_SLOTS];
    if (strcmp(s->key, key) || (s->expires && now >= s->expires)) {
        snprintf(s->key, sizeof s->key, "%s", key);
        s->expires = 0;
        s->n = 0;
        free(s->value);
        s->value = NULL;
    }
    return s;
}

static long long local_incr(const char *key, long window)
{
    time_t now = time(NULL);
    pthread_mutex_lock(&local_lock);
    struct local_slot *s = slot_for(counters, key, now);
    if (!s->expires)
        s->expires = now + window;
    long long n = ++s->n;
    pthread_mutex_unlock(&local_lock);
    return n;
}

/* The value of key, copied into out; false if it is not set. */
static bool local_get(const char *key, char *out, size_t size)
{
    pthread_mutex_lock(&local_lock);
    struct local_slot *s = slot_for(values, key, time(NULL));
    bool found = s->value != NULL;
    if (found)
        snprintf(out, size, "%s", s->value);
    pthread_mutex_unlock(&local_lock);
    return found;
}

static int local_set(const char *key, const char *value, long ttl)
{
    time_t now = time(NULL);
    pthread_mutex_lock(&local_lock);
    struct local_slot *s = slot_for(values, key, now);
    char *copy = strdup(value);
    if (copy) {
        free(s->value);
        s->value = copy;
        s->expires = ttl > 0 ? now + ttl : 0;
    }
    pthread_mutex_unlock(&local_lock);
    return copy ? 0 : -1;
}

static void count(const char *backend)
{
    char labels[64];
    metric_inc(M_KV_REQUESTS, metric_labels(labels, sizeof labels, "backend", backend, NULL));
}

/* ---- shared state ---- */

enum op { OP_INCR, OP_GET, OP_SET, OP_PACE };

struct kv_req {
    struct redis_req r;
    enum op op;
    long seconds;
    char key[sizeof KEY_PREFIX + KV_KEY_MAX];
    char num[24];
    char now[24];
    char *value;
    kv_cb cb;
    void *arg;
};

static void req_release(struct redis_req *r)
{
    struct kv_req *q = (struct kv_req *)r;
    free(q->value);
    free(q);
}

/* Redis did not answer: this node's state (redis_failure = open), or a
 * failure the caller turns into a tempfail. */
static void answer_failed(struct kv_req *q)
{
    struct kv_answer a = {.status = -1};
    char value[KV_VALUE_MAX];
    if (q->op == OP_PACE) {
        q->cb(q->arg, &a);       /* pacing keeps its own local schedule anyway */
        return;
    }
    if (failure_open) {
        const char *key = q->key + strlen(KEY_PREFIX);
        a.status = 0;
        if (q->op == OP_INCR)
            a.n = local_incr(key, q->seconds);
        else if (q->op == OP_GET)
            a.value = local_get(key, value, sizeof value) ? value : NULL;
        else
            a.status = local_set(key, q->value, q->seconds);
        count("fallback");
    }
    q->cb(q->arg, &a);
}

static void on_reply(void *arg, const redisReply *reply)
{
    struct kv_req *q = arg;
    bool ok = reply && reply->type != REDIS_REPLY_ERROR &&
              ((q->op != OP_INCR && q->op != OP_PACE) || reply->type == REDIS_REPLY_INTEGER) &&
              (q->op != OP_GET || reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_NIL);
    if (reply && reply->type == REDIS_REPLY_ERROR)
        log_warn("redis: %s", reply->str);
    if (!ok) {
        answer_failed(q);
        return;
    }
    struct kv_answer a = {.status = 0, .shared = true};
    if (q->op == OP_INCR || q->op == OP_PACE)
        a.n = reply->integer;
    else if (q->op == OP_GET && reply->type == REDIS_REPLY_STRING)
        a.value = reply->str;
    count("redis");
    q->cb(q->arg, &a);
}

static bool key_ok(const char *key) { return key && key[0] && strlen(key) < KV_KEY_MAX; }

static int submit(enum op op, const char *key, const char *value, long seconds, kv_cb cb, void *arg)
{
    struct kv_req *q = calloc(1, sizeof *q);
    if (!q || (value && !(q->value = strdup(value)))) {
        free(q);
        return -1;
    }
    q->op = op;
    q->seconds = seconds;
    q->cb = cb;
    q->arg = arg;
    snprintf(q->key, sizeof q->key, KEY_PREFIX "%s", key);
    snprintf(q->num, sizeof q->num, "%ld", seconds);
    struct redis_req *r = &q->r;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(q->now, sizeof q->now, "%lld", (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    const char *incr[] = {"EVAL", incr_script, "1", q->key, q->num};
    const char *get[] = {"GET", q->key};
    const char *set[] = {"SET", q->key, q->value, "EX", q->num};
    const char *pace[] = {"EVAL", pace_script, "1", q->key, q->now, q->num};
    const char **argv = op == OP_INCR ? incr : op == OP_GET ? get : op == OP_SET ? set : pace;
    r->argc = op == OP_INCR ? 5 : op == OP_GET ? 2 : op == OP_PACE ? 6 : seconds > 0 ? 5 : 3;
    for (int i = 0; i < r->argc; i++) {
        r->argv[i] = argv[i];
        r->argvlen[i] = strlen(argv[i]);
    }
    r->done = on_reply;
    r->arg = q;
    r->release = req_release;
    redis_submit(r);
    return 0;
}

int kv_incr(const char *key, long window_s, kv_cb cb, void *arg)
{
    if (!key_ok(key) || window_s <= 0)
        return -1;
    if (kv_shared())
        return submit(OP_INCR, key, NULL, window_s, cb, arg);
    struct kv_answer a = {.n = local_incr(key, window_s)};
    count("local");
    cb(arg, &a);
    return 0;
}

int kv_get(const char *key, kv_cb cb, void *arg)
{
    if (!key_ok(key))
        return -1;
    if (kv_shared())
        return submit(OP_GET, key, NULL, 0, cb, arg);
    char value[KV_VALUE_MAX];
    struct kv_answer a = {.value = local_get(key, value, sizeof value) ? value : NULL};
    count("local");
    cb(arg, &a);
    return 0;
}

int kv_set(const char *key, const char *value, long ttl_s, kv_cb cb, void *arg)
{
    if (!key_ok(key) || !value || strlen(value) >= KV_VALUE_MAX || ttl_s < 0)
        return -1;
    if (kv_shared())
        return submit(OP_SET, key, value, ttl_s, cb, arg);
    struct kv_answer a = {.status = local_set(key, value, ttl_s)};
    count("local");
    cb(arg, &a);
    return 0;
}

int kv_pace(const char *key, long gap_ms, kv_cb cb, void *arg)
{
    if (!key_ok(key) || gap_ms <= 0 || !kv_shared())
        return -1;
    return submit(OP_PACE, key, NULL, gap_ms, cb, arg);
}

/* ---- blocking, for worker threads ---- */

/* Shared between the waiting thread and the loop's answer: whoever is
 * second frees it (a waiter that gave up must not be written to). */
struct waiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int refs;
    bool done;
    struct kv_answer a;
    char value[KV_VALUE_MAX];
    bool found;
};

static void waiter_unref(struct waiter *w)
{
    pthread_mutex_lock(&w->lock);
    bool last = --w->refs == 0;
    pthread_mutex_unlock(&w->lock);
    if (last) {
        pthread_mutex_destroy(&w->lock);
        pthread_cond_destroy(&w->cond);
        free(w);
    }
}

static void waiter_answer(void *arg, const struct kv_answer *a)
{
    struct waiter *w = arg;
    pthread_mutex_lock(&w->lock);
    w->a = *a;
    w->found = a->value != NULL;
    if (a->value)
        snprintf(w->value, sizeof w->value, "%s", a->value);
    w->a.value = NULL;
    w->done = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    waiter_unref(w);
}

static struct waiter *waiter_new(void)
{
    struct waiter *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->refs = 2;
    return w;
}

/* Wait for the answer (the loop gives one within redis_timeout); 0 if it
 * came and succeeded. */
static int waiter_wait(struct waiter *w)
{
    struct timespec until = clock_deadline_ms(CLOCK_REALTIME, wait_ms);
    pthread_mutex_lock(&w->lock);
    while (!w->done && pthread_cond_timedwait(&w->cond, &w->lock, &until) != ETIMEDOUT)
        ;
    int rc = w->done && w->a.status == 0 ? 0 : -1;
    pthread_mutex_unlock(&w->lock);
    return rc;
}

/* Run op and wait for its answer: 0 and *wp (the caller unrefs it), or -1. */
static int run_and_wait(enum op op, const char *key, const char *value, long seconds, struct waiter **wp)
{
    struct waiter *w = waiter_new();
    if (!w)
        return -1;
    int rc = op == OP_INCR ? kv_incr(key, seconds, waiter_answer, w)
             : op == OP_GET ? kv_get(key, waiter_answer, w) : kv_set(key, value, seconds, waiter_answer, w);
    if (rc < 0) {              /* the answer will never come: ours alone */
        w->refs = 1;
        waiter_unref(w);
        return -1;
    }
    *wp = w;
    return waiter_wait(w);
}

int kv_incr_wait(const char *key, long window_s, long long *n)
{
    struct waiter *w = NULL;
    int rc = run_and_wait(OP_INCR, key, NULL, window_s, &w);
    if (w) {
        *n = w->a.n;
        waiter_unref(w);
    }
    return rc;
}

int kv_get_wait(const char *key, char *out, size_t size, bool *found)
{
    struct waiter *w = NULL;
    int rc = run_and_wait(OP_GET, key, NULL, 0, &w);
    *found = rc == 0 && w->found;
    if (*found)
        snprintf(out, size, "%s", w->value);
    if (w)
        waiter_unref(w);
    return rc;
}

int kv_set_wait(const char *key, const char *value, long ttl_s)
{
    struct waiter *w = NULL;
    int rc = run_and_wait(OP_SET, key, value, ttl_s, &w);
    if (w)
        waiter_unref(w);
    return rc;
}
