/* config_values.c - the parsers behind the key table (config_keys.c): one
 * value (durations, sizes, booleans, next hops, TLS levels, bind addresses)
 * or one row of a list or a file: lookup table (relay domains, transports,
 * networks, SASL and login maps, rate limits, listeners, plugins), each
 * naming file:line on error through fail(). */
#include "config_int.h"
#include "privsep.h"
#include "smtp_parse.h"
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static void lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

long parse_duration(const char *text)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (end == text || v < 0 || errno)
        return -1;
    long mult = 1;
    switch (*end) {
    case '\0': case 's': mult = 1; break;
    case 'm': mult = 60; break;
    case 'h': mult = 3600; break;
    case 'd': mult = 86400; break;
    case 'w': mult = 7 * 86400; break;
    default: return -1;
    }
    if (*end && end[1])
        return -1;
    if (v > LONG_MAX / mult)
        return -1;
    return v * mult;
}

int parse_size(const char *text, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (end == text || errno || text[0] == '-')
        return -1;
    unsigned long long mult = 1;
    switch (*end) {
    case '\0': break;
    case 'k': case 'K': mult = 1024ULL; break;
    case 'm': case 'M': mult = 1024ULL * 1024; break;
    case 'g': case 'G': mult = 1024ULL * 1024 * 1024; break;
    default: return -1;
    }
    if (*end && end[1])
        return -1;
    if (v > SIZE_MAX / mult)
        return -1;
    *out = (size_t)(v * mult);
    return 0;
}

/* "[host]:port", "host:port", "[host]" or "host" after "smtp:"; brackets
 * mean no MX lookup (an IP literal is an address either way). */
static int split_hostport(const char *hp, char *host, size_t cap, int *port, bool *bracketed)
{
    const char *end, *rest;
    *bracketed = hp[0] == '[';
    if (*bracketed) {
        end = strchr(hp, ']');
        if (!end)
            return -1;
        hp++;
        rest = end + 1;
    } else {
        end = strrchr(hp, ':');
        if (end && strchr(hp, ':') != end)
            end = NULL;          /* several colons: a bare IPv6 address */
        end = end ? end : hp + strlen(hp);
        rest = end;
    }
    size_t len = (size_t)(end - hp);
    if (len == 0 || len >= cap)
        return -1;
    memcpy(host, hp, len);
    host[len] = '\0';
    *port = 25;
    if (*rest == ':') {
        char *e;
        long v = strtol(rest + 1, &e, 10);
        if (*e || v < 1 || v > 65535 || !rest[1])
            return -1;
        *port = (int)v;
    } else if (*rest) {
        return -1;
    }
    return 0;
}

bool valid_host_name(const char *h)
{
    for (const char *c = h; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '-' && *c != '.' && *c != '_')
            return false;
    return h[0] != '.' && h[0] != '-';
}

/* "lmtp:unix:/PATH": an absolute path that fits a sockaddr_un. */
static int unix_nexthop_parse(const char *text, struct nexthop *out, char *err, size_t errlen)
{
    const char *path = text + strlen("lmtp:unix:");
    struct sockaddr_un *sun = (struct sockaddr_un *)&out->addr;
    bool plain = true;           /* no blanks or control characters in the path */
    for (const unsigned char *c = (const unsigned char *)path; *c; c++)
        plain &= *c > ' ' && *c != 0x7f;
    if (path[0] != '/' || strlen(path) >= sizeof sun->sun_path || strlen(text) >= sizeof out->text || !plain) {
        snprintf(err, errlen, "bad next hop '%s' (expected lmtp:unix:/PATH, an absolute path under %zu bytes)", text,
                 sizeof sun->sun_path);
        return -1;
    }
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, path, strlen(path) + 1);
    out->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
    snprintf(out->text, sizeof out->text, "%s", text);
    return 0;
}

int nexthop_parse(const char *text, struct nexthop *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (strcmp(text, "mx") == 0) {
        out->mx = true;
        snprintf(out->text, sizeof out->text, "mx");
        return 0;
    }
    char host[sizeof out->host], lit[sizeof out->host + 16];
    bool bracketed;
    out->lmtp = !strncmp(text, "lmtp:", 5);
    if (out->lmtp && !strncmp(text, "lmtp:unix:", 10))
        return unix_nexthop_parse(text, out, err, errlen);
    if ((strncmp(text, "smtp:", 5) != 0 && !out->lmtp) || strlen(text) >= sizeof out->text ||
        split_hostport(text + 5, host, sizeof host, &out->port, &bracketed) < 0) {
        snprintf(err, errlen, "bad next hop '%s' (expected smtp:[host]:port, smtp:host:port, lmtp:[host]:port, "
                 "lmtp:unix:/PATH or mx)", text);
        return -1;
    }
    snprintf(out->text, sizeof out->text, "%s", text);
    if (out->lmtp && !strchr(text + 5 + (text[5] == '[' ? strcspn(text + 5, "]") : 0), ':'))
        out->port = 24;                 /* LMTP's own port when none is given (RFC 2033 5: never 25) */
    snprintf(lit, sizeof lit, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, out->port);
    if (hostport_parse(lit, &out->addr, &out->addrlen) == 0)
        return 0;                       /* an IP literal */
    if (!valid_host_name(host)) {
        snprintf(err, errlen, "bad next hop '%s': '%s' is neither an IP address nor a host name", text, host);
        return -1;
    }
    lower(host);
    snprintf(out->host, sizeof out->host, "%s", host);
    out->lookup_mx = !bracketed && !out->lmtp;
    return 0;
}

/* Read a lookup table file: calls row(ctx, fields...) for each non-comment line. */

int read_table(struct pctx *parent, const char *path, row_fn row, void *ctx)
{
    char why[300];
    FILE *f = privsep_fopen(path, why, sizeof why);
    if (!f)
        return fail(parent, "cannot open table %s: %s (%s)%s%s", path, strerror(errno), config_reader(),
                    why[0] ? ": " : "", why);
    struct pctx p = {path, 0, parent->err, parent->errlen, parent->running};
    char line[1024];
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        p.line++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = trim(line);
        if (!*s)
            continue;
        char *value = s + strcspn(s, " \t");
        if (*value)
            *value++ = '\0';
        rc = row(&p, ctx, s, trim(value));
    }
    fclose(f);
    return rc;
}

int add_relay_domain(struct pctx *p, void *ctx, char *key, char *value)
{
    struct config *cfg = ctx;
    if (*value)
        return fail(p, "relay domain table: unexpected text after '%s'", key);
    lower(key);
    char **n = realloc(cfg->relay_domains, (cfg->nrelay_domains + 1) * sizeof *n);
    if (!n)
        return fail(p, "out of memory");
    cfg->relay_domains = n;
    cfg->relay_domains[cfg->nrelay_domains++] = strdup(key);
    return 0;
}

int add_transport(struct pctx *p, void *ctx, char *key, char *value)
{
    struct config *cfg = ctx;
    if (!*value)
        return fail(p, "transport table: '%s' needs a next hop", key);
    struct transport_entry e;
    char err[200];
    if (nexthop_parse(value, &e.hop, err, sizeof err) < 0)
        return fail(p, "%s", err);
    lower(key);
    e.domain = strdup(key);
    struct transport_entry *n = realloc(cfg->transports, (cfg->ntransports + 1) * sizeof *n);
    if (!n)
        return fail(p, "out of memory");
    cfg->transports = n;
    cfg->transports[cfg->ntransports++] = e;
    return 0;
}

/* Split a comma/space separated list and feed each item to row(). */
int each_item(struct pctx *p, char *list, row_fn row, void *ctx)
{
    char *save = NULL;
    for (char *it = strtok_r(list, ", \t", &save); it; it = strtok_r(NULL, ", \t", &save)) {
        char empty[1] = "";
        if (row(p, ctx, it, empty) < 0)
            return -1;
    }
    return 0;
}

/* Parse key as a CIDR network and append it to *list. */
static int append_cidr(struct pctx *p, struct cidr **list, size_t *n, const char *key)
{
    struct cidr c;
    if (cidr_parse(key, &c) < 0)
        return fail(p, "bad network '%s' (expected CIDR like 192.0.2.0/24)", key);
    struct cidr *grown = realloc(*list, (*n + 1) * sizeof *grown);
    if (!grown)
        return fail(p, "out of memory");
    *list = grown;
    grown[(*n)++] = c;
    return 0;
}

int add_trusted(struct pctx *p, void *ctx, char *key, char *value)
{
    struct config *cfg = ctx;
    (void)value;
    return append_cidr(p, &cfg->trusted, &cfg->ntrusted, key);
}

int add_require_tls(struct pctx *p, void *ctx, char *key, char *value)
{
    struct config *cfg = ctx;
    (void)value;
    return append_cidr(p, &cfg->require_tls, &cfg->nrequire_tls, key);
}

/* smtp_sasl_password_maps line: "nexthop user:password [plaintext]". */
int add_sasl(struct pctx *p, void *ctx, char *key, char *value)
{
    struct config *cfg = ctx;
    /* the password may hold spaces; a last word "plaintext" is the option */
    char *last = strrchr(value, ' ');
    bool plaintext = last && !strcmp(last + 1, "plaintext");
    if (plaintext)
        *last = '\0';
    value = trim(value);
    char *colon = strchr(value, ':');
    if (!colon || colon == value || strlen(value) > 500)
        return fail(p, "smtp_sasl_password_maps: expected 'nexthop user:password [plaintext]' for '%s'", key);
    *colon = '\0';
    struct sasl_entry *n = realloc(cfg->sasl, (cfg->nsasl + 1) * sizeof *n);
    if (!n)
        return fail(p, "out of memory");
    cfg->sasl = n;
    n[cfg->nsasl++] = (struct sasl_entry){strdup(key), strdup(value), strdup(colon + 1), plaintext};
    return 0;
}

/* sender_login_maps line: "address login[,login...]" (address or @domain). */
int add_login(struct pctx *p, void *ctx, char *key, char *value)
{
    struct config *cfg = ctx;
    if (!*value || strpbrk(value, " \t") || !strchr(key, '@'))
        return fail(p, "sender_login_maps: expected 'address login[,login]' for '%s'", key);
    struct login_entry *n = realloc(cfg->logins, (cfg->nlogins + 1) * sizeof *n);
    if (!n)
        return fail(p, "out of memory");
    cfg->logins = n;
    n[cfg->nlogins++] = (struct login_entry){strdup(key), strdup(value)};
    return 0;
}

/* dest_rate_limit_table line: "domain N" (messages per minute, 0 = none). */
int add_rate_limit(struct pctx *p, void *ctx, char *key, char *value)
{
    struct config *cfg = ctx;
    char *end;
    long v = strtol(value, &end, 10);
    if (!*value || *end || v < 0 || v > 60000)
        return fail(p, "dest_rate_limit_table: expected 'domain N' (messages per minute, 0-60000) for '%s'", key);
    struct rate_entry *n = realloc(cfg->rate_limits, (cfg->nrate_limits + 1) * sizeof *n);
    if (!n)
        return fail(p, "out of memory");
    cfg->rate_limits = n;
    lower(key);
    n[cfg->nrate_limits++] = (struct rate_entry){strdup(key), (int)v};
    return 0;
}

/* smtp_bind_address(6): an IP address of the right family. */
int set_bind_address(struct pctx *p, const char *key, const char *value, int family,
                            struct sockaddr_storage *out)
{
    memset(out, 0, sizeof *out);
    if (!*value)
        return 0;
    void *dst = family == AF_INET ? (void *)&((struct sockaddr_in *)out)->sin_addr
                                  : (void *)&((struct sockaddr_in6 *)out)->sin6_addr;
    if (inet_pton(family, value, dst) != 1)
        return fail(p, "%s: expected an %s address, got '%s'", key, family == AF_INET ? "IPv4" : "IPv6", value);
    out->ss_family = (sa_family_t)family;
    return 0;
}

int add_xclient(struct pctx *p, void *ctx, char *key, char *value)
{
    struct config *cfg = ctx;
    (void)value;
    return append_cidr(p, &cfg->xclient, &cfg->nxclient, key);
}

int add_proxy_net(struct pctx *p, void *ctx, char *key, char *value)
{
    struct config *cfg = ctx;
    (void)value;
    return append_cidr(p, &cfg->proxy_nets, &cfg->nproxy_nets, key);
}

static const char *tls_level_names[TLS_LEVELS] = {"none", "may", "encrypt", "verify", "dane", "dane-only"};
const char *tls_level_name(enum tls_level l) { return tls_level_names[l]; }

const struct tls_policy *tls_policy_of_level(enum tls_level l)
{
    static const struct tls_policy by_level[TLS_LEVELS] = {
        {NULL, TLS_NONE, NULL, TLS_MAY},   {NULL, TLS_MAY, NULL, TLS_MAY},  {NULL, TLS_ENCRYPT, NULL, TLS_MAY},
        {NULL, TLS_VERIFY, NULL, TLS_MAY}, {NULL, TLS_DANE, NULL, TLS_MAY}, {NULL, TLS_DANE_ONLY, NULL, TLS_MAY},
    };
    return &by_level[l];
}

/* "LEVEL [match=a:b]" into pol. */
int parse_tls_policy(struct pctx *p, char *value, struct tls_policy *pol)
{
    char *save = NULL, *level = strtok_r(value, " \t", &save);
    int found = -1;
    for (int i = 0; level && i < TLS_LEVELS; i++)
        if (!strcmp(level, tls_level_names[i]))
            found = i;
    if (found < 0)
        return fail(p, "TLS policy: expected none, may, encrypt, verify, dane or dane-only, got '%s'",
                    level ? level : "");
    pol->level = (enum tls_level)found;
    pol->fallback = TLS_MAY;
    for (char *opt = strtok_r(NULL, " \t", &save); opt; opt = strtok_r(NULL, " \t", &save)) {
        if (strncmp(opt, "match=", 6) || !opt[6])
            return fail(p, "TLS policy: unknown attribute '%s' (known: match=NAME[:NAME...])", opt);
        free(pol->match);
        pol->match = strdup(opt + 6);
    }
    return 0;
}

int add_tls_policy(struct pctx *p, void *ctx, char *key, char *value)
{
    struct config *cfg = ctx;
    struct tls_policy pol = {0};
    if (parse_tls_policy(p, value, &pol) < 0)
        return -1;
    lower(key);
    pol.domain = strdup(key);
    struct tls_policy *n = realloc(cfg->tls_policies, (cfg->ntls_policies + 1) * sizeof *n);
    if (!n)
        return fail(p, "out of memory");
    cfg->tls_policies = n;
    cfg->tls_policies[cfg->ntls_policies++] = pol;
    return 0;
}

int add_listen(struct pctx *p, void *ctx, char *key, char *value)
{
    struct config *cfg = ctx;
    (void)value;
    if (cfg->nlisten >= CONFIG_MAX_LISTEN)
        return fail(p, "too many listen addresses (max %d)", CONFIG_MAX_LISTEN);
    struct listen_addr *l = &cfg->listen[cfg->nlisten];
    if (strlen(key) >= sizeof l->text || hostport_parse(key, &l->addr, &l->addrlen) < 0)
        return fail(p, "bad listen address '%s' (expected 127.0.0.1:2525 or [::1]:2525)", key);
    snprintf(l->text, sizeof l->text, "%s", key);
    cfg->nlisten++;
    return 0;
}

/* "file:PATH" values name a table; anything else is an inline list. */
int list_or_table(struct pctx *p, struct config *cfg, char *value, row_fn row)
{
    if (strncmp(value, "file:", 5) == 0)
        return read_table(p, value + 5, row, cfg);
    return each_item(p, value, row, cfg);
}

const char *config_plugin_option(const struct config *cfg, const char *plugin, const char *key)
{
    for (size_t i = 0; i < cfg->nplugin_opts; i++)
        if (!strcmp(cfg->plugin_opts[i].plugin, plugin) && !strcmp(cfg->plugin_opts[i].key, key))
            return cfg->plugin_opts[i].value;
    return NULL;
}

const char *plugin_option_name(const char *entry)
{
    /* "lua:policies/rate_limit.lua" takes options as "rate_limit.<key>" */
    static __thread char name[128];
    if (strncmp(entry, "lua:", 4))
        return entry;
    const char *base = strrchr(entry, '/');
    base = base ? base + 1 : entry + 4;
    size_t n = strlen(base) - 4;
    if (n >= sizeof name)
        n = sizeof name - 1;
    memcpy(name, base, n);
    name[n] = '\0';
    return name;
}

int add_plugin(struct pctx *p, void *ctx, char *key, char *value)
{
    struct config *cfg = ctx;
    (void)value;
    bool lua = !strncmp(key, "lua:", 4);
    if (lua && (strlen(key) < 9 || strcmp(key + strlen(key) - 4, ".lua")))
        return fail(p, "plugins: Lua entries look like lua:PATH.lua, got '%s'", key);
    for (const char *c = key; *c && !lua; c++)
        if (!(isalnum((unsigned char)*c) || *c == '_' || *c == '-'))
            return fail(p, "plugins: bad plugin name '%s'", key);
    for (size_t i = 0; i < cfg->nplugins; i++)
        if (!strcmp(cfg->plugins[i], key))
            return fail(p, "plugins: '%s' is listed twice", key);
    char **n = realloc(cfg->plugins, (cfg->nplugins + 1) * sizeof *n);
    if (!n)
        return fail(p, "out of memory");
    cfg->plugins = n;
    cfg->plugins[cfg->nplugins++] = strdup(key);
    return 0;
}

/* "name.key = value": an option for plugin name (checked once the chain is known). */
int add_plugin_option(struct pctx *p, struct config *cfg, const char *key, const char *value)
{
    const char *dot = strchr(key, '.');
    struct plugin_option *n = realloc(cfg->plugin_opts, (cfg->nplugin_opts + 1) * sizeof *n);
    if (!n)
        return fail(p, "out of memory");
    cfg->plugin_opts = n;
    n[cfg->nplugin_opts++] = (struct plugin_option){strndup(key, (size_t)(dot - key)), strdup(dot + 1),
                                                    strdup(value), p->line};
    return 0;
}

int set_int(struct pctx *p, const char *key, const char *value, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (end == value || *end || errno || v < lo || v > hi)
        return fail(p, "%s: expected a number from %d to %d, got '%s'", key, lo, hi, value);
    *out = (int)v;
    return 0;
}

int set_duration(struct pctx *p, const char *key, const char *value, long *out)
{
    long v = parse_duration(value);
    if (v < 0)
        return fail(p, "%s: bad duration '%s' (expected e.g. 30s, 5m, 4h, 5d)", key, value);
    *out = v;
    return 0;
}

int set_duration_int(struct pctx *p, const char *key, const char *value, int *out)
{
    long v = 0;
    if (set_duration(p, key, value, &v) < 0)
        return -1;
    if (v < 1 || v > 86400)
        return fail(p, "%s: must be between 1s and 1d", key);
    *out = (int)v;
    return 0;
}

/* A duration from lo to hi seconds, kept in milliseconds; range names the
 * range in the error ("between 1s and 60s"). */
/* redis_timeout: "200ms" or "2s", 10 ms to 10 s. */
int set_redis_timeout(struct pctx *p, const char *value, int *out)
{
    char *end;
    long n = strtol(value, &end, 10);
    long ms = !strcmp(end, "ms") ? n : !strcmp(end, "s") ? n * 1000 : -1;
    if (end == value || ms < 10 || ms > 10000)
        return fail(p, "redis_timeout: expected 10ms to 10s (\"200ms\", \"1s\"), got '%s'", value);
    *out = (int)ms;
    return 0;
}

int set_duration_ms(struct pctx *p, const char *key, const char *value, long lo, long hi, const char *range,
                           int *out_ms)
{
    long v = 0;
    if (set_duration(p, key, value, &v) < 0)
        return -1;
    if (v < lo || v > hi)
        return fail(p, "%s: %s", key, range);
    *out_ms = (int)v * 1000;
    return 0;
}

int set_bool(struct pctx *p, const char *key, const char *value, bool *out)
{
    if (strcmp(value, "yes") && strcmp(value, "no"))
        return fail(p, "%s: expected yes or no", key);
    *out = value[0] == 'y';
    return 0;
}

void set_str(char **dst, const char *value)
{
    free(*dst);
    *dst = strdup(value);
}

/* smtps_listen (implicit TLS) or proxy_listen (a PROXY header first). */
int add_special_listeners(struct pctx *p, struct config *cfg, char *value, bool proxy)
{
    int before = cfg->nlisten;
    if (each_item(p, value, add_listen, cfg) < 0)
        return -1;
    for (int i = before; i < cfg->nlisten; i++) {
        cfg->listen[i].proxy = proxy;
        cfg->listen[i].implicit_tls = !proxy;
        cfg->listen[i].submission = !proxy;     /* RFC 8314: 465 is submission over TLS */
    }
    return 0;
}

