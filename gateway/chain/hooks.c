/* hooks.c - the hook chain: built from the config's plugin list (each
 * entry loaded by its link type, link.h: C plugins, Lua scripts), run per
 * stage in chain order. A link that answers later (Lua) is submitted and
 * its answer resumes the run; each run of consecutive in-place links (C
 * plugins, which may block) goes in one trip to a worker thread, or runs
 * on the loop when every one of them says it never blocks there
 * (nonblocking_stages) or blocks only in host calls that then answer
 * without waiting (loop_first_stages; a call that would wait sends the run
 * from that link on to a worker). */
#include "hooks.h"
#include "link.h"
#include "plugin_options.h"
#include "metrics.h"
#include "log.h"
#include "plugin_host.h"
#include "event.h"
#include "workers.h"
#include "dns.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct link {
    char name[1100];
    char labels[1200];             /* link="name", for the per-link metrics (made once) */
    const struct link_ops *ops;
    struct link_loaded x;          /* the type's object and its stage bits */
};

/* One chain as built from one config. Transactions name the chain they run
 * under (t->chain), so a reload never changes it under a running one. */
struct hook_chain {
    struct link *links;
    size_t n;
    bool fixed_wanted[POSTERN_STAGE_DELIVER + 1];   /* some link whose wants() cannot change has this stage */
};

static struct hook_chain *current;

static const char *stage_names[] = {"connect", "helo", "mail", "rcpt", "data", "body", "eom", "queue", "deliver"};
static const char *verdict_names[] = {"CONTINUE", "ACCEPT", "REJECT", "TEMPFAIL", "DISCARD", "QUARANTINE", "ERROR"};

const char *stage_name(enum postern_stage st) { return stage_names[st]; }
const char *verdict_name(postern_verdict v)
{
    return (unsigned)v <= POSTERN_ERROR ? verdict_names[v] : "invalid";
}

static bool has_stage(const struct link *l, enum postern_stage st) { return l->ops->wants(l->x.impl, st); }

/* A link that answers in place (on this thread), not later. */
static bool in_place(const struct link *l) { return l->ops->call != NULL; }

static void compute_wanted(struct hook_chain *ch)
{
    memset(ch->fixed_wanted, 0, sizeof ch->fixed_wanted);
    for (size_t i = 0; i < ch->n; i++) {
        if (ch->links[i].ops->wants_may_change)
            continue;
        for (int st = 0; st <= POSTERN_STAGE_DELIVER; st++)
            ch->fixed_wanted[st] |= has_stage(&ch->links[i], (enum postern_stage)st);
    }
}

/* Links whose wants() may change (a reloaded script) are asked each time. */
static bool chain_wants(const struct hook_chain *ch, enum postern_stage st)
{
    if (!ch)
        return false;
    if (ch->fixed_wanted[st])
        return true;
    for (size_t i = 0; i < ch->n; i++)
        if (ch->links[i].ops->wants_may_change && has_stage(&ch->links[i], st))
            return true;
    return false;
}

static const struct hook_chain *chain_of(const txn_t *t) { return t && t->chain ? t->chain : current; }

static _Thread_local const txn_t *calling;

const txn_t *hooks_calling_txn(void) { return calling; }

/* One in-place callback, with the transaction it runs for known to this thread. */
static postern_verdict call(const struct link *l, enum postern_stage st, txn_t *t, const char *arg, size_t len)
{
    const txn_t *outer = calling;
    calling = t;
    postern_verdict v = l->ops->call(l->x.impl, st, t, arg, len);
    calling = outer;
    return v;
}

/* This entry's "<name>.<key>" options. */
static size_t options_for(const struct config *cfg, const char *entry, struct postern_option *opts, size_t max)
{
    size_t n = 0;
    const char *name = plugin_option_name(entry);
    for (size_t i = 0; i < cfg->nplugin_opts && n < max; i++)
        if (!strcmp(cfg->plugin_opts[i].plugin, name))
            opts[n++] = (struct postern_option){cfg->plugin_opts[i].key, cfg->plugin_opts[i].value};
    return n;
}

static const struct link_ops *type_of(const char *entry)
{
    for (size_t i = 0; link_types[i]; i++)
        if (!strncmp(entry, link_types[i]->prefix, strlen(link_types[i]->prefix)))
            return link_types[i];
    return NULL;
}

static int load_one(const struct config *cfg, const char *entry, struct link *l, char *err, size_t errlen)
{
    snprintf(l->name, sizeof l->name, "%s", entry);
    if (!(l->ops = type_of(entry))) {
        snprintf(err, errlen, "%s: no link type takes this entry", entry);
        return -1;
    }
    struct postern_option opts[64];
    size_t n = options_for(cfg, entry, opts, 64);
    return l->ops->load(cfg, entry, opts, n, &l->x, err, errlen);
}

void hooks_chain_free(struct hook_chain *ch)
{
    if (!ch)
        return;
    for (size_t i = 0; i < ch->n; i++) {
        struct link *l = &ch->links[i];
        if (l->ops)
            l->ops->release(l->x.impl);
    }
    free(ch->links);
    free(ch);
}

struct hook_chain *hooks_build(const struct config *cfg, char *err, size_t errlen)
{
    struct hook_chain *ch = calloc(1, sizeof *ch);
    if (!ch || !(ch->links = calloc(cfg->nplugins ? cfg->nplugins : 1, sizeof *ch->links))) {
        snprintf(err, errlen, "out of memory");
        free(ch);
        return NULL;
    }
    for (size_t i = 0; i < cfg->nplugins; i++) {
        ch->n = i + 1;
        if (load_one(cfg, cfg->plugins[i], &ch->links[i], err, errlen) < 0) {
            hooks_chain_free(ch);
            return NULL;
        }
        metric_labels(ch->links[i].labels, sizeof ch->links[i].labels, "link", ch->links[i].name, NULL);
        log_info("plugin %s loaded", ch->links[i].name);
    }
    compute_wanted(ch);
    return ch;
}

void hooks_install(struct hook_chain *ch)
{
    for (size_t i = 0; i < ch->n; i++)
        if (ch->links[i].ops->install)
            ch->links[i].ops->install(ch->links[i].x.impl);
    current = ch;
    log_debug("plugin chain: %zu link(s) installed", ch->n);
}

struct hook_chain *hooks_current(void) { return current; }

int hooks_load(const struct config *cfg, char *err, size_t errlen)
{
    plugin_host_configure(cfg);
    struct hook_chain *ch = hooks_build(cfg, err, errlen);
    if (!ch)
        return -1;
    hooks_install(ch);
    return 0;
}

void hooks_unload(void)
{
    hooks_chain_free(current);
    current = NULL;
    for (size_t i = 0; link_types[i]; i++)
        if (link_types[i]->unload_all)
            link_types[i]->unload_all();
}

bool hooks_wanted(const txn_t *t, enum postern_stage st) { return chain_wants(chain_of(t), st); }

/* A default reply for verdicts that came without one. */
static void default_reply(txn_t *t, postern_verdict v, const char *plugin)
{
    if (t->reply[0] && (v == POSTERN_REJECT ? t->reply[0] == '5' : v == POSTERN_TEMPFAIL ? t->reply[0] == '4' : 1))
        return;
    switch (v) {
    case POSTERN_REJECT: snprintf(t->reply, sizeof t->reply, "550 5.7.1 Rejected by policy (%.200s)", plugin); break;
    case POSTERN_TEMPFAIL: snprintf(t->reply, sizeof t->reply, "451 4.7.1 Try again later (%.200s)", plugin); break;
    case POSTERN_QUARANTINE: snprintf(t->reply, sizeof t->reply, "quarantined by %.200s", plugin); break;
    default: break;
    }
}

/* A verdict from link l: note who decided; ERROR becomes a logged TEMPFAIL.
 * Returns true when it ends the stage. */
static bool decided(const struct link *l, enum postern_stage st, txn_t *t, postern_verdict *v)
{
    if (*v == POSTERN_CONTINUE)
        return false;
    t->verdict_by = l->name;
    if (*v >= POSTERN_ERROR || *v < POSTERN_CONTINUE) {
        log_error("%s: plugin %s failed at stage %s: message tempfailed", t->qid[0] ? t->qid : "-", l->name,
                  stage_name(st));
        snprintf(t->reply, sizeof t->reply, "451 4.3.0 Error: plugin %.200s failed", l->name);
        metric_inc(M_PLUGIN_ERRORS, l->labels);
        *v = POSTERN_TEMPFAIL;
    } else {
        default_reply(t, *v, l->name);
    }
    decisions_add(&t->decisions, stage_name(st), l->name, verdict_name(*v), t->reply);   /* "explain" */
    return true;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Time and calls per link, for /metrics (postern_chain_link_*). */
static void link_timed(const struct link *l, double started)
{
    metric_add_seconds(M_LINK_SECONDS, l->labels, now_s() - started);
    metric_inc(M_LINK_CALLS, l->labels);
}

/* One stage's run through the chain for one transaction. */
struct chain_run {
    struct work work;           /* for trips to a worker */
    const struct hook_chain *ch;
    enum postern_stage st;
    txn_t *t;
    const char *arg;
    size_t len;
    size_t next;                /* next link; > ch->n once decided */
    postern_verdict v;          /* from the worker trip */
    bool to_worker;             /* a loop_first link would have blocked: the next run goes to a worker */
    bool waiting;               /* a dns_fetch is out: its answer resumes the run on the loop */
    unsigned fetches;           /* answers waited for so far */
    size_t nfailed;
    struct failed_lookup *failed;   /* MAX_FAILED of them, made at the first lookup that got no answer */
    hooks_done_fn done;
    void *ctx;
    double started;             /* the submitted link in progress began */
};

static void chain_step(struct chain_run *r);

static void chain_finish(struct chain_run *r, postern_verdict v)
{
    hooks_done_fn done = r->done;
    void *ctx = r->ctx;
    free(r->failed);
    free(r);
    done(ctx, v);
}

/* A loop run that misses the DNS cache waits for the answer on the loop
 * (dns_fetch) and runs that link again, at most this many times per stage;
 * then, or for any other blocking call, the run goes to a worker. */
#define MAX_FETCHES 12
/* Lookups with no answer a run remembers ("no reply" when asked again on
 * the loop); one more goes to a worker. */
#define MAX_FAILED 4
struct failed_lookup {
    char name[256];
    int type;
};

/* Set while C links run on the loop thread; host calls that would block
 * then note it in would_have_blocked instead, and a DNS miss its name. */
static _Thread_local bool links_on_loop, would_have_blocked, blocked_otherwise;
static _Thread_local struct chain_run *loop_run;
static _Thread_local char missed_name[256];
static _Thread_local int missed_type;
static int fetches_out;            /* loop thread only */

bool hooks_on_loop(void) { return links_on_loop; }

void hooks_would_block(void)
{
    would_have_blocked = true;
    blocked_otherwise = true;
}

void hooks_would_block_dns(const char *name, int rrtype)
{
    if (!would_have_blocked && strlen(name) < sizeof missed_name) {
        snprintf(missed_name, sizeof missed_name, "%s", name);
        missed_type = rrtype;
    }
    would_have_blocked = true;
}

bool hooks_dns_failed(const char *name, int rrtype)
{
    for (size_t i = 0; loop_run && i < loop_run->nfailed; i++)
        if (loop_run->failed[i].type == rrtype && !strcasecmp(loop_run->failed[i].name, name))
            return true;
    return false;
}

int hooks_fetches_pending(void) { return fetches_out; }

static void count_run(const char *where)
{
    char labels[32];
    metric_inc(M_CHAIN_C_RUNS, metric_labels(labels, sizeof labels, "where", where, NULL));
}

static void fetched(void *arg, enum dns_fetch_result res, const char *name, int rrtype);

/* On the loop, a link's call was discarded because a host call would have
 * blocked: wait for a missed DNS answer here, or send the run on to a
 * worker (r->to_worker). */
static void after_would_block(struct chain_run *r)
{
    if (!blocked_otherwise && missed_name[0] && r->fetches < MAX_FETCHES &&
        dns_fetch(missed_name, missed_type, fetched, r) == 0) {
        r->fetches++;
        r->waiting = true;
        fetches_out++;
        count_run("dns_wait");
        return;
    }
    count_run("deferred");
    r->to_worker = true;
}

/* The in-place links from r->next up to the next submitted one, on a worker or (when
 * c_links_nonblocking said so) on the loop. On the loop, a link whose host
 * call would have blocked stops the run there (after_would_block). */
static void c_links_run(struct work *w)
{
    struct chain_run *r = (struct chain_run *)w;
    r->v = POSTERN_CONTINUE;
    const struct link *links = r->ch->links;
    bool on_loop = links_on_loop;
    count_run(on_loop ? "loop" : "worker");
    r->to_worker = false;
    for (; r->next < r->ch->n && in_place(&links[r->next]); r->next++) {
        if (!has_stage(&links[r->next], r->st))
            continue;
        double started = now_s();
        would_have_blocked = blocked_otherwise = false;
        missed_name[0] = '\0';
        postern_verdict v = call(&links[r->next], r->st, r->t, r->arg, r->len);
        if (on_loop && would_have_blocked) {
            after_would_block(r);
            return;
        }
        link_timed(&links[r->next], started);
        if (decided(&links[r->next], r->st, r->t, &v)) {
            r->v = v;
            r->next = r->ch->n + 1;
            return;
        }
    }
}

static void c_links_done(struct work *w)
{
    struct chain_run *r = (struct chain_run *)w;
    if (r->waiting)
        return;                 /* fetched() goes on */
    if (r->next > r->ch->n)
        chain_finish(r, r->v);
    else
        chain_step(r);
}

/* The answer a loop run waited for (dns_fetch, on the loop): the same link
 * is called again. A lookup that got none is "no reply" to that link from
 * now on; one that cannot be cached goes to a worker. */
static void fetched(void *arg, enum dns_fetch_result res, const char *name, int rrtype)
{
    struct chain_run *r = arg;
    r->waiting = false;
    fetches_out--;
    if (res == DNS_FETCH_FAILED && !r->failed)
        r->failed = calloc(MAX_FAILED, sizeof *r->failed);
    if (res == DNS_FETCH_FAILED && r->failed && r->nfailed < MAX_FAILED) {
        snprintf(r->failed[r->nfailed].name, sizeof r->failed[0].name, "%s", name);
        r->failed[r->nfailed++].type = rrtype;
    } else if (res != DNS_FETCH_CACHED) {
        r->to_worker = true;
    }
    chain_step(r);
}

/* A submitted link's answer, on the loop thread. */
static void submitted_done(void *arg, postern_verdict v, const char *reply)
{
    struct chain_run *r = arg;
    link_timed(&r->ch->links[r->next], r->started);
    if (reply[0])
        plugin_host()->set_reply(r->t, reply);
    if (decided(&r->ch->links[r->next], r->st, r->t, &v)) {
        chain_finish(r, v);
        return;
    }
    r->next++;
    chain_step(r);
}

/* Whether every in-place link from r->next to the next submitted one that has this
 * stage said it never blocks there, or blocks only in host calls (which
 * answer without waiting on the loop): then they run here on the loop. */
static bool c_links_nonblocking(const struct chain_run *r)
{
    if (r->to_worker)
        return false;
    uint32_t bit = POSTERN_NONBLOCKING(r->st);
    for (size_t i = r->next; i < r->ch->n && in_place(&r->ch->links[i]); i++) {
        const struct link *l = &r->ch->links[i];
        if (has_stage(l, r->st) && !((l->x.nonblocking | l->x.loop_first) & bit))
            return false;
    }
    return true;
}

static void chain_step(struct chain_run *r)
{
    while (r->next < r->ch->n) {
        const struct link *l = &r->ch->links[r->next];
        if (!has_stage(l, r->st)) {
            r->next++;
            continue;
        }
        if (in_place(l) && c_links_nonblocking(r)) {
            links_on_loop = true;
            loop_run = r;
            c_links_run(&r->work);
            loop_run = NULL;
            links_on_loop = false;
            c_links_done(&r->work);
            return;
        }
        if (in_place(l)) {
            r->work.run = c_links_run;
            r->work.done = c_links_done;
            workers_submit(&r->work);
            return;
        }
        r->started = now_s();
        l->ops->submit(l->x.impl, r->st, r->t, r->arg, r->len, submitted_done, r);
        return;
    }
    chain_finish(r, POSTERN_CONTINUE);
}

void hooks_run_async(enum postern_stage st, txn_t *t, const char *arg, size_t len, hooks_done_fn done, void *ctx)
{
    t->stage = st;
    t->reply[0] = '\0';
    const struct hook_chain *ch = chain_of(t);
    bool wanted = chain_wants(ch, st);
    struct chain_run *r = wanted ? calloc(1, sizeof *r) : NULL;
    if (!r) {
        if (wanted)
            snprintf(t->reply, sizeof t->reply, "451 4.3.0 Error: out of memory");
        done(ctx, wanted ? POSTERN_TEMPFAIL : POSTERN_CONTINUE);
        return;
    }
    *r = (struct chain_run){.ch = ch, .st = st, .t = t, .arg = arg, .len = len, .done = done, .ctx = ctx};
    chain_step(r);
}

/* The synchronous chain for postern-milter (libmilter's threads): in-place
 * links are called here; a submitted one (Lua) is handed over and this
 * thread waits for its answer (which the Lua watchdog guarantees). */
struct sync_wait {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    postern_verdict v;
    char reply[512];
};

static void sync_done(void *arg, postern_verdict v, const char *reply)
{
    struct sync_wait *w = arg;
    pthread_mutex_lock(&w->lock);
    w->done = true;
    w->v = v;
    snprintf(w->reply, sizeof w->reply, "%s", reply);
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static postern_verdict submit_and_wait(const struct link *l, enum postern_stage st, txn_t *t, const char *arg,
                                    size_t len)
{
    struct sync_wait w = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    l->ops->submit(l->x.impl, st, t, arg, len, sync_done, &w);
    pthread_mutex_lock(&w.lock);
    while (!w.done)
        pthread_cond_wait(&w.cond, &w.lock);
    pthread_mutex_unlock(&w.lock);
    if (w.reply[0])
        plugin_host()->set_reply(t, w.reply);
    return w.v;
}

static hooks_observer_fn observer;
static void *observer_ctx;

void hooks_set_observer(hooks_observer_fn fn, void *ctx)
{
    observer = fn;
    observer_ctx = ctx;
}

postern_verdict hooks_run_sync(enum postern_stage st, txn_t *t, const char *arg, size_t len)
{
    t->stage = st;
    t->reply[0] = '\0';
    const struct hook_chain *ch = chain_of(t);
    for (size_t i = 0; ch && i < ch->n; i++) {
        const struct link *l = &ch->links[i];
        if (!has_stage(l, st))
            continue;
        postern_verdict v = in_place(l) ? call(l, st, t, arg, len) : submit_and_wait(l, st, t, arg, len);
        bool ends = decided(l, st, t, &v);
        if (observer)
            observer(observer_ctx, st, l->name, v, t);
        if (ends)
            return v;
    }
    return POSTERN_CONTINUE;
}
