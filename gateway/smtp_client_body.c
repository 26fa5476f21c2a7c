/* smtp_client_body.c - the spooled message on its way out: dot-stuffed
 * DATA, or BDAT chunks (RFC 3030) sent as they are; output is bounded by
 * OUT_HIGH_WATER and refilled as the socket drains. */
#include "smtp_client_int.h"
#include <errno.h>
#include <unistd.h>

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

/* BDAT: the spooled message as it is (no dot-stuffing), one chunk per read,
 * the last marked LAST. Without PIPELINING each chunk waits for its reply. */
static void fill_chunks(struct smtp_client *c)
{
    char chunk[BODY_CHUNK];
    while (c->state == CL_BODY && c->out.len < OUT_HIGH_WATER && !c->bdat_failed &&
           (c->pipelining || c->bdat_outstanding == 0)) {
        size_t want = c->body_left < BODY_CHUNK ? (size_t)c->body_left : BODY_CHUNK;
        ssize_t r = want ? read(c->body_fd, chunk, want) : 0;
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 || (r == 0 && want)) {
            cl_fail(c, "4.3.0 error reading the spooled message", false);
            return;
        }
        c->body_left -= (uint64_t)r;
        bool last = c->body_left == 0;
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
        ssize_t r = read(c->body_fd, chunk, sizeof chunk);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            cl_fail(c, "4.3.0 error reading the spooled message", false);
            return;
        }
        if (r == 0) {
            buf_puts(&c->out, c->at_bol ? ".\r\n" : "\r\n.\r\n");
            body_sent(c);
            return;
        }
        stuff_body(c, chunk, (size_t)r);
    }
}
