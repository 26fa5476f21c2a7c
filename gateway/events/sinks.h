/* sinks.h - sending the event stream (issue 39): one thread per sink of
 * the event_sinks table reads the outbox from its cursor, keeps the event
 * types it takes, and sends them in batches; a batch that fails is sent
 * again, after 1 s, 2 s, ... up to a minute, until it goes. The outbox is
 * read only, so a slow or absent receiver never holds up mail (only the
 * outbox's bounds can cost it events, counted). Each kind of sink is a
 * file: sink_webhook.c, sink_redis.c, sink_amqp.c. */
#ifndef POSTERN_SINKS_H
#define POSTERN_SINKS_H
#include "config.h"
#include "event_sinks.h"
#include <stddef.h>

/* After outbox_start: a thread per sink. 0, or -1 with err. */
int sinks_start(const struct config *cfg, char *err, size_t errlen);
/* At exit, before redis_stop (a redis sink uses that connection): each
 * thread ends after its request in hand and is waited for (a few seconds
 * at most). What they had not sent stays in the outbox for the next start. */
void sinks_stop(void);

/* A batch for one sink: n events, each a JSON object (no newline). */
struct sink_batch {
    const char **events;
    const size_t *lens;
    size_t n;
};

/* A kind of sink: open (its thread, once: its state, or NULL with why),
 * send a batch (0, or -1 with why: sent again later), close. */
struct sink_ops {
    void *(*open)(const struct event_sink *s, char *why, size_t whylen);
    int (*send)(void *state, const struct event_sink *s, const struct sink_batch *b, char *why, size_t whylen);
    void (*close)(void *state);
};
extern const struct sink_ops webhook_sink_ops, redis_sink_ops, amqp_sink_ops;

#endif
