/* plugin_net.h - the blocking socket helpers the shipped plugins that talk
 * to a server share (clamav, rspamd, rcpt_verify's call-ahead). Header-only,
 * so each plugin stays one .so built against postern_plugin.h alone. They
 * run on worker threads, where blocking is allowed, and every connect, read
 * and write is bounded by a timeout.
 *   net_connect_tcp(host, port, secs)   a connected TCP socket, or -1
 *   net_connect_unix(path, secs)        a connected unix socket, or -1
 *   net_send_all(fd, p, n)              0, or -1 (timeout, reset, closed)
 *   scanner_failed(...)                 a scanner that could not answer:
 *                                       logged, then tempfail or accept
 *   message_pieces(host, t, out, ctx)   the message as it will be stored,
 *                                       piece by piece (EOM only)
 */
#ifndef POSTERN_PLUGIN_NET_H
#define POSTERN_PLUGIN_NET_H
#include "postern_io.h"
#include "postern_plugin.h"
#include <errno.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static inline void net_set_timeouts(int fd, int secs)
{
    struct timeval tv = {.tv_sec = secs};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);   /* bounds connect() too */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

/* Each address host has, in order, until one connects (a name with an
 * IPv6 and an IPv4 address where only one answers still works); errno is
 * the last failure's, EHOSTUNREACH when the name does not resolve. */
static inline int net_connect_tcp(const char *host, const char *port, int secs)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai = NULL;
    if (getaddrinfo(host, port, &hints, &ai) != 0)
        return errno = EHOSTUNREACH, -1;
    int fd = -1;
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        net_set_timeouts(fd, secs);
        if (connect(fd, a->ai_addr, a->ai_addrlen) < 0) {
            int e = errno;
            close(fd);
            errno = e;
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    return fd;
}

static inline int net_connect_unix(const char *path, int secs)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return errno = ENAMETOOLONG, -1;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        net_set_timeouts(fd, secs);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            int e = errno;
            close(fd);
            errno = e;
            fd = -1;
        }
    }
    return fd;
}

static inline int net_send_all(int fd, const void *data, size_t n) { return postern_write_all(fd, data, n, 1); }

/* A scanner (clamd, rspamd) that could not answer: log why, set the result
 * variable to "error", then pass (on_error = accept) or tempfail. */
static inline postern_verdict scanner_failed(const struct postern_host *host, postern_txn *t, const char *name,
                                             const char *result_var, bool accept, const char *reply,
                                             const char *why)
{
    host->log(t, POSTERN_LOG_ERROR, "%s: %s", name, why);
    host->var_set(t, result_var, "error");
    if (accept)
        return POSTERN_CONTINUE;
    host->set_reply(t, reply);
    return POSTERN_TEMPFAIL;
}

/* The message as it will be stored (header lines, the blank line, the
 * body), handed to out(ctx, p, n) in pieces of at most 64 KiB; header
 * lines are gathered into pieces, one longer than that goes alone. Never
 * the whole message in memory. 0, or -1 when out or a read failed. */
typedef int (*piece_fn)(void *ctx, const char *p, size_t n);
static inline int message_pieces(const struct postern_host *host, postern_txn *t, piece_fn out, void *ctx)
{
    char buf[65536];
    size_t used = 0;
    for (size_t i = 0; i < host->header_count(t); i++) {
        const char *name, *value;
        host->header_at(t, i, &name, &value);
        size_t need = strlen(name) + 1 + strlen(value) + 2;
        if (used + need > sizeof buf - 2) {      /* room kept for the blank line */
            if (used && out(ctx, buf, used) < 0)
                return -1;
            used = 0;
        }
        if (need > sizeof buf - 2) {
            char *line = malloc(need + 1);
            int rc = line ? (snprintf(line, need + 1, "%s:%s\r\n", name, value), out(ctx, line, need)) : -1;
            free(line);
            if (rc < 0)
                return -1;
            continue;
        }
        used += (size_t)snprintf(buf + used, sizeof buf - used, "%s:%s\r\n", name, value);
    }
    memcpy(buf + used, "\r\n", 2);
    if (out(ctx, buf, used + 2) < 0)
        return -1;
    uint64_t off = 0;
    long n;
    while ((n = host->body_read(t, off, buf, sizeof buf)) > 0) {
        if (out(ctx, buf, (size_t)n) < 0)
            return -1;
        off += (uint64_t)n;
    }
    return n < 0 ? -1 : 0;
}

#endif
