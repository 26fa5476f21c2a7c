/* config_int.h - what config.c (reading files, helpers, lookups) and
 * config_keys.c (the table of keys) share; nothing outside them includes it. */
#ifndef POSTERN_CONFIG_INT_H
#define POSTERN_CONFIG_INT_H
#include "config.h"
#include <stdbool.h>
#include <stdio.h>

/* Parse context: which file and line we are on, where errors go. */
struct pctx {
    const char *file;
    int line;
    char *err;
    size_t errlen;
    const struct config *running;  /* a reload: the config in use, else NULL */
};

int fail(struct pctx *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "<plugin>.<key> = value", for a plugin in the chain (checked later). */
int add_plugin_option(struct pctx *p, struct config *cfg, const char *key, const char *value);
/* s without leading and trailing blanks (in place). */
char *trim(char *s);
/* "as user NAME": who tried to read a file, for its error. */
const char *config_reader(void);

/* values */
int set_int(struct pctx *p, const char *key, const char *value, int lo, int hi, int *out);
int set_duration(struct pctx *p, const char *key, const char *value, long *out);
int set_duration_int(struct pctx *p, const char *key, const char *value, int *out);
int set_duration_ms(struct pctx *p, const char *key, const char *value, long lo, long hi, const char *range,
                    int *out_ms);
int set_redis_timeout(struct pctx *p, const char *value, int *out);
int set_bool(struct pctx *p, const char *key, const char *value, bool *out);
void set_str(char **dst, const char *value);
bool valid_host_name(const char *h);
int set_bind_address(struct pctx *p, const char *key, const char *value, int family, struct sockaddr_storage *out);
int parse_tls_policy(struct pctx *p, char *value, struct tls_policy *pol);

/* lists and tables: a row function takes one item or table line */
typedef int (*row_fn)(struct pctx *p, void *ctx, char *key, char *value);
int read_table(struct pctx *parent, const char *path, row_fn row, void *ctx);
int each_item(struct pctx *p, char *list, row_fn row, void *ctx);
int list_or_table(struct pctx *p, struct config *cfg, char *value, row_fn row);
int add_relay_domain(struct pctx *p, void *ctx, char *key, char *value);
int add_transport(struct pctx *p, void *ctx, char *key, char *value);
int add_trusted(struct pctx *p, void *ctx, char *key, char *value);
int add_require_tls(struct pctx *p, void *ctx, char *key, char *value);
int add_xclient(struct pctx *p, void *ctx, char *key, char *value);
int add_proxy_net(struct pctx *p, void *ctx, char *key, char *value);
int add_sasl(struct pctx *p, void *ctx, char *key, char *value);
int add_login(struct pctx *p, void *ctx, char *key, char *value);
int add_rate_limit(struct pctx *p, void *ctx, char *key, char *value);
int add_tls_policy(struct pctx *p, void *ctx, char *key, char *value);
int add_listen(struct pctx *p, void *ctx, char *key, char *value);
int add_plugin(struct pctx *p, void *ctx, char *key, char *value);
int add_special_listeners(struct pctx *p, struct config *cfg, char *value, bool proxy);

/* printing */
void print_cidrs(FILE *out, const char *key, const struct cidr *list, size_t n);
void print_bind_address(FILE *out, const char *key, const struct sockaddr_storage *ss);
const char *or_empty(const char *s);

/* the table (config_keys.c) */
/* key = value through its row: 0, -1 failed, 1 no such key. */
int config_key_apply(struct pctx *p, struct config *cfg, const char *key, char *value);
/* Every row's default, through the same parser. */
void config_keys_defaults(struct config *cfg);
/* The strings the rows own. */
void config_keys_free(struct config *cfg);

#endif
