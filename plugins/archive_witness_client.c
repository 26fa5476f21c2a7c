/* archive_witness_client.c - the archive plugin's side of postern-witness
 * (the protocol is in archive_witness.h): at start it checks that the
 * witness's last signed link is in our chain, then before a message goes on
 * it sends every fsync'd link the witness has not signed and waits for the
 * signature. One exchange at a time covers every thread waiting. */
#include "archive_int.h"
#include "archive_witness.h"
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* One reply line within 10 s; 0 or -1 with a->witness_err set. */
static int witness_reply(struct archive *a, unsigned long *seq, char hash[ARCHIVE_HASH_HEX])
{
    char line[WITNESS_LINE_MAX];
    size_t len = 0;
    while (len < sizeof line - 1) {
        struct pollfd p = {.fd = a->witness_fd, .events = POLLIN};
        if (poll(&p, 1, 10000) <= 0) {
            snprintf(a->witness_err, sizeof a->witness_err, "no answer within 10 s");
            return -1;
        }
        ssize_t r = read(a->witness_fd, line + len, 1);
        if (r <= 0) {
            snprintf(a->witness_err, sizeof a->witness_err, "connection closed");
            return -1;
        }
        if (line[len++] == '\n')
            break;
    }
    line[len] = '\0';
    line[strcspn(line, "\r\n")] = '\0';
    char h[80];
    if (sscanf(line, "OK %lu %79s", seq, h) != 2 || !witness_is_hash(h)) {
        snprintf(a->witness_err, sizeof a->witness_err, "it answered: %.200s", line);
        return -1;
    }
    memcpy(hash, h, ARCHIVE_HASH_HEX);
    return 0;
}

void witness_close(struct archive *a)
{
    if (a->witness_fd >= 0)
        close(a->witness_fd);
    a->witness_fd = -1;
}

/* Find chain line seq: the offset after it and its link. 0, or -1. */
static int chain_find(struct archive *a, unsigned long seq, off_t *after, char hash[ARCHIVE_HASH_HEX])
{
    *after = 0;
    if (seq == 0) {
        memset(hash, '0', 64);
        hash[64] = '\0';
        return 0;
    }
    FILE *f = fdopen(dup(a->chain_rd), "r");
    if (!f)
        return -1;
    rewind(f);
    char line[4096];
    int found = -1;
    while (found < 0 && fgets(line, sizeof line, f)) {
        unsigned long s;
        char rel[2048], fh[ARCHIVE_HASH_HEX], ch[ARCHIVE_HASH_HEX];
        if (sscanf(line, "%lu %2047s %64s %64s", &s, rel, fh, ch) == 4 && s == seq) {
            memcpy(hash, ch, ARCHIVE_HASH_HEX);
            *after = ftello(f);
            found = 0;
        }
    }
    fclose(f);
    return found;
}

/* Connect and say HELLO; the witness's last signed link must be ours. */
int witness_connect(struct archive *a)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", a->witness);
    a->witness_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (a->witness_fd < 0 || connect(a->witness_fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        write(a->witness_fd, "HELLO\n", 6) != 6) {
        snprintf(a->witness_err, sizeof a->witness_err, "cannot connect: %s", strerror(errno));
        witness_close(a);
        return -1;
    }
    unsigned long seq;
    char hash[ARCHIVE_HASH_HEX], ours[ARCHIVE_HASH_HEX];
    if (witness_reply(a, &seq, hash) < 0) {
        witness_close(a);
        return -1;
    }
    bool have = chain_find(a, seq, &a->witnessed_off, ours) == 0;
    if (!have || strcmp(ours, hash)) {
        snprintf(a->witness_err, sizeof a->witness_err,
                 "it signed chain link %lu, which %s/chain %s: the chain was truncated, replaced or rewritten",
                 seq, a->dir, have ? "differs from" : "does not have");
        witness_close(a);
        errno = EPERM;
        return -2;
    }
    a->witnessed = seq;
    return 0;
}

/* Send every chain line after the witnessed one up to upto (fsync'd
 * lines only: the witness must never sign a line a power cut could take
 * back), then COMMIT. */
static int witness_send(struct archive *a, unsigned long upto)
{
    char buf[65536], out[WITNESS_LINE_MAX];
    off_t off = a->witnessed_off, line_end = off;
    unsigned long last = a->witnessed;
    for (;;) {
        ssize_t r = pread(a->chain_rd, buf, sizeof buf - 1, off);
        if (r <= 0)
            break;
        buf[r] = '\0';
        char *p = buf, *nl;
        while ((nl = strchr(p, '\n'))) {
            *nl = '\0';
            unsigned long s;
            char rel[2048], fh[ARCHIVE_HASH_HEX], ch[ARCHIVE_HASH_HEX];
            bool parsed = sscanf(p, "%lu %2047s %64s %64s", &s, rel, fh, ch) == 4;
            if (parsed && s > upto)
                goto commit;
            if (parsed && s > last) {
                int n = snprintf(out, sizeof out, "LINK %lu %s %s %s\n", s, rel, fh, ch);
                if (n <= 0 || (size_t)n >= sizeof out || write(a->witness_fd, out, (size_t)n) != n) {
                    snprintf(a->witness_err, sizeof a->witness_err, "cannot send: %s", strerror(errno));
                    return -1;
                }
                last = s;
            }
            line_end = off + (nl + 1 - buf);
            p = nl + 1;
        }
        if (p == buf)
            break;                 /* a line longer than the buffer: not ours */
        off += p - buf;
    }
commit:;
    unsigned long seq;
    char hash[ARCHIVE_HASH_HEX];
    if (write(a->witness_fd, "COMMIT\n", 7) != 7 || witness_reply(a, &seq, hash) < 0)
        return -1;
    if (seq != last) {
        snprintf(a->witness_err, sizeof a->witness_err, "it signed link %lu, not %lu", seq, last);
        return -1;
    }
    a->witnessed = seq;
    a->witnessed_off = line_end;
    return 0;
}

/* Have the witness sign every link up to seq (and what came before it):
 * one exchange covers every thread waiting. 0, or -1 with witness_err. */
int witness_sync(struct archive *a, unsigned long seq, char *err, size_t errlen)
{
    pthread_mutex_lock(&a->sync_lock);
    unsigned long upto = a->synced;
    pthread_mutex_unlock(&a->sync_lock);
    pthread_mutex_lock(&a->witness_lock);
    int rc = 0;
    if (a->witnessed < seq) {
        rc = a->witness_fd >= 0 ? 0 : witness_connect(a);
        if (rc == 0 && a->witnessed < seq && (rc = witness_send(a, upto)) < 0)
            witness_close(a);
    }
    if (rc < 0)
        snprintf(err, errlen, "%s", a->witness_err);
    pthread_mutex_unlock(&a->witness_lock);
    return rc;
}
