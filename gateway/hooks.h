/* hooks.h - the hook chain: C plugins loaded from plugin_dir in the order
 * the config lists them, run per stage on a worker thread. */
#ifndef POSTERN_HOOKS_H
#define POSTERN_HOOKS_H
#include "config.h"
#include "txn.h"

int hooks_load(const struct config *cfg, char *err, size_t errlen);
void hooks_unload(void);
/* SIGHUP: recompile every Lua script; all switch, or none (the running set
 * stays and err says why). C plugins are not reloaded. */
int hooks_reload(char *err, size_t errlen);
/* Does any plugin in the chain have a callback for this stage? */
bool hooks_wanted(enum postern_stage st);
/* Run the chain for a stage, then done(ctx, verdict) on the loop thread
 * (at once when nobody wants the stage, or when only Lua handlers run and
 * finish within their first slice). arg: HELO name, sender, recipient, or
 * body chunk (with len); it must stay valid until done() runs. On a
 * verdict other than CONTINUE, t->reply holds a complete SMTP reply line. */
typedef void (*hooks_done_fn)(void *ctx, postern_verdict v);
void hooks_run_async(enum postern_stage st, txn_t *t, const char *arg, size_t len, hooks_done_fn done,
                     void *ctx);

/* The same chain, run to the end on the calling thread (postern-milter). */
postern_verdict hooks_run_sync(enum postern_stage st, txn_t *t, const char *arg, size_t len);

const char *verdict_name(postern_verdict v);
const char *stage_name(enum postern_stage st);

#endif
