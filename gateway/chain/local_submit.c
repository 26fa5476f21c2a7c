/* local_submit.c - see local_submit.h. A submitted message is checked
 * (addresses, CRLF-only lines of at most 998 octets, no NUL, a header
 * section, the size limit), given our Received header, committed to the
 * spool by the calling thread, and posted to the loop, which queues it. */
#include "local_submit.h"
#include "config.h"
#include "hooks.h"
#include "inbox.h"
#include "log.h"
#include "smtp_parse.h"
#include "spool.h"
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_LINE 998        /* RFC 5322 2.1.1, without the CRLF */
#define MAX_RCPTS 1000
#define JOURNAL_OVERHEAD (64 * 1024)   /* a journal report's own part, over the size limit */

enum submit_state { SUBMIT_NONE, SUBMIT_STARTING, SUBMIT_READY, SUBMIT_STOPPED };

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static enum submit_state state;
static struct inbox committed;
static char hostname[256];           /* of the current generation (local_submit_configure) */
static size_t size_limit;
static void (*take)(struct envelope *e, size_t body_off);   /* the queue's, from local_submit_start */

struct committed_msg {
    struct inbox_item item;
    struct envelope env;
    size_t body_off;
};

void local_submit_expect(void) { state = SUBMIT_STARTING; }

static void queue_committed(struct inbox_item *it)
{
    struct committed_msg *c = (struct committed_msg *)it;
    take(&c->env, c->body_off);
    envelope_free(&c->env);
    free(c);
}

void local_submit_configure(const struct config *c)
{
    pthread_mutex_lock(&lock);
    snprintf(hostname, sizeof hostname, "%s", c->hostname);
    size_limit = c->message_size_limit;
    pthread_mutex_unlock(&lock);
}

int local_submit_start(void (*queue_it)(struct envelope *e, size_t body_off))
{
    take = queue_it;
    if (inbox_open(&committed) < 0)
        return -1;
    pthread_mutex_lock(&lock);
    state = SUBMIT_READY;
    pthread_mutex_unlock(&lock);
    return 0;
}

void local_submit_stop(void)
{
    pthread_mutex_lock(&lock);
    bool was_ready = state == SUBMIT_READY;
    state = SUBMIT_STOPPED;
    pthread_mutex_unlock(&lock);
    if (was_ready)
        inbox_close(&committed);
}

/* CRLF line ends only, no NUL, lines of at most 998 octets, and a header
 * section ended by an empty line. */
static bool message_well_formed(const char *m, size_t len, size_t max_line)
{
    size_t line = 0;
    for (size_t i = 0; i < len; i++) {
        if (m[i] == '\0' || (m[i] == '\n' && (i == 0 || m[i - 1] != '\r')) ||
            (m[i] == '\r' && (i + 1 == len || m[i + 1] != '\n')))
            return false;
        line = m[i] == '\n' ? 0 : line + 1;
        if (line > max_line + 1)
            return false;
    }
    return len >= 2 && m[len - 1] == '\n' && memmem(m, len, "\r\n\r\n", 4) != NULL;
}

static bool has_8bit(const char *m, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)m[i] >= 0x80)
            return true;
    return false;
}

static int check_request(const char *sender, const char *const *rcpts, size_t nrcpts, const char *message,
                         size_t len, size_t limit, unsigned flags)
{
    if (!sender || (sender[0] && (smtp_check_address(sender, false) || smtp_address_routed(sender))))
        return EINVAL;
    if (!nrcpts || nrcpts > MAX_RCPTS || !rcpts)
        return EINVAL;
    for (size_t i = 0; i < nrcpts; i++)
        if (!rcpts[i] || smtp_check_address(rcpts[i], false) || smtp_address_routed(rcpts[i]))
            return EINVAL;
    bool journal = flags & POSTERN_SUBMIT_JOURNAL;
    if (limit && len > limit + (journal ? JOURNAL_OVERHEAD : 0))
        return EFBIG;
    return message && message_well_formed(message, len, journal ? SIZE_MAX / 2 : MAX_LINE) ? 0 : EINVAL;
}

void local_envelope_init(struct envelope *e, const char *host)
{
    qid_generate(e->id);
    e->arrival = (int64_t)time(NULL);
    snprintf(e->client_ip, sizeof e->client_ip, "127.0.0.1");
    snprintf(e->helo, sizeof e->helo, "%s", host);
    snprintf(e->proto, sizeof e->proto, "LOCAL");
}

size_t local_received(char *out, size_t size, const char *host, const char *id)
{
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", &tm);
    int n = snprintf(out, size, "Received: by %s (Postern) id %s; %s\r\n", host, id, date);
    return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

static int fill_envelope(struct envelope *e, const char *sender, const char *const *rcpts, size_t nrcpts,
                         const char *host, bool journal, bool eight_bit)
{
    memset(e, 0, sizeof *e);
    local_envelope_init(e, host);
    if (journal)       /* queue.c: no chain for it */
        snprintf(e->proto, sizeof e->proto, "JOURNAL");
    e->body = eight_bit ? BODY_8BITMIME : BODY_7BIT;
    e->sender = strdup(sender);
    e->rcpts = calloc(nrcpts, sizeof *e->rcpts);
    if (!e->sender || !e->rcpts)
        return ENOMEM;
    for (e->nrcpts = 0; e->nrcpts < nrcpts; e->nrcpts++)
        if (!(e->rcpts[e->nrcpts] = strdup(rcpts[e->nrcpts])))
            return ENOMEM;
    e->hops = 1;
    return 0;
}

/* Our Received header, then the message, committed (fsync'd, renamed). */
static int write_spool(struct committed_msg *c, const char *message, size_t len, const char *host)
{
    struct spool_writer sw;
    if (spool_writer_open(&sw, &c->env) < 0) {
        spool_writer_abort(&sw);
        return sw.err;
    }
    char recv[512];
    spool_writer_write(&sw, recv, local_received(recv, sizeof recv, host, c->env.id));
    spool_writer_write(&sw, message, len);
    c->env.size = sw.written;
    int err = spool_writer_commit(&sw);
    c->body_off = sw.env_len;
    return err;
}

int local_submit(const char *sender, const char *const *rcpts, size_t nrcpts, const char *message, size_t len,
                 char *qid_out)
{
    return local_submit_flags(sender, rcpts, nrcpts, message, len, 0, qid_out);
}

int local_submit_flags(const char *sender, const char *const *rcpts, size_t nrcpts, const char *message, size_t len,
                       unsigned flags, char *qid_out)
{
    pthread_mutex_lock(&lock);
    enum submit_state st = state;
    char host[sizeof hostname];
    memcpy(host, hostname, sizeof host);
    size_t limit = size_limit;
    pthread_mutex_unlock(&lock);
    if (st != SUBMIT_READY)
        return errno = st == SUBMIT_NONE ? ENOTSUP : EAGAIN, -1;
    const txn_t *t = hooks_calling_txn();
    if (t && t->local_origin)      /* a message made for a message we made: a loop */
        return errno = ELOOP, -1;
    int err = flags & ~POSTERN_SUBMIT_JOURNAL ? EINVAL : check_request(sender, rcpts, nrcpts, message, len, limit, flags);
    struct committed_msg *cm = err ? NULL : calloc(1, sizeof *cm);
    if (!err && !cm)
        err = ENOMEM;
    if (!err)
        err = fill_envelope(&cm->env, sender, rcpts, nrcpts, host, flags & POSTERN_SUBMIT_JOURNAL,
                            has_8bit(message, len));
    if (!err)
        err = write_spool(cm, message, len, host);
    if (err) {
        if (cm)
            envelope_free(&cm->env);
        free(cm);
        return errno = err, -1;
    }
    log_info("%s: from=<%s>, nrcpt=%zu, size=%llu, proto=LOCAL (made by a plugin)", cm->env.id, sender, nrcpts,
             (unsigned long long)cm->env.size);
    if (qid_out)
        snprintf(qid_out, QID_LEN, "%s", cm->env.id);
    cm->item.run = queue_committed;
    pthread_mutex_lock(&lock);
    if (state == SUBMIT_READY) {
        inbox_post(&committed, &cm->item);
        cm = NULL;
    }
    pthread_mutex_unlock(&lock);
    if (cm) {           /* the loop stopped meanwhile: the spool scan at the next start queues it */
        envelope_free(&cm->env);
        free(cm);
    }
    return 0;
}
