/* tls.c - the OpenSSL side of STARTTLS. Non-blocking use lives with the
 * sessions that own the SSL objects. */
#include "tls.h"
#include "tls_sessions.h"
#include <openssl/err.h>
#include <stdio.h>
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

static SSL_CTX *server_ctx;

void tls_last_error(char *out, size_t n)
{
    unsigned long e = ERR_get_error();
    if (!e) {
        snprintf(out, n, "unknown TLS error");
        return;
    }
    ERR_error_string_n(e, out, n);
    ERR_clear_error();
}

int tls_server_init(const char *cert, const char *key, char *err, size_t errlen)
{
    if (!cert && !key)
        return 0;
    if (!cert || !key) {
        snprintf(err, errlen, "tls_cert and tls_key go together");
        return -1;
    }
    server_ctx = SSL_CTX_new(TLS_server_method());
    if (!server_ctx || !SSL_CTX_set_min_proto_version(server_ctx, TLS1_2_VERSION)) {
        tls_last_error(err, errlen);
        return -1;
    }
    static const unsigned char sid_ctx[] = "postern";
    SSL_CTX_set_session_id_context(server_ctx, sid_ctx, sizeof sid_ctx - 1);
    SSL_CTX_set_session_cache_mode(server_ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_options(server_ctx, SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* an idle session gives its read and write buffers back (an idle TLS session: 32 -> 17 KiB);
     * a write OpenSSL could not finish is retried from the output buffer's head, which may
     * have moved (grown) since: the same bytes, at another address */
    SSL_CTX_set_mode(server_ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* one read() takes whatever the peer sent, not a record's 5-byte header
     * and then its body (conn_tls_holds_input sees what is buffered) */
    SSL_CTX_set_read_ahead(server_ctx, 1);
    /* TLS 1.3: one ticket per handshake, not OpenSSL's two (as Postfix);
     * a client that resumes needs one, and each costs a seal and a write */
    SSL_CTX_set_num_tickets(server_ctx, 1);
    char e[256];
    if (SSL_CTX_use_certificate_chain_file(server_ctx, cert) != 1) {
        tls_last_error(e, sizeof e);
        snprintf(err, errlen, "tls_cert %s: %s", cert, e);
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(server_ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(server_ctx) != 1) {
        tls_last_error(e, sizeof e);
        snprintf(err, errlen, "tls_key %s: %s", key, e);
        return -1;
    }
    return 0;
}

SSL_CTX *tls_server_ctx(void) { return server_ctx; }

/* An SSL_read/SSL_write result in recv/send terms. */
static ssize_t io_result(SSL *ssl, int r)
{
    if (r > 0)
        return r;
    int e = SSL_get_error(ssl, r);
    ERR_clear_error();
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return errno = EAGAIN, -1;
    return e == SSL_ERROR_ZERO_RETURN ? 0 : (errno = EIO, -1);
}

ssize_t tls_read(SSL *ssl, int fd, char *buf, size_t n)
{
    if (!ssl)
        return recv(fd, buf, n, 0);
    return io_result(ssl, SSL_read(ssl, buf, (int)(n > INT_MAX ? INT_MAX : n)));
}

ssize_t tls_write(SSL *ssl, int fd, const char *buf, size_t n)
{
    if (!ssl)
        return send(fd, buf, n, MSG_NOSIGNAL);
    return io_result(ssl, SSL_write(ssl, buf, (int)(n > INT_MAX ? INT_MAX : n)));
}

static SSL_CTX *client_ctx;

int tls_client_init(const char *cafile, int session_cache, char *err, size_t errlen)
{
    client_ctx = SSL_CTX_new(TLS_client_method());
    if (!client_ctx || !SSL_CTX_set_min_proto_version(client_ctx, TLS1_2_VERSION)) {
        tls_last_error(err, errlen);
        return -1;
    }
    int ok = cafile ? SSL_CTX_load_verify_locations(client_ctx, cafile, NULL) : SSL_CTX_set_default_verify_paths(client_ctx);
    if (ok != 1) {
        char e[256];
        tls_last_error(e, sizeof e);
        snprintf(err, errlen, "tls_ca_file %s: %s", cafile ? cafile : "(system)", e);
        return -1;
    }
    SSL_CTX_set_session_cache_mode(client_ctx, SSL_SESS_CACHE_OFF);
    if (tls_sessions_init(client_ctx, session_cache) < 0) {      /* turns the client cache on */
        snprintf(err, errlen, "out of memory for the TLS session cache");
        return -1;
    }
    /* a cached idle connection holds no buffers; a write is retried from a buffer that may have moved */
    SSL_CTX_set_mode(client_ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(client_ctx, 1);                       /* as the server's */
    /* DANE (RFC 7672): TLSA records go on each connection that has them;
     * a DANE-EE(3) match authenticates the server whatever its name (3.1.1) */
    if (SSL_CTX_dane_enable(client_ctx) <= 0) {
        tls_last_error(err, errlen);
        return -1;
    }
    SSL_CTX_dane_set_flags(client_ctx, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
    return 0;
}

SSL_CTX *tls_client_ctx(void) { return client_ctx; }

void tls_describe(SSL *ssl, char *out, size_t n)
{
    int alg = 0;
    int bits = SSL_get_cipher_bits(ssl, &alg);
    snprintf(out, n, "%s with cipher %s (%d/%d bits)", SSL_get_version(ssl), SSL_get_cipher_name(ssl), bits, alg);
}

int tls_handshake_step(SSL *ssl, uint32_t *want)
{
    int r = SSL_do_handshake(ssl);
    if (r == 1)
        return 1;
    int e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        *want = e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT;
        return 0;
    }
    return -1;
}
