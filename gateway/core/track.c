/* track.c - the tracking store's writer (track.h). Callers on any thread
 * append an event to a bounded FIFO under a mutex (one malloc, no I/O);
 * one thread takes the whole FIFO every TRACK_BATCH_MS, or sooner when
 * TRACK_BATCH events wait, and inserts it in one SQLite transaction (WAL,
 * synchronous=NORMAL: tracking is a record, not the mail, so a power loss
 * may lose its last batch). Every TRACK_HOUSEKEEP_S it deletes events older
 * than tracking_retention and, over tracking_max_size, the oldest tenth,
 * and gives the pages back (incremental auto-vacuum).
 *
 * Why SQLite: an embedded file on the node needs no server to install or
 * keep running; indexes answer "from X to Y yesterday" without scanning;
 * WAL lets `postern track` and the console read while the writer writes;
 * Debian's libsqlite3 is already used by the greylist plugin. */
#include "track.h"
#include "log.h"
#include "metrics.h"
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TRACK_BATCH 2000
#define TRACK_BATCH_MS 200
#define TRACK_HOUSEKEEP_S 600
#define TRACK_FIELD_MAX 1024      /* longer strings are cut */

enum { F_STATUS, F_QID, F_FROM, F_TO, F_CLIENT, F_HELO, F_STAGE, F_LINK, F_REPLY, NFIELDS };

struct tev {
    struct tev *next;
    int64_t ms;
    unsigned long session;
    const char *f[NFIELDS];     /* into data */
    char data[];
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct tev *head, **tail;
    size_t pending;
    bool running, stopping;
    pthread_t thread;
    sqlite3 *db;
    sqlite3_stmt *insert;
    long retention;
    size_t max_size;
    time_t last_housekeep;
    uint64_t dropped;
} tr = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static const char schema[] =
    "PRAGMA auto_vacuum = INCREMENTAL;"
    "PRAGMA journal_mode = WAL;"
    "PRAGMA synchronous = NORMAL;"
    "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, time INTEGER NOT NULL, status TEXT NOT NULL,"
    " qid TEXT, sender TEXT, rcpt TEXT, client TEXT, helo TEXT, stage TEXT, link TEXT, reply TEXT, session INTEGER);"
    "CREATE INDEX IF NOT EXISTS events_time ON events (time);"
    "CREATE INDEX IF NOT EXISTS events_qid ON events (qid);"
    "CREATE INDEX IF NOT EXISTS events_sender ON events (sender COLLATE NOCASE);"
    "CREATE INDEX IF NOT EXISTS events_rcpt ON events (rcpt COLLATE NOCASE);"
    "CREATE INDEX IF NOT EXISTS events_client ON events (client);";

void track_db_path(const struct config *cfg, char *out, size_t size)
{
    if (cfg->tracking_db && cfg->tracking_db[0])
        snprintf(out, size, "%s", cfg->tracking_db);
    else
        snprintf(out, size, "%s/tracking.db", cfg->spool_dir);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void (*_Atomic tap_fn)(const struct track_event *e, int64_t ms);

void track_set_tap(void (*tap)(const struct track_event *e, int64_t ms)) { tap_fn = tap; }

void track_event(const struct track_event *e)
{
    void (*tap)(const struct track_event *, int64_t) = tap_fn;
    if (tap)
        tap(e, now_ms());
    if (!tr.running)
        return;
    const char *in[NFIELDS] = {e->status, e->qid, e->from, e->to, e->client, e->helo, e->stage, e->link, e->reply};
    size_t len[NFIELDS], total = 0;
    for (int i = 0; i < NFIELDS; i++) {
        len[i] = in[i] ? strnlen(in[i], TRACK_FIELD_MAX) : 0;
        total += len[i] + 1;
    }
    struct tev *t = malloc(sizeof *t + total);
    if (!t)
        return;
    t->next = NULL;
    t->ms = now_ms();
    t->session = e->session;
    char *p = t->data;
    for (int i = 0; i < NFIELDS; i++) {
        memcpy(p, in[i] ? in[i] : "", len[i]);
        p[len[i]] = '\0';
        t->f[i] = i == F_QID && !in[i] ? NULL : p;     /* a refusal has no queue ID: NULL in the store */
        p += len[i] + 1;
    }
    pthread_mutex_lock(&tr.lock);
    bool full = tr.pending >= TRACK_MAX_PENDING;
    if (!full) {
        *tr.tail = t;
        tr.tail = &t->next;
        if (++tr.pending >= TRACK_BATCH)
            pthread_cond_signal(&tr.wake);
    } else {
        tr.dropped++;
    }
    pthread_mutex_unlock(&tr.lock);
    if (full) {
        free(t);
        metric_inc(M_TRACK_DROPPED, NULL);
    }
}

static void insert_batch(struct tev *list)
{
    if (sqlite3_exec(tr.db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        log_error("tracking: BEGIN: %s", sqlite3_errmsg(tr.db));
    size_t n = 0, failed = 0;
    for (struct tev *t = list; t; t = t->next, n++) {
        sqlite3_stmt *s = tr.insert;
        sqlite3_reset(s);
        sqlite3_bind_int64(s, 1, t->ms);
        for (int i = 0; i < NFIELDS; i++) {
            if (t->f[i])
                sqlite3_bind_text(s, 2 + i, t->f[i], -1, SQLITE_STATIC);
            else
                sqlite3_bind_null(s, 2 + i);
        }
        sqlite3_bind_int64(s, 2 + NFIELDS, (sqlite3_int64)t->session);
        failed += sqlite3_step(s) != SQLITE_DONE;
    }
    if (sqlite3_exec(tr.db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK || failed) {
        log_error("tracking: %zu of %zu event(s) not written: %s", failed ? failed : n, n, sqlite3_errmsg(tr.db));
        sqlite3_exec(tr.db, "ROLLBACK", NULL, NULL, NULL);
    }
    metric_add(M_TRACK_EVENTS, NULL, n);
}

/* Events past tracking_retention go; over tracking_max_size the oldest tenth. */
static void housekeep(void)
{
    char sql[200];
    snprintf(sql, sizeof sql, "DELETE FROM events WHERE time < %lld",
             (long long)(now_ms() - (int64_t)tr.retention * 1000));
    if (sqlite3_exec(tr.db, sql, NULL, NULL, NULL) != SQLITE_OK)
        log_error("tracking: expiring old events: %s", sqlite3_errmsg(tr.db));
    int expired = sqlite3_changes(tr.db);
    sqlite3_stmt *st;
    sqlite3_int64 pages = 0;      /* the store's size in bytes */
    if (sqlite3_prepare_v2(tr.db, "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()", -1,
                           &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) {
            pages = sqlite3_column_int64(st, 0);
        }
        sqlite3_finalize(st);
    }
    if (tr.max_size && (size_t)pages > tr.max_size) {
        sqlite3_exec(tr.db, "DELETE FROM events WHERE id <= (SELECT MIN(id) + (MAX(id) - MIN(id)) / 10 FROM events)",
                     NULL, NULL, NULL);
        log_info("tracking: the store is %lld bytes, over tracking_max_size: the oldest tenth of the events removed",
                 (long long)pages);
    }
    if (expired > 0 || (tr.max_size && (size_t)pages > tr.max_size))
        sqlite3_exec(tr.db, "PRAGMA incremental_vacuum", NULL, NULL, NULL);
    if (expired > 0)
        log_info("tracking: %d event(s) older than %lds removed", expired, tr.retention);
}

static void *writer(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&tr.lock);
    for (;;) {
        while (!tr.stopping && tr.pending < TRACK_BATCH) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += TRACK_BATCH_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            if (pthread_cond_timedwait(&tr.wake, &tr.lock, &until) == ETIMEDOUT)
                break;
        }
        struct tev *list = tr.head;
        tr.head = NULL;
        tr.tail = &tr.head;
        tr.pending = 0;
        bool stop = tr.stopping;
        pthread_mutex_unlock(&tr.lock);
        if (list)
            insert_batch(list);
        while (list) {
            struct tev *next = list->next;
            free(list);
            list = next;
        }
        time_t now = time(NULL);
        if (now - tr.last_housekeep >= TRACK_HOUSEKEEP_S) {
            tr.last_housekeep = now;
            housekeep();
        }
        if (stop)
            return NULL;
        pthread_mutex_lock(&tr.lock);
    }
}

static int open_store(const char *path, char *err, size_t errlen)
{
    if (sqlite3_open_v2(path, &tr.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOFOLLOW, NULL) !=
            SQLITE_OK ||
        sqlite3_busy_timeout(tr.db, 5000) != SQLITE_OK || sqlite3_exec(tr.db, schema, NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(tr.db, "INSERT INTO events (time, status, qid, sender, rcpt, client, helo, stage, link, "
                                  "reply, session) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                           -1, &tr.insert, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "tracking_db %s: %s", path, tr.db ? sqlite3_errmsg(tr.db) : "out of memory");
        sqlite3_close(tr.db);
        tr.db = NULL;
        return -1;
    }
    return 0;
}

int track_start(const struct config *cfg, char *err, size_t errlen)
{
    if (!cfg->tracking || tr.running)
        return 0;
    char path[4096];
    track_db_path(cfg, path, sizeof path);
    if (open_store(path, err, errlen) < 0)
        return -1;
    tr.retention = cfg->tracking_retention;
    tr.max_size = cfg->tracking_max_size;
    tr.head = NULL;
    tr.tail = &tr.head;
    tr.stopping = false;
    tr.last_housekeep = 0;       /* at once: a restart after a long stop expires what is due */
    tr.running = true;
    if (pthread_create(&tr.thread, NULL, writer, NULL) != 0) {
        tr.running = false;
        snprintf(err, errlen, "tracking: cannot start its thread");
        return -1;
    }
    log_info("tracking: %s, events kept %lds", path, tr.retention);
    return 0;
}

void track_stop(void)
{
    if (!tr.running)
        return;
    pthread_mutex_lock(&tr.lock);
    tr.stopping = true;
    pthread_cond_signal(&tr.wake);
    pthread_mutex_unlock(&tr.lock);
    pthread_join(tr.thread, NULL);
    tr.running = false;
    for (struct tev *t = tr.head, *next; t; t = next) {     /* queued after the last batch */
        next = t->next;
        free(t);
    }
    tr.head = NULL;
    tr.tail = &tr.head;
    sqlite3_finalize(tr.insert);
    sqlite3_close(tr.db);
    tr.insert = NULL;
    tr.db = NULL;
    if (tr.dropped)
        log_error("tracking: %llu event(s) dropped while the writer was behind", (unsigned long long)tr.dropped);
}
