/* test_mx.c - MX ordering (preference, shuffled ties) and the backup-MX
 * filter (keep only MX hosts strictly better than ourselves). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include "mx.h"
#include "mta_sts.h"

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

static void sts_policy_parsing_and_matching(void **state)
{
    (void)state;
    struct sts_policy p;
    const char *text = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\n"
                       "max_age: 604800\r\n";
    assert_int_equal(sts_parse(text, strlen(text), &p), 0);
    assert_int_equal(p.mode, STS_ENFORCE);
    assert_int_equal(p.nmx, 2);
    assert_int_equal(p.max_age, 604800);
    assert_true(sts_mx_matches(&p, "mail.example.com"));
    assert_true(sts_mx_matches(&p, "MAIL.example.com."));
    assert_true(sts_mx_matches(&p, "mx1.example.net"));
    assert_false(sts_mx_matches(&p, "a.b.example.net"));     /* the wildcard is one label */
    assert_false(sts_mx_matches(&p, "example.net"));
    assert_false(sts_mx_matches(&p, "mail.example.com.evil.test"));
    const char *bad[] = {"version: STSv2\nmode: enforce\nmx: a\nmax_age: 1\n",
                         "version: STSv1\nmode: sometimes\nmx: a\nmax_age: 1\n",
                         "version: STSv1\nmode: enforce\nmax_age: 1\n",
                         "version: STSv1\nmode: enforce\nmx: a\n"};
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(sts_parse(bad[i], strlen(bad[i]), &p), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sorted_by_preference),     cmocka_unit_test(equal_preferences_take_every_order),
        cmocka_unit_test(backup_keeps_only_better_hosts), cmocka_unit_test(equal_to_self_is_not_better),
        cmocka_unit_test(not_listed_keeps_all),   cmocka_unit_test(sts_policy_parsing_and_matching),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
