/* track_cli.c - `postern track`: the tracking store (track.h) searched by
 * sender, recipient, client, queue ID, status and time; one line per
 * message and recipient with its last status, and the whole timeline of a
 * message asked for by --id or found alone. Reads as the daemon's user. */
#include "track_cli.h"
#include "privs.h"
#include "track.h"
#include "track_query.h"
#include "fleet.h"
#include "utc_time.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const statuses[] = {"rejected", "queued", "quarantined", "deferred", "delivered",
                                       "bounced", "released", "deleted", "dropped"};

static int usage(void)
{
    fprintf(stderr, "usage: postern [-c FILE] track [--from A] [--to B] [--client IP] [--id QUEUEID] [--status S] "
                    "[--since DATE] [--until DATE] [--limit N] [--json] [--fleet]\n"
                    "  S: rejected queued quarantined deferred delivered bounced released deleted dropped\n");
    return 2;
}

struct out {
    struct buf b;
    bool json;
    size_t n;
    char qid[64];        /* the one message found, if only one */
    bool several;
};

static void print_record(void *ctx, const struct track_record *r)
{
    struct out *o = ctx;
    if (o->json)
        buf_puts(&o->b, o->n ? ",\n " : "[");
    if (o->json)
        track_record_json(r, &o->b);
    else
        track_record_text(r, &o->b);
    if (r->qid && !o->qid[0])
        snprintf(o->qid, sizeof o->qid, "%s", r->qid);
    else if (!r->qid || strcmp(r->qid, o->qid))
        o->several = true;
    o->n++;
}

/* The options; -1 (said on stderr) when one is bad. */
static int parse(int argc, char **argv, struct track_query *q, bool *json, bool *fleet)
{
    *q = (struct track_query){.since = -1, .until = -1};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json") || !strcmp(a, "--fleet")) {
            *(a[2] == 'j' ? json : fleet) = true;
            continue;
        }
        if (!v)
            return usage();
        i++;
        if (!strcmp(a, "--from"))
            q->from = v;
        else if (!strcmp(a, "--to"))
            q->to = v;
        else if (!strcmp(a, "--client"))
            q->client = v;
        else if (!strcmp(a, "--id"))
            q->qid = v;
        else if (!strcmp(a, "--status")) {
            bool known = false;
            for (size_t k = 0; k < sizeof statuses / sizeof *statuses; k++)
                known |= !strcmp(v, statuses[k]);
            if (!known) {
                fprintf(stderr, "postern: track: --status '%s' is not one of rejected, queued, quarantined, "
                                "deferred, delivered, bounced, released, deleted, dropped\n", v);
                return -1;
            }
            q->status = v;
        } else if (!strcmp(a, "--since") || !strcmp(a, "--until")) {
            if (utc_time_parse(v, a[2] == 'u', a[2] == 'u' ? &q->until : &q->since) < 0) {
                fprintf(stderr, "postern: track: %s: '%s' is not a date (2026-12-07, \"2026-12-07 10:00\" or "
                                "\"2026-12-07 10:00:30\", UTC)\n", a, v);
                return -1;
            }
        } else if (!strcmp(a, "--limit")) {
            char *end;
            q->limit = strtol(v, &end, 10);
            if (*end || q->limit <= 0) {
                fprintf(stderr, "postern: track: --limit needs a positive number\n");
                return -1;
            }
        } else {
            return usage();
        }
    }
    return 0;
}

/* --fleet: this node's records and the other nodes' (fleet_nodes),
 * merged by time, each with its node; the nodes that did not answer on
 * stderr. */
static int fleet_command(const struct config *cfg, const char *path, const struct track_query *q, struct out *o)
{
    struct track_set set = {0};
    struct buf errors;
    buf_init(&errors);
    char err[600];
    int n = q->qid ? track_query_timeline(path, q->qid, track_set_add, &set, err, sizeof err)
                   : track_query_last(path, q, track_set_add, &set, err, sizeof err);
    if (n < 0)
        buf_printf(&errors, "this node: %s\n", err);
    for (size_t i = 0; i < set.n; i++)
        if (!set.v[i].node)
            set.v[i].node = strdup(cfg->hostname);
    fleet_track(&cfg->fleet, q, &set, &errors);
    track_set_sort(&set);
    for (size_t i = 0; i < set.n; i++)
        print_record(o, &set.v[i]);
    if (o->json)
        buf_puts(&o->b, o->n ? "]\n" : "[]\n");
    fwrite(buf_head(&o->b), 1, o->b.len, stdout);
    if (!o->json)
        printf("-- %zu record(s) from %zu node(s)\n", set.n, cfg->fleet.n + 1);
    if (errors.len)
        fprintf(stderr, "postern: track: %.*s", (int)errors.len, buf_head(&errors));
    track_set_free(&set);
    buf_free(&errors);
    buf_free(&o->b);
    return 0;
}

int track_command(const struct config *cfg, int argc, char **argv)
{
    struct track_query q;
    struct out o = {.json = false};
    bool fleet = false;
    int rc = parse(argc, argv, &q, &o.json, &fleet);
    if (rc != 0)
        return rc < 0 ? 1 : rc;
    if (!cfg->tracking) {
        fprintf(stderr, "postern: track: tracking = no in the configuration: nothing is recorded\n");
        return 1;
    }
    if (privs_become(cfg->run_user, cfg->allow_user_nobody) < 0)   /* the store is the daemon's file */
        return 1;
    char path[4096], err[600];
    track_db_path(cfg, path, sizeof path);
    buf_init(&o.b);
    if (fleet && !cfg->fleet.n) {
        fprintf(stderr, "postern: track: --fleet: no fleet_nodes in the configuration\n");
        return 1;
    }
    if (fleet)
        return fleet_command(cfg, path, &q, &o);
    int n = q.qid ? track_query_timeline(path, q.qid, print_record, &o, err, sizeof err)
                  : track_query_last(path, &q, print_record, &o, err, sizeof err);
    if (n < 0) {
        fprintf(stderr, "postern: track: %s\n", err);
        buf_free(&o.b);
        return 1;
    }
    if (o.json)
        buf_puts(&o.b, o.n ? "]\n" : "[]\n");
    fwrite(buf_head(&o.b), 1, o.b.len, stdout);
    /* one message found: its whole timeline after its line */
    if (!q.qid && !o.json && n >= 1 && !o.several && o.qid[0]) {
        struct out t = {.json = false};
        buf_init(&t.b);
        printf("\ntimeline of %s:\n", o.qid);
        if (track_query_timeline(path, o.qid, print_record, &t, err, sizeof err) >= 0)
            fwrite(buf_head(&t.b), 1, t.b.len, stdout);
        buf_free(&t.b);
    }
    if (!o.json)
        printf("-- %d record(s)\n", n);
    buf_free(&o.b);
    return 0;
}
