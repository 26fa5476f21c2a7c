/* console_archive.c - the console's archive pages (issue 40) and its
 * entries in the archive's audit trail:
 *
 *   GET  /archive, /api/archive   search, by envelope, headers and full
 *                                 text (admin and reviewer roles)
 *   POST /archive/export          the matches as an mbox download
 *
 * Every search and export, and every change to queued mail made from the
 * console, is recorded in the audit trail (plugins/archive_audit.h) with
 * the console user and the client's address. A search or export that
 * cannot be recorded is refused: nothing is shown that the trail lacks. */
#include "console_archive.h"
#include "archive_audit.h"
#include "archive_search.h"
#include "archive_trail.h"
#include "console_int.h"
#include "log.h"
#include "utc_time.h"
#include <stdlib.h>
#include <string.h>

#define SEARCH_LIMIT 500        /* rows a page shows */
#define EXPORT_LIMIT 1000       /* messages a console export holds (more: `postern archive export`) */

static char archive_dir[1024];

void console_archive_configure(const char *dir)
{
    snprintf(archive_dir, sizeof archive_dir, "%s", dir ? dir : "");
}

bool console_archive_on(void) { return archive_dir[0] != '\0'; }

int console_audit(struct MHD_Connection *c, const struct console_session *s, const char *action, const char *details)
{
    if (!archive_dir[0])
        return 0;
    char ip[64], err[700];
    client_ip(c, ip, sizeof ip);
    struct audit_actor who;
    archive_actor_console(&who, s->user, ip);
    unsigned long seq;
    if (archive_audit_write(archive_dir, NULL, false, &who, action, details, &seq, err, sizeof err) == 0)
        return 0;
    log_error("console: %s from [%s]: %s not recorded in the audit trail: %s", s->user, ip, action, err);
    return -1;
}

void console_audit_queue(struct MHD_Connection *c, const struct console_session *s, const char *request, int rc)
{
    static const char *const verbs[] = {"hold", "release", "delete", "requeue", "flush"};
    size_t vlen = strcspn(request, " ");
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        if (strlen(verbs[i]) != vlen || strncmp(request, verbs[i], vlen))
            continue;
        char action[32], details[2600] = "", req[2048];
        size_t len = 0;
        snprintf(action, sizeof action, "queue-%s", verbs[i]);
        snprintf(req, sizeof req, "%s", request);
        archive_audit_kv(details, sizeof details, &len, "request", req);
        archive_audit_kv(details, sizeof details, &len, "result", rc == 0 ? "done" : rc > 0 ? "refused" : "no-answer");
        console_audit(c, s, action, details);
        return;
    }
}

/* The filter from the query string or a form (names as the CLI's). */
static int read_filter(const char *(*get)(void *src, const char *name, char out[1024]), void *src,
                       struct archive_filter *m, char *err, size_t errlen)
{
    *m = (struct archive_filter){.since = -1, .until = -1};
    char v[1024];
    char *texts[] = {m->from, m->to, m->rcpt, m->subject};
    const char *const names[] = {"from", "to", "rcpt", "subject"};
    for (int i = 0; i < 4; i++)
        snprintf(texts[i], ARCHIVE_FILTER_MAX, "%s", get(src, names[i], v));
    const char *const dates[] = {"since", "until"};
    for (int i = 0; i < 2; i++)
        if (get(src, dates[i], v)[0] && utc_time_parse(v, i == 1, i ? &m->until : &m->since) < 0) {
            snprintf(err, errlen, "%s: '%.60s' is not a date (2026-12-07 or \"2026-12-07 10:00\", UTC)", dates[i], v);
            return -1;
        }
    return 0;
}

static void filter_details(const struct archive_filter *m, const char *text, const char *count_key, long count,
                           char *out, size_t size)
{
    size_t len = 0;
    out[0] = '\0';
    archive_query_details(m, text, count_key, count, out, size, &len);
}

struct rows {
    struct buf *html;
    json_t *json;
};

static void add_row(void *ctx, char *const ix[])
{
    struct rows *r = ctx;
    struct buf b;
    buf_init(&b);
    const char *subject = archive_subject_text(ix[IX_SUBJECT], &b);
    if (r->json) {
        json_array_append_new(r->json, json_pack("{s:s,s:s,s:s,s:s,s:s}", "queue_id", ix[IX_QID], "archived_at",
                                                 ix[IX_AT], "sender", ix[IX_ENV_FROM], "recipients", ix[IX_ENV_TO],
                                                 "subject", subject));
        buf_free(&b);
        return;
    }
    const char *cells[] = {ix[IX_QID], ix[IX_AT], ix[IX_ENV_FROM], ix[IX_ENV_TO], subject};
    buf_puts(r->html, "<tr>");
    for (size_t i = 0; i < 5; i++) {
        buf_puts(r->html, "<td>");
        html(r->html, cells[i]);
        buf_puts(r->html, "</td>");
    }
    buf_puts(r->html, "</tr>\n");
    buf_free(&b);
}

static void filter_inputs(struct buf *b, struct MHD_Connection *c, bool hidden)
{
    static const char *const names[] = {"text", "from", "to", "rcpt", "subject", "since", "until"};
    for (size_t i = 0; i < 7; i++) {
        buf_printf(b, hidden ? "<input type=\"hidden\" name=\"%s\" value=\"" : "<label>%s <input name=\"%s\" value=\"",
                   names[i], names[i]);
        html_attr(b, query(c, names[i]));
        buf_puts(b, hidden ? "\">" : "\"></label> ");
    }
}

static bool reviewer_or_admin(const struct console_session *s)
{
    return s->role == ROLE_ADMIN || s->role == ROLE_REVIEWER;
}

static const char *from_connection(void *c, const char *name, char out[1024])
{
    snprintf(out, 1024, "%s", query(c, name));
    return out;
}

enum MHD_Result console_archive_page(struct MHD_Connection *c, const struct console_session *s, bool api)
{
    if (!reviewer_or_admin(s))
        return api ? json_error(c, MHD_HTTP_FORBIDDEN, "the archive is for the admin and reviewer roles")
                   : text_status(c, MHD_HTTP_FORBIDDEN, "the archive is for the admin and reviewer roles\n");
    if (!archive_dir[0])
        return api ? json_error(c, MHD_HTTP_NOT_FOUND, "no archive configured")
                   : text_status(c, MHD_HTTP_NOT_FOUND, "no archive is configured (the archive plugin's dir)\n");
    struct archive_filter m;
    char err[400] = "", details[2048];
    bool asked = query(c, "go")[0] || api;
    int bad = read_filter(from_connection, c, &m, err, sizeof err);
    struct buf b, rows_html;
    buf_init(&b);
    buf_init(&rows_html);
    struct rows rows = {&rows_html, api ? json_array() : NULL};
    const char *text = query(c, "text");
    long found = asked && !bad ? archive_search_each(archive_dir, &m, text, SEARCH_LIMIT, add_row, &rows, err,
                                                     sizeof err) : -1;
    if (found >= 0) {
        filter_details(&m, text, "found", found, details, sizeof details);
        if (console_audit(c, s, "search", details) < 0) {
            found = -1;
            snprintf(err, sizeof err, "the audit trail cannot record this search, so it is not shown");
        }
    }
    if (api) {
        buf_free(&rows_html);
        buf_free(&b);
        if (found < 0) {
            json_decref(rows.json);
            return json_error(c, bad ? MHD_HTTP_BAD_REQUEST : MHD_HTTP_SERVICE_UNAVAILABLE, err);
        }
        return json_response(c, MHD_HTTP_OK, json_pack("{s:I,s:I,s:o}", "found", (json_int_t)found, "limit",
                                                       (json_int_t)SEARCH_LIMIT, "messages", rows.json));
    }
    page_start(&b, "Archive", s);
    buf_puts(&b, "<form method=\"get\" action=\"/archive\"><input type=\"hidden\" name=\"go\" value=\"1\">");
    filter_inputs(&b, c, false);
    buf_puts(&b, "<button type=\"submit\">Search</button></form>\n<p>Every search and export is recorded in the "
                 "archive's audit trail with your name.</p>\n");
    if (asked && found < 0) {
        buf_puts(&b, "<p class=\"error\" id=\"error\">");
        html(&b, err);
        buf_puts(&b, "</p>\n");
    } else if (asked) {
        buf_printf(&b, "<p id=\"found\">%ld message(s) found%s</p>\n", found,
                   found >= SEARCH_LIMIT ? " (the first ones shown)" : "");
        buf_puts(&b, "<form method=\"post\" action=\"/archive/export\"><input type=\"hidden\" name=\"csrf\" value=\"");
        html_attr(&b, s->csrf);
        buf_puts(&b, "\">");
        filter_inputs(&b, c, true);
        buf_printf(&b, "<button type=\"submit\">Export as mbox</button> (at most %d messages; more, and the proof of "
                       "each, with <code>postern archive export</code>)</form>\n", EXPORT_LIMIT);
        buf_puts(&b, "<table id=\"results\"><tr><th>Queue ID</th><th>Archived</th><th>Sender</th><th>Recipients</th>"
                     "<th>Subject</th></tr>\n");
        buf_append(&b, buf_head(&rows_html), rows_html.len);
        buf_puts(&b, "</table>\n");
    }
    buf_free(&rows_html);
    buf_puts(&b, "</main></body></html>\n");
    return send_response(c, MHD_HTTP_OK, "text/html; charset=utf-8", &b, NULL, NULL);
}

enum MHD_Result console_archive_export(struct MHD_Connection *c, const struct console_session *s, const char *form)
{
    if (!reviewer_or_admin(s))
        return text_status(c, MHD_HTTP_FORBIDDEN, "the archive is for the admin and reviewer roles\n");
    if (!archive_dir[0])
        return text_status(c, MHD_HTTP_NOT_FOUND, "no archive is configured\n");
    struct archive_filter m;
    char err[400] = "", details[2048];
    if (read_filter(from_form, (void *)form, &m, err, sizeof err) < 0)
        return text_status(c, MHD_HTTP_BAD_REQUEST, err);
    char *data = NULL, text[1024];
    size_t size = 0;
    from_form((void *)form, "text", text);
    FILE *out = open_memstream(&data, &size);
    long n = out ? archive_export_mbox(archive_dir, &m, text, EXPORT_LIMIT, out, err, sizeof err) : -1;
    if (out)
        fclose(out);
    if (n >= 0) {
        filter_details(&m, text, "exported", n, details, sizeof details);
        if (console_audit(c, s, "export", details) < 0) {
            n = -1;
            snprintf(err, sizeof err, "the audit trail cannot record this export, so it is not given");
        }
    }
    if (n < 0) {
        free(data);
        return text_status(c, MHD_HTTP_SERVICE_UNAVAILABLE, err[0] ? err : "the export failed");
    }
    struct buf b;
    buf_init(&b);
    buf_append(&b, data ? data : "", size);
    free(data);
    return send_download(c, "application/mbox", "postern-archive-export.mbox", &b);
}
