/* spool.c - durable message store: envelope codec, atomic commit, per-
 * recipient sidecar, scan on start. All paths are relative to the spool
 * directory's fds, so a chdir never matters. */
#include "spool.h"
#include "metrics.h"
#include <time.h>
#include "log.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

static int tmp_dirfd = -1, queue_dirfd = -1, corrupt_dirfd = -1;

#define SIZE_DIGITS 20
#define HOPS_DIGITS 4
#define ENVELOPE_MAGIC "POSTERN-SPOOL 1\n"
#define STATE_MAGIC "POSTERN-STATE 1\n"

void envelope_free(struct envelope *e)
{
    free(e->sender);
    for (size_t i = 0; i < e->nrcpts; i++) {
        free(e->rcpts[i]);
        if (e->dsn)
            free(e->dsn[i].orcpt);
    }
    free(e->rcpts);
    free(e->dsn);
    e->sender = NULL;
    e->rcpts = NULL;
    e->dsn = NULL;
    e->nrcpts = 0;
}

static const char *body_name(enum smtp_body b)
{
    return b == BODY_8BITMIME ? "8BITMIME" : b == BODY_7BIT ? "7BIT" : b == BODY_BINARYMIME ? "BINARYMIME" : "";
}

int spool_envelope_encode(const struct envelope *e, struct buf *out, struct envelope_offsets *off)
{
    int rc = 0;
    rc |= buf_puts(out, ENVELOPE_MAGIC);
    rc |= buf_printf(out, "id=%s\narrival=%" PRId64 "\nclient=%s\nhelo=%s\nproto=%s\nbody=%s\nsmtputf8=%d\n",
                     e->id, e->arrival, e->client_ip, e->helo, e->proto, body_name(e->body),
                     e->smtputf8 ? 1 : 0);
    rc |= buf_printf(out, "from=%s\n", e->sender ? e->sender : "");
    if (e->ret)
        rc |= buf_printf(out, "ret=%s\n", e->ret == DSN_RET_FULL ? "FULL" : "HDRS");
    if (e->envid[0])
        rc |= buf_printf(out, "envid=%s\n", e->envid);
    if (e->requiretls)
        rc |= buf_puts(out, "requiretls=1\n");
    for (size_t i = 0; i < e->nrcpts; i++) {
        rc |= buf_printf(out, "rcpt=%s\n", e->rcpts[i]);
        const struct rcpt_dsn *d = e->dsn ? &e->dsn[i] : NULL;
        if (d && (d->notify || d->orcpt)) {   /* "rdsn=NOTIFY ORCPT" for the rcpt above */
            char notify[64];
            dsn_notify_text(d->notify, notify, sizeof notify);
            rc |= buf_printf(out, "rdsn=%s%s%s\n", notify[0] ? notify : "-", d->orcpt ? " " : "",
                             d->orcpt ? d->orcpt : "");
        }
    }
    rc |= buf_puts(out, "tls_optional=");     /* known only once the header section is in */
    off->tls_optional = out->len;
    rc |= buf_printf(out, "%d\n", e->tls_optional ? 1 : 0);
    rc |= buf_puts(out, "hops=");
    off->hops = out->len;
    rc |= buf_printf(out, "%0*u\n", HOPS_DIGITS, e->hops < 0 ? 0u : e->hops > 9999 ? 9999u : (unsigned)e->hops);
    rc |= buf_puts(out, "size=");
    off->size = out->len;
    rc |= buf_printf(out, "%0*" PRIu64 "\n\n", SIZE_DIGITS, e->size);
    return rc ? -1 : 0;
}

static int add_rcpt(struct envelope *e, const char *v)
{
    char **n = realloc(e->rcpts, (e->nrcpts + 1) * sizeof *n);
    if (!n)
        return -1;
    e->rcpts = n;
    struct rcpt_dsn *d = realloc(e->dsn, (e->nrcpts + 1) * sizeof *d);
    if (!d)
        return -1;
    e->dsn = d;
    e->dsn[e->nrcpts] = (struct rcpt_dsn){0, NULL};
    if (!(e->rcpts[e->nrcpts] = strdup(v)))
        return -1;
    e->nrcpts++;
    return 0;
}

static void copy_field(char *dst, size_t cap, const char *v)
{
    snprintf(dst, cap, "%s", v);
}

/* "rdsn=NOTIFY [ORCPT]": the DSN request of the recipient just before. */
static int decode_rcpt_dsn(struct envelope *e, const char *v, const char **err)
{
    if (!e->nrcpts || e->dsn[e->nrcpts - 1].notify || e->dsn[e->nrcpts - 1].orcpt)
        return *err = "rdsn without its rcpt", -1;
    struct rcpt_dsn *d = &e->dsn[e->nrcpts - 1];
    char notify[64];
    size_t n = strcspn(v, " ");
    if (n >= sizeof notify)
        return *err = "bad rdsn", -1;
    memcpy(notify, v, n);
    notify[n] = '\0';
    if (strcmp(notify, "-") && dsn_notify_parse(notify, &d->notify) < 0)
        return *err = "bad rdsn notify", -1;
    if (v[n] == ' ' && strlen(v + n + 1) <= DSN_MAX_ORCPT && !(d->orcpt = strdup(v + n + 1)))
        return *err = "out of memory", -1;
    return 0;
}

/* One "key=value" line of the envelope. */
static int decode_field(struct envelope *e, const char *key, const char *v, const char **err)
{
    char *end;
    if (!strcmp(key, "id")) {
        if (!qid_valid(v))
            return *err = "bad id", -1;
        copy_field(e->id, sizeof e->id, v);
    } else if (!strcmp(key, "arrival")) {
        e->arrival = strtoll(v, &end, 10);
        if (*end || end == v)
            return *err = "bad arrival", -1;
    } else if (!strcmp(key, "client")) {
        copy_field(e->client_ip, sizeof e->client_ip, v);
    } else if (!strcmp(key, "helo")) {
        copy_field(e->helo, sizeof e->helo, v);
    } else if (!strcmp(key, "proto")) {
        copy_field(e->proto, sizeof e->proto, v);
    } else if (!strcmp(key, "body")) {
        e->body = !strcmp(v, "8BITMIME") ? BODY_8BITMIME : !strcmp(v, "7BIT") ? BODY_7BIT
                : !strcmp(v, "BINARYMIME") ? BODY_BINARYMIME : BODY_UNSPEC;
    } else if (!strcmp(key, "ret")) {
        e->ret = !strcmp(v, "FULL") ? DSN_RET_FULL : !strcmp(v, "HDRS") ? DSN_RET_HDRS : DSN_RET_UNSPEC;
    } else if (!strcmp(key, "envid")) {
        if (strlen(v) > DSN_MAX_ENVID || !xtext_valid(v))
            return *err = "bad envid", -1;
        copy_field(e->envid, sizeof e->envid, v);
    } else if (!strcmp(key, "rdsn")) {
        return decode_rcpt_dsn(e, v, err);
    } else if (!strcmp(key, "smtputf8")) {
        e->smtputf8 = v[0] == '1';
    } else if (!strcmp(key, "requiretls")) {
        e->requiretls = v[0] == '1';
    } else if (!strcmp(key, "tls_optional")) {
        e->tls_optional = v[0] == '1';
    } else if (!strcmp(key, "from")) {
        free(e->sender);
        if (!(e->sender = strdup(v)))
            return *err = "out of memory", -1;
    } else if (!strcmp(key, "rcpt")) {
        if (add_rcpt(e, v) < 0)
            return *err = "out of memory", -1;
    } else if (!strcmp(key, "hops")) {
        e->hops = (int)strtol(v, &end, 10);
        if (*end || end == v || e->hops < 0)
            return *err = "bad hops", -1;
    } else if (!strcmp(key, "size")) {
        e->size = strtoull(v, &end, 10);
        if (*end || strlen(v) != SIZE_DIGITS)
            return *err = "bad size", -1;
    } else {
        return *err = "unknown envelope field", -1;
    }
    return 0;
}

/* Fields an envelope has at most once (rcpt and rdsn repeat). */
static const char *const once_fields[] = {"id",   "arrival", "client", "helo", "proto",    "body",         "ret",
                                          "envid", "smtputf8", "requiretls", "tls_optional", "from", "hops", "size"};

static bool field_repeated(const char *key, unsigned *seen)
{
    for (unsigned i = 0; i < sizeof once_fields / sizeof *once_fields; i++)
        if (!strcmp(key, once_fields[i])) {
            bool again = *seen & (1u << i);
            *seen |= 1u << i;
            return again;
        }
    return false;
}

static int addr_cmp(const void *a, const void *b)
{
    return strcasecmp(*(char *const *)a, *(char *const *)b);
}

/* A recipient twice (as RCPT never stores it) would be sent twice. */
static bool rcpt_repeated(const struct envelope *e)
{
    if (e->nrcpts < 2)
        return false;
    char **v = malloc(e->nrcpts * sizeof *v);
    if (!v)
        return false;
    memcpy(v, e->rcpts, e->nrcpts * sizeof *v);
    qsort(v, e->nrcpts, sizeof *v, addr_cmp);
    bool again = false;
    for (size_t i = 1; i < e->nrcpts && !again; i++)
        again = !strcasecmp(v[i - 1], v[i]);
    free(v);
    return again;
}

int spool_envelope_decode(const char *data, size_t len, struct envelope *e, size_t *body_off,
                          const char **err)
{
    unsigned seen = 0;
    memset(e, 0, sizeof *e);
    size_t ml = strlen(ENVELOPE_MAGIC);
    if (len < ml || memcmp(data, ENVELOPE_MAGIC, ml) != 0)
        return *err = "not a Postern spool file", -1;
    size_t pos = ml;
    bool have_size = false;
    char line[SMTP_MAX_PATH + 600];
    for (;;) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        if (!nl)
            return envelope_free(e), *err = "truncated envelope", -1;
        size_t n = (size_t)(nl - (data + pos));
        if (n == 0) {
            pos++;
            break;
        }
        if (n >= sizeof line)
            return envelope_free(e), *err = "envelope line too long", -1;
        for (size_t i = 0; i < n; i++)       /* CR, NUL and the like never belong in a field */
            if ((unsigned char)data[pos + i] < 0x20 || data[pos + i] == 0x7f)
                return envelope_free(e), *err = "control character in the envelope", -1;
        memcpy(line, data + pos, n);
        line[n] = '\0';
        pos += n + 1;
        char *eq = strchr(line, '=');
        if (!eq)
            return envelope_free(e), *err = "envelope line without '='", -1;
        *eq = '\0';
        if (field_repeated(line, &seen))
            return envelope_free(e), *err = "an envelope field that comes once is repeated", -1;
        if (decode_field(e, line, eq + 1, err) < 0)
            return envelope_free(e), -1;
        have_size |= !strcmp(line, "size");
    }
    if (!e->id[0] || !e->sender || e->nrcpts == 0 || !have_size)
        return envelope_free(e), *err = "envelope misses id, from, rcpt or size", -1;
    if (rcpt_repeated(e))
        return envelope_free(e), *err = "a recipient is listed twice in the envelope", -1;
    /* the addresses go out in MAIL and RCPT commands: the grammar we accept on input */
    if (e->sender[0] && smtp_check_address(e->sender, true))
        return envelope_free(e), *err = "bad sender address in the envelope", -1;
    for (size_t i = 0; i < e->nrcpts; i++)
        if (smtp_check_address(e->rcpts[i], true))
            return envelope_free(e), *err = "bad recipient address in the envelope", -1;
    *body_off = pos;
    return 0;
}

int spool_state_encode(struct msg_flags f, const struct rcpt_state *st, size_t n, struct buf *out)
{
    int rc = buf_puts(out, STATE_MAGIC);
    rc |= buf_printf(out, "held=%d\nwarned=%d\nqueued=%d\n", f.held ? 1 : 0, f.warned ? 1 : 0, f.queued ? 1 : 0);
    if (f.archive)
        rc |= buf_puts(out, "archive=1\n");
    if (f.reason[0])
        rc |= buf_printf(out, "reason=%s\n", f.reason);
    for (const char *d = f.decisions, *nl; *d; d = *nl ? nl + 1 : nl) {
        nl = d + strcspn(d, "\n");
        rc |= buf_printf(out, "decided=%.*s\n", (int)(nl - d), d);
    }
    for (size_t i = 0; i < n; i++) {
        rc |= buf_printf(out, "%zu %c %d %" PRId64 " %s\n", i, st[i].status, st[i].attempts, st[i].next_try,
                         st[i].last_reply);
        if (st[i].nexthop[0])
            rc |= buf_printf(out, "route %zu %s\n", i, st[i].nexthop);
        if (st[i].min_tls)
            rc |= buf_printf(out, "tls %zu %d\n", i, st[i].min_tls);
        if (st[i].remote[0])
            rc |= buf_printf(out, "mta %zu %s %s\n", i, st[i].remote, st[i].in_reply_to);
    }
    return rc ? -1 : 0;
}

int spool_state_decode(const char *data, size_t len, struct msg_flags *f, struct rcpt_state *st, size_t n,
                       const char **err)
{
    size_t ml = strlen(STATE_MAGIC);
    if (len < ml || memcmp(data, STATE_MAGIC, ml) != 0)
        return *err = "not a Postern state file", -1;
    char *copy = strndup(data + ml, len - ml);
    if (!copy)
        return *err = "out of memory", -1;
    int rc = 0;
    size_t seen = 0;
    char *save = NULL;
    for (char *l = strtok_r(copy, "\n", &save); l && rc == 0; l = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(l, "held=", 5)) {
            f->held = l[5] == '1';
            continue;
        }
        if (!strncmp(l, "warned=", 7)) {
            f->warned = l[7] == '1';
            continue;
        }
        if (!strncmp(l, "archive=", 8)) {
            f->archive = l[8] == '1';
            continue;
        }
        if (!strncmp(l, "queued=", 7)) {
            f->queued = l[7] == '1';
            continue;
        }
        if (!strncmp(l, "decided=", 8)) {
            size_t have = strlen(f->decisions);
            snprintf(f->decisions + have, sizeof f->decisions - have, "%s\n", l + 8);
            continue;
        }
        if (!strncmp(l, "reason=", 7)) {
            snprintf(f->reason, sizeof f->reason, "%s", l + 7);
            continue;
        }
        size_t ridx;
        int roff = 0, level;
        if (sscanf(l, "tls %zu %d", &ridx, &level) == 2 && ridx < n) {
            st[ridx].min_tls = level;
            continue;
        }
        char remote[sizeof st->remote];
        if (sscanf(l, "mta %zu %159s %n", &ridx, remote, &roff) == 2 && roff && ridx < n) {
            snprintf(st[ridx].remote, sizeof st[ridx].remote, "%s", remote);
            snprintf(st[ridx].in_reply_to, sizeof st[ridx].in_reply_to, "%s", l + roff);
            continue;
        }
        roff = 0;
        if (sscanf(l, "route %zu %n", &ridx, &roff) == 1 && roff && ridx < n) {
            snprintf(st[ridx].nexthop, sizeof st[ridx].nexthop, "%s", l + roff);
            continue;
        }
        size_t idx;
        char status;
        int attempts, off = 0;
        int64_t next;
        if (sscanf(l, "%zu %c %d %" SCNd64 " %n", &idx, &status, &attempts, &next, &off) < 4 || idx >= n ||
            !strchr((char[]){RCPT_PENDING, RCPT_DONE, RCPT_FAILED, RCPT_BOUNCED, RCPT_RELAYED, 0}, status)) {
            *err = "bad recipient state line";
            rc = -1;
            break;
        }
        st[idx].status = status;
        st[idx].attempts = attempts;
        st[idx].next_try = next;
        snprintf(st[idx].last_reply, sizeof st[idx].last_reply, "%s", off ? l + off : "");
        seen++;
    }
    free(copy);
    if (rc == 0 && seen != n)
        return *err = "state does not cover every recipient", -1;
    return rc;
}

void qid_generate(char out[QID_LEN])
{
    /* seconds (8 hex) + microseconds (5 hex) + counter (3 hex): strictly
     * increasing within this process, time-ordered across restarts. The loop
     * and plugin threads (host->submit_message) both make IDs. */
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static uint64_t last_sec, last_usec;
    static unsigned counter;
    pthread_mutex_lock(&lock);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    uint64_t sec = (uint64_t)tv.tv_sec, usec = (uint64_t)tv.tv_usec;
    if (sec < last_sec || (sec == last_sec && usec <= last_usec)) {
        sec = last_sec;
        usec = last_usec;
        if (++counter > 0xfff) {
            counter = 0;
            if (++usec > 999999) {
                usec = 0;
                sec++;
            }
        }
    } else {
        counter = 0;
    }
    last_sec = sec;
    last_usec = usec;
    snprintf(out, QID_LEN, "%08" PRIX64 "%05" PRIX64 "%03X", sec & 0xffffffffu, usec, counter);
    pthread_mutex_unlock(&lock);
}

bool qid_valid(const char *id)
{
    if (strlen(id) != QID_LEN - 1)
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'F')))
            return false;
    return true;
}

/* DIR/SUB, made when missing, opened beneath the spool's fd and never
 * through a symbolic link: the spool is the daemon user's tree, and this
 * may run as root (which then clears tmp/). A link or a non-directory there
 * is refused, naming the path; -1 with errno. */
static int open_subdir(int spoolfd, const char *dir, const char *sub)
{
    if (mkdirat(spoolfd, sub, 0700) < 0 && errno != EEXIST)
        return -1;
    int fd = openat(spoolfd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && (errno == ELOOP || errno == ENOTDIR)) {
        log_error("spool: %s/%s is a symbolic link or not a directory; refusing to use it (move it away, and "
                  "find out who put it there: only the daemon's user can write the spool)", dir, sub);
        errno = ELOOP;
    }
    return fd;
}

/* The spool directory itself: the admin's path (a link to it is the
 * admin's choice, made in a directory only root writes). */
static int open_spool_dir(const char *dir)
{
    return open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

int spool_lock(const char *dir, int wait_s)
{
    int dfd = open_spool_dir(dir);
    int fd = dfd < 0 ? -1 : openat(dfd, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    int saved = errno;
    if (dfd >= 0)
        close(dfd);
    if (fd < 0) {
        errno = saved;
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {   /* a FIFO or device planted as "lock" */
        close(fd);
        errno = EINVAL;
        return -1;
    }
    for (int tries = wait_s * 10; flock(fd, LOCK_EX | LOCK_NB) < 0; tries--) {
        if (errno != EWOULDBLOCK || tries <= 0) {
            saved = errno;
            close(fd);
            errno = saved;
            return -1;
        }
        usleep(100000);
    }
    return fd;
}

int spool_init(const char *dir, bool recover)
{
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        log_error("spool: cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    int spoolfd = open_spool_dir(dir);
    if (spoolfd < 0) {
        log_error("spool: cannot open %s: %s", dir, strerror(errno));
        return -1;
    }
    tmp_dirfd = open_subdir(spoolfd, dir, "tmp");
    queue_dirfd = tmp_dirfd < 0 ? -1 : open_subdir(spoolfd, dir, "queue");
    corrupt_dirfd = queue_dirfd < 0 ? -1 : open_subdir(spoolfd, dir, "corrupt");
    int err = errno;
    close(spoolfd);
    if (tmp_dirfd < 0 || queue_dirfd < 0 || corrupt_dirfd < 0) {
        if (err != ELOOP)
            log_error("spool: cannot open %s/{tmp,queue,corrupt}: %s", dir, strerror(err));
        return -1;
    }
    if (recover)
        spool_clear_tmp();
    return 0;
}

void spool_clear_tmp(void)
{
    /* tmp/ holds only messages that were never acknowledged: drop them */
    if (tmp_dirfd < 0)
        return;
    DIR *d = fdopendir(dup(tmp_dirfd));    /* the directory opened without following a link */
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)))
            if (de->d_name[0] != '.')
                unlinkat(tmp_dirfd, de->d_name, 0);
        closedir(d);
    }
}

static void writer_fail(struct spool_writer *w, int err)
{
    if (!w->err)
        w->err = err ? err : EIO;
}

/* write(2) all of it or record the error. */
static void write_all(struct spool_writer *w, const char *p, size_t n)
{
    while (n && !w->err) {
        ssize_t r = write(w->fd, p, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            writer_fail(w, errno);
            return;
        }
        p += r;
        n -= (size_t)r;
    }
}

int spool_writer_open(struct spool_writer *w, const struct envelope *e)
{
    memset(w, 0, sizeof *w);
    snprintf(w->id, sizeof w->id, "%s", e->id);
    w->fd = openat(tmp_dirfd, w->id, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (w->fd < 0) {
        w->err = errno;
        return -1;
    }
    struct buf b;
    buf_init(&b);
    w->hops = e->hops;
    w->tls_optional = e->tls_optional;
    if (spool_envelope_encode(e, &b, &w->off) < 0) {
        buf_free(&b);
        writer_fail(w, ENOMEM);
        return -1;
    }
    w->env_len = b.len;
    write_all(w, buf_head(&b), b.len);
    buf_free(&b);
    return w->err ? -1 : 0;
}

void spool_writer_write(struct spool_writer *w, const void *data, size_t n)
{
    write_all(w, data, n);
    w->written += n;
}

/* fsync, timed for the metrics. */
static int timed_fsync(int fd)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int rc = fsync(fd);
    clock_gettime(CLOCK_MONOTONIC, &b);
    metric_observe(M_FSYNC_SECONDS, (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9);
    return rc;
}

int spool_writer_commit(struct spool_writer *w)
{
    char digits[SIZE_DIGITS + 1], hops[16];
    unsigned h = w->hops < 0 ? 0u : w->hops > 9999 ? 9999u : (unsigned)w->hops;
    snprintf(digits, sizeof digits, "%0*" PRIu64, SIZE_DIGITS, w->written);
    snprintf(hops, sizeof hops, "%0*u", HOPS_DIGITS, h);
    if (!w->err && pwrite(w->fd, digits, SIZE_DIGITS, (off_t)w->off.size) != SIZE_DIGITS)
        writer_fail(w, errno);
    if (!w->err && pwrite(w->fd, hops, HOPS_DIGITS, (off_t)w->off.hops) != HOPS_DIGITS)
        writer_fail(w, errno);
    if (!w->err && pwrite(w->fd, w->tls_optional ? "1" : "0", 1, (off_t)w->off.tls_optional) != 1)
        writer_fail(w, errno);
    if (!w->err && timed_fsync(w->fd) < 0)
        writer_fail(w, errno);
    if (close(w->fd) < 0)
        writer_fail(w, errno);
    w->fd = -1;
    if (!w->err && renameat(tmp_dirfd, w->id, queue_dirfd, w->id) < 0)
        writer_fail(w, errno);
    if (!w->err && timed_fsync(queue_dirfd) < 0)
        writer_fail(w, errno);
    if (w->err) {
        /* not acknowledged: remove whichever name it has */
        unlinkat(tmp_dirfd, w->id, 0);
        unlinkat(queue_dirfd, w->id, 0);
    }
    return w->err;
}

/* Copy len bytes at off of in to the end of w's file. */
static void copy_range(struct spool_writer *w, int in, off_t off, size_t len)
{
    char buf[65536];
    while (len && !w->err) {
        ssize_t r = pread(in, buf, len < sizeof buf ? len : sizeof buf, off);
        if (r <= 0) {
            writer_fail(w, r < 0 ? errno : EIO);
            return;
        }
        write_all(w, buf, (size_t)r);
        off += r;
        len -= (size_t)r;
    }
}

/* The rewrite of a small message, in its own file: the old body read into
 * memory, then envelope, headers and body written from offset 0 and the
 * file cut to length if it got shorter. No second file: creating, renaming over and freeing
 * an inode per message is what a rewrite mostly cost (a header added at EOM,
 * say Authentication-Results, rewrites every message). The file is still in
 * tmp/ and unacknowledged, so a crash half way loses nothing anyone was told
 * about. */
static int rewrite_in_place(struct spool_writer *w, const struct envelope *e, const char *headers, size_t hlen,
                            const char *body, size_t blen)
{
    size_t old_len = (size_t)w->written - w->hdr_len;
    uint64_t old_total = w->env_len + w->written;
    char *old = body ? NULL : malloc(old_len ? old_len : 1);
    if (!body && !old)
        writer_fail(w, ENOMEM);
    else if (old && pread(w->fd, old, old_len, (off_t)(w->env_len + w->hdr_len)) != (ssize_t)old_len)
        writer_fail(w, EIO);
    struct buf b;
    buf_init(&b);
    if (spool_envelope_encode(e, &b, &w->off) < 0)
        writer_fail(w, ENOMEM);
    else if (lseek(w->fd, 0, SEEK_SET) < 0)
        writer_fail(w, errno);
    w->env_len = b.len;
    write_all(w, buf_head(&b), b.len);
    buf_free(&b);
    write_all(w, headers, hlen);
    write_all(w, body ? body : old, body ? blen : old_len);
    free(old);
    w->hdr_len = hlen;
    w->written = hlen + (body ? blen : old_len);
    /* a longer file (a header added) has no old tail to cut */
    if (!w->err && w->env_len + w->written < old_total && ftruncate(w->fd, (off_t)(w->env_len + w->written)) < 0)
        writer_fail(w, errno);
    return w->err;
}

#define REWRITE_IN_PLACE_MAX (4u << 20)   /* bodies up to this are rewritten in their own file */

int spool_writer_rewrite(struct spool_writer *w, const struct envelope *e, const char *headers, size_t hlen,
                         const char *body, size_t blen)
{
    if (w->err)
        return w->err;
    if (body || (size_t)w->written - w->hdr_len <= REWRITE_IN_PLACE_MAX)
        return rewrite_in_place(w, e, headers, hlen, body, blen);
    char rwname[QID_LEN + 8];
    snprintf(rwname, sizeof rwname, "%s.rw", w->id);
    int old = w->fd;
    off_t old_body = (off_t)(w->env_len + w->hdr_len);
    size_t old_body_len = (size_t)w->written - w->hdr_len;
    w->fd = openat(tmp_dirfd, rwname, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (w->fd < 0) {
        w->fd = old;
        writer_fail(w, errno);
        return w->err;
    }
    struct buf b;
    buf_init(&b);
    if (spool_envelope_encode(e, &b, &w->off) < 0)
        writer_fail(w, ENOMEM);
    w->env_len = b.len;
    write_all(w, buf_head(&b), b.len);
    buf_free(&b);
    write_all(w, headers, hlen);
    if (body)
        write_all(w, body, blen);
    else
        copy_range(w, old, old_body, old_body_len);
    w->hdr_len = hlen;
    w->written = hlen + (body ? blen : old_body_len);
    close(old);
    if (!w->err && renameat(tmp_dirfd, rwname, tmp_dirfd, w->id) < 0)
        writer_fail(w, errno);
    if (w->err)
        unlinkat(tmp_dirfd, rwname, 0);
    return w->err;
}

void spool_writer_abort(struct spool_writer *w)
{
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    unlinkat(tmp_dirfd, w->id, 0);
}

/* Open a spool file for reading: a regular file or nothing. A symlink (to
 * /dev/zero, say) or a FIFO planted in the spool is refused, never followed
 * or waited on. */
static int open_regular_at(int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))) {
        close(fd);
        errno = EINVAL;
        return -1;
    }
    return fd;
}

/* Read a whole small file relative to dirfd into b (at most about max bytes). */
static int read_file_at(int dirfd, const char *name, struct buf *b, size_t max)
{
    int fd = open_regular_at(dirfd, name);
    if (fd < 0)
        return -1;
    for (;;) {
        if (buf_reserve(b, 8192) < 0)
            break;
        size_t room;
        char *t = buf_tail(b, &room);
        ssize_t r = read(fd, t, room);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            close(fd);
            return r < 0 ? -1 : 0;
        }
        buf_commit(b, (size_t)r);
        /* envelopes end at the first blank line: stop once we have it */
        if (b->len >= max || memmem(buf_head(b), b->len, "\n\n", 2))
            break;
    }
    close(fd);
    return 0;
}

int spool_load(const char *id, struct envelope *e, size_t *body_off, const char **err)
{
    struct buf b;
    buf_init(&b);
    if (read_file_at(queue_dirfd, id, &b, SPOOL_MAX_ENVELOPE) < 0) {
        buf_free(&b);
        return *err = "cannot read", -1;
    }
    int rc = spool_envelope_decode(buf_head(&b), b.len, e, body_off, err);
    buf_free(&b);
    if (rc < 0)
        return -1;
    struct stat st;
    if (fstatat(queue_dirfd, id, &st, 0) < 0 || (uint64_t)st.st_size != *body_off + e->size) {
        envelope_free(e);
        return *err = "file length does not match the recorded size (truncated?)", -1;
    }
    if (strcmp(e->id, id) != 0) {
        envelope_free(e);
        return *err = "id inside does not match the file name", -1;
    }
    return 0;
}

static void state_name(const char *id, char *out, size_t n) { snprintf(out, n, "%s.st", id); }

int spool_load_state(const char *id, struct msg_flags *f, struct rcpt_state *st, size_t n)
{
    *f = (struct msg_flags){0};
    for (size_t i = 0; i < n; i++)
        st[i] = (struct rcpt_state){.status = RCPT_PENDING};
    char name[QID_LEN + 8];
    state_name(id, name, sizeof name);
    struct buf b;
    buf_init(&b);
    if (read_file_at(queue_dirfd, name, &b, SPOOL_MAX_ENVELOPE) < 0) {
        buf_free(&b);
        return errno == ENOENT ? 0 : -1;
    }
    const char *err = NULL;
    int rc = spool_state_decode(buf_head(&b), b.len, f, st, n, &err);
    if (rc < 0)
        log_warn("%s: bad state file (%s); treating all recipients as pending", id, err);
    buf_free(&b);
    return 0;
}

static int save_state(const char *id, struct msg_flags f, const struct rcpt_state *st, size_t n, bool durable);

int spool_save_state(const char *id, struct msg_flags f, const struct rcpt_state *st, size_t n)
{
    /* No fsync: after power loss the previous state comes back, which can
     * only re-deliver, never lose. */
    return save_state(id, f, st, n, false);
}

int spool_save_state_durable(const char *id, struct msg_flags f, const struct rcpt_state *st, size_t n)
{
    return save_state(id, f, st, n, true);
}

static int save_state(const char *id, struct msg_flags f, const struct rcpt_state *st, size_t n, bool durable)
{
    char name[QID_LEN + 8], tmpname[QID_LEN + 12];
    state_name(id, name, sizeof name);
    snprintf(tmpname, sizeof tmpname, "%s.new", name);
    struct buf b;
    buf_init(&b);
    int rc = spool_state_encode(f, st, n, &b);
    int fd = rc < 0 ? -1 : openat(queue_dirfd, tmpname, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
        rc = write(fd, buf_head(&b), b.len) == (ssize_t)b.len ? 0 : -1;
        if (rc == 0 && durable)
            rc = timed_fsync(fd);
        close(fd);
        if (rc == 0)
            rc = renameat(queue_dirfd, tmpname, queue_dirfd, name);
    } else {
        rc = -1;
    }
    if (rc < 0)
        log_error("%s: cannot save recipient state: %s", id, strerror(errno));
    buf_free(&b);
    return rc;
}

void spool_remove(const char *id)
{
    char name[QID_LEN + 8];
    state_name(id, name, sizeof name);
    unlinkat(queue_dirfd, name, 0);
    if (unlinkat(queue_dirfd, id, 0) < 0 && errno != ENOENT)
        log_error("%s: cannot remove from spool: %s", id, strerror(errno));
}

void spool_move_corrupt(const char *id, const char *why)
{
    if (renameat(queue_dirfd, id, corrupt_dirfd, id) < 0)
        log_error("%s: cannot move corrupt file aside: %s", id, strerror(errno));
    char name[QID_LEN + 8];
    state_name(id, name, sizeof name);
    renameat(queue_dirfd, name, corrupt_dirfd, name);
    log_error("%s: corrupt spool file moved to corrupt/: %s", id, why);
}

int spool_open_message(const char *id)
{
    return open_regular_at(queue_dirfd, id);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int spool_scan(void (*fn)(const char *id, void *ctx), void *ctx)
{
    DIR *d = fdopendir(dup(queue_dirfd));
    if (!d)
        return -1;
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *nm = de->d_name;
        if (nm[0] == '.')
            continue;
        if (!qid_valid(nm)) {
            /* sidecars, half-written sidecars: handled with their message */
            size_t l = strlen(nm);
            if (l > 4 && !strcmp(nm + l - 4, ".new"))
                unlinkat(queue_dirfd, nm, 0);
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn)
                break;
            names = nn;
        }
        names[n++] = strdup(nm);
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        fn(names[i], ctx);
        free(names[i]);
    }
    free(names);
    return 0;
}
