/* test_text_decode.c - charsets to UTF-8, RFC 2047 encoded words, HTML as
 * text (the archive's full-text index reads mail through these). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include "text_decode.h"

static char *done(struct buf *b)
{
    buf_append(b, "", 1);
    return buf_head(b);
}

static void latin1_and_unknown_charsets(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    text_to_utf8("ISO-8859-1", "M\xfcller", 7, &b);
    assert_string_equal(done(&b), "M\xc3\xbcller");
    buf_free(&b);
    buf_init(&b);          /* a charset iconv does not know: its UTF-8 kept, the rest replaced */
    text_to_utf8("x-no-such-charset", "ok \xc3\xbc \xff", 7, &b);
    assert_string_equal(done(&b), "ok \xc3\xbc \xef\xbf\xbd");
    buf_free(&b);
    buf_init(&b);          /* invalid UTF-8 claimed as UTF-8 */
    text_to_utf8("utf-8", "a\xc3(", 3, &b);
    assert_string_equal(done(&b), "a\xef\xbf\xbd(");
    buf_free(&b);
}

static void encoded_words(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    header_text_decode(" =?utf-8?B?w5xiZXJnYWJl?= =?iso-8859-1?Q?_am_Fr=E9itag?= plain", &b);
    assert_string_equal(done(&b), " \xc3\x9c" "bergabe am Fr\xc3\xa9itag plain");   /* no blank between the two words */
    buf_free(&b);
    buf_init(&b);          /* not an encoded word: kept as it is */
    header_text_decode("a =?broken b", &b);
    assert_string_equal(done(&b), "a =?broken b");
    buf_free(&b);
}

static void html_as_text(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    const char html[] = "<p>A&amp;B&nbsp;&#252;&#x263A;</p><script>x()</script><STYLE>p{}</STYLE>end &bogus;";
    html_to_text(html, strlen(html), &b);
    /* each tag a blank; the script and the style with their content; an unknown entity as it is */
    assert_string_equal(done(&b), " A&B \xc3\xbc\xe2\x98\xba   end &bogus;");
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(latin1_and_unknown_charsets),
        cmocka_unit_test(encoded_words),
        cmocka_unit_test(html_as_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
