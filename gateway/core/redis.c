/* redis.c - one non-blocking Redis connection on the event loop (hiredis's
 * async API with posternd's own epoll watch as its adapter). Any thread
 * submits a command (redis_submit); the loop sends it, pipelined with
 * whatever else is waiting, and calls the request's done() with the reply,
 * or with NULL when Redis did not answer within redis_timeout, is down, or
 * the connection broke. A request that times out takes the connection
 * with it (a server that stopped answering is not waited on twice); the
 * connection is made again with a backoff of 0.5 s doubling to 5 s.
 * Failures are logged at most once a minute and counted in metrics. */
#include "redis.h"
#include "event.h"
#include "inbox.h"
#include "log.h"
#include "metrics.h"
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 5000
#define LOG_EVERY_MS 60000
#define PENDING_MAX 10000          /* requests in flight; more fail at once */

static struct {
    char host[256];
    int port;                      /* 0: unix socket at host */
    char password[256];
    int database;
    int timeout_ms;
} conf;
static _Atomic bool configured;    /* read by any thread (kv_shared) */

static redisAsyncContext *ac;
static bool connected;             /* the connect callback said yes (AUTH/SELECT queued first) */
static struct ev_watch watch;
static bool watching;
static uint64_t next_connect_ms, backoff_ms = BACKOFF_MIN_MS, last_log_ms;
static struct inbox submitted;     /* requests from other threads */
static pthread_t loop_thread;
static struct redis_req *pending_head, *pending_tail;   /* sent, oldest first */
static size_t npending;

static void fail_logged(const char *what)
{
    uint64_t now = ev_now_ms();
    char labels[64];
    metric_inc(M_REDIS_FAILURES, metric_labels(labels, sizeof labels, "reason", what, NULL));
    if (last_log_ms && now - last_log_ms < LOG_EVERY_MS)
        return;
    last_log_ms = now;
    log_warn("redis: %s%s%s (%s:%d): shared state is %s until it answers", what, ac && ac->errstr[0] ? ": " : "",
             ac && ac->errstr[0] ? ac->errstr : "", conf.host, conf.port, "unavailable");
}

/* ---- the epoll adapter ---- */

static void on_events(void *c, uint32_t events)
{
    (void)c;
    if (!ac)
        return;
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        redisAsyncHandleRead(ac);
    if (ac && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
        redisAsyncHandleWrite(ac);
}

static void watch_mask(uint32_t mask)
{
    if (!watching) {
        if (ev_add(&watch, ac->c.fd, mask, on_events, NULL) == 0)
            watching = true;
    } else {
        ev_mod(&watch, mask);
    }
}

static void add_read(void *d) { (void)d; watch_mask(watch.mask | EPOLLIN); }
static void del_read(void *d) { (void)d; watch_mask(watch.mask & ~(uint32_t)EPOLLIN); }
static void add_write(void *d) { (void)d; watch_mask(watch.mask | EPOLLOUT); }
static void del_write(void *d) { (void)d; watch_mask(watch.mask & ~(uint32_t)EPOLLOUT); }

static void cleanup(void *d)
{
    (void)d;
    if (watching)
        ev_del(&watch);
    watching = false;
    watch.mask = 0;
}

/* ---- requests ---- */

static void pending_unlink(struct redis_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        pending_head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        pending_tail = r->prev;
    r->next = r->prev = NULL;
    npending--;
}

static void answer(struct redis_req *r, const redisReply *reply)
{
    r->answered = true;
    r->done(r->arg, reply);
}

/* hiredis's callback: the reply, or NULL when the context goes away. */
static void on_reply(redisAsyncContext *c, void *reply, void *privdata)
{
    (void)c;
    struct redis_req *r = privdata;
    if (!r->answered) {
        pending_unlink(r);
        answer(r, reply);
    }
    r->release(r);
}

static void send_one(struct redis_req *r)
{
    if (!ac || npending >= PENDING_MAX ||
        redisAsyncCommandArgv(ac, on_reply, r, r->argc, r->argv, r->argvlen) != REDIS_OK) {
        fail_logged(!ac ? "not connected" : npending >= PENDING_MAX ? "too many requests" : "send failed");
        answer(r, NULL);
        r->release(r);
        return;
    }
    r->deadline_ms = ev_now_ms() + (uint64_t)conf.timeout_ms;
    r->prev = pending_tail;
    if (pending_tail)
        pending_tail->next = r;
    else
        pending_head = r;
    pending_tail = r;
    npending++;
}

static void run_submitted(struct inbox_item *it) { send_one((struct redis_req *)it); }

void redis_submit(struct redis_req *r)
{
    r->answered = false;
    r->next = r->prev = NULL;
    if (pthread_equal(pthread_self(), loop_thread)) {
        send_one(r);
        return;
    }
    r->item.run = run_submitted;
    inbox_post(&submitted, &r->item);
}

/* ---- the connection ---- */

static void on_connect(const redisAsyncContext *c, int status)
{
    (void)c;
    if (status != REDIS_OK) {
        fail_logged("connect failed");
        ac = NULL;               /* hiredis frees the context after this callback */
        watching = false;
        next_connect_ms = ev_now_ms() + backoff_ms;
        backoff_ms = backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff_ms * 2;
        return;
    }
    connected = true;
    backoff_ms = BACKOFF_MIN_MS;
    metric_set(M_REDIS_UP, NULL, 1);
    if (last_log_ms)
        log_info("redis: connected to %s:%d again: state is shared", conf.host, conf.port);
    else
        log_info("redis: connected to %s%s%d", conf.host, conf.port ? ":" : " ", conf.port);
    last_log_ms = 0;
}

static void on_disconnect(const redisAsyncContext *c, int status)
{
    (void)c;
    if (status != REDIS_OK)
        fail_logged("connection lost");
    ac = NULL;
    connected = false;
    watching = false;
    metric_set(M_REDIS_UP, NULL, 0);
    next_connect_ms = ev_now_ms() + backoff_ms;
}

/* The commands every connection starts with; their replies are ignored
 * (a wrong password shows as errors on the commands after it). */
static void on_setup_reply(redisAsyncContext *c, void *reply, void *privdata)
{
    (void)c;
    (void)privdata;
    const redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_ERROR)
        log_error("redis: %s: %s", (const char *)privdata ? (const char *)privdata : "setup", r->str);
}

static void connect_now(void)
{
    ac = conf.port ? redisAsyncConnect(conf.host, conf.port) : redisAsyncConnectUnix(conf.host);
    if (!ac || ac->err) {
        fail_logged("connect failed");
        if (ac)
            redisAsyncFree(ac);
        ac = NULL;
        next_connect_ms = ev_now_ms() + backoff_ms;
        backoff_ms = backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff_ms * 2;
        return;
    }
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    watch.mask = 0;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    if (conf.password[0])
        redisAsyncCommand(ac, on_setup_reply, (void *)"AUTH", "AUTH %s", conf.password);
    if (conf.database)
        redisAsyncCommand(ac, on_setup_reply, (void *)"SELECT", "SELECT %d", conf.database);
    add_write(NULL);      /* the connect completes when the socket is writable */
}

/* Every tick: time out what Redis has not answered (and drop the
 * connection that did not answer), and reconnect when it is time. */
static void redis_tick(void)
{
    uint64_t now = ev_now_ms();
    bool late = false;
    for (struct redis_req *r = pending_head, *next; r; r = next) {
        next = r->next;
        if (r->deadline_ms > now)
            break;                /* oldest first */
        pending_unlink(r);
        answer(r, NULL);          /* hiredis still owns it: on_reply frees it */
        late = true;
    }
    if (late && ac) {
        fail_logged("timed out");
        redisAsyncContext *gone = ac;
        ac = NULL;
        connected = false;
        metric_set(M_REDIS_UP, NULL, 0);
        redisAsyncFree(gone);     /* every callback still due runs now, with NULL */
        watching = false;
        next_connect_ms = now + backoff_ms;
    }
    if (!ac && configured && now >= next_connect_ms)
        connect_now();
}

int redis_start(const char *server, const char *password, int database, int timeout_ms)
{
    memset(&conf, 0, sizeof conf);
    if (!strncmp(server, "unix:", 5)) {
        snprintf(conf.host, sizeof conf.host, "%s", server + 5);
    } else {
        const char *colon = strrchr(server, ':');
        snprintf(conf.host, sizeof conf.host, "%.*s", colon ? (int)(colon - server) : (int)strlen(server), server);
        conf.port = colon ? atoi(colon + 1) : 6379;
    }
    snprintf(conf.password, sizeof conf.password, "%s", password ? password : "");
    conf.database = database;
    conf.timeout_ms = timeout_ms > 0 ? timeout_ms : 200;
    configured = true;
    loop_thread = pthread_self();
    if (inbox_open(&submitted) < 0)
        return -1;
    metric_set(M_REDIS_UP, NULL, 0);
    ev_on_tick(redis_tick);
    connect_now();
    return 0;
}

bool redis_configured(void) { return configured; }

void redis_stop(void)
{
    if (!configured)
        return;
    configured = false;
    if (ac) {
        redisAsyncContext *gone = ac;
        ac = NULL;
        redisAsyncFree(gone);
    }
    inbox_close(&submitted);
}
