/* retry.c - backoff: min, 2*min, 4*min ... capped at max, with jitter so a
 * queue that filled while a next hop was down does not retry in lockstep. */
#include "retry.h"

long retry_delay(int attempts, long min, long max, double jitter01)
{
    if (attempts < 1)
        attempts = 1;
    long d = min;
    for (int i = 1; i < attempts && d < max; i++)
        d = d > max / 2 ? max : d * 2;
    if (d > max)
        d = max;
    if (jitter01 < 0)
        jitter01 = 0;
    if (jitter01 >= 1)
        jitter01 = 0.999;
    long j = d - (long)((double)d * 0.25 * jitter01);
    return j < min ? min : j;
}
