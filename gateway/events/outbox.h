/* outbox.h - the event stream's durable outbox (issue 39). Every tracking
 * event (track_event) is also formatted as a JSON line (event_record.c)
 * and appended, by one writer thread, to segment files under
 * SPOOL/outbox/, fsync'd in groups (OUTBOX_GROUP_MS or OUTBOX_GROUP_MAX events). The
 * sinks (sinks.c) read the files from their own cursor
 * (SPOOL/outbox/cursor.NAME), so a restart resumes where each stopped.
 * Bounded: segments every sink has sent are removed; over
 * events_outbox_max_size or events_outbox_max_age the oldest segment goes
 * whether sent or not (the events lost counted and logged, never the
 * mail); an emitter never waits, and an event the writer cannot take
 * (OUTBOX_MAX_PENDING behind) is dropped and counted.
 *
 * At least once across a crash: a message's spool files are removed only
 * after its last events are on disk (outbox_after_durable), and the
 * acceptance events of messages accepted shortly before the newest event
 * found at start are made again, with the same IDs (queue_load.c). */
#ifndef POSTERN_OUTBOX_H
#define POSTERN_OUTBOX_H
#include "config.h"
#include "track.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OUTBOX_GROUP_MS 50
#define OUTBOX_GROUP_MAX 2000
#define OUTBOX_MAX_PENDING 100000

struct outbox_pos {
    uint64_t seg, off;
};

/* At start, as the daemon's user, when cfg has event sinks: open the
 * outbox, start its writer and take every tracking event. 0 (also when
 * there are no sinks), or -1 with err. */
int outbox_start(const struct config *cfg, char *err, size_t errlen);
bool outbox_on(void);
/* The time of the newest event found at start (ms), 0 when none. */
int64_t outbox_last_ms(void);
/* An event again (made after a crash): into the outbox only. */
void outbox_add(const struct track_event *e, int64_t ms);
/* Loop thread: fn(arg) on the loop once every event emitted so far is on
 * disk (at once when the outbox is off). */
void outbox_after_durable(void (*fn)(void *arg), void *arg);
/* At exit, after the last events: write them, run what waited on them. */
void outbox_stop(void);

/* For the sinks: register a reader by name; *start is its saved cursor
 * (or the outbox's beginning). The index, or -1. */
int outbox_reader(const char *name, struct outbox_pos *start);
/* Complete lines after *p, up to max_bytes, into buf (which gets a '\0'
 * after them); *next is where they end. Waits up to wait_ms for new ones.
 * The bytes read (0: none yet or stopping). Events the outbox dropped
 * under a reader move it on. */
size_t outbox_read(int reader, const struct outbox_pos *p, char *buf, size_t max_bytes, struct outbox_pos *next,
                   int wait_ms);
/* The reader has sent everything before p: saved as its cursor. */
void outbox_ack(int reader, const struct outbox_pos *p);
bool outbox_stopping(void);

#endif
