/* https_client.c - see https_client.h. */
#include "https_client.h"
#include "plugin_net.h"
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

int https_url_parse(const char *url, bool *tls, char *host, size_t hostlen, int *port, char *path, size_t pathlen,
                    char *err, size_t errlen)
{
    const char *p = url;
    *tls = !strncmp(p, "https://", 8);
    if (!*tls && strncmp(p, "http://", 7)) {
        snprintf(err, errlen, "'%s' is not an https:// URL", url);
        return -1;
    }
    p += *tls ? 8 : 7;
    const char *host_end = *p == '[' ? strchr(p, ']') : p + strcspn(p, ":/");
    const char *h = *p == '[' ? p + 1 : p;
    if (!host_end || host_end == h || (size_t)(host_end - h) >= hostlen) {
        snprintf(err, errlen, "no host in '%s'", url);
        return -1;
    }
    snprintf(host, hostlen, "%.*s", (int)(host_end - h), h);
    p = *host_end == ']' ? host_end + 1 : host_end;
    *port = *tls ? 443 : 80;
    if (*p == ':') {
        char *end;
        long v = strtol(p + 1, &end, 10);
        if (end == p + 1 || v < 1 || v > 65535) {
            snprintf(err, errlen, "bad port in '%s'", url);
            return -1;
        }
        *port = (int)v;
        p = end;
    }
    if ((*p && *p != '/') || strlen(p) >= pathlen || strpbrk(p, " \t\r\n") || strpbrk(host, " \t\r\n/")) {
        snprintf(err, errlen, "bad URL '%s'", url);
        return -1;
    }
    snprintf(path, pathlen, "%s", *p ? p : "/");
    return 0;
}

SSL_CTX *https_client_ctx(const char *ca_file, char *why, size_t whylen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        (ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) : SSL_CTX_set_default_verify_paths(ctx)) != 1) {
        snprintf(why, whylen, "TLS setup%s%s failed", ca_file ? " with CA file " : "", ca_file ? ca_file : "");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    return ctx;
}

/* A connected socket to the target (plugin_net.h: every address in turn,
 * bounded by the timeout), or -1 with why. */
static int dial(const struct https_target *t, char *why, size_t whylen)
{
    char port[8];
    snprintf(port, sizeof port, "%d", t->port);
    const char *to = t->connect_to ? t->connect_to : t->host;
    int fd = net_connect_tcp(to, port, (int)t->timeout);
    if (fd < 0)
        snprintf(why, whylen, "connect to %s:%d: %s", to, t->port,
                 errno == EHOSTUNREACH ? "no such host, or no route to it" : strerror(errno));
    return fd;
}

/* TLS on fd, the server's certificate checked for t->host (whatever the
 * context's own verify mode: posternd's outbound one verifies per hop). */
static SSL *tls_on(const struct https_target *t, int fd, char *why, size_t whylen)
{
    SSL *ssl = SSL_new(t->ctx);
    if (ssl)
        SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
    unsigned char ip[16];
    bool literal = inet_pton(AF_INET, t->host, ip) == 1 || inet_pton(AF_INET6, t->host, ip) == 1;
    if (!ssl || SSL_set_fd(ssl, fd) != 1 || (!literal && SSL_set_tlsext_host_name(ssl, t->host) != 1) ||
        (literal ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), t->host) : SSL_set1_host(ssl, t->host)) != 1 ||
        SSL_connect(ssl) != 1) {
        long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
        const char *reason = v != X509_V_OK ? X509_verify_cert_error_string(v)
                                            : ERR_reason_error_string(ERR_peek_last_error());
        snprintf(why, whylen, "TLS to %s:%d: %s", t->host, t->port, reason ? reason : "handshake failed");
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

/* Everything the server sends until it closes (or the limit): 0, or -1. */
static int take_all(SSL *ssl, int fd, struct buf *in)
{
    char chunk[16384];
    for (;;) {
        int r = ssl ? SSL_read(ssl, chunk, sizeof chunk) : (int)read(fd, chunk, sizeof chunk);
        if (r <= 0)
            return in->len ? 0 : -1;
        if (in->len + (size_t)r > HTTPS_MAX_RESPONSE || buf_append(in, chunk, (size_t)r) < 0)
            return -1;
    }
}

/* Transfer-Encoding: chunked (RFC 9112 7.1): each chunk's hex size (and
 * any extensions) on a line, its bytes, CRLF, until the size 0. 0, or -1
 * when the chunks do not fit what came. */
static int dechunk(const char *p, size_t len, struct buf *out)
{
    const char *end = p + len;
    for (;;) {
        const char *nl = memmem(p, (size_t)(end - p), "\r\n", 2);
        char *after;
        unsigned long n = nl ? strtoul(p, &after, 16) : 0;
        if (!nl || after == p || (*after != ';' && after != nl) || n > (size_t)(end - nl - 2))
            return -1;
        if (n == 0)
            return 0;                       /* trailers, if any, are not wanted */
        const char *data = nl + 2;
        if ((size_t)(end - data) < n + 2 || memcmp(data + n, "\r\n", 2) || buf_append(out, data, n) < 0)
            return -1;
        p = data + n + 2;
    }
}

/* Header name's value in the header block [text, end), or NULL. */
static const char *header_value(const char *text, const char *end, const char *name)
{
    size_t n = strlen(name);
    for (const char *h = strstr(text, "\r\n"); h && h < end; h = strstr(h + 2, "\r\n"))
        if (!strncasecmp(h + 2, name, n) && h[2 + n] == ':')
            return h + 3 + n + strspn(h + 3 + n, " \t");
    return NULL;
}

/* The status code and body of a whole response in raw; -1 if malformed. */
static int parse_response(struct buf *raw, struct buf *resp)
{
    buf_append(raw, "", 1);
    const char *text = buf_head(raw), *end = strstr(text, "\r\n\r\n");
    int code;
    if (!end || sscanf(text, "HTTP/1.%*d %3d", &code) != 1)
        return -1;
    const char *body = end + 4;
    size_t len = raw->len - 1 - (size_t)(body - text);
    const char *te = header_value(text, end, "Transfer-Encoding");
    if (te && !strncasecmp(te, "chunked", 7))
        return dechunk(body, len, resp) == 0 ? code : -1;
    const char *cl = header_value(text, end, "Content-Length");
    if (cl) {
        unsigned long n = strtoul(cl, NULL, 10);
        if (n < len)
            len = n;
    }
    buf_append(resp, body, len);
    return code;
}

int https_request(const struct https_target *t, const char *method, const char *path, const char *headers,
                  const char *body, size_t body_len, struct buf *resp, char *why, size_t whylen)
{
    struct buf head, raw;
    buf_init(&head);
    buf_init(&raw);
    int fd = -1, code = -1;
    SSL *ssl = NULL;
    bool v6 = strchr(t->host, ':') != NULL;
    char port[12] = "";        /* the scheme's own port is left out of Host, as browsers do */
    if (t->port != (t->ctx ? 443 : 80))
        snprintf(port, sizeof port, ":%d", t->port);
    buf_printf(&head, "%s %s HTTP/1.1\r\nHost: %s%s%s%s\r\nUser-Agent: posternd\r\n%sContent-Length: %zu\r\n"
               "Connection: close\r\n\r\n", method, path, v6 ? "[" : "", t->host, v6 ? "]" : "", port, headers,
               body_len);
    if ((fd = dial(t, why, whylen)) < 0 || (t->ctx && !(ssl = tls_on(t, fd, why, whylen))))
        goto out;
    if (put(ssl, fd, buf_head(&head), head.len) < 0 || (body_len && put(ssl, fd, body, body_len) < 0)) {
        snprintf(why, whylen, "sending to %s:%d: %s", t->host, t->port, errno ? strerror(errno) : "failed");
        goto out;
    }
    if (take_all(ssl, fd, &raw) < 0 || (code = parse_response(&raw, resp)) < 0)
        snprintf(why, whylen, "%s:%d gave no HTTP answer%s", t->host, t->port,
                 raw.len > HTTPS_MAX_RESPONSE ? " (too long)" : "");
out:
    if (ssl) {
        SSL_shutdown(ssl);
        SSL_free(ssl);
    }
    if (fd >= 0)
        close(fd);
    buf_free(&head);
    buf_free(&raw);
    return code;
}
