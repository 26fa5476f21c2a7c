/* tls_sessions.h - the outbound TLS session cache (issue 37): a session
 * a next hop gave is kept, and offered again on the next connection to
 * the same place under the same TLS policy, so that connection resumes
 * (one round trip, no certificate exchange or signature) instead of a
 * full handshake. In memory, a fixed number of slots. */
#ifndef POSTERN_TLS_SESSIONS_H
#define POSTERN_TLS_SESSIONS_H
#include <openssl/ssl.h>
#include <stddef.h>

/* Keep up to slots sessions made through ctx (0: no cache). 0, or -1. */
int tls_sessions_init(SSL_CTX *ctx, int slots);
/* Before ssl's handshake: offer the session kept under key (if any, and
 * not expired), and keep what the server gives under key. key must name
 * the server and everything that decided how it was checked (address,
 * port, name, TLS level, names to match): a resumed session skips the
 * certificate, so a session made under a weaker policy is never offered
 * under a stronger one. NULL key: this connection neither uses nor feeds
 * the cache. */
void tls_sessions_offer(SSL *ssl, const char *key);
/* Sessions kept now. */
size_t tls_sessions_count(void);

#endif
