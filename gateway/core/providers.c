/* providers.c - see providers.h. */
#include "providers.h"
#include "domain_rules.h"
#include "smtp_parse.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool pattern_ok(const char *p)
{
    const char *host = !strncmp(p, "*.", 2) ? p + 2 : p;
    return host[0] && strlen(p) < 256 && strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
                                             == strlen(host);
}

int providers_add_line(struct providers *p, const char *kind, char *rest, char *err, size_t errlen)
{
    char *w[PROVIDER_MAX_PATTERNS + 3];
    size_t n = table_words(rest, w, PROVIDER_MAX_PATTERNS + 2);
    struct provider pv = {0};
    size_t first = n > 2 && !strncmp(w[2], "rate=", 5) ? 3 : 2;     /* the first pattern */
    if (strcmp(kind, "provider") || n <= first || n > PROVIDER_MAX_PATTERNS + first ||
        !table_name_ok(w[0], sizeof pv.name) || strncmp(w[1], "concurrency=", 12)) {
        snprintf(err, errlen, "expected: provider NAME concurrency=N [rate=M] PATTERN... (at most %d patterns)",
                 PROVIDER_MAX_PATTERNS);
        return -1;
    }
    for (size_t i = 0; i < p->n; i++)
        if (!strcmp(p->v[i].name, w[0])) {
            snprintf(err, errlen, "provider %s: given twice", w[0]);
            return -1;
        }
    snprintf(pv.name, sizeof pv.name, "%s", w[0]);
    char *end;
    long c = strtol(w[1] + 12, &end, 10);
    if (*end || c < 1 || c > 100000) {
        snprintf(err, errlen, "provider %s: concurrency must be 1-100000", pv.name);
        return -1;
    }
    pv.concurrency = (int)c;
    if (first == 3) {
        long r = strtol(w[2] + 5, &end, 10);
        if ((*end && strcmp(end, "/min")) || r < 1 || r > 60000) {
            snprintf(err, errlen, "provider %s: rate must be 1-60000 (a minute)", pv.name);
            return -1;
        }
        pv.rate = (int)r;
    }
    for (size_t i = first; i < n; i++)
        if (!pattern_ok(w[i])) {
            snprintf(err, errlen, "provider %s: '%s' is neither a host name nor *.suffix", pv.name, w[i]);
            return -1;
        }
    struct provider *v = realloc(p->v, (p->n + 1) * sizeof *v);
    if (v)
        p->v = v;
    if (!v || !(pv.uses = calloc(1, sizeof *pv.uses))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = first; i < n; i++)
        pv.patterns[pv.npatterns++] = strdup(w[i]);   /* NULL (out of memory) matches nothing */
    p->v[p->n++] = pv;
    return 0;
}

void providers_free(struct providers *p)
{
    for (size_t i = 0; i < p->n; i++) {
        for (size_t k = 0; k < p->v[i].npatterns; k++)
            free(p->v[i].patterns[k]);
        for (struct provider_use *u = *p->v[i].uses, *next; u; u = next) {
            next = u->next;
            free(u);
        }
        free(p->v[i].uses);
    }
    free(p->v);
    p->v = NULL;
    p->n = 0;
}

const struct provider *provider_for_host(const struct providers *p, const char *host)
{
    if (!host || !host[0])
        return NULL;
    for (size_t i = 0; i < p->n; i++)
        for (size_t k = 0; k < p->v[i].npatterns; k++) {
            const char *pat = p->v[i].patterns[k];
            if (pat && domain_matches(!strncmp(pat, "*.", 2) ? pat + 1 : pat, host))
                return &p->v[i];
        }
    return NULL;
}

struct provider_use *provider_use_of(const struct provider *p, const void *source)
{
    for (struct provider_use *u = *p->uses; u; u = u->next)
        if (u->source == source)
            return u;
    struct provider_use *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    u->source = source;
    u->next = *p->uses;
    *p->uses = u;
    return u;
}
