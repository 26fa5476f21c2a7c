/* rcpt_verify.c - recipient verification at RCPT, so mail for a user who
 * does not exist is refused in the SMTP dialogue (550 5.1.1) instead of
 * accepted and bounced to a forged sender (backscatter).
 *
 * Each checked domain names its sources, tried in order; the first that
 * knows the address accepts it. If none knows it: 550 5.1.1. If one could
 * not answer (LDAP down, next hop down) and none knew it: 451 4.3.0, never
 * accept-and-bounce.
 *   rcpt_verify.domain = example.test table ldap callahead:[10.0.0.5]:25
 *   rcpt_verify.domain = * callahead:[10.0.0.5]:25     (every other domain;
 *                        domains not listed and no "*": not checked)
 * Sources:
 *   table      rcpt_verify.table = file:PATH, lines "user@domain" or
 *              "@domain" (catch-all); re-read when the file changes.
 *   ldap       rcpt_verify.ldap_uri, ldap_base, ldap_filter (%s address,
 *              %u local part, %d domain; RFC 4515-escaped), ldap_bind_dn,
 *              ldap_bind_password_file, ldap_starttls = yes, ldap_ca_file,
 *              ldap_timeout (s, default 5).
 *   callahead  MAIL FROM:<> / RCPT TO / RSET / QUIT against the next hop,
 *              at most callahead_concurrency (default 4) probes in flight
 *              per next hop, callahead_timeout (s, default 10) per step.
 * LDAP and call-ahead answers are cached: cache_ttl (s, default 3600) for
 * known users, negative_ttl (default 600) for unknown ones, at most
 * cache_size (default 10000) entries (a new key evicts the one in its slot). Failures are
 * never cached. Sets rcpt_verify.result (known | unknown | error) and
 * rcpt_verify.source. */
#include "postern_plugin.h"
#include "plugin_net.h"
#include "ldap_conn.h"
#include "array_grow.h"
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_DOMAINS 64
#define MAX_SOURCES 4
#define MAX_HOPS 16
#define ADDR_MAX 320

enum answer { KNOWN, UNKNOWN, FAILED };
enum source_kind { SRC_TABLE, SRC_LDAP, SRC_CALLAHEAD };

struct hop {                      /* a call-ahead next hop and its probe slots */
    char host[256];
    char port[8];
    int in_flight;
    pthread_cond_t slot_free;
};

struct source {
    enum source_kind kind;
    struct hop *hop;              /* SRC_CALLAHEAD */
};

struct domain_rule {
    char domain[256];             /* "*" for every other domain */
    struct source src[MAX_SOURCES];
    int nsrc;
};

struct table {                    /* the file: source, a sorted list of lines */
    char path[1024];
    struct timespec mtime;
    off_t size;
    char **lines;
    size_t n;
};

struct cache_entry {
    char key[ADDR_MAX + 16];
    bool known;
    time_t expires;
};

struct verifier {
    struct domain_rule rules[MAX_DOMAINS];
    int nrules;
    struct hop hops[MAX_HOPS];
    int nhops;
    int concurrency, timeout_s;
    pthread_mutex_t lock;         /* table, cache, hops */
    struct table table;
    /* LDAP: one connection, one query at a time */
    pthread_mutex_t ldap_lock;
    LDAP *ld;
    struct ldap_settings ldap;
    /* cache: direct-mapped by the key's hash */
    struct cache_entry *cache;
    size_t cache_size;
    int ttl, negative_ttl;
};

static const struct postern_host *host;

/* ---- the table ------------------------------------------------------ */

static int cmp_str(const void *a, const void *b) { return strcasecmp(*(char *const *)a, *(char *const *)b); }

static void table_clear(struct table *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->lines[i]);
    free(t->lines);
    t->lines = NULL;
    t->n = 0;
}

/* Re-read the file when it changed (lock held). 0, or -1 if unreadable. */
static int table_refresh(struct table *t)
{
    struct stat st;
    if (stat(t->path, &st) < 0)
        return -1;
    if (t->lines && st.st_mtim.tv_sec == t->mtime.tv_sec && st.st_mtim.tv_nsec == t->mtime.tv_nsec &&
        st.st_size == t->size)
        return 0;
    FILE *f = fopen(t->path, "r");
    if (!f)
        return -1;
    struct table fresh = {.mtime = st.st_mtim, .size = st.st_size};
    size_t cap = 0;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "#\r\n")] = '\0';
        char *w = line + strspn(line, " \t");
        w[strcspn(w, " \t")] = '\0';
        if (!*w || !strchr(w, '@'))
            continue;
        char **n = array_grow(fresh.lines, &cap, fresh.n + 1, sizeof *fresh.lines, 256);
        if (!n)
            break;
        fresh.lines = n;
        if (!(fresh.lines[fresh.n] = strdup(w)))
            break;
        fresh.n++;
    }
    fclose(f);
    qsort(fresh.lines, fresh.n, sizeof *fresh.lines, cmp_str);
    table_clear(t);
    t->lines = fresh.lines;
    t->n = fresh.n;
    t->mtime = fresh.mtime;
    t->size = fresh.size;
    return 0;
}

static bool table_has(const struct table *t, const char *key)
{
    return t->n && bsearch(&key, t->lines, t->n, sizeof *t->lines, cmp_str);
}

static enum answer ask_table(struct verifier *v, const char *addr, const char *domain)
{
    pthread_mutex_lock(&v->lock);
    enum answer a = FAILED;
    if (table_refresh(&v->table) == 0) {
        char catchall[ADDR_MAX];
        snprintf(catchall, sizeof catchall, "@%s", domain);
        a = table_has(&v->table, addr) || table_has(&v->table, catchall) ? KNOWN : UNKNOWN;
    } else {
        host->log(NULL, POSTERN_LOG_ERROR, "rcpt_verify: cannot read %s: %s", v->table.path, strerror(errno));
    }
    pthread_mutex_unlock(&v->lock);
    return a;
}

/* ---- the cache ------------------------------------------------------
 * Direct-mapped: an entry lives in the slot its key hashes to, and a new
 * key evicts whatever was there. O(1), bounded by cache_size, and an entry
 * also goes when it expires. */

static size_t cache_slot(const struct verifier *v, const char *key)
{
    unsigned long h = 5381;
    for (const char *p = key; *p; p++)
        h = h * 33 + (unsigned char)tolower((unsigned char)*p);
    return h % v->cache_size;
}

static int cache_get(struct verifier *v, const char *key, bool *known)
{
    if (!v->cache_size)
        return 0;
    pthread_mutex_lock(&v->lock);
    const struct cache_entry *e = &v->cache[cache_slot(v, key)];
    int found = e->key[0] && e->expires > time(NULL) && !strcasecmp(e->key, key);
    if (found)
        *known = e->known;
    pthread_mutex_unlock(&v->lock);
    return found;
}

static void cache_put(struct verifier *v, const char *key, bool known)
{
    if (!v->cache_size)
        return;
    pthread_mutex_lock(&v->lock);
    struct cache_entry *e = &v->cache[cache_slot(v, key)];
    snprintf(e->key, sizeof e->key, "%s", key);
    e->known = known;
    e->expires = time(NULL) + (known ? v->ttl : v->negative_ttl);
    pthread_mutex_unlock(&v->lock);
}

/* ---- LDAP ----------------------------------------------------------- */

static void ldap_drop(struct verifier *v)
{
    if (v->ld)
        ldap_unbind_ext_s(v->ld, NULL, NULL);
    v->ld = NULL;
}

/* Connect, StartTLS and bind (ldap_lock held). 0, or -1 logged. */
static int ldap_open(struct verifier *v)
{
    int rc = ldap_conn_open(&v->ldap, &v->ld);
    if (rc != LDAP_SUCCESS) {
        host->log(NULL, POSTERN_LOG_ERROR, "rcpt_verify: LDAP %s: %s", v->ldap.uri, ldap_err2string(rc));
        return -1;
    }
    return 0;
}

static enum answer ldap_search_once(struct verifier *v, const char *filter, int *rc)
{
    struct timeval tv = {.tv_sec = v->ldap.timeout_s};
    char *attrs[] = {LDAP_NO_ATTRS, NULL};
    LDAPMessage *res = NULL;
    *rc = ldap_search_ext_s(v->ld, v->ldap.base, LDAP_SCOPE_SUBTREE, filter, attrs, 0, NULL, NULL, &tv, 2, &res);
    enum answer a = FAILED;
    if (*rc == LDAP_SUCCESS || *rc == LDAP_SIZELIMIT_EXCEEDED)
        a = ldap_count_entries(v->ld, res) > 0 || *rc == LDAP_SIZELIMIT_EXCEEDED ? KNOWN : UNKNOWN;
    if (res)
        ldap_msgfree(res);
    return a;
}

static enum answer ask_ldap(struct verifier *v, const char *addr)
{
    char filter[2048];
    if (ldap_filter_expand(v->ldap.filter, addr, filter, sizeof filter) < 0)
        return FAILED;
    pthread_mutex_lock(&v->ldap_lock);
    enum answer a = FAILED;
    int rc = LDAP_SERVER_DOWN;
    for (int attempt = 0; attempt < 2 && a == FAILED; attempt++) {   /* a dropped connection: once more */
        if (!v->ld && ldap_open(v) < 0)
            break;
        a = ldap_search_once(v, filter, &rc);
        if (a == FAILED)
            ldap_drop(v);
    }
    pthread_mutex_unlock(&v->ldap_lock);
    if (a == FAILED && rc != LDAP_SERVER_DOWN)
        host->log(NULL, POSTERN_LOG_ERROR, "rcpt_verify: LDAP search %s: %s", filter, ldap_err2string(rc));
    return a;
}

/* ---- call-ahead ----------------------------------------------------- */

/* One reply (multi-line folded into its last line's code); its code, or
 * -1 on timeout, close or garbage. */
static int probe_reply(int fd, int timeout_s, char *text, size_t size)
{
    char buf[1024];
    size_t len = 0;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (len == sizeof buf - 1 || poll(&p, 1, timeout_s * 1000) <= 0)
            return -1;
        ssize_t r = read(fd, buf + len, sizeof buf - 1 - len);
        if (r <= 0)
            return -1;
        len += (size_t)r;
        buf[len] = '\0';
        char *line = buf, *nl;
        while ((nl = strstr(line, "\r\n"))) {
            if (nl - line < 4 || !isdigit((unsigned char)line[0]))
                return -1;
            if (line[3] == ' ') {
                snprintf(text, size, "%.*s", (int)(nl - line), line);
                return atoi(line);
            }
            line = nl + 2;
        }
        memmove(buf, line, len - (size_t)(line - buf) + 1);
        len -= (size_t)(line - buf);
    }
}

static int probe_send(int fd, const char *fmt, const char *arg)
{
    char line[ADDR_MAX + 64];
    int n = snprintf(line, sizeof line, fmt, arg);
    return n > 0 && (size_t)n < sizeof line ? net_send_all(fd, line, (size_t)n) : -1;
}

/* The dialogue itself: KNOWN on 250/251 to RCPT, UNKNOWN on 550-553,
 * FAILED on anything else (4xx, timeouts, a refused MAIL FROM:<>). */
static enum answer probe(struct verifier *v, const struct hop *h, const char *addr, char *why, size_t wlen)
{
    int fd = net_connect_tcp(h->host, h->port, v->timeout_s);
    if (fd < 0) {
        snprintf(why, wlen, "cannot connect to %s:%s: %s", h->host, h->port, strerror(errno));
        return FAILED;
    }
    char text[512] = "";
    enum answer a = FAILED;
    int code = probe_reply(fd, v->timeout_s, text, sizeof text);
    if (code == 220 && probe_send(fd, "EHLO %s\r\n", host->hostname()) == 0 &&
        probe_reply(fd, v->timeout_s, text, sizeof text) == 250 && probe_send(fd, "%s", "MAIL FROM:<>\r\n") == 0 &&
        probe_reply(fd, v->timeout_s, text, sizeof text) == 250 && probe_send(fd, "RCPT TO:<%s>\r\n", addr) == 0) {
        code = probe_reply(fd, v->timeout_s, text, sizeof text);
        a = code == 250 || code == 251 ? KNOWN : code >= 550 && code <= 553 ? UNKNOWN : FAILED;
        char ignored[512];
        if (probe_send(fd, "%s", "RSET\r\n") == 0)
            probe_reply(fd, v->timeout_s, ignored, sizeof ignored);
    }
    probe_send(fd, "%s", "QUIT\r\n");
    close(fd);
    if (a == FAILED)
        snprintf(why, wlen, "%s:%s answered %.200s", h->host, h->port, text[0] ? text : "nothing in time");
    return a;
}

/* Wait for one of the hop's probe slots; false when none came in time. */
static bool hop_enter(struct verifier *v, struct hop *h)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += v->timeout_s;
    pthread_mutex_lock(&v->lock);
    int rc = 0;
    while (h->in_flight >= v->concurrency && rc == 0)
        rc = pthread_cond_timedwait(&h->slot_free, &v->lock, &until);
    bool ok = h->in_flight < v->concurrency;
    if (ok)
        h->in_flight++;
    pthread_mutex_unlock(&v->lock);
    return ok;
}

static void hop_leave(struct verifier *v, struct hop *h)
{
    pthread_mutex_lock(&v->lock);
    h->in_flight--;
    pthread_cond_signal(&h->slot_free);
    pthread_mutex_unlock(&v->lock);
}

static enum answer ask_callahead(struct verifier *v, struct hop *h, const char *addr, postern_txn *t)
{
    char why[600];
    if (!hop_enter(v, h)) {
        host->log(t, POSTERN_LOG_WARN, "rcpt_verify: call-ahead to %s:%s: all %d probe slots busy", h->host,
                  h->port, v->concurrency);
        return FAILED;
    }
    enum answer a = probe(v, h, addr, why, sizeof why);
    hop_leave(v, h);
    if (a == FAILED)
        host->log(t, POSTERN_LOG_WARN, "rcpt_verify: call-ahead for <%s>: %s", addr, why);
    return a;
}

/* ---- RCPT ----------------------------------------------------------- */

static const struct domain_rule *rule_for(const struct verifier *v, const char *domain)
{
    const struct domain_rule *any = NULL;
    for (int i = 0; i < v->nrules; i++) {
        if (!strcasecmp(v->rules[i].domain, domain))
            return &v->rules[i];
        if (!strcmp(v->rules[i].domain, "*"))
            any = &v->rules[i];
    }
    return any;
}

static const char *source_name(const struct source *s)
{
    return s->kind == SRC_TABLE ? "table" : s->kind == SRC_LDAP ? "ldap" : "callahead";
}

/* One source's answer, from the cache where it keeps one. */
static enum answer ask(struct verifier *v, const struct source *s, const char *addr, const char *domain,
                       postern_txn *t)
{
    if (s->kind == SRC_TABLE)
        return ask_table(v, addr, domain);
    char key[sizeof ((struct cache_entry *)0)->key];
    snprintf(key, sizeof key, "%s:%s", source_name(s), addr);
    bool known;
    if (cache_get(v, key, &known))
        return known ? KNOWN : UNKNOWN;
    enum answer a = s->kind == SRC_LDAP ? ask_ldap(v, addr) : ask_callahead(v, s->hop, addr, t);
    if (a != FAILED)
        cache_put(v, key, a == KNOWN);
    return a;
}

static postern_verdict on_rcpt(postern_txn *t, const char *rcpt, void *state)
{
    struct verifier *v = state;
    const char *at = strrchr(rcpt, '@');
    if (!at || strlen(rcpt) >= ADDR_MAX)
        return POSTERN_CONTINUE;          /* <postmaster> and the like: not ours to judge */
    const struct domain_rule *r = rule_for(v, at + 1);
    if (!r)
        return POSTERN_CONTINUE;
    bool failed = false;
    for (int i = 0; i < r->nsrc; i++) {
        enum answer a = ask(v, &r->src[i], rcpt, at + 1, t);
        if (a == KNOWN) {
            host->var_set(t, "rcpt_verify.result", "known");
            host->var_set(t, "rcpt_verify.source", source_name(&r->src[i]));
            return POSTERN_CONTINUE;
        }
        failed |= a == FAILED;
    }
    char reply[ADDR_MAX + 100];
    host->var_set(t, "rcpt_verify.result", failed ? "error" : "unknown");
    if (failed) {
        snprintf(reply, sizeof reply, "451 4.3.0 <%s>: Recipient address rejected: cannot verify the address now",
                 rcpt);
        host->set_reply(t, reply);
        return POSTERN_TEMPFAIL;
    }
    snprintf(reply, sizeof reply, "550 5.1.1 <%s>: Recipient address rejected: User unknown", rcpt);
    host->set_reply(t, reply);
    return POSTERN_REJECT;
}

/* ---- options -------------------------------------------------------- */

static struct hop *hop_for(struct verifier *v, const char *spec)
{
    /* [host]:port or host:port */
    char hostpart[256], port[8] = "25";
    const char *colon = spec[0] == '[' ? strstr(spec, "]:") : strrchr(spec, ':');
    size_t hl = colon ? (size_t)(colon - spec) : strlen(spec);
    if (spec[0] == '[') {
        spec++;
        hl = colon ? (size_t)(colon - spec) : 0;
    }
    if (!hl || hl >= sizeof hostpart)
        return NULL;
    snprintf(hostpart, sizeof hostpart, "%.*s", (int)hl, spec);
    if (colon) {
        const char *p = colon + (colon[0] == ']' ? 2 : 1);
        if (!*p || strlen(p) >= sizeof port || strspn(p, "0123456789") != strlen(p))
            return NULL;
        snprintf(port, sizeof port, "%s", p);
    }
    for (int i = 0; i < v->nhops; i++)
        if (!strcmp(v->hops[i].host, hostpart) && !strcmp(v->hops[i].port, port))
            return &v->hops[i];
    if (v->nhops == MAX_HOPS)
        return NULL;
    struct hop *h = &v->hops[v->nhops++];
    snprintf(h->host, sizeof h->host, "%s", hostpart);
    snprintf(h->port, sizeof h->port, "%s", port);
    pthread_cond_init(&h->slot_free, NULL);
    return h;
}

/* "DOMAIN SOURCE..." */
static int parse_domain(struct verifier *v, const char *value, char *err, size_t errlen)
{
    if (v->nrules == MAX_DOMAINS)
        return snprintf(err, errlen, "too many rcpt_verify.domain lines (max %d)", MAX_DOMAINS), -1;
    char copy[1024];
    snprintf(copy, sizeof copy, "%s", value);
    struct domain_rule *r = &v->rules[v->nrules];
    char *save = NULL, *w = strtok_r(copy, " \t,", &save);
    if (!w || strlen(w) >= sizeof r->domain)
        return snprintf(err, errlen, "rcpt_verify.domain = %s: expected DOMAIN SOURCE...", value), -1;
    snprintf(r->domain, sizeof r->domain, "%s", w);
    r->nsrc = 0;
    while ((w = strtok_r(NULL, " \t,", &save))) {
        if (r->nsrc == MAX_SOURCES)
            return snprintf(err, errlen, "rcpt_verify.domain = %s: at most %d sources", value, MAX_SOURCES), -1;
        struct source *s = &r->src[r->nsrc++];
        if (!strcmp(w, "table"))
            s->kind = SRC_TABLE;
        else if (!strcmp(w, "ldap"))
            s->kind = SRC_LDAP;
        else if (!strncmp(w, "callahead:", 10) && (s->hop = hop_for(v, w + 10)))
            s->kind = SRC_CALLAHEAD;
        else
            return snprintf(err, errlen, "rcpt_verify.domain = %s: unknown source '%s' (table, ldap, "
                            "callahead:[HOST]:PORT)", value, w), -1;
    }
    if (!r->nsrc)
        return snprintf(err, errlen, "rcpt_verify.domain = %s: no source given", value), -1;
    v->nrules++;
    return 0;
}

static int set_number(const char *key, const char *value, int lo, int hi, int *out, char *err, size_t errlen)
{
    char *end;
    long n = strtol(value, &end, 10);
    if (!*value || *end || n < lo || n > hi)
        return snprintf(err, errlen, "rcpt_verify.%s = %s: a number from %d to %d", key, value, lo, hi), -1;
    *out = (int)n;
    return 0;
}

/* The bind password: root's file (0600) is opened by posternd's
 * privileged parent, at start and at each reload. */
static int read_password(struct verifier *v, const char *path, char *err, size_t errlen)
{
    char why[300] = "";
    int fd = POSTERN_HOST_HAS(host, open_config_file) ? host->open_config_file(path, why, sizeof why)
                                                      : open(path, O_RDONLY | O_CLOEXEC);
    int e = errno;
    FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
    if (!f && fd >= 0)
        close(fd);
    if (!f || !fgets(v->ldap.password, sizeof v->ldap.password, f)) {
        snprintf(err, errlen, "rcpt_verify.ldap_bind_password_file: cannot read %s: %s (as uid %d)%s%s", path,
                 f ? "empty" : strerror(e), (int)geteuid(), why[0] ? "; " : "", why);
        if (f)
            fclose(f);
        return -1;
    }
    fclose(f);
    v->ldap.password[strcspn(v->ldap.password, "\r\n")] = '\0';
    return 0;
}

#define STR_OPTION(name, field)                                                     \
    if (!strcmp(key, name)) {                                                       \
        if (strlen(value) >= sizeof v->field)                                       \
            return snprintf(err, errlen, "rcpt_verify.%s: too long", key), -1;      \
        snprintf(v->field, sizeof v->field, "%s", value);                           \
        return 0;                                                                   \
    }

static int set_option(struct verifier *v, const char *key, const char *value, char *err, size_t errlen)
{
    if (!strcmp(key, "domain"))
        return parse_domain(v, value, err, errlen);
    if (!strcmp(key, "table")) {
        const char *p = !strncmp(value, "file:", 5) ? value + 5 : value;
        if (strlen(p) >= sizeof v->table.path || p[0] != '/')
            return snprintf(err, errlen, "rcpt_verify.table = %s: expected file:/ABSOLUTE/PATH", value), -1;
        snprintf(v->table.path, sizeof v->table.path, "%s", p);
        return 0;
    }
    STR_OPTION("ldap_uri", ldap.uri)
    STR_OPTION("ldap_base", ldap.base)
    STR_OPTION("ldap_filter", ldap.filter)
    STR_OPTION("ldap_bind_dn", ldap.bind_dn)
    STR_OPTION("ldap_ca_file", ldap.ca_file)
    if (!strcmp(key, "ldap_bind_password_file"))
        return read_password(v, value, err, errlen);
    if (!strcmp(key, "ldap_starttls") && (!strcmp(value, "yes") || !strcmp(value, "no")))
        return v->ldap.starttls = !strcmp(value, "yes"), 0;
    if (!strcmp(key, "ldap_timeout"))
        return set_number(key, value, 1, 60, &v->ldap.timeout_s, err, errlen);
    if (!strcmp(key, "callahead_timeout"))
        return set_number(key, value, 1, 120, &v->timeout_s, err, errlen);
    if (!strcmp(key, "callahead_concurrency"))
        return set_number(key, value, 1, 64, &v->concurrency, err, errlen);
    if (!strcmp(key, "cache_ttl"))
        return set_number(key, value, 0, 30 * 86400, &v->ttl, err, errlen);
    if (!strcmp(key, "negative_ttl"))
        return set_number(key, value, 0, 30 * 86400, &v->negative_ttl, err, errlen);
    if (!strcmp(key, "cache_size")) {
        int n;
        if (set_number(key, value, 0, 1000000, &n, err, errlen) < 0)
            return -1;
        v->cache_size = (size_t)n;
        return 0;
    }
    return snprintf(err, errlen, "unknown option rcpt_verify.%s (known: domain, table, ldap_uri, ldap_base, "
                    "ldap_filter, ldap_bind_dn, ldap_bind_password_file, ldap_starttls, ldap_ca_file, "
                    "ldap_timeout, callahead_timeout, callahead_concurrency, cache_ttl, negative_ttl, cache_size)",
                    key), -1;
}

/* Every source a rule names must be configured. */
static int check_sources(struct verifier *v, char *err, size_t errlen)
{
    if (!v->nrules)
        return snprintf(err, errlen, "rcpt_verify.domain is required (DOMAIN SOURCE...)"), -1;
    for (int i = 0; i < v->nrules; i++)
        for (int j = 0; j < v->rules[i].nsrc; j++) {
            enum source_kind k = v->rules[i].src[j].kind;
            if (k == SRC_TABLE && !v->table.path[0])
                return snprintf(err, errlen, "%s uses table but rcpt_verify.table is not set", v->rules[i].domain), -1;
            if (k == SRC_LDAP && (!v->ldap.uri[0] || !v->ldap.base[0] || !v->ldap.filter[0]))
                return snprintf(err, errlen, "%s uses ldap: rcpt_verify.ldap_uri, ldap_base and ldap_filter are "
                                "required", v->rules[i].domain), -1;
        }
    if (v->table.path[0] && table_refresh(&v->table) < 0)
        return snprintf(err, errlen, "rcpt_verify.table: cannot read %s: %s", v->table.path, strerror(errno)), -1;
    return 0;
}

static void fini(void *state)
{
    struct verifier *v = state;
    ldap_drop(v);
    table_clear(&v->table);
    for (int i = 0; i < v->nhops; i++)
        pthread_cond_destroy(&v->hops[i].slot_free);
    pthread_mutex_destroy(&v->lock);
    pthread_mutex_destroy(&v->ldap_lock);
    free(v->cache);
    free(v);
}

static int init(const struct postern_host *h, const struct postern_option *opts, size_t n, void **state, char *err,
                size_t errlen)
{
    host = h;
    if (POSTERN_HOST_REQUIRE(h, hostname, err, errlen) < 0)
        return -1;
    struct verifier *v = calloc(1, sizeof *v);
    if (!v)
        return -1;
    pthread_mutex_init(&v->lock, NULL);
    pthread_mutex_init(&v->ldap_lock, NULL);
    v->concurrency = 4;
    v->timeout_s = 10;
    v->ldap.timeout_s = 5;
    v->ttl = 3600;
    v->negative_ttl = 600;
    v->cache_size = 10000;
    for (size_t i = 0; i < n; i++)
        if (set_option(v, opts[i].key, opts[i].value, err, errlen) < 0) {
            fini(v);
            return -1;
        }
    if (check_sources(v, err, errlen) < 0 || (v->cache_size && !(v->cache = calloc(v->cache_size, sizeof *v->cache)))) {
        fini(v);
        return -1;
    }
    *state = v;
    return 0;
}

/* The options it takes (checked by posternd before init, documented in postern-plugins(5)). */
static const struct postern_option_spec options[] = {
    {"domain", POSTERN_OPT_TEXT, NULL, "", 1, "`DOMAIN SOURCE...`: how recipients of DOMAIN are checked (table, ldap, callahead)"},
    {"table", POSTERN_OPT_PATH, NULL, NULL, 0, "`file:PATH`, one known address (or `@domain`) a line"},
    {"ldap_uri", POSTERN_OPT_TEXT, NULL, NULL, 0, "the LDAP server"},
    {"ldap_base", POSTERN_OPT_TEXT, NULL, NULL, 0, "the search base"},
    {"ldap_filter", POSTERN_OPT_TEXT, NULL, NULL, 0, "the filter, `%s` the address"},
    {"ldap_bind_dn", POSTERN_OPT_TEXT, NULL, NULL, 0, "the bind DN; unset: anonymous"},
    {"ldap_bind_password_file", POSTERN_OPT_PATH, NULL, NULL, 0, "the bind password (root's, 0600: opened by the privileged parent)"},
    {"ldap_starttls", POSTERN_OPT_BOOL, NULL, "no", 0, "STARTTLS to the LDAP server"},
    {"ldap_ca_file", POSTERN_OPT_PATH, NULL, NULL, 0, "CAs for the LDAP server's certificate"},
    {"ldap_timeout", POSTERN_OPT_NUMBER, NULL, "5", 0, "seconds per LDAP request (1–60)"},
    {"callahead_timeout", POSTERN_OPT_NUMBER, NULL, "10", 0, "seconds per callahead (1–120)"},
    {"callahead_concurrency", POSTERN_OPT_NUMBER, NULL, "4", 0, "callaheads at once (1–64)"},
    {"cache_ttl", POSTERN_OPT_NUMBER, NULL, "3600", 0, "seconds an answer is cached"},
    {"negative_ttl", POSTERN_OPT_NUMBER, NULL, "600", 0, "seconds an unknown recipient is cached"},
    {"cache_size", POSTERN_OPT_NUMBER, NULL, "10000", 0, "answers cached"},
    {NULL, 0, NULL, NULL, 0, NULL},
};

static const struct postern_plugin plugin = {
    .abi_version = POSTERN_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct postern_plugin),
    .name = "rcpt_verify",
    .init = init,
    .fini = fini,
    .on_rcpt = on_rcpt,
    .options = options,
};

const struct postern_plugin *postern_plugin_entry(void) { return &plugin; }
