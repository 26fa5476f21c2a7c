/* egress.h - where outbound connections come from (issue 38): named
 * sources (a source address per family and a HELO name), pools of sources
 * with weights, and rules choosing a pool by sender or recipient domain.
 * Read from the `egress = file:PATH` table:
 *
 *   source NAME ADDRESS[,ADDRESS] HELO     an IPv4 and/or IPv6 literal
 *   pool NAME SOURCE[=WEIGHT] ...         weights 1-1000 (default 1)
 *   from DOMAIN POOL                      the sender's domain (.dom = subdomains)
 *   to DOMAIN POOL                        the recipient domain
 *
 * A source is also a pool of itself. A pool hands out its sources by
 * smooth weighted round robin (nginx's upstream algorithm), so 3:1 is
 * exactly three of every four connections' jobs. */
#ifndef POSTERN_EGRESS_H
#define POSTERN_EGRESS_H
#include <stdbool.h>
#include <stddef.h>
#include "domain_rules.h"
#include <sys/socket.h>

#define EGRESS_NAME_MAX 64
#define EGRESS_POOL_MAX 32          /* sources in one pool */

struct egress_source {
    char name[EGRESS_NAME_MAX];
    struct sockaddr_storage addr4, addr6;   /* ss_family 0: none for that family */
    char helo[256];
};

struct egress_pool {
    char name[EGRESS_NAME_MAX];
    size_t n;
    size_t src[EGRESS_POOL_MAX];    /* indexes into egress_set.sources */
    int weight[EGRESS_POOL_MAX];
    int *current;                   /* the round robin's state (the loop thread's) */
};

struct egress_set {
    struct egress_source *sources;
    size_t nsources;
    struct egress_pool *pools;
    size_t npools;
    struct domain_rules rules;      /* from/to: an index into pools */
};

/* One table line (kind = its first word): 0, or -1 with err. */
int egress_add_line(struct egress_set *e, const char *kind, char *rest, char *err, size_t errlen);
void egress_free(struct egress_set *e);
const struct egress_pool *egress_pool_named(const struct egress_set *e, const char *name);
/* The pool for a message from sender_domain to rcpt_domain by the rules
 * ("from" before "to", exact domains before .dom patterns), or NULL. */
const struct egress_pool *egress_pool_for(const struct egress_set *e, const char *sender_domain,
                                          const char *rcpt_domain);
/* The next source of pool p that usable() accepts (NULL: any), or NULL
 * when it accepts none (loop thread). */
const struct egress_source *egress_pick(const struct egress_set *e, const struct egress_pool *p,
                                        bool (*usable)(const struct egress_source *s));

#endif
