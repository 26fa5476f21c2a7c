/* console_track.c - the console's message tracking page (/track) and
 * /api/track: a search form (sender, recipient, client, queue ID, status,
 * time), one row per message and recipient with its last status, and a
 * message's whole timeline (?id=). It reads the tracking store read-only
 * (track_query.c) on libmicrohttpd's thread, never the SMTP loop's. */
#include "console_track.h"
#include "console_web.h"
#include "track_query.h"
#include "utc_time.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char db_path[4096];     /* "" when tracking is off */

static const char *const statuses[] = {"rejected", "queued", "quarantined", "deferred", "delivered",
                                       "bounced", "released", "deleted", "dropped"};

void console_track_configure(const char *path) { snprintf(db_path, sizeof db_path, "%s", path ? path : ""); }

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
    buf_printf(o->b, "<tr class=\"%s\"><td>%s</td><td>", r->status ? r->status : "", when);
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

enum MHD_Result console_track_page(struct MHD_Connection *c, const struct console_session *s, bool api)
{
    if (!db_path[0])
        return api ? json_error(c, MHD_HTTP_NOT_FOUND, "tracking = no")
                   : text_status(c, MHD_HTTP_NOT_FOUND, "message tracking is off (tracking = no)\n");
    struct track_query q;
    const char *bad = query_of(c, &q);
    if (bad)
        return api ? json_error(c, MHD_HTTP_BAD_REQUEST, bad) : text_status(c, MHD_HTTP_BAD_REQUEST, bad);
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
