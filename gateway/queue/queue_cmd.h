/* queue_cmd.h - the queue command language, parsed in one place for the
 * CLI (`postern queue ...`), the control socket and the console:
 *
 *   VERB [--json] [filters] [targets]
 *
 * A command that changes messages (hold, release, delete, requeue) acts on
 * the messages its targets name (queue IDs, ALL, or "-": IDs on standard
 * input, read by the CLI) that every filter matches; filters alone select
 * every message they match. On the control socket each word is xtext (RFC
 * 3461), so an address with a space stays one word. */
#ifndef POSTERN_QUEUE_CMD_H
#define POSTERN_QUEUE_CMD_H
#include "buf.h"
#include "queue_view.h"
#include <stdbool.h>
#include <stdint.h>

enum queue_verb {
    QV_LIST, QV_SHOW, QV_CAT, QV_SUMMARY, QV_HOLD, QV_RELEASE, QV_DELETE, QV_REQUEUE, QV_FLUSH,
    QV_SUSPEND, QV_THROTTLE, QV_RESUME, QV_SUSPENDED,
};

/* Where a verb can run. */
enum queue_where {
    QW_EITHER,    /* the daemon, or the spool itself while the daemon is down */
    QW_SPOOL,     /* always the spool (read-only) */
    QW_DAEMON,    /* only the daemon (it schedules deliveries) */
};

#define QUEUE_CMD_MAX_WORDS 400     /* a request's words: IDs beyond are sent in further requests */
#define QUEUE_CMD_MAX_LINE 8000     /* a request line on the control socket, encoded */
#define QUEUE_CMD_MAX_KEEP 64       /* recipients a release may keep */
#define QUEUE_CMD_MAX_ARGS 4        /* a verb's words of its own */

/* The messages a command acts on: each given filter must match. */
struct queue_filter {
    const char *domain;      /* a pending recipient in this domain or one below it */
    const char *sender;      /* ADDR, @DOMAIN, "<>" (the null sender) or a part of the address */
    const char *rcpt;        /* a recipient: ADDR, @DOMAIN or a part of the address */
    const char *state;       /* queued, deferred, active or hold */
    long older_than;         /* seconds since arrival; -1 = any age */
    const char *queue;       /* its named queue (the daemon's view only) */
};

struct queue_cmd {
    enum queue_verb verb;
    const char *name;            /* the verb as typed */
    enum queue_where where;
    bool writes;                 /* changes the spool (offline: only under SPOOL/lock) */
    bool json, by_sender, by_queue;   /* list/show --json; summary --sender, --queue */
    bool paged;                  /* list with --offset/--limit/--sort: a page and the total */
    long offset, limit;          /* the page (limit 0: to the end) */
    const char *sort;            /* oldest (the default), newest, largest, smallest */
    bool all;                    /* ALL */
    bool ids_on_stdin;           /* "-" (the CLI reads them) */
    size_t nids;
    const char *ids[QUEUE_CMD_MAX_WORDS];
    size_t nkeep;
    const char *keep[QUEUE_CMD_MAX_KEEP];   /* release to these recipients only */
    size_t nfor;
    const char *for_rcpts[QUEUE_CMD_MAX_KEEP];   /* release or delete only these recipients' copies */
    size_t nargs;
    const char *args[QUEUE_CMD_MAX_ARGS];   /* flush: ID|DOMAIN; suspend/throttle/resume: KIND NAME ... */
    bool filtered;               /* some filter was given */
    struct queue_filter f;
    char words[QUEUE_CMD_MAX_LINE];   /* the decoded words, when parsed from a line */
};

/* argv[0] is the verb. 0, or -1 with a one-line reason in err (-2 when
 * the verb is unknown). Strings
 * point into argv, which must outlive c. */
int queue_cmd_parse(int argc, char *const *argv, struct queue_cmd *c, char *err, size_t errlen);
/* The same from a control request line (words as xtext; no "-"). */
int queue_cmd_parse_line(const char *line, struct queue_cmd *c, char *err, size_t errlen);
/* A copy of src whose strings parsed from a line point into dst's own words. */
void queue_cmd_copy(struct queue_cmd *dst, const struct queue_cmd *src);
/* The control request line for argv (each word as xtext). -1 when it
 * would be longer than QUEUE_CMD_MAX_LINE. */
int queue_cmd_format(int argc, char *const *argv, struct buf *line);
/* A verb that acts on a set of messages (and answers with a count). */
bool queue_cmd_is_bulk(const struct queue_cmd *c);
/* Does message v match c's filters (not its IDs)? now: for --older-than. */
bool queue_cmd_filter_matches(const struct queue_cmd *c, const struct queue_view *v, int64_t now);
/* Order v before w for c->sort? (qsort-style: <0, 0, >0) */
int queue_cmd_compare(const struct queue_cmd *c, const struct queue_view *v, const struct queue_view *w);
/* The lines of `postern queue` usage. */
extern const char queue_cmd_usage[];

#endif
