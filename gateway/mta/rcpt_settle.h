/* rcpt_settle.h - which reply settles each recipient of one outbound SMTP
 * transaction (RFC 5321 3.3, RFC 2920, RFC 3030), apart from the I/O: a
 * refused MAIL settles everyone with its reply; a refused RCPT settles its
 * recipient; a refused DATA (or BDAT) settles only the accepted ones; the
 * end of the data settles the accepted ones; when nobody was accepted, a
 * 354 is answered with an empty message whose reply changes nothing. What
 * the connection itself does to the open ones (a 421, a timeout) is the
 * caller's: rcpt_settle_open. */
#ifndef POSTERN_RCPT_SETTLE_H
#define POSTERN_RCPT_SETTLE_H
#include "delivery.h"
#include <stdbool.h>

struct rcpt_settle {
    struct delivery_rcpt *rcpts;
    size_t n;
    bool *accepted;            /* the server said 2xx to its RCPT */
    size_t naccepted;
    bool mail_failed;
    bool data_ignored;         /* 354 with nobody accepted: its end settles nothing */
    size_t lmtp_next;          /* LMTP: the next recipient an end-of-data reply may be for */
    /* the peer, copied into each recipient its replies settle */
    bool peer_dsn;
    const char *remote, *where;
    const char *tls;           /* the connection's TLS version, or NULL: none */
};

/* For the n recipients of one transaction: 0, or -1 (out of memory). */
int rcpt_settle_begin(struct rcpt_settle *s, struct delivery_rcpt *rcpts, size_t n, bool peer_dsn,
                      const char *remote, const char *where);
void rcpt_settle_end(struct rcpt_settle *s);
/* Recipient k gets (code, text) unless settled already; stage names the
 * command the peer answered ("RCPT TO", "end of DATA"), NULL for our own text. */
void rcpt_settle_one(struct rcpt_settle *s, size_t k, int code, const char *text, const char *stage);
/* Every open recipient, or every accepted one, gets (code, text). */
void rcpt_settle_open(struct rcpt_settle *s, int code, const char *text, const char *stage);
void rcpt_settle_accepted(struct rcpt_settle *s, int code, const char *text, const char *stage);

/* The replies of a transaction, in order. */
void rcpt_settle_mail(struct rcpt_settle *s, int code, const char *text);
void rcpt_settle_rcpt(struct rcpt_settle *s, size_t k, int code, const char *text);
enum settle_data { SETTLE_SEND_BODY, SETTLE_SEND_EMPTY, SETTLE_DATA_REFUSED };
enum settle_data rcpt_settle_data(struct rcpt_settle *s, int code, const char *text);
/* The end of the data (the final dot, or BDAT's deciding reply). */
void rcpt_settle_data_end(struct rcpt_settle *s, int code, const char *text, const char *stage);
/* LMTP (RFC 2033 4.2): after the final dot, one reply per accepted
 * recipient, in RCPT order; this one settles the next. True once every
 * accepted recipient has had its reply. */
bool rcpt_settle_lmtp_data_end(struct rcpt_settle *s, int code, const char *text);

#endif
