/* smtp_server.c - inbound SMTP. One struct session per connection, driven
 * by the event loop. Commands are dispatched through one table (verb, the
 * hook stage it will run, its precondition, its handler), so the path
 * stage -> check -> handler reads in one place. DATA bytes go through the
 * data_reader straight into the spool file; the fsync/rename commit runs on
 * a worker, and only its completion sends "250 ... queued as ID". */
#include "smtp_server.h"
#include "proxy_proto.h"
#include "buf.h"
#include "data_reader.h"
#include "hooks.h"
#include "txn.h"
#include "event.h"
#include "log.h"
#include "queue.h"
#include "smtp_parse.h"
#include "spool.h"
#include "tls.h"
#include <openssl/err.h>
#include "workers.h"
#include "netaddr.h"
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <strings.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_INPUT_BUFFER (64 * 1024)     /* pipelined commands or a DATA chunk */
#define MAX_OUTPUT_BACKLOG (64 * 1024)   /* stop reading while replies pile up */

/* PH_TLS: the 220 to STARTTLS is going out, then the handshake runs. */
/* PH_PROXY: a proxy_listen connection before its PROXY header is read. */
enum phase { PH_COMMAND, PH_DATA, PH_HOOK, PH_COMMIT, PH_CLOSING, PH_TLS, PH_PROXY };
enum msg_part { PART_HEADERS, PART_BODY };

#define MAX_HEADER_SECTION (1024 * 1024)

struct commit_job;
struct session;
typedef void (*stage_then)(struct session *s, postern_verdict v);

struct session {
    struct ev_watch w;
    unsigned long sid;
    struct sockaddr_storage peer;  /* the client: the connection's, or XCLIENT's ADDR */
    bool xclient_allowed;          /* the connection's address is in xclient_networks */
    char client_name[256];         /* XCLIENT NAME, for the Received header */
    struct buf in, out;
    enum phase phase, saved_phase;
    bool helo_done, esmtp, skip_line, dead, busy;
    bool in_stage_call;      /* inside run_stage: a synchronous finish must not recurse */
    bool implicit_tls;       /* smtps_listen: handshake first, then the greeting */
    bool greeted;
    bool session_discard, session_quarantine;   /* a CONNECT/HELO verdict for every message */
    char session_reason[512];
    const char *session_verdict_by;             /* the plugin behind those */
    int errors;
    uint64_t deadline_ms;
    struct varmap session_vars;   /* scripts' tx.session */
    SSL *ssl;                      /* after STARTTLS */
    uint32_t tls_want;             /* handshake: EPOLLIN or EPOLLOUT */
    char tls_info[160];            /* "TLSv1.3 with cipher ..." */
    /* transaction */
    txn_t tx;
    bool in_mail;
    struct mail_params mp;
    struct rcpt_params rp;         /* of the RCPT whose hooks run */
    char hook_arg[SMTP_MAX_PATH + 1];
    stage_then then;
    /* DATA */
    struct data_reader dr;
    int hops;               /* Received: headers, ours included (loop detection) */
    struct commit_job *commit;
    uint64_t data_bytes;
    enum msg_part part;
    struct buf hdr_buf;     /* header section so far */
    struct buf chunk;       /* body bytes not yet written */
    bool separator;         /* a blank line ended the header section */
    bool data_done;         /* the end of data has been read */
    char refusal[512];      /* the reply that ends this DATA, if refused */
    /* BDAT (RFC 3030): the message arrives in counted chunks, no dot-stuffing */
    bool bdat;              /* this message is chunked */
    bool bdat_last;         /* the chunk being read is the last */
    uint64_t bdat_left;     /* its bytes still to read */
    uint64_t skip_bytes;    /* a refused chunk's bytes, read and dropped */
    struct session *prev, *next;
};

struct commit_job {
    struct work work;
    struct session *s;
    struct spool_writer sw;
    struct envelope env;
    /* changes after the headers were written: the file is rewritten */
    bool rewrite;
    struct buf headers;
    struct buf body;
    bool new_body;
    /* state decided before the 250 (quarantine, routes), saved durably */
    bool has_state;
    struct msg_flags flags;
    struct rcpt_state *state;
    int result;                     /* errno from the commit, 0 = durable */
};

static const struct config *cfg;
static char reader_out[MAX_INPUT_BUFFER];   /* the DATA reader's output, one loop thread */
static struct ev_watch listeners[CONFIG_MAX_LISTEN];
static int nlisteners;
static struct session *sessions;
static int nsessions;
static unsigned long next_sid;
static bool shutting_down;

static void resume_session(struct session *s);

/* ---- replies ------------------------------------------------------ */

static void reply(struct session *s, const char *line)
{
    buf_puts(&s->out, line);
    buf_puts(&s->out, "\r\n");
    if (line[0] == '5')
        s->errors++;
}

static void replyf(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void replyf(struct session *s, const char *fmt, ...)
{
    char line[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    reply(s, line);
}

/* ---- session lifecycle -------------------------------------------- */

static void txn_restart(struct session *s)
{
    txn_reset(&s->tx);
    s->in_mail = false;
    s->bdat = false;
    memset(&s->mp, 0, sizeof s->mp);
}

static void commit_free(struct commit_job *cj)
{
    envelope_free(&cj->env);
    buf_free(&cj->headers);
    buf_free(&cj->body);
    free(cj->state);
    free(cj);
}

static void session_free(void *p)
{
    struct session *s = p;
    if (s->ssl)
        SSL_free(s->ssl);
    txn_free(&s->tx);
    varmap_free(&s->session_vars);
    buf_free(&s->in);
    buf_free(&s->out);
    buf_free(&s->hdr_buf);
    buf_free(&s->chunk);
    free(s);
}

/* Drop an open DATA file (refused, discarded, or the client went away). */
static void data_abort(struct session *s)
{
    if (!s->commit)
        return;
    spool_writer_abort(&s->commit->sw);
    commit_free(s->commit);
    s->commit = NULL;
}

static void session_close(struct session *s)
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
    data_abort(s);   /* an unfinished message (DATA, BDAT, or timed out in either) */
    ev_defer_free(s, session_free);
}

/* A fresh deadline for the next request: a whole command line, or a whole
 * DATA section. Input arriving in pieces does not restart it, so a client
 * dribbling a byte at a time (slowloris) times out like an idle one. */
static void set_timeout(struct session *s)
{
    int secs = s->phase == PH_DATA ? cfg->data_timeout : cfg->smtp_timeout;
    s->deadline_ms = ev_now_ms() + (uint64_t)secs * 1000;
}

/* Inside DATA, n bytes received earn n / smtp_min_data_rate seconds more,
 * never beyond data_timeout from now (Postfix's smtpd_min_data_rate). A
 * large message on a slow but honest link goes on; a trickle does not. */
static void extend_data_deadline(struct session *s, size_t n)
{
    if (s->phase != PH_DATA)
        return;
    uint64_t now = ev_now_ms(), cap = now + (uint64_t)cfg->data_timeout * 1000;
    s->deadline_ms += (uint64_t)n * 1000 / (uint64_t)cfg->smtp_min_data_rate;
    if (s->deadline_ms > cap)
        s->deadline_ms = cap;
}

static ssize_t session_recv(struct session *s, char *buf, size_t n) { return tls_read(s->ssl, s->w.fd, buf, n); }
static ssize_t session_send(struct session *s, const char *buf, size_t n) { return tls_write(s->ssl, s->w.fd, buf, n); }

static void tls_start(struct session *s);
static void tls_step(struct session *s);
static void connect_then(struct session *s, postern_verdict v);

/* Write pending replies; returns -1 if the session was closed. */
static int session_flush(struct session *s)
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
    /* read only while there is room and replies are not piling up; a hook
     * or commit in flight pauses input so pipelined commands wait */
    bool readable = (s->phase == PH_COMMAND || s->phase == PH_DATA || s->phase == PH_PROXY) &&
                    s->in.len < MAX_INPUT_BUFFER &&
                    s->out.len < MAX_OUTPUT_BACKLOG;
    ev_mod(&s->w, (readable ? EPOLLIN : 0) | (s->out.len ? EPOLLOUT : 0));
    return 0;
}

static void close_after_reply(struct session *s)
{
    s->phase = PH_CLOSING;
}

/* ---- hook stages -------------------------------------------------- */

static void stage_finished(void *ctx, postern_verdict v)
{
    struct session *s = ctx;
    s->busy = false;
    if (s->dead) {
        data_abort(s);
        session_free(s);
        return;
    }
    s->phase = s->saved_phase;
    set_timeout(s);          /* time spent in the chain is not the client's */
    stage_then then = s->then;
    then(s, v);
    /* finished later (worker, or a Lua run that gave the loop back): pick
     * up the input; finished at once: run_stage's caller goes on itself */
    if (!s->in_stage_call && s->phase != PH_HOOK && s->phase != PH_COMMIT)
        resume_session(s);
}

/* Run the chain for a stage, then `then`. Without interested plugins this
 * is a direct call; otherwise input pauses until the worker is done. */
static void run_stage(struct session *s, enum postern_stage st, const char *arg, size_t len, stage_then then)
{
    if (!hooks_wanted(st)) {
        s->tx.stage = st;
        then(s, POSTERN_CONTINUE);
        return;
    }
    s->saved_phase = s->phase;
    s->phase = PH_HOOK;
    s->busy = true;
    s->then = then;
    s->in_stage_call = true;
    hooks_run_async(st, &s->tx, arg, len, stage_finished, s);
    s->in_stage_call = false;
}

static void log_verdict(struct session *s, enum postern_stage st, postern_verdict v)
{
    log_info("S%lu: %s%s%s: %s by %s at %s: %s", s->sid, s->tx.qid[0] ? s->tx.qid : "", s->tx.qid[0] ? " " : "",
             s->tx.client_ip, verdict_name(v), s->tx.verdict_by ? s->tx.verdict_by : "?", stage_name(st),
             s->tx.reply);
}

/* For command stages: REJECT/TEMPFAIL answer the command and return false;
 * DISCARD/QUARANTINE mark the transaction and let the command proceed. */
static bool verdict_proceeds(struct session *s, enum postern_stage st, postern_verdict v)
{
    switch (v) {
    case POSTERN_REJECT:
    case POSTERN_TEMPFAIL:
        log_verdict(s, st, v);
        reply(s, s->tx.reply);
        return false;
    case POSTERN_DISCARD:
        log_verdict(s, st, v);
        if (st <= POSTERN_STAGE_HELO) {
            s->session_discard = true;
            s->session_verdict_by = s->tx.verdict_by;
        }
        s->tx.discard = true;
        return true;
    case POSTERN_QUARANTINE:
        log_verdict(s, st, v);
        if (st <= POSTERN_STAGE_HELO) {
            s->session_quarantine = true;
            s->session_verdict_by = s->tx.verdict_by;
            memcpy(s->session_reason, s->tx.reply, sizeof s->session_reason);
        }
        s->tx.quarantine = true;
        memcpy(s->tx.hold_reason, s->tx.reply, sizeof s->tx.hold_reason);
        return true;
    default:
        return true;
    }
}

/* ---- commands ----------------------------------------------------- */

static void helo_then(struct session *s, postern_verdict v)
{
    if (!verdict_proceeds(s, POSTERN_STAGE_HELO, v)) {
        s->helo_done = false;
        return;
    }
    s->helo_done = true;
    if (!s->esmtp) {
        replyf(s, "250 %s", cfg->hostname);
        return;
    }
    replyf(s, "250-%s", cfg->hostname);
    reply(s, "250-PIPELINING");
    replyf(s, "250-SIZE %zu", cfg->message_size_limit);
    if (tls_server_ctx() && !s->ssl)
        reply(s, "250-STARTTLS");
    if (s->xclient_allowed)
        reply(s, "250-XCLIENT ADDR NAME PORT PROTO HELO LOGIN");
    reply(s, "250-8BITMIME");
    reply(s, "250-BINARYMIME");
    reply(s, "250-CHUNKING");
    reply(s, "250-DSN");
    reply(s, "250-ENHANCEDSTATUSCODES");
    reply(s, "250 SMTPUTF8");
}

static void do_helo(struct session *s, const char *args, bool esmtp)
{
    if (!*args) {
        replyf(s, "501 5.5.4 Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
        return;
    }
    txn_restart(s);
    snprintf(s->tx.helo, sizeof s->tx.helo, "%s", args);
    s->esmtp = esmtp;
    run_stage(s, POSTERN_STAGE_HELO, s->tx.helo, strlen(s->tx.helo), helo_then);
}

static void cmd_helo(struct session *s, const char *args) { do_helo(s, args, false); }
static void cmd_ehlo(struct session *s, const char *args) { do_helo(s, args, true); }

static void mail_then(struct session *s, postern_verdict v)
{
    if (!verdict_proceeds(s, POSTERN_STAGE_MAIL, v)) {
        txn_restart(s);
        return;
    }
    s->in_mail = true;
    reply(s, "250 2.1.0 Ok");
}

static void cmd_mail(struct session *s, const char *args)
{
    if (!s->ssl && config_requires_tls(cfg, (struct sockaddr *)&s->peer)) {
        reply(s, "530 5.7.0 Must issue a STARTTLS command first");
        return;
    }
    struct path_result pr;
    struct mail_params mp;
    if (smtp_parse_mail(args, &pr, &mp) < 0) {
        reply(s, pr.reply);
        return;
    }
    if (!s->esmtp && (mp.has_size || mp.body || mp.smtputf8 || mp.ret || mp.envid[0])) {
        reply(s, "555 5.5.4 MAIL parameters need EHLO");
        return;
    }
    if (mp.has_size && mp.size > cfg->message_size_limit) {
        reply(s, "552 5.3.4 Message size exceeds fixed maximum message size");
        return;
    }
    txn_restart(s);
    if (txn_set_sender(&s->tx, pr.addr) < 0) {
        reply(s, "452 4.3.0 Insufficient system resources");
        return;
    }
    s->mp = mp;
    s->tx.declared_size = mp.has_size ? mp.size : 0;
    s->tx.discard = s->session_discard;
    s->tx.quarantine = s->session_quarantine;
    if (s->session_discard || s->session_quarantine)
        s->tx.verdict_by = s->session_verdict_by;
    memcpy(s->tx.hold_reason, s->session_reason, sizeof s->tx.hold_reason);
    snprintf(s->hook_arg, sizeof s->hook_arg, "%s", pr.addr);
    run_stage(s, POSTERN_STAGE_MAIL, s->hook_arg, strlen(s->hook_arg), mail_then);
}

static bool rcpt_allowed(struct session *s, const char *addr)
{
    if (config_is_trusted(cfg, (struct sockaddr *)&s->peer))
        return true;
    return config_is_relay_domain(cfg, addr_domain(addr));
}

static void rcpt_then(struct session *s, postern_verdict v)
{
    if (!verdict_proceeds(s, POSTERN_STAGE_RCPT, v))
        return;
    for (size_t i = 0; i < s->tx.nrcpts; i++)
        if (!strcmp(s->tx.rcpts[i].addr, s->hook_arg)) {
            reply(s, "250 2.1.5 Ok");      /* duplicate (or added by a plugin): deliver once */
            return;
        }
    if (txn_add_rcpt(&s->tx, s->hook_arg) < 0 ||
        txn_set_rcpt_dsn(&s->tx, s->tx.nrcpts - 1, s->rp.notify, s->rp.orcpt) < 0) {
        reply(s, "452 4.3.0 Insufficient system resources");
        return;
    }
    reply(s, "250 2.1.5 Ok");
}

static void cmd_rcpt(struct session *s, const char *args)
{
    struct path_result pr;
    if (smtp_parse_rcpt(args, s->mp.smtputf8, &pr, &s->rp) < 0) {
        reply(s, pr.reply);
        return;
    }
    if (!s->esmtp && (s->rp.notify || s->rp.orcpt[0])) {
        reply(s, "555 5.5.4 RCPT parameters need EHLO");
        return;
    }
    if (!strchr(pr.addr, '@')) {
        replyf(s, "550 5.1.1 <%s>: no local mailboxes on this gateway", pr.addr);
        return;
    }
    if (!rcpt_allowed(s, pr.addr)) {
        log_info("S%lu: reject: RCPT from [%s]: relay access denied; from=<%s> to=<%s>", s->sid,
                 s->tx.client_ip, s->tx.sender, pr.addr);
        replyf(s, "554 5.7.1 <%s>: Relay access denied", pr.addr);
        return;
    }
    if (s->tx.nrcpts >= (size_t)cfg->max_recipients) {
        reply(s, "452 4.5.3 Error: too many recipients");
        return;
    }
    snprintf(s->hook_arg, sizeof s->hook_arg, "%s", pr.addr);
    run_stage(s, POSTERN_STAGE_RCPT, s->hook_arg, strlen(s->hook_arg), rcpt_then);
}

static const char *received_proto(const struct session *s)
{
    if (s->mp.smtputf8)
        return s->ssl ? "UTF8SMTPS" : "UTF8SMTP";
    if (s->ssl)
        return "ESMTPS";
    return s->esmtp ? "ESMTP" : "SMTP";
}

/* Our Received header, the first in the message. */
static void add_received(struct session *s)
{
    char date[64], value[1024];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", &tm);
    int n = snprintf(value, sizeof value, " from %s (%s[%s])", s->tx.helo, s->client_name, s->tx.client_ip);
    if (s->ssl)
        n += snprintf(value + n, sizeof value - (size_t)n, "\r\n\t(using %s)", s->tls_info);
    n += snprintf(value + n, sizeof value - (size_t)n, "\r\n\tby %s (Postern) with %s id %s", cfg->hostname,
                  received_proto(s), s->tx.qid);
    if (s->tx.nrcpts == 1)
        n += snprintf(value + n, sizeof value - (size_t)n, "\r\n\tfor <%s>", s->tx.rcpts[0].addr);
    snprintf(value + n, sizeof value - (size_t)n, "; %s", date);
    headers_insert(&s->tx.hdrs, 0, "Received", value);
}

/* The envelope for the spool, copied from the transaction. */
static int envelope_from_txn(struct session *s, struct envelope *e)
{
    memcpy(e->id, s->tx.qid, QID_LEN);
    e->arrival = (int64_t)time(NULL);
    snprintf(e->client_ip, sizeof e->client_ip, "%s", s->tx.client_ip);
    snprintf(e->helo, sizeof e->helo, "%s", s->tx.helo);
    snprintf(e->proto, sizeof e->proto, "%s", received_proto(s));
    e->body = s->mp.body;
    e->smtputf8 = s->mp.smtputf8;
    e->ret = s->mp.ret;
    memcpy(e->envid, s->mp.envid, sizeof e->envid);
    e->sender = strdup(s->tx.sender);
    e->rcpts = calloc(s->tx.nrcpts ? s->tx.nrcpts : 1, sizeof *e->rcpts);
    e->dsn = calloc(s->tx.nrcpts ? s->tx.nrcpts : 1, sizeof *e->dsn);
    if (!e->sender || !e->rcpts || !e->dsn)
        return -1;
    for (size_t i = 0; i < s->tx.nrcpts; i++) {
        const struct txn_rcpt *r = &s->tx.rcpts[i];
        if (!(e->rcpts[i] = strdup(r->addr)))
            return -1;
        e->nrcpts++;
        e->dsn[i].notify = r->dsn.notify;
        if (r->dsn.orcpt && !(e->dsn[i].orcpt = strdup(r->dsn.orcpt)))
            return -1;
    }
    return 0;
}

static const char *storage_reply(int err)
{
    return err == ENOSPC || err == EDQUOT ? "452 4.3.1 Insufficient system storage"
                                          : "451 4.3.0 Error: queue file write error";
}

static void message_bytes(struct session *s, const char *p, size_t n);
static void data_progress(struct session *s);
static bool data_refused(const struct session *s);

/* Open the queue file and start reading a message (DATA or the first BDAT).
 * Returns -1 after answering when the queue file cannot be created. */
static int start_message(struct session *s)
{
    struct commit_job *cj = calloc(1, sizeof *cj);
    qid_generate(s->tx.qid);
    if (!cj || envelope_from_txn(s, &cj->env) < 0 || spool_writer_open(&cj->sw, &cj->env) < 0) {
        int err = cj ? cj->sw.err : ENOMEM;
        log_error("S%lu: cannot create queue file: %s", s->sid, strerror(err ? err : ENOMEM));
        reply(s, storage_reply(err));
        if (cj) {
            spool_writer_abort(&cj->sw);
            commit_free(cj);
        }
        txn_restart(s);
        return -1;
    }
    cj->s = s;
    s->commit = cj;
    s->in_mail = false;
    s->data_bytes = 0;
    s->part = PART_HEADERS;
    s->separator = false;
    s->data_done = false;
    s->refusal[0] = '\0';
    buf_reset(&s->hdr_buf);
    buf_reset(&s->chunk);
    add_received(s);
    data_reader_init(&s->dr);
    s->hops = 0;
    s->phase = PH_DATA;
    set_timeout(s);
    return 0;
}

/* Why this transaction cannot take message data now, or NULL. */
static const char *data_precondition(struct session *s)
{
    if (!s->in_mail)
        return "503 5.5.1 Error: need MAIL command";
    if (s->tx.nrcpts == 0)
        return "554 5.5.1 Error: no valid recipients";
    return NULL;
}

static void cmd_data(struct session *s, const char *args)
{
    const char *refusal = *args ? "501 5.5.4 Syntax: DATA takes no arguments" : data_precondition(s);
    if (!refusal && s->mp.body == BODY_BINARYMIME)
        refusal = "503 5.5.1 Error: BODY=BINARYMIME needs BDAT, not DATA";   /* RFC 3030 3 */
    if (refusal) {
        reply(s, refusal);
        return;
    }
    if (start_message(s) == 0)
        reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

/* The chunk just read was complete: the last ends the message, others get 250. */
static void chunk_complete(struct session *s)
{
    if (!s->bdat_last) {
        replyf(s, "250 2.0.0 Ok: %llu octets received", (unsigned long long)s->data_bytes);
        return;
    }
    if (s->mp.body != BODY_BINARYMIME)
        data_reader_end(&s->dr);
    s->data_done = true;
}

/* A chunk announced: its size counts against message_size_limit up front,
 * so an oversized chunk is refused (and skipped) before it is read. */
static void begin_chunk(struct session *s, uint64_t size, bool last)
{
    s->bdat_left = size;
    s->bdat_last = last;
    if (size == 0)
        chunk_complete(s);
}

static void cmd_bdat(struct session *s, const char *args)
{
    uint64_t size;
    bool last;
    if (smtp_parse_bdat(args, &size, &last) < 0) {
        reply(s, "501 5.5.4 Syntax: BDAT size [LAST]");   /* the size is unknown: nothing to skip */
        return;
    }
    const char *refusal = data_precondition(s);
    if (!refusal && size > cfg->message_size_limit)
        refusal = "552 5.3.4 Message size exceeds fixed maximum message size";
    if (refusal) {
        reply(s, refusal);
        s->skip_bytes = size;
        if (s->in_mail)
            txn_restart(s);     /* the client must start over with MAIL */
        return;
    }
    if (start_message(s) < 0) {
        s->skip_bytes = size;
        return;
    }
    s->bdat = true;
    data_reader_init_chunked(&s->dr);
    begin_chunk(s, size, last);
}

/* A chunked message given up (RSET, another command, a refused chunk). */
static void abandon_chunked_message(struct session *s, const char *why)
{
    log_info("S%lu: %s: BDAT message from [%s] abandoned: %s", s->sid, s->tx.qid, s->tx.client_ip, why);
    data_abort(s);
    txn_restart(s);
    s->phase = PH_COMMAND;
}

/* The command line of linelen bytes at head (LF included) as a C string
 * without its CR LF; returns its length. */
static size_t command_line_text(const char *head, size_t linelen, char line[SMTP_MAX_COMMAND_LINE + 1])
{
    size_t len = linelen - 1;
    if (len && head[len - 1] == '\r')
        len--;
    memcpy(line, head, len);
    line[len] = '\0';
    return len;
}

/* Between chunks: the next BDAT. Any other command ends the message
 * unfinished and then runs as usual. Returns false when waiting for input
 * or when the session left the chunked message. */
static bool next_chunk_command(struct session *s)
{
    const char *head = buf_head(&s->in);
    const char *nl = s->in.len ? memchr(head, '\n', s->in.len) : NULL;
    size_t linelen = nl ? (size_t)(nl - head) + 1 : 0;
    if (!nl && s->in.len < SMTP_MAX_COMMAND_LINE)
        return false;
    char line[SMTP_MAX_COMMAND_LINE + 1];
    struct smtp_command cmd = {VERB_UNKNOWN, ""};
    if (nl && linelen <= SMTP_MAX_COMMAND_LINE) {
        size_t len = command_line_text(head, linelen, line);
        if (memchr(line, '\0', len) || smtp_parse_command(line, &cmd) < 0)
            cmd.verb = VERB_UNKNOWN;
    }
    if (cmd.verb != VERB_BDAT) {
        abandon_chunked_message(s, "another command between chunks");
        return false;
    }
    buf_consume(&s->in, linelen);
    set_timeout(s);
    uint64_t size;
    bool last;
    if (smtp_parse_bdat(cmd.args, &size, &last) < 0) {
        abandon_chunked_message(s, "bad BDAT syntax");
        reply(s, "501 5.5.4 Syntax: BDAT size [LAST]");
        return false;
    }
    if (size > cfg->message_size_limit - s->data_bytes) {
        abandon_chunked_message(s, "message size limit");
        reply(s, "552 5.3.4 Message size exceeds fixed maximum message size");
        s->skip_bytes = size;
        return false;
    }
    begin_chunk(s, size, last);
    return true;
}

/* BDAT: chunk bytes go into the message as they are (the same line checks
 * as DATA unless BODY=BINARYMIME); between chunks comes the next BDAT. */
static void process_chunks(struct session *s)
{
    while (s->phase == PH_DATA && !s->data_done) {
        if (s->bdat_left == 0) {
            if (!next_chunk_command(s))
                break;
            continue;
        }
        if (!s->in.len)
            break;
        size_t n = s->in.len < s->bdat_left ? s->in.len : (size_t)s->bdat_left, out_len;
        if (n > sizeof reader_out)
            n = sizeof reader_out;
        const char *p = buf_head(&s->in);
        bool done;
        if (s->mp.body != BODY_BINARYMIME)   /* line checks only: a chunked reader passes bytes unchanged */
            data_reader_feed(&s->dr, p, n, reader_out, &out_len, &done);
        s->bdat_left -= n;
        s->data_bytes += n;
        s->tx.size = s->data_bytes;
        if (!data_refused(s))
            message_bytes(s, p, n);
        buf_consume(&s->in, n);
        if (s->bdat_left == 0)
            chunk_complete(s);
        data_progress(s);
    }
    data_progress(s);
}

static void cmd_starttls(struct session *s, const char *args)
{
    if (*args) {
        reply(s, "501 5.5.4 Syntax: STARTTLS");
        return;
    }
    if (!tls_server_ctx()) {
        reply(s, "502 5.5.1 Error: STARTTLS not offered (no certificate configured)");
        return;
    }
    if (s->ssl) {
        reply(s, "503 5.5.1 Error: TLS already active");
        return;
    }
    reply(s, "220 2.0.0 Ready to start TLS");
    /* Anything the client pipelined after STARTTLS was sent in plain text
     * and must not be read as if it came through TLS (CVE-2011-0411). */
    if (s->in.len) {
        log_warn("S%lu: [%s] pipelined %zu byte(s) after STARTTLS: discarded", s->sid, s->tx.client_ip, s->in.len);
        buf_consume(&s->in, s->in.len);
    }
    s->phase = PH_TLS;
}

static void cmd_rset(struct session *s, const char *args)
{
    (void)args;
    txn_restart(s);
    reply(s, "250 2.0.0 Ok");
}

static void cmd_noop(struct session *s, const char *args)
{
    (void)args;
    reply(s, "250 2.0.0 Ok");
}

static void cmd_quit(struct session *s, const char *args)
{
    (void)args;
    reply(s, "221 2.0.0 Bye");
    close_after_reply(s);
}

static void cmd_vrfy(struct session *s, const char *args)
{
    if (!*args)
        reply(s, "501 5.5.4 Syntax: VRFY address");
    else
        reply(s, "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery");
}

static void cmd_help(struct session *s, const char *args)
{
    (void)args;
    reply(s, "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP");
}

/* XCLIENT (Postfix's extension): a trusted proxy or test tool presents the
 * original client. Everything after it (relay control, plugins, Lua, the
 * Received header) sees the presented client; the session restarts with a
 * new CONNECT stage and greeting. */
/* An XCLIENT value: xtext that decodes to printable ASCII without spaces. */
static int xclient_value_decode(const char *in, char *out, size_t size)
{
    int n = xtext_decode(in, out, size);
    for (int i = 0; i < n; i++)
        if ((unsigned char)out[i] < 33 || (unsigned char)out[i] > 126)
            return -1;
    return n < 0 ? -1 : 0;
}

/* What XCLIENT presents; applied only when every attribute parsed. */
struct xclient_view {
    struct sockaddr_storage addr;
    char name[256], helo[256], login[256];
    bool esmtp;
};

static const char *xclient_attr(struct xclient_view *x, const char *name, const char *value)
{
    bool unavailable = !strcmp(value, "[UNAVAILABLE]") || !strcmp(value, "[TEMPUNAVAIL]");
    if (!strcasecmp(name, "ADDR")) {
        const char *ip = strncasecmp(value, "IPV6:", 5) ? value : value + 5;
        socklen_t len;
        if (!unavailable && ip_parse(ip, 0, &x->addr, &len) < 0)
            return "501 5.5.4 Bad XCLIENT ADDR syntax";
    } else if (!strcasecmp(name, "NAME")) {
        snprintf(x->name, sizeof x->name, "%.250s%s", unavailable ? "" : value, unavailable ? "" : " ");
    } else if (!strcasecmp(name, "HELO")) {
        snprintf(x->helo, sizeof x->helo, "%.255s", unavailable ? "" : value);
    } else if (!strcasecmp(name, "PROTO")) {
        if (strcasecmp(value, "SMTP") && strcasecmp(value, "ESMTP") && !unavailable)
            return "501 5.5.4 Bad XCLIENT PROTO syntax";
        x->esmtp = !strcasecmp(value, "ESMTP");
    } else if (!strcasecmp(name, "LOGIN")) {
        snprintf(x->login, sizeof x->login, "%.255s", unavailable ? "" : value);
    } else if (strcasecmp(name, "PORT") && strcasecmp(name, "DESTADDR") && strcasecmp(name, "DESTPORT")) {
        return "501 5.5.4 Bad XCLIENT attribute name";
    }
    return NULL;
}

/* Parse every attribute into x (which starts as the current view). */
static const char *xclient_parse(char *args, struct xclient_view *x)
{
    char *save = NULL;
    for (char *tok = strtok_r(args, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(tok, '='), value[512];
        if (!eq || eq == tok || xclient_value_decode(eq + 1, value, sizeof value) < 0)
            return "501 5.5.4 Bad XCLIENT attribute syntax";
        *eq = '\0';
        const char *err = xclient_attr(x, tok, value);
        if (err)
            return err;
    }
    return NULL;
}

static void cmd_xclient(struct session *s, const char *args)
{
    if (!s->xclient_allowed) {
        log_info("S%lu: XCLIENT refused from [%s]", s->sid, s->tx.client_ip);
        reply(s, "550 5.7.0 Error: insufficient authorization");
        return;
    }
    if (s->in_mail) {
        reply(s, "503 5.5.1 Error: MAIL transaction in progress");
        return;
    }
    if (!*args) {
        reply(s, "501 5.5.4 Syntax: XCLIENT attribute=value...");
        return;
    }
    char copy[1024];
    snprintf(copy, sizeof copy, "%s", args);
    struct xclient_view x = {.addr = s->peer, .esmtp = s->esmtp};
    snprintf(x.name, sizeof x.name, "%s", s->client_name);
    snprintf(x.helo, sizeof x.helo, "%s", s->tx.helo);
    snprintf(x.login, sizeof x.login, "%s", s->tx.auth_user);
    const char *err = xclient_parse(copy, &x);
    if (err) {
        reply(s, err);
        return;
    }
    char was[sizeof s->tx.client_ip];
    snprintf(was, sizeof was, "%s", s->tx.client_ip);
    txn_restart(s);
    s->peer = x.addr;
    sockaddr_ip_text((struct sockaddr *)&x.addr, s->tx.client_ip, sizeof s->tx.client_ip);
    memcpy(s->client_name, x.name, sizeof s->client_name);
    memcpy(s->tx.helo, x.helo, sizeof s->tx.helo);
    memcpy(s->tx.auth_user, x.login, sizeof s->tx.auth_user);
    s->esmtp = x.esmtp;
    s->helo_done = false;
    log_info("S%lu: XCLIENT: client [%s] presents [%s]%s%s", s->sid, was, s->tx.client_ip,
             x.login[0] ? " login=" : "", x.login);
    run_stage(s, POSTERN_STAGE_CONNECT, NULL, 0, connect_then);
}

static void cmd_not_implemented(struct session *s, const char *args)
{
    (void)args;
    reply(s, "502 5.5.1 Error: command not implemented");
}

static void cmd_unknown(struct session *s, const char *args)
{
    (void)args;
    reply(s, "500 5.5.2 Error: command not recognized");
}

/* Preconditions, each returning the refusal or NULL. */
static const char *need_helo(struct session *s)
{
    return s->helo_done ? NULL : "503 5.5.1 Error: send HELO/EHLO first";
}

static const char *need_no_mail(struct session *s)
{
    if (!s->helo_done)
        return "503 5.5.1 Error: send HELO/EHLO first";
    return s->in_mail ? "503 5.5.1 Error: nested MAIL command" : NULL;
}

static const char *need_mail(struct session *s)
{
    return s->in_mail ? NULL : "503 5.5.1 Error: need MAIL command";
}

/* The command table: each row names the hook-chain stage its handler runs
 * (the handler calls run_stage), its precondition, and its handler. DATA's
 * stages (data, body, eom) run while the message streams in. */
static const struct command_row {
    enum smtp_verb verb;
    const char *stage;
    const char *(*check)(struct session *s);
    void (*run)(struct session *s, const char *args);
} command_table[] = {
    {VERB_HELO, "helo", NULL, cmd_helo},
    {VERB_EHLO, "helo", NULL, cmd_ehlo},
    {VERB_MAIL, "mail", need_no_mail, cmd_mail},
    {VERB_RCPT, "rcpt", need_mail, cmd_rcpt},
    {VERB_DATA, "data, body, eom", NULL, cmd_data},
    {VERB_RSET, NULL, NULL, cmd_rset},
    {VERB_NOOP, NULL, NULL, cmd_noop},
    {VERB_QUIT, NULL, NULL, cmd_quit},
    {VERB_VRFY, NULL, NULL, cmd_vrfy},
    {VERB_EXPN, NULL, NULL, cmd_not_implemented},
    {VERB_HELP, NULL, NULL, cmd_help},
    {VERB_STARTTLS, NULL, need_helo, cmd_starttls},
    {VERB_BDAT, "data, body, eom", need_helo, cmd_bdat},
    {VERB_AUTH, NULL, need_helo, cmd_not_implemented},
    {VERB_XCLIENT, "connect", NULL, cmd_xclient},
    {VERB_UNKNOWN, NULL, NULL, cmd_unknown},
};

static void run_command(struct session *s, const char *line)
{
    struct smtp_command cmd;
    if (smtp_parse_command(line, &cmd) < 0) {
        reply(s, "500 5.5.2 Error: invalid character in command");
        return;
    }
    for (size_t i = 0; i < sizeof command_table / sizeof command_table[0]; i++) {
        const struct command_row *row = &command_table[i];
        if (row->verb != cmd.verb)
            continue;
        const char *refusal = row->check ? row->check(s) : NULL;
        if (refusal)
            reply(s, refusal);
        else
            row->run(s, cmd.args);
        return;
    }
}

/* ---- DATA: headers, body, end of message --------------------------
 * Message bytes collect in hdr_buf until the header section is complete
 * (DATA stage), then pass in chunks through the BODY stage into the spool
 * file; after the end of data come the checks, the EOM stage and the
 * commit. data_progress() moves a message on as far as it can without
 * waiting; every hook continuation calls it again. */

/* Once a message is refused, its remaining bytes are read and dropped. */
static bool data_refused(const struct session *s)
{
    return s->refusal[0] || s->dr.errors || s->data_bytes > cfg->message_size_limit;
}

/* The reply that refuses this DATA, most important reason first. */
static const char *data_refusal(struct session *s)
{
    if (s->dr.errors & (DR_ERR_BARE_LF | DR_ERR_LONE_CR))
        return "550 5.5.2 Error: bare <LF> or <CR> line ending in message data (SMTP smuggling protection)";
    if (s->dr.errors & DR_ERR_LONG_LINE)
        return "550 5.5.2 Error: message line longer than 1000 octets";
    if (s->data_bytes > cfg->message_size_limit)
        return "552 5.3.4 Message size exceeds fixed maximum message size";
    if (s->refusal[0])
        return s->refusal;
    if (s->commit->sw.err)
        return storage_reply(s->commit->sw.err);
    if (s->tx.nrcpts == 0)
        return "554 5.5.1 Error: no recipients left after policy";
    return NULL;
}

static void refuse_data(struct session *s, const char *text)
{
    if (!s->refusal[0])
        snprintf(s->refusal, sizeof s->refusal, "%s", text);
}

/* DATA/BODY/EOM verdicts: a refusal is answered when the data ends. */
static void content_verdict(struct session *s, enum postern_stage st, postern_verdict v)
{
    if (v == POSTERN_REJECT || v == POSTERN_TEMPFAIL) {
        log_verdict(s, st, v);
        refuse_data(s, s->tx.reply);
    } else {
        verdict_proceeds(s, st, v);
    }
}

static void write_to_spool(struct session *s, const char *p, size_t n)
{
    if (!data_refused(s))
        spool_writer_write(&s->commit->sw, p, n);
}

static void data_progress(struct session *s);

static void data_then(struct session *s, postern_verdict v)
{
    content_verdict(s, POSTERN_STAGE_DATA, v);
    struct buf b;
    buf_init(&b);
    headers_serialize(&s->tx.hdrs, &b);
    if (s->separator)
        buf_puts(&b, "\r\n");
    write_to_spool(s, buf_head(&b), b.len);
    s->commit->sw.hdr_len = b.len;
    buf_free(&b);
    s->tx.headers_written = true;
    s->tx.hdrs.changed = false;
    s->part = PART_BODY;
    data_progress(s);
}

/* BINARYMIME skips the DATA reader, but its header section must still be
 * CRLF text: no NUL, no bare LF or lone CR (notices quote it over DATA). */
static void check_binary_headers(struct session *s, const char *h, size_t n)
{
    if (memchr(h, '\0', n))
        refuse_data(s, "554 5.6.0 Error: message header section contains NUL characters");
    for (size_t i = 0; i < n; i++)
        if ((h[i] == '\n' && (i == 0 || h[i - 1] != '\r')) || (h[i] == '\r' && (i + 1 >= n || h[i + 1] != '\n'))) {
            refuse_data(s, "550 5.5.2 Error: bare <LF> or <CR> line ending in the header section");
            break;
        }
}

/* The header section is complete: parse it, keep what follows as body. */
static void headers_complete(struct session *s, size_t section_len, bool separator)
{
    if (s->mp.body == BODY_BINARYMIME)
        check_binary_headers(s, buf_head(&s->hdr_buf), section_len);
    size_t used = headers_parse(buf_head(&s->hdr_buf), section_len, &s->tx.hdrs);
    /* counted as received, before any plugin changes the headers */
    s->hops = (int)headers_count(&s->tx.hdrs, "Received");
    s->separator = separator && used == section_len;
    /* anything that did not parse as a header starts the body, as sent */
    struct buf rest;
    buf_init(&rest);
    buf_append(&rest, buf_head(&s->hdr_buf) + used, section_len - used);
    if (separator && used != section_len)
        buf_puts(&rest, "\r\n");
    size_t after = section_len + (separator ? 2 : 0);
    if (after < s->hdr_buf.len)
        buf_append(&rest, buf_head(&s->hdr_buf) + after, s->hdr_buf.len - after);
    buf_free(&s->chunk);
    s->chunk = rest;
    buf_reset(&s->hdr_buf);
    run_stage(s, POSTERN_STAGE_DATA, NULL, 0, data_then);
}

static void body_then(struct session *s, postern_verdict v)
{
    content_verdict(s, POSTERN_STAGE_BODY, v);
    write_to_spool(s, buf_head(&s->chunk), s->chunk.len);
    buf_reset(&s->chunk);
    data_progress(s);
}

/* Message bytes (unstuffed) from the DATA reader. */
static void message_bytes(struct session *s, const char *p, size_t n)
{
    /* RFC 5321 2.3.8: NUL is not text; refuse rather than pass it on
     * (BINARYMIME bodies may hold any octet; their headers may not) */
    if (s->mp.body != BODY_BINARYMIME && memchr(p, '\0', n))
        refuse_data(s, "554 5.6.0 Error: message contains NUL characters");
    if (s->part == PART_BODY) {
        buf_append(&s->chunk, p, n);
        return;
    }
    buf_append(&s->hdr_buf, p, n);
    if (s->hdr_buf.len > MAX_HEADER_SECTION)
        refuse_data(s, "552 5.3.4 Error: message header section too large");
}

static void eom_then(struct session *s, postern_verdict v);

static void end_of_data(struct session *s)
{
    if (data_refusal(s)) {
        eom_then(s, POSTERN_CONTINUE);
        return;
    }
    /* scripts may read the body at EOM: it is in the open spool file */
    struct spool_writer *w = &s->commit->sw;
    s->tx.data_fd = w->fd;
    s->tx.body_start = w->env_len + w->hdr_len;
    s->tx.body_len = w->written - w->hdr_len;
    run_stage(s, POSTERN_STAGE_EOM, NULL, 0, eom_then);
}

static void data_progress(struct session *s)
{
    if (s->phase != PH_DATA)
        return;    /* a hook runs: its continuation comes back here */
    if (data_refused(s)) {
        if (s->data_done)
            end_of_data(s);
        return;
    }
    if (s->part == PART_HEADERS) {
        const char *h = buf_head(&s->hdr_buf);
        const char *end = s->hdr_buf.len ? memmem(h, s->hdr_buf.len, "\r\n\r\n", 4) : NULL;
        if (s->hdr_buf.len >= 2 && h[0] == '\r' && h[1] == '\n')
            headers_complete(s, 0, true);                    /* no header section */
        else if (end)
            headers_complete(s, (size_t)(end - h) + 2, true);
        else if (s->data_done)
            headers_complete(s, s->hdr_buf.len, false);      /* all headers, no body */
        return;
    }
    if (s->chunk.len && (s->data_done || s->chunk.len >= 16384 || !hooks_wanted(POSTERN_STAGE_BODY))) {
        run_stage(s, POSTERN_STAGE_BODY, buf_head(&s->chunk), s->chunk.len, body_then);
        return;
    }
    if (s->data_done && !s->chunk.len)
        end_of_data(s);
}

static void commit_run(struct work *w);
static void commit_done(struct work *w);

/* Everything the commit needs, prepared on the loop thread. */
static void prepare_commit(struct session *s)
{
    struct commit_job *cj = s->commit;
    txn_t *t = &s->tx;
    if (t->envelope_changed) {
        envelope_free(&cj->env);
        memset(&cj->env, 0, sizeof cj->env);
        envelope_from_txn(s, &cj->env);
    }
    cj->env.hops = cj->sw.hops = s->hops;
    cj->rewrite = t->envelope_changed || t->hdrs.changed || t->body_replaced;
    if (cj->rewrite) {
        headers_serialize(&t->hdrs, &cj->headers);
        if (s->separator || t->body_replaced)
            buf_puts(&cj->headers, "\r\n");
        if (t->body_replaced) {
            cj->new_body = true;
            cj->body = t->new_body;
            buf_init(&t->new_body);
        }
    }
    bool routes = false;
    for (size_t i = 0; i < t->nrcpts; i++)
        routes |= t->rcpts[i].nexthop != NULL || t->rcpts[i].min_tls;
    if (t->quarantine || routes || t->archive) {
        cj->has_state = true;
        cj->flags.held = t->quarantine;
        cj->flags.archive = t->archive;
        if (t->quarantine)
            snprintf(cj->flags.reason, sizeof cj->flags.reason, "%.250s", t->hold_reason);
        cj->state = calloc(t->nrcpts ? t->nrcpts : 1, sizeof *cj->state);
        for (size_t i = 0; cj->state && i < t->nrcpts; i++) {
            cj->state[i].status = RCPT_PENDING;
            if (t->rcpts[i].nexthop)
                snprintf(cj->state[i].nexthop, sizeof cj->state[i].nexthop, "%s", t->rcpts[i].nexthop);
            cj->state[i].min_tls = t->rcpts[i].min_tls;
        }
    }
    cj->work.run = commit_run;
    cj->work.done = commit_done;
}

static void eom_then(struct session *s, postern_verdict v)
{
    if (v == POSTERN_REJECT || v == POSTERN_TEMPFAIL) {
        log_verdict(s, POSTERN_STAGE_EOM, v);
        refuse_data(s, s->tx.reply);
    } else {
        verdict_proceeds(s, POSTERN_STAGE_EOM, v);
    }
    const char *refusal = data_refusal(s);
    if (refusal) {
        log_info("S%lu: %s: reject: DATA from [%s]: %s", s->sid, s->tx.qid, s->tx.client_ip, refusal);
        reply(s, refusal);
        data_abort(s);
        txn_restart(s);
        s->phase = PH_COMMAND;
        return;
    }
    if (s->tx.discard) {
        log_info("%s: discarded (%s) from=<%s> client=[%s]", s->tx.qid,
                 s->tx.verdict_by ? s->tx.verdict_by : "policy", s->tx.sender, s->tx.client_ip);
        replyf(s, "250 2.0.0 Ok: queued as %s", s->tx.qid);
        data_abort(s);
        txn_restart(s);
        s->phase = PH_COMMAND;
        return;
    }
    s->commit->env.size = s->commit->sw.written;
    prepare_commit(s);
    s->phase = PH_COMMIT;
    s->busy = true;
    workers_submit(&s->commit->work);
}

static void commit_run(struct work *w)
{
    struct commit_job *cj = (struct commit_job *)w;
    if (cj->rewrite)
        spool_writer_rewrite(&cj->sw, &cj->env, buf_head(&cj->headers), cj->headers.len,
                             cj->new_body ? buf_head(&cj->body) : NULL, cj->body.len);
    cj->env.size = cj->sw.written;
    /* state decided before the 250 is durable before the message is visible */
    if (cj->has_state && !cj->sw.err &&
        (!cj->state || spool_save_state_durable(cj->env.id, cj->flags, cj->state, cj->env.nrcpts) < 0))
        cj->sw.err = EIO;
    cj->result = spool_writer_commit(&cj->sw);
    if (cj->result && cj->has_state)
        spool_remove(cj->env.id);
}

static void commit_done(struct work *w)
{
    struct commit_job *cj = (struct commit_job *)w;
    struct session *s = cj->s;
    s->busy = false;
    s->commit = NULL;
    if (cj->result == 0) {
        log_info("%s: accepted from=<%s> size=%llu nrcpt=%zu client=[%s] session=S%lu%s", cj->env.id,
                 cj->env.sender, (unsigned long long)cj->env.size, cj->env.nrcpts, cj->env.client_ip, s->sid,
                 cj->flags.held ? " (quarantined)" : "");
        if (!s->dead)
            replyf(s, "250 2.0.0 Ok: queued as %s", cj->env.id);
        queue_add_committed(&cj->env, cj->sw.env_len);
    } else {
        log_error("%s: queue file commit failed: %s", cj->env.id, strerror(cj->result));
        if (!s->dead)
            reply(s, storage_reply(cj->result));
    }
    commit_free(cj);
    if (s->dead) {
        session_free(s);
        return;
    }
    txn_restart(s);
    s->phase = PH_COMMAND;
    if (!s->in.len)
        buf_free(&s->in);   /* idle sessions keep no DATA-sized buffer */
    set_timeout(s);
    resume_session(s);
}

/* Feed buffered input to the DATA reader and on into the message. */
static void process_data(struct session *s)
{
    if (s->bdat) {
        process_chunks(s);
        return;
    }
    while (s->in.len && s->phase == PH_DATA && !s->data_done) {
        size_t n = s->in.len < sizeof reader_out ? s->in.len : sizeof reader_out, out_len;
        bool done;
        size_t used = data_reader_feed(&s->dr, buf_head(&s->in), n, reader_out, &out_len, &done);
        buf_consume(&s->in, used);
        s->data_bytes += out_len;
        s->tx.size = s->data_bytes;
        s->data_done = done;
        if (!data_refused(s))
            message_bytes(s, reader_out, out_len);
        data_progress(s);
    }
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
        if (!nl) {
            if (s->in.len >= SMTP_MAX_COMMAND_LINE) {
                if (!s->skip_line)
                    reply(s, "500 5.5.2 Error: command line too long");
                s->skip_line = true;
                buf_consume(&s->in, s->in.len);
            }
            return;
        }
        size_t linelen = (size_t)(nl - head) + 1;
        if (s->skip_line || linelen > SMTP_MAX_COMMAND_LINE) {
            if (!s->skip_line)
                reply(s, "500 5.5.2 Error: command line too long");
            s->skip_line = false;
            buf_consume(&s->in, linelen);
            continue;
        }
        char line[SMTP_MAX_COMMAND_LINE + 1];
        size_t len = command_line_text(head, linelen, line);
        buf_consume(&s->in, linelen);
        set_timeout(s);      /* the next command line gets a full smtp_timeout */
        if (memchr(line, '\0', len))   /* a NUL would cut the command short as a C string */
            reply(s, "500 5.5.2 Error: invalid character in command");
        else
            run_command(s, line);
        if (s->errors >= cfg->max_errors && s->phase != PH_CLOSING) {
            log_info("S%lu: too many errors from [%s]", s->sid, s->tx.client_ip);
            reply(s, "421 4.7.0 Error: too many errors");
            close_after_reply(s);
        }
        if (s->phase == PH_DATA)
            process_data(s);
    }
}

static void process_proxy_header(struct session *s);

static void resume_session(struct session *s)
{
    if (s->phase == PH_PROXY)
        process_proxy_header(s);
    if (s->phase == PH_DATA)
        process_data(s);
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
    if (events & EPOLLIN) {
        for (int rounds = 0; rounds < 4 && s->in.len < MAX_INPUT_BUFFER; rounds++) {
            /* small for commands, larger inside DATA; grown by doubling */
            if (buf_reserve(&s->in, s->phase == PH_DATA ? 16384 : 1024) < 0) {
                session_close(s);
                return;
            }
            size_t room;
            char *t = buf_tail(&s->in, &room);
            if (room > MAX_INPUT_BUFFER - s->in.len)
                room = MAX_INPUT_BUFFER - s->in.len;
            ssize_t r = session_recv(s, t, room);
            if (r > 0) {
                buf_commit(&s->in, (size_t)r);
                extend_data_deadline(s, (size_t)r);
                /* TLS may hold decrypted bytes the socket no longer signals */
                if ((size_t)r < room && !(s->ssl && SSL_pending(s->ssl)))
                    break;
                continue;
            }
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                break;
            session_close(s);   /* EOF or error: an unfinished DATA is discarded */
            return;
        }
        resume_session(s);
        return;
    }
    if (events & (EPOLLHUP | EPOLLERR)) {
        session_close(s);
        return;
    }
    if (events & EPOLLOUT)
        resume_session(s);
}

/* The server side of the handshake, non-blocking, driven by events. */
static void tls_step(struct session *s)
{
    int r = SSL_accept(s->ssl);
    if (r == 1) {
        tls_describe(s->ssl, s->tls_info, sizeof s->tls_info);
        log_info("S%lu: [%s] STARTTLS: %s%s", s->sid, s->tx.client_ip, s->tls_info,
                 SSL_session_reused(s->ssl) ? " (resumed)" : "");
        /* RFC 3207: forget everything learned before the handshake */
        s->helo_done = s->esmtp = false;
        txn_restart(s);
        s->tx.helo[0] = '\0';
        s->tx.tls = true;
        s->phase = PH_COMMAND;
        set_timeout(s);
        if (!s->greeted)      /* implicit TLS: the greeting comes now */
            run_stage(s, POSTERN_STAGE_CONNECT, NULL, 0, connect_then);
        if (!s->dead && s->phase != PH_HOOK)
            session_flush(s);
        return;
    }
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        s->tls_want = e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT;
        ev_mod(&s->w, s->tls_want);
        return;
    }
    char why[256];
    tls_last_error(why, sizeof why);
    log_info("S%lu: [%s] STARTTLS handshake failed: %s", s->sid, s->tx.client_ip, why);
    session_close(s);
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
    tls_step(s);
}

static void connect_then(struct session *s, postern_verdict v)
{
    s->greeted = true;
    if (v == POSTERN_REJECT || v == POSTERN_TEMPFAIL) {
        log_verdict(s, POSTERN_STAGE_CONNECT, v);
        /* refused at the door: say so and hang up */
        reply(s, v == POSTERN_TEMPFAIL && strncmp(s->tx.reply, "421", 3) ? "421 4.7.0 Try again later" : s->tx.reply);
        close_after_reply(s);
        return;
    }
    verdict_proceeds(s, POSTERN_STAGE_CONNECT, v);
    replyf(s, "220 %s ESMTP Postern", cfg->hostname);
}

/* ---- listeners ---------------------------------------------------- */

/* ---- per-client limits ------------------------------------------
 * Concurrent sessions are counted over the session list; new sessions per
 * minute in a small table of recent addresses (an address that falls out
 * of the table starts over: the limit is a brake, not an accountant).
 * trusted_networks are exempt from both. */
#define RATE_SLOTS 4096
struct rate_slot {
    char ip[64];
    time_t window;     /* when this address's current 60 s window began */
    int count;
};
static struct rate_slot rate_table[RATE_SLOTS];

static bool over_rate(const char *ip)
{
    uint32_t h = 2166136261u;
    for (const char *p = ip; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    struct rate_slot *r = &rate_table[h % RATE_SLOTS];
    time_t now = time(NULL);
    if (strcmp(r->ip, ip) || now - r->window >= 60) {   /* a new 60 s window from this connection */
        snprintf(r->ip, sizeof r->ip, "%s", ip);
        r->window = now;
        r->count = 0;
    }
    return ++r->count > cfg->client_connect_rate;
}

static int sessions_from(const char *ip)
{
    int n = 0;
    for (struct session *s = sessions; s; s = s->next)
        n += !strcmp(s->tx.client_ip, ip);
    return n;
}

/* The refusal for a new connection, or NULL to accept it. */
/* per_client: the address is the client's (not a load balancer's before
 * its PROXY header), so per-client limits apply. */
static const char *connection_refusal(const struct sockaddr_storage *ss, const char *ip, bool per_client)
{
    if (nsessions >= cfg->max_sessions || shutting_down)
        return "421 4.3.2 Too many connections, try again later\r\n";
    if (!per_client || config_is_trusted(cfg, (const struct sockaddr *)ss))
        return NULL;
    if (cfg->max_sessions_per_client && sessions_from(ip) >= cfg->max_sessions_per_client)
        return "421 4.7.0 Too many connections from your address, try again later\r\n";
    if (cfg->client_connect_rate && over_rate(ip))
        return "421 4.7.0 Connection rate limit exceeded for your address, try again later\r\n";
    return NULL;
}

/* PROXY protocol (proxy_listen): the header names the real client, who
 * then gets the greeting; anything that is not a valid header closes the
 * connection without a word (it is not an SMTP client we can talk to). */
static void process_proxy_header(struct session *s)
{
    struct proxy_header h;
    int n = proxy_parse((const unsigned char *)buf_head(&s->in), s->in.len, &h);
    if (n == 0)
        return;
    if (n < 0) {
        log_info("S%lu: bad PROXY protocol header from [%s]: connection closed", s->sid, s->tx.client_ip);
        session_close(s);
        return;
    }
    buf_consume(&s->in, (size_t)n);
    char was[64];
    snprintf(was, sizeof was, "%s", s->tx.client_ip);
    if (h.has_source) {
        char ip[64];
        sockaddr_ip_text((struct sockaddr *)&h.source, ip, sizeof ip);
        const char *refusal = connection_refusal(&h.source, ip, true);
        if (refusal) {
            log_info("S%lu: refused connection from [%s] via PROXY [%s]: %.*s", s->sid, ip, was,
                     (int)strlen(refusal) - 2, refusal);
            buf_puts(&s->out, refusal);
            close_after_reply(s);
            session_flush(s);
            return;
        }
        s->peer = h.source;
        s->xclient_allowed = config_allows_xclient(cfg, (struct sockaddr *)&h.source);
        snprintf(s->tx.client_ip, sizeof s->tx.client_ip, "%s", ip);
    }
    log_info("S%lu: PROXY v%d from [%s]: client [%s]", s->sid, h.version, was, s->tx.client_ip);
    s->phase = PH_COMMAND;
    set_timeout(s);
    run_stage(s, POSTERN_STAGE_CONNECT, NULL, 0, connect_then);
}

static void accept_one(int fd, struct sockaddr_storage *ss, const struct listen_addr *l)
{
    bool implicit_tls = l->implicit_tls;
    char ip[64];
    sockaddr_ip_text((struct sockaddr *)ss, ip, sizeof ip);
    if (l->proxy && !config_allows_proxy(cfg, (struct sockaddr *)ss)) {
        log_info("refused connection from [%s] to PROXY listener %s: not in proxy_networks", ip, l->text);
        close(fd);
        return;
    }
    const char *refusal = connection_refusal(ss, ip, !l->proxy);
    if (refusal) {
        if (!shutting_down)
            log_info("refused connection from [%s]: %.*s", ip, (int)strlen(refusal) - 2, refusal);
        ssize_t w = send(fd, refusal, strlen(refusal), MSG_NOSIGNAL);
        (void)w;
        close(fd);
        return;
    }
    struct session *s = calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        return;
    }
    s->sid = ++next_sid;
    s->peer = *ss;
    s->xclient_allowed = config_allows_xclient(cfg, (struct sockaddr *)ss);
    s->tx.session_vars = &s->session_vars;
    s->tx.data_fd = -1;
    sockaddr_ip_text((struct sockaddr *)ss, s->tx.client_ip, sizeof s->tx.client_ip);
    if (ev_add(&s->w, fd, EPOLLIN, session_on_event, s) < 0) {
        close(fd);
        free(s);
        return;
    }
    s->next = sessions;
    if (sessions)
        sessions->prev = s;
    sessions = s;
    nsessions++;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    log_info("S%lu: connect from [%s]%s", s->sid, s->tx.client_ip,
             implicit_tls ? " (implicit TLS)" : l->proxy ? " (PROXY protocol)" : "");
    set_timeout(s);
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
    run_stage(s, POSTERN_STAGE_CONNECT, NULL, 0, connect_then);
    if (s->phase != PH_HOOK)
        session_flush(s);
}

static void listener_on_event(void *ctx, uint32_t events)
{
    struct ev_watch *w = ctx;
    (void)events;
    for (int i = 0; i < 256; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(w->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                log_error("accept: %s", strerror(errno));
            return;
        }
        accept_one(fd, &ss, &cfg->listen[w - listeners]);
    }
}

int smtp_server_bind(const struct config *c)
{
    cfg = c;
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
    for (int i = 0; i < nlisteners; i++)
        if (ev_add(&listeners[i], listeners[i].fd, EPOLLIN, listener_on_event, &listeners[i]) < 0)
            return -1;
    return 0;
}

void smtp_server_tick(void)
{
    uint64_t now = ev_now_ms();
    for (struct session *s = sessions, *next; s; s = next) {
        next = s->next;
        if (s->busy || now < s->deadline_ms)
            continue;
        log_info("S%lu: timeout from [%s]", s->sid, s->tx.client_ip);
        replyf(s, "421 4.4.2 %s Error: timeout exceeded", cfg->hostname);
        close_after_reply(s);
        session_flush(s);
        if (!s->dead)
            session_close(s);   /* do not wait for a client that is not reading */
    }
}

int smtp_server_shutdown(void)
{
    if (!shutting_down) {
        shutting_down = true;
        for (int i = 0; i < nlisteners; i++) {
            int fd = listeners[i].fd;
            ev_del(&listeners[i]);
            close(fd);
        }
    }
    int waiting = 0;
    for (struct session *s = sessions, *next; s; s = next) {
        next = s->next;
        if (s->busy) {
            waiting++;
            continue;
        }
        replyf(s, "421 4.3.2 %s Service shutting down", cfg->hostname);
        close_after_reply(s);
        session_flush(s);
        if (!s->dead)
            session_close(s);
    }
    return waiting;
}

int smtp_server_sessions(void) { return nsessions; }
