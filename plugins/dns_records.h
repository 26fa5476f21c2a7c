/* dns_records.h - reading the raw reply host->dns_query() returns, for the
 * shipped plugins that look up records themselves (spf, dmarc). Header-only
 * so each plugin stays one .so; link with -lresolv (ns_initparse).
 *
 *   dns_lookup(host, name, type, &ans)  fills a struct dns_answer
 *   dns_txt(&ans, i, buf, size)         the i-th TXT record, strings joined
 *   dns_reversed_address(ip, ...)       an address's labels reversed (PTR, DNSBL)
 *   dns_unmapped_ip(ip, buf)            an IPv4-mapped IPv6 address as IPv4
 */
#ifndef POSTERN_DNS_RECORDS_H
#define POSTERN_DNS_RECORDS_H
#include "postern_plugin.h"
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <resolv.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* How a lookup ended. DNS_WOULDBLOCK: not in posternd's cache, in a
 * loop_first stage on the loop (postern_plugin.h); return at once. */
enum dns_status { DNS_OK, DNS_NXDOMAIN, DNS_NODATA, DNS_TEMPFAIL, DNS_WOULDBLOCK };

/* The packet buffer stops short of 64 KiB so that a malloc'd dns_answer is
 * under glibc's consolidation threshold: freeing a chunk of 64 KiB or more
 * consolidates the whole heap arena, once per lookup. Replies longer than
 * this (never seen for the TXT, PTR and A records the plugins ask for) are
 * a failed lookup. */
#define DNS_ANSWER_MAX (63 * 1024)

struct dns_answer {
    enum dns_status status;
    unsigned char packet[DNS_ANSWER_MAX];
    int len;
    ns_msg msg;
    int type;       /* the type asked for: only those records count */
    int count;      /* records of that type in the answer section */
    unsigned ttl;   /* the smallest TTL among them */
};

/* Nth answer record of the asked type, or -1. */
static inline int dns_record(struct dns_answer *a, int nth, ns_rr *rr)
{
    int seen = 0;
    for (int i = 0; i < ns_msg_count(a->msg, ns_s_an); i++) {
        if (ns_parserr(&a->msg, ns_s_an, i, rr) < 0)
            return -1;
        if ((int)ns_rr_type(*rr) == a->type && ns_rr_class(*rr) == ns_c_in && seen++ == nth)
            return 0;
    }
    return -1;
}

static inline enum dns_status dns_lookup(const struct postern_host *host, const char *name, int type,
                                         struct dns_answer *a)
{
    memset(&a->msg, 0, sizeof a->msg);
    a->type = type;
    a->count = 0;
    a->ttl = 0;
    a->len = host->dns_query(NULL, name, type, a->packet, sizeof a->packet);
    if (a->len == POSTERN_WOULDBLOCK)
        return a->status = DNS_WOULDBLOCK;
    if (a->len < 0 || ns_initparse(a->packet, a->len, &a->msg) < 0)
        return a->status = DNS_TEMPFAIL;
    int rcode = ns_msg_getflag(a->msg, ns_f_rcode);
    if (rcode == ns_r_nxdomain)
        return a->status = DNS_NXDOMAIN;
    if (rcode != ns_r_noerror)
        return a->status = DNS_TEMPFAIL;
    ns_rr rr;
    while (dns_record(a, a->count, &rr) == 0) {
        if (!a->count || ns_rr_ttl(rr) < a->ttl)
            a->ttl = ns_rr_ttl(rr);
        a->count++;
    }
    return a->status = a->count ? DNS_OK : DNS_NODATA;
}

/* The i-th TXT record with its character-strings joined (RFC 7208 3.3,
 * RFC 6376 3.6.2.2). Returns its length, or -1 (none, or too long). */
static inline int dns_txt(struct dns_answer *a, int i, char *buf, size_t size)
{
    ns_rr rr;
    if (dns_record(a, i, &rr) < 0)
        return -1;
    const unsigned char *p = ns_rr_rdata(rr), *end = p + ns_rr_rdlen(rr);
    size_t n = 0;
    while (p < end) {
        size_t l = *p++;
        if (l > (size_t)(end - p) || n + l >= size)
            return -1;
        memcpy(buf + n, p, l);
        n += l;
        p += l;
    }
    buf[n] = '\0';
    return (int)n;
}

/* ip's labels reversed for a lookup under in-addr.arpa or a DNS list:
 * "7.2.0.192" for IPv4, the 32 nibbles least significant first for IPv6
 * (RFC 3596 2.5, RFC 5782 2.4). addr and family get the parsed address.
 * false when ip is no address. */
static inline bool dns_reversed_address(const char *ip, char *out, size_t size, unsigned char addr[16], int *family)
{
    if (inet_pton(AF_INET, ip, addr) == 1) {
        *family = AF_INET;
        snprintf(out, size, "%u.%u.%u.%u", addr[3], addr[2], addr[1], addr[0]);
        return true;
    }
    if (inet_pton(AF_INET6, ip, addr) != 1 || size < 64)
        return false;
    *family = AF_INET6;
    size_t o = 0;
    for (int i = 15; i >= 0; i--)
        o += (size_t)snprintf(out + o, size - o, "%x.%x.", addr[i] & 0xf, addr[i] >> 4);
    out[o - 1] = '\0';
    return true;
}

/* An IPv4-mapped IPv6 client (::ffff:192.0.2.1) is the IPv4 client it maps
 * (RFC 4291 2.5.5.2): its IPv4 text, else ip; copied to buf first. */
static inline const char *dns_unmapped_ip(const char *ip, char buf[64])
{
    snprintf(buf, 64, "%s", ip);
    return !strncasecmp(buf, "::ffff:", 7) && strchr(buf + 7, '.') && !strchr(buf + 7, ':') ? buf + 7 : buf;
}

#endif
