/* smtp_client.h - one outbound SMTP connection (RFC 5321 client side): the
 * reply-driven state machine from connect to QUIT, with PIPELINING
 * (RFC 2920), STARTTLS (RFC 3207), AUTH PLAIN/LOGIN (RFC 4954) and BDAT
 * (RFC 3030); or LMTP (RFC 2033), over TCP or a Unix socket. It settles the recipients of the job it carries and tells its
 * owner (delivery.c) when it is ready, done with a job, or gone. */
#ifndef POSTERN_SMTP_CLIENT_H
#define POSTERN_SMTP_CLIENT_H
#include "config.h"
#include "delivery.h"
#include <stdbool.h>
#include <stdint.h>

struct smtp_client;

/* Where and how to connect; the pointers must outlive the client. */
struct dane_tlsa;
struct client_peer {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char name[256];                   /* host name (SNI, verify, Remote-MTA), or "" */
    const struct tls_policy *tls;
    const struct dane_tlsa *tlsa;     /* TLS_DANE: the records that authenticate it */
    bool *tls_broken;                 /* "may" and a handshake failed: plain text next */
    const struct sasl_entry *auth;    /* credentials for this next hop, or NULL */
    bool lmtp;                        /* LMTP (RFC 2033): LHLO, a reply per recipient after the data */
    const struct egress_source *source;   /* source address and HELO name, or NULL (smtp_bind_address) */
};

struct client_ops {
    /* idle and able to take a job */
    void (*ready)(void *owner, struct smtp_client *c);
    /* every recipient of job is settled; the client is not ready yet */
    void (*job_done)(void *owner, struct smtp_client *c, struct delivery_job *job);
    /* the client is gone for its owner (it may still say QUIT on its own).
     * never_ready: it failed before it was ready; why: our 4xx text */
    void (*closed)(void *owner, struct smtp_client *c, bool never_ready, const char *why);
};

void smtp_client_init(const struct config *cfg);
struct smtp_client *smtp_client_open(const struct client_peer *peer, const struct client_ops *ops, void *owner);
/* Run one transaction for job (only when ready). */
void smtp_client_start(struct smtp_client *c, struct delivery_job *job);
/* A ready client with nothing to do: QUIT after connection_cache_time, or
 * now when `now` is set. */
void smtp_client_idle(struct smtp_client *c, bool now);
/* For TLS reports: the TLS failure of this connection as an RFC 8460
 * result type (NULL: none), whether its certificate was authenticated,
 * and our own address on it ("" before TLS). */
const char *smtp_client_tls_result(const struct smtp_client *c);
bool smtp_client_tls_authenticated(const struct smtp_client *c);
const char *smtp_client_local_ip(const struct smtp_client *c);
/* Timeouts of every client; called on every tick. */
void smtp_client_tick(void);

#endif
