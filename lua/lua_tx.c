/* lua_tx.c - the transaction object handlers get (`tx:header()`,
 * `tx:add_recipient()`, `tx.vars` ...), each method a call of the plugin
 * host's table, and the variables proxies. */
#include "lua_int.h"

/* ---- the transaction object ---------------------------------------- */

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

void push_guarded(lua_State *L, lua_CFunction fn)
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
static int tx_stage(lua_State *L) { lua_pushstring(L, lua_stage_names[check_tx(L, 1)->stage]); return 1; }
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
int ok(lua_State *L, int rc) { lua_pushboolean(L, rc == 0); return 1; }

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
    bool whole_message = false, received = false;
    if (t->stage == POSTERN_STAGE_EOM && t->data_fd >= 0) {
        received = true;        /* the message being received: txn_body_pread */
        fd = t->data_fd;
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
    ssize_t r = received ? txn_body_pread(t, p, (size_t)len, 0) : pread(fd, p, (size_t)len, (off_t)off);
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

/* tx:set_egress(pool), tx:set_queue(name): DELIVER only, this attempt's
 * egress pool (or source) and named queue. */
static int tx_set_egress(lua_State *L)
{
    return ok(L, H()->set_egress(check_tx(L, 1), luaL_checkstring(L, 2)));
}

static int tx_set_queue(lua_State *L)
{
    return ok(L, H()->set_queue(check_tx(L, 1), luaL_checkstring(L, 2)));
}

/* tx:spam_quarantine(rcpt [, reason]): held for that recipient only. */
static int tx_spam_quarantine(lua_State *L)
{
    postern_txn *t = check_tx(L, 1);
    const char *rcpt = luaL_checkstring(L, 2);
    return ok(L, H()->rcpt_quarantine(t, rcpt, luaL_optstring(L, 3, "spam (policy)")));
}

/* tx:list(rcpt): "allow", "block" or nil, for this sender (the personal lists). */
static int tx_list(lua_State *L)
{
    postern_txn *t = check_tx(L, 1);
    int k = H()->rcpt_list(t, luaL_checkstring(L, 2));
    if (k == 'A' || k == 'B')
        lua_pushstring(L, k == 'A' ? "allow" : "block");
    else
        lua_pushnil(L);
    return 1;
}

static int tx_route(lua_State *L)
{
    postern_txn *t = check_tx(L, 1);
    const char *rcpt = luaL_checkstring(L, 2);
    return ok(L, H()->set_nexthop(t, rcpt, luaL_checkstring(L, 3)));
}


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

int vars_index(lua_State *L)
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

int vars_newindex(lua_State *L)
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

const luaL_Reg tx_methods[] = {
    {"client_addr", tx_client_addr}, {"helo", tx_helo}, {"tls", tx_tls}, {"auth_user", tx_auth_user},
    {"queue_id", tx_queue_id}, {"sender", tx_sender}, {"recipients", tx_recipients}, {"stage", tx_stage},
    {"size", tx_size}, {"header", tx_header}, {"headers", tx_headers}, {"add_header", tx_add_header},
    {"insert_header", tx_insert_header}, {"change_header", tx_change_header},
    {"delete_header", tx_delete_header}, {"body", tx_body}, {"parts", tx_parts}, {"replace_body", tx_replace_body},
    {"add_recipient", tx_add_recipient}, {"delete_recipient", tx_delete_recipient},
    {"set_sender", tx_set_sender}, {"route", tx_route}, {"archive", tx_archive},
    {"quarantine", tx_quarantine}, {"require_tls", tx_require_tls}, {"spam_quarantine", tx_spam_quarantine},
    {"list", tx_list}, {"set_egress", tx_set_egress}, {"set_queue", tx_set_queue},
    {NULL, NULL},
};

int tx_index(lua_State *L)
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

