/* domain_rules.h - "from DOMAIN X" / "to DOMAIN X" rules of a table: which
 * entry (X, an index the table's owner keeps) a message gets by its
 * sender's domain or its recipient domain. ".dom" matches subdomains;
 * exact domains win over patterns, and a sender rule over a recipient
 * rule. Used by the egress table (egress.c) and the named queues
 * (named_queues.c). */
#ifndef POSTERN_DOMAIN_RULES_H
#define POSTERN_DOMAIN_RULES_H
#include <stdbool.h>
#include <stddef.h>

struct domain_rule {
    bool by_sender;              /* "from": the sender's domain; else "to" */
    char *domain;
    size_t target;
};

struct domain_rules {
    struct domain_rule *v;
    size_t n;
};

/* 0, or -1 (out of memory). */
int domain_rules_add(struct domain_rules *r, bool by_sender, const char *domain, size_t target);
/* The matching rule's target: true and *target set, or false. Either
 * domain may be NULL or "" (none). */
bool domain_rules_find(const struct domain_rules *r, const char *sender_domain, const char *rcpt_domain,
                       size_t *target);
void domain_rules_free(struct domain_rules *r);

/* Helpers for the lines of such tables: split rest on blanks (in place)
 * into at most max words (max + 1 when there are more); whether s is a
 * name of letters, digits, "-_." and shorter than size. */
size_t table_words(char *rest, char **w, size_t max);
bool table_name_ok(const char *s, size_t size);

#endif
