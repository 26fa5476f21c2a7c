/* base64.h - RFC 4648 base64, as SMTP AUTH (RFC 4954) and Dovecot's auth
 * protocol carry it. Decoding is strict: only the alphabet, whole 4-byte
 * groups, '=' padding only at the end; anything else is refused. */
#ifndef POSTERN_BASE64_H
#define POSTERN_BASE64_H
#include <stddef.h>

/* The decoded length, or -1 (bad input, or it does not fit out). */
int base64_decode(const char *in, size_t len, unsigned char *out, size_t size);
/* The 6-bit value of one alphabet character, or -1. */
int base64_value(char c);
/* Writes a NUL-terminated encoding; its length, or -1 if it does not fit. */
int base64_encode(const unsigned char *in, size_t len, char *out, size_t size);

#endif
