/* named_queues.c - see named_queues.h. */
#include "named_queues.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "key=N" with lo <= N <= hi into *out; false if word is not that key. */
static bool keyed_int(const char *word, const char *key, int lo, int hi, int *out, bool *bad)
{
    size_t kl = strlen(key);
    if (strncmp(word, key, kl) || word[kl] != '=')
        return false;
    char *end;
    long v = strtol(word + kl + 1, &end, 10);
    *bad = *end || word[kl + 1] == '\0' || v < lo || v > hi;
    *out = (int)v;
    return true;
}

static int add_queue(struct named_queues *q, char *rest, char *err, size_t errlen)
{
    char *w[5];
    size_t n = table_words(rest, w, 4);
    struct named_queue nq = {.priority = -1};
    if (n < 1 || n > 4 || !table_name_ok(w[0], sizeof nq.name) || named_queue_find(q, w[0])) {
        snprintf(err, errlen, "expected: queue NAME priority=0-9 [concurrency=N] [rate=N], each name once");
        return -1;
    }
    snprintf(nq.name, sizeof nq.name, "%s", w[0]);
    for (size_t i = 1; i < n; i++) {
        bool bad = false;
        if (!keyed_int(w[i], "priority", 0, QUEUE_PRIORITIES - 1, &nq.priority, &bad) &&
            !keyed_int(w[i], "concurrency", 1, 100000, &nq.concurrency, &bad) &&
            !keyed_int(w[i], "rate", 1, 60000, &nq.rate, &bad))
            bad = true;
        if (bad) {
            snprintf(err, errlen, "queue %s: '%s' (expected priority=0-9, concurrency=1-100000, rate=1-60000 a "
                     "minute)", nq.name, w[i]);
            return -1;
        }
    }
    if (nq.priority < 0) {
        snprintf(err, errlen, "queue %s: priority=0-9 is required", nq.name);
        return -1;
    }
    struct named_queue *v = realloc(q->v, (q->n + 1) * sizeof *v);
    if (v)
        q->v = v;
    if (!v || !(nq.in_flight = calloc(1, sizeof *nq.in_flight))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    q->v[q->n++] = nq;
    return 0;
}

static int add_rule(struct named_queues *q, bool by_sender, char *rest, char *err, size_t errlen)
{
    char *w[3];
    const struct named_queue *nq = table_words(rest, w, 2) == 2 ? named_queue_find(q, w[1]) : NULL;
    if (!nq) {
        snprintf(err, errlen, "expected: %s DOMAIN QUEUE, with the queue defined before", by_sender ? "from" : "to");
        return -1;
    }
    if (domain_rules_add(&q->rules, by_sender, w[0], (size_t)(nq - q->v)) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

int named_queues_add_line(struct named_queues *q, const char *kind, char *rest, char *err, size_t errlen)
{
    if (!strcmp(kind, "queue"))
        return add_queue(q, rest, err, errlen);
    if (!strcmp(kind, "from") || !strcmp(kind, "to"))
        return add_rule(q, kind[0] == 'f', rest, err, errlen);
    snprintf(err, errlen, "'%s': expected queue, from or to", kind);
    return -1;
}

void named_queues_free(struct named_queues *q)
{
    for (size_t i = 0; i < q->n; i++)
        free(q->v[i].in_flight);
    free(q->v);
    domain_rules_free(&q->rules);
    memset(q, 0, sizeof *q);
}

const struct named_queue *named_queue_find(const struct named_queues *q, const char *name)
{
    for (size_t i = 0; i < q->n; i++)
        if (!strcmp(q->v[i].name, name))
            return &q->v[i];
    return NULL;
}

const struct named_queue *named_queue_for(const struct named_queues *q, const char *sender_domain,
                                          const char *rcpt_domain)
{
    size_t i;
    return domain_rules_find(&q->rules, sender_domain, rcpt_domain, &i) ? &q->v[i] : NULL;
}
