/* backoff_rules.c - see backoff_rules.h. */
#include "backoff_rules.h"
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_MAX_SECONDS (7 * 86400)

int backoff_add_line(struct backoff_rules *b, const char *action, char *rest, char *err, size_t errlen)
{
    struct backoff_rule r = {0};
    if (!strcmp(action, "suspend"))
        r.action = BACKOFF_SUSPEND;
    else if (!strcmp(action, "suspend-source"))
        r.action = BACKOFF_SUSPEND_SOURCE;
    else {
        snprintf(err, errlen, "'%s': expected suspend or suspend-source", action);
        return -1;
    }
    char *re = rest + strcspn(rest, " \t");
    if (*re)
        *re++ = '\0';
    re += strspn(re, " \t");
    r.seconds = parse_duration(rest);
    if (r.seconds < 1 || r.seconds > BACKOFF_MAX_SECONDS || !*re) {
        snprintf(err, errlen, "expected: %s DURATION (1s to 7d) REGEX", action);
        return -1;
    }
    int rc = regcomp(&r.re, re, REG_EXTENDED | REG_ICASE | REG_NOSUB);
    if (rc != 0) {
        char why[200];
        regerror(rc, &r.re, why, sizeof why);
        snprintf(err, errlen, "bad expression '%s': %s", re, why);
        return -1;
    }
    struct backoff_rule *v = realloc(b->v, (b->n + 1) * sizeof *v);
    if (!v || !(r.text = strdup(re))) {
        if (v)
            b->v = v;
        regfree(&r.re);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    b->v = v;
    b->v[b->n++] = r;
    return 0;
}

const struct backoff_rule *backoff_match(const struct backoff_rules *b, const char *reply)
{
    if (reply[0] != '4' && reply[0] != '5')
        return NULL;
    for (size_t i = 0; i < b->n; i++)
        if (regexec(&b->v[i].re, reply, 0, NULL, 0) == 0)
            return &b->v[i];
    return NULL;
}

void backoff_free(struct backoff_rules *b)
{
    for (size_t i = 0; i < b->n; i++) {
        regfree(&b->v[i].re);
        free(b->v[i].text);
    }
    free(b->v);
    b->v = NULL;
    b->n = 0;
}
