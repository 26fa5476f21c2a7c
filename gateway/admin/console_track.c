/* console_track.c - the console's message tracking page (/track) and
 * /api/track: a search form (sender, recipient, client, queue ID, status,
 * time), one row per message and recipient with its last status, and a
 * message's whole timeline (?id=). It reads the tracking store read-only
 * (track_query.c) on libmicrohttpd's thread, never the SMTP loop's. */
#include "console_track.h"
#include "log.h"
#include "console_web.h"
#include "track_query.h"
#include "utc_time.h"
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char db_path[4096];     /* "" when tracking is off */
static struct fleet_nodes fleet;
static char *fleet_token;      /* NULL: no peer may ask */

static const char *const statuses[] = {"rejected", "queued", "quarantined", "deferred", "delivered",
                                       "bounced", "released", "deleted", "dropped"};

void console_track_configure(const char *path, const struct fleet_nodes *nodes, const char *token)
{
    snprintf(db_path, sizeof db_path, "%s", path ? path : "");
    if (fleet_copy(&fleet, nodes) < 0)
        log_error("console: out of memory copying fleet_nodes (fleet searches are off)");
    fleet_token = token ? strdup(token) : NULL;
}

bool console_track_peer(struct MHD_Connection *c)
{
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    return fleet_token && auth && !strncmp(auth, "Bearer ", 7) && console_secret_equal(auth + 7, fleet_token);
}

/* The query from the page's fields; NULL, or why it is refused. */
static const char *query_of(struct MHD_Connection *c, struct track_query *q)
{
    *q = (struct track_query){.from = query(c, "from"), .to = query(c, "to"), .client = query(c, "client"),
                              .qid = query(c, "id"), .status = query(c, "status"), .since = -1, .until = -1,
                              .limit = 500};
    bool known = !q->status[0];
    for (size_t i = 0; i < sizeof statuses / sizeof *statuses; i++)
        known |= !strcmp(q->status, statuses[i]);
    if (!known)
        return "unknown status";
    const char *since = query(c, "since"), *until = query(c, "until");
    if ((since[0] && utc_time_parse(since, false, &q->since) < 0) || (until[0] && utc_time_parse(until, true, &q->until) < 0))
        return "a date is 2026-12-07, 2026-12-07 10:00 or 2026-12-07 10:00:30 (UTC)";
    return NULL;
}

struct rows {
    struct buf *b;
    json_t *list;          /* the API's */
    size_t n;
    bool fleet;            /* a node column first */
};

static void add_json(void *ctx, const struct track_record *r)
{
    struct rows *o = ctx;
    struct buf one;
    buf_init(&one);
    track_record_json(r, &one);
    buf_append(&one, "", 1);
    json_t *j = json_loads(buf_head(&one), 0, NULL);
    if (j)
        json_array_append_new(o->list, j);
    buf_free(&one);
    o->n++;
}

static void add_row(void *ctx, const struct track_record *r)
{
    struct rows *o = ctx;
    char when[32];
    time_t t = (time_t)(r->ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    buf_printf(o->b, "<tr class=\"%s\">", r->status ? r->status : "");
    if (o->fleet) {
        buf_puts(o->b, "<td>");
        html(o->b, r->node ? r->node : "this node");
        buf_puts(o->b, "</td>");
    }
    buf_printf(o->b, "<td>%s</td><td>", when);
    if (r->qid) {
        buf_puts(o->b, "<a href=\"/track?id=");
        url_enc(o->b, r->qid);
        buf_puts(o->b, "\">");
        html(o->b, r->qid);
        buf_puts(o->b, "</a>");
    } else {
        buf_puts(o->b, "-");
    }
    const char *cells[] = {r->status, r->from, r->to, r->client, r->stage, r->link, r->reply};
    for (size_t i = 0; i < sizeof cells / sizeof *cells; i++) {
        buf_puts(o->b, "</td><td>");
        html(o->b, cells[i] ? cells[i] : "");
    }
    buf_puts(o->b, "</td></tr>\n");
    o->n++;
}

static void search_form(struct buf *b, struct MHD_Connection *c)
{
    buf_puts(b, "<form method=\"get\" action=\"/track\" id=\"track-search\">");
    const char *names[] = {"from", "to", "client", "id", "since", "until"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        buf_printf(b, "%s <input name=\"%s\" value=\"", names[i], names[i]);
        html_attr(b, query(c, names[i]));
        buf_puts(b, "\" size=\"16\"> ");
    }
    buf_puts(b, "status <select name=\"status\"><option value=\"\">any</option>");
    for (size_t i = 0; i < sizeof statuses / sizeof *statuses; i++)
        buf_printf(b, "<option%s>%s</option>", !strcmp(query(c, "status"), statuses[i]) ? " selected" : "",
                   statuses[i]);
    buf_puts(b, "</select> <button type=\"submit\">Search</button></form>\n");
}

/* This node's records and the other nodes' for q, merged, as a page or
 * JSON ({"records": [...], "errors": ["node b: ..."]}). */
static enum MHD_Result fleet_page(struct MHD_Connection *c, const struct console_session *s, bool api,
                                  const struct track_query *q)
{
    struct track_set set = {0};
    struct buf errors, b;
    buf_init(&errors);
    buf_init(&b);
    char err[600];
    int n = q->qid[0] ? track_query_timeline(db_path, q->qid, track_set_add, &set, err, sizeof err)
                      : track_query_last(db_path, q, track_set_add, &set, err, sizeof err);
    if (n < 0)
        buf_printf(&errors, "this node: %s\n", err);
    fleet_track(&fleet, q, &set, &errors);
    track_set_sort(&set);
    buf_append(&errors, "", 1);
    json_t *list = api ? json_array() : NULL;
    struct rows o = {.b = &b, .list = list, .fleet = true};
    if (!api) {
        page_start(&b, "Message tracking (fleet)", s);
        search_form(&b, c);
        buf_puts(&b, "<table id=\"tracking\"><tr><th>node</th><th>time (UTC)</th><th>queue ID</th><th>status</th>"
                     "<th>from</th><th>to</th><th>client</th><th>stage</th><th>link or relay</th><th>reply</th></tr>\n");
    }
    for (size_t i = 0; i < set.n; i++)
        (api ? add_json : add_row)(&o, &set.v[i]);
    track_set_free(&set);
    char *save = NULL;
    json_t *errs = api ? json_array() : NULL;
    if (!api)
        buf_puts(&b, "</table>\n<ul id=\"fleet-errors\">");
    for (char *line = strtok_r(buf_head(&errors), "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (api) {
            json_array_append_new(errs, json_string(line));
            continue;
        }
        buf_puts(&b, "<li>");
        html(&b, line);
        buf_puts(&b, "</li>");
    }
    buf_free(&errors);
    if (api) {
        buf_free(&b);
        return json_response(c, MHD_HTTP_OK, json_pack("{s:o,s:o}", "records", list, "errors", errs));
    }
    buf_printf(&b, "</ul>\n<p id=\"track-count\">%zu record(s) from %zu node(s)</p></body></html>\n", o.n,
               fleet.n + 1);
    return send_response(c, MHD_HTTP_OK, "text/html; charset=utf-8", &b, NULL, NULL);
}

enum MHD_Result console_track_page(struct MHD_Connection *c, const struct console_session *s, bool api, bool peer)
{
    if (!db_path[0])
        return api ? json_error(c, MHD_HTTP_NOT_FOUND, "tracking = no")
                   : text_status(c, MHD_HTTP_NOT_FOUND, "message tracking is off (tracking = no)\n");
    struct track_query q;
    const char *bad = query_of(c, &q);
    if (bad)
        return api ? json_error(c, MHD_HTTP_BAD_REQUEST, bad) : text_status(c, MHD_HTTP_BAD_REQUEST, bad);
    if (!peer && fleet.n && !strcmp(query(c, "fleet"), "1"))
        return fleet_page(c, s, api, &q);
    char err[600];
    bool timeline = q.qid[0] != '\0';
    struct buf b;
    buf_init(&b);
    struct rows o = {.b = &b, .list = api ? json_array() : NULL};
    if (!api) {
        page_start(&b, timeline ? "Message timeline" : "Message tracking", s);
        search_form(&b, c);
        buf_puts(&b, "<table id=\"tracking\"><tr><th>time (UTC)</th><th>queue ID</th><th>status</th><th>from</th>"
                     "<th>to</th><th>client</th><th>stage</th><th>link or relay</th><th>reply</th></tr>\n");
    }
    track_record_fn fn = api ? add_json : add_row;
    int n = timeline ? track_query_timeline(db_path, q.qid, fn, &o, err, sizeof err)
                     : track_query_last(db_path, &q, fn, &o, err, sizeof err);
    if (n < 0) {
        buf_free(&b);
        json_decref(o.list);
        return api ? json_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, err) : text_status(c, MHD_HTTP_SERVICE_UNAVAILABLE, err);
    }
    if (api) {
        buf_free(&b);
        return json_response(c, MHD_HTTP_OK, o.list);
    }
    buf_printf(&b, "</table>\n<p id=\"track-count\">%d record(s)%s</p>", n,
               !timeline && n >= 500 ? " (the first 500: narrow the search)" : "");
    buf_puts(&b, "<p>JSON: <a href=\"/api/track\">/api/track</a> (same fields)</p></body></html>\n");
    return send_response(c, MHD_HTTP_OK, "text/html; charset=utf-8", &b, NULL, NULL);
}

/* ---- the last 24 hours ----------------------------------------------- */

enum { S_ACCEPTED, S_REJECTED, S_DELIVERED, S_DEFERRED, S_BOUNCED, NSERIES };
static const char *const series_name[NSERIES] = {"accepted", "rejected", "delivered", "deferred", "bounced"};
static const char *const series_color[NSERIES] = {"#3b73b9", "#c0392b", "#2e8b57", "#e0a100", "#7f3c8d"};
static const char *const refusal_stages[] = {"connect", "helo", "mail", "rcpt", "data", "body", "eom"};
#define NSTAGES (sizeof refusal_stages / sizeof *refusal_stages)

struct day {
    long per_hour[24][NSERIES];
    long total[NSERIES];
    long rejected_at[NSTAGES];
};

static int series_of(const char *status)
{
    if (!strcmp(status, "queued") || !strcmp(status, "quarantined"))
        return S_ACCEPTED;
    for (int i = 1; i < NSERIES; i++)
        if (!strcmp(status, series_name[i]))
            return i;
    return -1;
}

/* Counts per hour and status of the last 24 hours; -1 when unreadable. */
static int read_day(struct day *d)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t now_ms = (int64_t)time(NULL) * 1000, from = now_ms - 24 * 3600 * 1000LL;
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOFOLLOW, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT (time - ?1) / 3600000, status, stage, COUNT(*) FROM events WHERE time >= ?1 "
                               "GROUP BY 1, 2, 3", -1, &st, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return -1;
    }
    sqlite3_bind_int64(st, 1, from);
    while (sqlite3_step(st) == SQLITE_ROW) {
        long hour = (long)sqlite3_column_int64(st, 0), n = (long)sqlite3_column_int64(st, 3);
        const char *status = (const char *)sqlite3_column_text(st, 1), *stage = (const char *)sqlite3_column_text(st, 2);
        int k = status ? series_of(status) : -1;
        if (k < 0 || hour < 0 || hour > 23)
            continue;
        d->per_hour[hour][k] += n;
        d->total[k] += n;
        for (size_t i = 0; k == S_REJECTED && stage && i < NSTAGES; i++)
            if (!strcmp(stage, refusal_stages[i]))
                d->rejected_at[i] += n;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return 0;
}

void console_track_chart(struct buf *b)
{
    struct day d;
    memset(&d, 0, sizeof d);
    if (!db_path[0] || read_day(&d) < 0)
        return;
    buf_puts(b, "<p class=\"legend\" id=\"last-day\">last 24 hours:");
    for (int k = 0; k < NSERIES; k++) {
        buf_printf(b, " <span><svg width=\"10\" height=\"10\"><rect width=\"10\" height=\"10\" fill=\"%s\"/></svg> "
                      "%s %ld", series_color[k], series_name[k], d.total[k]);
        if (k == S_REJECTED && d.total[k]) {
            const char *sep = " (";
            for (size_t i = 0; i < NSTAGES; i++)
                if (d.rejected_at[i]) {
                    buf_printf(b, "%sat %s %ld", sep, refusal_stages[i], d.rejected_at[i]);
                    sep = ", ";
                }
            buf_puts(b, ")");
        }
        buf_puts(b, "</span>");
    }
    buf_puts(b, "</p>\n");
    long top = 1;
    for (int h = 0; h < 24; h++)
        for (int k = 0; k < NSERIES; k++)
            top = d.per_hour[h][k] > top ? d.per_hour[h][k] : top;
    const int width = 960, height = 120, group = width / 24, bar = (group - 6) / NSERIES;
    buf_printf(b, "<svg class=\"chart\" id=\"chart\" width=\"%d\" height=\"%d\" role=\"img\" "
                  "aria-label=\"messages per hour, last 24 hours\">", width, height + 16);
    for (int h = 0; h < 24; h++) {
        for (int k = 0; k < NSERIES; k++) {
            long n = d.per_hour[h][k];
            int hgt = (int)((double)n * height / (double)top);
            if (n && hgt < 1)
                hgt = 1;
            buf_printf(b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\"><title>%s: %ld</title></rect>",
                       h * group + 3 + k * bar, height - hgt, bar, hgt, series_color[k], series_name[k], n);
        }
        if (h % 3 == 0)
            buf_printf(b, "<text x=\"%d\" y=\"%d\" font-size=\"10\" fill=\"#555\">-%dh</text>", h * group + 3,
                       height + 12, 24 - h);
    }
    buf_puts(b, "</svg>\n");
}
