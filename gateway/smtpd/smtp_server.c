/* smtp_server.c - inbound SMTP sessions: one struct session per
 * connection, driven by the event loop: replies and their flushing,
 * timeouts, reading command lines, STARTTLS's handshake, opening and
 * closing, and shutdown. Commands are smtp_commands.c's (one table), hook
 * stages and verdicts smtp_stage.c's, message data smtp_message.c's, BDAT
 * smtp_chunking.c's, XCLIENT and PROXY smtp_proxy.c's, listeners and
 * per-client limits smtp_listen.c's (see smtp_session.h). */
#include "smtp_server.h"
#include "kv.h"
#include "smtp_session.h"
#include "track.h"
#include "metrics.h"
#include "hooks.h"
#include "runtime.h"
#include "log.h"
#include "netaddr.h"
#include "relay_control.h"
#include "tls.h"
#include "conn_io.h"
#include "workers.h"
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

const struct config *smtp_cfg;
static struct session *sessions;
static int nsessions;
static unsigned long next_sid;
static bool shutting_down;

/* ---- replies ------------------------------------------------------ */

void session_reply(struct session *s, const char *line)
{
    buf_puts(&s->out, line);
    buf_puts(&s->out, "\r\n");
    if (line[0] == '5')
        s->errors++;
}

void session_replyf(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void session_replyf(struct session *s, const char *fmt, ...)
{
    char line[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    session_reply(s, line);
}

/* ---- session lifecycle -------------------------------------------- */

void session_txn_restart(struct session *s)
{
    txn_reset(&s->tx);
    s->in_mail = false;
    s->bdat = false;
    memset(&s->mp, 0, sizeof s->mp);
}

void session_free(void *p)
{
    struct session *s = p;
    smtp_auth_session_end(s);
    if (s->ssl)
        SSL_free(s->ssl);
    txn_free(&s->tx);                    /* first: a message's data may use the session's */
    txn_slots_free(&s->session_slots);
    varmap_free(&s->session_vars);
    free(s->client_name);
    free(s->session_reason);
    free(s->session_decisions);
    free(s->rcpt_orcpt);
    buf_free(&s->in);
    buf_free(&s->out);
    buf_free(&s->hdr_buf);
    buf_free(&s->chunk);
    runtime_release(s->rt);
    free(s);
}

void session_close(struct session *s)
{
    if (s->dead)
        return;
    s->dead = true;
    if (s->w.fd >= 0) {
        int fd = s->w.fd;
        ev_del(&s->w);
        close(fd);
    }
    if (s->prev)
        s->prev->next = s->next;
    else
        sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    nsessions--;
    log_info("S%lu: disconnect from [%s]", s->sid, s->tx.client_ip);
    /* a hook or commit in flight owns the session until it completes */
    if (s->busy)
        return;
    message_abort(s);   /* an unfinished message (DATA, BDAT, or timed out in either) */
    ev_defer_free(s, session_free);
}

/* A fresh deadline for the next request: a whole command line, or a whole
 * DATA section. Input arriving in pieces does not restart it, so a client
 * dribbling a byte at a time (slowloris) times out like an idle one. */
void session_set_timeout(struct session *s)
{
    int secs = s->phase == PH_DATA ? s->cfg->data_timeout : s->cfg->smtp_timeout;
    s->deadline_ms = ev_now_ms() + (uint64_t)secs * 1000;
}

/* Inside DATA, n bytes received earn n / smtp_min_data_rate seconds more,
 * never beyond data_timeout from now (Postfix's smtpd_min_data_rate). A
 * large message on a slow but honest link goes on; a trickle does not. */
static void extend_data_deadline(struct session *s, size_t n)
{
    if (s->phase != PH_DATA)
        return;
    uint64_t now = ev_now_ms(), cap = now + (uint64_t)s->cfg->data_timeout * 1000;
    s->deadline_ms += (uint64_t)n * 1000 / (uint64_t)s->cfg->smtp_min_data_rate;
    if (s->deadline_ms > cap)
        s->deadline_ms = cap;
}

static ssize_t session_send(struct session *s, const char *buf, size_t n) { return tls_write(s->ssl, s->w.fd, buf, n); }

static void tls_start(struct session *s);
static void tls_step(struct session *s);
/* Read only while there is room and replies are not piling up; a hook or
 * commit in flight pauses input so pipelined commands wait. */
static bool session_wants_input(const struct session *s)
{
    return (s->phase == PH_COMMAND || s->phase == PH_DATA || s->phase == PH_PROXY || s->phase == PH_GREET) &&
           s->in.len < MAX_INPUT_BUFFER && s->out.len < MAX_OUTPUT_BACKLOG;
}

/* Write pending replies; returns -1 if the session was closed. */
int session_flush(struct session *s)
{
    while (s->out.len) {
        ssize_t w = session_send(s, buf_head(&s->out), s->out.len);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            session_close(s);
            return -1;
        }
        buf_consume(&s->out, (size_t)w);
    }
    if (!s->out.len && s->phase == PH_CLOSING) {
        session_close(s);
        return -1;
    }
    if (s->phase == PH_TLS) {
        /* the 220 went out in plain text: now the handshake */
        if (!s->out.len && !s->ssl)
            tls_start(s);
        if (s->dead)
            return -1;
        ev_mod(&s->w, s->ssl ? s->tls_want : EPOLLOUT);
        return 0;
    }
    if (s->phase == PH_COMMAND && !s->out.len && !s->in.len) {
        buf_free(&s->in);       /* waiting for the next command: an idle session holds no buffers */
        buf_free(&s->out);
    }
    conn_arm(&s->w, s->ssl, (session_wants_input(s) ? EPOLLIN : 0) | (s->out.len ? EPOLLOUT : 0));
    return 0;
}

void session_close_after_reply(struct session *s)
{
    s->phase = PH_CLOSING;
}

void session_reply_later(struct session *s, const char *line, int secs)
{
    if (secs <= 0) {
        session_reply(s, line);
        return;
    }
    snprintf(s->held_reply, sizeof s->held_reply, "%s", line);
    s->phase = PH_WAIT;
    s->wait_until_ms = ev_now_ms() + (uint64_t)secs * 1000;
    s->deadline_ms = s->wait_until_ms + (uint64_t)s->cfg->smtp_timeout * 1000;
}

static void held_reply_due(struct session *s)
{
    s->phase = PH_COMMAND;
    session_set_timeout(s);
    session_reply(s, s->held_reply);
    session_resume(s);
}

/* ---- input -------------------------------------------------------- */

static void process_commands(struct session *s)
{
    while (s->phase == PH_COMMAND && s->in.len && s->out.len < MAX_OUTPUT_BACKLOG) {
        if (s->skip_bytes) {     /* a refused BDAT chunk */
            size_t n = s->in.len < s->skip_bytes ? s->in.len : (size_t)s->skip_bytes;
            buf_consume(&s->in, n);
            s->skip_bytes -= n;
            continue;
        }
        char *head = buf_head(&s->in);
        char *nl = memchr(head, '\n', s->in.len);
        size_t limit = smtp_auth_line_limit(s, head, s->in.len);
        if (!nl) {
            if (s->in.len >= limit) {
                if (!s->skip_line)
                    session_reply(s, "500 5.5.2 Error: command line too long");
                s->skip_line = true;
                buf_consume(&s->in, s->in.len);
            }
            return;
        }
        size_t linelen = (size_t)(nl - head) + 1;
        if (s->skip_line || linelen > limit) {
            if (!s->skip_line)
                session_reply(s, "500 5.5.2 Error: command line too long");
            s->skip_line = false;
            buf_consume(&s->in, linelen);
            continue;
        }
        char line[SMTP_MAX_AUTH_LINE + 1];
        size_t len = smtp_command_line_text(head, linelen, line, sizeof line);
        buf_consume(&s->in, linelen);
        session_set_timeout(s);      /* the next command line gets a full smtp_timeout */
        if (memchr(line, '\0', len))   /* a NUL would cut the command short as a C string */
            session_reply(s, "500 5.5.2 Error: invalid character in command");
        else if (smtp_auth_waiting(s))
            smtp_auth_response(s, line);
        else
            smtp_run_command(s, line);
        if (s->errors >= s->cfg->max_errors && s->phase != PH_CLOSING) {
            log_info("S%lu: too many errors from [%s]", s->sid, s->tx.client_ip);
            session_reply(s, "421 4.7.0 Error: too many errors");
            session_close_after_reply(s);
        }
        if (s->phase == PH_DATA)
            message_process_input(s);
    }
}

void session_resume(struct session *s)
{
    if (s->phase == PH_GREET) {
        if (s->in.len)
            smtp_pregreet_caught(s);
        session_flush(s);
        return;
    }
    if (s->phase == PH_PROXY)
        proxy_header_process(s);
    if (s->phase == PH_DATA)
        message_process_input(s);
    process_commands(s);
    session_flush(s);
}

static void session_on_event(void *ctx, uint32_t events)
{
    struct session *s = ctx;
    if (s->phase == PH_TLS) {
        if (events & (EPOLLHUP | EPOLLERR) && !(events & EPOLLIN)) {
            session_close(s);
            return;
        }
        if (s->ssl)
            tls_step(s);
        else
            session_flush(s);
        return;
    }
    if (events == EPOLLIN && !session_wants_input(s))
        return;      /* a kick for TLS input that came after input was paused: the next flush kicks again */
    if (events & EPOLLIN) {
        /* small for commands, larger inside DATA; grown by doubling */
        enum conn_end end;
        size_t got = conn_fill(&s->in, s->ssl, s->w.fd, s->phase == PH_DATA ? 16384 : 1024, MAX_INPUT_BUFFER, &end);
        extend_data_deadline(s, got);
        if (end != CONN_OPEN) {
            session_close(s);   /* EOF or error: an unfinished DATA is discarded */
            return;
        }
        session_resume(s);
        return;
    }
    if (events & (EPOLLHUP | EPOLLERR)) {
        session_close(s);
        return;
    }
    if (events & EPOLLOUT)
        session_resume(s);
}

/* The handshake's outcome r (1 done, 0 wants I/O, -1 failed: why). */
static void tls_step_result(struct session *s, int r, const char *why)
{
    char labels[96];
    if (r == 1) {
        metric_inc(M_TLS_HANDSHAKES, metric_labels(labels, sizeof labels, "direction", "in", "result",
                                                   SSL_get_version(s->ssl), NULL));
        char tls_info[160];
        tls_describe(s->ssl, tls_info, sizeof tls_info);
        log_info("S%lu: [%s] STARTTLS: %s%s", s->sid, s->tx.client_ip, tls_info,
                 SSL_session_reused(s->ssl) ? " (resumed)" : "");
        /* RFC 3207: forget everything learned before the handshake */
        s->helo_done = s->esmtp = false;
        if (s->authenticated) {        /* a login from before TLS is forgotten too */
            s->authenticated = false;
            s->tx.auth_user[0] = '\0';
        }
        session_txn_restart(s);
        s->tx.helo[0] = '\0';
        s->tx.tls = true;
        s->phase = PH_COMMAND;
        session_set_timeout(s);
        if (!s->greeted)      /* implicit TLS: the greeting comes now */
            session_greet(s);
        if (!s->dead && s->phase != PH_HOOK)
            session_flush(s);
        return;
    }
    if (r == 0) {
        ev_mod(&s->w, s->tls_want);
        return;
    }
    log_info("S%lu: [%s] STARTTLS handshake failed: %s", s->sid, s->tx.client_ip, why);
    metric_inc(M_TLS_HANDSHAKES, metric_labels(labels, sizeof labels, "direction", "in", "result", "failed", NULL));
    session_close(s);
}

/* The step that answers the ClientHello (the server's key exchange and its
 * signature: most of a handshake's CPU) runs on a worker, so handshakes use
 * every core rather than only the loop's. Meanwhile the session is busy and
 * its socket out of epoll (a hang-up would otherwise be reported again and
 * again). Later steps are light and run here. */
struct tls_job {
    struct work work;
    struct session *s;
    int fd;
    int r;
    char why[256];
};

static void tls_job_run(struct work *w)
{
    struct tls_job *j = (struct tls_job *)w;
    j->r = tls_handshake_step(j->s->ssl, &j->s->tls_want);
    if (j->r < 0)
        tls_last_error(j->why, sizeof j->why);      /* OpenSSL's error queue is this thread's */
}

static void tls_job_done(struct work *w)
{
    struct tls_job *j = (struct tls_job *)w;
    struct session *s = j->s;
    s->busy = false;
    if (s->dead) {                  /* closed meanwhile (its socket was out of epoll: close it here) */
        close(j->fd);
        ev_defer_free(s, session_free);
    } else if (ev_add(&s->w, j->fd, 0, session_on_event, s) < 0) {
        log_error("S%lu: cannot watch the connection again: %s", s->sid, strerror(errno));
        session_close(s);
    } else {
        tls_step_result(s, j->r, j->why);
    }
    free(j);
}

/* The server side of the handshake, non-blocking, driven by events. */
static void tls_step(struct session *s)
{
    struct tls_job *j = !s->tls_offloaded ? calloc(1, sizeof *j) : NULL;
    if (j) {
        s->tls_offloaded = true;
        j->s = s;
        j->work.run = tls_job_run;
        j->work.done = tls_job_done;
        j->fd = s->w.fd;
        s->busy = true;
        ev_del(&s->w);
        workers_submit(&j->work);
        return;
    }
    char why[256] = "";
    int r = tls_handshake_step(s->ssl, &s->tls_want);
    if (r < 0)
        tls_last_error(why, sizeof why);
    tls_step_result(s, r, why);
}

static void tls_start(struct session *s)
{
    s->ssl = SSL_new(tls_server_ctx());
    if (!s->ssl || SSL_set_fd(s->ssl, s->w.fd) != 1) {
        log_error("S%lu: cannot start TLS", s->sid);
        session_close(s);
        return;
    }
    SSL_set_accept_state(s->ssl);
    s->tls_want = EPOLLIN;
    ev_mod(&s->w, EPOLLIN);         /* the ClientHello: its step goes to a worker */
}

/* A new session on fd, accepted on listener l from ss (smtp_listen.c has
 * checked the limits): greeted, or waiting for its PROXY header or TLS. */
void session_open(int fd, const struct sockaddr_storage *ss, const struct listen_addr *l)
{
    bool implicit_tls = l->implicit_tls;
    bool submission = l->submission;
    struct session *s = calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        return;
    }
    s->rt = runtime_hold();
    s->cfg = &s->rt->cfg;
    s->tx.chain = s->rt->chain;
    s->submission = submission;
    s->sid = s->tx.sid = ++next_sid;
    s->peer = *ss;
    s->xclient_allowed = config_allows_xclient(s->cfg, (struct sockaddr *)ss);
    s->tx.session_vars = &s->session_vars;
    s->tx.session_slots = &s->session_slots;
    s->tx.data_fd = -1;
    sockaddr_ip_text((struct sockaddr *)ss, s->tx.client_ip, sizeof s->tx.client_ip);
    if (ev_add(&s->w, fd, EPOLLIN, session_on_event, s) < 0) {
        close(fd);
        runtime_release(s->rt);
        free(s);
        return;
    }
    s->next = sessions;
    if (sessions)
        sessions->prev = s;
    sessions = s;
    nsessions++;
    metric_inc(M_SESSIONS_TOTAL, NULL);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    log_info("S%lu: connect from [%s]%s", s->sid, s->tx.client_ip,
             implicit_tls ? " (implicit TLS)" : l->proxy ? " (PROXY protocol)" : "");
    session_set_timeout(s);
    if (l->proxy) {
        s->phase = PH_PROXY;    /* no greeting before the header names the client */
        return;
    }
    if (implicit_tls) {
        s->implicit_tls = true;
        s->phase = PH_TLS;      /* session_flush starts the handshake */
        session_flush(s);
        return;
    }
    session_greet(s);
    if (s->phase != PH_HOOK)
        session_flush(s);
}

int smtp_server_sessions_from(const char *ip)
{
    int n = 0;
    for (struct session *s = sessions; s; s = s->next)
        n += !strcmp(s->tx.client_ip, ip);
    return n;
}

void smtp_server_configure(const struct config *c) { smtp_cfg = c; }

void smtp_server_tick(void)
{
    uint64_t now = ev_now_ms();
    metric_set(M_SESSIONS_OPEN, NULL, nsessions);
    smtp_listen_tick(now);
    for (struct session *s = sessions, *next; s; s = next) {
        next = s->next;
        if (s->phase == PH_GREET && now >= s->wait_until_ms)
            smtp_greet_wait_end(s);
        else if (s->phase == PH_WAIT && now >= s->wait_until_ms)
            held_reply_due(s);
        if (s->busy || now < s->deadline_ms)
            continue;
        log_info("S%lu: timeout from [%s]", s->sid, s->tx.client_ip);
        session_replyf(s, "421 4.4.2 %s Error: timeout exceeded", s->cfg->hostname);
        session_close_after_reply(s);
        session_flush(s);
        if (!s->dead)
            session_close(s);   /* do not wait for a client that is not reading */
    }
}

int smtp_server_shutdown(void)
{
    if (!shutting_down) {
        shutting_down = true;
        smtp_listen_close();
    }
    int waiting = 0;
    for (struct session *s = sessions, *next; s; s = next) {
        next = s->next;
        if (s->busy) {
            waiting++;
            continue;
        }
        session_replyf(s, "421 4.3.2 %s Service shutting down", s->cfg->hostname);
        session_close_after_reply(s);
        session_flush(s);
        if (!s->dead)
            session_close(s);
    }
    return waiting;
}

int smtp_server_sessions(void) { return nsessions; }
