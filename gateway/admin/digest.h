/* digest.h - the daily spam quarantine digest (digest.c) and the key its
 * signed links are made with (the console checks them). */
#ifndef POSTERN_DIGEST_H
#define POSTERN_DIGEST_H
#include "buf.h"
#include "config.h"
#include <stddef.h>

/* After the privilege drop: the links' key (SPOOL/digest.key, made on first
 * start) and when the last digest ran. 0, or -1 with err. */
int digest_start(const struct config *cfg, char *err, size_t errlen);
/* A reload's configuration. */
void digest_configure(const struct config *cfg);
/* Every tick: the timed digest, once a day at digest_time. */
void digest_tick(void);
/* Digests for the copies held since the last run, now (`postern digest`):
 * 0 with what it does in answer, or -1 with why. Loop thread. */
int digest_run(struct buf *answer);
/* The links' key (NULL before digest_start). */
const unsigned char *digest_key(size_t *len);

#endif
