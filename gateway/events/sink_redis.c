/* sink_redis.c - the Redis Streams sink (issue 39): each event of a batch
 * becomes an entry of the sink's stream (XADD MAXLEN ~ maxlen, field
 * "event" = the JSON object, Redis's own entry ID). A batch is one EVAL
 * (a script doing the XADDs, the events as one newline-separated
 * argument: JSON has no raw newlines), sent through posternd's
 * redis_server connection (redis.c) and waited for here, on the sink's
 * thread. It counts as taken when the script ran; otherwise all of it is
 * sent again later (receivers drop the repeats by the event's "id"). */
#include "sinks.h"
#include "buf.h"
#include "redis.h"
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char xadd_script[] =
    "local n = 0 "
    "for e in string.gmatch(ARGV[2], '[^\\n]+') do "
    "redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'event', e) n = n + 1 end "
    "return n";

/* A batch in flight: freed by whoever lets go of it last (the sink's
 * thread, or the request's release after a timeout). */
struct pending {
    struct redis_req r;
    pthread_mutex_t lock;
    pthread_cond_t done;
    int refs;
    bool answered, failed;
    char why[200];
    char maxlen[24];
    struct buf events;
};

static void let_go(struct pending *p)
{
    pthread_mutex_lock(&p->lock);
    bool last = --p->refs == 0;
    pthread_mutex_unlock(&p->lock);
    if (last) {
        pthread_mutex_destroy(&p->lock);
        pthread_cond_destroy(&p->done);
        buf_free(&p->events);
        free(p);
    }
}

static void answered(void *arg, const redisReply *reply)
{
    struct pending *p = arg;
    pthread_mutex_lock(&p->lock);
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        snprintf(p->why, sizeof p->why, "XADD: %s", reply ? reply->str : "redis_server did not answer");
        p->failed = true;
    }
    p->answered = true;
    pthread_cond_signal(&p->done);
    pthread_mutex_unlock(&p->lock);
}

static void released(struct redis_req *r) { let_go((struct pending *)r); }

static void *redis_open(const struct event_sink *s, char *why, size_t whylen)
{
    (void)why;
    (void)whylen;
    return (void *)s;       /* nothing of its own: the connection is redis.c's */
}

static void redis_close(void *state) { (void)state; }

static int redis_send(void *state, const struct event_sink *s, const struct sink_batch *b, char *why, size_t whylen)
{
    (void)state;
    struct pending *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->done, NULL);
    p->refs = 2;                        /* this thread and the request */
    buf_init(&p->events);
    for (size_t i = 0; i < b->n; i++)
        if (buf_append(&p->events, b->events[i], b->lens[i]) < 0 || buf_append(&p->events, "\n", 1) < 0) {
            snprintf(why, whylen, "out of memory");
            p->refs = 1;
            let_go(p);
            return -1;
        }
    snprintf(p->maxlen, sizeof p->maxlen, "%ld", s->maxlen);
    const char *argv[] = {"EVAL", xadd_script, "1", s->stream, p->maxlen, buf_head(&p->events)};
    size_t lens[] = {4, sizeof xadd_script - 1, 1, strlen(s->stream), strlen(p->maxlen), p->events.len};
    p->r.argc = 6;
    memcpy(p->r.argv, argv, sizeof argv);
    memcpy(p->r.argvlen, lens, sizeof lens);
    p->r.done = answered;
    p->r.arg = p;
    p->r.release = released;
    redis_submit(&p->r);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += s->timeout + 2;
    pthread_mutex_lock(&p->lock);
    while (!p->answered && pthread_cond_timedwait(&p->done, &p->lock, &until) == 0)
        ;
    bool ok = p->answered && !p->failed;
    snprintf(why, whylen, "%s", !p->answered ? "redis_server did not answer in time" : p->why);
    pthread_mutex_unlock(&p->lock);
    let_go(p);
    return ok ? 0 : -1;
}

const struct sink_ops redis_sink_ops = {redis_open, redis_send, redis_close};
