/* test_proxy_proto.c - PROXY protocol v1 and v2 headers: complete, partial
 * (need more bytes at every cut) and malformed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include "proxy_proto.h"

static int parse(const void *buf, size_t len, struct proxy_header *h)
{
    return proxy_parse(buf, len, h);
}

static const char *source_ip(const struct proxy_header *h, char *out, size_t n)
{
    const void *a = h->source.ss_family == AF_INET ? (const void *)&((const struct sockaddr_in *)&h->source)->sin_addr
                                                   : (const void *)&((const struct sockaddr_in6 *)&h->source)->sin6_addr;
    return inet_ntop(h->source.ss_family, a, out, (socklen_t)n);
}

/* Every proper prefix of a valid header asks for more bytes. */
static void assert_prefixes_need_more(const unsigned char *buf, size_t len)
{
    struct proxy_header h;
    for (size_t i = 0; i < len; i++)
        assert_int_equal(parse(buf, i, &h), 0);
}

static void v1_headers(void **state)
{
    (void)state;
    struct proxy_header h;
    char ip[64];
    const char *l = "PROXY TCP4 192.0.2.1 127.0.0.1 40000 25\r\nEHLO x\r\n";
    assert_int_equal(parse(l, strlen(l), &h), 41);
    assert_true(h.has_source && h.version == 1);
    assert_string_equal(source_ip(&h, ip, sizeof ip), "192.0.2.1");
    assert_int_equal(ntohs(((struct sockaddr_in *)&h.source)->sin_port), 40000);
    assert_prefixes_need_more((const unsigned char *)l, 41);
    const char *l6 = "PROXY TCP6 2001:db8::7 ::1 1 65535\r\n";
    assert_int_equal(parse(l6, strlen(l6), &h), (int)strlen(l6));
    assert_string_equal(source_ip(&h, ip, sizeof ip), "2001:db8::7");
    const char *u = "PROXY UNKNOWN whatever\r\n";
    assert_int_equal(parse(u, strlen(u), &h), (int)strlen(u));
    assert_false(h.has_source);
    static const char *const bad[] = {
        "EHLO client.test\r\n", "PROXY TCP4 192.0.2.1 127.0.0.1 40000 25\n", "PROXY TCP4 999.0.2.1 127.0.0.1 1 2\r\n",
        "PROXY TCP4 2001:db8::1 127.0.0.1 1 2\r\n", "PROXY TCP4 192.0.2.1 127.0.0.1 65536 2\r\n",
        "PROXY TCP4 192.0.2.1 127.0.0.1 01 2\r\n", "PROXY TCP4 192.0.2.1 127.0.0.1 1\r\n",
        "PROXY TCP4 192.0.2.1 127.0.0.1 1 2 3\r\n", "PROXY UDP4 192.0.2.1 127.0.0.1 1 2\r\n", "proxy TCP4 a b 1 2\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(parse(bad[i], strlen(bad[i]), &h), -1);
    char lng[200];
    memset(lng, 'x', sizeof lng);
    memcpy(lng, "PROXY ", 6);
    assert_int_equal(parse(lng, sizeof lng, &h), -1);     /* no CRLF within 107 bytes */
}

static size_t v2(unsigned char *b, unsigned char ver_cmd, unsigned char fam, const unsigned char *payload, size_t n)
{
    static const unsigned char sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    memcpy(b, sig, 12);
    b[12] = ver_cmd;
    b[13] = fam;
    b[14] = (unsigned char)(n >> 8);
    b[15] = (unsigned char)n;
    if (n)
        memcpy(b + 16, payload, n);     /* payload may be NULL when n is 0 */
    return 16 + n;
}

static void v2_headers(void **state)
{
    (void)state;
    struct proxy_header h;
    char ip[64];
    unsigned char b[128];
    /* TCP4 192.0.2.1:40000 -> 127.0.0.1:25, plus a TLV that is skipped */
    const unsigned char p4[] = {192, 0, 2, 1, 127, 0, 0, 1, 0x9c, 0x40, 0, 25, 0x04, 0x00, 0x01, 'x'};
    size_t n = v2(b, 0x21, 0x11, p4, sizeof p4);
    assert_int_equal(parse(b, n, &h), (int)n);
    assert_true(h.has_source && h.version == 2);
    assert_string_equal(source_ip(&h, ip, sizeof ip), "192.0.2.1");
    assert_int_equal(ntohs(((struct sockaddr_in *)&h.source)->sin_port), 40000);
    assert_prefixes_need_more(b, n);
    unsigned char p6[36] = {0x20, 0x01, 0x0d, 0xb8};
    p6[15] = 7;
    n = v2(b, 0x21, 0x21, p6, sizeof p6);
    assert_int_equal(parse(b, n, &h), (int)n);
    assert_string_equal(source_ip(&h, ip, sizeof ip), "2001:db8::7");
    n = v2(b, 0x20, 0x00, NULL, 0);                       /* LOCAL: the balancer's health check */
    assert_int_equal(parse(b, n, &h), 16);
    assert_false(h.has_source);
    assert_int_equal(parse(b, v2(b, 0x11, 0x11, p4, 12), &h), -1);   /* version 1 in a v2 block */
    assert_int_equal(parse(b, v2(b, 0x22, 0x11, p4, 12), &h), -1);   /* command 2 */
    assert_int_equal(parse(b, v2(b, 0x21, 0x12, p4, 12), &h), -1);   /* UDP */
    assert_int_equal(parse(b, v2(b, 0x21, 0x11, p4, 8), &h), -1);    /* too short for TCP4 */
    b[14] = 0xff;                                                        /* payload over the limit */
    assert_int_equal(parse(b, 16, &h), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(v1_headers), cmocka_unit_test(v2_headers)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
