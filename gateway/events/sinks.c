/* sinks.c - see sinks.h. A sink that has sent all there was waits
 * LINGER_MS before reading again, so a steady trickle goes in batches,
 * not a request (and, for a webhook, a TLS handshake) per event. */
#include "sinks.h"
#include "event_record.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define READ_BYTES (1u << 20)       /* read from the outbox at a time (lines are far shorter) */
#define BACKOFF_MAX_S 60
#define LINGER_MS 250
#define SINK_STOP_WAIT_S 3               /* after a batch that was not full: let more come first */

struct sink_run {
    struct event_sink s;            /* a copy: a reload does not touch it */
    const struct sink_ops *ops;
    void *state;
    int reader;
    struct outbox_pos start;        /* its cursor when registered */
    pthread_t thread;
    bool started;
};

static struct sink_run runs[EVENT_SINKS_MAX];
static size_t nruns;
static atomic_bool stopping;      /* sinks_stop: every thread ends */

static bool sinks_stopping(void) { return atomic_load(&stopping) || outbox_stopping(); }

/* Sleep up to ms, in steps of 100 ms, until the sinks stop. */
static void pause_unless_stopping_ms(int ms)
{
    for (int i = 0; i < ms / 100 && !sinks_stopping(); i++)
        usleep(100000);
}

/* Sleep up to seconds, in steps, until the sinks stop. */
static void pause_unless_stopping(int seconds)
{
    for (int i = 0; i < seconds * 10 && !sinks_stopping(); i++)
        usleep(100000);
}

/* The events of buf (lines) this sink takes, up to its batch size, into
 * b; *used is how many bytes of buf they and the skipped ones cover. */
static size_t take_batch(const struct sink_run *r, char *buf, size_t len, const char **ev, size_t *lens,
                         size_t *used)
{
    size_t n = 0, at = 0;
    while (at < len && n < (size_t)r->s.batch) {
        char *nl = memchr(buf + at, '\n', len - at);
        size_t l = (size_t)(nl - (buf + at));
        int type = event_record_type(buf + at, l);
        if (type >= 0 && (r->s.types & (1u << type))) {
            ev[n] = buf + at;
            lens[n++] = l;
        }
        at += l + 1;
    }
    *used = at;
    return n;
}

/* How much to read next: about a batch (a quarter more), by the size of
 * the lines just taken. Reading READ_BYTES each time re-read the rest of
 * it for every batch of a sink behind (four times the bytes it sent, in
 * its system time). */
static size_t next_read(const struct sink_run *r, size_t used, size_t n)
{
    if (!n)
        return READ_BYTES;
    size_t line = used / n + 1, want = line * (size_t)r->s.batch;
    want += want / 4 + 4096;
    return want < READ_BYTES ? want : READ_BYTES;
}

static void sent(struct sink_run *r, size_t n)
{
    char labels[96];
    metric_add(M_EVENTS_SENT, metric_labels(labels, sizeof labels, "sink", r->s.name, NULL), n);
}

/* One batch to the sink (opened the first time): 0, or -1 with why. */
static int send_batch(struct sink_run *r, const struct sink_batch *b, char *why, size_t whylen)
{
    if (!r->state && !(r->state = r->ops->open(&r->s, why, whylen)))
        return -1;
    return r->ops->send(r->state, &r->s, b, why, whylen);
}

static void *sink_thread(void *arg)
{
    struct sink_run *r = arg;
    char tname[16];
    snprintf(tname, sizeof tname, "pd-sink-%.7s", r->s.name);     /* for top -H and perf */
    pthread_setname_np(pthread_self(), tname);
    char *buf = malloc(READ_BYTES + 1);
    const char **ev = calloc((size_t)r->s.batch, sizeof *ev);
    size_t *lens = calloc((size_t)r->s.batch, sizeof *lens);
    struct outbox_pos pos = r->start;
    if (!buf || !ev || !lens) {
        log_error("events: sink %s: out of memory, not sending", r->s.name);
        goto out;
    }
    int failures = 0;
    size_t want = READ_BYTES;
    char why[300], labels[96];
    while (!sinks_stopping()) {
        struct outbox_pos next;
        size_t len = outbox_read(r->reader, &pos, buf, want, &next, 500);
        if (!len) {
            want = READ_BYTES;      /* nothing new, or a line longer than the last ones: read it all next */
            if (next.seg != pos.seg || next.off != pos.off)
                outbox_ack(r->reader, &next);      /* past events the outbox dropped */
            pos = next;
            continue;
        }
        size_t used, n = take_batch(r, buf, len, ev, lens, &used);
        next = (struct outbox_pos){pos.seg, pos.off + used};
        want = next_read(r, used, n);
        struct sink_batch b = {ev, lens, n};
        if (n && send_batch(r, &b, why, sizeof why) < 0) {
            metric_inc(M_EVENTS_SEND_FAILURES, metric_labels(labels, sizeof labels, "sink", r->s.name, NULL));
            int wait = failures < 6 ? 1 << failures : BACKOFF_MAX_S;
            if (wait > BACKOFF_MAX_S)
                wait = BACKOFF_MAX_S;
            if (failures++ == 0 || failures % 20 == 0)
                log_warn("events: sink %s: %s (%d failure(s) in a row; trying again in %ds)", r->s.name, why, failures,
                         wait);
            pause_unless_stopping(wait);
            continue;
        }
        if (failures)
            log_info("events: sink %s: sending again after %d failure(s)", r->s.name, failures);
        failures = 0;
        sent(r, n);
        outbox_ack(r->reader, &next);
        pos = next;
        if (n < (size_t)r->s.batch && used == len)      /* it took all there was: a request per event costs */
            pause_unless_stopping_ms(LINGER_MS);
    }
out:
    free(buf);
    free(ev);
    free(lens);
    return NULL;
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

int sinks_start(const struct config *cfg, char *err, size_t errlen)
{
    for (size_t i = 0; i < cfg->event_sinks.n && i < EVENT_SINKS_MAX; i++) {
        struct sink_run *r = &runs[nruns];
        r->s = cfg->event_sinks.v[i];
        r->s.ca_file = dup_or_null(r->s.ca_file);
        r->s.secret = NULL;
        if (cfg->event_sinks.v[i].secret && (r->s.secret = malloc(r->s.secret_len ? r->s.secret_len : 1)))
            memcpy(r->s.secret, cfg->event_sinks.v[i].secret, r->s.secret_len);
        r->ops = r->s.kind == SINK_WEBHOOK ? &webhook_sink_ops : r->s.kind == SINK_REDIS ? &redis_sink_ops
                                                                                    : &amqp_sink_ops;
        /* registered before its thread runs: the outbox never removes what a
         * sink has not sent because the sink was not counted yet */
        if ((r->reader = outbox_reader(r->s.name, &r->start)) < 0) {
            snprintf(err, errlen, "events: sink %s: too many sinks", r->s.name);
            return -1;
        }
        if (pthread_create(&r->thread, NULL, sink_thread, r) != 0) {
            snprintf(err, errlen, "events: sink %s: cannot start its thread", r->s.name);
            return -1;
        }
        r->started = true;
        nruns++;
    }
    return 0;
}

void sinks_stop(void)
{
    /* each thread ends after the request in hand. Wait for it (a thread still running at exit would
     * race the libraries' own cleanup), up to SINK_STOP_WAIT_S each; one
     * that takes longer (a request within its timeout) is left, logged. */
    atomic_store(&stopping, true);
    for (size_t i = 0; i < nruns; i++) {
        if (!runs[i].started)
            continue;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += SINK_STOP_WAIT_S;
        runs[i].started = false;
        if (pthread_timedjoin_np(runs[i].thread, NULL, &until) != 0) {
            log_warn("events: sink %s: still in a request at exit; not waited for", runs[i].s.name);
            pthread_detach(runs[i].thread);        /* it keeps its copy of the sink */
            continue;
        }
        if (runs[i].state)
            runs[i].ops->close(runs[i].state);
        free(runs[i].s.secret);
        free(runs[i].s.ca_file);
    }
    nruns = 0;
}
