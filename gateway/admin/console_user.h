/* console_user.h - the end users' spam quarantine pages under /my/
 * (console_user.c). */
#ifndef POSTERN_CONSOLE_USER_H
#define POSTERN_CONSOLE_USER_H
#include "config.h"
#include "console_auth.h"
#include <microhttpd.h>
#include <stdbool.h>

/* Logins are checked by cfg's auth_backend (none: nobody can log in). */
void console_user_configure(const struct config *cfg, const char *control_socket);
/* GET and POST under /my/ (the caller checked the CSRF token of a POST
 * other than the login). */
enum MHD_Result console_user_get(struct MHD_Connection *c, const char *url, const struct console_session *s,
                                 bool logged_in);
enum MHD_Result console_user_post(struct MHD_Connection *c, const char *url, const char *form,
                                  const struct console_session *s, bool logged_in, bool secure);

#endif
