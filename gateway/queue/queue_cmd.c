/* queue_cmd.c - the queue command language (queue_cmd.h): one table of
 * verbs, one parser for argv and control lines, one filter match. */
#include "queue_cmd.h"
#include "config.h"
#include "smtp_parse.h"
#include "spool.h"
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* What may follow a verb. */
enum {
    T_JSON = 1,          /* --json */
    T_ONE_ID = 2,        /* exactly one queue ID */
    T_TARGETS = 4,       /* IDs, ALL, "-" */
    T_FILTERS = 8,       /* --domain --sender --rcpt --state --older-than --queue */
    T_KEEP = 16,         /* --keep ADDR (release one message to some recipients) */
    T_BY_SENDER = 32,    /* --sender or --queue as a flag (summary) */
    T_ARGS = 64,         /* words of its own (flush: ID|DOMAIN; suspend/resume: KIND NAME [DURATION]) */
    T_PAGE = 128,        /* --offset N --limit N --sort ORDER */
    T_FOR = 256,         /* --for ADDR: only these recipients' copies (the spam quarantine) */
};

static const struct verb_row {
    const char *name;
    enum queue_verb verb;
    unsigned takes;
    bool writes;
    enum queue_where where;
} verbs[] = {
    {"list", QV_LIST, T_JSON | T_FILTERS | T_PAGE, false, QW_EITHER},
    {"show", QV_SHOW, T_JSON | T_ONE_ID, false, QW_EITHER},
    {"cat", QV_CAT, T_ONE_ID, false, QW_SPOOL},
    {"summary", QV_SUMMARY, T_BY_SENDER, false, QW_SPOOL},
    {"hold", QV_HOLD, T_TARGETS | T_FILTERS, true, QW_EITHER},
    {"release", QV_RELEASE, T_TARGETS | T_FILTERS | T_KEEP | T_FOR, true, QW_EITHER},
    {"delete", QV_DELETE, T_TARGETS | T_FILTERS | T_FOR, true, QW_EITHER},
    {"requeue", QV_REQUEUE, T_TARGETS | T_FILTERS, false, QW_DAEMON},
    {"flush", QV_FLUSH, T_ARGS, false, QW_DAEMON},
    {"suspend", QV_SUSPEND, T_ARGS, false, QW_DAEMON},
    {"throttle", QV_THROTTLE, T_ARGS, false, QW_DAEMON},
    {"resume", QV_RESUME, T_ARGS, false, QW_DAEMON},
    {"suspended", QV_SUSPENDED, T_JSON, false, QW_DAEMON},
};

/* How many words of its own each verb with T_ARGS takes: at least, at most. */
static const struct { enum queue_verb verb; size_t min, max; const char *usage; } arg_counts[] = {
    {QV_FLUSH, 0, 1, "flush [ID|DOMAIN]"},
    {QV_SUSPEND, 2, 3, "suspend destination|source|queue|provider NAME [DURATION]"},
    {QV_THROTTLE, 3, 4, "throttle destination|provider NAME RATE [DURATION]"},
    {QV_RESUME, 2, 2, "resume destination|source|queue|provider NAME"},
};

const char queue_cmd_usage[] =
    "  queue list [--json] [FILTER...] [--sort oldest|newest|largest|smallest] [--offset N] [--limit N]\n"
    "  queue show [--json] ID | cat ID | summary [--sender|--queue]\n"
    "  queue hold|release|delete|requeue ID...|ALL|- [FILTER...]   (- reads IDs from stdin)\n"
    "  queue release ID --keep RCPT...   (to those recipients only, dropping the others)\n"
    "  queue release|delete ID --for RCPT...   (only those recipients' copies: the spam quarantine)\n"
    "  queue flush [ID|DOMAIN]\n"
    "  queue suspend destination|source|queue|provider NAME [DURATION] | resume KIND NAME | suspended [--json]\n"
    "  queue throttle destination|provider NAME RATE [DURATION]   (RATE messages a minute)\n"
    "  FILTER: --domain D | --sender ADDR|@DOMAIN|<> | --rcpt ADDR|@DOMAIN |\n"
    "          --state queued|deferred|active|hold|spam | --older-than 2h | --queue NAME\n";

static const char *const states[] = {"queued", "deferred", "active", "hold", "spam"};

static int bad(char *err, size_t errlen, const char *fmt, const char *word)
{
    snprintf(err, errlen, fmt, word);
    return -1;
}

/* One "--name VALUE" filter; i is advanced past VALUE. */
static int take_filter(struct queue_cmd *c, int argc, char *const *argv, int *i, char *err, size_t errlen)
{
    const char *name = argv[*i];
    if (*i + 1 >= argc || !argv[*i + 1][0])
        return bad(err, errlen, "%s needs a value", name);
    const char *v = argv[++*i];
    const char **slot = !strcmp(name, "--domain") ? &c->f.domain : !strcmp(name, "--sender") ? &c->f.sender
                        : !strcmp(name, "--rcpt") ? &c->f.rcpt : !strcmp(name, "--state") ? &c->f.state
                        : !strcmp(name, "--queue") ? &c->f.queue : NULL;
    if (!strcmp(name, "--older-than")) {
        if ((c->f.older_than = parse_duration(v)) < 0)
            return bad(err, errlen, "--older-than: bad duration '%s' (expected e.g. 30m, 4h, 2d)", v);
    } else if (!slot) {
        return bad(err, errlen, "unknown option %s", name);
    } else if (*slot) {
        return bad(err, errlen, "%s given twice", name);
    } else {
        *slot = v;
    }
    if (slot == &c->f.state) {
        bool known = false;
        for (size_t k = 0; k < sizeof states / sizeof states[0]; k++)
            known |= !strcmp(v, states[k]);
        if (!known)
            return bad(err, errlen, "--state: '%s' is not queued, deferred, active, hold or spam", v);
    }
    if (slot == &c->f.queue)
        c->where = QW_DAEMON;      /* a message's named queue is the daemon's to know */
    c->filtered = true;
    return 0;
}

static const char *const orders[] = {"oldest", "newest", "largest", "smallest"};

/* --offset, --limit or --sort and its value; i is advanced past it. */
static int take_page(struct queue_cmd *c, int argc, char *const *argv, int *i, char *err, size_t errlen)
{
    const char *name = argv[*i];
    if (*i + 1 >= argc)
        return bad(err, errlen, "%s needs a value", name);
    const char *v = argv[++*i];
    c->paged = true;
    if (!strcmp(name, "--sort")) {
        for (size_t k = 0; k < sizeof orders / sizeof orders[0]; k++)
            if (!strcmp(v, orders[k]))
                c->sort = orders[k];
        return c->sort ? 0 : bad(err, errlen, "--sort: '%s' is not oldest, newest, largest or smallest", v);
    }
    char *end;
    long n = strtol(v, &end, 10);
    if (*end || end == v || n < 0 || n > 100000000)
        return bad(err, errlen, "%s needs a number", name);
    *(name[2] == 'o' ? &c->offset : &c->limit) = n;
    return 0;
}

int queue_cmd_compare(const struct queue_cmd *c, const struct queue_view *v, const struct queue_view *w)
{
    const char *o = c->sort ? c->sort : "oldest";
    int64_t a = o[0] == 'l' || o[0] == 's' ? (int64_t)v->size : v->arrival;
    int64_t b = o[0] == 'l' || o[0] == 's' ? (int64_t)w->size : w->arrival;
    int by = a < b ? -1 : a > b;
    if (!strcmp(o, "newest") || !strcmp(o, "largest"))
        by = -by;
    return by ? by : strcmp(v->id, w->id);      /* IDs are time-sortable: a stable order */
}

/* One word after the verb. */
static int take_word(struct queue_cmd *c, unsigned takes, int argc, char *const *argv, int *i, char *err, size_t errlen)
{
    const char *w = argv[*i];
    if ((takes & T_JSON) && !strcmp(w, "--json"))
        c->json = true;
    else if ((takes & T_BY_SENDER) && !strcmp(w, "--sender"))
        c->by_sender = true;
    else if ((takes & T_BY_SENDER) && !strcmp(w, "--queue")) {
        c->by_queue = true;
        c->where = QW_DAEMON;      /* a message's named queue is the daemon's to know */
    }
    else if ((takes & T_KEEP) && !strcmp(w, "--keep")) {
        if (*i + 1 >= argc || !argv[*i + 1][0] || c->nkeep == QUEUE_CMD_MAX_KEEP)
            return bad(err, errlen, "%s needs a recipient (at most 64 of them)", w);
        c->keep[c->nkeep++] = argv[++*i];
    } else if ((takes & T_FOR) && !strcmp(w, "--for")) {
        if (*i + 1 >= argc || !argv[*i + 1][0] || c->nfor == QUEUE_CMD_MAX_KEEP)
            return bad(err, errlen, "%s needs a recipient (at most 64 of them)", w);
        c->for_rcpts[c->nfor++] = argv[++*i];
    } else if ((takes & T_PAGE) && (!strcmp(w, "--offset") || !strcmp(w, "--limit") || !strcmp(w, "--sort")))
        return take_page(c, argc, argv, i, err, errlen);
    else if ((takes & T_FILTERS) && !strncmp(w, "--", 2))
        return take_filter(c, argc, argv, i, err, errlen);
    else if ((takes & T_ARGS) && c->nargs < QUEUE_CMD_MAX_ARGS && w[0] != '-')
        c->args[c->nargs++] = w;
    else if ((takes & T_TARGETS) && !strcmp(w, "ALL"))
        c->all = true;
    else if ((takes & T_TARGETS) && !strcmp(w, "-"))
        c->ids_on_stdin = true;
    else if ((takes & (T_TARGETS | T_ONE_ID)) && qid_valid(w)) {
        if (c->nids == QUEUE_CMD_MAX_WORDS)
            return bad(err, errlen, "too many queue IDs in one command (at most %s; use -)", "400");
        c->ids[c->nids++] = w;
    } else if (w[0] == '-' && w[1])
        return bad(err, errlen, "unknown option %s", w);
    else
        return bad(err, errlen, (takes & (T_TARGETS | T_ONE_ID)) ? "'%s' is not a queue ID" : "unexpected '%s'", w);
    return 0;
}

/* The combinations a verb's words must make. */
static int check_targets(const struct queue_cmd *c, unsigned takes, char *err, size_t errlen)
{
    for (size_t i = 0; i < sizeof arg_counts / sizeof arg_counts[0]; i++)
        if (arg_counts[i].verb == c->verb && (c->nargs < arg_counts[i].min || c->nargs > arg_counts[i].max))
            return bad(err, errlen, "usage: queue %s", arg_counts[i].usage);
    if ((takes & T_ONE_ID) && c->nids != 1)
        return bad(err, errlen, "%s takes one queue ID", c->name);
    if (!(takes & T_TARGETS))
        return 0;
    if (c->all + (c->nids > 0) + c->ids_on_stdin > 1)
        return bad(err, errlen, "%s: give one of queue IDs, ALL or -", c->name);
    if (!c->all && !c->nids && !c->ids_on_stdin && !c->filtered)
        return bad(err, errlen, "%s: give queue IDs, ALL, - (IDs on standard input) or a filter", c->name);
    if (c->nkeep && (c->nids != 1 || c->all || c->ids_on_stdin || c->filtered))
        return bad(err, errlen, "%s --keep acts on one queue ID", c->name);
    if (c->nfor && (c->nids != 1 || c->all || c->ids_on_stdin || c->filtered || c->nkeep))
        return bad(err, errlen, "%s --for acts on one queue ID (and not with --keep)", c->name);
    return 0;
}

int queue_cmd_parse(int argc, char *const *argv, struct queue_cmd *c, char *err, size_t errlen)
{
    const struct verb_row *row = NULL;
    for (size_t i = 0; argc > 0 && i < sizeof verbs / sizeof verbs[0]; i++)
        if (!strcmp(argv[0], verbs[i].name))
            row = &verbs[i];
    if (!row) {
        bad(err, errlen, "unknown queue command '%s'", argc > 0 ? argv[0] : "");
        return -2;
    }
    *c = (struct queue_cmd){.verb = row->verb, .name = row->name, .where = row->where, .writes = row->writes,
                            .f.older_than = -1};
    for (int i = 1; i < argc; i++)
        if (take_word(c, row->takes, argc, argv, &i, err, errlen) < 0)
            return -1;
    return check_targets(c, row->takes, err, errlen);
}

/* Strings of c that point into from[0..len) now point at the same place
 * in c->words. */
static void rebase(struct queue_cmd *c, const char *from, size_t len)
{
    const char **ptrs[] = {&c->f.domain, &c->f.sender, &c->f.rcpt, &c->f.state, &c->f.queue};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++)
        if (*ptrs[i] >= from && *ptrs[i] < from + len)
            *ptrs[i] = c->words + (*ptrs[i] - from);
    for (size_t i = 0; i < c->nargs; i++)
        if (c->args[i] >= from && c->args[i] < from + len)
            c->args[i] = c->words + (c->args[i] - from);
    for (size_t i = 0; i < c->nids; i++)
        if (c->ids[i] >= from && c->ids[i] < from + len)
            c->ids[i] = c->words + (c->ids[i] - from);
    for (size_t i = 0; i < c->nkeep; i++)
        if (c->keep[i] >= from && c->keep[i] < from + len)
            c->keep[i] = c->words + (c->keep[i] - from);
    for (size_t i = 0; i < c->nfor; i++)
        if (c->for_rcpts[i] >= from && c->for_rcpts[i] < from + len)
            c->for_rcpts[i] = c->words + (c->for_rcpts[i] - from);
}

int queue_cmd_parse_line(const char *line, struct queue_cmd *c, char *err, size_t errlen)
{
    char *argv[QUEUE_CMD_MAX_WORDS + 4 * QUEUE_CMD_MAX_KEEP + 16];
    char words[QUEUE_CMD_MAX_LINE];
    int argc = 0;
    size_t used = 0;
    for (const char *p = line + strspn(line, " "); *p; p += strspn(p, " ")) {
        size_t n = strcspn(p, " ");
        char word[QUEUE_CMD_MAX_LINE];
        if (n >= sizeof word || argc == (int)(sizeof argv / sizeof argv[0]))
            return bad(err, errlen, "%s", "request too long");
        memcpy(word, p, n);
        word[n] = '\0';
        int dn = xtext_decode(word, words + used, sizeof words - used);
        if (dn < 0 || !strcmp(word, "-"))
            return bad(err, errlen, "'%s' is not a word of a queue request", word);
        argv[argc++] = words + used;
        used += (size_t)dn + 1;
        p += n;
    }
    if (queue_cmd_parse(argc, argv, c, err, errlen) < 0)
        return -1;
    memcpy(c->words, words, used);
    rebase(c, words, used);
    return 0;
}

void queue_cmd_copy(struct queue_cmd *dst, const struct queue_cmd *src)
{
    memcpy(dst, src, sizeof *dst);
    rebase(dst, src->words, sizeof src->words);
}

int queue_cmd_format(int argc, char *const *argv, struct buf *line)
{
    for (int i = 0; i < argc; i++) {
        size_t cap = 3 * strlen(argv[i]) + 1;
        char *word = malloc(cap);
        if (!word || xtext_encode(argv[i], word, cap) < 0) {
            free(word);
            return -1;
        }
        if (i)
            buf_puts(line, " ");
        buf_puts(line, word);
        free(word);
    }
    return line->len < QUEUE_CMD_MAX_LINE ? 0 : -1;
}

bool queue_cmd_is_bulk(const struct queue_cmd *c)
{
    return c->verb == QV_HOLD || c->verb == QV_RELEASE || c->verb == QV_DELETE || c->verb == QV_REQUEUE;
}

/* pattern: "<>" the null sender, "@DOMAIN" an address there, "ADDR" that
 * address, or any other text a part of the address (the console's search
 * box). Case does not matter. */
static bool addr_matches(const char *pattern, const char *addr)
{
    if (!strcmp(pattern, "<>"))
        return !addr[0];
    if (pattern[0] == '@') {
        const char *at = strrchr(addr, '@');
        return at && !strcasecmp(at + 1, pattern + 1);
    }
    return strchr(pattern, '@') ? !strcasecmp(pattern, addr) : strcasestr(addr, pattern) != NULL;
}

/* Is addr in domain d or one below it? */
static bool in_domain(const char *addr, const char *d)
{
    const char *at = strrchr(addr, '@');
    if (!at)
        return false;
    size_t n = strlen(at + 1), dn = strlen(d);
    return n >= dn && !strcasecmp(at + 1 + n - dn, d) && (n == dn || at[n - dn] == '.');
}

bool queue_cmd_filter_matches(const struct queue_cmd *c, const struct queue_view *v, int64_t now)
{
    const struct queue_filter *f = &c->f;
    if (f->sender && !addr_matches(f->sender, v->sender))
        return false;
    if (f->state && strcmp(f->state, queue_view_state(v)))
        return false;
    if (f->older_than >= 0 && now - v->arrival < f->older_than)
        return false;
    if (f->queue && strcasecmp(f->queue, v->queue_name ? v->queue_name : ""))
        return false;
    bool rcpt_ok = !f->rcpt, domain_ok = !f->domain;
    for (size_t i = 0; i < v->nrcpts && !(rcpt_ok && domain_ok); i++) {
        if (!rcpt_ok)
            rcpt_ok = addr_matches(f->rcpt, v->rcpts[i]);
        if (!domain_ok)
            domain_ok = v->st[i]->status == RCPT_PENDING && in_domain(v->rcpts[i], f->domain);
    }
    return rcpt_ok && domain_ok;
}
