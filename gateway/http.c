/* http.c - posternd's HTTP listener (http_listen), served by libmicrohttpd
 * on its own thread, never the SMTP loop: today only GET /metrics
 * (Prometheus text format, metrics.c). The socket is bound before
 * privileges are dropped, like the SMTP listeners; at most 16 connections,
 * 10 s each. */
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "netaddr.h"
#include <errno.h>
#include <microhttpd.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int listen_fd = -1;
static struct MHD_Daemon *daemon_handle;

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type, const char *body,
                             size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **state)
{
    (void)cls;
    (void)version;
    (void)upload;
    (void)state;
    if (*upload_size)
        return MHD_NO;                     /* no request bodies here */
    if (strcmp(method, "GET") && strcmp(method, "HEAD"))
        return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", "method not allowed\n", 19);
    if (strcmp(url, "/metrics"))
        return reply(c, MHD_HTTP_NOT_FOUND, "text/plain", "not found\n", 10);
    struct buf b;
    buf_init(&b);
    metrics_render(&b);
    enum MHD_Result rc = reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", b.data ? buf_head(&b) : "",
                               b.len);
    buf_free(&b);
    return rc;
}

int http_bind(const struct config *cfg)
{
    if (!cfg->http_listen[0])
        return 0;
    struct sockaddr_storage ss;
    socklen_t len;
    int one = 1;
    if (hostport_parse(cfg->http_listen, &ss, &len) < 0 ||
        (listen_fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
        setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(listen_fd, (struct sockaddr *)&ss, len) < 0 || listen(listen_fd, 16) < 0) {
        log_error("http_listen %s: %s", cfg->http_listen, strerror(errno));
        return -1;
    }
    return 0;
}

int http_start(void)
{
    if (listen_fd < 0)
        return 0;
    daemon_handle = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request,
                                     NULL, MHD_OPTION_LISTEN_SOCKET, listen_fd, MHD_OPTION_CONNECTION_LIMIT, 16,
                                     MHD_OPTION_CONNECTION_TIMEOUT, 10, MHD_OPTION_END);
    if (!daemon_handle) {
        log_error("http_listen: cannot start the HTTP listener");
        return -1;
    }
    return 0;
}

void http_stop(void)
{
    if (daemon_handle)
        MHD_stop_daemon(daemon_handle);
    daemon_handle = NULL;
    if (listen_fd >= 0)
        close(listen_fd);
    listen_fd = -1;
}
