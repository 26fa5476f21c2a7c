/* test_dsn.c - DSN text (RFC 3464 shape), status codes, header scanning. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include "dsn.h"

static char *text(struct buf *b)
{
    buf_append(b, "", 1);
    return buf_head(b);
}

static void status_from_replies(void **state)
{
    (void)state;
    char s[16];
    dsn_status("550 5.1.1 <x@y>: no such user", "5.0.0", s);
    assert_string_equal(s, "5.1.1");
    dsn_status("452-4.2.2 mailbox full", "5.0.0", s);
    assert_string_equal(s, "4.2.2");
    dsn_status("554 transaction failed", "5.0.0", s);
    assert_string_equal(s, "5.0.0");
    dsn_status("421 closing", "5.0.0", s);
    assert_string_equal(s, "4.0.0");
    dsn_status("4.4.7 delivery time expired; last error: x", "5.0.0", s);
    assert_string_equal(s, "4.4.7");
    dsn_status("no route", "5.4.4", s);
    assert_string_equal(s, "5.4.4");
    dsn_status("550 9.9.9 odd", "5.0.0", s);   /* not a valid class */
    assert_string_equal(s, "5.0.0");
}

static void bounce_has_three_parts(void **state)
{
    (void)state;
    struct dsn_rcpt r[2] = {{"a@dst.test", "550 5.1.1 no such user", NULL, "mx.dst.test[192.0.2.1]", "RCPT TO"},
                            {"b@dst.test", "4.4.1 host down", NULL, NULL, NULL}};
    const char hdrs[] = "Received: by gw\r\nSubject: hello\r\nMessage-ID: <m1@src.test>\r\n";
    struct dsn_report rep = {.reporting_mta = "gw.test", .queue_id = "0123456789ABCDEF",
                             .orig_sender = "s@src.test", .arrival = 1790000000, .now = 1790000100,
                             .rcpts = r, .nrcpts = 2, .headers = hdrs, .headers_len = sizeof hdrs - 1};
    struct buf b;
    buf_init(&b);
    assert_int_equal(dsn_build(&rep, &b), 0);
    char *t = text(&b);
    assert_non_null(strstr(t, "From: Mail Delivery System <MAILER-DAEMON@gw.test>\r\n"));
    assert_non_null(strstr(t, "To: <s@src.test>\r\n"));
    assert_non_null(strstr(t, "Subject: Undelivered Mail Returned to Sender\r\n"));
    assert_non_null(strstr(t, "Content-Type: multipart/report; report-type=delivery-status;"));
    assert_non_null(strstr(t, "Auto-Submitted: auto-replied\r\n"));
    assert_non_null(strstr(t, "Reporting-MTA: dns; gw.test\r\n"));
    assert_non_null(strstr(t, "Final-Recipient: rfc822; a@dst.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
                              "Remote-MTA: dns; mx.dst.test\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\n"));
    assert_non_null(strstr(t, "<a@dst.test>: host mx.dst.test[192.0.2.1] said: 550 5.1.1 no such user "
                              "(in reply to RCPT TO command)\r\n"));
    assert_non_null(strstr(t, "<b@dst.test>: 4.4.1 host down\r\n"));
    assert_non_null(strstr(t, "Final-Recipient: rfc822; b@dst.test\r\nAction: failed\r\nStatus: 4.4.1\r\n"
                              "Diagnostic-Code: X-Postern; 4.4.1 host down\r\n"));
    assert_non_null(strstr(t, "Content-Type: text/rfc822-headers"));
    assert_non_null(strstr(t, "Message-ID: <m1@src.test>\r\n"));
    /* bare LF nowhere: every line ends in CRLF */
    for (char *p = t; (p = strchr(p, '\n')); p++)
        assert_true(p > t && p[-1] == '\r');
    buf_free(&b);
}

static void delay_warning_wording(void **state)
{
    (void)state;
    struct dsn_rcpt r = {"a@dst.test", "451 4.3.0 try again", NULL, NULL, NULL};
    struct dsn_report rep = {.reporting_mta = "gw.test", .queue_id = "0123456789ABCDEF",
                             .orig_sender = "s@src.test", .kind = DSN_DELAYED, .rcpts = &r, .nrcpts = 1,
                             .arrival = 1790000000, .now = 1790000000 + 4 * 3600, .lifetime = 5 * 86400};
    struct buf b;
    buf_init(&b);
    dsn_build(&rep, &b);
    char *t = text(&b);
    assert_non_null(strstr(t, "Subject: Delayed Mail (still being retried)"));
    assert_non_null(strstr(t, "Action: delayed\r\nStatus: 4.3.0\r\n"));
    assert_non_null(strstr(t, "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r\n"));
    assert_non_null(strstr(t, "Your message could not be delivered for 4.0 hours.\r\n"
                              "It will be retried until it is 5.0 days old.\r\n"));
    assert_non_null(strstr(t, "Will-Retry-Until: "));
    assert_null(strstr(t, "Action: failed"));
    buf_free(&b);
}

/* NOTIFY=SUCCESS to a next hop without DSN: "relayed", 2.x.x, ORCPT and
 * ENVID decoded from xtext, headers only even with RET=FULL. */
static void relayed_notice_with_orcpt_and_envid(void **state)
{
    (void)state;
    struct dsn_rcpt r = {"a@dst.test", "250 2.0.0 Ok: queued as X", "rfc822;Alias+2BA@dst.test", NULL, NULL};
    const char hdrs[] = "Subject: s\r\n";
    const char msg[] = "Subject: s\r\n\r\nsecret body\r\n";
    struct dsn_report rep = {.reporting_mta = "gw.test", .queue_id = "0123456789ABCDEF",
                             .orig_sender = "s@src.test", .kind = DSN_RELAYED, .envid = "QQ+3D1",
                             .rcpts = &r, .nrcpts = 1, .headers = hdrs, .headers_len = sizeof hdrs - 1,
                             .message = msg, .message_len = sizeof msg - 1};
    struct buf b;
    buf_init(&b);
    assert_int_equal(dsn_build(&rep, &b), 0);
    char *t = text(&b);
    assert_non_null(strstr(t, "Subject: Successful Mail Relay Report\r\n"));
    assert_non_null(strstr(t, "Original-Envelope-Id: QQ=1\r\n"));
    assert_non_null(strstr(t, "Original-Recipient: rfc822;Alias+A@dst.test\r\n"
                              "Final-Recipient: rfc822; a@dst.test\r\nAction: relayed\r\nStatus: 2.0.0\r\n"));
    assert_non_null(strstr(t, "Content-Type: text/rfc822-headers"));
    assert_null(strstr(t, "secret body"));
    buf_free(&b);
}

/* RET=FULL on a failure returns the whole message as message/rfc822. */
static void failure_with_ret_full(void **state)
{
    (void)state;
    struct dsn_rcpt r = {"a@dst.test", "550 5.1.1 no such user", NULL, NULL, NULL};
    const char msg[] = "Subject: s\r\n\r\nthe body\r\n";
    struct dsn_report rep = {.reporting_mta = "gw.test", .queue_id = "0123456789ABCDEF",
                             .orig_sender = "s@src.test", .kind = DSN_FAILED, .rcpts = &r, .nrcpts = 1,
                             .headers = msg, .headers_len = 13, .message = msg, .message_len = sizeof msg - 1};
    struct buf b;
    buf_init(&b);
    assert_int_equal(dsn_build(&rep, &b), 0);
    char *t = text(&b);
    assert_non_null(strstr(t, "Content-Type: message/rfc822\r\nContent-Description: Undelivered Message\r\n\r\n"
                              "Subject: s\r\n\r\nthe body\r\n"));
    assert_null(strstr(t, "text/rfc822-headers"));
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(status_from_replies),
        cmocka_unit_test(bounce_has_three_parts),
        cmocka_unit_test(delay_warning_wording),
        cmocka_unit_test(relayed_notice_with_orcpt_and_envid),
        cmocka_unit_test(failure_with_ret_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
