/* named_queues.h - named queues with priorities (issue 38): the `queues =
 * file:PATH` table puts messages in named queues, each with a priority and
 * a concurrency, so transactional mail never waits behind a bulk backlog:
 *
 *   queue NAME priority=N [concurrency=N] [rate=N]
 *                                           priority 0-9, higher first;
 *                                           jobs in flight; jobs started a minute
 *   from DOMAIN NAME                        by the sender's domain
 *   to DOMAIN NAME                          by the recipient domain
 *
 * Lua (tx:set_queue) and plugins (host->set_queue) choose at DELIVER,
 * before the rules. A message in no named queue has priority 0 and no
 * limit of its own. Delivery keeps a destination's waiting jobs by
 * priority (delivery.c); a queue at its concurrency waits. */
#ifndef POSTERN_NAMED_QUEUES_H
#define POSTERN_NAMED_QUEUES_H
#include "domain_rules.h"
#include <stdbool.h>
#include <stddef.h>

#define NAMED_QUEUE_NAME_MAX 64
#define QUEUE_PRIORITIES 10

struct named_queue {
    char name[NAMED_QUEUE_NAME_MAX];
    int priority;                  /* 0-9, higher first */
    int concurrency;               /* delivery jobs in flight at once, 0 = no limit */
    int rate;                      /* delivery jobs started a minute (spread evenly), 0 = no limit */
    int *in_flight;                /* the loop thread's count */
};

struct named_queues {
    struct named_queue *v;
    size_t n;
    struct domain_rules rules;     /* from/to: an index into v */
};

/* One table line (kind = its first word): 0, or -1 with err. */
int named_queues_add_line(struct named_queues *q, const char *kind, char *rest, char *err, size_t errlen);
void named_queues_free(struct named_queues *q);
const struct named_queue *named_queue_find(const struct named_queues *q, const char *name);
/* By the rules, or NULL. */
const struct named_queue *named_queue_for(const struct named_queues *q, const char *sender_domain,
                                          const char *rcpt_domain);

#endif
