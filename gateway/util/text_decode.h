/* text_decode.h - mail text as UTF-8 for full-text search: charsets,
 * RFC 2047 encoded words, HTML to text. */
#ifndef POSTERN_TEXT_DECODE_H
#define POSTERN_TEXT_DECODE_H
#include "buf.h"
#include <stddef.h>

/* The length of the valid UTF-8 sequence at p (at most n bytes; 1 for
 * ASCII), or 0 when p does not start one. */
size_t utf8_valid_len(const unsigned char *p, size_t n);
/* in (in charset; NULL or "" = UTF-8/ASCII) appended to out as UTF-8;
 * what cannot be converted becomes U+FFFD. */
void text_to_utf8(const char *charset, const char *in, size_t len, struct buf *out);
/* A header value with its encoded words decoded, as UTF-8, folding as spaces. */
void header_text_decode(const char *value, struct buf *out);
/* The text of an HTML document (as UTF-8 already): tags, scripts and
 * styles dropped, entities decoded. */
void html_to_text(const char *in, size_t len, struct buf *out);

#endif
