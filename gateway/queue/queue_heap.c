/* queue_heap.c - see queue_heap.h. A binary heap in an array that doubles. */
#include "queue_heap.h"
#include "array_grow.h"
#include <stdlib.h>

static void swap(struct queue_heap *h, size_t a, size_t b)
{
    struct qmsg *t = h->v[a];
    h->v[a] = h->v[b];
    h->v[b] = t;
    h->v[a]->heap_idx = (int)a;
    h->v[b]->heap_idx = (int)b;
}

static void up(struct queue_heap *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h->v[p]->next_try <= h->v[i]->next_try)
            break;
        swap(h, i, p);
        i = p;
    }
}

static void down(struct queue_heap *h, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->len && h->v[l]->next_try < h->v[m]->next_try)
            m = l;
        if (r < h->len && h->v[r]->next_try < h->v[m]->next_try)
            m = r;
        if (m == i)
            return;
        swap(h, i, m);
        i = m;
    }
}

int qheap_push(struct queue_heap *h, struct qmsg *m)
{
    struct qmsg **v = array_grow(h->v, &h->cap, h->len + 1, sizeof *h->v, 1024);
    if (!v)
        return -1;
    h->v = v;
    h->v[h->len] = m;
    m->heap_idx = (int)h->len++;
    up(h, h->len - 1);
    return 0;
}

struct qmsg *qheap_top(const struct queue_heap *h) { return h->len ? h->v[0] : NULL; }

struct qmsg *qheap_pop(struct queue_heap *h)
{
    struct qmsg *top = h->v[0];
    if (--h->len) {
        h->v[0] = h->v[h->len];
        h->v[0]->heap_idx = 0;
        down(h, 0);
    }
    top->heap_idx = -1;
    return top;
}

void qheap_remove(struct queue_heap *h, struct qmsg *m)
{
    if (m->heap_idx < 0)
        return;
    size_t i = (size_t)m->heap_idx;
    if (i != --h->len) {
        h->v[i] = h->v[h->len];
        h->v[i]->heap_idx = (int)i;
        up(h, i);
        down(h, (size_t)h->v[i]->heap_idx);
    }
    m->heap_idx = -1;
}

void qheap_free(struct queue_heap *h)
{
    free(h->v);
    *h = (struct queue_heap){0};
}
