/* redis.h - posternd's Redis connection (redis_server): one non-blocking
 * hiredis connection on the event loop, commands from any thread. */
#ifndef POSTERN_REDIS_H
#define POSTERN_REDIS_H
#include "inbox.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct redisReply;

/* One command. The submitter fills argc/argv/argvlen (its own storage,
 * valid until release), done and release. done(arg, reply) runs once, on
 * the loop thread: reply NULL when there is no answer (down, timed out,
 * broken connection). release(r) follows when hiredis is done with r. */
#define REDIS_ARGS_MAX 8
struct redis_req {
    struct inbox_item item;
    int argc;
    const char *argv[REDIS_ARGS_MAX];
    size_t argvlen[REDIS_ARGS_MAX];
    void (*done)(void *arg, const struct redisReply *reply);
    void *arg;
    void (*release)(struct redis_req *r);
    /* redis.c's */
    uint64_t deadline_ms;
    struct redis_req *next, *prev;
    bool answered;
};

/* Loop thread, once: server "host:port" or "unix:/path". 0, or -1. */
int redis_start(const char *server, const char *password, int database, int timeout_ms);
bool redis_configured(void);
/* Any thread. */
void redis_submit(struct redis_req *r);
/* Loop thread, at shutdown: every request still out is answered NULL. */
void redis_stop(void);

#endif
