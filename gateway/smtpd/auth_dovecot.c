/* auth_dovecot.c - SMTP AUTH checked by Dovecot's auth service, over its
 * auth-client socket (auth_backend = dovecot:/run/dovecot/auth-client), as
 * Postfix's smtpd_sasl_type = dovecot. Dovecot's client protocol, version
 * 1.2: a handshake (VERSION, CPID; the server lists MECH lines and says
 * DONE), then AUTH / CONT / OK / FAIL lines, each a tab-separated record.
 * One connection per exchange; every read and write is bounded. */
#include "auth_backend.h"
#include "base64.h"
#include "log.h"
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define LINE_MAX_DOVECOT 16384
#define TIMEOUT_MS 10000

static char socket_path[108];
static char mechs[512] = "PLAIN LOGIN";

struct conn {
    int fd;
    char buf[LINE_MAX_DOVECOT];
    size_t len;
};

static int conn_open(struct conn *c)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", socket_path);
    c->len = 0;
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = TIMEOUT_MS / 1000};
    if (c->fd >= 0) {
        setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) == 0)
            return 0;
        close(c->fd);
    }
    c->fd = -1;
    return -1;
}

static int conn_send(struct conn *c, const char *line)
{
    size_t n = strlen(line);
    return send(c->fd, line, n, MSG_NOSIGNAL) == (ssize_t)n ? 0 : -1;
}

/* The next line (without its newline); NULL on timeout, close or a line
 * over the limit. */
static char *conn_line(struct conn *c)
{
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (nl) {
            static _Thread_local char line[LINE_MAX_DOVECOT];
            size_t n = (size_t)(nl - c->buf);
            memcpy(line, c->buf, n);
            line[n] = '\0';
            memmove(c->buf, nl + 1, c->len - n - 1);
            c->len -= n + 1;
            return line;
        }
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        if (c->len == sizeof c->buf || poll(&p, 1, TIMEOUT_MS) <= 0)
            return NULL;
        ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
        if (r <= 0)
            return NULL;
        c->len += (size_t)r;
    }
}

/* VERSION and CPID out; MECH lines in until DONE. mechs_out gets the
 * mechanisms (space-separated) when not NULL. */
static int handshake(struct conn *c, char *mechs_out, size_t size)
{
    char hello[64];
    snprintf(hello, sizeof hello, "VERSION\t1\t2\nCPID\t%d\n", (int)getpid());
    if (conn_send(c, hello) < 0)
        return -1;
    size_t used = 0;
    if (mechs_out)
        mechs_out[0] = '\0';
    char *line;
    while ((line = conn_line(c))) {
        if (!strcmp(line, "DONE"))
            return 0;
        if (!strncmp(line, "VERSION\t", 8) && strncmp(line, "VERSION\t1\t", 10))
            return -1;                       /* a major version we do not speak */
        if (mechs_out && !strncmp(line, "MECH\t", 5)) {
            size_t n = strcspn(line + 5, "\t");
            if (used + n + 2 < size) {
                used += (size_t)snprintf(mechs_out + used, size - used, "%s%.*s", used ? " " : "", (int)n,
                                         line + 5);
            }
        }
    }
    return -1;
}

static int dovecot_init(const struct config *cfg, char *err, size_t errlen)
{
    const char *path = cfg->auth_backend + strlen("dovecot:");
    if (path[0] != '/' || strlen(path) >= sizeof socket_path) {
        snprintf(err, errlen, "auth_backend = %s: expected dovecot:/PATH/TO/auth-client", cfg->auth_backend);
        return -1;
    }
    snprintf(socket_path, sizeof socket_path, "%s", path);
    struct conn c;
    char list[512];
    if (conn_open(&c) == 0 && handshake(&c, list, sizeof list) == 0 && list[0])
        snprintf(mechs, sizeof mechs, "%s", list);
    else
        log_warn("auth: dovecot auth at %s does not answer yet; offering %s until it does", socket_path, mechs);
    if (c.fd >= 0)
        close(c.fd);
    return 0;
}

static const char *dovecot_mechanisms(void) { return mechs; }

/* The value of KEY=... in a tab-separated reply, or "". */
static void field(const char *line, const char *key, char *out, size_t size)
{
    size_t klen = strlen(key);
    out[0] = '\0';
    for (const char *p = line; (p = strchr(p, '\t')); p++)
        if (!strncmp(p + 1, key, klen) && p[1 + klen] == '=') {
            snprintf(out, size, "%.*s", (int)strcspn(p + 2 + klen, "\t"), p + 2 + klen);
            return;
        }
}

static enum auth_result dovecot_step(struct auth_exchange *x, const unsigned char *in, size_t inlen, bool has_in)
{
    struct conn *c = x->backend;
    char enc[AUTH_CHALLENGE_MAX * 2], req[AUTH_CHALLENGE_MAX * 2 + 512];
    if (has_in && base64_encode(in, inlen, enc, sizeof enc) < 0)
        return snprintf(x->why, sizeof x->why, "response too long"), AUTH_FAIL;
    if (!c) {
        if (!(c = x->backend = calloc(1, sizeof *c)) || conn_open(c) < 0 || handshake(c, NULL, 0) < 0) {
            snprintf(x->why, sizeof x->why, "dovecot auth at %s: %s", socket_path,
                     c && c->fd < 0 ? strerror(errno) : "no handshake");
            return AUTH_TEMPFAIL;
        }
        snprintf(req, sizeof req, "AUTH\t1\t%s\tservice=smtp\trip=%s%s%s%s\n", x->mech, x->client_ip,
                 x->tls ? "\tsecured" : "", has_in ? "\tresp=" : "", has_in ? enc : "");
    } else {
        snprintf(req, sizeof req, "CONT\t1\t%s\n", has_in ? enc : "");
    }
    x->steps++;
    char *line = conn_send(c, req) == 0 ? conn_line(c) : NULL;
    if (!line) {
        snprintf(x->why, sizeof x->why, "dovecot auth at %s did not answer in time", socket_path);
        return AUTH_TEMPFAIL;
    }
    if (!strncmp(line, "OK\t1", 4)) {
        field(line, "user", x->user, sizeof x->user);
        return x->user[0] ? AUTH_OK : (snprintf(x->why, sizeof x->why, "OK without a user"), AUTH_TEMPFAIL);
    }
    if (!strncmp(line, "CONT\t1\t", 7)) {
        int n = base64_decode(line + 7, strlen(line + 7), x->challenge, sizeof x->challenge);
        if (n < 0)
            return snprintf(x->why, sizeof x->why, "a challenge that is not base64"), AUTH_TEMPFAIL;
        x->challenge_len = (size_t)n;
        return AUTH_CONTINUE;
    }
    if (!strncmp(line, "FAIL\t1", 6)) {
        char reason[200];
        field(line, "reason", reason, sizeof reason);
        mask_control_bytes(reason, strlen(reason), false);
        snprintf(x->why, sizeof x->why, "dovecot: %s", reason[0] ? reason : "authentication failed");
        return strstr(line, "\ttemp") ? AUTH_TEMPFAIL : AUTH_FAIL;
    }
    snprintf(x->why, sizeof x->why, "dovecot auth answered something unexpected");
    return AUTH_TEMPFAIL;
}

static void dovecot_end(struct auth_exchange *x)
{
    struct conn *c = x->backend;
    if (c && c->fd >= 0)
        close(c->fd);
    free(c);
    x->backend = NULL;
}

const struct auth_backend auth_dovecot = {"dovecot", dovecot_init, dovecot_mechanisms, dovecot_step, dovecot_end};
