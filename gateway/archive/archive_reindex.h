/* archive_reindex.h - the archive's index derived from its chain and files
 * (archive_reindex.c). */
#ifndef POSTERN_ARCHIVE_REINDEX_H
#define POSTERN_ARCHIVE_REINDEX_H
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* The index as `archive reindex` writes it, derived from DIR/chain and the
 * archived files: cb gets each chained copy in chain order, with its index
 * line (LF included; "" without lines, where only the file's presence is
 * checked), or line NULL when its file is gone (expired, or deleted:
 * `verify` tells which). Returns the copies seen, -1 when the chain cannot
 * be read. */
typedef void (*archive_copy_fn)(void *ctx, unsigned long seq, const char *rel, const char *line, size_t len);
long archive_derive_index(const char *dir, int dirfd, bool lines, archive_copy_fn cb, void *ctx);
/* DIR/index against what the chain and files say: every copy still
 * archived has its line, and no line is for a copy the chain lacks; with
 * fields, each line must also be the one derived from the file (what verify
 * checks; search checks the cheap part). Problems printed to out; their
 * number, or -1 when the chain or index cannot be read. */
long archive_index_check(const char *dir, int dirfd, bool fields, FILE *out);
/* `archive reindex` (already the daemon's user): DIR/index and the
 * full-text index rebuilt; the exit code. */
int archive_reindex(const char *dir, int dirfd);

#endif
