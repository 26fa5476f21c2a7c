/* tls_sessions.c - the outbound TLS session cache (see tls_sessions.h).
 * OpenSSL hands each new client session to new_session() (with TLS 1.3
 * after the handshake, as tickets arrive); it goes in the slot its key
 * hashes to, replacing what was there. Slots are taken under one lock:
 * a lookup is a hash and a string compare. */
#include "tls_sessions.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SESSION_KEY_MAX 512

struct slot {
    char key[SESSION_KEY_MAX];
    SSL_SESSION *session;
};

static struct slot *slots;
static size_t nslots, kept;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int key_index = -1;              /* SSL ex_data: the connection's key (malloc'd) */

static size_t slot_of(const char *key)
{
    size_t h = 5381;
    for (; *key; key++)
        h = h * 33 + (unsigned char)*key;
    return h % nslots;
}

static void free_key(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    free(ptr);
}

/* OpenSSL's new-session callback. A copy is kept: freeing a connection
 * that did not shut TLS down marks its own session not resumable. */
static int new_session(SSL *ssl, SSL_SESSION *given)
{
    const char *key = SSL_get_ex_data(ssl, key_index);
    SSL_SESSION *session = key && SSL_SESSION_is_resumable(given) ? SSL_SESSION_dup(given) : NULL;
    if (!session)
        return 0;
    pthread_mutex_lock(&lock);
    struct slot *s = &slots[slot_of(key)];
    if (s->session)
        SSL_SESSION_free(s->session);
    else
        kept++;
    snprintf(s->key, sizeof s->key, "%s", key);
    s->session = session;
    pthread_mutex_unlock(&lock);
    return 0;                           /* the given one stays OpenSSL's */
}

int tls_sessions_init(SSL_CTX *ctx, int n)
{
    if (n <= 0)
        return 0;
    if (!(slots = calloc((size_t)n, sizeof *slots)))
        return -1;
    nslots = (size_t)n;
    key_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, free_key);
    if (key_index < 0)
        return -1;
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session);
    return 0;
}

void tls_sessions_offer(SSL *ssl, const char *key)
{
    if (!nslots || !key || strlen(key) >= SESSION_KEY_MAX)
        return;
    char *mine = strdup(key);
    if (!mine || !SSL_set_ex_data(ssl, key_index, mine)) {
        free(mine);
        return;
    }
    pthread_mutex_lock(&lock);
    struct slot *s = &slots[slot_of(key)];
    if (s->session && !strcmp(s->key, key)) {
        time_t now = time(NULL);
        if (SSL_SESSION_get_time(s->session) + SSL_SESSION_get_timeout(s->session) > now)
            SSL_set_session(ssl, s->session);          /* its own reference */
        else {
            SSL_SESSION_free(s->session);
            s->session = NULL;
            kept--;
        }
    }
    pthread_mutex_unlock(&lock);
}

size_t tls_sessions_count(void)
{
    pthread_mutex_lock(&lock);
    size_t n = kept;
    pthread_mutex_unlock(&lock);
    return n;
}
