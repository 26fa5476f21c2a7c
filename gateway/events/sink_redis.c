/* sink_redis.c - the Redis Streams sink (issue 39): each event of a batch
 * is an XADD to the sink's stream (MAXLEN ~ maxlen, field "event" = the
 * JSON object, Redis's own entry ID), sent through posternd's redis_server
 * connection (redis.c) and waited for here, on the sink's thread. The
 * batch counts as taken when every XADD succeeded; otherwise all of it is
 * sent again later (receivers drop the repeats by the event's "id"). */
#include "sinks.h"
#include "redis.h"
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A batch's XADDs in flight: freed by whoever lets go of it last (the
 * sink's thread, or the last request released after a timeout). */
struct pending {
    pthread_mutex_t lock;
    pthread_cond_t done;
    size_t waiting, refs;
    bool failed;
    char why[200];
};

struct xadd {
    struct redis_req r;
    struct pending *p;
    char maxlen[24];
    size_t len;
    char event[];
};

static void let_go(struct pending *p)
{
    pthread_mutex_lock(&p->lock);
    bool last = --p->refs == 0;
    pthread_mutex_unlock(&p->lock);
    if (last) {
        pthread_mutex_destroy(&p->lock);
        pthread_cond_destroy(&p->done);
        free(p);
    }
}

static void answered(void *arg, const redisReply *reply)
{
    struct pending *p = arg;
    pthread_mutex_lock(&p->lock);
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        if (!p->failed)
            snprintf(p->why, sizeof p->why, "XADD: %s", reply ? reply->str : "redis_server did not answer");
        p->failed = true;
    }
    p->waiting--;
    pthread_cond_signal(&p->done);
    pthread_mutex_unlock(&p->lock);
}

static void released(struct redis_req *r)
{
    struct xadd *x = (struct xadd *)r;
    struct pending *p = x->p;
    free(x);
    let_go(p);
}

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
    p->refs = 1;
    for (size_t i = 0; i < b->n; i++) {
        struct xadd *x = malloc(sizeof *x + b->lens[i]);
        if (!x) {
            p->failed = true;
            snprintf(p->why, sizeof p->why, "out of memory");
            break;
        }
        memset(&x->r, 0, sizeof x->r);
        x->p = p;
        x->len = b->lens[i];
        memcpy(x->event, b->events[i], b->lens[i]);
        snprintf(x->maxlen, sizeof x->maxlen, "%ld", s->maxlen);
        const char *argv[] = {"XADD", s->stream, "MAXLEN", "~", x->maxlen, "*", "event", x->event};
        size_t lens[] = {4, strlen(s->stream), 6, 1, strlen(x->maxlen), 1, 5, x->len};
        x->r.argc = 8;
        memcpy(x->r.argv, argv, sizeof argv);
        memcpy(x->r.argvlen, lens, sizeof lens);
        x->r.done = answered;
        x->r.arg = p;
        x->r.release = released;
        pthread_mutex_lock(&p->lock);
        p->waiting++;
        p->refs++;
        pthread_mutex_unlock(&p->lock);
        redis_submit(&x->r);
    }
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += s->timeout + 2;
    pthread_mutex_lock(&p->lock);
    while (p->waiting > 0 && pthread_cond_timedwait(&p->done, &p->lock, &until) == 0)
        ;
    bool ok = !p->failed && p->waiting == 0;
    snprintf(why, whylen, "%s", p->waiting ? "redis_server did not answer in time" : p->why);
    pthread_mutex_unlock(&p->lock);
    let_go(p);
    return ok ? 0 : -1;
}

const struct sink_ops redis_sink_ops = {redis_open, redis_send, redis_close};
