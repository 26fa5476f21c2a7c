/* console_track.h - the console's message tracking page and API
 * (console_track.c). */
#ifndef POSTERN_CONSOLE_TRACK_H
#define POSTERN_CONSOLE_TRACK_H
#include "buf.h"
#include "console_auth.h"
#include "fleet.h"
#include <microhttpd.h>
#include <stdbool.h>

/* The tracking store to read (NULL or "": tracking is off), the fleet's
 * other nodes (copied) and the token they present to this one (NULL:
 * none may ask). */
void console_track_configure(const char *db_path, const struct fleet_nodes *fleet, const char *fleet_token);
/* Is c another node of the fleet (Authorization: Bearer with our token)? */
bool console_track_peer(struct MHD_Connection *c);
/* The last 24 hours as counts and a server-drawn SVG bar chart (accepted,
 * rejected (by stage in the counts), delivered, deferred, bounced per
 * hour); nothing when tracking is off. */
void console_track_chart(struct buf *b);
/* GET /track (a page) or /api/track (api: JSON). With fleet=1 the other
 * nodes are asked too and the answers merged (never for a peer's own
 * request: no node asks on). */
enum MHD_Result console_track_page(struct MHD_Connection *c, const struct console_session *s, bool api, bool peer);

#endif
