/* delivery.c - non-blocking SMTP client state machine (RFC 5321 client side,
 * RFC 2920 PIPELINING). A transaction is a list of commands MAIL, RCPT...,
 * DATA; with PIPELINING all are sent at once, otherwise one per reply. Each
 * reply is matched to the command at position `answered`. */
#include "delivery.h"
#include "buf.h"
#include "event.h"
#include "log.h"
#include "mta_sts.h"
#include "mx.h"
#include "queue.h"
#include "tls.h"
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_REPLY_TEXT 400
#define MAX_REPLY_BUF (64 * 1024)
#define BODY_CHUNK (64 * 1024)
#define OUT_HIGH_WATER (256 * 1024)

enum dc_state {
    DC_CONNECTING, DC_BANNER, DC_EHLO, DC_HELO, DC_STARTTLS, DC_TLS,   /* not ready yet */
    DC_IDLE, DC_TXN, DC_BODY, DC_DOT, DC_RSET, DC_QUIT,
};

struct dest;

struct dconn {
    struct ev_watch w;
    struct dest *dest;
    enum dc_state state;
    struct buf in, out;
    uint64_t deadline_ms;
    char peer[80];
    bool pipelining, size_ext, eightbit, smtputf8, starttls, dsn, chunking, binarymime;
    SSL *ssl;
    uint32_t tls_want;
    /* current transaction */
    struct djob *job;
    size_t ncmds, sent, answered;   /* commands: MAIL, RCPT x n, DATA */
    bool *accepted;
    size_t naccepted;
    bool mail_failed, data_ignored;
    int body_fd;
    bool body_eof, at_bol;
    /* BDAT (RFC 3030): the body goes in counted chunks, each answered */
    bool bdat;
    uint64_t body_left;
    int bdat_outstanding;           /* chunks sent, not yet answered */
    bool bdat_failed;               /* a chunk was refused: send no more */
    int bdat_fail_code;
    char bdat_fail[MAX_REPLY_TEXT];
    /* reply being assembled */
    char reply[MAX_REPLY_TEXT];
    size_t reply_len;
    struct dconn *next_in_dest;     /* all connections of the destination */
    struct dconn *next_all;
};

struct dest {
    struct nexthop hop;            /* a copy: MX targets are not in the config */
    const struct tls_policy *tls;
    char name[256];                /* the MX host name (TLS verify), or "" */
    bool tls_broken;               /* "may" and the handshake failed: plain text next time */
    struct djob *head, *tail;      /* waiting jobs */
    size_t waiting;
    int nconns;
    struct dconn *conns;
    struct dest *next;
};

static const struct config *cfg;
static struct dest *dests;
static int busy_conns;
static struct dconn *all_conns;

static void conn_on_event(void *ctx, uint32_t events);
static void job_attempt_done(struct djob *j);
static void conn_start_job(struct dconn *c);
static void conn_fail(struct dconn *c, const char *why);
static void dest_kick(struct dest *d);

void delivery_init(const struct config *c) { cfg = c; }
int delivery_busy(void) { return busy_conns; }

int smtp_reply_line(const char *line, size_t len, bool *last)
{
    if (len < 3 || !isdigit((unsigned char)line[0]) || !isdigit((unsigned char)line[1]) ||
        !isdigit((unsigned char)line[2]))
        return -1;
    int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (code < 100 || code > 599)
        return -1;
    if (len == 3 || line[3] == ' ')
        *last = true;
    else if (line[3] == '-')
        *last = false;
    else
        return -1;
    return code;
}

static struct dest *dest_for(const struct nexthop *hop, const struct tls_policy *tls, const char *name)
{
    for (struct dest *d = dests; d; d = d->next)
        if (nexthop_same(&d->hop, hop) && d->tls == tls && !strcmp(d->name, name))
            return d;
    struct dest *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->hop = *hop;
    d->tls = tls;
    snprintf(d->name, sizeof d->name, "%s", name);
    d->next = dests;
    dests = d;
    return d;
}

static void set_deadline(struct dconn *c, int seconds)
{
    c->deadline_ms = ev_now_ms() + (uint64_t)seconds * 1000;
}

static void conn_want(struct dconn *c)
{
    if (c->state == DC_TLS) {       /* the handshake says which way it waits */
        ev_mod(&c->w, c->tls_want);
        return;
    }
    uint32_t mask = EPOLLIN | (c->out.len || c->state == DC_CONNECTING ? EPOLLOUT : 0);
    if (c->state == DC_BODY)
        mask |= EPOLLOUT;
    ev_mod(&c->w, mask);
}

/* Queue one command line (CRLF added) and restart the reply timer. */
static void conn_send(struct dconn *c, const char *verb, const char *arg)
{
    buf_printf(&c->out, "%s%s%s\r\n", verb, arg ? " " : "", arg ? arg : "");
    set_deadline(c, cfg->client_timeout);
}

static ssize_t conn_recv(struct dconn *c, char *buf, size_t n) { return tls_read(c->ssl, c->w.fd, buf, n); }
static ssize_t conn_write(struct dconn *c, const char *buf, size_t n) { return tls_write(c->ssl, c->w.fd, buf, n); }

/* ---- job results -------------------------------------------------- */

static int reply_class(int code) { return code / 100; }

static void result_for(struct dconn *c, size_t k, int code, const char *text)
{
    struct djob *j = c->job;
    struct qrcpt *r = &j->msg->rcpts[j->idx[k]];
    if (r->st.status != RCPT_PENDING)
        return;
    int cls = reply_class(code);
    queue_rcpt_result(j, k, cls == 2 ? 2 : cls == 5 ? 5 : 4, text, c->dsn);
    long delay = (long)(time(NULL) - j->msg->arrival);
    log_info("%s: to=<%s>, relay=%s, delay=%lds, status=%s (%s)", j->msg->id, r->addr, c->peer, delay,
             cls == 2 ? "sent" : cls == 5 ? "bounced" : "deferred", text);
}

/* Everything in the job without a result gets (code, text). */
static void result_rest(struct dconn *c, int code, const char *text)
{
    for (size_t k = 0; k < c->job->n; k++)
        result_for(c, k, code, text);
}

static void conn_finish_job(struct dconn *c)
{
    struct djob *j = c->job;
    c->job = NULL;
    free(c->accepted);
    c->accepted = NULL;
    if (c->body_fd >= 0)
        close(c->body_fd);
    c->body_fd = -1;
    busy_conns--;
    job_attempt_done(j);
}

/* ---- connection lifecycle ----------------------------------------- */

static void conn_free(void *p)
{
    struct dconn *c = p;
    if (c->ssl)
        SSL_free(c->ssl);
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
}

static void conn_unlink(struct dconn *c)
{
    struct dest *d = c->dest;
    for (struct dconn **pp = &d->conns; *pp; pp = &(*pp)->next_in_dest)
        if (*pp == c) {
            *pp = c->next_in_dest;
            break;
        }
    for (struct dconn **pp = &all_conns; *pp; pp = &(*pp)->next_all)
        if (*pp == c) {
            *pp = c->next_all;
            break;
        }
    d->nconns--;
}

static void conn_close(struct dconn *c)
{
    if (c->w.fd >= 0) {
        int fd = c->w.fd;
        ev_del(&c->w);
        close(fd);
    }
    conn_unlink(c);
    ev_defer_free(c, conn_free);
}

/* A connection error: the current job is deferred. If we never got as far
 * as a greeting, the destination is sick: every waiting job is deferred too
 * and retried on its own schedule, rather than opening connection after
 * connection against it. */
static void conn_fail(struct dconn *c, const char *why)
{
    struct dest *d = c->dest;
    bool never_ready = c->state <= DC_TLS;
    char text[MAX_REPLY_TEXT + 80];
    snprintf(text, sizeof text, "4.4.1 %s: %s", c->peer, why);
    if (c->job) {
        result_rest(c, 421, text);
        conn_finish_job(c);
    }
    conn_close(c);
    if (!never_ready) {
        dest_kick(d);
        return;
    }
    while (d->head) {
        struct djob *j = d->head;
        d->head = j->next;
        d->waiting--;
        struct dconn tmp = {.job = j, .dest = d};
        snprintf(tmp.peer, sizeof tmp.peer, "%s", c->peer);
        result_rest(&tmp, 421, text);
        job_attempt_done(j);
    }
    d->tail = NULL;
}

static int nexthop_port(const struct nexthop *h)
{
    const struct sockaddr *sa = (const struct sockaddr *)&h->addr;
    return ntohs(sa->sa_family == AF_INET ? ((const struct sockaddr_in *)sa)->sin_port
                                          : ((const struct sockaddr_in6 *)sa)->sin6_port);
}

static struct dconn *conn_open(struct dest *d)
{
    struct dconn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->dest = d;
    c->body_fd = -1;
    char ip[64];
    sockaddr_ip_text((const struct sockaddr *)&d->hop.addr, ip, sizeof ip);
    snprintf(c->peer, sizeof c->peer, "%s:%d", ip, nexthop_port(&d->hop));
    int fd = socket(d->hop.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        free(c);
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = connect(fd, (const struct sockaddr *)&d->hop.addr, d->hop.addrlen);
    c->state = DC_CONNECTING;
    c->next_in_dest = d->conns;
    d->conns = c;
    c->next_all = all_conns;
    all_conns = c;
    d->nconns++;
    if (ev_add(&c->w, fd, EPOLLIN | EPOLLOUT, conn_on_event, c) < 0) {
        close(fd);
        c->w.fd = -1;
        conn_fail(c, strerror(errno));
        return NULL;
    }
    set_deadline(c, cfg->client_connect_timeout);
    if (rc < 0 && errno != EINPROGRESS) {
        conn_fail(c, strerror(errno));
        return NULL;
    }
    return c;
}

/* Give waiting jobs to idle connections, open new ones up to the limit. */
static void dest_kick(struct dest *d)
{
    for (struct dconn *c = d->conns; c && d->head; c = c->next_in_dest)
        if (c->state == DC_IDLE)
            conn_start_job(c);
    int opening = 0;
    for (struct dconn *c = d->conns; c; c = c->next_in_dest)
        opening += c->state <= DC_TLS;
    while (d->head && (size_t)opening < d->waiting && d->nconns < cfg->dest_concurrency) {
        if (!conn_open(d))
            break;
        opening++;
    }
}

/* Queue the job on the destination for hop. */
static void enqueue(struct djob *job, const struct nexthop *hop)
{
    struct dest *d = dest_for(hop, job->tls, job->cands ? job->cands[job->cur].host : "");
    if (!d) {
        queue_job_done(job);
        return;
    }
    job->next = NULL;
    if (d->tail)
        d->tail->next = job;
    else
        d->head = job;
    d->tail = job;
    d->waiting++;
    dest_kick(d);
}

static bool job_has_pending(const struct djob *j)
{
    for (size_t k = 0; k < j->n; k++)
        if (j->msg->rcpts[j->idx[k]].st.status == RCPT_PENDING)
            return true;
    return false;
}

/* An attempt on one server is over. Recipients still pending after a
 * connection failure or a 4xx go to the next MX candidate, if any. */
static void job_attempt_done(struct djob *j)
{
    if (j->cands && j->cur + 1 < j->ncand && job_has_pending(j)) {
        size_t n = 0;
        for (size_t k = 0; k < j->n; k++)
            if (j->msg->rcpts[j->idx[k]].st.status == RCPT_PENDING)
                j->idx[n++] = j->idx[k];
        j->n = n;
        j->cur++;
        log_info("%s: trying the next mail server for %s: %s (%s, preference %d)", j->msg->id, j->domain,
                 j->cands[j->cur].hop.text, j->cands[j->cur].host, j->cands[j->cur].pref);
        enqueue(j, &j->cands[j->cur].hop);
        return;
    }
    free(j->cands);
    j->cands = NULL;
    queue_job_done(j);
}

/* MTA-STS "enforce": verified TLS to an MX host the policy names. */
static const struct tls_policy sts_verify = {NULL, TLS_VERIFY, NULL};

/* Defer every recipient of the job with reason (before any connection). */
static void defer_job(struct djob *j, const char *reason)
{
    for (size_t k = 0; k < j->n; k++) {
        struct qrcpt *r = &j->msg->rcpts[j->idx[k]];
        log_info("%s: to=<%s>, status=deferred (%s)", j->msg->id, r->addr, reason);
        queue_rcpt_result(j, k, 4, reason, false);
    }
    free(j->cands);
    j->cands = NULL;
    queue_job_done(j);
}

static void on_sts(void *arg, const struct sts_policy *p)
{
    struct djob *j = arg;
    if (p && p->mode != STS_NONE) {
        size_t keep = 0;
        for (size_t i = 0; i < j->ncand; i++) {
            bool ok = sts_mx_matches(p, j->cands[i].host);
            if (!ok)
                log_info("%s: MTA-STS%s: %s is not an MX host the policy of %s names", j->msg->id,
                         p->mode == STS_TESTING ? " (testing)" : "", j->cands[i].host, j->domain);
            if (ok || p->mode == STS_TESTING)
                j->cands[keep++] = j->cands[i];
        }
        j->ncand = keep;
        if (keep == 0) {
            defer_job(j, "451 4.7.5 MTA-STS: no MX host matches the domain's policy");
            return;
        }
        if (p->mode == STS_ENFORCE && j->tls->level < TLS_VERIFY)
            j->tls = &sts_verify;
    }
    enqueue(j, &j->cands[0].hop);
}

static void on_routed(void *arg, struct route_result *res)
{
    struct djob *j = arg;
    if (res->status != ROUTE_OK) {
        int code = res->status == ROUTE_PERMFAIL ? 5 : 4;
        for (size_t k = 0; k < j->n; k++) {
            struct qrcpt *r = &j->msg->rcpts[j->idx[k]];
            log_info("%s: to=<%s>, status=%s (%s)", j->msg->id, r->addr, code == 5 ? "bounced" : "deferred",
                     res->reason);
            queue_rcpt_result(j, k, code, res->reason, false);
        }
        queue_job_done(j);
        return;
    }
    j->cands = res->targets;
    j->ncand = res->ntargets;
    j->cur = 0;
    mta_sts_lookup(j->domain, on_sts, j);
}

void delivery_submit(struct djob *job)
{
    if (job->hop->mx)
        mx_route(job->domain, on_routed, job);
    else
        enqueue(job, job->hop);
}

/* ---- transaction -------------------------------------------------- */

/* MAIL FROM with the parameters the next hop understands. */
static void send_mail_from(struct dconn *c, const struct qmsg *m)
{
    buf_printf(&c->out, "MAIL FROM:<%s>", m->sender);
    if (c->size_ext)
        buf_printf(&c->out, " SIZE=%llu", (unsigned long long)m->size);
    if (c->eightbit && m->body == BODY_8BITMIME)
        buf_puts(&c->out, " BODY=8BITMIME");
    if (m->body == BODY_BINARYMIME)     /* only sent where BINARYMIME and CHUNKING are offered */
        buf_puts(&c->out, " BODY=BINARYMIME");
    if (m->smtputf8)
        buf_puts(&c->out, " SMTPUTF8");
    if (c->dsn && m->ret)
        buf_puts(&c->out, m->ret == DSN_RET_FULL ? " RET=FULL" : " RET=HDRS");
    if (c->dsn && m->envid[0])
        buf_printf(&c->out, " ENVID=%s", m->envid);
    buf_puts(&c->out, "\r\n");
}

/* RCPT TO, passing the sender's DSN request on to a next hop with DSN. */
static void send_rcpt_to(struct dconn *c, const struct qrcpt *r)
{
    buf_printf(&c->out, "RCPT TO:<%s>", r->addr);
    if (c->dsn && r->dsn.notify) {
        char notify[64];
        dsn_notify_text(r->dsn.notify, notify, sizeof notify);
        buf_printf(&c->out, " NOTIFY=%s", notify);
    }
    if (c->dsn && r->dsn.orcpt)
        buf_printf(&c->out, " ORCPT=%s", r->dsn.orcpt);
    buf_puts(&c->out, "\r\n");
}

static void send_next_commands(struct dconn *c)
{
    struct djob *j = c->job;
    while (c->sent < c->ncmds && (c->pipelining || c->sent == c->answered)) {
        size_t i = c->sent++;
        if (i == 0) {
            send_mail_from(c, j->msg);
        } else if (i <= j->n) {
            send_rcpt_to(c, &j->msg->rcpts[j->idx[i - 1]]);
        } else {
            buf_puts(&c->out, "DATA\r\n");
        }
    }
    set_deadline(c, cfg->client_timeout);
}

static void conn_start_job(struct dconn *c)
{
    struct dest *d = c->dest;
    struct djob *j = d->head;
    if (!j)
        return;
    d->head = j->next;
    if (!d->head)
        d->tail = NULL;
    d->waiting--;
    c->job = j;
    busy_conns++;
    const char *unsupported = j->msg->smtputf8 && !c->smtputf8 ? "553 5.6.7 next hop does not support SMTPUTF8"
        : j->msg->body == BODY_BINARYMIME && !(c->chunking && c->binarymime)
            ? "554 5.6.3 next hop does not support BINARYMIME and CHUNKING" : NULL;
    if (unsupported) {
        result_rest(c, atoi(unsupported), unsupported);
        conn_finish_job(c);
        c->state = DC_IDLE;
        set_deadline(c, cfg->connection_cache_time);
        return;
    }
    c->bdat = c->chunking && (cfg->client_bdat || j->msg->body == BODY_BINARYMIME);
    c->bdat_outstanding = 0;
    c->bdat_failed = false;
    c->accepted = calloc(j->n, sizeof *c->accepted);
    c->ncmds = j->n + (c->bdat ? 1 : 2);      /* MAIL, RCPT..., and DATA unless BDAT */
    c->sent = c->answered = c->naccepted = 0;
    c->mail_failed = c->data_ignored = false;
    c->state = DC_TXN;
    send_next_commands(c);
    conn_want(c);
}

/* After a job: take the next one, or idle for connection_cache_time. */
static void conn_next_job(struct dconn *c)
{
    if (c->dest->head) {
        conn_start_job(c);
        return;
    }
    c->state = DC_IDLE;
    set_deadline(c, cfg->connection_cache_time);
    conn_want(c);
}

static void start_rset(struct dconn *c)
{
    c->state = DC_RSET;
    conn_send(c, "RSET", NULL);
}

static void start_body(struct dconn *c)
{
    c->body_fd = spool_open_message(c->job->msg->id);
    if (c->body_fd < 0 || lseek(c->body_fd, (off_t)c->job->msg->body_off, SEEK_SET) < 0) {
        /* the message vanished (deleted by admin?): abort the transaction */
        conn_fail(c, "cannot open spooled message");
        return;
    }
    struct stat st;
    c->body_left = fstat(c->body_fd, &st) == 0 && (uint64_t)st.st_size > c->job->msg->body_off
                       ? (uint64_t)st.st_size - c->job->msg->body_off : 0;
    c->state = DC_BODY;
    c->body_eof = false;
    c->at_bol = true;
    set_deadline(c, cfg->client_timeout);
}

static void on_txn_reply(struct dconn *c, int code, const char *text)
{
    size_t i = c->answered++;
    struct djob *j = c->job;
    if (i == 0) {
        if (reply_class(code) != 2) {
            c->mail_failed = true;
            result_rest(c, code, text);
        }
    } else if (i <= j->n) {
        if (!c->mail_failed) {
            if (reply_class(code) == 2) {
                c->accepted[i - 1] = true;
                c->naccepted++;
            } else {
                result_for(c, i - 1, code, text);
            }
        }
        if (c->bdat && c->answered == c->ncmds) {      /* every RCPT answered: the chunks follow */
            if (!c->mail_failed && c->naccepted) {
                start_body(c);
            } else {
                start_rset(c);
                conn_finish_job(c);
            }
            return;
        }
    } else {
        /* the DATA reply */
        if (code == 354 && c->naccepted) {
            start_body(c);
            return;
        }
        if (code == 354) {        /* nobody accepted: send an empty message and ignore it */
            c->data_ignored = true;
            c->state = DC_DOT;
            conn_send(c, ".", NULL);
            return;
        }
        if (!c->mail_failed)
            result_rest(c, code, text);
        start_rset(c);
        conn_finish_job(c);
        return;
    }
    /* without PIPELINING, stop early when the transaction cannot succeed */
    if (!c->pipelining && (c->mail_failed || (i == j->n && c->naccepted == 0))) {
        if (!c->mail_failed)
            result_rest(c, code, text);
        start_rset(c);
        conn_finish_job(c);
        return;
    }
    send_next_commands(c);
}

static void on_dot_reply(struct dconn *c, int code, const char *text)
{
    if (!c->data_ignored)
        for (size_t k = 0; k < c->job->n; k++)
            if (c->accepted[k])
                result_for(c, k, code, text);
    result_rest(c, 451, "451 4.3.0 no recipient accepted");
    conn_finish_job(c);
    conn_next_job(c);
}

/* The reply to one BDAT chunk. The first refusal stops the chunks; once all
 * sent chunks are answered it (or the LAST chunk's reply) decides. */
static void on_chunk_reply(struct dconn *c, int code, const char *text)
{
    c->bdat_outstanding--;
    if (reply_class(code) != 2 && !c->bdat_failed) {
        c->bdat_failed = true;
        c->bdat_fail_code = code;
        snprintf(c->bdat_fail, sizeof c->bdat_fail, "%s", text);
    }
    if (c->bdat_outstanding > 0 || (c->state == DC_BODY && !c->bdat_failed))
        return;
    if (c->bdat_failed) {
        code = c->bdat_fail_code;
        text = c->bdat_fail;
    }
    if (c->state == DC_DOT) {     /* LAST was sent: this is the end of the message */
        on_dot_reply(c, code, text);
        return;
    }
    for (size_t k = 0; k < c->job->n; k++)    /* refused before LAST: the transaction failed */
        if (c->accepted[k])
            result_for(c, k, code, text);
    start_rset(c);
    conn_finish_job(c);
}

static void tls_begin(struct dconn *c);

static void on_ehlo_reply(struct dconn *c, int code)
{
    if (code / 100 == 2) {
        struct dest *d = c->dest;
        enum tls_level level = d->tls->level;
        if (!c->ssl && level >= TLS_MAY && c->starttls && !(level == TLS_MAY && d->tls_broken)) {
            c->state = DC_STARTTLS;
            conn_send(c, "STARTTLS", NULL);
            return;
        }
        if (!c->ssl && level >= TLS_ENCRYPT) {
            char why[160];
            snprintf(why, sizeof why, "TLS is required (%s) but the server does not offer STARTTLS",
                     tls_level_name(level));
            conn_fail(c, why);
            return;
        }
        conn_next_job(c);
        return;
    }
    if (c->state == DC_EHLO && code / 100 == 5) {
        c->state = DC_HELO;
        conn_send(c, "HELO", cfg->hostname);
        return;
    }
    char why[MAX_REPLY_TEXT + 20];
    snprintf(why, sizeof why, "greeting refused: %s", c->reply);
    conn_fail(c, why);
}

/* Note ESMTP keywords from EHLO reply lines. */
static void note_extension(struct dconn *c, const char *kw, size_t len)
{
    if (len >= 10 && !strncasecmp(kw, "PIPELINING", 10))
        c->pipelining = true;
    else if (len >= 4 && !strncasecmp(kw, "SIZE", 4))
        c->size_ext = true;
    else if (len >= 8 && !strncasecmp(kw, "8BITMIME", 8))
        c->eightbit = true;
    else if (len >= 8 && !strncasecmp(kw, "SMTPUTF8", 8))
        c->smtputf8 = true;
    else if (len >= 8 && !strncasecmp(kw, "STARTTLS", 8))
        c->starttls = true;
    else if (len >= 3 && !strncasecmp(kw, "DSN", 3) && (len == 3 || kw[3] == ' '))
        c->dsn = true;
    else if (len >= 8 && !strncasecmp(kw, "CHUNKING", 8))
        c->chunking = true;
    else if (len >= 10 && !strncasecmp(kw, "BINARYMIME", 10))
        c->binarymime = true;
}

static void on_reply(struct dconn *c, int code)
{
    const char *text = c->reply;
    switch (c->state) {
    case DC_BANNER:
        if (code / 100 != 2) {
            char why[MAX_REPLY_TEXT + 20];
            snprintf(why, sizeof why, "banner: %s", text);
            conn_fail(c, why);
            return;
        }
        c->state = DC_EHLO;
        conn_send(c, "EHLO", cfg->hostname);
        break;
    case DC_EHLO:
    case DC_HELO:
        on_ehlo_reply(c, code);
        break;
    case DC_STARTTLS:
        if (code == 220) {
            tls_begin(c);
        } else if (c->dest->tls->level >= TLS_ENCRYPT) {
            char why[MAX_REPLY_TEXT + 40];
            snprintf(why, sizeof why, "TLS is required but STARTTLS was refused: %.300s", text);
            conn_fail(c, why);
        } else {
            conn_next_job(c);    /* opportunistic: go on in plain text */
        }
        break;
    case DC_TXN:
        on_txn_reply(c, code, text);
        break;
    case DC_BODY:
        if (!c->bdat) {
            conn_fail(c, text);   /* a reply in the middle of DATA */
            return;
        }
        on_chunk_reply(c, code, text);
        break;
    case DC_DOT:
        if (c->bdat)
            on_chunk_reply(c, code, text);
        else
            on_dot_reply(c, code, text);
        break;
    case DC_RSET:
        if (code / 100 != 2) {
            conn_fail(c, "RSET refused");
            return;
        }
        conn_next_job(c);
        break;
    case DC_QUIT:
        conn_close(c);
        return;
    default: {
        /* unsolicited reply (e.g. 421 while idle) */
        conn_fail(c, text);
        return;
    }
    }
}

/* The client side of the handshake, non-blocking. */
static void tls_step(struct dconn *c)
{
    int r = SSL_connect(c->ssl);
    if (r == 1) {
        char desc[160];
        tls_describe(c->ssl, desc, sizeof desc);
        bool verified = SSL_get_verify_result(c->ssl) == X509_V_OK;
        log_info("TLS to %s%s%s: %s, certificate %s", c->peer, c->dest->name[0] ? " " : "", c->dest->name, desc,
                 verified ? "verified" : "not verified");
        /* RFC 3207: say EHLO again, extensions may differ under TLS */
        c->pipelining = c->size_ext = c->eightbit = c->smtputf8 = c->starttls = c->dsn = false;
        c->chunking = c->binarymime = false;
        c->state = DC_EHLO;
        conn_send(c, "EHLO", cfg->hostname);
        conn_want(c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        c->tls_want = e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT;
        ev_mod(&c->w, c->tls_want);
        return;
    }
    char why[300], ssl_err[200];
    long vr = SSL_get_verify_result(c->ssl);
    tls_last_error(ssl_err, sizeof ssl_err);
    if (vr != X509_V_OK)
        snprintf(why, sizeof why, "TLS certificate verification failed: %s", X509_verify_cert_error_string(vr));
    else
        snprintf(why, sizeof why, "TLS handshake failed: %s", ssl_err);
    if (c->dest->tls->level == TLS_MAY)
        c->dest->tls_broken = true;   /* opportunistic: the next attempt goes in plain text */
    conn_fail(c, why);
}

/* Names the certificate must carry for "verify": match= or the MX host. */
static int set_verify_names(struct dconn *c)
{
    const struct dest *d = c->dest;
    char names[512];
    snprintf(names, sizeof names, "%s", d->tls->match ? d->tls->match : d->name);
    if (!names[0])
        return -1;
    SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    int n = 0;
    char *save = NULL;
    for (char *name = strtok_r(names, ":", &save); name; name = strtok_r(NULL, ":", &save))
        n += SSL_add1_host(c->ssl, name) == 1;
    return n ? 0 : -1;
}

static void tls_begin(struct dconn *c)
{
    c->ssl = SSL_new(tls_client_ctx());
    if (!c->ssl || SSL_set_fd(c->ssl, c->w.fd) != 1) {
        conn_fail(c, "cannot start TLS");
        return;
    }
    SSL_set_connect_state(c->ssl);
    if (c->dest->name[0])
        SSL_set_tlsext_host_name(c->ssl, c->dest->name);
    if (c->dest->tls->level == TLS_VERIFY) {
        if (set_verify_names(c) < 0) {
            conn_fail(c, "TLS verify: no host name to check the certificate against (set match=)");
            return;
        }
        SSL_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
    }
    c->state = DC_TLS;
    tls_step(c);
}

/* Split input into reply lines; returns -1 if the connection was closed. */
static int process_input(struct dconn *c)
{
    while (c->w.fd >= 0 && c->in.len) {
        char *head = buf_head(&c->in);
        char *nl = memchr(head, '\n', c->in.len);
        if (!nl)
            break;
        size_t len = (size_t)(nl - head);
        size_t linelen = len + 1;
        if (len && head[len - 1] == '\r')
            len--;
        bool last;
        int code = smtp_reply_line(head, len, &last);
        if (code < 0) {
            conn_fail(c, "malformed reply from server");
            return -1;
        }
        if (c->state == DC_EHLO && len > 4)
            note_extension(c, head + 4, len - 4);
        /* keep the first line of the reply (it has the enhanced code) */
        if (c->reply_len == 0) {
            size_t n = len < MAX_REPLY_TEXT - 1 ? len : MAX_REPLY_TEXT - 1;
            memcpy(c->reply, head, n);
            c->reply[n] = '\0';
            c->reply_len = n ? n : 1;
        }
        buf_consume(&c->in, linelen);
        if (last) {
            c->reply_len = 0;
            on_reply(c, code);
            if (c->w.fd < 0)
                return -1;
        }
    }
    if (c->in.len > MAX_REPLY_BUF) {
        conn_fail(c, "reply line too long");
        return -1;
    }
    return 0;
}

/* Copy body bytes to out with dot-stuffing; our spool keeps CRLF lines. */
static void stuff_body(struct dconn *c, const char *p, size_t n)
{
    while (n) {
        if (c->at_bol && *p == '.')
            buf_append(&c->out, ".", 1);
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) + 1 : n;
        buf_append(&c->out, p, take);
        c->at_bol = nl != NULL;
        p += take;
        n -= take;
    }
}

/* BDAT: the spooled message as it is (no dot-stuffing), one chunk per read,
 * the last marked LAST. Without PIPELINING each chunk waits for its reply. */
static void fill_chunks(struct dconn *c)
{
    char chunk[BODY_CHUNK];
    while (c->state == DC_BODY && c->out.len < OUT_HIGH_WATER && !c->bdat_failed &&
           (c->pipelining || c->bdat_outstanding == 0)) {
        size_t want = c->body_left < BODY_CHUNK ? (size_t)c->body_left : BODY_CHUNK;
        ssize_t r = want ? read(c->body_fd, chunk, want) : 0;
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 || (r == 0 && want)) {
            conn_fail(c, "error reading spooled message");
            return;
        }
        c->body_left -= (uint64_t)r;
        bool last = c->body_left == 0;
        buf_printf(&c->out, "BDAT %zd%s\r\n", r, last ? " LAST" : "");
        buf_append(&c->out, chunk, (size_t)r);
        c->bdat_outstanding++;
        if (last) {
            close(c->body_fd);
            c->body_fd = -1;
            c->state = DC_DOT;
        }
    }
}

static void fill_body(struct dconn *c)
{
    if (c->bdat) {
        fill_chunks(c);
        return;
    }
    char chunk[BODY_CHUNK];
    while (c->state == DC_BODY && c->out.len < OUT_HIGH_WATER) {
        ssize_t r = read(c->body_fd, chunk, sizeof chunk);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            conn_fail(c, "error reading spooled message");
            return;
        }
        if (r == 0) {
            if (!c->at_bol)
                buf_puts(&c->out, "\r\n");
            buf_puts(&c->out, ".\r\n");
            close(c->body_fd);
            c->body_fd = -1;
            c->state = DC_DOT;
            return;
        }
        stuff_body(c, chunk, (size_t)r);
    }
}

static int flush_out(struct dconn *c)
{
    while (c->out.len) {
        ssize_t w = conn_write(c, buf_head(&c->out), c->out.len);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return 0;
            conn_fail(c, strerror(errno));
            return -1;
        }
        buf_consume(&c->out, (size_t)w);
        set_deadline(c, cfg->client_timeout);
    }
    return 0;
}

static void conn_on_event(void *ctx, uint32_t events)
{
    struct dconn *c = ctx;
    if (c->state == DC_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->w.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            conn_fail(c, strerror(err));
            return;
        }
        c->state = DC_BANNER;
        set_deadline(c, cfg->client_timeout);
    }
    if (c->state == DC_TLS) {
        set_deadline(c, cfg->client_timeout);
        tls_step(c);
        return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        for (;;) {
            if (buf_reserve(&c->in, 4096) < 0) {
                conn_fail(c, "out of memory");
                return;
            }
            size_t room;
            char *t = buf_tail(&c->in, &room);
            ssize_t r = conn_recv(c, t, room);
            if (r > 0) {
                buf_commit(&c->in, (size_t)r);
                if ((size_t)r < room && !(c->ssl && SSL_pending(c->ssl)))
                    break;
                continue;
            }
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                break;
            if (c->state == DC_QUIT || (c->state == DC_IDLE && !c->in.len)) {
                conn_close(c);
                return;
            }
            conn_fail(c, r == 0 ? "connection closed by server" : strerror(errno));
            return;
        }
        if (process_input(c) < 0)
            return;
    }
    if (c->state == DC_BODY)
        fill_body(c);
    if (c->w.fd < 0 || flush_out(c) < 0)
        return;
    if (c->state == DC_BODY)
        fill_body(c);   /* refill after a drain so large bodies keep flowing */
    if (c->w.fd >= 0 && flush_out(c) == 0 && c->w.fd >= 0)
        conn_want(c);
}

void delivery_tick(void)
{
    uint64_t now = ev_now_ms();
    for (struct dconn *c = all_conns, *next; c; c = next) {
        next = c->next_all;
        if (now < c->deadline_ms)
            continue;
        if (c->state == DC_IDLE) {
            c->state = DC_QUIT;
            conn_send(c, "QUIT", NULL);
            set_deadline(c, 5);
            flush_out(c);
            if (c->w.fd >= 0)
                conn_want(c);
        } else if (c->state == DC_QUIT) {
            conn_close(c);
        } else {
            conn_fail(c, c->state == DC_CONNECTING ? "connect timeout" : "timeout waiting for the server");
        }
    }
}

void delivery_close_idle(void)
{
    for (struct dconn *c = all_conns, *next; c; c = next) {
        next = c->next_all;
        if (c->state == DC_IDLE)
            c->deadline_ms = 0;
    }
    delivery_tick();
}
