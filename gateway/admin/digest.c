/* digest.c - the daily spam quarantine digest: once a day (digest_time,
 * UTC), or when an admin asks (`postern digest`), every recipient with
 * copies newly held in the spam quarantine gets one message through
 * posternd's own queue, listing them (date, sender, subject, why) with
 * signed links (signed_token.c: release, release and allow, block, delete;
 * and one opening their quarantine pages), as text and HTML alternatives,
 * never with a word of the held mail's body. The links' key is
 * SPOOL/digest.key, made on first start, readable by the daemon's user only.
 * Recipient domains in digest_off_domains get none. Collected on the loop,
 * written and submitted on a worker (local_submit may block). */
#include "digest.h"
#include "console_web.h"
#include "buf.h"
#include "local_submit.h"
#include "log.h"
#include "queue.h"
#include "signed_token.h"
#include "smtp_parse.h"
#include "spool.h"
#include "workers.h"
#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define KEY_LEN 32
#define MAX_ITEMS 100000          /* copies in one run */
#define PER_DIGEST 200            /* listed per recipient; the rest are counted */

static const struct config *cfg;
static unsigned char key[KEY_LEN];
static bool have_key;
static char last_path[4096];
static int64_t last_run;          /* copies that arrived after it are new */
static int64_t timer_since;       /* the timed digest is due at the first digest_time after it */

struct item {
    char qid[QID_LEN];
    char *sender, *rcpt, *reason;
    int64_t arrival;
};

struct run {
    struct work work;
    struct item *items;
    size_t n, cap;
    int64_t since, until;
    size_t sent, failed;
    /* the generation's settings, copied: a reload may free it meanwhile */
    char url[512], hostname[256];
    long lifetime;
};

const unsigned char *digest_key(size_t *len)
{
    *len = KEY_LEN;
    return have_key ? key : NULL;
}

/* SPOOL/digest.key: read, or made (0600, the daemon's user). */
static int load_key(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        unsigned char fresh[KEY_LEN];
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 || RAND_bytes(fresh, sizeof fresh) != 1 || write(fd, fresh, sizeof fresh) != (ssize_t)sizeof fresh ||
            fsync(fd) < 0) {
            snprintf(err, errlen, "%s: cannot make the digest key: %s", path, strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        close(fd);
        fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0 || read(fd, key, sizeof key) != (ssize_t)sizeof key) {
        snprintf(err, errlen, "%s: cannot read the digest key: %s", path, fd < 0 ? strerror(errno) : "too short");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    have_key = true;
    return 0;
}

int digest_start(const struct config *c, char *err, size_t errlen)
{
    cfg = c;
    char path[4096];
    snprintf(path, sizeof path, "%s/digest.key", c->spool_dir);
    snprintf(last_path, sizeof last_path, "%s/digest.last", c->spool_dir);
    FILE *f = fopen(last_path, "r");
    long long t = 0;
    if (f && fscanf(f, "%lld", &t) == 1)
        last_run = t;
    if (f)
        fclose(f);
    /* no run yet: the first digest goes at the next digest_time, not at this start */
    timer_since = last_run ? last_run : (int64_t)time(NULL);
    return load_key(path, err, errlen);
}

void digest_configure(const struct config *c) { cfg = c; }

/* ---- collecting, on the loop ---------------------------------------- */

static bool domain_off(const char *rcpt)
{
    const char *at = strrchr(rcpt, '@'), *list = cfg->digest_off_domains;
    for (const char *p = list; at && p && *p; p += strspn(p, ", \t")) {
        size_t n = strcspn(p, ", \t");
        if (n && strlen(at + 1) == n && !strncasecmp(at + 1, p, n))
            return true;
        p += n;
    }
    return false;
}

/* The copies listed in a digest already ("QID\trcpt", sorted): a copy is
 * listed once. After a restart the set is empty and copies that arrived
 * before the last run (digest.last) count as listed. */
static char **seen, **next_seen;
static size_t nseen, nnext;

static int cmp_key(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static bool seen_before(const char *copy)
{
    return nseen && bsearch(&copy, seen, nseen, sizeof *seen, cmp_key) != NULL;
}

static void keep_seen(const char *copy)
{
    char **n = realloc(next_seen, (nnext + 1) * sizeof *n);
    if (n && (n[nnext] = strdup(copy))) {
        next_seen = n;
        nnext++;
    } else if (n) {
        next_seen = n;
    }
}

/* The set becomes the copies held now (listed now or before). */
static void swap_seen(void)
{
    for (size_t i = 0; i < nseen; i++)
        free(seen[i]);
    free(seen);
    seen = next_seen;
    nseen = nnext;
    next_seen = NULL;
    nnext = 0;
    qsort(seen, nseen, sizeof *seen, cmp_key);
}

static void collect(void *ctx, const char *qid, const char *sender, const char *rcpt, const char *reason,
                    int64_t arrival)
{
    struct run *r = ctx;
    char copy[QID_LEN + 330];
    snprintf(copy, sizeof copy, "%s\t%.320s", qid, rcpt);
    keep_seen(copy);
    if (seen_before(copy) || (!nseen && arrival < r->since) || domain_off(rcpt) || r->n == MAX_ITEMS)
        return;
    if (r->n == r->cap) {
        size_t nc = r->cap ? 2 * r->cap : 64;
        struct item *n = realloc(r->items, nc * sizeof *n);
        if (!n)
            return;
        r->items = n;
        r->cap = nc;
    }
    struct item *it = &r->items[r->n];
    memcpy(it->qid, qid, QID_LEN);
    it->sender = strdup(sender);
    it->rcpt = strdup(rcpt);
    it->reason = strdup(reason);
    it->arrival = arrival;
    if (it->sender && it->rcpt && it->reason)
        r->n++;
}

/* ---- writing, on a worker ------------------------------------------- */

static int by_rcpt(const void *a, const void *b)
{
    const struct item *x = a, *y = b;
    int c = strcasecmp(x->rcpt, y->rcpt);
    return c ? c : (x->arrival > y->arrival) - (x->arrival < y->arrival);
}

static void link_for(const struct run *r, const char *action, const struct item *it, int64_t expires, char *out,
                     size_t size)
{
    char rcpt[3 * 320 + 1], payload[SIGNED_TOKEN_MAX], token[SIGNED_TOKEN_MAX * 2], nonce[33];
    unsigned char rnd[16];
    RAND_bytes(rnd, sizeof rnd);
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(nonce + 2 * i, 3, "%02x", rnd[i]);
    if (xtext_encode(it->rcpt, rcpt, sizeof rcpt) < 0)    /* the recipient as one word */
        rcpt[0] = '\0';
    snprintf(payload, sizeof payload, "1 %s %s %s %lld %s", action, action[0] == 'o' ? "-" : it->qid, rcpt,
             (long long)expires, nonce);
    if (token_make(key, sizeof key, payload, token, sizeof token) < 0)
        token[0] = '\0';
    snprintf(out, size, "%s/my/link?t=%s", r->url, token);
}

/* One recipient's digest, items[from..to). */
static int write_digest(struct run *r, size_t from, size_t to)
{
    const char *rcpt = r->items[from].rcpt;
    int64_t expires = (int64_t)time(NULL) + r->lifetime;
    char id[QID_LEN], date[64], boundary[40], link[2200];
    qid_generate(id);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    snprintf(boundary, sizeof boundary, "=_digest_%s", id);
    size_t n = to - from;
    struct buf text, htm, msg;
    buf_init(&text);
    buf_init(&htm);
    buf_init(&msg);
    buf_printf(&text, "%zu new message(s) were held for you as spam.\r\n\r\n", n);
    buf_printf(&htm, "<p>%zu new message(s) were held for you as spam.</p>\r\n<table>\r\n", n);
    for (size_t i = from; i < to && i < from + PER_DIGEST; i++) {
        const struct item *it = &r->items[i];
        char subject[300], when[40];
        spool_subject(it->qid, subject, sizeof subject);
        time_t at = (time_t)it->arrival;
        gmtime_r(&at, &tm);
        strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &tm);
        buf_printf(&text, "%s  from <%s>\r\n  %s\r\n  (%s)\r\n", when, it->sender, subject[0] ? subject : "(no subject)",
                   it->reason);
        buf_printf(&htm, "<tr><td>%s</td><td>", when);
        html(&htm, it->sender);
        buf_puts(&htm, "</td><td>");
        html(&htm, subject[0] ? subject : "(no subject)");
        buf_puts(&htm, "</td><td>");
        html(&htm, it->reason);
        buf_puts(&htm, "</td><td>");   /* subject and sender are at most 300 and 320 bytes */
        static const char *const acts[][2] = {{"release", "Release"}, {"allow", "Release and always allow"},
                                              {"block", "Block sender"}, {"delete", "Delete"}};
        for (size_t k = 0; k < 4; k++) {
            link_for(r, acts[k][0], it, expires, link, sizeof link);
            buf_printf(&text, "  %s: %s\r\n", acts[k][1], link);
            buf_printf(&htm, "\r\n<a href=\"%s\">%s</a>", link, acts[k][1]);     /* a line each: < 998 */
        }
        buf_puts(&text, "\r\n");
        buf_puts(&htm, "</td></tr>\r\n");
    }
    if (n > PER_DIGEST)
        buf_printf(&text, "... and %zu more.\r\n", n - PER_DIGEST);
    link_for(r, "open", &r->items[from], expires, link, sizeof link);
    buf_printf(&text, "Your quarantine: %s\r\nThe links work until %lld (Unix time) and each action once.\r\n", link,
               (long long)expires);
    buf_printf(&htm, "</table>\r\n<p><a href=\"%s\">Your quarantine</a></p>\r\n", link);
    buf_printf(&msg, "From: Postern spam quarantine <postmaster@%s>\r\nTo: <%s>\r\nSubject: Spam quarantine: %zu new "
                     "message(s) held for you\r\nDate: %s\r\nMessage-ID: <%s.digest@%s>\r\nAuto-Submitted: "
                     "auto-generated\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"%s\"\r\n\r\n"
                     "--%s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
               r->hostname, rcpt, n, date, id, r->hostname, boundary, boundary);
    buf_append(&msg, buf_head(&text), text.len);
    buf_printf(&msg, "\r\n--%s\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body>\r\n", boundary);
    buf_append(&msg, buf_head(&htm), htm.len);
    buf_printf(&msg, "</body></html>\r\n--%s--\r\n", boundary);
    const char *rcpts[] = {rcpt};
    int rc = local_submit("", rcpts, 1, buf_head(&msg), msg.len, NULL);
    if (rc < 0)
        log_error("digest for <%s>: not queued: %s", rcpt, strerror(errno));
    buf_free(&text);
    buf_free(&htm);
    buf_free(&msg);
    return rc;
}

static void run_work(struct work *w)
{
    struct run *r = (struct run *)w;
    qsort(r->items, r->n, sizeof *r->items, by_rcpt);
    for (size_t i = 0; i < r->n;) {
        size_t j = i + 1;
        while (j < r->n && !strcasecmp(r->items[j].rcpt, r->items[i].rcpt))
            j++;
        if (write_digest(r, i, j) == 0)
            r->sent++;
        else
            r->failed++;
        i = j;
    }
    FILE *f = fopen(last_path, "w");      /* new copies from now on */
    if (f) {
        fprintf(f, "%lld\n", (long long)r->until);
        fclose(f);
    }
}

static void run_done(struct work *w)
{
    struct run *r = (struct run *)w;
    log_info("digest: %zu digest(s) queued for %zu held copies%s", r->sent, r->n, r->failed ? " (some failed)" : "");
    for (size_t i = 0; i < r->n; i++) {
        free(r->items[i].sender);
        free(r->items[i].rcpt);
        free(r->items[i].reason);
    }
    free(r->items);
    free(r);
}

int digest_run(struct buf *answer)
{
    if (!cfg || !cfg->digest_url || !have_key) {
        buf_printf(answer, "digests are off (digest_url is not set)\n");
        return -1;
    }
    struct run *r = calloc(1, sizeof *r);
    if (!r) {
        buf_printf(answer, "out of memory\n");
        return -1;
    }
    r->since = last_run;
    r->until = last_run = timer_since = (int64_t)time(NULL);
    snprintf(r->url, sizeof r->url, "%s", cfg->digest_url);
    snprintf(r->hostname, sizeof r->hostname, "%s", cfg->hostname);
    r->lifetime = cfg->digest_link_lifetime;
    queue_each_spam(collect, r);
    swap_seen();
    buf_printf(answer, "digests for %zu new held copies are being written\n", r->n);
    r->work.run = run_work;
    r->work.done = run_done;
    workers_submit(&r->work);
    return 0;
}

/* Due when today's digest_time (UTC) has passed and no run (timed, by
 * hand, or before a restart: digest.last) came at or after it. */
void digest_tick(void)
{
    int h, m;
    if (!cfg || !cfg->digest_url || !cfg->digest_time || sscanf(cfg->digest_time, "%d:%d", &h, &m) != 2)
        return;
    time_t now = time(NULL);
    int64_t at = (int64_t)now - (int64_t)now % 86400 + h * 3600 + m * 60;
    if (now < at || timer_since >= at)
        return;
    struct buf ignore;
    buf_init(&ignore);
    digest_run(&ignore);
    buf_free(&ignore);
}
