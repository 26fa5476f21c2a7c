/* smtp_client_body.c - the spooled message on its way out: dot-stuffed
 * DATA, or BDAT chunks (RFC 3030) sent as they are; output is bounded by
 * OUT_HIGH_WATER and refilled as the socket drains. */
#include "smtp_client_int.h"
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The spooled body as DATA accepted it: CRLF line ends and no NUL (a
 * BINARYMIME body excepted). A file damaged or planted in the spool breaks
 * that; none of it goes out (the connection closes mid-message, so the next
 * hop discards it) and the job says why, for the queue to move the file to
 * corrupt/. false when n bytes at p (the end when at_end) are bad. */
static bool body_clean(struct smtp_client *c, const char *p, size_t n, bool at_end)
{
    if (c->job->body == BODY_BINARYMIME)
        return true;
    const char *bad = NULL;
    size_t i = 0;
    for (; i < n && !bad; i++) {
        char ch = p[i];
        if (c->body_cr && ch != '\n')
            bad = "a lone CR";
        else if (!c->body_cr && ch == '\n')
            bad = "a bare LF";
        else if (ch == '\0')
            bad = "a NUL";
        c->body_cr = ch == '\r';
    }
    if (!bad && at_end && c->body_cr)
        bad = "a lone CR";
    c->body_pos += i;
    if (!bad)
        return true;
    char why[200];
    snprintf(why, sizeof why, "4.3.0 corrupt spool file: %s at byte %" PRIu64 " of the message", bad, c->body_pos);
    free(c->job->corrupt);
    c->job->corrupt = strdup(why);
    cl_fail(c, why, false);
    return false;
}

/* Copy body bytes to out with dot-stuffing; the spool keeps CRLF lines. */
static void stuff_body(struct smtp_client *c, const char *p, size_t n)
{
    while (n) {
        if (c->at_bol && *p == '.')
            buf_append(&c->out, ".", 1);
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) + 1 : n;
        buf_append(&c->out, p, take);
        c->at_bol = nl != NULL;
        p += take;
        n -= take;
    }
}

static void body_sent(struct smtp_client *c)
{
    close(c->body_fd);
    c->body_fd = -1;
    c->state = CL_DOT;
}

/* The next bytes of the message, up to cap, into chunk: read where they
 * lie (pread: no seek, and no read for the end of the file, whose size is
 * known). The bytes, 0 at the end, or -1 (a read error, or a file that
 * became shorter: failed with a reason). */
static ssize_t read_body(struct smtp_client *c, char *chunk, size_t cap)
{
    size_t want = c->body_left < cap ? (size_t)c->body_left : cap;
    ssize_t r = 0;
    while (want && (r = pread(c->body_fd, chunk, want, (off_t)c->body_at)) < 0 && errno == EINTR)
        ;
    if (r < 0 || (r == 0 && want)) {
        cl_fail(c, "4.3.0 error reading the spooled message", false);
        return -1;
    }
    c->body_left -= (uint64_t)r;
    c->body_at += (uint64_t)r;
    return r;
}

/* BDAT: the spooled message as it is (no dot-stuffing), one chunk per read,
 * the last marked LAST. Without PIPELINING each chunk waits for its reply. */
static void fill_chunks(struct smtp_client *c)
{
    char chunk[BODY_CHUNK];
    while (c->state == CL_BODY && c->out.len < OUT_HIGH_WATER && !c->bdat_failed &&
           (c->pipelining || c->bdat_outstanding == 0)) {
        ssize_t r = read_body(c, chunk, sizeof chunk);
        if (r < 0)
            return;
        bool last = c->body_left == 0;
        if (!body_clean(c, chunk, (size_t)r, last))
            return;
        buf_printf(&c->out, "BDAT %zd%s\r\n", r, last ? " LAST" : "");
        buf_append(&c->out, chunk, (size_t)r);
        c->bdat_outstanding++;
        if (last)
            body_sent(c);
    }
}

void cl_fill_body(struct smtp_client *c)
{
    if (c->bdat) {
        fill_chunks(c);
        return;
    }
    char chunk[BODY_CHUNK];
    while (c->state == CL_BODY && c->out.len < OUT_HIGH_WATER) {
        ssize_t r = read_body(c, chunk, sizeof chunk);
        if (r < 0)
            return;
        if (!body_clean(c, chunk, (size_t)r, r == 0))
            return;
        if (r == 0) {
            buf_puts(&c->out, c->at_bol ? ".\r\n" : "\r\n.\r\n");
            body_sent(c);
            return;
        }
        stuff_body(c, chunk, (size_t)r);
    }
}
