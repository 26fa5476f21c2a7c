/* archive_verify.c - walks DIR/chain recomputing every file hash and every
 * link, compares the last link with DIR/head, checks the witness's signed
 * checkpoints against the chain, lists archived files the chain does
 * not know, and checks DIR/index line by line against what the chain and
 * files give (see plugins/archive_chain.h and archive_witness.h). Copies
 * removed by retention are in the chain as expiry records
 * (archive_index.h): their links are checked and listed, their files are
 * not looked for. Audit records (archive_audit.h) are links whose
 * "file" is a line of DIR/audit: each must still be there, unchanged. */
#include "archive_verify.h"
#include "array_grow.h"
#include "archive_search.h"
#include "archive_witness.h"
#include "archive_index.h"
#include "archive_audit.h"
#include "archive_trail.h"
#include "archive_fulltext.h"
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Chain paths, to find archived files that are not in it. */
struct names {
    char **v;
    size_t n, cap;
};

/* p joins s (a name that cannot be kept for lack of memory is left out) */
static void names_add(struct names *s, const char *p)
{
    char **v = array_grow(s->v, &s->cap, s->n + 1, sizeof *s->v, 256);
    char *copy = v ? strdup(p) : NULL;
    if (!copy)
        return;
    s->v = v;
    s->v[s->n++] = copy;
}

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Chain links by sequence number, to compare with the head. */
struct links {
    char (*v)[ARCHIVE_HASH_HEX];
    size_t n, cap;
};

/* The paths the chain records as expired, sorted (a first pass: the
 * record comes after the copy's own line). */
static void expired_paths(FILE *f, struct names *expired)
{
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        unsigned long seq;
        char rel[2048];
        const char *gone = sscanf(line, "%lu %2047s", &seq, rel) == 2 ? archive_expired_path(rel, NULL, 0) : NULL;
        if (gone)
            names_add(expired, gone);
    }
    if (expired->n)
        qsort(expired->v, expired->n, sizeof *expired->v, cmp);
    rewind(f);
}

static bool is_in(const struct names *s, const char *p)
{
    return s->n && bsearch(&p, s->v, s->n, sizeof *s->v, cmp);
}

/* The hash of an archived file, opened below the archive without
 * following a symlink (the tree is the daemon user's; this may be root). */
static int hash_archived(int dirfd, const char *rel, char out[ARCHIVE_HASH_HEX])
{
    int fd = open_archived(dirfd, rel);
    FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
    if (fd >= 0 && !f)
        close(fd);
    return archive_stream_hash(f, out);
}

static int check_chain(const char *dir, FILE *out, struct names *seen, struct links *links, unsigned long *last_seq,
                       char last[ARCHIVE_HASH_HEX], unsigned long *nexpired, unsigned long *naudit)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/chain", dir);
    FILE *f = archive_open_in(dir, "chain", "r");
    if (!f) {
        fprintf(out, "archive: no chain at %s (nothing archived yet?)\n", path);
        return -1;
    }
    struct audit_verify *audit = archive_audit_verify_start(dir, out);
    struct names expired = {0};
    expired_paths(f, &expired);
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int problems = 0;
    char line[4096];
    memset(last, '0', 64);
    last[64] = '\0';
    *last_seq = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long seq;
        char rel[2048], fh[ARCHIVE_HASH_HEX], ch[ARCHIVE_HASH_HEX], real[ARCHIVE_HASH_HEX], link[ARCHIVE_HASH_HEX];
        if (sscanf(line, "%lu %2047s %64s %64s", &seq, rel, fh, ch) != 4) {
            fprintf(out, "BROKEN chain line after seq %lu: %s", *last_seq, line);
            problems++;
            continue;
        }
        if (seq != *last_seq + 1) {
            fprintf(out, "MISSING chain entries: seq %lu follows %lu\n", seq, *last_seq);
            problems++;
        }
        char when[64];
        const char *gone = archive_expired_path(rel, when, sizeof when);
        bool audit_link = archive_audit_action(rel) != NULL;
        if (gone) {
            fprintf(out, "expired %s at %s (seq %lu)\n", gone, when, seq);
            ++*nexpired;
        } else if (!audit_link) {
            names_add(seen, rel);
        }
        if (audit_link) {
            problems += archive_audit_verify_link(audit, seq, rel, fh, out);
        } else if (gone || is_in(&expired, rel)) {
            /* removed by retention (or about to be): the link is what counts */
        } else if (hash_archived(dirfd, rel, real) < 0) {
            fprintf(out, "DELETED %s (seq %lu)\n", rel, seq);
            problems++;
        } else if (strcmp(real, fh)) {
            fprintf(out, "CHANGED %s (seq %lu): sha256 %s, chain says %s\n", rel, seq, real, fh);
            problems++;
        }
        if (archive_link(last, rel, fh, link) < 0 || strcmp(link, ch)) {
            fprintf(out, "BROKEN chain link at seq %lu (%s)\n", seq, rel);
            problems++;
        }
        memcpy(last, ch, ARCHIVE_HASH_HEX);
        *last_seq = seq;
        if (seq == links->n + 1 && links->n == links->cap) {     /* doubled: a large chain is not copied per line */
            size_t cap = links->cap ? 2 * links->cap : 1024;
            char(*grown)[ARCHIVE_HASH_HEX] = realloc(links->v, cap * sizeof *links->v);
            if (grown) {
                links->v = grown;
                links->cap = cap;
            }
        }
        if (seq == links->n + 1 && links->n < links->cap)
            memcpy(links->v[links->n++], ch, ARCHIVE_HASH_HEX);
    }
    fclose(f);
    archive_audit_verify_end(audit, out, naudit);
    if (dirfd >= 0)
        close(dirfd);
    for (size_t i = 0; i < expired.n; i++)
        free(expired.v[i]);
    free(expired.v);
    return problems;
}

static int check_head(const char *dir, FILE *out, const struct links *links, unsigned long last_seq)
{
    char path[4200], h[ARCHIVE_HASH_HEX];
    unsigned long seq;
    snprintf(path, sizeof path, "%s/head", dir);
    FILE *f = archive_open_in(dir, "head", "r");
    if (!f || fscanf(f, "%lu %64s", &seq, h) != 2) {
        if (f)
            fclose(f);
        fprintf(out, "MISSING head file %s\n", path);
        return 1;
    }
    fclose(f);
    /* the head may lag behind the chain after a crash, never run ahead */
    if (seq > last_seq || seq == 0 || seq > links->n) {
        fprintf(out, "TRUNCATED chain: head says seq %lu, chain ends at seq %lu\n", seq, last_seq);
        return 1;
    }
    if (strcmp(h, links->v[seq - 1])) {
        fprintf(out, "TRUNCATED or rewritten chain: link %lu is not the head's %s\n", seq, h);
        return 1;
    }
    return 0;
}

/* Every checkpoint in the witness log is signed by the witness's key and
 * names a link the chain still has. The daemon's uid can recompute the
 * whole chain, but cannot forge these signatures. */
static int check_witness(const char *logpath, const char *keypath, FILE *out, const struct links *links,
                         unsigned long last_seq)
{
    FILE *kf = fopen(keypath, "r");
    EVP_PKEY *pub = kf ? PEM_read_PUBKEY(kf, NULL, NULL, NULL) : NULL;
    if (kf)
        fclose(kf);
    FILE *f = fopen(logpath, "r");
    if (!pub || !f) {
        fprintf(out, "WITNESS unreadable: %s\n", !pub ? keypath : logpath);
        EVP_PKEY_free(pub);
        if (f)
            fclose(f);
        return 1;
    }
    int problems = 0;
    unsigned long witnessed = 0;
    struct witness_checkpoint c = {0};
    while (witness_next(f, pub, &c)) {
        if (!c.good) {
            fprintf(out, "FORGED witness checkpoint at %s line %lu\n", logpath, c.line);
            problems++;
            continue;
        }
        witnessed = c.seq > witnessed ? c.seq : witnessed;
        if (c.seq > last_seq || c.seq > links->n) {
            fprintf(out, "TRUNCATED chain: the witness signed link %lu, the chain ends at %lu\n", c.seq, last_seq);
            problems++;
        } else if (strcmp(links->v[c.seq - 1], c.hash)) {
            fprintf(out, "REWRITTEN chain: link %lu is not the one the witness signed at %lld\n", c.seq, c.when);
            problems++;
        }
    }
    fclose(f);
    EVP_PKEY_free(pub);
    fprintf(out, "witnessed up to link %lu of %lu\n", witnessed, last_seq);
    return problems;
}

/* Every DIR/DAY/QUEUEID.eml must be in the chain. */
static int check_unchained(const char *dir, FILE *out, struct names *seen)
{
    qsort(seen->v, seen->n, sizeof *seen->v, cmp);
    int problems = 0;
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.' || strlen(de->d_name) != 10)
            continue;
        char sub[2048];
        snprintf(sub, sizeof sub, "%s/%s", dir, de->d_name);
        DIR *dd = opendir(sub);
        struct dirent *fe;
        while (dd && (fe = readdir(dd))) {
            size_t l = strlen(fe->d_name);
            if (fe->d_name[0] == '.' || l < 5 || strcmp(fe->d_name + l - 4, ".eml"))
                continue;
            char rel[600];
            snprintf(rel, sizeof rel, "%s/%s", de->d_name, fe->d_name);
            const char *key = rel;
            if (!bsearch(&key, seen->v, seen->n, sizeof *seen->v, cmp)) {
                fprintf(out, "UNCHAINED %s (archived file missing from the chain)\n", rel);
                problems++;
            }
        }
        if (dd)
            closedir(dd);
    }
    if (d)
        closedir(d);
    return problems;
}

/* DIR/index lists every copy with the fields its file gives, and nothing
 * else: search and export must not miss mail because a line went. */
static int check_index(const char *dir, FILE *out)
{
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    long problems = dirfd < 0 ? -1 : archive_index_check(dir, dirfd, true, out);
    if (dirfd >= 0)
        close(dirfd);
    if (problems < 0) {
        fprintf(out, "INDEX unreadable: %s/index\n", dir);
        problems = 1;
    }
    if (problems)
        fprintf(out, "the index disagrees with the chain and files: `postern -c CONF archive reindex` rebuilds it\n");
    return (int)problems;
}

int archive_verify(const char *dir, const char *witness_log, const char *witness_key, const char *run_user,
                   bool allow_nobody, FILE *out)
{
    struct names seen = {0};
    struct links links = {0};
    unsigned long last_seq;
    char last[ARCHIVE_HASH_HEX];
    unsigned long nexpired = 0, naudit = 0;
    int problems = check_chain(dir, out, &seen, &links, &last_seq, last, &nexpired, &naudit);
    if (problems >= 0) {
        problems += check_head(dir, out, &links, last_seq);
        if (witness_log && witness_key)
            problems += check_witness(witness_log, witness_key, out, &links, last_seq);
        problems += check_unchained(dir, out, &seen);
        problems += check_index(dir, out);
        problems += (int)archive_fulltext_check_as(dir, run_user, allow_nobody, out);
        if (problems == 0)
            fprintf(out, "archive ok: %lu message(s), %lu expired, %lu audit record(s), head %lu %s\n",
                    last_seq - 2 * nexpired - naudit, nexpired, naudit, last_seq, last);
        else
            fprintf(out, "archive NOT intact: %d problem(s)\n", problems);
    }
    for (size_t i = 0; i < seen.n; i++)
        free(seen.v[i]);
    free(seen.v);
    free(links.v);
    return problems;
}
