/* config.h - the main configuration file and its lookup tables.
 * Format: "key = value" lines, '#' comments. Unknown keys and bad values are
 * errors that name file:line. */
#ifndef POSTERN_CONFIG_H
#define POSTERN_CONFIG_H
#include "netaddr.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>
#include "egress.h"
#include "named_queues.h"
#include "backoff_rules.h"
#include "providers.h"
#include "event_sinks.h"
#include "fleet.h"

#define CONFIG_MAX_LISTEN 16

/* Where to hand mail for a recipient domain (Postfix's bracket meaning):
 * "mx" (the recipient domain's MX), "smtp:[ip]:port" (that address),
 * "smtp:[host]:port" (host's A/AAAA, no MX), "smtp:host:port" (host's MX);
 * LMTP (RFC 2033): "lmtp:unix:/PATH", "lmtp:[host]:port" or
 * "lmtp:host:port" (both host's A/AAAA: LMTP never follows MX records). */
struct nexthop {
    bool mx;                       /* route by the recipient domain's MX records */
    bool lmtp;                     /* speak LMTP (LHLO, a reply per recipient after the data) */
    char text[160];                /* as written, e.g. "smtp:[127.0.0.1]:2526" or "mx" */
    char host[128];                /* a host name to look up, "" for an address */
    bool lookup_mx;                /* host without brackets: its MX records */
    int port;
    struct sockaddr_storage addr;  /* an address next hop */
    socklen_t addrlen;
};

/* smtp_sasl_password_maps: credentials for a next hop (AUTH PLAIN/LOGIN). */
struct sasl_entry {
    char *nexthop;                 /* "[host]:port", a host name or a domain */
    char *user, *password;
    bool plaintext_ok;             /* "plaintext": also without TLS */
};

/* sender_login_maps: which logins may use a sender address. */
struct login_entry {
    char *address;                 /* "user@dom", or "@dom" for the whole domain */
    char *logins;                  /* "alice,bob" */
};

/* dest_rate_limit_table: messages per minute for one recipient domain. */
struct rate_entry {
    char *domain;                  /* "example.test" or ".example.test" */
    int per_minute;
};

/* Outbound TLS for a recipient domain (Postfix's smtp_tls_policy_maps
 * levels). DANE and DANE_ONLY are policies resolved per MX host (dane.c):
 * a host with usable DNSSEC-validated TLSA records gets DANE (TLS
 * authenticated by those records), another gets `fallback` under DANE
 * and is not used under DANE_ONLY. */
enum tls_level { TLS_NONE, TLS_MAY, TLS_ENCRYPT, TLS_VERIFY, TLS_DANE, TLS_DANE_ONLY };
#define TLS_LEVELS 6
struct tls_policy {
    char *domain;                  /* "example.test", ".example.test", or NULL for the default */
    enum tls_level level;
    char *match;                   /* verify: names the certificate must carry, ':'-separated */
    enum tls_level fallback;       /* DANE: the level of a host without TLSA records (MAY) */
};

struct transport_entry {
    char *domain;                  /* "example.test" exact, ".example.test" subdomains */
    struct nexthop hop;
};

/* "<plugin>.<key> = value" from the main file, handed to that plugin's init. */
struct plugin_option {
    char *plugin, *key, *value;
    int line;
};

struct listen_addr {
    bool implicit_tls;             /* smtps_listen: TLS from the first byte (RFC 8314) */
    bool submission;               /* submission_listen or smtps_listen: AUTH (or trusted) before MAIL */
    bool proxy;                    /* proxy_listen: a PROXY protocol header comes first */
    char text[64];
    struct sockaddr_storage addr;
    socklen_t addrlen;
};

#define CONFIG_MAX_KEYS 192    /* rows of the key table (checked at compile time) */
#define CONFIG_DEFAULT_PATH "/etc/postern/postern.conf"

struct config {
    char *path;
    struct listen_addr listen[CONFIG_MAX_LISTEN];
    int nlisten;
    char hostname[256];
    char http_listen[64];          /* "127.0.0.1:9025": /metrics; "" = off */
    char *http_users;              /* the console's users file; NULL = no console */
    bool http_tls;                 /* serve HTTPS with tls_cert (default: when tls_cert is set) */
    bool http_tls_set;
    char postmaster_address[256];  /* where a bare RCPT TO:<postmaster> goes ("" = refused) */
    char *spool_dir;
    char **relay_domains;          /* lower-case; ".dom" matches subdomains */
    size_t nrelay_domains;
    struct cidr *trusted;
    size_t ntrusted;
    bool allow_untrusted_routing;  /* accept user%host@dom, host!user@dom, "a@b"@dom, source routes from anyone */
    struct nexthop default_transport;
    struct transport_entry *transports;
    size_t ntransports;
    char *dns_server;
    char *dns_trust_anchor;        /* DNSSEC trust anchor file (DS or DNSKEY records), or NULL */
    int dns_timeout_ms;            /* per blocking lookup (plugins) */
    /* shared policy state (kv.c, redis.c) */
    char *redis_server;            /* "host:port" or "unix:/path"; NULL = each node keeps its own */
    char *redis_password;
    int redis_database;
    int redis_timeout_ms;
    bool redis_failure_open;       /* redis_failure = open: fall back to this node's state (else tempfail) */
    int smtp_port;                 /* port for MX deliveries (25) */
    long retry_min, retry_max, max_queue_lifetime;   /* seconds */
    int queue_read_before_ready;   /* a larger queue is read after start (queue_load.c) */
    int queue_max_messages;        /* MAIL gets 452 while the queue holds this many (0: no bound) */
    size_t queue_minfree;          /* free bytes the spool's file system keeps (Postfix's queue_minfree) */
    char *plugin_dir;
    char **plugins;                /* the chain, in order */
    size_t nplugins;
    struct plugin_option *plugin_opts;
    size_t nplugin_opts;
    char *control_socket;
    char *run_user;                /* user to drop to when started as root (NULL: postern) */
    bool allow_user_nobody;        /* accept user = nobody (shared with other services) */
    char *tls_cert, *tls_key;      /* inbound STARTTLS */
    char *tls_ca_file;             /* outbound verify: trusted CAs (else the system's) */
    bool mta_sts;                  /* look up and enforce MTA-STS for MX-routed domains */
    bool tls_required_header;      /* honour "TLS-Required: No" (RFC 8689 5) */
    bool tlsrpt;                   /* count TLS results and send RFC 8460 reports */
    long tlsrpt_interval;          /* seconds per report period */
    char *tlsrpt_org, *tlsrpt_contact, *tlsrpt_from;
    struct tls_policy tls_default; /* tls_policy = may */
    struct tls_policy *tls_policies;
    size_t ntls_policies;
    struct cidr *require_tls;      /* clients that must STARTTLS before MAIL */
    size_t nrequire_tls;
    struct cidr *xclient;          /* clients allowed to send XCLIENT */
    size_t nxclient;
    struct cidr *proxy_nets;       /* load balancers allowed on proxy_listen (required with it) */
    size_t nproxy_nets;
    size_t message_size_limit;
    int max_recipients;
    int max_sessions;
    int max_sessions_per_client;   /* concurrent sessions from one address (0 = no limit) */
    int client_connect_rate;       /* new sessions per minute from one address (0 = no limit) */
    int max_errors;
    int smtp_timeout;              /* idle timeout between commands */
    int pregreet_wait;             /* s before the final 220 (postscreen's greet wait); 0 = off */
    bool pregreet_banner;          /* send "220-" first, as postscreen_greet_banner */
    int data_timeout;              /* longest time DATA may go without progress */
    int smtp_min_data_rate;        /* bytes/s in DATA that keep extending the deadline */
    int client_connect_timeout;
    int client_timeout;            /* outbound: per reply */
    bool client_bdat;              /* outbound: BDAT when the next hop offers CHUNKING */
    int dest_concurrency;          /* connections per next hop */
    int dest_rate_limit;           /* new messages per minute per recipient domain (0 = no limit) */
    struct rate_entry *rate_limits;
    size_t nrate_limits;
    struct egress_set egress;      /* egress sources, pools and rules (egress.h) */
    struct named_queues queues;    /* named queues and their rules (named_queues.h) */
    struct backoff_rules backoff;  /* automatic back-off on next hops' replies (backoff_rules.h) */
    struct providers providers;    /* limits shared by an MX provider's domains (providers.h) */
    struct event_sinks event_sinks;    /* where the event stream goes (event_sinks.h) */
    struct fleet_nodes fleet;          /* the other nodes a tracking search may ask (fleet.h) */
    char *fleet_token_file;            /* the token other nodes present to this one's /api/track */
    char *fleet_token;                 /* ... its content */
    size_t events_outbox_max_size;
    long events_outbox_max_age;
    char smtp_helo_name[256];      /* outbound EHLO name ("" = hostname) */
    struct sockaddr_storage smtp_bind_address, smtp_bind_address6;   /* outbound source (family 0 = any) */
    struct sasl_entry *sasl;       /* smtp_sasl_password_maps */
    /* file: tables as written, for check-config */
    char *sasl_maps, *transport_table, *tls_policy_table, *rate_limit_table, *login_maps, *egress_table, *queues_table, *backoff_table, *providers_table,
        *event_sinks_table, *fleet_table;
    /* SMTP AUTH for clients (smtp_auth.c) */
    char *auth_backend;            /* "cyrus", "dovecot:/path/to/auth-client", or NULL (no AUTH) */
    char *auth_cyrus_config_dir;   /* where postern.conf (Cyrus SASL) lives */
    bool auth_allow_plaintext;     /* offer AUTH without TLS too */
    bool submission_add_headers;   /* Date and Message-ID for submitted mail that lacks them */
    int auth_failure_delay;        /* s before a 535 */
    int auth_failure_limit;        /* failed AUTHs per client address per window, then 421 */
    int auth_failure_window;       /* seconds */
    struct login_entry *logins;    /* sender_login_maps */
    size_t nlogins;
    size_t nsasl;
    int connection_cache_time;     /* idle outbound connection kept this long */
    int tls_session_cache;         /* outbound TLS sessions kept (slots), 0 = none */
    int worker_threads;            /* fsync / blocking work */
    int lua_threads;               /* Lua handlers (lua/lua_threads.c) */
    bool lua_loop_first;           /* the loop's fast path (lua/lua_fast.c) */
    long lua_instruction_limit;    /* per handler call */
    int lua_time_limit_ms;         /* per handler call */
    size_t lua_memory_limit;       /* per Lua state */
    size_t lua_body_limit;         /* tx:body() returns bodies up to this size */
    int max_hop_count;             /* more Received: headers = mail loop, bounced */
    char *outbound_remove_headers; /* "X-Spam, X-Spam-*, …": not on mail relayed out */
    long spam_quarantine_lifetime; /* seconds a recipient's copy stays in the spam quarantine */
    char *lists_db;                /* NULL: SPOOL/lists.db */
    char *rspamd_controller;       /* "http://HOST:PORT" for learning, or NULL */
    char *user_login;              /* "auth_backend" or "ldap": the /my/ pages' logins */
    char *digest_url;              /* the console's address for digest links; NULL: no digests */
    char *digest_time;             /* "HH:MM" UTC */
    char *digest_off_domains;      /* recipient domains that get no digest */
    long digest_link_lifetime;
    char *rspamd_controller_password;
    char *block_action;            /* "reject" or "quarantine" */
    bool tracking;                 /* message tracking (track.c) */
    char *tracking_db;             /* NULL: SPOOL/tracking.db */
    long tracking_retention;       /* seconds */
    size_t tracking_max_size;      /* bytes */
    int smtp_mx_address_limit;     /* MX addresses tried per delivery attempt (0 = all); Postfix's */
    int smtp_mx_session_limit;     /* sessions that reached EHLO per attempt (0 = no limit); Postfix's */
    long delay_warning_time;       /* seconds; 0 = no delay warnings */
    int log_level;
    char *log_target;              /* "stderr" (NULL), "syslog" or "file:/PATH" */
    bool given[CONFIG_MAX_KEYS];   /* the table's rows (config_keys.c) the file set */
};

/* Load FILE; on error returns -1 and writes "file:line: message" into err. */
int config_load(const char *path, struct config *cfg, char *err, size_t errlen);
void config_free(struct config *cfg);
/* Load the running config's file again into out (a reload, as the daemon's
 * user: a smtp_sasl_password_maps file it may not read keeps the running
 * table). Same contract as config_load. */
int config_reload(const struct config *running, struct config *out, char *err, size_t errlen);
/* The first key that only a restart can change (listeners, spool, user,
 * TLS keys, resolver, AUTH backend, threads) whose value differs, or NULL. */
const char *config_restart_key_changed(const struct config *a, const struct config *b);
/* Print the effective configuration as key = value lines, every key in the
 * table's order (config_keys.c). */
void config_print(const struct config *cfg, FILE *out);
/* `postern config`: only the keys the file sets, as config_print would
 * (postconf -n); with defaults, every key at its default (postconf -d). */
void config_print_given(const struct config *cfg, FILE *out);
void config_print_defaults(FILE *out);
/* The configuration file a program uses: -c FILE, else $POSTERN_CONFIG,
 * else CONFIG_DEFAULT_PATH (what the .deb installs). */
const char *config_path_or_default(const char *given);
/* The table of keys as the README's Markdown table (`postern config-keys`). */
void config_keys_document(FILE *out);

/* Parse "30s" "5m" "4h" "5d" or plain seconds. -1 on error. */
long parse_duration(const char *text);
/* Parse "10485760", "10k", "10M", "1G". 0 ok, -1 error. */
int parse_size(const char *text, size_t *out);
/* Parse a next hop as written in the transport table (struct nexthop). */
int nexthop_parse(const char *text, struct nexthop *out, char *err, size_t errlen);

/* The prefix of a chain entry's options: the plugin name, or a Lua
 * script's file name without ".lua". */
const char *plugin_option_name(const char *entry);
/* The value of "<plugin>.<key>", or NULL when the config has none. */
const char *config_plugin_option(const struct config *cfg, const char *plugin, const char *key);

/* Lookups used by relay control and routing. */
bool config_is_relay_domain(const struct config *cfg, const char *domain);
bool config_is_trusted(const struct config *cfg, const struct sockaddr *client);
bool config_allows_xclient(const struct config *cfg, const struct sockaddr *client);
bool config_allows_proxy(const struct config *cfg, const struct sockaddr *peer);
bool config_requires_tls(const struct config *cfg, const struct sockaddr *client);
const struct tls_policy *config_tls_policy_for(const struct config *cfg, const char *domain);
const char *tls_level_name(enum tls_level l);
/* A domain-less policy of just this level (no match= names, fallback may):
 * what a plugin demanded, or what DANE decided for one server. */
const struct tls_policy *tls_policy_of_level(enum tls_level l);
const struct nexthop *config_transport_for(const struct config *cfg, const char *domain);
/* The credentials for a next hop key (exact, case-insensitive), or NULL. */
/* sender_login_maps: may this login use this MAIL FROM address? */
bool config_login_may_send_as(const struct config *cfg, const char *login, const char *address);
const struct sasl_entry *config_sasl_for(const struct config *cfg, const char *key);
/* dest_rate_limit for a recipient domain: the table's entry or the default. */
int config_rate_limit_for(const struct config *cfg, const char *domain);
/* Same destination (address and port), whichever table entry named it. */
bool nexthop_same(const struct nexthop *a, const struct nexthop *b);

#endif
