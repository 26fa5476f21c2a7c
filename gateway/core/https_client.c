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
#include <time.h>
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
static SSL *tls_on(const struct https_target *t, int fd, SSL_SESSION *resume, char *why, size_t whylen)
{
    SSL *ssl = SSL_new(t->ctx);
    if (ssl)
        SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
    if (ssl && resume)
        SSL_set_session(ssl, resume);       /* the server's last session: no certificate, no signature */
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

static int dechunk(const char *p, size_t len, struct buf *out);

/* Header name's value in the header block [text, end) (end: where its
 * closing blank line starts, so what follows the value is CRLF), or NULL. */
static const char *header_value(const char *text, const char *end, const char *name)
{
    size_t n = strlen(name);
    for (const char *h = memmem(text, (size_t)(end - text), "\r\n", 2); h && h < end;
         h = memmem(h + 2, (size_t)(end + 2 - (h + 2)), "\r\n", 2))
        if ((size_t)(end - (h + 2)) > n && !strncasecmp(h + 2, name, n) && h[2 + n] == ':')
            return h + 3 + n + strspn(h + 3 + n, " \t");
    return NULL;
}

/* The status code of the answer raw[len] starts with ("HTTP/1.x NNN"), and
 * into *minor the x; -1 when it is not one. */
static int status_line(const char *raw, size_t len, int *minor)
{
    if (len < 12 || memcmp(raw, "HTTP/1.", 7) || raw[7] < '0' || raw[7] > '9' || raw[8] != ' ')
        return -1;
    int code = 0;
    for (size_t i = 9; i < 12; i++) {
        if (raw[i] < '0' || raw[i] > '9')
            return -1;
        code = code * 10 + (raw[i] - '0');
    }
    *minor = raw[7] - '0';
    return code;
}

/* Where one response in raw [0, len) ends: its length, 0 while more must
 * come, or -1 when it runs until the server closes (no length given).
 * *close: the server said it closes the connection after this answer. */
static long response_end(const char *raw, size_t len, bool *close)
{
    const char *end = memmem(raw, len, "\r\n\r\n", 4);
    if (!end)
        return 0;
    size_t head = (size_t)(end + 4 - raw);
    int minor = 0, code = status_line(raw, len, &minor);
    const char *conn = header_value(raw, end, "Connection");
    /* HTTP/1.0 closes unless it says keep-alive; 1.1 keeps unless it says close */
    *close = minor == 0 ? !conn || strncasecmp(conn, "keep-alive", 10) : conn && !strncasecmp(conn, "close", 5);
    if (code == 204 || code == 304 || (code >= 100 && code < 200))
        return (long)head;
    const char *te = header_value(raw, end, "Transfer-Encoding");
    if (te && !strncasecmp(te, "chunked", 7)) {
        /* complete when the chunks parse to the last one and the block ends */
        struct buf scratch;
        buf_init(&scratch);
        bool whole = len - head >= 5 && !memcmp(raw + len - 4, "\r\n\r\n", 4) &&
                     dechunk(raw + head, len - head, &scratch) == 0;
        buf_free(&scratch);
        return whole ? (long)len : 0;
    }
    const char *cl = header_value(raw, end, "Content-Length");
    if (!cl)
        return -1;
    unsigned long n = strtoul(cl, NULL, 10);
    return len - head >= n ? (long)(head + n) : 0;
}

/* One response into in: read until its end (or, with no length given,
 * until the server closes). 0, or -1 (*too_long: it passed limit bytes).
 * *keep: the connection can carry another request. */
static int take_response(SSL *ssl, int fd, struct buf *in, size_t limit, bool *keep, bool *too_long)
{
    char chunk[16384];
    *keep = *too_long = false;
    for (;;) {
        bool close = false;
        long end = in->len ? response_end(buf_head(in), in->len, &close) : 0;
        if (end > 0) {
            *keep = !close && (size_t)end == in->len;
            return 0;
        }
        int r = ssl ? SSL_read(ssl, chunk, sizeof chunk) : (int)read(fd, chunk, sizeof chunk);
        if (r <= 0)
            return end < 0 ? 0 : -1;        /* closed: the end of an answer without a length */
        if ((*too_long = in->len + (size_t)r > limit) || buf_append(in, chunk, (size_t)r) < 0)
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

/* The status code and body of a whole response in raw; -1 if malformed. */
static int parse_response(const struct buf *raw, struct buf *resp)
{
    const char *text = buf_head(raw), *end = memmem(text, raw->len, "\r\n\r\n", 4);
    int minor, code = status_line(text, raw->len, &minor);
    if (!end || code < 0)
        return -1;
    const char *body = end + 4;
    size_t len = raw->len - (size_t)(body - text);
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

void https_conn_init(struct https_conn *c) { *c = (struct https_conn){.fd = -1}; }

/* The connection closed; its TLS session kept for the next one. */
static void conn_drop(struct https_conn *c)
{
    if (c->ssl) {
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
    }
    if (c->fd >= 0)
        close(c->fd);
    c->ssl = NULL;
    c->fd = -1;
}

void https_conn_close(struct https_conn *c)
{
    conn_drop(c);
    SSL_SESSION_free(c->session);
    c->session = NULL;
}

static int conn_open(struct https_conn *c, const struct https_target *t, char *why, size_t whylen)
{
    if ((c->fd = dial(t, why, whylen)) < 0)
        return -1;
    if (t->ctx && !(c->ssl = tls_on(t, c->fd, c->session, why, whylen))) {
        conn_drop(c);
        return -1;
    }
    return 0;
}

/* The request on c's connection (a new one when it has none): 0 and the
 * raw answer, or -1 with why; *keep as take_response's. */
static int exchange(struct https_conn *c, const struct https_target *t, const struct buf *head, const char *body,
                    size_t body_len, struct buf *raw, bool *keep, char *why, size_t whylen)
{
    if (c->fd < 0 && conn_open(c, t, why, whylen) < 0)
        return -1;
    errno = 0;
    if (put(c->ssl, c->fd, buf_head(head), head->len) < 0 || (body_len && put(c->ssl, c->fd, body, body_len) < 0)) {
        snprintf(why, whylen, "sending to %s:%d: %s", t->host, t->port, errno ? strerror(errno) : "failed");
        return -1;
    }
    bool too_long;
    size_t limit = t->max_response ? t->max_response : HTTPS_MAX_RESPONSE;
    if (take_response(c->ssl, c->fd, raw, limit, keep, &too_long) < 0) {
        if (too_long)
            snprintf(why, whylen, "%s:%d answered with over %zu bytes", t->host, t->port, limit);
        else
            snprintf(why, whylen, "%s:%d gave no HTTP answer", t->host, t->port);
        return -1;
    }
    return 0;
}

/* Does the answer's Content-Type name the media type want? Into got, what
 * it names ("none" when absent). */
static bool media_type_is(const struct buf *raw, const char *want, char *got, size_t gotlen)
{
    const char *end = memmem(buf_head(raw), raw->len, "\r\n\r\n", 4);
    const char *ct = end ? header_value(buf_head(raw), end, "Content-Type") : NULL;
    size_t n = ct ? strcspn(ct, "; \t\r\n") : 0;
    snprintf(got, gotlen, "%.*s", (int)(n ? n : 4), n ? ct : "none");
    return n == strlen(want) && !strncasecmp(ct, want, n);
}

int https_request_on(struct https_conn *kept, const struct https_target *t, const char *method, const char *path,
                     const char *headers, const char *body, size_t body_len, struct buf *resp, char *why,
                     size_t whylen)
{
    struct https_conn once;
    struct https_conn *c = kept ? kept : &once;
    if (!kept)
        https_conn_init(&once);
    struct buf head, raw;
    buf_init(&head);
    buf_init(&raw);
    bool v6 = strchr(t->host, ':') != NULL;
    char port[12] = "";        /* the scheme's own port is left out of Host, as browsers do */
    if (t->port != (t->ctx ? 443 : 80))
        snprintf(port, sizeof port, ":%d", t->port);
    buf_printf(&head, "%s %s HTTP/1.1\r\nHost: %s%s%s%s\r\nUser-Agent: posternd\r\n%sContent-Length: %zu\r\n%s\r\n",
               method, path, v6 ? "[" : "", t->host, v6 ? "]" : "", port, headers, body_len,
               kept ? "" : "Connection: close\r\n");
    time_t now = time(NULL);
    if (c->fd >= 0 && now - c->last_used > HTTPS_KEEP_IDLE_S)
        conn_drop(c);                        /* the server may have closed it by now */
    bool reused = c->fd >= 0, keep = false;
    int code = -1;
    int rc = exchange(c, t, &head, body, body_len, &raw, &keep, why, whylen);
    if (rc < 0 && reused && raw.len == 0) {
        /* the server closed the kept connection before reading this
         * request (an idle timeout): once more on a new one */
        conn_drop(c);
        rc = exchange(c, t, &head, body, body_len, &raw, &keep, why, whylen);
    }
    char type[64];
    if (rc == 0 && (code = parse_response(&raw, resp)) < 0)
        snprintf(why, whylen, "%s:%d gave no HTTP answer", t->host, t->port);
    else if (rc == 0 && code / 100 == 2 && t->want_type && !media_type_is(&raw, t->want_type, type, sizeof type)) {
        snprintf(why, whylen, "%s:%d answered with Content-Type %s, not %s", t->host, t->port, type, t->want_type);
        code = -1;
    }
    if (c->ssl && SSL_get0_session(c->ssl) && SSL_SESSION_is_resumable(SSL_get0_session(c->ssl))) {
        SSL_SESSION_free(c->session);
        c->session = SSL_get1_session(c->ssl);
    }
    c->last_used = now;
    if (code < 0 || !keep || !kept)
        conn_drop(c);
    if (!kept)
        https_conn_close(&once);
    buf_free(&head);
    buf_free(&raw);
    return code;
}

int https_request(const struct https_target *t, const char *method, const char *path, const char *headers,
                  const char *body, size_t body_len, struct buf *resp, char *why, size_t whylen)
{
    return https_request_on(NULL, t, method, path, headers, body, body_len, resp, why, whylen);
}
