/* track_query.c - see track_query.h. Read-only connections (WAL: readers
 * never wait on the writer), statements with bound parameters only. */
#include "utc_time.h"
#include "track_query.h"
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The last event per message and recipient among those with a matching
 * event; a message's client comes from its session's events. */
static const char last_sql[] =
    "WITH hit AS (SELECT id, qid, rcpt FROM events WHERE (?1 IS NULL OR sender LIKE ?1 ESCAPE '\\') "
    " AND (?2 IS NULL OR rcpt LIKE ?2 ESCAPE '\\') AND (?3 IS NULL OR client = ?3) AND (?4 IS NULL OR qid = ?4)"
    " AND (?5 IS NULL OR time >= ?5) AND (?6 IS NULL OR time <= ?6)),"
    " last AS (SELECT id FROM hit WHERE qid IS NULL UNION"
    "  SELECT (SELECT MAX(e2.id) FROM events e2 WHERE e2.qid = h.qid AND e2.rcpt = h.rcpt) FROM hit h"
    "  WHERE h.qid IS NOT NULL)"
    " SELECT e.time, e.status, e.qid, e.sender, e.rcpt,"
    "  COALESCE(NULLIF(e.client, ''), (SELECT client FROM events e3 WHERE e3.qid = e.qid AND e3.client != '' LIMIT 1),"
    "  ''), e.helo, e.stage, e.link, e.reply"
    " FROM events e WHERE e.id IN (SELECT id FROM last) AND (?7 IS NULL OR e.status = ?7)"
    " ORDER BY e.time, e.id LIMIT ?8";

static const char timeline_sql[] =
    "SELECT time, status, qid, sender, rcpt, client, helo, stage, link, reply FROM events WHERE qid = ?1 "
    "ORDER BY id";

static int open_ro(const char *path, sqlite3 **db, char *err, size_t errlen)
{
    if (sqlite3_open_v2(path, db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOFOLLOW, NULL) != SQLITE_OK ||
        sqlite3_busy_timeout(*db, 5000) != SQLITE_OK) {
        snprintf(err, errlen, "tracking store %s: %s", path, *db ? sqlite3_errmsg(*db) : "out of memory");
        sqlite3_close(*db);
        return -1;
    }
    return 0;
}

/* A LIKE pattern for ADDR (exact), @DOMAIN (at the end), "<>" (empty) or a
 * part of the address; NULL for no filter. The caller frees it. */
static char *like_of(const char *want)
{
    if (!want || !want[0])
        return NULL;
    if (!strcmp(want, "<>"))
        return strdup("");
    size_t n = strlen(want);
    char *p = malloc(2 * n + 3), *o = p;
    if (!p)
        return NULL;
    bool exact = strchr(want, '@') && want[0] != '@';
    if (!exact)
        *o++ = '%';
    for (const char *c = want; *c; c++) {
        if (*c == '%' || *c == '_' || *c == '\\')
            *o++ = '\\';
        *o++ = *c;
    }
    if (!exact && want[0] != '@')
        *o++ = '%';
    *o = '\0';
    return p;
}

static void bind_text_or_null(sqlite3_stmt *s, int i, const char *v)
{
    if (v && v[0])
        sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(s, i);
}

static const char *col(sqlite3_stmt *s, int i) { return (const char *)sqlite3_column_text(s, i); }

static int each_row(sqlite3 *db, sqlite3_stmt *s, track_record_fn fn, void *ctx, char *err, size_t errlen)
{
    int n = 0, rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct track_record r = {.ms = sqlite3_column_int64(s, 0), .status = col(s, 1), .qid = col(s, 2),
                                 .from = col(s, 3), .to = col(s, 4), .client = col(s, 5), .helo = col(s, 6),
                                 .stage = col(s, 7), .link = col(s, 8), .reply = col(s, 9)};
        fn(ctx, &r);
        n++;
    }
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "tracking store: %s", sqlite3_errmsg(db));
        return -1;
    }
    return n;
}

int track_query_last(const char *db_path, const struct track_query *q, track_record_fn fn, void *ctx, char *err,
                     size_t errlen)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    if (open_ro(db_path, &db, err, errlen) < 0)
        return -1;
    if (sqlite3_prepare_v2(db, last_sql, -1, &s, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "tracking store %s: %s", db_path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return -1;
    }
    char *from = like_of(q->from), *to = like_of(q->to);
    bind_text_or_null(s, 1, from);
    if (from && !from[0])
        sqlite3_bind_text(s, 1, "", -1, SQLITE_STATIC);     /* "<>": the null sender */
    bind_text_or_null(s, 2, to);
    bind_text_or_null(s, 3, q->client);
    bind_text_or_null(s, 4, q->qid);
    if (q->since >= 0)
        sqlite3_bind_int64(s, 5, (sqlite3_int64)q->since * 1000);
    if (q->until >= 0)
        sqlite3_bind_int64(s, 6, (sqlite3_int64)q->until * 1000 + 999);
    bind_text_or_null(s, 7, q->status);
    sqlite3_bind_int64(s, 8, q->limit > 0 ? q->limit : TRACK_QUERY_LIMIT);
    int n = each_row(db, s, fn, ctx, err, errlen);
    free(from);
    free(to);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

int track_query_timeline(const char *db_path, const char *qid, track_record_fn fn, void *ctx, char *err,
                         size_t errlen)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    if (open_ro(db_path, &db, err, errlen) < 0)
        return -1;
    if (sqlite3_prepare_v2(db, timeline_sql, -1, &s, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "tracking store %s: %s", db_path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return -1;
    }
    sqlite3_bind_text(s, 1, qid, -1, SQLITE_TRANSIENT);
    int n = each_row(db, s, fn, ctx, err, errlen);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

static void iso_time(int64_t ms, char *out, size_t size) { utc_time_format((time_t)(ms / 1000), out, size); }

static const char *or_empty(const char *s) { return s ? s : ""; }

void track_record_text(const struct track_record *r, struct buf *out)
{
    char when[32];
    iso_time(r->ms, when, sizeof when);
    if (r->node)
        buf_printf(out, "[%s] ", r->node);
    buf_printf(out, "%s  %-16s  %-11s  from=<%s> to=<%s> client=%s  %s %s: %s\n", when, r->qid ? r->qid : "-",
               or_empty(r->status), or_empty(r->from), or_empty(r->to), r->client && r->client[0] ? r->client : "-",
               or_empty(r->stage), or_empty(r->link), or_empty(r->reply));
}

void track_record_json(const struct track_record *r, struct buf *out)
{
    char when[32];
    iso_time(r->ms, when, sizeof when);
    json_t *o = json_pack("{s:s,s:I,s:s,s:s,s:s,s:s,s:s?,s:s,s:s,s:s,s:s}", "time", when, "ms", (json_int_t)r->ms,
                          "status", or_empty(r->status), "from", or_empty(r->from), "to", or_empty(r->to), "client",
                          or_empty(r->client), "queue_id", r->qid, "helo", or_empty(r->helo), "stage",
                          or_empty(r->stage), "link", or_empty(r->link), "reply", or_empty(r->reply));
    if (o && r->node)
        json_object_set_new(o, "node", json_string(r->node));
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    if (text)
        buf_puts(out, text);
    free(text);
    json_decref(o);
}
