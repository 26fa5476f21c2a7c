/* https_client.h - one blocking HTTP/1.1 request over TLS (or plain HTTP
 * to loopback), for threads and programs that may wait: the event
 * stream's webhook sink, fleet queries from `postern track` and the
 * console, and MTA-STS policy fetches on a worker. A connection per
 * request (Connection: close), or one kept (https_request_on); each read
 * and write within a timeout, the server's certificate always checked
 * (against the context's CAs) for its host name or IP address; a chunked
 * response is decoded. */
#ifndef POSTERN_HTTPS_CLIENT_H
#define POSTERN_HTTPS_CLIENT_H
#include "buf.h"
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define HTTPS_MAX_RESPONSE (16u << 20)

struct https_target {
    const char *host;           /* a name, or an IPv4/IPv6 literal */
    const char *connect_to;     /* an address already resolved for host (its own DNS), or NULL */
    int port;
    SSL_CTX *ctx;               /* NULL: plain HTTP */
    long timeout;               /* seconds, for connecting and for each read or write */
    const char *want_type;      /* a 2xx answer of another media type fails (-1 with why), or NULL */
    size_t max_response;        /* bytes of answer, headers included (0: HTTPS_MAX_RESPONSE) */
};

/* https://HOST[:PORT][/PATH] (or http://; an IPv6 HOST in brackets) into
 * its parts (path "/" when none): 0, or -1 with err. */
int https_url_parse(const char *url, bool *tls, char *host, size_t hostlen, int *port, char *path, size_t pathlen,
                    char *err, size_t errlen);
/* A client context that verifies servers against ca_file (NULL: the
 * system's certificates); NULL with why. */
SSL_CTX *https_client_ctx(const char *ca_file, char *why, size_t whylen);
/* A connection kept between requests (a sink's, on its own thread):
 * HTTP/1.1 keep-alive, dropped after HTTPS_KEEP_IDLE_S unused or when the
 * server closes it, and the TLS session kept for the next connection
 * (resumed: no certificate sent or checked, no signature made). */
#define HTTPS_KEEP_IDLE_S 30
struct https_conn {
    int fd;                     /* -1: none open */
    SSL *ssl;
    SSL_SESSION *session;       /* the server's last session, or NULL */
    time_t last_used;
};
void https_conn_init(struct https_conn *c);
/* Closed, and the kept session freed. */
void https_conn_close(struct https_conn *c);

/* method path with headers (each "Name: value\r\n", or "") and body: the
 * status code, and the response body in *resp; -1 with why when no answer
 * came (connection, TLS, timeout, a response over the target's limit). */
int https_request(const struct https_target *t, const char *method, const char *path, const char *headers,
                  const char *body, size_t body_len, struct buf *resp, char *why, size_t whylen);
/* The same on c's connection, kept open for the next request when the
 * server allows. A kept connection the server closed before answering is
 * tried once more on a new one (the request may then arrive twice: the
 * event stream's receivers drop duplicates by ID). */
int https_request_on(struct https_conn *c, const struct https_target *t, const char *method, const char *path,
                     const char *headers, const char *body, size_t body_len, struct buf *resp, char *why,
                     size_t whylen);

#endif
