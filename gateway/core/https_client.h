/* https_client.h - one blocking HTTP/1.1 request over TLS (or plain HTTP
 * to loopback), for threads and programs that may wait: the event
 * stream's webhook sink, fleet queries from `postern track` and the
 * console, and MTA-STS policy fetches on a worker. A connection per
 * request (Connection: close), the whole exchange within a timeout, the
 * server's certificate always checked (against the context's CAs) for its
 * host name or IP address; a chunked response is decoded. */
#ifndef POSTERN_HTTPS_CLIENT_H
#define POSTERN_HTTPS_CLIENT_H
#include "buf.h"
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

#define HTTPS_MAX_RESPONSE (16u << 20)

struct https_target {
    const char *host;           /* a name, or an IPv4/IPv6 literal */
    const char *connect_to;     /* an address already resolved for host (its own DNS), or NULL */
    int port;
    SSL_CTX *ctx;               /* NULL: plain HTTP */
    long timeout;               /* seconds, for connecting and for each read or write */
};

/* https://HOST[:PORT][/PATH] (or http://; an IPv6 HOST in brackets) into
 * its parts (path "/" when none): 0, or -1 with err. */
int https_url_parse(const char *url, bool *tls, char *host, size_t hostlen, int *port, char *path, size_t pathlen,
                    char *err, size_t errlen);
/* A client context that verifies servers against ca_file (NULL: the
 * system's certificates); NULL with why. */
SSL_CTX *https_client_ctx(const char *ca_file, char *why, size_t whylen);
/* method path with headers (each "Name: value\r\n", or "") and body: the
 * status code, and the response body in *resp; -1 with why when no answer
 * came (connection, TLS, timeout, a response over HTTPS_MAX_RESPONSE). */
int https_request(const struct https_target *t, const char *method, const char *path, const char *headers,
                  const char *body, size_t body_len, struct buf *resp, char *why, size_t whylen);

#endif
