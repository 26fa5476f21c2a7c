/* mta_sts.c - MTA-STS discovery (TXT via dns.c), policy fetch (blocking
 * HTTPS on a worker thread), parse, cache. */
#include "mta_sts.h"
#include "dns.h"
#include "https_client.h"
#include "log.h"
#include "tls.h"
#include "workers.h"
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unbound.h>

#define RR_A 1
#define RR_TXT 16
#define CACHE_SIZE 128
#define MAX_POLICY (64 * 1024)

struct cache_entry {
    char domain[256];
    char id[64];
    time_t expires;
    struct sts_policy policy;
};

static const struct config *cfg;
static struct cache_entry cache[CACHE_SIZE];

void mta_sts_init(const struct config *c) { cfg = c; }

int sts_parse(const char *text, size_t len, struct sts_policy *out)
{
    memset(out, 0, sizeof *out);
    bool version = false, mode = false;
    size_t pos = 0;
    while (pos < len) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - line) : len - pos;
        pos += n + (nl ? 1 : 0);
        while (n && (line[n - 1] == '\r' || line[n - 1] == ' '))
            n--;
        char buf[300];
        if (n >= sizeof buf)
            continue;
        memcpy(buf, line, n);
        buf[n] = '\0';
        char *colon = strchr(buf, ':');
        if (!colon)
            continue;
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        if (!strcmp(buf, "version"))
            version = !strcmp(v, "STSv1");
        else if (!strcmp(buf, "mode")) {
            mode = true;
            out->mode = !strcmp(v, "enforce") ? STS_ENFORCE : !strcmp(v, "testing") ? STS_TESTING : STS_NONE;
            if (strcmp(v, "enforce") && strcmp(v, "testing") && strcmp(v, "none"))
                return -1;
        } else if (!strcmp(buf, "mx") && out->nmx < STS_MAX_MX)
            snprintf(out->mx[out->nmx++], sizeof out->mx[0], "%s", v);
        else if (!strcmp(buf, "max_age"))
            out->max_age = strtol(v, NULL, 10);
    }
    if (!version || !mode || out->max_age <= 0 || (out->mode != STS_NONE && out->nmx == 0))
        return -1;
    if (out->max_age > 31557600)
        out->max_age = 31557600;
    return 0;
}

bool sts_mx_matches(const struct sts_policy *p, const char *host)
{
    size_t hl = strlen(host);
    if (hl && host[hl - 1] == '.')
        hl--;
    for (int i = 0; i < p->nmx; i++) {
        const char *pat = p->mx[i];
        if (pat[0] == '*' && pat[1] == '.') {
            /* "*.example.net" matches exactly one more label */
            const char *dot = memchr(host, '.', hl);
            size_t sl = strlen(pat + 1);
            if (dot && (size_t)(host + hl - dot) == sl && !strncasecmp(dot, pat + 1, sl) && dot != host)
                return true;
        } else if (strlen(pat) == hl && !strncasecmp(pat, host, hl)) {
            return true;
        }
    }
    return false;
}

/* ---- a lookup in flight ---- */

struct sts_req {
    struct work work;
    char domain[256];
    char id[64];
    struct in_addr addr;
    sts_cb cb;
    void *arg;
    struct sts_policy policy;
    int ok;
    char why[300];             /* why the fetch failed, when it did */
};

static struct cache_entry *cache_slot(const char *domain)
{
    unsigned h = 5381;
    for (const char *p = domain; *p; p++)
        h = h * 33 + (unsigned char)(*p | 0x20);
    return &cache[h % CACHE_SIZE];
}

static void finish(struct sts_req *r, const struct sts_policy *p)
{
    r->cb(r->arg, p);
    free(r);
}

/* The policy by a blocking HTTPS GET on a worker (https_client.c: the
 * certificate verified for mta-sts.DOMAIN, a 10 s timeout, chunked answers
 * decoded), to the address our own resolver found. Only a 200 of
 * text/plain counts (RFC 8461 3.2: a web server that lets users put HTML
 * or images at that path does not make a policy); a redirect is not
 * followed (3.3). */
static void fetch_run(struct work *w)
{
    struct sts_req *r = (struct sts_req *)w;
    char host[300], ip[INET_ADDRSTRLEN], why[300];
    snprintf(host, sizeof host, "mta-sts.%s", r->domain);
    inet_ntop(AF_INET, &r->addr, ip, sizeof ip);
    struct https_target t = {.host = host, .connect_to = ip, .port = 443, .ctx = tls_client_ctx(), .timeout = 10,
                             .want_type = "text/plain", .max_response = MAX_POLICY + 8192};
    struct buf body;
    buf_init(&body);
    int code = https_request(&t, "GET", "/.well-known/mta-sts.txt", "", NULL, 0, &body, why, sizeof why);
    if (code < 0)
        snprintf(r->why, sizeof r->why, "%s", why);
    else if (code != 200)
        snprintf(r->why, sizeof r->why, "HTTP status %d", code);
    else if (body.len > MAX_POLICY)
        snprintf(r->why, sizeof r->why, "the policy is over 64 KiB");
    else
        r->ok = sts_parse(buf_head(&body), body.len, &r->policy) == 0;
    buf_free(&body);
}

static void fetch_done(struct work *w)
{
    struct sts_req *r = (struct sts_req *)w;
    struct cache_entry *c = cache_slot(r->domain);
    if (!r->ok) {
        log_warn("MTA-STS: %s publishes a policy (id %s) but it could not be fetched or parsed (%s)%s", r->domain,
                 r->id, r->why[0] ? r->why : "not a valid policy",
                 !strcasecmp(c->domain, r->domain) && c->expires > time(NULL) ? "; using the cached one" : "");
        finish(r, !strcasecmp(c->domain, r->domain) && c->expires > time(NULL) ? &c->policy : NULL);
        return;
    }
    snprintf(c->domain, sizeof c->domain, "%s", r->domain);
    snprintf(c->id, sizeof c->id, "%s", r->id);
    c->policy = r->policy;
    c->expires = time(NULL) + r->policy.max_age;
    log_info("MTA-STS: %s policy %s, mode %s, %d mx pattern(s), max_age %ld", r->domain, r->id,
             r->policy.mode == STS_ENFORCE ? "enforce" : r->policy.mode == STS_TESTING ? "testing" : "none",
             r->policy.nmx, r->policy.max_age);
    finish(r, &c->policy);
}

static void on_host(void *arg, int err, struct ub_result *res)
{
    struct sts_req *r = arg;
    if (err || !res || !res->havedata || res->len[0] != 4) {
        log_warn("MTA-STS: no address for mta-sts.%s", r->domain);
        finish(r, NULL);
        return;
    }
    memcpy(&r->addr, res->data[0], 4);
    r->work.run = fetch_run;
    r->work.done = fetch_done;
    workers_submit(&r->work);
}

static void on_txt(void *arg, int err, struct ub_result *res)
{
    struct sts_req *r = arg;
    for (int i = 0; !err && res && res->havedata && res->data[i]; i++) {
        /* TXT rdata: length-prefixed strings; the record must be one "v=STSv1; id=..." */
        char txt[512] = "";
        size_t o = 0;
        for (int k = 0; k < res->len[i] && o + 1 < sizeof txt;) {
            int l = (unsigned char)res->data[i][k++];
            for (int j = 0; j < l && k < res->len[i] && o + 1 < sizeof txt; j++)
                txt[o++] = res->data[i][k++];
        }
        txt[o] = '\0';
        char *id = strstr(txt, "id=");
        if (strncmp(txt, "v=STSv1", 7) || !id)
            continue;
        snprintf(r->id, sizeof r->id, "%.*s", (int)strcspn(id + 3, "; "), id + 3);
        struct cache_entry *c = cache_slot(r->domain);
        if (!strcasecmp(c->domain, r->domain) && !strcmp(c->id, r->id) && c->expires > time(NULL)) {
            finish(r, &c->policy);
            return;
        }
        char host[300];
        snprintf(host, sizeof host, "mta-sts.%s", r->domain);
        if (dns_resolve(host, RR_A, on_host, r) < 0)
            finish(r, NULL);
        return;
    }
    finish(r, NULL);    /* no (valid) TXT record: no policy */
}

void mta_sts_lookup(const char *domain, sts_cb cb, void *arg)
{
    struct sts_req *r = calloc(1, sizeof *r);
    if (!r || !cfg->mta_sts) {
        free(r);
        cb(arg, NULL);
        return;
    }
    snprintf(r->domain, sizeof r->domain, "%s", domain);
    r->cb = cb;
    r->arg = arg;
    char name[300];
    snprintf(name, sizeof name, "_mta-sts.%s", domain);
    if (dns_resolve(name, RR_TXT, on_txt, r) < 0)
        finish(r, NULL);
}
