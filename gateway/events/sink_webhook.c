/* sink_webhook.c - the webhook sink (issue 39): each batch is one HTTP/1.1
 * POST of a JSON array to the sink's URL, over TLS (the receiver's
 * certificate verified against ca=FILE or the system's, and its name or
 * address checked), on a connection of its own (Connection: close), within
 * the sink's timeout. With secret=FILE the body is signed:
 * X-Postern-Signature: sha256=HEX(HMAC-SHA256(secret, body)). A 2xx answer
 * takes the batch; anything else is a failure, sent again later. */
#include "sinks.h"
#include "buf.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

struct webhook {
    SSL_CTX *ctx;          /* NULL for http:// */
};

static void *webhook_open(const struct event_sink *s, char *why, size_t whylen)
{
    struct webhook *w = calloc(1, sizeof *w);
    if (!w || !s->tls)
        return w;
    w->ctx = SSL_CTX_new(TLS_client_method());
    if (!w->ctx || SSL_CTX_set_min_proto_version(w->ctx, TLS1_2_VERSION) != 1 ||
        (s->ca_file ? SSL_CTX_load_verify_locations(w->ctx, s->ca_file, NULL)
                    : SSL_CTX_set_default_verify_paths(w->ctx)) != 1) {
        snprintf(why, whylen, "TLS setup%s%s failed", s->ca_file ? " with ca=" : "", s->ca_file ? s->ca_file : "");
        SSL_CTX_free(w->ctx);
        free(w);
        return NULL;
    }
    SSL_CTX_set_verify(w->ctx, SSL_VERIFY_PEER, NULL);
    return w;
}

static void webhook_close(void *state)
{
    struct webhook *w = state;
    if (w)
        SSL_CTX_free(w->ctx);
    free(w);
}

/* A connected socket to host:port within timeout seconds, or -1. */
static int dial(const struct event_sink *s, char *why, size_t whylen)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    char port[8];
    snprintf(port, sizeof port, "%d", s->port);
    int rc = getaddrinfo(s->host, port, &hints, &res);
    if (rc != 0) {
        snprintf(why, whylen, "%s: %s", s->host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int err = 0;
        socklen_t len = sizeof err;
        if ((connect(fd, a->ai_addr, a->ai_addrlen) == 0 ||
             (errno == EINPROGRESS && poll(&p, 1, (int)s->timeout * 1000) == 1 &&
              getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0)))
            break;
        snprintf(why, whylen, "connect to %s:%d: %s", s->host, s->port, strerror(err ? err : errno ? errno : ETIMEDOUT));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd >= 0) {       /* from here on, blocking with the timeout */
        struct timeval tv = {.tv_sec = s->timeout};
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    return fd;
}

/* TLS on fd, the receiver's certificate checked for s->host. */
static SSL *tls_on(struct webhook *w, const struct event_sink *s, int fd, char *why, size_t whylen)
{
    SSL *ssl = SSL_new(w->ctx);
    unsigned char ip[16];
    bool literal = inet_pton(AF_INET, s->host, ip) == 1 || inet_pton(AF_INET6, s->host, ip) == 1;
    if (!ssl || SSL_set_fd(ssl, fd) != 1 || (!literal && SSL_set_tlsext_host_name(ssl, s->host) != 1) ||
        (literal ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), s->host) : SSL_set1_host(ssl, s->host)) != 1 ||
        SSL_connect(ssl) != 1) {
        long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
        const char *reason = v != X509_V_OK ? X509_verify_cert_error_string(v)
                                            : ERR_reason_error_string(ERR_peek_last_error());
        snprintf(why, whylen, "TLS to %s:%d: %s", s->host, s->port, reason ? reason : "handshake failed");
        ERR_clear_error();
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

static int put(SSL *ssl, int fd, const char *p, size_t n)
{
    while (n > 0) {
        int w = ssl ? SSL_write(ssl, p, n > 1 << 30 ? 1 << 30 : (int)n) : (int)write(fd, p, n);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The status line's code, or -1. */
static int status_of(SSL *ssl, int fd)
{
    char line[256];
    size_t got = 0;
    while (got < sizeof line - 1) {
        int r = ssl ? SSL_read(ssl, line + got, (int)(sizeof line - 1 - got)) : (int)read(fd, line + got,
                                                                                         sizeof line - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        if (memchr(line, '\n', got))
            break;
    }
    line[got] = '\0';
    int code;
    return sscanf(line, "HTTP/1.%*d %3d", &code) == 1 ? code : -1;
}

/* The batch as a JSON array. */
static int body_of(const struct sink_batch *b, struct buf *body)
{
    int rc = buf_append(body, "[", 1);
    for (size_t i = 0; i < b->n && rc == 0; i++)
        rc = (i ? buf_append(body, ",", 1) : 0) || buf_append(body, b->events[i], b->lens[i]) ? -1 : 0;
    return rc || buf_append(body, "]", 1) ? -1 : 0;
}

static void signature(const struct event_sink *s, const struct buf *body, char hex[65])
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), s->secret, (int)s->secret_len, (const unsigned char *)buf_head(body), body->len, mac, &len);
    for (unsigned i = 0; i < len && i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
}

static int webhook_send(void *state, const struct event_sink *s, const struct sink_batch *b, char *why,
                        size_t whylen)
{
    struct webhook *w = state;
    struct buf body, head;
    buf_init(&body);
    buf_init(&head);
    int fd = -1, rc = -1;
    SSL *ssl = NULL;
    if (body_of(b, &body) < 0) {
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    char sig[65] = "";
    if (s->secret)
        signature(s, &body, sig);
    bool v6 = strchr(s->host, ':') != NULL;
    buf_printf(&head, "POST %s HTTP/1.1\r\nHost: %s%s%s:%d\r\nUser-Agent: posternd\r\nContent-Type: application/json\r\n"
               "Content-Length: %zu\r\nX-Postern-Events: %zu\r\n%s%s%sConnection: close\r\n\r\n", s->path,
               v6 ? "[" : "", s->host, v6 ? "]" : "", s->port, body.len, b->n, sig[0] ? "X-Postern-Signature: sha256=" : "",
               sig, sig[0] ? "\r\n" : "");
    if ((fd = dial(s, why, whylen)) < 0 || (w->ctx && !(ssl = tls_on(w, s, fd, why, whylen))))
        goto out;
    if (put(ssl, fd, buf_head(&head), head.len) < 0 || put(ssl, fd, buf_head(&body), body.len) < 0) {
        snprintf(why, whylen, "sending to %s:%d: %s", s->host, s->port, errno ? strerror(errno) : "failed");
        goto out;
    }
    int code = status_of(ssl, fd);
    if (code < 200 || code > 299) {
        snprintf(why, whylen, code < 0 ? "%s:%d gave no HTTP answer" : "%s:%d answered %d", s->host, s->port, code);
        goto out;
    }
    rc = 0;
out:
    if (ssl) {
        SSL_shutdown(ssl);
        SSL_free(ssl);
    }
    if (fd >= 0)
        close(fd);
    buf_free(&body);
    buf_free(&head);
    return rc;
}

const struct sink_ops webhook_sink_ops = {webhook_open, webhook_send, webhook_close};
