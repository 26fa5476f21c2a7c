/* console_queue.c - the console's queue and quarantine pages and their
 * JSON (/api/queue, /api/quarantine): filters, sorting by age or size,
 * pages of PAGE_ROWS rows chosen by the daemon (`list --offset --limit
 * --sort`, so 100,000 queued messages cost one page, not one huge list),
 * a Subject column read from the spool for the rows shown, the hold reason
 * or last error, and the bulk form (checkboxes, "all that match"). Above
 * the queue: today's counters and a server-drawn chart of the last 24
 * hours from the tracking store. */
#include "console_int.h"
#include "metrics.h"
#include "queue_view.h"
#include "spool.h"
#include "console_track.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define PAGE_ROWS 100

static void counters(struct buf *b)
{
    buf_printf(b, "<p class=\"counters\"><span id=\"queue-size\">queue: %lld</span><span>sessions open: %lld</span>"
                  "<span>accepted: %lld</span><span>delivered: %lld</span><span>deferred: %lld</span>"
                  "<span>bounced: %lld</span></p>\n",
               (long long)metric_value(M_QUEUE_MESSAGES, NULL), (long long)metric_value(M_SESSIONS_OPEN, NULL),
               (long long)metric_value(M_MESSAGES_ACCEPTED, NULL),
               (long long)metric_value(M_DELIVERIES, "result=\"delivered\""),
               (long long)metric_value(M_DELIVERIES, "result=\"deferred\""),
               (long long)metric_value(M_DELIVERIES, "result=\"bounced\""));
}

/* The page asked for: its filter, order and number (from 1). */
struct view {
    struct filter f;
    bool quarantine;
    char sort[16];
    long page;
};

static void view_read(struct MHD_Connection *c, bool quarantine, struct view *v)
{
    filter_read(&v->f, from_query, c, quarantine);
    v->quarantine = quarantine;
    const char *sort = query(c, "sort");
    snprintf(v->sort, sizeof v->sort, "%s", !strcmp(sort, "newest") || !strcmp(sort, "largest") ||
                                                    !strcmp(sort, "smallest") ? sort : "oldest");
    v->page = atol(query(c, "page"));
    if (v->page < 1)
        v->page = 1;
}

/* One page from the daemon: {"total", "offset", "messages"} (NULL: why in err). */
static json_t *page_from_daemon(const struct view *v, long offset, long limit, char *err, size_t errlen)
{
    struct action_words w = {.argc = 0};
    char off[32], lim[32];
    snprintf(off, sizeof off, "%ld", offset);
    snprintf(lim, sizeof lim, "%ld", limit);
    const char *words[] = {"list", "--json", "--sort", v->sort, "--offset", off, "--limit", lim};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        add_word(&w, words[i]);
    filter_words(&v->f, &w);
    struct buf req;
    buf_init(&req);
    json_t *j = words_request(&w, &req, err, errlen) == 0 ? queue_json(buf_head(&req), err, errlen) : NULL;
    buf_free(&req);
    return j;
}

/* 1234 -> "1.2 KB", as a person reads it. */
static void human_size(long long n, char *out, size_t size)
{
    if (n < 1024)
        snprintf(out, size, "%lld B", n);
    else if (n < 1024 * 1024)
        snprintf(out, size, "%.1f KB", (double)n / 1024);
    else
        snprintf(out, size, "%.1f MB", (double)n / (1024 * 1024));
}

/* A link to this page with one thing changed (page, sort). */
static void page_link(struct buf *b, const struct view *v, const char *sort, long page, const char *label)
{
    buf_printf(b, "<a href=\"%s?sort=%s&amp;page=%ld", v->quarantine ? "/quarantine" : "/", sort, page);
    for (size_t i = 0; i < FILTER_FIELDS; i++) {
        const char *val = v->quarantine && !strcmp(filter_fields[i], "state") ? "" : filter_field(&v->f, i);
        if (val[0]) {
            buf_printf(b, "&amp;%s=", filter_fields[i]);
            url_enc(b, val);
        }
    }
    if (v->f.min_age)
        buf_printf(b, "&amp;min_age=%ld", v->f.min_age / 60);
    buf_puts(b, "\">");
    html(b, label);
    buf_puts(b, "</a>");
}

static void filter_form(struct buf *b, const struct view *v)
{
    buf_printf(b, "<form method=\"get\" action=\"%s\" id=\"filter\">", v->quarantine ? "/quarantine" : "/");
    for (size_t i = 0; i < FILTER_FIELDS; i++) {
        if (!strcmp(filter_fields[i], "state") || (v->quarantine && !strcmp(filter_fields[i], "queue")))
            continue;      /* state: a list below; the spam quarantine has no named queues */
        buf_printf(b, "%s <input name=\"%s\" value=\"", filter_fields[i], filter_fields[i]);
        html_attr(b, filter_field(&v->f, i));
        buf_puts(b, "\" size=\"14\"> ");
    }
    if (!v->quarantine) {
        buf_puts(b, "state <select name=\"state\">");
        const char *states[] = {"", "queued", "deferred", "active", "hold"};
        for (int i = 0; i < 5; i++)
            buf_printf(b, "<option value=\"%s\"%s>%s</option>", states[i], !strcmp(states[i], v->f.state) ? " selected" : "",
                       states[i][0] ? states[i] : "any");
        buf_puts(b, "</select> ");
    }
    buf_printf(b, "older than <input name=\"min_age\" value=\"%ld\" size=\"4\"> min "
                  "<input type=\"hidden\" name=\"sort\" value=\"%s\"><button type=\"submit\">Filter</button></form>\n",
               v->f.min_age / 60, v->sort);
}

/* The filter as hidden fields of the bulk form ("all that match"). */
static void filter_hidden(struct buf *b, const struct view *v)
{
    for (size_t i = 0; i < FILTER_FIELDS; i++) {
        buf_printf(b, "<input type=\"hidden\" name=\"%s\" value=\"", filter_fields[i]);
        html_attr(b, filter_field(&v->f, i));
        buf_puts(b, "\">");
    }
    buf_printf(b, "<input type=\"hidden\" name=\"min_age\" value=\"%ld\">", v->f.min_age / 60);
    if (v->quarantine)
        buf_puts(b, "<input type=\"hidden\" name=\"view\" value=\"quarantine\">");
}

/* The bulk action buttons: each submits the form with its op. */
static void bulk_buttons(struct buf *b, long total, bool quarantine)
{
    buf_printf(b, "<p><label><input type=\"checkbox\" name=\"matching\" value=\"1\" id=\"matching\"> all %ld "
                  "message(s) that match this filter</label> ", total);
    static const char *const ops[][2] = {{"hold", "Hold"}, {"release", "Release"}, {"requeue", "Retry now"},
                                         {"delete", "Delete"}};
    for (size_t i = quarantine ? 1 : 0; i < 4; i++)
        buf_printf(b, "<button type=\"submit\" name=\"op\" value=\"%s\" id=\"bulk-%s\">%s selected</button> ",
                   ops[i][0], ops[i][0], ops[i][1]);
    buf_puts(b, "</p>\n");
}

/* "messages 101-200 of 12345", and links to the pages around. */
static void pager(struct buf *b, const struct view *v, long total, long shown)
{
    long first = (v->page - 1) * PAGE_ROWS;
    long pages = total ? (total + PAGE_ROWS - 1) / PAGE_ROWS : 1;
    buf_printf(b, "<p class=\"pager\" id=\"pager\">%ld message(s)", total);
    if (shown)
        buf_printf(b, ", %ld to %ld shown", first + 1, first + shown);
    if (v->page > 1)
        page_link(b, v, v->sort, v->page - 1, "previous");
    buf_printf(b, " page %ld of %ld ", v->page, pages);
    if (v->page < pages)
        page_link(b, v, v->sort, v->page + 1, "next");
    buf_puts(b, "</p>\n");
}

static void message_row(struct buf *b, json_t *m, bool admin, bool quarantine)
{
    buf_puts(b, "<tr>");
    if (admin) {
        buf_puts(b, "<td><input type=\"checkbox\" name=\"id\" value=\"");
        html_attr(b, jstr(m, "id"));
        buf_puts(b, "\"></td>");
    }
    char age[64], size[32], subject[256];
    queue_view_span(json_integer_value(json_object_get(m, "age")), age, sizeof age);
    human_size(json_integer_value(json_object_get(m, "size")), size, sizeof size);
    spool_subject(jstr(m, "id"), subject, sizeof subject);
    buf_puts(b, "<td><a href=\"/message?id=");
    url_enc(b, jstr(m, "id"));
    buf_puts(b, "\">");
    html(b, jstr(m, "id"));
    buf_printf(b, "</a></td><td class=\"num\">%s</td><td class=\"num\">%s</td><td>", age, size);
    html(b, jstr(m, "state"));
    if (jstr(m, "queue")[0]) {
        buf_puts(b, "<br><span class=\"queue\">queue ");
        html(b, jstr(m, "queue"));
        buf_puts(b, "</span>");
    }
    buf_puts(b, "</td><td>");
    html(b, jstr(m, "sender"));
    buf_puts(b, "</td><td>");
    const char *last = "";
    size_t k;
    json_t *r;
    json_array_foreach(json_object_get(m, "recipients"), k, r) {
        if (strcmp(jstr(r, "status"), "pending"))
            continue;
        html(b, jstr(r, "address"));
        buf_puts(b, "<br>");
        if (jstr(r, "last_reply")[0])
            last = jstr(r, "last_reply");
    }
    buf_puts(b, "</td><td>");
    html(b, subject);
    buf_puts(b, "</td><td>");
    /* a held message: why it is held; else why it waits, or what the next hop said last */
    html(b, quarantine || !strcmp(jstr(m, "state"), "hold") ? jstr(m, "hold_reason")
            : jstr(m, "waiting")[0] ? jstr(m, "waiting") : last);
    buf_puts(b, "</td></tr>\n");
}

static void queue_table(struct buf *b, json_t *page, const struct view *v, const struct console_session *s)
{
    bool admin = s->role == ROLE_ADMIN;
    long total = (long)json_integer_value(json_object_get(page, "total"));
    json_t *msgs = json_object_get(page, "messages");
    if (admin) {
        buf_puts(b, "<form method=\"post\" action=\"/bulk\" id=\"bulk\"><input type=\"hidden\" name=\"csrf\" value=\"");
        html_attr(b, s->csrf);
        buf_puts(b, "\">");
        filter_hidden(b, v);
    }
    pager(b, v, total, (long)json_array_size(msgs));
    buf_printf(b, "<table id=\"messages\"><tr>%s<th>ID</th><th>", admin ? "<th></th>" : "");
    page_link(b, v, strcmp(v->sort, "oldest") ? "oldest" : "newest", 1, "age");
    buf_puts(b, "</th><th>");
    page_link(b, v, strcmp(v->sort, "largest") ? "largest" : "smallest", 1, "size");
    buf_printf(b, "</th><th>state</th><th>sender</th><th>recipients</th><th>subject</th><th>%s</th></tr>\n",
               v->quarantine ? "reason" : "last error or hold reason");
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) message_row(b, m, admin, v->quarantine);
    buf_puts(b, "</table>\n");
    if (admin) {
        bulk_buttons(b, total, v->quarantine);
        buf_puts(b, "</form>\n");
    }
}

enum MHD_Result console_queue_page(struct MHD_Connection *c, const struct console_session *s, bool quarantine,
                                   bool api)
{
    char err[300];
    struct view v;
    view_read(c, quarantine, &v);
    if (api) {       /* every match as an array (the API's contract), or one page with page= */
        bool paged = query(c, "page")[0] != '\0';
        json_t *j = page_from_daemon(&v, paged ? (v.page - 1) * PAGE_ROWS : 0, paged ? PAGE_ROWS : 0, err, sizeof err);
        if (!j)
            return json_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, err);
        if (paged)
            return json_response(c, MHD_HTTP_OK, j);
        json_t *msgs = json_incref(json_object_get(j, "messages"));
        json_decref(j);
        return json_response(c, MHD_HTTP_OK, msgs ? msgs : json_array());
    }
    json_t *page = page_from_daemon(&v, (v.page - 1) * PAGE_ROWS, PAGE_ROWS, err, sizeof err);
    if (!page)
        return text_status(c, MHD_HTTP_SERVICE_UNAVAILABLE, err);
    struct buf b;
    buf_init(&b);
    page_start(&b, quarantine ? "Quarantine" : "Queue", s);
    counters(&b);
    if (!quarantine)
        console_track_chart(&b);
    filter_form(&b, &v);
    queue_table(&b, page, &v, s);
    if (!quarantine && s->role == ROLE_ADMIN)
        action_button(&b, s, "", "flush", "Retry all now");
    buf_printf(&b, "<p>JSON: <a href=\"/api/%s\">/api/%s</a></p></main></body></html>\n",
               quarantine ? "quarantine" : "queue", quarantine ? "quarantine" : "queue");
    json_decref(page);
    return send_response(c, MHD_HTTP_OK, "text/html; charset=utf-8", &b, NULL, NULL);
}
