/* delivery.h - the outbound SMTP client. Jobs queue per destination (next
 * hop); up to dest_concurrency non-blocking connections per destination pull
 * jobs and are reused across messages. Every result goes back to queue.c. */
#ifndef POSTERN_DELIVERY_H
#define POSTERN_DELIVERY_H
#include "config.h"

struct djob;

void delivery_init(const struct config *cfg);
void delivery_submit(struct djob *job);
/* Timeouts and idle connection expiry; called on every tick. */
void delivery_tick(void);
/* Connections currently carrying a job. */
int delivery_busy(void);
/* Close idle connections (shutdown). */
void delivery_close_idle(void);

/* Parse one reply line "250-text" / "250 text": returns the code (100-599)
 * and sets *last when the line ends a (multi-line) reply; -1 if malformed. */
int smtp_reply_line(const char *line, size_t len, bool *last);

#endif
