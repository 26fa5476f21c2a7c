/* lua_module.c - the `postern` module scripts see: verdicts, `postern.on`,
 * logging, options, file lookups, DNS and the shared key-value store (both
 * yield the coroutine while the answer is out), and a sandboxed require. */
#include "lua_int.h"

/* ---- the postern module -------------------------------------------- */

int push_verdict(lua_State *L, postern_verdict v, const char *reply)
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
        if (!strcmp(stage, lua_stage_names[i]))
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
int check_declared(lua_State *L, const struct lua_script *s, const struct script_setup *u, char *err,
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
int l_require(lua_State *L)
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

const luaL_Reg postern_lib[] = {
    {"on", l_on}, {"log", l_log}, {"option", l_option}, {"options", l_options}, {"lookup", l_lookup}, {"incr", l_incr}, {"get", l_get}, {"set", l_set}, {"dns", l_dns},
    {"ACCEPT", l_accept}, {"REJECT", l_reject}, {"TEMPFAIL", l_tempfail}, {"DISCARD", l_discard},
    {"QUARANTINE", l_quarantine}, {NULL, NULL},
};

