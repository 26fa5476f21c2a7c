/* fuzz_nexthop.c - libFuzzer harness for what outbound delivery parses:
 * transport next hops (smtp:[host]:port, smtp:host:port, IP literals,
 * lmtp:[host]:port, lmtp:unix:/PATH),
 * server reply lines, and the sender-routing check. A parsed next hop is
 * either an address (a Unix socket's an absolute path without blanks, for
 * LMTP only) or a valid-looking host name with a port in range; a
 * reply code is 100-599 or -1. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include "config.h"
#include "smtp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char text[512];
    size_t n = size < sizeof text - 1 ? size : sizeof text - 1;
    memcpy(text, data, n);
    text[n] = '\0';
    struct nexthop h;
    char err[200];
    if (nexthop_parse(text, &h, err, sizeof err) == 0 && !h.mx) {
        if (h.host[0] && (h.port < 1 || h.port > 65535 || strpbrk(h.host, " \t\r\n[]/")))
            abort();
        const char *path = ((const struct sockaddr_un *)&h.addr)->sun_path;
        bool unix_ok = h.lmtp && h.addr.ss_family == AF_UNIX && path[0] == '/' && !strpbrk(path, " \t\r\n");
        if (!h.host[0] && h.addr.ss_family != AF_INET && h.addr.ss_family != AF_INET6 && !unix_ok)
            abort();
    }
    bool last;
    int code = smtp_reply_line((const char *)data, size, &last);
    if (code != -1 && (code < 100 || code > 599))
        abort();
    (void)smtp_address_routed(text);
    return 0;
}
