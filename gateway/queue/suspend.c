/* suspend.c - see suspend.h. A plain array: lookups are per recipient at
 * dispatch, and suspensions are few. */
#include "suspend.h"
#include "log.h"
#include "utc_time.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct suspension {
    enum suspend_kind kind;
    char name[256];
    int64_t until;
    char reason[256];
};

static struct suspension *all;
static size_t n, cap;
static const char *const kind_names[] = {"destination", "source", "queue"};

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
    return 1;
}

static void drop(struct suspension *s) { *s = all[--n]; }

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
