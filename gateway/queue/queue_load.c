/* queue_load.c - the queue read from the spool at start.
 *
 * Reading is almost all system calls (open, fstat, read and close for a
 * message and its sidecar), so LOAD_THREADS threads read a batch of names
 * at once and the loop thread then makes the queue entries, in name order.
 * A queue of up to queue_read_before_ready messages is read before posternd
 * says it is ready. A larger one is read after: a loader thread reads batch after
 * batch and hands each to the loop (at most BATCHES_AHEAD waiting, so memory
 * stays bounded), and mail is taken and delivered from the first second
 * while the rest comes in; queue commands meanwhile see what is loaded and
 * say that the rest is still being read. */
#include "queue_int.h"
#include "clock.h"
#include "inbox.h"
#include "log.h"
#include "spool.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOAD_BATCH 2048
#define LOAD_THREADS 2
#define BATCHES_AHEAD 2

struct loaded {
    const char *id;
    const char *err;          /* NULL: read */
    struct envelope e;
    size_t body_off;
    struct msg_flags flags;
    struct rcpt_state *st;    /* NULL: the sidecar could not be read (defaults) */
};

struct batch {
    struct inbox_item item;
    size_t at, k;             /* names[at .. at + k) */
    struct loaded items[LOAD_BATCH];
};

static struct {
    char **names;
    size_t n;
    bool after_ready;                     /* read in the background */
    size_t done, queued;                  /* loop thread */
    uint64_t started_ms;
    pthread_t thread;
    bool thread_running;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct batch *out[BATCHES_AHEAD];     /* posted, not yet taken by the loop */
    bool stop;
    struct inbox inbox;
    bool inbox_open;
} L = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

/* ---- reading, on threads ------------------------------------------- */

struct part {
    struct loaded *items;
    size_t from, to;
};

static void *read_part(void *arg)
{
    struct part *p = arg;
    for (size_t i = p->from; i < p->to; i++) {
        struct loaded *l = &p->items[i];
        if (spool_load(l->id, &l->e, &l->body_off, &l->err) < 0) {
            if (!l->err)
                l->err = "unknown";
            continue;
        }
        l->err = NULL;
        l->st = calloc(l->e.nrcpts ? l->e.nrcpts : 1, sizeof *l->st);
        if (l->st && spool_load_state(l->id, &l->flags, l->st, l->e.nrcpts) < 0) {
            rcpt_states_free(l->st, l->e.nrcpts);
            l->st = NULL;
        }
    }
    return NULL;
}

/* b's files, read by LOAD_THREADS threads (this one among them). */
static void read_batch(struct batch *b)
{
    memset(b->items, 0, b->k * sizeof *b->items);
    for (size_t i = 0; i < b->k; i++)
        b->items[i].id = L.names[b->at + i];
    pthread_t th[LOAD_THREADS];
    struct part parts[LOAD_THREADS];
    bool started[LOAD_THREADS] = {false};
    for (size_t t = 0; t < LOAD_THREADS; t++) {
        parts[t] = (struct part){b->items, b->k * t / LOAD_THREADS, b->k * (t + 1) / LOAD_THREADS};
        if (t > 0)
            started[t] = pthread_create(&th[t], NULL, read_part, &parts[t]) == 0;
    }
    read_part(&parts[0]);
    for (size_t t = 1; t < LOAD_THREADS; t++) {
        if (started[t])
            pthread_join(th[t], NULL);
        else
            read_part(&parts[t]);         /* no thread: this one reads that part too */
    }
}

/* ---- into the queue, on the loop ------------------------------------ */

static void finished(void)
{
    log_info("spool: %zu message(s) loaded from the queue%s", L.queued, L.after_ready ? " (read after start)" : "");
    if (L.after_ready)
        log_info("spool: the queue was read in %.1f s", (double)(clock_mono_ms() - L.started_ms) / 1000);
    free(L.names);
    L.names = NULL;
}

static void take_batch(struct batch *b)
{
    for (size_t i = 0; i < b->k; i++) {
        struct loaded *l = &b->items[i];
        size_t nrcpts = l->e.nrcpts;
        if (l->err)
            spool_move_corrupt(l->id, l->err);
        else
            L.queued += queue_add_loaded(&l->e, l->body_off, &l->flags, l->st);   /* moves st's texts */
        rcpt_states_free(l->st, nrcpts);
        free(L.names[b->at + i]);
    }
    L.done += b->k;
    if (L.done == L.n)
        finished();
}

/* A batch read but not to be queued (shutting down): its memory goes. */
static void drop_batch(struct batch *b)
{
    for (size_t k = 0; k < b->k; k++) {
        rcpt_states_free(b->items[k].st, b->items[k].e.nrcpts);
        if (!b->items[k].err)
            envelope_free(&b->items[k].e);
        free(L.names[b->at + k]);
        L.names[b->at + k] = NULL;
    }
}

static void on_batch(struct inbox_item *it)
{
    struct batch *b = (struct batch *)it;
    pthread_mutex_lock(&L.lock);
    bool stopping = L.stop;
    pthread_mutex_unlock(&L.lock);
    if (stopping)
        drop_batch(b);          /* shutting down: no new deliveries from the rest of the queue */
    else
        take_batch(b);
    pthread_mutex_lock(&L.lock);
    for (int i = 0; i < BATCHES_AHEAD; i++)
        if (L.out[i] == b)
            L.out[i] = NULL;
    pthread_cond_signal(&L.cond);
    pthread_mutex_unlock(&L.lock);
    free(b);
}

/* The loader: batch after batch, never more than BATCHES_AHEAD waiting. */
static void *loader_main(void *arg)
{
    (void)arg;
    for (size_t at = 0; at < L.n; at += LOAD_BATCH) {
        int slot = -1;
        pthread_mutex_lock(&L.lock);
        while (!L.stop && slot < 0) {
            for (int i = 0; i < BATCHES_AHEAD && slot < 0; i++)
                if (!L.out[i])
                    slot = i;
            if (slot < 0)
                pthread_cond_wait(&L.cond, &L.lock);
        }
        pthread_mutex_unlock(&L.lock);
        struct batch *b = L.stop ? NULL : malloc(sizeof *b);
        if (!b)
            break;
        b->at = at;
        b->k = L.n - at < LOAD_BATCH ? L.n - at : LOAD_BATCH;
        read_batch(b);
        b->item.run = on_batch;
        pthread_mutex_lock(&L.lock);
        L.out[slot] = b;
        pthread_mutex_unlock(&L.lock);
        inbox_post(&L.inbox, &b->item);
    }
    return NULL;
}

void queue_load_spool(size_t read_before_ready)
{
    size_t n;
    L.started_ms = clock_mono_ms();
    if (spool_list(&L.names, &n) < 0) {
        log_error("spool: cannot list the queue");
        return;
    }
    L.n = n;
    if (!n) {
        finished();
        return;
    }
    if (n > read_before_ready && inbox_open(&L.inbox) == 0) {
        L.inbox_open = true;
        if (pthread_create(&L.thread, NULL, loader_main, NULL) == 0) {
            L.thread_running = L.after_ready = true;
            log_info("spool: %zu queued message(s) to read: taking mail meanwhile", n);
            return;
        }
    }
    struct batch *b = malloc(sizeof *b);
    for (size_t at = 0; b && at < n; at += LOAD_BATCH) {
        b->at = at;
        b->k = n - at < LOAD_BATCH ? n - at : LOAD_BATCH;
        read_batch(b);
        take_batch(b);
    }
    free(b);
    if (!b)
        log_error("spool: out of memory reading the queue");
}

size_t queue_load_pending(void) { return L.names && L.done < L.n ? L.n - L.done : 0; }

const char *queue_loading_note(void)
{
    static char note[160];
    if (!L.names || L.done == L.n)
        return "";
    snprintf(note, sizeof note, " (the queue is still being read from the spool: %zu of %zu so far)", L.done, L.n);
    return note;
}

void queue_load_cancel(void)
{
    pthread_mutex_lock(&L.lock);
    L.stop = true;
    pthread_cond_signal(&L.cond);
    pthread_mutex_unlock(&L.lock);
}

void queue_load_stop(void)
{
    if (!L.thread_running)
        return;
    queue_load_cancel();
    pthread_join(L.thread, NULL);
    L.thread_running = false;
    for (int i = 0; i < BATCHES_AHEAD; i++) {      /* posted, never run: nothing was queued from them */
        struct batch *b = L.out[i];
        if (b)
            drop_batch(b);
        free(b);
        L.out[i] = NULL;
    }
    if (L.inbox_open)
        inbox_close(&L.inbox);
    for (size_t i = L.done; L.names && i < L.n; i++)
        free(L.names[i]);       /* NULL for a dropped batch's */
    free(L.names);
    L.names = NULL;
}
