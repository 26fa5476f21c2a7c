/* archive_search.h - `postern archive search|export|reindex` over the
 * archive plugin's directory: its index (plugins/archive_index.h), its
 * chain and its files. */
#ifndef POSTERN_ARCHIVE_SEARCH_H
#define POSTERN_ARCHIVE_SEARCH_H
#include <stdbool.h>
#include <stdio.h>

/* An archived file DIR/DAY/FILE, opened below dirfd without following a
 * symlink at either step (the tree is the daemon user's); -1 with errno. */
int open_archived(int dirfd, const char *rel);
/* argv[0] is "search", "export" or "reindex"; the exit code. */
int archive_search_command(const char *dir, const char *run_user, bool allow_nobody, int argc, char **argv);

#endif
