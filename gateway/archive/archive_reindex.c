/* archive_reindex.c - DIR/index derived from the chain and the archived
 * files: each copy's index line as its file gives it (archive_derive_index),
 * the index checked against that (archive_index_check, for search and
 * verify), and rebuilt from it with the full-text index (archive reindex,
 * as the daemon's user, under DIR/index.lock). */
#include "archive_reindex.h"
#include "array_grow.h"
#include "archive_audit.h"
#include "archive_chain.h"
#include "archive_fulltext.h"
#include "archive_index.h"
#include "archive_search.h"
#include "buf.h"
#include "headers.h"
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#define HEAD_READ (64 * 1024)       /* enough of a file for its envelope block and headers */

/* ---- reindex ---- */

static const char *field(const struct header_list *h, const char *name, size_t nth)
{
    long i = headers_find(h, name, nth);
    return i < 0 ? "" : h->h[i].value;
}

/* " <addr>" -> "addr", into out. */
static void unbracket(const char *v, char *out, size_t size)
{
    v += strspn(v, " <");
    snprintf(out, size, "%.*s", (int)strcspn(v, ">"), v);
}

/* The index line of one archived file, from its envelope block and headers. */
static void index_line(unsigned long seq, const char *rel, const char *head, size_t len, struct buf *out)
{
    struct header_list h = {0};
    headers_parse(head, len, &h);
    char line[ARCHIVE_INDEX_LINE_MAX], from[600], rcpts[8192] = "", to[4096] = "", addr[1100];
    size_t rn = 0, tn = 0;
    unbracket(field(&h, "X-Postern-Envelope-From", 0), from, sizeof from);
    for (size_t nth = 0; headers_find(&h, "X-Postern-Envelope-To", nth) >= 0; nth++) {
        unbracket(field(&h, "X-Postern-Envelope-To", nth), addr, sizeof addr);
        archive_index_list_add(rcpts, sizeof rcpts, &rn, addr);
    }
    static const char *const lists[] = {"To", "Cc"};
    for (size_t f = 0; f < 2; f++)
        for (size_t nth = 0; headers_find(&h, lists[f], nth) >= 0; nth++)
            archive_index_list_add(to, sizeof to, &tn, field(&h, lists[f], nth));
    const char *const fields[] = {field(&h, "X-Postern-Archived-At", 0), rel, field(&h, "X-Postern-Queue-ID", 0),
                                  from, rcpts, field(&h, "From", 0), to, field(&h, "Subject", 0)};
    buf_append(out, line, archive_index_line(line, sizeof line, seq, fields));
    headers_free(&h);
}

long archive_derive_index(const char *dir, int dirfd, bool lines, archive_copy_fn cb, void *ctx)
{
    FILE *chain = archive_open_in(dir, "chain", "r");
    if (!chain)
        return -1;
    char line[4096], *head = malloc(HEAD_READ);
    long copies = 0;
    struct buf b;
    buf_init(&b);
    while (head && fgets(line, sizeof line, chain)) {
        unsigned long seq;
        char rel[256];
        if (sscanf(line, "%lu %255s", &seq, rel) != 2 || archive_is_record(rel))
            continue;           /* an expiry or audit record */
        copies++;
        int fd = open_archived(dirfd, rel);
        ssize_t r = fd >= 0 ? (lines ? read(fd, head, HEAD_READ) : 1) : -1;
        if (fd >= 0)
            close(fd);
        if (r <= 0) {
            cb(ctx, seq, rel, NULL, 0);     /* expired (its record follows) or deleted */
            continue;
        }
        if (!lines) {
            cb(ctx, seq, rel, "", 0);
            continue;
        }
        char *end = memmem(head, (size_t)r, "\r\n\r\n", 4);
        buf_reset(&b);
        index_line(seq, rel, head, end ? (size_t)(end - head) + 2 : (size_t)r, &b);
        cb(ctx, seq, rel, buf_head(&b), b.len);
    }
    buf_free(&b);
    free(head);
    fclose(chain);
    return head ? copies : -1;
}

/* ---- the index against the chain ---- */

/* One index line, remembered by sequence number and a hash of its text
 * (the index can be large: 16 bytes a line). */
struct ix_entry {
    unsigned long seq;
    uint64_t hash;
    bool matched;
};

struct ix_table {
    struct ix_entry *v;
    size_t n, cap;
};

static uint64_t fnv1a(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
    return h;
}

static int cmp_entry(const void *a, const void *b)
{
    const struct ix_entry *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int load_index(const char *dir, struct ix_table *t)
{
    FILE *ixf = archive_open_in(dir, "index", "r");
    if (!ixf)
        return -1;
    char *line = malloc(ARCHIVE_INDEX_LINE_MAX + 2);
    while (line && fgets(line, ARCHIVE_INDEX_LINE_MAX + 2, ixf)) {
        struct ix_entry *v = array_grow(t->v, &t->cap, t->n + 1, sizeof *t->v, 1024);
        if (!v)
            break;
        t->v = v;
        char *end;
        unsigned long seq = strtoul(line, &end, 10);
        t->v[t->n++] = (struct ix_entry){end != line && *end == '\t' ? seq : 0, fnv1a(line, strlen(line)), false};
    }
    free(line);
    fclose(ixf);
    qsort(t->v, t->n, sizeof *t->v, cmp_entry);
    return 0;
}

struct ix_check {
    struct ix_table t;
    bool fields;
    FILE *out;
    long problems;
};

static void check_copy(void *ctx, unsigned long seq, const char *rel, const char *line, size_t len)
{
    struct ix_check *c = ctx;
    struct ix_entry key = {.seq = seq}, *e = bsearch(&key, c->t.v, c->t.n, sizeof *c->t.v, cmp_entry);
    while (e && e > c->t.v && e[-1].seq == seq)
        e--;
    if (!line) {                   /* no file: whatever line it had stays out of the way */
        for (; e && e < c->t.v + c->t.n && e->seq == seq; e++)
            e->matched = true;
        return;
    }
    if (!e) {
        fprintf(c->out, "INDEX MISSING %s (seq %lu): searches and exports would not find it\n", rel, seq);
        c->problems++;
        return;
    }
    e->matched = true;
    if (e + 1 < c->t.v + c->t.n && e[1].seq == seq) {
        fprintf(c->out, "INDEX DUPLICATE line for %s (seq %lu)\n", rel, seq);
        c->problems++;
        for (; e < c->t.v + c->t.n && e->seq == seq; e++)
            e->matched = true;
        return;
    }
    if (c->fields && e->hash != fnv1a(line, len)) {
        fprintf(c->out, "INDEX ALTERED %s (seq %lu): its line is not the one its file gives\n", rel, seq);
        c->problems++;
    }
}

long archive_index_check(const char *dir, int dirfd, bool fields, FILE *out)
{
    struct ix_check c = {.fields = fields, .out = out};
    long copies = load_index(dir, &c.t) < 0 ? -1 : archive_derive_index(dir, dirfd, fields, check_copy, &c);
    if (copies >= 0)
        for (size_t i = 0; i < c.t.n; i++)
            if (!c.t.v[i].matched) {
                fprintf(out, "INDEX EXTRA line for seq %lu, which the chain does not have as a copy\n",
                        c.t.v[i].seq);
                c.problems++;
            }
    free(c.t.v);
    return copies < 0 ? -1 : c.problems;
}

/* ---- reindex ---- */

struct reindex_writer {
    FILE *out;
    unsigned long indexed, missing;
};

static void write_line(void *ctx, unsigned long seq, const char *rel, const char *line, size_t len)
{
    (void)seq;
    (void)rel;
    struct reindex_writer *w = ctx;
    if (!line) {
        w->missing++;
        return;
    }
    fwrite(line, 1, len, w->out);
    w->indexed++;
}

int archive_reindex(const char *dir, int dirfd)
{
    FILE *lockf = archive_open_in(dir, "index.lock", "a");
    if (!lockf || flock(fileno(lockf), LOCK_EX) < 0) {
        fprintf(stderr, "postern: %s/index.lock: %s\n", dir, strerror(errno));
        if (lockf)
            fclose(lockf);
        return 1;
    }
    struct reindex_writer w = {archive_open_in(dir, "index.new", "w"), 0, 0};
    long copies = w.out ? archive_derive_index(dir, dirfd, true, write_line, &w) : -1;
    if (copies < 0) {
        fprintf(stderr, "postern: %s/%s: %s\n", dir, w.out ? "chain" : "index.new", strerror(errno));
        if (w.out)
            fclose(w.out);
        fclose(lockf);
        return 1;
    }
    char from[4200], to[4200];
    snprintf(from, sizeof from, "%s/index.new", dir);
    snprintf(to, sizeof to, "%s/index", dir);
    int rc = fflush(w.out) == 0 && fsync(fileno(w.out)) == 0 && fclose(w.out) == 0 && rename(from, to) == 0 ? 0 : 1;
    fclose(lockf);
    if (rc)
        fprintf(stderr, "postern: cannot write %s: %s\n", to, strerror(errno));
    else
        printf("reindexed %lu message(s) (%lu expired or missing)\n", w.indexed, w.missing);
    char err[700];
    long texts = rc ? 0 : archive_fulltext_rebuild(dir, NULL, false, err, sizeof err);
    if (texts < 0)
        fprintf(stderr, "postern: the full-text index: %s\n", err);
    else if (!rc)
        printf("full-text index rebuilt: %ld message(s)\n", texts);
    return rc || texts < 0;
}

