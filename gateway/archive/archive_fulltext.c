/* archive_fulltext.c - full-text search over the archive: DIR/fulltext.db,
 * an SQLite FTS5 index of every archived copy's headers (From, To, Cc,
 * Reply-To, Subject and the envelope, RFC 2047 decoded), the text of its
 * text parts (MIME-decoded, charsets to UTF-8, HTML as text) and its
 * attachments' names.
 *
 * Like DIR/index it is derived: from the chain, in chain order, so an
 * update reads the lines after the last one it took (state.last_seq),
 * indexes each new copy, forgets each copy an expiry record removed, and
 * skips audit records. It is brought up to date before every text search
 * and can be rebuilt from nothing. `verify` checks it: every copy the
 * chain has up to last_seq must have its row with the file's hash, and no
 * row may be for a copy the chain does not have.
 *
 * The database lives in the daemon user's tree, so whoever runs this as
 * root does the work in a child that has become the daemon's user (no
 * path there is opened as root). */
#include "archive_fulltext.h"
#include "array_grow.h"
#include "archive_audit.h"
#include "archive_chain.h"
#include "archive_search.h"
#include "buf.h"
#include "headers.h"
#include "mime.h"
#include "privs.h"
#include "text_decode.h"
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define PART_TEXT_MAX (1 << 20)        /* decoded bytes of one part indexed */
#define DOC_TEXT_MAX (4 << 20)         /* of one message */
#define COMMIT_EVERY 2000

static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "CREATE VIRTUAL TABLE IF NOT EXISTS docs USING fts5(headers, body, files, "
    "tokenize = 'unicode61 remove_diacritics 2');"
    "CREATE TABLE IF NOT EXISTS copies(seq INTEGER PRIMARY KEY, rel TEXT NOT NULL UNIQUE, hash TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS state(k TEXT PRIMARY KEY, v INTEGER NOT NULL);";

static sqlite3 *ft_open(const char *dir, bool create, char *err, size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/fulltext.db", dir);
    sqlite3 *db = NULL;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW | (create ? SQLITE_OPEN_CREATE : 0);
    if (sqlite3_open_v2(path, &db, flags, NULL) != SQLITE_OK ||
        sqlite3_exec(db, schema, NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 30000);
    return db;
}

static unsigned long last_seq(sqlite3 *db)
{
    sqlite3_stmt *st;
    unsigned long v = 0;
    if (sqlite3_prepare_v2(db, "SELECT v FROM state WHERE k = 'last_seq'", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = (unsigned long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* ---- a copy's text ---- */

struct doc {
    struct buf headers, body, files;
};

static void add_header(struct doc *d, const struct header_list *h, const char *name)
{
    for (size_t nth = 0;; nth++) {
        long i = headers_find(h, name, nth);
        if (i < 0)
            return;
        header_text_decode(h->h[i].value, &d->headers);
        buf_puts(&d->headers, "\n");
    }
}

static void add_part(void *arg, const struct mime_part *p)
{
    struct doc *d = arg;
    if (p->filename[0]) {
        header_text_decode(p->filename, &d->files);
        buf_puts(&d->files, "\n");
    }
    bool html = !strcmp(p->type, "text/html");
    if (strncmp(p->type, "text/", 5) || d->body.len >= DOC_TEXT_MAX || (p->filename[0] && !html &&
                                                                          strcmp(p->type, "text/plain")))
        return;
    size_t cap = p->len < PART_TEXT_MAX ? p->len + 1 : PART_TEXT_MAX;     /* decoding never grows a part */
    char *raw = malloc(cap);
    size_t n = raw ? mime_decode(p, raw, cap) : 0;
    n = n > cap ? cap : n;
    struct buf text;
    buf_init(&text);
    text_to_utf8(p->charset, raw ? raw : "", n, &text);
    if (html)
        html_to_text(buf_head(&text), text.len, &d->body);
    else
        buf_append(&d->body, buf_head(&text), text.len);
    buf_puts(&d->body, "\n");
    buf_free(&text);
    free(raw);
}

/* The text of the copy data[len] (envelope block and message). */
static void doc_extract(const char *data, size_t len, struct doc *d)
{
    struct header_list h = {0};
    size_t hlen = headers_parse(data, len, &h);
    static const char *const names[] = {"X-Postern-Envelope-From", "X-Postern-Envelope-To", "From", "To", "Cc",
                                        "Reply-To", "Subject"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        add_header(d, &h, names[i]);
    const char *body = data + hlen;
    size_t blen = len - hlen;
    if (blen >= 2 && body[0] == '\r' && body[1] == '\n')
        body += 2, blen -= 2;
    long ct = headers_find(&h, "Content-Type", 0), cd = headers_find(&h, "Content-Disposition", 0),
         cte = headers_find(&h, "Content-Transfer-Encoding", 0);
    mime_walk(ct >= 0 ? h.h[ct].value : NULL, cd >= 0 ? h.h[cd].value : NULL, cte >= 0 ? h.h[cte].value : NULL, body,
              blen, add_part, d);
    headers_free(&h);
}

/* ---- the update ---- */

struct updater {
    sqlite3 *db;
    int dirfd;
    sqlite3_stmt *add_doc, *add_copy, *drop_doc, *drop_copy, *set_last;
    long added, dropped;
};

static int prepare(struct updater *u)
{
    return sqlite3_prepare_v2(u->db, "INSERT OR REPLACE INTO docs(rowid, headers, body, files) VALUES (?, ?, ?, ?)", -1,
                              &u->add_doc, NULL) == SQLITE_OK &&
                   sqlite3_prepare_v2(u->db, "INSERT OR REPLACE INTO copies(seq, rel, hash) VALUES (?, ?, ?)", -1,
                                      &u->add_copy, NULL) == SQLITE_OK &&
                   sqlite3_prepare_v2(u->db, "DELETE FROM docs WHERE rowid = (SELECT seq FROM copies WHERE rel = ?)",
                                      -1, &u->drop_doc, NULL) == SQLITE_OK &&
                   sqlite3_prepare_v2(u->db, "DELETE FROM copies WHERE rel = ?", -1, &u->drop_copy, NULL) == SQLITE_OK &&
                   sqlite3_prepare_v2(u->db, "INSERT OR REPLACE INTO state(k, v) VALUES ('last_seq', ?)", -1,
                                      &u->set_last, NULL) == SQLITE_OK
               ? 0 : -1;
}

static void finalize(struct updater *u)
{
    sqlite3_stmt *all[] = {u->add_doc, u->add_copy, u->drop_doc, u->drop_copy, u->set_last};
    for (size_t i = 0; i < 5; i++)
        sqlite3_finalize(all[i]);
}

static int step(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* A whole archived file, or NULL (gone, or larger than 1 GiB). */
static char *read_copy(int dirfd, const char *rel, size_t *len)
{
    int fd = open_archived(dirfd, rel);
    struct stat st;
    char *p = fd >= 0 && fstat(fd, &st) == 0 && st.st_size < (1L << 30) ? malloc((size_t)st.st_size + 1) : NULL;
    size_t got = 0;
    ssize_t r;
    while (p && got < (size_t)st.st_size && (r = read(fd, p + got, (size_t)st.st_size - got)) > 0)
        got += (size_t)r;
    if (fd >= 0)
        close(fd);
    *len = got;
    return p;
}

static int index_copy(struct updater *u, unsigned long seq, const char *rel, const char *fh)
{
    size_t len;
    char *data = read_copy(u->dirfd, rel, &len);
    if (!data)
        return 0;             /* gone: verify says whether it was deleted or is about to expire */
    struct doc d;
    buf_init(&d.headers);
    buf_init(&d.body);
    buf_init(&d.files);
    doc_extract(data, len, &d);
    free(data);
    sqlite3_bind_int64(u->add_doc, 1, (sqlite3_int64)seq);
    struct buf *cols[] = {&d.headers, &d.body, &d.files};
    for (int i = 0; i < 3; i++)
        sqlite3_bind_text(u->add_doc, i + 2, cols[i]->len ? buf_head(cols[i]) : "", (int)cols[i]->len, SQLITE_STATIC);
    sqlite3_bind_int64(u->add_copy, 1, (sqlite3_int64)seq);
    sqlite3_bind_text(u->add_copy, 2, rel, -1, SQLITE_STATIC);
    sqlite3_bind_text(u->add_copy, 3, fh, -1, SQLITE_STATIC);
    int rc = step(u->add_doc) == 0 && step(u->add_copy) == 0 ? 0 : -1;
    for (int i = 0; i < 3; i++)
        buf_free(cols[i]);
    u->added++;
    return rc;
}

static int forget_copy(struct updater *u, const char *rel)
{
    sqlite3_bind_text(u->drop_doc, 1, rel, -1, SQLITE_STATIC);
    sqlite3_bind_text(u->drop_copy, 1, rel, -1, SQLITE_STATIC);
    u->dropped++;
    return step(u->drop_doc) == 0 && step(u->drop_copy) == 0 ? 0 : -1;
}

/* Every chain line after the last taken, in transactions of COMMIT_EVERY. */
static int update_from_chain(struct updater *u, const char *dir, char *err, size_t errlen)
{
    FILE *chain = archive_open_in(dir, "chain", "r");
    if (!chain) {
        snprintf(err, errlen, "%s/chain: %s", dir, strerror(errno));
        return -1;
    }
    unsigned long last = last_seq(u->db), seq = last;
    char line[4096];
    int rc = sqlite3_exec(u->db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
    long in_txn = 0;
    while (rc == 0 && fgets(line, sizeof line, chain)) {
        char rel[2048], fh[ARCHIVE_HASH_HEX], link[ARCHIVE_HASH_HEX];
        if (sscanf(line, "%lu %2047s %64s %64s", &seq, rel, fh, link) != 4 || seq <= last)
            continue;
        const char *gone = archive_expired_path(rel, NULL, 0);
        rc = gone ? forget_copy(u, gone) : archive_is_record(rel) ? 0 : index_copy(u, seq, rel, fh);
        sqlite3_bind_int64(u->set_last, 1, (sqlite3_int64)seq);
        if (rc == 0)
            rc = step(u->set_last);
        if (rc == 0 && ++in_txn >= COMMIT_EVERY) {
            in_txn = 0;
            rc = sqlite3_exec(u->db, "COMMIT; BEGIN", NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
        }
    }
    fclose(chain);
    if (rc == 0 && sqlite3_exec(u->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        rc = -1;
    if (rc < 0) {
        snprintf(err, errlen, "%s/fulltext.db: %s", dir, sqlite3_errmsg(u->db));
        sqlite3_exec(u->db, "ROLLBACK", NULL, NULL, NULL);
    }
    return rc;
}

int archive_fulltext_update(const char *dir, bool rebuild, long *added, char *err, size_t errlen)
{
    struct updater u = {.dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
    if (rebuild) {
        static const char *const files[] = {"fulltext.db", "fulltext.db-wal", "fulltext.db-shm"};
        for (size_t i = 0; i < 3 && u.dirfd >= 0; i++)
            unlinkat(u.dirfd, files[i], 0);
    }
    u.db = u.dirfd < 0 ? NULL : ft_open(dir, true, err, errlen);
    int rc = -1;
    if (u.db && prepare(&u) == 0)
        rc = update_from_chain(&u, dir, err, errlen);
    else if (u.db)
        snprintf(err, errlen, "%s/fulltext.db: %s", dir, sqlite3_errmsg(u.db));
    else if (u.dirfd < 0)
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
    finalize(&u);
    sqlite3_close(u.db);
    if (u.dirfd >= 0)
        close(u.dirfd);
    *added = u.added;
    return rc;
}

/* ---- search ---- */

long archive_fulltext_query(const char *dir, const char *query, unsigned long **seqs, char *err, size_t errlen)
{
    *seqs = NULL;
    sqlite3 *db = ft_open(dir, false, err, errlen);
    sqlite3_stmt *st = NULL;
    if (!db || sqlite3_prepare_v2(db, "SELECT rowid FROM docs WHERE docs MATCH ? ORDER BY rowid", -1, &st, NULL) !=
                   SQLITE_OK) {
        if (db)
            snprintf(err, errlen, "%s/fulltext.db: %s", dir, sqlite3_errmsg(db));
        sqlite3_close(db);
        return -1;
    }
    sqlite3_bind_text(st, 1, query, -1, SQLITE_STATIC);
    long n = 0;
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        unsigned long *grown = array_grow(*seqs, &cap, (size_t)n + 1, sizeof **seqs, 256);
        if (!grown)
            break;
        *seqs = grown;
        (*seqs)[n++] = (unsigned long)sqlite3_column_int64(st, 0);
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        snprintf(err, errlen, "--text '%s': %s", query, sqlite3_errmsg(db));
        n = -1;
        free(*seqs);
        *seqs = NULL;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* ---- verify ---- */

struct ft_check {
    sqlite3 *db;
    sqlite3_stmt *row;
    unsigned long last, checked;
    long problems;
    FILE *out;
};

static void check_copy(void *ctx, unsigned long seq, const char *rel, const char *line, size_t len)
{
    (void)line;
    (void)len;
    struct ft_check *c = ctx;
    if (!line || seq > c->last)
        return;              /* gone (verify tells), or not taken yet: the next text search adds it */
    sqlite3_bind_int64(c->row, 1, (sqlite3_int64)seq);
    bool have = sqlite3_step(c->row) == SQLITE_ROW && !strcmp((const char *)sqlite3_column_text(c->row, 0), rel);
    sqlite3_reset(c->row);
    c->checked++;
    if (!have) {
        fprintf(c->out, "FULLTEXT MISSING %s (seq %lu): the full-text index lacks it\n", rel, seq);
        c->problems++;
    }
}

long archive_fulltext_check(const char *dir, FILE *out)
{
    char path[4200], err[600];
    snprintf(path, sizeof path, "%s/fulltext.db", dir);
    if (access(path, F_OK) != 0)
        return 0;           /* not made yet: the first text search makes it */
    struct ft_check c = {.out = out, .db = ft_open(dir, false, err, sizeof err)};
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (!c.db || dirfd < 0 ||
        sqlite3_prepare_v2(c.db, "SELECT rel FROM copies WHERE seq = ?", -1, &c.row, NULL) != SQLITE_OK) {
        fprintf(out, "FULLTEXT unreadable: %s\n", c.db ? sqlite3_errmsg(c.db) : err);
        sqlite3_close(c.db);
        if (dirfd >= 0)
            close(dirfd);
        return 1;
    }
    c.last = last_seq(c.db);
    long copies = archive_derive_index(dir, dirfd, false, check_copy, &c);
    sqlite3_finalize(c.row);
    sqlite3_stmt *st;
    long rows = 0, docs = 0;          /* rows for copies the chain lacks, or docs without their row */
    if (sqlite3_prepare_v2(c.db, "SELECT (SELECT count(*) FROM copies), (SELECT count(*) FROM docs)", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        rows = sqlite3_column_int64(st, 0);
        docs = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    if (rows != (long)c.checked || docs != rows) {
        fprintf(out, "FULLTEXT EXTRA rows: %ld indexed copies and %ld texts for %lu chained copies up to seq %lu\n",
                rows, docs, c.checked, c.last);
        c.problems++;
    }
    sqlite3_close(c.db);
    close(dirfd);
    if (copies < 0)
        c.problems++;
    if (c.problems)
        fprintf(out, "the full-text index disagrees with the chain: `postern -c CONF archive reindex` rebuilds it\n");
    return c.problems;
}

/* ---- as the daemon's user ---- */

/* Update, then (with a query) search: what a text search does, here. */
static long update_and_query(const char *dir, const char *query, bool rebuild, unsigned long **seqs, char *err,
                             size_t errlen)
{
    long added = 0;
    *seqs = NULL;
    if (archive_fulltext_update(dir, rebuild, &added, err, errlen) < 0)
        return -1;
    return query ? archive_fulltext_query(dir, query, seqs, err, errlen) : added;
}

struct ft_job {
    const char *dir, *query;
    bool rebuild;
};

/* In the child: its answer on fd, "OK N" and N numbers, or "ERR why". */
static int ft_in_child(int fd, void *ctx)
{
    const struct ft_job *j = ctx;
    FILE *to = fdopen(fd, "w");
    unsigned long *found = NULL;
    char err[700] = "";
    long n = update_and_query(j->dir, j->query, j->rebuild, &found, err, sizeof err);
    if (!to)
        return -1;
    if (n < 0)
        fprintf(to, "ERR %s\n", err);
    else
        fprintf(to, "OK %ld\n", n);
    for (long i = 0; j->query && i < n; i++)
        fprintf(to, "%lu\n", found[i]);
    free(found);
    return fclose(to) == 0 && n >= 0 ? 0 : -1;
}

/* The same in a child that has become run_user. */
static long update_and_query_as(const char *dir, const char *run_user, bool allow_nobody, const char *query,
                                bool rebuild, unsigned long **seqs, char *err, size_t errlen)
{
    struct ft_job job = {dir, query, rebuild};
    struct buf answer;
    buf_init(&answer);
    privs_run_as(run_user, allow_nobody, ft_in_child, &job, &answer);
    buf_append(&answer, "", 1);
    char *text = buf_head(&answer), *p;
    long n = -1;
    *seqs = NULL;
    if (sscanf(text, "OK %ld", &n) == 1 && query && n > 0 && (*seqs = calloc((size_t)n, sizeof **seqs))) {
        p = strchr(text, '\n');
        for (long i = 0; i < n; i++, p = p ? strchr(p + 1, '\n') : NULL)
            (*seqs)[i] = p ? strtoul(p + 1, NULL, 10) : 0;
    } else if (n < 0) {
        snprintf(err, errlen, "%s", !strncmp(text, "ERR ", 4) ? text + 4 : "the full-text search failed");
        err[strcspn(err, "\n")] = '\0';
    }
    buf_free(&answer);
    return n;
}

long archive_fulltext_search(const char *dir, const char *run_user, bool allow_nobody, const char *query,
                             unsigned long **seqs, char *err, size_t errlen)
{
    return geteuid() == 0 ? update_and_query_as(dir, run_user, allow_nobody, query, false, seqs, err, errlen)
                          : update_and_query(dir, query, false, seqs, err, errlen);
}

long archive_fulltext_rebuild(const char *dir, const char *run_user, bool allow_nobody, char *err, size_t errlen)
{
    unsigned long *none = NULL;
    long n = geteuid() == 0 ? update_and_query_as(dir, run_user, allow_nobody, NULL, true, &none, err, errlen)
                            : update_and_query(dir, NULL, true, &none, err, errlen);
    free(none);
    return n;
}

/* In the child: the check's count, then what it printed. */
static int check_in_child(int fd, void *ctx)
{
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    long problems = mem ? archive_fulltext_check(ctx, mem) : 1;
    if (mem)
        fclose(mem);
    FILE *to = fdopen(fd, "w");
    if (to)
        fprintf(to, "%ld\n%s", problems, text ? text : "");
    free(text);
    return to && fclose(to) == 0 ? 0 : -1;
}

long archive_fulltext_check_as(const char *dir, const char *run_user, bool allow_nobody, FILE *out)
{
    if (geteuid() != 0)
        return archive_fulltext_check(dir, out);
    struct buf answer;
    buf_init(&answer);
    int rc = privs_run_as(run_user, allow_nobody, check_in_child, (void *)dir, &answer);
    buf_append(&answer, "", 1);
    char *nl = strchr(buf_head(&answer), '\n');
    long problems = rc == 0 && nl ? strtol(buf_head(&answer), NULL, 10) : 1;
    if (rc == 0 && nl)
        fputs(nl + 1, out);
    else
        fprintf(out, "FULLTEXT unreadable: the check as the daemon's user failed\n");
    buf_free(&answer);
    return problems;
}
