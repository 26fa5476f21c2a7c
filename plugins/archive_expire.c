/* archive_expire.c - the archive plugin's background thread: every few
 * seconds it reads the links other writers (`postern`, the console) added
 * to the chain and has them witnessed; every archive.expire_every it
 * removes the copies past their retention period, in chain order, each
 * removal recorded in the chain before the file goes. Retention rules and
 * legal holds (read from DIR/audit) keep what they cover. */
#include "archive_int.h"
#include "archive_audit.h"
#include "archive_index.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

/* Record rel (its file hash fh) as expired, then remove the file: the
 * record is durable before the file goes. 0, or -1. */
static int expire_one(struct archive *a, const char *rel, const char *fh, time_t now)
{
    char record[400], path[1400], day[1400];
    struct tm tm;
    gmtime_r(&now, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y%m%dT%H%M%SZ", &tm);
    snprintf(record, sizeof record, "%s%s/%s", ARCHIVE_EXPIRED_PREFIX, when, rel);
    pthread_mutex_lock(&a->lock);
    unsigned long seq = chain_append(a, record, fh);
    pthread_mutex_unlock(&a->lock);
    if (!seq || chain_sync(a, seq) < 0)
        return -1;
    snprintf(path, sizeof path, "%s/%s", a->dir, rel);
    if (unlink(path) < 0 && errno != ENOENT)
        return -1;
    snprintf(day, sizeof day, "%s", path);
    char *slash = strrchr(day, '/');
    if (slash)
        *slash = '\0';
    fsync_dir(day);
    rmdir(day);                 /* the day's last copy: its directory goes too */
    host->log(NULL, POSTERN_LOG_INFO, "archive: expired %s (chain seq %lu)", rel, seq);
    return 0;
}

/* The standing holds, from DIR/audit; -1 (logged) when it lacks hold or
 * release records the chain has: then nothing may expire. */
static int holds_load(struct archive *a, struct archive_holds *h)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/audit", a->dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
    if (fd >= 0 && !f)
        close(fd);
    archive_holds_load(h, f);
    pthread_mutex_lock(&a->lock);
    unsigned long chained = a->hold_records;
    pthread_mutex_unlock(&a->lock);
    if (h->records >= chained)
        return 0;
    host->log(NULL, POSTERN_LOG_ERROR, "archive: %s has %lu hold/release record(s), the chain %lu: nothing expires "
              "until `postern archive verify` is clean", path, h->records, chained);
    free(h->v);
    return -1;
}

/* Could a rule or a standing hold keep a copy past the default period?
 * Without either, expiry needs nothing from the index. */
static bool anything_keeps(struct archive *a, const struct archive_holds *holds)
{
    pthread_mutex_lock(&a->rules_lock);
    bool rules = a->rules.n > 0;
    pthread_mutex_unlock(&a->rules_lock);
    for (size_t i = 0; !rules && i < holds->n; i++)
        rules = !holds->v[i].released;
    return rules;
}

/* Why a copy old enough to go is kept: NULL (it may go), or the reason. */
static const char *kept_because(struct archive *a, const struct archive_holds *holds, struct index_reader *ixr,
                                unsigned long seq, time_t when, time_t now, long dflt, char *why, size_t whylen)
{
    if (!ixr)
        return NULL;            /* no rule, no hold: the default period, which it is past */
    char *const *ix = index_reader_find(ixr, seq);
    if (!ix)
        return "its index line is missing (run `postern archive reindex`)";
    pthread_mutex_lock(&a->rules_lock);
    long period = retention_period(&a->rules, dflt, ix);
    pthread_mutex_unlock(&a->rules_lock);
    if (period == 0 || when + period > now)
        return "its retention rule keeps it longer";
    const struct archive_hold *h = archive_held_by(holds, seq, ix);
    if (!h)
        return NULL;
    snprintf(why, whylen, "legal hold %s", h->name);
    return why;
}

/* One pass: every copy older than its retention period, oldest first, up
 * to the first younger than the shortest period (the chain is in arrival
 * order). Copies a longer rule or a legal hold keeps are passed over, and
 * the next pass starts at the first of them. */
static void expire_run(struct archive *a)
{
    long dflt = a->retention;
    pthread_mutex_lock(&a->rules_lock);
    long shortest = retention_shortest(&a->rules, dflt);
    pthread_mutex_unlock(&a->rules_lock);
    struct archive_holds holds;
    if (shortest <= 0 || holds_load(a, &holds) < 0)
        return;
    char path[1400], line[4096], key[300], why[200];
    snprintf(path, sizeof path, "%s/chain", a->dir);
    FILE *f = fopen(path, "r");
    bool need_index = anything_keeps(a, &holds);
    struct index_reader *ixr = need_index ? calloc(1, sizeof *ixr) : NULL;
    if (!f || (need_index && !ixr) || fseeko(f, a->expire_off, SEEK_SET) < 0) {
        if (f)
            fclose(f);
        free(ixr);
        free(holds.v);
        return;
    }
    snprintf(path, sizeof path, "%s/index", a->dir);
    int ixfd = ixr ? open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW) : -1;
    if (ixr)
        ixr->f = ixfd >= 0 ? fdopen(ixfd, "r") : NULL;
    time_t now = time(NULL);
    off_t at = ftello(f), first_kept = -1;
    unsigned long kept = 0;
    for (; fgets(line, sizeof line, f); at = ftello(f)) {
        unsigned long seq;
        char rel[256], fh[ARCHIVE_HASH_HEX], ch[ARCHIVE_HASH_HEX];
        if (sscanf(line, "%lu %255s %64s %64s", &seq, rel, fh, ch) != 4 || archive_is_record(rel))
            continue;
        snprintf(key, sizeof key, "expired:%s", rel);
        pthread_mutex_lock(&a->lock);
        int gone = chained_has(a, key);
        pthread_mutex_unlock(&a->lock);
        snprintf(path, sizeof path, "%s/%s", a->dir, rel);
        if (gone) {             /* recorded before a crash took the file's removal */
            unlink(path);
            continue;
        }
        time_t when = archived_at(path);
        if (when && when + shortest > now)
            break;              /* this and every later copy are younger than any period */
        const char *keep = when ? kept_because(a, &holds, ixr, seq, when, now, dflt, why, sizeof why) : NULL;
        if (keep) {
            if (first_kept < 0)
                first_kept = at;
            if (kept++ < 5)
                host->log(NULL, POSTERN_LOG_INFO, "archive: keeping %s past retention: %s", rel, keep);
            continue;
        }
        if (when && expire_one(a, rel, fh, now) < 0) {
            host->log(NULL, POSTERN_LOG_ERROR, "archive: cannot expire %s: %s", rel, strerror(errno));
            break;
        }
    }
    a->expire_off = first_kept >= 0 ? first_kept : at;     /* the next pass starts here */
    if (kept > 5)
        host->log(NULL, POSTERN_LOG_INFO, "archive: kept %lu copies past retention in all", kept);
    if (ixr && ixr->f)
        fclose(ixr->f);
    else if (ixfd >= 0)
        close(ixfd);
    free(ixr);
    free(holds.v);
    fclose(f);
}

/* Links other writers appended (audit records) are read, and signed by
 * the witness, within a tick even when no mail comes. */
static void chain_tick(struct archive *a)
{
    pthread_mutex_lock(&a->lock);
    unsigned long before = a->seq;
    if (chain_still_ours(a) == 0 && flock(a->chain_fd, LOCK_EX) == 0) {
        chain_catch_up(a);
        flock(a->chain_fd, LOCK_UN);
    }
    unsigned long seq = a->seq;
    pthread_mutex_unlock(&a->lock);
    char why[1400] = "";
    if (seq > before && a->witness[0] && (chain_sync(a, seq) < 0 || witness_sync(a, seq, why, sizeof why) < 0))
        host->log(NULL, POSTERN_LOG_WARN, "archive: witness %s: links up to %lu not signed yet: %s", a->witness, seq,
                  why);
}

#define CHAIN_TICK 5            /* seconds */

void *expirer_main(void *arg)
{
    struct archive *a = arg;
    pthread_mutex_lock(&a->stop_lock);
    while (!a->stopping) {
        pthread_mutex_unlock(&a->stop_lock);
        chain_tick(a);
        if (time(NULL) >= a->next_expire) {
            expire_run(a);
            a->next_expire = time(NULL) + a->expire_every;
        }
        pthread_mutex_lock(&a->stop_lock);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += a->expire_every < CHAIN_TICK ? a->expire_every : CHAIN_TICK;
        while (!a->stopping && pthread_cond_timedwait(&a->stop_cond, &a->stop_lock, &until) == 0)
            ;
    }
    pthread_mutex_unlock(&a->stop_lock);
    return NULL;
}
