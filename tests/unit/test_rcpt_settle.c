/* test_rcpt_settle.c - which reply settles each recipient of an outbound
 * transaction (gateway/mta/rcpt_settle.c), for every combination of MAIL,
 * three RCPTs, DATA and final-dot replies (2xx, 4xx, 5xx each), against a
 * model written from RFC 5321 3.3: a refused MAIL settles everyone; a
 * refused RCPT its recipient; a refused DATA the accepted ones; the dot
 * the accepted ones; with nobody accepted the data is empty and its reply
 * settles nobody. Also: what the peer said is copied with its command. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include "rcpt_settle.h"

#define NR 3
static const int codes[] = {250, 451, 550};     /* 2xx, 4xx, 5xx */
#define NC (sizeof codes / sizeof codes[0])

/* The model: the class each recipient ends with, 0 for still open. */
static void expected(int mail, const int rcpt[NR], int data, int dot, int want[NR])
{
    bool any = false;
    for (int k = 0; k < NR; k++)
        any |= rcpt[k] / 100 == 2;
    for (int k = 0; k < NR; k++) {
        if (mail / 100 != 2)
            want[k] = mail / 100;
        else if (rcpt[k] / 100 != 2)
            want[k] = rcpt[k] / 100;
        else if (!any)
            want[k] = 0;                       /* unreachable: k was accepted */
        else if (data != 354)
            want[k] = data / 100;
        else
            want[k] = dot / 100;
    }
}

/* One transaction through rcpt_settle as smtp_client.c drives it. */
static void run(int mail, const int rcpt[NR], int data, int dot, struct delivery_rcpt r[NR])
{
    memset(r, 0, NR * sizeof *r);
    struct rcpt_settle s;
    assert_int_equal(rcpt_settle_begin(&s, r, NR, true, "mx.test[192.0.2.1]", "mx.test[192.0.2.1]:25"), 0);
    char text[64];
    snprintf(text, sizeof text, "%d mail", mail);
    rcpt_settle_mail(&s, mail, text);
    for (int k = 0; k < NR; k++) {
        snprintf(text, sizeof text, "%d rcpt %d", rcpt[k], k);
        rcpt_settle_rcpt(&s, (size_t)k, rcpt[k], text);
    }
    snprintf(text, sizeof text, "%d data", data);
    if (rcpt_settle_data(&s, data, text) != SETTLE_DATA_REFUSED) {
        snprintf(text, sizeof text, "%d dot", dot);
        rcpt_settle_data_end(&s, dot, text, "end of DATA");
    }
    rcpt_settle_end(&s);
}

static void every_reply_combination(void **state)
{
    (void)state;
    const int datas[] = {354, 451, 554};
    size_t combos = 0;
    for (size_t m = 0; m < NC; m++)
        for (size_t a = 0; a < NC; a++)
            for (size_t b = 0; b < NC; b++)
                for (size_t c = 0; c < NC; c++)
                    for (size_t d = 0; d < 3; d++)
                        for (size_t e = 0; e < NC; e++) {
                            int rcpt[NR] = {codes[a], codes[b], codes[c]}, want[NR];
                            struct delivery_rcpt r[NR];
                            run(codes[m], rcpt, datas[d], codes[e], r);
                            expected(codes[m], rcpt, datas[d], codes[e], want);
                            for (int k = 0; k < NR; k++)
                                if (r[k].cls != want[k])
                                    fail_msg("MAIL %d RCPT %d/%d/%d DATA %d dot %d: recipient %d got %d, expected %d",
                                             codes[m], rcpt[0], rcpt[1], rcpt[2], datas[d], codes[e], k, r[k].cls,
                                             want[k]);
                            combos++;
                        }
    assert_int_equal(combos, 3 * 27 * 3 * 3);
}

static void the_deciding_reply_and_its_command_are_kept(void **state)
{
    (void)state;
    struct delivery_rcpt r[NR];
    int rcpt[NR] = {250, 550, 250};
    run(250, rcpt, 354, 451, r);
    assert_string_equal(r[0].reply, "451 dot");
    assert_string_equal(r[0].in_reply_to, "end of DATA");
    assert_string_equal(r[0].relay, "mx.test[192.0.2.1]:25");
    assert_true(r[0].peer_dsn);
    assert_string_equal(r[1].reply, "550 rcpt 1");
    assert_string_equal(r[1].in_reply_to, "RCPT TO");
    run(250, rcpt, 554, 250, r);
    assert_string_equal(r[2].reply, "554 data");
    assert_string_equal(r[2].in_reply_to, "DATA");
    int none[NR] = {550, 451, 550};
    run(451, none, 354, 250, r);                   /* MAIL refused: everyone hears MAIL's reply */
    for (int k = 0; k < NR; k++)
        assert_string_equal(r[k].in_reply_to, "MAIL FROM");
}

static void the_connection_settles_what_is_open_with_our_text(void **state)
{
    (void)state;
    struct delivery_rcpt r[NR];
    memset(r, 0, sizeof r);
    struct rcpt_settle s;
    assert_int_equal(rcpt_settle_begin(&s, r, NR, false, "mx.test[192.0.2.1]", "mx.test[192.0.2.1]:25"), 0);
    s.tls = "TLSv1.3";                             /* the event stream's record of the attempt says so */
    rcpt_settle_mail(&s, 250, "250 ok");
    rcpt_settle_rcpt(&s, 0, 550, "550 no such user");
    rcpt_settle_rcpt(&s, 1, 250, "250 ok");
    rcpt_settle_open(&s, 451, "4.4.2 connection lost while sending the message", NULL);
    assert_int_equal(r[0].cls, 5);                 /* settled before: unchanged */
    assert_int_equal(r[1].cls, 4);
    assert_int_equal(r[2].cls, 4);
    assert_string_equal(r[1].in_reply_to, "");    /* our own text names no command or host */
    assert_string_equal(r[1].relay, "");
    assert_string_equal(r[1].tls, "");
    assert_string_equal(r[0].tls, "TLSv1.3");      /* the peer's own reply came over TLS */
    rcpt_settle_end(&s);
}

/* LMTP (RFC 2033 4.2): after the dot, one reply per accepted recipient in
 * RCPT order; refused ones are skipped, and the run ends with the last. */
static void lmtp_replies_after_the_dot_go_to_the_accepted_in_order(void **state)
{
    (void)state;
    struct delivery_rcpt r[4];
    memset(r, 0, sizeof r);
    struct rcpt_settle s;
    assert_int_equal(rcpt_settle_begin(&s, r, 4, false, "/run/lmtp", "/run/lmtp"), 0);
    rcpt_settle_mail(&s, 250, "250 ok");
    rcpt_settle_rcpt(&s, 0, 550, "550 5.1.1 no such user");
    rcpt_settle_rcpt(&s, 1, 250, "250 ok");
    rcpt_settle_rcpt(&s, 2, 250, "250 ok");
    rcpt_settle_rcpt(&s, 3, 250, "250 ok");
    assert_int_equal(rcpt_settle_data(&s, 354, "354 go"), SETTLE_SEND_BODY);
    assert_false(rcpt_settle_lmtp_data_end(&s, 250, "250 2.0.0 <b> saved"));
    assert_false(rcpt_settle_lmtp_data_end(&s, 552, "552 5.2.2 <c> over quota"));
    assert_int_equal(r[3].cls, 0);                 /* its reply has not come yet */
    assert_true(rcpt_settle_lmtp_data_end(&s, 451, "451 4.3.0 <d> try later"));
    assert_int_equal(r[0].cls, 5);
    assert_string_equal(r[0].in_reply_to, "RCPT TO");
    assert_int_equal(r[1].cls, 2);
    assert_string_equal(r[1].reply, "250 2.0.0 <b> saved");
    assert_int_equal(r[2].cls, 5);
    assert_string_equal(r[2].reply, "552 5.2.2 <c> over quota");
    assert_string_equal(r[2].in_reply_to, "end of DATA");
    assert_int_equal(r[3].cls, 4);
    assert_true(rcpt_settle_lmtp_data_end(&s, 250, "250 extra"));   /* one too many changes nothing */
    assert_string_equal(r[3].reply, "451 4.3.0 <d> try later");
    rcpt_settle_end(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_reply_combination),
        cmocka_unit_test(the_deciding_reply_and_its_command_are_kept),
        cmocka_unit_test(the_connection_settles_what_is_open_with_our_text),
        cmocka_unit_test(lmtp_replies_after_the_dot_go_to_the_accepted_in_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
