/* archive_search.h - `postern archive search|export|reindex` over the
 * archive plugin's directory: its index (plugins/archive_index.h), its
 * chain and its files. */
#ifndef POSTERN_ARCHIVE_SEARCH_H
#define POSTERN_ARCHIVE_SEARCH_H
#include <stdbool.h>
#include <stdio.h>
#include "archive_reindex.h"

/* An archived file DIR/DAY/FILE, opened below dirfd without following a
 * symlink at either step (the tree is the daemon user's); -1 with errno. */
int open_archived(int dirfd, const char *rel);
/* DIR/NAME (mode "r", "w" or "a") as a regular file, never through a
 * symbolic link; NULL with errno. */
FILE *archive_open_in(const char *dir, const char *name, const char *mode);
/* argv[0] is "search", "export" or "reindex"; the exit code. A search or
 * export is recorded in the audit trail as who's (archive_trail.h). */
struct audit_actor;
struct archive_filter;
int archive_search_command(const char *dir, const char *run_user, bool allow_nobody, const struct audit_actor *who,
                           int argc, char **argv);
/* Each match, in chain order, to cb with its index fields. */
typedef void (*archive_match_fn)(void *ctx, char *const ix[]);
/* A search (the console's; text: a full-text query or NULL): refused (-1, why in err) unless the index
 * lists exactly what the chain has; else up to limit (-1: all) matches to
 * cb, and their number. */
long archive_search_each(const char *dir, const struct archive_filter *m, const char *text, long limit,
                         archive_match_fn cb, void *ctx, char *err, size_t errlen);
/* The matching copies (from the chain and files, as export) as mboxrd
 * into out, hashes checked; how many, or -1 with err. No proof file: that
 * comes with `postern archive export`. */
long archive_export_mbox(const char *dir, const struct archive_filter *m, const char *text, long limit, FILE *out,
                         char *err, size_t errlen);
/* One filter option (--from, --to, --rcpt, --subject, --since, --until)
 * and its value into m: 1, 0 when k is no filter option, -1 (said on
 * stderr) for a bad value. search, export and hold share it. */
int archive_filter_option(const char *k, const char *v, struct archive_filter *m);
/* How many copies the index has that match m (for a hold's record); -1. */
long archive_count(const char *dir, const struct archive_filter *m);

#endif
