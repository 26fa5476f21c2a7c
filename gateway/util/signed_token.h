/* signed_token.h - a payload carried in a URL with an HMAC-SHA256 over it
 * ("PAYLOAD.MAC", both base64url without padding), so a link in a digest
 * mail can say what it may do and nobody can forge or change one. */
#ifndef POSTERN_SIGNED_TOKEN_H
#define POSTERN_SIGNED_TOKEN_H
#include <stddef.h>

#define SIGNED_TOKEN_MAX 1024

/* The token for payload (printable ASCII): 0, or -1 when it does not fit. */
int token_make(const unsigned char *key, size_t keylen, const char *payload, char *out, size_t size);
/* The payload of a token whose MAC is right (compared in constant time):
 * 0, or -1 for anything else. */
int token_open(const unsigned char *key, size_t keylen, const char *token, char *payload, size_t size);

#endif
