/* bounce.c - builds a DSN (dsn.c) for a queued message and commits it as a
 * new message from the null sender to the original sender. */
#include "bounce.h"
#include "dsn.h"
#include "local_submit.h"
#include "log.h"
#include "queue.h"
#include "spool.h"
#include "workers.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEADERS (64 * 1024)
#define MAX_RETURNED_MESSAGE (10u << 20)   /* RET=FULL above this: headers only */

struct bounce_job {
    struct work work;
    struct qmsg *m;
    enum dsn_kind kind;
    bounce_done_fn done;
    struct dsn_rcpt *rcpts;      /* snapshot: the worker never reads the qmsg */
    struct rcpt_state *states;   /* copies behind rcpts: reply, remote host, command */
    char **orcpts;
    char envid[DSN_MAX_ENVID + 1];
    bool full;                   /* RET=FULL: return the whole message */
    uint64_t size;               /* of the original message */
    size_t n;
    char orig_id[QID_LEN];
    char *orig_sender;
    int64_t arrival;
    size_t body_off;
    struct envelope env;         /* of the DSN */
    struct spool_writer sw;
    int err;
};

static const struct config *cfg;
static bounce_commit_fn commit_dsn;

void bounce_init(const struct config *c, bounce_commit_fn commit)
{
    cfg = c;
    commit_dsn = commit;
}

/* The original header section (our Received first), read from the spool. */
static size_t read_headers(const struct bounce_job *b, char *out, size_t cap)
{
    int fd = spool_open_message(b->orig_id);
    if (fd < 0)
        return 0;
    ssize_t r = pread(fd, out, cap, (off_t)b->body_off);
    close(fd);
    if (r <= 0)
        return 0;
    char *end = memmem(out, (size_t)r, "\r\n\r\n", 4);
    return end ? (size_t)(end - out) + 2 : (size_t)r;
}

/* RET=FULL: the whole original message (our Received first); NULL if it
 * cannot be read, and the notice then carries the headers only. */
static char *read_message(const struct bounce_job *b, size_t *len)
{
    char *msg = b->size < SIZE_MAX ? malloc((size_t)b->size + 1) : NULL;
    int fd = msg ? spool_open_message(b->orig_id) : -1;
    ssize_t r = fd >= 0 ? pread(fd, msg, (size_t)b->size, (off_t)b->body_off) : -1;
    if (fd >= 0)
        close(fd);
    if (r != (ssize_t)b->size) {
        free(msg);
        return NULL;
    }
    *len = (size_t)r;
    return msg;
}

static void bounce_run(struct work *w)
{
    struct bounce_job *b = (struct bounce_job *)w;
    char *headers = malloc(MAX_HEADERS);
    size_t full_len = 0;
    char *full = b->full && b->kind == DSN_FAILED ? read_message(b, &full_len) : NULL;
    struct dsn_report rep = {
        .reporting_mta = cfg->hostname, .queue_id = b->orig_id, .orig_sender = b->orig_sender,
        .arrival = b->arrival, .now = (int64_t)time(NULL), .lifetime = cfg->max_queue_lifetime,
        .kind = b->kind, .envid = b->envid,
        .rcpts = b->rcpts, .nrcpts = b->n, .headers = headers,
        .headers_len = headers ? read_headers(b, headers, MAX_HEADERS) : 0,
        .message = full, .message_len = full_len,
    };
    struct buf msg;
    buf_init(&msg);
    if (dsn_build(&rep, &msg) < 0) {
        b->err = ENOMEM;
    } else if (spool_writer_open(&b->sw, &b->env) < 0) {
        b->err = b->sw.err;
        spool_writer_abort(&b->sw);
    } else {
        char recv[512];
        spool_writer_write(&b->sw, recv, local_received(recv, sizeof recv, cfg->hostname, b->env.id));
        spool_writer_write(&b->sw, buf_head(&msg), msg.len);
        b->env.size = b->sw.written;
        b->err = spool_writer_commit(&b->sw);
    }
    buf_free(&msg);
    free(headers);
    free(full);
}

static void bounce_free(struct bounce_job *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->orcpts[i]);
    }
    rcpt_states_free(b->states, b->n);
    free(b->orcpts);
    free(b->rcpts);
    free(b->orig_sender);
    envelope_free(&b->env);
    free(b);
}

static const char *const kind_name[] = {[DSN_FAILED] = "non-delivery", [DSN_DELAYED] = "delay",
                                       [DSN_RELAYED] = "success (relayed)"};

static void bounce_finished(struct work *w)
{
    struct bounce_job *b = (struct bounce_job *)w;
    if (b->err == 0) {
        log_info("%s: sender %s notification: %s (to <%s>)", b->orig_id, kind_name[b->kind], b->env.id,
                 b->orig_sender);
        commit_dsn(&b->env, b->sw.env_len);
    } else {
        log_error("%s: cannot queue the %s notification: %s", b->orig_id, kind_name[b->kind], strerror(b->err));
    }
    b->done(b->m, b->kind, b->err);
    bounce_free(b);
}

/* Does recipient r belong in a notice of this kind? */
static bool covered(const struct qrcpt *r, enum dsn_kind kind)
{
    switch (kind) {
    case DSN_FAILED: return r->st.status == RCPT_FAILED;
    case DSN_RELAYED: return r->st.status == RCPT_RELAYED;
    case DSN_DELAYED: return r->st.status == RCPT_PENDING && qrcpt_wants(r, DSN_NOTIFY_DELAY);
    }
    return false;
}

void bounce_start(struct qmsg *m, enum dsn_kind kind, bounce_done_fn done)
{
    struct bounce_job *b = calloc(1, sizeof *b);
    if (b) {
        b->rcpts = calloc(m->nrcpts, sizeof *b->rcpts);
        b->states = calloc(m->nrcpts, sizeof *b->states);
        b->orcpts = calloc(m->nrcpts, sizeof *b->orcpts);
        b->env.rcpts = calloc(1, sizeof *b->env.rcpts);
    }
    if (!b || !b->rcpts || !b->states || !b->orcpts || !b->env.rcpts) {
        if (b)
            bounce_free(b);
        done(m, kind, ENOMEM);
        return;
    }
    for (size_t i = 0; i < m->nrcpts; i++) {
        if (!covered(&m->rcpts[i], kind))
            continue;
        const struct rcpt_state *st = &b->states[b->n];
        rcpt_state_copy(&b->states[b->n], &m->rcpts[i].st);   /* out of memory: a text is missing */
        b->orcpts[b->n] = m->rcpts[i].dsn.orcpt ? strdup(m->rcpts[i].dsn.orcpt) : NULL;
        b->rcpts[b->n] = (struct dsn_rcpt){
            .addr = m->rcpts[i].addr,             /* stable: m is pinned until done() */
            .last_reply = rtext_has(st->last_reply) ? st->last_reply.s : "unknown error",
            .orcpt = b->orcpts[b->n], .remote = rtext_str(st->remote), .in_reply_to = rtext_str(st->in_reply_to),
        };
        b->n++;
    }
    b->m = m;
    b->kind = kind;
    b->done = done;
    snprintf(b->envid, sizeof b->envid, "%s", qtext(m->envid));
    /* a BINARYMIME body may hold any octet: a notice sent by DATA returns headers only */
    b->full = m->ret == DSN_RET_FULL && m->size <= MAX_RETURNED_MESSAGE && m->body != BODY_BINARYMIME;
    b->size = m->size;
    memcpy(b->orig_id, m->id, QID_LEN);
    b->orig_sender = strdup(m->sender);
    b->arrival = m->arrival;
    b->body_off = m->body_off;
    /* the DSN's own envelope: null sender, to the original sender */
    struct envelope *e = &b->env;
    local_envelope_init(e, cfg->hostname);
    e->sender = strdup("");
    e->rcpts[0] = strdup(m->sender);
    e->nrcpts = 1;
    e->smtputf8 = m->smtputf8;
    e->requiretls = m->requiretls;      /* RFC 8689: the notice carries the message's own demand */
    b->work.run = bounce_run;
    b->work.done = bounce_finished;
    workers_submit(&b->work);
}
