/* lua_fast.c - the network loop's first try at a Lua call (posternd,
 * lua_loop_first).
 *
 * Handing a call to a Lua thread costs two thread hand-offs (a futex wake
 * there, an eventfd write back to the loop); for a short handler that is
 * most of what the call costs. So the loop first runs the call itself, in
 * a state of its own per script, for as long as that is safe: at most
 * LOOP_SLICE rounds of the count hook (HOOK_EVERY instructions each), and
 * nothing that can take long or change anything. Each function that could
 * (pattern matching, sorting, files, DNS and shared state, the tx methods
 * that change the message, tx.vars writes: see off_loop_wrap) is wrapped:
 * on the loop it yields instead, and a Lua thread resumes the coroutine in
 * the loop's state, which is lent to that thread until the call ends (the
 * loop sends that script's calls to the Lua threads meanwhile). From there
 * on the count hook and the watchdog hold the call as any other.
 *
 * Where the coroutine cannot yield (inside a metamethod that a C function
 * called, such as __tostring under tostring()), the loop's run ends with
 * an error pcall cannot catch and the call starts again from its first
 * handler on a Lua thread. That is safe because nothing the loop ran
 * changed anything outside the loop state's own globals (a postern.log
 * line is then written twice).
 *
 * The loop's state is built on a Lua thread (a script's top level may run
 * up to lua_time_limit), which hands it over in s->loop_ready. */
#include "lua_int.h"

/* ---- functions that leave the loop ---------------------------------- */

static int all_results(lua_State *L, int status, lua_KContext k)
{
    (void)status;
    (void)k;
    return lua_gettop(L);
}

/* The wrapped function (upvalue 1) on the arguments; also the
 * continuation when a Lua thread resumes the call. */
static int call_wrapped(lua_State *L, int status, lua_KContext k)
{
    (void)status;
    (void)k;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_callk(L, lua_gettop(L) - 1, LUA_MULTRET, 0, all_results);
    return lua_gettop(L);
}

/* Whether this call of the wrapped function must not run on the loop.
 * Upvalue 2, when set, is a prefix: only a first argument starting with
 * it leaves (postern.lookup's "file:" tables). */
static bool must_leave(lua_State *L)
{
    if (!ctx_of(L)->fast)
        return false;
    const char *prefix = lua_tostring(L, lua_upvalueindex(2));
    if (!prefix)
        return true;
    return lua_type(L, 1) == LUA_TSTRING && !strncmp(lua_tostring(L, 1), prefix, strlen(prefix));
}

int loop_restart(lua_State *L)
{
    struct lctx *c = ctx_of(L);
    c->restart = c->killed = true;     /* killed: every hook raises, pcall cannot catch it */
    return luaL_error(L, "call moved off the network loop");
}

static int off_loop(lua_State *L)
{
    if (!must_leave(L))
        return call_wrapped(L, LUA_OK, 0);
    if (lua_isyieldable(L))
        return lua_yieldk(L, 0, 0, call_wrapped);
    return loop_restart(L);
}

/* string.gmatch: making the iterator matches nothing, calling it does. */
static int gmatch_off_loop(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    lua_pushnil(L);
    lua_pushcclosure(L, off_loop, 2);
    return 1;
}

/* Table t's field name (a function) wrapped by off_loop. */
static void wrap_field(lua_State *L, int t, const char *name, const char *prefix)
{
    t = lua_absindex(L, t);
    if (lua_getfield(L, t, name) != LUA_TFUNCTION) {
        lua_pop(L, 1);
        return;
    }
    if (prefix)
        lua_pushstring(L, prefix);
    else
        lua_pushnil(L);
    lua_pushcclosure(L, off_loop, 2);
    lua_setfield(L, t, name);
}

static void wrap_fields(lua_State *L, int t, const char *const *names)
{
    for (; *names; names++)
        wrap_field(L, t, *names, NULL);
}

/* What a handler running on the loop must not do there. Everything not
 * named runs in time bounded by its arguments' size (itself bounded by
 * lua_memory_limit) and changes nothing outside the state. */
void off_loop_wrap(lua_State *L)
{
    /* matching backtracks; the table functions loop up to a length that
     * __len can make anything; print and warn write to a pipe that may be
     * full; os.date runs strftime over a format of any length */
    static const char *const strings[] = {"find", "match", "gsub", "rep", NULL};
    static const char *const tables[] = {"concat", "insert", "move", "remove", "sort", "unpack", NULL};
    static const char *const globals[] = {"collectgarbage", "require", "print", "warn", NULL};
    static const char *const postern[] = {"incr", "get", "set", "dns", "suspend", "throttle", "resume",
                                          "suspended", NULL};
    static const char *const tx[] = {"add_header", "insert_header", "change_header", "delete_header", "body",
                                     "parts", "replace_body", "add_recipient", "delete_recipient", "set_sender",
                                     "route", "archive", "quarantine", "require_tls", "spam_quarantine",
                                     "set_egress", "set_queue", NULL};
    lua_getglobal(L, "string");
    wrap_fields(L, -1, strings);
    lua_getfield(L, -1, "gmatch");
    lua_pushcclosure(L, gmatch_off_loop, 1);
    lua_setfield(L, -2, "gmatch");
    lua_getglobal(L, "table");
    wrap_fields(L, -1, tables);
    lua_getglobal(L, "postern");
    wrap_fields(L, -1, postern);
    wrap_field(L, -1, "lookup", "file:");
    lua_getglobal(L, "os");
    wrap_field(L, -1, "date", NULL);
    lua_pop(L, 4);
    lua_pushglobaltable(L);
    wrap_fields(L, -1, globals);
    lua_pop(L, 1);
    luaL_getmetatable(L, TX_META);
    lua_getfield(L, -1, "__index");
    lua_getupvalue(L, -1, 1);             /* tx_index's method table */
    wrap_fields(L, -1, tx);
    lua_pop(L, 3);
    luaL_getmetatable(L, VARS_META);
    wrap_field(L, -1, "__newindex", NULL);
    lua_pop(L, 1);
}

/* ---- the loop's states ---------------------------------------------- */

void lua_loop_state_build(struct lua_script *s)
{
    struct lstate *ls = calloc(1, sizeof *ls);
    if (!ls)
        return;
    ls->for_loop = true;
    char err[512];
    pthread_mutex_lock(&s->lock);
    int generation = s->generation;
    int rc = build_state(ls, s, s->setup, s->source, s->source_len, err, sizeof err);
    pthread_mutex_unlock(&s->lock);
    if (rc < 0) {      /* the thread's own state fails the same way, and says so */
        free(ls);
        return;
    }
    ls->generation = generation;
    atomic_init(&ls->refs, 1);
    struct lstate *old = atomic_exchange(&s->loop_ready, ls);
    if (old)
        state_unref(old);
}

/* The loop's state for s, or NULL when there is none to use now: then one
 * is asked for, or the one there is is lent to a Lua thread. */
static struct lstate *loop_state(struct lua_script *s)
{
    pthread_mutex_lock(&s->lock);
    int generation = s->generation;
    pthread_mutex_unlock(&s->lock);
    struct lstate *ls = s->loop_state;
    if (ls && (ls->generation != generation || atomic_load(&ls->stale))) {
        s->loop_state = NULL;    /* reloaded or damaged: freed once a Lua thread gives it back */
        state_unref(ls);
        ls = NULL;
    }
    if (!ls) {
        struct lstate *ready = atomic_exchange(&s->loop_ready, NULL);
        if (!ready || ready->generation != generation) {
            if (ready)
                state_unref(ready);
            atomic_store(&s->loop_wanted, true);
            return NULL;
        }
        s->loop_state = ls = ready;
    }
    return atomic_load(&ls->lent) ? NULL : ls;
}

void lua_loop_states_free(struct lua_script *s)
{
    if (s->loop_state)
        state_unref(s->loop_state);
    s->loop_state = NULL;
    struct lstate *ready = atomic_exchange(&s->loop_ready, NULL);
    if (ready)
        state_unref(ready);
}

/* ---- a call's first try --------------------------------------------- */

enum lua_fast_result lua_call_fast(struct lua_call *c)
{
    struct lstate *ls = loop_state(c->s);
    if (!ls)
        return LUA_FAST_NONE;
    atomic_fetch_add(&ls->refs, 1);
    c->ls = ls;
    c->next = 1;
    c->ctx.fast = true;
    int r = lua_call_step(c);      /* never 2: postern.dns and the shared state leave the loop first */
    c->ctx.fast = false;
    if (r == 1) {
        atomic_store(&ls->lent, true);
        return LUA_FAST_MOVE;
    }
    lua_call_release(c);
    if (r == 3) {
        c->ctx.restart = false;
        c->v = POSTERN_CONTINUE;
        c->reply[0] = '\0';
        return LUA_FAST_AGAIN;
    }
    return LUA_FAST_DONE;
}
