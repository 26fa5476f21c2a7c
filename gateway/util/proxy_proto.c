/* proxy_proto.c - PROXY protocol v1 (one text line) and v2 (a binary
 * block after a 12-byte signature). Only TCP over IPv4/IPv6 carries an
 * address we use; LOCAL, UNKNOWN, UNSPEC and UNIX keep the connection's. */
#include "proxy_proto.h"
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const unsigned char v2_signature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                               0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* A decimal port 0..65535 without sign or leading zeros. */
static int parse_port(const char *s)
{
    if (!isdigit((unsigned char)s[0]) || (s[0] == '0' && s[1]) || strlen(s) > 5)
        return -1;
    for (const char *p = s; *p; p++)
        if (!isdigit((unsigned char)*p))
            return -1;
    long v = strtol(s, NULL, 10);
    return v <= 65535 ? (int)v : -1;
}

static void set_source(struct proxy_header *out, int family, const void *addr, int port)
{
    memset(&out->source, 0, sizeof out->source);
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&out->source;
        sin->sin_family = AF_INET;
        memcpy(&sin->sin_addr, addr, 4);
        sin->sin_port = htons((uint16_t)port);
        out->source_len = sizeof *sin;
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->source;
        sin6->sin6_family = AF_INET6;
        memcpy(&sin6->sin6_addr, addr, 16);
        sin6->sin6_port = htons((uint16_t)port);
        out->source_len = sizeof *sin6;
    }
    out->has_source = true;
}

/* "PROXY TCP4|TCP6 src dst sport dport" or "PROXY UNKNOWN ...", CRLF ended. */
static int parse_v1(const unsigned char *buf, size_t len, struct proxy_header *out)
{
    size_t cmp = len < 6 ? len : 6;
    if (memcmp(buf, "PROXY ", cmp))
        return -1;
    const unsigned char *nl = memchr(buf, '\n', len < PROXY_V1_MAX ? len : PROXY_V1_MAX);
    if (!nl)
        return len >= PROXY_V1_MAX ? -1 : 0;
    size_t n = (size_t)(nl - buf) + 1;
    if (n < 8 || buf[n - 2] != '\r')
        return -1;
    char line[PROXY_V1_MAX + 1];
    memcpy(line, buf, n - 2);
    line[n - 2] = '\0';
    if (memchr(line, '\0', n - 2))
        return -1;
    out->version = 1;
    if (!strncmp(line + 6, "UNKNOWN", 7) && (line[13] == '\0' || line[13] == ' '))
        return (int)n;
    char *f[6], *save = NULL;
    int k = 0;
    for (char *t = strtok_r(line, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        if (k == 6)
            return -1;       /* a seventh field */
        f[k++] = t;
    }
    if (k != 6)
        return -1;
    int family = !strcmp(f[1], "TCP4") ? AF_INET : !strcmp(f[1], "TCP6") ? AF_INET6 : -1;
    unsigned char src[16], dst[16];
    int sport = parse_port(f[4]), dport = parse_port(f[5]);
    if (family < 0 || inet_pton(family, f[2], src) != 1 || inet_pton(family, f[3], dst) != 1 || sport < 0 ||
        dport < 0)
        return -1;
    set_source(out, family, src, sport);
    return (int)n;
}

/* Signature, version/command, family/protocol, length, then the addresses. */
static int parse_v2(const unsigned char *buf, size_t len, struct proxy_header *out)
{
    if (len < 16)
        return 0;
    unsigned ver = buf[12] >> 4, cmd = buf[12] & 0x0f, fam = buf[13];
    size_t plen = (size_t)buf[14] << 8 | buf[15];
    if (ver != 2 || cmd > 1 || plen > PROXY_V2_MAX_PAYLOAD)
        return -1;
    if (len < 16 + plen)
        return 0;
    out->version = 2;
    const unsigned char *a = buf + 16;
    if (cmd == 0)                           /* LOCAL: the balancer's own check */
        return (int)(16 + plen);
    switch (fam) {
    case 0x11:                              /* TCP over IPv4 */
        if (plen < 12)
            return -1;
        set_source(out, AF_INET, a, a[8] << 8 | a[9]);
        break;
    case 0x21:                              /* TCP over IPv6 */
        if (plen < 36)
            return -1;
        set_source(out, AF_INET6, a, a[32] << 8 | a[33]);
        break;
    case 0x00:                              /* UNSPEC */
    case 0x31:                              /* UNIX stream */
        break;
    default:                                /* UDP, unknown: not a mail client */
        return -1;
    }
    return (int)(16 + plen);
}

int proxy_parse(const unsigned char *buf, size_t len, struct proxy_header *out)
{
    memset(out, 0, sizeof *out);
    if (!len)
        return 0;
    size_t cmp = len < sizeof v2_signature ? len : sizeof v2_signature;
    if (!memcmp(buf, v2_signature, cmp))
        return len < sizeof v2_signature ? 0 : parse_v2(buf, len, out);
    return parse_v1(buf, len, out);
}
