/* lua_suspend.c - back-off from scripts (issue 38): postern.suspend,
 * postern.throttle, postern.resume and postern.suspended act on the same
 * suspensions as the backoff table and `postern queue suspend|throttle|
 * resume` (gateway/core/suspend.c), from any handler:
 *
 *   postern.suspend(kind, name, duration [, reason])
 *   postern.throttle(kind, name, per_minute, duration [, reason])
 *   postern.resume(kind, name)        -> true if it was suspended or throttled
 *   postern.suspended(kind, name)     -> the unix time it ends, or nil
 *
 * kind is "destination", "source", "queue" or "provider" (throttle:
 * destination or provider); duration is seconds or a text such as "5m"
 * (at most 7 days; a script cannot suspend for ever). Each change is
 * logged with the script's name. They write the spool's `suspended` file,
 * so a handler on the loop moves to a Lua thread first (lua_fast.c). */
#include "lua_int.h"
#include "config.h"
#include "suspend.h"

#define SCRIPT_MAX_SECONDS (7 * 86400)

static enum suspend_kind check_kind(lua_State *L, int arg)
{
    enum suspend_kind k;
    if (suspend_kind_parse(luaL_checkstring(L, arg), &k) < 0)
        luaL_argerror(L, arg, "expected \"destination\", \"source\", \"queue\" or \"provider\"");
    return k;
}

static const char *check_name(lua_State *L, int arg)
{
    size_t len;
    const char *name = luaL_checklstring(L, arg, &len);
    luaL_argcheck(L, len > 0 && len < 256 && strlen(name) == len && !strpbrk(name, " \t\r\n"), arg,
                  "a name of 1-255 characters without blanks");
    return name;
}

/* A duration argument: seconds, or a text such as "5m". */
static long check_duration(lua_State *L, int arg)
{
    long secs = lua_type(L, arg) == LUA_TNUMBER ? (long)luaL_checkinteger(L, arg)
                                                : parse_duration(luaL_checkstring(L, arg));
    luaL_argcheck(L, secs >= 1 && secs <= SCRIPT_MAX_SECONDS, arg, "a duration of 1 second to 7 days");
    return secs;
}

/* "by script PATH[: reason]", for the listing and the log. */
static void reason_of(lua_State *L, int arg, char *out, size_t size)
{
    const char *why = luaL_optstring(L, arg, NULL), *path = state_of(L)->script->path;
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    snprintf(out, size, "by script %.80s%s%.150s", base, why ? ": " : "", why ? why : "");
}

static int l_suspend(lua_State *L)
{
    enum suspend_kind k = check_kind(L, 1);
    const char *name = check_name(L, 2);
    long secs = check_duration(L, 3);
    char reason[256];
    reason_of(L, 4, reason, sizeof reason);
    int rc = suspend_set(k, name, (int64_t)time(NULL) + secs, reason);
    if (rc < 0)
        return luaL_error(L, "postern.suspend: too many suspensions (%d)", SUSPEND_MAX);
    if (rc == 1)
        log_warn("%s %s suspended for %lds %s", suspend_kind_name(k), name, secs, reason);
    return 0;
}

static int l_throttle(lua_State *L)
{
    enum suspend_kind k = check_kind(L, 1);
    luaL_argcheck(L, k == SUSPEND_DESTINATION || k == SUSPEND_PROVIDER, 1, "only a destination or provider");
    const char *name = check_name(L, 2);
    lua_Integer rate = luaL_checkinteger(L, 3);
    luaL_argcheck(L, rate >= 1 && rate <= THROTTLE_MAX_RATE, 3, "1 to 60000 messages a minute");
    long secs = check_duration(L, 4);
    char reason[256];
    reason_of(L, 5, reason, sizeof reason);
    int rc = throttle_set(k, name, (int)rate, (int64_t)time(NULL) + secs, reason);
    if (rc < 0)
        return luaL_error(L, "postern.throttle: too many suspensions (%d)", SUSPEND_MAX);
    if (rc == 1)
        log_warn("%s %s throttled to %d/min for %lds %s", suspend_kind_name(k), name, (int)rate, secs, reason);
    return 0;
}

static int l_resume(lua_State *L)
{
    enum suspend_kind k = check_kind(L, 1);
    const char *name = check_name(L, 2);
    bool had = suspend_clear(k, name);
    if (had)
        log_info("%s %s resumed by script %s", suspend_kind_name(k), name, state_of(L)->script->path);
    lua_pushboolean(L, had);
    return 1;
}

static int l_suspended(lua_State *L)
{
    enum suspend_kind k = check_kind(L, 1);
    int64_t until = suspend_until(k, check_name(L, 2), (int64_t)time(NULL));
    if (until)
        lua_pushinteger(L, until == SUSPEND_FOREVER ? LUA_MAXINTEGER : (lua_Integer)until);
    else
        lua_pushnil(L);
    return 1;
}

const luaL_Reg postern_suspend_lib[] = {
    {"suspend", l_suspend}, {"throttle", l_throttle}, {"resume", l_resume}, {"suspended", l_suspended}, {NULL, NULL},
};
