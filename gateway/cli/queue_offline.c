/* queue_offline.c - `postern queue ...` straight on the spool, for when
 * posternd is down (and, read-only, for cat and summary at any time).
 * Writes (hold, release, delete) happen only under SPOOL/lock, which a
 * running posternd holds: so a daemon never starts in the middle of one,
 * and none runs beside a daemon. The CLI calls these as the daemon's user. */
#include "queue_offline.h"
#include "queue_view.h"
#include "queue_cmd.h"
#include "spool.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* One message read from the spool, viewed as the daemon would show it. */
struct spooled {
    struct envelope e;
    size_t body_off;
    struct msg_flags flags;
    struct rcpt_state *st;
    const struct rcpt_state **stp;
    struct queue_view v;
};

static void spooled_free(struct spooled *m)
{
    rcpt_states_free(m->st, m->st ? m->e.nrcpts : 0);
    free(m->stp);
    envelope_free(&m->e);
}

static int spooled_load(const char *id, struct spooled *m, struct buf *err)
{
    memset(m, 0, sizeof *m);
    const char *why = "";
    if (!qid_valid(id) || spool_load(id, &m->e, &m->body_off, &why) < 0) {
        buf_printf(err, "no message with queue ID '%s'%s%s\n", id, why[0] ? ": " : "", why);
        return -1;
    }
    m->st = calloc(m->e.nrcpts ? m->e.nrcpts : 1, sizeof *m->st);
    m->stp = calloc(m->e.nrcpts ? m->e.nrcpts : 1, sizeof *m->stp);
    if (!m->st || !m->stp) {
        spooled_free(m);
        buf_printf(err, "out of memory\n");
        return -1;
    }
    spool_load_state(id, &m->flags, m->st, m->e.nrcpts);
    for (size_t i = 0; i < m->e.nrcpts; i++)
        m->stp[i] = &m->st[i];
    m->v = (struct queue_view){.id = m->e.id, .size = m->e.size, .arrival = m->e.arrival, .sender = m->e.sender,
                               .held = m->flags.held, .hold_reason = m->flags.reason,
                               .decisions = m->flags.decisions, .waiting = "",
                               .nrcpts = m->e.nrcpts, .rcpts = (const char *const *)m->e.rcpts, .st = m->stp};
    return 0;
}

/* fn for every message in the spool that loads, in ID (arrival) order. */
struct walk {
    void (*fn)(const struct spooled *m, void *ctx);
    void *ctx;
};

static void walk_one(const char *id, void *arg)
{
    const struct walk *w = arg;
    struct spooled m;
    struct buf ignore;
    buf_init(&ignore);
    if (spooled_load(id, &m, &ignore) == 0) {
        w->fn(&m, w->ctx);
        spooled_free(&m);
    }
    buf_free(&ignore);
}

static void each_spooled(void (*fn)(const struct spooled *m, void *ctx), void *ctx)
{
    struct walk w = {fn, ctx};
    spool_scan(walk_one, &w);
}

struct list_ctx {
    const struct queue_cmd *cmd;
    struct buf *out;
    size_t n;
    int64_t now;
};

static void list_one(const struct spooled *m, void *arg)
{
    struct list_ctx *c = arg;
    if (queue_cmd_filter_matches(c->cmd, &m->v, c->now))
        queue_view_list_item(&m->v, c->cmd->json, c->n++, c->now, c->out);
}

static int offline_list(const struct queue_cmd *cmd, struct buf *out)
{
    struct list_ctx c = {cmd, out, 0, (int64_t)time(NULL)};
    queue_view_list_begin(cmd->json, out);
    each_spooled(list_one, &c);
    queue_view_list_end(cmd->json, c.n, out);
    return 0;
}

static int offline_show(const char *id, struct buf *out, struct buf *err)
{
    struct spooled m;
    if (spooled_load(id, &m, err) < 0)
        return -1;
    queue_view_show(&m.v, (int64_t)time(NULL), out);
    spooled_free(&m);
    return 0;
}

/* hold or release one message; out gets its line when verbose. */
static int offline_hold(const char *id, bool hold, bool verbose, struct buf *out, struct buf *err)
{
    struct spooled m;
    if (spooled_load(id, &m, err) < 0)
        return -1;
    m.flags.held = hold;
    if (!hold)
        m.flags.reason[0] = '\0';
    for (size_t i = 0; !hold && i < m.e.nrcpts; i++)
        m.st[i].next_try = 0;              /* released: due at once when posternd starts */
    int rc = spool_save_state(id, m.flags, m.st, m.e.nrcpts);
    if (rc < 0)
        buf_printf(err, "%s: cannot write its state: %s\n", id, strerror(errno));
    else if (verbose)
        buf_printf(out, "%s: %s\n", id, hold ? "on hold" : "released");
    spooled_free(&m);
    return rc;
}

static int offline_delete(const char *id, bool verbose, struct buf *out, struct buf *err)
{
    struct spooled m;
    if (spooled_load(id, &m, err) < 0)
        return -1;
    spooled_free(&m);
    spool_remove(id, true);
    if (verbose)
        buf_printf(out, "%s: deleted\n", id);
    return 0;
}

/* The IDs a bulk command selects from the spool (ALL or filters), or its
 * named IDs that match its filters. */
struct chosen {
    const struct queue_cmd *cmd;
    int64_t now;
    char (*ids)[QID_LEN];
    size_t n, cap;
    bool oom;
};

static void choose_one(const struct spooled *m, void *arg)
{
    struct chosen *c = arg;
    if (c->oom || !queue_cmd_filter_matches(c->cmd, &m->v, c->now))
        return;
    if (c->n == c->cap) {
        size_t ncap = c->cap ? 2 * c->cap : 1024;
        void *n = realloc(c->ids, ncap * sizeof *c->ids);
        if (!n) {
            c->oom = true;
            return;
        }
        c->ids = n;
        c->cap = ncap;
    }
    memcpy(c->ids[c->n++], m->e.id, QID_LEN);
}

static int offline_bulk(const struct queue_cmd *cmd, struct buf *out, struct buf *err)
{
    struct chosen c = {.cmd = cmd, .now = (int64_t)time(NULL)};
    if (!cmd->nids)
        each_spooled(choose_one, &c);
    if (c.oom) {
        free(c.ids);
        buf_printf(err, "out of memory\n");
        return -1;
    }
    size_t n = cmd->nids ? cmd->nids : c.n, done = 0, failed = 0;
    bool verbose = cmd->nids == 1;
    for (size_t i = 0; i < n; i++) {
        const char *id = cmd->nids ? cmd->ids[i] : c.ids[i];
        int rc = cmd->verb == QV_DELETE ? offline_delete(id, verbose, out, err)
                                        : offline_hold(id, cmd->verb == QV_HOLD, verbose, out, err);
        if (rc < 0)
            failed++;
        else
            done++;
    }
    free(c.ids);
    static const char *const did[] = {[QV_HOLD] = "put on hold", [QV_RELEASE] = "released", [QV_DELETE] = "deleted"};
    if (!verbose)
        buf_printf(out, "%zu message(s) %s%s\n", done, did[cmd->verb], failed ? ", some not (see above)" : "");
    return failed ? -1 : 0;
}

/* postcat: the envelope as records, then the message as stored. */
static int queue_cat(const char *id, FILE *out, struct buf *err)
{
    struct spooled m;
    if (spooled_load(id, &m, err) < 0)
        return -1;
    char when[64];
    queue_view_time(m.e.arrival, when, sizeof when);
    fprintf(out, "*** ENVELOPE RECORDS %s ***\narrival: %s\nsize: %llu\nclient: [%s]\nhelo: %s\nprotocol: %s\n"
            "sender: <%s>\n", id, when, (unsigned long long)m.e.size, m.e.client_ip, m.e.helo, m.e.proto, m.e.sender);
    for (size_t i = 0; i < m.e.nrcpts; i++)
        fprintf(out, "recipient: <%s> (%s)\n", m.e.rcpts[i], queue_view_rcpt_status(m.st[i].status));
    if (m.flags.held)
        fprintf(out, "held: %s\n", m.flags.reason[0] ? m.flags.reason : "yes");
    fprintf(out, "*** MESSAGE CONTENTS %s ***\n", id);
    int fd = spool_open_message(id);
    FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
    int rc = 0;
    if (!f || fseeko(f, (off_t)m.body_off, SEEK_SET) < 0) {
        buf_printf(err, "%s: cannot read the message: %s\n", id, strerror(errno));
        rc = -1;
    } else {
        char chunk[65536];
        size_t n;
        uint64_t left = m.e.size;
        while (left && (n = fread(chunk, 1, left < sizeof chunk ? (size_t)left : sizeof chunk, f)) > 0) {
            fwrite(chunk, 1, n, out);
            left -= n;
        }
        fprintf(out, "*** END OF MESSAGE %s ***\n", id);
    }
    if (f)
        fclose(f);
    else if (fd >= 0)
        close(fd);
    spooled_free(&m);
    return rc;
}

struct shape_ctx {
    struct qshape q;
    int64_t now;
    bool by_sender;
};

static void shape_one(const struct spooled *m, void *arg)
{
    struct shape_ctx *c = arg;
    const char *sdom = strrchr(m->e.sender, '@');
    for (size_t i = 0; i < m->e.nrcpts; i++) {
        if (m->st[i].status != RCPT_PENDING)
            continue;
        const char *rdom = strrchr(m->e.rcpts[i], '@');
        const char *dom = c->by_sender ? (sdom ? sdom + 1 : m->e.sender[0] ? m->e.sender : "MAILER-DAEMON")
                                       : (rdom ? rdom + 1 : m->e.rcpts[i]);
        qshape_add(&c->q, dom, c->now - m->e.arrival);
    }
}

static int queue_summary(bool by_sender, struct buf *out)
{
    struct shape_ctx c = {.now = (int64_t)time(NULL), .by_sender = by_sender};
    each_spooled(shape_one, &c);
    qshape_print(&c.q, 100, out);
    qshape_free(&c.q);
    return 0;
}

int offline_run(const struct queue_cmd *cmd, struct buf *out, struct buf *err)
{
    if (cmd->nkeep || cmd->nfor) {
        buf_printf(err, "%s --%s needs posternd running (it settles recipients one by one)\n", cmd->name,
                   cmd->nkeep ? "keep" : "for");
        return -1;
    }
    if (cmd->paged) {
        buf_printf(err, "queue list --offset/--limit/--sort needs posternd running\n");
        return -1;
    }
    if (cmd->nids && cmd->filtered) {
        buf_printf(err, "with posternd down, give queue IDs or filters, not both\n");
        return -1;
    }
    switch (cmd->verb) {
    case QV_LIST: return offline_list(cmd, out);
    case QV_SHOW: return offline_show(cmd->ids[0], out, err);
    case QV_CAT: return queue_cat(cmd->ids[0], stdout, err);
    case QV_SUMMARY: return queue_summary(cmd->by_sender, out);
    case QV_HOLD: case QV_RELEASE: case QV_DELETE: return offline_bulk(cmd, out, err);
    default:
        buf_printf(err, "queue %s needs posternd running\n", cmd->name);
        return -1;
    }
}
