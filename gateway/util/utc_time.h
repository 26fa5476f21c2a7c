/* utc_time.h - the dates the CLI takes (--since, --until) and the times the
 * archive writes ("2026-12-07T00:19:33Z"), as seconds since the epoch, so
 * bounds compare as times, never as strings. */
#ifndef POSTERN_UTC_TIME_H
#define POSTERN_UTC_TIME_H
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* "2026-12-07", "2026-12-07 10:00" or "2026-12-07 10:00:30" (a 'T' for
 * the space and a trailing 'Z' allowed), in UTC. A bound given to the day
 * or minute covers all of it when end is set (--until 10:00 includes
 * 10:00:59). 0, or -1 for anything else (2026-02-30, 25:00, garbage). */
int utc_time_parse(const char *text, bool end, time_t *out);
/* t as "2026-12-07T10:00:30Z" (out: at least 21 bytes). */
void utc_time_format(time_t t, char *out, size_t size);

#endif
