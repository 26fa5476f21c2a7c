/* txn.c - transaction lifecycle and its memory pool. */
#include "txn.h"
#include "array_grow.h"
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

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

static void *slot_get(const struct txn_slot *head, const void *owner)
{
    for (const struct txn_slot *s = head; s; s = s->next)
        if (s->owner == owner)
            return s->data;
    return NULL;
}

static void slot_release(struct txn_slot *s)
{
    if (s->release && s->data)
        s->release(s->data);
    s->data = NULL;
}

static int slot_set(struct txn_slot **head, const void *owner, void *data, void (*release)(void *data))
{
    struct txn_slot *s = *head;
    while (s && s->owner != owner)
        s = s->next;
    if (!s) {
        if (!(s = calloc(1, sizeof *s)))
            return -1;
        s->owner = owner;
        s->next = *head;
        *head = s;
    } else {
        slot_release(s);
    }
    s->data = data;
    s->release = release;
    return 0;
}

void *txn_slot_get(const txn_t *t, const void *owner) { return slot_get(t->slots, owner); }

int txn_slot_set(txn_t *t, const void *owner, void *data, void (*release)(void *data))
{
    return slot_set(&t->slots, owner, data, release);
}

void *txn_session_slot_get(const txn_t *t, const void *owner)
{
    return t->session_slots ? slot_get(*t->session_slots, owner) : NULL;
}

int txn_session_slot_set(txn_t *t, const void *owner, void *data, void (*release)(void *data))
{
    return t->session_slots ? slot_set(t->session_slots, owner, data, release) : -1;
}

void txn_slots_free(struct txn_slot **head)
{
    while (*head) {
        struct txn_slot *n = (*head)->next;
        slot_release(*head);
        free(*head);
        *head = n;
    }
}

const struct var *varmap_get(const struct varmap *m, const char *key)
{
    for (size_t i = 0; i < m->n; i++)
        if (!strcmp(m->v[i].key, key))
            return &m->v[i];
    return NULL;
}

int varmap_set(struct varmap *m, const char *key, enum var_type type, double num, const char *str)
{
    struct var *v = (struct var *)varmap_get(m, key);
    size_t old = v && v->str ? strlen(v->str) : 0, add = str ? strlen(str) : 0;
    size_t key_bytes = v ? 0 : strlen(key);
    if (!v && type == VAR_NIL)
        return 0;
    if (m->bytes - old + add + key_bytes > VARMAP_MAX_BYTES || (!v && m->n >= VARMAP_MAX_VARS))
        return -1;
    char *copy = str ? strdup(str) : NULL;
    if (str && !copy)
        return -1;
    if (!v) {
        char *k = strdup(key);
        struct var *grown = k ? array_grow(m->v, &m->cap, m->n + 1, sizeof *m->v, 8) : NULL;
        if (grown)
            m->v = grown;
        if (!grown) {
            free(k);
            free(copy);
            return -1;
        }
        v = &m->v[m->n++];
        *v = (struct var){.key = k};
    }
    free(v->str);
    v->str = copy;
    v->type = type;
    v->num = num;
    m->bytes = m->bytes - old + add + key_bytes;
    return 0;
}

void varmap_free(struct varmap *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->v[i].key);
        free(m->v[i].str);
    }
    free(m->v);
    memset(m, 0, sizeof *m);
}

static void rcpt_free(struct txn_rcpt *r)
{
    free(r->addr);
    free(r->nexthop);
    free(r->dsn.orcpt);
    free(r->spam_reason);
}

void decisions_add(char **logp, const char *stage, const char *link, const char *verdict, const char *reply)
{
    if (!*logp && !(*logp = calloc(1, DECISIONS_MAX)))
        return;
    char *log = *logp, lower[32], line[400];
    size_t have = strlen(log), k = 0;
    for (; verdict[k] && k + 1 < sizeof lower; k++)
        lower[k] = (char)tolower((unsigned char)verdict[k]);     /* "quarantine", as in the docs */
    lower[k] = '\0';
    int n = snprintf(line, sizeof line, "%s %s %s%s%.250s\n", stage, link, lower, reply[0] ? ": " : "", reply);
    if (n < 0 || (size_t)n >= sizeof line || have + (size_t)n >= DECISIONS_MAX)
        return;
    for (char *c = line; c < line + n - 1; c++)
        if (*c == '\r' || *c == '\n' || (unsigned char)*c < 0x20)
            *c = ' ';       /* one line per decision, whatever a script put in its reply */
    memcpy(log + have, line, (size_t)n + 1);
}

void decisions_copy(char **dst, const char *src)
{
    free(*dst);
    *dst = NULL;
    if (src && src[0] && (*dst = calloc(1, DECISIONS_MAX)))
        snprintf(*dst, DECISIONS_MAX, "%s", src);
}

void txn_reset(txn_t *t)
{
    free(t->sender);
    free(t->decisions);
    free(t->egress);
    free(t->queue_name);
    for (size_t i = 0; i < t->nrcpts; i++)
        rcpt_free(&t->rcpts[i]);
    free(t->rcpts);
    headers_free(&t->hdrs);
    buf_free(&t->new_body);
    txn_slots_free(&t->slots);
    varmap_free(&t->vars);
    pool_free(t);
    struct varmap *session_vars = t->session_vars;
    struct txn_slot **session_slots = t->session_slots;
    struct hook_chain *chain = t->chain;      /* the session's, kept across messages */
    char ip[sizeof t->client_ip], helo[sizeof t->helo], auth[sizeof t->auth_user];
    bool tls = t->tls;
    unsigned long sid = t->sid;
    memcpy(ip, t->client_ip, sizeof ip);
    memcpy(helo, t->helo, sizeof helo);
    memcpy(auth, t->auth_user, sizeof auth);
    memset(t, 0, sizeof *t);
    memcpy(t->client_ip, ip, sizeof ip);
    memcpy(t->helo, helo, sizeof helo);
    memcpy(t->auth_user, auth, sizeof auth);
    t->tls = tls;
    t->sid = sid;
    t->session_vars = session_vars;
    t->session_slots = session_slots;
    t->chain = chain;
    t->data_fd = -1;
    t->body_mem = NULL;
}

long txn_body_pread(const txn_t *t, char *buf, size_t len, uint64_t offset)
{
    if (t->data_fd < 0)
        return -1;
    if (offset >= t->body_len)
        return 0;
    if (len > t->body_len - offset)
        len = (size_t)(t->body_len - offset);
    if (t->body_mem) {
        memcpy(buf, t->body_mem + offset, len);
        return (long)len;
    }
    ssize_t r = pread(t->data_fd, buf, len, (off_t)(t->body_start + offset));
    return r < 0 ? -1 : (long)r;
}

void txn_free(txn_t *t)
{
    txn_reset(t);
}

int txn_add_rcpt(txn_t *t, const char *addr)
{
    struct txn_rcpt *r = realloc(t->rcpts, (t->nrcpts + 1) * sizeof *r);
    if (!r)
        return -1;
    t->rcpts = r;
    r[t->nrcpts] = (struct txn_rcpt){.addr = strdup(addr)};
    if (!r[t->nrcpts].addr)
        return -1;
    t->nrcpts++;
    return 0;
}

struct txn_rcpt *txn_find_rcpt(txn_t *t, const char *addr)
{
    for (size_t i = 0; i < t->nrcpts; i++)
        if (!strcasecmp(t->rcpts[i].addr, addr))
            return &t->rcpts[i];
    return NULL;
}

void txn_delete_rcpt(txn_t *t, struct txn_rcpt *r)
{
    size_t i = (size_t)(r - t->rcpts);
    rcpt_free(r);
    memmove(r, r + 1, (t->nrcpts - i - 1) * sizeof *r);
    t->nrcpts--;
}

int txn_set_rcpt_dsn(txn_t *t, size_t i, unsigned notify, const char *orcpt)
{
    if (i >= t->nrcpts)
        return -1;
    struct rcpt_dsn *d = &t->rcpts[i].dsn;
    d->notify = notify;
    free(d->orcpt);
    d->orcpt = NULL;
    if (orcpt[0] && !(d->orcpt = strdup(orcpt)))
        return -1;
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
