/* suspend.h - deliveries that wait or slow down (issue 38): a destination
 * (recipient domain), an egress source, a named queue or a mailbox
 * provider suspended, or a destination or provider throttled to a lower
 * rate, by the admin (`postern queue suspend|throttle`, until resumed or
 * for a time), by a back-off rule on a next hop's reply (backoff table) or
 * by a script (postern.suspend, postern.throttle). While suspended, the
 * queue makes no delivery job for it: its recipients stay pending and the
 * attempt does not count towards their retry back-off. A pool whose every
 * source is suspended waits too; otherwise its other sources take over.
 * Kept in memory and in the spool's `suspended` file (rewritten on every
 * change, read at start: a suspension outlives a restart); at most
 * SUSPEND_MAX. Safe from any thread (Lua threads call it). */
#ifndef POSTERN_SUSPEND_H
#define POSTERN_SUSPEND_H
#include "buf.h"
#include <stdbool.h>
#include <stdint.h>

#define SUSPEND_MAX 10000
#define SUSPEND_FOREVER INT64_MAX
#define THROTTLE_MAX_RATE 60000          /* messages a minute */

enum suspend_kind { SUSPEND_DESTINATION, SUSPEND_SOURCE, SUSPEND_QUEUE, SUSPEND_PROVIDER };

/* At start: the suspensions saved under spool_dir (ended ones dropped). */
void suspend_load(const char *spool_dir);
/* "destination", "source", "queue" or "provider": 0 and *k, or -1. */
int suspend_kind_parse(const char *word, enum suspend_kind *k);
const char *suspend_kind_name(enum suspend_kind k);
/* Suspend name until `until` (unix seconds, or SUSPEND_FOREVER): a later
 * end than one already set extends it; reason is shown and logged. 1 when
 * it was not suspended before, 0 when extended or kept, -1 when full. */
int suspend_set(enum suspend_kind k, const char *name, int64_t until, const char *reason);
/* Throttle a destination or provider to per_min messages a minute (1 to
 * THROTTLE_MAX_RATE) until `until`: a lower rate or a later end than one
 * already set replaces it. Returns as suspend_set. */
int throttle_set(enum suspend_kind k, const char *name, int per_min, int64_t until, const char *reason);
/* Resume: ends name's suspension and its throttle; true if it had either. */
bool suspend_clear(enum suspend_kind k, const char *name);
/* When name's suspension ends, or 0 when it is not suspended (one that has
 * ended is forgotten here, and logged). */
int64_t suspend_until(enum suspend_kind k, const char *name, int64_t now);
/* name's throttled rate (messages a minute), or 0 when it has none. */
int throttle_rate(enum suspend_kind k, const char *name, int64_t now);
/* One line per suspension or throttle: "KIND NAME until TIME|until
 * resumed: REASON" ("KIND NAME throttled to N/min until ..."); with json,
 * an array of {kind, name, rate (0: suspended), until (null: until
 * resumed), reason}. */
void suspend_list(struct buf *out, int64_t now, bool json);
size_t suspend_count(void);

#endif
