/* fleet.h - the other nodes of a fleet (issue 39), so that one tracking
 * search answers "where is this mail" across them. The `fleet_nodes =
 * file:PATH` table has a node a line:
 *
 *   node NAME https://HOST:PORT token=FILE [ca=FILE]
 *
 * URL is that node's console (http_listen with http_tls); FILE holds the
 * token it takes (its own `fleet_token` file), ca=FILE the certificates
 * its must chain to (else the system's). `postern track --fleet` and the
 * console's tracking page (fleet=1) send each node the same search as GET
 * /api/track with `Authorization: Bearer TOKEN`, and merge the answers,
 * each record marked with its node; a node that does not answer is named,
 * and the rest is shown. */
#ifndef POSTERN_FLEET_H
#define POSTERN_FLEET_H
#include "buf.h"
#include "track_query.h"
#include <stdbool.h>
#include <stddef.h>

#define FLEET_NODES_MAX 64
#define FLEET_TIMEOUT_S 5

struct fleet_node {
    char name[64];
    char host[256];
    int port;
    bool tls;
    char *token;
    char *ca_file;
};

struct fleet_nodes {
    struct fleet_node *v;
    size_t n;
};

int fleet_add_line(struct fleet_nodes *f, const char *kind, char *rest, char *err, size_t errlen);
void fleet_free(struct fleet_nodes *f);
/* A copy of src into dst (for a reader that outlives the config): 0, or -1. */
int fleet_copy(struct fleet_nodes *dst, const struct fleet_nodes *src);
/* The token in a file (its first line, at least 16 characters): a copy,
 * or NULL with err. */
char *fleet_read_token(const char *path, char *err, size_t errlen);

/* Records gathered from this node and others, each owning its strings. */
struct track_set {
    struct track_record *v;
    size_t n, cap;
};
/* A track_record_fn: a copy of r into the set (ctx); node as given. */
void track_set_add(void *ctx, const struct track_record *r);
/* Oldest first. */
void track_set_sort(struct track_set *s);
void track_set_free(struct track_set *s);

/* Ask every node for q (its queue ID: the timeline): their records into
 * set, marked with their node; a line in errors for each node that did
 * not answer, or answered with an error. */
void fleet_track(const struct fleet_nodes *f, const struct track_query *q, struct track_set *set, struct buf *errors);

#endif
