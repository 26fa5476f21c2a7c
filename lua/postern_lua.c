/* postern_lua.c - the Lua binding: sandboxed states, the `postern` module
 * (postern_lib), the transaction object (tx_methods), the variables proxies
 * (var_meta), and one call's run (lua_call_step).
 *
 * Handlers run on the Lua threads (lua_threads.c), never on the network
 * loop. Each thread has its own state per script (Lua states are not
 * thread-safe) and runs each call as a coroutine: the count hook yields
 * every LUA_SLICE instructions so the thread can serve other calls, and
 * ends a call over its instruction or time limit. Memory is limited per
 * state. A script error is logged with script:line and tempfails the
 * message. A reload builds new states; an old one goes when its last
 * suspended call ends. */
#include "postern_lua.h"
#include "lua_call.h"
#include "log.h"
#include "plugin_host.h"
#include "dns.h"
#include "kv.h"
#include "mime.h"
#include "spool.h"
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_SCRIPTS 32
#define HOOK_EVERY 1000          /* instructions between limit checks */
#define LUA_SLICE 20             /* hook rounds (x HOOK_EVERY instructions) per slice */

extern const char postern_helpers_lua[];   /* lua/postern_helpers.lua, embedded */

static const char *stage_names[] = {"connect", "helo", "mail", "rcpt", "data", "body", "eom", "queue", "deliver"};

/* What a script runs with: its options and the config its lookups and
 * limits come from. Immutable once published. A reload publishes a new one
 * and keeps the older ones (a state built from one may still be running a
 * call) until the script is freed. */
struct script_setup {
    const struct config *cfg;
    struct postern_option *opts;
    size_t nopts;
    struct script_setup *older;
};

struct lua_script {
    char path[1024];
    char dir[1024];              /* require() looks only here */
    int slot;                    /* index into each thread's state cache */
    pthread_mutex_t lock;        /* guards source, setup and generation */
    struct script_setup *setup;
    char *source;
    size_t source_len;
    int generation;
    atomic_uint stages;          /* bit per stage with a handler */
};

/* A script's state on one Lua thread. */
struct lstate {
    lua_State *L;
    int generation;
    struct lua_script *script;
    const struct script_setup *setup;   /* the options and config it was built with */
    size_t mem_used, mem_limit;
    int refs;                    /* calls in flight, plus one while current */
    struct lctx main_ctx;        /* for loading the script */
};

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

static struct lctx *ctx_of(lua_State *L) { return *(struct lctx **)lua_getextraspace(L); }
static struct lstate *state_of(lua_State *L) { return ctx_of(L)->ls; }

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
    if (c->elapsed_us + us_since(&c->slice_start) > (long)c->time_limit_ms * 1000) {
        c->killed = true;
        luaL_error(L, "time limit exceeded (%d ms)", c->time_limit_ms);
    }
    /* give the loop back to other sessions; resumed after them */
    if (--c->slice_left <= 0 && lua_isyieldable(L))
        lua_yield(L, 0);
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

/* Before each (re)entry into a call. */
static void slice_start(lua_State *L, struct lctx *c)
{
    c->slice_left = LUA_SLICE;
    clock_gettime(CLOCK_MONOTONIC, &c->slice_start);
    lua_sethook(L, limit_hook, LUA_MASKCOUNT, HOOK_EVERY);
}

static void slice_end(lua_State *L, struct lctx *c)
{
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

/* ---- the transaction object ---------------------------------------- */

struct txref {
    postern_txn *t;              /* NULL once the handler returned */
};

#define TX_META "postern.tx"
#define VARS_META "postern.vars"

static postern_txn *check_tx(lua_State *L, int idx)
{
    struct txref *r = luaL_checkudata(L, idx, TX_META);
    if (!r->t)
        luaL_error(L, "transaction handle used outside its handler");
    return r->t;
}

static const struct postern_host *H(void) { return plugin_host(); }

/* Every tx method and variables access runs through here (upvalue 1 is
 * the real function). It holds the call's lock while the method uses the
 * transaction, so the watchdog cannot give the transaction back to the
 * loop halfway through one; once it has, methods raise instead. */
static int guarded(lua_State *L)
{
    struct lua_call *c = ctx_of(L)->call;
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    if (!c)
        return luaL_error(L, "transaction handle used outside its handler");
    pthread_mutex_lock(&c->lock);
    if (atomic_load(&c->abandoned)) {
        pthread_mutex_unlock(&c->lock);
        return luaL_error(L, "call ended: over its limit");
    }
    int status = lua_pcall(L, n, LUA_MULTRET, 0);
    pthread_mutex_unlock(&c->lock);
    if (status != LUA_OK)
        return lua_error(L);
    return lua_gettop(L);
}

static void push_guarded(lua_State *L, lua_CFunction fn)
{
    lua_pushcfunction(L, fn);
    lua_pushcclosure(L, guarded, 1);
}

static int tx_client_addr(lua_State *L) { lua_pushstring(L, H()->client_addr(check_tx(L, 1))); return 1; }
static int tx_helo(lua_State *L) { lua_pushstring(L, H()->helo_name(check_tx(L, 1))); return 1; }
static int tx_tls(lua_State *L) { lua_pushboolean(L, H()->tls_active(check_tx(L, 1))); return 1; }
static int tx_auth_user(lua_State *L) { lua_pushstring(L, H()->auth_user(check_tx(L, 1))); return 1; }  /* NULL: nil */
static int tx_queue_id(lua_State *L) { lua_pushstring(L, H()->queue_id(check_tx(L, 1))); return 1; }
static int tx_sender(lua_State *L) { lua_pushstring(L, H()->sender(check_tx(L, 1))); return 1; }
static int tx_stage(lua_State *L) { lua_pushstring(L, stage_names[check_tx(L, 1)->stage]); return 1; }
static int tx_size(lua_State *L) { lua_pushinteger(L, (lua_Integer)H()->message_size(check_tx(L, 1))); return 1; }

static int tx_recipients(lua_State *L)
{
    postern_txn *t = check_tx(L, 1);
    size_t n = H()->rcpt_count(t);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushstring(L, H()->rcpt(t, i));
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static int tx_header(lua_State *L)
{
    postern_txn *t = check_tx(L, 1);
    lua_Integer nth = luaL_optinteger(L, 3, 1);
    const char *v = nth >= 1 ? H()->header_get(t, luaL_checkstring(L, 2), (size_t)(nth - 1)) : NULL;
    if (!v)
        return lua_pushnil(L), 1;
    while (*v == ' ' || *v == '\t')   /* the value as people read it */
        v++;
    lua_pushstring(L, v);
    return 1;
}

static int tx_headers(lua_State *L)
{
    postern_txn *t = check_tx(L, 1);
    size_t n = H()->header_count(t);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        const char *name, *value;
        H()->header_at(t, i, &name, &value);
        lua_createtable(L, 0, 2);
        lua_pushstring(L, name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, value);
        lua_setfield(L, -2, "value");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* A mutation's result as a Lua boolean. */
static int ok(lua_State *L, int rc) { lua_pushboolean(L, rc == 0); return 1; }

static const char *with_space(lua_State *L, int idx)
{
    /* header values get the customary space after the colon */
    const char *v = luaL_checkstring(L, idx);
    if (*v == ' ' || *v == '\t' || !*v)
        return v;
    lua_pushfstring(L, " %s", v);
    lua_replace(L, idx);
    return lua_tostring(L, idx);
}

static int tx_add_header(lua_State *L)
{
    postern_txn *t = check_tx(L, 1);
    const char *name = luaL_checkstring(L, 2);
    return ok(L, H()->header_add(t, name, with_space(L, 3)));
}

static int tx_insert_header(lua_State *L)
{
    postern_txn *t = check_tx(L, 1);
    lua_Integer i = luaL_checkinteger(L, 2);
    const char *name = luaL_checkstring(L, 3);
    return ok(L, i < 1 ? -1 : H()->header_insert(t, (size_t)(i - 1), name, with_space(L, 4)));
}

static int tx_change_header(lua_State *L)
{
    postern_txn *t = check_tx(L, 1);
    const char *name = luaL_checkstring(L, 2);
    const char *value = with_space(L, 3);
    lua_Integer nth = luaL_optinteger(L, 4, 1);
    return ok(L, nth < 1 ? -1 : H()->header_change(t, name, (size_t)(nth - 1), value));
}

static int tx_delete_header(lua_State *L)
{
    postern_txn *t = check_tx(L, 1);
    lua_Integer nth = luaL_optinteger(L, 3, 1);
    return ok(L, nth < 1 ? -1 : H()->header_delete(t, luaL_checkstring(L, 2), (size_t)(nth - 1)));
}

/* tx:parts([text_limit]): the MIME leaves, each {type, charset, filename,
 * encoding, size (decoded), text (text parts, decoded, at most
 * text_limit bytes), truncated}. nil when the body is over lua_body_limit. */
struct parts_ctx {
    lua_State *L;
    size_t text_limit;
    lua_Integer n;
};

static void set_field(lua_State *L, const char *key, const char *value)
{
    lua_pushstring(L, value);
    lua_setfield(L, -2, key);
}

static void push_part(void *arg, const struct mime_part *p)
{
    static const char *const encodings[] = {"identity", "base64", "quoted-printable"};
    struct parts_ctx *c = arg;
    lua_State *L = c->L;
    lua_createtable(L, 0, 7);
    set_field(L, "type", p->type);
    set_field(L, "charset", p->charset);
    set_field(L, "filename", p->filename);
    set_field(L, "encoding", encodings[p->encoding]);
    size_t size = mime_decode(p, NULL, 0);
    lua_pushinteger(L, (lua_Integer)size);
    lua_setfield(L, -2, "size");
    if (!strncmp(p->type, "text/", 5)) {
        size_t n = size < c->text_limit ? size : c->text_limit;
        luaL_Buffer b;
        char *out = luaL_buffinitsize(L, &b, n ? n : 1);
        mime_decode(p, out, n);
        luaL_pushresultsize(&b, n);
        lua_setfield(L, -2, "text");
        lua_pushboolean(L, size > n);
        lua_setfield(L, -2, "truncated");
    }
    lua_rawseti(L, -2, ++c->n);
}

static int tx_body(lua_State *L);

static int tx_parts(lua_State *L)
{
    postern_txn *t = check_tx(L, 1);
    lua_Integer limit = luaL_optinteger(L, 2, 65536);
    luaL_argcheck(L, limit >= 0 && limit <= (lua_Integer)(64u << 20), 2, "text limit between 0 and 64 MiB");
    lua_settop(L, 1);
    tx_body(L);                    /* the body as a string (on the stack while we walk it), or nil */
    if (lua_isnil(L, -1))
        return 1;
    size_t len;
    const char *body = lua_tolstring(L, -1, &len);
    struct parts_ctx c = {.L = L, .text_limit = (size_t)limit};
    lua_newtable(L);
    mime_walk(H()->header_get(t, "Content-Type", 0), H()->header_get(t, "Content-Disposition", 0),
              H()->header_get(t, "Content-Transfer-Encoding", 0), body, len, push_part, &c);
    return 1;
}

/* The body (after the header section), for messages up to lua_body_limit. */
static int tx_body(lua_State *L)
{
    postern_txn *t = check_tx(L, 1);
    size_t limit = state_of(L)->setup->cfg->lua_body_limit;
    if (t->body_replaced) {
        lua_pushlstring(L, buf_head(&t->new_body), t->new_body.len);
        return 1;
    }
    int fd = -1;
    uint64_t off = 0, len = 0;
    bool whole_message = false;
    if (t->stage == POSTERN_STAGE_EOM && t->data_fd >= 0) {
        fd = t->data_fd;
        off = t->body_start;
        len = t->body_len;
    } else if (t->stage == POSTERN_STAGE_QUEUE || t->stage == POSTERN_STAGE_DELIVER) {
        fd = spool_open_message(t->qid);
        off = t->body_off;
        len = t->stored_len;
        whole_message = true;
    }
    if (fd < 0 || len > limit + (whole_message ? 1024 * 1024 : 0))
        return lua_pushnil(L), 1;
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, (size_t)len);
    ssize_t r = pread(fd, p, (size_t)len, (off_t)off);
    if (whole_message)
        close(fd);
    if (r < 0)
        return luaL_error(L, "cannot read the message: %s", strerror(errno));
    size_t start = 0;
    if (whole_message) {
        char *end = memmem(p, (size_t)r, "\r\n\r\n", 4);
        start = end ? (size_t)(end - p) + 4 : (size_t)r;
        if ((size_t)r - start > limit)
            return lua_pushnil(L), 1;
    }
    luaL_pushresultsize(&b, (size_t)r);
    if (start) {
        lua_pushstring(L, lua_tostring(L, -1) + start);
        lua_remove(L, -2);
    }
    return 1;
}

static int tx_replace_body(lua_State *L)
{
    postern_txn *t = check_tx(L, 1);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    return ok(L, H()->body_replace(t, s, n));
}

static int tx_add_recipient(lua_State *L) { postern_txn *t = check_tx(L, 1); return ok(L, H()->rcpt_add(t, luaL_checkstring(L, 2))); }
static int tx_delete_recipient(lua_State *L) { postern_txn *t = check_tx(L, 1); return ok(L, H()->rcpt_delete(t, luaL_checkstring(L, 2))); }
static int tx_set_sender(lua_State *L) { postern_txn *t = check_tx(L, 1); return ok(L, H()->sender_change(t, luaL_checkstring(L, 2))); }
static int tx_archive(lua_State *L) { return ok(L, H()->request_archive(check_tx(L, 1))); }

static int tx_require_tls(lua_State *L)
{
    postern_txn *t = check_tx(L, 1);
    const char *rcpt = luaL_checkstring(L, 2);
    return ok(L, H()->require_tls(t, rcpt, luaL_optstring(L, 3, "encrypt")));
}

static int tx_route(lua_State *L)
{
    postern_txn *t = check_tx(L, 1);
    const char *rcpt = luaL_checkstring(L, 2);
    return ok(L, H()->set_nexthop(t, rcpt, luaL_checkstring(L, 3)));
}

static int push_verdict(lua_State *L, postern_verdict v, const char *reply);

static int tx_quarantine(lua_State *L)
{
    check_tx(L, 1);
    return push_verdict(L, POSTERN_QUARANTINE, luaL_optstring(L, 2, "quarantined by policy"));
}

/* tx.vars and tx.session: proxies onto C-side variable maps, so every
 * worker's state sees the same values. */
struct varsref {
    int session;
};

static struct varmap *vars_of(lua_State *L)
{
    struct varsref *v = luaL_checkudata(L, 1, VARS_META);
    lua_getiuservalue(L, 1, 1);          /* the tx userdata */
    postern_txn *t = check_tx(L, -1);
    lua_pop(L, 1);
    if (v->session && !t->session_vars)
        luaL_error(L, "tx.session is only there during the SMTP session (not at queue or deliver)");
    return v->session ? t->session_vars : &t->vars;
}

static int vars_index(lua_State *L)
{
    struct varmap *m = vars_of(L);
    const struct var *v = varmap_get(m, luaL_checkstring(L, 2));
    if (!v || v->type == VAR_NIL)
        lua_pushnil(L);
    else if (v->type == VAR_BOOL)
        lua_pushboolean(L, v->num != 0);
    else if (v->type == VAR_NUMBER && v->num == (double)(lua_Integer)v->num)
        lua_pushinteger(L, (lua_Integer)v->num);   /* 1 stays 1, not 1.0 */
    else if (v->type == VAR_NUMBER)
        lua_pushnumber(L, v->num);
    else
        lua_pushstring(L, v->str);
    return 1;
}

static int vars_newindex(lua_State *L)
{
    struct varmap *m = vars_of(L);
    const char *key = luaL_checkstring(L, 2);
    int rc;
    switch (lua_type(L, 3)) {
    case LUA_TNIL: rc = varmap_set(m, key, VAR_NIL, 0, NULL); break;
    case LUA_TBOOLEAN: rc = varmap_set(m, key, VAR_BOOL, lua_toboolean(L, 3), NULL); break;
    case LUA_TNUMBER: rc = varmap_set(m, key, VAR_NUMBER, lua_tonumber(L, 3), NULL); break;
    case LUA_TSTRING: rc = varmap_set(m, key, VAR_STRING, 0, lua_tostring(L, 3)); break;
    default: return luaL_error(L, "tx variables hold strings, numbers and booleans, not %s", luaL_typename(L, 3));
    }
    if (rc < 0)
        return luaL_error(L, "tx variables: out of memory or over the limit (%d variables, %d bytes)",
                          VARMAP_MAX_VARS, VARMAP_MAX_BYTES);
    return 0;
}

static const luaL_Reg tx_methods[] = {
    {"client_addr", tx_client_addr}, {"helo", tx_helo}, {"tls", tx_tls}, {"auth_user", tx_auth_user},
    {"queue_id", tx_queue_id}, {"sender", tx_sender}, {"recipients", tx_recipients}, {"stage", tx_stage},
    {"size", tx_size}, {"header", tx_header}, {"headers", tx_headers}, {"add_header", tx_add_header},
    {"insert_header", tx_insert_header}, {"change_header", tx_change_header},
    {"delete_header", tx_delete_header}, {"body", tx_body}, {"parts", tx_parts}, {"replace_body", tx_replace_body},
    {"add_recipient", tx_add_recipient}, {"delete_recipient", tx_delete_recipient},
    {"set_sender", tx_set_sender}, {"route", tx_route}, {"archive", tx_archive},
    {"quarantine", tx_quarantine}, {"require_tls", tx_require_tls}, {NULL, NULL},
};

static int tx_index(lua_State *L)
{
    const char *key = luaL_checkstring(L, 2);
    if (!strcmp(key, "vars") || !strcmp(key, "session")) {
        check_tx(L, 1);
        struct varsref *v = lua_newuserdatauv(L, sizeof *v, 1);
        v->session = key[0] == 's';
        lua_pushvalue(L, 1);
        lua_setiuservalue(L, -2, 1);
        luaL_setmetatable(L, VARS_META);
        return 1;
    }
    lua_getfield(L, lua_upvalueindex(1), key);
    return 1;
}

/* ---- the postern module -------------------------------------------- */

static int push_verdict(lua_State *L, postern_verdict v, const char *reply)
{
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, v);
    lua_setfield(L, -2, "verdict");
    if (reply) {
        lua_pushstring(L, reply);
        lua_setfield(L, -2, "reply");
    }
    return 1;
}

/* REJECT([status [, text [, code]]]) -> "550 5.7.1 text" */
static int refusal(lua_State *L, postern_verdict v, const char *status, int code)
{
    status = luaL_optstring(L, 1, status);
    const char *text = luaL_optstring(L, 2, "Rejected by policy");
    code = (int)luaL_optinteger(L, 3, code);
    if (code < 400 || code > 599 || (v == POSTERN_REJECT) != (code >= 500) || status[0] != (char)('0' + code / 100))
        return luaL_error(L, "reply code %d and status %s do not fit this verdict", code, status);
    char reply[512];
    snprintf(reply, sizeof reply, "%d %s %s", code, status, text);
    return push_verdict(L, v, reply);
}

static int l_reject(lua_State *L) { return refusal(L, POSTERN_REJECT, "5.7.1", 550); }
static int l_tempfail(lua_State *L) { return refusal(L, POSTERN_TEMPFAIL, "4.7.1", 451); }
static int l_accept(lua_State *L) { return push_verdict(L, POSTERN_ACCEPT, NULL); }
static int l_discard(lua_State *L) { return push_verdict(L, POSTERN_DISCARD, NULL); }
static int l_quarantine(lua_State *L) { return push_verdict(L, POSTERN_QUARANTINE, luaL_optstring(L, 1, "quarantined by policy")); }

static int l_on(lua_State *L)
{
    const char *stage = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    int st = -1;
    for (int i = 0; i < 9; i++)
        if (!strcmp(stage, stage_names[i]))
            st = i;
    if (st < 0)
        return luaL_error(L, "postern.on: unknown stage '%s'", stage);
    lua_getfield(L, LUA_REGISTRYINDEX, "postern.handlers");
    if (lua_rawgeti(L, -1, st + 1) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_rawseti(L, -3, st + 1);
    }
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    return 0;
}

static int l_log(lua_State *L)
{
    const char *level = luaL_checkstring(L, 1);
    const char *msg = luaL_checkstring(L, 2);
    int named = log_level_parse(!strcmp(level, "warn") ? "warning" : level);   /* "warn" too; else info */
    enum log_level lv = named < 0 ? LOG_LVL_INFO : (enum log_level)named;
    lua_Debug ar;
    int line = lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar) ? ar.currentline : 0;
    const struct lua_call *c = ctx_of(L)->call;      /* NULL at the top level */
    char ids[64];
    log_ids(ids, sizeof ids, c ? c->sid : 0, c ? c->qid : "");
    log_msg(lv, "%slua: %s:%d: %s", ids, state_of(L)->script->path, line, msg);
    return 0;
}

/* postern.options{ key = "string" | "number" | "boolean" | "file", ... }:
 * the options the script takes ("?" after the type: optional). Once
 * declared, an option in the config the script does not declare, a
 * missing required one, or a value of the wrong type stops start-up (and a
 * reload), and postern.option() of an undeclared key is an error. */
static int l_options(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    if (ctx_of(L)->call)
        return luaL_error(L, "postern.options: only at the top level of the script");
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        const char *type = lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
        size_t n = strcspn(type, "?");
        if (!((n == 6 && !strncmp(type, "string", 6)) || (n == 6 && !strncmp(type, "number", 6)) ||
              (n == 7 && !strncmp(type, "boolean", 7)) || (n == 4 && !strncmp(type, "file", 4))) ||
            (type[n] && strcmp(type + n, "?")))
            return luaL_error(L, "postern.options: each entry is name = \"string|number|boolean|file\" (\"?\" = optional)");
        lua_pop(L, 1);
    }
    lua_pushvalue(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "postern.declared");
    return 0;
}

static bool value_has_type(const char *v, const char *type)
{
    if (!strncmp(type, "number", 6)) {
        char *end;
        strtod(v, &end);
        return *v && !*end;
    }
    if (!strncmp(type, "boolean", 7))
        return !strcmp(v, "yes") || !strcmp(v, "no") || !strcmp(v, "true") || !strcmp(v, "false");
    if (!strncmp(type, "file", 4))
        return access(!strncmp(v, "file:", 5) ? v + 5 : v, R_OK) == 0;
    return true;
}

static int option_error(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int option_error(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* Each configured option is declared and of its type. The declaration
 * table is on top of L's stack. */
static int check_given(lua_State *L, const char *path, int blen, const char *base, const struct script_setup *u,
                       char *err, size_t errlen)
{
    for (size_t i = 0; i < u->nopts; i++) {
        const struct postern_option *o = &u->opts[i];
        int declared = lua_getfield(L, -1, o->key) == LUA_TSTRING;
        const char *type = declared ? lua_tostring(L, -1) : "";
        bool ok = declared && value_has_type(o->value, type);
        int rc = ok ? 0 : !declared
            ? option_error(err, errlen, "%s: option '%.*s.%s' is not one the script declares in postern.options",
                           path, blen, base, o->key)
            : option_error(err, errlen, "%s: option '%.*s.%s = %s': expected %.*s%s", path, blen, base, o->key,
                           o->value, (int)strcspn(type, "?"), type,
                           !strncmp(type, "file", 4) ? " (a file the daemon's user can read)" : "");
        lua_pop(L, 1);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Each required declared option is configured. */
static int check_required(lua_State *L, const char *path, int blen, const char *base, const struct script_setup *u,
                          char *err, size_t errlen)
{
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        const char *key = lua_tostring(L, -2), *type = lua_tostring(L, -1);
        bool given = false;
        for (size_t i = 0; i < u->nopts; i++)
            given |= !strcmp(u->opts[i].key, key);
        if (!given && !strchr(type, '?')) {
            lua_pop(L, 2);
            return option_error(err, errlen, "%s: option '%.*s.%s' (%s) is required", path, blen, base, key, type);
        }
        lua_pop(L, 1);
    }
    return 0;
}

/* After the top level: the configured options against the declaration. */
static int check_declared(lua_State *L, const struct lua_script *s, const struct script_setup *u, char *err,
                          size_t errlen)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, "postern.declared") != LUA_TTABLE) {
        lua_pop(L, 1);
        return 0;
    }
    const char *base = strrchr(s->path, '/') ? strrchr(s->path, '/') + 1 : s->path;
    int blen = (int)strcspn(base, ".");
    int rc = check_given(L, s->path, blen, base, u, err, errlen);
    if (rc == 0)
        rc = check_required(L, s->path, blen, base, u, err, errlen);
    lua_pop(L, 1);
    return rc;
}

static int l_option(lua_State *L)
{
    const struct script_setup *s = state_of(L)->setup;
    const char *key = luaL_checkstring(L, 1);
    if (lua_getfield(L, LUA_REGISTRYINDEX, "postern.declared") == LUA_TTABLE &&
        lua_getfield(L, -1, key) == LUA_TNIL)
        return luaL_error(L, "postern.option: '%s' is not declared in postern.options", key);
    for (size_t i = 0; i < s->nopts; i++)
        if (!strcmp(s->opts[i].key, key))
            return lua_pushstring(L, s->opts[i].value), 1;
    lua_pushnil(L);
    return 1;
}

/* lookup in a "key value" table file (the main config's table format),
 * cached per state until the next reload. */
static int file_lookup(lua_State *L, const char *path, const char *key)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "postern.tables");
    if (lua_getfield(L, -1, path) != LUA_TTABLE) {
        lua_pop(L, 1);
        FILE *f = fopen(path, "r");
        if (!f)
            return luaL_error(L, "postern.lookup: cannot open %s", path);
        lua_newtable(L);
        char line[1024];
        while (fgets(line, sizeof line, f)) {
            line[strcspn(line, "#\r\n")] = '\0';
            char *k = line + strspn(line, " \t");
            if (!*k)
                continue;
            char *v = k + strcspn(k, " \t");
            if (*v)
                *v++ = '\0';
            v += strspn(v, " \t");
            for (char *p = k; *p; p++)
                *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
            lua_pushstring(L, *v ? v : "true");
            lua_setfield(L, -2, k);
        }
        fclose(f);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, path);
    }
    char lower[512];
    snprintf(lower, sizeof lower, "%s", key);
    for (char *p = lower; *p; p++)
        *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    lua_getfield(L, -1, lower);
    return 1;
}

/* A script may read a table it was given as one of its options (as
 * "file:PATH" or PATH), or one in its own directory - never, say,
 * /etc/shadow, whoever runs it. */
static bool lookup_allowed(const struct lstate *ls, const char *path)
{
    const struct lua_script *s = ls->script;
    for (size_t i = 0; i < ls->setup->nopts; i++) {
        const char *v = ls->setup->opts[i].value;
        if (!strcmp(v, path) || (!strncmp(v, "file:", 5) && !strcmp(v + 5, path)))
            return true;
    }
    char real[PATH_MAX], dir[PATH_MAX];
    if (!realpath(path, real) || !realpath(s->dir, dir))
        return false;
    size_t n = strlen(dir);
    return !strncmp(real, dir, n) && real[n] == '/';
}

/* postern.lookup(table, key): "relay_domains", "trusted_networks",
 * "transport", or "file:PATH" - the tables the main config uses. */
static int l_lookup(lua_State *L)
{
    const struct config *cfg = state_of(L)->setup->cfg;
    const char *table = luaL_checkstring(L, 1);
    const char *key = luaL_checkstring(L, 2);
    if (!strcmp(table, "relay_domains")) {
        lua_pushboolean(L, config_is_relay_domain(cfg, key));
    } else if (!strcmp(table, "trusted_networks")) {
        struct sockaddr_storage ss;
        socklen_t len;
        char hp[80];
        snprintf(hp, sizeof hp, strchr(key, ':') ? "[%s]:1" : "%s:1", key);
        lua_pushboolean(L, hostport_parse(hp, &ss, &len) == 0 && config_is_trusted(cfg, (struct sockaddr *)&ss));
    } else if (!strcmp(table, "transport")) {
        const struct nexthop *h = config_transport_for(cfg, key);
        h ? (void)lua_pushstring(L, h->text) : lua_pushnil(L);
    } else if (!strncmp(table, "file:", 5)) {
        if (!lookup_allowed(state_of(L), table + 5))
            return luaL_error(L, "postern.lookup: %s is neither one of this script's options nor in its directory",
                              table + 5);
        return file_lookup(L, table + 5, key);
    } else {
        return luaL_error(L, "postern.lookup: unknown table '%s'", table);
    }
    return 1;
}

/* postern.dns(name[, type]): the records as text, {} when there are none,
 * or nil and an error for a failed lookup. The coroutine yields while the
 * answer comes; the Lua thread serves other calls meanwhile. */
#define LUA_DNS_MAX 16           /* lookups per call */

static void dns_answered(void *arg, struct dns_text_answer *a)
{
    struct lua_call *call = arg;
    call->dns = a;
    lua_call_wake(call);
}

static int dns_continue(lua_State *L, int status, lua_KContext k)
{
    (void)status;
    (void)k;
    struct lua_call *call = ctx_of(L)->call;
    call->waiting_dns = false;
    struct dns_text_answer *a = call->dns;
    call->dns = NULL;
    if (!a || a->status < 0) {
        dns_text_answer_free(a);
        lua_pushnil(L);
        lua_pushstring(L, "DNS lookup failed");
        return 2;
    }
    lua_createtable(L, (int)a->n, 0);
    for (size_t i = 0; i < a->n; i++) {
        lua_pushstring(L, a->rr[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    dns_text_answer_free(a);
    return 1;
}

static int l_dns(lua_State *L)
{
    static const char *const names[] = {"A", "AAAA", "MX", "TXT", "PTR", NULL};
    static const int types[] = {1, 28, 15, 16, 12};
    const char *name = luaL_checkstring(L, 1);
    int type = types[luaL_checkoption(L, 2, "A", names)];
    struct lctx *c = ctx_of(L);
    if (!c->call || !lua_isyieldable(L))
        return luaL_error(L, "postern.dns: only inside a handler");
    if (++c->call->dns_lookups > LUA_DNS_MAX)
        return luaL_error(L, "postern.dns: more than %d lookups in one call", LUA_DNS_MAX);
    c->used += HOOK_EVERY;         /* a lookup costs instructions too */
    c->call->waiting_dns = true;
    if (dns_lookup_text(name, type, dns_answered, c->call) < 0) {
        c->call->waiting_dns = false;
        lua_pushnil(L);
        lua_pushstring(L, "DNS lookup could not start");
        return 2;
    }
    return lua_yieldk(L, 0, 0, dns_continue);
}

/* postern.incr(key, window), postern.get(key), postern.set(key, value[, ttl]):
 * state shared by every script, session and (with redis_server) node
 * (gateway/core/kv.c). A counter starts at its first incr and goes when its
 * window ends; a value goes after ttl seconds (0 = kept). Shared, the call
 * yields until Redis answers, as postern.dns does; when Redis cannot
 * answer, redis_failure = open answers from this node's own state and
 * tempfail raises an error (the message tempfails). Keys are "lua:"+key. */
static void kv_answered(void *arg, const struct kv_answer *a)
{
    struct lua_call *call = arg;
    call->kv_status = a->status;
    call->kv_n = a->n;
    free(call->kv_value);
    call->kv_value = a->value ? strdup(a->value) : NULL;
    lua_call_wake(call);
}

/* Push what a kv operation answered: incr the count, get the value or
 * nil, set true. */
static int kv_push(lua_State *L, char op, int status, long long n, const char *value)
{
    if (status < 0)
        return luaL_error(L, "postern.%s: the shared state (redis_server) did not answer",
                          op == 'i' ? "incr" : op == 'g' ? "get" : "set");
    if (op == 'i')
        lua_pushinteger(L, (lua_Integer)n);
    else if (op == 'g' && value)
        lua_pushstring(L, value);
    else if (op == 'g')
        lua_pushnil(L);
    else
        lua_pushboolean(L, 1);
    return 1;
}

static int kv_continue(lua_State *L, int status, lua_KContext k)
{
    (void)status;
    struct lua_call *call = ctx_of(L)->call;
    call->waiting_dns = false;
    int n = kv_push(L, (char)k, call->kv_status, call->kv_n, call->kv_value);
    free(call->kv_value);
    call->kv_value = NULL;
    return n;
}

/* Answered at once (local) into *a, or yields for Redis. */
struct kv_inline {
    bool done;
    int status;
    long long n;
    char value[KV_VALUE_MAX];
    bool found;
};

static void kv_inline_answer(void *arg, const struct kv_answer *a)
{
    struct kv_inline *r = arg;
    r->done = true;
    r->status = a->status;
    r->n = a->n;
    r->found = a->value != NULL;
    if (a->value)
        snprintf(r->value, sizeof r->value, "%s", a->value);
}

static int kv_call(lua_State *L, char op, const char *key, const char *value, lua_Integer seconds)
{
    char k[KV_KEY_MAX];
    if (strlen(key) + 4 >= sizeof k)
        return luaL_error(L, "postern: key longer than %d bytes", KV_KEY_MAX - 5);
    snprintf(k, sizeof k, "lua:%s", key);
    struct lctx *c = ctx_of(L);
    if (!kv_shared()) {
        struct kv_inline r = {0};
        int rc = op == 'i' ? kv_incr(k, (long)seconds, kv_inline_answer, &r)
                 : op == 'g' ? kv_get(k, kv_inline_answer, &r) : kv_set(k, value, (long)seconds, kv_inline_answer, &r);
        if (rc < 0 || !r.done)
            return luaL_error(L, "postern: bad key or value");
        return kv_push(L, op, r.status, r.n, r.found ? r.value : NULL);
    }
    if (!c->call || !lua_isyieldable(L))
        return luaL_error(L, "postern.%s: only inside a handler", op == 'i' ? "incr" : op == 'g' ? "get" : "set");
    c->used += HOOK_EVERY;         /* a round trip costs instructions too */
    c->call->waiting_dns = true;
    int rc = op == 'i' ? kv_incr(k, (long)seconds, kv_answered, c->call)
             : op == 'g' ? kv_get(k, kv_answered, c->call) : kv_set(k, value, (long)seconds, kv_answered, c->call);
    if (rc < 0) {
        c->call->waiting_dns = false;
        return luaL_error(L, "postern: bad key or value");
    }
    return lua_yieldk(L, 0, (lua_KContext)op, kv_continue);
}

static int l_incr(lua_State *L)
{
    const char *key = luaL_checkstring(L, 1);
    lua_Integer window = luaL_checkinteger(L, 2);
    luaL_argcheck(L, window > 0, 2, "window must be positive seconds");
    return kv_call(L, 'i', key, NULL, window);
}

static int l_get(lua_State *L) { return kv_call(L, 'g', luaL_checkstring(L, 1), NULL, 0); }

static int l_set(lua_State *L)
{
    const char *key = luaL_checkstring(L, 1);
    const char *value = luaL_checkstring(L, 2);
    lua_Integer ttl = luaL_optinteger(L, 3, 0);
    luaL_argcheck(L, ttl >= 0, 3, "ttl must be 0 (kept) or positive seconds");
    luaL_argcheck(L, strlen(value) < KV_VALUE_MAX, 2, "value too long");
    return kv_call(L, 's', key, value, ttl);
}

/* require(name): modules only from the script's own directory. */
static int l_require(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return luaL_error(L, "require: '%s' is not a plain module name (only policies/NAME.lua)", name);
    lua_getfield(L, LUA_REGISTRYINDEX, "postern.modules");
    if (lua_getfield(L, -1, name) != LUA_TNIL)
        return 1;
    char path[1200];
    snprintf(path, sizeof path, "%s/%s.lua", state_of(L)->script->dir, name);
    if (luaL_loadfilex(L, path, "t") != LUA_OK)
        return lua_error(L);
    lua_call(L, 0, 1);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, -4, name);
    return 1;
}

static const luaL_Reg postern_lib[] = {
    {"on", l_on}, {"log", l_log}, {"option", l_option}, {"options", l_options}, {"lookup", l_lookup}, {"incr", l_incr}, {"get", l_get}, {"set", l_set}, {"dns", l_dns},
    {"ACCEPT", l_accept}, {"REJECT", l_reject}, {"TEMPFAIL", l_tempfail}, {"DISCARD", l_discard},
    {"QUARANTINE", l_quarantine}, {NULL, NULL},
};

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
    luaL_newlib(L, postern_lib);
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
static int build_state(struct lstate *ls, struct lua_script *s, const struct script_setup *setup, const char *src,
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

static void state_unref(struct lstate *ls)
{
    if (--ls->refs == 0) {
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
        ls->refs++;
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
    ls->refs = 2;            /* current, and this call */
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
    c->co = lua_newthread(L);             /* stack: handlers, list, fn, co */
    *(struct lctx **)lua_getextraspace(c->co) = &c->ctx;
    c->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
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

static void drop_coroutine(struct lua_call *c)
{
    if (!c->co)
        return;
    c->ref->t = NULL;   /* the handle dies with the call */
    luaL_unref(c->ls->L, LUA_REGISTRYINDEX, c->co_ref);
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
                  stage_names[c->stage], luaL_typename(co, -1));
        v = POSTERN_ERROR;
    }
    drop_coroutine(c);
    if (status == LUA_ERRMEM && thread_states[c->s->slot] == c->ls) {
        /* the state may be damaged: the next call builds a fresh one */
        thread_states[c->s->slot] = NULL;
        state_unref(c->ls);
    }
    return v;
}

int lua_call_step(struct lua_call *c)
{
    if (!c->ls) {
        char err[512];
        c->next = 1;
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
    state_unref(c->ls);
    c->ls = NULL;
}
