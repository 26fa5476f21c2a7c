/* http.c - posternd's HTTP listener (http_listen), served by libmicrohttpd
 * on its own threads (one per connection), never the SMTP loop: GET
 * /metrics (Prometheus text format, metrics.c) and, with http_users, the
 * web console (console.c) for everything else. HTTPS with tls_cert when
 * http_tls (the default when tls_cert is set; TLS 1.2 and newer, as SMTP).
 * The socket, the key and the users file are taken before privileges are
 * dropped. Idle clients cannot lock admins and Prometheus out: at most
 * HTTP_PER_CLIENT connections per client address (of HTTP_CONNECTIONS),
 * and a request head must be complete within HTTP_HEAD_TIMEOUT_S of the
 * connection (or of the previous request), as nginx's client_header_timeout:
 * a watchdog shuts the socket of a connection that is late. */
#include "http.h"
#include "ldap_login.h"
#include "buf.h"
#include "clock.h"
#include "console.h"
#include "console_archive.h"
#include "console_track.h"
#include "console_user.h"
#include "learn.h"
#include "track.h"
#include "console_auth.h"
#include "log.h"
#include "metrics.h"
#include "netaddr.h"
#include <errno.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HTTP_CONNECTIONS 64
#define HTTP_PER_CLIENT 8
#define HTTP_HEAD_TIMEOUT_S 10
#define HTTP_IDLE_TIMEOUT_S 30
#define HTTP_TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

static int listen_fd = -1;
static struct MHD_Daemon *daemon_handle;
static bool console_on;
static char *tls_cert_pem, *tls_key_pem;   /* read as root; libmicrohttpd wants them in memory */

/* ---- request-head deadline ---------------------------------------- */

/* A connection the watchdog keeps an eye on: waiting for a request head
 * since since_ms, or not (head_done) while a request is served. */
struct http_conn {
    int fd;
    bool used, head_done, cut;
    uint64_t since_ms;
};

static struct http_conn conns[HTTP_CONNECTIONS];
static pthread_mutex_t conns_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t watchdog;
static bool watchdog_running, watchdog_stop;
static pthread_cond_t watchdog_wake = PTHREAD_COND_INITIALIZER;

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    (void)cls;
    pthread_mutex_lock(&conns_lock);
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        for (size_t i = 0; ci && i < HTTP_CONNECTIONS; i++)
            if (!conns[i].used) {
                conns[i] = (struct http_conn){.fd = ci->connect_fd, .used = true, .since_ms = clock_mono_ms()};
                *socket_context = &conns[i];
                break;
            }
    } else if (*socket_context) {       /* closed: forgotten before the socket is */
        memset(*socket_context, 0, sizeof(struct http_conn));
        *socket_context = NULL;
    }
    pthread_mutex_unlock(&conns_lock);
}

/* The head of a request is in (done) or the request is over (!done). */
static void head_state(struct MHD_Connection *c, bool done)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct http_conn *hc = ci ? ci->socket_context : NULL;
    if (!hc)
        return;
    pthread_mutex_lock(&conns_lock);
    hc->head_done = done;
    hc->since_ms = clock_mono_ms();
    pthread_mutex_unlock(&conns_lock);
}

static void *watch_heads(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&conns_lock);
    while (!watchdog_stop) {
        uint64_t now = clock_mono_ms();
        for (size_t i = 0; i < HTTP_CONNECTIONS; i++) {
            struct http_conn *hc = &conns[i];
            if (hc->used && !hc->head_done && !hc->cut && now - hc->since_ms > HTTP_HEAD_TIMEOUT_S * 1000) {
                shutdown(hc->fd, SHUT_RDWR);     /* its own thread sees the end and closes it */
                hc->cut = true;
            }
        }
        struct timespec until = clock_deadline_ms(CLOCK_REALTIME, 500);
        pthread_cond_timedwait(&watchdog_wake, &conns_lock, &until);
    }
    pthread_mutex_unlock(&conns_lock);
    return NULL;
}

/* ---- requests ------------------------------------------------------ */

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
    if (!*state && !*upload_size)
        head_state(c, true);
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
    (void)why;
    console_request_done(*state);
    *state = NULL;
    head_state(c, false);      /* the next request's head has its own deadline */
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
    console_archive_configure(config_plugin_option(cfg, "archive", "dir"));
    char track_path[4096] = "";
    if (cfg->tracking)
        track_db_path(cfg, track_path, sizeof track_path);
    console_track_configure(track_path, &cfg->fleet, cfg->fleet_token);
    console_user_configure(cfg, cfg->control_socket);
    if (cfg->user_login && !strcmp(cfg->user_login, "ldap") && ldap_login_configure(cfg, err, sizeof err) < 0) {
        log_error("%s", err);
        return -1;
    }
    learn_configure(cfg);
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
        bind(listen_fd, (struct sockaddr *)&ss, len) < 0 || listen(listen_fd, 64) < 0) {
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
    struct MHD_OptionItem common[] = {
        {MHD_OPTION_LISTEN_SOCKET, listen_fd, NULL},
        {MHD_OPTION_CONNECTION_LIMIT, HTTP_CONNECTIONS, NULL},
        {MHD_OPTION_PER_IP_CONNECTION_LIMIT, HTTP_PER_CLIENT, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, HTTP_IDLE_TIMEOUT_S, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)request_done, NULL},
        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    if (tls_cert_pem)
        daemon_handle = MHD_start_daemon(flags | MHD_USE_TLS, 0, NULL, NULL, on_request, NULL, MHD_OPTION_ARRAY,
                                         common, MHD_OPTION_HTTPS_MEM_KEY, tls_key_pem, MHD_OPTION_HTTPS_MEM_CERT,
                                         tls_cert_pem, MHD_OPTION_HTTPS_PRIORITIES, HTTP_TLS_PRIORITIES,
                                         MHD_OPTION_END);
    else
        daemon_handle = MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_ARRAY, common,
                                         MHD_OPTION_END);
    if (daemon_handle && pthread_create(&watchdog, NULL, watch_heads, NULL) == 0)
        watchdog_running = true;
    if (!daemon_handle) {
        log_error("http_listen: cannot start the HTTP listener");
        return -1;
    }
    return 0;
}

void http_stop(void)
{
    if (watchdog_running) {
        pthread_mutex_lock(&conns_lock);
        watchdog_stop = true;
        pthread_cond_signal(&watchdog_wake);
        pthread_mutex_unlock(&conns_lock);
        pthread_join(watchdog, NULL);
        watchdog_running = false;
    }
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
