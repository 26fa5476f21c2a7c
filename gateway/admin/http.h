/* http.h - the HTTP listener (http_listen): /metrics for Prometheus, and
 * the web console when http_users is set. */
#ifndef POSTERN_HTTP_H
#define POSTERN_HTTP_H
#include "config.h"

/* Bind http_listen and read the TLS key and console users (before
 * privileges are dropped); 0 when unset. */
int http_bind(const struct config *cfg);
/* Serve it, on libmicrohttpd's own thread. */
int http_start(void);
void http_stop(void);

#endif
