/* sink_amqp.c - the AMQP 0-9-1 sink (issue 39), for RabbitMQ: one
 * connection (librabbitmq), kept between batches, a channel in confirm
 * mode; each event of a batch is a persistent message (delivery mode 2,
 * content type application/json, message ID the event's id) published to
 * the sink's exchange with its routing key. The batch is taken once the
 * broker has confirmed (basic.ack) every message of it within the
 * timeout; a nack, a closed channel or connection, or the timeout fails
 * it (sent again later, on a new connection). With format=ndjson the
 * batch is one message: its events a line each. */
#include "sinks.h"
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

struct amqp_sink {
    amqp_connection_state_t conn;
    uint64_t next_tag;           /* the delivery tag the next publish gets */
};

static void drop_connection(struct amqp_sink *a)
{
    if (!a->conn)
        return;
    amqp_destroy_connection(a->conn);
    a->conn = NULL;
}

/* What a failed RPC said. */
static void rpc_why(amqp_rpc_reply_t r, const char *what, char *why, size_t whylen)
{
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION)
        snprintf(why, whylen, "%s: %s", what, amqp_error_string2(r.library_error));
    else if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CONNECTION_CLOSE_METHOD)
        snprintf(why, whylen, "%s: the broker closed the connection: %.*s", what,
                 (int)((amqp_connection_close_t *)r.reply.decoded)->reply_text.len,
                 (char *)((amqp_connection_close_t *)r.reply.decoded)->reply_text.bytes);
    else if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD)
        snprintf(why, whylen, "%s: the broker closed the channel: %.*s", what,
                 (int)((amqp_channel_close_t *)r.reply.decoded)->reply_text.len,
                 (char *)((amqp_channel_close_t *)r.reply.decoded)->reply_text.bytes);
    else
        snprintf(why, whylen, "%s failed", what);
}

/* Connect, log in, open channel 1 in confirm mode: 0, or -1 with why. */
static int connect_broker(struct amqp_sink *a, const struct event_sink *s, char *why, size_t whylen)
{
    a->conn = amqp_new_connection();
    amqp_socket_t *sock = a->conn ? amqp_tcp_socket_new(a->conn) : NULL;
    struct timeval tv = {.tv_sec = s->timeout};
    if (!sock) {
        snprintf(why, whylen, "out of memory");
        drop_connection(a);
        return -1;
    }
    int rc = amqp_socket_open_noblock(sock, s->host, s->port, &tv);
    if (rc != AMQP_STATUS_OK) {
        snprintf(why, whylen, "connect to %s:%d: %s", s->host, s->port, amqp_error_string2(rc));
        drop_connection(a);
        return -1;
    }
    amqp_set_rpc_timeout(a->conn, &tv);
    amqp_rpc_reply_t r = amqp_login(a->conn, s->vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, s->user, s->password);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        amqp_channel_open(a->conn, 1);
        r = amqp_get_rpc_reply(a->conn);
    }
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        amqp_confirm_select(a->conn, 1);
        r = amqp_get_rpc_reply(a->conn);
    }
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        char what[700];
        snprintf(what, sizeof what, "%s:%d vhost %s as %s", s->host, s->port, s->vhost, s->user);
        rpc_why(r, what, why, whylen);
        drop_connection(a);
        return -1;
    }
    a->next_tag = 1;
    return 0;
}

static void *amqp_open(const struct event_sink *s, char *why, size_t whylen)
{
    (void)s;
    (void)why;
    (void)whylen;
    return calloc(1, sizeof(struct amqp_sink));
}

static void amqp_close(void *state)
{
    struct amqp_sink *a = state;
    if (a)
        drop_connection(a);
    free(a);
}

/* The message ID: the event's "id" (it is first after "v"). */
static amqp_bytes_t event_id(const char *ev, size_t len)
{
    amqp_bytes_t id = {0, NULL};
    const char *p = memmem(ev, len, "\"id\":\"", 6);
    const char *end = p ? memchr(p + 6, '"', len - (size_t)(p + 6 - ev)) : NULL;
    if (end) {
        id.bytes = (void *)(p + 6);
        id.len = (size_t)(end - (p + 6));
    }
    return id;
}

/* Wait for the broker's confirms of tags first..last (those before were
 * confirmed with the batches before): 0, or -1 with why. */
static int wait_confirms(struct amqp_sink *a, const struct event_sink *s, uint64_t first, uint64_t last, char *why,
                         size_t whylen)
{
    uint64_t acked = first - 1;
    time_t deadline = time(NULL) + s->timeout;
    while (acked < last) {
        struct timeval tv = {.tv_sec = deadline > time(NULL) ? deadline - time(NULL) : 0, .tv_usec = 100000};
        amqp_frame_t f;
        int rc = amqp_simple_wait_frame_noblock(a->conn, &f, &tv);
        if (rc != AMQP_STATUS_OK) {
            snprintf(why, whylen, "waiting for confirms from %s:%d: %s", s->host, s->port,
                     rc == AMQP_STATUS_TIMEOUT ? "timed out" : amqp_error_string2(rc));
            return -1;
        }
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        if (f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            amqp_basic_ack_t *ack = f.payload.method.decoded;
            if (ack->delivery_tag > acked)
                acked = ack->delivery_tag;     /* with multiple, everything up to it */
        } else if (f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
            snprintf(why, whylen, "%s:%d refused a message (basic.nack)", s->host, s->port);
            return -1;
        } else if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
                   f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_channel_close_t *c = f.payload.method.decoded;     /* the same leading fields */
            snprintf(why, whylen, "%s:%d closed the channel: %.*s", s->host, s->port, (int)c->reply_text.len,
                     (char *)c->reply_text.bytes);
            return -1;
        }
    }
    return 0;
}

/* Publish one message: 0, or -1 with why (the connection dropped). */
static int publish(struct amqp_sink *a, const struct event_sink *s, amqp_basic_properties_t *props, amqp_bytes_t body,
                   char *why, size_t whylen)
{
    int rc = amqp_basic_publish(a->conn, 1, amqp_cstring_bytes(s->exchange), amqp_cstring_bytes(s->routing_key), 0, 0,
                                props, body);
    if (rc != AMQP_STATUS_OK) {
        snprintf(why, whylen, "publishing to %s:%d: %s", s->host, s->port, amqp_error_string2(rc));
        drop_connection(a);
        return -1;
    }
    a->next_tag++;
    return 0;
}

/* format=ndjson: the batch as one message, an event a line, its ID
 * "FIRST..LAST" of the events' IDs. */
static int publish_ndjson(struct amqp_sink *a, const struct event_sink *s, amqp_basic_properties_t *props,
                          const struct sink_batch *b, char *why, size_t whylen)
{
    size_t total = 0;
    for (size_t i = 0; i < b->n; i++)
        total += b->lens[i] + 1;
    char *body = malloc(total ? total : 1);
    if (!body) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    size_t off = 0;
    for (size_t i = 0; i < b->n; i++) {
        memcpy(body + off, b->events[i], b->lens[i]);
        off += b->lens[i];
        body[off++] = '\n';
    }
    amqp_bytes_t first = event_id(b->events[0], b->lens[0]), last = event_id(b->events[b->n - 1], b->lens[b->n - 1]);
    char id[256];
    snprintf(id, sizeof id, "%.*s..%.*s", (int)first.len, (char *)first.bytes, (int)last.len, (char *)last.bytes);
    props->content_type = amqp_cstring_bytes("application/x-ndjson");
    props->message_id = amqp_cstring_bytes(id);
    int rc = publish(a, s, props, (amqp_bytes_t){total, body}, why, whylen);
    free(body);
    return rc;
}

static int amqp_send(void *state, const struct event_sink *s, const struct sink_batch *b, char *why, size_t whylen)
{
    struct amqp_sink *a = state;
    if (!a->conn && connect_broker(a, s, why, whylen) < 0)
        return -1;
    amqp_basic_properties_t props = {
        ._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG,
        .content_type = amqp_cstring_bytes("application/json"),
        .delivery_mode = 2,
    };
    uint64_t first = a->next_tag;
    if (s->ndjson && b->n && publish_ndjson(a, s, &props, b, why, whylen) < 0)
        return -1;
    for (size_t i = 0; !s->ndjson && i < b->n; i++) {
        props.message_id = event_id(b->events[i], b->lens[i]);
        if (publish(a, s, &props, (amqp_bytes_t){b->lens[i], (void *)b->events[i]}, why, whylen) < 0)
            return -1;
    }
    if (wait_confirms(a, s, first, a->next_tag - 1, why, whylen) < 0) {
        drop_connection(a);
        return -1;
    }
    amqp_maybe_release_buffers(a->conn);
    return 0;
}

const struct sink_ops amqp_sink_ops = {amqp_open, amqp_send, amqp_close};
