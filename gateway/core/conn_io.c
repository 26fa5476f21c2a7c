/* conn_io.c - reading a connection and arming its watch, plain or TLS (see
 * conn_io.h). With TLS, one record of up to 16 KiB is decrypted at once: a
 * read that stops with part of it returned must not wait on epoll for the
 * rest, since those bytes are already out of the kernel. */
#include "conn_io.h"
#include "tls.h"
#include <errno.h>

bool conn_tls_holds_input(SSL *ssl) { return ssl && (SSL_pending(ssl) > 0 || SSL_has_pending(ssl)); }

size_t conn_fill(struct buf *in, SSL *ssl, int fd, size_t step, size_t limit, enum conn_end *end)
{
    size_t got = 0;
    *end = CONN_OPEN;
    while (in->len < limit) {
        if (buf_reserve(in, step) < 0) {
            errno = ENOMEM;
            *end = CONN_ERROR;
            break;
        }
        size_t room;
        char *t = buf_tail(in, &room);
        if (room > limit - in->len)
            room = limit - in->len;
        ssize_t r = tls_read(ssl, fd, t, room);
        if (r > 0) {
            buf_commit(in, (size_t)r);
            got += (size_t)r;
            /* a short read drains the socket, but not necessarily OpenSSL */
            if ((size_t)r < room && !conn_tls_holds_input(ssl))
                break;
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            break;
        if (r == 0)
            errno = 0;
        *end = r == 0 ? CONN_EOF : CONN_ERROR;
        break;
    }
    return got;
}

void conn_arm(struct ev_watch *w, SSL *ssl, uint32_t mask)
{
    ev_mod(w, mask);
    if ((mask & EPOLLIN) && conn_tls_holds_input(ssl))
        ev_kick(w);
}
