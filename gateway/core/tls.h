/* tls.h - OpenSSL contexts for inbound STARTTLS (server) and outbound
 * STARTTLS (client), and a one-line description of a TLS session. */
#ifndef POSTERN_TLS_H
#define POSTERN_TLS_H
#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* TLS 1.2+, OpenSSL's default ciphers, a session cache for resumption.
 * 0, or -1 with the reason in err. */
int tls_server_init(const char *cert, const char *key, char *err, size_t errlen);
SSL_CTX *tls_server_ctx(void);          /* NULL when no certificate is configured */
/* The outbound context: TLS 1.2+, trusting cafile (or the system CAs). */
/* session_cache: outbound sessions kept for resumption (tls_sessions.h). */
int tls_client_init(const char *cafile, int session_cache, char *err, size_t errlen);
SSL_CTX *tls_client_ctx(void);
/* "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)" */
void tls_describe(SSL *ssl, char *out, size_t n);
/* recv/send on fd, through ssl when it is not NULL. Like recv/send: -1 with
 * errno EAGAIN when TLS waits for the socket, 0 at a clean end. */
ssize_t tls_read(SSL *ssl, int fd, char *buf, size_t n);
ssize_t tls_write(SSL *ssl, int fd, const char *buf, size_t n);
/* One non-blocking step of the handshake (client or server, as set with
 * SSL_set_connect_state / SSL_set_accept_state): 1 done, 0 waiting for the
 * socket (*want = EPOLLIN or EPOLLOUT), -1 failed (see tls_last_error). */
int tls_handshake_step(SSL *ssl, uint32_t *want);
/* The last OpenSSL error as text. */
void tls_last_error(char *out, size_t n);

#endif
