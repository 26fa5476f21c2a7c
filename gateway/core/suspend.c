/* suspend.c - see suspend.h. A plain array under one lock: lookups are per
 * recipient at dispatch, and suspensions are few. The file is written
 * outside the lock (under a lock of its own), from a copy. */
#include "suspend.h"
#include "array_grow.h"
#include "json_out.h"
#include "log.h"
#include "utc_time.h"
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

struct suspension {
    enum suspend_kind kind;
    int rate;                  /* 0: suspended; else throttled to this many a minute */
    char name[256];
    int64_t until;
    char reason[256];
};

static struct suspension *all;
static size_t n, cap;
static _Atomic size_t live_count;       /* n, for the lookup's lock-free "none" (dispatch asks per recipient) */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t save_lock = PTHREAD_MUTEX_INITIALIZER;
static const char *const kind_names[] = {"destination", "source", "queue", "provider"};
static char saved_path[4096];           /* "" until suspend_load, and while loading */
static bool loading;

#define FILE_HEADER "#postern-suspensions 2"

/* The set as the file holds it: a header, then one "KIND UNTIL RATE NAME
 * REASON" line (tab-separated) each. Called under lock. */
static char *snapshot(void)
{
    struct buf b = {0};
    buf_printf(&b, "%s\n", FILE_HEADER);
    for (size_t i = 0; i < n; i++)
        buf_printf(&b, "%s\t%lld\t%d\t%s\t%s\n", kind_names[all[i].kind], (long long)all[i].until, all[i].rate,
                   all[i].name, all[i].reason);
    if (buf_append(&b, "", 1) < 0) {     /* the terminating NUL */
        buf_free(&b);
        return NULL;
    }
    return b.data;
}

/* Write text beside the last copy and rename it over it. A failure is
 * logged and the set stays in memory. */
static void write_file(const char *text)
{
    char tmp[sizeof saved_path + 8];
    snprintf(tmp, sizeof tmp, "%s.new", saved_path);
    FILE *f = fopen(tmp, "w");
    if (!f || fputs(text, f) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0 || fclose(f) != 0 ||
        rename(tmp, saved_path) != 0) {
        log_error("suspensions: cannot save %s: %s (they hold until a restart)", saved_path, strerror(errno));
        if (f)
            fclose(f);
        unlink(tmp);
    }
}

/* After a change (lock not held): the file follows. */
static void save(void)
{
    if (!saved_path[0] || loading)
        return;
    pthread_mutex_lock(&save_lock);
    pthread_mutex_lock(&lock);
    char *text = snapshot();
    pthread_mutex_unlock(&lock);
    if (text)
        write_file(text);
    else
        log_error("suspensions: out of memory saving %s (they hold until a restart)", saved_path);
    free(text);
    pthread_mutex_unlock(&save_lock);
}

/* One line of the file: version 2 has a rate, version 1 (before
 * throttles) has none. */
static void load_line(char *line, bool v2, int64_t now, size_t *kept)
{
    char *kind = strtok(line, "\t"), *until = strtok(NULL, "\t"), *rate = v2 ? strtok(NULL, "\t") : "0",
         *name = strtok(NULL, "\t"), *reason = strtok(NULL, "");
    enum suspend_kind k;
    long long u = until ? atoll(until) : 0;
    int r = rate ? atoi(rate) : -1;
    if (!kind || !name || suspend_kind_parse(kind, &k) < 0 || u <= now || r < 0 || r > THROTTLE_MAX_RATE)
        return;
    int rc = r ? throttle_set(k, name, r, (int64_t)u, reason ? reason : "")
               : suspend_set(k, name, (int64_t)u, reason ? reason : "");
    *kept += rc == 1;
}

void suspend_load(const char *spool_dir)
{
    snprintf(saved_path, sizeof saved_path, "%s/suspended", spool_dir);
    FILE *f = fopen(saved_path, "r");
    if (!f)
        return;
    char line[1024];
    int64_t now = (int64_t)time(NULL);
    size_t kept = 0;
    bool v2 = false;
    loading = true;               /* no writing back while loading */
    for (int first = 1; fgets(line, sizeof line, f); first = 0) {
        line[strcspn(line, "\r\n")] = '\0';
        if (first && !strcmp(line, FILE_HEADER))
            v2 = true;
        else
            load_line(line, v2, now, &kept);
    }
    loading = false;
    fclose(f);
    if (kept)
        log_info("suspensions: %zu still in force from before the restart (postern queue suspended)", kept);
}

int suspend_kind_parse(const char *word, enum suspend_kind *k)
{
    for (size_t i = 0; word && i < sizeof kind_names / sizeof kind_names[0]; i++)
        if (!strcmp(word, kind_names[i])) {
            *k = (enum suspend_kind)i;
            return 0;
        }
    return -1;
}

const char *suspend_kind_name(enum suspend_kind k) { return kind_names[k]; }

/* Under lock: name's suspension (throttled false) or throttle. */
static struct suspension *find(enum suspend_kind k, const char *name, bool throttled)
{
    for (size_t i = 0; i < n; i++)
        if (all[i].kind == k && (all[i].rate > 0) == throttled && !strcasecmp(all[i].name, name))
            return &all[i];
    return NULL;
}

/* Under lock: a new entry, or NULL when full. */
static struct suspension *add(enum suspend_kind k, const char *name, int rate, int64_t until, const char *reason)
{
    if (n == SUSPEND_MAX)
        return NULL;
    struct suspension *a = array_grow(all, &cap, n + 1, sizeof *all, 16);
    if (!a)
        return NULL;
    all = a;
    struct suspension *s = &all[n++];
    live_count = n;
    s->kind = k;
    s->rate = rate;
    snprintf(s->name, sizeof s->name, "%s", name);
    s->until = until;
    snprintf(s->reason, sizeof s->reason, "%s", reason);
    return s;
}

/* Set a suspension (rate 0) or a throttle: see suspend_set, throttle_set. */
static int set(enum suspend_kind k, const char *name, int rate, int64_t until, const char *reason)
{
    pthread_mutex_lock(&lock);
    struct suspension *s = find(k, name, rate > 0);
    int rc = 0;
    bool changed = false;
    if (s && (until > s->until || (rate && rate < s->rate))) {
        s->until = until > s->until ? until : s->until;
        s->rate = rate && rate < s->rate ? rate : s->rate;
        snprintf(s->reason, sizeof s->reason, "%s", reason);
        changed = true;
    } else if (!s) {
        rc = add(k, name, rate, until, reason) ? 1 : -1;
        changed = rc == 1;
    }
    pthread_mutex_unlock(&lock);
    if (changed)
        save();
    return rc;
}

int suspend_set(enum suspend_kind k, const char *name, int64_t until, const char *reason)
{
    return set(k, name, 0, until, reason);
}

int throttle_set(enum suspend_kind k, const char *name, int per_min, int64_t until, const char *reason)
{
    if (per_min < 1 || per_min > THROTTLE_MAX_RATE)
        return -1;
    return set(k, name, per_min, until, reason);
}

/* Under lock. */
static void drop(struct suspension *s)
{
    *s = all[--n];
    live_count = n;
}

bool suspend_clear(enum suspend_kind k, const char *name)
{
    pthread_mutex_lock(&lock);
    bool had = false;
    for (struct suspension *s; (s = find(k, name, false)) || (s = find(k, name, true));) {
        drop(s);
        had = true;
    }
    pthread_mutex_unlock(&lock);
    if (had)
        save();
    return had;
}

/* Name's live entry of one sort: its end (and rate), else 0 (an ended one
 * is forgotten and logged). */
static int64_t live(enum suspend_kind k, const char *name, bool throttled, int64_t now, int *rate)
{
    if (!live_count)
        return 0;
    pthread_mutex_lock(&lock);
    struct suspension *s = find(k, name, throttled);
    int64_t until = s ? s->until : 0;
    bool ended = s && until <= now;
    if (s && !ended && rate)
        *rate = s->rate;
    if (ended) {
        log_info("%s %s: %s over (%s)", kind_names[k], s->name, throttled ? "throttle" : "suspension", s->reason);
        drop(s);
    }
    pthread_mutex_unlock(&lock);
    if (ended)
        save();
    return ended ? 0 : until;
}

int64_t suspend_until(enum suspend_kind k, const char *name, int64_t now) { return live(k, name, false, now, NULL); }

int throttle_rate(enum suspend_kind k, const char *name, int64_t now)
{
    int rate = 0;
    return live(k, name, true, now, &rate) ? rate : 0;
}

void suspend_list(struct buf *out, int64_t now, bool json)
{
    pthread_mutex_lock(&lock);
    buf_puts(out, json ? "[" : "");
    size_t listed = 0;
    for (size_t i = 0; i < n; i++) {
        const struct suspension *s = &all[i];
        if (s->until <= now)
            continue;
        char when[40] = "resumed";
        if (s->until != SUSPEND_FOREVER)
            utc_time_format((time_t)s->until, when, sizeof when);
        if (json) {
            buf_printf(out, "%s{\"kind\":\"%s\",\"name\":", listed++ ? "," : "", kind_names[s->kind]);
            json_out_string(out, s->name);
            buf_printf(out, ",\"rate\":%d,\"until\":", s->rate);
            if (s->until == SUSPEND_FOREVER)
                buf_puts(out, "null");
            else
                buf_printf(out, "\"%s\"", when);
            buf_puts(out, ",\"reason\":");
            json_out_string(out, s->reason);
            buf_puts(out, "}");
        } else if (s->rate) {
            buf_printf(out, "%s %s throttled to %d/min until %s: %s\n", kind_names[s->kind], s->name, s->rate, when,
                       s->reason);
        } else {
            buf_printf(out, "%s %s until %s: %s\n", kind_names[s->kind], s->name, when, s->reason);
        }
    }
    buf_puts(out, json ? "]\n" : "");
    pthread_mutex_unlock(&lock);
}

size_t suspend_count(void) { return live_count; }
