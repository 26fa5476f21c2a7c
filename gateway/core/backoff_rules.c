/* backoff_rules.c - see backoff_rules.h. */
#include "backoff_rules.h"
#include "config.h"
#include "domain_rules.h"
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define BACKOFF_MAX_SECONDS (7 * 86400)

/* Each action's name and the words it takes before the expression. */
static const struct {
    const char *name;
    bool rate, duration, nexthop;
} actions[] = {
    [BACKOFF_SUSPEND] = {"suspend", false, true, false},
    [BACKOFF_SUSPEND_SOURCE] = {"suspend-source", false, true, false},
    [BACKOFF_SUSPEND_PROVIDER] = {"suspend-provider", false, true, false},
    [BACKOFF_THROTTLE] = {"throttle", true, true, false},
    [BACKOFF_THROTTLE_PROVIDER] = {"throttle-provider", true, true, false},
    [BACKOFF_BOUNCE] = {"bounce", false, false, false},
    [BACKOFF_REROUTE] = {"reroute", false, false, true},
};
#define NACTIONS (sizeof actions / sizeof actions[0])

const char *backoff_action_name(enum backoff_action a) { return actions[a].name; }

/* The next blank-separated word of *p (cut off), or NULL at the end. */
static char *next_word(char **p)
{
    char *w = *p + strspn(*p, " \t");
    if (!*w)
        return NULL;
    char *end = w + strcspn(w, " \t");
    if (*end)
        *end++ = '\0';
    *p = end;
    return w;
}

/* A rate: "N" or "N/min", 1 to 60000; -1 if not. */
static int parse_rate(const char *w)
{
    char *end;
    long v = strtol(w, &end, 10);
    if (end == w || (*end && strcmp(end, "/min")) || v < 1 || v > 60000)
        return -1;
    return (int)v;
}

/* The words before the expression into r: 0, or -1 with err. */
static int parse_args(struct backoff_rule *r, char **p, char *err, size_t errlen)
{
    const char *name = actions[r->action].name;
    char *w;
    if (actions[r->action].nexthop) {
        struct nexthop hop;
        char why[200];
        if (!(w = next_word(p)) || nexthop_parse(w, &hop, why, sizeof why) < 0 || hop.mx) {
            snprintf(err, errlen, "expected: reroute NEXTHOP (a transport such as smtp:[host]:port) REGEX");
            return -1;
        }
        r->nexthop = strdup(w);
    }
    if (actions[r->action].rate && (!(w = next_word(p)) || (r->rate = parse_rate(w)) < 0)) {
        snprintf(err, errlen, "expected: %s RATE (1 to 60000 a minute) DURATION REGEX", name);
        return -1;
    }
    if (actions[r->action].duration) {
        w = next_word(p);
        r->seconds = w ? parse_duration(w) : -1;
        if (r->seconds < 1 || r->seconds > BACKOFF_MAX_SECONDS) {
            snprintf(err, errlen, "expected: %s %sDURATION (1s to 7d) REGEX", name, actions[r->action].rate ? "RATE " : "");
            return -1;
        }
    }
    char *q = *p + strspn(*p, " \t");
    if (!strncmp(q, "provider=", 9)) {
        *p = q;
        w = next_word(p);
        if (!table_name_ok(w + 9, sizeof r->provider)) {
            snprintf(err, errlen, "%s: '%s' is not a provider name", name, w + 9);
            return -1;
        }
        snprintf(r->provider, sizeof r->provider, "%s", w + 9);
    }
    *p += strspn(*p, " \t");
    if (!**p) {
        snprintf(err, errlen, "%s: no expression", name);
        return -1;
    }
    return 0;
}

int backoff_add_line(struct backoff_rules *b, const char *action, char *rest, char *err, size_t errlen)
{
    struct backoff_rule r = {0};
    size_t a = 0;
    while (a < NACTIONS && strcmp(action, actions[a].name))
        a++;
    if (a == NACTIONS) {
        snprintf(err, errlen, "'%s': expected suspend, suspend-source, suspend-provider, throttle, "
                 "throttle-provider, bounce or reroute", action);
        return -1;
    }
    r.action = (enum backoff_action)a;
    char *p = rest;
    if (parse_args(&r, &p, err, errlen) < 0) {
        free(r.nexthop);
        return -1;
    }
    int rc = regcomp(&r.re, p, REG_EXTENDED | REG_ICASE | REG_NOSUB);
    if (rc != 0) {
        char why[200];
        regerror(rc, &r.re, why, sizeof why);
        snprintf(err, errlen, "bad expression '%s': %s", p, why);
        free(r.nexthop);
        return -1;
    }
    struct backoff_rule *v = realloc(b->v, (b->n + 1) * sizeof *v);
    if (v)
        b->v = v;
    if (!v || !(r.text = strdup(p)) || (actions[a].nexthop && !r.nexthop)) {
        regfree(&r.re);
        free(r.text);
        free(r.nexthop);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    b->v[b->n++] = r;
    return 0;
}

const struct backoff_rule *backoff_match(const struct backoff_rules *b, const char *reply, const char *provider)
{
    if (reply[0] != '4' && reply[0] != '5')
        return NULL;
    for (size_t i = 0; i < b->n; i++) {
        const struct backoff_rule *r = &b->v[i];
        if (r->provider[0] && (!provider || strcasecmp(provider, r->provider)))
            continue;
        if (regexec(&r->re, reply, 0, NULL, 0) == 0)
            return r;
    }
    return NULL;
}

void backoff_free(struct backoff_rules *b)
{
    for (size_t i = 0; i < b->n; i++) {
        regfree(&b->v[i].re);
        free(b->v[i].text);
        free(b->v[i].nexthop);
    }
    free(b->v);
    b->v = NULL;
    b->n = 0;
}
