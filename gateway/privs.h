/* privs.h - dropping root after binding ports and opening the spool. */
#ifndef POSTERN_PRIVS_H
#define POSTERN_PRIVS_H

/* If running as root: hand the spool tree and the control socket (both
 * created as root, so any parent directory works) to user and switch to it.
 * Returns 0, or -1 with a logged reason. A no-op when not root. */
int privs_drop(const char *user, const char *spool_dir, const char *control_socket);

#endif
