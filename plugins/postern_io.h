/* postern_io.h - writing a whole buffer to a file or a socket, for posternd
 * and the shipped plugins alike (header-only, so a plugin stays one
 * self-contained .so). */
#ifndef POSTERN_IO_H
#define POSTERN_IO_H
#include <errno.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

/* All n bytes at p to fd (a socket: send without SIGPIPE); 0, or -1 with errno. */
static inline int postern_write_all(int fd, const void *p, size_t n, int is_socket)
{
    const char *c = p;
    while (n) {
        ssize_t w = is_socket ? send(fd, c, n, MSG_NOSIGNAL) : write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

#endif
