/* track.h - message tracking: every event of a message and recipient
 * (refused at a stage, queued, quarantined, each delivery attempt, delivered,
 * deferred, bounced, released, deleted, dropped) in an SQLite database on the
 * node, written in batches by its own thread (track.c), never on a session's
 * path; kept for tracking_retention and under tracking_max_size. Read by
 * `postern track` and the console (track_query.c). */
#ifndef POSTERN_TRACK_H
#define POSTERN_TRACK_H
#include "config.h"
#include <stdbool.h>
#include <stdint.h>

/* One event. Strings may be NULL ("" in the store); all are copied. */
struct track_event {
    const char *status;     /* rejected, queued, quarantined, deferred, delivered, bounced, released, deleted, dropped */
    const char *qid;        /* NULL: refused before it had one */
    const char *from, *to;  /* envelope sender, one recipient ("" for a refusal before RCPT) */
    const char *client;     /* the client's address, for events of the session */
    const char *helo;
    const char *stage;      /* connect … eom for refusals; "deliver", "expire", "admin" … after */
    const char *link;       /* the deciding link, or the relay a delivery reached */
    const char *reply;      /* the SMTP reply or reason */
    unsigned long session;  /* S-number of the SMTP session, 0 after */
    /* for the event stream only (gateway/events/), where known: */
    uint64_t size;          /* the message's size */
    const char *tls;        /* the TLS of the session or delivery ("TLSv1.3 ...") */
    const char *login;      /* the SMTP AUTH login of the session */
    long duration_ms;       /* a delivery attempt's duration */
};

/* Every event is also handed to tap (the event stream's outbox), on the
 * caller's thread, with its time; set once at start, before any event. */
void track_set_tap(void (*tap)(const struct track_event *e, int64_t ms));

/* Open (creating) the store and start its writer. 0, or -1 with err. When
 * cfg->tracking is off nothing happens and track_event is a no-op. */
int track_start(const struct config *cfg, char *err, size_t errlen);
/* Queue one event for the writer (and the tap): never blocks; an event beyond
 * TRACK_MAX_PENDING waiting is dropped and counted (postern_track_dropped_total). */
void track_event(const struct track_event *e);
/* Write what is queued and stop the writer (at exit). */
void track_stop(void);
/* The store's path for cfg: tracking_db, else SPOOL/tracking.db. */
void track_db_path(const struct config *cfg, char *out, size_t size);

#define TRACK_MAX_PENDING 200000

#endif
