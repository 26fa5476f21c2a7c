/* queue_heap.h - the scheduler's min-heap of messages by next attempt
 * (qmsg.next_try); each message knows its place (qmsg.heap_idx, -1 when
 * not in the heap) so an admin's hold or delete takes it out in O(log n). */
#ifndef POSTERN_QUEUE_HEAP_H
#define POSTERN_QUEUE_HEAP_H
#include "queue.h"

struct queue_heap {
    struct qmsg **v;
    size_t len, cap;
};

/* Add m by m->next_try: 0, or -1 (out of memory; m stays out). */
int qheap_push(struct queue_heap *h, struct qmsg *m);
/* The message due first, or NULL. */
struct qmsg *qheap_top(const struct queue_heap *h);
/* Take out and return the message due first (the heap must not be empty). */
struct qmsg *qheap_pop(struct queue_heap *h);
/* Take m out wherever it sits; nothing when it is not in the heap. */
void qheap_remove(struct queue_heap *h, struct qmsg *m);
void qheap_free(struct queue_heap *h);

#endif
