/* postern_lua.h - Lua 5.4 policies in the hook chain. A chain entry
 * "lua:PATH.lua" becomes a link whose callbacks run the handlers the script
 * registered with postern.on(stage, fn). Each worker thread has its own
 * lua_State per script (Lua states are not thread-safe); a reload swaps the
 * source and every worker rebuilds its state on its next call. */
#ifndef POSTERN_LUA_H
#define POSTERN_LUA_H
#include "config.h"
#include "txn.h"
#include <stdbool.h>

struct lua_script;

/* The plugin struct every Lua link uses (its state is a lua_script). */
const struct postern_plugin *lua_plugin(void);

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
/* Close this thread's Lua states (a worker thread is exiting). */
void lua_thread_cleanup(void);

#endif
