/* received.c - posternd's Received header field (see received.h). */
#include "received.h"
#include <stdio.h>
#include <time.h>

const char *received_protocol(const struct received_info *ri)
{
    if (ri->smtputf8)
        return ri->tls ? "UTF8SMTPS" : "UTF8SMTP";
    if (ri->tls)
        return ri->authenticated ? "ESMTPSA" : "ESMTPS";     /* RFC 3848 */
    if (ri->authenticated)
        return "ESMTPA";
    return ri->esmtp ? "ESMTP" : "SMTP";
}

void received_add(struct header_list *h, const struct received_info *ri)
{
    char date[64], value[1200];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", &tm);
    size_t n = 0;
#define ADD(...) n += (size_t)snprintf(value + n, n < sizeof value ? sizeof value - n : 0, __VA_ARGS__)
    ADD(" from %s (%s[%s])", ri->helo, ri->client_name ? ri->client_name : "", ri->client_ip);
    if (ri->tls && ri->tls_info && ri->tls_info[0])
        ADD("\r\n\t(using %s)", ri->tls_info);
    ADD("\r\n\tby %s (Postern) with %s id %s", ri->hostname, received_protocol(ri), ri->qid);
    if (ri->only_rcpt)
        ADD("\r\n\tfor <%s>", ri->only_rcpt);
    ADD("; %s", date);
#undef ADD
    if (n < sizeof value)
        headers_insert_trace(h, "Received", value);
}
