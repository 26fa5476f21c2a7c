/* archive_trail.c - writing and reading the archive's audit trail
 * (plugins/archive_audit.h): who searched, exported, verified, held or
 * released archived mail, and who released, deleted or requeued queued
 * mail, each record a link of DIR/chain.
 *
 * Several processes append to DIR/chain: the archive plugin in posternd
 * and, for these records, `postern` and the console. Every writer holds
 * an exclusive flock on the chain file while it reads the last link and
 * appends after it, so the chain never forks. A record is written to
 * DIR/audit and fsync'd before its chain line (a crash in between leaves
 * a record the chain lacks, which verify notes; never a chain line whose
 * record is missing). Run as root, the writing is done by a child that
 * has become the daemon's user: the archive is that user's tree. */
#include "archive_trail.h"
#include "archive_audit.h"
#include "archive_chain.h"
#include "archive_search.h"
#include "postern_io.h"
#include "privs.h"
#include "utc_time.h"
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

void archive_actor_cli(struct audit_actor *a)
{
    struct passwd *pw = getpwuid(getuid());
    const char *sudo = getuid() == 0 ? getenv("SUDO_USER") : NULL;
    snprintf(a->who, sizeof a->who, "%s%s%s", pw ? pw->pw_name : "uid?", sudo ? " via sudo by " : "", sudo ? sudo : "");
    char host[256] = "", *tty = ttyname(STDIN_FILENO);
    gethostname(host, sizeof host - 1);
    const char *ssh = getenv("SSH_CONNECTION");
    char client[64] = "";
    if (ssh)
        sscanf(ssh, "%63s", client);
    snprintf(a->where, sizeof a->where, "cli %s%s%s%s%s", host, tty ? " " : "", tty ? tty : "", ssh ? " ssh from " : "",
             client);
}

void archive_actor_console(struct audit_actor *a, const char *user, const char *client)
{
    snprintf(a->who, sizeof a->who, "%s", user && *user ? user : "?");
    snprintf(a->where, sizeof a->where, "console %s", client ? client : "?");
}

/* The last line of the chain (fd, size bytes): its seq and link. */
static int chain_tail(int fd, off_t size, unsigned long *seq, char head[ARCHIVE_HASH_HEX])
{
    *seq = 0;
    memset(head, '0', 64);
    head[64] = '\0';
    if (size == 0)
        return 0;
    char buf[8192];
    off_t from = size > (off_t)sizeof buf - 1 ? size - (off_t)sizeof buf + 1 : 0;
    ssize_t n = pread(fd, buf, (size_t)(size - from), from);
    if (n <= 0 || buf[n - 1] != '\n')
        return errno = EIO, -1;        /* a chain that does not end a line: verify says more */
    buf[n - 1] = '\0';
    char *last = strrchr(buf, '\n');
    last = last ? last + 1 : buf;
    char rel[4096], fh[ARCHIVE_HASH_HEX];
    if (sscanf(last, "%lu %4095s %64s %64s", seq, rel, fh, head) != 4)
        return errno = EIO, -1;
    return 0;
}


/* DIR/head, replaced atomically (not fsync'd: it may lag, as the plugin's). */
static void write_head(int dirfd, unsigned long seq, const char *link)
{
    char line[128];
    int n = snprintf(line, sizeof line, "%lu %s\n", seq, link);
    int fd = openat(dirfd, "head.new", O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0640);
    if (fd >= 0 && postern_write_all(fd, line, (size_t)n, 0) == 0)
        renameat(dirfd, "head.new", dirfd, "head");
    if (fd >= 0)
        close(fd);
}

/* The record line (without LF) for seq into out; its length. */
static size_t record_line(char *out, size_t size, unsigned long seq, const char *when, const struct audit_actor *a,
                          const char *action, const char *details)
{
    int n0 = snprintf(out, size, "%lu\t%s\t", seq, when);
    size_t n = n0 > 0 ? (size_t)n0 : 0;
    const char *const fields[] = {a->who, a->where, action, details};
    for (int i = 0; i < 4; i++) {
        size_t start = n;
        archive_index_field(out + start, size - start, &(size_t){0}, fields[i]);
        n += strlen(out + start);
        if (i < 3 && n + 1 < size)
            out[n++] = '\t';
        out[n] = '\0';
    }
    return n;
}

/* Under the chain's lock: the record, then its chain line; 0 or -1. */
static int append_locked(int dirfd, int chain_fd, const struct audit_actor *a, const char *action,
                         const char *details, unsigned long *seq)
{
    struct stat st;
    unsigned long last;
    char head[ARCHIVE_HASH_HEX], when[32], stamp[32], rec[ARCHIVE_AUDIT_LINE_MAX], hash[ARCHIVE_HASH_HEX];
    if (fstat(chain_fd, &st) < 0 || chain_tail(chain_fd, st.st_size, &last, head) < 0)
        return -1;
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    size_t n = record_line(rec, sizeof rec - 1, last + 1, when, a, action, details);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (!EVP_Digest(rec, n, md, &mdlen, EVP_sha256(), NULL))
        return errno = EIO, -1;
    archive_hex(md, mdlen, hash);
    rec[n++] = '\n';
    bool created = faccessat(dirfd, "audit", F_OK, AT_SYMLINK_NOFOLLOW) != 0;
    int afd = openat(dirfd, "audit", O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640);
    int rc = afd < 0 || postern_write_all(afd, rec, n, 0) < 0 || fsync(afd) < 0 || (created && fsync(dirfd) < 0) ? -1 : 0;
    if (afd >= 0)
        close(afd);
    char rel[128], link[ARCHIVE_HASH_HEX], line[512];
    snprintf(rel, sizeof rel, "%s%s/%s", ARCHIVE_AUDIT_PREFIX, stamp, action);
    if (rc < 0 || archive_link(head, rel, hash, link) < 0)
        return -1;
    int ln = snprintf(line, sizeof line, "%lu %s %s %s\n", last + 1, rel, hash, link);
    if (postern_write_all(chain_fd, line, (size_t)ln, 0) < 0 || fsync(chain_fd) < 0)
        return -1;
    write_head(dirfd, last + 1, link);
    *seq = last + 1;
    return 0;
}

/* Open DIR/chain (created if need be), lock it, append; 0 or -1 with err. */
static int append_record(const char *dir, const struct audit_actor *a, const char *action, const char *details,
                         unsigned long *seq, char *err, size_t errlen)
{
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int fd = dirfd < 0 ? -1 : openat(dirfd, "chain", O_RDWR | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640);
    int rc = fd < 0 || flock(fd, LOCK_EX) < 0 ? -1 : append_locked(dirfd, fd, a, action, details, seq);
    if (rc < 0)
        snprintf(err, errlen, "cannot add an audit record to %s/chain and %s/audit: %s", dir, dir, strerror(errno));
    if (fd >= 0)
        close(fd);               /* and the lock with it */
    if (dirfd >= 0)
        close(dirfd);
    return rc;
}

struct record_job {
    const char *dir, *action, *details;
    const struct audit_actor *a;
};

/* In the child: append, then answer "SEQ" or "ERR why" on fd. */
static int record_in_child(int fd, void *ctx)
{
    const struct record_job *j = ctx;
    char why[600] = "", out[700];
    unsigned long seq = 0;
    int rc = append_record(j->dir, j->a, j->action, j->details, &seq, why, sizeof why);
    int n = rc == 0 ? snprintf(out, sizeof out, "%lu", seq) : snprintf(out, sizeof out, "ERR %s", why);
    return postern_write_all(fd, out, (size_t)n, 0) == 0 ? rc : -1;
}

int archive_audit_write(const char *dir, const char *run_user, bool allow_nobody, const struct audit_actor *a,
                        const char *action, const char *details, unsigned long *seq, char *err, size_t errlen)
{
    if (geteuid() != 0)
        return append_record(dir, a, action, details, seq, err, errlen);
    /* root: a child that is the daemon's user writes, and says how it went */
    struct record_job job = {dir, action, details, a};
    struct buf answer;
    buf_init(&answer);
    int rc = privs_run_as(run_user, allow_nobody, record_in_child, &job, &answer);
    buf_append(&answer, "", 1);
    const char *text = buf_head(&answer);
    if (rc == 0)
        *seq = strtoul(text, NULL, 10);
    else
        snprintf(err, errlen, "%s", !strncmp(text, "ERR ", 4) ? text + 4
                                    : "the audit writer (as the daemon's user) failed");
    buf_free(&answer);
    return rc;
}

int archive_audit_list(const char *dir, time_t since, const char *user, const char *action, FILE *out)
{
    FILE *f = archive_open_in(dir, "audit", "r");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        fprintf(stderr, "postern: %s/audit: %s\n", dir, strerror(errno));
        return -1;
    }
    char *line = malloc(ARCHIVE_AUDIT_LINE_MAX + 2);
    int shown = 0;
    while (line && fgets(line, ARCHIVE_AUDIT_LINE_MAX + 2, f)) {
        char *fl[AUDIT_FIELDS];
        if (archive_audit_split(line, fl) < 0)
            continue;
        time_t at = archive_index_time(fl[AU_WHEN]);
        if ((since >= 0 && at < since) || (user && strcmp(fl[AU_WHO], user) && strncmp(fl[AU_WHO], user, strlen(user))) ||
            (action && strcmp(fl[AU_ACTION], action)))
            continue;
        fprintf(out, "%s  seq %s  %s  %s  %s  %s\n", fl[AU_WHEN], fl[AU_SEQ], fl[AU_WHO], fl[AU_WHERE], fl[AU_ACTION],
                fl[AU_DETAILS]);
        shown++;
    }
    free(line);
    fclose(f);
    return shown;
}

/* ---- verify ---- */

struct audit_seen {
    unsigned long seq;
    char hash[ARCHIVE_HASH_HEX];
    bool chained;
};

static int cmp_seen(const void *a, const void *b)
{
    const struct audit_seen *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq ? 1 : strcmp(x->hash, y->hash);
}

struct audit_check {
    struct audit_seen *v;
    size_t n, cap;
};

/* Every line of DIR/audit with its hash, sorted by seq. */
static int load_records(const char *dir, struct audit_check *c)
{
    FILE *f = archive_open_in(dir, "audit", "r");
    if (!f)
        return errno == ENOENT ? 0 : -1;
    char *line = malloc(ARCHIVE_AUDIT_LINE_MAX + 2);
    while (line && fgets(line, ARCHIVE_AUDIT_LINE_MAX + 2, f)) {
        size_t len = strcspn(line, "\n");
        if (c->n == c->cap) {       /* doubled: the trail grows with every search */
            size_t cap = c->cap ? 2 * c->cap : 256;
            struct audit_seen *grown = realloc(c->v, cap * sizeof *grown);
            if (!grown)
                break;
            c->v = grown;
            c->cap = cap;
        }
        struct audit_seen *s = &c->v[c->n++];
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned mdlen = 0;
        EVP_Digest(line, len, md, &mdlen, EVP_sha256(), NULL);
        archive_hex(md, mdlen, s->hash);
        s->seq = strtoul(line, NULL, 10);
        s->chained = false;
    }
    free(line);
    fclose(f);
    qsort(c->v, c->n, sizeof *c->v, cmp_seen);
    return 0;
}

struct audit_verify *archive_audit_verify_start(const char *dir, FILE *out)
{
    struct audit_check *c = calloc(1, sizeof *c);
    if (c && load_records(dir, c) < 0) {
        fprintf(out, "AUDIT unreadable: %s/audit: %s\n", dir, strerror(errno));
        free(c);
        return NULL;
    }
    return (struct audit_verify *)c;
}

int archive_audit_verify_link(struct audit_verify *v, unsigned long seq, const char *rel, const char *hash, FILE *out)
{
    struct audit_check *c = (struct audit_check *)v;
    if (!c) {
        fprintf(out, "MISSING audit record seq %lu (%s): %s cannot be read\n", seq, rel, "the audit file");
        return 1;
    }
    struct audit_seen key = {.seq = seq};
    snprintf(key.hash, sizeof key.hash, "%s", hash);
    struct audit_seen *s = bsearch(&key, c->v, c->n, sizeof *c->v, cmp_seen);
    if (s) {
        s->chained = true;
        return 0;
    }
    for (size_t i = 0; i < c->n; i++)
        if (c->v[i].seq == seq) {
            fprintf(out, "CHANGED audit record seq %lu (%s): its line is not the one the chain hashed\n", seq, rel);
            return 1;
        }
    fprintf(out, "MISSING audit record seq %lu (%s): removed from the audit file\n", seq, rel);
    return 1;
}

int archive_audit_verify_end(struct audit_verify *v, FILE *out, unsigned long *records)
{
    struct audit_check *c = (struct audit_check *)v;
    *records = 0;
    if (!c)
        return 0;
    for (size_t i = 0; i < c->n; i++) {
        if (c->v[i].chained)
            ++*records;
        else             /* written, then a crash before its chain line: kept, but it proves nothing */
            fprintf(out, "note: audit record seq %lu is not in the chain (written just before a crash?)\n",
                    c->v[i].seq);
    }
    free(c->v);
    free(c);
    return 0;
}
