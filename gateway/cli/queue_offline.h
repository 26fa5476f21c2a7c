/* queue_offline.h - queue commands on the spool itself (queue_offline.c),
 * for the CLI: with the daemon down, or read-only (cat, summary). The
 * caller has run spool_init and, for writes, holds SPOOL/lock. */
#ifndef POSTERN_QUEUE_OFFLINE_H
#define POSTERN_QUEUE_OFFLINE_H
#include "buf.h"
#include <stdbool.h>
#include <stdio.h>

int offline_list(bool json, struct buf *out);
int offline_show(const char *id, struct buf *out, struct buf *err);
int offline_hold(const char *id, bool hold, struct buf *out, struct buf *err);
int offline_delete(const char *id, struct buf *out, struct buf *err);
/* postcat: envelope records, then the message as stored. */
int queue_cat(const char *id, FILE *out, struct buf *err);
/* qshape: pending recipients by recipient (or sender) domain and age. */
int queue_summary(bool by_sender, struct buf *out);

#endif
