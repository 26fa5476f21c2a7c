/* providers.h - shaping by mailbox provider (issue 38): a limit shared by
 * every destination whose MX host matches one of a provider's patterns
 * (Halon's and KumoMTA's "MX rollup": all domains hosted at one provider
 * share one limit). The `providers = file:PATH` table has lines
 *
 *   provider NAME concurrency=N [rate=M] PATTERN...
 *
 * PATTERN is a host name or "*.suffix" (the MX host as looked up,
 * case-insensitive); N is how many delivery transactions to that provider
 * run at once, over all its domains and servers, and M how many start a
 * minute (spread evenly). Both hold per egress source, as each source has
 * its own reputation at the provider. */
#ifndef POSTERN_PROVIDERS_H
#define POSTERN_PROVIDERS_H
#include <stdbool.h>
#include <stddef.h>

#define PROVIDER_MAX_PATTERNS 32

/* A provider's use from one egress source (the loop thread's). */
struct provider_use {
    const void *source;            /* the egress source, or NULL: smtp_bind_address */
    int in_flight;                 /* transactions running */
    unsigned long long next_ms;    /* rate: the next start allowed (ev_now_ms) */
    struct provider_use *next;
};

struct provider {
    char name[64];
    int concurrency;
    int rate;                      /* starts a minute; 0 = no limit */
    size_t npatterns;
    char *patterns[PROVIDER_MAX_PATTERNS];
    struct provider_use **uses;    /* per source, made as sources are seen */
};

struct providers {
    struct provider *v;
    size_t n;
};

/* One table line (kind = its first word): 0, or -1 with err. */
int providers_add_line(struct providers *p, const char *kind, char *rest, char *err, size_t errlen);
void providers_free(struct providers *p);
/* The provider whose pattern matches host first, or NULL. */
const struct provider *provider_for_host(const struct providers *p, const char *host);
/* p's counters for connections from source (loop thread); NULL when out
 * of memory (no limit is kept then). */
struct provider_use *provider_use_of(const struct provider *p, const void *source);

#endif
