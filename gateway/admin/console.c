/* console.c - the web console on the http_listen listener: queue and
 * quarantine pages, message detail, actions, and a JSON API beside every
 * page. It runs on libmicrohttpd's threads, never on the SMTP loop, and
 * asks the loop through the control socket exactly as `postern queue`
 * does (control_client.c), so the console can do nothing the CLI cannot.
 * Every page needs a login (console_auth.c); every change is a POST that
 * carries the session's CSRF token and needs the admin role. Pages have no
 * scripts (CSP default-src 'none'), and text from mail is only ever shown
 * HTML-escaped: headers and a body preview as text, never rendered. */
#include "console.h"
#include "console_auth.h"
#include "console_web.h"
#include "console_track.h"
#include "console_int.h"
#include "console_archive.h"
#include "console_user.h"
#include "console_suspend.h"
#include "control_client.h"
#include "log.h"
#include "metrics.h"
#include "queue_cmd.h"
#include "spool.h"
#include <arpa/inet.h>
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define MAX_FORM 16384                 /* a POST body */
#define PREVIEW_BYTES 65536            /* read of a queued message for the detail page */
#define BODY_PREVIEW 4096

static char control_path[108];
static bool secure_cookies;            /* the listener is HTTPS */

/* One request's state across libmicrohttpd's calls: the POST body so far. */
struct console_req {
    struct buf body;
    bool too_big;
};

/* ---- the queue, from the daemon ------------------------------------ */

/* A JSON array from the daemon: "list --json" (the queue, as the CLI's
 * `list --json` gives it) or "show --json ID" (one message); NULL (why in
 * err) when it does not answer. */
json_t *queue_json(const char *request, char *err, size_t errlen)
{
    struct buf out;
    buf_init(&out);
    int rc = control_request(control_path, request, &out);
    json_error_t je;
    json_t *j = rc == 0 ? json_loadb(out.len ? buf_head(&out) : "", out.len, 0, &je) : NULL;
    if (!j)
        snprintf(err, errlen, "%s", rc == 0 ? "posternd answered garbage" : "posternd does not answer");
    buf_free(&out);
    return j;
}

int console_control(const char *request, struct buf *out) { return control_request(control_path, request, out); }

void add_word(struct action_words *w, const char *word)
{
    size_t n = strlen(word) + 1;
    if (w->argc == (int)(sizeof w->argv / sizeof w->argv[0]) || n > sizeof w->store - w->used || strpbrk(word, "\r\n")) {
        w->bad = true;
        return;
    }
    w->argv[w->argc++] = memcpy(w->store + w->used, word, n);
    w->used += n;
}

int words_request(const struct action_words *w, struct buf *req, char *err, size_t errlen)
{
    struct queue_cmd *cmd = malloc(sizeof *cmd);
    int rc = -1;
    if (w->bad || !cmd)
        snprintf(err, errlen, "%s", w->bad ? "too many words (or a bad character) for one request" : "out of memory");
    else if (queue_cmd_parse(w->argc, w->argv, cmd, err, errlen) == 0 && queue_cmd_format(w->argc, w->argv, req) == 0)
        rc = 0;
    else if (req->len >= QUEUE_CMD_MAX_LINE)
        snprintf(err, errlen, "the request is too long");
    free(cmd);
    buf_append(req, "", 1);
    return rc;
}

ssize_t queued_message_start(const char *id, char *data, size_t size)
{
    struct envelope e;
    size_t off;
    const char *why = "";
    if (spool_load(id, &e, &off, &why) < 0)
        return -1;
    envelope_free(&e);
    int fd = spool_open_message(id);
    if (fd < 0)
        return -1;
    ssize_t n = pread(fd, data, size - 1, (off_t)off);
    close(fd);
    if (n >= 0)
        data[n] = '\0';
    return n;
}

const char *jstr(const json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

const char *const filter_fields[FILTER_FIELDS] = {"sender", "rcpt", "domain", "queue", "state"};

static char *filter_slot(struct filter *f, size_t i)
{
    char *slots[FILTER_FIELDS] = {f->sender, f->rcpt, f->domain, f->queue, f->state};
    return slots[i];
}

const char *filter_field(const struct filter *f, size_t i)
{
    const char *vals[FILTER_FIELDS] = {f->sender, f->rcpt, f->domain, f->queue, f->state};
    return vals[i];
}

/* A filter from the query string (pages) or from a posted form (bulk). */
void filter_read(struct filter *f, const char *(*get)(void *src, const char *name, char out[1024]), void *src,
                        bool quarantine)
{
    char age[1024];
    for (size_t i = 0; i < FILTER_FIELDS; i++)
        get(src, filter_fields[i], filter_slot(f, i));
    get(src, "min_age", age);
    f->min_age = atol(age) * 60;
    if (quarantine)
        snprintf(f->state, sizeof f->state, "hold");
}

const char *from_query(void *c, const char *name, char out[1024])
{
    snprintf(out, 1024, "%s", query(c, name));
    return out;
}

const char *from_form(void *form, const char *name, char out[1024])
{
    form_get(form, name, out);
    return out;
}

/* The filter as queue command words; false when it has none. */
bool filter_words(const struct filter *f, struct action_words *w)
{
    int before = w->argc;
    for (size_t i = 0; i < FILTER_FIELDS; i++)
        if (filter_field(f, i)[0]) {
            char option[32];
            snprintf(option, sizeof option, "--%s", filter_fields[i]);
            add_word(w, option);
            add_word(w, filter_field(f, i));
        }
    if (f->min_age > 0) {
        char age[32];
        snprintf(age, sizeof age, "%lds", f->min_age);
        add_word(w, "--older-than");
        add_word(w, age);
    }
    return w->argc > before;
}

void action_button(struct buf *b, const struct console_session *s, const char *id, const char *op,
                          const char *label)
{
    buf_puts(b, "<form method=\"post\" action=\"/action\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"");
    html(b, s->csrf);
    buf_puts(b, "\"><input type=\"hidden\" name=\"id\" value=\"");
    html(b, id);
    buf_printf(b, "\"><input type=\"hidden\" name=\"op\" value=\"%s\"><button type=\"submit\" id=\"%s\">%s</button></form> ",
               op, op, label);
}

/* ---- one message ---------------------------------------------------- */

static json_t *message_json(const char *id)
{
    char err[200], req[64];
    snprintf(req, sizeof req, "show --json %s", id);
    json_t *one = queue_json(req, err, sizeof err);
    json_t *m = json_incref(json_array_get(one, 0));     /* NULL: no such message (or no answer) */
    json_decref(one);
    return m;
}

/* The header section and the start of the body, read from the spool (the
 * HTTP thread only reads; the file is replaced, never changed in place). */
static void message_text(const char *id, struct buf *headers, struct buf *body)
{
    char *data = malloc(PREVIEW_BYTES);
    ssize_t n = data ? queued_message_start(id, data, PREVIEW_BYTES) : -1;
    if (n > 0) {
        char *sep = strstr(data, "\r\n\r\n");
        size_t hlen = sep ? (size_t)(sep - data) + 2 : (size_t)n;
        buf_append(headers, data, hlen);
        if (sep)
            buf_append(body, sep + 4, strnlen(sep + 4, BODY_PREVIEW));
    }
    free(data);
}

static void release_form(struct buf *b, const struct console_session *s, const char *id, json_t *m)
{
    buf_puts(b, "<form method=\"post\" action=\"/action\" id=\"release-form\"><input type=\"hidden\" name=\"csrf\" value=\"");
    html(b, s->csrf);
    buf_puts(b, "\"><input type=\"hidden\" name=\"id\" value=\"");
    html(b, id);
    buf_puts(b, "\"><input type=\"hidden\" name=\"op\" value=\"release\"><input type=\"hidden\" name=\"select\" "
                "value=\"1\">Release to: ");
    size_t k;
    json_t *r;
    json_array_foreach(json_object_get(m, "recipients"), k, r) {
        if (strcmp(jstr(r, "status"), "pending"))
            continue;
        buf_puts(b, "<label><input type=\"checkbox\" name=\"rcpt\" checked value=\"");
        html_attr(b, jstr(r, "address"));
        buf_puts(b, "\"> ");
        html(b, jstr(r, "address"));
        buf_puts(b, "</label> ");
    }
    buf_puts(b, "<button type=\"submit\" id=\"release\">Release</button> (unchecked recipients are dropped)</form>\n");
}

/* The decision log ("explain"): which link decided what, one row each. */
static void decisions_rows(struct buf *b, const json_t *decisions)
{
    size_t k;
    json_t *d;
    json_array_foreach(decisions, k, d) {
        buf_puts(b, k ? "<tr><th></th><td class=\"decided\">" : "<tr><th>decided</th><td class=\"decided\">");
        html(b, json_string_value(d) ? json_string_value(d) : "");
        buf_puts(b, "</td></tr>");
    }
}

static enum MHD_Result page_message(struct MHD_Connection *c, const struct console_session *s, bool api)
{
    const char *id = query(c, "id");
    json_t *m = qid_valid(id) ? message_json(id) : NULL;
    if (!m)
        return api ? json_error(c, MHD_HTTP_NOT_FOUND, "no such message") : text_status(c, MHD_HTTP_NOT_FOUND, "no such message\n");
    struct buf headers, body;
    buf_init(&headers);
    buf_init(&body);
    message_text(id, &headers, &body);
    if (api) {
        json_object_set_new(m, "headers", json_stringn(headers.len ? buf_head(&headers) : "", headers.len));
        buf_free(&headers);
        buf_free(&body);
        return json_response(c, MHD_HTTP_OK, m);
    }
    struct buf b;
    buf_init(&b);
    page_start(&b, id, s);
    buf_puts(&b, "<table id=\"envelope\"><tr><th>state</th><td id=\"state\">");
    html(&b, jstr(m, "state"));
    buf_printf(&b, "</td></tr><tr><th>size</th><td>%lld</td></tr><tr><th>age</th><td>%llds</td></tr><tr><th>sender</th><td>",
               (long long)json_integer_value(json_object_get(m, "size")),
               (long long)json_integer_value(json_object_get(m, "age")));
    html(&b, jstr(m, "sender"));
    buf_puts(&b, "</td></tr>");
    if (jstr(m, "hold_reason")[0]) {
        buf_puts(&b, "<tr><th>held because</th><td id=\"reason\">");
        html(&b, jstr(m, "hold_reason"));
        buf_puts(&b, "</td></tr>");
    }
    decisions_rows(&b, json_object_get(m, "decisions"));
    buf_puts(&b, "</table>\n<h2>Recipients</h2><table><tr><th>recipient</th><th>status</th><th>attempts</th>"
                 "<th>last reply</th><th>from</th></tr>\n");
    size_t k;
    json_t *r;
    json_array_foreach(json_object_get(m, "recipients"), k, r) {
        buf_puts(&b, "<tr><td>");
        html(&b, jstr(r, "address"));
        buf_puts(&b, "</td><td>");
        html(&b, jstr(r, "status"));
        buf_printf(&b, "</td><td>%lld</td><td>", (long long)json_integer_value(json_object_get(r, "attempts")));
        html(&b, jstr(r, "last_reply"));
        buf_puts(&b, "</td><td>");
        html(&b, jstr(r, "remote"));
        buf_puts(&b, "</td></tr>\n");
    }
    buf_puts(&b, "</table>\n");
    if (s->role == ROLE_ADMIN) {
        buf_puts(&b, "<h2>Actions</h2>\n");
        if (!strcmp(jstr(m, "state"), "hold"))
            release_form(&b, s, id, m);
        else
            action_button(&b, s, id, "hold", "Hold");
        action_button(&b, s, id, "requeue", "Retry now");
        action_button(&b, s, id, "delete", "Delete");
    }
    buf_puts(&b, "<h2>Headers</h2><pre id=\"headers\">");
    buf_append(&headers, "", 1);
    html(&b, buf_head(&headers));
    buf_puts(&b, "</pre><h2>Body (text preview, first 4 KiB, never rendered)</h2><pre id=\"body\">");
    buf_append(&body, "", 1);
    html(&b, buf_head(&body));
    buf_puts(&b, "</pre><p>JSON: <a href=\"/api/message?id=");
    url_enc(&b, id);
    buf_puts(&b, "\">/api/message</a></p></body></html>\n");
    buf_free(&headers);
    buf_free(&body);
    json_decref(m);
    return send_response(c, MHD_HTTP_OK, "text/html; charset=utf-8", &b, NULL, NULL);
}

/* ---- changes -------------------------------------------------------- */

static void add_kept(const char *v, void *ctx)
{
    add_word(ctx, "--keep");
    add_word(ctx, v);
}

/* The control request for an action form, or -1 (a bad form). */
static int action_request(const char *form, struct buf *req, char id[1024])
{
    char op[1024], select[1024];
    form_get(form, "id", id);
    form_get(form, "op", op);
    form_get(form, "select", select);
    static const char *const ops[] = {"hold", "release", "delete", "requeue", "flush"};
    struct action_words w = {.argc = 0};
    char err[300];
    if (!strcmp(op, "suspend") || !strcmp(op, "resume") || !strcmp(op, "throttle")) {    /* the suspensions page */
        char kind[1024], name[1024], rate[1024], duration[1024];
        form_get(form, "kind", kind);
        form_get(form, "name", name);
        form_get(form, "rate", rate);
        form_get(form, "duration", duration);
        bool throttle = op[0] == 't', timed = op[0] != 'r' && duration[0];
        const char *words[] = {op, kind, name, throttle ? rate : timed ? duration : NULL,
                               throttle && timed ? duration : NULL};
        for (size_t i = 0; i < 5 && words[i]; i++)
            add_word(&w, words[i][0] ? words[i] : "?");
        return words_request(&w, req, err, sizeof err);
    }
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (!strcmp(op, ops[i]))
            add_word(&w, ops[i]);
    if (w.argc == 0 || (strcmp(op, "flush") && !qid_valid(id)) || (id[0] && !qid_valid(id)))
        return -1;
    if (id[0])
        add_word(&w, id);
    int kept = !strcmp(op, "release") ? form_each(form, "rcpt", add_kept, &w) : 0;
    /* the form's checkboxes: nobody checked would drop everyone, so it is refused */
    if (w.bad || (select[0] && kept == 0))
        return -1;
    return words_request(&w, req, err, sizeof err);
}

static void add_id(const char *v, void *ctx) { add_word(ctx, v); }

/* The control request for the bulk form of the queue and quarantine
 * pages: the op on the checked messages, or (matching) on all that match
 * the page's filter; -1 (why in err) for a bad form. */
static int bulk_request(const char *form, struct buf *req, char *err, size_t errlen)
{
    char op[1024], matching[1024], view[1024];
    form_get(form, "op", op);
    form_get(form, "matching", matching);
    form_get(form, "view", view);
    struct action_words w = {.argc = 0};
    static const char *const ops[] = {"hold", "release", "delete", "requeue"};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (!strcmp(op, ops[i]))
            add_word(&w, ops[i]);
    if (w.argc == 0) {
        snprintf(err, errlen, "no such action");
        return -1;
    }
    if (matching[0]) {
        struct filter f;
        filter_read(&f, from_form, (void *)form, !strcmp(view, "quarantine"));
        if (!filter_words(&f, &w))
            add_word(&w, "ALL");
    } else if (form_each(form, "id", add_id, &w) == 0) {
        snprintf(err, errlen, "no message selected");
        return -1;
    }
    return words_request(&w, req, err, errlen);
}

/* Send a change to the daemon, log it, and answer: JSON for the API, else
 * back to the message (one), or a page with the daemon's answer (bulk). */
static enum MHD_Result send_change(struct MHD_Connection *c, const struct console_session *s, const char *req,
                                   const char *id, bool api, bool bulk)
{
    struct buf out;
    buf_init(&out);
    int rc = control_request(control_path, req, &out);
    buf_append(&out, "", 1);
    console_audit_queue(c, s, req, rc);
    char ip[64];
    client_ip(c, ip, sizeof ip);
    log_info("console: %s from [%s]: %.300s%s: %s", s->user, ip, req, strlen(req) > 300 ? "..." : "",
             rc == 0 ? "done" : rc > 0 ? buf_head(&out) : "no answer");
    if (api) {
        json_t *j = json_pack("{s:b,s:s}", "ok", rc == 0, "answer", buf_head(&out));
        buf_free(&out);
        return json_response(c, rc == 0 ? MHD_HTTP_OK : MHD_HTTP_CONFLICT, j);
    }
    if (rc < 0) {
        buf_free(&out);
        return text_status(c, MHD_HTTP_SERVICE_UNAVAILABLE, "posternd does not answer\n");
    }
    if (bulk) {
        struct buf b;
        buf_init(&b);
        page_start(&b, "Done", s);
        buf_puts(&b, "<pre id=\"answer\">");
        html(&b, buf_head(&out));
        buf_puts(&b, "</pre><p><a href=\"/\">Queue</a> <a href=\"/quarantine\">Quarantine</a></p></body></html>\n");
        buf_free(&out);
        return send_response(c, rc == 0 ? MHD_HTTP_OK : MHD_HTTP_CONFLICT, "text/html; charset=utf-8", &b, NULL, NULL);
    }
    buf_free(&out);
    if (strstr(req, "delete ") == req || !strcmp(req, "flush"))
        return redirect(c, "/", NULL);
    if (strstr(req, "suspend ") == req || strstr(req, "resume ") == req || strstr(req, "throttle ") == req)
        return redirect(c, "/suspended", NULL);
    char to[64];
    snprintf(to, sizeof to, "/message?id=%s", id);
    return redirect(c, to, NULL);
}

static enum MHD_Result do_action(struct MHD_Connection *c, const struct console_session *s, const char *form,
                                 bool api, bool bulk)
{
    char id[1024] = "", err[300] = "bad action";
    struct buf request;
    buf_init(&request);
    if ((bulk ? bulk_request(form, &request, err, sizeof err) : action_request(form, &request, id)) < 0) {
        buf_free(&request);
        if (api)
            return json_error(c, MHD_HTTP_BAD_REQUEST, err);
        struct buf b;
        buf_init(&b);
        buf_printf(&b, "%s\n", err);
        return send_response(c, MHD_HTTP_BAD_REQUEST, "text/plain; charset=utf-8", &b, NULL, NULL);
    }
    enum MHD_Result r = send_change(c, s, buf_head(&request), id, api, bulk);
    buf_free(&request);
    return r;
}

/* ---- login ---------------------------------------------------------- */

static enum MHD_Result page_login(struct MHD_Connection *c, const char *msg)
{
    struct buf b;
    buf_init(&b);
    page_start(&b, "Log in", NULL);
    if (msg) {
        buf_puts(&b, "<p id=\"error\">");
        html(&b, msg);
        buf_puts(&b, "</p>");
    }
    buf_puts(&b, "<form method=\"post\" action=\"/login\"><p>user <input name=\"user\" id=\"user\" autocomplete=\"username\">"
                 "</p><p>password <input type=\"password\" name=\"password\" id=\"password\" "
                 "autocomplete=\"current-password\"></p><p><button type=\"submit\" id=\"login\">Log in</button></p>"
                 "</form></body></html>\n");
    return send_response(c, msg ? MHD_HTTP_FORBIDDEN : MHD_HTTP_OK, "text/html; charset=utf-8", &b, NULL, NULL);
}

static enum MHD_Result do_login(struct MHD_Connection *c, const char *form)
{
    char user[1024], password[1024], ip[64];
    form_get(form, "user", user);
    form_get(form, "password", password);
    client_ip(c, ip, sizeof ip);
    enum console_role role = user[0] ? console_check_password(user, password) : ROLE_NONE;
    memset(password, 0, sizeof password);
    char token[CONSOLE_TOKEN_LEN + 1];
    bool full = false, ok = role != ROLE_NONE && console_session_new(user, role, token, &full);
    if (full) {
        log_warn("console: login for '%.64s' from [%s] refused: too many open sessions", user, ip);
        return page_login(c, "too many open sessions for this user: log out elsewhere, or wait an hour");
    }
    if (!ok) {
        log_warn("console: failed login for '%.64s' from [%s]", user, ip);
        sleep(1);                      /* this connection's own thread: nobody else waits */
        return page_login(c, "wrong user or password");
    }
    log_info("console: %s (%s) logged in from [%s]", user, console_role_name(role), ip);
    char cookie[200];
    snprintf(cookie, sizeof cookie, "postern_session=%s; Path=/; HttpOnly; SameSite=Strict%s", token,
             secure_cookies ? "; Secure" : "");
    return redirect(c, "/", cookie);
}

/* ---- routing -------------------------------------------------------- */

void console_configure(const char *control_socket, bool https)
{
    snprintf(control_path, sizeof control_path, "%s", control_socket);
    secure_cookies = https;
}

void console_request_done(void *req)
{
    struct console_req *r = req;
    if (!r)
        return;
    buf_free(&r->body);
    free(r);
}

static enum MHD_Result route_post(struct MHD_Connection *c, const char *url, const char *form,
                                  const struct console_session *s, bool logged_in)
{
    if (!strcmp(url, "/login"))
        return do_login(c, form);
    bool mine = !strncmp(url, "/my/", 4);
    if (!strcmp(url, "/my/login") || !strcmp(url, "/my/link"))     /* no session: a password, or a signed link */
        return console_user_post(c, url, form, s, logged_in, secure_cookies);
    bool api = !strncmp(url, "/api/", 5);
    if (!logged_in)
        return api ? json_error(c, MHD_HTTP_UNAUTHORIZED, "log in first")
                   : redirect(c, mine ? "/my/login" : "/login", NULL);
    /* every change carries the session's CSRF token (a form field, or a header for the API) */
    char token[1024];
    form_get(form, "csrf", token);
    const char *hdr = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-CSRF-Token");
    if (!console_secret_equal(token[0] ? token : hdr ? hdr : "", s->csrf))
        return api ? json_error(c, MHD_HTTP_FORBIDDEN, "missing or wrong CSRF token")
                   : text_status(c, MHD_HTTP_FORBIDDEN, "missing or wrong CSRF token\n");
    if (!strcmp(url, "/logout")) {
        const char *cookie = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, "postern_session");
        console_session_end(cookie ? cookie : "");
        return redirect(c, s->role == ROLE_USER ? "/my/login" : "/login",
                        "postern_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict");
    }
    if (mine)
        return console_user_post(c, url, form, s, logged_in, secure_cookies);
    if (s->role == ROLE_USER)              /* a mail user: their own /my/ pages only */
        return api ? json_error(c, MHD_HTTP_FORBIDDEN, "not an admin") : text_status(c, MHD_HTTP_FORBIDDEN, "not an admin\n");
    if (!strcmp(url, "/archive/export"))
        return console_archive_export(c, s, form);
    bool bulk = !strcmp(url, "/bulk") || !strcmp(url, "/api/bulk");
    if (!bulk && strcmp(url, "/action") && strcmp(url, "/api/action"))
        return text_status(c, MHD_HTTP_NOT_FOUND, "not found\n");
    if (s->role != ROLE_ADMIN)
        return api ? json_error(c, MHD_HTTP_FORBIDDEN, "read-only user") : text_status(c, MHD_HTTP_FORBIDDEN, "read-only user\n");
    return do_action(c, s, form, api, bulk);
}

static enum MHD_Result route_get(struct MHD_Connection *c, const char *url, const struct console_session *s,
                                 bool logged_in)
{
    if (!strcmp(url, "/login"))
        return page_login(c, NULL);
    if (!strcmp(url, "/style.css"))             /* the login pages use it too */
        return console_stylesheet(c);
    if (!strncmp(url, "/my/", 4) || !strcmp(url, "/my"))
        return console_user_get(c, url, s, logged_in);
    bool api = !strncmp(url, "/api/", 5);
    if (!logged_in && !strcmp(url, "/api/track") && console_track_peer(c)) {     /* another node of the fleet */
        struct console_session peer = {.role = ROLE_READONLY};
        snprintf(peer.user, sizeof peer.user, "fleet peer");
        char ip[64];
        client_ip(c, ip, sizeof ip);
        log_info("console: fleet peer from [%s] searches the tracking store", ip);
        return console_track_page(c, &peer, true, true);
    }
    if (!logged_in)
        return api ? json_error(c, MHD_HTTP_UNAUTHORIZED, "log in first") : redirect(c, "/login", NULL);
    if (s->role == ROLE_USER)              /* a mail user: their own /my/ pages only */
        return api ? json_error(c, MHD_HTTP_FORBIDDEN, "not an admin") : redirect(c, "/my/", NULL);
    if (!strcmp(url, "/") || !strcmp(url, "/api/queue"))
        return console_queue_page(c, s, false, api);
    if (!strcmp(url, "/quarantine") || !strcmp(url, "/api/quarantine"))
        return console_queue_page(c, s, true, api);

    if (!strcmp(url, "/message") || !strcmp(url, "/api/message"))
        return page_message(c, s, api);
    if (!strcmp(url, "/track") || !strcmp(url, "/api/track"))
        return console_track_page(c, s, api, false);
    if (!strcmp(url, "/archive") || !strcmp(url, "/api/archive"))
        return console_archive_page(c, s, api);
    if (!strcmp(url, "/suspended") || !strcmp(url, "/api/suspended"))
        return console_suspend_page(c, s, api);
    if (!strcmp(url, "/api/counters"))
        return json_response(c, MHD_HTTP_OK,
                             json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:s,s:s}", "queue", (json_int_t)metric_value(M_QUEUE_MESSAGES, NULL),
                                       "sessions_open", (json_int_t)metric_value(M_SESSIONS_OPEN, NULL),
                                       "accepted", (json_int_t)metric_value(M_MESSAGES_ACCEPTED, NULL),
                                       "delivered", (json_int_t)metric_value(M_DELIVERIES, "result=\"delivered\""),
                                       "deferred", (json_int_t)metric_value(M_DELIVERIES, "result=\"deferred\""),
                                       "bounced", (json_int_t)metric_value(M_DELIVERIES, "result=\"bounced\""),
                                       "user", s->user, "role", console_role_name(s->role)));
    return text_status(c, MHD_HTTP_NOT_FOUND, "not found\n");
}

enum MHD_Result console_handle(struct MHD_Connection *c, const char *url, const char *method, const char *upload,
                               size_t *upload_size, void **state)
{
    bool post = !strcmp(method, "POST");
    if (!post && strcmp(method, "GET") && strcmp(method, "HEAD"))
        return text_status(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
    if (post) {                        /* the body arrives over several calls */
        struct console_req *r = *state;
        if (!r) {
            if (!(r = calloc(1, sizeof *r)))
                return MHD_NO;
            buf_init(&r->body);
            *state = r;
            return MHD_YES;
        }
        if (*upload_size) {
            if (r->body.len + *upload_size > MAX_FORM)
                r->too_big = true;
            else
                buf_append(&r->body, upload, *upload_size);
            *upload_size = 0;
            return MHD_YES;
        }
        if (r->too_big)
            return text_status(c, MHD_HTTP_CONTENT_TOO_LARGE, "form too large\n");
        buf_append(&r->body, "", 1);
    } else if (*upload_size) {
        return MHD_NO;
    }
    struct console_session s = {0};
    const char *cookie = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, "postern_session");
    bool logged_in = cookie && console_session_find(cookie, &s);
    if (post)
        return route_post(c, url, buf_head(&((struct console_req *)*state)->body), &s, logged_in);
    return route_get(c, url, &s, logged_in);
}
