/* mta_sts.h - MTA-STS (RFC 8461): the _mta-sts TXT record says a domain
 * publishes a policy; the policy, fetched over verified HTTPS from
 * https://mta-sts.DOMAIN/.well-known/mta-sts.txt, lists the MX hosts that
 * may receive its mail and whether TLS to them is enforced. Policies are
 * cached for their max_age and refetched when the TXT id changes. */
#ifndef POSTERN_MTA_STS_H
#define POSTERN_MTA_STS_H
#include "config.h"
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define STS_MAX_MX 16

enum sts_mode { STS_NONE, STS_TESTING, STS_ENFORCE };

struct sts_policy {
    enum sts_mode mode;
    char mx[STS_MAX_MX][256];    /* patterns: "mail.example.com" or "*.example.net" */
    int nmx;
    long max_age;
};

void mta_sts_init(const struct config *cfg);
/* cb(arg, policy) later on the loop thread; policy NULL = no policy. */
typedef void (*sts_cb)(void *arg, const struct sts_policy *policy);
void mta_sts_lookup(const char *domain, sts_cb cb, void *arg);

/* Pure helpers (unit-tested). */
int sts_parse(const char *text, size_t len, struct sts_policy *out);
bool sts_mx_matches(const struct sts_policy *p, const char *host);

#endif
