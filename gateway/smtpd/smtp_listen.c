/* smtp_listen.c - posternd's SMTP listeners: bound as root at start,
 * accepted on the loop, each new connection checked against max_sessions
 * and the per-client limits (concurrent sessions, connection rate; the
 * rate shared through Redis when there is one) before smtp_server.c makes
 * it a session; out of descriptors, excess connections get a 421 from a
 * spare descriptor instead of spinning the loop. */
#include "smtp_session.h"
#include "smtp_server.h"
#include "kv.h"
#include "log.h"
#include "metrics.h"
#include "netaddr.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct ev_watch listeners[CONFIG_MAX_LISTEN];
static int nlisteners;
static bool listeners_closed;

/* ---- per-client limits ------------------------------------------
 * Concurrent sessions are counted over the session list; new sessions per
 * minute in a small table of recent addresses (an address that falls out
 * of the table starts over: the limit is a brake, not an accountant).
 * trusted_networks are exempt from both. */
#define RATE_SLOTS 4096
static struct addr_window rate_table[RATE_SLOTS];

/* With shared state (redis_server) every new session is also counted in
 * Redis, without waiting: the answer, the count over every node, is kept
 * beside this node's own and brakes the next connection. The decision
 * never waits for Redis; it lags by one round trip. */
static void shared_rate_answer(void *arg, const struct kv_answer *a)
{
    char *ip = arg;
    struct addr_window *w = addr_window_for(rate_table, RATE_SLOTS, ip, 60);
    if (a->status == 0 && a->shared && a->n > w->shared)
        w->shared = a->n;
    free(ip);
}

/* One more new session from ip in its current 60 s window: over the rate? */
static bool over_rate(const char *ip)
{
    struct addr_window *w = addr_window_for(rate_table, RATE_SLOTS, ip, 60);
    w->count++;
    if (kv_shared()) {
        char key[100], *copy = strdup(ip);
        snprintf(key, sizeof key, "conn:%s", ip);
        if (copy && kv_incr(key, 60, shared_rate_answer, copy) < 0)
            free(copy);
        if (w->shared && ++w->shared > smtp_cfg->client_connect_rate)
            return true;
    }
    return w->count > smtp_cfg->client_connect_rate;
}

/* A refused connection in the metrics, by reason (NULL: not a PROXY peer). */
void smtp_count_refusal(const char *refusal)
{
    const char *reason = !refusal ? "proxy_networks" : strstr(refusal, "from your address") ? "per_client_sessions"
                         : strstr(refusal, "rate limit") ? "per_client_rate" : "max_sessions";
    char labels[64];
    metric_inc(M_SESSIONS_REFUSED, metric_labels(labels, sizeof labels, "reason", reason, NULL));
}

/* The refusal for a new connection, or NULL to accept it. */
/* per_client: the address is the client's (not a load balancer's before
 * its PROXY header), so per-client limits apply. */
const char *smtp_connection_refusal(const struct sockaddr_storage *ss, const char *ip, bool per_client)
{
    if (smtp_server_sessions() >= smtp_cfg->max_sessions || listeners_closed)
        return "421 4.3.2 Too many connections, try again later\r\n";
    if (!per_client || config_is_trusted(smtp_cfg, (const struct sockaddr *)ss))
        return NULL;
    if (smtp_cfg->max_sessions_per_client && smtp_server_sessions_from(ip) >= smtp_cfg->max_sessions_per_client)
        return "421 4.7.0 Too many connections from your address, try again later\r\n";
    if (smtp_cfg->client_connect_rate && over_rate(ip))
        return "421 4.7.0 Connection rate limit exceeded for your address, try again later\r\n";
    return NULL;
}

static void accept_one(int fd, struct sockaddr_storage *ss, const struct listen_addr *l)
{
    char ip[64];
    sockaddr_ip_text((struct sockaddr *)ss, ip, sizeof ip);
    if (l->proxy && !config_allows_proxy(smtp_cfg, (struct sockaddr *)ss)) {
        smtp_count_refusal(NULL);
        log_info("refused connection from [%s] to PROXY listener %s: not in proxy_networks", ip, l->text);
        close(fd);
        return;
    }
    const char *refusal = smtp_connection_refusal(ss, ip, !l->proxy);
    if (refusal) {
        smtp_count_refusal(refusal);
        if (!listeners_closed)
            log_info("refused connection from [%s]: %.*s", ip, (int)strlen(refusal) - 2, refusal);
        ssize_t w = send(fd, refusal, strlen(refusal), MSG_NOSIGNAL);
        (void)w;
        close(fd);
        return;
    }
    session_open(fd, ss, l);
}

/* Out of file descriptors (EMFILE/ENFILE): the pending connection would
 * keep the listener readable and the loop spinning. A spare descriptor,
 * given up for a moment, lets us accept it and say 421 instead of leaving
 * it silent; then accepting pauses for ACCEPT_PAUSE_MS and the log line is
 * written at most once per FD_LOG_EVERY_MS. */
#define ACCEPT_PAUSE_MS 200
#define FD_LOG_EVERY_MS 10000
static int spare_fd = -1;
static uint64_t accept_paused_until, fd_log_next;
static unsigned long fd_shed;

static void set_accepting(bool on)
{
    for (int i = 0; i < nlisteners && !listeners_closed; i++)
        ev_mod(&listeners[i], on ? EPOLLIN : 0);
}

static void shed_connection(int lfd)
{
    if (spare_fd >= 0)
        close(spare_fd);
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
        static const char busy[] = "421 4.3.2 Too many connections, try again later\r\n";
        ssize_t w = send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
        close(fd);
        fd_shed++;
        char labels[64];
        metric_inc(M_SESSIONS_REFUSED, metric_labels(labels, sizeof labels, "reason", "out_of_descriptors", NULL));
    }
    spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    uint64_t now = ev_now_ms();
    if (now >= fd_log_next) {
        log_error("accept: %s; %lu connection(s) turned away with 421 so far", strerror(EMFILE), fd_shed);
        fd_log_next = now + FD_LOG_EVERY_MS;
    }
    accept_paused_until = now + ACCEPT_PAUSE_MS;
    set_accepting(false);
}

static void listener_on_event(void *ctx, uint32_t events)
{
    struct ev_watch *w = ctx;
    (void)events;
    for (int i = 0; i < 256; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(w->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && (errno == EMFILE || errno == ENFILE)) {
            shed_connection(w->fd);
            return;
        }
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                log_error("accept: %s", strerror(errno));
            return;
        }
        accept_one(fd, &ss, &smtp_cfg->listen[w - listeners]);   /* listeners take a restart to change */
    }
}

int smtp_server_bind(const struct config *c)
{
    smtp_cfg = c;
    for (int i = 0; i < c->nlisten; i++) {
        const struct listen_addr *l = &c->listen[i];
        int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
            bind(fd, (const struct sockaddr *)&l->addr, l->addrlen) < 0 || listen(fd, 4096) < 0) {
            log_error("cannot listen on %s: %s", l->text, strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        listeners[nlisteners++].fd = fd;
        log_info("listening on %s", l->text);
    }
    return 0;
}

int smtp_server_start(void)
{
    spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    for (int i = 0; i < nlisteners; i++)
        if (ev_add(&listeners[i], listeners[i].fd, EPOLLIN, listener_on_event, &listeners[i]) < 0)
            return -1;
    return 0;
}

void smtp_listen_tick(uint64_t now)
{
    if (accept_paused_until && now >= accept_paused_until) {
        accept_paused_until = 0;
        set_accepting(true);
    }
}

void smtp_listen_close(void)
{
    listeners_closed = true;
    for (int i = 0; i < nlisteners; i++) {
        int fd = listeners[i].fd;
        ev_del(&listeners[i]);
        close(fd);
    }
}
