/* test_dane.c - which TLSA records SMTP may use (RFC 7672 3.1.3, RFC 7671
 * 5.1) and when two servers' record sets are the same destination. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include "dane.h"
#include "report_mail.h"

static int parse(uint8_t usage, uint8_t selector, uint8_t mtype, size_t len)
{
    unsigned char rd[80] = {usage, selector, mtype};
    memset(rd + 3, 0xab, sizeof rd - 3);
    struct dane_record r;
    return dane_parse_rdata(rd, 3 + len, &r);
}

static void dane_ta_and_ee_are_usable(void **state)
{
    (void)state;
    assert_int_equal(parse(3, 1, 1, 32), 1);
    assert_int_equal(parse(3, 0, 2, 64), 1);
    assert_int_equal(parse(2, 0, 1, 32), 1);
    assert_int_equal(parse(2, 1, 2, 64), 1);
}

static void pkix_usages_are_not_for_smtp(void **state)
{
    (void)state;
    assert_int_equal(parse(0, 0, 1, 32), 0);
    assert_int_equal(parse(1, 1, 1, 32), 0);
    assert_int_equal(parse(4, 1, 1, 32), 0);
}

static void unknown_selectors_matching_types_and_bad_digests_are_unusable(void **state)
{
    (void)state;
    assert_int_equal(parse(3, 2, 1, 32), 0);
    assert_int_equal(parse(3, 1, 3, 32), 0);
    assert_int_equal(parse(3, 1, 1, 31), 0);     /* SHA-256 is 32 octets */
    assert_int_equal(parse(3, 1, 2, 32), 0);     /* SHA-512 is 64 */
    assert_int_equal(parse(3, 1, 0, 40), 0);     /* "a whole key" that is not DER */
}

static void short_rdata_is_malformed(void **state)
{
    (void)state;
    unsigned char rd[3] = {3, 1, 1};
    struct dane_record r;
    assert_int_equal(dane_parse_rdata(rd, 3, &r), -1);
    assert_int_equal(dane_parse_rdata(rd, 0, &r), -1);
}

static void same_records_same_destination(void **state)
{
    (void)state;
    unsigned char d1[32], d2[32];
    memset(d1, 1, sizeof d1);
    memset(d2, 1, sizeof d2);
    struct dane_tlsa a = {.refs = 1, .n = 1}, b = {.refs = 1, .n = 1};
    strcpy(a.base, "mx.example.com");
    strcpy(b.base, "mx.example.com");
    a.rr[0] = (struct dane_record){3, 1, 1, 32, d1};
    b.rr[0] = (struct dane_record){3, 1, 1, 32, d2};
    assert_true(dane_tlsa_same(&a, &b));
    d2[31] = 2;
    assert_false(dane_tlsa_same(&a, &b));
    d2[31] = 1;
    strcpy(b.names[1], "example.com");
    assert_false(dane_tlsa_same(&a, &b));
    assert_false(dane_tlsa_same(&a, NULL));
    assert_true(dane_tlsa_same(NULL, NULL));
}

static void tlsrpt_record_mailto_addresses(void **state)
{
    (void)state;
    char a[4][320];
    size_t n;
    assert_int_equal(tlsrpt_parse_record("v=TLSRPTv1; rua=mailto:tls@example.com", a, 4, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(a[0], "tls@example.com");
    assert_int_equal(tlsrpt_parse_record("v=TLSRPTv1;rua=https://r.example/x, mailto:a%40b@c.example ,mailto:d@e", a,
                                         4, &n), 0);
    assert_int_equal(n, 2);                       /* https: is skipped */
    assert_string_equal(a[0], "a@b@c.example");
    assert_string_equal(a[1], "d@e");
    assert_int_equal(tlsrpt_parse_record("v=TLSRPTv1; rua=https://only.example/", a, 4, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(tlsrpt_parse_record("v=spf1 -all", a, 4, &n), -1);
    assert_int_equal(tlsrpt_parse_record("v=TLSRPTv10; rua=mailto:x@y", a, 4, &n), -1);
    assert_int_equal(tlsrpt_parse_record("v=TLSRPTv1; rua=mailto:x@y,mailto:z@w", a, 1, &n), 0);
    assert_int_equal(n, 1);                       /* bounded */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(dane_ta_and_ee_are_usable),
        cmocka_unit_test(pkix_usages_are_not_for_smtp),
        cmocka_unit_test(unknown_selectors_matching_types_and_bad_digests_are_unusable),
        cmocka_unit_test(short_rdata_is_malformed),
        cmocka_unit_test(same_records_same_destination),
        cmocka_unit_test(tlsrpt_record_mailto_addresses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
