/* test_queue_heap.c - the scheduler's heap (gateway/queue/queue_heap.c):
 * messages come out in next-attempt order whatever order they went in,
 * equal times included; each knows its place after every change; taking one
 * out from anywhere (an admin's hold) keeps the order; a message not in the
 * heap is left alone; rescheduling moves it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include "queue_heap.h"

#define N 3000

static struct qmsg msgs[N];

/* Every message in the heap sits where it says, and no child is due before its parent. */
static void assert_heap_sound(const struct queue_heap *h)
{
    for (size_t i = 0; i < h->len; i++) {
        assert_int_equal(h->v[i]->heap_idx, (int)i);
        if (i)
            assert_true(h->v[(i - 1) / 2]->next_try <= h->v[i]->next_try);
    }
}

static void fill(struct queue_heap *h, unsigned seed)
{
    srand(seed);
    for (size_t i = 0; i < N; i++) {
        memset(&msgs[i], 0, sizeof msgs[i]);
        msgs[i].heap_idx = -1;
        msgs[i].next_try = rand() % 500;        /* many equal times */
        assert_int_equal(qheap_push(h, &msgs[i]), 0);
    }
    assert_heap_sound(h);
}

static void pops_come_in_due_order(void **state)
{
    (void)state;
    struct queue_heap h = {0};
    fill(&h, 1);
    int64_t last = -1;
    for (size_t i = 0; i < N; i++) {
        struct qmsg *m = qheap_pop(&h);
        assert_true(m->next_try >= last);
        assert_int_equal(m->heap_idx, -1);
        last = m->next_try;
    }
    assert_null(qheap_top(&h));
    qheap_free(&h);
}

static void removing_from_anywhere_keeps_the_order(void **state)
{
    (void)state;
    struct queue_heap h = {0};
    fill(&h, 2);
    for (size_t i = 0; i < N; i += 3) {        /* a third of them held by an admin */
        qheap_remove(&h, &msgs[i]);
        assert_int_equal(msgs[i].heap_idx, -1);
    }
    assert_heap_sound(&h);
    qheap_remove(&h, &msgs[0]);                /* not in the heap: nothing happens */
    assert_int_equal(h.len, N - (N + 2) / 3);
    int64_t last = -1;
    while (qheap_top(&h)) {
        struct qmsg *m = qheap_pop(&h);
        assert_true((m - msgs) % 3 != 0 && m->next_try >= last);
        last = m->next_try;
    }
    qheap_free(&h);
}

static void rescheduling_moves_a_message(void **state)
{
    (void)state;
    struct queue_heap h = {0};
    fill(&h, 3);
    struct qmsg *late = &msgs[7];
    qheap_remove(&h, late);
    late->next_try = -5;                       /* a flush: due before everything */
    assert_int_equal(qheap_push(&h, late), 0);
    assert_ptr_equal(qheap_top(&h), late);
    qheap_remove(&h, late);
    late->next_try = 1000000;                  /* a retry far away: after everything */
    assert_int_equal(qheap_push(&h, late), 0);
    assert_heap_sound(&h);
    struct qmsg *m = NULL;
    while (qheap_top(&h))
        m = qheap_pop(&h);
    assert_ptr_equal(m, late);
    qheap_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pops_come_in_due_order),
        cmocka_unit_test(removing_from_anywhere_keeps_the_order),
        cmocka_unit_test(rescheduling_moves_a_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
