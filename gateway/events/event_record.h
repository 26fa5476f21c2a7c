/* event_record.h - one event of the stream (issue 39) as the JSON line the
 * outbox keeps and the sinks send:
 *
 *   {"v":1,"id":"gw1/1765113600123/42","node":"gw1","ms":1765113600456,
 *    "time":"2026-12-07T13:20:00.456Z","type":"delivered","qid":"...",
 *    "from":"...","to":"...","client":"...","helo":"...","stage":"deliver",
 *    "link":"mx.example[192.0.2.1]:25","reply":"250 2.0.0 Ok","session":0,
 *    "size":1234,"tls":"TLSv1.3","login":"alice","duration_ms":180}
 *
 * from the same struct track_event the tracking store keeps (one place in
 * the code makes both). Empty fields are left out. An event of a message's
 * acceptance (accepted, quarantined) has an ID made of the node, queue ID,
 * type and recipient, so the copy made again after a crash (outbox.c) has
 * the same ID; the others have the node, the daemon's start and a number. */
#ifndef POSTERN_EVENT_RECORD_H
#define POSTERN_EVENT_RECORD_H
#include "buf.h"
#include "event_sinks.h"
#include "track.h"
#include <stdint.h>

#define EVENT_RECORD_VERSION 1

enum event_type event_type_of(const struct track_event *e);
/* Append e's line (with its '\n') to out: 0, or -1 when out of memory. */
int event_record_format(struct buf *out, const struct track_event *e, int64_t ms, const char *node,
                        int64_t start_ms, uint64_t seq);
/* The type of a line written by event_record_format, or -1. */
int event_record_type(const char *line, size_t len);
/* Its "ms" field, or -1. */
int64_t event_record_ms(const char *line, size_t len);

#endif
