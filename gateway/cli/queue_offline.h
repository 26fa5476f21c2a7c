/* queue_offline.h - queue commands on the spool itself (queue_offline.c),
 * for the CLI: with the daemon down, or read-only (cat, summary). The
 * caller has run spool_init and, for writes, holds SPOOL/lock. */
#ifndef POSTERN_QUEUE_OFFLINE_H
#define POSTERN_QUEUE_OFFLINE_H
#include "buf.h"

struct queue_cmd;
/* Run a parsed queue command (queue_cmd.h) on the spool: cat writes to
 * stdout, others their answer to out; errors go to err. 0 or -1. */
int offline_run(const struct queue_cmd *cmd, struct buf *out, struct buf *err);

#endif
