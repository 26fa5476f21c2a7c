/* clamav.c - virus scanning at end of message through clamd's INSTREAM
 * protocol: the header section and then the body are streamed to clamd in
 * chunks (the message is never held in memory), and a virus is refused in
 * the SMTP dialogue:
 *   clamav.socket = unix:/run/clamav/clamd.ctl | inet:127.0.0.1:3310 (required)
 *   clamav.action = reject | quarantine | discard       (default reject:
 *                   554 5.7.1 Message rejected: virus found: NAME)
 *   clamav.max_size = 10485760   bytes; a larger message is not scanned
 *                   (clamav.result = skipped); keep it under clamd's
 *                   StreamMaxLength
 *   clamav.on_error = tempfail | accept   (default tempfail: clamd down,
 *                   slow or answering garbage)
 *   clamav.timeout = 30          seconds for the connect and each read/write
 *   clamav.persistent = yes      keep connections to clamd open between scans
 *                   (clamd's IDSESSION: each scan a numbered INSTREAM on a
 *                   connection from a pool of up to 32 idle ones, each used
 *                   again for at most 20 s after its last scan, under clamd's
 *                   default IdleTimeout of 30 s); a connection that fails
 *                   before its answer is dropped and the scan tried once more
 *                   on a new one
 * Sets clamav.result (clean | infected | skipped | error) and clamav.virus. */
#include "postern_plugin.h"
#include "plugin_net.h"
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum action { ACT_REJECT, ACT_QUARANTINE, ACT_DISCARD };

#define POOL_MAX 32            /* idle connections kept */
#define POOL_IDLE_S 20         /* reused for at most this long after the last scan */

/* A connection to clamd; in a session, the number of the next command. */
struct clamd_conn {
    int fd;
    unsigned next_id;          /* 0: no session (one scan, then closed) */
    time_t last_used;
};

struct clamav {
    char unix_path[108];
    char host[256], port[8];
    enum action action;
    bool accept_on_error;
    bool persistent;
    unsigned long long max_size;
    int timeout_s;
    pthread_mutex_t pool_lock;
    struct clamd_conn pool[POOL_MAX];
    int npool;
};

static const struct postern_host *host;

static int connect_clamd(const struct clamav *c)
{
    return c->unix_path[0] ? net_connect_unix(c->unix_path, c->timeout_s)
                           : net_connect_tcp(c->host, c->port, c->timeout_s);
}

/* The INSTREAM command and its chunks are gathered in one buffer and sent
 * when it fills and at the end: a message up to 64 KiB is one send, where a
 * send per length and per piece made six system calls a scan. */
#define STREAM_BUF (64 * 1024 + 64)

struct stream_out {
    int fd;
    size_t used;
    char buf[STREAM_BUF];
};

static int stream_flush(struct stream_out *o)
{
    int rc = o->used ? net_send_all(o->fd, o->buf, o->used) : 0;
    o->used = 0;
    return rc;
}

static int stream_put(struct stream_out *o, const void *p, size_t n)
{
    if (o->used + n > sizeof o->buf && stream_flush(o) < 0)
        return -1;
    if (n > sizeof o->buf)
        return net_send_all(o->fd, p, n);
    memcpy(o->buf + o->used, p, n);
    o->used += n;
    return 0;
}

/* One INSTREAM chunk: a 4-byte big-endian length, then the bytes. */
static int chunk(struct stream_out *o, const char *p, size_t n)
{
    unsigned char len[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8),
                            (unsigned char)n};
    return stream_put(o, len, 4) == 0 && (n == 0 || stream_put(o, p, n) == 0) ? 0 : -1;
}

static int chunk_out(void *o, const char *p, size_t n) { return chunk(o, p, n); }

/* An idle session from the pool (fresh enough), or {-1}. */
static struct clamd_conn pool_take(struct clamav *c)
{
    struct clamd_conn k = {.fd = -1};
    time_t now = time(NULL);
    pthread_mutex_lock(&c->pool_lock);
    while (c->npool > 0 && k.fd < 0) {
        struct clamd_conn top = c->pool[--c->npool];
        if (now - top.last_used <= POOL_IDLE_S)
            k = top;
        else
            close(top.fd);                   /* clamd may have closed it already */
    }
    pthread_mutex_unlock(&c->pool_lock);
    return k;
}

static void pool_put(struct clamav *c, struct clamd_conn k)
{
    k.last_used = time(NULL);
    pthread_mutex_lock(&c->pool_lock);
    if (c->npool < POOL_MAX) {
        c->pool[c->npool++] = k;
        k.fd = -1;
    }
    pthread_mutex_unlock(&c->pool_lock);
    if (k.fd >= 0)
        close(k.fd);
}

/* A new connection, in a session when persistent. */
static struct clamd_conn conn_open(const struct clamav *c)
{
    struct clamd_conn k = {.fd = connect_clamd(c)};
    if (k.fd >= 0 && c->persistent) {
        if (net_send_all(k.fd, "zIDSESSION", 11) < 0) {
            close(k.fd);
            k.fd = -1;
        }
        k.next_id = 1;
    }
    return k;
}

/* The INSTREAM command, the message as its chunks, then the empty chunk
 * that ends it. */
static int stream_message(int fd, postern_txn *t)
{
    struct stream_out *o = malloc(sizeof *o);
    if (!o)
        return -1;
    o->fd = fd;
    o->used = 0;
    int rc = stream_put(o, "zINSTREAM", 10) == 0 && message_pieces(host, t, chunk_out, o) == 0 &&
                     chunk(o, NULL, 0) == 0 && stream_flush(o) == 0
                 ? 0
                 : -1;
    free(o);
    return rc;
}

/* clamd's answer ("stream: OK", "stream: NAME FOUND", "... ERROR"). */
static int read_answer(int fd, char *out, size_t size)
{
    size_t len = 0;
    while (len < size - 1) {
        ssize_t r = recv(fd, out + len, size - 1 - len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (memchr(out, '\0', len))
            break;
    }
    out[len] = '\0';
    return len ? 0 : -1;
}

/* One scan on k: the answer without a session's "N: " in answer; 0, or -1
 * (k is then broken). */
static int scan_on(struct clamd_conn *k, postern_txn *t, char *answer, size_t size)
{
    if (stream_message(k->fd, t) < 0 || read_answer(k->fd, answer, size) < 0)
        return -1;
    if (!k->next_id)
        return 0;
    char want[16];
    int n = snprintf(want, sizeof want, "%u: ", k->next_id++);
    if (strncmp(answer, want, (size_t)n))
        return -1;             /* not the answer to this command: the session is out of step */
    memmove(answer, answer + n, strlen(answer + n) + 1);
    return 0;
}

/* Scan t: on a pooled session (once more on a new connection if that one
 * broke: clamd ends idle sessions), or on a connection of its own. 0 with
 * the answer, -1 with why. */
static int scan(struct clamav *c, postern_txn *t, char *answer, size_t size, const char **why)
{
    struct clamd_conn k = c->persistent ? pool_take(c) : (struct clamd_conn){.fd = -1};
    if (k.fd >= 0) {
        if (scan_on(&k, t, answer, size) == 0) {
            pool_put(c, k);
            return 0;
        }
        close(k.fd);
    }
    k = conn_open(c);
    if (k.fd < 0) {
        *why = c->unix_path[0] ? "cannot connect to clamd (unix socket)" : "cannot connect to clamd";
        return -1;
    }
    if (scan_on(&k, t, answer, size) < 0) {
        close(k.fd);
        *why = "clamd did not take the message or did not answer in time";
        return -1;
    }
    if (k.next_id)
        pool_put(c, k);
    else
        close(k.fd);
    return 0;
}

static postern_verdict failed(const struct clamav *c, postern_txn *t, const char *why)
{
    return scanner_failed(host, t, "clamav", "clamav.result", c->accept_on_error,
                          "451 4.3.0 Virus scanner unavailable, try again later", why);
}

static postern_verdict on_eom(postern_txn *t, void *state)
{
    struct clamav *c = state;
    if (host->message_size(t) > c->max_size) {
        host->var_set(t, "clamav.result", "skipped");
        host->log(t, POSTERN_LOG_INFO, "clamav: not scanned: %llu bytes is over clamav.max_size",
                  (unsigned long long)host->message_size(t));
        return POSTERN_CONTINUE;
    }
    char answer[512];
    const char *cause = NULL;
    if (scan(c, t, answer, sizeof answer, &cause) < 0)
        return failed(c, t, cause);
    char *found = strstr(answer, " FOUND");
    const char *name = !strncmp(answer, "stream: ", 8) ? answer + 8 : answer;
    if (!strcmp(answer, "stream: OK")) {
        host->var_set(t, "clamav.result", "clean");
        return POSTERN_CONTINUE;
    }
    if (!found || strncmp(answer, "stream: ", 8)) {
        char why[600];
        snprintf(why, sizeof why, "clamd answered: %.500s", answer);
        return failed(c, t, why);
    }
    *found = '\0';
    char reply[700];
    host->var_set(t, "clamav.result", "infected");
    host->var_set(t, "clamav.virus", name);
    host->log(t, POSTERN_LOG_INFO, "clamav: virus found: %s", name);
    switch (c->action) {
    case ACT_QUARANTINE:
        snprintf(reply, sizeof reply, "virus found: %.500s", name);
        host->set_reply(t, reply);
        return POSTERN_QUARANTINE;
    case ACT_DISCARD:
        return POSTERN_DISCARD;
    default:
        snprintf(reply, sizeof reply, "554 5.7.1 Message rejected: virus found: %.500s", name);
        host->set_reply(t, reply);
        return POSTERN_REJECT;
    }
}

/* unix:/PATH or inet:HOST:PORT */
static int parse_socket(struct clamav *c, const char *v)
{
    size_t len = strlen(v);
    if (len > 5 && !strncmp(v, "unix:", 5)) {
        if (v[5] != '/' || len - 5 >= sizeof c->unix_path)
            return -1;
        memcpy(c->unix_path, v + 5, len - 5 + 1);
        return 0;
    }
    const char *colon = strrchr(v, ':');
    if (strncmp(v, "inet:", 5) || !colon || colon == v + 4 || (size_t)(colon - v - 5) >= sizeof c->host ||
        strlen(colon + 1) >= sizeof c->port || !colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1))
        return -1;
    snprintf(c->host, sizeof c->host, "%.*s", (int)(colon - v - 5), v + 5);
    snprintf(c->port, sizeof c->port, "%s", colon + 1);
    return 0;
}

static int set_option(struct clamav *c, const char *k, const char *v, char *err, size_t errlen)
{
    char *end;
    if (!strcmp(k, "socket") && parse_socket(c, v) == 0)
        return 0;
    if (!strcmp(k, "action") && (!strcmp(v, "reject") || !strcmp(v, "quarantine") || !strcmp(v, "discard"))) {
        c->action = !strcmp(v, "reject") ? ACT_REJECT : !strcmp(v, "quarantine") ? ACT_QUARANTINE : ACT_DISCARD;
        return 0;
    }
    if (!strcmp(k, "on_error") && (!strcmp(v, "tempfail") || !strcmp(v, "accept")))
        return c->accept_on_error = !strcmp(v, "accept"), 0;
    if (!strcmp(k, "max_size") && (c->max_size = strtoull(v, &end, 10), *v && !*end && c->max_size > 0))
        return 0;
    if (!strcmp(k, "persistent") && (!strcmp(v, "yes") || !strcmp(v, "no")))
        return c->persistent = !strcmp(v, "yes"), 0;
    if (!strcmp(k, "timeout") && (c->timeout_s = (int)strtol(v, &end, 10), *v && !*end && c->timeout_s > 0 &&
                                  c->timeout_s <= 600))
        return 0;
    snprintf(err, errlen, "bad option or value clamav.%s = %s (known: socket = unix:/PATH|inet:HOST:PORT, "
             "action = reject|quarantine|discard, max_size = BYTES, on_error = tempfail|accept, timeout = SECONDS, "
             "persistent = yes|no)",
             k, v);
    return -1;
}

static int init(const struct postern_host *h, const struct postern_option *opts, size_t n, void **state, char *err,
                size_t errlen)
{
    host = h;
    if (POSTERN_HOST_REQUIRE(h, body_read, err, errlen) < 0)
        return -1;
    struct clamav *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    c->max_size = 10ULL * 1024 * 1024;
    c->timeout_s = 30;
    c->persistent = true;
    pthread_mutex_init(&c->pool_lock, NULL);
    for (size_t i = 0; i < n; i++)
        if (set_option(c, opts[i].key, opts[i].value, err, errlen) < 0) {
            free(c);
            return -1;
        }
    if (!c->unix_path[0] && !c->host[0]) {
        snprintf(err, errlen, "clamav.socket is required (unix:/PATH or inet:HOST:PORT)");
        free(c);
        return -1;
    }
    *state = c;
    return 0;
}

static void fini(void *state)
{
    struct clamav *c = state;
    for (int i = 0; i < c->npool; i++) {
        net_send_all(c->pool[i].fd, "zEND", 5);
        close(c->pool[i].fd);
    }
    pthread_mutex_destroy(&c->pool_lock);
    free(c);
}

/* The options it takes (checked by posternd before init, documented in postern-plugins(5)). */
static const struct postern_option_spec options[] = {
    {"socket", POSTERN_OPT_TEXT, NULL, "", 0, "clamd: `unix:/PATH` or `inet:HOST:PORT`"},
    {"action", POSTERN_OPT_CHOICE, "reject|quarantine|discard", "reject", 0, "what a virus gets"},
    {"max_size", POSTERN_OPT_NUMBER, NULL, "10485760", 0, "bytes; larger messages are not scanned"},
    {"on_error", POSTERN_OPT_CHOICE, "tempfail|accept", "tempfail", 0, "what clamd down or slow answers"},
    {"timeout", POSTERN_OPT_NUMBER, NULL, "30", 0, "seconds per scan"},
    {"persistent", POSTERN_OPT_BOOL, NULL, "yes", 0, "keep sessions to clamd open between scans (IDSESSION)"},
    {NULL, 0, NULL, NULL, 0, NULL},
};

static const struct postern_plugin plugin = {
    .abi_version = POSTERN_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct postern_plugin),
    .name = "clamav",
    .init = init,
    .fini = fini,
    .on_eom = on_eom,
    .options = options,
};

const struct postern_plugin *postern_plugin_entry(void) { return &plugin; }
