/* smtp_server.c - inbound SMTP. One struct session per connection, driven
 * by the event loop. Commands are dispatched through one table (verb, the
 * hook stage it will run, its precondition, its handler), so the path
 * stage -> check -> handler reads in one place. DATA bytes go through the
 * data_reader straight into the spool file; the fsync/rename commit runs on
 * a worker, and only its completion sends "250 ... queued as ID". */
#include "smtp_server.h"
#include "buf.h"
#include "data_reader.h"
#include "header_scan.h"
#include "event.h"
#include "log.h"
#include "queue.h"
#include "smtp_parse.h"
#include "spool.h"
#include "workers.h"
#include <errno.h>
#include <fcntl.h>
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

enum phase { PH_COMMAND, PH_DATA, PH_COMMIT, PH_CLOSING };

struct commit_job;

struct session {
    struct ev_watch w;
    unsigned long sid;
    struct sockaddr_storage peer;
    char peer_ip[64];
    struct buf in, out;
    enum phase phase;
    bool helo_done, esmtp, skip_line, dead;
    char helo[256];
    int errors;
    uint64_t deadline_ms;
    /* transaction */
    bool in_mail;
    char *sender;
    struct mail_params mp;
    char **rcpts;
    size_t nrcpts;
    struct data_reader dr;
    struct header_scan hs;
    struct commit_job *commit;     /* open while in DATA and COMMIT */
    uint64_t data_bytes;
    struct session *prev, *next;
};

struct commit_job {
    struct work work;
    struct session *s;
    struct spool_writer sw;
    struct envelope env;
    int result;                     /* errno from the commit, 0 = durable */
};

static const struct config *cfg;
static struct ev_watch listeners[CONFIG_MAX_LISTEN];
static int nlisteners;
static struct session *sessions;
static int nsessions;
static unsigned long next_sid;
static bool shutting_down;

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

static void txn_reset(struct session *s)
{
    free(s->sender);
    s->sender = NULL;
    for (size_t i = 0; i < s->nrcpts; i++)
        free(s->rcpts[i]);
    free(s->rcpts);
    s->rcpts = NULL;
    s->nrcpts = 0;
    s->in_mail = false;
    memset(&s->mp, 0, sizeof s->mp);
}

static void session_free(void *p)
{
    struct session *s = p;
    txn_reset(s);
    buf_free(&s->in);
    buf_free(&s->out);
    free(s);
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
    log_info("S%lu: disconnect from [%s]", s->sid, s->peer_ip);
    if (s->phase == PH_DATA && s->commit) {
        spool_writer_abort(&s->commit->sw);
        envelope_free(&s->commit->env);
        free(s->commit);
        s->commit = NULL;
    }
    /* a commit in flight owns the session until it completes */
    if (s->phase != PH_COMMIT)
        ev_defer_free(s, session_free);
}

static void set_timeout(struct session *s)
{
    int secs = s->phase == PH_DATA ? cfg->data_timeout : cfg->smtp_timeout;
    s->deadline_ms = ev_now_ms() + (uint64_t)secs * 1000;
}

/* Write pending replies; returns -1 if the session was closed. */
static int session_flush(struct session *s)
{
    while (s->out.len) {
        ssize_t w = send(s->w.fd, buf_head(&s->out), s->out.len, MSG_NOSIGNAL);
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
    /* read only while there is room and replies are not piling up; a commit
     * in flight pauses input so pipelined commands wait for the 250 */
    bool readable = (s->phase == PH_COMMAND || s->phase == PH_DATA) && s->in.len < MAX_INPUT_BUFFER &&
                    s->out.len < MAX_OUTPUT_BACKLOG;
    ev_mod(&s->w, (readable ? EPOLLIN : 0) | (s->out.len ? EPOLLOUT : 0));
    return 0;
}

static void close_after_reply(struct session *s)
{
    s->phase = PH_CLOSING;
}

/* ---- commands ----------------------------------------------------- */

static void do_helo(struct session *s, const char *args, bool esmtp)
{
    if (!*args) {
        replyf(s, "501 5.5.4 Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
        return;
    }
    txn_reset(s);
    snprintf(s->helo, sizeof s->helo, "%s", args);
    s->helo_done = true;
    s->esmtp = esmtp;
    if (!esmtp) {
        replyf(s, "250 %s", cfg->hostname);
        return;
    }
    replyf(s, "250-%s", cfg->hostname);
    reply(s, "250-PIPELINING");
    replyf(s, "250-SIZE %zu", cfg->message_size_limit);
    reply(s, "250-8BITMIME");
    reply(s, "250-ENHANCEDSTATUSCODES");
    reply(s, "250 SMTPUTF8");
}

static void cmd_helo(struct session *s, const char *args) { do_helo(s, args, false); }
static void cmd_ehlo(struct session *s, const char *args) { do_helo(s, args, true); }

static void cmd_mail(struct session *s, const char *args)
{
    struct path_result pr;
    struct mail_params mp;
    if (smtp_parse_mail(args, &pr, &mp) < 0) {
        reply(s, pr.reply);
        return;
    }
    if (!s->esmtp && (mp.has_size || mp.body || mp.smtputf8)) {
        reply(s, "555 5.5.4 MAIL parameters need EHLO");
        return;
    }
    if (mp.has_size && mp.size > cfg->message_size_limit) {
        reply(s, "552 5.3.4 Message size exceeds fixed maximum message size");
        return;
    }
    s->sender = strdup(pr.addr);
    s->mp = mp;
    s->in_mail = true;
    reply(s, "250 2.1.0 Ok");
}

static bool rcpt_allowed(struct session *s, const char *addr)
{
    if (config_is_trusted(cfg, (struct sockaddr *)&s->peer))
        return true;
    return config_is_relay_domain(cfg, addr_domain(addr));
}

static void cmd_rcpt(struct session *s, const char *args)
{
    struct path_result pr;
    if (smtp_parse_rcpt(args, s->mp.smtputf8, &pr) < 0) {
        reply(s, pr.reply);
        return;
    }
    if (!strchr(pr.addr, '@')) {
        replyf(s, "550 5.1.1 <%s>: no local mailboxes on this gateway", pr.addr);
        return;
    }
    if (!rcpt_allowed(s, pr.addr)) {
        log_info("S%lu: reject: RCPT from [%s]: relay access denied; from=<%s> to=<%s>", s->sid,
                 s->peer_ip, s->sender, pr.addr);
        replyf(s, "554 5.7.1 <%s>: Relay access denied", pr.addr);
        return;
    }
    if (s->nrcpts >= (size_t)cfg->max_recipients) {
        reply(s, "452 4.5.3 Error: too many recipients");
        return;
    }
    for (size_t i = 0; i < s->nrcpts; i++)
        if (!strcmp(s->rcpts[i], pr.addr)) {
            reply(s, "250 2.1.5 Ok");      /* duplicate: deliver once */
            return;
        }
    char **n = realloc(s->rcpts, (s->nrcpts + 1) * sizeof *n);
    if (!n || !(n[s->nrcpts] = strdup(pr.addr))) {
        s->rcpts = n ? n : s->rcpts;
        reply(s, "452 4.3.0 Insufficient system resources");
        return;
    }
    s->rcpts = n;
    s->nrcpts++;
    reply(s, "250 2.1.5 Ok");
}

static const char *received_proto(const struct session *s)
{
    if (s->mp.smtputf8)
        return "UTF8SMTP";
    return s->esmtp ? "ESMTP" : "SMTP";
}

static void write_received(struct session *s, struct commit_job *cj)
{
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", &tm);
    struct buf b;
    buf_init(&b);
    buf_printf(&b, "Received: from %s ([%s])\r\n\tby %s (Postern) with %s id %s", s->helo, s->peer_ip,
               cfg->hostname, received_proto(s), cj->env.id);
    if (s->nrcpts == 1)
        buf_printf(&b, "\r\n\tfor <%s>", s->rcpts[0]);
    buf_printf(&b, "; %s\r\n", date);
    spool_writer_write(&cj->sw, buf_head(&b), b.len);
    buf_free(&b);
}

/* Move the transaction's envelope into a new commit job and open the spool file. */
static struct commit_job *commit_open(struct session *s)
{
    struct commit_job *cj = calloc(1, sizeof *cj);
    if (!cj)
        return NULL;
    struct envelope *e = &cj->env;
    qid_generate(e->id);
    e->arrival = (int64_t)time(NULL);
    snprintf(e->client_ip, sizeof e->client_ip, "%s", s->peer_ip);
    snprintf(e->helo, sizeof e->helo, "%s", s->helo);
    snprintf(e->proto, sizeof e->proto, "%s", received_proto(s));
    e->body = s->mp.body;
    e->smtputf8 = s->mp.smtputf8;
    e->sender = s->sender;
    e->rcpts = s->rcpts;
    e->nrcpts = s->nrcpts;
    s->sender = NULL;
    s->rcpts = NULL;
    s->nrcpts = 0;
    cj->s = s;
    if (spool_writer_open(&cj->sw, e) < 0) {
        cj->result = cj->sw.err;
        return cj;
    }
    /* the envelope must not change under the Received header: restore the
     * session view for the header, then move it back */
    s->rcpts = e->rcpts;
    s->nrcpts = e->nrcpts;
    write_received(s, cj);
    s->rcpts = NULL;
    s->nrcpts = 0;
    return cj;
}

static const char *storage_reply(int err)
{
    return err == ENOSPC || err == EDQUOT ? "452 4.3.1 Insufficient system storage"
                                          : "451 4.3.0 Error: queue file write error";
}

static void cmd_data(struct session *s, const char *args)
{
    if (*args) {
        reply(s, "501 5.5.4 Syntax: DATA takes no arguments");
        return;
    }
    if (!s->in_mail) {
        reply(s, "503 5.5.1 Error: need MAIL command");
        return;
    }
    if (s->nrcpts == 0) {
        reply(s, "554 5.5.1 Error: no valid recipients");
        return;
    }
    struct commit_job *cj = commit_open(s);
    if (!cj || cj->result) {
        log_error("S%lu: cannot create queue file: %s", s->sid, strerror(cj ? cj->result : ENOMEM));
        reply(s, storage_reply(cj ? cj->result : ENOMEM));
        if (cj) {
            spool_writer_abort(&cj->sw);
            envelope_free(&cj->env);
            free(cj);
        }
        txn_reset(s);
        return;
    }
    s->commit = cj;
    s->in_mail = false;
    s->data_bytes = 0;
    data_reader_init(&s->dr);
    header_scan_init(&s->hs);
    s->phase = PH_DATA;
    reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

static void cmd_rset(struct session *s, const char *args)
{
    (void)args;
    txn_reset(s);
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

/* The command table. stage names the hook-chain stage the command will run
 * (the hook chain arrives with the plugin issue; NULL = no hook). */
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
    {VERB_DATA, "data", NULL, cmd_data},
    {VERB_RSET, NULL, NULL, cmd_rset},
    {VERB_NOOP, NULL, NULL, cmd_noop},
    {VERB_QUIT, NULL, NULL, cmd_quit},
    {VERB_VRFY, NULL, NULL, cmd_vrfy},
    {VERB_EXPN, NULL, NULL, cmd_not_implemented},
    {VERB_HELP, NULL, NULL, cmd_help},
    {VERB_STARTTLS, NULL, need_helo, cmd_not_implemented},
    {VERB_BDAT, NULL, need_helo, cmd_not_implemented},
    {VERB_AUTH, NULL, need_helo, cmd_not_implemented},
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

/* ---- DATA and commit ---------------------------------------------- */

static void commit_run(struct work *w)
{
    struct commit_job *cj = (struct commit_job *)w;
    cj->result = spool_writer_commit(&cj->sw);
}

static void commit_done(struct work *w);

static void data_finished(struct session *s)
{
    struct commit_job *cj = s->commit;
    const char *refusal = NULL;
    if (s->dr.errors & (DR_ERR_BARE_LF | DR_ERR_LONE_CR))
        refusal = "550 5.5.2 Error: bare <LF> or <CR> line ending in message data (SMTP smuggling protection)";
    else if (s->dr.errors & DR_ERR_LONG_LINE)
        refusal = "550 5.5.2 Error: message line longer than 1000 octets";
    else if (s->data_bytes > cfg->message_size_limit)
        refusal = "552 5.3.4 Message size exceeds fixed maximum message size";
    else if (cj->sw.err)
        refusal = storage_reply(cj->sw.err);
    if (refusal) {
        log_info("S%lu: %s: reject: DATA from [%s]: %s", s->sid, cj->env.id, s->peer_ip, refusal);
        reply(s, refusal);
        spool_writer_abort(&cj->sw);
        envelope_free(&cj->env);
        free(cj);
        s->commit = NULL;
        s->phase = PH_COMMAND;
        return;
    }
    cj->env.size = cj->sw.written;
    cj->env.hops = cj->sw.hops = s->hs.received + 1;   /* theirs and ours */
    cj->work.run = commit_run;
    cj->work.done = commit_done;
    s->phase = PH_COMMIT;
    workers_submit(&cj->work);
}

static void resume_session(struct session *s);

static void commit_done(struct work *w)
{
    struct commit_job *cj = (struct commit_job *)w;
    struct session *s = cj->s;
    if (cj->result == 0) {
        log_info("%s: accepted from=<%s> size=%llu nrcpt=%zu client=[%s] session=S%lu", cj->env.id,
                 cj->env.sender, (unsigned long long)cj->env.size, cj->env.nrcpts, cj->env.client_ip, s->sid);
        if (!s->dead)
            replyf(s, "250 2.0.0 Ok: queued as %s", cj->env.id);
        queue_add_committed(&cj->env, cj->sw.env_len);
    } else {
        log_error("%s: queue file commit failed: %s", cj->env.id, strerror(cj->result));
        if (!s->dead)
            reply(s, storage_reply(cj->result));
    }
    envelope_free(&cj->env);
    free(cj);
    s->commit = NULL;
    if (s->dead) {
        session_free(s);
        return;
    }
    s->phase = PH_COMMAND;
    if (!s->in.len)
        buf_free(&s->in);   /* idle sessions keep no DATA-sized buffer */
    set_timeout(s);
    resume_session(s);
}

/* Feed buffered input to the DATA reader and the spool file. */
static void process_data(struct session *s)
{
    static char scratch[MAX_INPUT_BUFFER];
    while (s->in.len && s->phase == PH_DATA) {
        size_t n = s->in.len < sizeof scratch ? s->in.len : sizeof scratch, out_len;
        bool done;
        size_t used = data_reader_feed(&s->dr, buf_head(&s->in), n, scratch, &out_len, &done);
        buf_consume(&s->in, used);
        s->data_bytes += out_len;
        header_scan_feed(&s->hs, scratch, out_len);
        /* stop writing once the message is refused anyway */
        if (!s->dr.errors && s->data_bytes <= cfg->message_size_limit)
            spool_writer_write(&s->commit->sw, scratch, out_len);
        if (done)
            data_finished(s);
    }
}

/* ---- input -------------------------------------------------------- */

static void process_commands(struct session *s)
{
    while (s->phase == PH_COMMAND && s->in.len && s->out.len < MAX_OUTPUT_BACKLOG) {
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
        size_t len = linelen - 1;
        if (len && head[len - 1] == '\r')
            len--;
        memcpy(line, head, len);
        line[len] = '\0';
        buf_consume(&s->in, linelen);
        run_command(s, line);
        if (s->errors >= cfg->max_errors && s->phase != PH_CLOSING) {
            log_info("S%lu: too many errors from [%s]", s->sid, s->peer_ip);
            reply(s, "421 4.7.0 Error: too many errors");
            close_after_reply(s);
        }
        if (s->phase == PH_DATA)
            process_data(s);
    }
}

static void resume_session(struct session *s)
{
    if (s->phase == PH_DATA)
        process_data(s);
    process_commands(s);
    session_flush(s);
}

static void session_on_event(void *ctx, uint32_t events)
{
    struct session *s = ctx;
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
            ssize_t r = recv(s->w.fd, t, room, 0);
            if (r > 0) {
                buf_commit(&s->in, (size_t)r);
                set_timeout(s);
                if ((size_t)r < room)
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

/* ---- listeners ---------------------------------------------------- */

static void accept_one(int fd, struct sockaddr_storage *ss)
{
    if (nsessions >= cfg->max_sessions || shutting_down) {
        static const char msg[] = "421 4.3.2 Too many connections, try again later\r\n";
        ssize_t w = send(fd, msg, sizeof msg - 1, MSG_NOSIGNAL);
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
    sockaddr_ip_text((struct sockaddr *)ss, s->peer_ip, sizeof s->peer_ip);
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
    log_info("S%lu: connect from [%s]", s->sid, s->peer_ip);
    replyf(s, "220 %s ESMTP Postern", cfg->hostname);
    set_timeout(s);
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
        accept_one(fd, &ss);
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
        if (s->phase == PH_COMMIT || now < s->deadline_ms)
            continue;
        log_info("S%lu: timeout from [%s]", s->sid, s->peer_ip);
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
        if (s->phase == PH_COMMIT) {
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
