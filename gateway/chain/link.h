/* link.h - one kind of hook-chain link behind a small ops table, so the
 * chain (hooks.c) runs C plugins and Lua scripts without naming either.
 * A link type either answers in place (call: a C plugin, run on the loop
 * or a worker) or through a callback (submit: a Lua script, run on its own
 * threads; the callback may also run before submit returns, when the loop
 * could answer at once).
 * link_types.c lists the types, as nginx's ngx_modules.c lists modules. */
#ifndef POSTERN_LINK_H
#define POSTERN_LINK_H
#include "config.h"
#include "txn.h"
#include <stdbool.h>
#include <stdint.h>

/* What loading one chain entry gives the chain. */
struct link_loaded {
    void *impl;              /* the type's own object for this entry */
    uint32_t nonblocking;    /* stages (POSTERN_NONBLOCKING bits) it never blocks in */
    uint32_t loop_first;     /* stages it blocks in only through host calls */
};

/* A submitted call's answer: reply is "" or one SMTP reply line. */
typedef void (*link_done_fn)(void *ctx, postern_verdict v, const char *reply);

struct link_ops {
    const char *kind;        /* "plugin", "lua": for messages */
    const char *prefix;      /* chain entries starting with this are this type; "" matches any */
    /* Load (or, for a type that keeps state across chains, prepare a new
     * version of) one entry with its "<name>.<key>" options. 0, or -1 with err. */
    int (*load)(const struct config *cfg, const char *entry, const struct postern_option *opts, size_t nopts,
                struct link_loaded *out, char *err, size_t errlen);
    bool (*wants)(const void *impl, enum postern_stage st);
    /* Exactly one of these two is set. */
    postern_verdict (*call)(void *impl, enum postern_stage st, txn_t *t, const char *arg, size_t len);
    void (*submit)(void *impl, enum postern_stage st, txn_t *t, const char *arg, size_t len, link_done_fn done,
                   void *ctx);
    /* Whether wants() can change without a new chain (a reloaded script). */
    bool wants_may_change;
    void (*install)(void *impl);   /* the chain was installed; may be NULL */
    void (*release)(void *impl);   /* the chain is freed */
    void (*unload_all)(void);      /* at exit: state kept across chains; may be NULL */
};

/* Every link type, most specific prefix first, NULL-terminated. */
extern const struct link_ops *const link_types[];
extern const struct link_ops plugin_link_ops, lua_link_ops;

#endif
