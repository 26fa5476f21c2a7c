/* domain_rules.c - see domain_rules.h. */
#include "domain_rules.h"
#include "smtp_parse.h"
#include <stdlib.h>
#include <string.h>

int domain_rules_add(struct domain_rules *r, bool by_sender, const char *domain, size_t target)
{
    struct domain_rule *v = realloc(r->v, (r->n + 1) * sizeof *v);
    char *copy = strdup(domain);
    if (!v || !copy) {
        free(copy);
        if (v)
            r->v = v;
        return -1;
    }
    r->v = v;
    r->v[r->n++] = (struct domain_rule){.by_sender = by_sender, .domain = copy, .target = target};
    return 0;
}

static bool find_one(const struct domain_rules *r, bool by_sender, const char *domain, size_t *target)
{
    if (!domain || !domain[0])
        return false;
    for (int exact = 1; exact >= 0; exact--)
        for (size_t i = 0; i < r->n; i++) {
            const struct domain_rule *d = &r->v[i];
            if (d->by_sender == by_sender && (d->domain[0] != '.') == exact && domain_matches(d->domain, domain)) {
                *target = d->target;
                return true;
            }
        }
    return false;
}

bool domain_rules_find(const struct domain_rules *r, const char *sender_domain, const char *rcpt_domain,
                       size_t *target)
{
    return find_one(r, true, sender_domain, target) || find_one(r, false, rcpt_domain, target);
}

size_t table_words(char *rest, char **w, size_t max)
{
    size_t n = 0;
    char *save = NULL;
    for (char *t = strtok_r(rest, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
        if (n == max)
            return max + 1;
        w[n++] = t;
    }
    return n;
}

bool table_name_ok(const char *s, size_t size)
{
    if (!s[0] || strlen(s) >= size)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("-_.", *p)))
            return false;
    return true;
}

void domain_rules_free(struct domain_rules *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->v[i].domain);
    free(r->v);
    r->v = NULL;
    r->n = 0;
}
