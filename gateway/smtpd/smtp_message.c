/* smtp_message.c - message data of an inbound session, from DATA (or the
 * first BDAT) to "250 queued as": the DATA reader, the header section, the
 * DATA/BODY/EOM hook stages, and the spool file. Bytes go straight into the
 * queue file; the fsync/rename commit runs on a worker, and only its
 * completion sends the 250. */
#include "smtp_session.h"
#include "tls.h"
#include "received.h"
#include "metrics.h"
#include "headers.h"
#include "hooks.h"
#include "log.h"
#include "queue.h"
#include "track.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>


static char reader_out[MAX_INPUT_BUFFER];   /* the DATA reader's output, one loop thread */

static void eom_then(struct session *s, postern_verdict v);
/* The tracking store's record of a message the session took: one event
 * per recipient of env (as queued, after the chain's changes), or of the
 * transaction when env is NULL. */
static void track_message(const struct session *s, const struct envelope *env, const char *status, const char *link,
                          const char *reply)
{
    char tls[160] = "";
    if (s->ssl)
        tls_describe(s->ssl, tls, sizeof tls);
    struct track_event e = {.status = status, .qid = env ? env->id : s->tx.qid,
                            .from = env ? env->sender : s->tx.sender, .client = s->tx.client_ip, .helo = s->tx.helo,
                            .stage = "eom", .link = link, .reply = reply, .session = s->sid, .tls = tls,
                            .login = s->authenticated ? s->tx.auth_user : NULL, .size = env ? env->size : 0};
    size_t n = env ? env->nrcpts : s->tx.nrcpts;
    for (size_t i = 0; i < n; i++) {
        e.to = env ? env->rcpts[i] : s->tx.rcpts[i].addr;
        const struct txn_rcpt *r = env ? txn_find_rcpt((txn_t *)&s->tx, e.to) : &s->tx.rcpts[i];
        bool spam = !strcmp(status, "queued") && r && r->spam_reason;
        struct track_event one = e;
        if (spam) {          /* held in the spam quarantine for this recipient */
            log_info("%s: to=<%s>, status=quarantined (spam quarantine: %s)", one.qid, one.to, r->spam_reason);
            one.status = "quarantined";
            one.link = "spam quarantine";
            one.reply = r->spam_reason;
        }
        track_event(&one);
    }
}

static void commit_run(struct work *w);
static void commit_done(struct work *w);

/* What the session's Received field says of it (received.c); tls_info
 * (TLS_INFO_MAX bytes) holds the TLS part. */
#define TLS_INFO_MAX 160
static struct received_info received_of(const struct session *s, char *tls_info)
{
    if (s->ssl)
        tls_describe(s->ssl, tls_info, TLS_INFO_MAX);
    return (struct received_info){
        .helo = s->tx.helo, .client_name = s->client_name ? s->client_name : "", .client_ip = s->tx.client_ip,
        .tls_info = s->ssl ? tls_info : NULL, .tls = s->ssl != NULL, .authenticated = s->authenticated,
        .esmtp = s->esmtp, .smtputf8 = s->mp.smtputf8, .hostname = s->cfg->hostname, .qid = s->tx.qid,
        .only_rcpt = s->tx.nrcpts == 1 ? s->tx.rcpts[0].addr : NULL,
    };
}

/* Our Received header, the first in the message. */
static void add_received(struct session *s)
{
    char tls_info[TLS_INFO_MAX];
    struct received_info ri = received_of(s, tls_info);
    received_add(&s->tx.hdrs, &ri);
}

/* A "TLS-Required: No" header field (RFC 8689 5). */
static bool tls_required_no(const struct header_list *h)
{
    long i = headers_find(h, "TLS-Required", 0);
    if (i < 0)
        return false;
    const char *v = h->h[i].value;
    v += strspn(v, " \t");
    size_t n = strcspn(v, " \t\r\n");
    return n == 2 && !strncasecmp(v, "No", 2) && !v[n + strspn(v + n, " \t\r\n")];
}

/* The envelope for the spool, copied from the transaction. */
static int envelope_from_txn(struct session *s, struct envelope *e)
{
    memcpy(e->id, s->tx.qid, QID_LEN);
    e->arrival = (int64_t)time(NULL);
    snprintf(e->client_ip, sizeof e->client_ip, "%s", s->tx.client_ip);
    snprintf(e->helo, sizeof e->helo, "%s", s->tx.helo);
    char tls_info[TLS_INFO_MAX];
    struct received_info ri = received_of(s, tls_info);
    snprintf(e->proto, sizeof e->proto, "%s", received_protocol(&ri));
    e->body = s->mp.body;
    e->smtputf8 = s->mp.smtputf8;
    e->requiretls = s->mp.requiretls;   /* tls_optional comes with the header section (prepare_commit) */
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

static void commit_free(struct commit_job *cj)
{
    envelope_free(&cj->env);
    buf_free(&cj->headers);
    buf_free(&cj->body);
    rcpt_states_free(cj->state, cj->nstate);
    free(cj);
}

/* Drop an open DATA file (refused, discarded, or the client went away). */
void message_abort(struct session *s)
{
    if (!s->commit)
        return;
    spool_writer_abort(&s->commit->sw);
    commit_free(s->commit);
    s->commit = NULL;
}

/* Open the queue file and start reading a message (DATA or the first BDAT).
 * Returns -1 after answering when the queue file cannot be created. */
int message_start(struct session *s)
{
    struct commit_job *cj = calloc(1, sizeof *cj);
    qid_generate(s->tx.qid);
    if (!cj || envelope_from_txn(s, &cj->env) < 0 || spool_writer_open(&cj->sw, &cj->env) < 0) {
        int err = cj ? cj->sw.err : ENOMEM;
        log_error("S%lu: cannot create queue file: %s", s->sid, strerror(err ? err : ENOMEM));
        session_reply(s, storage_reply(err));
        if (cj) {
            spool_writer_abort(&cj->sw);
            commit_free(cj);
        }
        session_txn_restart(s);
        return -1;
    }
    cj->s = s;
    s->commit = cj;
    s->in_mail = false;
    s->data_bytes = 0;
    s->part = PART_HEADERS;
    s->separator = false;
    s->data_done = false;
    buf_reset(&s->hdr_buf);
    buf_reset(&s->chunk);
    add_received(s);
    data_reader_init(&s->dr);
    s->hops = 0;
    s->phase = PH_DATA;
    session_set_timeout(s);
    return 0;
}

/* Why this transaction cannot take message data now, or NULL. */
const char *message_precondition(struct session *s)
{
    if (!s->in_mail)
        return "503 5.5.1 Error: need MAIL command";
    if (s->tx.nrcpts == 0)
        return "554 5.5.1 Error: no valid recipients";
    return NULL;
}

void smtp_cmd_data(struct session *s, const char *args)
{
    const char *refusal = *args ? "501 5.5.4 Syntax: DATA takes no arguments" : message_precondition(s);
    if (!refusal && s->mp.body == BODY_BINARYMIME)
        refusal = "503 5.5.1 Error: BODY=BINARYMIME needs BDAT, not DATA";   /* RFC 3030 3 */
    if (refusal) {
        session_reply(s, refusal);
        return;
    }
    if (message_start(s) == 0)
        session_reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

/* ---- DATA: headers, body, end of message --------------------------
 * Message bytes collect in hdr_buf until the header section is complete
 * (DATA stage), then pass in chunks through the BODY stage into the spool
 * file; after the end of data come the checks, the EOM stage and the
 * commit. message_progress() moves a message on as far as it can without
 * waiting; every hook continuation calls it again. */

/* Once a message is refused, its remaining bytes are read and dropped. */
bool message_refused(const struct session *s)
{
    return s->commit->refusal[0] || s->dr.errors || s->data_bytes > s->cfg->message_size_limit;
}

/* The reply that refuses this DATA, most important reason first. */
static const char *data_refusal(struct session *s)
{
    if (s->dr.errors & (DR_ERR_BARE_LF | DR_ERR_LONE_CR))
        return "550 5.5.2 Error: bare <LF> or <CR> line ending in message data (SMTP smuggling protection)";
    if (s->dr.errors & DR_ERR_LONG_LINE)
        return "550 5.5.2 Error: message line longer than 1000 octets";
    if (s->data_bytes > s->cfg->message_size_limit)
        return "552 5.3.4 Message size exceeds fixed maximum message size";
    if (s->commit->refusal[0])
        return s->commit->refusal;
    if (s->commit->sw.err)
        return storage_reply(s->commit->sw.err);
    if (s->tx.nrcpts == 0)
        return "554 5.5.1 Error: no recipients left after policy";
    return NULL;
}

static void refuse_data(struct session *s, const char *text)
{
    if (!s->commit->refusal[0]) {
        snprintf(s->commit->refusal, sizeof s->commit->refusal, "%s", text);
        s->commit->refusal_by = NULL;
        s->commit->refusal_stage = POSTERN_STAGE_DATA;
    }
}

/* A link's refusal of the content at stage st, answered when the data ends. */
static void link_refuses_data(struct session *s, enum postern_stage st)
{
    if (!s->commit->refusal[0]) {
        refuse_data(s, s->tx.reply);
        s->commit->refusal_by = s->tx.verdict_by;
        s->commit->refusal_stage = st;
    }
}

/* DATA/BODY/EOM verdicts: a refusal is answered when the data ends. */
static void content_verdict(struct session *s, enum postern_stage st, postern_verdict v)
{
    if (v == POSTERN_REJECT || v == POSTERN_TEMPFAIL) {
        session_log_verdict(s, st, v);
        link_refuses_data(s, st);
    } else {
        session_verdict_proceeds(s, st, v);
    }
}

static void write_to_spool(struct session *s, const char *p, size_t n)
{
    if (!message_refused(s))
        spool_writer_write(&s->commit->sw, p, n);
}

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
    message_progress(s);
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

/* RFC 6409 8.2, 8.3: a submitted message (a login, or a submission
 * listener) gets the Date and Message-ID it lacks, as Postfix does. */
static void submission_headers(struct session *s)
{
    if (!s->cfg->submission_add_headers || (!s->authenticated && !s->submission))
        return;
    time_t now = time(NULL);
    struct tm tm;
    char v[512];
    if (headers_count(&s->tx.hdrs, "Date") == 0) {
        localtime_r(&now, &tm);
        strftime(v, sizeof v, " %a, %d %b %Y %H:%M:%S %z", &tm);
        headers_append(&s->tx.hdrs, "Date", v);
    }
    if (headers_count(&s->tx.hdrs, "Message-ID") == 0) {
        gmtime_r(&now, &tm);
        char stamp[32];
        strftime(stamp, sizeof stamp, "%Y%m%d%H%M%S", &tm);
        snprintf(v, sizeof v, " <%s.%s@%s>", stamp, s->tx.qid, s->cfg->hostname);
        headers_append(&s->tx.hdrs, "Message-ID", v);
    }
}

/* Mail relayed out of the organisation: a trusted or logged-in client, and
 * a recipient outside relay_domains. */
static bool relayed_out(const struct session *s)
{
    if (!s->authenticated && !config_is_trusted(s->cfg, (const struct sockaddr *)&s->peer))
        return false;
    for (size_t i = 0; i < s->tx.nrcpts; i++)
        if (!config_is_relay_domain(s->cfg, addr_domain(s->tx.rcpts[i].addr)))
            return true;
    return false;
}

/* Inside-only fields (spam scores, Authentication-Results) leave no copy on
 * mail relayed out: the incoming ones go when the header section is read,
 * and links never add one (plugin_host.c drops it), so a DKIM signature
 * made at the end of data never covers a field that is not there. */
static void remove_inside_headers(struct session *s)
{
    const char *list = s->cfg->outbound_remove_headers;
    s->tx.inside_only = NULL;
    if (!list || !list[strspn(list, ", \t")] || !relayed_out(s))
        return;
    s->tx.inside_only = list;
    size_t removed = 0;
    for (size_t i = 0; i < s->tx.hdrs.n;) {
        char name[256];
        snprintf(name, sizeof name, "%s", s->tx.hdrs.h[i].name);
        size_t nth = 0;        /* headers_delete counts fields of that name */
        for (size_t k = 0; k < i; k++)
            nth += !strcasecmp(s->tx.hdrs.h[k].name, name);
        if (header_name_listed(list, name) && headers_delete(&s->tx.hdrs, name, nth) == 0)
            removed++;
        else
            i++;
    }
    if (removed)
        log_info("%s: removed %zu inside-only header field(s) from mail relayed out", s->tx.qid, removed);
}

/* The header section is complete: parse it, keep what follows as body. */
static void headers_complete(struct session *s, size_t section_len, bool separator)
{
    if (s->mp.body == BODY_BINARYMIME)
        check_binary_headers(s, buf_head(&s->hdr_buf), section_len);
    size_t used = headers_parse(buf_head(&s->hdr_buf), section_len, &s->tx.hdrs);
    /* counted as received, before any plugin changes the headers */
    s->hops = (int)headers_count(&s->tx.hdrs, "Received");
    submission_headers(s);
    remove_inside_headers(s);
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
    session_run_stage(s, POSTERN_STAGE_DATA, NULL, 0, data_then);
}

static void body_then(struct session *s, postern_verdict v)
{
    content_verdict(s, POSTERN_STAGE_BODY, v);
    write_to_spool(s, buf_head(&s->chunk), s->chunk.len);
    buf_reset(&s->chunk);
    message_progress(s);
}

/* Message bytes (unstuffed DATA, or BDAT chunk bytes): counted, then kept
 * unless the message is already refused (its rest is read and dropped). */
static void message_bytes(struct session *s, const char *p, size_t n)
{
    s->data_bytes += n;
    s->tx.size = s->data_bytes;
    if (message_refused(s))
        return;
    /* RFC 5321 2.3.8: NUL is not text; refuse rather than pass it on
     * (BINARYMIME bodies may hold any octet; their headers may not) */
    if (s->mp.body != BODY_BINARYMIME && memchr(p, '\0', n))
        refuse_data(s, "554 5.6.0 Error: message contains NUL characters");
    if (s->part == PART_BODY) {
        buf_append(&s->chunk, p, n);
        return;
    }
    buf_append(&s->hdr_buf, p, n);
    if (s->hdr_buf.len > SMTP_MAX_HEADER_SECTION)
        refuse_data(s, "552 5.3.4 Error: message header section too large");
}

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
    s->tx.body_mem = spool_writer_readable(w, s->tx.body_start);    /* valid until the commit's rewrite */
    session_run_stage(s, POSTERN_STAGE_EOM, NULL, 0, eom_then);
}

void message_progress(struct session *s)
{
    if (s->phase != PH_DATA)
        return;    /* a hook runs: its continuation comes back here */
    if (message_refused(s)) {
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
    if (s->chunk.len && (s->data_done || s->chunk.len >= 16384 || !hooks_wanted(&s->tx, POSTERN_STAGE_BODY))) {
        session_run_stage(s, POSTERN_STAGE_BODY, buf_head(&s->chunk), s->chunk.len, body_then);
        return;
    }
    if (s->data_done && !s->chunk.len)
        end_of_data(s);
}

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
    cj->env.tls_optional = cj->sw.tls_optional = !cj->env.requiretls && s->cfg->tls_required_header &&
                                                 tls_required_no(&t->hdrs);
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
        routes |= t->rcpts[i].nexthop != NULL || t->rcpts[i].min_tls || t->rcpts[i].spam_reason;
    if (t->quarantine || routes || t->archive || t->decisions) {
        cj->has_state = true;
        snprintf(cj->flags.decisions, sizeof cj->flags.decisions, "%s", decisions_text(t->decisions));
        cj->flags.held = t->quarantine;
        cj->flags.archive = t->archive;
        if (t->quarantine)
            snprintf(cj->flags.reason, sizeof cj->flags.reason, "%.250s", t->hold_reason);
        cj->state = calloc(t->nrcpts ? t->nrcpts : 1, sizeof *cj->state);
        cj->nstate = cj->state ? t->nrcpts : 0;
        for (size_t i = 0; cj->state && i < t->nrcpts; i++) {
            cj->state[i].status = t->rcpts[i].spam_reason ? RCPT_QUARANTINED : RCPT_PENDING;
            if (t->rcpts[i].spam_reason)
                rtext_printf(&cj->state[i].last_reply, RCPT_REPLY_SIZE, "%s", t->rcpts[i].spam_reason);
            if (t->rcpts[i].nexthop)
                rtext_printf(&cj->state[i].nexthop, RCPT_NEXTHOP_SIZE, "%s", t->rcpts[i].nexthop);
            cj->state[i].min_tls = t->rcpts[i].min_tls;
        }
    }
    cj->work.run = commit_run;
    cj->work.done = commit_done;
}

static void eom_then(struct session *s, postern_verdict v)
{
    s->tx.body_mem = NULL;      /* the commit may rewrite what it pointed into */
    if (v == POSTERN_REJECT || v == POSTERN_TEMPFAIL) {
        session_log_verdict(s, POSTERN_STAGE_EOM, v);
        link_refuses_data(s, POSTERN_STAGE_EOM);
    } else {
        session_verdict_proceeds(s, POSTERN_STAGE_EOM, v);
    }
    const char *refusal = data_refusal(s);
    if (refusal) {
        char fields[3000];
        session_envelope_fields(s, POSTERN_STAGE_EOM, fields, sizeof fields);
        log_info("S%lu: %s: reject: DATA from [%s]: %s; %s", s->sid, s->tx.qid, s->tx.client_ip, refusal, fields);
        bool by_link = refusal == s->commit->refusal && s->commit->refusal_by;
        session_track_refusal(s, by_link ? s->commit->refusal_stage : POSTERN_STAGE_EOM, refusal,
                              by_link ? s->commit->refusal_by : "posternd");
        session_reply(s, refusal);
        message_abort(s);
        session_txn_restart(s);
        s->phase = PH_COMMAND;
        return;
    }
    if (s->tx.discard) {
        log_info("%s: discarded (%s) from=<%s> client=[%s]", s->tx.qid,
                 s->tx.verdict_by ? s->tx.verdict_by : "policy", s->tx.sender, s->tx.client_ip);
        track_message(s, NULL, "dropped", s->tx.verdict_by ? s->tx.verdict_by : "policy",
                      "discarded (the client heard 250)");
        session_replyf(s, "250 2.0.0 Ok: queued as %s", s->tx.qid);
        message_abort(s);
        session_txn_restart(s);
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
        spool_remove(cj->env.id, true);
}

/* The Message-ID as Postfix logs it ("message-id=<...>"), cut and masked. */
static void message_id_of(const struct header_list *h, char *out, size_t size)
{
    long i = headers_find(h, "Message-ID", 0);
    const char *v = i >= 0 ? h->h[i].value : "";
    v += strspn(v, " \t\r\n");
    snprintf(out, size, "%.*s", (int)strcspn(v, "\r\n"), v);
    mask_control_bytes(out, strlen(out), false);
}

static void commit_done(struct work *w)
{
    struct commit_job *cj = (struct commit_job *)w;
    struct session *s = cj->s;
    s->busy = false;
    s->commit = NULL;
    if (cj->result == 0) {
        char msgid[256];
        message_id_of(&s->tx.hdrs, msgid, sizeof msgid);
        log_info("%s: accepted from=<%s> size=%llu nrcpt=%zu client=[%s] session=S%lu message-id=%s%s", cj->env.id,
                 cj->env.sender, (unsigned long long)cj->env.size, cj->env.nrcpts, cj->env.client_ip, s->sid,
                 msgid[0] ? msgid : "<>", cj->flags.held ? " (quarantined)" : "");
        metric_inc(M_MESSAGES_ACCEPTED, NULL);     /* queued, whether or not the client heard it */
        track_message(s, &cj->env, cj->flags.held ? "quarantined" : "queued", cj->flags.held ? s->tx.verdict_by : NULL,
                      cj->flags.held ? cj->flags.reason : "250 2.0.0 Ok: queued");
        if (!s->dead)
            session_replyf(s, "250 2.0.0 Ok: queued as %s", cj->env.id);
        queue_add_committed(&cj->env, cj->sw.env_len, cj->has_state);
    } else {
        log_error("%s: queue file commit failed: %s", cj->env.id, strerror(cj->result));
        if (!s->dead)
            session_reply(s, storage_reply(cj->result));
    }
    commit_free(cj);
    if (s->dead) {
        session_free(s);
        return;
    }
    session_txn_restart(s);
    s->phase = PH_COMMAND;
    if (!s->in.len)
        buf_free(&s->in);   /* idle sessions keep no DATA-sized buffer */
    session_set_timeout(s);
    session_resume(s);
}

void message_chunk_bytes(struct session *s, const char *p, size_t n)
{
    /* line checks only: a chunked reader passes the bytes on unchanged */
    for (size_t off = 0; off < n && s->mp.body != BODY_BINARYMIME;) {
        size_t piece = n - off < sizeof reader_out ? n - off : sizeof reader_out, out_len;
        bool done;
        size_t used = data_reader_feed(&s->dr, p + off, piece, reader_out, &out_len, &done);
        if (!used)
            break;
        off += used;
    }
    message_bytes(s, p, n);
}

/* Feed buffered input to the DATA reader and on into the message. */
void message_process_input(struct session *s)
{
    if (s->bdat) {
        chunks_process(s);
        return;
    }
    while (s->in.len && s->phase == PH_DATA && !s->data_done) {
        size_t n = s->in.len < sizeof reader_out ? s->in.len : sizeof reader_out, out_len;
        bool done;
        size_t used = data_reader_feed(&s->dr, buf_head(&s->in), n, reader_out, &out_len, &done);
        buf_consume(&s->in, used);
        s->data_done = done;
        message_bytes(s, reader_out, out_len);
        message_progress(s);
    }
}
