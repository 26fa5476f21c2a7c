/* sink_webhook.c - the webhook sink (issue 39): each batch is one HTTP/1.1
 * POST of a JSON array to the sink's URL (https_client.c: over TLS, the
 * receiver's certificate verified against ca=FILE or the system's, and its
 * name or address checked; each read and write within the sink's
 * timeout). The connection is kept for the next batch while the receiver
 * allows (HTTP/1.1 keep-alive), and a new one resumes the last TLS
 * session. With secret=FILE the body is signed:
 * X-Postern-Signature: sha256=HEX(HMAC-SHA256(secret, body)). A 2xx answer
 * takes the batch; anything else is a failure, sent again later. */
#include "sinks.h"
#include "buf.h"
#include "https_client.h"
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct webhook {
    SSL_CTX *ctx;          /* NULL for http:// */
    struct https_conn conn;
};

static void *webhook_open(const struct event_sink *s, char *why, size_t whylen)
{
    struct webhook *w = calloc(1, sizeof *w);
    if (w)
        https_conn_init(&w->conn);
    if (!w || !s->tls)
        return w;
    if (!(w->ctx = https_client_ctx(s->ca_file, why, whylen))) {
        free(w);
        return NULL;
    }
    return w;
}

static void webhook_close(void *state)
{
    struct webhook *w = state;
    if (w) {
        https_conn_close(&w->conn);
        SSL_CTX_free(w->ctx);
    }
    free(w);
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
    struct buf body, resp;
    buf_init(&body);
    buf_init(&resp);
    int rc = -1;
    if (body_of(b, &body) < 0) {
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    char sig[65] = "", headers[256];
    if (s->secret)
        signature(s, &body, sig);
    snprintf(headers, sizeof headers, "Content-Type: application/json\r\nX-Postern-Events: %zu\r\n%s%s%s", b->n,
             sig[0] ? "X-Postern-Signature: sha256=" : "", sig, sig[0] ? "\r\n" : "");
    struct https_target t = {.host = s->host, .port = s->port, .ctx = w->ctx, .timeout = s->timeout};
    int code = https_request_on(&w->conn, &t, "POST", s->path, headers, buf_head(&body), body.len, &resp, why, whylen);
    if (code >= 0 && (code < 200 || code > 299))
        snprintf(why, whylen, "%s:%d answered %d", s->host, s->port, code);
    rc = code >= 200 && code <= 299 ? 0 : -1;
out:
    buf_free(&body);
    buf_free(&resp);
    return rc;
}

const struct sink_ops webhook_sink_ops = {webhook_open, webhook_send, webhook_close};
