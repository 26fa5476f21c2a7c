/* console_user.c - the end users' pages under /my/ on the console's
 * listener: a person logs in with their mail address and mail password
 * (checked by the configured auth_backend: Dovecot or Cyrus, one PLAIN
 * exchange; or with user_login = ldap by a bind as their directory entry) and sees and acts on their own copies in the spam quarantine
 * only: release to me, delete, release and always allow the sender, block
 * the sender, "this is spam"; and their allow and block lists. A release
 * is learned by rspamd as ham, "this is spam" as spam (learn.c). Every message ID a user
 * names is checked against the login (a copy held for that address, or
 * "no such message", the same answer as for an ID that does not exist);
 * every change is a POST with the session's CSRF token; nothing from a
 * message is ever rendered as HTML. Admins may act for a user with ?as=. */
#include "console_user.h"
#include "console_archive.h"
#include "archive_audit.h"
#include "auth_backend.h"
#include "console_int.h"
#include "control_client.h"
#include "log.h"
#include "learn.h"
#include "ldap_login.h"
#include "digest.h"
#include "signed_token.h"
#include "smtp_parse.h"
#include "spool.h"
#include <pthread.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static const struct auth_backend *backend;
static bool by_ldap;              /* user_login = ldap */
static const char *control_path;
static bool secure_links;         /* the listener is HTTPS: session cookies get Secure */

void console_user_configure(const struct config *cfg, const char *control_socket)
{
    backend = auth_backend_configured(cfg);
    by_ldap = cfg->user_login && !strcmp(cfg->user_login, "ldap");
    control_path = control_socket;
    secure_links = cfg->http_tls;
}

/* One PLAIN exchange with the auth backend, or an LDAP bind: true when
 * login/password pass. */
static bool password_ok(const char *login, const char *password, const char *ip)
{
    if (by_ldap)
        return ldap_login_ok(login, password);
    if (!backend)
        return false;
    struct auth_exchange x = {.mech = "PLAIN", .tls = true};
    snprintf(x.client_ip, sizeof x.client_ip, "%s", ip);
    unsigned char in[1100];
    size_t ul = strlen(login), pl = strlen(password);
    if (ul + pl + 2 > sizeof in)
        return false;
    in[0] = '\0';
    memcpy(in + 1, login, ul);
    in[1 + ul] = '\0';
    memcpy(in + 2 + ul, password, pl);
    enum auth_result r = backend->step(&x, in, ul + pl + 2, true);
    memset(in, 0, sizeof in);
    bool ok = r == AUTH_OK && !strcasecmp(x.user, login);
    if (backend->end)
        backend->end(&x);
    return ok;
}

/* Whose mail this page is about: the user's own address, or (for an admin)
 * ?as=ADDRESS. NULL when the session may not see /my/. */
static const char *owner_of(struct MHD_Connection *c, const struct console_session *s, char out[256])
{
    if (s->role == ROLE_USER) {
        snprintf(out, 256, "%s", s->user);
        return out;
    }
    const char *as = query(c, "as");
    if (s->role == ROLE_ADMIN && strchr(as, '@') && strlen(as) < 256) {
        snprintf(out, 256, "%s", as);
        return out;
    }
    return NULL;
}

/* The message if owner's copy of it is in the spam quarantine, else NULL. */
static json_t *held_for(const char *id, const char *owner)
{
    char req[128], err[200];
    if (!qid_valid(id))
        return NULL;
    snprintf(req, sizeof req, "show --json %s", id);
    json_t *one = queue_json(req, err, sizeof err);
    json_t *m = json_incref(json_array_get(one, 0));
    json_decref(one);
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(m, "recipients"), i, r) {
        if (!strcasecmp(jstr(r, "address"), owner) && !strcmp(jstr(r, "status"), "quarantined"))
            return m;
    }
    json_decref(m);
    return NULL;
}

static const char *reason_for(json_t *m, const char *owner)
{
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(m, "recipients"), i, r) {
        if (!strcasecmp(jstr(r, "address"), owner))
            return jstr(r, "last_reply");
    }
    return "";
}

static void user_page_start(struct buf *b, const char *title, const struct console_session *s, const char *owner)
{
    buf_puts(b, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Postern: ");
    html(b, title);
    buf_puts(b, "</title><link rel=\"stylesheet\" href=\"/style.css\"></head><body>\n<header><span class=\"brand\">"
                "Postern</span><nav><a href=\"/my/\">My quarantine</a><a href=\"/my/lists\">My lists</a></nav>"
                "<form method=\"post\" action=\"/logout\" class=\"user\"><input type=\"hidden\" name=\"csrf\" value=\"");
    html_attr(b, s->csrf);
    buf_puts(b, "\">");
    html(b, owner);
    buf_puts(b, " <button type=\"submit\">Log out</button></form></header>\n<main><h1>");
    html(b, title);
    buf_puts(b, "</h1>\n");
}

/* ---- pages --------------------------------------------------------- */

static enum MHD_Result page_login(struct MHD_Connection *c, const char *msg)
{
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Postern: your quarantine</title>"
                 "<link rel=\"stylesheet\" href=\"/style.css\"></head><body><main><h1>Your spam quarantine</h1>\n");
    if (msg) {
        buf_puts(&b, "<p id=\"error\">");
        html(&b, msg);
        buf_puts(&b, "</p>");
    }
    buf_puts(&b, "<form method=\"post\" action=\"/my/login\">mail address <input name=\"user\" id=\"user\"> "
                 "password <input type=\"password\" name=\"password\" id=\"password\"> "
                 "<button type=\"submit\" id=\"login\">Log in</button></form></main></body></html>\n");
    return send_response(c, msg ? MHD_HTTP_FORBIDDEN : MHD_HTTP_OK, "text/html; charset=utf-8", &b, NULL, NULL);
}

static void held_row(struct buf *b, json_t *m, const char *owner, const struct console_session *s)
{
    char subject[256], age[64];
    spool_subject(jstr(m, "id"), subject, sizeof subject);
    snprintf(age, sizeof age, "%lld min ago", (long long)json_integer_value(json_object_get(m, "age")) / 60);
    buf_puts(b, "<tr><td><a href=\"/my/message?id=");
    url_enc(b, jstr(m, "id"));
    buf_puts(b, "\">");
    html(b, subject[0] ? subject : "(no subject)");
    buf_puts(b, "</a></td><td>");
    html(b, jstr(m, "sender"));
    buf_puts(b, "</td><td>");
    html(b, reason_for(m, owner));
    buf_printf(b, "</td><td>%s</td><td>", age);
    static const char *const ops[][2] = {{"release", "Release to me"}, {"allow", "Release and always allow"},
                                         {"block", "Block sender"}, {"spam", "This is spam"}, {"delete", "Delete"}};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        buf_puts(b, "<form method=\"post\" action=\"/my/action\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" "
                    "value=\"");
        html_attr(b, s->csrf);
        buf_puts(b, "\"><input type=\"hidden\" name=\"id\" value=\"");
        html_attr(b, jstr(m, "id"));
        buf_printf(b, "\"><input type=\"hidden\" name=\"as\" value=\"");
        html_attr(b, owner);
        buf_printf(b, "\"><button type=\"submit\" name=\"op\" value=\"%s\" class=\"op-%s\">%s</button></form> ", ops[i][0],
                   ops[i][0], ops[i][1]);
    }
    buf_puts(b, "</td></tr>\n");
}

static enum MHD_Result page_quarantine(struct MHD_Connection *c, const struct console_session *s, const char *owner,
                                       bool api)
{
    struct buf req;
    buf_init(&req);
    struct action_words w = {.argc = 0};
    const char *words[] = {"list", "--json", "--rcpt", owner};
    for (size_t i = 0; i < 4; i++)
        add_word(&w, words[i]);
    char err[300];
    json_t *all = words_request(&w, &req, err, sizeof err) == 0 ? queue_json(buf_head(&req), err, sizeof err) : NULL;
    buf_free(&req);
    if (!all)
        return api ? json_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, err) : text_status(c, MHD_HTTP_SERVICE_UNAVAILABLE, err);
    json_t *mine = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(all, i, m) {
        json_t *held = held_for(jstr(m, "id"), owner);      /* only the copies held for this address */
        if (held)
            json_array_append_new(mine, json_pack("{s:s,s:s,s:s,s:I}", "id", jstr(m, "id"), "from", jstr(m, "sender"),
                                                  "reason", reason_for(m, owner), "age",
                                                  json_integer_value(json_object_get(m, "age"))));
        json_decref(held);
    }
    if (api) {
        json_decref(all);
        return json_response(c, MHD_HTTP_OK, mine);
    }
    struct buf b;
    buf_init(&b);
    user_page_start(&b, "My quarantine", s, owner);
    buf_printf(&b, "<p id=\"count\">%zu message(s) held for you</p><table id=\"held\"><tr><th>subject</th><th>from</th>"
                   "<th>why</th><th>when</th><th></th></tr>\n", json_array_size(mine));
    json_array_foreach(all, i, m) {
        json_t *held = held_for(jstr(m, "id"), owner);
        if (held)
            held_row(&b, m, owner, s);
        json_decref(held);
    }
    buf_puts(&b, "</table></main></body></html>\n");
    json_decref(all);
    json_decref(mine);
    return send_response(c, MHD_HTTP_OK, "text/html; charset=utf-8", &b, NULL, NULL);
}

static enum MHD_Result page_message(struct MHD_Connection *c, const struct console_session *s, const char *owner)
{
    json_t *m = held_for(query(c, "id"), owner);
    if (!m)
        return text_status(c, MHD_HTTP_NOT_FOUND, "no such message\n");
    char *data = malloc(65536);
    ssize_t n = data ? queued_message_start(jstr(m, "id"), data, 65536) : -1;
    struct buf b;
    buf_init(&b);
    user_page_start(&b, "A held message", s, owner);
    buf_puts(&b, "<p>from ");
    html(&b, jstr(m, "sender"));
    buf_puts(&b, " — ");
    html(&b, reason_for(m, owner));
    buf_puts(&b, "</p><pre id=\"text\">");
    if (n > 0)
        html(&b, data);      /* text only: never rendered */
    buf_puts(&b, "</pre></main></body></html>\n");
    free(data);
    json_decref(m);
    return send_response(c, MHD_HTTP_OK, "text/html; charset=utf-8", &b, NULL, NULL);
}

static enum MHD_Result page_lists(struct MHD_Connection *c, const struct console_session *s, const char *owner)
{
    char req[400];
    snprintf(req, sizeof req, "lists show %s", owner);
    struct buf out, b;
    buf_init(&out);
    buf_init(&b);
    if (control_request(control_path, req, &out) < 0) {
        buf_free(&out);
        return text_status(c, MHD_HTTP_SERVICE_UNAVAILABLE, "posternd does not answer\n");
    }
    buf_append(&out, "", 1);
    user_page_start(&b, "My lists", s, owner);
    buf_puts(&b, "<table id=\"lists\"><tr><th>sender</th><th>list</th><th></th></tr>\n");
    for (char *line = buf_head(&out), *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        char who[320], kind[16], pattern[330];
        if (sscanf(line, "%319s %15s %329s", who, kind, pattern) != 3)
            continue;
        buf_puts(&b, "<tr><td>");
        html(&b, pattern);
        buf_printf(&b, "</td><td>%s</td><td><form method=\"post\" action=\"/my/lists\" class=\"inline\">",
                   !strcmp(kind, "allow") ? "allow" : "block");
        buf_puts(&b, "<input type=\"hidden\" name=\"csrf\" value=\"");
        html_attr(&b, s->csrf);
        buf_puts(&b, "\"><input type=\"hidden\" name=\"as\" value=\"");
        html_attr(&b, owner);
        buf_puts(&b, "\"><input type=\"hidden\" name=\"pattern\" value=\"");
        html_attr(&b, pattern);
        buf_puts(&b, "\"><button type=\"submit\" name=\"op\" value=\"del\">Remove</button></form></td></tr>\n");
    }
    buf_puts(&b, "</table><form method=\"post\" action=\"/my/lists\" id=\"add\"><input type=\"hidden\" name=\"csrf\" "
                 "value=\"");
    html_attr(&b, s->csrf);
    buf_puts(&b, "\"><input type=\"hidden\" name=\"as\" value=\"");
    html_attr(&b, owner);
    buf_puts(&b, "\">sender or @domain <input name=\"pattern\" id=\"pattern\"> <button type=\"submit\" name=\"op\" "
                 "value=\"allow\">Always allow</button> <button type=\"submit\" name=\"op\" value=\"block\">Block"
                 "</button></form></main></body></html>\n");
    buf_free(&out);
    return send_response(c, MHD_HTTP_OK, "text/html; charset=utf-8", &b, NULL, NULL);
}

/* ---- changes ------------------------------------------------------- */

/* One request to the daemon; 0, or -1 with its answer in why. */
static int ask(const char *req, char *why, size_t size)
{
    struct buf out;
    buf_init(&out);
    int rc = control_request(control_path, req, &out);
    buf_append(&out, "", 1);
    snprintf(why, size, "%s", rc < 0 ? "posternd does not answer" : buf_head(&out));
    buf_free(&out);
    return rc == 0 ? 0 : -1;
}

/* A queue command on owner's copy of id (release or delete --for). */
static int act_on_copy(const char *verb, const char *id, const char *owner, char *why, size_t size)
{
    struct action_words w = {.argc = 0};
    const char *words[] = {verb, id, "--for", owner};
    for (size_t i = 0; i < 4; i++)
        add_word(&w, words[i]);
    struct buf req;
    buf_init(&req);
    int rc = words_request(&w, &req, why, size) == 0 ? ask(buf_head(&req), why, size) : -1;
    buf_free(&req);
    return rc;
}

static int list_change(const char *op, const char *owner, const char *pattern, char *why, size_t size)
{
    if (!pattern[0] || strpbrk(pattern, " \t\r\n") || strpbrk(owner, " \t\r\n")) {
        snprintf(why, size, "a sender address or @domain, without blanks");
        return -1;
    }
    char req[800];
    if (!strcmp(op, "del"))
        snprintf(req, sizeof req, "lists del %s %s", owner, pattern);
    else
        snprintf(req, sizeof req, "lists add %s %s %s", op, owner, pattern);
    return ask(req, why, size);
}

/* The user's decision on their copy of m: 0, or -1 with why. */
static int act(json_t *m, const char *op, const char *id, const char *owner, char *why, size_t size)
{
    const char *sender = jstr(m, "sender");
    /* what the user decided teaches rspamd (before the copy goes); a failure changes nothing else */
    bool ham = !strcmp(op, "release") || !strcmp(op, "allow"), spam = !strcmp(op, "spam");
    char learned[300];
    if ((ham || spam) && learn_message(id, spam, learned, sizeof learned) < 0)
        log_warn("console: %s for <%s>: not learned: %s", id, owner, learned);
    if (!strcmp(op, "release") || !strcmp(op, "delete") || spam)
        return act_on_copy(spam ? "delete" : op, id, owner, why, size);
    if ((!strcmp(op, "allow") || !strcmp(op, "block")) && sender[0])
        return list_change(op, owner, sender, why, size) == 0
                   ? act_on_copy(!strcmp(op, "allow") ? "release" : "delete", id, owner, why, size) : -1;
    snprintf(why, size, "no such action");
    return -1;
}

/* A user's release or delete of their copy, in the archive's audit trail. */
static void audit_user_action(struct MHD_Connection *c, const struct console_session *s, const char *op,
                              const char *id, const char *owner, int rc)
{
    bool release = !strcmp(op, "release") || !strcmp(op, "allow");
    char details[1400] = "";
    size_t len = 0;
    archive_audit_kv(details, sizeof details, &len, "id", id);
    archive_audit_kv(details, sizeof details, &len, "for", owner);
    archive_audit_kv(details, sizeof details, &len, "op", op);
    archive_audit_kv(details, sizeof details, &len, "result", rc == 0 ? "done" : "failed");
    console_audit(c, s, release ? "queue-release" : "queue-delete", details);
}

static enum MHD_Result do_action(struct MHD_Connection *c, const struct console_session *s, const char *form,
                                 const char *owner)
{
    char id[1024], op[1024], why[600] = "";
    form_get(form, "id", id);
    form_get(form, "op", op);
    json_t *m = held_for(id, owner);
    if (!m)
        return text_status(c, MHD_HTTP_NOT_FOUND, "no such message\n");   /* another user's, or none */
    int rc = act(m, op, id, owner, why, sizeof why);
    audit_user_action(c, s, op, id, owner, rc);
    char ip[64];
    client_ip(c, ip, sizeof ip);
    log_info("console: %s from [%s] for <%s>: %s %s: %s", s->user, ip, owner, op, id, rc == 0 ? "done" : why);
    json_decref(m);
    if (rc < 0)
        return text_status(c, MHD_HTTP_CONFLICT, why);
    return redirect(c, s->role == ROLE_USER ? "/my/" : "/", NULL);
}

static enum MHD_Result do_lists(struct MHD_Connection *c, const struct console_session *s, const char *form,
                                const char *owner)
{
    char op[1024], pattern[1024], why[600];
    form_get(form, "op", op);
    form_get(form, "pattern", pattern);
    if (strcmp(op, "allow") && strcmp(op, "block") && strcmp(op, "del"))
        return text_status(c, MHD_HTTP_BAD_REQUEST, "no such action\n");
    if (list_change(op, owner, pattern, why, sizeof why) < 0)
        return text_status(c, MHD_HTTP_BAD_REQUEST, why);
    log_info("console: %s changed the lists of <%s>: %s %s", s->user, owner, op, pattern);
    return redirect(c, "/my/lists", NULL);
}

/* Failed logins, per client address and per user, in a sliding window:
 * over the limit, the password is not even checked. */
#define FAIL_WINDOW_S 300
#define FAILS_PER_CLIENT 10
#define FAILS_PER_USER 5
#define FAIL_SLOTS 256

static struct failures {
    char who[300];
    int count;
    time_t since;
} fails[FAIL_SLOTS];
static pthread_mutex_t fails_lock = PTHREAD_MUTEX_INITIALIZER;

static struct failures *failures_of(const char *who, time_t now)
{
    struct failures *free_slot = NULL, *oldest = &fails[0];
    for (size_t i = 0; i < FAIL_SLOTS; i++) {
        if (fails[i].who[0] && !strcmp(fails[i].who, who)) {
            if (now - fails[i].since > FAIL_WINDOW_S)
                fails[i].count = 0, fails[i].since = now;
            return &fails[i];
        }
        if (!fails[i].who[0] || now - fails[i].since > FAIL_WINDOW_S)
            free_slot = free_slot ? free_slot : &fails[i];
        if (fails[i].since < oldest->since)
            oldest = &fails[i];
    }
    struct failures *f = free_slot ? free_slot : oldest;      /* a full table forgets the oldest */
    snprintf(f->who, sizeof f->who, "%s", who);
    f->count = 0;
    f->since = now;
    return f;
}

/* true when the client or the user failed too often lately; count adds one failure to both. */
static bool too_many_failures(const char *ip, const char *user, bool count)
{
    char by_ip[80], by_user[300];
    snprintf(by_ip, sizeof by_ip, "ip %s", ip);
    snprintf(by_user, sizeof by_user, "user %.250s", user);
    time_t now = time(NULL);
    pthread_mutex_lock(&fails_lock);
    struct failures *a = failures_of(by_ip, now), *b = failures_of(by_user, now);
    if (count) {
        a->count++;
        b->count++;
    }
    bool over = a->count >= FAILS_PER_CLIENT || b->count >= FAILS_PER_USER;
    pthread_mutex_unlock(&fails_lock);
    return over;
}

static enum MHD_Result do_login(struct MHD_Connection *c, const char *form, bool secure)
{
    char user[1024], password[1024], ip[64];
    form_get(form, "user", user);
    form_get(form, "password", password);
    client_ip(c, ip, sizeof ip);
    if (too_many_failures(ip, user, false)) {
        memset(password, 0, sizeof password);
        log_warn("console: quarantine login for '%.64s' from [%s] refused: too many failed logins", user, ip);
        return page_login(c, "too many failed logins: try again in a few minutes");
    }
    bool address = strchr(user, '@') && strlen(user) < sizeof ((struct console_session *)0)->user &&
                   !strpbrk(user, " \t\r\n");
    bool ok = address && password[0] && password_ok(user, password, ip);
    memset(password, 0, sizeof password);
    char token[CONSOLE_TOKEN_LEN + 1];
    bool full = false;
    if (ok && !console_session_new(user, ROLE_USER, token, &full))
        return page_login(c, full ? "too many open sessions: log out elsewhere, or wait an hour" : "try again");
    if (!ok) {
        too_many_failures(ip, user, true);
        log_warn("console: failed quarantine login for '%.64s' from [%s]", user, ip);
        sleep(1);                       /* this connection's own thread */
        return page_login(c, address ? "wrong address or password" : "log in with your mail address");
    }
    log_info("console: %s logged in to the quarantine pages from [%s]", user, ip);
    char cookie[200];
    snprintf(cookie, sizeof cookie, "postern_session=%s; Path=/; HttpOnly; SameSite=Strict%s", token,
             secure ? "; Secure" : "");
    return redirect(c, "/my/", cookie);
}

/* ---- signed links from the digest ------------------------------------ */

struct link {
    char action[16], qid[QID_LEN + 8], rcpt[320], nonce[64];
    long long expires;
};

/* A digest link's token: signed by us, not expired, well formed. */
static bool link_open(const char *token, struct link *l, const char **why)
{
    size_t keylen;
    const unsigned char *key = digest_key(&keylen);
    char payload[SIGNED_TOKEN_MAX], rcpt[700];
    *why = "this link is not valid";
    if (!key || strlen(token) >= SIGNED_TOKEN_MAX || token_open(key, keylen, token, payload, sizeof payload) < 0 ||
        sscanf(payload, "1 %15s %23s %699s %lld %63s", l->action, l->qid, rcpt, &l->expires, l->nonce) != 5 ||
        xtext_decode(rcpt, l->rcpt, sizeof l->rcpt) < 0)
        return false;
    if (l->expires < (long long)time(NULL)) {
        *why = "this link has expired: open your quarantine from a newer digest, or log in";
        return false;
    }
    static const char *const actions[] = {"release", "allow", "block", "delete", "open"};
    for (size_t i = 0; i < sizeof actions / sizeof *actions; i++)
        if (!strcmp(l->action, actions[i]))
            return true;
    return false;
}

static enum MHD_Result link_page(struct MHD_Connection *c, const char *title, const char *text, const char *token)
{
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Postern: your quarantine</title>"
                 "<link rel=\"stylesheet\" href=\"/style.css\"></head><body><main><h1>");
    html(&b, title);
    buf_puts(&b, "</h1><p id=\"what\">");
    html(&b, text);
    buf_puts(&b, "</p>");
    if (token) {          /* the action itself is a POST: a mail scanner following links changes nothing */
        buf_puts(&b, "<form method=\"post\" action=\"/my/link\"><input type=\"hidden\" name=\"t\" value=\"");
        html_attr(&b, token);
        buf_puts(&b, "\"><button type=\"submit\" id=\"confirm\">Confirm</button></form>");
    }
    buf_puts(&b, "<p><a href=\"/my/login\">Your quarantine</a></p></main></body></html>\n");
    return send_response(c, MHD_HTTP_OK, "text/html; charset=utf-8", &b, NULL, NULL);
}

static enum MHD_Result link_get(struct MHD_Connection *c, bool secure)
{
    const char *token = query(c, "t"), *why;
    struct link l;
    if (!link_open(token, &l, &why))
        return text_status(c, MHD_HTTP_FORBIDDEN, why);
    if (!strcmp(l.action, "open")) {          /* the recipient's pages, as a session of their own */
        char session[CONSOLE_TOKEN_LEN + 1], cookie[200];
        bool full = false;
        if (!console_session_new(l.rcpt, ROLE_USER, session, &full))
            return text_status(c, MHD_HTTP_SERVICE_UNAVAILABLE, "too many open sessions, try later\n");
        snprintf(cookie, sizeof cookie, "postern_session=%s; Path=/; HttpOnly; SameSite=Lax%s", session,
                 secure ? "; Secure" : "");
        return redirect(c, "/my/", cookie);
    }
    json_t *m = held_for(l.qid, l.rcpt);
    if (!m)
        return link_page(c, "Nothing to do", "this message is no longer held for you", NULL);
    char text[800];
    snprintf(text, sizeof text, "%s the message from <%.300s> held for %.300s%s", l.action, jstr(m, "sender"), l.rcpt,
             !strcmp(l.action, "allow") ? ", and always allow its sender" : !strcmp(l.action, "block")
                                                                          ? ", and block its sender" : "");
    json_decref(m);
    return link_page(c, "Confirm", text, token);
}

static enum MHD_Result link_post(struct MHD_Connection *c, const char *form)
{
    char token[SIGNED_TOKEN_MAX], why[600] = "";
    const char *bad;
    struct link l;
    form_get(form, "t", token);
    if (!link_open(token, &l, &bad) || !strcmp(l.action, "open"))
        return text_status(c, MHD_HTTP_FORBIDDEN, bad);
    json_t *m = held_for(l.qid, l.rcpt);
    if (!m)
        return link_page(c, "Nothing to do", "this message is no longer held for you", NULL);
    char req[200];
    snprintf(req, sizeof req, "link-use %s %lld", l.nonce, l.expires);
    if (ask(req, why, sizeof why) < 0) {
        json_decref(m);
        return text_status(c, MHD_HTTP_CONFLICT, "this link was used already\n");
    }
    int rc = act(m, l.action, l.qid, l.rcpt, why, sizeof why);
    json_decref(m);
    char ip[64];
    client_ip(c, ip, sizeof ip);
    log_info("console: digest link from [%s] for <%s>: %s %s: %s", ip, l.rcpt, l.action, l.qid, rc == 0 ? "done" : why);
    return rc == 0 ? link_page(c, "Done", "done", NULL) : text_status(c, MHD_HTTP_CONFLICT, why);
}

enum MHD_Result console_user_get(struct MHD_Connection *c, const char *url, const struct console_session *s,
                                 bool logged_in)
{
    if (!strcmp(url, "/my/link"))
        return link_get(c, secure_links);
    if (!strcmp(url, "/my/login") || !logged_in)
        return strcmp(url, "/my/login") ? redirect(c, "/my/login", NULL) : page_login(c, NULL);
    char owner[256];
    if (!owner_of(c, s, owner))
        return text_status(c, MHD_HTTP_FORBIDDEN, "not a quarantine user\n");
    if (!strcmp(url, "/my/") || !strcmp(url, "/my"))
        return page_quarantine(c, s, owner, false);
    if (!strcmp(url, "/my/api/quarantine"))
        return page_quarantine(c, s, owner, true);
    if (!strcmp(url, "/my/message"))
        return page_message(c, s, owner);
    if (!strcmp(url, "/my/lists"))
        return page_lists(c, s, owner);
    return text_status(c, MHD_HTTP_NOT_FOUND, "not found\n");
}

enum MHD_Result console_user_post(struct MHD_Connection *c, const char *url, const char *form,
                                  const struct console_session *s, bool logged_in, bool secure)
{
    if (!strcmp(url, "/my/login"))
        return do_login(c, form, secure);
    if (!strcmp(url, "/my/link"))            /* the signed token is the authority, not a session */
        return link_post(c, form);
    if (!logged_in)
        return redirect(c, "/my/login", NULL);
    char owner[256], as[1024];
    form_get(form, "as", as);
    if (s->role == ROLE_USER)
        snprintf(owner, sizeof owner, "%s", s->user);          /* a user acts for themself only */
    else if (s->role == ROLE_ADMIN && strchr(as, '@') && strlen(as) < sizeof owner)
        snprintf(owner, sizeof owner, "%s", as);
    else
        return text_status(c, MHD_HTTP_FORBIDDEN, "not a quarantine user\n");
    if (!strcmp(url, "/my/action"))
        return do_action(c, s, form, owner);
    if (!strcmp(url, "/my/lists"))
        return do_lists(c, s, form, owner);
    return text_status(c, MHD_HTTP_NOT_FOUND, "not found\n");
}
