/* console_web.h - the console's web helpers (console_web.c), shared by its
 * pages (console.c: queue, quarantine, messages, actions; console_track.c:
 * message tracking). */
#ifndef POSTERN_CONSOLE_WEB_H
#define POSTERN_CONSOLE_WEB_H
#include "buf.h"
#include "console_auth.h"
#include <jansson.h>
#include <microhttpd.h>
#include <stdbool.h>

/* Text into HTML (element content, or an attribute value): escaped, and
 * bidirectional controls shown as [U+202E]. */
void html(struct buf *out, const char *s);
void html_attr(struct buf *out, const char *s);
/* A query-string value, percent-encoded. */
void url_enc(struct buf *out, const char *s);
/* Every value of field name in an x-www-form-urlencoded body, decoded;
 * how many there were. form_get: the first (1023 bytes at most), or "". */
int form_each(const char *body, const char *name, void (*fn)(const char *v, void *ctx), void *ctx);
void form_get(const char *body, const char *name, char out[1024]);
/* A query-string argument, or "". */
const char *query(struct MHD_Connection *c, const char *name);
void client_ip(struct MHD_Connection *c, char *out, size_t size);
/* Responses with the console's security headers (CSP without scripts, no
 * framing, no caching); send_response frees body. */
enum MHD_Result send_response(struct MHD_Connection *c, unsigned status, const char *type, struct buf *body,
                              const char *location, const char *cookie);
/* body (freed) as a file to save: filename is ours, never the client's. */
enum MHD_Result send_download(struct MHD_Connection *c, const char *type, const char *filename, struct buf *body);
enum MHD_Result redirect(struct MHD_Connection *c, const char *to, const char *cookie);
enum MHD_Result text_status(struct MHD_Connection *c, unsigned status, const char *msg);
/* j (taken) as JSON, non-ASCII as \uXXXX. */
enum MHD_Result json_response(struct MHD_Connection *c, unsigned status, json_t *j);
enum MHD_Result json_error(struct MHD_Connection *c, unsigned status, const char *msg);
/* <html> to <h1>title</h1>, with the navigation when logged in (s). */
void page_start(struct buf *b, const char *title, const struct console_session *s);
/* GET /style.css. */
enum MHD_Result console_stylesheet(struct MHD_Connection *c);

#endif
