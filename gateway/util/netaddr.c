/* netaddr.c - CIDR matching and address parsing for listeners, trusted
 * networks and next hops. IP literals only: name resolution lives in DNS code. */
#include "netaddr.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cidr_parse(const char *text, struct cidr *out)
{
    char tmp[80];
    if (strlen(text) >= sizeof tmp)
        return -1;
    strcpy(tmp, text);
    char *slash = strchr(tmp, '/');
    if (slash)
        *slash = '\0';
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, tmp, out->addr) == 1) {
        out->family = AF_INET;
        out->prefix = 32;
    } else if (inet_pton(AF_INET6, tmp, out->addr) == 1) {
        out->family = AF_INET6;
        out->prefix = 128;
    } else {
        return -1;
    }
    if (slash) {
        char *end;
        long p = strtol(slash + 1, &end, 10);
        if (*end || end == slash + 1 || p < 0 || p > out->prefix)
            return -1;
        out->prefix = (int)p;
    }
    return 0;
}

static bool prefix_equal(const unsigned char *a, const unsigned char *b, int bits)
{
    int bytes = bits / 8, rest = bits % 8;
    if (memcmp(a, b, (size_t)bytes) != 0)
        return false;
    if (!rest)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[bytes] & mask) == (b[bytes] & mask);
}

bool cidr_match(const struct cidr *net, const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET && net->family == AF_INET)
        return prefix_equal(net->addr, (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr,
                            net->prefix);
    if (sa->sa_family == AF_INET6) {
        const unsigned char *a6 = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        if (net->family == AF_INET6)
            return prefix_equal(net->addr, a6, net->prefix);
        /* IPv4-mapped IPv6 client against an IPv4 network */
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a6, mapped, 12) == 0)
            return prefix_equal(net->addr, a6 + 12, net->prefix);
    }
    return false;
}

int hostport_parse(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[64];
    const char *colon;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':' || (size_t)(close - text - 1) >= sizeof host)
            return -1;
        memcpy(host, text + 1, (size_t)(close - text - 1));
        host[close - text - 1] = '\0';
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon || (size_t)(colon - text) >= sizeof host)
            return -1;
        memcpy(host, text, (size_t)(colon - text));
        host[colon - text] = '\0';
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || port <= 0 || port > 65535)
        return -1;
    return ip_parse(host, (uint16_t)port, ss, len);
}

int ip_parse(const char *ip, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        *len = sizeof *s4;
    } else if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        *len = sizeof *s6;
    } else {
        return -1;
    }
    return 0;
}

void sockaddr_ip_text(const struct sockaddr *sa, char *out, size_t outlen)
{
    const void *a = sa->sa_family == AF_INET ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
                                             : (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (!inet_ntop(sa->sa_family, a, out, (socklen_t)outlen))
        snprintf(out, outlen, "unknown");
}

struct addr_window *addr_window_for(struct addr_window *table, size_t n, const char *ip, int secs)
{
    uint32_t h = 2166136261u;          /* FNV-1a */
    for (const char *p = ip; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    struct addr_window *w = &table[h % n];
    time_t now = time(NULL);
    if (strcmp(w->ip, ip) || now - w->start >= secs) {
        snprintf(w->ip, sizeof w->ip, "%s", ip);
        w->start = now;
        w->count = 0;
        w->shared = 0;
    }
    return w;
}
