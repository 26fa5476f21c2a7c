/* test_array_grow.c - gateway/util/array_grow.c: an array keeps its block
 * while it has room, doubles from its first size, reaches any larger need
 * at once, keeps what it held, and is left unchanged (and still the
 * caller's) when the size would overflow. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include "array_grow.h"

static void doubles_from_the_first_size_and_keeps_the_contents(void **state)
{
    (void)state;
    int *v = NULL;
    size_t cap = 0;
    for (int i = 0; i < 1000; i++) {
        int *g = array_grow(v, &cap, (size_t)i + 1, sizeof *v, 16);
        assert_non_null(g);
        v = g;
        v[i] = i;
        assert_true(cap >= (size_t)i + 1);
    }
    assert_int_equal(cap, 1024);              /* 16, 32, ..., 1024 */
    for (int i = 0; i < 1000; i++)
        assert_int_equal(v[i], i);
    free(v);
}

static void room_enough_keeps_the_block_and_a_big_need_is_met_at_once(void **state)
{
    (void)state;
    size_t cap = 0;
    char *v = array_grow(NULL, &cap, 1, 1, 8);
    assert_non_null(v);
    assert_int_equal(cap, 8);
    assert_ptr_equal(array_grow(v, &cap, 8, 1, 8), v);
    assert_int_equal(cap, 8);
    char *g = array_grow(v, &cap, 100, 1, 8);
    assert_non_null(g);
    assert_int_equal(cap, 128);
    free(g);
}

static void an_overflowing_size_leaves_the_array_alone(void **state)
{
    (void)state;
    size_t cap = 4;
    long *v = calloc(cap, sizeof *v);
    assert_non_null(v);
    v[3] = 42;
    assert_null(array_grow(v, &cap, SIZE_MAX / 2, sizeof *v, 4));     /* elements * size overflows */
    assert_int_equal(cap, 4);
    assert_null(array_grow(v, &cap, SIZE_MAX, 1, 4));                 /* doubling overflows */
    assert_int_equal(cap, 4);
    assert_int_equal(v[3], 42);
    free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(doubles_from_the_first_size_and_keeps_the_contents),
        cmocka_unit_test(room_enough_keeps_the_block_and_a_big_need_is_met_at_once),
        cmocka_unit_test(an_overflowing_size_leaves_the_array_alone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
