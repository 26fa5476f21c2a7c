/* fleet.c - see fleet.h. */
#include "fleet.h"
#include "array_grow.h"
#include <pthread.h>
#include "domain_rules.h"
#include "https_client.h"
#include "privsep.h"
#include "utc_time.h"
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN_MAX 1024

/* FILE's first line (the token): a copy, or NULL with err. */
char *fleet_read_token(const char *path, char *err, size_t errlen)
{
    char why[300] = "";
    FILE *f = privsep_fopen(path, why, sizeof why);     /* root's file: the parent opens it for a reload */
    char line[TOKEN_MAX + 2] = "";
    if (!f || !fgets(line, sizeof line, f)) {
        snprintf(err, errlen, "token %s: %s", path, f ? "empty" : why);
        if (f)
            fclose(f);
        return NULL;
    }
    fclose(f);
    line[strcspn(line, "\r\n")] = '\0';
    if (strlen(line) < 16 || strpbrk(line, " \t")) {
        snprintf(err, errlen, "token %s: at least 16 characters, without blanks", path);
        return NULL;
    }
    return strdup(line);
}

int fleet_add_line(struct fleet_nodes *f, const char *kind, char *rest, char *err, size_t errlen)
{
    char *w[6], why[300];
    size_t n = table_words(rest, w, 5);
    struct fleet_node node = {0};
    if (strcmp(kind, "node") || n < 3 || n > 4 || !table_name_ok(w[0], sizeof node.name) ||
        strncmp(w[2], "token=", 6) || (n == 4 && strncmp(w[3], "ca=", 3))) {
        snprintf(err, errlen, "expected: node NAME https://HOST:PORT token=FILE [ca=FILE]");
        return -1;
    }
    snprintf(node.name, sizeof node.name, "%s", w[0]);
    char path[1024];
    if (https_url_parse(w[1], &node.tls, node.host, sizeof node.host, &node.port, path, sizeof path, why,
                        sizeof why) < 0 || !node.tls) {
        snprintf(err, errlen, "node %s: %s", node.name, node.tls ? why : "the console's URL must be https://");
        return -1;
    }
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->v[i].name, node.name)) {
            snprintf(err, errlen, "node %s: given twice", node.name);
            return -1;
        }
    if (f->n == FLEET_NODES_MAX) {
        snprintf(err, errlen, "at most %d nodes", FLEET_NODES_MAX);
        return -1;
    }
    if (!(node.token = fleet_read_token(w[2] + 6, why, sizeof why))) {
        snprintf(err, errlen, "node %s: %s", node.name, why);
        return -1;
    }
    node.ca_file = n == 4 ? strdup(w[3] + 3) : NULL;
    struct fleet_node *v = realloc(f->v, (f->n + 1) * sizeof *v);
    if (!v) {
        free(node.token);
        free(node.ca_file);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    f->v = v;
    f->v[f->n++] = node;
    return 0;
}

void fleet_free(struct fleet_nodes *f)
{
    for (size_t i = 0; i < f->n; i++) {
        free(f->v[i].token);
        free(f->v[i].ca_file);
    }
    free(f->v);
    f->v = NULL;
    f->n = 0;
}

int fleet_copy(struct fleet_nodes *dst, const struct fleet_nodes *src)
{
    *dst = (struct fleet_nodes){0};
    if (!src->n)
        return 0;
    if (!(dst->v = calloc(src->n, sizeof *dst->v)))
        return -1;
    for (; dst->n < src->n; dst->n++) {
        struct fleet_node *d = &dst->v[dst->n];
        *d = src->v[dst->n];
        d->token = strdup(src->v[dst->n].token);
        d->ca_file = src->v[dst->n].ca_file ? strdup(src->v[dst->n].ca_file) : NULL;
    }
    return 0;
}

/* ---- a set of records -------------------------------------------------- */

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

void track_set_add(void *ctx, const struct track_record *r)
{
    struct track_set *s = ctx;
    struct track_record *v = array_grow(s->v, &s->cap, s->n + 1, sizeof *s->v, 64);
    if (!v)
        return;
    s->v = v;
    s->v[s->n++] = (struct track_record){r->ms, dup_or_null(r->status), dup_or_null(r->qid), dup_or_null(r->from),
                                         dup_or_null(r->to), dup_or_null(r->client), dup_or_null(r->helo),
                                         dup_or_null(r->stage), dup_or_null(r->link), dup_or_null(r->reply),
                                         dup_or_null(r->node)};
}

static int by_time(const void *a, const void *b)
{
    const struct track_record *x = a, *y = b;
    return x->ms < y->ms ? -1 : x->ms > y->ms;
}

void track_set_sort(struct track_set *s)
{
    if (s->n)
        qsort(s->v, s->n, sizeof *s->v, by_time);
}

void track_set_free(struct track_set *s)
{
    for (size_t i = 0; i < s->n; i++) {
        struct track_record *r = &s->v[i];
        const char *texts[] = {r->status, r->qid, r->from, r->to, r->client, r->helo, r->stage, r->link, r->reply,
                               r->node};
        for (size_t k = 0; k < sizeof texts / sizeof *texts; k++)
            free((void *)texts[k]);
    }
    free(s->v);
    *s = (struct track_set){0};
}

/* ---- asking the nodes --------------------------------------------------- */

static void query_arg(struct buf *b, const char *name, const char *value)
{
    if (!value || !value[0])
        return;
    buf_printf(b, "%s%s=", b->len > strlen("/api/track") ? "&" : "?", name);
    for (const unsigned char *p = (const unsigned char *)value; *p; p++)
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("-_.~@", *p))
            buf_append(b, p, 1);
        else
            buf_printf(b, "%%%02X", *p);
}

/* The API path for q. */
static void path_of(const struct track_query *q, struct buf *b)
{
    buf_puts(b, "/api/track");
    char since[32] = "", until[32] = "";
    if (q->since >= 0)
        utc_time_format(q->since, since, sizeof since);
    if (q->until >= 0)
        utc_time_format(q->until, until, sizeof until);
    query_arg(b, "from", q->from);
    query_arg(b, "to", q->to);
    query_arg(b, "client", q->client);
    query_arg(b, "id", q->qid);
    query_arg(b, "status", q->status);
    query_arg(b, "since", since);
    query_arg(b, "until", until);
    buf_append(b, "", 1);
}

static const char *jtext(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

/* A node's answer (a JSON array of records) into set: 0, or -1. */
static int take_answer(const struct fleet_node *node, const struct buf *body, struct track_set *set)
{
    json_t *list = json_loadb(buf_head(body), body->len, 0, NULL);
    if (!json_is_array(list)) {
        json_decref(list);
        return -1;
    }
    size_t i;
    json_t *o;
    json_array_foreach(list, i, o) {
        struct track_record r = {.ms = json_integer_value(json_object_get(o, "ms")), .status = jtext(o, "status"),
                                 .qid = jtext(o, "queue_id"), .from = jtext(o, "from"), .to = jtext(o, "to"),
                                 .client = jtext(o, "client"), .helo = jtext(o, "helo"), .stage = jtext(o, "stage"),
                                 .link = jtext(o, "link"), .reply = jtext(o, "reply"), .node = node->name};
        track_set_add(set, &r);
    }
    json_decref(list);
    return 0;
}

/* One node's request, on a thread of its own. */
struct node_ask {
    const struct fleet_node *node;
    const char *path;
    struct buf body;
    int code;
    char why[400];
    pthread_t thread;
    bool started;
};

static void *ask_node(void *arg)
{
    struct node_ask *a = arg;
    const struct fleet_node *node = a->node;
    char headers[TOKEN_MAX + 64];
    SSL_CTX *ctx = https_client_ctx(node->ca_file, a->why, sizeof a->why);
    snprintf(headers, sizeof headers, "Authorization: Bearer %s\r\nAccept: application/json\r\n", node->token);
    struct https_target t = {.host = node->host, .port = node->port, .ctx = ctx, .timeout = FLEET_TIMEOUT_S};
    a->code = ctx ? https_request(&t, "GET", a->path, headers, NULL, 0, &a->body, a->why, sizeof a->why) : -1;
    SSL_CTX_free(ctx);
    return NULL;
}

/* Every node is asked at once (a thread each), so a search takes as long
 * as the slowest node, at most FLEET_TIMEOUT_S; the answers are merged in
 * the table's order. */
void fleet_track(const struct fleet_nodes *f, const struct track_query *q, struct track_set *set, struct buf *errors)
{
    struct buf path;
    buf_init(&path);
    path_of(q, &path);
    struct node_ask *asks = f->n ? calloc(f->n, sizeof *asks) : NULL;
    for (size_t i = 0; asks && i < f->n; i++) {
        asks[i] = (struct node_ask){.node = &f->v[i], .path = buf_head(&path)};
        buf_init(&asks[i].body);
        asks[i].started = pthread_create(&asks[i].thread, NULL, ask_node, &asks[i]) == 0;
        if (!asks[i].started)
            ask_node(&asks[i]);          /* no thread: ask it here */
    }
    for (size_t i = 0; asks && i < f->n; i++) {
        struct node_ask *a = &asks[i];
        if (a->started)
            pthread_join(a->thread, NULL);
        if (a->code == 200 && take_answer(a->node, &a->body, set) < 0)
            snprintf(a->why, sizeof a->why, "an answer that is not a list of records");
        else if (a->code >= 0 && a->code != 200)
            snprintf(a->why, sizeof a->why, "answered %d", a->code);
        if (a->why[0])
            buf_printf(errors, "node %s: %s\n", a->node->name, a->why);
        buf_free(&a->body);
    }
    if (f->n && !asks)
        buf_printf(errors, "out of memory asking the fleet\n");
    free(asks);
    buf_free(&path);
}
