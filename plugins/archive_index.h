/* archive_index.h - the archive's search index and its expiry records,
 * shared by the archive plugin (which writes both) and `postern archive
 * search|export|reindex|verify` (which read them).
 *
 * DIR/index: one line per archived message, in chain order, tab-separated:
 *     SEQ ARCHIVED_AT RELPATH QUEUE_ID ENVELOPE_FROM ENVELOPE_TO FROM TO SUBJECT
 * (ENVELOPE_TO: every recipient, Bcc included, comma-separated; FROM, TO:
 * the header fields, TO with Cc; tabs, line ends and control characters
 * in values become spaces). Appended after the chain, not fsync'd: it
 * is rebuilt from the chain and the files by `archive reindex`. Writers
 * take DIR/index.lock (flock) so a rebuild never loses an append.
 *
 * Expiry (archive.retention) removes a file and records it in the chain as
 * a link of its own, whose path is "expired@WHEN/RELPATH" (WHEN in ISO
 * 8601 basic form, 20261202T101500Z) and whose file hash is the removed
 * file's: the chain still verifies, and says what went and when. */
#ifndef POSTERN_ARCHIVE_INDEX_H
#define POSTERN_ARCHIVE_INDEX_H
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define ARCHIVE_INDEX_FIELDS 9
enum { IX_SEQ, IX_AT, IX_REL, IX_QID, IX_ENV_FROM, IX_ENV_TO, IX_FROM, IX_TO, IX_SUBJECT };
#define ARCHIVE_INDEX_LINE_MAX 16384
#define ARCHIVE_EXPIRED_PREFIX "expired@"

/* Append value to out (of size, holding *len bytes) as one index field:
 * no tabs, line ends or control characters, runs of spaces as one. */
static inline void archive_index_field(char *out, size_t size, size_t *len, const char *value)
{
    const char *v = value ? value : "";
    v += strspn(v, " \t\r\n");
    for (; *v && *len + 2 < size; v++) {
        char c = (unsigned char)*v < 0x20 || *v == 0x7f ? ' ' : *v;
        if (c == ' ' && (*len == 0 || out[*len - 1] == ' ' || out[*len - 1] == '\t'))
            continue;
        out[(*len)++] = c;
    }
    while (*len && out[*len - 1] == ' ')
        (*len)--;
    out[*len] = '\0';
}

/* Add value to a comma-separated list field (ENVELOPE_TO, TO). */
static inline void archive_index_list_add(char *list, size_t size, size_t *len, const char *value)
{
    if (*len && *len + 2 < size)
        list[(*len)++] = ',';
    archive_index_field(list, size, len, value);
}

/* The whole index line, LF included, into out: seq, then the other eight
 * fields in order (lists already joined). Returns its length. */
static inline size_t archive_index_line(char *out, size_t size, unsigned long seq,
                                        const char *const fields[ARCHIVE_INDEX_FIELDS - 1])
{
    int n0 = snprintf(out, size, "%lu", seq);
    size_t n = n0 > 0 && (size_t)n0 < size ? (size_t)n0 : 0;
    for (int i = 0; i < ARCHIVE_INDEX_FIELDS - 1; i++) {
        if (n + 2 < size)
            out[n++] = '\t';
        archive_index_field(out, size, &n, fields[i]);
    }
    out[n++] = '\n';
    return n;
}

/* Split an index line in place; 0, or -1 if it has the wrong shape. */
static inline int archive_index_split(char *line, char *fields[ARCHIVE_INDEX_FIELDS])
{
    line[strcspn(line, "\n")] = '\0';
    for (int i = 0; i < ARCHIVE_INDEX_FIELDS; i++) {
        fields[i] = line;
        char *tab = strchr(line, '\t');
        if (i < ARCHIVE_INDEX_FIELDS - 1 && !tab)
            return -1;
        if (tab) {
            *tab = '\0';
            line = tab + 1;
        }
    }
    return 0;
}

/* The archived path an expiry record names ("expired@WHEN/REL" -> REL,
 * when -> WHEN), or NULL if rel is no expiry record. */
static inline const char *archive_expired_path(const char *rel, char *when, size_t wsize)
{
    size_t plen = strlen(ARCHIVE_EXPIRED_PREFIX);
    if (strncmp(rel, ARCHIVE_EXPIRED_PREFIX, plen))
        return NULL;
    const char *slash = strchr(rel + plen, '/');
    if (!slash)
        return NULL;
    if (when) {
        size_t n = (size_t)(slash - rel - plen);
        snprintf(when, wsize, "%.*s", (int)(n < wsize ? n : wsize - 1), rel + plen);
    }
    return slash + 1;
}

#endif
