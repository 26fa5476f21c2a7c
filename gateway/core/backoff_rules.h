/* backoff_rules.h - automatic back-off (issue 38): rules on what a next hop
 * answers. The `backoff = file:PATH` table has lines
 *
 *   suspend DURATION [provider=NAME] REGEX           the recipient domain
 *   suspend-source DURATION [provider=NAME] REGEX    the egress source used
 *   suspend-provider DURATION [provider=NAME] REGEX  the MX provider answering
 *   throttle RATE DURATION [provider=NAME] REGEX     the domain, to RATE a minute
 *   throttle-provider RATE DURATION [provider=NAME] REGEX
 *   bounce [provider=NAME] REGEX                     fail the recipient now
 *   reroute NEXTHOP [provider=NAME] REGEX            retry it at once via NEXTHOP
 *
 * A source or provider action falls back to the recipient domain when the
 * attempt had no source or the server is no provider's. DURATION as
 * elsewhere (30s, 5m, 1h; at most 7d); RATE messages a minute ("10" or
 * "10/min"); NEXTHOP a transport ("smtp:[relay.example]:25"). provider=NAME
 * limits the rule to servers of that provider (providers table). REGEX is
 * a POSIX extended expression, matched case-insensitively against a 4xx or
 * 5xx reply as the next hop sent it ("421 4.7.0 Try again later"); the
 * first rule that matches acts. The queue applies them (queue.c) and keeps
 * suspensions and throttles in suspend.c. */
#ifndef POSTERN_BACKOFF_RULES_H
#define POSTERN_BACKOFF_RULES_H
#include <regex.h>
#include <stddef.h>

enum backoff_action {
    BACKOFF_SUSPEND,
    BACKOFF_SUSPEND_SOURCE,
    BACKOFF_SUSPEND_PROVIDER,
    BACKOFF_THROTTLE,
    BACKOFF_THROTTLE_PROVIDER,
    BACKOFF_BOUNCE,
    BACKOFF_REROUTE,
};

struct backoff_rule {
    enum backoff_action action;
    long seconds;                /* how long a suspension or throttle lasts */
    int rate;                    /* a throttle's messages a minute */
    char provider[64];           /* only servers of this provider; "" = any */
    char *nexthop;               /* reroute's transport text */
    regex_t re;
    char *text;                  /* the expression as written, for logs */
};

struct backoff_rules {
    struct backoff_rule *v;
    size_t n;
};

/* One table line (action = its first word): 0, or -1 with err. */
int backoff_add_line(struct backoff_rules *b, const char *action, char *rest, char *err, size_t errlen);
/* The first rule matching reply from a server of provider (NULL: of
 * none), or NULL. */
const struct backoff_rule *backoff_match(const struct backoff_rules *b, const char *reply, const char *provider);
const char *backoff_action_name(enum backoff_action a);
void backoff_free(struct backoff_rules *b);

#endif
