/* txn.c - transaction lifecycle and its memory pool. */
#include "txn.h"
#include <stdlib.h>
#include <string.h>

struct pool_block {
    struct pool_block *next;
    max_align_t data[];
};

void *txn_alloc(txn_t *t, size_t n)
{
    struct pool_block *b = calloc(1, sizeof *b + n);
    if (!b)
        return NULL;
    b->next = t->pool;
    t->pool = b;
    return b->data;
}

static void pool_free(txn_t *t)
{
    while (t->pool) {
        struct pool_block *n = t->pool->next;
        free(t->pool);
        t->pool = n;
    }
}

void txn_reset(txn_t *t)
{
    free(t->sender);
    for (size_t i = 0; i < t->nrcpts; i++) {
        free(t->rcpts[i]);
        free(t->nexthops[i]);
    }
    free(t->rcpts);
    free(t->nexthops);
    headers_free(&t->hdrs);
    buf_free(&t->new_body);
    pool_free(t);
    char ip[sizeof t->client_ip], helo[sizeof t->helo];
    bool tls = t->tls;
    memcpy(ip, t->client_ip, sizeof ip);
    memcpy(helo, t->helo, sizeof helo);
    memset(t, 0, sizeof *t);
    memcpy(t->client_ip, ip, sizeof ip);
    memcpy(t->helo, helo, sizeof helo);
    t->tls = tls;
}

void txn_free(txn_t *t)
{
    txn_reset(t);
}

int txn_add_rcpt(txn_t *t, const char *addr)
{
    char **r = realloc(t->rcpts, (t->nrcpts + 1) * sizeof *r);
    if (!r)
        return -1;
    t->rcpts = r;
    char **h = realloc(t->nexthops, (t->nrcpts + 1) * sizeof *h);
    if (!h)
        return -1;
    t->nexthops = h;
    if (!(t->rcpts[t->nrcpts] = strdup(addr)))
        return -1;
    t->nexthops[t->nrcpts] = NULL;
    t->nrcpts++;
    return 0;
}

int txn_set_sender(txn_t *t, const char *addr)
{
    char *s = strdup(addr);
    if (!s)
        return -1;
    free(t->sender);
    t->sender = s;
    return 0;
}
