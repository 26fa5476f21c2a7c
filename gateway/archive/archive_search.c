/* archive_search.c - finding and handing over archived mail.
 *
 *   postern -c CONF archive search [FILTERS] [--limit N]
 *   postern -c CONF archive export [FILTERS] [--limit N] --mbox FILE | --dir DIR
 *   postern -c CONF archive reindex
 *
 * FILTERS: --from S (envelope sender or From header), --to S (To or Cc
 * header), --rcpt S (any envelope recipient, Bcc included), --subject S
 * (all case-insensitive substrings), --since DATE, --until DATE
 * (archive time, inclusive; 2026-12-01 or 2026-12-01T10:00:00Z).
 *
 * search streams DIR/index (one line in memory at a time) after checking
 * that it lists every copy the chain has, and nothing else (a line dropped
 * by the daemon's user would hide mail): it refuses otherwise, naming
 * `archive reindex`. export never trusts the index: it derives each copy's
 * fields from the chain and the file, then streams DIR/chain once to pick
 * up each match's proof
 * (sequence, file hash, previous and own link) and copies the files as
 * they are (--dir: byte for byte, --mbox: mboxrd). Archived files are
 * opened fd-relative without following symlinks (the tree belongs to the
 * daemon's user). reindex (archive_reindex.c) rebuilds the index from the chain and the files,
 * as the daemon's user, under DIR/index.lock. */
#include "archive_search.h"
#include "archive_reindex.h"
#include "utc_time.h"
#include "archive_chain.h"
#include "archive_index.h"
#include "archive_audit.h"
#include "archive_trail.h"
#include "archive_fulltext.h"
#include "privs.h"
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>


struct filters {
    struct archive_filter m;   /* what a copy must match (archive_audit.h) */
    long limit;
    const char *mbox, *outdir;
    const char *text;          /* --text: a full-text query, whose matches are */
    unsigned long *text_seqs;  /* these chain sequences, ascending */
    long ntext;
};

static void usage(void)
{
    fprintf(stderr, "usage: postern -c FILE archive search [--from S] [--to S] [--rcpt S] [--subject S] "
                    "[--since DATE] [--until DATE] [--text QUERY] [--limit N]\n"
                    "       postern -c FILE archive export [same filters] --mbox FILE | --dir DIR\n"
                    "       postern -c FILE archive reindex\n");
}

/* A --since/--until value: -1 (said on stderr) when it is not a date. */
static int date_bound(const char *opt, const char *v, bool end, time_t *out)
{
    if (utc_time_parse(v, end, out) == 0)
        return 0;
    fprintf(stderr, "postern: %s: '%s' is not a date (2026-12-07, \"2026-12-07 10:00\" or "
                    "\"2026-12-07 10:00:30\", UTC)\n", opt, v);
    return -1;
}

int archive_filter_option(const char *k, const char *v, struct archive_filter *m)
{
    char *text = !strcmp(k, "--from") ? m->from : !strcmp(k, "--to") ? m->to
               : !strcmp(k, "--rcpt") ? m->rcpt : !strcmp(k, "--subject") ? m->subject : NULL;
    bool date = !strcmp(k, "--since") || !strcmp(k, "--until");
    if (!text && !date)
        return 0;
    if (text && strlen(v) >= ARCHIVE_FILTER_MAX) {
        fprintf(stderr, "postern: %s: longer than %d bytes\n", k, ARCHIVE_FILTER_MAX - 1);
        return -1;
    }
    if (text)
        memcpy(text, v, strlen(v) + 1);
    else if (date_bound(k, v, k[2] == 'u', k[2] == 'u' ? &m->until : &m->since) < 0)
        return -1;
    return 1;
}

static int parse_filters(int argc, char **argv, struct filters *f, bool export)
{
    *f = (struct filters){.limit = -1, .m = {.since = -1, .until = -1}};
    for (int i = 0; i < argc; i += 2) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        int filter = v ? archive_filter_option(k, v, &f->m) : -1;
        if (filter < 0)
            return -1;
        if (filter)
            ;
        else if (!strcmp(k, "--text") && *v)
            f->text = v;
        else if (!strcmp(k, "--limit") && (f->limit = strtol(v, &end, 10)) >= 0 && end != v && !*end)
            ;
        else if (export && !strcmp(k, "--mbox"))
            f->mbox = v;
        else if (export && !strcmp(k, "--dir"))
            f->outdir = v;
        else
            return -1;
    }
    return export && !f->mbox == !f->outdir ? -1 : 0;
}

static int cmp_ulong(const void *a, const void *b)
{
    unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;
    return x < y ? -1 : x > y;
}

static bool matches(const struct filters *f, char *const ix[ARCHIVE_INDEX_FIELDS])
{
    unsigned long seq = strtoul(ix[IX_SEQ], NULL, 10);
    if (f->text && !(f->ntext > 0 && bsearch(&seq, f->text_seqs, (size_t)f->ntext, sizeof seq, cmp_ulong)))
        return false;
    return archive_filter_matches(&f->m, ix);
}

/* --text: the copies the full-text index finds (it is brought up to date
 * first, as run_user). 0, or -1 with err. */
static int text_matches(const char *dir, const char *run_user, bool allow_nobody, struct filters *f, char *err,
                        size_t errlen)
{
    if (!f->text)
        return 0;
    f->ntext = archive_fulltext_search(dir, run_user, allow_nobody, f->text, &f->text_seqs, err, errlen);
    return f->ntext < 0 ? -1 : 0;
}

int open_archived(int dirfd, const char *rel)
{
    const char *slash = strchr(rel, '/');
    char day[64];
    if (!slash || slash == rel || (size_t)(slash - rel) >= sizeof day || strchr(slash + 1, '/') ||
        strstr(rel, ".."))
        return errno = EINVAL, -1;
    snprintf(day, sizeof day, "%.*s", (int)(slash - rel), rel);
    int dfd = openat(dirfd, day, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return -1;
    int fd = openat(dfd, slash + 1, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    int err = errno;
    close(dfd);
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))) {
        close(fd);
        return errno = EINVAL, -1;
    }
    errno = err;
    return fd;
}

/* DIR/NAME ("r", "w" or "a"), never through a symbolic link: the archive is
 * the daemon user's tree and this may run as root. */
FILE *archive_open_in(const char *dir, const char *name, const char *mode)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int flags = mode[0] == 'r' ? O_RDONLY : O_WRONLY | O_CREAT | (mode[0] == 'a' ? O_APPEND : O_TRUNC);
    int fd = open(path, flags | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0640);
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))) {
        close(fd);
        fd = -1;
        errno = EINVAL;
    }
    if (fd >= 0)
        fcntl(fd, F_SETFL, flags & O_APPEND);
    FILE *f = fd >= 0 ? fdopen(fd, mode) : NULL;
    if (fd >= 0 && !f)
        close(fd);
    return f;
}


/* ---- search ---- */

typedef archive_match_fn match_fn;

static long walk_index(const char *dir, int dirfd, const struct filters *f, match_fn cb, void *ctx, long *gone)
{
    FILE *ixf = archive_open_in(dir, "index", "r");
    if (!ixf) {
        fprintf(stderr, "postern: %s/index: %s (run `postern archive reindex`)\n", dir, strerror(errno));
        return -1;
    }
    char *line = malloc(ARCHIVE_INDEX_LINE_MAX + 2);
    long found = 0;
    while (line && fgets(line, ARCHIVE_INDEX_LINE_MAX + 2, ixf) && (f->limit < 0 || found < f->limit)) {
        char *ix[ARCHIVE_INDEX_FIELDS];
        if (archive_index_split(line, ix) < 0 || !matches(f, ix))
            continue;
        int fd = open_archived(dirfd, ix[IX_REL]);
        if (fd < 0) {            /* expired (or deleted: `archive verify` says which) */
            ++*gone;
            continue;
        }
        close(fd);
        found++;
        cb(ctx, ix);
    }
    free(line);
    fclose(ixf);
    return found;
}

struct derived_walk {
    const struct filters *f;
    match_fn cb;
    void *ctx;
    long found, gone;
    char line[ARCHIVE_INDEX_LINE_MAX + 2];
};

static void derived_match(void *ctx, unsigned long seq, const char *rel, const char *line, size_t len)
{
    (void)seq;
    (void)rel;
    struct derived_walk *w = ctx;
    if (!line) {
        w->gone++;
        return;
    }
    if ((w->f->limit >= 0 && w->found >= w->f->limit) || len > ARCHIVE_INDEX_LINE_MAX)
        return;
    memcpy(w->line, line, len);
    w->line[len] = '\0';
    char *ix[ARCHIVE_INDEX_FIELDS];
    if (archive_index_split(w->line, ix) < 0 || !matches(w->f, ix))
        return;
    w->found++;
    w->cb(w->ctx, ix);
}

/* As walk_index, over the lines derived from the chain and the files. */
static long walk_derived(const char *dir, int dirfd, const struct filters *f, match_fn cb, void *ctx, long *gone)
{
    struct derived_walk *w = calloc(1, sizeof *w);
    if (!w)
        return -1;
    *w = (struct derived_walk){.f = f, .cb = cb, .ctx = ctx};
    long copies = archive_derive_index(dir, dirfd, true, derived_match, w);
    if (copies < 0)
        fprintf(stderr, "postern: %s/chain: %s\n", dir, strerror(errno));
    long found = copies < 0 ? -1 : w->found;
    *gone = w->gone;
    free(w);
    return found;
}

static void count_match(void *ctx, char *const ix[ARCHIVE_INDEX_FIELDS])
{
    (void)ctx;
    (void)ix;
}

static void print_match(void *ctx, char *const ix[ARCHIVE_INDEX_FIELDS])
{
    (void)ctx;
    struct buf b;
    buf_init(&b);
    printf("%s  %s  <%s>  to %s  %s  (%s)\n", ix[IX_QID], ix[IX_AT], ix[IX_ENV_FROM], ix[IX_ENV_TO],
           archive_subject_text(ix[IX_SUBJECT], &b), ix[IX_REL]);
    buf_free(&b);
}

/* ---- export ---- */

struct picked {
    unsigned long *seq;
    size_t n, cap;
};

static void pick(void *ctx, char *const ix[ARCHIVE_INDEX_FIELDS])
{
    struct picked *p = ctx;
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 1024;
        unsigned long *grown = realloc(p->seq, cap * sizeof *grown);
        if (!grown)
            return;
        p->seq = grown;
        p->cap = cap;
    }
    p->seq[p->n++] = strtoul(ix[IX_SEQ], NULL, 10);
}

static int cmp_seq(const void *a, const void *b)
{
    unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;
    return x < y ? -1 : x > y;
}

struct exporter {
    const struct filters *f;
    int dirfd;
    FILE *mbox, *proof, *chain_copy;
    int outdir_fd;
    size_t exported, problems;
};

/* The sender for the mbox "From " line, from the envelope block. */
static void envelope_sender(const char *head, size_t len, char *out, size_t size)
{
    const char *p = memmem(head, len, "X-Postern-Envelope-From: <", 26);
    size_t n = p ? strcspn(p + 26, ">\r\n") : 0;
    snprintf(out, size, "%.*s", (int)(n && n < size ? n : 0), p ? p + 26 : "");
    if (!out[0] || strpbrk(out, " \t"))
        snprintf(out, size, "MAILER-DAEMON");
}

/* One file into the mbox, mboxrd-quoted, LF line ends. */
static int mbox_write(FILE *out, const char *data, size_t len)
{
    char sender[300], date[64];
    envelope_sender(data, len, sender, sizeof sender);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a %b %e %H:%M:%S %Y", &tm);
    fprintf(out, "From %s %s\n", sender, date);
    for (size_t i = 0; i < len;) {
        const char *nl = memchr(data + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - data) : len, n = end - i;
        if (n && data[end - 1] == '\r')
            n--;
        size_t k = i;
        while (k < i + n && data[k] == '>')
            k++;
        if (i + n - k >= 5 && !memcmp(data + k, "From ", 5))
            fputc('>', out);
        fwrite(data + i, 1, n, out);
        fputc('\n', out);
        i = end + 1;
    }
    fputc('\n', out);
    return ferror(out) ? -1 : 0;
}

/* A whole archived file (bounded by the file's own size). */
static char *slurp(int fd, size_t *len)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size > 1L << 30)
        return NULL;
    char *p = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    ssize_t r;
    while (p && got < (size_t)st.st_size && (r = read(fd, p + got, (size_t)st.st_size - got)) > 0)
        got += (size_t)r;
    *len = got;
    return p;
}

static void export_one(struct exporter *x, unsigned long seq, const char *rel, const char *fh, const char *prev,
                       const char *link)
{
    int fd = open_archived(x->dirfd, rel);
    size_t len = 0;
    char *data = fd >= 0 ? slurp(fd, &len) : NULL;
    if (fd >= 0)
        close(fd);
    char real[ARCHIVE_HASH_HEX] = "";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (data && EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL))
        archive_hex(md, mdlen, real);
    if (!data || strcmp(real, fh)) {
        fprintf(stderr, "postern: %s (seq %lu): %s\n", rel, seq, !data ? strerror(errno)
                                                                  : "its hash is not the chain's: not exported");
        x->problems++;
        free(data);
        return;
    }
    const char *base = strrchr(rel, '/') + 1;
    int ok;
    if (x->mbox) {
        ok = mbox_write(x->mbox, data, len) == 0;
    } else {
        int out = openat(x->outdir_fd, base, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
        ok = out >= 0 && write(out, data, len) == (ssize_t)len && fsync(out) == 0;
        if (out >= 0)
            close(out);
    }
    if (!ok) {
        fprintf(stderr, "postern: writing %s: %s\n", base, strerror(errno));
        x->problems++;
    } else {
        fprintf(x->proof, "%lu %s %s %s %s %s\n", seq, rel, fh, prev, link, base);
        x->exported++;
    }
    free(data);
}

/* Stream the chain: each picked sequence number gets exported with its
 * proof; the chain itself is copied beside the export. */
static void export_from_chain(struct exporter *x, const char *dir, const struct picked *p)
{
    FILE *chain = archive_open_in(dir, "chain", "r");
    if (!chain) {
        fprintf(stderr, "postern: %s/chain: %s\n", dir, strerror(errno));
        x->problems++;
        return;
    }
    char line[4096], prev[ARCHIVE_HASH_HEX];
    memset(prev, '0', 64);
    prev[64] = '\0';
    size_t next = 0;
    unsigned long seq = 0;
    char link[ARCHIVE_HASH_HEX] = "";
    while (fgets(line, sizeof line, chain)) {
        fputs(line, x->chain_copy);
        char rel[256], fh[ARCHIVE_HASH_HEX];
        if (sscanf(line, "%lu %255s %64s %64s", &seq, rel, fh, link) != 4)
            continue;
        while (next < p->n && p->seq[next] < seq)
            next++;
        if (next < p->n && p->seq[next] == seq && !archive_expired_path(rel, NULL, 0))
            export_one(x, seq, rel, fh, prev, link);
        memcpy(prev, link, sizeof prev);
    }
    fprintf(x->proof, "# head %lu %s\n", seq, prev);
    fclose(chain);
}

/* Where the export goes: a new mbox (FILE, FILE.proof, FILE.chain) or a
 * new directory (*.eml, proof, chain). Opened before anything is read. */
static int export_open(struct exporter *x, const struct filters *f)
{
    char path[4200];
    x->outdir_fd = -1;
    if (f->mbox) {
        int fd = open(f->mbox, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
        x->mbox = fd >= 0 ? fdopen(fd, "w") : NULL;
        snprintf(path, sizeof path, "%s.proof", f->mbox);
        x->proof = x->mbox ? fopen(path, "wx") : NULL;
        snprintf(path, sizeof path, "%s.chain", f->mbox);
        x->chain_copy = x->proof ? fopen(path, "wx") : NULL;
    } else {
        x->outdir_fd = mkdir(f->outdir, 0750) == 0 ? open(f->outdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
        int pfd = x->outdir_fd >= 0 ? openat(x->outdir_fd, "proof", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640) : -1;
        x->proof = pfd >= 0 ? fdopen(pfd, "w") : NULL;
        int cfd = x->proof ? openat(x->outdir_fd, "chain", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640) : -1;
        x->chain_copy = cfd >= 0 ? fdopen(cfd, "w") : NULL;
    }
    if (!x->chain_copy) {
        fprintf(stderr, "postern: cannot create %s: %s (it must not exist yet)\n", f->mbox ? f->mbox : f->outdir,
                strerror(errno));
        return -1;
    }
    fprintf(x->proof, "# postern archive export: SEQ RELPATH FILE_SHA256 PREVIOUS_LINK LINK FILE\n"
                      "# LINK = sha256(PREVIOUS_LINK \"|\" RELPATH \"|\" FILE_SHA256); the chain beside this file "
                      "holds every link up to the head\n");
    return 0;
}

static int export_close(struct exporter *x)
{
    int rc = 0;
    FILE *files[] = {x->mbox, x->proof, x->chain_copy};
    for (size_t i = 0; i < 3; i++)
        if (files[i] && (fflush(files[i]) != 0 || fsync(fileno(files[i])) != 0 || fclose(files[i]) != 0))
            rc = -1;
    if (x->outdir_fd >= 0)
        close(x->outdir_fd);
    return rc;
}

static int archive_export(const char *dir, int dirfd, const struct filters *f, size_t *exported)
{
    struct exporter x = {.f = f, .dirfd = dirfd};
    if (export_open(&x, f) < 0) {
        export_close(&x);
        return 1;
    }
    struct picked p = {0};
    /* from the chain and the files, never the index: a legal-hold export
     * must not miss a copy because someone edited or dropped its line */
    long gone = 0;
    long found = walk_derived(dir, dirfd, f, pick, &p, &gone);
    if (found >= 0) {
        qsort(p.seq, p.n, sizeof *p.seq, cmp_seq);
        export_from_chain(&x, dir, &p);
    }
    free(p.seq);
    if (export_close(&x) < 0)
        x.problems++;
    if (found < 0)
        return 1;
    *exported = x.exported;
    printf("exported %zu message(s) to %s (%ld expired or missing skipped), proof in %s%s\n", x.exported,
           f->mbox ? f->mbox : f->outdir, gone, f->mbox ? f->mbox : f->outdir, f->mbox ? ".proof" : "/proof");
    return x.problems || x.exported != (size_t)found ? 1 : 0;
}

/* ---- for the console ---- */

/* The index must list exactly what the chain has, or a search could miss
 * mail: 0, or -1 with why in err. */
static int index_trusted(const char *dir, int dirfd, char *err, size_t errlen)
{
    FILE *quiet = fopen("/dev/null", "w");
    long off = archive_index_check(dir, dirfd, false, quiet ? quiet : stderr);
    if (quiet)
        fclose(quiet);
    if (off == 0)
        return 0;
    snprintf(err, errlen, off < 0 ? "the archive index cannot be checked against the chain: run `postern archive "
                                    "reindex` and `archive verify`"
                                  : "the archive index disagrees with the chain: run `postern archive reindex` (and "
                                    "`archive verify` to see why)");
    return -1;
}

long archive_search_each(const char *dir, const struct archive_filter *m, const char *text, long limit,
                         archive_match_fn cb, void *ctx, char *err, size_t errlen)
{
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct filters f = {.m = *m, .limit = limit, .text = text && *text ? text : NULL};
    long gone = 0, found = -1;
    if (dirfd < 0)
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
    else if (index_trusted(dir, dirfd, err, errlen) == 0 && text_matches(dir, NULL, false, &f, err, errlen) == 0 &&
             (found = walk_index(dir, dirfd, &f, cb, ctx, &gone)) < 0)
        snprintf(err, errlen, "%s/index cannot be read", dir);
    free(f.text_seqs);
    if (dirfd >= 0)
        close(dirfd);
    return found;
}

long archive_export_mbox(const char *dir, const struct archive_filter *m, const char *text, long limit, FILE *out,
                         char *err, size_t errlen)
{
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct filters f = {.m = *m, .limit = limit, .text = text && *text ? text : NULL};
    if (dirfd >= 0 && text_matches(dir, NULL, false, &f, err, errlen) < 0) {
        close(dirfd);
        return -1;
    }
    struct exporter x = {.f = &f, .dirfd = dirfd, .mbox = out, .outdir_fd = -1};
    x.proof = fopen("/dev/null", "w");          /* the proof and chain copy come with `postern archive export` */
    x.chain_copy = fopen("/dev/null", "w");
    struct picked p = {0};
    long gone = 0, found = dirfd < 0 || !x.proof || !x.chain_copy ? -1 : walk_derived(dir, dirfd, &f, pick, &p, &gone);
    if (found >= 0) {
        qsort(p.seq, p.n, sizeof *p.seq, cmp_seq);
        export_from_chain(&x, dir, &p);
    }
    free(p.seq);
    free(f.text_seqs);
    for (FILE **fp = (FILE *[]){x.proof, x.chain_copy}, **end = fp + 2; fp < end; fp++)
        if (*fp)
            fclose(*fp);
    if (dirfd >= 0)
        close(dirfd);
    if (found < 0 || x.problems) {
        snprintf(err, errlen, "the export failed (%zu problem(s)); posternd's log and `postern archive verify` say more",
                 x.problems);
        return -1;
    }
    return (long)x.exported;
}

/* The search or export in the audit trail: its filters and what it found. */
static int audit_query(const char *dir, const char *run_user, bool allow_nobody, const struct audit_actor *who,
                       const char *action, const struct filters *f, long found)
{
    char details[ARCHIVE_AUDIT_LINE_MAX / 2] = "", err[700];
    size_t len = 0;
    archive_query_details(&f->m, f->text, action[0] == 'e' ? "exported" : "found", found, details, sizeof details,
                          &len);
    archive_audit_kv(details, sizeof details, &len, "to", f->mbox ? f->mbox : f->outdir);
    unsigned long seq;
    if (archive_audit_write(dir, run_user, allow_nobody, who, action, details, &seq, err, sizeof err) == 0)
        return 0;
    fprintf(stderr, "postern: %s\n", err);
    return 1;
}

long archive_count(const char *dir, const struct archive_filter *m)
{
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct filters f = {.m = *m, .limit = -1};
    long gone = 0, found = dirfd < 0 ? -1 : walk_index(dir, dirfd, &f, count_match, NULL, &gone);
    if (dirfd >= 0)
        close(dirfd);
    return found;
}

int archive_search_command(const char *dir, const char *run_user, bool allow_nobody, const struct audit_actor *who,
                           int argc, char **argv)
{
    bool export = !strcmp(argv[0], "export"), reindex = !strcmp(argv[0], "reindex");
    struct filters f;
    if ((reindex && argc != 1) || (!reindex && parse_filters(argc - 1, argv + 1, &f, export) < 0)) {
        usage();
        return 2;
    }
    /* reindex writes into the daemon's tree: as the daemon's user */
    if (reindex && privs_become(run_user, allow_nobody) < 0)
        return 1;
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        fprintf(stderr, "postern: %s: %s\n", dir, strerror(errno));
        return 1;
    }
    int rc;
    char err[700];
    if (!reindex && text_matches(dir, run_user, allow_nobody, &f, err, sizeof err) < 0) {
        fprintf(stderr, "postern: %s\n", err);
        rc = 1;
    } else if (reindex) {
        rc = archive_reindex(dir, dirfd);
    } else if (export) {
        size_t exported = 0;
        rc = archive_export(dir, dirfd, &f, &exported);
        rc |= audit_query(dir, run_user, allow_nobody, who, "export", &f, (long)exported);
    } else {
        long gone = 0, found = -1, off = archive_index_check(dir, dirfd, false, stderr);
        if (off < 0)
            fprintf(stderr, "postern: cannot check %s/index against %s/chain: %s (run `postern -c CONF archive "
                            "reindex`, and `archive verify`)\n", dir, dir, strerror(errno));
        else if (off > 0)
            fprintf(stderr, "postern: %s/index disagrees with the chain in %ld place(s), so a search could miss "
                            "mail; run `postern -c CONF archive reindex` (and `archive verify` to see why)\n",
                    dir, off);
        else
            found = walk_index(dir, dirfd, &f, print_match, NULL, &gone);
        if (found >= 0)
            printf("%ld message(s) found%s\n", found, gone ? " (some expired or missing skipped)" : "");
        rc = found < 0;
        if (found >= 0)
            rc |= audit_query(dir, run_user, allow_nobody, who, "search", &f, found);
    }
    if (!reindex)
        free(f.text_seqs);
    close(dirfd);
    return rc;
}
