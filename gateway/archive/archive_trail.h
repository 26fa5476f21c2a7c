/* archive_trail.h - the archive's audit trail: writing a record (a line
 * of DIR/audit and a link of DIR/chain, see plugins/archive_audit.h),
 * listing them, and checking them for `archive verify`. */
#ifndef POSTERN_ARCHIVE_TRAIL_H
#define POSTERN_ARCHIVE_TRAIL_H
#include <stdbool.h>
#include <stdio.h>
#include <time.h>

/* Who did it and from where. */
struct audit_actor {
    char who[160];
    char where[320];
};
/* The Unix user running `postern` (and who sudo'd), host, tty, SSH client. */
void archive_actor_cli(struct audit_actor *a);
/* A console user and the client address. */
void archive_actor_console(struct audit_actor *a, const char *user, const char *client);

/* Record ACTION (one word) with DETAILS (KEY=VALUE words, values encoded
 * with archive_audit_kv) in the archive at dir, durable when it returns:
 * its chain sequence in *seq. As root, written by a child that is
 * run_user. 0, or -1 with err. */
int archive_audit_write(const char *dir, const char *run_user, bool allow_nobody, const struct audit_actor *a,
                        const char *action, const char *details, unsigned long *seq, char *err, size_t errlen);
/* Print the records (since: -1 for all; user: a prefix of WHO, or NULL;
 * action or NULL) to out; how many, or -1. */
int archive_audit_list(const char *dir, time_t since, const char *user, const char *action, FILE *out);

/* For verify: load DIR/audit, then check each audit link of the chain
 * against it (1 = a problem, printed), then note records the chain lacks. */
struct audit_verify;
struct audit_verify *archive_audit_verify_start(const char *dir, FILE *out);
int archive_audit_verify_link(struct audit_verify *v, unsigned long seq, const char *rel, const char *hash, FILE *out);
int archive_audit_verify_end(struct audit_verify *v, FILE *out, unsigned long *records);

#endif
