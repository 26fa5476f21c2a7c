/* policy_replay.c - `postern -c NEWCONF policy replay --archive DIR`: the
 * candidate chain over every message the archive plugin kept, in chain
 * order, compared with what the live chain decided for it (the archive's
 * X-Postern-Decided and X-Postern-Route lines). One message in memory at a
 * time; the list of changed messages goes to a temporary file and follows
 * the summary. Progress on stderr.
 *
 *   [--since DATE] [--until DATE]   X-Postern-Archived-At, inclusive
 *                                   (2026-12-01 or 2026-12-01T10:00:00Z)
 *   [--limit N]                     stop after N messages replayed
 *   [--dns-file FILE]               canned DNS answers, as for policy test */
#include "policy_cli.h"
#include "utc_time.h"
#include "archive_index.h"
#include "archive_audit.h"
#include "hooks.h"
#include "log.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define REPLAY_MAX_RCPTS 1024
#define ENVELOPE_LINE_MAX 2048

/* The kinds of change the summary counts. */
enum change { SAME, NEW_OUTCOME, PARTLY_REFUSED, ROUTES_CHANGED, UNREADABLE };

struct replay {
    const struct config *cfg;
    const char *dir;
    time_t since, until;       /* inclusive, to the second; -1 = open */
    long limit;
    size_t seen, replayed, gone;
    size_t counts[UNREADABLE + 1];
    size_t newly[POLICY_OUTCOMES];   /* NEW_OUTCOME by the new outcome */
    FILE *changed;                   /* the list, printed after the summary */
    time_t last_progress;
};

/* One archived message: its envelope block and what the live chain did. */
struct archived {
    char qid[64], at[64], client[64], helo[256], from[512];
    const char *to[REPLAY_MAX_RCPTS];
    size_t nto;
    enum policy_outcome live;
    char live_by[256];               /* "eom lua:x.lua" or "" */
    const char *routes[REPLAY_MAX_RCPTS];   /* "<addr> hop=H tls=L" lines */
    size_t nroutes;
    const char *msg;                 /* the message after the envelope block */
    size_t len;
};

/* Terminate the header line at p (CRLF) in place; the next line. */
static char *cut_line(char *p, char *end)
{
    char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl)
        return end;
    *nl = '\0';
    if (nl > p && nl[-1] == '\r')
        nl[-1] = '\0';
    return nl + 1;
}

/* "STAGE LINK VERDICT: REPLY": a quarantine or discard before the 250
 * is what the live chain did with the message (it was archived, so it
 * was accepted otherwise). */
static void note_decided(struct archived *a, const char *v)
{
    char stage[32], link[200], verdict[40];
    if (sscanf(v, "%31s %199s %39[a-z]", stage, link, verdict) != 3 || a->live != OUTCOME_ACCEPT)
        return;
    int o = policy_outcome_parse(verdict);
    if (o == OUTCOME_QUARANTINE || o == OUTCOME_DISCARD) {
        a->live = (enum policy_outcome)o;
        snprintf(a->live_by, sizeof a->live_by, "%s %s", stage, link);
    }
}

static void unbracket(const char *v, char *out, size_t size)
{
    v += *v == '<';
    snprintf(out, size, "%.*s", (int)strcspn(v, ">"), v);
}

/* The X-Postern-* block at the top (the stored message itself always
 * starts with posternd's Received header). -1 if it is not one. */
static int parse_archived(char *data, size_t len, struct archived *a)
{
    memset(a, 0, sizeof *a);
    char *p = data, *end = data + len;
    while (p < end && !strncasecmp(p, "X-Postern-", 10)) {
        char *line = p;
        p = cut_line(p, end);
        char *colon = strchr(line, ':');
        if (!colon || strlen(line) > ENVELOPE_LINE_MAX)
            return -1;
        *colon = '\0';
        const char *name = line + 10, *v = colon + 1 + strspn(colon + 1, " ");
        if (!strcasecmp(name, "Queue-ID"))
            snprintf(a->qid, sizeof a->qid, "%s", v);
        else if (!strcasecmp(name, "Archived-At"))
            snprintf(a->at, sizeof a->at, "%s", v);
        else if (!strcasecmp(name, "Envelope-From"))
            unbracket(v, a->from, sizeof a->from);
        else if (!strcasecmp(name, "Envelope-To") && a->nto < REPLAY_MAX_RCPTS) {
            char *addr = (char *)v + (*v == '<');
            addr[strcspn(addr, ">")] = '\0';
            a->to[a->nto++] = addr;
        } else if (!strcasecmp(name, "Client"))
            sscanf(v, "[%63[^]]] helo=%255s", a->client, a->helo);
        else if (!strcasecmp(name, "Decided"))
            note_decided(a, v);
        else if (!strcasecmp(name, "Route") && a->nroutes < REPLAY_MAX_RCPTS)
            a->routes[a->nroutes++] = v;
    }
    a->msg = p;
    a->len = (size_t)(end - p);
    return a->qid[0] && a->nto && a->client[0] ? 0 : -1;
}

/* The live route line of addr, as the new result's would read. */
static const char *live_route(const struct archived *a, const char *addr)
{
    size_t n = strlen(addr);
    for (size_t i = 0; i < a->nroutes; i++)
        if (a->routes[i][0] == '<' && !strncasecmp(a->routes[i] + 1, addr, n) && a->routes[i][n + 1] == '>')
            return a->routes[i] + n + 2 + (a->routes[i][n + 2] == ' ');
    return "";
}

/* What changed between the live decision and the new run, with the
 * details for the list. */
static enum change compare(const struct archived *a, const struct policy_result *r, struct buf *details)
{
    if (r->outcome != a->live) {
        buf_printf(details, "now %s", policy_outcome_name(r->outcome));
        if (r->decided_by[0])
            buf_printf(details, " by %s at %s%s%s", r->decided_by, stage_name(r->decided_at),
                       r->reply[0] ? ": " : "", r->reply);
        return NEW_OUTCOME;
    }
    enum change c = SAME;
    for (size_t i = 0; i < r->nrcpts; i++) {
        const struct policy_rcpt *p = &r->rcpts[i];
        if (p->outcome == OUTCOME_REJECT || p->outcome == OUTCOME_TEMPFAIL) {
            buf_printf(details, "%s<%s> %s at %s: %s", details->len ? "; " : "", p->addr,
                       policy_outcome_name(p->outcome), stage_name(p->stage), p->reply);
            c = PARTLY_REFUSED;
            continue;
        }
        char now[600];
        snprintf(now, sizeof now, "%s%s%s%s%s", p->nexthop ? "hop=" : "", p->nexthop ? p->nexthop : "",
                 p->nexthop && p->tls ? " " : "", p->tls ? "tls=" : "", p->tls ? p->tls : "");
        const char *was = live_route(a, p->addr);
        if (strcmp(was, now)) {
            buf_printf(details, "%s<%s> %s -> %s", details->len ? "; " : "", p->addr, was[0] ? was : "default",
                       now[0] ? now : "default");
            if (c == SAME)
                c = ROUTES_CHANGED;
        }
    }
    return c;
}

static bool in_window(const struct replay *rp, const char *at)
{
    time_t t;
    if (rp->since < 0 && rp->until < 0)
        return true;
    return utc_time_parse(at, false, &t) == 0 && (rp->since < 0 || t >= rp->since) && (rp->until < 0 || t <= rp->until);
}

static void progress(struct replay *rp)
{
    time_t now = time(NULL);
    if (now - rp->last_progress < 2)
        return;
    rp->last_progress = now;
    fprintf(stderr, "postern: replay: %zu messages replayed (%zu archive entries read)\n", rp->replayed, rp->seen);
}

/* One archive entry (relpath in DIR). */
static void replay_entry(struct replay *rp, const char *relpath)
{
    char path[8500], err[1024];
    snprintf(path, sizeof path, "%s/%s", rp->dir, relpath);
    rp->seen++;
    FILE *f = fopen(path, "rb");
    if (!f && errno == ENOENT) {       /* removed by retention (or deleted: `archive verify` tells) */
        rp->gone++;
        return;
    }
    size_t cap = rp->cfg->message_size_limit + 256 * 1024;
    char *data = f ? malloc(cap + 1) : NULL;
    size_t len = data ? fread(data, 1, cap + 1, f) : 0;
    if (f)
        fclose(f);
    struct archived a;
    if (!data || len > cap || parse_archived(data, len, &a) < 0) {
        rp->counts[UNREADABLE]++;
        fprintf(rp->changed, "%s  could not be replayed: %s\n", relpath,
                !f ? strerror(errno) : len > cap ? "larger than message_size_limit" : "no envelope block");
        free(data);
        return;
    }
    if (!in_window(rp, a.at)) {
        free(data);
        return;
    }
    struct policy_envelope env = {.from = a.from, .to = a.to, .nto = a.nto, .client_ip = a.client,
                                  .helo = a.helo, .auth_user = ""};
    struct policy_result r;
    if (policy_run(rp->cfg, &env, a.msg, a.len, &r, err, sizeof err) < 0) {
        rp->counts[UNREADABLE]++;
        fprintf(rp->changed, "%s  could not be replayed: %s\n", a.qid, err);
        free(data);
        return;
    }
    rp->replayed++;
    struct buf details;
    buf_init(&details);
    enum change c = compare(&a, &r, &details);
    rp->counts[c]++;
    if (c == NEW_OUTCOME)
        rp->newly[r.outcome]++;
    if (c != SAME)
        fprintf(rp->changed, "%s  %s  <%s>  live: %s%s%s  %.*s\n", a.qid, a.at, a.from, policy_outcome_name(a.live),
                a.live_by[0] ? " by " : "", a.live_by, (int)details.len, buf_head(&details) ? buf_head(&details) : "");
    buf_free(&details);
    policy_result_free(&r);
    free(data);
    progress(rp);
}

/* DIR/chain in order ("SEQ RELPATH HASH LINK"): every archived message. */
static int replay_chain(struct replay *rp)
{
    char path[4200], line[4400];
    snprintf(path, sizeof path, "%s/chain", rp->dir);
    FILE *chain = fopen(path, "r");
    if (!chain) {
        fprintf(stderr, "postern: %s: %s (is it an archive directory?)\n", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof line, chain) && (rp->limit < 0 || (long)rp->replayed < rp->limit)) {
        char rel[4200];
        unsigned long seq;
        size_t n;
        if (sscanf(line, "%lu %4199s", &seq, rel) != 2 || (n = strlen(rel)) < 5 || strcmp(rel + n - 4, ".eml") ||
            strstr(rel, "..") || archive_is_record(rel))
            continue;     /* not a message entry (an expiry or audit record) */
        replay_entry(rp, rel);
    }
    fclose(chain);
    return 0;
}

static void print_summary(const struct replay *rp)
{
    static const char *names[POLICY_OUTCOMES] = {"newly accepted", "newly rejected", "newly tempfailed",
                                                 "newly quarantined", "newly discarded"};
    printf("replayed %zu message%s from %s\n", rp->replayed, rp->replayed == 1 ? "" : "s", rp->dir);
    printf("  %-22s %zu\n", "unchanged", rp->counts[SAME]);
    for (int o = 0; o < POLICY_OUTCOMES; o++)
        printf("  %-22s %zu\n", names[o], rp->newly[o]);
    printf("  %-22s %zu\n", "partly refused", rp->counts[PARTLY_REFUSED]);
    printf("  %-22s %zu\n", "routes or TLS changed", rp->counts[ROUTES_CHANGED]);
    printf("  %-22s %zu\n", "could not be replayed", rp->counts[UNREADABLE]);
    printf("  %-22s %zu\n", "expired or missing", rp->gone);
}

int policy_replay(const struct config *cfg, int argc, char **argv)
{
    struct replay rp = {.cfg = cfg, .limit = -1, .since = -1, .until = -1};
    const char *dns_file = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (!v)
            goto usage;
        if (!strcmp(a, "--archive"))
            rp.dir = v;
        else if (!strcmp(a, "--since") || !strcmp(a, "--until")) {
            if (utc_time_parse(v, a[2] == 'u', a[2] == 'u' ? &rp.until : &rp.since) < 0) {
                fprintf(stderr, "postern: %s: '%s' is not a date (2026-12-07, \"2026-12-07 10:00\" or "
                                "\"2026-12-07 10:00:30\", UTC)\n", a, v);
                return POLICY_EXIT_ERROR;
            }
        }
        else if (!strcmp(a, "--dns-file"))
            dns_file = v;
        else if (!strcmp(a, "--limit") && (rp.limit = strtol(v, &end, 10)) >= 0 && end != v && !*end)
            ;
        else
            goto usage;
        i++;
    }
    if (!rp.dir && !(rp.dir = config_plugin_option(cfg, "archive", "dir"))) {
        fprintf(stderr, "postern: policy replay: give --archive DIR (the config has no archive.dir)\n");
        return POLICY_EXIT_ERROR;
    }
    if (!(rp.changed = tmpfile())) {
        fprintf(stderr, "postern: policy replay: no temporary file: %s\n", strerror(errno));
        return POLICY_EXIT_ERROR;
    }
    if (policy_setup(cfg, dns_file) < 0) {
        fclose(rp.changed);
        return POLICY_EXIT_ERROR;
    }
    rp.last_progress = time(NULL);
    int rc = replay_chain(&rp);
    policy_teardown();
    if (rc == 0) {
        print_summary(&rp);
        if (ftell(rp.changed) > 0) {
            printf("changed:\n");
            rewind(rp.changed);
            char chunk[65536];
            size_t n;
            while ((n = fread(chunk, 1, sizeof chunk, rp.changed)) > 0)
                fwrite(chunk, 1, n, stdout);
        }
    }
    fclose(rp.changed);
    return rc == 0 ? 0 : POLICY_EXIT_ERROR;
usage:
    fprintf(stderr, "usage: postern -c FILE policy replay [--archive DIR] [--since DATE] [--until DATE] "
                    "[--limit N] [--dns-file FILE]\n");
    return POLICY_EXIT_ERROR;
}
