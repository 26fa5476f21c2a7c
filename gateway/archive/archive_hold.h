/* archive_hold.h - `postern archive hold ...` and `archive audit`: legal
 * holds and the audit trail (plugins/archive_audit.h). */
#ifndef POSTERN_ARCHIVE_HOLD_H
#define POSTERN_ARCHIVE_HOLD_H
#include <stdbool.h>

struct audit_actor;
/* What an archive command that records needs: who runs it, and the
 * daemon's user (who writes the records when this runs as root). */
struct archive_cmd {
    const struct audit_actor *who;
    const char *run_user;
    bool allow_nobody;
};

/* argv[0] is "hold" or "audit"; the exit code. */
int archive_hold_command(const char *dir, const struct archive_cmd *c, int argc, char **argv);

#endif
