/* smtp_commands.c - the SMTP commands of a session (RFC 5321): HELO and
 * EHLO, MAIL, RCPT (relay control, then the chain), STARTTLS, RSET, NOOP,
 * QUIT, VRFY, HELP, and one table (verb, precondition, handler) that
 * dispatches them; DATA is smtp_message.c's, BDAT smtp_chunking.c's, AUTH
 * smtp_auth.c's, XCLIENT smtp_proxy.c's. */
#include "smtp_session.h"
#include "lists.h"
#include "track.h"
#include "metrics.h"
#include "hooks.h"
#include "runtime.h"
#include "log.h"
#include "netaddr.h"
#include "relay_control.h"
#include "tls.h"
#include "kv.h"
#include "queue.h"
#include "spool.h"
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

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

/* Room for one more message of size bytes (0: not declared), as Postfix's
 * smtpd_check_size and a bound on the queue: a 452 while the queue (what is
 * still to be read at start counted) holds queue_max_messages, or when the
 * message would leave the spool's file system less than queue_minfree or
 * take over two thirds of what is free; NULL when there is room. The free
 * space is looked at once a second; the refusal is logged once a minute. */
static const char *storage_refusal(const struct config *cfg, uint64_t size)
{
    static int64_t checked, logged;
    static uint64_t free_bytes = UINT64_MAX;
    int64_t now = (int64_t)time(NULL);
    if (now != checked && spool_free_bytes(&free_bytes) == 0)
        checked = now;
    size_t queued = queue_size() + queue_load_pending();
    char why[160] = "";
    const char *reason = "queue_full";
    if (cfg->queue_max_messages && queued >= (size_t)cfg->queue_max_messages) {
        snprintf(why, sizeof why, "the queue holds %zu messages (queue_max_messages %d)", queued,
                 cfg->queue_max_messages);
    } else if (free_bytes != UINT64_MAX && (free_bytes < cfg->queue_minfree + size || size > free_bytes / 3 * 2)) {
        snprintf(why, sizeof why, "%" PRIu64 " bytes free on the spool's file system (queue_minfree %zu, SIZE=%" PRIu64 ")",
                 free_bytes, cfg->queue_minfree, size);
        reason = "disk_space";
    }
    if (!why[0])
        return NULL;
    char labels[48];
    metric_inc(M_STORAGE_REFUSALS, metric_labels(labels, sizeof labels, "reason", reason, NULL));
    if (now - logged >= 60) {
        logged = now;
        log_warn("refusing new mail with 452 4.3.1 (logged once a minute): %s", why);
    }
    return "452 4.3.1 Insufficient system storage";
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
    const char *no_room = storage_refusal(s->cfg, mp.has_size ? (uint64_t)mp.size : 0);
    if (no_room) {
        session_reply(s, no_room);
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
        decisions_copy(&s->tx.decisions, s->session_decisions);
    }
    snprintf(s->tx.hold_reason, sizeof s->tx.hold_reason, "%.250s", s->session_reason ? s->session_reason : "");
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
        txn_set_rcpt_dsn(&s->tx, s->tx.nrcpts - 1, s->rcpt_notify, s->rcpt_orcpt ? s->rcpt_orcpt : "") < 0) {
        session_reply(s, "452 4.3.0 Insufficient system resources");
        return;
    }
    /* block_action = quarantine: taken, and held for this recipient */
    struct txn_rcpt *r = &s->tx.rcpts[s->tx.nrcpts - 1];
    if (!strcmp(s->cfg->block_action, "quarantine") && lists_check(r->addr, s->tx.sender) == LIST_BLOCK)
        r->spam_reason = strdup("sender on your block list");
    session_reply(s, "250 2.1.5 Ok");
}

/* A sender on the recipient's block list (lists.c), with block_action =
 * reject: 550 here, before the chain. true when refused. */
static bool blocked_at_rcpt(struct session *s, const char *rcpt)
{
    if (strcmp(s->cfg->block_action, "reject") || lists_check(rcpt, s->tx.sender) != LIST_BLOCK)
        return false;
    char reply[700];
    snprintf(reply, sizeof reply, "550 5.7.1 <%.320s>: Sender address rejected: blocked by the recipient", rcpt);
    log_info("S%lu: reject: RCPT from [%s]: sender on the block list of <%s>; from=<%s> to=<%s> proto=%s helo=<%s>",
             s->sid, s->tx.client_ip, rcpt, s->tx.sender, rcpt, s->esmtp ? "ESMTP" : "SMTP", s->tx.helo);
    track_event(&(struct track_event){.status = "rejected", .from = s->tx.sender, .to = rcpt, .client = s->tx.client_ip,
                                      .helo = s->tx.helo, .stage = "rcpt", .link = "block list", .reply = reply,
                                      .session = s->sid});
    session_reply(s, reply);
    return true;
}

static void cmd_rcpt(struct session *s, const char *args)
{
    struct path_result pr;
    struct rcpt_params rp;
    if (smtp_parse_rcpt(args, s->mp.smtputf8, &pr, &rp) < 0) {
        session_reply(s, pr.reply);
        return;
    }
    if (!s->esmtp && (rp.notify || rp.orcpt[0])) {
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
    if (blocked_at_rcpt(s, pr.addr))
        return;
    snprintf(s->hook_arg, sizeof s->hook_arg, "%s", pr.addr);
    s->rcpt_notify = rp.notify;
    free(s->rcpt_orcpt);
    s->rcpt_orcpt = rp.orcpt[0] ? strdup(rp.orcpt) : NULL;
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

void smtp_run_command(struct session *s, const char *line)
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

