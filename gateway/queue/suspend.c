/* suspend.c - see suspend.h. A plain array: lookups are per recipient at
 * dispatch, and suspensions are few. */
#include "suspend.h"
#include "log.h"
#include "utc_time.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

struct suspension {
    enum suspend_kind kind;
    char name[256];
    int64_t until;
    char reason[256];
};

static struct suspension *all;
static size_t n, cap;
static const char *const kind_names[] = {"destination", "source", "queue"};
static char saved_path[4096];           /* "" until suspend_load */

/* The whole set, one "KIND UNTIL NAME REASON" line (tab-separated) each,
 * written beside and renamed over the last copy. A failure is logged and
 * the set stays in memory. */
static void save(void)
{
    if (!saved_path[0])
        return;
    char tmp[sizeof saved_path + 8];
    snprintf(tmp, sizeof tmp, "%s.new", saved_path);
    FILE *f = fopen(tmp, "w");
    for (size_t i = 0; f && i < n; i++)
        fprintf(f, "%s\t%lld\t%s\t%s\n", kind_names[all[i].kind], (long long)all[i].until, all[i].name,
                all[i].reason);
    if (!f || fflush(f) != 0 || fsync(fileno(f)) != 0 || fclose(f) != 0 || rename(tmp, saved_path) != 0) {
        log_error("suspensions: cannot save %s: %s (they hold until a restart)", saved_path, strerror(errno));
        if (f)
            fclose(f);
        unlink(tmp);
    }
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
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *kind = strtok(line, "\t"), *until = strtok(NULL, "\t"), *name = strtok(NULL, "\t"),
             *reason = strtok(NULL, "");
        enum suspend_kind k;
        long long u = until ? atoll(until) : 0;
        if (!name || suspend_kind_parse(kind, &k) < 0 || u <= now)
            continue;
        char *saved = saved_path;       /* no writing back while loading */
        saved_path[0] = '\0';
        if (suspend_set(k, name, (int64_t)u, reason ? reason : "") == 1)
            kept++;
        snprintf(saved, sizeof saved_path, "%s/suspended", spool_dir);
    }
    fclose(f);
    if (kept)
        log_info("suspensions: %zu still in force from before the restart (postern queue suspended)", kept);
}

int suspend_kind_parse(const char *word, enum suspend_kind *k)
{
    for (size_t i = 0; i < sizeof kind_names / sizeof kind_names[0]; i++)
        if (!strcmp(word, kind_names[i])) {
            *k = (enum suspend_kind)i;
            return 0;
        }
    return -1;
}

const char *suspend_kind_name(enum suspend_kind k) { return kind_names[k]; }

static struct suspension *find(enum suspend_kind k, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (all[i].kind == k && !strcasecmp(all[i].name, name))
            return &all[i];
    return NULL;
}

int suspend_set(enum suspend_kind k, const char *name, int64_t until, const char *reason)
{
    struct suspension *s = find(k, name);
    if (s) {
        if (until > s->until) {
            s->until = until;
            snprintf(s->reason, sizeof s->reason, "%s", reason);
            save();
        }
        return 0;
    }
    if (n == SUSPEND_MAX)
        return -1;
    if (n == cap) {
        size_t c = cap ? cap * 2 : 16;
        struct suspension *a = realloc(all, c * sizeof *a);
        if (!a)
            return -1;
        all = a;
        cap = c;
    }
    s = &all[n++];
    s->kind = k;
    snprintf(s->name, sizeof s->name, "%s", name);
    s->until = until;
    snprintf(s->reason, sizeof s->reason, "%s", reason);
    save();
    return 1;
}

static void drop(struct suspension *s)
{
    *s = all[--n];
    save();
}

bool suspend_clear(enum suspend_kind k, const char *name)
{
    struct suspension *s = find(k, name);
    if (s)
        drop(s);
    return s != NULL;
}

int64_t suspend_until(enum suspend_kind k, const char *name, int64_t now)
{
    struct suspension *s = n ? find(k, name) : NULL;
    if (!s)
        return 0;
    if (s->until > now)
        return s->until;
    log_info("%s %s: suspension over (%s)", kind_names[k], s->name, s->reason);
    drop(s);
    return 0;
}

void suspend_list(struct buf *out, int64_t now)
{
    for (size_t i = 0; i < n; i++) {
        const struct suspension *s = &all[i];
        if (s->until <= now)
            continue;
        char when[40] = "resumed";
        if (s->until != SUSPEND_FOREVER)
            utc_time_format((time_t)s->until, when, sizeof when);
        buf_printf(out, "%s %s until %s: %s\n", kind_names[s->kind], s->name, when, s->reason);
    }
}

size_t suspend_count(void) { return n; }
