/* outbox.c - see outbox.h. Segments are SPOOL/outbox/NNNNNNNNNN.jsonl,
 * numbered from 1, each up to seg_max bytes of whole lines; the writer
 * appends to the last one only, and what it has fsync'd ("durable") is all
 * a reader may read. A torn last line (a crash inside a write) is cut off
 * at start. */
#include "outbox.h"
#include "array_grow.h"
#include "event_record.h"
#include "inbox.h"
#include "log.h"
#include "metrics.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SEG_MAX_BYTES (8u << 20)
#define HOUSEKEEP_MS 1000

struct oev {
    struct oev *next;
    uint64_t seq;             /* its place in the outbox's order */
    size_t len;
    char line[];
};

struct reader {
    char name[EVENT_SINK_NAME_MAX];
    struct outbox_pos acked;
    int fd;                   /* the segment it reads (its own thread's) */
    uint64_t fd_seg;
};

/* After the writer has written everything up to seq: fn(arg), on the loop. */
struct waiter {
    uint64_t seq;
    void (*fn)(void *arg);
    void *arg;
    struct waiter *next;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;             /* the writer: events wait */
    pthread_cond_t grown;            /* readers: more is durable */
    struct oev *head, **tail;
    size_t pending;
    uint64_t seq_enqueued, seq_durable;
    bool on, stopping;
    pthread_t thread;
    char dir[4096], node[256];
    int64_t start_ms, last_ms;
    size_t max_size;
    long max_age;
    uint64_t seg_max;
    int slow_ms;                     /* POSTERN_TEST_OUTBOX_DELAY_MS: a slow disk, for tests */
    int fd;                          /* the segment written now (the writer's) */
    uint64_t seg, size;
    struct outbox_pos durable;
    uint64_t first_seg;              /* the oldest on disk */
    struct reader readers[EVENT_SINKS_MAX];
    int nreaders;
    struct inbox inbox;              /* the writer wakes the loop for the waiters */
    struct inbox_item kick;
    bool kick_posted;
    struct waiter *waiters, **waiters_tail;     /* the loop's */
} ob = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER, .grown = PTHREAD_COND_INITIALIZER};

static _Atomic uint64_t id_seq;

bool outbox_on(void) { return ob.on; }
int64_t outbox_last_ms(void) { return ob.last_ms; }
bool outbox_stopping(void)
{
    pthread_mutex_lock(&ob.lock);
    bool s = ob.stopping;
    pthread_mutex_unlock(&ob.lock);
    return s;
}

static void seg_path(uint64_t seg, char *out, size_t size)
{
    snprintf(out, size, "%s/%010llu.jsonl", ob.dir, (unsigned long long)seg);
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void dropped(const char *reason, uint64_t n)
{
    char labels[64];
    metric_add(M_EVENTS_DROPPED, metric_labels(labels, sizeof labels, "reason", reason, NULL), n);
}

/* ---- emitting (any thread) ------------------------------------------ */

void outbox_add(const struct track_event *e, int64_t ms)
{
    if (!ob.on)
        return;
    struct buf b;
    buf_init(&b);
    if (event_record_format(&b, e, ms, ob.node, ob.start_ms, atomic_fetch_add(&id_seq, 1) + 1) < 0) {
        buf_free(&b);
        dropped("memory", 1);
        return;
    }
    struct oev *ev = malloc(sizeof *ev + b.len);
    if (!ev) {
        buf_free(&b);
        dropped("memory", 1);
        return;
    }
    ev->next = NULL;
    ev->len = b.len;
    memcpy(ev->line, buf_head(&b), b.len);
    buf_free(&b);
    pthread_mutex_lock(&ob.lock);
    bool full = ob.pending >= OUTBOX_MAX_PENDING || ob.stopping;
    if (!full) {
        ev->seq = ++ob.seq_enqueued;
        *ob.tail = ev;
        ob.tail = &ev->next;
        if (++ob.pending == 1 || ob.pending == OUTBOX_GROUP_MAX)
            pthread_cond_signal(&ob.wake);      /* the first of a group, or a full one */
    }
    pthread_mutex_unlock(&ob.lock);
    if (full) {
        free(ev);
        dropped("behind", 1);
    }
}

static void tap(const struct track_event *e, int64_t ms) { outbox_add(e, ms); }

/* ---- waiting for durability (loop thread) --------------------------- */

static void run_waiters(uint64_t upto)
{
    while (ob.waiters && ob.waiters->seq <= upto) {
        struct waiter *w = ob.waiters;
        ob.waiters = w->next;
        if (!ob.waiters)
            ob.waiters_tail = &ob.waiters;
        w->fn(w->arg);
        free(w);
    }
}

static void on_kick(struct inbox_item *it)
{
    (void)it;
    pthread_mutex_lock(&ob.lock);
    ob.kick_posted = false;
    uint64_t upto = ob.seq_durable;
    pthread_mutex_unlock(&ob.lock);
    run_waiters(upto);
}

void outbox_after_durable(void (*fn)(void *arg), void *arg)
{
    struct waiter *w = ob.on ? malloc(sizeof *w) : NULL;
    if (!w) {
        fn(arg);
        return;
    }
    pthread_mutex_lock(&ob.lock);
    w->seq = ob.seq_enqueued;
    bool now = w->seq <= ob.seq_durable;
    pthread_mutex_unlock(&ob.lock);
    if (now) {
        free(w);
        fn(arg);
        return;
    }
    w->fn = fn;
    w->arg = arg;
    w->next = NULL;
    *ob.waiters_tail = w;
    ob.waiters_tail = &w->next;
}

/* ---- segments (the writer's) ---------------------------------------- */

static void sync_dir(void)
{
    int d = open(ob.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d >= 0) {
        fsync(d);
        close(d);
    }
}

static int open_segment(uint64_t seg)
{
    char path[4200];
    seg_path(seg, path, sizeof path);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        log_error("events: cannot open %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    ob.fd = fd;
    ob.seg = seg;
    ob.size = (uint64_t)st.st_size;
    sync_dir();
    return 0;
}

/* The current segment is full: the next one (the same again when it
 * cannot be made). */
static void next_segment(void)
{
    int old = ob.fd;
    uint64_t seg = ob.seg, size = ob.size;
    if (open_segment(seg + 1) == 0) {
        close(old);
        return;
    }
    ob.fd = old;
    ob.seg = seg;
    ob.size = size;
}

/* Append the batch and make it durable: 0, or -1 (logged). */
static int write_batch(struct oev *list)
{
    struct buf b;
    buf_init(&b);
    for (struct oev *e = list; e; e = e->next)
        if (buf_append(&b, e->line, e->len) < 0) {
            buf_free(&b);
            return -1;
        }
    const char *p = buf_head(&b);
    size_t left = b.len;
    while (left > 0) {
        ssize_t w = write(ob.fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            log_error("events: writing the outbox: %s (this batch is dropped)", strerror(errno));
            if (ftruncate(ob.fd, (off_t)ob.size) < 0)      /* no torn line for the readers */
                log_error("events: cannot cut the outbox back: %s", strerror(errno));
            buf_free(&b);
            return -1;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fdatasync(ob.fd) != 0)
        log_error("events: fdatasync of the outbox: %s", strerror(errno));
    ob.size += b.len;
    buf_free(&b);
    if (ob.size >= ob.seg_max)
        next_segment();
    return 0;
}

/* Lines (events) in seg after off. */
static uint64_t count_lines(uint64_t seg, uint64_t off)
{
    char path[4200], buf[65536];
    seg_path(seg, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    uint64_t n = 0;
    ssize_t r;
    while (fd >= 0 && (r = pread(fd, buf, sizeof buf, (off_t)off)) > 0) {
        for (ssize_t i = 0; i < r; i++)
            n += buf[i] == '\n';
        off += (uint64_t)r;
    }
    if (fd >= 0)
        close(fd);
    return n;
}

/* The oldest segment goes: every reader still before its end loses what it
 * had not sent (why: "outbox_full" or "too_old"). Under lock. */
static void drop_oldest(const char *why)
{
    uint64_t seg = ob.first_seg, lost_total = 0;
    for (int i = 0; i < ob.nreaders; i++) {
        struct reader *r = &ob.readers[i];
        if (r->acked.seg > seg)
            continue;
        uint64_t lost = count_lines(seg, r->acked.seg == seg ? r->acked.off : 0);
        if (lost)
            log_error("events: the outbox is %s: %llu event(s) for sink %s dropped unsent", 
                      !strcmp(why, "outbox_full") ? "over events_outbox_max_size" : "past events_outbox_max_age",
                      (unsigned long long)lost, r->name);
        lost_total += lost;
        r->acked = (struct outbox_pos){seg + 1, 0};
    }
    if (lost_total)
        dropped(why, lost_total);
    char path[4200];
    seg_path(seg, path, sizeof path);
    unlink(path);
    ob.first_seg = seg + 1;
}

/* Remove what every reader has sent; enforce the size and age bounds. */
static void housekeep(void)
{
    pthread_mutex_lock(&ob.lock);
    uint64_t min_seg = ob.nreaders ? ob.seg : ob.first_seg;     /* no sink counted yet: nothing is sent */
    for (int i = 0; i < ob.nreaders; i++)
        if (ob.readers[i].acked.seg < min_seg)
            min_seg = ob.readers[i].acked.seg;
    while (ob.first_seg < min_seg) {
        char path[4200];
        seg_path(ob.first_seg++, path, sizeof path);
        unlink(path);
    }
    for (;;) {
        uint64_t total = 0;
        time_t oldest = 0;
        for (uint64_t s = ob.first_seg; s <= ob.seg; s++) {
            char path[4200];
            struct stat st;
            seg_path(s, path, sizeof path);
            if (stat(path, &st) == 0) {
                total += (uint64_t)st.st_size;
                if (!oldest)
                    oldest = st.st_mtime;
            }
        }
        metric_set(M_EVENTS_OUTBOX_BYTES, NULL, (int64_t)total);
        bool too_big = total > ob.max_size, too_old = oldest && oldest < time(NULL) - ob.max_age;
        if (ob.first_seg >= ob.seg || !(too_big || too_old))
            break;
        drop_oldest(too_big ? "outbox_full" : "too_old");
    }
    pthread_mutex_unlock(&ob.lock);
}

/* Under lock, with events waiting: let a group form, up to
 * OUTBOX_GROUP_MS or OUTBOX_GROUP_MAX events (one write and one fsync for
 * all of them; nothing waits on them but spool files' removal). */
static void gather_group(void)
{
    if (!ob.head)
        return;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += OUTBOX_GROUP_MS * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    while (!ob.stopping && ob.pending < OUTBOX_GROUP_MAX &&
           pthread_cond_timedwait(&ob.wake, &ob.lock, &until) != ETIMEDOUT)
        ;
}

static void *writer(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "pd-outbox");      /* for top -H and perf */
    int64_t last_housekeep = 0;
    pthread_mutex_lock(&ob.lock);
    for (;;) {
        if (!ob.head && !ob.stopping) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += 1;
            pthread_cond_timedwait(&ob.wake, &ob.lock, &until);
        }
        gather_group();
        struct oev *list = ob.head;
        uint64_t upto = ob.seq_enqueued;
        ob.head = NULL;
        ob.tail = &ob.head;
        size_t n = ob.pending;
        ob.pending = 0;
        bool stop = ob.stopping;
        pthread_mutex_unlock(&ob.lock);
        if (list && ob.slow_ms)
            usleep((useconds_t)ob.slow_ms * 1000);
        bool ok = !list || write_batch(list) == 0;
        if (list && !ok)
            dropped("write_error", n);
        if (list && ok)
            metric_add(M_EVENTS_WRITTEN, NULL, n);
        while (list) {
            struct oev *next = list->next;
            free(list);
            list = next;
        }
        pthread_mutex_lock(&ob.lock);
        ob.durable = (struct outbox_pos){ob.seg, ob.size};
        ob.seq_durable = upto;          /* written, or dropped: nobody waits for lost events */
        pthread_cond_broadcast(&ob.grown);
        bool post = ob.inbox.w.fd > 0 && !ob.kick_posted && n;
        ob.kick_posted |= post;
        pthread_mutex_unlock(&ob.lock);
        if (post)
            inbox_post(&ob.inbox, &ob.kick);
        if (wall_ms() - last_housekeep >= HOUSEKEEP_MS || ob.size >= ob.seg_max) {
            last_housekeep = wall_ms();
            housekeep();
        }
        pthread_mutex_lock(&ob.lock);
        if (stop && !ob.head)
            break;
    }
    pthread_mutex_unlock(&ob.lock);
    return NULL;
}

/* ---- start ---------------------------------------------------------- */

static int by_number(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The segments on disk, in order (*n of them; NULL when none). */
static uint64_t *list_segments(size_t *n)
{
    *n = 0;
    DIR *d = opendir(ob.dir);
    uint64_t *v = NULL;
    size_t cap = 0;
    for (struct dirent *de; d && (de = readdir(d));) {
        char *end;
        unsigned long long s = strtoull(de->d_name, &end, 10);
        if (s == 0 || strcmp(end, ".jsonl"))
            continue;
        uint64_t *nv = array_grow(v, &cap, *n + 1, sizeof *v, 16);
        if (!nv)
            break;
        v = nv;
        v[(*n)++] = s;
    }
    if (d)
        closedir(d);
    if (*n)
        qsort(v, *n, sizeof *v, by_number);
    return v;
}

/* Segment seg: a torn last line cut off; the newest event's time read
 * (ob.last_ms stays 0 when it has none). */
static void recover_tail(uint64_t seg)
{
    char path[4200];
    seg_path(seg, path, sizeof path);
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || st.st_size == 0) {
        if (fd >= 0)
            close(fd);
        return;
    }
    size_t tail = st.st_size < 65536 ? (size_t)st.st_size : 65536;
    char *buf = malloc(tail + 1);
    ssize_t r = buf ? pread(fd, buf, tail, st.st_size - (off_t)tail) : -1;
    if (r == (ssize_t)tail) {
        size_t end = tail;
        while (end > 0 && buf[end - 1] != '\n')
            end--;
        if (end < tail) {
            log_warn("events: %s: a torn last line (%zu bytes) cut off", path, tail - end);
            if (ftruncate(fd, st.st_size - (off_t)(tail - end)) < 0)
                log_error("events: cannot cut %s: %s", path, strerror(errno));
        }
        size_t start = end ? end - 1 : 0;
        while (start > 0 && buf[start - 1] != '\n')
            start--;
        if (end > start)
            ob.last_ms = event_record_ms(buf + start, end - start);
    }
    free(buf);
    close(fd);
}

int outbox_start(const struct config *cfg, char *err, size_t errlen)
{
    if (!cfg->event_sinks.n || ob.on)
        return 0;
    snprintf(ob.dir, sizeof ob.dir, "%s/outbox", cfg->spool_dir);
    if (mkdir(ob.dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "events: cannot make %s: %s", ob.dir, strerror(errno));
        return -1;
    }
    struct stat st;
    if (lstat(ob.dir, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid()) {
        snprintf(err, errlen, "events: %s is not a directory of posternd's user", ob.dir);
        return -1;
    }
    snprintf(ob.node, sizeof ob.node, "%s", cfg->hostname);
    const char *slow = getenv("POSTERN_TEST_OUTBOX_DELAY_MS");     /* fault injection: a slow disk */
    ob.slow_ms = slow ? atoi(slow) : 0;
    if (ob.slow_ms)
        log_warn("events: the outbox's writer waits %d ms before each write (POSTERN_TEST_OUTBOX_DELAY_MS)",
                 ob.slow_ms);
    ob.start_ms = wall_ms();
    ob.max_size = cfg->events_outbox_max_size;
    ob.max_age = cfg->events_outbox_max_age;
    ob.seg_max = ob.max_size / 4 < SEG_MAX_BYTES ? ob.max_size / 4 : SEG_MAX_BYTES;
    size_t n;
    uint64_t *segs = list_segments(&n);
    ob.first_seg = n ? segs[0] : 1;
    ob.seg = n ? segs[n - 1] : 1;
    for (size_t i = n; i > 0 && !ob.last_ms; i--)      /* the newest may be a fresh, empty one */
        recover_tail(segs[i - 1]);
    free(segs);
    if (open_segment(ob.seg) < 0) {
        snprintf(err, errlen, "events: cannot open the outbox in %s", ob.dir);
        return -1;
    }
    ob.durable = (struct outbox_pos){ob.seg, ob.size};
    ob.head = NULL;
    ob.tail = &ob.head;
    ob.waiters = NULL;
    ob.waiters_tail = &ob.waiters;
    ob.kick.run = on_kick;
    if (inbox_open(&ob.inbox) < 0) {
        snprintf(err, errlen, "events: %s", strerror(errno));
        return -1;
    }
    ob.on = true;
    if (pthread_create(&ob.thread, NULL, writer, NULL) != 0) {
        ob.on = false;
        snprintf(err, errlen, "events: cannot start the outbox's writer");
        return -1;
    }
    track_set_tap(tap);
    log_info("events: outbox %s (segments %llu-%llu), %zu sink(s)", ob.dir, (unsigned long long)ob.first_seg,
             (unsigned long long)ob.seg, cfg->event_sinks.n);
    return 0;
}

void outbox_stop(void)
{
    if (!ob.on)
        return;
    track_set_tap(NULL);
    pthread_mutex_lock(&ob.lock);
    ob.stopping = true;
    pthread_cond_broadcast(&ob.wake);
    pthread_cond_broadcast(&ob.grown);
    pthread_mutex_unlock(&ob.lock);
    pthread_join(ob.thread, NULL);
    run_waiters(UINT64_MAX);      /* everything is written (or was dropped) */
    inbox_close(&ob.inbox);
    close(ob.fd);
    ob.on = false;
}

/* ---- readers (the sinks' threads) ----------------------------------- */

static void cursor_path(const char *name, char *out, size_t size)
{
    snprintf(out, size, "%s/cursor.%s", ob.dir, name);
}

int outbox_reader(const char *name, struct outbox_pos *start)
{
    pthread_mutex_lock(&ob.lock);
    int i = ob.nreaders < EVENT_SINKS_MAX ? ob.nreaders++ : -1;
    if (i >= 0) {
        struct reader *r = &ob.readers[i];
        snprintf(r->name, sizeof r->name, "%s", name);
        r->fd = -1;
        r->acked = (struct outbox_pos){ob.first_seg, 0};
        char path[4200];
        cursor_path(name, path, sizeof path);
        FILE *f = fopen(path, "r");
        unsigned long long seg, off;
        if (f && fscanf(f, "%llu %llu", &seg, &off) == 2 && seg >= ob.first_seg)
            r->acked = (struct outbox_pos){seg, off};
        if (f)
            fclose(f);
        *start = r->acked;
    }
    pthread_mutex_unlock(&ob.lock);
    return i;
}

void outbox_ack(int reader, const struct outbox_pos *p)
{
    pthread_mutex_lock(&ob.lock);
    struct reader *r = &ob.readers[reader];
    if (p->seg > r->acked.seg || (p->seg == r->acked.seg && p->off > r->acked.off))
        r->acked = *p;
    struct outbox_pos at = r->acked;
    pthread_mutex_unlock(&ob.lock);
    char path[4200], tmp[4300];
    cursor_path(r->name, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.new", path);
    FILE *f = fopen(tmp, "w");
    if (f && fprintf(f, "%llu %llu\n", (unsigned long long)at.seg, (unsigned long long)at.off) > 0 &&
        fclose(f) == 0) {
        if (rename(tmp, path) != 0)
            log_error("events: cannot save %s: %s", path, strerror(errno));
    } else {
        if (f)
            fclose(f);
        log_error("events: cannot save %s: %s", path, strerror(errno));
    }
}

static bool same_pos(struct outbox_pos a, struct outbox_pos b) { return a.seg == b.seg && a.off == b.off; }

size_t outbox_read(int reader, const struct outbox_pos *p, char *buf, size_t max_bytes, struct outbox_pos *next,
                   int wait_ms)
{
    struct reader *r = &ob.readers[reader];
    pthread_mutex_lock(&ob.lock);
    struct outbox_pos pos = *p;
    if (pos.seg < ob.first_seg || pos.seg < r->acked.seg)      /* dropped under it */
        pos = r->acked.seg > ob.first_seg ? r->acked : (struct outbox_pos){ob.first_seg, 0};
    if (same_pos(pos, ob.durable) && !ob.stopping && wait_ms > 0) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += (long)wait_ms * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&ob.grown, &ob.lock, &until);
    }
    struct outbox_pos dur = ob.durable;
    pthread_mutex_unlock(&ob.lock);
    *next = pos;
    for (int tries = 0; tries < 64 && !same_pos(pos, dur); tries++) {
        if (r->fd < 0 || r->fd_seg != pos.seg) {
            if (r->fd >= 0)
                close(r->fd);
            char path[4200];
            seg_path(pos.seg, path, sizeof path);
            r->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
            r->fd_seg = pos.seg;
            if (r->fd < 0) {              /* gone (dropped): the next one */
                pos = (struct outbox_pos){pos.seg + 1, 0};
                *next = pos;
                continue;
            }
        }
        struct stat st;
        uint64_t limit = pos.seg == dur.seg ? dur.off : fstat(r->fd, &st) == 0 ? (uint64_t)st.st_size : 0;
        if (pos.off >= limit) {
            if (pos.seg >= dur.seg)
                break;
            pos = (struct outbox_pos){pos.seg + 1, 0};
            *next = pos;
            continue;
        }
        size_t want = limit - pos.off < max_bytes ? (size_t)(limit - pos.off) : max_bytes;
        ssize_t got = pread(r->fd, buf, want, (off_t)pos.off);
        if (got <= 0)
            break;
        size_t len = (size_t)got;
        while (len > 0 && buf[len - 1] != '\n')
            len--;
        if (len == 0)
            break;                         /* a line longer than max_bytes: never written */
        buf[len] = '\0';
        *next = (struct outbox_pos){pos.seg, pos.off + len};
        return len;
    }
    return 0;
}
