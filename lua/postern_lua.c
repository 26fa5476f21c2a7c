/* postern_lua.c - the Lua binding's core: sandboxed states and their
 * limits, loading and reloading scripts, and one call's run
 * (lua_call_step). The `postern` module is lua_module.c's, the transaction
 * object and the variables proxies lua_tx.c's (lua_int.h).
 *
 * Handlers run on the Lua threads (lua_threads.c); the network loop only
 * takes a call's short first steps, in a state of its own (lua_fast.c).
 * Each thread has its own state per script (Lua states are not
 * thread-safe) and runs each call as a coroutine: the count hook yields
 * every LUA_SLICE instructions so the thread can serve other calls, and
 * ends a call over its instruction or time limit. Memory is limited per
 * state. A script error is logged with script:line and tempfails the
 * message. A reload builds new states; an old one goes when its last
 * suspended call ends. */
#include "lua_int.h"

#define LUA_SLICE 20             /* hook rounds (x HOOK_EVERY instructions) per slice */
#define LOOP_SLICE 1             /* the same on the network loop (lua_fast.c) */

extern const char postern_helpers_lua[];   /* lua/postern_helpers.lua, embedded */

const char *const lua_stage_names[] = {"connect", "helo", "mail", "rcpt", "data", "body", "eom", "queue",
                                       "deliver"};

static _Thread_local struct lstate *thread_states[MAX_SCRIPTS];   /* this Lua thread's */
static int nscripts;

/* ---- limits -------------------------------------------------------- */

static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct lstate *ls = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        ls->mem_used -= old;
        free(ptr);
        return NULL;
    }
    if (nsize > old && ls->mem_used + (nsize - old) > ls->mem_limit)
        return NULL;   /* Lua raises "not enough memory" */
    void *p = realloc(ptr, nsize);
    if (p)
        ls->mem_used = ls->mem_used - old + nsize;
    return p;
}


static long us_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - t0->tv_sec) * 1000000 + (now.tv_nsec - t0->tv_nsec) / 1000;
}

static void limit_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    struct lctx *c = ctx_of(L);
    c->used += HOOK_EVERY;
    if (c->call && atomic_load(&c->call->abandoned))
        c->killed = true;      /* the watchdog answered for it: end it at once */
    if (c->killed)
        luaL_error(L, "call ended: over its limit");
    if (c->used > c->budget) {
        c->killed = true;
        luaL_error(L, "instruction limit exceeded (%I)", (lua_Integer)c->budget);
    }
    if (!c->fast && c->elapsed_us + us_since(&c->slice_start) > (long)c->time_limit_ms * 1000) {
        c->killed = true;
        luaL_error(L, "time limit exceeded (%d ms)", c->time_limit_ms);
    }
    /* give the thread back to other calls (on the network loop: hand the
     * call to a Lua thread, or where it cannot yield, start it over there) */
    if (--c->slice_left > 0)
        return;
    if (lua_isyieldable(L)) {
        lua_yield(L, 0);     /* in a hook it returns; the yield happens when the hook does */
        return;
    }
    if (c->fast)
        loop_restart(L);
}

static void ctx_init(struct lctx *c, struct lstate *ls, struct lua_call *call)
{
    c->ls = ls;
    c->call = call;
    c->used = 0;
    c->elapsed_us = 0;
    c->budget = ls->setup->cfg->lua_instruction_limit;
    c->time_limit_ms = ls->setup->cfg->lua_time_limit_ms;
    c->killed = false;
}

/* pcall and xpcall as in lbaselib.c, except that an error after a limit
 * was hit is raised again: a script cannot catch its own end. */
static int finish_pcall(lua_State *L, int status, lua_KContext extra)
{
    if (status != LUA_OK && status != LUA_YIELD) {
        if (ctx_of(L)->killed)
            return lua_error(L);
        lua_pushboolean(L, 0);
        lua_pushvalue(L, -2);
        return 2;
    }
    return lua_gettop(L) - (int)extra;
}

static int limited_pcall(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_pushboolean(L, 1);
    lua_insert(L, 1);
    int status = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 0, finish_pcall);
    return finish_pcall(L, status, 0);
}

/* xpcall's message handler runs with hooks off when the error came from
 * the limit hook, so the script's own handler could loop forever: after a
 * limit it is not called at all. */
static int guarded_handler(lua_State *L)
{
    if (ctx_of(L)->killed)
        return 1;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static int limited_xpcall(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, guarded_handler, 1);
    lua_replace(L, 2);
    lua_pushboolean(L, 1);
    lua_pushvalue(L, 1);
    lua_rotate(L, 3, 2);
    int status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, finish_pcall);
    return finish_pcall(L, status, 2);
}

/* Lua runs __gc finalizers with hooks off (lgc.c GCTM), so no limit could
 * end one that loops: scripts may not give their tables a __gc. (Userdata
 * metatables are ours and locked with __metatable.) */
static int limited_setmetatable(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, 2) != LUA_TNIL)
            return luaL_error(L, "setmetatable: __gc is not allowed in policies");
        lua_pop(L, 1);
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static void close_state(lua_State *L) { lua_close(L); }

/* Before each (re)entry into a call. The loop's short run (c->fast: at
 * most LOOP_SLICE hook rounds, nothing slow) is not timed. */
static void slice_start(lua_State *L, struct lctx *c)
{
    c->slice_left = c->fast ? LOOP_SLICE : LUA_SLICE;
    if (!c->fast)
        clock_gettime(CLOCK_MONOTONIC, &c->slice_start);
    lua_sethook(L, limit_hook, LUA_MASKCOUNT, HOOK_EVERY);
}

static void slice_end(lua_State *L, struct lctx *c)
{
    if (!c->fast)
        c->elapsed_us += us_since(&c->slice_start);
    lua_sethook(L, NULL, 0, 0);
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
    return 1;
}

/* pcall with limits (loading a script: no yielding); on error, err gets
 * the message (script:line: ...). */
static int protected_call(struct lstate *ls, int nargs, int nresults, char *err, size_t errlen)
{
    lua_State *L = ls->L;
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, traceback);
    lua_insert(L, base);
    ctx_init(&ls->main_ctx, ls, NULL);
    slice_start(L, &ls->main_ctx);
    int rc = lua_pcall(L, nargs, nresults, base);
    slice_end(L, &ls->main_ctx);
    lua_remove(L, base);
    if (rc != LUA_OK) {
        const char *m = lua_tostring(L, -1);
        snprintf(err, errlen, "%s", m ? m : "error");
        /* keep only the first line (script:line: message) for the log line */
        char *nl = strchr(err, '\n');
        if (nl)
            *nl = '\0';
        lua_pop(L, 1);
    }
    return rc;
}

/* ---- states -------------------------------------------------------- */

static void open_sandbox(lua_State *L)
{
    static const luaL_Reg libs[] = {
        {LUA_GNAME, luaopen_base}, {LUA_STRLIBNAME, luaopen_string}, {LUA_TABLIBNAME, luaopen_table},
        {LUA_MATHLIBNAME, luaopen_math}, {LUA_UTF8LIBNAME, luaopen_utf8}, {LUA_OSLIBNAME, luaopen_os},
    };
    for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++) {
        luaL_requiref(L, libs[i].name, libs[i].func, 1);
        lua_pop(L, 1);
    }
    /* no file or code loading, no process control */
    static const char *base_off[] = {"dofile", "loadfile", "load"};
    for (size_t i = 0; i < 3; i++) {
        lua_pushnil(L);
        lua_setglobal(L, base_off[i]);
    }
    lua_getglobal(L, "os");
    static const char *os_off[] = {"execute", "exit", "getenv", "remove", "rename", "tmpname", "setlocale"};
    for (size_t i = 0; i < sizeof os_off / sizeof os_off[0]; i++) {
        lua_pushnil(L);
        lua_setfield(L, -2, os_off[i]);
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, l_require);
    lua_setglobal(L, "require");
    lua_pushcfunction(L, limited_pcall);
    lua_setglobal(L, "pcall");
    lua_pushcfunction(L, limited_xpcall);
    lua_setglobal(L, "xpcall");
    lua_getglobal(L, "setmetatable");
    lua_pushcclosure(L, limited_setmetatable, 1);
    lua_setglobal(L, "setmetatable");
}

static void open_postern(lua_State *L)
{
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "postern.handlers");
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "postern.tables");
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "postern.modules");
    lua_newtable(L);
    luaL_setfuncs(L, postern_lib, 0);
    luaL_setfuncs(L, postern_suspend_lib, 0);
    lua_pushinteger(L, POSTERN_CONTINUE);    /* returning nil means the same */
    lua_setfield(L, -2, "CONTINUE");
    lua_setglobal(L, "postern");
    luaL_newmetatable(L, TX_META);
    lua_newtable(L);
    for (const luaL_Reg *m = tx_methods; m->name; m++) {
        push_guarded(L, m->func);
        lua_setfield(L, -2, m->name);
    }
    lua_pushcclosure(L, tx_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "locked");          /* getmetatable() gives this, setmetatable() fails */
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
    luaL_newmetatable(L, VARS_META);
    push_guarded(L, vars_index);
    lua_setfield(L, -2, "__index");
    push_guarded(L, vars_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
}

static unsigned registered_stages(lua_State *L)
{
    unsigned mask = 0;
    lua_getfield(L, LUA_REGISTRYINDEX, "postern.handlers");
    for (int i = 0; i < 9; i++) {
        if (lua_rawgeti(L, -1, i + 1) == LUA_TTABLE && lua_rawlen(L, -1) > 0)
            mask |= 1u << i;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return mask;
}

/* A fresh sandboxed state with the helpers and the script run. */
int build_state(struct lstate *ls, struct lua_script *s, const struct script_setup *setup, const char *src,
                       size_t len, char *err, size_t errlen)
{
    ls->script = s;
    ls->setup = setup;
    ls->mem_used = 0;
    ls->mem_limit = setup->cfg->lua_memory_limit;
    ls->L = lua_newstate(limited_alloc, ls);
    if (!ls->L) {
        snprintf(err, errlen, "%s: cannot create a Lua state", s->path);
        return -1;
    }
    ls->main_ctx.ls = ls;
    *(struct lctx **)lua_getextraspace(ls->L) = &ls->main_ctx;
    open_sandbox(ls->L);
    open_postern(ls->L);
    if (ls->for_loop)
        off_loop_wrap(ls->L);
    char chunk[1100];
    snprintf(chunk, sizeof chunk, "@%s", s->path);
    if (luaL_loadbufferx(ls->L, postern_helpers_lua, strlen(postern_helpers_lua), "=postern_helpers", "t") != LUA_OK ||
        protected_call(ls, 0, 0, err, errlen) != LUA_OK ||
        luaL_loadbufferx(ls->L, src, len, chunk, "t") != LUA_OK) {
        if (lua_isstring(ls->L, -1))
            snprintf(err, errlen, "%s", lua_tostring(ls->L, -1));
        close_state(ls->L);
        ls->L = NULL;
        return -1;
    }
    if (protected_call(ls, 0, 0, err, errlen) != LUA_OK) {
        close_state(ls->L);
        ls->L = NULL;
        return -1;
    }
    return 0;
}

static void drop_state(struct lstate *ls)
{
    if (ls->L)
        close_state(ls->L);
    ls->L = NULL;
}

void state_unref(struct lstate *ls)
{
    if (atomic_fetch_sub(&ls->refs, 1) == 1) {
        drop_state(ls);
        free(ls);
    }
}

/* This thread's state for s, rebuilt when a reload changed the source;
 * the caller holds a reference until its call ends. */
static struct lstate *current_state(struct lua_script *s, char *err, size_t errlen)
{
    struct lstate *ls = thread_states[s->slot];
    pthread_mutex_lock(&s->lock);
    int generation = s->generation;
    pthread_mutex_unlock(&s->lock);
    if (ls && ls->generation == generation) {
        atomic_fetch_add(&ls->refs, 1);
        return ls;
    }
    if (ls) {
        thread_states[s->slot] = NULL;
        state_unref(ls);     /* freed once its suspended calls finish */
    }
    ls = calloc(1, sizeof *ls);
    pthread_mutex_lock(&s->lock);  /* the source cannot change under the build */
    int rc = ls ? build_state(ls, s, s->setup, s->source, s->source_len, err, errlen) : -1;
    pthread_mutex_unlock(&s->lock);
    if (rc < 0) {
        free(ls);
        return NULL;
    }
    ls->generation = generation;
    atomic_init(&ls->refs, 2);   /* current, and this call */
    thread_states[s->slot] = ls;
    return ls;
}

void lua_thread_states_close(void)
{
    for (int i = 0; i < MAX_SCRIPTS; i++)
        if (thread_states[i]) {
            state_unref(thread_states[i]);
            thread_states[i] = NULL;
        }
}

/* ---- loading and reloading (main thread) --------------------------- */

static int read_file(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct buf b;
    buf_init(&b);
    char tmp[8192];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        buf_append(&b, tmp, n);
    fclose(f);
    *len = b.len;
    *out = b.data ? b.data : strdup("");
    return 0;
}

/* Compile src in a throw-away state: syntax, top-level errors, stages. */
static int check_source(struct lua_script *s, const struct script_setup *setup, const char *src, size_t len,
                        unsigned *stages, char *err, size_t errlen)
{
    struct lstate probe = {0};
    if (build_state(&probe, s, setup, src, len, err, errlen) < 0)
        return -1;
    if (check_declared(probe.L, s, setup, err, errlen) < 0) {
        drop_state(&probe);
        return -1;
    }
    *stages = registered_stages(probe.L);
    drop_state(&probe);
    return 0;
}

static struct script_setup *setup_new(const struct config *cfg, const struct postern_option *opts, size_t nopts)
{
    struct script_setup *u = calloc(1, sizeof *u);
    if (!u || !(u->opts = calloc(nopts ? nopts : 1, sizeof *u->opts))) {
        free(u);
        return NULL;
    }
    u->cfg = cfg;
    for (size_t i = 0; i < nopts; i++)
        u->opts[i] = (struct postern_option){strdup(opts[i].key), strdup(opts[i].value)};
    u->nopts = nopts;
    return u;
}

static void setup_free(struct script_setup *u)
{
    while (u) {
        struct script_setup *older = u->older;
        for (size_t i = 0; i < u->nopts; i++) {
            free((char *)u->opts[i].key);
            free((char *)u->opts[i].value);
        }
        free(u->opts);
        free(u);
        u = older;
    }
}

int lua_script_load(const struct config *cfg, const char *path, const struct postern_option *opts, size_t nopts,
                    struct lua_script **out, char *err, size_t errlen)
{
    if (nscripts >= MAX_SCRIPTS) {
        snprintf(err, errlen, "too many Lua scripts (max %d)", MAX_SCRIPTS);
        return -1;
    }
    struct lua_script *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    snprintf(s->path, sizeof s->path, "%s", path);
    snprintf(s->dir, sizeof s->dir, "%s", path);
    char *slash = strrchr(s->dir, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(s->dir, sizeof s->dir, ".");
    pthread_mutex_init(&s->lock, NULL);
    s->slot = nscripts;
    unsigned stages;
    if (!(s->setup = setup_new(cfg, opts, nopts)) || read_file(path, &s->source, &s->source_len, err, errlen) < 0 ||
        check_source(s, s->setup, s->source, s->source_len, &stages, err, errlen) < 0) {
        lua_script_free(s);
        return -1;
    }
    atomic_store(&s->stages, stages);
    nscripts++;
    *out = s;
    return 0;
}

struct lua_pending {
    char *src;
    size_t len;
    unsigned stages;
    struct script_setup *setup;
};

struct lua_pending *lua_script_prepare(struct lua_script *s, const struct config *cfg,
                                       const struct postern_option *opts, size_t nopts, char *err, size_t errlen)
{
    struct lua_pending *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    if (!(p->setup = setup_new(cfg, opts, nopts))) {
        snprintf(err, errlen, "out of memory");
        lua_pending_free(p);
        return NULL;
    }
    if (read_file(s->path, &p->src, &p->len, err, errlen) < 0 ||
        check_source(s, p->setup, p->src, p->len, &p->stages, err, errlen) < 0) {
        lua_pending_free(p);
        return NULL;
    }
    return p;
}

void lua_script_commit(struct lua_script *s, struct lua_pending *p)
{
    pthread_mutex_lock(&s->lock);
    free(s->source);
    s->source = p->src;
    s->source_len = p->len;
    p->setup->older = s->setup;
    s->setup = p->setup;
    s->generation++;
    pthread_mutex_unlock(&s->lock);
    atomic_store(&s->stages, p->stages);
    free(p);
}

void lua_pending_free(struct lua_pending *p)
{
    if (p) {
        free(p->src);
        setup_free(p->setup);
    }
    free(p);
}

const char *lua_script_path(const struct lua_script *s) { return s->path; }
int lua_script_time_limit_ms(const struct lua_script *s)
{
    struct lua_script *w = (struct lua_script *)s;
    pthread_mutex_lock(&w->lock);
    int ms = w->setup->cfg->lua_time_limit_ms;
    pthread_mutex_unlock(&w->lock);
    return ms;
}

bool lua_script_wants(const struct lua_script *s, enum postern_stage st)
{
    return atomic_load(&((struct lua_script *)s)->stages) & (1u << st);
}

void lua_script_free(struct lua_script *s)
{
    if (!s)
        return;
    lua_loop_states_free(s);
    setup_free(s->setup);
    free(s->source);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* ---- one call's run (on a Lua thread) ------------------------------ */

/* Start handler number c->next in a fresh coroutine; false when none left. */
static bool start_handler(struct lua_call *c)
{
    lua_State *L = c->ls->L;
    lua_getfield(L, LUA_REGISTRYINDEX, "postern.handlers");
    bool found = lua_rawgeti(L, -1, c->stage + 1) == LUA_TTABLE && lua_rawgeti(L, -1, c->next) == LUA_TFUNCTION;
    if (!found) {
        lua_pop(L, 3);
        return false;
    }
    struct lstate *ls = c->ls;
    if (ls->spare_co) {                   /* the last handler's, finished normally */
        c->co = ls->spare_co;
        c->co_ref = ls->spare_ref;
        ls->spare_co = NULL;
    } else {
        c->co = lua_newthread(L);         /* stack: handlers, list, fn, co */
        c->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    *(struct lctx **)lua_getextraspace(c->co) = &c->ctx;
    lua_xmove(L, c->co, 1);               /* the function onto the coroutine */
    lua_pop(L, 2);
    c->ref = lua_newuserdatauv(c->co, sizeof *c->ref, 0);
    c->ref->t = c->t;
    luaL_setmetatable(c->co, TX_META);
    if (c->has_arg)
        lua_pushlstring(c->co, c->arg, c->len);
    ctx_init(&c->ctx, c->ls, c);
    return true;
}

/* Done with the handler's coroutine: one that returned normally is kept
 * for the state's next handler (a new coroutine per handler was a good
 * part of a short call's cost), any other is dropped. */
static void drop_coroutine(struct lua_call *c)
{
    if (!c->co)
        return;
    c->ref->t = NULL;   /* the handle dies with the call */
    struct lstate *ls = c->ls;
    if (!ls->spare_co && lua_status(c->co) == LUA_OK) {
        lua_settop(c->co, 0);
        ls->spare_co = c->co;
        ls->spare_ref = c->co_ref;
    } else {
        luaL_unref(ls->L, LUA_REGISTRYINDEX, c->co_ref);
    }
    c->co = NULL;
}

/* The finished handler's result as a verdict (and c->reply). */
static postern_verdict end_handler(struct lua_call *c, int status)
{
    lua_State *co = c->co;
    postern_verdict v = POSTERN_CONTINUE;
    if (status != LUA_OK) {
        const char *m = lua_tostring(co, -1);
        log_error("%s: lua: %s (message tempfailed)", c->qid, m ? m : "error");
        v = POSTERN_ERROR;
    } else if (lua_istable(co, -1)) {
        lua_getfield(co, -1, "verdict");
        v = (postern_verdict)lua_tointeger(co, -1);
        lua_getfield(co, -2, "reply");
        if (lua_isstring(co, -1))   /* one line only: no CR/LF smuggled into our replies */
            snprintf(c->reply, sizeof c->reply, "%.*s", (int)strcspn(lua_tostring(co, -1), "\r\n"),
                     lua_tostring(co, -1));
        if (v > POSTERN_ERROR || v < POSTERN_CONTINUE)
            v = POSTERN_ERROR;
    } else if (lua_gettop(co) > 0 && !lua_isnil(co, -1) &&
               !(lua_isinteger(co, -1) && lua_tointeger(co, -1) == POSTERN_CONTINUE)) {
        log_error("%s: lua: %s: a handler for %s returned a %s, not a verdict", c->qid, c->s->path,
                  lua_stage_names[c->stage], luaL_typename(co, -1));
        v = POSTERN_ERROR;
    }
    drop_coroutine(c);
    if (status == LUA_ERRMEM && thread_states[c->s->slot] == c->ls) {
        /* the state may be damaged: the next call builds a fresh one */
        thread_states[c->s->slot] = NULL;
        state_unref(c->ls);
    } else if (status == LUA_ERRMEM && c->ls->for_loop) {
        atomic_store(&c->ls->stale, true);
    }
    return v;
}

int lua_call_step(struct lua_call *c)
{
    if (!c->ls) {
        char err[512];
        c->next = 1;
        if (atomic_exchange(&c->s->loop_wanted, false))
            lua_loop_state_build(c->s);
        if (!(c->ls = current_state(c->s, err, sizeof err))) {
            log_error("%s: lua: %s", c->qid, err);
            c->v = POSTERN_ERROR;
            return 0;
        }
    }
    for (;;) {
        int nargs = 0;
        if (!c->co) {
            if (!start_handler(c)) {
                c->v = POSTERN_CONTINUE;
                return 0;
            }
            nargs = 1 + c->has_arg;
        }
        int nres = 0;
        slice_start(c->co, &c->ctx);
        int status = lua_resume(c->co, c->ls->L, nargs, &nres);
        slice_end(c->co, &c->ctx);
        if (status == LUA_YIELD)
            return c->waiting_dns ? 2 : 1;
        if (c->ctx.restart) {
            drop_coroutine(c);
            return 3;
        }
        c->v = end_handler(c, status);
        c->next++;
        if (c->v != POSTERN_CONTINUE)
            return 0;
    }
}

void lua_call_release(struct lua_call *c)
{
    dns_text_answer_free(c->dns);     /* an answer that came after the call was abandoned */
    c->dns = NULL;
    free(c->kv_value);
    c->kv_value = NULL;
    if (!c->ls)
        return;
    drop_coroutine(c);
    struct lstate *ls = c->ls;
    c->ls = NULL;
    if (ls->for_loop)
        atomic_store(&ls->lent, false);   /* the loop may use it again */
    state_unref(ls);
}
