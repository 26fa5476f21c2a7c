/* inbox.c - see inbox.h. */
#include "inbox.h"
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

static void inbox_drain(void *ctx, uint32_t events)
{
    struct inbox *in = ctx;
    (void)events;
    uint64_t v;
    ssize_t r = read(in->w.fd, &v, sizeof v);
    (void)r;
    pthread_mutex_lock(&in->lock);
    struct inbox_item *list = in->head, *rev = NULL;
    in->head = NULL;
    pthread_mutex_unlock(&in->lock);
    while (list) {                 /* newest first -> the order they were posted */
        struct inbox_item *n = list->next;
        list->next = rev;
        rev = list;
        list = n;
    }
    while (rev) {
        struct inbox_item *n = rev->next;
        rev->run(rev);
        rev = n;
    }
}

int inbox_open(struct inbox *in)
{
    pthread_mutex_init(&in->lock, NULL);
    in->head = NULL;
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0)
        return -1;
    if (ev_add(&in->w, fd, EPOLLIN, inbox_drain, in) < 0) {
        close(fd);
        return -1;
    }
    return 0;
}

void inbox_post(struct inbox *in, struct inbox_item *it)
{
    pthread_mutex_lock(&in->lock);
    bool was_empty = !in->head;
    it->next = in->head;
    in->head = it;
    if (was_empty) {           /* one wake-up per batch */
        uint64_t one = 1;
        ssize_t r = write(in->w.fd, &one, sizeof one);
        (void)r;
    }
    pthread_mutex_unlock(&in->lock);
}

void inbox_close(struct inbox *in)
{
    ev_del(&in->w);
    close(in->w.fd);
    pthread_mutex_destroy(&in->lock);
}
