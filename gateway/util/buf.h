/* buf.h - growable byte buffer used for socket I/O and string building. */
#ifndef POSTERN_BUF_H
#define POSTERN_BUF_H
#include <stddef.h>
#include <stdarg.h>

struct buf {
    char *data;
    size_t len;   /* bytes of valid data starting at data + off */
    size_t off;   /* consumed prefix (lazy compaction) */
    size_t cap;
};

void buf_init(struct buf *b);
void buf_free(struct buf *b);
/* Ensure room for n more bytes at the end; returns 0 or -1 on OOM. */
int buf_reserve(struct buf *b, size_t n);
int buf_append(struct buf *b, const void *p, size_t n);
int buf_puts(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Start of unread data (its length is len). A never-grown buffer has no
 * storage and gives NULL, not NULL + 0 (undefined; found by fuzz_headers). */
static inline char *buf_head(const struct buf *b) { return b->off ? b->data + b->off : b->data; }
/* Mark n bytes from the head as consumed. */
void buf_consume(struct buf *b, size_t n);
/* Room at the tail for direct reads; call buf_commit after writing into it. */
char *buf_tail(struct buf *b, size_t *room);
void buf_commit(struct buf *b, size_t n);
void buf_reset(struct buf *b);

#endif
