/* archive.c - journals a copy of every (or every requested) message with
 * its full envelope, Bcc recipients included, at the QUEUE stage:
 *   DIR/YYYY-MM-DD/QUEUEID.eml = X-Postern-* envelope headers + the message
 * Each copy is written to a temp file, fsync'd, renamed into its day
 * directory, the directory fsync'd, and linked into DIR/chain (see
 * archive_chain.h), which is fsync'd too, before the message is scheduled.
 * Chain appends are group-committed: lines are appended in order under a
 * lock, and one fsync outside it covers every line written so far, so
 * concurrent messages share a sync instead of queueing for one each.
 *   archive.dir  = /var/spool/postern-archive   (required)
 *   archive.mode = all | requested              (default all: requested =
 *                  only messages an earlier plugin called request_archive on)
 *   archive.witness = SOCKET    postern-witness's socket: every link is
 *                  reported to it and signed before the message goes on
 *   archive.witness_log, archive.witness_key    for `archive verify` only
 *   archive.retention = 7y      remove copies older than this (s, m, h, d, w,
 *                  y), in chain order, each removal a chain link of its own
 *   archive.expire_every = 1h   how often expiry looks (default 1h)
 *   archive.retention_rules = PATH  periods by sender, recipient or domain
 *                  (archive_retention.h); legal holds (archive_audit.h)
 *                  keep what they match whatever the period
 * Each copy also gets a line in DIR/index for `postern archive search`
 * (see archive_index.h).
 * The envelope block also records what the live chain decided (X-Postern-
 * Decided, X-Postern-Route), which `postern policy replay` compares with.
 * Run `postern -c CONF archive verify` to check the files and the chain.
 * One writer per archive directory in posternd: a reload's new chain
 * shares the open archive of the running one. `postern` and the console
 * append audit records to the same chain: every writer holds an flock on
 * DIR/chain while it appends, and this one first reads what others added
 * (their links are then witnessed with ours, or within 5 s).
 * The witness exchange is in archive_witness_client.c, expiry and the 5 s
 * tick in archive_expire.c, journal reports in archive_journal.c, the
 * retention rules in archive_retention.c. */
#include "archive_int.h"
#include "postern_io.h"
#include "archive_index.h"
#include "archive_journal.h"
#include <sys/file.h>
#include <stdbool.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static unsigned long hash_str(const char *s)
{
    unsigned long h = 5381;
    for (; *s; s++)
        h = h * 33 + (unsigned char)*s;
    return h;
}

int chained_has(const struct archive *a, const char *rel)
{
    if (!a->capchained)
        return 0;
    for (size_t i = hash_str(rel) % a->capchained; a->chained[i]; i = (i + 1) % a->capchained)
        if (!strcmp(a->chained[i], rel))
            return 1;
    return 0;
}

/* The set's key for a chain line: an expiry record is kept as
 * "expired:RELPATH", so chained_has() answers "was RELPATH expired?". */
static void chained_key(const char *rel, char *key, size_t size)
{
    const char *gone = archive_expired_path(rel, NULL, 0);
    snprintf(key, size, "%s%s", gone ? "expired:" : "", gone ? gone : rel);
}

/* Remember rel as chained (under a->lock). */
static void chained_add(struct archive *a, const char *line_rel)
{
    char rel[1200];
    chained_key(line_rel, rel, sizeof rel);
    if ((a->nchained + 1) * 2 > a->capchained) {
        size_t ncap = a->capchained ? a->capchained * 2 : 1024;
        char **n = calloc(ncap, sizeof *n);
        if (!n)
            return;
        for (size_t i = 0; i < a->capchained; i++)
            if (a->chained[i]) {
                size_t k = hash_str(a->chained[i]) % ncap;
                while (n[k])
                    k = (k + 1) % ncap;
                n[k] = a->chained[i];
            }
        free(a->chained);
        a->chained = n;
        a->capchained = ncap;
    }
    size_t k = hash_str(rel) % a->capchained;
    while (a->chained[k])
        k = (k + 1) % a->capchained;
    a->chained[k] = strdup(rel);
    a->nchained++;
}

/* One link in a chain: its own options, the shared archive. */
struct archive_link {
    struct archive *a;
    int only_requested;
    bool journal_unwrap;                /* journal_reports = unwrap */
    struct journal_networks journal_from;
};

const struct postern_host *host;   /* archive_int.h */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct archive *open_archives;

int fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* A chain line read (at start, or another writer's): the head moves on. */
static void chain_note(struct archive *a, unsigned long seq, const char *rel, const char *link)
{
    a->seq = seq;
    memcpy(a->head, link, sizeof a->head);
    chained_add(a, rel);
    const char *action = archive_audit_action(rel);
    if (action && (!strcmp(action, "hold") || !strcmp(action, "release")))
        a->hold_records++;
}

/* Read the last link so appends continue the chain after a restart. */
static int load_head(struct archive *a, char *err, size_t errlen)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/chain", a->dir);
    memset(a->head, '0', 64);
    a->head[64] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return errno == ENOENT ? 0 : (snprintf(err, errlen, "cannot read %s: %s (it must be readable by the "
                                               "daemon's user)", path, strerror(errno)), -1);
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        unsigned long seq;
        char rel[2048], fh[ARCHIVE_HASH_HEX], ch[ARCHIVE_HASH_HEX];
        if (sscanf(line, "%lu %2047s %64s %64s", &seq, rel, fh, ch) == 4)
            chain_note(a, seq, rel, ch);
    }
    a->chain_size = ftello(f);
    fclose(f);
    return 0;
}


/* posternd -t: the daemon's user must be able to do what the daemon will,
 * but nothing is created now. */
static int check_only(const struct archive *a, char *err, size_t errlen)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/chain", a->dir);
    const char *what = access(a->dir, F_OK) == 0 ? a->dir : NULL;
    int bad = what ? access(a->dir, W_OK | X_OK) : 0;
    if (!bad && what && access(path, F_OK) == 0)
        bad = access(path, R_OK | W_OK), what = path;
    if (bad) {
        snprintf(err, errlen, "%s: %s (the daemon's user must be able to write it)", what, strerror(errno));
        return -1;
    }
    return 0;
}


/* Open a's directory and chain (and its witness): 0, or -1 with err. */
static int archive_open(const struct postern_host *h, struct archive *a, char *err, size_t errlen)
{
    if (mkdir(a->dir, 0750) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", a->dir, strerror(errno));
        return -1;
    }
    char path[1100];
    snprintf(path, sizeof path, "%s/chain", a->dir);
    if (load_head(a, err, errlen) < 0 ||
        (a->chain_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640)) < 0) {
        if (!err[0])
            snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    fsync_dir(a->dir);          /* the chain file may have just been created */
    a->synced = a->seq;
    if (pthread_create(&a->expirer, NULL, expirer_main, a) != 0) {
        snprintf(err, errlen, "cannot start the expiry thread");
        return -1;
    }
    a->expirer_started = true;
    if (a->witness[0]) {
        a->chain_rd = open(path, O_RDONLY | O_CLOEXEC);
        int rc = a->chain_rd < 0 ? -2 : witness_connect(a);
        if (rc == -2) {         /* a witness that disagrees with the chain stops start-up */
            snprintf(err, errlen, "witness %s: %s", a->witness, a->chain_rd < 0 ? strerror(errno) : a->witness_err);
            return -1;
        }
        if (rc < 0)             /* down: messages wait (tempfail) until it answers */
            h->log(NULL, POSTERN_LOG_WARN, "archive: witness %s: %s; archiving tempfails until it answers",
                   a->witness, a->witness_err);
    }
    return 0;
}

/* The open archive for dir, shared (+1), or NULL. A different witness for
 * the same directory is an error: the chain has one. */
static struct archive *archive_shared(struct archive *want, char *err, size_t errlen, int *clash)
{
    *clash = 0;
    for (struct archive *a = open_archives; a; a = a->next) {
        if (strcmp(a->dir, want->dir))
            continue;
        if (strcmp(a->witness, want->witness)) {
            snprintf(err, errlen, "archive.dir %s is open with witness '%s'; changing the witness takes a restart",
                     a->dir, a->witness);
            *clash = 1;
            return NULL;
        }
        a->refs++;
        a->retention = want->retention;          /* a reload may change these */
        a->expire_every = want->expire_every;
        pthread_mutex_lock(&a->rules_lock);
        struct retention_rules old = a->rules;
        a->rules = want->rules;     /* taken over: want is freed without them */
        want->rules = (struct retention_rules){0};
        pthread_mutex_unlock(&a->rules_lock);
        retention_rules_free(&old);
        return a;
    }
    return NULL;
}

static void archive_free(struct archive *a)
{
    if (a->expirer_started) {
        pthread_mutex_lock(&a->stop_lock);
        a->stopping = true;
        pthread_cond_signal(&a->stop_cond);
        pthread_mutex_unlock(&a->stop_lock);
        pthread_join(a->expirer, NULL);
    }
    pthread_mutex_destroy(&a->stop_lock);
    pthread_cond_destroy(&a->stop_cond);
    pthread_mutex_destroy(&a->rules_lock);
    retention_rules_free(&a->rules);
    if (a->chain_fd >= 0)
        close(a->chain_fd);
    if (a->chain_rd >= 0)
        close(a->chain_rd);
    witness_close(a);
    for (size_t i = 0; i < a->capchained; i++)
        free(a->chained[i]);
    free(a->chained);
    pthread_mutex_destroy(&a->lock);
    pthread_mutex_destroy(&a->sync_lock);
    pthread_mutex_destroy(&a->witness_lock);
    free(a);
}

static int parse_options(struct archive *a, struct archive_link *l, const struct postern_option *opts, size_t n,
                         char *err, size_t errlen)
{
    long secs;
    a->expire_every = 3600;
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(opts[i].key, "dir"))
            snprintf(a->dir, sizeof a->dir, "%s", opts[i].value);
        else if (!strcmp(opts[i].key, "mode") && (!strcmp(opts[i].value, "all") || !strcmp(opts[i].value, "requested")))
            l->only_requested = !strcmp(opts[i].value, "requested");
        else if (!strcmp(opts[i].key, "witness") && strlen(opts[i].value) < sizeof a->witness && opts[i].value[0] == '/')
            snprintf(a->witness, sizeof a->witness, "%s", opts[i].value);
        else if (!strcmp(opts[i].key, "retention") && (secs = retention_duration(opts[i].value)) > 0)
            a->retention = secs;
        else if (!strcmp(opts[i].key, "expire_every") && (secs = retention_duration(opts[i].value)) > 0)
            a->expire_every = secs;
        else if (!strcmp(opts[i].key, "journal_reports") &&
                 (!strcmp(opts[i].value, "unwrap") || !strcmp(opts[i].value, "no")))
            l->journal_unwrap = !strcmp(opts[i].value, "unwrap");
        else if (!strcmp(opts[i].key, "journal_from")) {
            if (journal_networks_parse(opts[i].value, &l->journal_from, err, errlen) < 0)
                return -1;
        } else if (!strcmp(opts[i].key, "retention_rules")) {
            retention_rules_free(&a->rules);
            if (retention_rules_load(opts[i].value, &a->rules, err, errlen) < 0)
                return -1;
        }
        else if (strcmp(opts[i].key, "witness_log") && strcmp(opts[i].key, "witness_key")) {
            snprintf(err, errlen, "unknown option or value '%s = %s' (known: dir, mode = all|requested, "
                     "witness = /SOCKET, witness_log, witness_key, retention = 7y, expire_every = 1h, retention_rules = PATH, "
                     "journal_reports = no|unwrap, journal_from = NETWORKS)",
                     opts[i].key, opts[i].value);
            return -1;
        }
    }
    if (!a->dir[0]) {
        snprintf(err, errlen, "archive.dir is required");
        return -1;
    }
    if (l->journal_unwrap && !l->journal_from.n) {
        snprintf(err, errlen, "archive.journal_reports = unwrap needs journal_from (the servers that send reports)");
        return -1;
    }
    return 0;
}

/* Under `postern policy` nothing is written: the run only says it would. */
static bool dry_run(const struct postern_host *h) { return POSTERN_HOST_HAS(h, dry_run) && h->dry_run(); }

static int init(const struct postern_host *h, const struct postern_option *opts, size_t n, void **state,
                char *err, size_t errlen)
{
    host = h;
    struct archive_link *l = calloc(1, sizeof *l);
    struct archive *a = calloc(1, sizeof *a);
    if (!l || !a) {
        free(l);
        free(a);
        return -1;
    }
    pthread_mutex_init(&a->lock, NULL);
    pthread_mutex_init(&a->sync_lock, NULL);
    pthread_mutex_init(&a->witness_lock, NULL);
    pthread_mutex_init(&a->stop_lock, NULL);
    pthread_mutex_init(&a->rules_lock, NULL);
    pthread_cond_init(&a->stop_cond, NULL);
    a->chain_fd = a->chain_rd = a->witness_fd = -1;
    a->refs = 1;
    l->a = a;
    if (parse_options(a, l, opts, n, err, errlen) < 0 ||
        (POSTERN_HOST_HAS(h, checking) && h->checking() && !dry_run(h) && check_only(a, err, errlen) < 0)) {
        archive_free(a);
        free(l);
        return -1;
    }
    if ((POSTERN_HOST_HAS(h, checking) && h->checking()) || dry_run(h)) {
        *state = l;             /* a check or a dry run opens nothing */
        return 0;
    }
    pthread_mutex_lock(&registry_lock);
    int clash;
    struct archive *shared = archive_shared(a, err, errlen, &clash);
    int rc = 0;
    if (shared || clash) {
        archive_free(a);
        l->a = shared;
        rc = clash ? -1 : 0;
    } else if ((rc = archive_open(h, a, err, errlen)) == 0) {
        a->next = open_archives;
        open_archives = a;
    } else {
        archive_free(a);
    }
    pthread_mutex_unlock(&registry_lock);
    if (rc < 0) {
        free(l);
        return -1;
    }
    *state = l;
    return 0;
}

static void fini(void *state)
{
    struct archive_link *l = state;
    struct archive *a = l->a;
    pthread_mutex_lock(&registry_lock);
    int last = --a->refs == 0;
    if (last)
        for (struct archive **pp = &open_archives; *pp; pp = &(*pp)->next)
            if (*pp == a) {
                *pp = a->next;
                break;
            }
    pthread_mutex_unlock(&registry_lock);
    if (last)
        archive_free(a);
    free(l);
}

static int write_all(int fd, const char *p, size_t n) { return postern_write_all(fd, p, n, 0); }

/* What the live chain decided, for `postern policy replay`: the decision
 * log (X-Postern-Decided, one per line), and the routes and TLS demands
 * plugins set per recipient (X-Postern-Route: <addr> hop=H tls=L). */
static int write_decisions(int fd, postern_txn *t)
{
    char line[2048];
    const char *log = host->decisions(t);
    for (const char *p = log; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        int n = snprintf(line, sizeof line, "X-Postern-Decided: %.*s\r\n", (int)(len < 1000 ? len : 1000), p);
        if (write_all(fd, line, (size_t)n) < 0)
            return -1;
        p += len + (nl != NULL);
    }
    for (size_t i = 0; i < host->rcpt_count(t); i++) {
        const char *hop = host->rcpt_nexthop(t, i), *tls = host->rcpt_tls(t, i);
        if (!hop && !tls)
            continue;
        int n = snprintf(line, sizeof line, "X-Postern-Route: <%s>%s%s%s%s\r\n", host->rcpt(t, i),
                         hop ? " hop=" : "", hop ? hop : "", tls ? " tls=" : "", tls ? tls : "");
        if (n >= (int)sizeof line || write_all(fd, line, (size_t)n) < 0)
            return -1;
    }
    return 0;
}

/* The envelope block that goes before the message. */
/* The envelope block's first lines, up to and with X-Postern-Envelope-From
 * (sender); for a journal report's original (reported_by: the report's
 * own sender) a line saying so comes before it. */
static int write_envelope_start(int fd, postern_txn *t, const char *date, const char *reported_by, const char *sender)
{
    char line[2048];
    int n = snprintf(line, sizeof line,
                     "X-Postern-Archive: 1\r\nX-Postern-Queue-ID: %s\r\nX-Postern-Archived-At: %s\r\n"
                     "X-Postern-Client: [%s] helo=%s\r\n%s%s%sX-Postern-Envelope-From: <%s>\r\n",
                     host->queue_id(t), date, host->client_addr(t), host->helo_name(t),
                     reported_by ? "X-Postern-Journal-Report: from <" : "", reported_by ? reported_by : "",
                     reported_by ? ">\r\n" : "", sender);
    return n > 0 && (size_t)n < sizeof line ? write_all(fd, line, (size_t)n) : -1;
}

static int write_envelope_to(int fd, const char *rcpt)
{
    char line[2048];
    int n = snprintf(line, sizeof line, "X-Postern-Envelope-To: <%s>\r\n", rcpt);
    return n > 0 && (size_t)n < sizeof line ? write_all(fd, line, (size_t)n) : -1;
}

static int write_envelope(int fd, postern_txn *t, const char *date)
{
    if (write_envelope_start(fd, t, date, NULL, host->sender(t)) < 0)
        return -1;
    for (size_t i = 0; i < host->rcpt_count(t); i++)
        if (write_envelope_to(fd, host->rcpt(t, i)) < 0)
            return -1;
    return POSTERN_HOST_HAS(host, rcpt_tls) ? write_decisions(fd, t) : 0;
}

/* A journal report's copy: the envelope block with the report's sender
 * and recipients (each also with its type and how it was reached), then
 * the original message as attached. */
static int write_journal_copy(int fd, postern_txn *t, const char *date, const struct journal_report *r)
{
    if (write_envelope_start(fd, t, date, host->sender(t), r->sender) < 0)
        return -1;
    for (size_t i = 0; i < r->n; i++)
        if (write_envelope_to(fd, r->rcpts[i].addr) < 0)
            return -1;
    char line[2048];
    for (size_t i = 0; i < r->n; i++) {
        const struct journal_rcpt *x = &r->rcpts[i];
        int n = x->via_kind[0] ? snprintf(line, sizeof line, "X-Postern-Journal-Recipient: %s <%s>; %s <%s>\r\n",
                                          x->type, x->addr, x->via_kind, x->via)
                               : snprintf(line, sizeof line, "X-Postern-Journal-Recipient: %s <%s>\r\n", x->type, x->addr);
        if (n <= 0 || (size_t)n >= sizeof line || write_all(fd, line, (size_t)n) < 0)
            return -1;
    }
    return write_all(fd, r->original, r->original_len);
}

static int copy_message(int out, postern_txn *t)
{
    uint64_t len;
    int in = host->message_open(t, &len);
    if (in < 0)
        return -1;
    char buf[65536];
    int rc = 0;
    while (len && rc == 0) {
        ssize_t r = read(in, buf, len < sizeof buf ? len : sizeof buf);
        if (r <= 0)
            rc = -1;
        else {
            rc = write_all(out, buf, (size_t)r);
            len -= (uint64_t)r;
        }
    }
    close(in);
    return rc;
}

/* Append the link for relpath to DIR/chain (under a->lock); returns its
 * sequence number, or 0 on error. */
/* Is DIR/chain still the file we append to? A directory or chain file
 * replaced (or deleted) under the running daemon would otherwise take our
 * appends silently, into a file nobody will read. errno EXDEV if not. */
int chain_still_ours(const struct archive *a)
{
    char path[1100];
    struct stat open_st, path_st;
    snprintf(path, sizeof path, "%s/chain", a->dir);
    if (fstat(a->chain_fd, &open_st) < 0)
        return -1;
    if (stat(path, &path_st) < 0 || open_st.st_nlink == 0 || open_st.st_dev != path_st.st_dev ||
        open_st.st_ino != path_st.st_ino)
        return errno = EXDEV, -1;
    return 0;
}

/* Under a->lock and the chain's flock: read the lines another writer
 * (`postern`, the console) appended since ours, so ours follow them. */
void chain_catch_up(struct archive *a)
{
    struct stat st;
    if (fstat(a->chain_fd, &st) < 0 || st.st_size <= a->chain_size)
        return;
    char path[1100], line[4096];
    snprintf(path, sizeof path, "%s/chain", a->dir);
    FILE *f = fopen(path, "r");
    if (!f || fseeko(f, a->chain_size, SEEK_SET) < 0) {
        if (f)
            fclose(f);
        return;
    }
    while (ftello(f) < st.st_size && fgets(line, sizeof line, f)) {
        unsigned long seq;
        char rel[2048], fh[ARCHIVE_HASH_HEX], ch[ARCHIVE_HASH_HEX];
        if (sscanf(line, "%lu %2047s %64s %64s", &seq, rel, fh, ch) == 4 && seq == a->seq + 1)
            chain_note(a, seq, rel, ch);
    }
    a->chain_size = st.st_size;
    fclose(f);
}

unsigned long chain_append(struct archive *a, const char *relpath, const char *file_hash)
{
    char link[ARCHIVE_HASH_HEX], line[2300], p[1100], tmp[1100];
    if (chain_still_ours(a) < 0 || flock(a->chain_fd, LOCK_EX) < 0)
        return 0;
    chain_catch_up(a);
    int n = archive_link(a->head, relpath, file_hash, link) < 0 ? -1
            : snprintf(line, sizeof line, "%lu %s %s %s\n", a->seq + 1, relpath, file_hash, link);
    if (n < 0 || write_all(a->chain_fd, line, (size_t)n) < 0) {
        flock(a->chain_fd, LOCK_UN);
        return 0;
    }
    a->chain_size += n;
    a->seq++;
    memcpy(a->head, link, sizeof a->head);
    chained_add(a, relpath);
    /* DIR/head: the latest link, replaced atomically. Not fsync'd: the
     * chain is the durable record; a head that lags is fine. */
    snprintf(tmp, sizeof tmp, "%s/head.new", a->dir);
    snprintf(p, sizeof p, "%s/head", a->dir);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd >= 0) {
        n = snprintf(line, sizeof line, "%lu %s\n", a->seq, a->head);
        if (write_all(fd, line, (size_t)n) == 0)
            rename(tmp, p);
        close(fd);
    }
    flock(a->chain_fd, LOCK_UN);
    return a->seq;
}

/* Make chain line seq durable: one fsync covers every line written before
 * it started, so a thread whose line is already covered does nothing. */
int chain_sync(struct archive *a, unsigned long seq)
{
    int rc = 0;
    pthread_mutex_lock(&a->sync_lock);
    if (a->synced < seq) {
        pthread_mutex_lock(&a->lock);
        unsigned long upto = a->seq;
        pthread_mutex_unlock(&a->lock);
        rc = fsync(a->chain_fd);
        if (rc == 0)
            a->synced = upto;
    }
    pthread_mutex_unlock(&a->sync_lock);
    return rc;
}

/* ---- the search index (archive_index.h) ---------------------------- */

/* Take DIR/index.lock (a rebuild holds it); the lock's fd, or -1. */
static int index_lock(const struct archive *a)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/index.lock", a->dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd >= 0 && flock(fd, LOCK_EX) < 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* What a copy's index line says beyond where and when: the message's
 * envelope and headers, or for a journal report the envelope it states
 * and its original's headers (as `archive reindex` reads the file). */
struct index_fields {
    const char *sender, *from, *subject;
    char rcpts[8192], to[4096], from_buf[1024], subject_buf[2048];
};

static void fields_of_message(postern_txn *t, struct index_fields *x)
{
    size_t rn = 0, tn = 0;
    for (size_t i = 0; i < host->rcpt_count(t); i++)
        archive_index_list_add(x->rcpts, sizeof x->rcpts, &rn, host->rcpt(t, i));
    static const char *const lists[] = {"To", "Cc"};
    for (size_t f = 0; f < 2; f++)
        for (size_t nth = 0; host->header_get(t, lists[f], nth); nth++)
            archive_index_list_add(x->to, sizeof x->to, &tn, host->header_get(t, lists[f], nth));
    x->sender = host->sender(t);
    x->from = host->header_get(t, "From", 0);
    x->subject = host->header_get(t, "Subject", 0);
}

static void fields_of_report(const struct journal_report *r, struct index_fields *x)
{
    size_t rn = 0, tn = 0;
    for (size_t i = 0; i < r->n; i++)
        archive_index_list_add(x->rcpts, sizeof x->rcpts, &rn, r->rcpts[i].addr);
    static const char *const lists[] = {"To", "Cc"};
    char v[2048];
    for (size_t f = 0; f < 2; f++)
        for (size_t nth = 0; journal_original_header(r, lists[f], nth, v, sizeof v); nth++)
            archive_index_list_add(x->to, sizeof x->to, &tn, v);
    journal_original_header(r, "From", 0, x->from_buf, sizeof x->from_buf);
    journal_original_header(r, "Subject", 0, x->subject_buf, sizeof x->subject_buf);
    x->sender = r->sender;
    x->from = x->from_buf;
    x->subject = x->subject_buf;
}

static void index_write(const struct archive *a, postern_txn *t, const char *relpath, const char *line, size_t n);

/* One index line for the copy just chained (its envelope the report's
 * when r). Best effort: the chain is the record, and `postern archive
 * reindex` rebuilds the index from it. */
static void index_append(const struct archive *a, postern_txn *t, unsigned long seq, const char *date,
                         const char *relpath, const struct journal_report *r)
{
    char line[ARCHIVE_INDEX_LINE_MAX];
    struct index_fields x = {0};
    if (r)
        fields_of_report(r, &x);
    else
        fields_of_message(t, &x);
    const char *const fields[] = {date, relpath, host->queue_id(t), x.sender, x.rcpts, x.from, x.to, x.subject};
    index_write(a, t, relpath, line, archive_index_line(line, sizeof line, seq, fields));
}

static void index_write(const struct archive *a, postern_txn *t, const char *relpath, const char *line, size_t n)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/index", a->dir);
    int lock = index_lock(a);
    int fd = lock < 0 ? -1 : open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0 || write_all(fd, line, n) < 0)
        host->log(t, POSTERN_LOG_WARN, "archive: cannot add %s to %s (run `postern archive reindex`): %s", relpath,
                  path, strerror(errno));
    if (fd >= 0)
        close(fd);
    if (lock >= 0)
        close(lock);
}

/* When the copy at path was archived (its X-Postern-Archived-At, else its
 * mtime); 0 if it cannot be read. */
time_t archived_at(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return 0;
    char head[2048];
    ssize_t r = read(fd, head, sizeof head - 1);
    struct stat st;
    time_t when = fstat(fd, &st) == 0 ? st.st_mtime : 0;
    close(fd);
    head[r > 0 ? r : 0] = '\0';
    const char *p = strstr(head, "\r\nX-Postern-Archived-At: ");
    struct tm tm = {0};
    if (p && strptime(p + 25, "%Y-%m-%dT%H:%M:%SZ", &tm))
        when = timegm(&tm);
    return when;
}

/* Does a line of FILE (dir/name) have field number `field` (tab-separated
 * for the index, space-separated for the chain) equal to rel? Its first
 * number (the sequence) in *seq. */
static bool file_lists(const struct archive *a, const char *name, char sep, int field, const char *rel,
                       unsigned long *seq)
{
    char path[1100], line[ARCHIVE_INDEX_LINE_MAX + 2];
    snprintf(path, sizeof path, "%s/%s", a->dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
    if (fd >= 0 && !f)
        close(fd);
    bool found = false;
    size_t n = strlen(rel);
    while (f && !found && fgets(line, sizeof line, f)) {
        const char *p = line;
        for (int i = 0; i < field && p; i++)
            p = (p = strchr(p, sep)) ? p + 1 : NULL;
        found = p && !strncmp(p, rel, n) && (p[n] == sep || p[n] == '\n' || !p[n]);
        if (found && seq)
            *seq = strtoul(line, NULL, 10);
    }
    if (f)
        fclose(f);
    return found;
}

/* The QUEUE stage runs again after a crash for a copy already chained; the
 * crash may have come between its chain line and its index line. Add the
 * line then, with the sequence the chain gave it and the time in its file,
 * so the index agrees with the chain (`archive verify` checks). */
static void index_catch_up(const struct archive *a, postern_txn *t, const char *relpath, const struct journal_report *r)
{
    unsigned long seq = 0;
    int lock = index_lock(a);
    bool missing = lock >= 0 && !file_lists(a, "index", '\t', 2, relpath, NULL) &&
                   file_lists(a, "chain", ' ', 1, relpath, &seq) && seq;
    if (lock >= 0)
        close(lock);            /* index_append takes it again */
    if (!missing)
        return;
    char path[1200], date[64];
    snprintf(path, sizeof path, "%s/%s", a->dir, relpath);
    time_t when = archived_at(path);
    struct tm tm;
    gmtime_r(&when, &tm);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &tm);
    index_append(a, t, seq, date, relpath, r);
    host->log(t, POSTERN_LOG_INFO, "archive: index line for %s (seq %lu) added after a restart", relpath, seq);
}

/* The message goes on only once the witness has signed its link. */
static postern_verdict witnessed(struct archive *a, postern_txn *t, unsigned long seq)
{
    char why[1400];
    if (!a->witness[0] || witness_sync(a, seq, why, sizeof why) == 0)
        return POSTERN_CONTINUE;
    host->log(t, POSTERN_LOG_ERROR, "archive: witness %s: %s (the message waits)", a->witness, why);
    host->set_reply(t, "451 4.3.0 archive copy could not be witnessed");
    return POSTERN_TEMPFAIL;
}

/* Write, chain and index one copy of t: the message as it is, or (r) the
 * original a journal report carries, with the envelope the report states. */
static postern_verdict archive_copy(struct archive *a, postern_txn *t, const struct journal_report *r)
{
    char day[16], daydir[1100], relpath[64], path[1200], tmp[1200];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(day, sizeof day, "%Y-%m-%d", &tm);
    snprintf(daydir, sizeof daydir, "%s/%s", a->dir, day);
    snprintf(relpath, sizeof relpath, "%s/%s.eml", day, host->queue_id(t));
    snprintf(path, sizeof path, "%s/%s", a->dir, relpath);
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", daydir, host->queue_id(t));
    if (mkdir(daydir, 0750) < 0 && errno != EEXIST)
        goto fail;
    /* The stage may run again after a crash: a copy already in the chain
     * is done; a copy that made it to disk but not into the chain (the
     * crash came in between) is chained now rather than written again. */
    pthread_mutex_lock(&a->lock);
    int done = chained_has(a, relpath);
    unsigned long seq = a->seq;
    pthread_mutex_unlock(&a->lock);
    if (done) {  /* chained before; its index line or the witness's signature may be missing */
        index_catch_up(a, t, relpath, r);
        return chain_sync(a, seq) == 0 ? witnessed(a, t, seq) : POSTERN_TEMPFAIL;
    }
    char date[64];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (access(path, F_OK) != 0) {
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
        if (fd < 0)
            goto fail;
        int ok = (r ? write_journal_copy(fd, t, date, r) : write_envelope(fd, t, date) == 0 ? copy_message(fd, t) : -1)
                     == 0 && fsync(fd) == 0;
        close(fd);
        if (!ok || rename(tmp, path) < 0 || fsync_dir(daydir) < 0) {
            unlink(tmp);
            goto fail;
        }
    } else {    /* written before a crash: its index line gives the time the file does */
        time_t when = archived_at(path);
        gmtime_r(&when, &tm);
        strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    char fh[ARCHIVE_HASH_HEX];
    if (archive_file_hash(path, fh) < 0)
        goto fail;
    pthread_mutex_lock(&a->lock);
    seq = chain_append(a, relpath, fh);
    pthread_mutex_unlock(&a->lock);
    if (!seq || chain_sync(a, seq) < 0)
        goto fail;
    index_append(a, t, seq, date, relpath, r);
    host->log(t, POSTERN_LOG_INFO, "archived %sas %s", r ? "the original of a journal report " : "", relpath);
    return witnessed(a, t, seq);
fail:
    /* no copy, no delivery: tempfail so the queue stage retries later */
    if (errno == EXDEV)
        host->log(t, POSTERN_LOG_ERROR, "archive: %s/chain is no longer the chain this daemon opened "
                  "(the archive directory or chain was replaced or deleted); not archiving until restart", a->dir);
    else
        host->log(t, POSTERN_LOG_ERROR, "archive: cannot write %s: %s", path, strerror(errno));
    host->set_reply(t, "451 4.3.0 archive copy could not be written");
    return POSTERN_TEMPFAIL;
}

/* journal_reports = unwrap: a report from journal_from is archived as the
 * original it carries, with the envelope it states, and goes no further
 * (this is an archive target, not a relay for reports). One that cannot
 * be read is archived as it is, and goes no further either. */
static postern_verdict archive_journal_report(struct archive *a, postern_txn *t)
{
    uint64_t len;
    int in = host->message_open(t, &len);
    char *msg = in >= 0 && len < (1u << 30) ? malloc(len + 1) : NULL;
    size_t got = 0;
    ssize_t n;
    while (msg && got < len && (n = read(in, msg + got, len - got)) > 0)
        got += (size_t)n;
    if (in >= 0)
        close(in);
    struct journal_report *r = calloc(1, sizeof *r);
    char why[400] = "out of memory";
    int parsed = msg && r && got == len ? journal_report_parse(msg, len, r, why, sizeof why) : -1;
    if (parsed < 0)
        host->log(t, POSTERN_LOG_WARN, "archive: a journal report that cannot be read (%s): archived as it is", why);
    postern_verdict v = archive_copy(a, t, parsed == 0 ? r : NULL);
    if (v == POSTERN_CONTINUE) {
        if (parsed == 0)
            host->log(t, POSTERN_LOG_INFO, "archive: journal report of <%s> for %zu recipient(s) unwrapped", r->sender,
                      r->n);
        host->set_reply(t, "250 2.0.0 journal report archived");
        v = POSTERN_DISCARD;
    }
    free(r);
    free(msg);
    return v;
}

static postern_verdict on_queue(postern_txn *t, void *state)
{
    const struct archive_link *l = state;
    struct archive *a = l->a;
    if (dry_run(host)) {
        host->log(t, POSTERN_LOG_INFO, "archive: dry run, a copy would go to %s", a->dir);
        return POSTERN_CONTINUE;
    }
    if (l->journal_unwrap && host->header_get(t, "X-MS-Journal-Report", 0) &&
        journal_networks_match(&l->journal_from, host->client_addr(t)))
        return archive_journal_report(a, t);
    if (l->only_requested && !host->archive_requested(t))
        return POSTERN_CONTINUE;
    return archive_copy(a, t, NULL);
}

/* The options it takes (checked by posternd before init, documented in postern-plugins(5)). */
static const struct postern_option_spec options[] = {
    {"dir", POSTERN_OPT_PATH, NULL, "", 0, "the archive directory (the daemon's user writes it)"},
    {"mode", POSTERN_OPT_CHOICE, "all|requested", "all", 0, "every message, or those a plugin or Lua asked for"},
    {"retention", POSTERN_OPT_TEXT, NULL, NULL, 0, "remove copies older than this (`30d`, `7y`), recorded in the chain"},
    {"expire_every", POSTERN_OPT_TEXT, NULL, "1h", 0, "how often retention looks"},
    {"journal_reports", POSTERN_OPT_CHOICE, "no|unwrap", "no", 0,
     "unwrap: Exchange/Microsoft 365 envelope journal reports from journal_from are archived as the original "
     "with the envelope they state, and go no further"},
    {"journal_from", POSTERN_OPT_TEXT, NULL, NULL, 0, "the networks journal reports may come from (10.0.0.0/8, ...)"},
    {"retention_rules", POSTERN_OPT_PATH, NULL, NULL, 0,
     "periods by sender, recipient or domain: lines `sender|rcpt|domain PATTERN DURATION|forever`, the first match wins"},
    {"witness", POSTERN_OPT_PATH, NULL, NULL, 0, "postern-witness's socket: each link is signed before the message goes on"},
    {"witness_log", POSTERN_OPT_PATH, NULL, NULL, 0, "the witness's log, for `archive verify`"},
    {"witness_key", POSTERN_OPT_PATH, NULL, NULL, 0, "the witness's public key, for `archive verify`"},
    {NULL, 0, NULL, NULL, 0, NULL},
};

static const struct postern_plugin plugin = {
    .abi_version = POSTERN_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct postern_plugin),
    .name = "archive",
    .init = init,
    .fini = fini,
    .on_queue = on_queue,
    .options = options,
};

const struct postern_plugin *postern_plugin_entry(void) { return &plugin; }
