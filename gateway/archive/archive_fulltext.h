/* archive_fulltext.h - full-text search over the archive (DIR/fulltext.db,
 * SQLite FTS5), derived from the chain and the files. */
#ifndef POSTERN_ARCHIVE_FULLTEXT_H
#define POSTERN_ARCHIVE_FULLTEXT_H
#include <stdbool.h>
#include <stdio.h>

/* Bring the index up to date with the chain (rebuild: from nothing), as
 * the current user: 0 and the copies it added, or -1 with err. */
int archive_fulltext_update(const char *dir, bool rebuild, long *added, char *err, size_t errlen);
/* The chain sequences of the copies matching an FTS5 query (words, "a
 * phrase", AND, OR, NOT, NEAR, prefix*, column:word for headers, body,
 * files), ascending, in *seqs (malloc'd): how many, or -1 with err. */
long archive_fulltext_query(const char *dir, const char *query, unsigned long **seqs, char *err, size_t errlen);
/* Update, then query; as run_user (a child) when this is root. */
long archive_fulltext_search(const char *dir, const char *run_user, bool allow_nobody, const char *query,
                             unsigned long **seqs, char *err, size_t errlen);
/* Rebuild from nothing (archive reindex): the copies indexed, or -1. */
long archive_fulltext_rebuild(const char *dir, const char *run_user, bool allow_nobody, char *err, size_t errlen);
/* For verify (as the daemon's user): problems printed to out, their number. */
long archive_fulltext_check(const char *dir, FILE *out);
/* The same in a child that has become run_user when this is root. */
long archive_fulltext_check_as(const char *dir, const char *run_user, bool allow_nobody, FILE *out);

#endif
