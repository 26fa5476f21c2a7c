/* workers.c - mutex/condvar job queue, N threads, eventfd completion queue. */
#include "workers.h"
#include "event.h"
#include "log.h"
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static struct work *todo_head, *todo_tail, *done_list;
static pthread_t *threads;
static int nthreads_started;
static bool stopping;
static int pending;
static struct ev_watch done_watch;


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
        pthread_mutex_lock(&lock);
        bool was_empty = done_list == NULL;
        w->next = done_list;
        done_list = w;
        if (was_empty) {
            uint64_t one = 1;
            ssize_t r = write(done_watch.fd, &one, sizeof one);
            (void)r;
        }
    }
    pthread_mutex_unlock(&lock);
    return NULL;
}

static void on_done(void *ctx, uint32_t events)
{
    (void)ctx;
    (void)events;
    uint64_t v;
    ssize_t r = read(done_watch.fd, &v, sizeof v);
    (void)r;
    pthread_mutex_lock(&lock);
    struct work *list = done_list;
    done_list = NULL;
    pthread_mutex_unlock(&lock);
    /* reverse to completion order */
    struct work *rev = NULL;
    while (list) {
        struct work *n = list->next;
        list->next = rev;
        rev = list;
        list = n;
    }
    while (rev) {
        struct work *n = rev->next;
        pending--;
        rev->done(rev);
        rev = n;
    }
}

int workers_start(int n)
{
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0 || ev_add(&done_watch, efd, EPOLLIN, on_done, NULL) < 0)
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
}
