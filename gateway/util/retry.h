/* retry.h - the retry schedule: exponential backoff with jitter between
 * retry_min and retry_max. Pure, so it is unit-tested directly. */
#ifndef POSTERN_RETRY_H
#define POSTERN_RETRY_H

/* Delay in seconds before attempt number attempts+1, given attempts >= 1 made
 * so far. jitter01 in [0,1) shortens the delay by up to 25%, never below min. */
long retry_delay(int attempts, long min, long max, double jitter01);

#endif
