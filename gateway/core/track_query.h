/* track_query.h - reading the tracking store (track.h) for `postern track`
 * and the console: the last status of each message and recipient that
 * matches, or one message's whole timeline. */
#ifndef POSTERN_TRACK_QUERY_H
#define POSTERN_TRACK_QUERY_H
#include "buf.h"
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* Which records: every given filter must match some event of the message
 * and recipient (a refusal is its own record). from/to: ADDR, @DOMAIN,
 * "<>" (the null sender) or a part of the address, case-insensitive. */
struct track_query {
    const char *from, *to, *client, *qid, *status;
    time_t since, until;       /* inclusive; -1: open */
    long limit;                /* records; <= 0: TRACK_QUERY_LIMIT */
};
#define TRACK_QUERY_LIMIT 1000

struct track_record {
    int64_t ms;                /* when, Unix milliseconds */
    const char *status, *qid;  /* qid NULL: refused before it had one */
    const char *from, *to, *client, *helo, *stage, *link, *reply;
    const char *node;          /* the fleet node it came from (fleet.c), or NULL: this one */
};

typedef void (*track_record_fn)(void *ctx, const struct track_record *r);

/* The last event of each matching message and recipient, oldest first:
 * the count, or -1 with err. */
int track_query_last(const char *db_path, const struct track_query *q, track_record_fn fn, void *ctx, char *err,
                     size_t errlen);
/* Every event of one message, in order: the count, or -1 with err. */
int track_query_timeline(const char *db_path, const char *qid, track_record_fn fn, void *ctx, char *err,
                         size_t errlen);
/* One record as a text line, or as a JSON object (keys time, ms, status,
 * from, to, client, queue_id, stage, link, reply, and node when it came
 * from another node). */
void track_record_text(const struct track_record *r, struct buf *out);
void track_record_json(const struct track_record *r, struct buf *out);

#endif
