/* json_out.h - writing JSON by hand into a buf: a string with quotes,
 * backslashes and control characters escaped, and any byte that is not part
 * of valid UTF-8 written as the Latin-1 character of that byte, so the
 * output is always valid JSON whatever a peer sent (the event stream, the
 * queue's --json views, the suspensions). */
#ifndef POSTERN_JSON_OUT_H
#define POSTERN_JSON_OUT_H
#include "buf.h"

void json_out_string(struct buf *out, const char *s);

#endif
