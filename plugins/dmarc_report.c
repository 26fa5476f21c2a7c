/* dmarc_report.c - see dmarc_report.h.
 *
 * Store: REPORT_DIR/records, one tab-separated line per message (fields in
 * the order of enum field), appended under a shared flock. The reporter
 * renames it to batch.<end> when its oldest line is an interval old, takes
 * the exclusive flock (writers still holding the old file finish first; a
 * writer that then finds its file renamed opens the new one), and turns each
 * batch into reports. Policy domains already queued from a batch are listed
 * in batch.<end>.sent, so a batch retried after a temporary failure (DNS,
 * a full spool, posternd restarting) is never reported twice. Only one
 * reporter at a time works on the directory (REPORT_DIR/lock): during a
 * reload the old and new plugin instances both run one.
 */
#include "dmarc_report.h"
#include "dns_records.h"
#include "report_mail.h"
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum field {
    F_TIME, F_POLICY_DOMAIN, F_HEADER_FROM, F_SOURCE_IP, F_ENVELOPE_FROM, F_DISPOSITION, F_DKIM_ALIGNED,
    F_SPF_ALIGNED, F_REASON, F_P, F_SP, F_ADKIM, F_ASPF, F_FO, F_PCT, F_RUA, F_SPF_DOMAIN, F_SPF_SCOPE,
    F_SPF_RESULT, F_DKIM, NFIELDS
};
/* The fields that make one <record> row: equal in these = counted together. */
static const enum field row_key[] = {F_SOURCE_IP, F_HEADER_FROM, F_ENVELOPE_FROM, F_DISPOSITION, F_DKIM_ALIGNED,
                                     F_SPF_ALIGNED, F_REASON, F_SPF_DOMAIN, F_SPF_SCOPE, F_SPF_RESULT, F_DKIM};

#define MAX_LINE 4096
#define MAX_RUA 8                  /* destinations used per domain */
#define GIVE_UP_AFTER (24 * 3600)  /* a batch still failing a day after its end is dropped */

struct dmarc_reporter {
    const struct postern_host *host;
    int dirfd;
    long interval, store_max;
    char dir[512], org[256], from[320];
    dmarc_org_fn org_domain;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stop, running;
    long long full_logged;         /* the records file (its oldest line's time) already reported full */
};

void dmarc_report_defaults(struct dmarc_report_options *o)
{
    *o = (struct dmarc_report_options){.dir = "", .interval = 86400, .org = "", .from = "", .store_max = 64L << 20};
}

static int parse_long(const char *v, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || n < min || n > max)
        return -1;
    switch (*end) {
    case 'k': n *= 1024, end++; break;
    case 'm': n *= 1024 * 1024, end++; break;
    default: break;
    }
    return *end ? -1 : (*out = n, 0);
}

int dmarc_report_option(struct dmarc_report_options *o, const char *key, const char *value, char *err,
                        size_t errlen)
{
    if (!strcmp(key, "report_dir")) {
        if (value[0] != '/')
            return snprintf(err, errlen, "report_dir: an absolute directory, not '%s'", value), -1;
        o->dir = value;
    } else if (!strcmp(key, "report_interval")) {
        if (parse_long(value, 1, 30L * 86400, &o->interval) < 0)
            return snprintf(err, errlen, "report_interval: seconds from 1 to 2592000, not '%s'", value), -1;
    } else if (!strcmp(key, "report_org")) {
        o->org = value;
    } else if (!strcmp(key, "report_from")) {
        if (!strchr(value, '@') || strpbrk(value, " \t<>\r\n"))
            return snprintf(err, errlen, "report_from: an address local@domain, not '%s'", value), -1;
        o->from = value;
    } else if (!strcmp(key, "report_store_max")) {
        if (parse_long(value, 1, 1L << 30, &o->store_max) < 0 || o->store_max < 4096)
            return snprintf(err, errlen, "report_store_max: a size from 4k to 1024m, not '%s'", value), -1;
    } else {
        return 0;
    }
    return 1;
}

/* ---- the store ---- */

/* A field as it goes into a line: printable ASCII but space and tab. */
static void put_field(char *line, size_t *len, const char *v, bool last)
{
    for (const char *p = v ? v : ""; *p && *len < MAX_LINE - 2; p++)
        line[(*len)++] = (*p > ' ' && *p < 0x7f) ? *p : '?';
    line[(*len)++] = last ? '\n' : '\t';
}

static size_t format_line(const struct dmarc_row *r, char *line)
{
    char now[24], pct[12];
    snprintf(now, sizeof now, "%lld", (long long)time(NULL));
    snprintf(pct, sizeof pct, "%d", r->pct);
    const char *f[NFIELDS] = {
        [F_TIME] = now, [F_POLICY_DOMAIN] = r->policy_domain, [F_HEADER_FROM] = r->header_from,
        [F_SOURCE_IP] = r->source_ip, [F_ENVELOPE_FROM] = r->envelope_from, [F_DISPOSITION] = r->disposition,
        [F_DKIM_ALIGNED] = r->dkim_aligned, [F_SPF_ALIGNED] = r->spf_aligned, [F_REASON] = r->reason,
        [F_P] = r->p, [F_SP] = r->sp, [F_ADKIM] = r->adkim, [F_ASPF] = r->aspf, [F_FO] = r->fo, [F_PCT] = pct,
        [F_RUA] = r->rua, [F_SPF_DOMAIN] = r->spf_domain, [F_SPF_SCOPE] = r->spf_scope,
        [F_SPF_RESULT] = r->spf_result, [F_DKIM] = r->dkim,
    };
    size_t len = 0;
    for (int i = 0; i < NFIELDS; i++)
        put_field(line, &len, f[i], i == NFIELDS - 1);
    return len;
}

/* The time in the first line of an open records file, or 0. */
static long long first_time(int fd)
{
    char head[32];
    ssize_t n = pread(fd, head, sizeof head - 1, 0);
    if (n <= 0)
        return 0;
    head[n] = '\0';
    return strtoll(head, NULL, 10);
}

/* records, opened for appending (and reading its first line) and
 * share-locked; reopened when the reporter renamed it between our open and
 * our lock. */
static int open_records(struct dmarc_reporter *r)
{
    for (int tries = 0; tries < 3; tries++) {
        int fd = openat(r->dirfd, "records", O_RDWR | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
            return -1;
        struct stat a, b;
        if (flock(fd, LOCK_SH) == 0 && fstat(fd, &a) == 0 &&
            fstatat(r->dirfd, "records", &b, AT_SYMLINK_NOFOLLOW) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev)
            return fd;
        close(fd);
    }
    return errno = EAGAIN, -1;
}

void dmarc_report_record(struct dmarc_reporter *r, postern_txn *t, const struct dmarc_row *row)
{
    if (!r)
        return;
    char line[MAX_LINE];
    size_t len = format_line(row, line);
    int fd = open_records(r);
    if (fd < 0) {
        r->host->log(t, POSTERN_LOG_WARN, "dmarc: cannot record for the aggregate report: %s/records: %s", r->dir,
                     strerror(errno));
        return;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_size + (off_t)len > r->store_max) {
        long long first = first_time(fd);
        pthread_mutex_lock(&r->lock);
        bool say = r->full_logged != first;
        r->full_logged = first;
        pthread_mutex_unlock(&r->lock);
        if (say)
            r->host->log(t, POSTERN_LOG_WARN, "dmarc: aggregate report store %s/records is full (%ld bytes, "
                         "dmarc.report_store_max): further messages are left out of this report", r->dir, r->store_max);
    } else if (write(fd, line, len) != (ssize_t)len) {
        r->host->log(t, POSTERN_LOG_WARN, "dmarc: cannot record for the aggregate report: %s", strerror(errno));
    }
    close(fd);
}

/* ---- growing text ---- */

struct text {
    char *p;
    size_t len, cap;
    bool failed;
};

static void text_add(struct text *t, const char *s, size_t n)
{
    if (t->failed)
        return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (cap < t->len + n + 1)
            cap *= 2;
        char *p = cap <= (256u << 20) ? realloc(t->p, cap) : NULL;
        if (!p) {
            t->failed = true;
            return;
        }
        t->p = p;
        t->cap = cap;
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}

static void text_printf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_printf(struct text *t, const char *fmt, ...)
{
    char small[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof small)
        t->failed = true;
    else
        text_add(t, small, (size_t)n);
}

/* <name>value</name>, the value escaped for XML. */
static void xml_element(struct text *t, const char *indent, const char *name, const char *value)
{
    text_printf(t, "%s<%s>", indent, name);
    for (const char *p = value; *p; p++) {
        const char *e = *p == '&' ? "&amp;" : *p == '<' ? "&lt;" : *p == '>' ? "&gt;" : *p == '"' ? "&quot;"
                        : *p == '\'' ? "&apos;" : NULL;
        text_add(t, e ? e : p, e ? strlen(e) : 1);
    }
    text_printf(t, "</%s>\n", name);
}

/* ---- one batch into reports ---- */

struct rec {
    char *f[NFIELDS];
};

static int compare_recs(const void *a, const void *b)
{
    const struct rec *x = a, *y = b;
    int c = strcmp(x->f[F_POLICY_DOMAIN], y->f[F_POLICY_DOMAIN]);
    for (size_t i = 0; !c && i < sizeof row_key / sizeof *row_key; i++)
        c = strcmp(x->f[row_key[i]], y->f[row_key[i]]);
    return c ? c : strcmp(x->f[F_TIME], y->f[F_TIME]);
}

static bool same_row(const struct rec *x, const struct rec *y)
{
    if (strcmp(x->f[F_POLICY_DOMAIN], y->f[F_POLICY_DOMAIN]))
        return false;
    for (size_t i = 0; i < sizeof row_key / sizeof *row_key; i++)
        if (strcmp(x->f[row_key[i]], y->f[row_key[i]]))
            return false;
    return true;
}

/* The source address as the RFC's schema pattern takes it: dotted IPv4, or
 * all eight IPv6 groups (the pattern knows no "::"). */
static void schema_ip(const char *ip, char *out, size_t size)
{
    char v4[64];
    const char *plain = dns_unmapped_ip(ip, v4);
    struct in6_addr a6;
    if (strchr(plain, ':') && inet_pton(AF_INET6, plain, &a6) == 1) {
        const unsigned char *b = a6.s6_addr;
        snprintf(out, size, "%x:%x:%x:%x:%x:%x:%x:%x", b[0] << 8 | b[1], b[2] << 8 | b[3], b[4] << 8 | b[5],
                 b[6] << 8 | b[7], b[8] << 8 | b[9], b[10] << 8 | b[11], b[12] << 8 | b[13], b[14] << 8 | b[15]);
    } else {
        snprintf(out, size, "%s", plain);
    }
}

static const char *one_of(const char *v, const char *const *allowed, const char *otherwise)
{
    for (; *allowed; allowed++)
        if (!strcmp(v, *allowed))
            return v;
    return otherwise;
}

static void xml_auth_results(struct text *t, const struct rec *r)
{
    static const char *const dkim_results[] = {"none", "pass", "fail", "policy", "neutral", "temperror", "permerror",
                                               NULL};
    static const char *const spf_results[] = {"none", "neutral", "pass", "fail", "softfail", "temperror",
                                              "permerror", NULL};
    text_printf(t, "    <auth_results>\n");
    char dkim[MAX_LINE], *save = NULL;
    snprintf(dkim, sizeof dkim, "%s", r->f[F_DKIM]);
    for (char *sig = strtok_r(dkim, ",", &save); sig; sig = strtok_r(NULL, ",", &save)) {
        char *sel = strchr(sig, ':'), *res = sel ? strchr(sel + 1, ':') : NULL;
        if (!res)
            continue;
        *sel++ = '\0';
        *res++ = '\0';
        text_printf(t, "      <dkim>\n");
        xml_element(t, "        ", "domain", sig);
        if (*sel)
            xml_element(t, "        ", "selector", sel);
        xml_element(t, "        ", "result", one_of(res, dkim_results, "neutral"));
        text_printf(t, "      </dkim>\n");
    }
    text_printf(t, "      <spf>\n");
    xml_element(t, "        ", "domain", r->f[F_SPF_DOMAIN]);
    xml_element(t, "        ", "scope", strcmp(r->f[F_SPF_SCOPE], "helo") ? "mfrom" : "helo");
    xml_element(t, "        ", "result", one_of(r->f[F_SPF_RESULT], spf_results, "none"));
    text_printf(t, "      </spf>\n    </auth_results>\n");
}

static void xml_record(struct text *t, const struct rec *r, size_t count)
{
    static const char *const dispositions[] = {"none", "quarantine", "reject", NULL};
    char ip[64];
    schema_ip(r->f[F_SOURCE_IP], ip, sizeof ip);
    text_printf(t, "  <record>\n    <row>\n");
    xml_element(t, "      ", "source_ip", ip);
    text_printf(t, "      <count>%zu</count>\n      <policy_evaluated>\n", count);
    xml_element(t, "        ", "disposition", one_of(r->f[F_DISPOSITION], dispositions, "none"));
    xml_element(t, "        ", "dkim", strcmp(r->f[F_DKIM_ALIGNED], "pass") ? "fail" : "pass");
    xml_element(t, "        ", "spf", strcmp(r->f[F_SPF_ALIGNED], "pass") ? "fail" : "pass");
    if (!strcmp(r->f[F_REASON], "local_policy") || !strcmp(r->f[F_REASON], "sampled_out")) {
        text_printf(t, "        <reason>\n");
        xml_element(t, "          ", "type", r->f[F_REASON]);
        text_printf(t, "        </reason>\n");
    }
    text_printf(t, "      </policy_evaluated>\n    </row>\n    <identifiers>\n");
    xml_element(t, "      ", "envelope_from", r->f[F_ENVELOPE_FROM]);
    xml_element(t, "      ", "header_from", r->f[F_HEADER_FROM]);
    text_printf(t, "    </identifiers>\n");
    xml_auth_results(t, r);
    text_printf(t, "  </record>\n");
}

struct report {
    const char *domain;
    const struct rec *first, *end;   /* this domain's records, sorted */
    const struct rec *policy;        /* the newest: its published policy */
    long long begin, finish;
    char id[128], file[640];
};

static void xml_report(struct dmarc_reporter *r, const struct report *rep, struct text *t)
{
    static const char *const policies[] = {"none", "quarantine", "reject", NULL};
    static const char *const modes[] = {"r", "s", NULL};
    const struct rec *pol = rep->policy;
    text_printf(t, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feedback>\n  <version>1.0</version>\n");
    text_printf(t, "  <report_metadata>\n");
    xml_element(t, "    ", "org_name", r->org);
    xml_element(t, "    ", "email", r->from);
    xml_element(t, "    ", "report_id", rep->id);
    text_printf(t, "    <date_range>\n      <begin>%lld</begin>\n      <end>%lld</end>\n    </date_range>\n",
                rep->begin, rep->finish);
    text_printf(t, "  </report_metadata>\n  <policy_published>\n");
    xml_element(t, "    ", "domain", rep->domain);
    xml_element(t, "    ", "adkim", one_of(pol->f[F_ADKIM], modes, "r"));
    xml_element(t, "    ", "aspf", one_of(pol->f[F_ASPF], modes, "r"));
    const char *p = one_of(pol->f[F_P], policies, "none");
    xml_element(t, "    ", "p", p);
    xml_element(t, "    ", "sp", one_of(pol->f[F_SP], policies, p));
    xml_element(t, "    ", "pct", pol->f[F_PCT]);
    xml_element(t, "    ", "fo", pol->f[F_FO][0] ? pol->f[F_FO] : "0");
    text_printf(t, "  </policy_published>\n");
    for (const struct rec *x = rep->first; x < rep->end;) {
        const struct rec *y = x;
        while (y < rep->end && same_row(x, y))
            y++;
        xml_record(t, x, (size_t)(y - x));
        x = y;
    }
    text_printf(t, "</feedback>\n");
}

/* gzip (RFC 1952) of in into out. */
static int gzip_text(const struct text *in, struct text *out)
{
    unsigned char *gz;
    size_t n;
    if (report_gzip(in->p, in->len, &gz, &n) < 0)
        return -1;
    out->len = 0;
    text_add(out, (const char *)gz, n);
    free(gz);
    return out->failed ? -1 : 0;
}

/* base64 in lines of 76 characters, each ended by CRLF. */
static void base64_lines(struct text *out, const unsigned char *in, size_t n)
{
    size_t len;
    char *b64 = report_base64_lines(in, n, &len);
    if (!b64) {
        out->failed = true;
        return;
    }
    text_add(out, b64, len);
    free(b64);
}

/* ---- destinations ---- */

struct destination {
    char addr[320];
    unsigned long long max;   /* the URI's "!size" limit, 0 = none */
};

static int parse_mailto(const char *uri, size_t n, struct destination *d)
{
    return report_parse_mailto(uri, n, d->addr, sizeof d->addr, &d->max);
}

enum verdict { DEST_OK, DEST_REFUSED, DEST_TEMPFAIL };

/* RFC 7489 7.1: a destination outside the policy domain's organizational
 * domain must publish <policy-domain>._report._dmarc.<its host>. */
static enum verdict destination_verified(struct dmarc_reporter *r, const char *domain, const char *addr)
{
    const char *host = strrchr(addr, '@') + 1;
    char org_a[256], org_b[256];
    r->org_domain(domain, org_a, sizeof org_a);
    r->org_domain(host, org_b, sizeof org_b);
    if (!strcasecmp(org_a, org_b))
        return DEST_OK;
    char name[600], txt[512];
    snprintf(name, sizeof name, "%s._report._dmarc.%s", domain, host);
    struct dns_answer *a = malloc(sizeof *a);
    if (!a)
        return DEST_TEMPFAIL;
    enum dns_status st = dns_lookup(r->host, name, ns_t_txt, a);
    enum verdict v = st == DNS_TEMPFAIL ? DEST_TEMPFAIL : DEST_REFUSED;
    for (int i = 0; st == DNS_OK && i < a->count; i++)
        if (dns_txt(a, i, txt, sizeof txt) >= 0 && !strncasecmp(txt, "v=DMARC1", 8))
            v = DEST_OK;
    free(a);
    return v;
}

/* The verified destinations of rua; DEST_TEMPFAIL if one could not be
 * checked now (the report waits for the next round). */
static enum verdict destinations(struct dmarc_reporter *r, const char *domain, const char *rua,
                                 struct destination *out, size_t *n)
{
    *n = 0;
    for (const char *p = rua; *p && *n < MAX_RUA;) {
        size_t len = strcspn(p, ",");
        struct destination d;
        if (parse_mailto(p, len, &d) < 0) {
            r->host->log(NULL, POSTERN_LOG_INFO, "dmarc: %s: rua URI '%.*s' is not a mailto: address; skipped",
                         domain, (int)len, p);
        } else {
            enum verdict v = destination_verified(r, domain, d.addr);
            if (v == DEST_TEMPFAIL)
                return DEST_TEMPFAIL;
            if (v == DEST_OK)
                out[(*n)++] = d;
            else
                r->host->log(NULL, POSTERN_LOG_WARN, "dmarc: %s: report destination <%s> is outside the domain and "
                             "has no %s._report._dmarc record (RFC 7489 7.1); not sent there", domain, d.addr, domain);
        }
        p += len + (p[len] == ',');
    }
    return DEST_OK;
}

/* ---- the message ---- */

static void build_message(struct dmarc_reporter *r, const struct report *rep, const struct text *gz,
                          const struct destination *to, size_t nto, struct text *m)
{
    char date[64];
    report_date(date, sizeof date);
    text_printf(m, "From: <%s>\r\nTo: ", r->from);
    for (size_t i = 0; i < nto; i++)
        text_printf(m, "%s<%s>", i ? ",\r\n  " : "", to[i].addr);
    text_printf(m, "\r\nSubject: Report Domain: %s Submitter: %s Report-ID: <%s>\r\n", rep->domain, r->org, rep->id);
    text_printf(m, "Date: %s\r\nMessage-ID: <%s@%s>\r\nMIME-Version: 1.0\r\n", date, rep->id, r->host->hostname());
    text_printf(m, "Content-Type: multipart/mixed; boundary=\"=_dmarc_%s\"\r\n\r\n", rep->id);
    text_printf(m, "--=_dmarc_%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n", rep->id);
    text_printf(m, "DMARC aggregate report (RFC 7489) for %s from %s,\r\ncovering %lld to %lld (seconds since "
                "1970, UTC).\r\n\r\n", rep->domain, r->org, rep->begin, rep->finish);
    text_printf(m, "--=_dmarc_%s\r\nContent-Type: application/gzip; name=\"%s\"\r\n", rep->id, rep->file);
    text_printf(m, "Content-Disposition: attachment; filename=\"%s\"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
                rep->file);
    base64_lines(m, (const unsigned char *)gz->p, gz->len);
    text_printf(m, "\r\n--=_dmarc_%s--\r\n", rep->id);
}

/* 0: queued or nothing to send, 1: try again later. */
static int send_report(struct dmarc_reporter *r, struct report *rep)
{
    struct destination to[MAX_RUA];
    size_t nto;
    if (destinations(r, rep->domain, rep->policy->f[F_RUA], to, &nto) == DEST_TEMPFAIL) {
        r->host->log(NULL, POSTERN_LOG_WARN, "dmarc: %s: a report destination could not be checked (DNS); the "
                     "report waits for the next round", rep->domain);
        return 1;
    }
    struct text xml = {0}, gz = {0}, msg = {0};
    xml_report(r, rep, &xml);
    int rc = 0;
    if (xml.failed || gzip_text(&xml, &gz) < 0) {
        r->host->log(NULL, POSTERN_LOG_ERROR, "dmarc: %s: cannot build the report (out of memory)", rep->domain);
        rc = 1;
    } else if (nto) {
        build_message(r, rep, &gz, to, nto, &msg);
        const char *rcpts[MAX_RUA];
        size_t n = 0;
        for (size_t i = 0; i < nto; i++)
            if (!to[i].max || msg.len <= to[i].max)
                rcpts[n++] = to[i].addr;
            else
                r->host->log(NULL, POSTERN_LOG_WARN, "dmarc: %s: the report (%zu bytes) is over <%s>'s limit of %llu "
                             "bytes; not sent there", rep->domain, msg.len, to[i].addr, to[i].max);
        char qid[17] = "";
        if (n && (msg.failed || r->host->submit_message(r->from, rcpts, n, msg.p, msg.len, qid) < 0)) {
            int e = msg.failed ? ENOMEM : errno;
            r->host->log(NULL, e == EINVAL || e == EFBIG ? POSTERN_LOG_ERROR : POSTERN_LOG_WARN,
                         "dmarc: %s: cannot queue the aggregate report: %s", rep->domain, strerror(e));
            rc = e == EINVAL || e == EFBIG ? 0 : 1;
        } else if (n) {
            r->host->log(NULL, POSTERN_LOG_INFO, "dmarc: aggregate report %s for %s (%zu rows' messages, %zu bytes "
                         "gzip) queued as %s to %zu destination(s)", rep->id, rep->domain, (size_t)(rep->end - rep->first),
                         gz.len, qid, n);
        }
    }
    free(xml.p);
    free(gz.p);
    free(msg.p);
    return rc;
}

/* ---- batches ---- */

/* Split the batch text into records; malformed lines are skipped. */
static struct rec *parse_batch(char *data, size_t *n)
{
    size_t lines = 0;
    for (char *p = data; (p = strchr(p, '\n')); p++)
        lines++;
    struct rec *recs = calloc(lines ? lines : 1, sizeof *recs);
    *n = 0;
    for (char *line = data, *next; recs && line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        struct rec *x = &recs[*n];
        int i = 0;
        for (char *f = line, *tab; f && i < NFIELDS; f = tab, i++) {
            tab = strchr(f, '\t');
            if (tab)
                *tab++ = '\0';
            x->f[i] = f;
        }
        if (i == NFIELDS && x->f[F_POLICY_DOMAIN][0] && x->f[F_RUA][0])
            (*n)++;
    }
    return recs;
}

static char *read_file_at(int dirfd, const char *name, size_t max, size_t *len, int lock)
{
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    if (lock)
        flock(fd, lock);
    struct stat st;
    char *data = fstat(fd, &st) == 0 && (size_t)st.st_size <= max ? malloc((size_t)st.st_size + 1) : NULL;
    ssize_t got = data ? pread(fd, data, (size_t)st.st_size, 0) : -1;
    close(fd);
    if (got < 0) {
        free(data);
        return NULL;
    }
    data[got] = '\0';
    *len = (size_t)got;
    return data;
}

/* Whether domain is listed in batch.<end>.sent. */
static bool already_sent(const char *sent, const char *domain)
{
    size_t n = strlen(domain);
    for (const char *p = sent; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (!strncmp(p, domain, n) && (p[n] == '\n' || !p[n]))
            return true;
    return false;
}

static void mark_sent(struct dmarc_reporter *r, const char *sent_name, const char *domain)
{
    int fd = openat(r->dirfd, sent_name, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    char line[300];
    int n = snprintf(line, sizeof line, "%s\n", domain);
    if (write(fd, line, (size_t)n) != n || fsync(fd) < 0)
        r->host->log(NULL, POSTERN_LOG_WARN, "dmarc: %s/%s: %s", r->dir, sent_name, strerror(errno));
    close(fd);
}

/* Reports for every policy domain of batch.<end>; 0 when the batch is
 * finished (it is removed), 1 when some report must be tried again. */
static int process_batch(struct dmarc_reporter *r, const char *name, long long end)
{
    char sent_name[300];
    snprintf(sent_name, sizeof sent_name, "%s.sent", name);
    size_t len, sent_len, n;
    char *data = read_file_at(r->dirfd, name, (size_t)r->store_max + 1024 * 1024, &len, LOCK_EX);
    char *sent = read_file_at(r->dirfd, sent_name, 1 << 20, &sent_len, 0);
    struct rec *recs = data ? parse_batch(data, &n) : NULL;
    int again = data && !recs;
    if (recs) {
        qsort(recs, n, sizeof *recs, compare_recs);
        for (size_t i = 0; i < n;) {
            struct report rep = {.domain = recs[i].f[F_POLICY_DOMAIN], .first = &recs[i], .finish = end};
            size_t j = i;
            rep.begin = end;
            rep.policy = &recs[i];
            for (; j < n && !strcmp(recs[j].f[F_POLICY_DOMAIN], rep.domain); j++) {
                long long t = strtoll(recs[j].f[F_TIME], NULL, 10);
                if (t < rep.begin)
                    rep.begin = t;
                if (strcmp(recs[j].f[F_TIME], rep.policy->f[F_TIME]) > 0)
                    rep.policy = &recs[j];
            }
            rep.end = &recs[j];
            snprintf(rep.id, sizeof rep.id, "%lld.%s", end, rep.domain);
            snprintf(rep.file, sizeof rep.file, "%s!%s!%lld!%lld.xml.gz", r->host->hostname(), rep.domain, rep.begin,
                     end);
            if (!already_sent(sent, rep.domain)) {
                if (send_report(r, &rep) == 0)
                    mark_sent(r, sent_name, rep.domain);
                else
                    again = 1;
            }
            i = j;
        }
    }
    if (again && time(NULL) - end > GIVE_UP_AFTER + r->interval) {
        r->host->log(NULL, POSTERN_LOG_ERROR, "dmarc: giving up on the aggregate reports of %s/%s (ended %lld)", r->dir,
                     name, end);
        again = 0;
    }
    if (!again) {
        unlinkat(r->dirfd, name, 0);
        unlinkat(r->dirfd, sent_name, 0);
    }
    free(recs);
    free(data);
    free(sent);
    return again;
}

/* records -> batch.<now>, once its oldest line is an interval old. */
static void rotate(struct dmarc_reporter *r)
{
    int fd = openat(r->dirfd, "records", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return;
    long long first = first_time(fd);
    close(fd);
    long long now = (long long)time(NULL);
    if (!first || now - first < r->interval)
        return;
    char name[64];
    snprintf(name, sizeof name, "batch.%lld", now);
    if (renameat2(r->dirfd, "records", r->dirfd, name, RENAME_NOREPLACE) < 0 && errno != EEXIST && errno != ENOENT)
        r->host->log(NULL, POSTERN_LOG_WARN, "dmarc: %s: cannot start a report: %s", r->dir, strerror(errno));
}

static void run_batches(struct dmarc_reporter *r)
{
    int lock = openat(r->dirfd, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (lock < 0 || flock(lock, LOCK_EX | LOCK_NB) < 0) {   /* another generation's reporter is at work */
        if (lock >= 0)
            close(lock);
        return;
    }
    rotate(r);
    DIR *d = fdopendir(dup(r->dirfd));
    if (d) {
        rewinddir(d);
        struct dirent *e;
        while ((e = readdir(d))) {
            char *end;
            long long t = strncmp(e->d_name, "batch.", 6) ? 0 : strtoll(e->d_name + 6, &end, 10);
            if (t > 0 && !*end)
                process_batch(r, e->d_name, t);
        }
        closedir(d);
    }
    close(lock);
}

static void *reporter_main(void *arg)
{
    struct dmarc_reporter *r = arg;
    long period = r->interval / 4 < 1 ? 1 : r->interval / 4 > 60 ? 60 : r->interval / 4;
    pthread_mutex_lock(&r->lock);
    while (!r->stop) {
        pthread_mutex_unlock(&r->lock);
        run_batches(r);
        pthread_mutex_lock(&r->lock);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += period;
        while (!r->stop && pthread_cond_timedwait(&r->wake, &r->lock, &until) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

struct dmarc_reporter *dmarc_reporter_start(const struct postern_host *host, const struct dmarc_report_options *o,
                                            dmarc_org_fn org, char *err, size_t errlen)
{
    err[0] = '\0';
    if (!o->dir[0])
        return NULL;
    if (POSTERN_HOST_REQUIRE(host, submit_message, err, errlen) < 0)
        return NULL;
    int dirfd = open(o->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dirfd < 0 || faccessat(dirfd, ".", W_OK, AT_EACCESS) < 0) {
        snprintf(err, errlen, "report_dir %s: %s (a directory the daemon's user can write)", o->dir, strerror(errno));
        if (dirfd >= 0)
            close(dirfd);
        return NULL;
    }
    struct dmarc_reporter *r = calloc(1, sizeof *r);
    if (!r) {
        close(dirfd);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->host = host;
    r->dirfd = dirfd;
    r->interval = o->interval;
    r->store_max = o->store_max;
    r->org_domain = org;
    snprintf(r->dir, sizeof r->dir, "%s", o->dir);
    snprintf(r->org, sizeof r->org, "%s", o->org[0] ? o->org : host->hostname());
    if (o->from[0])
        snprintf(r->from, sizeof r->from, "%s", o->from);
    else
        snprintf(r->from, sizeof r->from, "postmaster@%s", host->hostname());
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->wake, NULL);
    if (!host->checking()) {
        if (pthread_create(&r->thread, NULL, reporter_main, r) != 0) {
            snprintf(err, errlen, "cannot start the report thread");
            dmarc_reporter_stop(r);
            return NULL;
        }
        r->running = true;
    }
    return r;
}

void dmarc_reporter_stop(struct dmarc_reporter *r)
{
    if (!r)
        return;
    if (r->running) {
        pthread_mutex_lock(&r->lock);
        r->stop = true;
        pthread_cond_signal(&r->wake);
        pthread_mutex_unlock(&r->lock);
        pthread_join(r->thread, NULL);
    }
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->wake);
    close(r->dirfd);
    free(r);
}
