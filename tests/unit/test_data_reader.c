/* test_data_reader.c - end of data, dot-unstuffing, SMTP smuggling
 * variants, line limits, and arbitrary split points across reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include "data_reader.h"

struct result {
    char out[8192];
    size_t out_len;
    size_t consumed;
    bool done;
    unsigned errors;
};

/* Feed in pieces of `step` bytes (0 = all at once), as the network would. */
static struct result feed(const char *in, size_t n, size_t step)
{
    struct result r = {0};
    struct data_reader dr;
    data_reader_init(&dr);
    size_t pos = 0;
    while (pos < n && !r.done) {
        size_t chunk = step && n - pos > step ? step : n - pos;
        size_t ol;
        size_t used = data_reader_feed(&dr, in + pos, chunk, r.out + r.out_len, &ol, &r.done);
        r.out_len += ol;
        pos += used;
    }
    r.consumed = pos;
    r.errors = dr.errors;
    return r;
}

static struct result feed_str(const char *in, size_t step) { return feed(in, strlen(in), step); }

static void simple_message_ends_at_crlf_dot_crlf(void **state)
{
    (void)state;
    for (size_t step = 0; step < 5; step++) {
        struct result r = feed_str("Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n", step);
        assert_true(r.done);
        assert_int_equal(r.errors, 0);
        assert_int_equal(r.out_len, strlen("Subject: x\r\n\r\nhello\r\n"));
        assert_memory_equal(r.out, "Subject: x\r\n\r\nhello\r\n", r.out_len);
        /* the pipelined QUIT stays unconsumed */
        assert_int_equal(r.consumed, strlen("Subject: x\r\n\r\nhello\r\n.\r\n"));
    }
}

static void empty_message(void **state)
{
    (void)state;
    struct result r = feed_str(".\r\n", 0);
    assert_true(r.done);
    assert_int_equal(r.out_len, 0);
}

static void dot_unstuffing(void **state)
{
    (void)state;
    struct result r = feed_str("..leading dot\r\n...two\r\n.\r\n", 1);
    assert_true(r.done);
    assert_int_equal(r.errors, 0);
    assert_int_equal(r.out_len, strlen(".leading dot\r\n..two\r\n"));
    assert_memory_equal(r.out, ".leading dot\r\n..two\r\n", r.out_len);
    /* a dot line in the middle that is not alone does not end data */
    r = feed_str("a\r\n.x\r\nb\r\n.\r\n", 0);
    assert_true(r.done);
    assert_memory_equal(r.out, "a\r\nx\r\nb\r\n", r.out_len);
}

/* Each smuggling terminator must never end the data, and must be flagged. */
static void smuggling_terminators_do_not_end_data(void **state)
{
    (void)state;
    static const char *cases[] = {
        "hi\n.\nMAIL FROM:<evil@x.test>\r\n",      /* <LF>.<LF> */
        "hi\r\n.\nMAIL FROM:<evil@x.test>\r\n",    /* <CRLF>.<LF> */
        "hi\n.\r\nMAIL FROM:<evil@x.test>\r\n",    /* <LF>.<CRLF> */
        "hi\r.\rMAIL FROM:<evil@x.test>\r\n",      /* <CR>.<CR> */
        "hi\r\n.\rMAIL FROM:<evil@x.test>\r\n",    /* <CRLF>.<CR> */
        "hi\r.\r\nMAIL FROM:<evil@x.test>\r\n",    /* <CR>.<CRLF> */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (size_t step = 0; step < 3; step++) {
            struct result r = feed_str(cases[i], step);
            assert_false(r.done);
            assert_true(r.errors & (DR_ERR_BARE_LF | DR_ERR_LONE_CR));
            assert_int_equal(r.consumed, strlen(cases[i]));
        }
    }
}

static void smuggled_then_real_terminator(void **state)
{
    (void)state;
    /* everything up to the real <CRLF>.<CRLF> is data, and flagged */
    const char *in = "x\n.\nMAIL FROM:<e@x.test>\r\nRCPT TO:<v@y.test>\r\nDATA\r\nevil\r\n.\r\nNOOP\r\n";
    struct result r = feed_str(in, 0);
    assert_true(r.done);
    assert_true(r.errors & DR_ERR_BARE_LF);
    assert_int_equal(r.consumed, strlen(in) - strlen("NOOP\r\n"));
}

static void bare_lf_and_lone_cr_flagged(void **state)
{
    (void)state;
    struct result r = feed_str("a\nb\r\n.\r\n", 0);
    assert_true(r.done);
    assert_int_equal(r.errors, DR_ERR_BARE_LF);
    r = feed_str("a\rb\r\n.\r\n", 0);
    assert_true(r.done);
    assert_int_equal(r.errors, DR_ERR_LONE_CR);
    r = feed_str("a\r\r\n.\r\n", 0);
    assert_true(r.done);
    assert_int_equal(r.errors, DR_ERR_LONE_CR);
}

static void line_length_limit(void **state)
{
    (void)state;
    static char in[3000];
    /* 998 octets + CRLF = 1000: allowed */
    memset(in, 'a', 998);
    strcpy(in + 998, "\r\n.\r\n");
    struct result r = feed_str(in, 0);
    assert_true(r.done);
    assert_int_equal(r.errors, 0);
    /* 999 + CRLF = 1001: too long */
    memset(in, 'a', 999);
    strcpy(in + 999, "\r\n.\r\n");
    r = feed_str(in, 7);
    assert_true(r.done);
    assert_int_equal(r.errors, DR_ERR_LONG_LINE);
}

static void binary_bytes_pass_through(void **state)
{
    (void)state;
    const char in[] = "caf\xc3\xa9 \x00 end\r\n.\r\n";
    struct result r = feed(in, sizeof in - 1, 2);
    assert_true(r.done);
    assert_int_equal(r.out_len, sizeof in - 1 - 3);
    assert_memory_equal(r.out, in, r.out_len);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(simple_message_ends_at_crlf_dot_crlf),
        cmocka_unit_test(empty_message),
        cmocka_unit_test(dot_unstuffing),
        cmocka_unit_test(smuggling_terminators_do_not_end_data),
        cmocka_unit_test(smuggled_then_real_terminator),
        cmocka_unit_test(bare_lf_and_lone_cr_flagged),
        cmocka_unit_test(line_length_limit),
        cmocka_unit_test(binary_bytes_pass_through),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
