/* console_track.h - the console's message tracking page and API
 * (console_track.c). */
#ifndef POSTERN_CONSOLE_TRACK_H
#define POSTERN_CONSOLE_TRACK_H
#include "buf.h"
#include "console_auth.h"
#include <microhttpd.h>
#include <stdbool.h>

/* The tracking store to read; NULL or "": tracking is off. */
void console_track_configure(const char *db_path);
/* The last 24 hours as counts and a server-drawn SVG bar chart (accepted,
 * rejected (by stage in the counts), delivered, deferred, bounced per
 * hour); nothing when tracking is off. */
void console_track_chart(struct buf *b);
/* GET /track (a page) or /api/track (api: JSON). */
enum MHD_Result console_track_page(struct MHD_Connection *c, const struct console_session *s, bool api);

#endif
