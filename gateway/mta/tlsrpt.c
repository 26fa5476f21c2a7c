/* tlsrpt.c - see tlsrpt.h.
 *
 * Counts: one entry per (recipient domain, policy type, MX host), each
 * with its successes, failures and up to MAX_DETAILS failure rows (result
 * type, sending and receiving IP). Bounded: MAX_ENTRIES entries per period;
 * later domains are not counted (said once in the log).
 *
 * State: SPOOL/tlsrpt/state holds the current period and the closed one
 * still being reported, with the domains already reported; it is written
 * (tmp + rename) at most once a minute while counts change, at once when
 * a period closes or a report is queued, and at shutdown.
 *
 * Reports: when the current period ends, it becomes the closed one. For
 * each of its domains the loop looks up _smtp._tls.DOMAIN TXT; one valid
 * "v=TLSRPTv1" record with mailto: addresses gets one message (JSON, gzip,
 * base64, multipart/report; report-type="tlsrpt", RFC 8460 5.3), committed
 * by a worker through local_submit. A DNS or queue failure is retried five
 * minutes later; a day after its end a closed period is given up. */
#include "utc_time.h"
#include "tlsrpt.h"
#include "config.h"
#include "dane.h"
#include "dns.h"
#include "local_submit.h"
#include "log.h"
#include "netaddr.h"
#include "report_mail.h"
#include "workers.h"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unbound.h>
#include <unistd.h>

#define MAX_ENTRIES 4096
#define MAX_DETAILS 32
#define MAX_STRINGS 8
#define MAX_RUA 8
#define RETRY_SECONDS 300
#define GIVE_UP_SECONDS 86400
#define SAVE_SECONDS 60
#define RR_TXT 16

struct detail {
    char result[40];
    char sending_ip[64], receiving_ip[64];
    long count;
};

struct entry {
    char domain[256];
    enum tlsrpt_policy type;
    char mx[256];
    long ok, failed;
    char strings[MAX_STRINGS][140];     /* policy-string: the TLSA records */
    size_t nstrings;
    struct detail d[MAX_DETAILS];
    size_t nd;
};

enum dom_state { DOM_PENDING, DOM_ASKING, DOM_DONE };
struct dom {
    char domain[256];
    enum dom_state state;
    time_t next_try;
};

struct period {
    long long start, end;
    struct entry *e;
    size_t n;
    struct dom *doms;            /* closed period: its domains */
    size_t ndoms;
};

static bool enabled;
static long interval = 86400;
static char org[256], contact[320], from[320], submitter[256];
static char state_path[1024], tmp_path[1040];
static struct period cur, closed;
static bool dirty, full_logged;
static time_t last_save;

static const char *type_name(enum tlsrpt_policy t) { return t == TLSRPT_TLSA ? "tlsa" : "sts"; }

void tlsrpt_configure(const struct config *cfg)
{
    enabled = cfg->tlsrpt;
    interval = cfg->tlsrpt_interval > 0 ? cfg->tlsrpt_interval : 86400;
    snprintf(submitter, sizeof submitter, "%s", cfg->hostname);
    snprintf(org, sizeof org, "%s", cfg->tlsrpt_org ? cfg->tlsrpt_org : cfg->hostname);
    if (cfg->tlsrpt_contact)
        snprintf(contact, sizeof contact, "%s", cfg->tlsrpt_contact);
    else
        snprintf(contact, sizeof contact, "postmaster@%s", cfg->hostname);
    if (cfg->tlsrpt_from)
        snprintf(from, sizeof from, "%s", cfg->tlsrpt_from);
    else
        snprintf(from, sizeof from, "postmaster@%s", cfg->hostname);
}

static void period_clear(struct period *p)
{
    free(p->e);
    free(p->doms);
    *p = (struct period){0};
}

static void period_open(time_t now)
{
    long long start = (long long)now / interval * interval;
    period_clear(&cur);
    cur.start = start;
    cur.end = start + interval;
}

/* ---- counting ----------------------------------------------------- */

static struct entry *entry_for(struct period *p, const char *domain, enum tlsrpt_policy type, const char *mx)
{
    for (size_t i = 0; i < p->n; i++)
        if (p->e[i].type == type && !strcasecmp(p->e[i].domain, domain) && !strcasecmp(p->e[i].mx, mx))
            return &p->e[i];
    if (p->n == MAX_ENTRIES) {
        if (!full_logged)
            log_warn("tlsrpt: %d policies counted this period; %s and later ones are left out", MAX_ENTRIES, domain);
        full_logged = true;
        return NULL;
    }
    if (p->n % 64 == 0) {
        struct entry *n = realloc(p->e, (p->n + 64) * sizeof *n);
        if (!n)
            return NULL;
        p->e = n;
    }
    struct entry *e = &p->e[p->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->domain, sizeof e->domain, "%s", domain);
    snprintf(e->mx, sizeof e->mx, "%s", mx);
    e->type = type;
    return e;
}

/* "3 1 1 <hex>" for each record short enough to write out. */
static void note_records(struct entry *e, const struct dane_tlsa *t)
{
    for (size_t i = 0; t && i < t->n && e->nstrings < MAX_STRINGS; i++) {
        const struct dane_record *r = &t->rr[i];
        if (r->len > 64)
            continue;       /* a whole certificate or key (matching type 0) */
        char *s = e->strings[e->nstrings++];
        int o = snprintf(s, sizeof e->strings[0], "%u %u %u ", r->usage, r->selector, r->mtype);
        for (size_t k = 0; k < r->len && o + 3 <= (int)sizeof e->strings[0]; k++)
            o += snprintf(s + o, sizeof e->strings[0] - (size_t)o, "%02x", r->data[k]);
    }
}

static void add_detail(struct entry *e, const struct tlsrpt_attempt *a)
{
    char recv[64] = "";
    if (a->receiving)
        sockaddr_ip_text((const struct sockaddr *)a->receiving, recv, sizeof recv);
    const char *send = a->sending_ip ? a->sending_ip : "";
    for (size_t i = 0; i < e->nd; i++) {
        struct detail *d = &e->d[i];
        if (!strcmp(d->result, a->result) && !strcmp(d->receiving_ip, recv) && !strcmp(d->sending_ip, send)) {
            d->count++;
            return;
        }
    }
    if (e->nd == MAX_DETAILS)
        return;     /* the summary still counts it */
    struct detail *d = &e->d[e->nd++];
    snprintf(d->result, sizeof d->result, "%s", a->result);
    snprintf(d->receiving_ip, sizeof d->receiving_ip, "%s", recv);
    snprintf(d->sending_ip, sizeof d->sending_ip, "%s", send);
    d->count = 1;
}

void tlsrpt_count(const struct tlsrpt_attempt *a)
{
    if (!enabled || !a->domain[0])
        return;
    time_t now = time(NULL);
    if (!cur.start)
        period_open(now);
    struct entry *e = entry_for(&cur, a->domain, a->type, a->mx_host);
    if (!e)
        return;
    if (!e->nstrings)
        note_records(e, a->tlsa);
    if (a->result) {
        e->failed++;
        add_detail(e, a);
    } else {
        e->ok++;
    }
    dirty = true;
}

/* ---- the state file ----------------------------------------------- */

static void save_period(FILE *f, const char *tag, const struct period *p)
{
    fprintf(f, "%s\t%lld\t%lld\n", tag, p->start, p->end);
    for (size_t i = 0; i < p->n; i++) {
        const struct entry *e = &p->e[i];
        fprintf(f, "E\t%s\t%s\t%s\t%ld\t%ld\n", e->domain, type_name(e->type), e->mx, e->ok, e->failed);
        for (size_t k = 0; k < e->nstrings; k++)
            fprintf(f, "S\t%s\n", e->strings[k]);
        for (size_t k = 0; k < e->nd; k++)
            fprintf(f, "D\t%s\t%s\t%s\t%ld\n", e->d[k].result, e->d[k].sending_ip[0] ? e->d[k].sending_ip : "-",
                    e->d[k].receiving_ip[0] ? e->d[k].receiving_ip : "-", e->d[k].count);
    }
    for (size_t i = 0; i < p->ndoms; i++)
        if (p->doms[i].state == DOM_DONE)
            fprintf(f, "R\t%s\n", p->doms[i].domain);
}

static void save(void)
{
    if (!state_path[0])
        return;
    FILE *f = fopen(tmp_path, "w");
    if (!f) {
        log_warn("tlsrpt: cannot write %s: %s", tmp_path, strerror(errno));
        return;
    }
    fputs("tlsrpt 1\n", f);
    if (cur.start)
        save_period(f, "current", &cur);
    if (closed.start)
        save_period(f, "closed", &closed);
    bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp_path, state_path) < 0)
        log_warn("tlsrpt: cannot save %s: %s", state_path, strerror(errno));
    dirty = false;
    last_save = time(NULL);
}

static void add_dom(struct period *p, const char *domain, enum dom_state st)
{
    for (size_t i = 0; i < p->ndoms; i++)
        if (!strcasecmp(p->doms[i].domain, domain)) {
            if (st == DOM_DONE)
                p->doms[i].state = DOM_DONE;
            return;
        }
    struct dom *n = realloc(p->doms, (p->ndoms + 1) * sizeof *n);
    if (!n)
        return;
    p->doms = n;
    p->doms[p->ndoms] = (struct dom){.state = st};
    snprintf(p->doms[p->ndoms++].domain, sizeof n->domain, "%s", domain);
}

/* One line of the state file into *p (e: its last entry). */
static void load_line(char *line, struct period **p, struct entry **e)
{
    char *f[7] = {0};
    size_t nf = 0;
    for (char *save = NULL, *t = strtok_r(line, "\t\n", &save); t && nf < 7; t = strtok_r(NULL, "\t\n", &save))
        f[nf++] = t;
    if (nf == 3 && (!strcmp(f[0], "current") || !strcmp(f[0], "closed"))) {
        *p = !strcmp(f[0], "current") ? &cur : &closed;
        period_clear(*p);
        (*p)->start = atoll(f[1]);
        (*p)->end = atoll(f[2]);
        *e = NULL;
    } else if (*p && nf == 6 && !strcmp(f[0], "E")) {
        *e = entry_for(*p, f[1], !strcmp(f[2], "tlsa") ? TLSRPT_TLSA : TLSRPT_STS, f[3]);
        if (*e) {
            (*e)->ok = atol(f[4]);
            (*e)->failed = atol(f[5]);
        }
    } else if (*e && nf == 2 && !strcmp(f[0], "S") && (*e)->nstrings < MAX_STRINGS) {
        snprintf((*e)->strings[(*e)->nstrings++], sizeof (*e)->strings[0], "%s", f[1]);
    } else if (*e && nf == 5 && !strcmp(f[0], "D") && (*e)->nd < MAX_DETAILS) {
        struct detail *d = &(*e)->d[(*e)->nd++];
        snprintf(d->result, sizeof d->result, "%s", f[1]);
        snprintf(d->sending_ip, sizeof d->sending_ip, "%s", strcmp(f[2], "-") ? f[2] : "");
        snprintf(d->receiving_ip, sizeof d->receiving_ip, "%s", strcmp(f[3], "-") ? f[3] : "");
        d->count = atol(f[4]);
    } else if (*p == &closed && nf == 2 && !strcmp(f[0], "R")) {
        add_dom(&closed, f[1], DOM_DONE);
    }
}

static void list_domains(struct period *p)
{
    for (size_t i = 0; i < p->n; i++)
        add_dom(p, p->e[i].domain, DOM_PENDING);
}

void tlsrpt_start(const struct config *cfg)
{
    tlsrpt_configure(cfg);
    char dir[900];
    snprintf(dir, sizeof dir, "%.880s/tlsrpt", cfg->spool_dir);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        log_warn("tlsrpt: cannot create %s: %s (TLS reports are off)", dir, strerror(errno));
        return;
    }
    snprintf(state_path, sizeof state_path, "%s/state", dir);
    snprintf(tmp_path, sizeof tmp_path, "%s/state.tmp", dir);
    FILE *f = fopen(state_path, "r");
    if (!f)
        return;
    char line[1024];
    struct period *p = NULL;
    struct entry *e = NULL;
    while (fgets(line, sizeof line, f))
        load_line(line, &p, &e);
    fclose(f);
    list_domains(&closed);
    if (cur.start && cur.end - cur.start != interval)
        log_info("tlsrpt: the saved period does not match tlsrpt_interval; it is reported at its own end");
}

void tlsrpt_stop(void)
{
    if (dirty)
        save();
}

/* ---- reports ------------------------------------------------------ */

static void iso_time(long long t, char *out, size_t size) { utc_time_format((time_t)t, out, size); }

static json_t *failure_details(const struct entry *e)
{
    json_t *a = json_array();
    for (size_t k = 0; k < e->nd; k++) {
        const struct detail *d = &e->d[k];
        json_t *o = json_pack("{s:s, s:s, s:I}", "result-type", d->result, "receiving-mx-hostname", e->mx,
                              "failed-session-count", (json_int_t)d->count);
        if (d->sending_ip[0])
            json_object_set_new(o, "sending-mta-ip", json_string(d->sending_ip));
        if (d->receiving_ip[0])
            json_object_set_new(o, "receiving-ip", json_string(d->receiving_ip));
        json_array_append_new(a, o);
    }
    return a;
}

/* The RFC 8460 4.4 JSON of domain's policies in p. */
static char *report_json(const struct period *p, const char *domain, const char *id)
{
    char start[32], end[32];
    iso_time(p->start, start, sizeof start);
    iso_time(p->end - 1, end, sizeof end);
    json_t *policies = json_array();
    for (size_t i = 0; i < p->n; i++) {
        const struct entry *e = &p->e[i];
        if (strcasecmp(e->domain, domain))
            continue;
        json_t *pol = json_pack("{s:s, s:s, s:[s]}", "policy-type", type_name(e->type), "policy-domain", e->domain,
                                "mx-host", e->mx);
        if (e->nstrings) {
            json_t *s = json_array();
            for (size_t k = 0; k < e->nstrings; k++)
                json_array_append_new(s, json_string(e->strings[k]));
            json_object_set_new(pol, "policy-string", s);
        }
        json_t *item = json_pack("{s:o, s:{s:I, s:I}}", "policy", pol, "summary", "total-successful-session-count",
                                 (json_int_t)e->ok, "total-failure-session-count", (json_int_t)e->failed);
        if (e->nd)
            json_object_set_new(item, "failure-details", failure_details(e));
        json_array_append_new(policies, item);
    }
    json_t *root = json_pack("{s:s, s:{s:s, s:s}, s:s, s:s, s:o}", "organization-name", org, "date-range",
                             "start-datetime", start, "end-datetime", end, "contact-info", contact, "report-id", id,
                             "policies", policies);
    char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    return text;
}

struct submission {
    struct work work;
    char domain[256];
    long long start;
    char *msg;
    size_t len;
    char rcpts[MAX_RUA][320];
    size_t n;
    int err;
};

/* The report message (RFC 8460 5.3), or NULL. */
static char *report_message(const struct submission *s, const char *json, size_t *len)
{
    unsigned char *gz;
    size_t gzlen, b64len;
    if (report_gzip(json, strlen(json), &gz, &gzlen) < 0)
        return NULL;
    char *b64 = report_base64_lines(gz, gzlen, &b64len);
    free(gz);
    if (!b64)
        return NULL;
    char date[64], id[400], file[700], to[MAX_RUA * 330] = "";
    report_date(date, sizeof date);
    snprintf(id, sizeof id, "%lld.%s", s->start, s->domain);     /* with @submitter: the report-id */
    snprintf(file, sizeof file, "%s!%s!%lld!%lld.json.gz", submitter, s->domain, s->start, s->start + interval);
    for (size_t i = 0; i < s->n; i++)
        snprintf(to + strlen(to), sizeof to - strlen(to), "%s<%s>", i ? ",\r\n  " : "", s->rcpts[i]);
    size_t cap = b64len + strlen(to) + 4096;
    char *m = malloc(cap);
    if (m) {
        int n = snprintf(m, cap,
            "From: <%s>\r\nTo: %s\r\nSubject: Report Domain: %s Submitter: %s Report-ID: <%s@%s>\r\n"
            "TLS-Report-Domain: %s\r\nTLS-Report-Submitter: %s\r\nDate: %s\r\nMessage-ID: <%s@%s>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"=_tlsrpt\"\r\n"
            "\r\n--=_tlsrpt\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            "SMTP TLS report (RFC 8460) for %s from %s.\r\n\r\n--=_tlsrpt\r\n"
            "Content-Type: application/tlsrpt+gzip; name=\"%s\"\r\nContent-Transfer-Encoding: base64\r\n"
            "Content-Disposition: attachment; filename=\"%s\"\r\n\r\n%s\r\n--=_tlsrpt--\r\n",
            from, to, s->domain, submitter, id, submitter, s->domain, submitter, date, id, submitter, s->domain,
            org, file, file, b64);
        *len = n > 0 && (size_t)n < cap ? (size_t)n : 0;
    }
    free(b64);
    if (m && !*len) {
        free(m);
        m = NULL;
    }
    return m;
}

static struct dom *closed_dom(const char *domain, long long start)
{
    if (closed.start != start)
        return NULL;
    for (size_t i = 0; i < closed.ndoms; i++)
        if (!strcasecmp(closed.doms[i].domain, domain))
            return &closed.doms[i];
    return NULL;
}

static void retry_later(struct dom *d)
{
    d->state = DOM_PENDING;
    d->next_try = time(NULL) + RETRY_SECONDS;
}

static void submit_run(struct work *w)
{
    struct submission *s = (struct submission *)w;
    const char *rcpts[MAX_RUA];
    for (size_t i = 0; i < s->n; i++)
        rcpts[i] = s->rcpts[i];
    char qid[32];
    s->err = local_submit(from, rcpts, s->n, s->msg, s->len, qid) < 0 ? errno : 0;
    if (!s->err)
        log_info("tlsrpt: report for %s queued as %s", s->domain, qid);
}

static void submit_done(struct work *w)
{
    struct submission *s = (struct submission *)w;
    struct dom *d = closed_dom(s->domain, s->start);
    if (d && s->err) {
        log_warn("tlsrpt: report for %s not queued (%s); trying again later", s->domain, strerror(s->err));
        retry_later(d);
    } else if (d) {
        d->state = DOM_DONE;
        save();
    }
    free(s->msg);
    free(s);
}

/* The one "v=TLSRPTv1" TXT record of an answer (RFC 8460 3), joined. */
static int tlsrpt_txt(const struct ub_result *r, char *out, size_t size)
{
    int found = 0;
    for (int i = 0; r->havedata && r->data[i]; i++) {
        char txt[2048];
        size_t o = 0;
        const unsigned char *p = (const unsigned char *)r->data[i];
        for (int k = 0; k < r->len[i] && o < sizeof txt - 1;) {
            int l = p[k++];
            for (int c = 0; c < l && k < r->len[i] && o < sizeof txt - 1; c++)
                txt[o++] = (char)p[k++];
        }
        txt[o] = '\0';
        if (!strncmp(txt, "v=TLSRPTv1", 10)) {
            found++;
            snprintf(out, size, "%s", txt);
        }
    }
    return found;
}

struct asking {
    char domain[256];
    long long start;
};

/* Build domain's report for the addresses in rec and hand it to a worker. */
static void send_report(struct dom *d, const struct asking *a, const char *rec)
{
    struct submission *s = calloc(1, sizeof *s);
    if (!s) {
        retry_later(d);
        return;
    }
    if (tlsrpt_parse_record(rec, s->rcpts, MAX_RUA, &s->n) < 0 || s->n == 0) {
        d->state = DOM_DONE;      /* no mailto: address: nothing we can send */
        free(s);
        return;
    }
    snprintf(s->domain, sizeof s->domain, "%s", a->domain);
    s->start = a->start;
    char id[600];
    snprintf(id, sizeof id, "%lld.%s@%s", a->start, a->domain, submitter);
    char *json = report_json(&closed, a->domain, id);
    s->msg = json ? report_message(s, json, &s->len) : NULL;
    free(json);
    if (!s->msg) {
        free(s);
        retry_later(d);
        return;
    }
    s->work.run = submit_run;
    s->work.done = submit_done;
    workers_submit(&s->work);
}

static void on_txt(void *arg, int err, struct ub_result *r)
{
    struct asking *a = arg;
    struct dom *d = closed_dom(a->domain, a->start);
    if (!d) {
        free(a);
        return;
    }
    char rec[2048];
    if (err || !r || (r->rcode != 0 && r->rcode != 3)) {
        retry_later(d);
    } else if (tlsrpt_txt(r, rec, sizeof rec) != 1) {
        d->state = DOM_DONE;     /* no reports wanted (or an ambiguous record: none either) */
    } else {
        send_report(d, a, rec);
    }
    free(a);
}

static void ask(struct dom *d)
{
    struct asking *a = calloc(1, sizeof *a);
    if (!a)
        return;
    snprintf(a->domain, sizeof a->domain, "%s", d->domain);
    a->start = closed.start;
    d->state = DOM_ASKING;
    char name[300];
    snprintf(name, sizeof name, "_smtp._tls.%s", d->domain);
    if (dns_resolve(name, RR_TXT, on_txt, a) < 0) {
        free(a);
        retry_later(d);
    }
}

/* The current period ended: it is the closed one now (an empty one
 * leaves a closed period still being reported alone). */
static void rotate(time_t now)
{
    if (!cur.n) {
        period_open(now);
        return;
    }
    if (closed.start)
        log_warn("tlsrpt: period %lld-%lld not fully reported; giving up on the rest", closed.start, closed.end);
    period_clear(&closed);
    closed = cur;
    cur = (struct period){0};
    period_open(now);
    list_domains(&closed);
    full_logged = false;
    save();
}

void tlsrpt_tick(void)
{
    if (!state_path[0] || (!enabled && !closed.start))
        return;
    time_t now = time(NULL);
    if (!cur.start)
        period_open(now);
    if (now >= cur.end)
        rotate(now);
    if (closed.start && now > closed.end + GIVE_UP_SECONDS) {
        log_warn("tlsrpt: giving up on reports for %lld-%lld", closed.start, closed.end);
        period_clear(&closed);
        save();
    }
    bool all_done = closed.start != 0;
    for (size_t i = 0; i < closed.ndoms; i++) {
        struct dom *d = &closed.doms[i];
        all_done &= d->state == DOM_DONE;
        if (d->state == DOM_PENDING && d->next_try <= now)
            ask(d);
    }
    if (all_done) {
        period_clear(&closed);
        save();
    }
    if (dirty && now - last_save >= SAVE_SECONDS)
        save();
}
