/* postern_lua.h - Lua 5.4 policies in the hook chain. A chain entry
 * "lua:PATH.lua" runs the handlers the script registered with
 * postern.on(stage, fn), on the Lua threads (lua_threads.c); the network
 * loop takes only a call's short first steps (lua_fast.c). */
#ifndef POSTERN_LUA_H
#define POSTERN_LUA_H
#include "config.h"
#include "txn.h"
#include <stdbool.h>

struct lua_script;

/* Run the script's handlers for a stage on a Lua thread (or, with
 * loop_first, first on the loop; then done may run before this returns);
 * done(ctx, v, reply) runs exactly once: on the loop thread when the Lua
 * threads were started with on_loop (posternd), otherwise on a Lua thread or the
 * watchdog (postern-milter). reply is "" or one SMTP reply line. A call
 * that has not finished within lua_time_limit + 1 s (stuck in one long C
 * call, say) is answered with POSTERN_ERROR and abandoned. arg is copied. */
typedef void (*lua_call_done_fn)(void *ctx, postern_verdict v, const char *reply);
void lua_call_submit(struct lua_script *s, txn_t *t, enum postern_stage st, const char *arg, size_t len,
                     lua_call_done_fn done, void *ctx);
/* nthreads Lua threads and their watchdog. With on_loop and loop_first,
 * the loop runs each call's first steps itself (lua_fast.c). 0, or -1
 * with errno. */
int lua_threads_start(int nthreads, bool on_loop, bool loop_first);
/* Calls submitted whose done() has not run yet. */
int lua_calls_pending(void);
/* Stop the threads (no call may be pending). false when a thread stuck in
 * a C call is still running: then scripts and config must stay allocated. */
bool lua_threads_stop(void);

/* Compile PATH in a sandboxed state (main thread) and keep its source.
 * opts: this script's "<name>.<key>" options. 0, or -1 with err set. */
int lua_script_load(const struct config *cfg, const char *path, const struct postern_option *opts, size_t nopts,
                    struct lua_script **out, char *err, size_t errlen);
/* Reload in two steps so a set of scripts switches all or nothing:
 * prepare re-reads and compiles the file with the new config and options
 * (the running version stays), commit makes every Lua thread switch to it
 * on its next call. */
struct lua_pending;
struct lua_pending *lua_script_prepare(struct lua_script *s, const struct config *cfg,
                                       const struct postern_option *opts, size_t nopts, char *err, size_t errlen);
/* The path the script was loaded from. */
const char *lua_script_path(const struct lua_script *s);
void lua_script_commit(struct lua_script *s, struct lua_pending *p);
void lua_pending_free(struct lua_pending *p);
bool lua_script_wants(const struct lua_script *s, enum postern_stage st);
void lua_script_free(struct lua_script *s);

#endif
