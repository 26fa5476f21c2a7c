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
 * Sets clamav.result (clean | infected | skipped | error) and clamav.virus. */
#include "postern_plugin.h"
#include "plugin_net.h"
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum action { ACT_REJECT, ACT_QUARANTINE, ACT_DISCARD };

struct clamav {
    char unix_path[108];
    char host[256], port[8];
    enum action action;
    bool accept_on_error;
    unsigned long long max_size;
    int timeout_s;
};

static const struct postern_host *host;

static int connect_clamd(const struct clamav *c)
{
    return c->unix_path[0] ? net_connect_unix(c->unix_path, c->timeout_s)
                           : net_connect_tcp(c->host, c->port, c->timeout_s);
}

/* One INSTREAM chunk: a 4-byte big-endian length, then the bytes. */
static int chunk(int fd, const char *p, size_t n)
{
    unsigned char len[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8),
                            (unsigned char)n};
    return net_send_all(fd, len, 4) == 0 && (n == 0 || net_send_all(fd, p, n) == 0) ? 0 : -1;
}

static int chunk_out(void *fd, const char *p, size_t n) { return chunk(*(int *)fd, p, n); }

/* The message as INSTREAM chunks, then the empty chunk that ends it. */
static int stream_message(int fd, postern_txn *t)
{
    return message_pieces(host, t, chunk_out, &fd) == 0 ? chunk(fd, NULL, 0) : -1;
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
    int fd = connect_clamd(c);
    if (fd < 0)
        return failed(c, t, c->unix_path[0] ? "cannot connect to clamd (unix socket)" : "cannot connect to clamd");
    char answer[512];
    int rc = net_send_all(fd, "zINSTREAM", 10) == 0 && stream_message(fd, t) == 0 ? read_answer(fd, answer, sizeof answer)
                                                                                 : -1;
    close(fd);
    if (rc < 0)
        return failed(c, t, "clamd did not take the message or did not answer in time");
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
    if (!strcmp(k, "timeout") && (c->timeout_s = (int)strtol(v, &end, 10), *v && !*end && c->timeout_s > 0 &&
                                  c->timeout_s <= 600))
        return 0;
    snprintf(err, errlen, "bad option or value clamav.%s = %s (known: socket = unix:/PATH|inet:HOST:PORT, "
             "action = reject|quarantine|discard, max_size = BYTES, on_error = tempfail|accept, timeout = SECONDS)",
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

static void fini(void *state) { free(state); }

/* The options it takes (checked by posternd before init, documented in postern-plugins(5)). */
static const struct postern_option_spec options[] = {
    {"socket", POSTERN_OPT_TEXT, NULL, "", 0, "clamd: `unix:/PATH` or `inet:HOST:PORT`"},
    {"action", POSTERN_OPT_CHOICE, "reject|quarantine|discard", "reject", 0, "what a virus gets"},
    {"max_size", POSTERN_OPT_NUMBER, NULL, "10485760", 0, "bytes; larger messages are not scanned"},
    {"on_error", POSTERN_OPT_CHOICE, "tempfail|accept", "tempfail", 0, "what clamd down or slow answers"},
    {"timeout", POSTERN_OPT_NUMBER, NULL, "30", 0, "seconds per scan"},
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
