/* bounce.h - queue a DSN about a message: a bounce for its failed
 * recipients, a delay warning for its pending ones, or a "relayed" success
 * notice (NOTIFY=SUCCESS to a next hop without DSN). The DSN is built and
 * committed to the spool on a worker; only then is done() called, so the
 * original message is never forgotten before its DSN is durable. */
#ifndef POSTERN_BOUNCE_H
#define POSTERN_BOUNCE_H
#include "config.h"
#include "dsn.h"
#include <stdbool.h>

struct qmsg;

struct envelope;
/* How a committed DSN joins the queue (queue_add_committed): bounce.c hands
 * the envelope back instead of calling the queue. */
typedef void (*bounce_commit_fn)(struct envelope *e, size_t body_off);
void bounce_init(const struct config *cfg, bounce_commit_fn commit);
/* err is 0 when the DSN is safely queued. */
typedef void (*bounce_done_fn)(struct qmsg *m, enum dsn_kind kind, int err);
/* Recipients covered: FAILED: failed-but-not-notified; DELAYED: pending ones
 * whose NOTIFY allows it; RELAYED: delivered ones owed a success notice. */
void bounce_start(struct qmsg *m, enum dsn_kind kind, bounce_done_fn done);

#endif
