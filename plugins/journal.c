/* journal.c - envelope journaling: for every message (or every one an
 * earlier link asked an archive copy for: tx:archive(), request_archive),
 * one journal report to a journal address, in the shape Exchange journal
 * reports and archive services' envelope journaling use:
 *
 *   multipart/mixed, X-MS-Journal-Report and X-Postern-Journal headers
 *     1. text/plain: "Sender:", "Subject:", "Message-Id:", "Queue-Id:",
 *        "Client:", "TLS:", "Authentication-Results:", then one line per
 *        recipient: "To: a", "Cc: a", "Bcc: a" (in a Bcc header) or
 *        "Bcc: a, Envelope-Only" (in no header: a blind copy)
 *     2. message/rfc822: the message exactly as posternd stored it
 *
 * The report goes through posternd's own queue (host->submit_message_flags
 * with POSTERN_SUBMIT_JOURNAL): it is committed to the spool, retried like
 * any message while the journal's next hop is down, and skips the chain
 * (never journaled, scanned or changed). The original is never held up by
 * it.
 *   journal.address  = journal@archive.example   (required)
 *   journal.sender   = postmaster@gw.example     (default: postmaster@hostname)
 *   journal.mode     = all | requested           (default all)
 *   journal.required = no | yes                  (yes: compliance mode)
 * Without `required` the report is made at the QUEUE stage, after the 250.
 * With `required = yes` it is made and committed at EOM, before the 250:
 * when it cannot be committed the message is refused with 451 4.3.0. Put
 * journal last in the chain, so it sees the message as it will be stored.
 * Under `postern policy` (dry_run) nothing is submitted. */
#include "postern_plugin.h"
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define REPORT_RCPTS_MAX 1000

struct journal {
    char address[512];
    char sender[512];
    bool requested_only;
    bool required;
};

static const struct postern_host *host;

/* A growing buffer; ok turns false on allocation failure. */
struct out {
    char *p;
    size_t len, cap;
    bool ok;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (!o->ok)
        return;
    if (o->len + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 8192;
        while (cap < o->len + n + 1)
            cap *= 2;
        char *p = realloc(o->p, cap);
        if (!p) {
            o->ok = false;
            return;
        }
        o->p = p;
        o->cap = cap;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static void puts_(struct out *o, const char *s) { put(o, s, strlen(s)); }

/* A header value on one report line: folds joined, control characters
 * and non-ASCII octets replaced (the report part is 7-bit). */
static void put_field(struct out *o, const char *name, const char *value)
{
    puts_(o, name);
    puts_(o, ": ");
    const char *v = value ? value : "";
    v += strspn(v, " \t\r\n");
    size_t n = 0;
    for (; *v && n < 900; v++, n++) {
        unsigned char c = (unsigned char)*v;
        char ch = c == '\r' || c == '\n' || c == '\t' ? ' ' : c < 0x20 || c >= 0x7f ? '?' : (char)c;
        if (ch == ' ' && o->len && o->p[o->len - 1] == ' ')
            continue;
        put(o, &ch, 1);
    }
    puts_(o, "\r\n");
}

static bool address_char(char c) { return isalnum((unsigned char)c) || (c && strchr(".-_+=@", c)); }

/* Does the header field list name (To, Cc, Bcc) contain addr? */
static bool listed_in(postern_txn *t, const char *name, const char *addr)
{
    size_t alen = strlen(addr);
    for (size_t nth = 0;; nth++) {
        const char *v = host->header_get(t, name, nth);
        if (!v)
            return false;
        for (const char *p = v; (p = strcasestr(p, addr)); p += alen) {
            char before = p == v ? ' ' : p[-1], after = p[alen] ? p[alen] : ' ';
            if (!address_char(before) && !address_char(after))
                return true;
        }
    }
}

static void put_rcpts(struct out *o, postern_txn *t)
{
    size_t n = host->rcpt_count(t);
    for (size_t i = 0; i < n && i < REPORT_RCPTS_MAX; i++) {
        const char *r = host->rcpt(t, i);
        char line[700];
        if (listed_in(t, "To", r))
            snprintf(line, sizeof line, "%s", r), put_field(o, "To", line);
        else if (listed_in(t, "Cc", r))
            snprintf(line, sizeof line, "%s", r), put_field(o, "Cc", line);
        else if (listed_in(t, "Bcc", r))
            snprintf(line, sizeof line, "%s", r), put_field(o, "Bcc", line);
        else
            snprintf(line, sizeof line, "%s, Envelope-Only", r), put_field(o, "Bcc", line);
    }
}

/* The message as stored: from the spool (QUEUE), or the header list and
 * body as they will be written (EOM). */
static int original(postern_txn *t, struct out *m)
{
    uint64_t len;
    int fd = host->message_open(t, &len);
    if (fd >= 0) {
        char buf[65536];
        while (len && m->ok) {
            ssize_t r = read(fd, buf, len < sizeof buf ? len : sizeof buf);
            if (r <= 0)
                break;
            put(m, buf, (size_t)r);
            len -= (uint64_t)r;
        }
        close(fd);
        return len || !m->ok ? -1 : 0;
    }
    const char *name, *value;
    for (size_t i = 0; host->header_at(t, i, &name, &value) == 0; i++) {
        puts_(m, name);
        puts_(m, ":");
        puts_(m, value);
        puts_(m, "\r\n");
    }
    puts_(m, "\r\n");
    char buf[65536];
    long r;
    for (uint64_t off = 0; (r = host->body_read(t, off, buf, sizeof buf)) > 0; off += (uint64_t)r)
        put(m, buf, (size_t)r);
    return r < 0 || !m->ok ? -1 : 0;
}

/* A boundary that does not occur in the original. */
static void boundary_for(const struct out *m, const char *qid, char *b, size_t size)
{
    for (unsigned k = 0;; k++) {
        snprintf(b, size, "=_postern_journal_%s_%u", qid, k);
        if (!memmem(m->p, m->len, b, strlen(b)))
            return;
    }
}

static bool eight_bit(const struct out *m)
{
    for (size_t i = 0; i < m->len; i++)
        if ((unsigned char)m->p[i] >= 0x80)
            return true;
    return false;
}

static void put_headers(struct out *o, const struct journal *j, postern_txn *t, const char *boundary)
{
    char date[64], line[1200];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", &tm);
    snprintf(line, sizeof line, "From: <%s>\r\nTo: <%s>\r\nDate: %s\r\nMessage-ID: <journal.%s@%s>\r\n", j->sender,
             j->address, date, host->queue_id(t), host->hostname());
    puts_(o, line);
    put_field(o, "Subject", host->header_get(t, "Subject", 0));
    snprintf(line, sizeof line, "MIME-Version: 1.0\r\nX-MS-Journal-Report:\r\nX-Postern-Journal: %s\r\n"
             "Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n", host->queue_id(t), boundary);
    puts_(o, line);
}

/* The report part: who sent it, who got it and how it came in. */
static void put_report(struct out *o, postern_txn *t)
{
    char line[600];
    snprintf(line, sizeof line, "%s", host->sender(t)[0] ? host->sender(t) : "<>");
    put_field(o, "Sender", line);
    put_field(o, "Subject", host->header_get(t, "Subject", 0));
    put_field(o, "Message-Id", host->header_get(t, "Message-ID", 0));
    put_field(o, "Queue-Id", host->queue_id(t));
    snprintf(line, sizeof line, "[%s] helo=%s", host->client_addr(t), host->helo_name(t));
    put_field(o, "Client", line);
    put_field(o, "TLS", host->tls_active(t) ? "yes" : "no");
    const char *auth = POSTERN_HOST_HAS(host, auth_user) ? host->auth_user(t) : NULL;
    if (auth)
        put_field(o, "Authenticated-As", auth);
    for (size_t nth = 0; host->header_get(t, "Authentication-Results", nth); nth++)
        put_field(o, "Authentication-Results", host->header_get(t, "Authentication-Results", nth));
    put_rcpts(o, t);
}

static int build(const struct journal *j, postern_txn *t, struct out *o)
{
    struct out m = {.ok = true};
    if (original(t, &m) < 0) {
        free(m.p);
        return -1;
    }
    char boundary[128], line[400];
    boundary_for(&m, host->queue_id(t), boundary, sizeof boundary);
    put_headers(o, j, t, boundary);
    snprintf(line, sizeof line, "--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n"
             "Content-Transfer-Encoding: 7bit\r\n\r\n", boundary);
    puts_(o, line);
    put_report(o, t);
    snprintf(line, sizeof line, "\r\n--%s\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: %s\r\n"
             "Content-Disposition: attachment; filename=\"%s.eml\"\r\n\r\n", boundary,
             eight_bit(&m) ? "8bit" : "7bit", host->queue_id(t));
    puts_(o, line);
    put(o, m.p, m.len);
    snprintf(line, sizeof line, "%s--%s--\r\n", m.len >= 2 && !memcmp(m.p + m.len - 2, "\r\n", 2) ? "" : "\r\n",
             boundary);
    puts_(o, line);
    free(m.p);
    return o->ok ? 0 : -1;
}

static postern_verdict journal_now(const struct journal *j, postern_txn *t)
{
    if (j->requested_only && !host->archive_requested(t))
        return POSTERN_CONTINUE;
    if (host->dry_run()) {
        host->log(t, POSTERN_LOG_INFO, "journal: dry run, a report would go to <%s>", j->address);
        return POSTERN_CONTINUE;
    }
    struct out o = {.ok = true};
    char qid[17] = "";
    const char *rcpts[1] = {j->address};
    int rc = build(j, t, &o);
    if (rc == 0)
        rc = host->submit_message_flags(j->sender, rcpts, 1, o.p, o.len, POSTERN_SUBMIT_JOURNAL, qid);
    int err = errno;
    free(o.p);
    if (rc == 0) {
        host->log(t, POSTERN_LOG_INFO, "journal: report %s to <%s>", qid, j->address);
        return POSTERN_CONTINUE;
    }
    if (err == ELOOP)          /* a notice posternd made: its QUEUE stage cannot submit */
        return POSTERN_CONTINUE;
    host->log(t, POSTERN_LOG_ERROR, "journal: the report to <%s> could not be committed: %s", j->address,
              strerror(err));
    host->set_reply(t, "451 4.3.0 journal copy could not be committed, try again later");
    return POSTERN_TEMPFAIL;
}

static postern_verdict on_eom(postern_txn *t, void *state)
{
    const struct journal *j = state;
    return j->required ? journal_now(j, t) : POSTERN_CONTINUE;
}

static postern_verdict on_queue(postern_txn *t, void *state)
{
    const struct journal *j = state;
    return j->required ? POSTERN_CONTINUE : journal_now(j, t);
}

static bool is_address(const char *s)
{
    const char *at = strchr(s, '@');
    return at && at != s && at[1] && !strchr(at + 1, '@') && !strpbrk(s, " \t\r\n<>\",;()");
}

static int set_option(struct journal *j, const char *k, const char *v, char *err, size_t errlen)
{
    if (!strcmp(k, "address") && is_address(v) && strlen(v) < sizeof j->address)
        snprintf(j->address, sizeof j->address, "%s", v);
    else if (!strcmp(k, "sender") && (!v[0] || is_address(v)) && strlen(v) < sizeof j->sender)
        snprintf(j->sender, sizeof j->sender, "%s", v);
    else if (!strcmp(k, "mode") && (!strcmp(v, "all") || !strcmp(v, "requested")))
        j->requested_only = !strcmp(v, "requested");
    else if (!strcmp(k, "required") && (!strcmp(v, "yes") || !strcmp(v, "no")))
        j->required = !strcmp(v, "yes");
    else
        return snprintf(err, errlen, "bad option %s = '%s' (known: address = ADDR, sender = ADDR, "
                        "mode = all|requested, required = yes|no)", k, v), -1;
    return 0;
}

static int init(const struct postern_host *h, const struct postern_option *opts, size_t n, void **state,
                char *err, size_t errlen)
{
    host = h;
    if (POSTERN_HOST_REQUIRE(h, submit_message_flags, err, errlen) < 0)
        return -1;
    struct journal *j = calloc(1, sizeof *j);
    if (!j)
        return -1;
    snprintf(j->sender, sizeof j->sender, "postmaster@%s", h->hostname());
    for (size_t i = 0; i < n; i++)
        if (set_option(j, opts[i].key, opts[i].value, err, errlen) < 0) {
            free(j);
            return -1;
        }
    if (!j->address[0]) {
        snprintf(err, errlen, "journal.address is required (where journal reports go)");
        free(j);
        return -1;
    }
    *state = j;
    return 0;
}

static void fini(void *state) { free(state); }

/* The options it takes (checked by posternd before init, documented in postern-plugins(5)). */
static const struct postern_option_spec options[] = {
    {"address", POSTERN_OPT_TEXT, NULL, "", 0, "where journal reports go"},
    {"sender", POSTERN_OPT_TEXT, NULL, NULL, 0, "the reports' envelope sender"},
    {"mode", POSTERN_OPT_CHOICE, "all|requested", "all", 0, "every message, or those a plugin or Lua asked for"},
    {"required", POSTERN_OPT_BOOL, NULL, "no", 0, "refuse (4xx) a message whose report cannot be committed before the 250"},
    {NULL, 0, NULL, NULL, 0, NULL},
};

static const struct postern_plugin plugin = {
    .abi_version = POSTERN_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct postern_plugin),
    .name = "journal",
    .init = init,
    .fini = fini,
    .on_eom = on_eom,
    .on_queue = on_queue,
    .options = options,
};

const struct postern_plugin *postern_plugin_entry(void) { return &plugin; }
