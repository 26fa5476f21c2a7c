/* lua_int.h - what the Lua binding's files share: postern_lua.c (states,
 * limits, loading, one call's run), lua_tx.c (the transaction object and
 * the variables proxies) and lua_module.c (the `postern` module); nothing
 * else includes it. */
#ifndef POSTERN_LUA_INT_H
#define POSTERN_LUA_INT_H
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
    /* the network loop's own state (lua_fast.c): built on a Lua thread
     * when the loop asks (loop_wanted), handed over in loop_ready */
    struct lstate *loop_state;   /* the loop thread's */
    _Atomic(struct lstate *) loop_ready;
    atomic_bool loop_wanted;
};

/* A script's state on one Lua thread. */
struct lstate {
    lua_State *L;
    int generation;
    struct lua_script *script;
    const struct script_setup *setup;   /* the options and config it was built with */
    size_t mem_used, mem_limit;
    atomic_int refs;             /* calls in flight, plus one while current */
    struct lctx main_ctx;        /* for loading the script */
    lua_State *spare_co;         /* a finished handler's coroutine, for the next one */
    int spare_ref;               /* its registry reference */
    bool for_loop;               /* the network loop's (lua_fast.c): its slow functions leave the loop */
    atomic_bool lent;            /* the loop's, resuming a moved call on a Lua thread */
    atomic_bool stale;           /* the loop's, damaged (out of memory): build another */
};

/* A handler's `tx`: the userdata holding the transaction while the call runs. */
struct txref {
    postern_txn *t;              /* NULL once the handler returned */
};

#define TX_META "postern.tx"
#define VARS_META "postern.vars"

/* the stage names handlers are registered by ("connect" ... "deliver") */
extern const char *const lua_stage_names[];

static inline struct lctx *ctx_of(lua_State *L) { return *(struct lctx **)lua_getextraspace(L); }
static inline struct lstate *state_of(lua_State *L) { return ctx_of(L)->ls; }

/* lua_tx.c */
extern const luaL_Reg tx_methods[];
int tx_index(lua_State *L);
int vars_index(lua_State *L);
int vars_newindex(lua_State *L);
void push_guarded(lua_State *L, lua_CFunction fn);
int ok(lua_State *L, int rc);
/* postern_lua.c */
int build_state(struct lstate *ls, struct lua_script *s, const struct script_setup *setup, const char *src,
                size_t len, char *err, size_t errlen);
void state_unref(struct lstate *ls);
/* lua_fast.c: in a state for the loop, wrap what must not run there */
void off_loop_wrap(lua_State *L);
/* On the loop where the call cannot yield: end the loop's run with an
 * error nothing catches, so a Lua thread runs the call again (c->restart). */
int loop_restart(lua_State *L);
/* lua_fast.c: at lua_script_free */
void lua_loop_states_free(struct lua_script *s);
/* lua_module.c */
extern const luaL_Reg postern_lib[];
/* lua_suspend.c: postern.suspend, throttle, resume, suspended */
extern const luaL_Reg postern_suspend_lib[];
int push_verdict(lua_State *L, postern_verdict v, const char *reply);
int check_declared(lua_State *L, const struct lua_script *s, const struct script_setup *u, char *err, size_t errlen);
int l_require(lua_State *L);

#endif
