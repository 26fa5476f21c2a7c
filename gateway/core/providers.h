/* providers.h - shaping by mailbox provider (issue 38): a limit shared by
 * every destination whose MX host matches one of a provider's patterns
 * (Halon's and KumoMTA's "MX rollup": all domains hosted at one provider
 * share one limit). The `providers = file:PATH` table has lines
 *
 *   provider NAME concurrency=N PATTERN...
 *
 * PATTERN is a host name or "*.suffix" (the MX host as looked up,
 * case-insensitive); N is how many delivery transactions to that provider
 * run at once, over all its domains and servers. */
#ifndef POSTERN_PROVIDERS_H
#define POSTERN_PROVIDERS_H
#include <stdbool.h>
#include <stddef.h>

#define PROVIDER_MAX_PATTERNS 32

struct provider {
    char name[64];
    int concurrency;
    size_t npatterns;
    char *patterns[PROVIDER_MAX_PATTERNS];
    int *in_flight;                /* the loop thread's count */
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

#endif
