/* dsn.h - delivery status notifications (RFC 3464 multipart/report):
 * bounces for failed recipients and warnings for delayed ones. Pure text
 * building, so it is unit-tested without a spool. */
#ifndef POSTERN_DSN_H
#define POSTERN_DSN_H
#include "buf.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a notice reports (RFC 3464 Action:). */
enum dsn_kind { DSN_FAILED, DSN_DELAYED, DSN_RELAYED };

struct dsn_rcpt {
    const char *addr;
    const char *last_reply;   /* remote reply or our own reason */
    const char *orcpt;        /* ORCPT as received ("rfc822;xtext"), or NULL */
    const char *remote;       /* "host[ip]" that gave last_reply, or NULL/"" */
    const char *in_reply_to;  /* the command it answered ("RCPT TO"), or NULL/"" */
};

struct dsn_report {
    const char *reporting_mta;   /* our hostname */
    const char *queue_id;        /* of the original message */
    const char *orig_sender;     /* the DSN goes to this address */
    int64_t arrival;
    int64_t now;
    int64_t lifetime;            /* max_queue_lifetime: a delay notice says until when */
    enum dsn_kind kind;
    const char *envid;           /* ENVID as received (xtext), or NULL */
    const struct dsn_rcpt *rcpts;
    size_t nrcpts;
    const char *headers;         /* original header section (may be NULL) */
    size_t headers_len;
    const char *message;         /* RET=FULL on a failure: the whole original */
    size_t message_len;
};

/* The whole DSN message, CRLF line ends, ready for the spool. */
int dsn_build(const struct dsn_report *r, struct buf *out);

/* RFC 3463 status from a reply: its enhanced code if it has one, else
 * derived from the reply code class; `fallback` when there is no code. */
void dsn_status(const char *reply, const char *fallback, char out[16]);

#endif
