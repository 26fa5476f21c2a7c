/* smtp_server.c - inbound SMTP: listeners, per-client limits, and one
 * struct session per connection, driven by the event loop. Commands are
 * dispatched through one table (verb, the hook stage it will run, its
 * precondition, its handler), so the path stage -> check -> handler reads in
 * one place. Message data is smtp_message.c's, BDAT smtp_chunking.c's,
 * XCLIENT and PROXY smtp_proxy.c's, listeners and per-client limits
 * smtp_listen.c's (see smtp_session.h). */
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

/* ---- hook stages -------------------------------------------------- */

static void stage_finished(void *ctx, postern_verdict v)
{
    struct session *s = ctx;
    s->busy = false;
    if (s->dead) {
        message_abort(s);
        session_free(s);
        return;
    }
    s->phase = s->saved_phase;
    session_set_timeout(s);          /* time spent in the chain is not the client's */
    stage_then then = s->then;
    then(s, v);
    /* finished later (worker, or a Lua run that gave the loop back): pick
     * up the input; finished at once: run_stage's caller goes on itself */
    if (!s->in_stage_call && s->phase != PH_HOOK && s->phase != PH_COMMIT)
        session_resume(s);
}

/* Run the chain for a stage, then `then`. Without interested plugins this
 * is a direct call; otherwise input pauses until the worker is done. */
void session_run_stage(struct session *s, enum postern_stage st, const char *arg, size_t len, stage_then then)
{
    if (!hooks_wanted(&s->tx, st)) {
        s->tx.stage = st;
        then(s, POSTERN_CONTINUE);
        return;
    }
    s->saved_phase = s->phase;
    s->phase = PH_HOOK;
    s->busy = true;
    s->then = then;
    s->in_stage_call++;
    hooks_run_async(st, &s->tx, arg, len, stage_finished, s);
    s->in_stage_call--;
}

/* Postfix's NOQUEUE fields for a refusal at stage st: "from=<…> to=<…>
 * proto=ESMTP helo=<…>", with the address the command under judgement
 * names (MAIL, RCPT) or the transaction's (at most 8 recipients, then a
 * count). */
void session_envelope_fields(const struct session *s, enum postern_stage st, char *out, size_t size)
{
    const char *from = st == POSTERN_STAGE_MAIL ? s->hook_arg : s->tx.sender;
    size_t n = 0;
    if (from && st >= POSTERN_STAGE_MAIL)
        n += (size_t)snprintf(out + n, size - n, "from=<%s> ", from);
    if (st == POSTERN_STAGE_RCPT && n < size)
        n += (size_t)snprintf(out + n, size - n, "to=<%s> ", s->hook_arg);
    for (size_t i = 0; st > POSTERN_STAGE_RCPT && i < s->tx.nrcpts && i < 8 && n < size; i++)
        n += (size_t)snprintf(out + n, size - n, "to=<%s> ", s->tx.rcpts[i].addr);
    if (st > POSTERN_STAGE_RCPT && s->tx.nrcpts > 8 && n < size)
        n += (size_t)snprintf(out + n, size - n, "(%zu more recipients) ", s->tx.nrcpts - 8);
    if (n < size)
        snprintf(out + n, size - n, "proto=%s helo=<%s>", s->esmtp ? "ESMTP" : "SMTP", s->tx.helo);
}

void session_track_refusal(const struct session *s, enum postern_stage st, const char *reply, const char *link)
{
    struct track_event e = {.status = "rejected", .from = st == POSTERN_STAGE_MAIL ? s->hook_arg : s->tx.sender,
                            .client = s->tx.client_ip, .helo = s->tx.helo, .stage = stage_name(st), .link = link,
                            .reply = reply, .session = s->sid};
    if (st < POSTERN_STAGE_MAIL)
        e.from = NULL;
    if (st == POSTERN_STAGE_RCPT)
        e.to = s->hook_arg;
    if (st <= POSTERN_STAGE_RCPT || !s->tx.nrcpts) {
        track_event(&e);
        return;
    }
    for (size_t i = 0; i < s->tx.nrcpts; i++) {      /* refused after RCPT: each recipient's record */
        e.to = s->tx.rcpts[i].addr;
        track_event(&e);
    }
}

void session_log_verdict(struct session *s, enum postern_stage st, postern_verdict v)
{
    char labels[300], fields[3000];
    metric_inc(M_VERDICTS, metric_labels(labels, sizeof labels, "stage", stage_name(st), "verdict", verdict_name(v),
                                         "link", s->tx.verdict_by ? s->tx.verdict_by : "?", NULL));
    session_envelope_fields(s, st, fields, sizeof fields);
    log_info("S%lu: %s%s%s: %s by %s at %s: %s; %s", s->sid, s->tx.qid[0] ? s->tx.qid : "", s->tx.qid[0] ? " " : "",
             s->tx.client_ip, verdict_name(v), s->tx.verdict_by ? s->tx.verdict_by : "?", stage_name(st),
             s->tx.reply, fields);
}

/* For command stages: REJECT/TEMPFAIL answer the command and return false;
 * DISCARD/QUARANTINE mark the transaction and let the command proceed. */
bool session_verdict_proceeds(struct session *s, enum postern_stage st, postern_verdict v)
{
    switch (v) {
    case POSTERN_REJECT:
    case POSTERN_TEMPFAIL:
        session_log_verdict(s, st, v);
        session_track_refusal(s, st, s->tx.reply, s->tx.verdict_by);
        session_reply(s, s->tx.reply);
        return false;
    case POSTERN_DISCARD:
        session_log_verdict(s, st, v);
        if (st <= POSTERN_STAGE_HELO) {
            s->session_discard = true;
            s->session_verdict_by = s->tx.verdict_by;
            memcpy(s->session_decisions, s->tx.decisions, sizeof s->session_decisions);
        }
        s->tx.discard = true;
        return true;
    case POSTERN_QUARANTINE:
        session_log_verdict(s, st, v);
        if (st <= POSTERN_STAGE_HELO) {
            s->session_quarantine = true;
            s->session_verdict_by = s->tx.verdict_by;
            memcpy(s->session_decisions, s->tx.decisions, sizeof s->session_decisions);
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
    if (!session_verdict_proceeds(s, POSTERN_STAGE_HELO, v)) {
        s->helo_done = false;
        return;
    }
    s->helo_done = true;
    if (!s->esmtp) {
        session_replyf(s, "250 %s", s->cfg->hostname);
        return;
    }
    session_replyf(s, "250-%s", s->cfg->hostname);
    session_reply(s, "250-PIPELINING");
    session_replyf(s, "250-SIZE %zu", s->cfg->message_size_limit);
    if (tls_server_ctx() && !s->ssl)
        session_reply(s, "250-STARTTLS");
    if (s->xclient_allowed)
        session_reply(s, "250-XCLIENT ADDR NAME PORT PROTO HELO LOGIN");
    if (smtp_auth_offered(s))
        session_replyf(s, "250-AUTH %s", smtp_auth_mechanisms());
    session_reply(s, "250-8BITMIME");
    session_reply(s, "250-BINARYMIME");
    session_reply(s, "250-CHUNKING");
    session_reply(s, "250-DSN");
    session_reply(s, "250-ENHANCEDSTATUSCODES");
    if (s->ssl)
        session_reply(s, "250-REQUIRETLS");
    session_reply(s, "250 SMTPUTF8");
}

static void do_helo(struct session *s, const char *args, bool esmtp)
{
    if (!*args) {
        session_replyf(s, "501 5.5.4 Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
        return;
    }
    session_txn_restart(s);
    snprintf(s->tx.helo, sizeof s->tx.helo, "%s", args);
    s->esmtp = esmtp;
    session_run_stage(s, POSTERN_STAGE_HELO, s->tx.helo, strlen(s->tx.helo), helo_then);
}

static void cmd_helo(struct session *s, const char *args) { do_helo(s, args, false); }
static void cmd_ehlo(struct session *s, const char *args) { do_helo(s, args, true); }

static void mail_then(struct session *s, postern_verdict v)
{
    if (!session_verdict_proceeds(s, POSTERN_STAGE_MAIL, v)) {
        session_txn_restart(s);
        return;
    }
    s->in_mail = true;
    session_reply(s, "250 2.1.0 Ok");
}

static void cmd_mail(struct session *s, const char *args)
{
    if (!s->ssl && config_requires_tls(s->cfg, (struct sockaddr *)&s->peer)) {
        session_reply(s, "530 5.7.0 Must issue a STARTTLS command first");
        return;
    }
    struct path_result pr;
    struct mail_params mp;
    if (smtp_parse_mail(args, &pr, &mp) < 0) {
        session_reply(s, pr.reply);
        return;
    }
    if (!s->esmtp && (mp.has_size || mp.body || mp.smtputf8 || mp.ret || mp.envid[0] || mp.requiretls)) {
        session_reply(s, "555 5.5.4 MAIL parameters need EHLO");
        return;
    }
    if (mp.requiretls && !s->ssl) {     /* RFC 8689 2: only over TLS, where we offer it */
        session_reply(s, "530 5.7.10 REQUIRETLS needs a TLS session (STARTTLS first)");
        return;
    }
    if (mp.has_size && mp.size > s->cfg->message_size_limit) {
        session_reply(s, "552 5.3.4 Message size exceeds fixed maximum message size");
        return;
    }
    char why[SMTP_MAX_PATH + 128];
    const char *refusal = smtp_auth_mail_refusal(s, pr.addr, why, sizeof why);
    if (refusal) {
        session_reply(s, refusal);
        return;
    }
    session_txn_restart(s);
    if (txn_set_sender(&s->tx, pr.addr) < 0) {
        session_reply(s, "452 4.3.0 Insufficient system resources");
        return;
    }
    s->mp = mp;
    s->tx.declared_size = mp.has_size ? mp.size : 0;
    s->tx.discard = s->session_discard;
    s->tx.quarantine = s->session_quarantine;
    if (s->session_discard || s->session_quarantine) {
        s->tx.verdict_by = s->session_verdict_by;
        memcpy(s->tx.decisions, s->session_decisions, sizeof s->tx.decisions);
    }
    memcpy(s->tx.hold_reason, s->session_reason, sizeof s->tx.hold_reason);
    snprintf(s->hook_arg, sizeof s->hook_arg, "%s", pr.addr);
    session_run_stage(s, POSTERN_STAGE_MAIL, s->hook_arg, strlen(s->hook_arg), mail_then);
}

static void rcpt_then(struct session *s, postern_verdict v)
{
    if (!session_verdict_proceeds(s, POSTERN_STAGE_RCPT, v))
        return;
    for (size_t i = 0; i < s->tx.nrcpts; i++)
        if (!strcmp(s->tx.rcpts[i].addr, s->hook_arg)) {
            session_reply(s, "250 2.1.5 Ok");      /* duplicate (or added by a plugin): deliver once */
            return;
        }
    if (txn_add_rcpt(&s->tx, s->hook_arg) < 0 ||
        txn_set_rcpt_dsn(&s->tx, s->tx.nrcpts - 1, s->rp.notify, s->rp.orcpt) < 0) {
        session_reply(s, "452 4.3.0 Insufficient system resources");
        return;
    }
    session_reply(s, "250 2.1.5 Ok");
}

static void cmd_rcpt(struct session *s, const char *args)
{
    struct path_result pr;
    if (smtp_parse_rcpt(args, s->mp.smtputf8, &pr, &s->rp) < 0) {
        session_reply(s, pr.reply);
        return;
    }
    if (!s->esmtp && (s->rp.notify || s->rp.orcpt[0])) {
        session_reply(s, "555 5.5.4 RCPT parameters need EHLO");
        return;
    }
    bool postmaster = false;
    if (!strchr(pr.addr, '@')) {
        /* RFC 5321 4.5.1: bare "postmaster" must be accepted; it goes to postmaster_address */
        if (strcasecmp(pr.addr, "postmaster") || !s->cfg->postmaster_address[0]) {
            session_replyf(s, "550 5.1.1 <%s>: no local mailboxes on this gateway", pr.addr);
            return;
        }
        log_info("S%lu: RCPT <%s> from [%s]: to postmaster_address <%s>", s->sid, pr.addr, s->tx.client_ip,
                 s->cfg->postmaster_address);
        snprintf(pr.addr, sizeof pr.addr, "%s", s->cfg->postmaster_address);
        postmaster = true;      /* whoever may not relay may still reach the postmaster */
    }
    enum relay_verdict rv = relay_check(s->cfg, (struct sockaddr *)&s->peer, smtp_auth_may_relay(s), pr.addr,
                                        pr.source_route, postmaster);
    if (rv != RELAY_OK) {
        char reply[700];
        const char *why;
        relay_refusal(rv, pr.addr, reply, sizeof reply, &why);
        log_info("S%lu: reject: RCPT from [%s]: %s; from=<%s> to=<%s> proto=%s helo=<%s>", s->sid, s->tx.client_ip,
                 why, s->tx.sender, pr.addr, s->esmtp ? "ESMTP" : "SMTP", s->tx.helo);
        track_event(&(struct track_event){.status = "rejected", .from = s->tx.sender, .to = pr.addr,
                                          .client = s->tx.client_ip, .helo = s->tx.helo, .stage = "rcpt",
                                          .link = "relay control", .reply = reply, .session = s->sid});
        session_reply(s, reply);
        return;
    }
    if (s->tx.nrcpts >= (size_t)s->cfg->max_recipients) {
        session_reply(s, "452 4.5.3 Error: too many recipients");
        return;
    }
    snprintf(s->hook_arg, sizeof s->hook_arg, "%s", pr.addr);
    session_run_stage(s, POSTERN_STAGE_RCPT, s->hook_arg, strlen(s->hook_arg), rcpt_then);
}

/* The command line of linelen bytes at head (LF included) as a C string
 * without its CR LF; returns its length. */
size_t smtp_command_line_text(const char *head, size_t linelen, char *line, size_t size)
{
    size_t len = linelen - 1;
    if (len && head[len - 1] == '\r')
        len--;
    if (len >= size)
        len = size - 1;        /* callers bound linelen first; this only guards */
    memcpy(line, head, len);
    line[len] = '\0';
    return len;
}

static void cmd_starttls(struct session *s, const char *args)
{
    if (*args) {
        session_reply(s, "501 5.5.4 Syntax: STARTTLS");
        return;
    }
    if (!tls_server_ctx()) {
        session_reply(s, "502 5.5.1 Error: STARTTLS not offered (no certificate configured)");
        return;
    }
    if (s->ssl) {
        session_reply(s, "503 5.5.1 Error: TLS already active");
        return;
    }
    session_reply(s, "220 2.0.0 Ready to start TLS");
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
    session_txn_restart(s);
    session_reply(s, "250 2.0.0 Ok");
}

static void cmd_noop(struct session *s, const char *args)
{
    (void)args;
    session_reply(s, "250 2.0.0 Ok");
}

static void cmd_quit(struct session *s, const char *args)
{
    (void)args;
    session_reply(s, "221 2.0.0 Bye");
    session_close_after_reply(s);
}

static void cmd_vrfy(struct session *s, const char *args)
{
    if (!*args)
        session_reply(s, "501 5.5.4 Syntax: VRFY address");
    else
        session_reply(s, "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery");
}

static void cmd_help(struct session *s, const char *args)
{
    (void)args;
    session_reply(s, "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP");
}

static void cmd_not_implemented(struct session *s, const char *args)
{
    (void)args;
    session_reply(s, "502 5.5.1 Error: command not implemented");
}

static void cmd_unknown(struct session *s, const char *args)
{
    (void)args;
    session_reply(s, "500 5.5.2 Error: command not recognized");
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

/* The command table: each row is a verb, its precondition and its handler;
 * the comment names the hook-chain stage the handler runs (it calls
 * run_stage). DATA's stages (data, body, eom) run while the message streams
 * in. */
static const struct command_row {
    enum smtp_verb verb;
    const char *(*check)(struct session *s);
    void (*run)(struct session *s, const char *args);
} command_table[] = {
    {VERB_HELO, NULL, cmd_helo},                      /* helo */
    {VERB_EHLO, NULL, cmd_ehlo},                      /* helo */
    {VERB_MAIL, need_no_mail, cmd_mail},              /* mail */
    {VERB_RCPT, need_mail, cmd_rcpt},                 /* rcpt */
    {VERB_DATA, NULL, smtp_cmd_data},                 /* data, body, eom */
    {VERB_RSET, NULL, cmd_rset},
    {VERB_NOOP, NULL, cmd_noop},
    {VERB_QUIT, NULL, cmd_quit},
    {VERB_VRFY, NULL, cmd_vrfy},
    {VERB_EXPN, NULL, cmd_not_implemented},
    {VERB_HELP, NULL, cmd_help},
    {VERB_STARTTLS, need_helo, cmd_starttls},
    {VERB_BDAT, need_helo, smtp_cmd_bdat},            /* data, body, eom */
    {VERB_AUTH, need_helo, smtp_cmd_auth},
    {VERB_XCLIENT, NULL, smtp_cmd_xclient},           /* connect, again */
    {VERB_UNKNOWN, NULL, cmd_unknown},
};

static void run_command(struct session *s, const char *line)
{
    struct smtp_command cmd;
    if (smtp_parse_command(line, &cmd) < 0) {
        session_reply(s, "500 5.5.2 Error: invalid character in command");
        return;
    }
    for (size_t i = 0; i < sizeof command_table / sizeof command_table[0]; i++) {
        const struct command_row *row = &command_table[i];
        if (row->verb != cmd.verb)
            continue;
        const char *refusal = row->check ? row->check(s) : NULL;
        if (refusal)
            session_reply(s, refusal);
        else
            row->run(s, cmd.args);
        return;
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
            run_command(s, line);
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

/* The server side of the handshake, non-blocking, driven by events. */
static void tls_step(struct session *s)
{
    int r = tls_handshake_step(s->ssl, &s->tls_want);
    char labels[96];
    if (r == 1) {
        metric_inc(M_TLS_HANDSHAKES, metric_labels(labels, sizeof labels, "direction", "in", "result",
                                                   SSL_get_version(s->ssl), NULL));
        tls_describe(s->ssl, s->tls_info, sizeof s->tls_info);
        log_info("S%lu: [%s] STARTTLS: %s%s", s->sid, s->tx.client_ip, s->tls_info,
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
    char why[256];
    tls_last_error(why, sizeof why);
    log_info("S%lu: [%s] STARTTLS handshake failed: %s", s->sid, s->tx.client_ip, why);
    metric_inc(M_TLS_HANDSHAKES, metric_labels(labels, sizeof labels, "direction", "in", "result", "failed", NULL));
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
