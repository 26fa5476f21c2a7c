/* tls-load.c - the TLS benchmark's load client in C (the Python one,
 * tls-load.py, spends more CPU per session than the servers it measures):
 *   tls-load HOST PORT N SESSIONS SIZE [--tls]
 * sends N messages of about SIZE bytes over SESSIONS threads, one SMTP
 * session per message (as smtp-source without -d), each upgraded with
 * STARTTLS when asked (no certificate check, no session resumption: every
 * session pays a full handshake, as mail from many different senders does).
 * Prints accept_s and failures; exit 1 if any session failed.
 * Build: cc -O2 -o tls-load bench/tls-load.c -lssl -lcrypto -lpthread */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in server;
static atomic_int left, failures;
static int use_tls;
static SSL_CTX *ctx;
static char *body;
static size_t body_len;

struct conn {
    int fd;
    SSL *ssl;
    char buf[8192];
    size_t len;
};

static int conn_write(struct conn *c, const char *p, size_t n)
{
    while (n) {
        int w = c->ssl ? SSL_write(c->ssl, p, (int)n) : (int)send(c->fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One reply (multi-line ones whole); its code, or -1. */
static int reply(struct conn *c)
{
    for (;;) {
        char *line = c->buf, *nl;
        while ((nl = memchr(line, '\n', c->len - (size_t)(line - c->buf)))) {
            if (nl - line >= 4 && line[3] == ' ') {
                int code = atoi(line);
                size_t used = (size_t)(nl + 1 - c->buf);
                memmove(c->buf, nl + 1, c->len - used);
                c->len -= used;
                return code;
            }
            line = nl + 1;
        }
        if (c->len == sizeof c->buf)
            return -1;
        int r = c->ssl ? SSL_read(c->ssl, c->buf + c->len, (int)(sizeof c->buf - c->len))
                       : (int)recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
        if (r <= 0)
            return -1;
        c->len += (size_t)r;
    }
}

static int cmd(struct conn *c, const char *line, int want)
{
    return conn_write(c, line, strlen(line)) == 0 && reply(c) == want ? 0 : -1;
}

static int one_session(void)
{
    struct conn c = {.fd = socket(AF_INET, SOCK_STREAM, 0)};
    int ok = -1, one = 1;
    struct timeval tv = {.tv_sec = 30};
    setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c.fd, (struct sockaddr *)&server, sizeof server) < 0 || reply(&c) != 220 ||
        cmd(&c, "EHLO bench.test\r\n", 250) < 0)
        goto out;
    if (use_tls) {
        if (cmd(&c, "STARTTLS\r\n", 220) < 0 || !(c.ssl = SSL_new(ctx)) || SSL_set_fd(c.ssl, c.fd) != 1 ||
            SSL_connect(c.ssl) != 1 || cmd(&c, "EHLO bench.test\r\n", 250) < 0)
            goto out;
    }
    if (cmd(&c, "MAIL FROM:<sender@bench.test>\r\n", 250) < 0 || cmd(&c, "RCPT TO:<rcpt@dest.test>\r\n", 250) < 0 ||
        cmd(&c, "DATA\r\n", 354) < 0 || conn_write(&c, body, body_len) < 0 || cmd(&c, ".\r\n", 250) < 0)
        goto out;
    cmd(&c, "QUIT\r\n", 221);
    ok = 0;
out:
    if (c.ssl) {
        SSL_shutdown(c.ssl);
        SSL_free(c.ssl);
    }
    close(c.fd);
    return ok;
}

static void *worker(void *arg)
{
    (void)arg;
    while (atomic_fetch_sub(&left, 1) > 0)
        if (one_session() < 0)
            atomic_fetch_add(&failures, 1);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: tls-load HOST PORT N SESSIONS SIZE [--tls]\n");
        return 2;
    }
    server.sin_family = AF_INET;
    server.sin_port = htons((uint16_t)atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &server.sin_addr);
    atomic_store(&left, atoi(argv[3]));
    int sessions = atoi(argv[4]), size = atoi(argv[5]);
    use_tls = argc > 6 && !strcmp(argv[6], "--tls");
    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    int lines = size / 78 > 0 ? size / 78 : 1;
    body = malloc((size_t)lines * 78 + 64);
    body_len = (size_t)sprintf(body, "Subject: tls bench\r\n\r\n");
    for (int i = 0; i < lines; i++)
        body_len += (size_t)sprintf(body + body_len, "%.76s\r\n",
                                    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    pthread_t *th = calloc((size_t)sessions, sizeof *th);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < sessions; i++)
        pthread_create(&th[i], NULL, worker, NULL);
    for (int i = 0; i < sessions; i++)
        pthread_join(th[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("accept_s=%.2f failures=%d\n", (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9,
           atomic_load(&failures));
    return atomic_load(&failures) ? 1 : 0;
}
