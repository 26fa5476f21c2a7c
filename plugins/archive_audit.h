/* archive_audit.h - the archive's audit trail and legal holds, shared by
 * the archive plugin (whose retention honours holds), `postern archive`
 * and the console (which write and read records).
 *
 * DIR/audit: one record a line, tab-separated:
 *     SEQ WHEN WHO WHERE ACTION DETAILS
 * SEQ is the record's chain sequence, WHEN ISO 8601 UTC, WHO the console
 * user or Unix user, WHERE the console client's address or "cli HOST TTY",
 * ACTION one word (search, export, verify, hold, release, queue-release,
 * queue-delete, queue-requeue, ...), DETAILS space-separated KEY=VALUE
 * words, values percent-encoded (archive_audit_encode). Each record is
 * a link of DIR/chain of its own, "SEQ audit@WHEN/ACTION RECORD_SHA256
 * LINK", RECORD_SHA256 the hash of the record's line without its LF, so a
 * record removed or changed breaks `archive verify`.
 *
 * A legal hold is a "hold" record (name=, ongoing=yes|no, count= the
 * copies it matched then, and the search filters from= to= rcpt=
 * subject= since= until=, dates as epoch seconds) and ends with a
 * "release" record (name=). While it stands, retention never removes a
 * copy it matches: one chained before the hold record, or with
 * ongoing=yes any copy. */
#ifndef POSTERN_ARCHIVE_AUDIT_H
#define POSTERN_ARCHIVE_AUDIT_H
#include "archive_index.h"
#include "text_decode.h"
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define ARCHIVE_AUDIT_PREFIX "audit@"
#define ARCHIVE_AUDIT_LINE_MAX 8192
#define ARCHIVE_HOLD_NAME_MAX 64
#define ARCHIVE_FILTER_MAX 256
enum { AU_SEQ, AU_WHEN, AU_WHO, AU_WHERE, AU_ACTION, AU_DETAILS, AUDIT_FIELDS };

/* Is this chain path a record (expiry, audit) rather than an archived
 * copy? Copies are DAY/QUEUEID.eml and never hold an '@'. */
static inline bool archive_is_record(const char *rel)
{
    const char *at = strchr(rel, '@'), *slash = strchr(rel, '/');
    return at && (!slash || at < slash);
}

/* The action an audit chain path names ("audit@WHEN/ACTION"), or NULL. */
static inline const char *archive_audit_action(const char *rel)
{
    if (strncmp(rel, ARCHIVE_AUDIT_PREFIX, strlen(ARCHIVE_AUDIT_PREFIX)))
        return NULL;
    const char *slash = strchr(rel, '/');
    return slash ? slash + 1 : NULL;
}

/* value, percent-encoded for a DETAILS word, appended to out (size, *len). */
static inline void archive_audit_encode(char *out, size_t size, size_t *len, const char *value)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *v = (const unsigned char *)(value ? value : ""); *v && *len + 4 < size; v++) {
        if (*v <= ' ' || *v == '%' || *v == '=' || *v == 0x7f) {
            out[(*len)++] = '%';
            out[(*len)++] = hex[*v >> 4];
            out[(*len)++] = hex[*v & 15];
        } else {
            out[(*len)++] = (char)*v;
        }
    }
    out[*len] = '\0';
}

/* Append " KEY=VALUE" (the first without its space) to details. */
static inline void archive_audit_kv(char *out, size_t size, size_t *len, const char *key, const char *value)
{
    if (!value)
        return;
    int n = snprintf(out + *len, size - *len, "%s%s=", *len ? " " : "", key);
    if (n > 0 && *len + (size_t)n < size)
        *len += (size_t)n;
    archive_audit_encode(out, size, len, value);
}

/* The value of KEY in a DETAILS text, decoded into out; false if absent. */
static inline bool archive_audit_get(const char *details, const char *key, char *out, size_t size)
{
    size_t klen = strlen(key);
    for (const char *p = details; p && *p; p = strchr(p, ' ') ? strchr(p, ' ') + 1 : NULL) {
        if (strncmp(p, key, klen) || p[klen] != '=')
            continue;
        size_t n = 0;
        for (p += klen + 1; *p && *p != ' ' && n + 1 < size; p++) {
            unsigned hi, lo;
            if (*p == '%' && sscanf(p + 1, "%1x%1x", &hi, &lo) == 2) {
                out[n++] = (char)(hi << 4 | lo);
                p += 2;
            } else {
                out[n++] = *p;
            }
        }
        out[n] = '\0';
        return true;
    }
    return false;
}

/* Split a DIR/audit line in place; 0, or -1 if it has the wrong shape. */
static inline int archive_audit_split(char *line, char *f[AUDIT_FIELDS])
{
    line[strcspn(line, "\n")] = '\0';
    for (int i = 0; i < AUDIT_FIELDS; i++) {
        f[i] = line;
        char *tab = i < AUDIT_FIELDS - 1 ? strchr(line, '\t') : NULL;
        if (i < AUDIT_FIELDS - 1 && !tab)
            return -1;
        if (tab) {
            *tab = '\0';
            line = tab + 1;
        }
    }
    return 0;
}

/* The search filters (archive search, holds): case-insensitive
 * substrings; since/until inclusive epoch seconds, -1 = open. */
struct archive_filter {
    char from[ARCHIVE_FILTER_MAX], to[ARCHIVE_FILTER_MAX], rcpt[ARCHIVE_FILTER_MAX], subject[ARCHIVE_FILTER_MAX];
    time_t since, until;
};

static inline bool archive_filter_has(const char *field, const char *want)
{
    return !want[0] || strcasestr(field, want);
}

/* An index line's ARCHIVED_AT (2026-12-07T10:00:00Z) as epoch seconds, -1. */
static inline time_t archive_index_time(const char *at)
{
    struct tm tm = {0};
    const char *end = strptime(at, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return end && !*end ? timegm(&tm) : -1;
}

/* Has a header value encoded words, or bytes that may not be UTF-8? */
static inline bool archive_subject_encoded(const char *raw)
{
    for (const unsigned char *p = (const unsigned char *)raw; *p; p++)
        if (*p >= 0x80 || (p[0] == '=' && p[1] == '?'))
            return true;
    return false;
}

/* The Subject field as readers see it: its encoded words (RFC 2047)
 * decoded and any other text made valid UTF-8, in b; raw itself when it
 * is plain ASCII. The index keeps the header as it came. */
static inline const char *archive_subject_text(const char *raw, struct buf *b)
{
    if (!archive_subject_encoded(raw))
        return raw;
    buf_reset(b);
    header_text_decode(raw, b);
    buf_append(b, "", 1);
    return buf_head(b);
}

/* A header field (--from, --to, --subject) matches as it came or as it
 * reads: "=?UTF-8?Q?M=C3=BCller?= <m@example.test>" matches "Müller". */
static inline bool archive_header_has(const char *raw, const char *want)
{
    if (archive_filter_has(raw, want))
        return true;
    if (!archive_subject_encoded(raw))
        return false;
    struct buf b;
    buf_init(&b);
    bool has = archive_filter_has(archive_subject_text(raw, &b), want);
    buf_free(&b);
    return has;
}

/* Does the copy an index line describes match f? --from is the envelope
 * sender or the From header, --to the To or Cc header, --rcpt any
 * envelope recipient (Bcc included), --subject the Subject; the headers
 * decoded or not (the same for search, export and legal holds). */
static inline bool archive_filter_matches(const struct archive_filter *f, char *const ix[ARCHIVE_INDEX_FIELDS])
{
    if (f->since >= 0 || f->until >= 0) {
        time_t at = archive_index_time(ix[IX_AT]);
        if (at < 0 || (f->since >= 0 && at < f->since) || (f->until >= 0 && at > f->until))
            return false;
    }
    return (archive_filter_has(ix[IX_ENV_FROM], f->from) || (f->from[0] && archive_header_has(ix[IX_FROM], f->from))) &&
           archive_header_has(ix[IX_TO], f->to) && archive_filter_has(ix[IX_ENV_TO], f->rcpt) &&
           archive_header_has(ix[IX_SUBJECT], f->subject);
}

/* The filters as DETAILS words (appended), and back. */
static inline void archive_filter_details(const struct archive_filter *f, char *out, size_t size, size_t *len)
{
    const char *const keys[] = {"from", "to", "rcpt", "subject"};
    const char *const vals[] = {f->from, f->to, f->rcpt, f->subject};
    for (int i = 0; i < 4; i++)
        if (vals[i][0])
            archive_audit_kv(out, size, len, keys[i], vals[i]);
    char n[32];
    if (f->since >= 0 && snprintf(n, sizeof n, "%lld", (long long)f->since) > 0)
        archive_audit_kv(out, size, len, "since", n);
    if (f->until >= 0 && snprintf(n, sizeof n, "%lld", (long long)f->until) > 0)
        archive_audit_kv(out, size, len, "until", n);
}

/* A search's or export's DETAILS: its filters, its full-text query (text,
 * NULL or "" for none) and count_key=count (found=, exported=). */
static inline void archive_query_details(const struct archive_filter *m, const char *text, const char *count_key,
                                         long count, char *out, size_t size, size_t *len)
{
    char n[32];
    archive_filter_details(m, out, size, len);
    if (text && *text)
        archive_audit_kv(out, size, len, "text", text);
    snprintf(n, sizeof n, "%ld", count);
    archive_audit_kv(out, size, len, count_key, n);
}

static inline void archive_filter_from_details(struct archive_filter *f, const char *details)
{
    char n[32];
    *f = (struct archive_filter){.since = -1, .until = -1};
    archive_audit_get(details, "from", f->from, sizeof f->from);
    archive_audit_get(details, "to", f->to, sizeof f->to);
    archive_audit_get(details, "rcpt", f->rcpt, sizeof f->rcpt);
    archive_audit_get(details, "subject", f->subject, sizeof f->subject);
    if (archive_audit_get(details, "since", n, sizeof n))
        f->since = strtoll(n, NULL, 10);
    if (archive_audit_get(details, "until", n, sizeof n))
        f->until = strtoll(n, NULL, 10);
}

/* A legal hold as its records leave it. */
struct archive_hold {
    char name[ARCHIVE_HOLD_NAME_MAX];
    bool ongoing, released;
    unsigned long seq;              /* its record's: it covers the copies before it (all if ongoing) */
    char when[32], who[128];
    struct archive_filter filter;
};

struct archive_holds {
    struct archive_hold *v;
    size_t n;
    unsigned long records;          /* hold and release records read */
};

/* Fold one audit line into holds (a hold record adds, a release marks the
 * latest standing hold of that name released). */
static inline void archive_holds_add_line(struct archive_holds *h, char *line)
{
    char *f[AUDIT_FIELDS];
    if (archive_audit_split(line, f) < 0)
        return;
    bool hold = !strcmp(f[AU_ACTION], "hold"), release = !strcmp(f[AU_ACTION], "release");
    if (!hold && !release)
        return;
    h->records++;
    char name[ARCHIVE_HOLD_NAME_MAX], n[32];
    if (!archive_audit_get(f[AU_DETAILS], "name", name, sizeof name))
        return;
    if (release) {
        for (size_t i = h->n; i-- > 0;)
            if (!h->v[i].released && !strcmp(h->v[i].name, name)) {
                h->v[i].released = true;
                break;
            }
        return;
    }
    struct archive_hold *grown = realloc(h->v, (h->n + 1) * sizeof *grown);
    if (!grown)
        return;
    h->v = grown;
    struct archive_hold *x = &h->v[h->n++];
    memset(x, 0, sizeof *x);
    snprintf(x->name, sizeof x->name, "%s", name);
    x->ongoing = archive_audit_get(f[AU_DETAILS], "ongoing", n, sizeof n) && !strcmp(n, "yes");
    x->seq = strtoul(f[AU_SEQ], NULL, 10);
    snprintf(x->when, sizeof x->when, "%s", f[AU_WHEN]);
    snprintf(x->who, sizeof x->who, "%s", f[AU_WHO]);
    archive_filter_from_details(&x->filter, f[AU_DETAILS]);
}

/* Every hold DIR/audit records (f open for reading, closed after). */
static inline void archive_holds_load(struct archive_holds *h, FILE *f)
{
    *h = (struct archive_holds){0};
    char *line = malloc(ARCHIVE_AUDIT_LINE_MAX + 2);
    while (f && line && fgets(line, ARCHIVE_AUDIT_LINE_MAX + 2, f))
        archive_holds_add_line(h, line);
    free(line);
    if (f)
        fclose(f);
}

/* The standing hold that keeps the copy (its chain seq, its index line),
 * or NULL. */
static inline const struct archive_hold *archive_held_by(const struct archive_holds *h, unsigned long seq,
                                                         char *const ix[ARCHIVE_INDEX_FIELDS])
{
    for (size_t i = 0; i < h->n; i++)
        if (!h->v[i].released && (h->v[i].ongoing || seq < h->v[i].seq) && archive_filter_matches(&h->v[i].filter, ix))
            return &h->v[i];
    return NULL;
}

#endif
