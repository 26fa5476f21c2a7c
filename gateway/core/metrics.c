/* metrics.c - the metric table and the Prometheus text exposition (format
 * 0.0.4). A metric's series are found by their label string; a new one is
 * added under a mutex, after which updates are atomic adds. */
#include "metrics.h"
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

enum kind { COUNTER, GAUGE, HISTOGRAM, SECONDS };   /* SECONDS: a counter of seconds, kept in µs */

/* Histogram buckets: seconds for one operation, or for a message's stay in the queue. */
static const double op_bounds[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
static const double stay_bounds[] = {1, 5, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 2 * 86400,
                                     5 * 86400};
#define NBOUNDS (sizeof op_bounds / sizeof op_bounds[0])
_Static_assert(sizeof stay_bounds == sizeof op_bounds, "one bucket count for every histogram");

struct series {
    char labels[200];
    _Atomic int64_t value;
};

struct metric {
    const char *name, *help;
    enum kind kind;
    bool labelled;               /* its series carry labels: none until the first update */
    struct series series[METRIC_MAX_SERIES];
    _Atomic int nseries;
    /* histograms (no labels) */
    _Atomic uint64_t buckets[NBOUNDS + 1];
    _Atomic uint64_t sum_us, count;
    const double *bounds;        /* NULL: op_bounds */
};

static struct metric metrics[M_COUNT] = {
    [M_SESSIONS_TOTAL] = {"postern_smtp_sessions_total", "SMTP sessions accepted", COUNTER},
    [M_SESSIONS_OPEN] = {"postern_smtp_sessions_open", "SMTP sessions open now", GAUGE},
    [M_SESSIONS_REFUSED] = {"postern_smtp_sessions_refused_total", "Connections refused before a session, by reason",
                            COUNTER, true},
    [M_MESSAGES_ACCEPTED] = {"postern_messages_accepted_total", "Messages answered 250 and queued", COUNTER},
    [M_VERDICTS] = {"postern_chain_verdicts_total",
                    "Hook chain verdicts other than CONTINUE, by stage, verdict and deciding link", COUNTER, true},
    [M_PLUGIN_ERRORS] = {"postern_chain_errors_total", "Plugin and Lua failures (the message tempfailed), by link",
                         COUNTER, true},
    [M_DELIVERIES] = {"postern_delivery_recipients_total",
                      "Recipients after a delivery attempt: delivered, deferred or bounced", COUNTER, true},
    [M_DELIVERY_SECONDS] = {"postern_delivery_attempt_seconds", "Duration of one delivery attempt", HISTOGRAM},
    [M_QUEUE_MESSAGES] = {"postern_queue_messages", "Messages in the queue", GAUGE},
    [M_FSYNC_SECONDS] = {"postern_spool_fsync_seconds", "Duration of one spool fsync", HISTOGRAM},
    [M_DNS_QUERIES] = {"postern_dns_queries_total", "DNS lookups through posternd's resolver, by result", COUNTER, true},
    [M_TLS_HANDSHAKES] = {"postern_tls_handshakes_total", "TLS handshakes, by direction and result", COUNTER, true},
    [M_RELOADS] = {"postern_config_reloads_total", "Configuration reloads, by result", COUNTER, true},
    [M_CONFIG_GENERATION] = {"postern_config_generation", "The configuration generation in use (1 at start)", GAUGE},
    [M_REDIS_UP] = {"postern_redis_up", "1 while the connection to redis_server is up", GAUGE},
    [M_REDIS_FAILURES] = {"postern_redis_failures_total", "Redis requests that got no answer, by reason", COUNTER, true},
    [M_KV_REQUESTS] = {"postern_shared_state_requests_total",
                       "Shared policy state operations, by where they were answered (redis, local, fallback)", COUNTER,
                       true},
    [M_LUA_CALLS] = {"postern_lua_calls_total",
                     "Lua link calls: answered on the network loop, started there and moved to a Lua thread, "
                     "started there and run again on a Lua thread, or run on a Lua thread", COUNTER, true},
    [M_CHAIN_C_RUNS] = {"postern_chain_c_runs_total",
                        "Runs of consecutive C chain links: on the loop, on a worker, or deferred from the loop to a "
                        "worker (a host call would have blocked)", COUNTER, true},
    [M_TRACK_EVENTS] = {"postern_track_events_total", "Message tracking events written to the store", COUNTER, false},
    [M_TRACK_DROPPED] = {"postern_track_dropped_total",
                         "Message tracking events dropped because the store's writer was behind", COUNTER, false},
    [M_EVENTS_WRITTEN] = {"postern_events_written_total", "Events written to the event outbox", COUNTER, false},
    [M_EVENTS_DROPPED] = {"postern_events_dropped_total",
                          "Events lost before a sink had them: the outbox over its size or age, its writer behind, "
                          "out of memory, a write error", COUNTER, true},
    [M_EVENTS_SENT] = {"postern_events_sent_total", "Events each sink took", COUNTER, true},
    [M_EVENTS_SEND_FAILURES] = {"postern_events_send_failures_total",
                                "Requests to a sink that failed and are retried", COUNTER, true},
    [M_EVENTS_OUTBOX_BYTES] = {"postern_events_outbox_bytes", "The event outbox's size on disk", GAUGE, false},
    [M_STORAGE_REFUSALS] = {"postern_smtp_storage_refusals_total",
                            "MAIL answered 452 4.3.1 for lack of room, by reason (queue_full, disk_space)", COUNTER,
                            true},
    [M_QUEUE_BY_STATE] = {"postern_queue_messages_by_state", "Messages in the queue by state", GAUGE, true},
    [M_QUEUE_BY_AGE] = {"postern_queue_messages_by_age", "Messages in the queue by age (younger than)", GAUGE, true},
    [M_RESIDENCE_SECONDS] = {"postern_queue_residence_seconds",
                             "Time from acceptance to leaving the queue (delivered, bounced or deleted)", HISTOGRAM,
                             .bounds = stay_bounds},
    [M_LINK_SECONDS] = {"postern_chain_link_seconds_total", "Time spent in each chain link", SECONDS, true},
    [M_LINK_CALLS] = {"postern_chain_link_calls_total", "Calls of each chain link", COUNTER, true},
    [M_BACKOFF_ACTIONS] = {"postern_backoff_actions_total",
                           "Back-off rules that suspended a destination or source, by action", COUNTER, true},
    [M_SUSPENSIONS] = {"postern_suspensions", "Destinations, egress sources and named queues suspended now", GAUGE,
                       false},
    [M_TLS_POLICY_FAILURES] = {"postern_tls_policy_failures_total",
                               "Outbound deliveries deferred because a required TLS level was not met", COUNTER, true},
    [M_DELIVERIES_BY_ROUTE] = {"postern_delivery_recipients_by_route_total",
                               "Recipients after a delivery attempt, by route (mx or a transport) and result", COUNTER,
                               true},
};

static pthread_mutex_t add_lock = PTHREAD_MUTEX_INITIALIZER;

static struct series *series_for(struct metric *m, const char *labels)
{
    if (!labels)
        labels = "";
    int n = atomic_load(&m->nseries);
    for (int i = 0; i < n; i++)
        if (!strcmp(m->series[i].labels, labels))
            return &m->series[i];
    pthread_mutex_lock(&add_lock);
    n = atomic_load(&m->nseries);
    struct series *s = NULL;
    for (int i = 0; i < n && !s; i++)
        if (!strcmp(m->series[i].labels, labels))
            s = &m->series[i];
    if (!s) {
        /* full: the last slot collects the rest */
        s = &m->series[n < METRIC_MAX_SERIES ? n : METRIC_MAX_SERIES - 1];
        if (n < METRIC_MAX_SERIES) {
            snprintf(s->labels, sizeof s->labels, "%s", n == METRIC_MAX_SERIES - 1 ? "overflow=\"true\"" : labels);
            atomic_store(&m->nseries, n + 1);   /* published after its label is written */
        }
    }
    pthread_mutex_unlock(&add_lock);
    return s;
}

void metric_add(enum metric_id id, const char *labels, uint64_t n)
{
    atomic_fetch_add(&series_for(&metrics[id], labels)->value, (int64_t)n);
}

void metric_set(enum metric_id id, const char *labels, int64_t value)
{
    atomic_store(&series_for(&metrics[id], labels)->value, value);
}

int64_t metric_value(enum metric_id id, const char *labels)
{
    const struct metric *m = &metrics[id];
    int n = atomic_load(&m->nseries);
    for (int i = 0; i < n; i++)
        if (!strcmp(m->series[i].labels, labels ? labels : ""))
            return atomic_load(&m->series[i].value);
    return 0;
}

void metric_add_seconds(enum metric_id id, const char *labels, double seconds)
{
    atomic_fetch_add(&series_for(&metrics[id], labels)->value, (int64_t)(seconds * 1e6));
}

void metric_observe(enum metric_id id, double seconds)
{
    struct metric *m = &metrics[id];
    const double *bounds = m->bounds ? m->bounds : op_bounds;
    size_t b = 0;
    while (b < NBOUNDS && seconds > bounds[b])
        b++;
    atomic_fetch_add(&m->buckets[b], 1);
    atomic_fetch_add(&m->sum_us, (uint64_t)(seconds * 1e6));
    atomic_fetch_add(&m->count, 1);
}

/* Label values escaped as the text format wants: \\, \" and \n. */
const char *metric_labels(char *out, size_t size, ...)
{
    va_list ap;
    va_start(ap, size);
    size_t o = 0;
    out[0] = '\0';
    const char *name;
    while ((name = va_arg(ap, const char *))) {
        const char *value = va_arg(ap, const char *);
        int n = snprintf(out + o, size - o, "%s%s=\"", o ? "," : "", name);
        if (n < 0 || (size_t)n >= size - o)
            break;
        o += (size_t)n;
        for (const char *p = value ? value : ""; *p && o + 3 < size; p++) {
            if (*p == '\\' || *p == '"' || *p == '\n') {
                out[o++] = '\\';
                out[o++] = *p == '\n' ? 'n' : *p;
            } else {
                out[o++] = (unsigned char)*p < 0x20 ? ' ' : *p;
            }
        }
        if (o + 2 >= size)
            break;
        out[o++] = '"';
        out[o] = '\0';
    }
    va_end(ap);
    return out;
}

static void render_histogram(struct buf *out, struct metric *m)
{
    const double *bounds = m->bounds ? m->bounds : op_bounds;
    uint64_t cumulative = 0;
    for (size_t b = 0; b < NBOUNDS; b++) {
        cumulative += atomic_load(&m->buckets[b]);
        buf_printf(out, "%s_bucket{le=\"%g\"} %llu\n", m->name, bounds[b], (unsigned long long)cumulative);
    }
    cumulative += atomic_load(&m->buckets[NBOUNDS]);
    buf_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n", m->name, (unsigned long long)cumulative);
    buf_printf(out, "%s_sum %.6f\n%s_count %llu\n", m->name, (double)atomic_load(&m->sum_us) / 1e6, m->name,
               (unsigned long long)cumulative);
}

void metrics_render(struct buf *out)
{
    static const char *kinds[] = {"counter", "gauge", "histogram", "counter"};
    for (int i = 0; i < M_COUNT; i++) {
        struct metric *m = &metrics[i];
        buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name, kinds[m->kind]);
        if (m->kind == HISTOGRAM) {
            render_histogram(out, m);
            continue;
        }
        int n = atomic_load(&m->nseries);
        if (n == 0 && !m->labelled)
            buf_printf(out, "%s 0\n", m->name);    /* present from the start */
        for (int k = 0; k < n; k++) {
            const struct series *s = &m->series[k];
            if (m->kind == SECONDS)
                buf_printf(out, s->labels[0] ? "%s{%s} %.6f\n" : "%s%s %.6f\n", m->name, s->labels,
                           (double)atomic_load(&s->value) / 1e6);
            else
                buf_printf(out, s->labels[0] ? "%s{%s} %lld\n" : "%s%s %lld\n", m->name, s->labels,
                           (long long)atomic_load(&s->value));
        }
    }
}
