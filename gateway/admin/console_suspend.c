/* console_suspend.c - the console's suspensions page (issue 38): what is
 * suspended (destinations, egress sources, named queues, providers) or
 * throttled, until when and why, with a Resume button each and forms to
 * suspend and throttle; /api/suspended gives the same as JSON. Changes go
 * through /action (ops suspend, throttle and resume), as every change
 * does: a POST with the CSRF token, admins only. */
#include "console_suspend.h"
#include "console_int.h"
#include "console_web.h"
#include <jansson.h>
#include <stdio.h>
#include <string.h>

static void resume_button(struct buf *b, const struct console_session *s, const char *kind, const char *name)
{
    buf_puts(b, "<form method=\"post\" action=\"/action\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"");
    html_attr(b, s->csrf);
    buf_puts(b, "\"><input type=\"hidden\" name=\"op\" value=\"resume\"><input type=\"hidden\" name=\"kind\" value=\"");
    html_attr(b, kind);
    buf_puts(b, "\"><input type=\"hidden\" name=\"name\" value=\"");
    html_attr(b, name);
    buf_puts(b, "\"><button type=\"submit\">Resume</button></form>");
}

static void form_start(struct buf *b, const struct console_session *s, const char *id, const char *op)
{
    buf_printf(b, "<form method=\"post\" action=\"/action\" id=\"%s\"><input type=\"hidden\" name=\"csrf\" "
                  "value=\"", id);
    html_attr(b, s->csrf);
    buf_printf(b, "\"><input type=\"hidden\" name=\"op\" value=\"%s\">", op);
}

static void suspend_forms(struct buf *b, const struct console_session *s)
{
    form_start(b, s, "suspend", "suspend");
    buf_puts(b, "<select name=\"kind\"><option>destination</option><option>source</option><option>queue</option>"
                "<option>provider</option></select> <input name=\"name\" placeholder=\"example.com\"> for "
                "<input name=\"duration\" placeholder=\"30m (empty: until resumed)\"> "
                "<button type=\"submit\">Suspend</button></form>\n");
    form_start(b, s, "throttle", "throttle");
    buf_puts(b, "<select name=\"kind\"><option>destination</option><option>provider</option></select> "
                "<input name=\"name\" placeholder=\"example.com\"> to <input name=\"rate\" placeholder=\"10\"> "
                "a minute for <input name=\"duration\" placeholder=\"30m (empty: until resumed)\"> "
                "<button type=\"submit\">Throttle</button></form>\n");
}

/* The limit column: "suspended", or the throttled rate. */
static const char *limit_text(json_int_t rate, char *out, size_t size)
{
    if (!rate)
        return "suspended";
    snprintf(out, size, "%lld/min", (long long)rate);
    return out;
}

enum MHD_Result console_suspend_page(struct MHD_Connection *c, const struct console_session *s, bool api)
{
    struct buf out;
    buf_init(&out);
    int rc = console_control("suspended --json", &out);
    json_t *list = rc == 0 ? json_loadb(buf_head(&out), out.len, 0, NULL) : NULL;
    buf_free(&out);
    if (!json_is_array(list)) {
        json_decref(list);
        return api ? json_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "posternd does not answer")
                   : text_status(c, MHD_HTTP_SERVICE_UNAVAILABLE, "posternd does not answer\n");
    }
    struct buf b;
    buf_init(&b);
    json_t *rows = api ? json_array() : NULL;
    if (!api) {
        page_start(&b, "Suspended", s);
        buf_puts(&b, "<h1>Suspended and throttled deliveries</h1><table id=\"suspended\"><tr><th>kind</th>"
                     "<th>name</th><th>limit</th><th>until</th><th>why</th><th></th></tr>\n");
    }
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e) {
        const char *kind = jstr(e, "kind"), *name = jstr(e, "name"), *reason = jstr(e, "reason");
        const char *until = json_is_string(json_object_get(e, "until")) ? jstr(e, "until") : "resumed";
        char rate[32];
        const char *limit = limit_text(json_integer_value(json_object_get(e, "rate")), rate, sizeof rate);
        if (api) {
            json_array_append_new(rows, json_pack("{s:s,s:s,s:s,s:s,s:s}", "kind", kind, "name", name, "limit", limit,
                                                  "until", until, "reason", reason));
            continue;
        }
        const char *cells[] = {kind, name, limit, until, reason};
        buf_puts(&b, "<tr>");
        for (size_t k = 0; k < 5; k++) {
            buf_puts(&b, "<td>");
            html(&b, cells[k]);
            buf_puts(&b, "</td>");
        }
        buf_puts(&b, "<td>");
        if (s->role == ROLE_ADMIN)
            resume_button(&b, s, kind, name);
        buf_puts(&b, "</td></tr>\n");
    }
    json_decref(list);
    if (api)
        return json_response(c, MHD_HTTP_OK, rows);
    buf_puts(&b, "</table>\n");
    if (s->role == ROLE_ADMIN)
        suspend_forms(&b, s);
    buf_puts(&b, "<p>JSON: <a href=\"/api/suspended\">/api/suspended</a></p></body></html>\n");
    return send_response(c, MHD_HTTP_OK, "text/html; charset=utf-8", &b, NULL, NULL);
}
