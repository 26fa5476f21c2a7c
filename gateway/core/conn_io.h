/* conn_io.h - the one byte path of an SMTP connection, plain or TLS, shared
 * by the server sessions and the outbound client: read what the peer sent
 * into a buffer, and arm the event watch so that input OpenSSL has already
 * decrypted (and the kernel therefore no longer signals) is never left
 * waiting for more bytes from the peer. */
#ifndef POSTERN_CONN_IO_H
#define POSTERN_CONN_IO_H
#include "buf.h"
#include "event.h"
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

enum conn_end { CONN_OPEN, CONN_EOF, CONN_ERROR };

/* Read into in, `step` bytes of room at a time, until neither the socket nor
 * OpenSSL has more or in holds `limit` bytes. Returns the bytes read; *end
 * says whether the peer is still there (CONN_ERROR: errno says why, ENOMEM
 * included). Bytes read before an end are in `in` all the same. */
size_t conn_fill(struct buf *in, SSL *ssl, int fd, size_t step, size_t limit, enum conn_end *end);
/* true when OpenSSL holds input not yet returned by SSL_read */
bool conn_tls_holds_input(SSL *ssl);
/* ev_mod(w, mask), and when mask reads and TLS holds input, an ev_kick so
 * the handler runs for it without waiting for the socket. */
void conn_arm(struct ev_watch *w, SSL *ssl, uint32_t mask);

#endif
