/* test_mx.c - MX ordering (preference, shuffled ties) and the backup-MX
 * filter (keep only MX hosts strictly better than ourselves). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include "mx.h"

static unsigned seq_state;
static unsigned seq_rnd(void) { return seq_state++; }

static struct mx_record rec(const char *h, int pref, bool self)
{
    struct mx_record r = {.pref = pref, .self = self};
    snprintf(r.host, sizeof r.host, "%s", h);
    return r;
}

static void sorted_by_preference(void **state)
{
    (void)state;
    struct mx_record r[4] = {rec("c", 30, false), rec("a", 10, false), rec("d", 40, false), rec("b", 20, false)};
    mx_sort(r, 4, seq_rnd);
    assert_string_equal(r[0].host, "a");
    assert_string_equal(r[1].host, "b");
    assert_string_equal(r[2].host, "c");
    assert_string_equal(r[3].host, "d");
}

static void equal_preferences_take_every_order(void **state)
{
    (void)state;
    int first_a = 0, first_b = 0;
    for (unsigned s = 0; s < 20; s++) {
        struct mx_record r[3] = {rec("a", 10, false), rec("b", 10, false), rec("z", 5, false)};
        seq_state = s;
        mx_sort(r, 3, seq_rnd);
        assert_string_equal(r[0].host, "z");     /* ties never jump a better preference */
        first_a += !strcmp(r[1].host, "a");
        first_b += !strcmp(r[1].host, "b");
    }
    assert_true(first_a > 0 && first_b > 0);
}

static void backup_keeps_only_better_hosts(void **state)
{
    (void)state;
    struct mx_record r[4] = {rec("p1", 10, false), rec("p2", 15, false), rec("me", 20, true), rec("w", 30, false)};
    bool best;
    size_t n = mx_keep_better_than_self(r, 4, &best);
    assert_false(best);
    assert_int_equal(n, 2);
    assert_string_equal(r[0].host, "p1");
    assert_string_equal(r[1].host, "p2");
}

static void equal_to_self_is_not_better(void **state)
{
    (void)state;
    struct mx_record r[3] = {rec("me", 10, true), rec("peer", 10, false), rec("w", 20, false)};
    bool best;
    assert_int_equal(mx_keep_better_than_self(r, 3, &best), 0);
    assert_true(best);
}

static void not_listed_keeps_all(void **state)
{
    (void)state;
    struct mx_record r[2] = {rec("a", 10, false), rec("b", 20, false)};
    bool best;
    assert_int_equal(mx_keep_better_than_self(r, 2, &best), 2);
    assert_false(best);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sorted_by_preference),     cmocka_unit_test(equal_preferences_take_every_order),
        cmocka_unit_test(backup_keeps_only_better_hosts), cmocka_unit_test(equal_to_self_is_not_better),
        cmocka_unit_test(not_listed_keeps_all),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
