/* hooks.c - loads the plugin chain with dlopen(RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE:
 * plugins stay mapped after dlclose, so sanitizer reports at exit can name them),
 * checks each plugin's ABI version and struct size, hands it its options,
 * and runs the callbacks of a stage in chain order: each Lua link on the
 * Lua threads (lua/lua_threads.c), each run of consecutive C links in one
 * trip to a worker thread (C plugins may block), or on the loop when every
 * one of them says it never blocks there (nonblocking_stages) or blocks
 * only in host calls that then answer without waiting (loop_first_stages;
 * a call that would wait sends the run from that link on to a worker). */
#include "hooks.h"
#include "plugin_options.h"
#include "metrics.h"
#include "log.h"
#include "postern_lua.h"
#include "plugin_host.h"
#include "event.h"
#include "workers.h"
#include "dns.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct link {
    char name[1100];
    char labels[1200];             /* link="name", for the per-link metrics (made once) */
    struct lua_script *lua;        /* a lua:PATH entry: p is the Lua bridge */
    struct lua_pending *pending;   /* a built chain's new version of lua, until installed */
    void *dl;
    const struct postern_plugin *p;   /* the plugin's own struct: only struct_size bytes of it exist */
    uint32_t nonblocking;             /* p->nonblocking_stages, or 0 for an older layout */
    uint32_t loop_first;              /* p->loop_first_stages, likewise */
    void *state;
};

/* One chain as built from one config. Transactions name the chain they run
 * under (t->chain), so a reload never changes it under a running one. */
struct hook_chain {
    struct link *links;
    size_t n;
    bool c_wanted[POSTERN_STAGE_DELIVER + 1];   /* some C link has this stage */
};

static struct hook_chain *current;

/* Every Lua script loaded, by path. Scripts outlive chains (each Lua
 * thread keeps a state per script); a reload recompiles them in place. */
#define MAX_LUA_SCRIPTS 32
static struct lua_script *scripts[MAX_LUA_SCRIPTS];
static size_t nscripts;

static const char *stage_names[] = {"connect", "helo", "mail", "rcpt", "data", "body", "eom", "queue", "deliver"};
static const char *verdict_names[] = {"CONTINUE", "ACCEPT", "REJECT", "TEMPFAIL", "DISCARD", "QUARANTINE", "ERROR"};

const char *stage_name(enum postern_stage st) { return stage_names[st]; }
const char *verdict_name(postern_verdict v)
{
    return (unsigned)v <= POSTERN_ERROR ? verdict_names[v] : "invalid";
}

/* Does plugin p have a callback for stage st? */
static bool plugin_has_stage(const struct postern_plugin *p, enum postern_stage st)
{
    switch (st) {
    case POSTERN_STAGE_CONNECT: return p->on_connect;
    case POSTERN_STAGE_HELO: return p->on_helo;
    case POSTERN_STAGE_MAIL: return p->on_mail;
    case POSTERN_STAGE_RCPT: return p->on_rcpt;
    case POSTERN_STAGE_DATA: return p->on_data;
    case POSTERN_STAGE_BODY: return p->on_body;
    case POSTERN_STAGE_EOM: return p->on_eom;
    case POSTERN_STAGE_QUEUE: return p->on_queue;
    case POSTERN_STAGE_DELIVER: return p->on_deliver;
    }
    return false;
}

static bool has_stage(const struct link *l, enum postern_stage st)
{
    return l->lua ? lua_script_wants(l->lua, st) : plugin_has_stage(l->p, st);
}

static void compute_wanted(struct hook_chain *ch)
{
    memset(ch->c_wanted, 0, sizeof ch->c_wanted);
    for (size_t i = 0; i < ch->n; i++)
        for (int st = 0; st <= POSTERN_STAGE_DELIVER; st++)
            ch->c_wanted[st] |= !ch->links[i].lua && has_stage(&ch->links[i], (enum postern_stage)st);
}

/* Lua links are asked each time: a reload may change what a script handles. */
static bool chain_wants(const struct hook_chain *ch, enum postern_stage st)
{
    if (!ch)
        return false;
    if (ch->c_wanted[st])
        return true;
    for (size_t i = 0; i < ch->n; i++)
        if (ch->links[i].lua && lua_script_wants(ch->links[i].lua, st))
            return true;
    return false;
}

static const struct hook_chain *chain_of(const txn_t *t) { return t && t->chain ? t->chain : current; }

static _Thread_local const txn_t *calling;

const txn_t *hooks_calling_txn(void) { return calling; }

static postern_verdict dispatch_stage(const struct link *l, enum postern_stage st, txn_t *t, const char *arg,
                                      size_t len);

/* One callback, with the transaction it runs for known to this thread. */
static postern_verdict call(const struct link *l, enum postern_stage st, txn_t *t, const char *arg, size_t len)
{
    const txn_t *outer = calling;
    calling = t;
    postern_verdict v = dispatch_stage(l, st, t, arg, len);
    calling = outer;
    return v;
}

static postern_verdict dispatch_stage(const struct link *l, enum postern_stage st, txn_t *t, const char *arg,
                                      size_t len)
{
    const struct postern_plugin *p = l->p;
    void *state = l->state;
    switch (st) {
    case POSTERN_STAGE_CONNECT: return p->on_connect(t, state);
    case POSTERN_STAGE_HELO: return p->on_helo(t, arg, state);
    case POSTERN_STAGE_MAIL: return p->on_mail(t, arg, state);
    case POSTERN_STAGE_RCPT: return p->on_rcpt(t, arg, state);
    case POSTERN_STAGE_DATA: return p->on_data(t, state);
    case POSTERN_STAGE_BODY: return p->on_body(t, arg, len, state);
    case POSTERN_STAGE_EOM: return p->on_eom(t, state);
    case POSTERN_STAGE_QUEUE: return p->on_queue(t, state);
    case POSTERN_STAGE_DELIVER: return p->on_deliver(t, state);
    }
    return POSTERN_ERROR;
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

static struct lua_script *script_named(const char *path)
{
    for (size_t i = 0; i < nscripts; i++)
        if (!strcmp(lua_script_path(scripts[i]), path))
            return scripts[i];
    return NULL;
}

/* A script loaded before is recompiled beside its running version (it
 * switches when the chain is installed); a new one is loaded. */
static int load_lua(const struct config *cfg, const char *entry, struct link *l, char *err, size_t errlen)
{
    struct postern_option opts[64];
    size_t n = options_for(cfg, entry, opts, 64);
    snprintf(l->name, sizeof l->name, "%s", entry);
    char e[900] = "";
    if ((l->lua = script_named(entry + 4))) {
        if (!(l->pending = lua_script_prepare(l->lua, cfg, opts, n, e, sizeof e))) {
            snprintf(err, errlen, "%s: %s", entry, e[0] ? e : "out of memory");
            return -1;
        }
        return 0;
    }
    if (nscripts == MAX_LUA_SCRIPTS || lua_script_load(cfg, entry + 4, opts, n, &l->lua, e, sizeof e) < 0) {
        snprintf(err, errlen, "%s: %s", entry, e[0] ? e : "too many Lua scripts");
        return -1;
    }
    scripts[nscripts++] = l->lua;
    return 0;
}

static int load_one(const struct config *cfg, const char *name, struct link *l, char *err, size_t errlen)
{
    if (!strncmp(name, "lua:", 4))
        return load_lua(cfg, name, l, err, errlen);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.so", cfg->plugin_dir, name);
    snprintf(l->name, sizeof l->name, "%s", name);
    l->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!l->dl) {
        snprintf(err, errlen, "plugin %s: cannot load %s: %s", name, path, dlerror());
        return -1;
    }
    const struct postern_plugin *(*entry)(void);
    *(void **)&entry = dlsym(l->dl, POSTERN_PLUGIN_ENTRY);
    if (!entry) {
        snprintf(err, errlen, "plugin %s: %s does not export %s()", name, path, POSTERN_PLUGIN_ENTRY);
        return -1;
    }
    l->p = entry();
    if (!l->p) {
        snprintf(err, errlen, "plugin %s: %s() returned NULL", name, POSTERN_PLUGIN_ENTRY);
        return -1;
    }
    if (l->p->abi_version != POSTERN_PLUGIN_ABI_VERSION) {
        snprintf(err, errlen, "plugin %s: built for plugin ABI version %u, this posternd speaks version %d",
                 name, l->p->abi_version, POSTERN_PLUGIN_ABI_VERSION);
        return -1;
    }
    if (l->p->struct_size < POSTERN_PLUGIN_MIN_SIZE) {
        snprintf(err, errlen, "plugin %s: plugin struct is %u bytes, expected at least %zu", name,
                 l->p->struct_size, (size_t)POSTERN_PLUGIN_MIN_SIZE);
        return -1;
    }
    /* appended fields exist only in plugins built against a newer header */
    if (l->p->struct_size >= offsetof(struct postern_plugin, nonblocking_stages) + sizeof(uint32_t))
        l->nonblocking = l->p->nonblocking_stages;
    if (l->p->struct_size >= offsetof(struct postern_plugin, loop_first_stages) + sizeof(uint32_t))
        l->loop_first = l->p->loop_first_stages;
    const struct postern_option_spec *specs = plugin_option_table(l->p);
    if (specs && plugin_options_check(cfg, plugin_option_name(name), specs, err, errlen) < 0)
        return -1;
    struct postern_option opts[64];
    size_t n = options_for(cfg, name, opts, 64);
    char perr[512] = "";
    if (l->p->init && l->p->init(plugin_host(), opts, n, &l->state, perr, sizeof perr) != 0) {
        snprintf(err, errlen, "plugin %s: %s", name, perr[0] ? perr : "init failed");
        return -1;
    }
    return 0;
}

void hooks_chain_free(struct hook_chain *ch)
{
    if (!ch)
        return;
    for (size_t i = 0; i < ch->n; i++) {
        struct link *l = &ch->links[i];
        lua_pending_free(l->pending);
        if (l->p && l->p->fini && l->state)
            l->p->fini(l->state);
        if (l->dl)
            dlclose(l->dl);
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
        if (ch->links[i].pending) {
            lua_script_commit(ch->links[i].lua, ch->links[i].pending);
            ch->links[i].pending = NULL;
        }
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
    for (size_t i = 0; i < nscripts; i++)
        lua_script_free(scripts[i]);
    nscripts = 0;
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
    decisions_add(t->decisions, stage_name(st), l->name, verdict_name(*v), t->reply);   /* "explain" */
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
    double lua_started;         /* the Lua link in progress began */
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

/* The C links from r->next up to the next Lua link, on a worker or (when
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
    for (; r->next < r->ch->n && !links[r->next].lua; r->next++) {
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

/* A Lua link's answer, on the loop thread. */
static void lua_link_done(void *arg, postern_verdict v, const char *reply)
{
    struct chain_run *r = arg;
    link_timed(&r->ch->links[r->next], r->lua_started);
    if (reply[0])
        plugin_host()->set_reply(r->t, reply);
    if (decided(&r->ch->links[r->next], r->st, r->t, &v)) {
        chain_finish(r, v);
        return;
    }
    r->next++;
    chain_step(r);
}

/* Whether every C link from r->next to the next Lua link that has this
 * stage said it never blocks there, or blocks only in host calls (which
 * answer without waiting on the loop): then they run here on the loop. */
static bool c_links_nonblocking(const struct chain_run *r)
{
    if (r->to_worker)
        return false;
    uint32_t bit = POSTERN_NONBLOCKING(r->st);
    for (size_t i = r->next; i < r->ch->n && !r->ch->links[i].lua; i++)
        if (has_stage(&r->ch->links[i], r->st) && !((r->ch->links[i].nonblocking | r->ch->links[i].loop_first) & bit))
            return false;
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
        if (!l->lua && c_links_nonblocking(r)) {
            links_on_loop = true;
            loop_run = r;
            c_links_run(&r->work);
            loop_run = NULL;
            links_on_loop = false;
            c_links_done(&r->work);
            return;
        }
        if (!l->lua) {
            r->work.run = c_links_run;
            r->work.done = c_links_done;
            workers_submit(&r->work);
            return;
        }
        r->lua_started = now_s();
        lua_call_submit(l->lua, r->t, r->st, r->arg, r->len, lua_link_done, r);
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

/* The synchronous chain for postern-milter (libmilter's threads): C links
 * are called in place; a Lua link is handed to the Lua threads and this
 * thread waits for its answer (which the watchdog guarantees). */
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

static postern_verdict run_lua_sync(const struct link *l, enum postern_stage st, txn_t *t, const char *arg,
                                    size_t len)
{
    struct sync_wait w = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    lua_call_submit(l->lua, t, st, arg, len, sync_done, &w);
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
        postern_verdict v = l->lua ? run_lua_sync(l, st, t, arg, len) : call(l, st, t, arg, len);
        bool ends = decided(l, st, t, &v);
        if (observer)
            observer(observer_ctx, st, l->name, v, t);
        if (ends)
            return v;
    }
    return POSTERN_CONTINUE;
}
