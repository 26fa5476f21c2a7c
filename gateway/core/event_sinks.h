/* event_sinks.h - where the event stream goes (issue 39): the
 * `event_sinks = file:PATH` table, one sink a line:
 *
 *   webhook NAME URL [secret=FILE] [ca=FILE] [types=T,T...] [batch=N] [timeout=DURATION]
 *   redis NAME [stream=KEY] [maxlen=N] [types=T,T...] [batch=N]
 *   amqp NAME amqp://USER:PASSWORD@HOST[:PORT][/VHOST] [exchange=X] [routing_key=K] [types=...] [batch=N] [timeout=D]
 *        [format=each|ndjson]
 *
 * A webhook gets batches of events as a JSON array in an HTTP POST to URL
 * (https://HOST[:PORT]/PATH; http:// only to a loopback address), signed
 * with HMAC-SHA256 over the body when secret=FILE names its key (the
 * header X-Postern-Signature: sha256=HEX); ca=FILE are the certificates
 * the receiver's must chain to (else the system's). A redis sink appends
 * each event to a stream (XADD, default key postern:events, capped near
 * maxlen=N, default 1000000) through posternd's redis_server connection.
 * An amqp sink publishes each event as a persistent message (content type
 * application/json, message ID the event's id) to exchange X (default "",
 * the default exchange) with routing key K (default postern.events) on
 * RabbitMQ or another AMQP 0-9-1 broker, with publisher confirms: a batch
 * is taken when the broker has confirmed every message of it. With
 * format=ndjson a whole batch is one message instead (content type
 * application/x-ndjson, an event a line, message ID "FIRST..LAST" of its
 * events' IDs): a fraction of the broker's work per event.
 * types= keeps only those event types (event_type_names); batch= is the
 * most events a request carries (default 500); timeout= how long a
 * request may take (default 10s). The events themselves and their
 * delivery are gateway/events/. */
#ifndef POSTERN_EVENT_SINKS_H
#define POSTERN_EVENT_SINKS_H
#include <stdbool.h>
#include <stddef.h>

enum event_type {
    EV_CONNECTION_REFUSED, EV_REJECTED, EV_ACCEPTED, EV_QUARANTINED, EV_DELIVERED, EV_DEFERRED, EV_BOUNCED,
    EV_EXPIRED, EV_RELEASED, EV_DELETED, EV_DROPPED, EV_NTYPES
};
extern const char *const event_type_names[EV_NTYPES];

enum event_sink_kind { SINK_WEBHOOK, SINK_REDIS, SINK_AMQP };

#define EVENT_SINK_NAME_MAX 64
#define EVENT_SINKS_MAX 16

struct event_sink {
    enum event_sink_kind kind;
    char name[EVENT_SINK_NAME_MAX];
    unsigned types;                /* bit (1u << enum event_type) per type sent */
    int batch;
    long timeout;                  /* seconds */
    /* webhook */
    bool tls;
    char host[256];
    int port;
    char path[1024];
    char *secret;                  /* HMAC key (its file's bytes, without a final newline), or NULL */
    size_t secret_len;
    char *ca_file;                 /* NULL: the system's certificates */
    /* redis */
    char stream[256];
    long maxlen;
    /* amqp (host and port above) */
    char user[128], password[128], vhost[256], exchange[256], routing_key[256];
    bool ndjson;                   /* format=ndjson: a batch is one message */
};

struct event_sinks {
    struct event_sink *v;
    size_t n;
};

/* One table line (kind = its first word): 0, or -1 with err. */
int event_sinks_add_line(struct event_sinks *s, const char *kind, char *rest, char *err, size_t errlen);
void event_sinks_free(struct event_sinks *s);

#endif
