/* config.c - parses the main config file and its file: lookup tables into a
 * struct config, validating every value and naming file:line on error. */
#include "config.h"
#include "privsep.h"
#include "log.h"
#include "smtp_parse.h"
#include <ctype.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#ifndef POSTERN_PLUGIN_DIR
#define POSTERN_PLUGIN_DIR "/usr/local/lib/postern/plugins"
#endif

/* Parse context: which file and line we are on, where errors go. */
struct pctx {
    const char *file;
    int line;
    char *err;
    size_t errlen;
    const struct config *running;  /* a reload: the config in use, else NULL */
};

static int fail(struct pctx *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct pctx *p, const char *fmt, ...)
{
    /* line 0: a whole-file check (e.g. two keys that contradict each other) */
    int n = p->line ? snprintf(p->err, p->errlen, "%s:%d: ", p->file, p->line)
                    : snprintf(p->err, p->errlen, "%s: ", p->file);
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < p->errlen)
        vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static char *trim(char *s)
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

static bool valid_host_name(const char *h)
{
    for (const char *c = h; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '-' && *c != '.' && *c != '_')
            return false;
    return h[0] != '.' && h[0] != '-';
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
    if (strncmp(text, "smtp:", 5) != 0 || strlen(text) >= sizeof out->text ||
        split_hostport(text + 5, host, sizeof host, &out->port, &bracketed) < 0) {
        snprintf(err, errlen, "bad next hop '%s' (expected smtp:[host]:port, smtp:host:port or mx)", text);
        return -1;
    }
    snprintf(out->text, sizeof out->text, "%s", text);
    snprintf(lit, sizeof lit, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, out->port);
    if (hostport_parse(lit, &out->addr, &out->addrlen) == 0)
        return 0;                       /* an IP literal */
    if (!valid_host_name(host)) {
        snprintf(err, errlen, "bad next hop '%s': '%s' is neither an IP address nor a host name", text, host);
        return -1;
    }
    lower(host);
    snprintf(out->host, sizeof out->host, "%s", host);
    out->lookup_mx = !bracketed;
    return 0;
}

/* Read a lookup table file: calls row(ctx, fields...) for each non-comment line. */
typedef int (*row_fn)(struct pctx *p, void *ctx, char *key, char *value);

static int read_table(struct pctx *parent, const char *path, row_fn row, void *ctx)
{
    char why[300];
    FILE *f = privsep_fopen(path, why, sizeof why);
    if (!f)
        return fail(parent, "cannot open table %s: %s%s%s", path, strerror(errno), why[0] ? ": " : "", why);
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

static int add_relay_domain(struct pctx *p, void *ctx, char *key, char *value)
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

static int add_transport(struct pctx *p, void *ctx, char *key, char *value)
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
static int each_item(struct pctx *p, char *list, row_fn row, void *ctx)
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

static int add_trusted(struct pctx *p, void *ctx, char *key, char *value)
{
    struct config *cfg = ctx;
    (void)value;
    return append_cidr(p, &cfg->trusted, &cfg->ntrusted, key);
}

static int add_require_tls(struct pctx *p, void *ctx, char *key, char *value)
{
    struct config *cfg = ctx;
    (void)value;
    return append_cidr(p, &cfg->require_tls, &cfg->nrequire_tls, key);
}

/* smtp_sasl_password_maps line: "nexthop user:password [plaintext]". */
static int add_sasl(struct pctx *p, void *ctx, char *key, char *value)
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
static int add_login(struct pctx *p, void *ctx, char *key, char *value)
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
static int add_rate_limit(struct pctx *p, void *ctx, char *key, char *value)
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
static int set_bind_address(struct pctx *p, const char *key, const char *value, int family,
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

static int add_xclient(struct pctx *p, void *ctx, char *key, char *value)
{
    struct config *cfg = ctx;
    (void)value;
    return append_cidr(p, &cfg->xclient, &cfg->nxclient, key);
}

static int add_proxy_net(struct pctx *p, void *ctx, char *key, char *value)
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
static int parse_tls_policy(struct pctx *p, char *value, struct tls_policy *pol)
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

static int add_tls_policy(struct pctx *p, void *ctx, char *key, char *value)
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

static int add_listen(struct pctx *p, void *ctx, char *key, char *value)
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
static int list_or_table(struct pctx *p, struct config *cfg, char *value, row_fn row)
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

static int add_plugin(struct pctx *p, void *ctx, char *key, char *value)
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
static int add_plugin_option(struct pctx *p, struct config *cfg, const char *key, const char *value)
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

static int set_int(struct pctx *p, const char *key, const char *value, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (end == value || *end || errno || v < lo || v > hi)
        return fail(p, "%s: expected a number from %d to %d, got '%s'", key, lo, hi, value);
    *out = (int)v;
    return 0;
}

static int set_duration(struct pctx *p, const char *key, const char *value, long *out)
{
    long v = parse_duration(value);
    if (v < 0)
        return fail(p, "%s: bad duration '%s' (expected e.g. 30s, 5m, 4h, 5d)", key, value);
    *out = v;
    return 0;
}

static int set_duration_int(struct pctx *p, const char *key, const char *value, int *out)
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
static int set_redis_timeout(struct pctx *p, const char *value, int *out)
{
    char *end;
    long n = strtol(value, &end, 10);
    long ms = !strcmp(end, "ms") ? n : !strcmp(end, "s") ? n * 1000 : -1;
    if (end == value || ms < 10 || ms > 10000)
        return fail(p, "redis_timeout: expected 10ms to 10s (\"200ms\", \"1s\"), got '%s'", value);
    *out = (int)ms;
    return 0;
}

static int set_duration_ms(struct pctx *p, const char *key, const char *value, long lo, long hi, const char *range,
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

static int set_bool(struct pctx *p, const char *key, const char *value, bool *out)
{
    if (strcmp(value, "yes") && strcmp(value, "no"))
        return fail(p, "%s: expected yes or no", key);
    *out = value[0] == 'y';
    return 0;
}

static void set_str(char **dst, const char *value)
{
    free(*dst);
    *dst = strdup(value);
}

/* smtps_listen (implicit TLS) or proxy_listen (a PROXY header first). */
static int add_special_listeners(struct pctx *p, struct config *cfg, char *value, bool proxy)
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

static int apply_key(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    char err[200];
    if (!strcmp(key, "listen")) {
        /* keep smtps_listen and proxy_listen entries, replace the plain ones */
        int k = 0;
        for (int i = 0; i < cfg->nlisten; i++)
            if (cfg->listen[i].implicit_tls || cfg->listen[i].proxy || cfg->listen[i].submission)
                cfg->listen[k++] = cfg->listen[i];
        cfg->nlisten = k;
        return each_item(p, value, add_listen, cfg);
    }
    if (!strcmp(key, "proxy_listen") || !strcmp(key, "smtps_listen"))
        return add_special_listeners(p, cfg, value, key[0] == 'p');
    if (!strcmp(key, "submission_listen")) {
        int before = cfg->nlisten;
        if (each_item(p, value, add_listen, cfg) < 0)
            return -1;
        for (int i = before; i < cfg->nlisten; i++)
            cfg->listen[i].submission = true;
        return 0;
    }
    if (!strcmp(key, "auth_backend")) {
        if (strcmp(value, "cyrus") && strncmp(value, "dovecot:/", 9))
            return fail(p, "auth_backend: expected cyrus or dovecot:/PATH/TO/auth-client, not '%s'", value);
        set_str(&cfg->auth_backend, value);
        return 0;
    }
    if (!strcmp(key, "auth_cyrus_config_dir")) {
        set_str(&cfg->auth_cyrus_config_dir, value);
        return 0;
    }
    if (!strcmp(key, "auth_allow_plaintext"))
        return set_bool(p, key, value, &cfg->auth_allow_plaintext);
    if (!strcmp(key, "submission_add_headers"))
        return set_bool(p, key, value, &cfg->submission_add_headers);
    if (!strcmp(key, "auth_failure_delay")) {
        if (set_duration_int(p, key, value, &cfg->auth_failure_delay) < 0)
            return -1;
        return cfg->auth_failure_delay > 30 ? fail(p, "auth_failure_delay: at most 30s") : 0;
    }
    if (!strcmp(key, "auth_failure_limit"))
        return set_int(p, key, value, 1, 1000, &cfg->auth_failure_limit);
    if (!strcmp(key, "auth_failure_window"))
        return set_duration_int(p, key, value, &cfg->auth_failure_window);
    if (!strcmp(key, "sender_login_maps")) {
        if (strncmp(value, "file:", 5) != 0)
            return fail(p, "sender_login_maps: expected file:PATH");
        set_str(&cfg->login_maps, value);
        return read_table(p, value + 5, add_login, cfg);
    }
    if (!strcmp(key, "http_listen")) {
        struct sockaddr_storage ss;
        socklen_t len;
        if (strlen(value) >= sizeof cfg->http_listen || hostport_parse(value, &ss, &len) < 0)
            return fail(p, "http_listen: expected ADDRESS:PORT (e.g. 127.0.0.1:9025), not '%s'", value);
        snprintf(cfg->http_listen, sizeof cfg->http_listen, "%s", value);
        return 0;
    }
    if (!strcmp(key, "http_users")) {
        if (value[0] != '/')
            return fail(p, "http_users: expected an absolute path to the console's users file");
        set_str(&cfg->http_users, value);
        return 0;
    }
    if (!strcmp(key, "http_tls")) {
        cfg->http_tls_set = true;
        return set_bool(p, key, value, &cfg->http_tls);
    }
    if (!strcmp(key, "hostname")) {
        if (!*value || strlen(value) >= sizeof cfg->hostname || strpbrk(value, " \t"))
            return fail(p, "hostname: bad value '%s'", value);
        snprintf(cfg->hostname, sizeof cfg->hostname, "%s", value);
        return 0;
    }
    if (!strcmp(key, "postmaster_address")) {
        const char *why = smtp_check_address(value, false);
        if (why || strlen(value) >= sizeof cfg->postmaster_address)
            return fail(p, "postmaster_address: expected local@domain, got '%s' (%s)", value, why ? why : "too long");
        snprintf(cfg->postmaster_address, sizeof cfg->postmaster_address, "%s", value);
        return 0;
    }
    if (!strcmp(key, "spool_dir")) {
        if (value[0] != '/' && value[0] != '.')
            return fail(p, "spool_dir: expected a path, got '%s'", value);
        set_str(&cfg->spool_dir, value);
        return 0;
    }
    if (!strcmp(key, "relay_domains"))
        return list_or_table(p, cfg, value, add_relay_domain);
    if (!strcmp(key, "trusted_networks"))
        return list_or_table(p, cfg, value, add_trusted);
    if (!strcmp(key, "transport_table")) {
        if (strncmp(value, "file:", 5) != 0)
            return fail(p, "transport_table: expected file:PATH");
        set_str(&cfg->transport_table, value);
        return read_table(p, value + 5, add_transport, cfg);
    }
    if (!strcmp(key, "default_transport")) {
        if (nexthop_parse(value, &cfg->default_transport, err, sizeof err) < 0)
            return fail(p, "default_transport: %s", err);
        return 0;
    }
    if (!strcmp(key, "dns_server")) {
        struct sockaddr_storage ss;
        socklen_t len;
        if (hostport_parse(value, &ss, &len) < 0)
            return fail(p, "dns_server: expected addr:port, got '%s'", value);
        set_str(&cfg->dns_server, value);
        return 0;
    }
    if (!strcmp(key, "dns_trust_anchor")) {
        if (access(value, R_OK) < 0)
            return fail(p, "dns_trust_anchor: cannot read %s: %s", value, strerror(errno));
        set_str(&cfg->dns_trust_anchor, value);
        return 0;
    }
    if (!strcmp(key, "smtp_port"))
        return set_int(p, key, value, 1, 65535, &cfg->smtp_port);
    if (!strcmp(key, "retry_min"))
        return set_duration(p, key, value, &cfg->retry_min);
    if (!strcmp(key, "retry_max"))
        return set_duration(p, key, value, &cfg->retry_max);
    if (!strcmp(key, "max_queue_lifetime"))
        return set_duration(p, key, value, &cfg->max_queue_lifetime);
    if (!strcmp(key, "plugin_dir")) {
        set_str(&cfg->plugin_dir, value);
        return 0;
    }
    if (!strcmp(key, "plugins"))
        return each_item(p, value, add_plugin, cfg);
    if (!strcmp(key, "tls_cert") || !strcmp(key, "tls_key")) {
        char why[300];          /* read by root (at start, and by the parent for a reload) */
        int fd = privsep_open(value, why, sizeof why);
        if (fd < 0)
            return fail(p, "%s: cannot read %s: %s%s%s", key, value, strerror(errno), why[0] ? ": " : "", why);
        close(fd);
        set_str(key[4] == 'c' ? &cfg->tls_cert : &cfg->tls_key, value);
        return 0;
    }
    if (!strcmp(key, "tls_policy"))
        return parse_tls_policy(p, value, &cfg->tls_default);
    if (!strcmp(key, "tls_policy_table")) {
        if (strncmp(value, "file:", 5) != 0)
            return fail(p, "tls_policy_table: expected file:PATH");
        set_str(&cfg->tls_policy_table, value);
        return read_table(p, value + 5, add_tls_policy, cfg);
    }
    if (!strcmp(key, "client_bdat"))
        return set_bool(p, key, value, &cfg->client_bdat);
    if (!strcmp(key, "allow_user_nobody"))
        return set_bool(p, key, value, &cfg->allow_user_nobody);
    if (!strcmp(key, "allow_untrusted_routing"))
        return set_bool(p, key, value, &cfg->allow_untrusted_routing);
    if (!strcmp(key, "mta_sts"))
        return set_bool(p, key, value, &cfg->mta_sts);
    if (!strcmp(key, "tls_required_header"))
        return set_bool(p, key, value, &cfg->tls_required_header);
    if (!strcmp(key, "tlsrpt"))
        return set_bool(p, key, value, &cfg->tlsrpt);
    if (!strcmp(key, "tlsrpt_interval")) {
        if (set_duration(p, key, value, &cfg->tlsrpt_interval) < 0)
            return -1;
        if (cfg->tlsrpt_interval < 1 || cfg->tlsrpt_interval > 7 * 86400)
            return fail(p, "tlsrpt_interval: between 1s and 7d, got '%s'", value);
        return 0;
    }
    if (!strcmp(key, "tlsrpt_org") || !strcmp(key, "tlsrpt_contact")) {
        if (!*value || strpbrk(value, "\"\\"))
            return fail(p, "%s: a non-empty text without quotes or backslashes", key);
        set_str(key[7] == 'o' ? &cfg->tlsrpt_org : &cfg->tlsrpt_contact, value);
        return 0;
    }
    if (!strcmp(key, "tlsrpt_from")) {
        if (!strchr(value, '@') || strpbrk(value, " <>\t"))
            return fail(p, "tlsrpt_from: expected an address, got '%s'", value);
        set_str(&cfg->tlsrpt_from, value);
        return 0;
    }
    if (!strcmp(key, "tls_ca_file")) {
        if (access(value, R_OK) < 0)
            return fail(p, "tls_ca_file: cannot read %s: %s", value, strerror(errno));
        set_str(&cfg->tls_ca_file, value);
        return 0;
    }
    if (!strcmp(key, "require_tls_networks"))
        return list_or_table(p, cfg, value, add_require_tls);
    if (!strcmp(key, "xclient_networks"))
        return list_or_table(p, cfg, value, add_xclient);
    if (!strcmp(key, "proxy_networks"))
        return list_or_table(p, cfg, value, add_proxy_net);
    if (!strcmp(key, "control_socket")) {
        set_str(&cfg->control_socket, value);
        return 0;
    }
    if (!strcmp(key, "user")) {
        set_str(&cfg->run_user, value);
        return 0;
    }
    if (!strcmp(key, "message_size_limit")) {
        if (parse_size(value, &cfg->message_size_limit) < 0 || cfg->message_size_limit < 1024)
            return fail(p, "message_size_limit: bad size '%s' (at least 1k)", value);
        return 0;
    }
    if (!strcmp(key, "max_recipients"))
        return set_int(p, key, value, 1, 100000, &cfg->max_recipients);
    if (!strcmp(key, "max_sessions"))
        return set_int(p, key, value, 1, 1000000, &cfg->max_sessions);
    if (!strcmp(key, "max_sessions_per_client"))
        return set_int(p, key, value, 0, 1000000, &cfg->max_sessions_per_client);
    if (!strcmp(key, "client_connect_rate"))
        return set_int(p, key, value, 0, 1000000, &cfg->client_connect_rate);
    if (!strcmp(key, "max_errors"))
        return set_int(p, key, value, 1, 1000, &cfg->max_errors);
    if (!strcmp(key, "smtp_timeout"))
        return set_duration_int(p, key, value, &cfg->smtp_timeout);
    if (!strcmp(key, "pregreet_wait")) {
        if (set_duration_int(p, key, value, &cfg->pregreet_wait) < 0)
            return -1;
        return cfg->pregreet_wait > 60 ? fail(p, "pregreet_wait: at most 60s") : 0;
    }
    if (!strcmp(key, "pregreet_banner"))
        return set_bool(p, key, value, &cfg->pregreet_banner);
    if (!strcmp(key, "data_timeout"))
        return set_duration_int(p, key, value, &cfg->data_timeout);
    if (!strcmp(key, "smtp_min_data_rate"))
        return set_int(p, key, value, 1, 1000000000, &cfg->smtp_min_data_rate);
    if (!strcmp(key, "client_connect_timeout"))
        return set_duration_int(p, key, value, &cfg->client_connect_timeout);
    if (!strcmp(key, "client_timeout"))
        return set_duration_int(p, key, value, &cfg->client_timeout);
    if (!strcmp(key, "connection_cache_time"))
        return set_duration_int(p, key, value, &cfg->connection_cache_time);
    if (!strcmp(key, "dest_concurrency"))
        return set_int(p, key, value, 1, 1000, &cfg->dest_concurrency);
    if (!strcmp(key, "dest_rate_limit"))
        return set_int(p, key, value, 0, 60000, &cfg->dest_rate_limit);
    if (!strcmp(key, "smtp_sasl_password_maps")) {
        if (strncmp(value, "file:", 5) != 0)
            return fail(p, "%s: expected file:PATH", key);
        set_str(&cfg->sasl_maps, value);
        return read_table(p, value + 5, add_sasl, cfg);   /* 0600 root: through the parent on a reload */
    }
    if (!strcmp(key, "dest_rate_limit_table")) {
        if (strncmp(value, "file:", 5) != 0)
            return fail(p, "%s: expected file:PATH", key);
        set_str(&cfg->rate_limit_table, value);
        return read_table(p, value + 5, add_rate_limit, cfg);
    }
    if (!strcmp(key, "smtp_helo_name")) {
        if (!*value || strlen(value) >= sizeof cfg->smtp_helo_name || !valid_host_name(value))
            return fail(p, "smtp_helo_name: bad value '%s'", value);
        snprintf(cfg->smtp_helo_name, sizeof cfg->smtp_helo_name, "%s", value);
        return 0;
    }
    if (!strcmp(key, "smtp_bind_address"))
        return set_bind_address(p, key, value, AF_INET, &cfg->smtp_bind_address);
    if (!strcmp(key, "smtp_bind_address6"))
        return set_bind_address(p, key, value, AF_INET6, &cfg->smtp_bind_address6);
    if (!strcmp(key, "lua_instruction_limit")) {
        int v = 0;
        if (set_int(p, key, value, 1000, 2000000000, &v) < 0)
            return -1;
        cfg->lua_instruction_limit = v;
        return 0;
    }
    if (!strcmp(key, "lua_time_limit"))
        return set_duration_ms(p, key, value, 1, 600, "between 1s and 10m", &cfg->lua_time_limit_ms);
    if (!strcmp(key, "lua_memory_limit")) {
        if (parse_size(value, &cfg->lua_memory_limit) < 0 || cfg->lua_memory_limit < 1024 * 1024)
            return fail(p, "lua_memory_limit: bad size '%s' (at least 1M)", value);
        return 0;
    }
    if (!strcmp(key, "lua_body_limit")) {
        if (parse_size(value, &cfg->lua_body_limit) < 0)
            return fail(p, "lua_body_limit: bad size '%s'", value);
        return 0;
    }
    if (!strcmp(key, "max_hop_count"))
        return set_int(p, key, value, 1, 1000, &cfg->max_hop_count);
    if (!strcmp(key, "smtp_mx_address_limit"))
        return set_int(p, key, value, 0, 1000, &cfg->smtp_mx_address_limit);
    if (!strcmp(key, "smtp_mx_session_limit"))
        return set_int(p, key, value, 0, 1000, &cfg->smtp_mx_session_limit);
    if (!strcmp(key, "delay_warning_time"))
        return set_duration(p, key, value, &cfg->delay_warning_time);
    if (!strcmp(key, "worker_threads"))
        return set_int(p, key, value, 1, 64, &cfg->worker_threads);
    if (!strcmp(key, "lua_threads"))
        return set_int(p, key, value, 1, 32, &cfg->lua_threads);
    if (!strcmp(key, "dns_timeout"))
        return set_duration_ms(p, key, value, 1, 60, "between 1s and 60s", &cfg->dns_timeout_ms);
    if (!strcmp(key, "redis_server")) {
        struct sockaddr_storage ss;
        socklen_t len;
        if (strncmp(value, "unix:/", 6) && hostport_parse(value, &ss, &len) < 0)
            return fail(p, "redis_server: expected addr:port or unix:/PATH, got '%s'", value);
        set_str(&cfg->redis_server, value);
        return 0;
    }
    if (!strcmp(key, "redis_password")) {
        if (strpbrk(value, "\r\n"))
            return fail(p, "redis_password: one line");
        set_str(&cfg->redis_password, value);
        return 0;
    }
    if (!strcmp(key, "redis_database"))
        return set_int(p, key, value, 0, 1000, &cfg->redis_database);
    if (!strcmp(key, "redis_timeout"))
        return set_redis_timeout(p, value, &cfg->redis_timeout_ms);
    if (!strcmp(key, "redis_failure")) {
        if (strcmp(value, "open") && strcmp(value, "tempfail"))
            return fail(p, "redis_failure: expected open or tempfail, got '%s'", value);
        cfg->redis_failure_open = !strcmp(value, "open");
        return 0;
    }
    if (!strcmp(key, "log_target")) {
        if (strcmp(value, "stderr") && strcmp(value, "syslog") && strncmp(value, "file:/", 6))
            return fail(p, "log_target: expected stderr, syslog or file:/PATH");
        set_str(&cfg->log_target, value);
        return 0;
    }
    if (!strcmp(key, "log_level")) {
        int level = log_level_parse(value);
        if (level < 0)
            return fail(p, "log_level: expected error, warning, info or debug");
        cfg->log_level = level;
        return 0;
    }
    const char *dot = strchr(key, '.');
    if (dot && dot != key && dot[1])
        return add_plugin_option(p, cfg, key, value);
    return fail(p, "unknown key '%s'", key);
}

static void config_defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    if (gethostname(cfg->hostname, sizeof cfg->hostname) < 0 || !cfg->hostname[0])
        snprintf(cfg->hostname, sizeof cfg->hostname, "localhost");
    cfg->retry_min = 300;
    cfg->retry_max = 4 * 3600;
    cfg->max_queue_lifetime = 5 * 86400;
    cfg->message_size_limit = 50 * 1024 * 1024;
    cfg->max_recipients = 1000;
    cfg->max_sessions = 10000;
    cfg->max_sessions_per_client = 50;
    cfg->client_connect_rate = 0;
    cfg->max_errors = 20;
    cfg->smtp_timeout = 300;
    cfg->pregreet_banner = true;
    cfg->data_timeout = 600;
    cfg->smtp_min_data_rate = 500;
    cfg->client_bdat = true;
    cfg->client_connect_timeout = 30;
    cfg->client_timeout = 300;
    cfg->connection_cache_time = 2;
    cfg->dest_concurrency = 20;
    cfg->worker_threads = 4;
    cfg->lua_threads = 2;
    cfg->auth_failure_limit = 5;
    cfg->auth_failure_window = 600;
    cfg->auth_failure_delay = 1;
    cfg->submission_add_headers = true;
    cfg->max_hop_count = 50;
    cfg->smtp_mx_address_limit = 5;
    cfg->smtp_mx_session_limit = 2;
    cfg->smtp_port = 25;
    cfg->tls_default.level = TLS_MAY;
    cfg->tls_default.fallback = TLS_MAY;
    cfg->mta_sts = true;
    cfg->tls_required_header = true;
    cfg->tlsrpt_interval = 86400;
    cfg->lua_instruction_limit = 10000000;
    cfg->lua_time_limit_ms = 1000;
    cfg->lua_memory_limit = 64 * 1024 * 1024;
    cfg->lua_body_limit = 1024 * 1024;
    cfg->log_level = 2;
    cfg->dns_timeout_ms = 5000;
    cfg->redis_timeout_ms = 200;
    cfg->redis_failure_open = true;
}

static int config_validate(struct pctx *p, struct config *cfg)
{
    p->line = 0;
    bool plain = false;
    for (int i = 0; i < cfg->nlisten; i++)
        plain |= !cfg->listen[i].implicit_tls;
    if (!plain)
        return fail(p, "listen: at least one address is required");
    if (!cfg->spool_dir)
        return fail(p, "spool_dir: required");
    if (!cfg->default_transport.text[0] && cfg->ntransports == 0)
        return fail(p, "default_transport or transport_table: required (where should mail go?)");
    if (cfg->retry_min < 1 || cfg->retry_max < cfg->retry_min)
        return fail(p, "retry_min must be >= 1s and <= retry_max");
    if (cfg->max_queue_lifetime < cfg->retry_min)
        return fail(p, "max_queue_lifetime must be >= retry_min");
    if (!cfg->control_socket) {
        char path[4096];
        snprintf(path, sizeof path, "%s/control.sock", cfg->spool_dir);
        cfg->control_socket = strdup(path);
    }
    if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL))
        return fail(p, "tls_cert and tls_key go together");
    for (int i = 0; i < cfg->nlisten; i++)
        if (cfg->listen[i].implicit_tls && !cfg->tls_cert)
            return fail(p, "smtps_listen needs tls_cert and tls_key");
    bool proxied = false;
    for (int i = 0; i < cfg->nlisten; i++)
        proxied |= cfg->listen[i].proxy;
    /* without it any host that reaches the port could claim any client address */
    if (proxied && !cfg->nproxy_nets)
        return fail(p, "proxy_listen needs proxy_networks (the load balancers allowed to present client addresses)");
    if (cfg->nrequire_tls && !cfg->tls_cert)
        return fail(p, "require_tls_networks needs tls_cert and tls_key (STARTTLS)");
    if (!cfg->plugin_dir)
        cfg->plugin_dir = strdup(POSTERN_PLUGIN_DIR);
    if (cfg->http_users && !cfg->http_listen[0])
        return fail(p, "http_users needs http_listen (the console is served there)");
    if (!cfg->http_tls_set)
        cfg->http_tls = cfg->tls_cert != NULL;
    if (cfg->http_tls && !cfg->tls_cert)
        return fail(p, "http_tls needs tls_cert and tls_key");
    for (size_t i = 0; i < cfg->nplugin_opts; i++) {
        bool found = false;
        for (size_t k = 0; k < cfg->nplugins; k++)
            found |= !strcmp(plugin_option_name(cfg->plugins[k]), cfg->plugin_opts[i].plugin);
        if (!found) {
            p->line = cfg->plugin_opts[i].line;
            return fail(p, "option '%s.%s' for a plugin that is not in the plugins chain (or an unknown key)",
                        cfg->plugin_opts[i].plugin, cfg->plugin_opts[i].key);
        }
    }
    if (strlen(cfg->control_socket) >= 108)
        return fail(p, "control_socket: path longer than 107 bytes: %s", cfg->control_socket);
    return 0;
}

/* Keys given twice are an error (only "<plugin>.<key>" options repeat). */
#define MAX_SEEN_KEYS 512     /* more than there are keys: every one is checked */
struct seen_keys {
    char key[MAX_SEEN_KEYS][48];
    int line[MAX_SEEN_KEYS];
    int n;
};

static int check_duplicate(struct pctx *p, struct seen_keys *seen, const char *key)
{
    if (strchr(key, '.') || strlen(key) >= sizeof seen->key[0])
        return 0;
    for (int i = 0; i < seen->n; i++)
        if (!strcmp(seen->key[i], key))
            return fail(p, "duplicate key '%s' (first set at line %d)", key, seen->line[i]);
    if (seen->n < MAX_SEEN_KEYS) {
        snprintf(seen->key[seen->n], sizeof seen->key[0], "%s", key);
        seen->line[seen->n++] = p->line;
    }
    return 0;
}

static int config_parse(const char *path, struct config *cfg, const struct config *running, char *err, size_t errlen)
{
    config_defaults(cfg);
    cfg->path = strdup(path);
    struct pctx p = {path, 0, err, errlen, running};
    char why[300];
    FILE *f = privsep_fopen(path, why, sizeof why);    /* root's file: the parent opens it for a reload */
    if (!f) {
        fail(&p, "cannot open: %s%s%s", strerror(errno), why[0] ? ": " : "", why);
        config_free(cfg);
        return -1;
    }
    struct seen_keys *seen = calloc(1, sizeof *seen);
    char line[4096];
    int rc = seen ? 0 : fail(&p, "out of memory");
    while (rc == 0 && fgets(line, sizeof line, f)) {
        p.line++;
        if (!strchr(line, '\n') && !feof(f)) {
            rc = fail(&p, "line too long");
            break;
        }
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = trim(line);
        if (!*s)
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = fail(&p, "expected 'key = value'");
            break;
        }
        *eq = '\0';
        char *key = trim(s);
        rc = check_duplicate(&p, seen, key);
        if (rc == 0)
            rc = apply_key(&p, cfg, key, trim(eq + 1));
    }
    fclose(f);
    free(seen);
    if (rc == 0)
        rc = config_validate(&p, cfg);
    if (rc != 0)
        config_free(cfg);   /* a refused config leaves nothing behind (found by fuzz_config) */
    return rc;
}

int config_load(const char *path, struct config *cfg, char *err, size_t errlen)
{
    return config_parse(path, cfg, NULL, err, errlen);
}

int config_reload(const struct config *running, struct config *out, char *err, size_t errlen)
{
    return config_parse(running->path, out, running, err, errlen);
}

static bool same_str(const char *a, const char *b) { return !strcmp(a ? a : "", b ? b : ""); }

const char *config_restart_key_changed(const struct config *a, const struct config *b)
{
    bool listen_same = a->nlisten == b->nlisten;
    for (int i = 0; listen_same && i < a->nlisten; i++)
        listen_same = !strcmp(a->listen[i].text, b->listen[i].text) &&
                      a->listen[i].implicit_tls == b->listen[i].implicit_tls &&
                      a->listen[i].submission == b->listen[i].submission && a->listen[i].proxy == b->listen[i].proxy;
    if (!listen_same)
        return "listen (or smtps_listen, submission_listen, proxy_listen)";
    const struct { const char *key; bool same; } keys[] = {
        {"spool_dir", same_str(a->spool_dir, b->spool_dir)},
        {"user", same_str(a->run_user, b->run_user) && a->allow_user_nobody == b->allow_user_nobody},
        {"control_socket", same_str(a->control_socket, b->control_socket)},
        {"http_listen", !strcmp(a->http_listen, b->http_listen) && same_str(a->http_users, b->http_users) &&
                        a->http_tls == b->http_tls},
        {"tls_cert", same_str(a->tls_cert, b->tls_cert) && same_str(a->tls_key, b->tls_key)},
        {"tls_ca_file", same_str(a->tls_ca_file, b->tls_ca_file)},
        {"dns_server", same_str(a->dns_server, b->dns_server)},
        {"dns_trust_anchor", same_str(a->dns_trust_anchor, b->dns_trust_anchor)},
        {"redis_server", same_str(a->redis_server, b->redis_server) && same_str(a->redis_password, b->redis_password) &&
                         a->redis_database == b->redis_database && a->redis_timeout_ms == b->redis_timeout_ms},
        {"log_target", same_str(a->log_target, b->log_target)},
        {"auth_backend", same_str(a->auth_backend, b->auth_backend) &&
                         same_str(a->auth_cyrus_config_dir, b->auth_cyrus_config_dir)},
        {"worker_threads", a->worker_threads == b->worker_threads},
        {"lua_threads", a->lua_threads == b->lua_threads},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (!keys[i].same)
            return keys[i].key;
    return NULL;
}

void config_free(struct config *cfg)
{
    for (size_t i = 0; i < cfg->nrelay_domains; i++)
        free(cfg->relay_domains[i]);
    free(cfg->relay_domains);
    for (size_t i = 0; i < cfg->ntransports; i++)
        free(cfg->transports[i].domain);
    free(cfg->transports);
    for (size_t i = 0; i < cfg->nplugins; i++)
        free(cfg->plugins[i]);
    free(cfg->plugins);
    for (size_t i = 0; i < cfg->nplugin_opts; i++) {
        free(cfg->plugin_opts[i].plugin);
        free(cfg->plugin_opts[i].key);
        free(cfg->plugin_opts[i].value);
    }
    free(cfg->plugin_opts);
    free(cfg->trusted);
    free(cfg->path);
    free(cfg->spool_dir);
    free(cfg->dns_server);
    free(cfg->dns_trust_anchor);
    free(cfg->redis_server);
    free(cfg->redis_password);
    free(cfg->tlsrpt_org);
    free(cfg->tlsrpt_contact);
    free(cfg->tlsrpt_from);
    free(cfg->plugin_dir);
    free(cfg->control_socket);
    free(cfg->run_user);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    free(cfg->require_tls);
    free(cfg->xclient);
    free(cfg->proxy_nets);
    free(cfg->tls_ca_file);
    free(cfg->tls_default.match);
    for (size_t i = 0; i < cfg->ntls_policies; i++) {
        free(cfg->tls_policies[i].domain);
        free(cfg->tls_policies[i].match);
    }
    free(cfg->tls_policies);
    for (size_t i = 0; i < cfg->nsasl; i++) {
        free(cfg->sasl[i].nexthop);
        free(cfg->sasl[i].user);
        free(cfg->sasl[i].password);
    }
    free(cfg->sasl);
    free(cfg->sasl_maps);
    free(cfg->transport_table);
    free(cfg->tls_policy_table);
    free(cfg->rate_limit_table);
    free(cfg->login_maps);
    free(cfg->log_target);
    free(cfg->http_users);
    for (size_t i = 0; i < cfg->nlogins; i++) {
        free(cfg->logins[i].address);
        free(cfg->logins[i].logins);
    }
    free(cfg->logins);
    free(cfg->auth_backend);
    free(cfg->auth_cyrus_config_dir);
    for (size_t i = 0; i < cfg->nrate_limits; i++)
        free(cfg->rate_limits[i].domain);
    free(cfg->rate_limits);
    memset(cfg, 0, sizeof *cfg);
}

/* "a.b.example" matches "a.b.example" and ".example"/".b.example" entries. */
static bool domain_matches(const char *pattern, const char *domain)
{
    if (pattern[0] != '.')
        return strcasecmp(pattern, domain) == 0;
    size_t pl = strlen(pattern), dl = strlen(domain);
    return dl > pl && strcasecmp(domain + dl - pl, pattern) == 0;
}

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

static void print_cidrs(FILE *out, const char *key, const struct cidr *list, size_t n)
{
    fprintf(out, "%s =", key);
    for (size_t i = 0; i < n; i++) {
        char txt[64];
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof ss);
        ss.ss_family = (sa_family_t)list[i].family;
        if (ss.ss_family == AF_INET)
            memcpy(&((struct sockaddr_in *)&ss)->sin_addr, list[i].addr, 4);
        else
            memcpy(&((struct sockaddr_in6 *)&ss)->sin6_addr, list[i].addr, 16);
        sockaddr_ip_text((struct sockaddr *)&ss, txt, sizeof txt);
        fprintf(out, "%s%s/%d", i ? ", " : " ", txt, list[i].prefix);
    }
    fprintf(out, "\n");
}

static void print_bind_address(FILE *out, const char *key, const struct sockaddr_storage *ss)
{
    char txt[64] = "";
    if (ss->ss_family)
        sockaddr_ip_text((const struct sockaddr *)ss, txt, sizeof txt);
    fprintf(out, "%s = %s\n", key, txt);
}

static const char *or_empty(const char *s) { return s ? s : ""; }

void config_print(const struct config *cfg, FILE *out)
{
    fprintf(out, "listen =");
    for (int i = 0, n = 0; i < cfg->nlisten; i++)
        if (!cfg->listen[i].implicit_tls && !cfg->listen[i].proxy && !cfg->listen[i].submission)
            fprintf(out, "%s%s", n++ ? ", " : " ", cfg->listen[i].text);
    fprintf(out, "\nsubmission_listen =");
    for (int i = 0, n = 0; i < cfg->nlisten; i++)
        if (cfg->listen[i].submission && !cfg->listen[i].implicit_tls)
            fprintf(out, "%s%s", n++ ? ", " : " ", cfg->listen[i].text);
    fprintf(out, "\nproxy_listen =");
    for (int i = 0, n = 0; i < cfg->nlisten; i++)
        if (cfg->listen[i].proxy)
            fprintf(out, "%s%s", n++ ? ", " : " ", cfg->listen[i].text);
    fprintf(out, "\nsmtps_listen =");
    for (int i = 0, n = 0; i < cfg->nlisten; i++)
        if (cfg->listen[i].implicit_tls)
            fprintf(out, "%s%s", n++ ? ", " : " ", cfg->listen[i].text);
    fprintf(out, "\nauth_backend = %s\nauth_cyrus_config_dir = %s\nauth_allow_plaintext = %s\n"
            "auth_failure_limit = %d\nauth_failure_window = %ds\nauth_failure_delay = %ds\n"
            "submission_add_headers = %s\n", cfg->auth_backend ? cfg->auth_backend : "",
            cfg->auth_cyrus_config_dir ? cfg->auth_cyrus_config_dir : "", cfg->auth_allow_plaintext ? "yes" : "no",
            cfg->auth_failure_limit, cfg->auth_failure_window, cfg->auth_failure_delay,
            cfg->submission_add_headers ? "yes" : "no");
    for (size_t i = 0; i < cfg->nlogins; i++)
        fprintf(out, "# sender login: %s by %s\n", cfg->logins[i].address, cfg->logins[i].logins);
    fprintf(out, "http_listen = %s\nhttp_users = %s\nhttp_tls = %s\n", cfg->http_listen,
            cfg->http_users ? cfg->http_users : "", cfg->http_tls ? "yes" : "no");
    fprintf(out, "hostname = %s\npostmaster_address = %s\nspool_dir = %s\n", cfg->hostname,
            cfg->postmaster_address, cfg->spool_dir);
    fprintf(out, "relay_domains =");
    for (size_t i = 0; i < cfg->nrelay_domains; i++)
        fprintf(out, "%s%s", i ? ", " : " ", cfg->relay_domains[i]);
    fprintf(out, "\n");
    print_cidrs(out, "trusted_networks", cfg->trusted, cfg->ntrusted);
    print_cidrs(out, "require_tls_networks", cfg->require_tls, cfg->nrequire_tls);
    print_cidrs(out, "xclient_networks", cfg->xclient, cfg->nxclient);
    print_cidrs(out, "proxy_networks", cfg->proxy_nets, cfg->nproxy_nets);
    fprintf(out, "allow_untrusted_routing = %s\n", cfg->allow_untrusted_routing ? "yes" : "no");
    fprintf(out, "default_transport = %s\ntransport_table = %s\n", cfg->default_transport.text,
            or_empty(cfg->transport_table));
    for (size_t i = 0; i < cfg->ntransports; i++)
        fprintf(out, "# transport: %s %s\n", cfg->transports[i].domain, cfg->transports[i].hop.text);
    fprintf(out, "dns_server = %s\ndns_trust_anchor = %s\ndns_timeout = %ds\nsmtp_port = %d\n",
            or_empty(cfg->dns_server), or_empty(cfg->dns_trust_anchor), cfg->dns_timeout_ms / 1000, cfg->smtp_port);
    fprintf(out, "redis_server = %s\nredis_password = %s\nredis_database = %d\nredis_timeout = %dms\n"
            "redis_failure = %s\n", or_empty(cfg->redis_server), cfg->redis_password ? "(set)" : "",
            cfg->redis_database, cfg->redis_timeout_ms, cfg->redis_failure_open ? "open" : "tempfail");
    fprintf(out, "retry_min = %lds\nretry_max = %lds\nmax_queue_lifetime = %lds\n", cfg->retry_min,
            cfg->retry_max, cfg->max_queue_lifetime);
    fprintf(out, "plugin_dir = %s\nplugins =", cfg->plugin_dir ? cfg->plugin_dir : "");
    for (size_t i = 0; i < cfg->nplugins; i++)
        fprintf(out, "%s%s", i ? ", " : " ", cfg->plugins[i]);
    fprintf(out, "\n");
    for (size_t i = 0; i < cfg->nplugin_opts; i++)
        fprintf(out, "%s.%s = %s\n", cfg->plugin_opts[i].plugin, cfg->plugin_opts[i].key, cfg->plugin_opts[i].value);
    fprintf(out, "tls_cert = %s\ntls_key = %s\n", cfg->tls_cert ? cfg->tls_cert : "", cfg->tls_key ? cfg->tls_key : "");
    fprintf(out, "tls_policy = %s\ntls_policy_table = %s\ntls_ca_file = %s\nmta_sts = %s\n",
            tls_level_name(cfg->tls_default.level), or_empty(cfg->tls_policy_table), or_empty(cfg->tls_ca_file),
            cfg->mta_sts ? "yes" : "no");
    fprintf(out, "tls_required_header = %s\n", cfg->tls_required_header ? "yes" : "no");
    fprintf(out, "tlsrpt = %s\ntlsrpt_interval = %lds\ntlsrpt_org = %s\ntlsrpt_contact = %s\ntlsrpt_from = %s\n",
            cfg->tlsrpt ? "yes" : "no", cfg->tlsrpt_interval, or_empty(cfg->tlsrpt_org), or_empty(cfg->tlsrpt_contact),
            or_empty(cfg->tlsrpt_from));
    for (size_t i = 0; i < cfg->ntls_policies; i++)
        fprintf(out, "# tls policy: %s %s%s%s\n", cfg->tls_policies[i].domain, tls_level_name(cfg->tls_policies[i].level),
                cfg->tls_policies[i].match ? " match=" : "", cfg->tls_policies[i].match ? cfg->tls_policies[i].match : "");
    fprintf(out, "control_socket = %s\nuser = %s\nallow_user_nobody = %s\n", or_empty(cfg->control_socket),
            cfg->run_user ? cfg->run_user : "postern", cfg->allow_user_nobody ? "yes" : "no");
    fprintf(out, "message_size_limit = %zu\nmax_recipients = %d\nmax_sessions = %d\nmax_errors = %d\n",
            cfg->message_size_limit, cfg->max_recipients, cfg->max_sessions, cfg->max_errors);
    fprintf(out, "max_sessions_per_client = %d\nclient_connect_rate = %d\n", cfg->max_sessions_per_client,
            cfg->client_connect_rate);
    fprintf(out, "pregreet_wait = %ds\npregreet_banner = %s\n", cfg->pregreet_wait, cfg->pregreet_banner ? "yes" : "no");
    fprintf(out, "smtp_timeout = %ds\ndata_timeout = %ds\nsmtp_min_data_rate = %d\n", cfg->smtp_timeout,
            cfg->data_timeout, cfg->smtp_min_data_rate);
    fprintf(out, "client_connect_timeout = %ds\nclient_timeout = %ds\nclient_bdat = %s\n",
            cfg->client_connect_timeout, cfg->client_timeout, cfg->client_bdat ? "yes" : "no");
    fprintf(out, "connection_cache_time = %ds\ndest_concurrency = %d\nworker_threads = %d\nlua_threads = %d\n",
            cfg->connection_cache_time, cfg->dest_concurrency, cfg->worker_threads, cfg->lua_threads);
    fprintf(out, "max_hop_count = %d\ndelay_warning_time = %lds\n", cfg->max_hop_count, cfg->delay_warning_time);
    fprintf(out, "smtp_mx_address_limit = %d\nsmtp_mx_session_limit = %d\n", cfg->smtp_mx_address_limit,
            cfg->smtp_mx_session_limit);
    fprintf(out, "dest_rate_limit = %d\ndest_rate_limit_table = %s\nsmtp_helo_name = %s\n", cfg->dest_rate_limit,
            or_empty(cfg->rate_limit_table), cfg->smtp_helo_name);
    print_bind_address(out, "smtp_bind_address", &cfg->smtp_bind_address);
    print_bind_address(out, "smtp_bind_address6", &cfg->smtp_bind_address6);
    fprintf(out, "smtp_sasl_password_maps = %s\nsender_login_maps = %s\n", or_empty(cfg->sasl_maps),
            or_empty(cfg->login_maps));
    for (size_t i = 0; i < cfg->nrate_limits; i++)
        fprintf(out, "# rate limit: %s %d/min\n", cfg->rate_limits[i].domain, cfg->rate_limits[i].per_minute);
    for (size_t i = 0; i < cfg->nsasl; i++)     /* never the password */
        fprintf(out, "# smtp auth: %s as %s%s\n", cfg->sasl[i].nexthop, cfg->sasl[i].user,
                cfg->sasl[i].plaintext_ok ? " (plaintext allowed)" : "");
    fprintf(out, "lua_instruction_limit = %ld\nlua_time_limit = %ds\nlua_memory_limit = %zu\nlua_body_limit = %zu\n",
            cfg->lua_instruction_limit, cfg->lua_time_limit_ms / 1000, cfg->lua_memory_limit, cfg->lua_body_limit);
    fprintf(out, "log_level = %s\nlog_target = %s\n", log_level_name((enum log_level)cfg->log_level),
            cfg->log_target ? cfg->log_target : "stderr");
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
