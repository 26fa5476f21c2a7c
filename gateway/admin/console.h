/* console.h - the web console (console.c) behind http_listen, when
 * http_users is set. http.c hands it every request but /metrics. */
#ifndef POSTERN_CONSOLE_H
#define POSTERN_CONSOLE_H
#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>

/* Where the control socket is; https: cookies get Secure. */
void console_configure(const char *control_socket, bool https);
enum MHD_Result console_handle(struct MHD_Connection *c, const char *url, const char *method, const char *upload,
                               size_t *upload_size, void **state);
/* libmicrohttpd's request-completed callback: frees *state. */
void console_request_done(void *state);

#endif
