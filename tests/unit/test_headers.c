/* test_headers.c - header section parsing, serialization, mutations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include "headers.h"

static const char RAW[] = "Received: from a\r\n\tby b; date\r\nSubject: Hello\r\n  world\r\nX-Empty:\r\nTo: x@y\r\n";

static char *serialize(const struct header_list *l, struct buf *b)
{
    buf_init(b);
    headers_serialize(l, b);
    buf_append(b, "", 1);
    return buf_head(b);
}

static void parse_and_roundtrip(void **state)
{
    (void)state;
    struct header_list l = {0};
    assert_int_equal(headers_parse(RAW, strlen(RAW), &l), strlen(RAW));
    assert_int_equal(l.n, 4);
    assert_string_equal(l.h[0].name, "Received");
    assert_string_equal(l.h[0].value, " from a\r\n\tby b; date");
    assert_string_equal(l.h[1].value, " Hello\r\n  world");
    assert_string_equal(l.h[2].value, "");
    struct buf b;
    assert_string_equal(serialize(&l, &b), RAW);
    buf_free(&b);
    headers_free(&l);
}

static void stops_at_a_non_header_line(void **state)
{
    (void)state;
    const char raw[] = "Subject: x\r\nthis is body text\r\nFoo: bar\r\n";
    struct header_list l = {0};
    assert_int_equal(headers_parse(raw, strlen(raw), &l), strlen("Subject: x\r\n"));
    assert_int_equal(l.n, 1);
    headers_free(&l);
    /* a line starting with a space before any header is not a field */
    l = (struct header_list){0};
    assert_int_equal(headers_parse(" x\r\n", 4, &l), 0);
    headers_free(&l);
}

static void mutations(void **state)
{
    (void)state;
    struct header_list l = {0};
    headers_parse(RAW, strlen(RAW), &l);
    assert_int_equal(headers_append(&l, "X-Added", "yes"), 0);
    assert_int_equal(headers_insert(&l, 0, "X-First", " one"), 0);
    assert_int_equal(headers_change(&l, "subject", 0, " Changed"), 0);
    assert_int_equal(headers_delete(&l, "TO", 0), 0);
    assert_int_equal(headers_delete(&l, "To", 0), -1);
    assert_int_equal(headers_change(&l, "Nope", 0, "x"), -1);
    assert_int_equal(headers_append(&l, "Bad Name", "x"), -1);
    assert_int_equal(headers_append(&l, "X-Inject", "a\r\nBcc: evil"), -1);
    assert_int_equal(headers_append(&l, "X-Folded", "a\r\n b"), 0);
    assert_true(l.changed);
    struct buf b;
    assert_string_equal(serialize(&l, &b), "X-First: one\r\nReceived: from a\r\n\tby b; date\r\nSubject: Changed\r\n"
                                           "X-Empty:\r\nX-Added: yes\r\nX-Folded: a\r\n b\r\n");
    assert_int_equal(headers_find(&l, "x-empty", 0), 3);
    buf_free(&b);
    headers_free(&l);
}

/* Regression (fuzz_headers): an empty section serialized from an empty
 * list read through NULL + 0, undefined behaviour caught by UBSan. */
static void empty_section_serializes_to_nothing(void **state)
{
    (void)state;
    struct header_list l = {0};
    assert_int_equal(headers_parse("", 0, &l), 0);
    struct buf out;
    buf_init(&out);
    headers_serialize(&l, &out);
    assert_int_equal(out.len, 0);
    buf_free(&out);
    headers_free(&l);
}

/* Regression (fuzz_headers): a NUL inside a field was cut off by strndup,
 * so the serialized section lost bytes. Now the section ends before it. */
static void nul_in_a_field_ends_the_section(void **state)
{
    (void)state;
    const char raw[] = "Subject: ok\r\nX-Bad: a\0b\r\nTo: c\r\n\r\n";
    struct header_list l = {0};
    size_t used = headers_parse(raw, sizeof raw - 1, &l);
    assert_int_equal(used, strlen("Subject: ok\r\n"));
    assert_int_equal(l.n, 1);
    struct buf out;
    buf_init(&out);
    headers_serialize(&l, &out);
    assert_int_equal(out.len, used);
    assert_memory_equal(buf_head(&out), raw, used);
    buf_free(&out);
    headers_free(&l);
}

static void counts_received_headers_in_the_section_only(void **state)
{
    (void)state;
    const char *msg = "Received: a\r\n\tcontinued\r\nreceived: b\r\nSubject: Received: no\r\nX: y\r\n"
                      "RECEIVED: c\r\n";
    struct header_list l = {0};
    assert_int_equal(headers_parse(msg, strlen(msg), &l), strlen(msg));
    assert_int_equal(headers_count(&l, "Received"), 3);
    assert_int_equal(headers_count(&l, "subject"), 1);
    assert_int_equal(headers_count(&l, "Nope"), 0);
    headers_free(&l);
    /* a Received line after the section (in the body) is not parsed as a header */
    const char *with_body = "Received: a\r\nthis line ends the section\r\nReceived: body\r\n";
    assert_int_equal(headers_parse(with_body, strlen(with_body), &l), strlen("Received: a\r\n"));
    assert_int_equal(headers_count(&l, "Received"), 1);
    headers_free(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_and_roundtrip),
        cmocka_unit_test(stops_at_a_non_header_line),
        cmocka_unit_test(mutations),
        cmocka_unit_test(counts_received_headers_in_the_section_only),
        cmocka_unit_test(empty_section_serializes_to_nothing),
        cmocka_unit_test(nul_in_a_field_ends_the_section),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
