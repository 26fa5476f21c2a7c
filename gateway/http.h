/* http.h - the HTTP listener (http_listen): /metrics for Prometheus. */
#ifndef POSTERN_HTTP_H
#define POSTERN_HTTP_H
#include "config.h"

/* Bind http_listen (before privileges are dropped); 0 when unset. */
int http_bind(const struct config *cfg);
/* Serve it, on libmicrohttpd's own thread. */
int http_start(void);
void http_stop(void);

#endif
