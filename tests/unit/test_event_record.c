/* test_event_record.c - the event stream's records (issue 39): the type
 * of each tracking event, IDs (acceptance events the same when made again),
 * JSON that stays valid whatever bytes an envelope holds, and reading a
 * record's type and time back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include "event_record.h"

static char *format(const struct track_event *e, uint64_t seq)
{
    static struct buf b;
    buf_free(&b);
    assert_int_equal(event_record_format(&b, e, 1765113600456LL, "gw1", 1765113000000LL, seq), 0);
    buf_append(&b, "", 1);
    return buf_head(&b);
}

static void types_follow_status_and_stage(void **state)
{
    (void)state;
    struct { const char *status, *stage; enum event_type want; } cases[] = {
        {"queued", "eom", EV_ACCEPTED}, {"rejected", "connect", EV_CONNECTION_REFUSED}, {"rejected", "rcpt", EV_REJECTED},
        {"bounced", "expire", EV_EXPIRED}, {"bounced", "deliver", EV_BOUNCED}, {"delivered", "deliver", EV_DELIVERED},
        {"deferred", "deliver", EV_DEFERRED}, {"quarantined", "eom", EV_QUARANTINED}, {"released", "admin", EV_RELEASED},
        {"deleted", "admin", EV_DELETED}, {"dropped", "eom", EV_DROPPED}, {"nonsense", NULL, EV_DROPPED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct track_event e = {.status = cases[i].status, .stage = cases[i].stage};
        assert_int_equal(event_type_of(&e), cases[i].want);
    }
}

static void acceptance_ids_are_made_of_the_message_others_of_the_run(void **state)
{
    (void)state;
    struct track_event acc = {.status = "queued", .qid = "6B16C148B7B2F000", .to = "bob@example.test", .stage = "eom"};
    char *line = format(&acc, 7);
    assert_non_null(strstr(line, "\"id\":\"gw1/6B16C148B7B2F000/accepted/bob@example.test\""));
    assert_non_null(strstr(format(&acc, 8), "\"id\":\"gw1/6B16C148B7B2F000/accepted/bob@example.test\""));
    struct track_event del = {.status = "delivered", .qid = "6B16C148B7B2F000", .stage = "deliver"};
    assert_non_null(strstr(format(&del, 42), "\"id\":\"gw1/1765113000000/42\""));
}

static void any_bytes_give_one_valid_line(void **state)
{
    (void)state;
    struct track_event e = {.status = "rejected", .stage = "mail", .from = "a\"b\\c\x01\x7f@x.test",
                            .reply = "550 caf\xc3\xa9 \xff\xfe half \xe2\x82", .helo = "tab\there"};
    char *line = format(&e, 1);
    assert_int_equal(strchr(line, '\n') - line, (long)strlen(line) - 1);     /* one line, ending it */
    assert_non_null(strstr(line, "\"from\":\"a\\\"b\\\\c\\u0001\\u007f@x.test\""));
    assert_non_null(strstr(line, "caf\xc3\xa9"));                           /* valid UTF-8 stays */
    assert_non_null(strstr(line, "\\u00ff\\u00fe half \\u00e2\\u0082"));     /* the rest escaped */
    assert_non_null(strstr(line, "\"helo\":\"tab\\u0009here\""));
    assert_null(strstr(line, "\"to\""));                                    /* empty fields left out */
    assert_non_null(strstr(line, "\"time\":\"2025-12-07T13:20:00.456Z\""));
}

static void type_and_time_read_back(void **state)
{
    (void)state;
    struct track_event e = {.status = "bounced", .stage = "expire", .reply = "\"type\":\"delivered\""};
    char *line = format(&e, 3);
    assert_int_equal(event_record_type(line, strlen(line)), EV_EXPIRED);
    assert_int_equal(event_record_ms(line, strlen(line)), 1765113600456LL);
    assert_int_equal(event_record_type("{\"v\":1}", 7), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(types_follow_status_and_stage),
        cmocka_unit_test(acceptance_ids_are_made_of_the_message_others_of_the_run),
        cmocka_unit_test(any_bytes_give_one_valid_line),
        cmocka_unit_test(type_and_time_read_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
