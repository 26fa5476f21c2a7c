/* route.c - recipient- and sender-based next-hop rules, applied to every
 * recipient at the end of the message, when the envelope is final (other
 * plugins may have added or removed recipients). The first matching rule wins.
 *   route.rule  = rcpt   /regex/ smtp:[192.0.2.10]:25   (may repeat)
 *   route.rule  = sender /regex/ mx
 *   route.rules = /path/to/file                         (same lines)
 * Regexes are PCRE2, caseless, matched against the whole address. */
#include "postern_plugin.h"
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rule {
    int by_sender;
    pcre2_code *re;
    char nexthop[128];
};

struct routes {
    struct rule *r;
    size_t n;
};

static const struct postern_host *host;

static int add_rule(struct routes *rt, const char *line, char *err, size_t errlen)
{
    char what[16], nexthop[128];
    const char *re_start = NULL, *re_end = NULL;
    if (sscanf(line, "%15s", what) != 1 || (strcmp(what, "rcpt") && strcmp(what, "sender")) ||
        !(re_start = strchr(line, '/')) || !(re_end = strrchr(line, '/')) || re_end == re_start ||
        sscanf(re_end + 1, " %127s", nexthop) != 1) {
        snprintf(err, errlen, "expected 'rcpt|sender /regex/ NEXTHOP', got '%s'", line);
        return -1;
    }
    if (strcmp(nexthop, "mx") && strncmp(nexthop, "smtp:", 5)) {
        snprintf(err, errlen, "next hop must be mx or smtp:[ip]:port: %s", nexthop);
        return -1;
    }
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)(re_start + 1), (PCRE2_SIZE)(re_end - re_start - 1),
                                   PCRE2_CASELESS, &ec, &eo, NULL);
    if (!re) {
        snprintf(err, errlen, "bad regex at offset %zu in '%s'", (size_t)eo, line);
        return -1;
    }
    struct rule *n = realloc(rt->r, (rt->n + 1) * sizeof *n);
    if (!n) {
        pcre2_code_free(re);
        return -1;
    }
    rt->r = n;
    n[rt->n] = (struct rule){.by_sender = !strcmp(what, "sender"), .re = re};
    snprintf(n[rt->n].nexthop, sizeof n[rt->n].nexthop, "%s", nexthop);
    rt->n++;
    return 0;
}

static void fini(void *state)
{
    struct routes *rt = state;
    for (size_t i = 0; i < rt->n; i++)
        pcre2_code_free(rt->r[i].re);
    free(rt->r);
    free(rt);
}

static int load_file(struct routes *rt, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    char line[1024], e[400];
    int n = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        n++;
        line[strcspn(line, "\r\n#")] = '\0';
        if (strspn(line, " \t") == strlen(line))
            continue;
        if ((rc = add_rule(rt, line, e, sizeof e)) < 0)
            snprintf(err, errlen, "%s:%d: %s", path, n, e);
    }
    fclose(f);
    return rc;
}

static int init(const struct postern_host *h, const struct postern_option *opts, size_t n, void **state,
                char *err, size_t errlen)
{
    host = h;
    struct routes *rt = calloc(1, sizeof *rt);
    if (!rt)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int rc = !strcmp(opts[i].key, "rule")    ? add_rule(rt, opts[i].value, err, errlen)
                 : !strcmp(opts[i].key, "rules") ? load_file(rt, opts[i].value, err, errlen)
                                                 : (snprintf(err, errlen, "unknown option '%s' (known: rule, rules)",
                                                             opts[i].key), -1);
        if (rc < 0) {
            fini(rt);
            return -1;
        }
    }
    *state = rt;
    return 0;
}

static int matches(const pcre2_code *re, const char *s)
{
    pcre2_match_data *md = pcre2_match_data_create(2, NULL);
    int rc = md ? pcre2_match(re, (PCRE2_SPTR)s, strlen(s), 0, 0, md, NULL) : -1;
    pcre2_match_data_free(md);
    return rc >= 0;
}

/* Route every recipient once the envelope is final. */
static postern_verdict on_eom(postern_txn *t, void *state)
{
    struct routes *rt = state;
    for (size_t i = 0; i < host->rcpt_count(t); i++) {
        const char *rcpt = host->rcpt(t, i);
        for (size_t k = 0; k < rt->n; k++) {
            if (!matches(rt->r[k].re, rt->r[k].by_sender ? host->sender(t) : rcpt))
                continue;
            if (host->set_nexthop(t, rcpt, rt->r[k].nexthop) == 0)
                host->log(t, POSTERN_LOG_INFO, "route: <%s> via %s", rcpt, rt->r[k].nexthop);
            break;
        }
    }
    return POSTERN_CONTINUE;
}

/* The options it takes (checked by posternd before init, documented in postern-plugins(5)). */
static const struct postern_option_spec options[] = {
    {"rules", POSTERN_OPT_PATH, NULL, NULL, 0, "a file of routing rules, one a line"},
    {"rule", POSTERN_OPT_TEXT, NULL, NULL, 1, "one rule: `sender|rcpt /REGEX/ NEXTHOP` (or `mx`)"},
    {NULL, 0, NULL, NULL, 0, NULL},
};

static const struct postern_plugin plugin = {
    .abi_version = POSTERN_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct postern_plugin),
    .name = "route",
    .init = init,
    .fini = fini,
    .on_eom = on_eom,
    .options = options,
};

const struct postern_plugin *postern_plugin_entry(void) { return &plugin; }
