/* privs.h - dropping root after binding ports and opening the spool. */
#ifndef POSTERN_PRIVS_H
#define POSTERN_PRIVS_H

#include "buf.h"
#include <stdbool.h>
#include <sys/types.h>

#define PRIVS_DEFAULT_USER "postern"

/* If running as root: hand the spool tree and the control socket (both
 * created as root, so any parent directory works) to user (NULL: "postern")
 * and switch to it. "nobody" is refused unless allow_nobody: every other
 * nobody process could then read the spool and use the control socket.
 * Returns 0, or -1 with a logged reason. A no-op when not root. */
int privs_drop(const char *user, bool allow_nobody, const char *spool_dir, const char *control_socket);
/* The same switch without touching the spool: configuration checks, which
 * run plugin init and Lua top levels, run as the daemon would. */
int privs_become(const char *user, bool allow_nobody);
/* The run user's ids (the same checks as privs_drop); -1 logged. */
int privs_run_ids(const char *user, bool allow_nobody, uid_t *uid, gid_t *gid);
/* fn(fd, ctx) in a child that has become user (when this is root; else
 * as this user), for work in the daemon user's tree that root must not do
 * by path: what fn writes to fd is appended to out. 0 when fn returned 0,
 * else -1. */
int privs_run_as(const char *user, bool allow_nobody, int (*fn)(int fd, void *ctx), void *ctx, struct buf *out);

#endif
