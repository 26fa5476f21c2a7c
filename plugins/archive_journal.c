/* archive_journal.c - reading an Exchange / Microsoft 365 envelope journal
 * report (the archive plugin's journal_reports = unwrap): a message with
 * an X-MS-Journal-Report header, multipart/mixed, whose first text part
 * lists the envelope, one field a line (Microsoft's "Journal report
 * fields"):
 *     Sender: SMTP-ADDRESS
 *     Subject: TEXT
 *     Message-ID: <ID>
 *     On-Behalf-Of: SMTP-ADDRESS                       (optional)
 *     To|Cc|Bcc|Recipient: SMTP-ADDRESS[, Expanded|Forwarded: SMTP-ADDRESS]
 * and whose message/rfc822 part is the original message, unaltered. */
#include "archive_journal.h"
#include "mime.h"
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The unfolded value of the nth field called name in the header section
 * head[len]; false when there are fewer. */
static bool header_value(const char *head, size_t len, const char *name, size_t nth, char *out, size_t size)
{
    size_t nlen = strlen(name), n = 0, seen = 0;
    bool in = false;
    for (const char *p = head, *end = head + len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = (size_t)((nl ? nl : end) - p);
        if (l && p[l - 1] == '\r')
            l--;
        if (in && l && (p[0] == ' ' || p[0] == '\t')) {
            n += (size_t)snprintf(out + n, n < size ? size - n : 0, "%.*s", (int)l, p);
        } else if (in) {
            break;
        } else if (l > nlen && !strncasecmp(p, name, nlen) && p[nlen] == ':' && seen++ == nth) {
            in = true;
            n = (size_t)snprintf(out, size, "%.*s", (int)(l - nlen - 1), p + nlen + 1);
        }
        p = nl ? nl + 1 : end;
    }
    return in;
}

struct parts {
    const struct mime_part *report_text, *original;
    struct mime_part text, orig;
};

static void take_part(void *arg, const struct mime_part *p)
{
    struct parts *s = arg;
    if (!s->report_text && !strcmp(p->type, "text/plain")) {
        s->text = *p;
        s->report_text = &s->text;
    } else if (!s->original && !strcmp(p->type, "message/rfc822")) {
        s->orig = *p;
        s->original = &s->orig;
    }
}

/* An SMTP address as a report line gives it: blanks and <> trimmed. */
static bool address(const char *v, size_t n, char *out, size_t size)
{
    while (n && isspace((unsigned char)*v))
        v++, n--;
    while (n && isspace((unsigned char)v[n - 1]))
        n--;
    if (n >= 2 && v[0] == '<' && v[n - 1] == '>')
        v++, n -= 2;
    if (!n || n >= size || memchr(v, ' ', n) || !memchr(v, '@', n))
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x21 || v[i] == '<' || v[i] == '>' || v[i] == '\x7f')
            return false;
    memcpy(out, v, n);
    out[n] = '\0';
    return true;
}

/* One "To: a@b[, Expanded: c@d]" line. */
static int recipient_line(struct journal_report *r, const char *type, const char *v)
{
    if (r->n >= JOURNAL_RCPTS_MAX)
        return -1;
    struct journal_rcpt *x = &r->rcpts[r->n];
    memset(x, 0, sizeof *x);
    snprintf(x->type, sizeof x->type, "%s", type);
    const char *comma = strchr(v, ',');
    if (!address(v, comma ? (size_t)(comma - v) : strlen(v), x->addr, sizeof x->addr))
        return -1;
    if (comma) {
        const char *w = comma + 1 + strspn(comma + 1, " ");
        const char *colon = strchr(w, ':');
        size_t kl = colon ? (size_t)(colon - w) : 0;
        if (!colon || (strncasecmp(w, "Expanded", kl) && strncasecmp(w, "Forwarded", kl)) || kl < 8)
            return -1;
        snprintf(x->via_kind, sizeof x->via_kind, "%s", toupper((unsigned char)w[0]) == 'E' ? "Expanded" : "Forwarded");
        if (!address(colon + 1, strlen(colon + 1), x->via, sizeof x->via))
            return -1;
    }
    r->n++;
    return 0;
}

/* The report's lines. */
static int parse_fields(struct journal_report *r, const char *text, size_t len, char *err, size_t errlen)
{
    static const char *const types[] = {"To", "Cc", "Bcc", "Recipient"};
    char line[2048];
    for (const char *p = text, *end = text + len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = (size_t)((nl ? nl : end) - p);
        snprintf(line, sizeof line, "%.*s", (int)(l && p[l - 1] == '\r' ? l - 1 : l), p);
        p = nl ? nl + 1 : end;
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        *colon = '\0';
        const char *v = colon + 1;
        bool is_rcpt = false;
        for (size_t i = 0; i < 4; i++)
            if (!strcasecmp(line, types[i])) {
                is_rcpt = true;
                if (recipient_line(r, types[i], v) < 0) {
                    snprintf(err, errlen, "a %s line the report format does not allow: %.200s", types[i], v);
                    return -1;
                }
            }
        if (!is_rcpt && !strcasecmp(line, "Sender") && !address(v, strlen(v), r->sender, sizeof r->sender)) {
            snprintf(err, errlen, "a Sender that is not an address: %.200s", v);
            return -1;
        }
        if (!strcasecmp(line, "Message-ID"))
            snprintf(r->message_id, sizeof r->message_id, "%s", v + strspn(v, " "));
    }
    return 0;
}

int journal_report_parse(const char *msg, size_t len, struct journal_report *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    const char *sep = NULL;
    for (size_t i = 0; i + 3 < len && !sep; i++)
        if (!memcmp(msg + i, "\r\n\r\n", 4))
            sep = msg + i + 2;
    char ct[1024] = "", cte[256] = "";
    if (!sep || !header_value(msg, (size_t)(sep - msg), "X-MS-Journal-Report", 0, ct, sizeof ct)) {
        snprintf(err, errlen, "no X-MS-Journal-Report header");
        return 1;            /* not a report at all */
    }
    if (!header_value(msg, (size_t)(sep - msg), "Content-Type", 0, ct, sizeof ct)) {
        snprintf(err, errlen, "no Content-Type");
        return -1;
    }
    header_value(msg, (size_t)(sep - msg), "Content-Transfer-Encoding", 0, cte, sizeof cte);
    struct parts parts = {0};
    mime_walk(ct, NULL, cte[0] ? cte : NULL, sep + 2, len - (size_t)(sep + 2 - msg), take_part, &parts);
    if (!parts.report_text || !parts.original) {
        snprintf(err, errlen, "it lacks %s", !parts.report_text ? "the text part with the envelope"
                                                                : "the message/rfc822 part with the original");
        return -1;
    }
    size_t cap = parts.report_text->len + 1;
    char *text = malloc(cap);
    if (!text)
        return snprintf(err, errlen, "out of memory"), -1;
    size_t n = mime_decode(parts.report_text, text, cap);
    int rc = parse_fields(r, text, n < cap ? n : cap, err, errlen);
    free(text);
    if (rc == 0 && (!r->sender[0] || !r->n)) {
        snprintf(err, errlen, "it names %s", !r->sender[0] ? "no Sender" : "no recipient");
        rc = -1;
    }
    if (rc == 0 && parts.original->encoding != MIME_IDENTITY) {
        snprintf(err, errlen, "the original is not attached as it was (a transfer encoding)");
        rc = -1;
    }
    r->original = parts.original->body;
    r->original_len = parts.original->len;
    return rc;
}

bool journal_original_header(const struct journal_report *r, const char *name, size_t nth, char *out, size_t size)
{
    const char *end = NULL;
    for (size_t i = 0; i + 3 < r->original_len && !end; i++)
        if (!memcmp(r->original + i, "\r\n\r\n", 4))
            end = r->original + i + 2;
    out[0] = '\0';
    return header_value(r->original, end ? (size_t)(end - r->original) : r->original_len, name, nth, out, size);
}

int journal_networks_parse(const char *list, struct journal_networks *n, char *err, size_t errlen)
{
    memset(n, 0, sizeof *n);
    char copy[2048], *save = NULL;
    snprintf(copy, sizeof copy, "%s", list);
    for (char *w = strtok_r(copy, ", \t", &save); w; w = strtok_r(NULL, ", \t", &save)) {
        struct journal_net *x = &n->v[n->n];
        char *slash = strchr(w, '/');
        if (slash)
            *slash = '\0';
        x->family = strchr(w, ':') ? AF_INET6 : AF_INET;
        int bits = x->family == AF_INET ? 32 : 128;
        x->prefix = slash ? atoi(slash + 1) : bits;
        if (n->n >= JOURNAL_NETS_MAX || inet_pton(x->family, w, x->addr) != 1 || x->prefix < 0 || x->prefix > bits) {
            snprintf(err, errlen, "journal_from: '%s' is not an address or network (10.0.0.0/8, 2001:db8::/32)", w);
            return -1;
        }
        n->n++;
    }
    return 0;
}

bool journal_networks_match(const struct journal_networks *n, const char *ip)
{
    unsigned char a[16];
    int family = strchr(ip, ':') ? AF_INET6 : AF_INET;
    if (!strncasecmp(ip, "::ffff:", 7) && strchr(ip, '.'))
        ip += 7, family = AF_INET;
    if (inet_pton(family, ip, a) != 1)
        return false;
    for (size_t i = 0; i < n->n; i++) {
        const struct journal_net *x = &n->v[i];
        if (x->family != family)
            continue;
        int full = x->prefix / 8, rest = x->prefix % 8;
        if (!memcmp(a, x->addr, (size_t)full) &&
            (!rest || ((a[full] ^ x->addr[full]) & (0xff << (8 - rest)) & 0xff) == 0))
            return true;
    }
    return false;
}
