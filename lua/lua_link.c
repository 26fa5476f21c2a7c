/* lua_link.c - the Lua link type: a chain entry "lua:PATH" runs the handlers
 * the script registered, on the Lua threads. Scripts outlive chains (each
 * Lua thread keeps a state per script): a chain built by a reload
 * recompiles a script it already knows beside the running version, and
 * installing that chain switches to it. */
#include "link.h"
#include "postern_lua.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every Lua script loaded, by path. */
#define MAX_LUA_SCRIPTS 32
static struct lua_script *scripts[MAX_LUA_SCRIPTS];
static size_t nscripts;

struct lua_link {
    struct lua_script *script;
    struct lua_pending *pending;   /* a built chain's new version, until installed */
};

static struct lua_script *script_named(const char *path)
{
    for (size_t i = 0; i < nscripts; i++)
        if (!strcmp(lua_script_path(scripts[i]), path))
            return scripts[i];
    return NULL;
}

static int lua_link_load(const struct config *cfg, const char *entry, const struct postern_option *opts,
                         size_t nopts, struct link_loaded *out, char *err, size_t errlen)
{
    struct lua_link *ll = calloc(1, sizeof *ll);
    if (!ll) {
        snprintf(err, errlen, "%s: out of memory", entry);
        return -1;
    }
    out->impl = ll;   /* released by the chain, also on failure */
    const char *path = entry + strlen(lua_link_ops.prefix);
    char e[900] = "";
    if ((ll->script = script_named(path))) {
        if (!(ll->pending = lua_script_prepare(ll->script, cfg, opts, nopts, e, sizeof e))) {
            snprintf(err, errlen, "%s: %s", entry, e[0] ? e : "out of memory");
            return -1;
        }
        return 0;
    }
    if (nscripts == MAX_LUA_SCRIPTS || lua_script_load(cfg, path, opts, nopts, &ll->script, e, sizeof e) < 0) {
        snprintf(err, errlen, "%s: %s", entry, e[0] ? e : "too many Lua scripts");
        return -1;
    }
    scripts[nscripts++] = ll->script;
    return 0;
}

static bool lua_link_wants(const void *impl, enum postern_stage st)
{
    return lua_script_wants(((const struct lua_link *)impl)->script, st);
}

static void lua_link_submit(void *impl, enum postern_stage st, txn_t *t, const char *arg, size_t len,
                            link_done_fn done, void *ctx)
{
    lua_call_submit(((struct lua_link *)impl)->script, t, st, arg, len, done, ctx);
}

static void lua_link_install(void *impl)
{
    struct lua_link *ll = impl;
    if (ll->pending) {
        lua_script_commit(ll->script, ll->pending);
        ll->pending = NULL;
    }
}

static void lua_link_release(void *impl)
{
    struct lua_link *ll = impl;
    if (!ll)
        return;
    lua_pending_free(ll->pending);
    free(ll);
}

static void lua_link_unload_all(void)
{
    for (size_t i = 0; i < nscripts; i++)
        lua_script_free(scripts[i]);
    nscripts = 0;
}

const struct link_ops lua_link_ops = {
    .kind = "lua",
    .prefix = "lua:",
    .load = lua_link_load,
    .wants = lua_link_wants,
    .submit = lua_link_submit,
    .wants_may_change = true,
    .install = lua_link_install,
    .release = lua_link_release,
    .unload_all = lua_link_unload_all,
};
