/* control_client.c - see control_client.h. Bounded: 30 s per read or
 * write, so a stopped daemon never hangs the caller. */
#include "control_client.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define CONTROL_MAX_ANSWER (64u << 20)

static int connect_to(const char *sock_path)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(sock_path) >= sizeof sun.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", sock_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = 30};
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int control_request(const char *sock_path, const char *request, struct buf *out)
{
    int fd = connect_to(sock_path);
    if (fd < 0)
        return -1;
    char req[8192];      /* control.c's MAX_REQUEST */
    int n = snprintf(req, sizeof req, "%s\n", request);
    if (n < 0 || (size_t)n >= sizeof req || write(fd, req, (size_t)n) != n) {
        close(fd);
        errno = n >= 0 && (size_t)n >= sizeof req ? E2BIG : errno;
        return -1;
    }
    struct buf b;
    buf_init(&b);
    char tmp[8192];
    ssize_t r;
    while ((r = read(fd, tmp, sizeof tmp)) > 0 && b.len < CONTROL_MAX_ANSWER)
        buf_append(&b, tmp, (size_t)r);
    int rerr = r < 0 ? errno : 0;
    close(fd);
    int rc = -1;
    if (b.len >= 3 && !memcmp(buf_head(&b), "OK\n", 3)) {
        buf_append(out, buf_head(&b) + 3, b.len - 3);
        rc = 0;
    } else if (b.len >= 4 && !memcmp(buf_head(&b), "ERR\n", 4)) {
        buf_append(out, buf_head(&b) + 4, b.len - 4);
        rc = 1;
    } else {
        errno = rerr ? rerr : EPROTO;
    }
    buf_free(&b);
    return rc;
}
