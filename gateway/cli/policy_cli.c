/* policy_cli.c - `postern policy test`: the configured chain on one message
 * (per stage and link: verdict, reply, changes; then each recipient's
 * fate), as text or --json, exit status by outcome; or, with --cases, on a
 * table of cases with expected outcomes (a policy repository's own CI).
 *
 *   postern -c CONF policy test [--from A] --to B [--to C ...] [--client IP]
 *       [--helo NAME] [--tls] [--auth USER] [--dns-file F] [--json] FILE.eml
 *   postern -c CONF policy test [--dns-file F] --cases FILE
 *
 * A cases file: one case per line, "NAME EXPECT MESSAGE [OPTION ...]";
 * MESSAGE is relative to the cases file, OPTION as on the command line plus
 * --expect-reply TEXT, --expect-header "NAME[: TEXT]", --expect-no-header
 * NAME, --expect-body TEXT, --expect-no-body TEXT, --expect-archive
 * yes|no, --expect-rcpt ADDR=OUTCOME, --expect-route ADDR=HOP|default,
 * --expect-tls ADDR=LEVEL|none, --expect-link LINK (the deciding link).
 * Cases run in order in one process: in-memory counters (postern.incr)
 * carry over from one case to the next, as between messages. "#" starts a comment;
 * double quotes group words. */
#include "policy_cli.h"
#include "dns.h"
#include "hooks.h"
#include "log.h"
#include "plugin_host.h"
#include "privs.h"
#include "smtp_parse.h"
#include "postern_lua.h"
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_TO 256
#define MAX_EXPECT 32
#define MAX_CASES 1000
#define MAX_CASE_WORDS 128
#define INPUT_MAX (64u * 1024 * 1024)   /* a message file, and all of a cases file's messages */

struct test_opts {
    const char *from;              /* NULL: the message's From address */
    const char *to[MAX_TO];
    size_t nto;
    const char *client, *helo, *auth;
    bool tls, json;
    const char *dns_file, *cases, *file;
    const char *expect[MAX_EXPECT][2];   /* {"--expect-x", value} */
    size_t nexpect;
};

static void test_usage(void)
{
    fprintf(stderr, "usage: postern -c FILE policy test [--from ADDR] --to ADDR [--to ADDR ...] [--client IP] "
                    "[--helo NAME] [--tls] [--auth USER] [--dns-file FILE] [--json] MESSAGE.eml\n"
                    "       postern -c FILE policy test [--dns-file FILE] --cases FILE\n"
                    "       postern -c FILE policy replay --archive DIR [--since DATE] [--until DATE] "
                    "[--limit N] [--dns-file FILE]\n");
}

/* Options of one run, from the command line or a cases line. 0, or -1
 * with err. */
static int parse_test_opts(int argc, char **argv, struct test_opts *o, char *err, size_t errlen)
{
    static const char *with_value[] = {"--from", "--to", "--client", "--helo", "--auth", "--dns-file", "--cases"};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool takes = !strncmp(a, "--expect-", 9);
        for (size_t k = 0; k < sizeof with_value / sizeof with_value[0]; k++)
            takes |= !strcmp(a, with_value[k]);
        if (takes && i + 1 >= argc)
            return snprintf(err, errlen, "%s needs a value", a), -1;
        const char *v = takes ? argv[++i] : NULL;
        if (!strcmp(a, "--from"))
            o->from = v;
        else if (!strcmp(a, "--to") && o->nto < MAX_TO)
            o->to[o->nto++] = v;
        else if (!strcmp(a, "--client"))
            o->client = v;
        else if (!strcmp(a, "--helo"))
            o->helo = v;
        else if (!strcmp(a, "--auth"))
            o->auth = v;
        else if (!strcmp(a, "--dns-file"))
            o->dns_file = v;
        else if (!strcmp(a, "--cases"))
            o->cases = v;
        else if (!strcmp(a, "--tls"))
            o->tls = true;
        else if (!strcmp(a, "--json"))
            o->json = true;
        else if (takes && strcmp(a, "--to") && o->nexpect < MAX_EXPECT) {
            o->expect[o->nexpect][0] = a;
            o->expect[o->nexpect++][1] = v;
        } else if (a[0] == '-' || o->file || takes)
            return snprintf(err, errlen, "unknown or repeated argument '%s'", a), -1;
        else
            o->file = a;
    }
    return 0;
}

/* ---- set-up: the chain as a dry run ---- */

int policy_setup(const struct config *cfg, const char *dns_file)
{
    char err[1024];
    log_set_level(LOG_LVL_ERROR);    /* the run's own report is the output */
    if (privs_become(cfg->run_user, cfg->allow_user_nobody) < 0)
        return -1;
    plugin_host_set_dry_run(true);
    dns_set_timeout(cfg->dns_timeout_ms);
    int rc = dns_file ? dns_init_canned(dns_file, err, sizeof err)
                      : dns_init_blocking(cfg->dns_server, cfg->dns_trust_anchor) < 0 ? -1 : 0;
    if (rc < 0) {
        fprintf(stderr, "postern: %s\n", dns_file ? err : "cannot set up the resolver");
        return -1;
    }
    if (hooks_load(cfg, err, sizeof err) < 0) {
        fprintf(stderr, "postern: %s\n", err);
        dns_shutdown();
        return -1;
    }
    if (lua_threads_start(cfg->lua_threads, false, false) < 0) {
        fprintf(stderr, "postern: cannot start the Lua threads\n");
        hooks_unload();
        dns_shutdown();
        return -1;
    }
    return 0;
}

void policy_teardown(void)
{
    if (lua_threads_stop()) {     /* else a stuck Lua thread may still read them */
        hooks_unload();
        dns_shutdown();
    }
}

/* ---- input ---- */

/* A whole file, at most max bytes. NULL with err. */
#define OVER_LIMIT_READ (1024 * 1024)

static char *read_file(const char *path, size_t max, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct buf b;
    buf_init(&b);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && b.len <= max)
        buf_append(&b, chunk, n);
    bool failed = ferror(f);
    fclose(f);
    if (failed || b.len > max) {
        snprintf(err, errlen, "%s: %s", path, failed ? "read error" : "too large");
        buf_free(&b);
        return NULL;
    }
    buf_append(&b, "", 1);
    *len = b.len - 1;
    return b.data;
}

/* The address in the message's From header ("" if none): the sender a
 * test uses when --from is not given. */
static void from_header(const char *msg, size_t len, char *out, size_t size)
{
    out[0] = '\0';
    for (const char *p = msg; p && p < msg + len; p = memchr(p, '\n', (size_t)(msg + len - p)), p = p ? p + 1 : p) {
        if (*p == '\r' || *p == '\n')
            return;      /* end of the header section */
        if (strncasecmp(p, "From:", 5))
            continue;
        const char *end = memchr(p, '\n', (size_t)(msg + len - p));
        size_t n = end ? (size_t)(end - p) : (size_t)(msg + len - p);
        char line[1024];
        snprintf(line, sizeof line, "%.*s", (int)(n < sizeof line ? n : sizeof line - 1), p + 5);
        char *lt = strchr(line, '<'), *gt = lt ? strchr(lt, '>') : NULL;
        const char *addr = lt && gt ? (*gt = '\0', lt + 1) : line + strspn(line, " \t");
        snprintf(out, size, "%.*s", (int)strcspn(addr, " \t\r\n"), addr);
        return;
    }
}

/* ---- output ---- */

static const char *verdict_word(postern_verdict v)
{
    static const char *words[] = {"continue", "accept", "reject", "tempfail", "discard", "quarantine", "error"};
    return (unsigned)v <= POSTERN_ERROR ? words[v] : "?";
}

static void print_text(const struct policy_result *r, FILE *out)
{
    int last_st = -1;
    const char *last_arg = "";
    for (size_t i = 0; i < r->nsteps; i++) {
        const struct policy_step *s = &r->steps[i];
        if ((int)s->st != last_st || strcmp(s->arg, last_arg)) {
            fprintf(out, "%s%s%s%s\n", stage_name(s->st), s->arg[0] ? " <" : "", s->arg, s->arg[0] ? ">" : "");
            last_st = (int)s->st;
            last_arg = s->arg;
        }
        fprintf(out, "  %-32s %s%s%s\n", s->link, verdict_word(s->v), s->reply[0] ? "  " : "", s->reply);
        for (const char *c = buf_head(&s->changes), *e = c + s->changes.len; c && c < e;) {
            const char *nl = memchr(c, '\n', (size_t)(e - c));
            fprintf(out, "      %.*s\n", (int)(nl ? nl - c : e - c), c);
            c = nl ? nl + 1 : e;
        }
    }
    fprintf(out, "outcome: %s", policy_outcome_name(r->outcome));
    if (r->decided_by[0])
        fprintf(out, " (%s at %s%s%s)", r->decided_by, stage_name(r->decided_at), r->reply[0] ? ": " : "", r->reply);
    fprintf(out, "\n");
    if (r->body_changed)
        fprintf(out, "  body changed\n");
    if (r->archive)
        fprintf(out, "  archive copy requested\n");
    for (size_t i = 0; i < r->nrcpts; i++) {
        const struct policy_rcpt *p = &r->rcpts[i];
        fprintf(out, "  <%s> %s", p->addr, policy_outcome_name(p->outcome));
        if (p->outcome == OUTCOME_REJECT || p->outcome == OUTCOME_TEMPFAIL)
            fprintf(out, " at %s: %s", stage_name(p->stage), p->reply);
        if (p->nexthop)
            fprintf(out, " route=%s", p->nexthop);
        if (p->tls)
            fprintf(out, " tls=%s", p->tls);
        fprintf(out, "\n");
    }
}

static json_t *changes_json(const struct buf *changes)
{
    json_t *a = json_array();
    for (const char *c = buf_head(changes), *e = c + changes->len; c && c < e;) {
        const char *nl = memchr(c, '\n', (size_t)(e - c));
        json_array_append_new(a, json_stringn(c, (size_t)(nl ? nl - c : e - c)));
        c = nl ? nl + 1 : e;
    }
    return a;
}

static void print_json(const struct policy_result *r, FILE *out)
{
    json_t *steps = json_array(), *rcpts = json_array();
    for (size_t i = 0; i < r->nsteps; i++) {
        const struct policy_step *s = &r->steps[i];
        json_array_append_new(steps, json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "stage", stage_name(s->st), "arg",
                                               s->arg, "link", s->link, "verdict", verdict_word(s->v), "reply",
                                               s->reply, "changes", changes_json(&s->changes)));
    }
    for (size_t i = 0; i < r->nrcpts; i++) {
        const struct policy_rcpt *p = &r->rcpts[i];
        json_t *j = json_pack("{s:s, s:s}", "address", p->addr, "outcome", policy_outcome_name(p->outcome));
        if (p->outcome == OUTCOME_REJECT || p->outcome == OUTCOME_TEMPFAIL) {
            json_object_set_new(j, "stage", json_string(stage_name(p->stage)));
            json_object_set_new(j, "reply", json_string(p->reply));
        }
        json_object_set_new(j, "route", p->nexthop ? json_string(p->nexthop) : json_null());
        json_object_set_new(j, "tls", p->tls ? json_string(p->tls) : json_null());
        json_array_append_new(rcpts, j);
    }
    json_t *top = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:b, s:o, s:o}", "outcome",
                            policy_outcome_name(r->outcome), "decided_by", r->decided_by, "stage",
                            r->decided_by[0] ? stage_name(r->decided_at) : "", "reply", r->reply, "quarantine_reason",
                            r->outcome == OUTCOME_QUARANTINE ? r->hold_reason : "", "body_changed", r->body_changed,
                            "archive", r->archive, "steps", steps, "recipients", rcpts);
    char *s = top ? json_dumps(top, JSON_INDENT(2)) : NULL;
    if (s)
        fprintf(out, "%s\n", s);
    free(s);
    json_decref(top);
}

static int exit_of(enum policy_outcome o)
{
    static const int codes[POLICY_OUTCOMES] = {POLICY_EXIT_ACCEPT, POLICY_EXIT_REJECT, POLICY_EXIT_TEMPFAIL,
                                               POLICY_EXIT_HELD, POLICY_EXIT_HELD};
    return codes[o];
}

/* ---- one run ---- */

/* Addresses as an SMTP client would have to give them. 0, or -1 with err. */
static int check_addresses(const struct test_opts *o, const char *from, char *err, size_t errlen)
{
    char cmd[700];
    struct path_result pr = {.reply = NULL};
    struct mail_params mp;
    snprintf(cmd, sizeof cmd, "FROM:<%s>", from);
    if (strlen(from) > SMTP_MAX_PATH || strpbrk(from, "<>\r\n") || smtp_parse_mail(cmd, &pr, &mp) < 0)
        return snprintf(err, errlen, "sender '%s': %s", from, pr.reply ? pr.reply : "not an address"), -1;
    for (size_t i = 0; i < o->nto; i++) {
        pr.reply = NULL;
        snprintf(cmd, sizeof cmd, "TO:<%s>", o->to[i]);
        if (!o->to[i][0] || strlen(o->to[i]) > SMTP_MAX_PATH || strpbrk(o->to[i], "<>\r\n") ||
            smtp_parse_rcpt(cmd, true, &pr, NULL) < 0)
            return snprintf(err, errlen, "--to '%s': %s", o->to[i], pr.reply && o->to[i][0] ? pr.reply
                                                                                    : "not an address"), -1;
    }
    return 0;
}

static int run_one(const struct config *cfg, const struct test_opts *o, const char *msg, size_t len,
                   struct policy_result *res, char *err, size_t errlen)
{
    char from[512];
    if (o->from)
        snprintf(from, sizeof from, "%s", o->from);
    else
        from_header(msg, len, from, sizeof from);
    if (check_addresses(o, from, err, errlen) < 0)
        return -1;
    const char *client = o->client ? o->client : "192.0.2.1";
    char helo[300];
    snprintf(helo, sizeof helo, "%s%s%s", o->helo ? "" : "[", o->helo ? o->helo : client, o->helo ? "" : "]");
    struct policy_envelope env = {.from = from, .to = o->to, .nto = o->nto, .client_ip = client, .helo = helo,
                                  .auth_user = o->auth ? o->auth : "", .tls = o->tls};
    return policy_run(cfg, &env, msg, len, res, err, errlen);
}

/* ---- cases ---- */

/* Does the result meet expectation {key, value}? Why not in why. */
static bool expectation_met(const struct policy_result *r, const char *key, const char *value, char *why, size_t wlen)
{
    const char *eq = strchr(value, '=');
    size_t alen = eq ? (size_t)(eq - value) : 0;
    const struct policy_rcpt *p = NULL;
    for (size_t i = 0; eq && i < r->nrcpts; i++)
        if (strlen(r->rcpts[i].addr) == alen && !strncasecmp(r->rcpts[i].addr, value, alen))
            p = &r->rcpts[i];
    if (!strcmp(key, "--expect-reply")) {
        if (strstr(r->reply, value))
            return true;
        snprintf(why, wlen, "reply \"%s\" does not contain \"%s\"", r->reply, value);
    } else if (!strcmp(key, "--expect-link")) {
        if (!strcmp(r->decided_by, value))
            return true;
        snprintf(why, wlen, "decided by \"%s\", not %s", r->decided_by, value);
    } else if (!strcmp(key, "--expect-header") || !strcmp(key, "--expect-no-header")) {
        bool want = !strcmp(key, "--expect-header"), found = false;
        char name[256];
        const char *colon = strchr(value, ':');
        snprintf(name, sizeof name, "%.*s", (int)(colon ? (size_t)(colon - value) : strlen(value)), value);
        const char *text = colon ? colon + 1 + strspn(colon + 1, " ") : NULL;
        struct header_list l = {0};
        headers_parse(buf_head(&r->final_headers), r->final_headers.len, &l);
        for (size_t i = 0; i < l.n && !found; i++)
            found = !strcasecmp(l.h[i].name, name) && (!text || strstr(l.h[i].value, text));
        headers_free(&l);
        if (found == want)
            return true;
        snprintf(why, wlen, "header %s %s", value, want ? "is missing" : "is present");
    } else if (!strcmp(key, "--expect-body") || !strcmp(key, "--expect-no-body")) {
        bool want = !strcmp(key, "--expect-body");
        bool found = r->final_body.len && memmem(buf_head(&r->final_body), r->final_body.len, value, strlen(value));
        if (found == want)
            return true;
        snprintf(why, wlen, "the body %s \"%s\"", want ? "does not contain" : "contains", value);
    } else if (!strcmp(key, "--expect-archive")) {
        if (r->archive == !strcmp(value, "yes"))
            return true;
        snprintf(why, wlen, "an archive copy was %srequested", r->archive ? "" : "not ");
    } else if (!p) {
        snprintf(why, wlen, "%s %s: no such recipient (give ADDR=VALUE)", key, value);
    } else if (!strcmp(key, "--expect-rcpt")) {
        if (!strcmp(policy_outcome_name(p->outcome), eq + 1))
            return true;
        snprintf(why, wlen, "<%s> %s, not %s", p->addr, policy_outcome_name(p->outcome), eq + 1);
    } else if (!strcmp(key, "--expect-route")) {
        if (p->nexthop ? !strcmp(p->nexthop, eq + 1) : !strcmp(eq + 1, "default"))
            return true;
        snprintf(why, wlen, "<%s> route %s, not %s", p->addr, p->nexthop ? p->nexthop : "default", eq + 1);
    } else if (!strcmp(key, "--expect-tls")) {
        if (p->tls ? !strcmp(p->tls, eq + 1) : !strcmp(eq + 1, "none"))
            return true;
        snprintf(why, wlen, "<%s> tls %s, not %s", p->addr, p->tls ? p->tls : "none", eq + 1);
    } else {
        snprintf(why, wlen, "unknown expectation %s", key);
    }
    return false;
}

/* Split a cases line into words (double quotes group; '#' outside quotes
 * ends the line), in place. The number of words, or -1. */
static int split_words(char *line, char **words, int max)
{
    int n = 0;
    char *p = line;
    while (*p) {
        p += strspn(p, " \t\r\n");
        if (!*p || *p == '#')
            break;
        if (n == max)
            return -1;
        char *w = p, *o = p;
        bool quoted = false;
        for (; *p && (quoted || !strchr(" \t\r\n", *p)); p++) {
            if (*p == '"')
                quoted = !quoted;
            else
                *o++ = *p;
        }
        if (quoted)
            return -1;
        if (*p)
            p++;
        *o = '\0';
        words[n++] = w;
    }
    return n;
}

struct test_case {
    char *line;                 /* the words point into it */
    int lineno;
    char *words[MAX_CASE_WORDS];
    int nwords;
    char *msg;
    size_t len;
};

/* Read every case and its message first: the files belong to whoever runs
 * the test, and the chain then runs as the daemon's user. */
static int load_cases(const char *path, struct test_case **out, size_t *n, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return snprintf(err, errlen, "%s: %s", path, strerror(errno)), -1;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        slash[1] = '\0';
    else
        dir[0] = '\0';
    struct test_case *cases = calloc(MAX_CASES, sizeof *cases);
    char line[8192];
    size_t total = 0;
    int lineno = 0, rc = cases ? 0 : -1;
    *n = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        struct test_case *c = &cases[*n];
        c->line = strdup(line);
        c->lineno = lineno;
        c->nwords = c->line ? split_words(c->line, c->words, MAX_CASE_WORDS) : -1;
        if (c->nwords == 0) {
            free(c->line);
            continue;
        }
        char file[8300];
        if (c->nwords < 3 || policy_outcome_parse(c->words[1]) < 0 || *n + 1 == MAX_CASES) {
            snprintf(err, errlen, "%s line %d: want NAME EXPECT MESSAGE [OPTIONS] (EXPECT: accept, reject, "
                     "tempfail, quarantine, discard; at most %d cases)", path, lineno, MAX_CASES - 1);
            rc = -1;
        } else if (snprintf(file, sizeof file, "%s%s", c->words[2][0] == '/' ? "" : dir, c->words[2]),
                   !(c->msg = read_file(file, INPUT_MAX - total, &c->len, err, errlen))) {
            rc = -1;
        }
        total += c->len;
        (*n)++;
    }
    fclose(f);
    *out = cases;
    return rc;
}

static void free_cases(struct test_case *cases, size_t n)
{
    for (size_t i = 0; cases && i < n; i++) {
        free(cases[i].line);
        free(cases[i].msg);
    }
    free(cases);
}

/* One case: "ok NAME" or "FAIL NAME: why"; true if it passed. */
static bool run_case(const struct config *cfg, const struct test_case *c, const char *dns_file)
{
    struct test_opts o = {0};
    char err[1024], why[1200] = "";
    struct policy_result res;
    if (parse_test_opts(c->nwords - 3, (char **)c->words + 3, &o, err, sizeof err) < 0 || o.file || o.cases ||
        (o.dns_file && (!dns_file || strcmp(o.dns_file, dns_file)))) {
        printf("FAIL %s (line %d): %s\n", c->words[0], c->lineno,
               o.file || o.cases ? "extra words" : o.dns_file ? "--dns-file goes on the command line" : err);
        return false;
    }
    if (run_one(cfg, &o, c->msg, c->len, &res, err, sizeof err) < 0) {
        printf("FAIL %s (line %d): %s\n", c->words[0], c->lineno, err);
        return false;
    }
    bool ok = !strcmp(policy_outcome_name(res.outcome), c->words[1]);
    if (!ok)
        snprintf(why, sizeof why, "expected %s, got %s%s%s%s%s", c->words[1], policy_outcome_name(res.outcome),
                 res.decided_by[0] ? " from " : "", res.decided_by, res.reply[0] ? ": " : "", res.reply);
    for (size_t i = 0; ok && i < o.nexpect; i++)
        ok = expectation_met(&res, o.expect[i][0], o.expect[i][1], why, sizeof why);
    if (ok)
        printf("ok   %s\n", c->words[0]);
    else
        printf("FAIL %s (line %d): %s\n", c->words[0], c->lineno, why);
    policy_result_free(&res);
    return ok;
}

static int run_cases(const struct config *cfg, const struct test_opts *o)
{
    struct test_case *cases = NULL;
    size_t n = 0;
    char err[1024];
    if (load_cases(o->cases, &cases, &n, err, sizeof err) < 0) {
        fprintf(stderr, "postern: %s\n", err);
        free_cases(cases, n);
        return POLICY_EXIT_ERROR;
    }
    if (policy_setup(cfg, o->dns_file) < 0) {
        free_cases(cases, n);
        return POLICY_EXIT_ERROR;
    }
    size_t failed = 0;
    for (size_t i = 0; i < n; i++)
        failed += !run_case(cfg, &cases[i], o->dns_file);
    printf("%zu case%s, %zu failed\n", n, n == 1 ? "" : "s", failed);
    policy_teardown();
    free_cases(cases, n);
    return failed ? 1 : 0;
}

static int policy_test(const struct config *cfg, int argc, char **argv)
{
    struct test_opts o = {0};
    char err[1024] = "";
    if (parse_test_opts(argc, argv, &o, err, sizeof err) < 0 || (o.cases ? o.file || o.nto || o.nexpect
                                                                           : !o.file || !o.nto)) {
        fprintf(stderr, "postern: policy test: %s\n", err[0] && !o.file ? err
                        : o.cases ? "--cases takes no message, --to or --expect-*"
                                  : "give a message file and at least one --to");
        test_usage();
        return POLICY_EXIT_ERROR;
    }
    if (o.cases)
        return run_cases(cfg, &o);
    size_t len;
    /* a little over the limit still runs, to show posternd's 552 */
    char *msg = read_file(o.file, cfg->message_size_limit + OVER_LIMIT_READ, &len, err, sizeof err);
    if (!msg) {
        fprintf(stderr, "postern: %s\n", err);
        return POLICY_EXIT_ERROR;
    }
    if (policy_setup(cfg, o.dns_file) < 0) {
        free(msg);
        return POLICY_EXIT_ERROR;
    }
    struct policy_result res;
    int rc = run_one(cfg, &o, msg, len, &res, err, sizeof err);
    if (rc == 0) {
        (o.json ? print_json : print_text)(&res, stdout);
        rc = exit_of(res.outcome);
        policy_result_free(&res);
    } else {
        fprintf(stderr, "postern: %s\n", err);
        rc = POLICY_EXIT_ERROR;
    }
    policy_teardown();
    free(msg);
    return rc;
}

int policy_command(const struct config *cfg, int argc, char **argv)
{
    if (argc >= 1 && !strcmp(argv[0], "test"))
        return policy_test(cfg, argc - 1, argv + 1);
    if (argc >= 1 && !strcmp(argv[0], "replay"))
        return policy_replay(cfg, argc - 1, argv + 1);
    test_usage();
    return POLICY_EXIT_ERROR;
}
