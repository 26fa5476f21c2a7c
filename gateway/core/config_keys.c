/* config_keys.c - every key of postern.conf as one row of a declared table
 * (Postfix's CONFIG_*_TABLE, nginx's ngx_command_t): its name, type, field,
 * default, bounds, flags and a one-line meaning. Parsing, defaults (through
 * the same parser), printing (`postern check-config`), freeing, the reload
 * check and the documentation (`postern config-keys`, which the README's
 * key table and postern.conf(5) are made from) are loops over it. A key
 * whose value needs more than its type gets a hook in its row.
 *
 * A new key: a field in struct config, one row here, `make docs`. */
#include "config_int.h"
#include "log.h"
#include "privsep.h"
#include "netaddr.h"
#include "smtp_parse.h"
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum key_type {
    KT_INT,        /* int in [lo, hi] */
    KT_SEC,        /* int seconds ("30s", "5m"), 1s to 1d, at most hi when hi > 0 */
    KT_LONG_SEC,   /* long seconds, in [lo, hi] when hi > 0 */
    KT_MS,         /* int milliseconds, given in seconds from lo to hi */
    KT_SIZE,       /* size_t bytes ("50M"), at least lo */
    KT_BOOL,       /* yes / no */
    KT_STR,        /* char *, owned */
    KT_CHARS,      /* char[size] */
    KT_HOOK,       /* stored by its parse hook, printed by its print hook */
};

enum { KF_RESTART = 1, KF_SECRET = 2 };

struct config_key {
    const char *name;
    enum key_type type;
    size_t off, size;
    const char *def;            /* the default, as written in the file; NULL: none (zero) */
    long lo, hi;
    const char *range;          /* the bounds in words, for errors ("between 1s and 60s") */
    unsigned flags;
    /* the value is refused with this reason (NULL: fine) before it is stored */
    const char *(*check)(const char *value);
    /* instead of the type's own parsing (the type still prints, frees, compares) */
    int (*parse)(struct pctx *p, struct config *cfg, const char *key, char *value);
    /* after the key's line (KT_HOOK: instead of it): the lines check-config prints */
    void (*print)(FILE *out, const struct config *cfg, const char *key);
    bool (*same)(const struct config *a, const struct config *b);    /* KT_HOOK, KF_RESTART */
    const char *doc, *doc_default;
};

#define FIELD(f) offsetof(struct config, f), sizeof(((struct config *)0)->f)
#define NOFIELD 0, 0

/* ---- checks: a refusal in words, or NULL ------------------------------------- */

static const char *check_auth_backend(const char *v)
{
    return strcmp(v, "cyrus") && strncmp(v, "dovecot:/", 9) ? "expected cyrus or dovecot:/PATH/TO/auth-client" : NULL;
}

static const char *check_user_login(const char *v)
{
    return strcmp(v, "auth_backend") && strcmp(v, "ldap") ? "expected auth_backend or ldap" : NULL;
}

static const char *check_absolute(const char *v) { return v[0] == '/' ? NULL : "expected an absolute path"; }
static const char *check_path(const char *v) { return v[0] == '/' || v[0] == '.' ? NULL : "expected a path"; }

static const char *check_hostport(const char *v)
{
    struct sockaddr_storage ss;
    socklen_t len;
    return hostport_parse(v, &ss, &len) < 0 ? "expected ADDRESS:PORT (e.g. 127.0.0.1:9025)" : NULL;
}

static const char *check_redis_server(const char *v)
{
    return strncmp(v, "unix:/", 6) && check_hostport(v) ? "expected addr:port or unix:/PATH" : NULL;
}


static const char *check_no_space(const char *v) { return !*v || strpbrk(v, " \t") ? "bad value" : NULL; }

static const char *check_postmaster(const char *v)
{
    return smtp_check_address(v, false) ? "expected local@domain" : NULL;
}

static const char *check_helo_name(const char *v) { return *v && valid_host_name(v) ? NULL : "bad value"; }

static const char *check_report_text(const char *v)
{
    return !*v || strpbrk(v, "\"\\") ? "a non-empty text without quotes or backslashes" : NULL;
}

static const char *check_address(const char *v)
{
    return !strchr(v, '@') || strpbrk(v, " <>\t") ? "expected an address" : NULL;
}

static const char *check_one_line(const char *v) { return strpbrk(v, "\r\n") ? "one line" : NULL; }

static const char *check_digest_time(const char *v)
{
    int h, m, n = 0;
    return sscanf(v, "%2d:%2d%n", &h, &m, &n) == 2 && n == 5 && !v[5] && h >= 0 && h < 24 && m >= 0 && m < 60
               ? NULL : "expected HH:MM";
}

static const char *check_block_action(const char *v)
{
    return strcmp(v, "reject") && strcmp(v, "quarantine") ? "expected reject or quarantine" : NULL;
}

static const char *check_log_target(const char *v)
{
    return strcmp(v, "stderr") && strcmp(v, "syslog") && strncmp(v, "file:/", 6)
               ? "expected stderr, syslog or file:/PATH" : NULL;
}

/* ---- parse hooks --------------------------------------------------------------- */

/* A file this process reads itself (at start as root; libunbound and OpenSSL open it). */
static int parse_readable(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    if (access(value, R_OK) < 0)
        return fail(p, "%s: cannot read %s: %s (%s)", key, value, strerror(errno), config_reader());
    set_str(!strcmp(key, "tls_ca_file") ? &cfg->tls_ca_file : &cfg->dns_trust_anchor, value);
    return 0;
}

static int parse_listen(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    (void)key;
    /* keep smtps_listen, submission and proxy_listen entries, replace the plain ones */
    int k = 0;
    for (int i = 0; i < cfg->nlisten; i++)
        if (cfg->listen[i].implicit_tls || cfg->listen[i].proxy || cfg->listen[i].submission)
            cfg->listen[k++] = cfg->listen[i];
    cfg->nlisten = k;
    return each_item(p, value, add_listen, cfg);
}

static int parse_special_listen(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    return add_special_listeners(p, cfg, value, key[0] == 'p');
}

static int parse_submission_listen(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    (void)key;
    int before = cfg->nlisten;
    if (each_item(p, value, add_listen, cfg) < 0)
        return -1;
    for (int i = before; i < cfg->nlisten; i++)
        cfg->listen[i].submission = true;
    return 0;
}

static int parse_http_tls(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    cfg->http_tls_set = true;
    return set_bool(p, key, value, &cfg->http_tls);
}

/* file:PATH tables, stored as written and read row by row */
static int table_into(struct pctx *p, char **store, char *value, row_fn row, struct config *cfg, const char *key)
{
    if (strncmp(value, "file:", 5) != 0)
        return fail(p, "%s: expected file:PATH", key);
    set_str(store, value);
    return read_table(p, value + 5, row, cfg);   /* a root-only file comes through the parent on a reload */
}

static int parse_login_maps(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    return table_into(p, &cfg->login_maps, value, add_login, cfg, key);
}

static int parse_transport_table(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    return table_into(p, &cfg->transport_table, value, add_transport, cfg, key);
}

/* The outbound policy tables (egress, queues, backoff, providers,
 * event_sinks) have one shape: a file of "KIND REST" lines, each handed to
 * the module's X_add_line(set, kind, rest, err, errlen). This makes the
 * key's parse function and its per-line adapter. */
#define POLICY_TABLE(name, label, table_field, set_field, add_line)                                     \
    static int add_##name##_line(struct pctx *p, void *ctx, char *key, char *value)                      \
    {                                                                                                   \
        struct config *cfg = ctx;                                                                       \
        char err[300];                                                                                  \
        return add_line(&cfg->set_field, key, value, err, sizeof err) < 0 ? fail(p, label ": %s", err) : 0; \
    }                                                                                                   \
    static int parse_##name(struct pctx *p, struct config *cfg, const char *key, char *value)           \
    {                                                                                                   \
        return table_into(p, &cfg->table_field, value, add_##name##_line, cfg, key);                     \
    }

POLICY_TABLE(egress, "egress", egress_table, egress, egress_add_line)
POLICY_TABLE(queues, "queues", queues_table, queues, named_queues_add_line)
POLICY_TABLE(backoff, "backoff", backoff_table, backoff, backoff_add_line)
POLICY_TABLE(providers, "providers", providers_table, providers, providers_add_line)
POLICY_TABLE(event_sinks, "event_sinks", event_sinks_table, event_sinks, event_sinks_add_line)
POLICY_TABLE(fleet_nodes, "fleet_nodes", fleet_table, fleet, fleet_add_line)

/* fleet_token = PATH: the file is read now (it may be root's: a reload
 * reads it through the privileged parent, as tables). */
static int parse_fleet_token(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    char err[600];
    set_str(&cfg->fleet_token_file, value);
    free(cfg->fleet_token);
    if (!(cfg->fleet_token = fleet_read_token(value, err, sizeof err)))
        return fail(p, "%s: %s", key, err);
    return 0;
}

static int parse_tls_policy_table(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    return table_into(p, &cfg->tls_policy_table, value, add_tls_policy, cfg, key);
}

static int parse_sasl_maps(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    return table_into(p, &cfg->sasl_maps, value, add_sasl, cfg, key);
}

static int parse_rate_limit_table(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    return table_into(p, &cfg->rate_limit_table, value, add_rate_limit, cfg, key);
}

static int parse_relay_domains(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    (void)key;
    return list_or_table(p, cfg, value, add_relay_domain);
}

static int parse_trusted(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    (void)key;
    return list_or_table(p, cfg, value, add_trusted);
}

static int parse_require_tls(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    (void)key;
    return list_or_table(p, cfg, value, add_require_tls);
}

static int parse_xclient(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    (void)key;
    return list_or_table(p, cfg, value, add_xclient);
}

static int parse_proxy_nets(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    (void)key;
    return list_or_table(p, cfg, value, add_proxy_net);
}

static int parse_default_transport(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    char err[200];
    return nexthop_parse(value, &cfg->default_transport, err, sizeof err) < 0 ? fail(p, "%s: %s", key, err) : 0;
}

static int parse_plugins(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    (void)key;
    return each_item(p, value, add_plugin, cfg);
}

/* Read by root at start and by the privileged parent for a reload. */
static int parse_tls_file(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    char why[300];
    int fd = privsep_open(value, why, sizeof why);
    if (fd < 0)
        return fail(p, "%s: cannot read %s: %s (%s)%s%s", key, value, strerror(errno), config_reader(),
                    why[0] ? ": " : "", why);
    close(fd);
    set_str(key[4] == 'c' ? &cfg->tls_cert : &cfg->tls_key, value);
    return 0;
}

static int parse_tls_default(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    (void)key;
    return parse_tls_policy(p, value, &cfg->tls_default);
}

static int parse_bind4(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    return set_bind_address(p, key, value, AF_INET, &cfg->smtp_bind_address);
}

static int parse_bind6(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    return set_bind_address(p, key, value, AF_INET6, &cfg->smtp_bind_address6);
}

static int parse_lua_instructions(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    int v = 0;
    if (set_int(p, key, value, 1000, 2000000000, &v) < 0)
        return -1;
    cfg->lua_instruction_limit = v;
    return 0;
}

static int parse_redis_timeout(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    (void)key;
    return set_redis_timeout(p, value, &cfg->redis_timeout_ms);
}

static int parse_redis_failure(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    if (strcmp(value, "open") && strcmp(value, "tempfail"))
        return fail(p, "%s: expected open or tempfail, got '%s'", key, value);
    cfg->redis_failure_open = !strcmp(value, "open");
    return 0;
}

static int parse_log_level(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    int level = log_level_parse(value);
    if (level < 0)
        return fail(p, "%s: expected error, warning, info or debug", key);
    cfg->log_level = level;
    return 0;
}

/* ---- print hooks --------------------------------------------------------------- */

static void print_listeners(FILE *out, const struct config *cfg, const char *key)
{
    bool plain = !strcmp(key, "listen"), tls = !strcmp(key, "smtps_listen"), proxy = !strcmp(key, "proxy_listen");
    fprintf(out, "%s =", key);
    for (int i = 0, n = 0; i < cfg->nlisten; i++) {
        const struct listen_addr *l = &cfg->listen[i];
        bool mine = plain ? !l->implicit_tls && !l->proxy && !l->submission
                  : tls ? l->implicit_tls : proxy ? l->proxy : l->submission && !l->implicit_tls;
        if (mine)
            fprintf(out, "%s%s", n++ ? ", " : " ", l->text);
    }
    fprintf(out, "\n");
}

static void print_logins(FILE *out, const struct config *cfg, const char *key)
{
    (void)key;
    for (size_t i = 0; i < cfg->nlogins; i++)
        fprintf(out, "# sender login: %s by %s\n", cfg->logins[i].address, cfg->logins[i].logins);
}

static void print_relay_domains(FILE *out, const struct config *cfg, const char *key)
{
    fprintf(out, "%s =", key);
    for (size_t i = 0; i < cfg->nrelay_domains; i++)
        fprintf(out, "%s%s", i ? ", " : " ", cfg->relay_domains[i]);
    fprintf(out, "\n");
}

static void print_trusted(FILE *out, const struct config *cfg, const char *key)
{
    print_cidrs(out, key, cfg->trusted, cfg->ntrusted);
}

static void print_require_tls(FILE *out, const struct config *cfg, const char *key)
{
    print_cidrs(out, key, cfg->require_tls, cfg->nrequire_tls);
}

static void print_xclient(FILE *out, const struct config *cfg, const char *key)
{
    print_cidrs(out, key, cfg->xclient, cfg->nxclient);
}

static void print_proxy_nets(FILE *out, const struct config *cfg, const char *key)
{
    print_cidrs(out, key, cfg->proxy_nets, cfg->nproxy_nets);
}

static void print_default_transport(FILE *out, const struct config *cfg, const char *key)
{
    fprintf(out, "%s = %s\n", key, cfg->default_transport.text);
}

static void print_transports(FILE *out, const struct config *cfg, const char *key)
{
    (void)key;
    for (size_t i = 0; i < cfg->ntransports; i++)
        fprintf(out, "# transport: %s %s\n", cfg->transports[i].domain, cfg->transports[i].hop.text);
}

static void print_egress(FILE *out, const struct config *cfg, const char *key)
{
    (void)key;
    const struct egress_set *e = &cfg->egress;
    for (size_t i = 0; i < e->npools; i++) {
        fprintf(out, "# egress pool %s:", e->pools[i].name);
        for (size_t k = 0; k < e->pools[i].n; k++)
            fprintf(out, " %s=%d", e->sources[e->pools[i].src[k]].name, e->pools[i].weight[k]);
        fputc('\n', out);
    }
}

static void print_redis_timeout(FILE *out, const struct config *cfg, const char *key)
{
    fprintf(out, "%s = %dms\n", key, cfg->redis_timeout_ms);
}

static void print_redis_failure(FILE *out, const struct config *cfg, const char *key)
{
    fprintf(out, "%s = %s\n", key, cfg->redis_failure_open ? "open" : "tempfail");
}

static void print_plugins(FILE *out, const struct config *cfg, const char *key)
{
    fprintf(out, "%s =", key);
    for (size_t i = 0; i < cfg->nplugins; i++)
        fprintf(out, "%s%s", i ? ", " : " ", cfg->plugins[i]);
    fprintf(out, "\n");
    for (size_t i = 0; i < cfg->nplugin_opts; i++)
        fprintf(out, "%s.%s = %s\n", cfg->plugin_opts[i].plugin, cfg->plugin_opts[i].key, cfg->plugin_opts[i].value);
}

static void print_tls_default(FILE *out, const struct config *cfg, const char *key)
{
    fprintf(out, "%s = %s\n", key, tls_level_name(cfg->tls_default.level));
}

static void print_tls_policies(FILE *out, const struct config *cfg, const char *key)
{
    (void)key;
    for (size_t i = 0; i < cfg->ntls_policies; i++)
        fprintf(out, "# tls policy: %s %s%s%s\n", cfg->tls_policies[i].domain,
                tls_level_name(cfg->tls_policies[i].level), cfg->tls_policies[i].match ? " match=" : "",
                cfg->tls_policies[i].match ? cfg->tls_policies[i].match : "");
}

static void print_rate_limits(FILE *out, const struct config *cfg, const char *key)
{
    (void)key;
    for (size_t i = 0; i < cfg->nrate_limits; i++)
        fprintf(out, "# rate limit: %s %d/min\n", cfg->rate_limits[i].domain, cfg->rate_limits[i].per_minute);
}

static void print_sasl(FILE *out, const struct config *cfg, const char *key)
{
    (void)key;
    for (size_t i = 0; i < cfg->nsasl; i++)     /* never the password */
        fprintf(out, "# smtp auth: %s as %s%s\n", cfg->sasl[i].nexthop, cfg->sasl[i].user,
                cfg->sasl[i].plaintext_ok ? " (plaintext allowed)" : "");
}

static void print_bind4(FILE *out, const struct config *cfg, const char *key)
{
    print_bind_address(out, key, &cfg->smtp_bind_address);
}

static void print_bind6(FILE *out, const struct config *cfg, const char *key)
{
    print_bind_address(out, key, &cfg->smtp_bind_address6);
}

static void print_lua_instructions(FILE *out, const struct config *cfg, const char *key)
{
    fprintf(out, "%s = %ld\n", key, cfg->lua_instruction_limit);
}

static void print_log_level(FILE *out, const struct config *cfg, const char *key)
{
    fprintf(out, "%s = %s\n", key, log_level_name((enum log_level)cfg->log_level));
}

static bool same_listeners(const struct config *a, const struct config *b)
{
    bool same = a->nlisten == b->nlisten;
    for (int i = 0; same && i < a->nlisten; i++)
        same = !strcmp(a->listen[i].text, b->listen[i].text) && a->listen[i].implicit_tls == b->listen[i].implicit_tls &&
               a->listen[i].submission == b->listen[i].submission && a->listen[i].proxy == b->listen[i].proxy;
    return same;
}

static bool same_redis_timeout(const struct config *a, const struct config *b)
{
    return a->redis_timeout_ms == b->redis_timeout_ms;
}

/* ---- the table, in the order check-config prints it ---------------------------------- */

static const struct config_key keys[] = {
    {"listen", KT_HOOK, NOFIELD, NULL, 0, 0, NULL, KF_RESTART, NULL, parse_listen, print_listeners, same_listeners,
     "comma-separated `addr:port` (`[::1]:25` for IPv6)", "required"},
    {"submission_listen", KT_HOOK, NOFIELD, NULL, 0, 0, NULL, KF_RESTART, NULL, parse_submission_listen,
     print_listeners, same_listeners, "submission listeners (587): AUTH or `trusted_networks` before MAIL (RFC 6409)",
     "none"},
    {"proxy_listen", KT_HOOK, NOFIELD, NULL, 0, 0, NULL, KF_RESTART, NULL, parse_special_listen, print_listeners,
     same_listeners, "listeners behind a load balancer: each connection starts with a PROXY protocol v1 or v2 header",
     "none"},
    {"smtps_listen", KT_HOOK, NOFIELD, NULL, 0, 0, NULL, KF_RESTART, NULL, parse_special_listen, print_listeners,
     same_listeners, "implicit-TLS listeners, `addr:port,…`; submission rules apply (AUTH or trusted before MAIL)",
     "none"},
    {"auth_backend", KT_STR, FIELD(auth_backend), NULL, 0, 0, NULL, KF_RESTART, check_auth_backend, NULL, NULL, NULL,
     "who checks SMTP AUTH logins: `cyrus` or `dovecot:/PATH/TO/auth-client`; unset: no AUTH", "none"},
    {"auth_cyrus_config_dir", KT_STR, FIELD(auth_cyrus_config_dir), NULL, 0, 0, NULL, KF_RESTART, NULL, NULL, NULL,
     NULL, "where Cyrus SASL finds `postern.conf`", "libsasl2's default"},
    {"auth_allow_plaintext", KT_BOOL, FIELD(auth_allow_plaintext), "no", 0, 0, NULL, 0, NULL, NULL, NULL, NULL,
     "offer AUTH without TLS too", "`no`"},
    {"auth_failure_limit", KT_INT, FIELD(auth_failure_limit), "5", 1, 1000, NULL, 0, NULL, NULL, NULL, NULL,
     "failed AUTHs per client address per `auth_failure_window`, then `421`", "5"},
    {"auth_failure_window", KT_SEC, FIELD(auth_failure_window), "10m", 0, 0, NULL, 0, NULL, NULL, NULL, NULL,
     "the window `auth_failure_limit` counts in", "`10m`"},
    {"auth_failure_delay", KT_SEC, FIELD(auth_failure_delay), "1s", 0, 30, "at most 30s", 0, NULL, NULL, NULL, NULL,
     "how long a `535` is held back (at most 30 s)", "`1s`"},
    {"submission_add_headers", KT_BOOL, FIELD(submission_add_headers), "yes", 0, 0, NULL, 0, NULL, NULL, NULL, NULL,
     "add Date and Message-ID to submitted mail that lacks them", "`yes`"},
    {"sender_login_maps", KT_STR, FIELD(login_maps), NULL, 0, 0, NULL, 0, NULL, parse_login_maps, print_logins, NULL,
     "`file:PATH`, lines `address login[,login]` or `@domain login[,login]`", "none"},
    {"http_listen", KT_CHARS, FIELD(http_listen), NULL, 0, 0, NULL, KF_RESTART, check_hostport, NULL, NULL, NULL,
     "`ADDRESS:PORT` for `/metrics` (Prometheus) and the web console; keep it on loopback or a management network",
     "off"},
    {"user_login", KT_STR, FIELD(user_login), "auth_backend", 0, 0, NULL, KF_RESTART, check_user_login, NULL, NULL,
     NULL, "how end users log in to their quarantine pages (`/my/`): `auth_backend` (their mail password, checked "
     "by `auth_backend`) or `ldap` (a bind as their entry, found with `rcpt_verify.ldap_*`)", "`auth_backend`"},
    {"digest_url", KT_STR, FIELD(digest_url), NULL, 0, 0, NULL, 0, check_one_line, NULL, NULL, NULL,
     "the console's address for the links in spam quarantine digests (`https://gw.example.test:9443`); unset: no "
     "digests", "none"},
    {"digest_time", KT_STR, FIELD(digest_time), "07:00", 0, 0, NULL, 0, check_digest_time, NULL, NULL, NULL,
     "when the daily digest goes out (`HH:MM`, UTC)", "`07:00`"},
    {"digest_off_domains", KT_STR, FIELD(digest_off_domains), NULL, 0, 0, NULL, 0, check_one_line, NULL, NULL, NULL,
     "recipient domains that get no digest (a list)", "none"},
    {"digest_link_lifetime", KT_LONG_SEC, FIELD(digest_link_lifetime), "7d", 60, 90L * 86400, "1m to 90d", 0, NULL,
     NULL, NULL, NULL, "how long a digest's links work", "`7d`"},
    {"rspamd_controller", KT_STR, FIELD(rspamd_controller), NULL, 0, 0, NULL, KF_RESTART, check_one_line, NULL, NULL,
     NULL, "`http://HOST:PORT` of rspamd's controller: a user's release from the spam quarantine is learned as ham "
     "and \"this is spam\" as spam", "none"},
    {"rspamd_controller_password", KT_STR, FIELD(rspamd_controller_password), NULL, 0, 0, NULL,
     KF_RESTART | KF_SECRET, check_one_line, NULL, NULL, NULL, "the controller's password", "none"},
    {"http_users", KT_STR, FIELD(http_users), NULL, 0, 0, NULL, KF_RESTART, check_absolute, NULL, NULL, NULL,
     "the web console's users file (`postern console-user`); unset: no console", "none"},
    {"http_tls", KT_BOOL, FIELD(http_tls), NULL, 0, 0, NULL, KF_RESTART, NULL, parse_http_tls, NULL, NULL,
     "serve `http_listen` over HTTPS with `tls_cert`", "`yes` when `tls_cert` is set"},
    {"hostname", KT_CHARS, FIELD(hostname), NULL, 0, 0, NULL, 0, check_no_space, NULL, NULL, NULL,
     "banner, EHLO, Received", "system hostname"},
    {"postmaster_address", KT_CHARS, FIELD(postmaster_address), NULL, 0, 0, NULL, 0, check_postmaster, NULL, NULL,
     NULL, "where a bare `RCPT TO:<postmaster>` (RFC 5321 4.5.1, accepted from any client) is delivered; unset: "
     "`550 5.1.1`", "none"},
    {"spool_dir", KT_STR, FIELD(spool_dir), NULL, 0, 0, NULL, KF_RESTART, check_path, NULL, NULL, NULL,
     "spool root (created if missing)", "required"},
    {"relay_domains", KT_HOOK, NOFIELD, NULL, 0, 0, NULL, 0, NULL, parse_relay_domains, print_relay_domains, NULL,
     "domains accepted from anyone; list or `file:PATH`; `.dom` = subdomains", "none"},
    {"trusted_networks", KT_HOOK, NOFIELD, NULL, 0, 0, NULL, 0, NULL, parse_trusted, print_trusted, NULL,
     "CIDRs allowed to relay anywhere; list or `file:PATH`", "none"},
    {"outbound_remove_headers", KT_STR, FIELD(outbound_remove_headers), "X-Spam, X-Spam-*, Authentication-Results",
     0, 0, NULL, 0, NULL, NULL, NULL, NULL,
     "header fields removed from mail relayed out (a trusted or logged-in client, a recipient outside "
     "`relay_domains`), whoever added them; `NAME-*` matches a prefix; empty: none",
     "`X-Spam, X-Spam-*, Authentication-Results`"},
    {"require_tls_networks", KT_HOOK, NOFIELD, NULL, 0, 0, NULL, 0, NULL, parse_require_tls, print_require_tls, NULL,
     "client CIDRs that must STARTTLS before MAIL", "none"},
    {"xclient_networks", KT_HOOK, NOFIELD, NULL, 0, 0, NULL, 0, NULL, parse_xclient, print_xclient, NULL,
     "client CIDRs that may send XCLIENT (Postfix's extension: ADDR, NAME, HELO, PROTO, LOGIN, PORT). Others get "
     "`550 5.7.0`. Everything after it (relay control, plugins, Lua, SPF, the Received header) sees the presented "
     "client, and the session restarts with a new greeting", "none"},
    {"proxy_networks", KT_HOOK, NOFIELD, NULL, 0, 0, NULL, 0, NULL, parse_proxy_nets, print_proxy_nets, NULL,
     "CIDRs of the load balancers allowed to connect to `proxy_listen` (others are closed at once); list or "
     "`file:PATH`. Required with `proxy_listen`: any host reaching the port could otherwise claim any client "
     "address", "required with `proxy_listen`"},
    {"allow_untrusted_routing", KT_BOOL, FIELD(allow_untrusted_routing), "no", 0, 0, NULL, 0, NULL, NULL, NULL, NULL,
     "accept `%`, `!`, `@` in local parts and source routes from clients outside `trusted_networks`", "`no`"},
    {"default_transport", KT_HOOK, NOFIELD, NULL, 0, 0, NULL, 0, NULL, parse_default_transport,
     print_default_transport, NULL, "`mx` (DNS), `smtp:[ip]:port`, `smtp:[host]:port` (host's address), "
     "`smtp:host:port` (host's MX), or LMTP: `lmtp:unix:/PATH`, `lmtp:[host]:port` (host's address)", "required unless the table covers all"},
    {"transport_table", KT_STR, FIELD(transport_table), NULL, 0, 0, NULL, 0, NULL, parse_transport_table,
     print_transports, NULL, "`file:PATH`, lines `domain NEXTHOP` (as `default_transport`; `.dom` = subdomains)",
     "none"},
    {"egress", KT_STR, FIELD(egress_table), NULL, 0, 0, NULL, 0, NULL, parse_egress, print_egress, NULL,
     "`file:PATH`: outbound source addresses and HELO names (see Outbound, Egress sources), lines `source NAME "
     "ADDRESS[,ADDRESS] HELO`, `pool NAME SOURCE[=WEIGHT] ...`, `from DOMAIN POOL`, `to DOMAIN POOL`",
     "none: `smtp_bind_address`"},
    {"queues", KT_STR, FIELD(queues_table), NULL, 0, 0, NULL, 0, NULL, parse_queues, NULL, NULL,
     "`file:PATH`: named queues with priorities (see Outbound, Named queues), lines `queue NAME priority=0-9 "
     "[concurrency=N] [rate=N]`, `from DOMAIN QUEUE`, `to DOMAIN QUEUE`", "none: every message priority 0"},
    {"backoff", KT_STR, FIELD(backoff_table), NULL, 0, 0, NULL, 0, NULL, parse_backoff, NULL, NULL,
     "`file:PATH`: automatic back-off on next hops' replies (see Outbound, Back-off), lines `suspend|suspend-source|"
     "suspend-provider DURATION REGEX`, `throttle|throttle-provider RATE DURATION REGEX`, `bounce REGEX`, `reroute "
     "NEXTHOP REGEX`, each with an optional `provider=NAME` before REGEX", "none"},
    {"providers", KT_STR, FIELD(providers_table), NULL, 0, 0, NULL, 0, NULL, parse_providers, NULL, NULL,
     "`file:PATH`: limits shared by the domains an MX provider hosts (see Outbound, Shaping by provider), lines "
     "`provider NAME concurrency=N [rate=M] PATTERN...` (`*.google.com`), per egress source", "none"},
    {"event_sinks", KT_STR, FIELD(event_sinks_table), NULL, 0, 0, NULL, KF_RESTART, NULL, parse_event_sinks, NULL, NULL,
     "`file:PATH`: where the event stream goes (see Events), lines `webhook NAME URL [secret=FILE] [ca=FILE] "
     "[types=T,...] [batch=N] [timeout=D]`, `redis NAME [stream=KEY] [maxlen=N] [types=T,...] [batch=N]` and `amqp "
     "NAME amqp://USER:PASSWORD@HOST[:PORT][/VHOST] [exchange=X] [routing_key=K] [types=T,...] [batch=N] [timeout=D] [format=each|ndjson]`",
     "none: no event stream"},
    {"fleet_nodes", KT_STR, FIELD(fleet_table), NULL, 0, 0, NULL, KF_RESTART, NULL, parse_fleet_nodes, NULL, NULL,
     "`file:PATH`: the other nodes `postern track --fleet` and the console's tracking page ask (see Events, Fleet "
     "views), lines `node NAME https://HOST:PORT token=FILE [ca=FILE]`", "none"},
    {"fleet_token", KT_STR, FIELD(fleet_token_file), NULL, 0, 0, NULL, KF_RESTART | KF_SECRET, check_absolute,
     parse_fleet_token, NULL, NULL, "a file with the token other nodes present to this node's `/api/track` "
     "(`Authorization: Bearer`; read-only, tracking only)", "none: no node may ask"},
    {"events_outbox_max_size", KT_SIZE, FIELD(events_outbox_max_size), "256M", 1048576, 0, "at least 1M", KF_RESTART,
     NULL, NULL, NULL, NULL, "the event outbox (SPOOL/outbox) at most; over it the oldest events go, counted", "`256M`"},
    {"events_outbox_max_age", KT_LONG_SEC, FIELD(events_outbox_max_age), "7d", 60, 365L * 86400, "1m to 1 year",
     KF_RESTART, NULL, NULL, NULL, NULL, "events older than this leave the outbox, sent or not (counted)", "`7d`"},
    {"dns_server", KT_STR, FIELD(dns_server), NULL, 0, 0, NULL, KF_RESTART, check_hostport, NULL, NULL, NULL,
     "`addr:port` to send every DNS query to (else /etc/resolv.conf); with it, libunbound's built-in local zones "
     "(RFC 6761 names, RFC 6303 reverse zones of private and documentation ranges) go to that server too", "system"},
    {"dns_trust_anchor", KT_STR, FIELD(dns_trust_anchor), NULL, 0, 0, NULL, KF_RESTART, NULL, parse_readable, NULL,
     NULL, "file of DS or DNSKEY records posternd's resolver validates DNSSEC from (DANE); without it every answer "
     "is insecure", "none"},
    {"dns_timeout", KT_MS, FIELD(dns_timeout_ms), "5s", 1, 60, "between 1s and 60s", 0, NULL, NULL, NULL, NULL,
     "how long a plugin's DNS lookup waits for its answer (1–60 s); unanswered is a temporary failure of that "
     "lookup only", "`5s`"},
    {"smtp_port", KT_INT, FIELD(smtp_port), "25", 1, 65535, NULL, 0, NULL, NULL, NULL, NULL,
     "port for MX deliveries", "25"},
    {"redis_server", KT_STR, FIELD(redis_server), NULL, 0, 0, NULL, KF_RESTART, check_redis_server, NULL, NULL, NULL,
     "`host:port` or `unix:/PATH` of the Redis that holds policy state shared by several nodes (Lua "
     "`postern.incr/get/set`, `greylist.store = shared`, `client_connect_rate`, `dest_rate_limit`, the allow and block "
     "lists, digest link nonces); unset: each node "
     "keeps its own", "none"},
    {"redis_password", KT_STR, FIELD(redis_password), NULL, 0, 0, NULL, KF_RESTART | KF_SECRET, check_one_line, NULL,
     NULL, NULL, "AUTH password for Redis (keep the config file unreadable to others)", "none"},
    {"redis_database", KT_INT, FIELD(redis_database), "0", 0, 1000, NULL, KF_RESTART, NULL, NULL, NULL, NULL,
     "the SELECTed Redis database", "`0`"},
    {"redis_timeout", KT_HOOK, NOFIELD, "200ms", 0, 0, NULL, KF_RESTART, NULL, parse_redis_timeout,
     print_redis_timeout, same_redis_timeout, "how long a request waits for Redis (10 ms–10 s); later is a failure, "
     "and the connection is made again", "`200ms`"},
    {"redis_failure", KT_HOOK, NOFIELD, "open", 0, 0, NULL, 0, NULL, parse_redis_failure, print_redis_failure, NULL,
     "when Redis does not answer: `open` (each node answers from its own state) or `tempfail` (what asked fails: "
     "the message gets a 4xx)", "`open`"},
    {"retry_min", KT_LONG_SEC, FIELD(retry_min), "5m", 0, 0, NULL, 0, NULL, NULL, NULL, NULL,
     "the first retry's delay (doubling up to `retry_max`, with jitter)", "`5m`"},
    {"retry_max", KT_LONG_SEC, FIELD(retry_max), "4h", 0, 0, NULL, 0, NULL, NULL, NULL, NULL,
     "the longest delay between retries", "`4h`"},
    {"spam_quarantine_lifetime", KT_LONG_SEC, FIELD(spam_quarantine_lifetime), "14d", 1, 3650L * 86400,
     "1s to 10 years", 0, NULL, NULL, NULL, NULL,
     "a recipient's copy in the spam quarantine is removed this long after arrival, with no notice", "`14d`"},
    {"max_queue_lifetime", KT_LONG_SEC, FIELD(max_queue_lifetime), "5d", 0, 0, NULL, 0, NULL, NULL, NULL, NULL,
     "how long a message is retried before it bounces", "`5d`"},
    {"queue_read_before_ready", KT_INT, FIELD(queue_read_before_ready), "20000", 0, 100000000, NULL, KF_RESTART,
     NULL, NULL, NULL, NULL, "a queue of up to this many messages is read before posternd takes mail at start; a "
     "larger one is read after, while mail is taken and delivered", "20000"},
    {"queue_max_messages", KT_INT, FIELD(queue_max_messages), "1000000", 0, 100000000, NULL, 0, NULL, NULL, NULL,
     NULL, "while the queue holds this many messages, MAIL gets `452 4.3.1` (senders retry later; notices "
     "posternd makes itself are still queued). Bounds memory: about 0.6 KiB per queued message. 0 = no bound",
     "1000000"},
    {"queue_minfree", KT_SIZE, FIELD(queue_minfree), "0", 0, 0, NULL, 0, NULL, NULL, NULL, NULL,
     "free bytes the spool's file system keeps: MAIL gets `452 4.3.1` when a message of its `SIZE=` would leave "
     "less, or would take over two thirds of what is free (as Postfix's `queue_minfree`)", "0"},
    {"plugin_dir", KT_STR, FIELD(plugin_dir), NULL, 0, 0, NULL, 0, NULL, NULL, NULL, NULL,
     "where the plugins' `.so` files are", "`PREFIX/lib/postern/plugins`"},
    {"plugins", KT_HOOK, NOFIELD, NULL, 0, 0, NULL, 0, NULL, parse_plugins, print_plugins, NULL,
     "the chain, in order: plugin names and `lua:/PATH` scripts", "none"},
    {"tls_cert", KT_STR, FIELD(tls_cert), NULL, 0, 0, NULL, KF_RESTART, NULL, parse_tls_file, NULL, NULL,
     "inbound STARTTLS certificate chain", "none"},
    {"tls_key", KT_STR, FIELD(tls_key), NULL, 0, 0, NULL, KF_RESTART, NULL, parse_tls_file, NULL, NULL,
     "inbound STARTTLS key (root's, 0600: read by root at start and by the privileged parent)", "none"},
    {"tls_policy", KT_HOOK, NOFIELD, "may", 0, 0, NULL, 0, NULL, parse_tls_default, print_tls_default, NULL,
     "outbound TLS level: `none`, `may`, `encrypt`, `verify`, `dane`, `dane-only`", "`may`"},
    {"tls_policy_table", KT_STR, FIELD(tls_policy_table), NULL, 0, 0, NULL, 0, NULL, parse_tls_policy_table,
     print_tls_policies, NULL, "`file:PATH`, lines `domain LEVEL [match=…]`: the level per recipient domain", "none"},
    {"tls_ca_file", KT_STR, FIELD(tls_ca_file), NULL, 0, 0, NULL, KF_RESTART, NULL, parse_readable, NULL, NULL,
     "CAs trusted for outbound `verify`", "system"},
    {"mta_sts", KT_BOOL, FIELD(mta_sts), "yes", 0, 0, NULL, 0, NULL, NULL, NULL, NULL,
     "look up and apply MTA-STS for MX-routed domains", "`yes`"},
    {"tls_required_header", KT_BOOL, FIELD(tls_required_header), "yes", 0, 0, NULL, 0, NULL, NULL, NULL, NULL,
     "honour `TLS-Required: No` (RFC 8689 5): DANE and MTA-STS do not bind for that message", "`yes`"},
    {"tlsrpt", KT_BOOL, FIELD(tlsrpt), "no", 0, 0, NULL, 0, NULL, NULL, NULL, NULL,
     "count TLS results under DANE and MTA-STS and mail RFC 8460 reports to domains that ask (`_smtp._tls`, "
     "`mailto:`)", "`no`"},
    {"tlsrpt_interval", KT_LONG_SEC, FIELD(tlsrpt_interval), "1d", 1, 7 * 86400, "between 1s and 7d", 0, NULL, NULL,
     NULL, NULL, "how often TLS reports go out", "`1d`"},
    {"tlsrpt_org", KT_STR, FIELD(tlsrpt_org), NULL, 0, 0, NULL, 0, check_report_text, NULL, NULL, NULL,
     "the TLS report's organization-name", "hostname"},
    {"tlsrpt_contact", KT_STR, FIELD(tlsrpt_contact), NULL, 0, 0, NULL, 0, check_report_text, NULL, NULL, NULL,
     "the TLS report's contact-info", "`postmaster@HOSTNAME`"},
    {"tlsrpt_from", KT_STR, FIELD(tlsrpt_from), NULL, 0, 0, NULL, 0, check_address, NULL, NULL, NULL,
     "the TLS report's From (also its envelope sender)", "`postmaster@HOSTNAME`"},
    {"control_socket", KT_STR, FIELD(control_socket), NULL, 0, 0, NULL, KF_RESTART, NULL, NULL, NULL, NULL,
     "unix socket for `postern queue …`", "`SPOOL/control.sock`"},
    {"user", KT_STR, FIELD(run_user), "postern", 0, 0, NULL, KF_RESTART, NULL, NULL, NULL, NULL,
     "user to run as when started as root (`nobody` only with `allow_user_nobody = yes`)", "`postern`"},
    {"allow_user_nobody", KT_BOOL, FIELD(allow_user_nobody), "no", 0, 0, NULL, KF_RESTART, NULL, NULL, NULL, NULL,
     "allow `user = nobody` (shared with other services, who could then read the spool)", "`no`"},
    {"message_size_limit", KT_SIZE, FIELD(message_size_limit), "50M", 1024, 0, "at least 1k", 0, NULL, NULL, NULL,
     NULL, "bytes (`k`/`M`/`G`)", "`50M`"},
    {"max_recipients", KT_INT, FIELD(max_recipients), "1000", 1, 100000, NULL, 0, NULL, NULL, NULL, NULL,
     "recipients per message", "1000"},
    {"max_sessions", KT_INT, FIELD(max_sessions), "10000", 1, 1000000, NULL, 0, NULL, NULL, NULL, NULL,
     "sessions open at once", "10000"},
    {"max_errors", KT_INT, FIELD(max_errors), "20", 1, 1000, NULL, 0, NULL, NULL, NULL, NULL,
     "errors per session before it is closed", "20"},
    {"max_sessions_per_client", KT_INT, FIELD(max_sessions_per_client), "50", 0, 1000000, NULL, 0, NULL, NULL, NULL,
     NULL, "concurrent sessions from one client address; more get `421 4.7.0` and are closed (`trusted_networks` "
     "exempt)", "50"},
    {"client_connect_rate", KT_INT, FIELD(client_connect_rate), "0", 0, 1000000, NULL, 0, NULL, NULL, NULL, NULL,
     "new sessions per 60 s from one client address; more get `421 4.7.0` (`trusted_networks` exempt; 0 = no limit)",
     "0"},
    {"pregreet_wait", KT_SEC, FIELD(pregreet_wait), NULL, 0, 60, "at most 60s", 0, NULL, NULL, NULL, NULL,
     "the pregreet test (postscreen's greet wait): the final `220` goes out this long after connect. A client that "
     "talks before it gets `554 5.5.1 Protocol error: talking before the greeting` and is disconnected (logged as "
     "`PREGREET`). Trusted networks, `xclient_networks` and implicit TLS do not wait", "`0` (off), at most `60s`"},
    {"pregreet_banner", KT_BOOL, FIELD(pregreet_banner), "yes", 0, 0, NULL, 0, NULL, NULL, NULL, NULL,
     "during the wait, send the first line of a multi-line greeting (`220-host ESMTP Postern`) at once, which "
     "catches bots that talk as soon as they see a `220`", "`yes`"},
    {"smtp_timeout", KT_SEC, FIELD(smtp_timeout), "300s", 0, 0, NULL, 0, NULL, NULL, NULL, NULL,
     "time allowed for each whole command line (bytes dribbled in do not extend it)", "`300s`"},
    {"data_timeout", KT_SEC, FIELD(data_timeout), "600s", 0, 0, NULL, 0, NULL, NULL, NULL, NULL,
     "the longest a DATA section may take; each N bytes received add N/`smtp_min_data_rate` seconds to its "
     "deadline, capped at this from now", "`600s`"},
    {"smtp_min_data_rate", KT_INT, FIELD(smtp_min_data_rate), "500", 1, 1000000000, NULL, 0, NULL, NULL, NULL, NULL,
     "bytes/s in DATA that keep extending its deadline, so a trickle (slowloris) times out and a slow honest link "
     "does not", "500"},
    {"client_connect_timeout", KT_SEC, FIELD(client_connect_timeout), "30s", 0, 0, NULL, 0, NULL, NULL, NULL, NULL,
     "outbound connect", "`30s`"},
    {"client_timeout", KT_SEC, FIELD(client_timeout), "300s", 0, 0, NULL, 0, NULL, NULL, NULL, NULL,
     "outbound, per reply", "`300s`"},
    {"client_bdat", KT_BOOL, FIELD(client_bdat), "yes", 0, 0, NULL, 0, NULL, NULL, NULL, NULL,
     "outbound: send with BDAT when the next hop offers CHUNKING (`no`: always DATA, except BINARYMIME, which "
     "needs BDAT)", "`yes`"},
    {"tls_session_cache", KT_INT, FIELD(tls_session_cache), "1024", 0, 100000, NULL, KF_RESTART, NULL, NULL, NULL,
     NULL, "outbound TLS sessions kept for resumption, one per next hop and TLS policy (0: none; never for DANE)",
     "1024"},
    {"connection_cache_time", KT_SEC, FIELD(connection_cache_time), "2s", 0, 0, NULL, 0, NULL, NULL, NULL, NULL,
     "how long an idle outbound connection is kept for reuse", "`2s`"},
    {"dest_concurrency", KT_INT, FIELD(dest_concurrency), "20", 1, 1000, NULL, 0, NULL, NULL, NULL, NULL,
     "connections per next hop", "20"},
    {"worker_threads", KT_INT, FIELD(worker_threads), "4", 1, 64, NULL, KF_RESTART, NULL, NULL, NULL, NULL,
     "threads for fsync and other blocking work", "4"},
    {"lua_threads", KT_INT, FIELD(lua_threads), "2", 1, 32, NULL, KF_RESTART, NULL, NULL, NULL, NULL,
     "threads Lua handlers run on (1–32; see Lua policies, Threads)", "2"},
    {"lua_loop_first", KT_BOOL, FIELD(lua_loop_first), "yes", 0, 0, NULL, KF_RESTART, NULL, NULL, NULL, NULL,
     "the network loop runs a Lua call's first steps itself, and hands it to a Lua thread only before "
     "anything that can take long (see Lua policies, Threads)", "yes"},
    {"max_hop_count", KT_INT, FIELD(max_hop_count), "50", 1, 1000, NULL, 0, NULL, NULL, NULL, NULL,
     "more Received: headers than this = mail loop, bounced", "50"},
    {"smtp_mx_address_limit", KT_INT, FIELD(smtp_mx_address_limit), "5", 0, 1000, NULL, 0, NULL, NULL, NULL, NULL,
     "MX server addresses tried in one delivery attempt, the rest dropped (Postfix's name and default; `0`: all)",
     "5"},
    {"smtp_mx_session_limit", KT_INT, FIELD(smtp_mx_session_limit), "2", 0, 1000, NULL, 0, NULL, NULL, NULL, NULL,
     "sessions that got past EHLO (and TLS) in one delivery attempt before the rest of the recipients wait for the "
     "next retry (Postfix's; `0`: no limit)", "2"},
    {"delay_warning_time", KT_LONG_SEC, FIELD(delay_warning_time), NULL, 0, 0, NULL, 0, NULL, NULL, NULL, NULL,
     "send one \"delayed\" DSN after this long (0 = never)", "0"},
    {"dest_rate_limit", KT_INT, FIELD(dest_rate_limit), "0", 0, 60000, NULL, 0, NULL, NULL, NULL, NULL,
     "new messages per minute per recipient domain (0 = no limit)", "0"},
    {"dest_rate_limit_table", KT_STR, FIELD(rate_limit_table), NULL, 0, 0, NULL, 0, NULL, parse_rate_limit_table,
     print_rate_limits, NULL, "`file:PATH` with `domain N` lines: `dest_rate_limit` per domain", "none"},
    {"smtp_helo_name", KT_CHARS, FIELD(smtp_helo_name), NULL, 0, 0, NULL, 0, check_helo_name, NULL, NULL, NULL,
     "outbound EHLO/HELO name", "`hostname`"},
    {"smtp_bind_address", KT_HOOK, NOFIELD, NULL, 0, 0, NULL, 0, NULL, parse_bind4, print_bind4, NULL,
     "outbound source address (IPv4)", "any"},
    {"smtp_bind_address6", KT_HOOK, NOFIELD, NULL, 0, 0, NULL, 0, NULL, parse_bind6, print_bind6, NULL,
     "outbound source address (IPv6)", "any"},
    {"smtp_sasl_password_maps", KT_STR, FIELD(sasl_maps), NULL, 0, 0, NULL, 0, NULL, parse_sasl_maps, print_sasl, NULL,
     "`file:PATH`, lines `nexthop user:password [plaintext]`: AUTH to that next hop", "none"},
    {"lua_instruction_limit", KT_HOOK, NOFIELD, "10000000", 0, 0, NULL, 0, NULL, parse_lua_instructions,
     print_lua_instructions, NULL, "Lua VM instructions per handler call", "10000000"},
    {"lua_time_limit", KT_MS, FIELD(lua_time_limit_ms), "1s", 1, 600, "between 1s and 10m", 0, NULL, NULL, NULL, NULL,
     "time per handler call", "`1s`"},
    {"lua_memory_limit", KT_SIZE, FIELD(lua_memory_limit), "64M", 1024 * 1024, 0, "at least 1M", 0, NULL, NULL, NULL,
     NULL, "memory per Lua state", "`64M`"},
    {"lua_body_limit", KT_SIZE, FIELD(lua_body_limit), "1M", 0, 0, NULL, 0, NULL, NULL, NULL, NULL,
     "`tx:body()` returns bodies up to this size", "`1M`"},
    {"lists_db", KT_STR, FIELD(lists_db), NULL, 0, 0, NULL, KF_RESTART, NULL, NULL, NULL, NULL,
     "the personal allow and block lists (SQLite), written by the daemon's user", "`SPOOL/lists.db`"},
    {"block_action", KT_STR, FIELD(block_action), "reject", 0, 0, NULL, 0, check_block_action, NULL, NULL, NULL,
     "a sender on a recipient's block list: `reject` (550 at RCPT) or `quarantine` (the spam quarantine, for that "
     "recipient)", "`reject`"},
    {"tracking", KT_BOOL, FIELD(tracking), "yes", 0, 0, NULL, KF_RESTART, NULL, NULL, NULL, NULL,
     "record every message's and recipient's events for `postern track` and the console's tracking page", "`yes`"},
    {"tracking_db", KT_STR, FIELD(tracking_db), NULL, 0, 0, NULL, KF_RESTART, NULL, NULL, NULL, NULL,
     "the tracking store (SQLite), written by the daemon's user", "`SPOOL/tracking.db`"},
    {"tracking_retention", KT_LONG_SEC, FIELD(tracking_retention), "30d", 60, 3650L * 86400, "1m to 10 years",
     KF_RESTART, NULL, NULL, NULL, NULL, "tracking events older than this are removed", "`30d`"},
    {"tracking_max_size", KT_SIZE, FIELD(tracking_max_size), "1G", 1048576, 0, "at least 1M", KF_RESTART, NULL,
     NULL, NULL, NULL, "over this the oldest tenth of the tracking events is removed", "`1G`"},
    {"log_level", KT_HOOK, NOFIELD, "info", 0, 0, NULL, 0, NULL, parse_log_level, print_log_level, NULL,
     "`error` `warning` `info` `debug`", "`info`"},
    {"log_target", KT_STR, FIELD(log_target), "stderr", 0, 0, NULL, KF_RESTART, check_log_target, NULL, NULL, NULL,
     "`stderr`, `syslog` (facility mail) or `file:/PATH` (reopened on SIGUSR1)", "`stderr`"},
};

#define NKEYS (sizeof keys / sizeof *keys)
_Static_assert(NKEYS <= CONFIG_MAX_KEYS, "raise CONFIG_MAX_KEYS");

static void *field_of(struct config *cfg, const struct config_key *k) { return (char *)cfg + k->off; }
static const void *cfield_of(const struct config *cfg, const struct config_key *k) { return (const char *)cfg + k->off; }

static const struct config_key *key_row(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (!strcmp(keys[i].name, name))
            return &keys[i];
    return NULL;
}

/* The value through the row's type (or its hook). */
static int apply_row(struct pctx *p, struct config *cfg, const struct config_key *k, char *value)
{
    const char *why = k->check ? k->check(value) : NULL;
    if (why)
        return fail(p, "%s: %s, got '%s'", k->name, why, value);
    if (k->parse)
        return k->parse(p, cfg, k->name, value);
    void *f = field_of(cfg, k);
    switch (k->type) {
    case KT_INT:
        return set_int(p, k->name, value, (int)k->lo, (int)k->hi, f);
    case KT_SEC:
        if (set_duration_int(p, k->name, value, f) < 0)
            return -1;
        return k->hi && *(int *)f > k->hi ? fail(p, "%s: %s", k->name, k->range) : 0;
    case KT_LONG_SEC:
        if (set_duration(p, k->name, value, f) < 0)
            return -1;
        return k->hi && (*(long *)f < k->lo || *(long *)f > k->hi)
                   ? fail(p, "%s: %s, got '%s'", k->name, k->range, value) : 0;
    case KT_MS:
        return set_duration_ms(p, k->name, value, k->lo, k->hi, k->range, f);
    case KT_SIZE:
        if (parse_size(value, f) < 0 || *(size_t *)f < (size_t)k->lo)
            return fail(p, "%s: bad size '%s'%s%s%s", k->name, value, k->range ? " (" : "", k->range ? k->range : "",
                        k->range ? ")" : "");
        return 0;
    case KT_BOOL:
        return set_bool(p, k->name, value, f);
    case KT_STR:
        set_str(f, value);
        return 0;
    case KT_CHARS:
        if (strlen(value) >= k->size)
            return fail(p, "%s: bad value '%s' (too long)", k->name, value);
        memcpy(f, value, strlen(value) + 1);
        return 0;
    case KT_HOOK:
        break;
    }
    return fail(p, "%s: cannot be set", k->name);
}

int config_key_apply(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    const struct config_key *k = key_row(key);
    if (k)
        cfg->given[k - keys] = true;
    return k ? apply_row(p, cfg, k, value) : 1;
}

void config_keys_defaults(struct config *cfg)
{
    char err[300];
    struct pctx p = {"(defaults)", 0, err, sizeof err, NULL};
    for (size_t i = 0; i < NKEYS; i++) {
        if (!keys[i].def)
            continue;
        char value[64];
        snprintf(value, sizeof value, "%s", keys[i].def);
        if (apply_row(&p, cfg, &keys[i], value) < 0)
            log_error("config: default of %s: %s", keys[i].name, err);   /* a bug in the table */
    }
}

void config_keys_free(struct config *cfg)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (keys[i].type == KT_STR) {
            char **s = field_of(cfg, &keys[i]);
            free(*s);
            *s = NULL;
        }
}

/* One row as "key = value" line(s). */
static void print_row(const struct config *cfg, const struct config_key *k, FILE *out)
{
    const void *f = cfield_of(cfg, k);
    switch (k->type) {
    case KT_INT: fprintf(out, "%s = %d\n", k->name, *(const int *)f); break;
    case KT_SEC: fprintf(out, "%s = %ds\n", k->name, *(const int *)f); break;
    case KT_LONG_SEC: fprintf(out, "%s = %lds\n", k->name, *(const long *)f); break;
    case KT_MS: fprintf(out, "%s = %ds\n", k->name, *(const int *)f / 1000); break;
    case KT_SIZE: fprintf(out, "%s = %zu\n", k->name, *(const size_t *)f); break;
    case KT_BOOL: fprintf(out, "%s = %s\n", k->name, *(const bool *)f ? "yes" : "no"); break;
    case KT_STR: {
        const char *v = *(char *const *)f;
        fprintf(out, "%s = %s\n", k->name, !v ? "" : k->flags & KF_SECRET ? "(set)" : v);
        break;
    }
    case KT_CHARS: fprintf(out, "%s = %s\n", k->name, (const char *)f); break;
    case KT_HOOK: break;
    }
    if (k->print)
        k->print(out, cfg, k->name);
}

void config_print(const struct config *cfg, FILE *out)
{
    for (size_t i = 0; i < NKEYS; i++)
        print_row(cfg, &keys[i], out);
}

void config_print_given(const struct config *cfg, FILE *out)
{
    for (size_t i = 0; i < NKEYS; i++)      /* plugins prints the plugin options too */
        if (cfg->given[i])
            print_row(cfg, &keys[i], out);
}

static bool same_value(const struct config_key *k, const struct config *a, const struct config *b)
{
    if (k->same)
        return k->same(a, b);
    const void *x = cfield_of(a, k), *y = cfield_of(b, k);
    switch (k->type) {
    case KT_STR: {
        const char *s = *(char *const *)x, *t = *(char *const *)y;
        return !strcmp(s ? s : "", t ? t : "");
    }
    case KT_CHARS: return !strcmp(x, y);
    case KT_HOOK: return true;
    default: return !memcmp(x, y, k->size);
    }
}

const char *config_restart_key_changed(const struct config *a, const struct config *b)
{
    for (size_t i = 0; i < NKEYS; i++)
        if ((keys[i].flags & KF_RESTART) && !same_value(&keys[i], a, b))
            return keys[i].name;
    return NULL;
}

/* Markdown rows for the README's key table (postern.conf(5) is made from it). */
void config_keys_document(FILE *out)
{
    fprintf(out, "| key | meaning | default |\n|---|---|---|\n");
    for (size_t i = 0; i < NKEYS; i++)
        fprintf(out, "| `%s` | %s%s | %s |\n", keys[i].name, keys[i].doc,
                keys[i].flags & KF_RESTART ? " (restart to change)" : "", keys[i].doc_default);
    fprintf(out, "| `<plugin>.<key>` | an option handed to that plugin's `init` | |\n");
}
