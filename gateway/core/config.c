/* config.c - parses the main config file and its file: lookup tables into a
 * struct config, validating every value and naming file:line on error. */
#include "config_int.h"
#include "privsep.h"
#include "log.h"
#include "smtp_parse.h"
#include <ctype.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#ifndef POSTERN_PLUGIN_DIR
#define POSTERN_PLUGIN_DIR "/usr/local/lib/postern/plugins"
#endif


const char *config_reader(void)
{
    static __thread char who[300];
    int saved = errno;        /* callers format strerror(errno) beside it */
    struct passwd *pw = getpwuid(geteuid());
    snprintf(who, sizeof who, "as user %s", pw ? pw->pw_name : "?");
    errno = saved;
    return who;
}

int fail(struct pctx *p, const char *fmt, ...)
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

/* key = value: a row of the table (config_keys.c), or "<plugin>.<key>". */
static int apply_key(struct pctx *p, struct config *cfg, const char *key, char *value)
{
    int rc = config_key_apply(p, cfg, key, value);
    if (rc <= 0)
        return rc;
    const char *dot = strchr(key, '.');
    if (dot && dot != key && dot[1])
        return add_plugin_option(p, cfg, key, value);
    return fail(p, "unknown key '%s'", key);
}

/* Every key's default comes from its row, through the same parser. */
static void config_defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    if (gethostname(cfg->hostname, sizeof cfg->hostname) < 0 || !cfg->hostname[0])
        snprintf(cfg->hostname, sizeof cfg->hostname, "localhost");
    config_keys_defaults(cfg);
}

void config_print_defaults(FILE *out)
{
    struct config d;
    config_defaults(&d);
    set_str(&d.plugin_dir, POSTERN_PLUGIN_DIR);      /* the rest that config_validate derives depends on the file */
    config_print(&d, out);
    config_free(&d);
}

const char *config_path_or_default(const char *given)
{
    const char *env = getenv("POSTERN_CONFIG");
    return given ? given : env && env[0] ? env : CONFIG_DEFAULT_PATH;
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
    for (size_t i = 0; i < cfg->event_sinks.n; i++)
        if (cfg->event_sinks.v[i].kind == SINK_REDIS && !cfg->redis_server)
            return fail(p, "event_sinks: sink %s: a redis sink needs redis_server", cfg->event_sinks.v[i].name);
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
    bool ldap_logins = cfg->user_login && !strcmp(cfg->user_login, "ldap");
    static const char *const ldap_needs[] = {"ldap_uri", "ldap_base", "ldap_filter"};
    for (size_t i = 0; ldap_logins && i < sizeof ldap_needs / sizeof *ldap_needs; i++)
        if (!config_plugin_option(cfg, "rcpt_verify", ldap_needs[i]))
            return fail(p, "user_login = ldap needs rcpt_verify.%s (the directory the users are found in)",
                        ldap_needs[i]);
    for (size_t i = 0; i < cfg->nplugin_opts; i++) {
        /* the end users' LDAP logins read rcpt_verify's LDAP settings, loaded or not */
        bool found = ldap_logins && !strcmp(cfg->plugin_opts[i].plugin, "rcpt_verify") &&
                     !strncmp(cfg->plugin_opts[i].key, "ldap_", 5);
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
        fail(&p, "cannot open: %s (%s)%s%s", strerror(errno), config_reader(), why[0] ? ": " : "", why);
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

void config_free(struct config *cfg)
{
    for (size_t i = 0; i < cfg->nrelay_domains; i++)
        free(cfg->relay_domains[i]);
    free(cfg->relay_domains);
    for (size_t i = 0; i < cfg->ntransports; i++)
        free(cfg->transports[i].domain);
    free(cfg->transports);
    egress_free(&cfg->egress);
    named_queues_free(&cfg->queues);
    backoff_free(&cfg->backoff);
    providers_free(&cfg->providers);
    event_sinks_free(&cfg->event_sinks);
    fleet_free(&cfg->fleet);
    free(cfg->fleet_token);
    for (size_t i = 0; i < cfg->nplugins; i++)
        free(cfg->plugins[i]);
    free(cfg->plugins);
    for (size_t i = 0; i < cfg->nplugin_opts; i++) {
        free(cfg->plugin_opts[i].plugin);
        free(cfg->plugin_opts[i].key);
        free(cfg->plugin_opts[i].value);
    }
    free(cfg->plugin_opts);
    config_keys_free(cfg);            /* the strings the table's rows own */
    free(cfg->trusted);
    free(cfg->path);
    free(cfg->require_tls);
    free(cfg->xclient);
    free(cfg->proxy_nets);
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
    for (size_t i = 0; i < cfg->nlogins; i++) {
        free(cfg->logins[i].address);
        free(cfg->logins[i].logins);
    }
    free(cfg->logins);
    for (size_t i = 0; i < cfg->nrate_limits; i++)
        free(cfg->rate_limits[i].domain);
    free(cfg->rate_limits);
    memset(cfg, 0, sizeof *cfg);
}

void print_cidrs(FILE *out, const char *key, const struct cidr *list, size_t n)
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

void print_bind_address(FILE *out, const char *key, const struct sockaddr_storage *ss)
{
    char txt[64] = "";
    if (ss->ss_family)
        sockaddr_ip_text((const struct sockaddr *)ss, txt, sizeof txt);
    fprintf(out, "%s = %s\n", key, txt);
}

const char *or_empty(const char *s) { return s ? s : ""; }
