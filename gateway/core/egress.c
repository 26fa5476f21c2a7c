/* egress.c - see egress.h. */
#include "egress.h"
#include "netaddr.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EGRESS_WEIGHT_MAX 1000

static bool name_ok(const char *s) { return table_name_ok(s, EGRESS_NAME_MAX); }

static bool name_taken(const struct egress_set *e, const char *name)
{
    return egress_pool_named(e, name) != NULL;
}

static int add_pool(struct egress_set *e, const char *name, size_t n, const size_t *src, const int *weight,
                    char *err, size_t errlen)
{
    struct egress_pool *pools = realloc(e->pools, (e->npools + 1) * sizeof *pools);
    int *current = calloc(n, sizeof *current);
    if (!pools || !current) {
        free(current);
        if (pools)
            e->pools = pools;
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    e->pools = pools;
    struct egress_pool *p = &e->pools[e->npools++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->n = n;
    memcpy(p->src, src, n * sizeof *src);
    memcpy(p->weight, weight, n * sizeof *weight);
    p->current = current;
    return 0;
}

/* One address of a source: an IPv4 or IPv6 literal, once per family. */
static int source_address(struct egress_source *s, const char *text, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (strlen(text) > 64 || ip_parse(text, 0, &ss, &len) < 0) {
        snprintf(err, errlen, "source %s: '%s' is not an IPv4 or IPv6 address", s->name, text);
        return -1;
    }
    struct sockaddr_storage *slot = ss.ss_family == AF_INET ? &s->addr4 : &s->addr6;
    if (slot->ss_family) {
        snprintf(err, errlen, "source %s: two addresses of one family", s->name);
        return -1;
    }
    *slot = ss;
    return 0;
}

static int add_source(struct egress_set *e, char *rest, char *err, size_t errlen)
{
    char *w[4];
    if (table_words(rest, w, 3) != 3) {
        snprintf(err, errlen, "expected: source NAME ADDRESS[,ADDRESS] HELO-NAME");
        return -1;
    }
    if (!name_ok(w[0]) || name_taken(e, w[0])) {
        snprintf(err, errlen, "source '%s': %s", w[0], name_ok(w[0]) ? "the name is taken" : "a bad name");
        return -1;
    }
    struct egress_source s = {0};
    snprintf(s.name, sizeof s.name, "%s", w[0]);
    if (strlen(w[2]) >= sizeof s.helo || strspn(w[2], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
        != strlen(w[2])) {
        snprintf(err, errlen, "source %s: '%s' is not a host name", s.name, w[2]);
        return -1;
    }
    snprintf(s.helo, sizeof s.helo, "%s", w[2]);
    char *save = NULL;
    for (char *a = strtok_r(w[1], ",", &save); a; a = strtok_r(NULL, ",", &save))
        if (source_address(&s, a, err, errlen) < 0)
            return -1;
    struct egress_source *n = realloc(e->sources, (e->nsources + 1) * sizeof *n);
    if (!n) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    e->sources = n;
    e->sources[e->nsources++] = s;
    size_t idx = e->nsources - 1;
    int one = 1;
    return add_pool(e, s.name, 1, &idx, &one, err, errlen);     /* a source is a pool of itself */
}

static int source_index(const struct egress_set *e, const char *name, size_t *out)
{
    for (size_t i = 0; i < e->nsources; i++)
        if (!strcmp(e->sources[i].name, name)) {
            *out = i;
            return 0;
        }
    return -1;
}

static int add_pool_line(struct egress_set *e, char *rest, char *err, size_t errlen)
{
    char *w[EGRESS_POOL_MAX + 2];
    size_t n = table_words(rest, w, EGRESS_POOL_MAX + 1);
    if (n < 2 || n > EGRESS_POOL_MAX + 1) {
        snprintf(err, errlen, "expected: pool NAME SOURCE[=WEIGHT] ... (1 to %d sources)", EGRESS_POOL_MAX);
        return -1;
    }
    if (!name_ok(w[0]) || name_taken(e, w[0])) {
        snprintf(err, errlen, "pool '%s': %s", w[0], name_ok(w[0]) ? "the name is taken" : "a bad name");
        return -1;
    }
    size_t src[EGRESS_POOL_MAX];
    int weight[EGRESS_POOL_MAX];
    for (size_t i = 1; i < n; i++) {
        char *eq = strchr(w[i], '=');
        weight[i - 1] = 1;
        if (eq) {
            *eq = '\0';
            char *end;
            long v = strtol(eq + 1, &end, 10);
            if (*end || v < 1 || v > EGRESS_WEIGHT_MAX) {
                snprintf(err, errlen, "pool %s: weight of %s must be 1-%d", w[0], w[i], EGRESS_WEIGHT_MAX);
                return -1;
            }
            weight[i - 1] = (int)v;
        }
        if (source_index(e, w[i], &src[i - 1]) < 0) {
            snprintf(err, errlen, "pool %s: no source '%s' (sources come first in the file)", w[0], w[i]);
            return -1;
        }
    }
    return add_pool(e, w[0], n - 1, src, weight, err, errlen);
}

static int add_rule(struct egress_set *e, bool by_sender, char *rest, char *err, size_t errlen)
{
    char *w[3];
    if (table_words(rest, w, 2) != 2) {
        snprintf(err, errlen, "expected: %s DOMAIN POOL", by_sender ? "from" : "to");
        return -1;
    }
    const struct egress_pool *p = egress_pool_named(e, w[1]);
    if (!p) {
        snprintf(err, errlen, "%s %s: no pool or source '%s' (define it first)", by_sender ? "from" : "to", w[0], w[1]);
        return -1;
    }
    if (domain_rules_add(&e->rules, by_sender, w[0], (size_t)(p - e->pools)) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

int egress_add_line(struct egress_set *e, const char *kind, char *rest, char *err, size_t errlen)
{
    if (!strcmp(kind, "source"))
        return add_source(e, rest, err, errlen);
    if (!strcmp(kind, "pool"))
        return add_pool_line(e, rest, err, errlen);
    if (!strcmp(kind, "from") || !strcmp(kind, "to"))
        return add_rule(e, kind[0] == 'f', rest, err, errlen);
    snprintf(err, errlen, "'%s': expected source, pool, from or to", kind);
    return -1;
}

void egress_free(struct egress_set *e)
{
    for (size_t i = 0; i < e->npools; i++)
        free(e->pools[i].current);
    domain_rules_free(&e->rules);
    free(e->sources);
    free(e->pools);
    memset(e, 0, sizeof *e);
}

const struct egress_pool *egress_pool_named(const struct egress_set *e, const char *name)
{
    for (size_t i = 0; i < e->npools; i++)
        if (!strcmp(e->pools[i].name, name))
            return &e->pools[i];
    return NULL;
}


const struct egress_pool *egress_pool_for(const struct egress_set *e, const char *sender_domain,
                                          const char *rcpt_domain)
{
    size_t i;
    return domain_rules_find(&e->rules, sender_domain, rcpt_domain, &i) ? &e->pools[i] : NULL;
}

/* Smooth weighted round robin over the usable sources: each gains its
 * weight, the one with the most is picked and pays back the total. */
const struct egress_source *egress_pick(const struct egress_set *e, const struct egress_pool *p,
                                        bool (*usable)(const struct egress_source *s))
{
    int total = 0;
    size_t best = p->n;
    for (size_t i = 0; i < p->n; i++) {
        if (usable && !usable(&e->sources[p->src[i]]))
            continue;
        p->current[i] += p->weight[i];
        total += p->weight[i];
        if (best == p->n || p->current[i] > p->current[best])
            best = i;
    }
    if (best == p->n)
        return NULL;
    p->current[best] -= total;
    return &e->sources[p->src[best]];
}
