/* header_checks.c - regular-expression rules on message headers (PCRE2),
 * in the spirit of Postfix's header_checks. Each header is matched as one
 * logical line "Name: value" with folding removed; the first matching rule
 * decides.
 *   header_checks.rules = /path/to/rules      (one rule per line, # comments)
 *   header_checks.rule  = /regex/flags ACTION [text]   (may repeat)
 * flags: i (caseless). ACTION: REJECT, TEMPFAIL, DISCARD, QUARANTINE [reason],
 * WARN (log only), IGNORE (delete the header). */
#include "postern_plugin.h"
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum action { ACT_REJECT, ACT_TEMPFAIL, ACT_DISCARD, ACT_QUARANTINE, ACT_WARN, ACT_IGNORE };

struct rule {
    pcre2_code *re;
    enum action action;
    char text[256];
    char source[300];
};

struct checks {
    struct rule *rules;
    size_t n;
};

static const struct postern_host *host;
static const char *action_names[] = {"REJECT", "TEMPFAIL", "DISCARD", "QUARANTINE", "WARN", "IGNORE"};

static int add_rule(struct checks *c, const char *line, char *err, size_t errlen)
{
    if (line[0] != '/') {
        snprintf(err, errlen, "rule must start with /regex/: %s", line);
        return -1;
    }
    const char *close = strrchr(line + 1, '/');
    const char *p = close;
    /* the regex ends at the last '/' that is followed by flags and a space */
    for (const char *q = line + 1; (q = strchr(q, '/')); q++) {
        const char *f = q + 1;
        while (*f == 'i')
            f++;
        if (*f == ' ' || *f == '\t') {
            p = q;
            break;
        }
    }
    close = p;
    if (!close || close == line) {
        snprintf(err, errlen, "unterminated /regex/: %s", line);
        return -1;
    }
    uint32_t options = 0;
    const char *f = close + 1;
    for (; *f && *f != ' ' && *f != '\t'; f++) {
        if (*f != 'i') {
            snprintf(err, errlen, "unknown regex flag '%c' in: %s", *f, line);
            return -1;
        }
        options |= PCRE2_CASELESS;
    }
    while (*f == ' ' || *f == '\t')
        f++;
    char word[32];
    int off = 0;
    if (sscanf(f, "%31s %n", word, &off) < 1) {
        snprintf(err, errlen, "missing action in: %s", line);
        return -1;
    }
    int act = -1;
    for (int i = 0; i < 6; i++)
        if (!strcasecmp(word, action_names[i]))
            act = i;
    if (act < 0) {
        snprintf(err, errlen, "unknown action '%s' in: %s", word, line);
        return -1;
    }
    int errcode;
    PCRE2_SIZE erroff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)(line + 1), (PCRE2_SIZE)(close - line - 1), options, &errcode,
                                   &erroff, NULL);
    if (!re) {
        PCRE2_UCHAR msg[120];
        pcre2_get_error_message(errcode, msg, sizeof msg);
        snprintf(err, errlen, "bad regex at offset %zu (%s): %s", (size_t)erroff, (char *)msg, line);
        return -1;
    }
    struct rule *r = realloc(c->rules, (c->n + 1) * sizeof *r);
    if (!r) {
        pcre2_code_free(re);
        return -1;
    }
    c->rules = r;
    r[c->n] = (struct rule){.re = re, .action = (enum action)act};
    snprintf(r[c->n].text, sizeof r[c->n].text, "%s", off ? f + off : "");
    snprintf(r[c->n].source, sizeof r[c->n].source, "%s", line);
    c->n++;
    return 0;
}

static int load_file(struct checks *c, const char *path, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "r");
    if (!fp) {
        snprintf(err, errlen, "cannot open rules file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[1024];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, fp)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s || *s == '#')
            continue;
        char e[400];
        if ((rc = add_rule(c, s, e, sizeof e)) < 0)
            snprintf(err, errlen, "%s:%d: %s", path, lineno, e);
    }
    fclose(fp);
    return rc;
}

static void fini(void *state)
{
    struct checks *c = state;
    for (size_t i = 0; i < c->n; i++)
        pcre2_code_free(c->rules[i].re);
    free(c->rules);
    free(c);
}

static int init(const struct postern_host *h, const struct postern_option *opts, size_t n, void **state,
                char *err, size_t errlen)
{
    host = h;
    struct checks *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int rc;
        if (!strcmp(opts[i].key, "rules"))
            rc = load_file(c, opts[i].value, err, errlen);
        else if (!strcmp(opts[i].key, "rule"))
            rc = add_rule(c, opts[i].value, err, errlen);
        else {
            snprintf(err, errlen, "unknown option '%s' (known: rules, rule)", opts[i].key);
            rc = -1;
        }
        if (rc < 0) {
            fini(c);
            return -1;
        }
    }
    *state = c;
    return 0;
}

/* "Name: value" with folding (CRLF before white space) removed. */
static size_t logical_line(const char *name, const char *value, char *out, size_t cap)
{
    size_t o = (size_t)snprintf(out, cap, "%s:", name);
    for (const char *p = value; *p && o + 1 < cap; p++) {
        if (p[0] == '\r' && p[1] == '\n') {
            p++;
            continue;
        }
        out[o++] = *p;
    }
    out[o < cap ? o : cap - 1] = '\0';
    return o < cap ? o : cap - 1;
}

static postern_verdict on_data(postern_txn *t, void *state)
{
    struct checks *c = state;
    char line[8192];
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    if (!md)
        return POSTERN_ERROR;
    postern_verdict v = POSTERN_CONTINUE;
    for (size_t i = 0; i < host->header_count(t) && v == POSTERN_CONTINUE; i++) {
        const char *name, *value;
        if (host->header_at(t, i, &name, &value) < 0)
            break;
        size_t len = logical_line(name, value, line, sizeof line);
        for (size_t k = 0; k < c->n; k++) {
            const struct rule *r = &c->rules[k];
            if (pcre2_match(r->re, (PCRE2_SPTR)line, len, 0, 0, md, NULL) < 0)
                continue;
            char reply[400];
            switch (r->action) {
            case ACT_WARN:
                host->log(t, POSTERN_LOG_WARN, "header_checks: warning: %.200s (rule %s)", line, r->source);
                break;
            case ACT_IGNORE:
                /* count which occurrence of this name index i is, then delete it */
                {
                    size_t nth = 0;
                    for (size_t j = 0; j < i; j++) {
                        const char *nj, *vj;
                        host->header_at(t, j, &nj, &vj);
                        nth += !strcasecmp(nj, name);
                    }
                    if (host->header_delete(t, name, nth) == 0)   /* posternd's trace field stays */
                        i--;
                }
                break;
            case ACT_REJECT:
                snprintf(reply, sizeof reply, "550 5.7.1 %s", r->text[0] ? r->text : "Message content rejected");
                host->set_reply(t, reply);
                v = POSTERN_REJECT;
                break;
            case ACT_TEMPFAIL:
                snprintf(reply, sizeof reply, "451 4.7.1 %s", r->text[0] ? r->text : "Try again later");
                host->set_reply(t, reply);
                v = POSTERN_TEMPFAIL;
                break;
            case ACT_DISCARD:
                v = POSTERN_DISCARD;
                break;
            case ACT_QUARANTINE:
                snprintf(reply, sizeof reply, "%s", r->text[0] ? r->text : "header_checks quarantine");
                host->set_reply(t, reply);
                v = POSTERN_QUARANTINE;
                break;
            }
            if (v != POSTERN_CONTINUE)
                host->log(t, POSTERN_LOG_INFO, "header_checks: %s: %.200s (rule %s)", action_names[r->action], line,
                          r->source);
            break;   /* first matching rule decides for this header */
        }
    }
    pcre2_match_data_free(md);
    return v;
}

/* The options it takes (checked by posternd before init, documented in postern-plugins(5)). */
static const struct postern_option_spec options[] = {
    {"rules", POSTERN_OPT_PATH, NULL, NULL, 0, "a file of rules, one a line: `/REGEX/[i] ACTION [text]`"},
    {"rule", POSTERN_OPT_TEXT, NULL, NULL, 1, "one rule, as in the file (ACTION: REJECT, TEMPFAIL, DISCARD, QUARANTINE, IGNORE, WARN)"},
    {NULL, 0, NULL, NULL, 0, NULL},
};

static const struct postern_plugin plugin = {
    .abi_version = POSTERN_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct postern_plugin),
    .name = "header_checks",
    .init = init,
    .fini = fini,
    .on_data = on_data,
    .options = options,
};

const struct postern_plugin *postern_plugin_entry(void) { return &plugin; }
