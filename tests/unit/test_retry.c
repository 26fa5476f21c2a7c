/* test_retry.c - the backoff schedule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "retry.h"

static void doubles_from_min_to_max(void **state)
{
    (void)state;
    assert_int_equal(retry_delay(1, 300, 14400, 0), 300);
    assert_int_equal(retry_delay(2, 300, 14400, 0), 600);
    assert_int_equal(retry_delay(3, 300, 14400, 0), 1200);
    assert_int_equal(retry_delay(6, 300, 14400, 0), 9600);
    assert_int_equal(retry_delay(7, 300, 14400, 0), 14400);
    assert_int_equal(retry_delay(1000, 300, 14400, 0), 14400);
    assert_int_equal(retry_delay(0, 300, 14400, 0), 300);
}

static void jitter_shortens_but_stays_in_bounds(void **state)
{
    (void)state;
    assert_int_equal(retry_delay(3, 300, 14400, 0.5), 1200 - 150);
    assert_int_equal(retry_delay(7, 300, 14400, 0.999), 14400 - (long)(14400 * 0.25 * 0.999));
    /* never below min */
    assert_int_equal(retry_delay(1, 300, 14400, 0.999), 300);
    /* out-of-range jitter is clamped */
    assert_int_equal(retry_delay(2, 300, 14400, -1), 600);
    assert_true(retry_delay(2, 300, 14400, 5) >= 300);
}

static void no_overflow_with_huge_bounds(void **state)
{
    (void)state;
    long d = retry_delay(200, 1, 365L * 86400, 0);
    assert_int_equal(d, 365L * 86400);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(doubles_from_min_to_max),
        cmocka_unit_test(jitter_shortens_but_stays_in_bounds),
        cmocka_unit_test(no_overflow_with_huge_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
