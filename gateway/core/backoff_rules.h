/* backoff_rules.h - automatic back-off (issue 38): rules on what a next hop
 * answers. The `backoff = file:PATH` table has lines
 *
 *   ACTION DURATION REGEX
 *
 * ACTION is `suspend` (the recipient domain: no new delivery there for
 * DURATION) or `suspend-source` (the egress source the attempt came from,
 * so its pool's other sources take over; the recipient domain when the
 * attempt had no source). DURATION as elsewhere (30s, 5m, 1h). REGEX is a
 * POSIX extended expression, matched case-insensitively against a 4xx or
 * 5xx reply as the next hop sent it ("421 4.7.0 Try again later"); the
 * first rule that matches acts. The queue applies them (queue.c) and keeps
 * the suspensions (suspend.c). */
#ifndef POSTERN_BACKOFF_RULES_H
#define POSTERN_BACKOFF_RULES_H
#include <regex.h>
#include <stddef.h>

enum backoff_action { BACKOFF_SUSPEND, BACKOFF_SUSPEND_SOURCE };

struct backoff_rule {
    enum backoff_action action;
    long seconds;
    regex_t re;
    char *text;                  /* the expression as written, for logs */
};

struct backoff_rules {
    struct backoff_rule *v;
    size_t n;
};

/* One table line (action = its first word): 0, or -1 with err. */
int backoff_add_line(struct backoff_rules *b, const char *action, char *rest, char *err, size_t errlen);
/* The first rule matching reply, or NULL. */
const struct backoff_rule *backoff_match(const struct backoff_rules *b, const char *reply);
void backoff_free(struct backoff_rules *b);

#endif
