/* kv.h - policy state shared by every node: counters with a window and
 * values with a time to live. With redis_server set they live in Redis
 * (redis.c, one connection on the event loop); otherwise, and with
 * redis_failure = open while Redis cannot answer, in this process. Keys
 * are namespaced by what uses them ("lua:", "grey:", "conn:"). */
#ifndef POSTERN_KV_H
#define POSTERN_KV_H
#include <stdbool.h>
#include <stddef.h>

struct config;

/* status 0: answered (n: the counter; value: NULL when the key is not
 * set); -1: the shared store failed and redis_failure = tempfail. */
struct kv_answer {
    int status;
    long long n;
    const char *value;
    bool shared;            /* answered by Redis, not this process */
};
typedef void (*kv_cb)(void *arg, const struct kv_answer *a);

#define KV_KEY_MAX 512
#define KV_VALUE_MAX 4096

/* Loop thread, at start-up and reload (redis_failure, redis_timeout). */
void kv_configure(const struct config *cfg);
/* Whether state goes to Redis (redis_server is set and redis_start ran). */
bool kv_shared(void);
/* From any thread. Shared: cb runs later on the loop thread, with Redis's
 * answer, or (no answer within redis_timeout) this node's own state under
 * redis_failure = open, or status -1 under tempfail. Local: cb runs
 * before this returns. 0, or -1 for a bad key or value (cb not called). */
int kv_incr(const char *key, long window_s, kv_cb cb, void *arg);
int kv_get(const char *key, kv_cb cb, void *arg);
int kv_set(const char *key, const char *value, long ttl_s, kv_cb cb, void *arg);
/* Shared only: take the next slot of a schedule one slot per gap_ms that
 * every node shares (dest_rate_limit); a->n is the next free slot after
 * it, wall-clock ms. A failure answers status -1 in either mode. */
int kv_pace(const char *key, long gap_ms, kv_cb cb, void *arg);
/* The same, blocking (worker threads: C plugins); never on the loop
 * thread when shared (it answers them).
 * value (for get) is copied into out. 0, or -1 (failed or bad input). */
int kv_incr_wait(const char *key, long window_s, long long *n);
int kv_get_wait(const char *key, char *out, size_t size, bool *found);
int kv_set_wait(const char *key, const char *value, long ttl_s);

#endif
