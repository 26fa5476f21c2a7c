/* rspamd.c - spam scoring at end of message through rspamd's HTTP
 * protocol (POST /checkv2, the envelope in request headers, the message
 * streamed as the body), and rspamd's action applied:
 *   reject          554 5.7.1 (rspamd's smtp_message, or "Spam message rejected")
 *   soft reject,
 *   greylist        451 4.7.1 (try again later)
 *   rewrite subject Subject: rspamd's new subject (or "*** SPAM *** " + it)
 *   add header      X-Spam: Yes
 *   no action       nothing
 * Headers rspamd asks for (milter.add_headers / remove_headers, e.g. its
 * DKIM or ARC signatures) are applied, and X-Spam-Score, X-Spam-Action and
 * X-Spam-Symbols are added (headers = no turns those three off).
 *   rspamd.url = http://127.0.0.1:11333   (required; host and port)
 *   rspamd.timeout = 15   seconds for the connect and each read or write
 *   rspamd.on_error = tempfail | accept   (default tempfail: rspamd down,
 *                   slow or answering garbage)
 *   rspamd.max_size = 2097152   bytes; a larger message is not scanned
 *   rspamd.headers = yes | no
 *   rspamd.quarantine_score = 6.5   a score from which the message is held in
 *                   the spam quarantine for each recipient (not refused)
 *   rspamd.on_reject = reject | quarantine   what rspamd's reject does
 * Sets rspamd.score, rspamd.required, rspamd.action and rspamd.symbols for
 * later links and Lua. Control bytes in anything rspamd sends never reach a
 * header or a reply. */
#include "postern_plugin.h"
#include "plugin_net.h"
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define MAX_RESPONSE (1024 * 1024)

struct rspamd {
    char host[256], port[8];
    int timeout_s;
    bool accept_on_error, headers;
    unsigned long long max_size;
    bool quarantine_by_score;       /* quarantine_score is set */
    double quarantine_score;
    bool reject_quarantines;        /* on_reject = quarantine */
};

static const struct postern_host *host;

/* ---- the request ---------------------------------------------------- */

static int count_out(void *total, const char *p, size_t n)
{
    (void)p;
    *(size_t *)total += n;
    return 0;
}

static int send_out(void *fd, const char *p, size_t n) { return net_send_all(*(int *)fd, p, n); }

/* The stored message's length, for Content-Length: one pass over the
 * body (rspamd wants the length before the bytes). -1 if unreadable. */
static long message_length(postern_txn *t)
{
    size_t total = 0;
    return message_pieces(host, t, count_out, &total) == 0 ? (long)total : -1;
}

/* A request header with a value from the envelope: control bytes out. */
static int add_field(char *out, size_t size, size_t *used, const char *name, const char *value)
{
    int n = snprintf(out + *used, size - *used, "%s: ", name);
    if (n < 0 || (size_t)n >= size - *used)
        return -1;
    *used += (size_t)n;
    for (const char *p = value; *p && *used + 3 < size; p++)
        out[(*used)++] = (unsigned char)*p < 0x20 || *p == 0x7f ? ' ' : *p;
    if (*used + 3 >= size)
        return -1;
    memcpy(out + *used, "\r\n", 2);
    *used += 2;
    return 0;
}

static int send_request(const struct rspamd *r, int fd, postern_txn *t, size_t length)
{
    char req[16384];
    size_t used = (size_t)snprintf(req, sizeof req, "POST /checkv2 HTTP/1.0\r\nContent-Length: %zu\r\n", length);
    int rc = add_field(req, sizeof req, &used, "IP", host->client_addr(t)) |
             add_field(req, sizeof req, &used, "Helo", host->helo_name(t)) |
             add_field(req, sizeof req, &used, "From", host->sender(t)) |
             add_field(req, sizeof req, &used, "Queue-Id", host->queue_id(t)) |
             add_field(req, sizeof req, &used, "MTA-Name", host->hostname());
    if (host->auth_user(t))
        rc |= add_field(req, sizeof req, &used, "User", host->auth_user(t));
    for (size_t i = 0; i < host->rcpt_count(t) && i < 200; i++)
        rc |= add_field(req, sizeof req, &used, "Rcpt", host->rcpt(t, i));
    if (rc || used + 2 >= sizeof req)
        return -1;
    memcpy(req + used, "\r\n", 2);
    if (net_send_all(fd, req, used + 2) < 0)
        return -1;
    (void)r;
    return message_pieces(host, t, send_out, &fd);
}

/* The response's JSON body, or NULL (why says what went wrong). */
static json_t *read_response(int fd, char *why, size_t wlen)
{
    char *buf = malloc(MAX_RESPONSE + 1);
    size_t len = 0;
    ssize_t r;
    while (buf && len < MAX_RESPONSE && ((r = recv(fd, buf + len, MAX_RESPONSE - len, 0)) > 0 || (r < 0 && errno == EINTR)))
        if (r > 0)
            len += (size_t)r;
    json_t *j = NULL;
    if (buf) {
        buf[len] = '\0';
        char *body = strstr(buf, "\r\n\r\n");
        if (len == 0)
            snprintf(why, wlen, "no answer in time");
        else if (strncmp(buf, "HTTP/1.", 7) || strncmp(buf + 8, " 200", 4) || !body)
            snprintf(why, wlen, "answered %.*s", (int)strcspn(buf, "\r\n") > 100 ? 100 : (int)strcspn(buf, "\r\n"), buf);
        else if (!(j = json_loadb(body + 4, len - (size_t)(body + 4 - buf), 0, NULL)) || !json_is_object(j))
            snprintf(why, wlen, "answered something that is not a JSON object");
    }
    free(buf);
    return j && json_is_object(j) ? j : (json_decref(j), NULL);
}

/* ---- applying the answer -------------------------------------------- */

/* A JSON string as a header value or reply text: printable, one line. */
static void clean_copy(const char *in, char *out, size_t size)
{
    size_t o = 0;
    for (; in && *in && o + 1 < size; in++)
        out[o++] = (unsigned char)*in < 0x20 || *in == 0x7f ? ' ' : *in;
    out[o] = '\0';
}

static void apply_milter_headers(postern_txn *t, json_t *milter)
{
    json_t *rm = json_object_get(milter, "remove_headers"), *add = json_object_get(milter, "add_headers"), *v;
    const char *name;
    char value[2048];
    json_object_foreach(rm, name, v)      /* every field so named but posternd's own trace field */
        for (size_t nth = 0; host->header_get(t, name, nth);)
            if (host->header_delete(t, name, nth) < 0)
                nth++;
    json_object_foreach(add, name, v) {
        json_t *one = json_is_object(v) ? json_object_get(v, "value") : v;
        if (!json_is_string(one) || strpbrk(name, ": \t\r\n"))
            continue;
        clean_copy(json_string_value(one), value + 1, sizeof value - 1);
        value[0] = ' ';
        host->header_add(t, name, value);
    }
}

static void symbol_list(json_t *symbols, char *out, size_t size)
{
    const char *name;
    json_t *v;
    size_t o = 0;
    out[0] = '\0';
    json_object_foreach(symbols, name, v) {
        int n = snprintf(out + o, size - o, "%s%s", o ? ", " : "", name);
        if (n < 0 || (size_t)n >= size - o) {
            out[o] = '\0';
            break;
        }
        o += (size_t)n;
    }
}

static void add_result_headers(postern_txn *t, double score, double required, const char *action,
                               const char *symbols)
{
    char v[4200];
    snprintf(v, sizeof v, " %.2f / %.2f", score, required);
    host->header_add(t, "X-Spam-Score", v);
    snprintf(v, sizeof v, " %s", action);
    host->header_add(t, "X-Spam-Action", v);
    if (symbols[0]) {
        snprintf(v, sizeof v, " %s", symbols);
        host->header_add(t, "X-Spam-Symbols", v);
    }
}

static postern_verdict act(postern_txn *t, json_t *j, const char *action)
{
    char text[600], reply[700];
    json_t *msgs = json_object_get(j, "messages");
    clean_copy(json_string_value(json_object_get(msgs, "smtp_message")), text, sizeof text);
    if (!strcmp(action, "reject")) {
        snprintf(reply, sizeof reply, "554 5.7.1 %s", text[0] ? text : "Spam message rejected");
        host->set_reply(t, reply);
        return POSTERN_REJECT;
    }
    if (!strcmp(action, "soft reject") || !strcmp(action, "greylist")) {
        snprintf(reply, sizeof reply, "451 4.7.1 %s", text[0] ? text : "Try again later");
        host->set_reply(t, reply);
        return POSTERN_TEMPFAIL;
    }
    if (!strcmp(action, "rewrite subject")) {
        char subject[1000];
        const char *old = host->header_get(t, "Subject", 0);
        const char *given = json_string_value(json_object_get(j, "subject"));
        if (given)
            clean_copy(given, subject + 1, sizeof subject - 1);
        else
            snprintf(subject + 1, sizeof subject - 1, "*** SPAM ***%s", old ? old : "");
        subject[0] = ' ';
        if (!old || host->header_change(t, "Subject", 0, subject) < 0)
            host->header_add(t, "Subject", subject);
    } else if (!strcmp(action, "add header")) {
        host->header_add(t, "X-Spam", " Yes");
    }
    return POSTERN_CONTINUE;
}

/* Held in the spam quarantine for every recipient, each released on its own. */
static postern_verdict quarantine_all(postern_txn *t, const char *action, double score, double required)
{
    char why[200];
    snprintf(why, sizeof why, "spam: rspamd %s, score %.2f / %.2f", action[0] ? action : "no action", score,
             required);
    for (size_t i = 0; i < host->rcpt_count(t); i++) {
        const char *rcpt = host->rcpt(t, i);
        if (POSTERN_HOST_HAS(host, rcpt_list) && host->rcpt_list(t, rcpt) == 'A')
            continue;            /* the recipient's allow list: delivered */
        if (host->rcpt_quarantine(t, rcpt, why) < 0)
            return POSTERN_ERROR;
    }
    return POSTERN_CONTINUE;
}

static postern_verdict failed(const struct rspamd *r, postern_txn *t, const char *why)
{
    return scanner_failed(host, t, "rspamd", "rspamd.action", r->accept_on_error,
                          "451 4.3.0 Spam scanner unavailable, try again later", why);
}

static postern_verdict on_eom(postern_txn *t, void *state)
{
    struct rspamd *r = state;
    if (host->message_size(t) > r->max_size) {
        host->var_set(t, "rspamd.action", "skipped");
        return POSTERN_CONTINUE;
    }
    char why[300] = "cannot connect";
    int fd = net_connect_tcp(r->host, r->port, r->timeout_s);
    json_t *j = NULL;
    if (fd >= 0) {
        snprintf(why, sizeof why, "cannot send the message");
        long length = message_length(t);
        if (length >= 0 && send_request(r, fd, t, (size_t)length) == 0)
            j = read_response(fd, why, sizeof why);
        close(fd);
    }
    if (!j) {
        char full[sizeof r->host + sizeof r->port + sizeof why + 4];
        snprintf(full, sizeof full, "%s:%s: %s", r->host, r->port, why);
        return failed(r, t, full);
    }
    char action[64], symbols[4000], num[64];
    clean_copy(json_string_value(json_object_get(j, "action")), action, sizeof action);
    double score = json_number_value(json_object_get(j, "score"));
    double required = json_number_value(json_object_get(j, "required_score"));
    symbol_list(json_object_get(j, "symbols"), symbols, sizeof symbols);
    snprintf(num, sizeof num, "%.2f", score);
    host->var_set(t, "rspamd.score", num);
    snprintf(num, sizeof num, "%.2f", required);
    host->var_set(t, "rspamd.required", num);
    host->var_set(t, "rspamd.action", action[0] ? action : "no action");
    host->var_set(t, "rspamd.symbols", symbols);
    /* rspamd's own header edits first (they remove any X-Spam that came
     * in), then the action's */
    bool quarantine = (r->reject_quarantines && !strcmp(action, "reject")) ||
                      (r->quarantine_by_score && score >= r->quarantine_score && strcmp(action, "soft reject") &&
                       strcmp(action, "greylist") && strcmp(action, "reject"));
    bool refused = !quarantine &&
                   (!strcmp(action, "reject") || !strcmp(action, "soft reject") || !strcmp(action, "greylist"));
    if (!refused)
        apply_milter_headers(t, json_object_get(j, "milter"));
    postern_verdict v = quarantine ? quarantine_all(t, action, score, required) : act(t, j, action);
    if (v == POSTERN_CONTINUE && r->headers)
        add_result_headers(t, score, required, action[0] ? action : "no action", symbols);
    host->log(t, POSTERN_LOG_INFO, "rspamd: %s (%.2f / %.2f)", action, score, required);
    json_decref(j);
    return v;
}

/* ---- options -------------------------------------------------------- */

static int parse_url(struct rspamd *r, const char *v)
{
    if (strncmp(v, "http://", 7))
        return -1;
    const char *hp = v + 7, *colon = hp[0] == '[' ? strstr(hp, "]:") : strrchr(hp, ':');
    size_t hl = colon ? (size_t)(colon - hp) : strcspn(hp, "/");
    const char *port = colon ? colon + (hp[0] == '[' ? 2 : 1) : "11333";
    if (hp[0] == '[') {
        hp++;
        hl = colon ? (size_t)(colon - hp) : 0;
    }
    size_t pl = strcspn(port, "/");
    if (!hl || hl >= sizeof r->host || !pl || pl >= sizeof r->port || strspn(port, "0123456789") != pl ||
        (port[pl] && strcmp(port + pl, "/")))
        return -1;
    snprintf(r->host, sizeof r->host, "%.*s", (int)hl, hp);
    snprintf(r->port, sizeof r->port, "%.*s", (int)pl, port);
    return 0;
}

static int set_option(struct rspamd *r, const char *k, const char *v, char *err, size_t errlen)
{
    char *end;
    if (!strcmp(k, "url") && parse_url(r, v) == 0)
        return 0;
    if (!strcmp(k, "on_error") && (!strcmp(v, "tempfail") || !strcmp(v, "accept")))
        return r->accept_on_error = !strcmp(v, "accept"), 0;
    if (!strcmp(k, "headers") && (!strcmp(v, "yes") || !strcmp(v, "no")))
        return r->headers = !strcmp(v, "yes"), 0;
    if (!strcmp(k, "max_size") && (r->max_size = strtoull(v, &end, 10), *v && !*end && r->max_size > 0))
        return 0;
    if (!strcmp(k, "timeout") && (r->timeout_s = (int)strtol(v, &end, 10), *v && !*end && r->timeout_s > 0 &&
                                  r->timeout_s <= 600))
        return 0;
    if (!strcmp(k, "quarantine_score") && (r->quarantine_score = strtod(v, &end), *v && !*end))
        return r->quarantine_by_score = true, 0;
    if (!strcmp(k, "on_reject") && (!strcmp(v, "reject") || !strcmp(v, "quarantine")))
        return r->reject_quarantines = !strcmp(v, "quarantine"), 0;
    snprintf(err, errlen, "bad option or value rspamd.%s = %s (known: url = http://HOST:PORT, timeout = SECONDS, "
             "on_error = tempfail|accept, max_size = BYTES, headers = yes|no, quarantine_score = SCORE, "
             "on_reject = reject|quarantine)", k, v);
    return -1;
}

static int init(const struct postern_host *h, const struct postern_option *opts, size_t n, void **state, char *err,
                size_t errlen)
{
    host = h;
    if (POSTERN_HOST_REQUIRE(h, auth_user, err, errlen) < 0)
        return -1;
    struct rspamd *r = calloc(1, sizeof *r);
    if (!r)
        return -1;
    r->timeout_s = 15;
    r->headers = true;
    r->max_size = 2 * 1024 * 1024;
    for (size_t i = 0; i < n; i++)
        if (set_option(r, opts[i].key, opts[i].value, err, errlen) < 0) {
            free(r);
            return -1;
        }
    if (!r->host[0]) {
        snprintf(err, errlen, "rspamd.url is required (http://HOST:PORT of rspamd's normal worker)");
        free(r);
        return -1;
    }
    if ((r->quarantine_by_score || r->reject_quarantines) &&
        POSTERN_HOST_REQUIRE(h, rcpt_quarantine, err, errlen) < 0) {
        free(r);
        return -1;
    }
    *state = r;
    return 0;
}

static void fini(void *state) { free(state); }

/* The options it takes (checked by posternd before init, documented in postern-plugins(5)). */
static const struct postern_option_spec options[] = {
    {"url", POSTERN_OPT_TEXT, NULL, "", 0, "`http://HOST:PORT` of rspamd's normal worker"},
    {"on_error", POSTERN_OPT_CHOICE, "tempfail|accept", "tempfail", 0, "what rspamd down or slow answers"},
    {"headers", POSTERN_OPT_BOOL, NULL, "yes", 0, "add X-Spam-* headers with the result"},
    {"max_size", POSTERN_OPT_NUMBER, NULL, "2097152", 0, "bytes; larger messages are not scanned"},
    {"timeout", POSTERN_OPT_NUMBER, NULL, "15", 0, "seconds per scan (1–600)"},
    {"quarantine_score", POSTERN_OPT_TEXT, NULL, NULL, 0,
     "a score (e.g. `6.5`) from which the message is held in the spam quarantine, per recipient, instead of "
     "rspamd's milder actions"},
    {"on_reject", POSTERN_OPT_CHOICE, "reject|quarantine", "reject", 0,
     "what rspamd's `reject` does: refuse (554), or hold in the spam quarantine per recipient"},
    {NULL, 0, NULL, NULL, 0, NULL},
};

static const struct postern_plugin plugin = {
    .abi_version = POSTERN_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct postern_plugin),
    .name = "rspamd",
    .init = init,
    .fini = fini,
    .on_eom = on_eom,
    .options = options,
};

const struct postern_plugin *postern_plugin_entry(void) { return &plugin; }
