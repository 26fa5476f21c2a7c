/* greylist.c - greylisting at RCPT (as postgrey and Postfix's policy
 * servers do): the first attempt of a (client network, sender, recipient)
 * triplet is deferred with 450 4.7.1; a retry after `delay` and within
 * `retry_window` passes, and the triplet then passes for `lifetime` after
 * its last use. A client network whose triplets passed `auto_whitelist`
 * times passes without delay. Clients in trusted_networks, logged-in
 * clients and `exempt_networks` / `exempt_senders` are never greylisted.
 *
 * State lives in SQLite (one file, `db`): transactional, survives restarts
 * and crashes (WAL), readable with the sqlite3 tool, and one writer at a
 * time is no limit at one statement per RCPT. LMDB would be faster but
 * needs its map size managed; Berkeley DB is on its way out of Debian.
 * Expired rows are deleted every `expire_every` seconds.
 *   greylist.db = /var/lib/postern/greylist.sqlite   (required)
 *   greylist.delay = 300          greylist.retry_window = 172800 (2 days)
 *   greylist.lifetime = 3024000   (35 days)    greylist.auto_whitelist = 5 (0: off)
 *   greylist.exempt_networks = 10.0.0.0/8, 2001:db8::/32
 *   greylist.exempt_senders = @partner.test, alerts@vendor.test
 *   greylist.on_error = tempfail | accept     (default tempfail)
 *   greylist.store = sqlite | shared   (shared: posternd's shared state,
 *                  Redis with redis_server, so every node sees every triplet;
 *                  a node remembers a pass or a whitelisted network for 60 s)
 * Sets greylist.result (pass | greylisted | whitelisted | exempt). Under
 * `postern policy` (host->dry_run) the database is only read: decisions
 * are the ones a real run would make, and nothing is recorded. */
#include "postern_plugin.h"
#include <arpa/inet.h>
#include <ctype.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_EXEMPT 64
#define TOUCH_EVERY 300           /* s: how stale last_seen may get (against a lifetime of days) */

struct cidr {
    int family;
    unsigned char addr[16];
    int bits;
};

struct greylist {
    sqlite3 *db;
    pthread_mutex_t lock;          /* one statement at a time on db */
    long delay, retry_window, lifetime, expire_every;
    long auto_whitelist;
    time_t next_expiry;
    bool accept_on_error;
    bool dry_run;                  /* postern policy: read the triplets, never write them */
    bool shared;                   /* store = shared: posternd's shared state (Redis), not SQLite */
    struct cidr exempt_net[MAX_EXEMPT];
    int nexempt_net;
    char *exempt_sender[MAX_EXEMPT];
    int nexempt_sender;
};

static const struct postern_host *host;

/* ---- addresses ------------------------------------------------------ */

static int parse_ip(const char *s, int *family, unsigned char out[16])
{
    if (inet_pton(AF_INET, s, out) == 1)
        return *family = AF_INET, 0;
    if (inet_pton(AF_INET6, s, out) == 1)
        return *family = AF_INET6, 0;
    return -1;
}

static bool in_cidr(const struct cidr *c, int family, const unsigned char *a)
{
    if (c->family != family)
        return false;
    int full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(c->addr, a, (size_t)full))
        return false;
    return !rest || (c->addr[full] ^ a[full]) >> (8 - rest) == 0;
}

/* The client's network as greylisting sees it: IPv4 /24, IPv6 /64, so a
 * sender's pool of outbound servers counts as one client. */
static int client_net(const char *ip, char *out, size_t size)
{
    int family;
    unsigned char a[16] = {0};
    if (parse_ip(ip, &family, a) < 0)
        return -1;
    if (family == AF_INET) {
        snprintf(out, size, "%u.%u.%u.0/24", a[0], a[1], a[2]);
    } else {
        memset(a + 8, 0, 8);
        char text[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, a, text, sizeof text);
        snprintf(out, size, "%s/64", text);
    }
    return 0;
}

static bool exempt(const struct greylist *g, postern_txn *t)
{
    if (host->client_trusted(t) || host->auth_user(t))
        return true;
    int family;
    unsigned char a[16];
    if (parse_ip(host->client_addr(t), &family, a) == 0)
        for (int i = 0; i < g->nexempt_net; i++)
            if (in_cidr(&g->exempt_net[i], family, a))
                return true;
    const char *sender = host->sender(t), *at = strrchr(sender, '@');
    for (int i = 0; i < g->nexempt_sender; i++) {
        const char *e = g->exempt_sender[i];
        if (!strcasecmp(e, sender) || (e[0] == '@' && at && !strcasecmp(e, at)))
            return true;
    }
    return false;
}

/* ---- the store ------------------------------------------------------ */

static const char SCHEMA[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS triplet (net TEXT, sender TEXT, rcpt TEXT, first_seen INTEGER,"
    " last_seen INTEGER, passed INTEGER, PRIMARY KEY (net, sender, rcpt));"
    "CREATE TABLE IF NOT EXISTS client (net TEXT PRIMARY KEY, passes INTEGER, last_seen INTEGER);";

/* Run sql with up to 3 text and 3 integer parameters bound in order
 * (?1.. text, ?4.. integers); the first result row's columns go to row[]. */
static int exec(struct greylist *g, const char *sql, const char *const text[3], const long nums[3], long row[3],
                bool *found)
{
    if (g->dry_run && strncmp(sql, "SELECT", 6)) {
        if (found)
            *found = false;
        return 0;                  /* a dry run changes nothing */
    }
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(g->db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    for (int i = 0; i < 3; i++) {
        if (text && text[i])
            sqlite3_bind_text(st, i + 1, text[i], -1, SQLITE_STATIC);
        if (nums)
            sqlite3_bind_int64(st, i + 4, nums[i]);
    }
    int rc = sqlite3_step(st);
    if (found)
        *found = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW && row)
        for (int i = 0; i < 3 && i < sqlite3_column_count(st); i++)
            row[i] = (long)sqlite3_column_int64(st, i);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
}

static int expire(struct greylist *g, time_t now)
{
    if (now < g->next_expiry)
        return 0;
    g->next_expiry = now + g->expire_every;
    long nums[3] = {now - g->retry_window, now - g->lifetime, 0};
    return exec(g, "DELETE FROM triplet WHERE (passed = 0 AND first_seen < ?4) OR (passed = 1 AND last_seen < ?5)",
                NULL, nums, NULL, NULL) == 0 &&
                   exec(g, "DELETE FROM client WHERE last_seen < ?5", NULL, nums, NULL, NULL) == 0
               ? 0
               : -1;
}

enum outcome { PASS, GREYLISTED, WHITELISTED, FAILED };

/* The decision for one triplet (lock held); *wait: seconds left. */
static enum outcome decide(struct greylist *g, const char *net, const char *sender, const char *rcpt, long *wait)
{
    time_t now = time(NULL);
    const char *client_key[3] = {net, NULL, NULL}, *key[3] = {net, sender, rcpt};
    long row[3] = {0}, nums[3] = {now, 0, 0};
    bool found;
    if (expire(g, now) < 0)
        return FAILED;
    /* last_seen only moves when it is older than TOUCH_EVERY (or a tenth
     * of the lifetime): a passing triplet costs a read, not a write, on
     * almost every RCPT */
    long touch = g->lifetime / 10 < TOUCH_EVERY ? g->lifetime / 10 : TOUCH_EVERY;
    if (g->auto_whitelist > 0) {
        if (exec(g, "SELECT passes, last_seen FROM client WHERE net = ?1", client_key, NULL, row, &found) < 0)
            return FAILED;
        if (found && row[0] >= g->auto_whitelist)
            return now - row[1] > touch &&
                           exec(g, "UPDATE client SET last_seen = ?4 WHERE net = ?1", client_key, nums, NULL, NULL) < 0
                       ? FAILED : WHITELISTED;
    }
    if (exec(g, "SELECT first_seen, passed, last_seen FROM triplet WHERE net = ?1 AND sender = ?2 AND rcpt = ?3",
             key, NULL, row, &found) < 0)
        return FAILED;
    if (found && row[1]) {
        return now - row[2] > touch &&
                       exec(g, "UPDATE triplet SET last_seen = ?4 WHERE net = ?1 AND sender = ?2 AND rcpt = ?3", key,
                            nums, NULL, NULL) < 0
                   ? FAILED : PASS;
    }
    if (!found || now - row[0] > g->retry_window) {   /* new, or retried too late: start over */
        *wait = g->delay;
        return exec(g, "INSERT OR REPLACE INTO triplet VALUES (?1, ?2, ?3, ?4, ?4, 0)", key, nums, NULL, NULL) < 0
                   ? FAILED : GREYLISTED;
    }
    if (now - row[0] < g->delay) {
        *wait = g->delay - (now - row[0]);
        return GREYLISTED;
    }
    if (exec(g, "UPDATE triplet SET passed = 1, last_seen = ?4 WHERE net = ?1 AND sender = ?2 AND rcpt = ?3", key,
             nums, NULL, NULL) < 0 ||
        exec(g, "INSERT INTO client VALUES (?1, 1, ?4) ON CONFLICT (net) DO UPDATE SET passes = passes + 1, "
             "last_seen = ?4", client_key, nums, NULL, NULL) < 0)
        return FAILED;
    return PASS;
}

/* ---- the shared store (host->kv_*): "greylist:t:NET|SENDER|RCPT" holds
 * "FIRST_SEEN PASSED LAST_SEEN" with the triplet's time to live, and
 * "greylist:c:NET" counts the network's passes. */

static int kv_triplet(postern_txn *t, const char *key, long *first, long *passed, long *last,
                      bool *found)
{
    char v[128];
    int f = 0;
    if (host->kv_get(t, key, v, sizeof v, &f) < 0)
        return -1;
    *found = f && sscanf(v, "%ld %ld %ld", first, passed, last) == 3;
    return 0;
}

static int kv_put(const struct greylist *g, postern_txn *t, const char *key, long first, long passed, long last,
                  long ttl)
{
    if (g->dry_run)
        return 0;              /* postern policy: nothing is recorded */
    char v[128];
    snprintf(v, sizeof v, "%ld %ld %ld", first, passed, last);
    return host->kv_set(t, key, v, ttl);
}

/* Whitelisted networks and passed triplets stay so for days: this node
 * remembers them for PASS_CACHE_S and asks Redis again only then (a
 * lookup saved per RCPT of a known sender). */
#define PASS_CACHE_S 60
#define PASS_CACHE_SLOTS 1024
struct pass_cache {
    unsigned long hash;
    time_t until;
    enum outcome o;
};
static struct pass_cache pass_cache[PASS_CACHE_SLOTS];
static pthread_mutex_t pass_cache_lock = PTHREAD_MUTEX_INITIALIZER;

static unsigned long key_hash(const char *k)
{
    unsigned long h = 1469598103934665603ul;          /* FNV-1a */
    for (; *k; k++)
        h = (h ^ (unsigned char)*k) * 1099511628211ul;
    return h | 1;
}

static bool cached(const char *key, enum outcome *o)
{
    unsigned long h = key_hash(key);
    pthread_mutex_lock(&pass_cache_lock);
    const struct pass_cache *c = &pass_cache[h % PASS_CACHE_SLOTS];
    bool hit = c->hash == h && c->until > time(NULL);
    if (hit)
        *o = c->o;
    pthread_mutex_unlock(&pass_cache_lock);
    return hit;
}

static enum outcome remember(const char *key, enum outcome o)
{
    unsigned long h = key_hash(key);
    pthread_mutex_lock(&pass_cache_lock);
    pass_cache[h % PASS_CACHE_SLOTS] = (struct pass_cache){h, time(NULL) + PASS_CACHE_S, o};
    pthread_mutex_unlock(&pass_cache_lock);
    return o;
}

static enum outcome decide_shared(struct greylist *g, postern_txn *t, const char *net, const char *sender,
                                  const char *rcpt, long *wait)
{
    long now = (long)time(NULL), first = 0, passed = 0, last = 0;
    char key[1300], ckey[100];
    snprintf(key, sizeof key, "greylist:t:%s|%s|%s", net, sender, rcpt);
    snprintf(ckey, sizeof ckey, "greylist:c:%s", net);
    bool found;
    enum outcome known;
    if ((g->auto_whitelist > 0 && cached(ckey, &known)) || cached(key, &known))
        return known;
    if (g->auto_whitelist > 0) {
        char v[32];
        int f = 0;
        if (host->kv_get(t, ckey, v, sizeof v, &f) < 0)
            return FAILED;
        if (f && atol(v) >= g->auto_whitelist)
            return g->dry_run ? WHITELISTED : remember(ckey, WHITELISTED);
    }
    if (kv_triplet(t, key, &first, &passed, &last, &found) < 0)
        return FAILED;
    long touch = g->lifetime / 10 < TOUCH_EVERY ? g->lifetime / 10 : TOUCH_EVERY;
    if (found && passed)
        return now - last > touch && kv_put(g, t, key, first, 1, now, g->lifetime) < 0 ? FAILED : remember(key, PASS);
    if (!found || now - first > g->retry_window) {
        *wait = g->delay;
        return kv_put(g, t, key, now, 0, now, g->retry_window) < 0 ? FAILED : GREYLISTED;
    }
    if (now - first < g->delay) {
        *wait = g->delay - (now - first);
        return GREYLISTED;
    }
    long long passes;
    if (kv_put(g, t, key, first, 1, now, g->lifetime) < 0 ||
        (!g->dry_run && host->kv_incr(t, ckey, g->lifetime, &passes) < 0))
        return FAILED;
    return PASS;
}

static void lower(const char *in, char *out, size_t size)
{
    size_t i = 0;
    for (; in[i] && i + 1 < size; i++)
        out[i] = (char)tolower((unsigned char)in[i]);
    out[i] = '\0';
}

static postern_verdict on_rcpt(postern_txn *t, const char *rcpt, void *state)
{
    struct greylist *g = state;
    if (exempt(g, t)) {
        host->var_set(t, "greylist.result", "exempt");
        return POSTERN_CONTINUE;
    }
    if (POSTERN_HOST_HAS(host, rcpt_list) && host->rcpt_list(t, rcpt) == 'A') {
        host->var_set(t, "greylist.result", "allowed");    /* the recipient's allow list */
        return POSTERN_CONTINUE;
    }
    char net[64], sender[512], to[512];
    if (client_net(host->client_addr(t), net, sizeof net) < 0)
        snprintf(net, sizeof net, "%s", host->client_addr(t));
    lower(host->sender(t), sender, sizeof sender);
    lower(rcpt, to, sizeof to);
    long wait = 0;
    enum outcome o;
    if (g->shared) {
        o = decide_shared(g, t, net, sender, to, &wait);
        if (o == FAILED)
            host->log(t, POSTERN_LOG_ERROR, "greylist: the shared state (redis_server) did not answer");
    } else {
        pthread_mutex_lock(&g->lock);
        o = decide(g, net, sender, to, &wait);
        const char *dberr = o == FAILED ? sqlite3_errmsg(g->db) : NULL;
        if (dberr)
            host->log(t, POSTERN_LOG_ERROR, "greylist: %s", dberr);
        pthread_mutex_unlock(&g->lock);
    }
    static const char *names[] = {"pass", "greylisted", "whitelisted", "error"};
    host->var_set(t, "greylist.result", names[o]);
    char reply[700];
    switch (o) {
    case GREYLISTED:
        snprintf(reply, sizeof reply, "450 4.7.1 <%s>: Recipient address rejected: Greylisted, try again in %ld "
                 "seconds", rcpt, wait);
        host->set_reply(t, reply);
        host->log(t, POSTERN_LOG_INFO, "greylist: deferred %s from <%s> to <%s> for %ld s", net, sender, to, wait);
        return POSTERN_TEMPFAIL;
    case FAILED:
        if (g->accept_on_error)
            return POSTERN_CONTINUE;
        host->set_reply(t, "451 4.3.0 Greylisting is unavailable, try again later");
        return POSTERN_TEMPFAIL;
    default:
        return POSTERN_CONTINUE;
    }
}

/* ---- options -------------------------------------------------------- */

static int parse_cidr(const char *s, struct cidr *c)
{
    char ip[64];
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (n >= sizeof ip)
        return -1;
    snprintf(ip, sizeof ip, "%.*s", (int)n, s);
    if (parse_ip(ip, &c->family, c->addr) < 0)
        return -1;
    int max = c->family == AF_INET ? 32 : 128;
    char *end;
    c->bits = slash ? (int)strtol(slash + 1, &end, 10) : max;
    return (slash && (*end || end == slash + 1)) || c->bits < 0 || c->bits > max ? -1 : 0;
}

/* A comma/space separated list, each item through add(); -1 names the bad one. */
static int each_item(struct greylist *g, const char *key, const char *value, int (*add)(struct greylist *, const char *),
                     char *err, size_t errlen)
{
    char copy[4096], *save = NULL;
    snprintf(copy, sizeof copy, "%s", value);
    for (char *w = strtok_r(copy, ", \t", &save); w; w = strtok_r(NULL, ", \t", &save))
        if (add(g, w) < 0)
            return snprintf(err, errlen, "greylist.%s: bad or too many entries at '%s'", key, w), -1;
    return 0;
}

static int add_net(struct greylist *g, const char *w)
{
    return g->nexempt_net < MAX_EXEMPT && parse_cidr(w, &g->exempt_net[g->nexempt_net]) == 0 ? (g->nexempt_net++, 0)
                                                                                              : -1;
}

static int add_sender(struct greylist *g, const char *w)
{
    if (g->nexempt_sender >= MAX_EXEMPT || !strchr(w, '@') || !(g->exempt_sender[g->nexempt_sender] = strdup(w)))
        return -1;
    g->nexempt_sender++;
    return 0;
}

static int set_seconds(const char *key, const char *value, long lo, long *out, char *err, size_t errlen)
{
    char *end;
    long n = strtol(value, &end, 10);
    if (!*value || *end || n < lo || n > 10L * 365 * 86400)
        return snprintf(err, errlen, "greylist.%s = %s: a whole number of seconds (at least %ld)", key, value, lo), -1;
    *out = n;
    return 0;
}

static int set_option(struct greylist *g, const char *key, const char *value, const char **db, char *err,
                      size_t errlen)
{
    if (!strcmp(key, "db"))
        return *db = value, 0;
    if (!strcmp(key, "delay"))
        return set_seconds(key, value, 0, &g->delay, err, errlen);
    if (!strcmp(key, "retry_window"))
        return set_seconds(key, value, 1, &g->retry_window, err, errlen);
    if (!strcmp(key, "lifetime"))
        return set_seconds(key, value, 1, &g->lifetime, err, errlen);
    if (!strcmp(key, "expire_every"))
        return set_seconds(key, value, 1, &g->expire_every, err, errlen);
    if (!strcmp(key, "auto_whitelist"))
        return set_seconds(key, value, 0, &g->auto_whitelist, err, errlen);
    if (!strcmp(key, "exempt_networks"))
        return each_item(g, key, value, add_net, err, errlen);
    if (!strcmp(key, "exempt_senders"))
        return each_item(g, key, value, add_sender, err, errlen);
    if (!strcmp(key, "on_error") && (!strcmp(value, "tempfail") || !strcmp(value, "accept")))
        return g->accept_on_error = !strcmp(value, "accept"), 0;
    if (!strcmp(key, "store") && (!strcmp(value, "sqlite") || !strcmp(value, "shared")))
        return g->shared = !strcmp(value, "shared"), 0;
    return snprintf(err, errlen, "unknown option or value greylist.%s = %s (known: db, delay, retry_window, "
                    "lifetime, expire_every, auto_whitelist, exempt_networks, exempt_senders, "
                    "on_error = tempfail|accept, store = sqlite|shared)", key, value), -1;
}

static void fini(void *state)
{
    struct greylist *g = state;
    if (g->db)
        sqlite3_close(g->db);
    for (int i = 0; i < g->nexempt_sender; i++)
        free(g->exempt_sender[i]);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

/* A dry run reads the live database when it can, else an empty one in
 * memory (every triplet is new). */
static int open_for_dry_run(struct greylist *g, const char *db)
{
    if (sqlite3_open_v2(db, &g->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_FULLMUTEX, NULL) == SQLITE_OK &&
        sqlite3_exec(g->db, "SELECT 1 FROM triplet LIMIT 1", NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    sqlite3_close(g->db);
    g->db = NULL;
    if (sqlite3_open_v2(":memory:", &g->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, NULL) == SQLITE_OK &&
        sqlite3_exec(g->db, SCHEMA, NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    sqlite3_close(g->db);
    g->db = NULL;
    return -1;
}

static int init(const struct postern_host *h, const struct postern_option *opts, size_t n, void **state, char *err,
                size_t errlen)
{
    host = h;
    if (POSTERN_HOST_REQUIRE(h, auth_user, err, errlen) < 0)
        return -1;
    struct greylist *g = calloc(1, sizeof *g);
    if (!g)
        return -1;
    pthread_mutex_init(&g->lock, NULL);
    g->delay = 300;
    g->retry_window = 2 * 86400;
    g->lifetime = 35 * 86400;
    g->expire_every = 600;
    g->auto_whitelist = 5;
    const char *db = NULL;
    for (size_t i = 0; i < n; i++)
        if (set_option(g, opts[i].key, opts[i].value, &db, err, errlen) < 0) {
            fini(g);
            return -1;
        }
    g->dry_run = POSTERN_HOST_HAS(h, dry_run) && h->dry_run();
    if (g->shared) {           /* no SQLite: the triplets are in posternd's shared state */
        if (POSTERN_HOST_REQUIRE(h, kv_set, err, errlen) < 0) {
            fini(g);
            return -1;
        }
        *state = g;
        return 0;
    }
    if (!db) {
        snprintf(err, errlen, "greylist.db is required (the SQLite file for the triplets), or store = shared");
        fini(g);
        return -1;
    }
    bool checking = POSTERN_HOST_HAS(h, checking) && h->checking();
    if (g->dry_run && open_for_dry_run(g, db) == 0) {
        *state = g;
        return 0;
    }
    int flags = checking ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    if (sqlite3_open_v2(db, &g->db, flags | SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK ||
        (!checking && sqlite3_exec(g->db, SCHEMA, NULL, NULL, NULL) != SQLITE_OK)) {
        if (!(checking && sqlite3_errcode(g->db) == SQLITE_CANTOPEN)) {   /* a check creates nothing */
            snprintf(err, errlen, "greylist.db %s: %s", db, g->db ? sqlite3_errmsg(g->db) : "cannot open");
            fini(g);
            return -1;
        }
    }
    sqlite3_busy_timeout(g->db, 2000);
    *state = g;
    return 0;
}

/* The options it takes (checked by posternd before init, documented in postern-plugins(5)). */
static const struct postern_option_spec options[] = {
    {"db", POSTERN_OPT_PATH, NULL, NULL, 0, "the SQLite database (required with `store = sqlite`)"},
    {"store", POSTERN_OPT_CHOICE, "sqlite|shared", "sqlite", 0, "SQLite, or posternd's shared state (Redis with `redis_server`)"},
    {"delay", POSTERN_OPT_NUMBER, NULL, "300", 0, "seconds before a retry passes"},
    {"retry_window", POSTERN_OPT_NUMBER, NULL, "172800", 0, "seconds within which the retry must come"},
    {"lifetime", POSTERN_OPT_NUMBER, NULL, "3024000", 0, "seconds a passed triplet keeps passing after its last use"},
    {"auto_whitelist", POSTERN_OPT_NUMBER, NULL, "5", 0, "passes after which a network passes at once (0 = off)"},
    {"expire_every", POSTERN_OPT_NUMBER, NULL, "600", 0, "seconds between removals of expired rows (SQLite)"},
    {"exempt_networks", POSTERN_OPT_TEXT, NULL, NULL, 0, "networks never greylisted"},
    {"exempt_senders", POSTERN_OPT_TEXT, NULL, NULL, 0, "senders never greylisted (`user@dom`, `@dom`)"},
    {"on_error", POSTERN_OPT_CHOICE, "tempfail|accept", "tempfail", 0, "what a database error answers"},
    {NULL, 0, NULL, NULL, 0, NULL},
};

static const struct postern_plugin plugin = {
    .abi_version = POSTERN_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct postern_plugin),
    .name = "greylist",
    .init = init,
    .fini = fini,
    .on_rcpt = on_rcpt,
    .options = options,
};

const struct postern_plugin *postern_plugin_entry(void) { return &plugin; }
