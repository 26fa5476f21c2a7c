/* received.h - posternd's own Received header field (RFC 5321 4.4), built
 * in one place for the SMTP server and for `postern policy test/replay`, so
 * a policy tried offline sees the message posternd would store. */
#ifndef POSTERN_RECEIVED_H
#define POSTERN_RECEIVED_H
#include "headers.h"
#include <stdbool.h>

struct received_info {
    const char *helo, *client_name, *client_ip;   /* client_name: XCLIENT NAME, or "" */
    const char *tls_info;                         /* "TLSv1.3 with cipher …", or NULL */
    bool tls, authenticated, esmtp, smtputf8;
    const char *hostname, *qid;
    const char *only_rcpt;                        /* the message's one recipient, or NULL */
};

/* "ESMTPSA" and the like (RFC 3848). */
const char *received_protocol(const struct received_info *ri);
/* Insert the field first in h, protected (headers_insert_trace). */
void received_add(struct header_list *h, const struct received_info *ri);

#endif
