/* clock.h - the clock reads the gateway makes in several places:
 * monotonic and wall-clock milliseconds, and a deadline some milliseconds from now (for
 * pthread_cond_timedwait on a condition using that clock). */
#ifndef POSTERN_CLOCK_H
#define POSTERN_CLOCK_H

#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC in milliseconds. */
uint64_t clock_mono_ms(void);
/* CLOCK_REALTIME (the Unix epoch) in milliseconds. */
uint64_t clock_wall_ms(void);

/* Now on `clock`, plus ms (>= 0), normalized. */
struct timespec clock_deadline_ms(clockid_t clock, long ms);

#endif
