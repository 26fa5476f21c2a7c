/* bounce.h - queue a DSN about a message: a bounce for its failed
 * recipients or a delay warning for its pending ones. The DSN is built and
 * committed to the spool on a worker; only then is done() called, so the
 * original message is never forgotten before its DSN is durable. */
#ifndef POSTERN_BOUNCE_H
#define POSTERN_BOUNCE_H
#include "config.h"
#include <stdbool.h>

struct qmsg;

void bounce_init(const struct config *cfg);
/* err is 0 when the DSN is safely queued. */
typedef void (*bounce_done_fn)(struct qmsg *m, bool delayed, int err);
/* Recipients covered: delayed ? pending ones : failed-but-not-notified ones. */
void bounce_start(struct qmsg *m, bool delayed, bounce_done_fn done);

#endif
