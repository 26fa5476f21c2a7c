/* smtp_client.c - one outbound SMTP connection, non-blocking, driven by the
 * server's replies: connect (from smtp_bind_address), then setup
 * (smtp_client_setup.c: greeting, EHLO, STARTTLS, AUTH), then
 * transactions: MAIL, RCPT..., DATA (all at once with PIPELINING, else one
 * per reply) or BDAT chunks (the bytes: smtp_client_body.c). Each reply is
 * matched to the command at position `answered`; timeouts and QUIT live here.
 *
 * Settling (RFC 5321 3.3, RFC 2920 3.1): a recipient's outcome is the reply
 * to its own RCPT, unless the server accepted it; then it is the reply to
 * the end of data (or to a refused DATA/BDAT). A reply to DATA when nobody
 * was accepted changes nothing. A failure of the connection settles only
 * what is still open, with a 4xx. */
#include "smtp_client_int.h"
#include "buf.h"
#include "event.h"
#include "log.h"
#include "spool.h"
#include "tls.h"
#include "conn_io.h"
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

const struct config *client_cfg;
static struct smtp_client *all_clients;

static void on_event(void *ctx, uint32_t events);

/* what a command in flight is called in texts ("while sending ...") */
static const char *const state_doing[] = {
    [CL_CONNECTING] = "connecting", [CL_BANNER] = "receiving the initial server greeting",
    [CL_EHLO] = "sending EHLO", [CL_HELO] = "sending HELO", [CL_STARTTLS] = "sending STARTTLS",
    [CL_TLS] = "performing the TLS handshake", [CL_AUTH] = "authenticating", [CL_READY] = "idle",
    [CL_TXN] = "sending the envelope", [CL_BODY] = "sending message content", [CL_DOT] = "sending end of data",
    [CL_RSET] = "sending RSET", [CL_QUIT] = "sending QUIT",
};

void smtp_client_init(const struct config *c) { client_cfg = c; }

void cl_set_deadline(struct smtp_client *c, int seconds)
{
    c->deadline_ms = ev_now_ms() + (uint64_t)seconds * 1000;
}

/* Send what is queued now, if the socket takes it: most commands then
 * need no EPOLLOUT round (an epoll_ctl each way). A failure is left for
 * flush_out, at the event that reports it, where the client may close. */
static void write_now(struct smtp_client *c)
{
    ssize_t w = tls_write(c->ssl, c->w.fd, buf_head(&c->out), c->out.len);
    if (w <= 0)
        return;
    buf_consume(&c->out, (size_t)w);
    if (c->state != CL_QUIT && c->state != CL_READY)
        cl_set_deadline(c, client_cfg->client_timeout);
}

void cl_want_events(struct smtp_client *c)
{
    if (c->state == CL_TLS) {       /* the handshake says which way it waits */
        ev_mod(&c->w, c->tls_want);
        return;
    }
    if (c->out.len && c->state != CL_CONNECTING && c->state != CL_BODY)
        write_now(c);
    bool out = c->out.len || c->state == CL_CONNECTING || c->state == CL_BODY;
    conn_arm(&c->w, c->ssl, EPOLLIN | (out ? EPOLLOUT : 0));
}

/* Queue one command line (CRLF added) and restart the reply timer. */
void cl_send_cmd(struct smtp_client *c, const char *verb, const char *arg)
{
    buf_printf(&c->out, "%s%s%s\r\n", verb, arg ? " " : "", arg ? arg : "");
    cl_set_deadline(c, client_cfg->client_timeout);
}

/* ---- settling recipients ------------------------------------------ */

static const char *reply_stage(const struct smtp_client *c, size_t cmd)
{
    if (c->state == CL_BODY || c->state == CL_DOT)
        return c->bdat ? "BDAT" : "end of DATA";
    return cmd == 0 ? "MAIL FROM" : cmd <= c->job->n ? "RCPT TO" : "DATA";
}

/* Every recipient still open gets (code, text). */
static void settle_open(struct smtp_client *c, int code, const char *text, const char *stage)
{
    rcpt_settle_open(&c->settle, code, text, stage);
}

/* The accepted recipients get the reply to the end of data. */
static void settle_accepted(struct smtp_client *c, int code, const char *text)
{
    rcpt_settle_data_end(&c->settle, code, text, reply_stage(c, 0));
}

static void finish_job(struct smtp_client *c)
{
    struct delivery_job *j = c->job;
    c->job = NULL;
    rcpt_settle_end(&c->settle);
    if (c->body_fd >= 0)
        close(c->body_fd);
    c->body_fd = -1;
    if (c->owner)
        c->ops->job_done(c->owner, c, j);
}

/* ---- lifecycle ---------------------------------------------------- */

static void client_free(void *p)
{
    struct smtp_client *c = p;
    if (c->ssl)
        SSL_free(c->ssl);
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
}

static void client_close(struct smtp_client *c)
{
    if (c->w.fd >= 0) {
        int fd = c->w.fd;
        ev_del(&c->w);
        close(fd);
        c->w.fd = -1;
    }
    for (struct smtp_client **pp = &all_clients; *pp; pp = &(*pp)->next_all)
        if (*pp == c) {
            *pp = c->next_all;
            break;
        }
    ev_defer_free(c, client_free);
}

/* Tell the owner we are gone (once). */
static void detach(struct smtp_client *c, bool never_ready, const char *why)
{
    void *owner = c->owner;
    c->owner = NULL;
    if (owner)
        c->ops->closed(owner, c, never_ready, why);
}

static int flush_out(struct smtp_client *c);

/* Give up on the connection: the job's open recipients are deferred with
 * why (our text, a 4.x.x status first), the owner is told. With say_quit
 * the session is still in step, so it ends politely with QUIT. */
void cl_fail(struct smtp_client *c, const char *why, bool say_quit)
{
    bool never_ready = c->state < CL_READY;
    if (c->job) {
        settle_open(c, 451, why, NULL);
        finish_job(c);
    }
    detach(c, never_ready, why);
    if (say_quit && c->w.fd >= 0 && c->state != CL_QUIT) {
        c->state = CL_QUIT;
        cl_send_cmd(c, "QUIT", NULL);
        cl_set_deadline(c, QUIT_WAIT);
        if (flush_out(c) == 0 && c->w.fd >= 0)
            cl_want_events(c);
        return;
    }
    client_close(c);
}

/* Our own texts: "4.4.1 connect to host[ip]:port: Connection refused". */
void cl_fail_io(struct smtp_client *c, const char *what)
{
    char why[WHY_MAX];
    if (c->state == CL_CONNECTING)
        snprintf(why, sizeof why, "4.4.1 connect to %s: %s", c->where, what);
    else
        snprintf(why, sizeof why, "4.4.2 %s with %s while %s", what, c->where, state_doing[c->state]);
    cl_fail(c, why, false);
}

int cl_peer_port(const struct smtp_client *c)
{
    const struct sockaddr_storage *ss = &c->peer.addr;
    if (ss->ss_family == AF_UNIX)
        return 0;
    return ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
                                          : ((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* The source address: the egress source's for this family, else
 * smtp_bind_address / smtp_bind_address6. */
static int bind_source(int fd, int family, const struct egress_source *egress)
{
    const struct sockaddr_storage *src = family == AF_INET ? &client_cfg->smtp_bind_address : &client_cfg->smtp_bind_address6;
    if (egress && (family == AF_INET ? egress->addr4.ss_family : egress->addr6.ss_family))
        src = family == AF_INET ? &egress->addr4 : &egress->addr6;
    if (src->ss_family != family)
        return 0;
    socklen_t len = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    return bind(fd, (const struct sockaddr *)src, len);
}

struct smtp_client *smtp_client_open(const struct client_peer *peer, const struct client_ops *ops, void *owner)
{
    struct smtp_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->peer = *peer;
    c->ops = ops;
    c->owner = owner;
    c->body_fd = -1;
    c->w.fd = -1;
    if (peer->addr.ss_family == AF_UNIX) {      /* an LMTP socket: its path names it */
        snprintf(c->remote, sizeof c->remote, "%.150s", ((const struct sockaddr_un *)&peer->addr)->sun_path);
        snprintf(c->where, sizeof c->where, "%s", c->remote);
    } else {
        char ip[64];
        sockaddr_ip_text((const struct sockaddr *)&peer->addr, ip, sizeof ip);
        snprintf(c->remote, sizeof c->remote, "%.90s[%.60s]", peer->name[0] ? peer->name : ip, ip);
        snprintf(c->where, sizeof c->where, "%s:%d", c->remote, cl_peer_port(c));
    }
    c->state = CL_CONNECTING;
    c->next_all = all_clients;
    all_clients = c;
    int fd = socket(peer->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        cl_fail_io(c, strerror(errno));
        return NULL;
    }
    int one = 1;
    if (peer->addr.ss_family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (peer->addr.ss_family != AF_UNIX && bind_source(fd, peer->addr.ss_family, peer->source) < 0) {
        char why[WHY_MAX];
        snprintf(why, sizeof why, "cannot bind the source address (%s): %s",
                 peer->source ? peer->source->name : "smtp_bind_address", strerror(errno));
        close(fd);
        cl_fail_io(c, why);
        return NULL;
    }
    int rc = connect(fd, (const struct sockaddr *)&peer->addr, peer->addrlen);
    if (ev_add(&c->w, fd, EPOLLIN | EPOLLOUT, on_event, c) < 0) {
        close(fd);
        c->w.fd = -1;
        cl_fail_io(c, strerror(errno));
        return NULL;
    }
    cl_set_deadline(c, client_cfg->client_connect_timeout);
    if (rc < 0 && errno != EINPROGRESS) {
        cl_fail_io(c, strerror(errno));
        return NULL;
    }
    return c;
}

void cl_ready(struct smtp_client *c)
{
    c->state = CL_READY;
    cl_set_deadline(c, client_cfg->client_timeout);
    if (c->owner)
        c->ops->ready(c->owner, c);
    else
        cl_fail(c, "no owner", true);
}

void smtp_client_idle(struct smtp_client *c, bool now)
{
    if (now) {
        c->deadline_ms = 0;      /* the next smtp_client_tick() says QUIT */
        return;
    }
    cl_set_deadline(c, client_cfg->connection_cache_time);
    cl_want_events(c);
}

/* ---- the transaction ---------------------------------------------- */

static void send_mail_from(struct smtp_client *c, const struct delivery_job *j)
{
    buf_printf(&c->out, "MAIL FROM:<%s>", j->sender);
    if (c->size_ext)
        buf_printf(&c->out, " SIZE=%llu", (unsigned long long)j->size);
    if (c->eightbit && j->body == BODY_8BITMIME)
        buf_puts(&c->out, " BODY=8BITMIME");
    if (j->body == BODY_BINARYMIME)     /* only sent where BINARYMIME and CHUNKING are offered */
        buf_puts(&c->out, " BODY=BINARYMIME");
    if (j->smtputf8)
        buf_puts(&c->out, " SMTPUTF8");
    if (c->dsn && j->ret)
        buf_puts(&c->out, j->ret == DSN_RET_FULL ? " RET=FULL" : " RET=HDRS");
    if (c->dsn && j->envid && j->envid[0])
        buf_printf(&c->out, " ENVID=%s", j->envid);
    if (j->requiretls)
        buf_puts(&c->out, " REQUIRETLS");
    buf_puts(&c->out, "\r\n");
}

/* RCPT TO, passing the sender's DSN request on to a next hop with DSN. */
static void send_rcpt_to(struct smtp_client *c, const struct delivery_rcpt *r)
{
    buf_printf(&c->out, "RCPT TO:<%s>", r->addr);
    if (c->dsn && r->notify) {
        char notify[64];
        dsn_notify_text(r->notify, notify, sizeof notify);
        buf_printf(&c->out, " NOTIFY=%s", notify);
    }
    if (c->dsn && r->orcpt)
        buf_printf(&c->out, " ORCPT=%s", r->orcpt);
    buf_puts(&c->out, "\r\n");
}

static void send_next_commands(struct smtp_client *c)
{
    struct delivery_job *j = c->job;
    while (c->sent < c->ncmds && (c->pipelining || c->sent == c->answered)) {
        size_t i = c->sent++;
        if (i == 0)
            send_mail_from(c, j);
        else if (i <= j->n)
            send_rcpt_to(c, &j->rcpts[i - 1]);
        else
            buf_puts(&c->out, "DATA\r\n");
    }
    cl_set_deadline(c, client_cfg->client_timeout);
}

/* RFC 8689 4.2: a REQUIRETLS message never goes to a server without it
 * (an LMTP socket on this machine is no hop over a network). */
static bool requiretls_missing(const struct smtp_client *c, const struct delivery_job *j)
{
    return j->requiretls && !(c->ssl && c->requiretls) && c->peer.addr.ss_family != AF_UNIX;
}

/* What this next hop cannot take, as a reply; NULL if it can. */
static const char *unsupported(const struct smtp_client *c, const struct delivery_job *j)
{
    if (j->smtputf8 && !c->smtputf8)
        return "553 5.6.7 next hop does not support SMTPUTF8";
    if (j->body == BODY_BINARYMIME && !(c->chunking && c->binarymime))
        return "554 5.6.3 next hop does not support BINARYMIME and CHUNKING";
    if (j->body == BODY_BINARYMIME && c->peer.lmtp)
        return "554 5.6.3 BINARYMIME is not sent over LMTP (no BDAT there)";
    if (requiretls_missing(c, j))
        return "450 4.7.30 REQUIRETLS support required: the next hop does not offer REQUIRETLS";
    return NULL;
}

void smtp_client_start(struct smtp_client *c, struct delivery_job *j)
{
    c->job = j;
    if (rcpt_settle_begin(&c->settle, j->rcpts, j->n, c->dsn, c->remote, c->where) < 0) {
        cl_fail(c, "4.3.0 out of memory", true);
        return;
    }
    c->settle.tls = c->ssl ? SSL_get_version(c->ssl) : NULL;
    const char *refused = unsupported(c, j);
    if (refused) {
        settle_open(c, atoi(refused), refused, NULL);
        for (size_t k = 0; k < j->n && requiretls_missing(c, j); k++)
            j->rcpts[k].requiretls_unmet = true;     /* another server may offer it; if none does, 5.7.30 */
        finish_job(c);
        if (c->w.fd >= 0 && c->state == CL_READY)
            cl_ready(c);
        return;
    }
    c->bdat = c->chunking && !c->peer.lmtp && (client_cfg->client_bdat || j->body == BODY_BINARYMIME);
    c->bdat_outstanding = 0;
    c->bdat_failed = false;
    c->ncmds = j->n + (c->bdat ? 1 : 2);
    c->sent = c->answered = 0;
    c->state = CL_TXN;
    send_next_commands(c);
    cl_want_events(c);
}

/* After a transaction: settled, and ready for the next (RSET first when
 * the server may still hold some of it). */
static void end_txn(struct smtp_client *c, bool rset)
{
    finish_job(c);
    if (c->w.fd < 0 || c->state == CL_QUIT)
        return;
    if (rset) {
        c->state = CL_RSET;
        cl_send_cmd(c, "RSET", NULL);
        return;
    }
    cl_ready(c);
}

static void start_body(struct smtp_client *c)
{
    const struct delivery_job *j = c->job;
    struct stat st;
    c->body_fd = spool_open_message_stat(j->id, &st);
    if (c->body_fd < 0) {
        /* the message vanished (deleted by admin?): abort the transaction */
        cl_fail(c, "4.3.0 cannot open the spooled message", false);
        return;
    }
    c->body_left = (uint64_t)st.st_size > j->body_off ? (uint64_t)st.st_size - j->body_off : 0;
    c->body_at = j->body_off;
    c->state = CL_BODY;
    c->at_bol = true;
    c->body_cr = false;
    c->body_pos = 0;
    cl_set_deadline(c, client_cfg->client_timeout);
}

/* Every RCPT answered before BDAT: chunks follow if anyone was accepted. */
static void rcpts_answered_for_bdat(struct smtp_client *c)
{
    if (!c->settle.mail_failed && c->settle.naccepted)
        start_body(c);
    else
        end_txn(c, true);
}

static void on_data_reply(struct smtp_client *c, int code, const char *text)
{
    switch (rcpt_settle_data(&c->settle, code, text)) {
    case SETTLE_SEND_BODY:
        start_body(c);
        return;
    case SETTLE_SEND_EMPTY:       /* nobody accepted: end the data at once */
        if (c->peer.lmtp) {       /* RFC 2033 4.2 makes that DATA fail: nothing would answer the dot */
            char why[WHY_MAX];
            snprintf(why, sizeof why, "4.5.0 LMTP server %s accepted DATA with no recipients", c->remote);
            cl_fail(c, why, false);
            return;
        }
        c->state = CL_DOT;
        cl_send_cmd(c, ".", NULL);
        return;
    case SETTLE_DATA_REFUSED:
        end_txn(c, true);
        return;
    }
}

static void on_txn_reply(struct smtp_client *c, int code, const char *text)
{
    size_t i = c->answered++;
    struct delivery_job *j = c->job;
    if (i == 0)
        rcpt_settle_mail(&c->settle, code, text);
    else if (i <= j->n)
        rcpt_settle_rcpt(&c->settle, i - 1, code, text);
    if (i > j->n) {
        on_data_reply(c, code, text);
        return;
    }
    if (c->bdat && c->answered == c->ncmds) {
        rcpts_answered_for_bdat(c);
        return;
    }
    /* without PIPELINING, stop early when the transaction cannot succeed */
    if (!c->pipelining && (c->settle.mail_failed || (i == j->n && c->settle.naccepted == 0))) {
        end_txn(c, true);
        return;
    }
    send_next_commands(c);
}

static void on_dot_reply(struct smtp_client *c, int code, const char *text)
{
    if (c->peer.lmtp) {           /* one reply per accepted recipient */
        if (rcpt_settle_lmtp_data_end(&c->settle, code, text))
            end_txn(c, false);
        else
            cl_set_deadline(c, client_cfg->client_timeout);
        return;
    }
    settle_accepted(c, code, text);
    end_txn(c, false);
}

/* The reply to one BDAT chunk. The first refusal stops the chunks; once all
 * sent chunks are answered it (or the LAST chunk's reply) decides. */
static void on_chunk_reply(struct smtp_client *c, int code, const char *text)
{
    c->bdat_outstanding--;
    if (reply_class(code) != 2 && !c->bdat_failed) {
        c->bdat_failed = true;
        c->bdat_fail_code = code;
        snprintf(c->bdat_fail, sizeof c->bdat_fail, "%s", text);
    }
    if (c->bdat_outstanding > 0 || (c->state == CL_BODY && !c->bdat_failed))
        return;
    if (c->bdat_failed) {
        code = c->bdat_fail_code;
        text = c->bdat_fail;
    }
    bool complete = c->state == CL_DOT;     /* LAST was sent */
    settle_accepted(c, code, text);
    end_txn(c, !complete);
}

/* Every complete reply lands here, by state. */
static void on_reply(struct smtp_client *c, int code)
{
    const char *text = c->reply;
    if (code == 421 && c->state != CL_QUIT) {     /* the server is closing: everything open waits */
        if (c->job)
            settle_open(c, code, text, c->state == CL_TXN ? reply_stage(c, c->answered) : reply_stage(c, 0));
        cl_fail(c, text, false);
        return;
    }
    switch (c->state) {
    case CL_TXN:
        on_txn_reply(c, code, text);
        return;
    case CL_BODY:
        if (!c->bdat) {
            char why[WHY_MAX];
            snprintf(why, sizeof why, "4.5.0 host %s replied in the middle of the data: %s", c->remote, text);
            cl_fail(c, why, false);
            return;
        }
        on_chunk_reply(c, code, text);
        return;
    case CL_DOT:
        if (c->bdat)
            on_chunk_reply(c, code, text);
        else
            on_dot_reply(c, code, text);
        return;
    case CL_RSET:
        if (reply_class(code) != 2) {
            cl_fail(c, "4.3.0 RSET refused", true);
            return;
        }
        cl_ready(c);
        return;
    case CL_QUIT:
        client_close(c);
        return;
    case CL_READY: {
        char why[WHY_MAX];
        snprintf(why, sizeof why, "4.3.0 unexpected reply from %s: %s", c->remote, text);
        cl_fail(c, why, false);
        return;
    }
    default:
        cl_on_setup_reply(c, code);
    }
}

/* ---- I/O ---------------------------------------------------------- */

/* Split input into reply lines; -1 once the client is gone. */
static int process_input(struct smtp_client *c)
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
            cl_fail_io(c, "malformed reply");
            return -1;
        }
        if (c->state == CL_EHLO && len > 4)
            cl_note_extension(c, head + 4, len - 4);
        if (c->reply_len == 0) {    /* keep the first line: it has the enhanced code */
            size_t n = len < MAX_REPLY_TEXT - 1 ? len : MAX_REPLY_TEXT - 1;
            /* a peer's text goes into logs, the queue and DSNs: printable ASCII only */
            for (size_t i = 0; i < n; i++)
                c->reply[i] = head[i] >= 0x20 && head[i] < 0x7f ? head[i] : '?';
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
    if (c->w.fd >= 0 && c->in.len > MAX_REPLY_BUF) {
        cl_fail_io(c, "reply line too long");
        return -1;
    }
    return c->w.fd >= 0 ? 0 : -1;
}

static int flush_out(struct smtp_client *c)
{
    while (c->out.len) {
        ssize_t w = tls_write(c->ssl, c->w.fd, buf_head(&c->out), c->out.len);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return 0;
            if (c->state == CL_QUIT) {
                client_close(c);
                return -1;
            }
            cl_fail_io(c, strerror(errno));
            return -1;
        }
        buf_consume(&c->out, (size_t)w);
        if (c->state != CL_QUIT && c->state != CL_READY)
            cl_set_deadline(c, client_cfg->client_timeout);
    }
    return 0;
}

/* Read what is there; -1 once the client is gone. */
static int read_input(struct smtp_client *c)
{
    enum conn_end end;
    conn_fill(&c->in, c->ssl, c->w.fd, 4096, MAX_REPLY_BUF + 4096, &end);
    if (end == CONN_OPEN)
        return 0;
    int err = errno;
    if (process_input(c) < 0)     /* the last replies before the close count */
        return -1;
    if (c->state == CL_QUIT || (c->state == CL_READY && !c->job)) {
        detach(c, false, "closed");
        client_close(c);
        return -1;
    }
    cl_fail_io(c, end == CONN_EOF ? "lost connection" : strerror(err));
    return -1;
}

static void on_event(void *ctx, uint32_t events)
{
    struct smtp_client *c = ctx;
    if (c->state == CL_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->w.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            cl_fail_io(c, strerror(err));
            return;
        }
        c->state = CL_BANNER;
        cl_set_deadline(c, client_cfg->client_timeout);
    }
    if (c->state == CL_TLS) {
        cl_set_deadline(c, client_cfg->client_timeout);
        cl_tls_step(c);
        return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        if (read_input(c) < 0 || process_input(c) < 0)
            return;
    if (c->state == CL_BODY)
        cl_fill_body(c);
    if (c->w.fd < 0 || flush_out(c) < 0)
        return;
    if (c->state == CL_BODY)
        cl_fill_body(c);   /* refill after a drain so large bodies keep flowing */
    if (c->w.fd >= 0 && flush_out(c) == 0 && c->w.fd >= 0)
        cl_want_events(c);
}

void smtp_client_tick(void)
{
    uint64_t now = ev_now_ms();
    for (struct smtp_client *c = all_clients, *next; c; c = next) {
        next = c->next_all;
        if (now < c->deadline_ms)
            continue;
        if (c->state == CL_READY) {       /* idle long enough: say goodbye */
            detach(c, false, "idle");
            c->state = CL_QUIT;
            cl_send_cmd(c, "QUIT", NULL);
            cl_set_deadline(c, QUIT_WAIT);
            if (flush_out(c) == 0 && c->w.fd >= 0)
                cl_want_events(c);
        } else if (c->state == CL_QUIT) {
            client_close(c);
        } else if (c->state == CL_CONNECTING) {
            cl_fail_io(c, "connection timed out");
        } else {
            char why[WHY_MAX];
            snprintf(why, sizeof why, "4.4.2 conversation with %s timed out while %s", c->where,
                     state_doing[c->state]);
            cl_fail(c, why, false);
        }
    }
}
