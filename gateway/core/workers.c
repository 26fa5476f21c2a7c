/* workers.c - mutex/condvar job queue, N threads, completions through an
 * inbox to the loop. */
#include "workers.h"
#include "event.h"
#include "log.h"
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static struct work *todo_head, *todo_tail;
static pthread_t *threads;
static int nthreads_started;
static bool stopping;
static int pending;
static struct inbox finished;


static void *worker_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&lock);
    for (;;) {
        while (!todo_head && !stopping)
            pthread_cond_wait(&cond, &lock);
        if (!todo_head && stopping)
            break;
        struct work *w = todo_head;
        todo_head = w->next;
        if (!todo_head)
            todo_tail = NULL;
        pthread_mutex_unlock(&lock);
        w->run(w);
        inbox_post(&finished, &w->finished);
        pthread_mutex_lock(&lock);
    }
    pthread_mutex_unlock(&lock);
    return NULL;
}

/* The loop: a job's completion. */
static void on_finished(struct inbox_item *it)
{
    struct work *w = (struct work *)((char *)it - offsetof(struct work, finished));
    pending--;
    w->done(w);
}

int workers_start(int n)
{
    if (inbox_open(&finished) < 0)
        return -1;
    threads = calloc((size_t)n, sizeof *threads);
    if (!threads)
        return -1;
    for (int i = 0; i < n; i++) {
        if (pthread_create(&threads[i], NULL, worker_main, NULL) != 0) {
            log_error("cannot start worker thread %d", i);
            return -1;
        }
        nthreads_started++;
    }
    return 0;
}

void workers_submit(struct work *w)
{
    w->next = NULL;
    w->finished.run = on_finished;
    pending++;
    pthread_mutex_lock(&lock);
    if (todo_tail)
        todo_tail->next = w;
    else
        todo_head = w;
    todo_tail = w;
    pthread_cond_signal(&cond);
    pthread_mutex_unlock(&lock);
}

int workers_pending(void) { return pending; }

void workers_stop(void)
{
    pthread_mutex_lock(&lock);
    stopping = true;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < nthreads_started; i++)
        pthread_join(threads[i], NULL);
    free(threads);
    threads = NULL;
    nthreads_started = 0;
    inbox_close(&finished);
}
