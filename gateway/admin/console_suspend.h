/* console_suspend.h - the console's suspensions page and API
 * (console_suspend.c). */
#ifndef POSTERN_CONSOLE_SUSPEND_H
#define POSTERN_CONSOLE_SUSPEND_H
#include "console_auth.h"
#include <microhttpd.h>
#include <stdbool.h>

/* GET /suspended (a page) or /api/suspended (api: JSON). */
enum MHD_Result console_suspend_page(struct MHD_Connection *c, const struct console_session *s, bool api);

#endif
