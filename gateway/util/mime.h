/* mime.h - a bounded walk over a message's MIME structure (RFC 2045-2047,
 * 2183) for policies: every leaf part with its content type, file name,
 * transfer encoding and decoded size, and the decoding itself. multipart
 * nests at most MIME_MAX_DEPTH deep and yields at most MIME_MAX_PARTS
 * parts; anything malformed is taken as it comes (a part without its
 * closing boundary runs to the end), never refused. */
#ifndef POSTERN_MIME_H
#define POSTERN_MIME_H
#include <stddef.h>

#define MIME_MAX_DEPTH 8
#define MIME_MAX_PARTS 100

enum mime_encoding { MIME_IDENTITY, MIME_BASE64, MIME_QP };

struct mime_part {
    char type[128];              /* "text/plain", lower-case, no parameters */
    char charset[64];            /* lower-case, "" = not given */
    char filename[256];          /* Content-Disposition filename= or Content-Type name=, "" = none */
    enum mime_encoding encoding;
    const char *body;            /* the part's body, still encoded */
    size_t len;
};

/* cb for each leaf of the message whose top-level Content-Type,
 * Content-Disposition and Content-Transfer-Encoding values are ct, cd and
 * cte (NULL: absent) and whose body is body. Returns the number of parts
 * given to cb. */
typedef void (*mime_part_cb)(void *arg, const struct mime_part *p);
size_t mime_walk(const char *ct, const char *cd, const char *cte, const char *body, size_t len, mime_part_cb cb,
                 void *arg);
/* Decode p's body into out (at most cap bytes; out may be NULL). Returns
 * the whole decoded length, whatever fitted. */
size_t mime_decode(const struct mime_part *p, char *out, size_t cap);
/* A parameter of a header value (`name=value` or `name="value"`), case-
 * insensitive, into out; 0, or -1 when absent. */
int mime_param(const char *value, const char *name, char *out, size_t size);

#endif
