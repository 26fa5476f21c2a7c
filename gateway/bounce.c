/* bounce.c - builds a DSN (dsn.c) for a queued message and commits it as a
 * new message from the null sender to the original sender. */
#include "bounce.h"
#include "dsn.h"
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

struct bounce_job {
    struct work work;
    struct qmsg *m;
    bool delayed;
    bounce_done_fn done;
    struct dsn_rcpt *rcpts;      /* snapshot: the worker never reads the qmsg */
    char **texts;                /* owned copies behind rcpts */
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

void bounce_init(const struct config *c) { cfg = c; }

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

static void bounce_run(struct work *w)
{
    struct bounce_job *b = (struct bounce_job *)w;
    char *headers = malloc(MAX_HEADERS);
    struct dsn_report rep = {
        .reporting_mta = cfg->hostname, .queue_id = b->orig_id, .orig_sender = b->orig_sender,
        .arrival = b->arrival, .now = (int64_t)time(NULL), .delayed = b->delayed,
        .rcpts = b->rcpts, .nrcpts = b->n, .headers = headers,
        .headers_len = headers ? read_headers(b, headers, MAX_HEADERS) : 0,
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
        char date[64];
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", &tm);
        int n = snprintf(recv, sizeof recv, "Received: by %s (Postern) id %s; %s\r\n", cfg->hostname,
                         b->env.id, date);
        spool_writer_write(&b->sw, recv, (size_t)n);
        spool_writer_write(&b->sw, buf_head(&msg), msg.len);
        b->env.size = b->sw.written;
        b->err = spool_writer_commit(&b->sw);
    }
    buf_free(&msg);
    free(headers);
}

static void bounce_free(struct bounce_job *b)
{
    for (size_t i = 0; i < b->n; i++)
        free(b->texts[i]);
    free(b->texts);
    free(b->rcpts);
    free(b->orig_sender);
    envelope_free(&b->env);
    free(b);
}

static void bounce_finished(struct work *w)
{
    struct bounce_job *b = (struct bounce_job *)w;
    if (b->err == 0) {
        log_info("%s: sender %s notification: %s (to <%s>)", b->orig_id, b->delayed ? "delay" : "non-delivery",
                 b->env.id, b->orig_sender);
        queue_add_committed(&b->env, b->sw.env_len);
    } else {
        log_error("%s: cannot queue the %s notification: %s", b->orig_id, b->delayed ? "delay" : "bounce",
                  strerror(b->err));
    }
    b->done(b->m, b->delayed, b->err);
    bounce_free(b);
}

void bounce_start(struct qmsg *m, bool delayed, bounce_done_fn done)
{
    struct bounce_job *b = calloc(1, sizeof *b);
    if (b) {
        b->rcpts = calloc(m->nrcpts, sizeof *b->rcpts);
        b->texts = calloc(m->nrcpts, sizeof *b->texts);
        b->env.rcpts = calloc(1, sizeof *b->env.rcpts);
    }
    if (!b || !b->rcpts || !b->texts || !b->env.rcpts) {
        if (b)
            bounce_free(b);
        done(m, delayed, ENOMEM);
        return;
    }
    char want = delayed ? RCPT_PENDING : RCPT_FAILED;
    for (size_t i = 0; i < m->nrcpts; i++) {
        if (m->rcpts[i].st.status != want)
            continue;
        b->texts[b->n] = strdup(m->rcpts[i].st.last_reply[0] ? m->rcpts[i].st.last_reply : "unknown error");
        b->rcpts[b->n].addr = m->rcpts[i].addr;   /* stable: m is pinned until done() */
        b->rcpts[b->n].last_reply = b->texts[b->n];
        b->n++;
    }
    b->m = m;
    b->delayed = delayed;
    b->done = done;
    memcpy(b->orig_id, m->id, QID_LEN);
    b->orig_sender = strdup(m->sender);
    b->arrival = m->arrival;
    b->body_off = m->body_off;
    /* the DSN's own envelope: null sender, to the original sender */
    struct envelope *e = &b->env;
    qid_generate(e->id);
    e->arrival = (int64_t)time(NULL);
    snprintf(e->client_ip, sizeof e->client_ip, "127.0.0.1");
    snprintf(e->helo, sizeof e->helo, "%s", cfg->hostname);
    snprintf(e->proto, sizeof e->proto, "LOCAL");
    e->sender = strdup("");
    e->rcpts[0] = strdup(m->sender);
    e->nrcpts = 1;
    e->smtputf8 = m->smtputf8;
    b->work.run = bounce_run;
    b->work.done = bounce_finished;
    workers_submit(&b->work);
}
