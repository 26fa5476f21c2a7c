/* spool.c - durable message store: queue IDs, atomic commit, per-
 * recipient sidecar files, scan on start (the formats are spool_format.c's).
 * All paths are relative to the spool directory's fds, so a chdir never
 * matters. */
#include "spool.h"
#include "array_grow.h"
#include "headers.h"
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
#include <sys/statvfs.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

static int tmp_dirfd = -1, queue_dirfd = -1, corrupt_dirfd = -1;


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

int spool_free_bytes(uint64_t *out)
{
    struct statvfs v;
    if (queue_dirfd < 0 || fstatvfs(queue_dirfd, &v) < 0)
        return -1;
    *out = (uint64_t)v.f_bavail * (uint64_t)v.f_frsize;
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

/* pwritev(2) all of parts at off (the file offset is left alone), or
 * record the error. */
static void pwritev_all(struct spool_writer *w, struct iovec *parts, int n, off_t off)
{
    while (n > 0 && !w->err) {
        ssize_t r = pwritev(w->fd, parts, n, off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 && (r < 0 || parts->iov_len)) {
            writer_fail(w, r < 0 ? errno : EIO);
            return;
        }
        off += r;
        for (; n > 0 && (size_t)r >= parts->iov_len; parts++, n--)
            r -= (ssize_t)parts->iov_len;
        if (n > 0) {
            parts->iov_base = (char *)parts->iov_base + r;
            parts->iov_len -= (size_t)r;
        }
    }
}

int spool_writer_open(struct spool_writer *w, const struct envelope *e)
{
    memset(w, 0, sizeof *w);
    buf_init(&w->pend);
    snprintf(w->id, sizeof w->id, "%s", e->id);
    w->fd = openat(tmp_dirfd, w->id, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (w->fd < 0) {
        w->err = errno;
        return -1;
    }
    w->hops = e->hops;
    w->tls_optional = e->tls_optional;
    if (spool_envelope_encode(e, &w->pend, &w->off) < 0) {
        writer_fail(w, ENOMEM);
        return -1;
    }
    w->env_len = w->pend.len;
    return 0;
}

/* What is held back, and then data (NULL: nothing more), to the file at
 * its place. */
static void write_out(struct spool_writer *w, const void *data, size_t n)
{
    struct iovec parts[2] = {{buf_head(&w->pend), w->pend.len}, {(void *)data, n}};
    size_t len = w->pend.len + n;
    pwritev_all(w, parts[0].iov_len ? parts : parts + 1, parts[0].iov_len ? 2 : 1, (off_t)w->on_disk);
    w->on_disk += len;
    buf_reset(&w->pend);
}

/* At its place after what came before (not the file offset: a rewrite
 * writes the file anew with pwritev). Held back while pend has room. */
void spool_writer_write(struct spool_writer *w, const void *data, size_t n)
{
    if (!n || w->err)
        return;
    w->written += n;
    if (w->pend.len + n <= SPOOL_WRITE_BEHIND) {
        if (buf_append(&w->pend, data, n) < 0)
            writer_fail(w, ENOMEM);
        return;
    }
    write_out(w, data, n);
}

const char *spool_writer_in_memory(const struct spool_writer *w, uint64_t offset)
{
    if (w->err || offset < w->on_disk || offset > w->on_disk + w->pend.len)
        return NULL;
    return buf_head(&w->pend) ? buf_head(&w->pend) + (offset - w->on_disk) : "";
}

const char *spool_writer_readable(struct spool_writer *w, uint64_t offset)
{
    const char *p = spool_writer_in_memory(w, offset);
    if (!p && w->pend.len)
        write_out(w, NULL, 0);      /* part on disk, the rest held back: all to the file */
    return p;
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

/* The queue directory fsync'd after a rename into it, shared between
 * commits running at once (group commit): a sync that started after our
 * rename covers it, so a commit waits for one in flight and needs its own
 * only when that one started too early. Each commit still returns only once
 * its own name is durable. */
static pthread_mutex_t dir_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t dir_synced = PTHREAD_COND_INITIALIZER;
static uint64_t dir_renames, dir_synced_upto;   /* renames so far; renames a finished sync covers */
static bool dir_syncing;

static int sync_queue_dir(void)
{
    pthread_mutex_lock(&dir_lock);
    uint64_t mine = ++dir_renames;
    int rc = 0;
    while (dir_synced_upto < mine) {
        if (dir_syncing) {
            pthread_cond_wait(&dir_synced, &dir_lock);
            continue;
        }
        dir_syncing = true;
        uint64_t upto = dir_renames;
        pthread_mutex_unlock(&dir_lock);
        rc = timed_fsync(queue_dirfd);
        int err = errno;
        pthread_mutex_lock(&dir_lock);
        dir_syncing = false;
        if (rc == 0)
            dir_synced_upto = upto > dir_synced_upto ? upto : dir_synced_upto;
        pthread_cond_broadcast(&dir_synced);
        if (rc < 0) {
            errno = err;        /* this commit fails; the others try again */
            break;
        }
    }
    pthread_mutex_unlock(&dir_lock);
    return rc;
}

/* The envelope's last fields, known only now: "tls_optional=", "hops=" and
 * "size=" end it in that order (spool_envelope_encode), so their values
 * and what lies between are one span, written in one pwrite. */
static void patch_envelope_tail(struct spool_writer *w)
{
    unsigned h = w->hops < 0 ? 0u : w->hops > 9999 ? 9999u : (unsigned)w->hops;
    char span[96];
    int n = snprintf(span, sizeof span, "%d\nhops=%0*u\nsize=%0*" PRIu64, w->tls_optional ? 1 : 0, HOPS_DIGITS, h,
                     SIZE_DIGITS, w->written);
    if (n < 0 || (size_t)n != w->off.size + SIZE_DIGITS - w->off.tls_optional) {
        writer_fail(w, EINVAL);         /* the encoder and this disagree: never write a wrong envelope */
        return;
    }
    if (w->off.tls_optional >= w->on_disk)      /* still held back: patched in memory */
        memcpy(buf_head(&w->pend) + (w->off.tls_optional - w->on_disk), span, (size_t)n);
    else if (pwrite(w->fd, span, (size_t)n, (off_t)w->off.tls_optional) != n)
        writer_fail(w, errno);
}

int spool_writer_commit(struct spool_writer *w)
{
    if (!w->err)
        patch_envelope_tail(w);
    if (!w->err && w->pend.len)
        write_out(w, NULL, 0);
    buf_free(&w->pend);
    if (!w->err && timed_fsync(w->fd) < 0)
        writer_fail(w, errno);
    if (close(w->fd) < 0)
        writer_fail(w, errno);
    w->fd = -1;
    if (!w->err && renameat(tmp_dirfd, w->id, queue_dirfd, w->id) < 0)
        writer_fail(w, errno);
    if (!w->err && sync_queue_dir() < 0)
        writer_fail(w, errno);
    if (w->err) {
        /* not acknowledged: remove whichever name it has */
        unlinkat(tmp_dirfd, w->id, 0);
        unlinkat(queue_dirfd, w->id, 0);
    }
    return w->err;
}

/* Copy len bytes at off of in to w's file at to. */
static void copy_range(struct spool_writer *w, int in, off_t off, size_t len, off_t to)
{
    char buf[65536];
    while (len && !w->err) {
        ssize_t r = pread(in, buf, len < sizeof buf ? len : sizeof buf, off);
        if (r <= 0) {
            writer_fail(w, r < 0 ? errno : EIO);
            return;
        }
        struct iovec part = {buf, (size_t)r};
        pwritev_all(w, &part, 1, to);
        off += r;
        to += r;
        len -= (size_t)r;
    }
}

/* A rewrite when nothing is on disk yet (a message held back whole): the
 * new file is made in memory, with no I/O at all. */
static int rewrite_held_back(struct spool_writer *w, const struct envelope *e, const char *headers, size_t hlen,
                             const char *body, size_t blen)
{
    const char *kept = spool_writer_in_memory(w, w->env_len + w->hdr_len);
    size_t len = body ? blen : (size_t)w->written - w->hdr_len;
    struct buf nb;
    buf_init(&nb);
    if (spool_envelope_encode(e, &nb, &w->off) < 0)
        writer_fail(w, ENOMEM);
    size_t env_len = nb.len;
    if ((hlen && buf_append(&nb, headers, hlen) < 0) || (len && buf_append(&nb, body ? body : kept, len) < 0))
        writer_fail(w, ENOMEM);
    buf_free(&w->pend);
    w->pend = nb;
    w->env_len = env_len;
    w->hdr_len = hlen;
    w->written = hlen + len;
    return w->err;
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
    if (w->on_disk == 0)
        return rewrite_held_back(w, e, headers, hlen, body, blen);
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
    w->env_len = b.len;
    struct iovec parts[3] = {{buf_head(&b), b.len}, {(void *)headers, hlen},
                             {body ? (void *)body : old, body ? blen : old_len}};
    pwritev_all(w, parts, 3, 0);        /* one system call for the three, where it can */
    buf_free(&b);
    free(old);
    w->hdr_len = hlen;
    w->written = hlen + (body ? blen : old_len);
    w->on_disk = w->env_len + w->written;
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
    if (w->on_disk && w->pend.len)
        write_out(w, NULL, 0);      /* the file whole on disk: the old body is read back from it */
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
    struct iovec parts[2] = {{buf_head(&b), b.len}, {(void *)headers, hlen}};
    pwritev_all(w, parts, 2, 0);
    buf_free(&b);
    copy_range(w, old, old_body, old_body_len, (off_t)(w->env_len + hlen));   /* only a large kept body comes here */
    w->hdr_len = hlen;
    w->written = hlen + old_body_len;
    w->on_disk = w->env_len + w->written;
    close(old);
    if (!w->err && renameat(tmp_dirfd, rwname, tmp_dirfd, w->id) < 0)
        writer_fail(w, errno);
    if (w->err)
        unlinkat(tmp_dirfd, rwname, 0);
    return w->err;
}

void spool_writer_abort(struct spool_writer *w)
{
    buf_free(&w->pend);
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    unlinkat(tmp_dirfd, w->id, 0);
}

/* Open a spool file for reading: a regular file or nothing. A symlink (to
 * /dev/zero, say) or a FIFO planted in the spool is refused, never followed
 * or waited on. */
/* Open name under dirfd for reading if it is a regular file (never
 * following a link); its status in st. */
static int open_regular_stat(int dirfd, const char *name, struct stat *st)
{
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0 && (fstat(fd, st) < 0 || !S_ISREG(st->st_mode))) {
        close(fd);
        errno = EINVAL;
        return -1;
    }
    return fd;
}

static int open_regular_at(int dirfd, const char *name)
{
    struct stat st;
    return open_regular_stat(dirfd, name, &st);
}

/* Read name (up to max bytes, or its envelope: up to the first blank
 * line), and its status into st (when not NULL). A short read is the end of
 * a regular file: a queue of many small files costs one read each. */
static int read_file_at(int dirfd, const char *name, struct buf *b, size_t max, struct stat *st)
{
    struct stat own;
    int fd = open_regular_stat(dirfd, name, st ? st : &own);
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
        if ((size_t)r < room || b->len >= max || memmem(buf_head(b), b->len, "\n\n", 2))
            break;
    }
    close(fd);
    return 0;
}

int spool_load(const char *id, struct envelope *e, size_t *body_off, const char **err)
{
    struct buf b;
    buf_init(&b);
    struct stat st;
    if (read_file_at(queue_dirfd, id, &b, SPOOL_MAX_ENVELOPE, &st) < 0) {
        buf_free(&b);
        return *err = "cannot read", -1;
    }
    int rc = spool_envelope_decode(buf_head(&b), b.len, e, body_off, err);
    buf_free(&b);
    if (rc < 0)
        return -1;
    if ((uint64_t)st.st_size != *body_off + e->size) {
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
    if (read_file_at(queue_dirfd, name, &b, SPOOL_MAX_ENVELOPE, NULL) < 0) {
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

void spool_remove(const char *id, bool sidecar)
{
    if (sidecar) {
        char name[QID_LEN + 8];
        state_name(id, name, sizeof name);
        unlinkat(queue_dirfd, name, 0);
    }
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

int spool_open_message_stat(const char *id, struct stat *st)
{
    return open_regular_stat(queue_dirfd, id, st);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int spool_list(char ***out, size_t *count)
{
    *out = NULL;
    *count = 0;
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
        char **nn = array_grow(names, &cap, n + 1, sizeof *names, 256);
        if (!nn)
            break;
        names = nn;
        names[n++] = strdup(nm);
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof *names, cmp_str);
    *out = names;
    *count = n;
    return 0;
}

int spool_scan(void (*fn)(const char *id, void *ctx), void *ctx)
{
    char **names;
    size_t n;
    if (spool_list(&names, &n) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        fn(names[i], ctx);
        free(names[i]);
    }
    free(names);
    return 0;
}

void spool_subject(const char *id, char *out, size_t size)
{
    struct envelope e;
    size_t off;
    const char *why = "";
    char data[16384];
    out[0] = '\0';
    if (spool_load(id, &e, &off, &why) < 0)
        return;
    envelope_free(&e);
    int fd = spool_open_message(id);
    ssize_t n = fd >= 0 ? pread(fd, data, sizeof data - 1, (off_t)off) : -1;
    if (fd >= 0)
        close(fd);
    if (n <= 0)
        return;
    data[n] = '\0';
    char *end = strstr(data, "\r\n\r\n");
    if (end)
        end[2] = '\0';
    struct header_list h = {0};
    headers_parse(data, strlen(data), &h);
    long i = headers_find(&h, "Subject", 0);
    const char *v = i >= 0 ? h.h[i].value : "";
    v += strspn(v, " \t");
    size_t o = 0;
    for (; *v && o + 1 < size; v++)
        if (*v != '\r' && *v != '\n')
            out[o++] = (unsigned char)*v < 0x20 || *v == 0x7f ? '?' : *v;
    out[o] = '\0';
    headers_free(&h);
}
