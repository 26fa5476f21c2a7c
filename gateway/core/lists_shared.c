/* lists_shared.c - the allow and block lists shared by every node through
 * redis_server. Redis holds the whole set (hash postern:lists, field
 * "OWNER\nPATTERN", value A or B) and a log of changes (stream
 * postern:lists:log, fields o, p, k = A, B or D, trimmed to about 100,000).
 * A change made on a node is applied there at once (memory and its SQLite
 * copy, lists.c), queued here and written to both keys by one script,
 * oldest first, retried until Redis takes it. Every second each node reads
 * the log after the last entry it applied; a node that has not loaded the
 * set yet (start, Redis back after a gap the trimmed log no longer covers)
 * loads it whole (HSCAN) once its own queued changes are out, and it then
 * replaces the node's copy. A marker (postern:lists:since) names the set:
 * a Redis without it is seeded from the node's copy and marked, so turning
 * redis_server on keeps the lists; a marker other than the one a node
 * loaded means Redis lost them and another node seeded it again, and this
 * node adds its copy too (the union). Redis down: the node's copy keeps
 * answering lookups.
 * Digest link nonces are claimed with SET NX, so a link acts once in the
 * whole fleet. Loop thread. */
#include "lists_shared.h"
#include "event.h"
#include "lists.h"
#include "log.h"
#include "redis.h"
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HASH_KEY "postern:lists"
#define LOG_KEY "postern:lists:log"
#define MARKER_KEY "postern:lists:since"
#define LINK_PREFIX "postern:link:"
#define QUEUE_MAX 100000        /* changes waiting for Redis; beyond, the oldest go (logged) */
#define POLL_MS 1000
#define SCAN_COUNT "1000"
#define READ_COUNT "1000"

/* One change, written to the hash and the log at once. */
static const char change_script[] =
    "local f = ARGV[1] .. '\\n' .. ARGV[2] "
    "if ARGV[3] == 'D' then redis.call('HDEL', KEYS[1], f) else redis.call('HSET', KEYS[1], f, ARGV[3]) end "
    "return redis.call('XADD', KEYS[2], 'MAXLEN', '~', '100000', '*', 'o', ARGV[1], 'p', ARGV[2], 'k', ARGV[3])";

struct change {
    char kind;                  /* A, B or D */
    char *owner, *pattern;
    struct change *next;
};

/* A request with room for its arguments; 'what' says which step it is. */
enum step { ST_PUSH, ST_PROBE, ST_SCAN, ST_FIRST, ST_READ, ST_LINK };
struct req {
    struct redis_req r;
    enum step step;
    char a[3][400];
    lists_link_cb link_cb;
    void *link_ctx;
    struct lists_link_wait *wait;
};

struct lists_link_wait {
    struct req *q;
};

static bool active;
static struct change *queue_head, *queue_tail;
static size_t queued;
static bool push_out, poll_out, sync_out;   /* one of each in flight at most */
static bool synced;                         /* the set was loaded since start (or the last gap) */
static char last_id[64] = "0-0";            /* the last log entry applied */
static bool gap;                            /* the log's first entry is after last_id, or a new marker */
static char marker[64];                     /* MARKER_KEY's value when the set was loaded */
static uint64_t next_poll_ms, next_push_ms;

static void req_release(struct redis_req *r) { free(r); }

static void submit(struct req *q, void (*done)(void *, const struct redisReply *), int argc, const char *const *argv)
{
    q->r.argc = argc;
    for (int i = 0; i < argc; i++) {
        q->r.argv[i] = argv[i];
        q->r.argvlen[i] = strlen(argv[i]);
    }
    q->r.done = done;
    q->r.arg = q;
    q->r.release = req_release;
    redis_submit(&q->r);
}

static struct req *req_new(enum step step)
{
    struct req *q = calloc(1, sizeof *q);
    if (q)
        q->step = step;
    return q;
}

static bool ok_reply(const redisReply *rep, const char *what)
{
    if (rep && rep->type == REDIS_REPLY_ERROR)
        log_warn("lists: redis %s: %s", what, rep->str);
    return rep && rep->type != REDIS_REPLY_ERROR;
}

/* Stream IDs "MS-SEQ": <0, 0, >0. */
static int id_cmp(const char *a, const char *b)
{
    uint64_t am = 0, as = 0, bm = 0, bs = 0;
    sscanf(a, "%" SCNu64 "-%" SCNu64, &am, &as);
    sscanf(b, "%" SCNu64 "-%" SCNu64, &bm, &bs);
    return am != bm ? (am < bm ? -1 : 1) : as != bs ? (as < bs ? -1 : 1) : 0;
}

/* ---- this node's changes, out in order ------------------------------ */

static void push_next(void);

static void push_done(void *arg, const redisReply *rep)
{
    (void)arg;
    push_out = false;
    if (!ok_reply(rep, "change")) {
        next_push_ms = ev_now_ms() + POLL_MS;      /* kept; tried again */
        return;
    }
    struct change *c = queue_head;
    if (c) {
        queue_head = c->next;
        if (!queue_head)
            queue_tail = NULL;
        queued--;
        free(c->owner);
        free(c->pattern);
        free(c);
    }
    push_next();
}

static void push_next(void)
{
    struct change *c = queue_head;
    struct req *q;
    if (!c || push_out || !(q = req_new(ST_PUSH)))
        return;
    snprintf(q->a[0], sizeof q->a[0], "%s", c->owner);
    snprintf(q->a[1], sizeof q->a[1], "%s", c->pattern);
    snprintf(q->a[2], sizeof q->a[2], "%c", c->kind);
    const char *argv[] = {"EVAL", change_script, "2", HASH_KEY, LOG_KEY, q->a[0], q->a[1], q->a[2]};
    push_out = true;
    submit(q, push_done, 8, argv);
}

static void on_change(bool add, enum list_kind kind, const char *owner, const char *pattern)
{
    struct change *c = calloc(1, sizeof *c);
    if (!c || !(c->owner = strdup(owner)) || !(c->pattern = strdup(pattern))) {
        if (c)
            free(c->owner);
        free(c);
        log_error("lists: out of memory: the change to %s is not shared", owner);
        return;
    }
    c->kind = add ? (char)kind : 'D';
    /* full: the oldest goes (not the one being written now) */
    struct change **oldest = push_out && queue_head ? &queue_head->next : &queue_head;
    if (queued >= QUEUE_MAX && *oldest) {
        struct change *old = *oldest;
        *oldest = old->next;
        if (queue_tail == old)
            queue_tail = oldest == &queue_head ? NULL : queue_head;
        queued--;
        log_error("lists: %d changes wait for redis; the oldest (%s %s) is dropped, not shared", QUEUE_MAX,
                  old->owner, old->pattern);
        free(old->owner);
        free(old->pattern);
        free(old);
    }
    if (queue_tail)
        queue_tail->next = c;
    else
        queue_head = c;
    queue_tail = c;
    queued++;
    push_next();
}

/* ---- loading the whole set ------------------------------------------ */

static void scan_from(const char *cursor);

static void seed_one(void *ctx, const char *owner, enum list_kind kind, const char *pattern)
{
    (void)ctx;
    on_change(true, kind, owner, pattern);
}

static void sync_failed(void)
{
    lists_sync_abort();
    sync_out = false;
}

static void scan_done(void *arg, const redisReply *rep)
{
    (void)arg;
    if (!ok_reply(rep, "HSCAN") || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        rep->element[0]->type != REDIS_REPLY_STRING || rep->element[1]->type != REDIS_REPLY_ARRAY) {
        sync_failed();
        return;
    }
    const redisReply *kv = rep->element[1];
    for (size_t i = 0; i + 1 < kv->elements; i += 2) {
        const char *field = kv->element[i]->str, *value = kv->element[i + 1]->str;
        const char *nl = field ? strchr(field, '\n') : NULL;
        char owner[400];
        if (!nl || !value || (size_t)(nl - field) >= sizeof owner)
            continue;
        snprintf(owner, sizeof owner, "%.*s", (int)(nl - field), field);
        if (lists_sync_add((enum list_kind)value[0], owner, nl + 1) < 0)
            log_warn("lists: redis entry '%.64s' for '%.64s' skipped (bad, or the lists are full)", nl + 1, owner);
    }
    if (strcmp(rep->element[0]->str, "0")) {
        scan_from(rep->element[0]->str);
        return;
    }
    size_t n = lists_sync_end();
    sync_out = false;
    synced = true;
    gap = false;
    log_info("lists: %zu allow/block entries loaded from redis (log after %s)", n, last_id);
}

static void scan_from(const char *cursor)
{
    struct req *q = req_new(ST_SCAN);
    if (!q) {
        sync_failed();
        return;
    }
    snprintf(q->a[0], sizeof q->a[0], "%s", cursor);
    const char *argv[] = {"HSCAN", HASH_KEY, q->a[0], "COUNT", SCAN_COUNT};
    submit(q, scan_done, 5, argv);
}

/* The log's newest entry: where reading goes on after the load. */
static void newest_done(void *arg, const redisReply *rep)
{
    (void)arg;
    if (!ok_reply(rep, "XREVRANGE") || rep->type != REDIS_REPLY_ARRAY) {
        sync_failed();
        return;
    }
    if (rep->elements && rep->element[0]->type == REDIS_REPLY_ARRAY && rep->element[0]->elements &&
        rep->element[0]->element[0]->type == REDIS_REPLY_STRING)
        snprintf(last_id, sizeof last_id, "%s", rep->element[0]->element[0]->str);
    else
        snprintf(last_id, sizeof last_id, "0-0");
    if (lists_sync_begin() < 0) {
        sync_failed();
        return;
    }
    scan_from("0");
}

/* This node's whole copy goes to Redis (after what is queued), as changes:
 * the lists are the union of what the nodes that seed at once hold. */
static void seed(void)
{
    log_info("lists: redis has no lists yet (or lost them): sending this node's %zu entries", lists_count());
    lists_each_raw(seed_one, NULL);
}

static void marker_set_done(void *arg, const redisReply *rep)
{
    (void)arg;
    ok_reply(rep, "SET");
}

/* Redis's marker of the set: none (a new or emptied Redis: seed it and
 * name it), another than the one this node loaded (Redis lost the lists and
 * another node seeded it again: add ours), or the one known: load. */
static void marker_done(void *arg, const redisReply *rep)
{
    (void)arg;
    struct req *q;
    if (!ok_reply(rep, "GET") || (rep->type != REDIS_REPLY_STRING && rep->type != REDIS_REPLY_NIL)) {
        sync_out = false;
        return;
    }
    bool none = rep->type == REDIS_REPLY_NIL;
    if (none || (marker[0] && strcmp(marker, rep->str))) {
        snprintf(marker, sizeof marker, "%s", none ? "" : rep->str);    /* the next GET's is then ours */
        if (none && (q = req_new(ST_PROBE))) {
            snprintf(q->a[0], sizeof q->a[0], "%llx-%d", (unsigned long long)time(NULL), (int)getpid());
            const char *argv[] = {"SET", MARKER_KEY, q->a[0], "NX"};
            submit(q, marker_set_done, 4, argv);
        }
        seed();
        sync_out = false;             /* loaded once the seed is out */
        return;
    }
    snprintf(marker, sizeof marker, "%s", rep->str);
    if (!(q = req_new(ST_PROBE))) {
        sync_out = false;
        return;
    }
    const char *argv[] = {"XREVRANGE", LOG_KEY, "+", "-", "COUNT", "1"};
    submit(q, newest_done, 6, argv);
}

static void start_sync(void)
{
    struct req *q = req_new(ST_PROBE);
    if (!q)
        return;
    sync_out = true;
    const char *argv[] = {"GET", MARKER_KEY};
    submit(q, marker_done, 2, argv);
}

/* ---- following the log ---------------------------------------------- */

static void first_done(void *arg, const redisReply *rep)
{
    (void)arg;
    if (!ok_reply(rep, "XRANGE") || rep->type != REDIS_REPLY_ARRAY)
        return;
    const char *first = rep->elements && rep->element[0]->type == REDIS_REPLY_ARRAY &&
                                rep->element[0]->elements && rep->element[0]->element[0]->type == REDIS_REPLY_STRING
                            ? rep->element[0]->element[0]->str
                            : NULL;
    /* entries after last_id may have been trimmed away (or the log was lost): load the set again */
    if (strcmp(last_id, "0-0") && (!first || id_cmp(first, last_id) > 0))
        gap = true;
}

static void apply_entry(const redisReply *e)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING ||
        e->element[1]->type != REDIS_REPLY_ARRAY)
        return;
    const char *o = NULL, *p = NULL, *k = NULL;
    const redisReply *f = e->element[1];
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        const char *name = f->element[i]->str, *val = f->element[i + 1]->str;
        if (!name || !val)
            continue;
        if (!strcmp(name, "o"))
            o = val;
        else if (!strcmp(name, "p"))
            p = val;
        else if (!strcmp(name, "k"))
            k = val;
    }
    snprintf(last_id, sizeof last_id, "%s", e->element[0]->str);
    char err[800];
    if (!o || !p || !k || (k[0] != 'A' && k[0] != 'B' && k[0] != 'D'))
        return;
    /* our own changes come back too: applying one again changes nothing */
    if (lists_change(k[0] != 'D', k[0] == 'D' ? LIST_NONE : (enum list_kind)k[0], o, p, err, sizeof err) < 0 &&
        k[0] != 'D')
        log_warn("lists: a change from redis not applied: %s", err);
}

static void read_done(void *arg, const redisReply *rep)
{
    (void)arg;
    poll_out = false;
    if (!ok_reply(rep, "XREAD") || rep->type != REDIS_REPLY_ARRAY || gap)
        return;                        /* nil: nothing new */
    for (size_t s = 0; s < rep->elements; s++) {
        const redisReply *stream = rep->element[s];
        if (stream->type != REDIS_REPLY_ARRAY || stream->elements != 2 || stream->element[1]->type != REDIS_REPLY_ARRAY)
            continue;
        for (size_t i = 0; i < stream->element[1]->elements; i++)
            apply_entry(stream->element[1]->element[i]);
    }
    if (rep->elements)
        next_poll_ms = 0;              /* there may be more: read on at the next tick */
}

static void marker_check_done(void *arg, const redisReply *rep)
{
    (void)arg;
    if (ok_reply(rep, "GET") && (rep->type == REDIS_REPLY_NIL ||
                                 (rep->type == REDIS_REPLY_STRING && strcmp(rep->str, marker))))
        gap = true;                    /* Redis lost the lists (restarted empty, flushed) */
}

static void poll_log(void)
{
    struct req *check = req_new(ST_FIRST), *first = req_new(ST_FIRST), *read = req_new(ST_READ);
    if (!check || !first || !read) {
        free(check);
        free(first);
        free(read);
        return;
    }
    poll_out = true;
    const char *margv[] = {"GET", MARKER_KEY};
    submit(check, marker_check_done, 2, margv);
    const char *fargv[] = {"XRANGE", LOG_KEY, "-", "+", "COUNT", "1"};
    submit(first, first_done, 6, fargv);
    snprintf(read->a[0], sizeof read->a[0], "%s", last_id);
    const char *rargv[] = {"XREAD", "COUNT", READ_COUNT, "STREAMS", LOG_KEY, read->a[0]};
    submit(read, read_done, 6, rargv);
}

static void tick(void)
{
    uint64_t now = ev_now_ms();
    if (queue_head && !push_out && now >= next_push_ms)
        push_next();
    if (now < next_poll_ms || poll_out || sync_out)
        return;
    next_poll_ms = now + POLL_MS;
    if (gap && synced) {
        log_warn("lists: the redis log no longer reaches back to %s (or redis lost the lists): loading them again",
                 last_id);
        synced = false;
    }
    if (!synced) {
        if (!queue_head)               /* our own changes first, or the load would undo them */
            start_sync();
        return;
    }
    poll_log();
}

void lists_shared_start(void)
{
    if (!redis_configured() || active)
        return;
    active = true;
    lists_on_change(on_change);
    ev_on_tick(tick);
}

bool lists_shared(void) { return active; }

/* ---- digest link nonces ---------------------------------------------- */

static bool link_submitting, link_answered;   /* an answer during redis_submit (Redis down) */

static void link_done(void *arg, const redisReply *rep)
{
    struct req *q = arg;
    struct lists_link_wait *w = q->wait;
    int rc = !ok_reply(rep, "SET") ? -1 : rep->type == REDIS_REPLY_STATUS ? 1 : rep->type == REDIS_REPLY_NIL ? 0 : -1;
    if (!w)
        return;                 /* the caller went away */
    link_answered |= link_submitting;
    q->link_cb(q->link_ctx, rc);
    free(w);
}

struct lists_link_wait *lists_shared_use_link(const char *nonce, long expires, lists_link_cb cb, void *ctx)
{
    struct lists_link_wait *w = calloc(1, sizeof *w);
    struct req *q = w ? req_new(ST_LINK) : NULL;
    if (!q) {
        free(w);
        cb(ctx, -1);
        return NULL;
    }
    q->link_cb = cb;
    q->link_ctx = ctx;
    q->wait = w;
    w->q = q;
    snprintf(q->a[0], sizeof q->a[0], LINK_PREFIX "%.64s", nonce);
    snprintf(q->a[1], sizeof q->a[1], "%ld", expires);
    const char *argv[] = {"SET", q->a[0], "1", "NX", "EXAT", q->a[1]};
    link_submitting = true;
    link_answered = false;
    submit(q, link_done, 6, argv);
    link_submitting = false;
    return link_answered ? NULL : w;
}

void lists_shared_link_forget(struct lists_link_wait *w)
{
    if (!w)
        return;
    w->q->wait = NULL;          /* the answer goes nowhere */
    free(w);
}
