/* console_web.c - what every console page is made of (console_web.h):
 * HTML and URL escaping (bidirectional controls made visible), form and
 * query fields, responses with the security headers, the page frame. */
#include "console_web.h"
#include "console_archive.h"
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- small helpers ------------------------------------------------- */

/* Length of a bidirectional control at s (UTF-8), else 0: U+061C, U+200E-200F,
 * U+202A-202E, U+2066-2069. Shown raw, "\u202egnp.exe" reads "exe.png". */
static size_t bidi_control(const unsigned char *s, unsigned *cp)
{
    if (s[0] == 0xD8 && s[1] == 0x9C)
        return *cp = 0x061C, 2;
    if (s[0] != 0xE2 || (s[1] != 0x80 && s[1] != 0x81) || !s[2])
        return 0;
    unsigned c = 0x2000u | ((unsigned)(s[1] & 0x3F) << 6) | (s[2] & 0x3Fu);
    if (c == 0x200E || c == 0x200F || (c >= 0x202A && c <= 0x202E) || (c >= 0x2066 && c <= 0x2069))
        return *cp = c, 3;
    return 0;
}

/* s as HTML text: markup escaped, control characters as '?', and
 * bidirectional controls visibly as [U+202E] (they would reorder what an
 * admin reads). attr: inside an attribute value, where bytes stay as they
 * are (a form sends them back). */
static void html_escape(struct buf *out, const char *s, bool attr)
{
    for (; s && *s; s++) {
        unsigned cp;
        size_t n = attr ? 0 : bidi_control((const unsigned char *)s, &cp);
        if (n) {
            buf_printf(out, "<span class=\"bidi\">[U+%04X]</span>", cp);
            s += n - 1;
            continue;
        }
        switch (*s) {
        case '<': buf_puts(out, "&lt;"); break;
        case '>': buf_puts(out, "&gt;"); break;
        case '&': buf_puts(out, "&amp;"); break;
        case '"': buf_puts(out, "&quot;"); break;
        case '\'': buf_puts(out, "&#39;"); break;
        case '\r': break;                 /* CRLF shows as a line end */
        default:
            if ((unsigned char)*s < 0x20 && *s != '\n' && *s != '\t')
                buf_puts(out, attr ? "&#63;" : "?");
            else
                buf_append(out, s, 1);
        }
    }
}

void html(struct buf *out, const char *s) { html_escape(out, s, false); }
void html_attr(struct buf *out, const char *s) { html_escape(out, s, true); }

/* Query-string encoding, for links that carry an ID or an address. */
void url_enc(struct buf *out, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (isalnum(c) || strchr("-_.@", c))
            buf_append(out, s, 1);
        else
            buf_printf(out, "%%%02X", c);
    }
}

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Every value of field `name` in an x-www-form-urlencoded body, decoded,
 * calling fn for each; returns how many there were. */
int form_each(const char *body, const char *name, void (*fn)(const char *v, void *ctx), void *ctx)
{
    int count = 0;
    size_t nlen = strlen(name);
    for (const char *p = body; *p;) {
        const char *end = p + strcspn(p, "&");
        if ((size_t)(end - p) > nlen && !strncmp(p, name, nlen) && p[nlen] == '=') {
            char v[1024];
            size_t n = 0;
            for (const char *q = p + nlen + 1; q < end && n < sizeof v - 1; q++) {
                if (*q == '+') {
                    v[n++] = ' ';
                } else if (*q == '%' && q + 2 < end && hexval(q[1]) >= 0 && hexval(q[2]) >= 0) {
                    v[n++] = (char)(hexval(q[1]) * 16 + hexval(q[2]));
                    q += 2;
                } else {
                    v[n++] = *q;
                }
            }
            v[n] = '\0';
            fn(v, ctx);
            count++;
        }
        p = *end ? end + 1 : end;
    }
    return count;
}

static void copy_first(const char *v, void *ctx)
{
    char *out = ctx;
    if (!out[0])
        snprintf(out, 1024, "%s", v);
}

void form_get(const char *body, const char *name, char out[1024])
{
    out[0] = '\0';
    form_each(body, name, copy_first, out);
}

const char *query(struct MHD_Connection *c, const char *name)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
    return v ? v : "";
}

void client_ip(struct MHD_Connection *c, char *out, size_t size)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    out[0] = '\0';
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)size);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)size);
}

/* ---- responses ---------------------------------------------------- */

/* A response holding body (freed) with the console's security headers. */
static struct MHD_Response *response_new(const char *type, struct buf *body)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(body->len, body->len ? buf_head(body) : (void *)"", MHD_RESPMEM_MUST_COPY);
    buf_free(body);
    if (!r)
        return NULL;
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'");
    return r;
}

static enum MHD_Result queue_and_free(struct MHD_Connection *c, unsigned status, struct MHD_Response *r)
{
    if (!r)
        return MHD_NO;
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

enum MHD_Result send_response(struct MHD_Connection *c, unsigned status, const char *type, struct buf *body,
                              const char *location, const char *cookie)
{
    struct MHD_Response *r = response_new(type, body);
    if (r && location)
        MHD_add_response_header(r, "Location", location);
    if (r && cookie)
        MHD_add_response_header(r, "Set-Cookie", cookie);
    return queue_and_free(c, status, r);
}

enum MHD_Result send_download(struct MHD_Connection *c, const char *type, const char *filename, struct buf *body)
{
    struct MHD_Response *r = response_new(type, body);
    char disposition[300];
    snprintf(disposition, sizeof disposition, "attachment; filename=\"%s\"", filename);
    if (r)
        MHD_add_response_header(r, "Content-Disposition", disposition);
    return queue_and_free(c, MHD_HTTP_OK, r);
}

enum MHD_Result redirect(struct MHD_Connection *c, const char *to, const char *cookie)
{
    struct buf b;
    buf_init(&b);
    return send_response(c, MHD_HTTP_SEE_OTHER, "text/plain", &b, to, cookie);
}

enum MHD_Result text_status(struct MHD_Connection *c, unsigned status, const char *msg)
{
    struct buf b;
    buf_init(&b);
    buf_puts(&b, msg);
    return send_response(c, status, "text/plain; charset=utf-8", &b, NULL, NULL);
}

enum MHD_Result json_response(struct MHD_Connection *c, unsigned status, json_t *j)
{
    struct buf b;
    buf_init(&b);
    /* non-ASCII as \\uXXXX: a bidirectional control in a header is visible in the text */
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(j);
    if (s)
        buf_puts(&b, s);
    free(s);
    buf_puts(&b, "\n");
    return send_response(c, status, "application/json", &b, NULL, NULL);
}

enum MHD_Result json_error(struct MHD_Connection *c, unsigned status, const char *msg)
{
    return json_response(c, status, json_pack("{s:s}", "error", msg));
}

/* ---- page frame ---------------------------------------------------- */

void page_start(struct buf *b, const char *title, const struct console_session *s)
{
    buf_puts(b, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Postern: ");
    html(b, title);
    buf_puts(b, "</title><link rel=\"stylesheet\" href=\"/style.css\"></head><body>\n<header><span class=\"brand\">"
                "Postern</span>");
    if (s) {
        bool archive = console_archive_on() && (s->role == ROLE_ADMIN || s->role == ROLE_REVIEWER);
        buf_printf(b, "<nav><a href=\"/\">Queue</a><a href=\"/quarantine\">Quarantine</a><a href=\"/track\">Tracking"
                      "</a><a href=\"/suspended\">Suspended</a>%s</nav><form method=\"post\" action=\"/logout\" "
                      "class=\"user\"><input type=\"hidden\" name=\"csrf\" value=\"",
                   archive ? "<a href=\"/archive\">Archive</a>" : "");
        html(b, s->csrf);
        buf_puts(b, "\">");
        html(b, s->user);
        buf_printf(b, " (%s) <button type=\"submit\">Log out</button></form>", console_role_name(s->role));
    }
    buf_puts(b, "</header>\n<main><h1>");
    html(b, title);
    buf_puts(b, "</h1>\n");
}

/* The console's one stylesheet (CSP allows only style-src 'self'). */
static const char stylesheet[] =
    "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f4f6f9}"
    "header{display:flex;align-items:center;gap:2em;background:#1f3a5f;color:#fff;padding:.5em 2em}"
    "header a{color:#dbe7f7;text-decoration:none;margin-right:1.2em}header a:hover{color:#fff}"
    ".brand{font-weight:600;font-size:16px}header .user{margin-left:auto}"
    "main{padding:1em 2em}h1{font-size:20px;margin:.2em 0 .6em}"
    "table{border-collapse:collapse;background:#fff;width:100%;margin:.5em 0}"
    "th{background:#e8edf4;text-align:left;font-weight:600}th a{color:inherit}"
    "td,th{border:1px solid #d5dbe4;padding:3px 8px;vertical-align:top}tr:nth-child(even) td{background:#fafbfd}"
    "pre{background:#fff;border:1px solid #d5dbe4;padding:6px;white-space:pre-wrap;max-width:100em}"
    "form.inline{display:inline}input,select,button{font:inherit}button{cursor:pointer}"
    ".counters span{margin-right:1.5em}.pager{margin:.5em 0}.pager a{margin:0 .5em}"
    ".num{text-align:right;white-space:nowrap}.bidi{color:#b00;font-weight:600}"
    "tr.rejected td:nth-child(3),tr.bounced td:nth-child(3){color:#b00}tr.delivered td:nth-child(3){color:#070}"
    ".chart{background:#fff;border:1px solid #d5dbe4;margin:.5em 0}.legend span{margin-right:1.2em}"
    "#error{color:#b00}\n";

enum MHD_Result console_stylesheet(struct MHD_Connection *c)
{
    struct buf b;
    buf_init(&b);
    buf_append(&b, stylesheet, sizeof stylesheet - 1);
    return send_response(c, MHD_HTTP_OK, "text/css; charset=utf-8", &b, NULL, NULL);
}

