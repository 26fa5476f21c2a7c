/* archive_retention.h - what the archive plugin's expiry keeps: retention
 * by rule and legal holds (archive_audit.h), decided per copy from its
 * index line.
 *
 * archive.retention_rules = PATH, one rule a line, the first that matches
 * a copy gives its period (else archive.retention):
 *     sender ADDRESS DURATION     the envelope sender
 *     rcpt ADDRESS DURATION       any envelope recipient (Bcc included)
 *     domain DOMAIN DURATION      the sender's or any recipient's domain
 * ADDRESS is user@domain or @domain; DURATION as retention (90d, 7y) or
 * "forever". Blank lines and # comments are skipped. */
#ifndef POSTERN_ARCHIVE_RETENTION_H
#define POSTERN_ARCHIVE_RETENTION_H
#include "archive_audit.h"
#include <stdio.h>

enum retention_field { RULE_SENDER, RULE_RCPT, RULE_DOMAIN };

struct retention_rule {
    enum retention_field field;
    char pattern[256];        /* lower case: user@domain, @domain, or a domain */
    long period;              /* seconds; 0 = forever */
};

struct retention_rules {
    struct retention_rule *v;
    size_t n;
};

/* "90d" -> seconds (s, m, h, d, w, y = 365 d); -1 if it is no duration. */
long retention_duration(const char *v);
/* Read the rules file: 0, or -1 with err (the line that is wrong). */
int retention_rules_load(const char *path, struct retention_rules *r, char *err, size_t errlen);
void retention_rules_free(struct retention_rules *r);
/* The period for a copy (its index line): the first rule that matches,
 * else dflt (0 = forever). */
long retention_period(const struct retention_rules *r, long dflt, char *const ix[ARCHIVE_INDEX_FIELDS]);
/* The shortest period any copy can have (0: every copy is kept forever). */
long retention_shortest(const struct retention_rules *r, long dflt);

/* DIR/index read alongside the chain (both in chain order). */
struct index_reader {
    FILE *f;
    unsigned long seq;        /* of the line in hand; 0 = none yet */
    char line[ARCHIVE_INDEX_LINE_MAX + 2], split[ARCHIVE_INDEX_LINE_MAX + 2];
    char *ix[ARCHIVE_INDEX_FIELDS];
    int eof;
};
/* The index line of copy seq (its fields), or NULL if the index lacks it. */
char *const *index_reader_find(struct index_reader *r, unsigned long seq);

#endif
