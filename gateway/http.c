/* http.c - posternd's HTTP listener (http_listen), served by libmicrohttpd
 * on its own threads (one per connection), never the SMTP loop: GET
 * /metrics (Prometheus text format, metrics.c) and, with http_users, the
 * web console (console.c) for everything else. HTTPS with tls_cert when
 * http_tls (the default when tls_cert is set). The socket, the key and the
 * users file are taken before privileges are dropped; at most 16
 * connections, 30 s each. */
#include "http.h"
#include "buf.h"
#include "console.h"
#include "console_auth.h"
#include "log.h"
#include "metrics.h"
#include "netaddr.h"
#include <errno.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int listen_fd = -1;
static struct MHD_Daemon *daemon_handle;
static bool console_on;
static char *tls_cert_pem, *tls_key_pem;   /* read as root; libmicrohttpd wants them in memory */

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
    if (strcmp(url, "/metrics") && console_on)
        return console_handle(c, url, method, upload, upload_size, state);
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

static void request_done(void *cls, struct MHD_Connection *c, void **state, enum MHD_RequestTerminationCode why)
{
    (void)cls;
    (void)c;
    (void)why;
    console_request_done(*state);
    *state = NULL;
}

static char *read_pem(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    struct buf b;
    buf_init(&b);
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0 && b.len < (1u << 20))
        buf_append(&b, tmp, n);
    fclose(f);
    buf_append(&b, "", 1);
    return b.data;
}

int http_bind(const struct config *cfg)
{
    if (!cfg->http_listen[0])
        return 0;
    char err[600];
    if (cfg->http_users && console_users_load(cfg->http_users, err, sizeof err) < 0) {
        log_error("%s", err);
        return -1;
    }
    console_on = cfg->http_users != NULL;
    console_configure(cfg->control_socket, cfg->http_tls);
    if (cfg->http_tls) {
        if (!MHD_is_feature_supported(MHD_FEATURE_TLS)) {
            log_error("http_tls: this libmicrohttpd has no TLS support");
            return -1;
        }
        if (!(tls_cert_pem = read_pem(cfg->tls_cert)) || !(tls_key_pem = read_pem(cfg->tls_key))) {
            log_error("http_tls: cannot read %s / %s: %s", cfg->tls_cert, cfg->tls_key, strerror(errno));
            return -1;
        }
    }
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
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG;
    if (tls_cert_pem)
        daemon_handle = MHD_start_daemon(flags | MHD_USE_TLS, 0, NULL, NULL, on_request, NULL, MHD_OPTION_LISTEN_SOCKET,
                                         listen_fd, MHD_OPTION_CONNECTION_LIMIT, 16, MHD_OPTION_CONNECTION_TIMEOUT, 30,
                                         MHD_OPTION_NOTIFY_COMPLETED, request_done, NULL, MHD_OPTION_HTTPS_MEM_KEY,
                                         tls_key_pem, MHD_OPTION_HTTPS_MEM_CERT, tls_cert_pem, MHD_OPTION_END);
    else
        daemon_handle = MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_LISTEN_SOCKET, listen_fd,
                                         MHD_OPTION_CONNECTION_LIMIT, 16, MHD_OPTION_CONNECTION_TIMEOUT, 30,
                                         MHD_OPTION_NOTIFY_COMPLETED, request_done, NULL, MHD_OPTION_END);
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
    free(tls_cert_pem);
    free(tls_key_pem);
    tls_cert_pem = tls_key_pem = NULL;
    console_users_free();
}
