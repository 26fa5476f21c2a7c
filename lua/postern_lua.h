/* postern_lua.h - Lua 5.4 policies in the hook chain. A chain entry
 * "lua:PATH.lua" runs the handlers the script registered with
 * postern.on(stage, fn), on the network loop thread, as time-sliced
 * coroutines (see postern_lua.c). */
#ifndef POSTERN_LUA_H
#define POSTERN_LUA_H
#include "config.h"
#include "txn.h"
#include <stdbool.h>

struct lua_script;

/* Run the script's handlers for a stage (loop thread). Returns 0 with *v
 * set when done, or 1 when a handler gave the loop back: call
 * lua_run_resume(*run) later (ev_soon) until it returns 0. */
struct lua_run;
int lua_run_start(struct lua_script *s, txn_t *t, enum postern_stage st, const char *arg, size_t len,
                  struct lua_run **run, postern_verdict *v);
int lua_run_resume(struct lua_run *run, postern_verdict *v);

/* Compile PATH in a sandboxed state (main thread) and keep its source.
 * opts: this script's "<name>.<key>" options. 0, or -1 with err set. */
int lua_script_load(const struct config *cfg, const char *path, const struct postern_option *opts, size_t nopts,
                    struct lua_script **out, char *err, size_t errlen);
/* Reload in two steps so a set of scripts switches all or nothing:
 * prepare re-reads and compiles the file (the running version stays),
 * commit makes every worker switch to it on its next call. */
struct lua_pending;
struct lua_pending *lua_script_prepare(struct lua_script *s, char *err, size_t errlen);
void lua_script_commit(struct lua_script *s, struct lua_pending *p);
void lua_pending_free(struct lua_pending *p);
bool lua_script_wants(const struct lua_script *s, enum postern_stage st);
void lua_script_free(struct lua_script *s);
/* Close the Lua states (shutdown). */
void lua_states_close(void);

#endif
