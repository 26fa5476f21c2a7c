/* console_archive.h - the console's archive search and export pages, and
 * the console's records in the archive's audit trail. */
#ifndef POSTERN_CONSOLE_ARCHIVE_H
#define POSTERN_CONSOLE_ARCHIVE_H
#include "console_auth.h"
#include <microhttpd.h>
#include <stdbool.h>

/* The archive plugin's directory (NULL or "": none, no pages, no trail). */
void console_archive_configure(const char *dir);
bool console_archive_on(void);
/* Record ACTION with DETAILS as s's, from c's address: 0, or -1 (logged). */
int console_audit(struct MHD_Connection *c, const struct console_session *s, const char *action, const char *details);
/* A queue request the console sent (hold, release, delete, requeue,
 * flush: recorded as queue-VERB; others are not), rc as console_control's. */
void console_audit_queue(struct MHD_Connection *c, const struct console_session *s, const char *request, int rc);
/* GET /archive (api: /api/archive) and POST /archive/export. */
enum MHD_Result console_archive_page(struct MHD_Connection *c, const struct console_session *s, bool api);
enum MHD_Result console_archive_export(struct MHD_Connection *c, const struct console_session *s, const char *form);

#endif
