/* lists.c - see lists.h. In memory: a hash of owners (lower-cased), each
 * with its entries; the SQLite file is the durable copy, written on every
 * change (WAL, synchronous=NORMAL) and read once at start. Changes on the
 * loop thread only (the control socket, lists_shared.c); lookups from any
 * thread (plugins and Lua run on workers), under a read lock. */
#include "lists.h"
#include "buf.h"
#include "config.h"
#include "log.h"
#include "smtp_parse.h"
#include <ctype.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define BUCKETS 4096

struct entry {
    char kind;
    char *pattern;
};

struct owner {
    char *name;
    struct entry *e;
    size_t n, cap;
    struct owner *next;
};

struct table {
    struct owner *buckets[BUCKETS];
    size_t total;
};

static struct table live;           /* what lookups see */
static struct table *building;      /* a full copy being loaded (lists_sync_*) */
static pthread_rwlock_t live_lock = PTHREAD_RWLOCK_INITIALIZER;
static sqlite3 *db;
static void (*change_hook)(bool add, enum list_kind kind, const char *owner, const char *pattern);

void lists_db_path(const struct config *cfg, char *out, size_t size)
{
    if (cfg->lists_db && cfg->lists_db[0])
        snprintf(out, size, "%s", cfg->lists_db);
    else
        snprintf(out, size, "%s/lists.db", cfg->spool_dir);
}

const char *list_kind_name(enum list_kind k) { return k == LIST_ALLOW ? "allow" : k == LIST_BLOCK ? "block" : "none"; }

static unsigned hash(const char *s)
{
    unsigned h = 5381;
    for (; *s; s++)
        h = h * 33 + (unsigned char)tolower((unsigned char)*s);
    return h % BUCKETS;
}

static struct owner *owner_find(struct table *t, const char *name, bool create)
{
    unsigned h = hash(name);
    for (struct owner *o = t->buckets[h]; o; o = o->next)
        if (!strcasecmp(o->name, name))
            return o;
    struct owner *o = create ? calloc(1, sizeof *o) : NULL;
    if (!o || !(o->name = strdup(name))) {
        free(o);
        return NULL;
    }
    for (char *p = o->name; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    o->next = t->buckets[h];
    t->buckets[h] = o;
    return o;
}

/* An address, or "@domain": what an owner or a pattern may be. */
static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (!n || n > LIST_MAX_PATTERN || strpbrk(s, " \t\r\n<>,;\"\\"))
        return false;
    const char *at = strrchr(s, '@');
    return at && at[1] && strchr(at + 1, '.') && (at == s || smtp_check_address(s, true) == 0);
}

static int mem_add(struct table *t, char kind, const char *owner, const char *pattern)
{
    struct owner *o = owner_find(t, owner, true);
    if (!o)
        return -1;
    for (size_t i = 0; i < o->n; i++)
        if (!strcasecmp(o->e[i].pattern, pattern)) {
            o->e[i].kind = kind;          /* allow <-> block: the newer says */
            return 0;
        }
    if (t->total >= LIST_MAX_ENTRIES)
        return -1;
    if (o->n == o->cap) {
        size_t nc = o->cap ? 2 * o->cap : 4;
        struct entry *e = realloc(o->e, nc * sizeof *e);
        if (!e)
            return -1;
        o->e = e;
        o->cap = nc;
    }
    if (!(o->e[o->n].pattern = strdup(pattern)))
        return -1;
    o->e[o->n++].kind = kind;
    t->total++;
    return 0;
}

static bool mem_del(struct table *t, const char *owner, const char *pattern)
{
    struct owner *o = owner_find(t, owner, false);
    for (size_t i = 0; o && i < o->n; i++)
        if (!strcasecmp(o->e[i].pattern, pattern)) {
            free(o->e[i].pattern);
            o->e[i] = o->e[--o->n];
            t->total--;
            return true;
        }
    return false;
}

/* Does sender match pattern (an address, or "@domain" and its subdomains)? */
static bool matches(const char *pattern, const char *sender)
{
    if (pattern[0] != '@')
        return !strcasecmp(pattern, sender);
    const char *at = strrchr(sender, '@');
    if (!at)
        return false;
    const char *dom = at + 1, *want = pattern + 1;
    size_t n = strlen(dom), w = strlen(want);
    return n >= w && !strcasecmp(dom + n - w, want) && (n == w || dom[n - w - 1] == '.');
}

static enum list_kind check_owner(const char *owner, const char *sender)
{
    struct owner *o = owner_find(&live, owner, false);
    enum list_kind k = LIST_NONE;
    for (size_t i = 0; o && i < o->n; i++)
        if (matches(o->e[i].pattern, sender)) {
            if (o->e[i].kind == LIST_BLOCK)
                return LIST_BLOCK;
            k = LIST_ALLOW;
        }
    return k;
}

enum list_kind lists_check(const char *rcpt, const char *sender)
{
    if (!sender || !sender[0])
        return LIST_NONE;
    pthread_rwlock_rdlock(&live_lock);
    enum list_kind k = live.total ? check_owner(rcpt, sender) : LIST_NONE;
    const char *at = strrchr(rcpt, '@');
    if (k == LIST_NONE && live.total && at) {
        char dom[300];
        snprintf(dom, sizeof dom, "@%s", at + 1);
        k = check_owner(dom, sender);
    }
    pthread_rwlock_unlock(&live_lock);
    return k;
}

int lists_open(const char *path, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOFOLLOW, NULL) !=
            SQLITE_OK ||
        sqlite3_busy_timeout(db, 5000) != SQLITE_OK ||
        sqlite3_exec(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
                         "CREATE TABLE IF NOT EXISTS entries (owner TEXT NOT NULL COLLATE NOCASE, kind TEXT NOT NULL,"
                         " pattern TEXT NOT NULL COLLATE NOCASE, added INTEGER, PRIMARY KEY (owner, pattern));"
                         "CREATE TABLE IF NOT EXISTS used_links (nonce TEXT PRIMARY KEY, expires INTEGER NOT NULL)",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT owner, kind, pattern FROM entries", -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "lists_db %s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        db = NULL;
        return -1;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *owner = (const char *)sqlite3_column_text(st, 0), *kind = (const char *)sqlite3_column_text(st, 1);
        const char *pattern = (const char *)sqlite3_column_text(st, 2);
        if (owner && kind && pattern && (kind[0] == LIST_ALLOW || kind[0] == LIST_BLOCK))
            mem_add(&live, kind[0], owner, pattern);
    }
    sqlite3_finalize(st);
    if (live.total)
        log_info("lists: %zu allow/block entries from %s", live.total, path);
    return 0;
}

static void table_free(struct table *t)
{
    for (size_t b = 0; b < BUCKETS; b++)
        for (struct owner *o = t->buckets[b], *next; o; o = next) {
            next = o->next;
            for (size_t i = 0; i < o->n; i++)
                free(o->e[i].pattern);
            free(o->e);
            free(o->name);
            free(o);
        }
    memset(t->buckets, 0, sizeof t->buckets);
    t->total = 0;
}

void lists_close(void)
{
    lists_sync_abort();
    pthread_rwlock_wrlock(&live_lock);
    table_free(&live);
    pthread_rwlock_unlock(&live_lock);
    sqlite3_close(db);
    db = NULL;
    change_hook = NULL;
}

void lists_on_change(void (*fn)(bool add, enum list_kind kind, const char *owner, const char *pattern))
{
    change_hook = fn;
}

size_t lists_count(void) { return live.total; }

/* Write one change to the SQLite store. 0, or -1 with err. */
static int store_change(bool add, enum list_kind kind, const char *owner, const char *pattern, char *err,
                        size_t errlen)
{
    if (!valid_name(owner) || !valid_name(pattern)) {
        snprintf(err, errlen, "'%.320s' or '%.320s' is not an address or @domain", owner, pattern);
        return -1;
    }
    if (!db) {
        snprintf(err, errlen, "the lists store is not open");
        return -1;
    }
    sqlite3_stmt *st = NULL;
    const char *sql = add ? "INSERT OR REPLACE INTO entries (owner, kind, pattern, added) VALUES (?1, ?2, ?3, "
                            "strftime('%s','now'))"
                          : "DELETE FROM entries WHERE owner = ?1 AND pattern = ?3";
    char k[2] = {(char)kind, 0};
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, owner, -1, SQLITE_TRANSIENT);
        if (add)
            sqlite3_bind_text(st, 2, k, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, pattern, -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "the lists store: %s", sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

int lists_change(bool add, enum list_kind kind, const char *owner, const char *pattern, char *err, size_t errlen)
{
    if (store_change(add, kind, owner, pattern, err, errlen) < 0)
        return -1;
    pthread_rwlock_wrlock(&live_lock);
    int rc = add ? mem_add(&live, (char)kind, owner, pattern) : mem_del(&live, owner, pattern) ? 0 : 1;
    if (building)      /* a full copy being loaded: the change is newer than it */
        add ? mem_add(building, (char)kind, owner, pattern) : (void)mem_del(building, owner, pattern);
    pthread_rwlock_unlock(&live_lock);
    if (rc < 0)
        snprintf(err, errlen, "out of room (%d entries at most)", LIST_MAX_ENTRIES);
    else if (rc > 0)
        snprintf(err, errlen, "no entry %.320s for %.320s", pattern, owner);
    return rc ? -1 : 0;
}

/* ---- a full copy from elsewhere (lists_shared.c) -------------------- */

int lists_sync_begin(void)
{
    lists_sync_abort();
    building = calloc(1, sizeof *building);
    return building ? 0 : -1;
}

int lists_sync_add(enum list_kind kind, const char *owner, const char *pattern)
{
    if (!building || (kind != LIST_ALLOW && kind != LIST_BLOCK) || !valid_name(owner) || !valid_name(pattern))
        return -1;
    return mem_add(building, (char)kind, owner, pattern);
}

void lists_sync_abort(void)
{
    if (building)
        table_free(building);
    free(building);
    building = NULL;
}

/* The store becomes the copy: one transaction, all or nothing. */
static int store_replace(const struct table *t)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_exec(db, "BEGIN; DELETE FROM entries", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO entries (owner, kind, pattern, added) VALUES (?1, ?2, ?3, "
                                    "strftime('%s','now'))", -1, &st, NULL);
    for (size_t b = 0; rc == SQLITE_OK && b < BUCKETS; b++)
        for (const struct owner *o = t->buckets[b]; rc == SQLITE_OK && o; o = o->next)
            for (size_t i = 0; rc == SQLITE_OK && i < o->n; i++) {
                char k[2] = {o->e[i].kind, 0};
                sqlite3_bind_text(st, 1, o->name, -1, SQLITE_STATIC);
                sqlite3_bind_text(st, 2, k, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(st, 3, o->e[i].pattern, -1, SQLITE_STATIC);
                rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
                sqlite3_reset(st);
            }
    sqlite3_finalize(st);
    if (rc == SQLITE_OK && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    log_error("lists: cannot rewrite the store: %s", sqlite3_errmsg(db));
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

size_t lists_sync_end(void)
{
    if (!building)
        return 0;
    if (db)
        store_replace(building);
    pthread_rwlock_wrlock(&live_lock);
    struct table old = live;
    live = *building;
    pthread_rwlock_unlock(&live_lock);
    table_free(&old);
    free(building);
    building = NULL;
    return live.total;
}

void lists_each_raw(void (*fn)(void *ctx, const char *owner, enum list_kind kind, const char *pattern), void *ctx)
{
    for (size_t b = 0; b < BUCKETS; b++)
        for (const struct owner *o = live.buckets[b]; o; o = o->next)
            for (size_t i = 0; i < o->n; i++)
                fn(ctx, o->name, (enum list_kind)o->e[i].kind, o->e[i].pattern);
}

struct shown {
    const char *owner;
    char kind;
    const char *pattern;
};

static int by_owner_pattern(const void *a, const void *b)
{
    const struct shown *x = a, *y = b;
    int c = strcasecmp(x->owner, y->owner);
    return c ? c : strcasecmp(x->pattern, y->pattern);
}

void lists_each(const char *owner, void (*fn)(void *ctx, const char *owner, enum list_kind kind, const char *pattern),
                void *ctx)
{
    pthread_rwlock_rdlock(&live_lock);
    size_t total = live.total;
    struct shown *all = malloc((total ? total : 1) * sizeof *all);
    size_t n = 0;
    for (size_t b = 0; all && b < BUCKETS; b++)
        for (struct owner *o = live.buckets[b]; o; o = o->next)
            for (size_t i = 0; (!owner || !strcasecmp(owner, o->name)) && i < o->n && n < total; i++)
                all[n++] = (struct shown){o->name, o->e[i].kind, o->e[i].pattern};
    if (all)
        qsort(all, n, sizeof *all, by_owner_pattern);
    for (size_t i = 0; i < n; i++)
        fn(ctx, all[i].owner, (enum list_kind)all[i].kind, all[i].pattern);
    pthread_rwlock_unlock(&live_lock);
    free(all);
}

const char lists_usage[] = "  lists add allow|block OWNER PATTERN   (OWNER: a recipient address, or @domain for all of it)\n"
                           "  lists del OWNER PATTERN\n"
                           "  lists show [OWNER]\n";

static void show_one(void *ctx, const char *owner, enum list_kind kind, const char *pattern)
{
    buf_printf(ctx, "%s %s %s\n", owner, list_kind_name(kind), pattern);
}

int lists_request(int argc, char *const *argv, struct buf *out)
{
    char err[800];
    if (argc >= 1 && !strcmp(argv[0], "show") && argc <= 2) {
        lists_each(argc == 2 ? argv[1] : NULL, show_one, out);
        return 0;
    }
    bool add = argc == 4 && !strcmp(argv[0], "add") && (!strcmp(argv[1], "allow") || !strcmp(argv[1], "block"));
    bool del = argc == 3 && !strcmp(argv[0], "del");
    if (!add && !del) {
        buf_printf(out, "usage:\n%s", lists_usage);
        return 2;
    }
    const char *owner = argv[add ? 2 : 1], *pattern = argv[add ? 3 : 2];
    enum list_kind kind = add && argv[1][0] == 'b' ? LIST_BLOCK : LIST_ALLOW;
    if (lists_change(add, kind, owner, pattern, err, sizeof err) < 0) {
        buf_printf(out, "%s\n", err);
        return -1;
    }
    log_info("lists: %s %s%s%s %s", add ? "added" : "removed", owner, add ? " " : "", add ? argv[1] : "", pattern);
    if (change_hook)
        change_hook(add, kind, owner, pattern);
    buf_printf(out, "%s: %s %s %s\n", owner, add ? "added" : "removed", add ? argv[1] : "entry", pattern);
    return 0;
}

int lists_use_link(const char *nonce, long expires)
{
    if (!db)
        return -1;
    sqlite3_stmt *st = NULL;
    sqlite3_exec(db, "DELETE FROM used_links WHERE expires < strftime('%s','now')", NULL, NULL, NULL);
    if (sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO used_links (nonce, expires) VALUES (?1, ?2)", -1, &st, NULL) !=
        SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, nonce, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, expires);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return -1;
    return sqlite3_changes(db) == 1 ? 1 : 0;
}
