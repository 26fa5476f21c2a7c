/* test_smtp_parse.c - command verbs, paths and MAIL/RCPT parameters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include "smtp_parse.h"

static void verbs_are_case_insensitive(void **state)
{
    (void)state;
    struct smtp_command c;
    assert_int_equal(smtp_parse_command("ehlo client.test", &c), 0);
    assert_int_equal(c.verb, VERB_EHLO);
    assert_string_equal(c.args, "client.test");
    assert_int_equal(smtp_parse_command("MaIl FROM:<a@b.c>", &c), 0);
    assert_int_equal(c.verb, VERB_MAIL);
    assert_string_equal(c.args, "FROM:<a@b.c>");
    assert_int_equal(smtp_parse_command("DATA", &c), 0);
    assert_int_equal(c.verb, VERB_DATA);
    assert_string_equal(c.args, "");
    assert_int_equal(smtp_parse_command("DATAX", &c), 0);
    assert_int_equal(c.verb, VERB_UNKNOWN);
    assert_int_equal(smtp_parse_command("", &c), 0);
    assert_int_equal(c.verb, VERB_UNKNOWN);
}

static void control_bytes_are_refused(void **state)
{
    (void)state;
    struct smtp_command c;
    assert_int_equal(smtp_parse_command("HELO a\rb", &c), -1);
    assert_int_equal(smtp_parse_command("HELO a\x01", &c), -1);
    assert_int_equal(smtp_parse_command("HELO a\x7f", &c), -1);
    assert_int_equal(smtp_parse_command("HELO a\tb", &c), 0);
}

static void mail_paths(void **state)
{
    (void)state;
    struct path_result r;
    struct mail_params p;
    assert_int_equal(smtp_parse_mail("FROM:<user@example.test>", &r, &p), 0);
    assert_string_equal(r.addr, "user@example.test");
    assert_int_equal(smtp_parse_mail("FROM:<>", &r, &p), 0);
    assert_string_equal(r.addr, "");
    assert_int_equal(smtp_parse_mail("from: <a.b+c@x-y.example>", &r, &p), 0);
    assert_string_equal(r.addr, "a.b+c@x-y.example");
    assert_int_equal(smtp_parse_mail("FROM:<\"odd > name\"@example.test>", &r, &p), 0);
    assert_string_equal(r.addr, "\"odd > name\"@example.test");
    /* source routes are accepted and dropped */
    assert_int_equal(smtp_parse_mail("FROM:<@relay.test,@r2.test:u@example.test>", &r, &p), 0);
    assert_string_equal(r.addr, "u@example.test");
    assert_int_equal(smtp_parse_mail("FROM:<user@[192.0.2.1]>", &r, &p), 0);
}

static void mail_path_errors(void **state)
{
    (void)state;
    struct path_result r;
    struct mail_params p;
    assert_int_equal(smtp_parse_mail("FROM:user@example.test", &r, &p), -1);
    assert_memory_equal(r.reply, "501 5.5.4", 9);
    assert_int_equal(smtp_parse_mail("TO:<a@b.c>", &r, &p), -1);
    assert_int_equal(smtp_parse_mail("FROM:<a@b.c", &r, &p), -1);
    assert_int_equal(smtp_parse_mail("FROM:<a..b@c.d>", &r, &p), -1);
    assert_memory_equal(r.reply, "501 5.1.7", 9);
    assert_int_equal(smtp_parse_mail("FROM:<.a@c.d>", &r, &p), -1);
    assert_int_equal(smtp_parse_mail("FROM:<a@-c.d>", &r, &p), -1);
    assert_int_equal(smtp_parse_mail("FROM:<a@c..d>", &r, &p), -1);
    assert_int_equal(smtp_parse_mail("FROM:<a b@c.d>", &r, &p), -1);
    char longlocal[200];
    memset(longlocal, 'x', 65);
    strcpy(longlocal + 65, "@example.test>");
    char cmd[300] = "FROM:<";
    strcat(cmd, longlocal);
    assert_int_equal(smtp_parse_mail(cmd, &r, &p), -1);
    char longpath[400] = "FROM:<a@";
    memset(longpath + 8, 'b', 300);
    strcpy(longpath + 308, ".test>");
    assert_int_equal(smtp_parse_mail(longpath, &r, &p), -1);
    assert_memory_equal(r.reply, "501 5.1.7", 9);
}

static void mail_params(void **state)
{
    (void)state;
    struct path_result r;
    struct mail_params p;
    assert_int_equal(smtp_parse_mail("FROM:<a@b.c> SIZE=12345 BODY=8BITMIME", &r, &p), 0);
    assert_true(p.has_size);
    assert_int_equal(p.size, 12345);
    assert_int_equal(p.body, BODY_8BITMIME);
    assert_false(p.smtputf8);
    assert_int_equal(smtp_parse_mail("FROM:<a@b.c> SIZE=x", &r, &p), -1);
    assert_memory_equal(r.reply, "501 5.5.4", 9);
    assert_int_equal(smtp_parse_mail("FROM:<a@b.c> FOO=bar", &r, &p), -1);
    assert_memory_equal(r.reply, "555 5.5.4", 9);
}

static void utf8_needs_smtputf8(void **state)
{
    (void)state;
    struct path_result r;
    struct mail_params p;
    assert_int_equal(smtp_parse_mail("FROM:<j\xc3\xb6rg@example.test>", &r, &p), -1);
    assert_memory_equal(r.reply, "553 5.6.7", 9);
    assert_int_equal(smtp_parse_mail("FROM:<j\xc3\xb6rg@example.test> SMTPUTF8", &r, &p), 0);
    assert_true(p.smtputf8);
    assert_int_equal(smtp_parse_rcpt("TO:<m\xc3\xbc@b\xc3\xbc.test>", false, &r, NULL), -1);
    assert_int_equal(smtp_parse_rcpt("TO:<m\xc3\xbc@b\xc3\xbc.test>", true, &r, NULL), 0);
    /* with SMTPUTF8 the bytes must still be well-formed UTF-8 */
    assert_int_equal(smtp_parse_mail("FROM:<j\xf6rg@example.test> SMTPUTF8", &r, &p), -1);
    assert_string_equal(r.reply, "553 5.6.7 Sender address is not valid UTF-8");
    assert_int_equal(smtp_parse_rcpt("TO:<m\xc0\xbc@example.test>", true, &r, NULL), -1);   /* overlong */
    assert_string_equal(r.reply, "553 5.6.7 Recipient address is not valid UTF-8");
}

static void dsn_parameters(void **state)
{
    (void)state;
    struct path_result r;
    struct mail_params p;
    struct rcpt_params rp;
    assert_int_equal(smtp_parse_mail("FROM:<a@b.c> RET=HDRS ENVID=QQ+2B1", &r, &p), 0);
    assert_int_equal(p.ret, DSN_RET_HDRS);
    assert_string_equal(p.envid, "QQ+2B1");
    assert_int_equal(smtp_parse_mail("FROM:<a@b.c> RET=full", &r, &p), 0);
    assert_int_equal(p.ret, DSN_RET_FULL);
    assert_int_equal(smtp_parse_mail("FROM:<a@b.c> RET=SOME", &r, &p), -1);
    assert_int_equal(smtp_parse_mail("FROM:<a@b.c> RET=FULL RET=HDRS", &r, &p), -1);
    /* every parameter comes once, whatever its value or case */
    const char *twice[] = {"SIZE=10 SIZE=20", "BODY=8BITMIME body=7BIT", "SMTPUTF8 SMTPUTF8", "AUTH=<> AUTH=x",
                           "SIZE=1 BODY=7BIT size=1"};
    for (size_t i = 0; i < sizeof twice / sizeof *twice; i++) {
        char line[100];
        snprintf(line, sizeof line, "FROM:<a@b.c> %s", twice[i]);
        assert_int_equal(smtp_parse_mail(line, &r, &p), -1);
        assert_string_equal(r.reply, "501 5.5.4 Duplicate parameter");
    }
    assert_int_equal(smtp_parse_mail("FROM:<a@b.c> ENVID=a+zz", &r, &p), -1);        /* bad xtext */
    assert_int_equal(smtp_parse_mail("FROM:<a@b.c> BODY=BINARYMIME", &r, &p), 0);
    assert_int_equal(p.body, BODY_BINARYMIME);

    assert_int_equal(smtp_parse_rcpt("TO:<x@e.test> NOTIFY=SUCCESS,delay ORCPT=rfc822;x+40e.test", false, &r, &rp), 0);
    assert_int_equal(rp.notify, DSN_NOTIFY_SUCCESS | DSN_NOTIFY_DELAY);
    assert_string_equal(rp.orcpt, "rfc822;x+40e.test");
    assert_int_equal(smtp_parse_rcpt("TO:<x@e.test> NOTIFY=NEVER", false, &r, &rp), 0);
    assert_int_equal(smtp_parse_rcpt("TO:<x@e.test> ORCPT=rfc822;a NOTIFY=NEVER orcpt=rfc822;b", false, &r, &rp), -1);
    assert_string_equal(r.reply, "501 5.5.4 Duplicate parameter");
    assert_int_equal(rp.notify, DSN_NOTIFY_NEVER);
    assert_int_equal(smtp_parse_rcpt("TO:<x@e.test>", false, &r, &rp), 0);
    assert_int_equal(rp.notify, 0);
    assert_string_equal(rp.orcpt, "");
    static const char *const bad[] = {
        "TO:<x@e.test> NOTIFY=NEVER,SUCCESS", "TO:<x@e.test> NOTIFY=", "TO:<x@e.test> NOTIFY=SUCCESS,",
        "TO:<x@e.test> NOTIFY=FAILURE,FAILURE", "TO:<x@e.test> NOTIFY=SOMETIMES", "TO:<x@e.test> ORCPT=x@e.test",
        "TO:<x@e.test> ORCPT=;x@e.test", "TO:<x@e.test> ORCPT=rfc822;", "TO:<x@e.test> ORCPT=rfc822;a=b",
        "TO:<x@e.test> FOO=1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(smtp_parse_rcpt(bad[i], false, &r, &rp), -1);

    char out[16], text[64];
    assert_int_equal(xtext_decode("a+2Bb+3D", out, sizeof out), 4);
    assert_string_equal(out, "a+b=");
    assert_int_equal(xtext_decode("0123456789abcdef", out, sizeof out), -1);   /* does not fit */
    char enc[64];
    assert_int_equal(xtext_encode("\"a b\"+x=@\xc3\xa9", enc, sizeof enc), 21);
    assert_string_equal(enc, "\"a+20b\"+2Bx+3D@+C3+A9");       /* '"' is an xchar (RFC 3461 4) */
    assert_int_equal(xtext_decode(enc, text, sizeof text), 11);          /* and back */
    assert_string_equal(text, "\"a b\"+x=@\xc3\xa9");
    assert_int_equal(xtext_encode("a b", enc, 5), -1);                     /* does not fit */
    dsn_notify_text(DSN_NOTIFY_FAILURE | DSN_NOTIFY_SUCCESS, text, sizeof text);
    assert_string_equal(text, "SUCCESS,FAILURE");
}

static void bdat_arguments(void **state)
{
    (void)state;
    uint64_t n;
    bool last;
    assert_int_equal(smtp_parse_bdat("1000", &n, &last), 0);
    assert_true(n == 1000 && !last);
    assert_int_equal(smtp_parse_bdat("0 last", &n, &last), 0);
    assert_true(n == 0 && last);
    assert_int_equal(smtp_parse_bdat("18446744073709551615 LAST", &n, &last), 0);
    assert_true(n == UINT64_MAX);
    static const char *const bad[] = {"", "LAST", "-1", "10 LASTX", "10  LAST", "10 FIRST", "1e3", "99999999999999999999",
                                      "10 "};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(smtp_parse_bdat(bad[i], &n, &last), -1);
}

static void utf8_validity(void **state)
{
    (void)state;
    assert_true(utf8_valid("plain"));
    assert_true(utf8_valid("\xc3\xb6\xe2\x82\xac\xf0\x9f\x98\x80"));   /* two-, three- and four-byte forms */
    assert_false(utf8_valid("\xf6"));                                  /* Latin-1 */
    assert_false(utf8_valid("\xc3"));                                  /* truncated */
    assert_false(utf8_valid("\xe2\x82"));
    assert_false(utf8_valid("\xc0\xaf"));                              /* overlong '/' */
    assert_false(utf8_valid("\xe0\x80\xaf"));
    assert_false(utf8_valid("\xed\xa0\x80"));                          /* surrogate */
    assert_false(utf8_valid("\xf4\x90\x80\x80"));                      /* above U+10FFFF */
    assert_false(utf8_valid("\x80"));                                  /* lone continuation */
}

static void rcpt_paths(void **state)
{
    (void)state;
    struct path_result r;
    assert_int_equal(smtp_parse_rcpt("TO:<x@example.test>", false, &r, NULL), 0);
    assert_string_equal(r.addr, "x@example.test");
    assert_int_equal(smtp_parse_rcpt("TO:<Postmaster>", false, &r, NULL), 0);
    assert_int_equal(smtp_parse_rcpt("TO:<>", false, &r, NULL), -1);
    assert_memory_equal(r.reply, "501 5.1.3", 9);
    assert_int_equal(smtp_parse_rcpt("TO:<x@example.test> NOTIFY=NEVER", false, &r, NULL), -1);
    assert_memory_equal(r.reply, "555 5.5.4", 9);
    assert_int_equal(smtp_parse_rcpt("FROM:<x@example.test>", false, &r, NULL), -1);
    assert_string_equal(addr_domain("a@b@c.test"), "c.test");
    assert_string_equal(addr_domain("nodomain"), "");
}

/* Sender-specified routing: %, ! or @ in the local part; source routes. */
static void routed_addresses(void **state)
{
    (void)state;
    assert_true(smtp_address_routed("victim%gmail.test@example.test"));
    assert_true(smtp_address_routed("gmail.test!victim@example.test"));
    assert_true(smtp_address_routed("\"victim@gmail.test\"@example.test"));
    assert_false(smtp_address_routed("plain.user+tag@example.test"));
    assert_false(smtp_address_routed("postmaster"));
    struct path_result pr;
    assert_int_equal(smtp_parse_rcpt("TO:<@a.test,@b.test:victim@example.test>", false, &pr, NULL), 0);
    assert_true(pr.source_route);
    assert_string_equal(pr.addr, "victim@example.test");
    assert_int_equal(smtp_parse_rcpt("TO:<victim@example.test>", false, &pr, NULL), 0);
    assert_false(pr.source_route);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(verbs_are_case_insensitive), cmocka_unit_test(control_bytes_are_refused),
        cmocka_unit_test(routed_addresses),
        cmocka_unit_test(mail_paths),                 cmocka_unit_test(mail_path_errors),
        cmocka_unit_test(mail_params),                cmocka_unit_test(utf8_needs_smtputf8), cmocka_unit_test(utf8_validity), cmocka_unit_test(dsn_parameters), cmocka_unit_test(bdat_arguments),
        cmocka_unit_test(rcpt_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
