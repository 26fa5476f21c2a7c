/* delivery.h - outbound delivery. A job (some recipients of one message for
 * one next hop) is self-contained: what to send, where, and the callbacks
 * its owner (queue.c) supplies. delivery.c chooses the servers (transport,
 * MX, MTA-STS), paces domains (dest_rate_limit), and runs up to
 * dest_concurrency connections per destination (smtp_client.c), reused
 * across messages. Delivery never names the queue. */
#ifndef POSTERN_DELIVERY_H
#define POSTERN_DELIVERY_H
#include "config.h"
#include "spool.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DELIVERY_REPLY_MAX 256
#define DELIVERY_REMOTE_MAX 160
#define DELIVERY_STAGE_MAX 24

/* One recipient and, once settled, its outcome in this attempt. */
struct delivery_rcpt {
    const char *addr;
    unsigned notify;                    /* DSN NOTIFY bits from the sender (0 = none) */
    const char *orcpt;                  /* DSN ORCPT as received, or NULL */
    size_t tag;                         /* the owner's own index; delivery keeps it */
    int cls;                            /* 2, 4 or 5 once settled; 0 while open */
    bool peer_dsn;                      /* the next hop offered DSN: it owns the notices */
    bool requiretls_unmet;              /* deferred only because this server lacks REQUIRETLS */
    bool held;                          /* not tried: its provider is suspended (not an attempt) */
    char reply[DELIVERY_REPLY_MAX];     /* the peer's reply, or our own reason */
    char remote[DELIVERY_REMOTE_MAX];   /* "host[ip]" that answered; "" if none did */
    char relay[DELIVERY_REMOTE_MAX + 8];    /* ... with its port, for the log: "host[ip]:port" */
    char tls[16];                       /* the connection's TLS version ("TLSv1.3"), "" for none */
    char in_reply_to[DELIVERY_STAGE_MAX];  /* "RCPT TO", "end of DATA", ... ("" = ours) */
};

struct runtime;
struct dane_skip;
struct delivery_job {
    /* what to send */
    char id[QID_LEN];
    const char *sender;
    struct delivery_rcpt *rcpts;
    size_t n;
    size_t body_off;                    /* the message starts here in queue/ID */
    uint64_t size;
    enum smtp_body body;
    bool smtputf8;
    bool requiretls;                    /* RFC 8689: only authenticated TLS to a server offering REQUIRETLS */
    bool tls_optional;                  /* "TLS-Required: No": the recipient's DANE/MTA-STS do not bind */
    enum dsn_ret ret;
    const char *envid;
    int64_t arrival;
    char *corrupt;                      /* set by the client: the spooled body breaks DATA's rules (why) */
    /* where */
    struct runtime *rt;                 /* the generation hop and tls belong to (held by the owner) */
    const struct nexthop *hop;          /* transport ("mx" or an address) */
    const struct tls_policy *tls;       /* for the recipient domain */
    const struct egress_source *source; /* where connections come from and their HELO; NULL: smtp_bind_address */
    const struct named_queue *queue;    /* its named queue (priority, concurrency), or NULL: priority 0 */
    char domain[256];                   /* recipient domain (MX, rate limits) */
    const struct provider *provider;    /* the last server's MX provider, or NULL (back-off rules) */
    /* the owner's callbacks: judge() (optional) when a next hop refused
     * recipient k, before the outcome is logged: it may change it; result()
     * once per recipient when its outcome is final for this attempt, then
     * done() once */
    void (*judge)(struct delivery_job *job, size_t k);
    void (*result)(struct delivery_job *job, size_t k);
    void (*done)(struct delivery_job *job);
    void *owner;
    /* delivery's own */
    struct mx_target *cands;            /* MX routing: the servers, in order */
    struct dane_skip *skipped;          /* DANE: why cands[i] may not be used, while deciding */
    size_t ncand, cur;
    int sessions;                       /* of this attempt that reached EHLO: smtp_mx_session_limit */
    const char *waiting;                /* why it waits ("rate limit"), or NULL */
    uint64_t not_before_ms;
    uint64_t started_ms;                /* routing began (the attempt's duration) */
    uint64_t routed_ms;                 /* handed to a destination's connections */
    uint64_t sending_ms;                /* a connection started the transaction */
    struct delivery_job *next;
};

void delivery_init(const struct config *cfg);
/* Was reply the one a recipient gets while its MX provider is suspended?
 * Then the provider's name is in name. */
bool delivery_provider_held(const char *reply, char *name, size_t size);
void delivery_submit(struct delivery_job *job);
/* Timeouts, pacing and idle connection expiry; called on every tick. */
void delivery_tick(void);
/* Jobs currently carrying or waiting for a connection. */
int delivery_busy(void);
/* Shutdown: close idle connections, and start none of the jobs waiting for
 * a connection (transactions in flight finish; the rest stay queued). */
void delivery_close_idle(void);

#endif
