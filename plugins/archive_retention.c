/* archive_retention.c - the archive plugin's retention rules and the
 * index reader its expiry uses (see archive_retention.h). */
#include "archive_retention.h"
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

long retention_duration(const char *v)
{
    char *end;
    long n = strtol(v, &end, 10);
    static const char units[] = "smhdwy";
    static const long secs[] = {1, 60, 3600, 86400, 7 * 86400, 365 * 86400};
    const char *u = end[0] && !end[1] ? strchr(units, end[0]) : NULL;
    if (end == v || n <= 0 || !u || n > 1000L * 365 * 86400 / secs[u - units])
        return -1;
    return n * secs[u - units];
}

static void lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

static int parse_rule(char *line, struct retention_rule *rule, char *why, size_t whylen)
{
    char field[16], pattern[256], period[32], extra[2];
    int n = sscanf(line, "%15s %255s %31s %1s", field, pattern, period, extra);
    if (n != 3) {
        snprintf(why, whylen, "expected: sender|rcpt|domain PATTERN DURATION");
        return -1;
    }
    if (!strcmp(field, "sender") || !strcmp(field, "rcpt"))
        rule->field = field[0] == 's' ? RULE_SENDER : RULE_RCPT;
    else if (!strcmp(field, "domain"))
        rule->field = RULE_DOMAIN;
    else {
        snprintf(why, whylen, "'%s' is not sender, rcpt or domain", field);
        return -1;
    }
    if (rule->field != RULE_DOMAIN ? !strchr(pattern, '@') : strchr(pattern, '@') != NULL) {
        snprintf(why, whylen, "'%s': %s", pattern, rule->field == RULE_DOMAIN ? "a domain has no @"
                                                                               : "expected user@domain or @domain");
        return -1;
    }
    rule->period = !strcmp(period, "forever") ? 0 : retention_duration(period);
    if (rule->period < 0) {
        snprintf(why, whylen, "'%s' is not a duration (30d, 7y) or forever", period);
        return -1;
    }
    snprintf(rule->pattern, sizeof rule->pattern, "%s", pattern);
    lower(rule->pattern);
    return 0;
}

int retention_rules_load(const char *path, struct retention_rules *r, char *err, size_t errlen)
{
    *r = (struct retention_rules){0};
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "retention_rules %s: %s", path, strerror(errno));
        return -1;
    }
    char line[1024], why[400];
    int rc = 0;
    for (unsigned lineno = 1; rc == 0 && fgets(line, sizeof line, f); lineno++) {
        char *p = line + strspn(line, " \t");
        if (!*p || *p == '#' || *p == '\n')
            continue;
        struct retention_rule *grown = r->n < 10000 ? realloc(r->v, (r->n + 1) * sizeof *grown) : NULL;
        if (!grown || parse_rule(p, &grown[r->n], why, sizeof why) < 0) {
            snprintf(err, errlen, "retention_rules %s line %u: %s", path, lineno, grown ? why : "too many rules");
            rc = -1;
        }
        if (grown)
            r->v = grown;
        if (rc == 0)
            r->n++;
    }
    fclose(f);
    if (rc < 0)
        retention_rules_free(r);
    return rc;
}

void retention_rules_free(struct retention_rules *r)
{
    free(r->v);
    *r = (struct retention_rules){0};
}

/* Does address (any case) match user@domain or @domain? */
static bool address_matches(const char *pattern, const char *addr, size_t len)
{
    if (pattern[0] == '@') {
        const char *at = memchr(addr, '@', len);
        size_t dl = at ? len - (size_t)(at - addr) : 0;
        return at && dl == strlen(pattern) && !strncasecmp(at, pattern, dl);
    }
    return strlen(pattern) == len && !strncasecmp(pattern, addr, len);
}

static bool domain_matches(const char *domain, const char *addr, size_t len)
{
    const char *at = memchr(addr, '@', len);
    size_t dl = at ? len - (size_t)(at + 1 - addr) : 0;
    return at && dl == strlen(domain) && !strncasecmp(at + 1, domain, dl);
}

/* Any of the comma-separated addresses in list, or the one sender. */
static bool any_matches(const struct retention_rule *rule, const char *list, bool is_list)
{
    for (const char *p = list; *p;) {
        size_t len = is_list ? strcspn(p, ",") : strlen(p);
        if (rule->field == RULE_DOMAIN ? domain_matches(rule->pattern, p, len) : address_matches(rule->pattern, p, len))
            return true;
        p += len;
        p += *p == ',';
    }
    return false;
}

long retention_period(const struct retention_rules *r, long dflt, char *const ix[ARCHIVE_INDEX_FIELDS])
{
    for (size_t i = 0; i < r->n; i++) {
        const struct retention_rule *rule = &r->v[i];
        bool sender = rule->field != RULE_RCPT && any_matches(rule, ix[IX_ENV_FROM], false);
        bool rcpt = rule->field != RULE_SENDER && any_matches(rule, ix[IX_ENV_TO], true);
        if (sender || rcpt)
            return rule->period;
    }
    return dflt;
}

long retention_shortest(const struct retention_rules *r, long dflt)
{
    long shortest = dflt;
    for (size_t i = 0; i < r->n; i++)
        if (r->v[i].period > 0 && (shortest == 0 || r->v[i].period < shortest))
            shortest = r->v[i].period;
    return shortest;
}

char *const *index_reader_find(struct index_reader *r, unsigned long seq)
{
    while (!r->eof && r->seq < seq) {
        if (!r->f || !fgets(r->line, sizeof r->line, r->f)) {
            r->eof = 1;
            break;
        }
        r->seq = strtoul(r->line, NULL, 10);
    }
    if (r->eof || r->seq != seq)
        return NULL;
    memcpy(r->split, r->line, strlen(r->line) + 1);
    return archive_index_split(r->split, r->ix) == 0 ? r->ix : NULL;
}
