/* config_lookup.c - the questions the rest of posternd asks a loaded
 * configuration: is this a relay domain, a trusted client, a proxy or
 * XCLIENT client; which next hop, TLS policy, AUTH entry and rate limit
 * apply; may this login send as that address. */
#include "config.h"
#include "netaddr.h"
#include "smtp_parse.h"
#include <netinet/in.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

/* "a.b.example" matches "a.b.example" and ".example"/".b.example" entries. */

bool config_is_relay_domain(const struct config *cfg, const char *domain)
{
    for (size_t i = 0; i < cfg->nrelay_domains; i++)
        if (domain_matches(cfg->relay_domains[i], domain))
            return true;
    return false;
}

static bool in_networks(const struct cidr *list, size_t n, const struct sockaddr *client)
{
    for (size_t i = 0; i < n; i++)
        if (cidr_match(&list[i], client))
            return true;
    return false;
}

bool config_is_trusted(const struct config *cfg, const struct sockaddr *client)
{
    return in_networks(cfg->trusted, cfg->ntrusted, client);
}

bool config_allows_proxy(const struct config *cfg, const struct sockaddr *peer)
{
    return in_networks(cfg->proxy_nets, cfg->nproxy_nets, peer);
}

bool config_allows_xclient(const struct config *cfg, const struct sockaddr *client)
{
    return in_networks(cfg->xclient, cfg->nxclient, client);
}

const struct nexthop *config_transport_for(const struct config *cfg, const char *domain)
{
    /* exact entries win over subdomain patterns */
    for (size_t i = 0; i < cfg->ntransports; i++)
        if (cfg->transports[i].domain[0] != '.' && domain_matches(cfg->transports[i].domain, domain))
            return &cfg->transports[i].hop;
    for (size_t i = 0; i < cfg->ntransports; i++)
        if (domain_matches(cfg->transports[i].domain, domain))
            return &cfg->transports[i].hop;
    return cfg->default_transport.text[0] ? &cfg->default_transport : NULL;
}

/* sender_login_maps: may login send as address? An entry for the address
 * itself decides; else one for its @domain; no entry: nobody may. */
bool config_login_may_send_as(const struct config *cfg, const char *login, const char *address)
{
    const char *at = strrchr(address, '@');
    const struct login_entry *exact = NULL, *domain = NULL;
    for (size_t i = 0; i < cfg->nlogins; i++) {
        if (!strcasecmp(cfg->logins[i].address, address))
            exact = &cfg->logins[i];
        else if (at && cfg->logins[i].address[0] == '@' && !strcasecmp(cfg->logins[i].address, at))
            domain = &cfg->logins[i];
    }
    const struct login_entry *e = exact ? exact : domain;
    if (!e)
        return false;
    size_t n = strlen(login);
    for (const char *p = e->logins; *p;) {
        size_t len = strcspn(p, ",");
        if (len == n && !strncmp(p, login, n))
            return true;
        p += len + (p[len] == ',');
    }
    return false;
}

const struct sasl_entry *config_sasl_for(const struct config *cfg, const char *key)
{
    for (size_t i = 0; i < cfg->nsasl; i++)
        if (!strcasecmp(cfg->sasl[i].nexthop, key))
            return &cfg->sasl[i];
    return NULL;
}

int config_rate_limit_for(const struct config *cfg, const char *domain)
{
    for (size_t i = 0; i < cfg->nrate_limits; i++)
        if (cfg->rate_limits[i].domain[0] != '.' && domain_matches(cfg->rate_limits[i].domain, domain))
            return cfg->rate_limits[i].per_minute;
    for (size_t i = 0; i < cfg->nrate_limits; i++)
        if (domain_matches(cfg->rate_limits[i].domain, domain))
            return cfg->rate_limits[i].per_minute;
    return cfg->dest_rate_limit;
}

bool nexthop_same(const struct nexthop *a, const struct nexthop *b)
{
    if (a->mx || b->mx)
        return a->mx && b->mx;
    if (a->lmtp != b->lmtp)
        return false;
    if (a->host[0] || b->host[0])
        return !strcasecmp(a->host, b->host) && a->port == b->port && a->lookup_mx == b->lookup_mx;
    return a == b || (a->addrlen == b->addrlen && memcmp(&a->addr, &b->addr, a->addrlen) == 0);
}

bool config_requires_tls(const struct config *cfg, const struct sockaddr *client)
{
    return in_networks(cfg->require_tls, cfg->nrequire_tls, client);
}

const struct tls_policy *config_tls_policy_for(const struct config *cfg, const char *domain)
{
    for (size_t i = 0; i < cfg->ntls_policies; i++)
        if (cfg->tls_policies[i].domain[0] != '.' && domain_matches(cfg->tls_policies[i].domain, domain))
            return &cfg->tls_policies[i];
    for (size_t i = 0; i < cfg->ntls_policies; i++)
        if (domain_matches(cfg->tls_policies[i].domain, domain))
            return &cfg->tls_policies[i];
    return &cfg->tls_default;
}
