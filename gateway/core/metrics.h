/* metrics.h - posternd's counters, gauges and histograms, declared once in
 * a table (metrics.c) and served in Prometheus text format at /metrics
 * (http.c). Updates are lock-free atomics, callable from any thread;
 * labelled series are interned on first use (at most METRIC_MAX_SERIES per
 * metric; beyond that, updates go to one overflow series). */
#ifndef POSTERN_METRICS_H
#define POSTERN_METRICS_H
#include "buf.h"
#include <stdint.h>

enum metric_id {
    M_SESSIONS_TOTAL,          /* counter */
    M_SESSIONS_OPEN,           /* gauge */
    M_SESSIONS_REFUSED,        /* counter {reason} */
    M_MESSAGES_ACCEPTED,       /* counter */
    M_VERDICTS,                /* counter {stage, verdict, link} */
    M_PLUGIN_ERRORS,           /* counter {link} */
    M_DELIVERIES,              /* counter {result} */
    M_DELIVERY_SECONDS,        /* histogram: one delivery attempt */
    M_QUEUE_MESSAGES,          /* gauge */
    M_FSYNC_SECONDS,           /* histogram: one spool fsync */
    M_DNS_QUERIES,             /* counter {result: cache_hit | answered | failed} */
    M_TLS_HANDSHAKES,          /* counter {direction, result} */
    M_RELOADS,                 /* counter {result: ok | refused} */
    M_QUEUE_BY_STATE,          /* gauge {state}: queued, deferred, active, hold */
    M_QUEUE_BY_AGE,            /* gauge {age}: messages younger than 5m, 1h, 4h, 1d, 5d, older */
    M_RESIDENCE_SECONDS,       /* histogram: arrival to leaving the queue */
    M_LINK_SECONDS,            /* counter {link}: time in each chain link (seconds, as a float sum) */
    M_LINK_CALLS,              /* counter {link} */
    M_TLS_POLICY_FAILURES,
    M_BACKOFF_ACTIONS,         /* counter {action}: back-off rules that suspended something */
    M_SUSPENSIONS,             /* gauge: destinations, sources and queues suspended now */     /* counter {level, reason}: outbound TLS demanded and not had */
    M_DELIVERIES_BY_ROUTE,     /* counter {route: mx | transport, result} */
    M_CONFIG_GENERATION,       /* gauge: 1 at start, +1 per reload */
    M_REDIS_UP,                /* gauge: 1 while the Redis connection is up */
    M_REDIS_FAILURES,          /* counter {reason}: Redis requests that got no answer */
    M_KV_REQUESTS,             /* counter {backend: redis | local | fallback}: shared-state operations */
    M_LUA_CALLS,               /* counter {where: loop | moved | restarted | thread}: Lua link calls, by where they ran */
    M_CHAIN_C_RUNS,            /* counter {where: loop | worker | deferred}: runs of consecutive C links */
    M_TRACK_EVENTS,            /* counter: events written to the tracking store */
    M_TRACK_DROPPED,           /* counter: events dropped while its writer was behind */
    M_EVENTS_WRITTEN,          /* counter: events written to the event outbox */
    M_EVENTS_DROPPED,          /* counter {reason}: events lost before a sink had them */
    M_EVENTS_SENT,             /* counter {sink}: events a sink took */
    M_EVENTS_SEND_FAILURES,    /* counter {sink}: requests to a sink that failed (retried) */
    M_EVENTS_OUTBOX_BYTES,     /* gauge: the event outbox's size */
    M_STORAGE_REFUSALS,        /* counter {reason: queue_full | disk_space}: MAIL answered 452 4.3.1 */
    M_COUNT
};

#define METRIC_MAX_SERIES 128

void metric_add(enum metric_id m, const char *labels, uint64_t n);
static inline void metric_inc(enum metric_id m, const char *labels) { metric_add(m, labels, 1); }
void metric_set(enum metric_id m, const char *labels, int64_t value);
void metric_observe(enum metric_id m, double seconds);
/* Add seconds to a float-valued counter (kept in microseconds). */
void metric_add_seconds(enum metric_id m, const char *labels, double seconds);
/* A counter's or gauge's current value (0 for a series never updated). */
int64_t metric_value(enum metric_id m, const char *labels);
/* A label set as Prometheus writes it: name="value" pairs, values escaped.
 * Returns out. pairs: name, value, name, value, ..., NULL. */
const char *metric_labels(char *out, size_t size, ...);
/* The whole exposition. */
void metrics_render(struct buf *out);

#endif
