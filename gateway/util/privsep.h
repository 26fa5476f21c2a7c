/* privsep.h - privilege separation (OpenSMTPD's parent, Postfix's master):
 * posternd started as root binds its sockets, then forks. The parent keeps
 * root and does one thing: it opens, for reading, the files the
 * configuration names (keys, password maps, tables, the configuration
 * itself) when the unprivileged daemon asks, and hands over the descriptor
 * (SCM_RIGHTS over a socketpair). It forwards SIGTERM/SIGINT/SIGHUP/SIGUSR1
 * to the daemon and exits with it; the daemon dies with it (PDEATHSIG).
 *
 * The parent opens a path only if the configuration file names it, or a
 * file it handed over earlier names it (a DKIM key table lists the keys),
 * and only if neither the file nor any directory above it (as written and
 * after links are resolved) can be written by the daemon's user: the
 * daemon can never make it open something else. */
#ifndef POSTERN_PRIVSEP_H
#define POSTERN_PRIVSEP_H
#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>

/* Fork the parent (root) off; returns in the child only (0), -1 when the
 * fork failed (then nothing changed). config_path is what the parent reads
 * to know which files it may open; run_uid/run_gid, whose writes it fears. */
int privsep_start(const char *config_path, uid_t run_uid, gid_t run_gid);
/* The daemon dies with the parent (PR_SET_PDEATHSIG): again after each
 * change of user, which clears it. */
void privsep_bind_to_parent(void);
/* Is there a parent to ask? */
bool privsep_active(void);
/* path opened for reading: here when the daemon may read it, else by the
 * parent when there is one. -1 with errno; why (may be NULL) says what the
 * parent refused and why. */
int privsep_open(const char *path, char *why, size_t whylen);
/* The same as a stdio stream ("r"). */
FILE *privsep_fopen(const char *path, char *why, size_t whylen);

/* The parent's rule, exposed for tests and `posternd -t`: may path be
 * handed to a daemon running as uid/gid? 0, or -1 with why. */
int privsep_path_safe(const char *path, uid_t uid, gid_t gid, char *why, size_t whylen);

#endif
