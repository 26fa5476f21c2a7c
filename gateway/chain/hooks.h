/* hooks.h - the hook chain: the links the config lists (C plugins, Lua
 * scripts; link.h), run per stage in that order. */
#ifndef POSTERN_HOOKS_H
#define POSTERN_HOOKS_H
#include "config.h"
#include "txn.h"

/* A chain is built from a config (C plugins loaded and initialised, Lua
 * scripts compiled) without touching the running one; installing it makes
 * it the chain of new transactions and switches the Lua scripts it
 * recompiled. The caller owns every chain and frees it when no
 * transaction runs under it any more. */
struct hook_chain;
struct hook_chain *hooks_build(const struct config *cfg, char *err, size_t errlen);
void hooks_install(struct hook_chain *ch);
void hooks_chain_free(struct hook_chain *ch);
struct hook_chain *hooks_current(void);
/* Build and install in one step (start-up, postern-milter, posternd -t);
 * hooks_unload frees the current chain and every Lua script (at exit). */
int hooks_load(const struct config *cfg, char *err, size_t errlen);
void hooks_unload(void);
/* Does t's chain (t->chain, else the current one) have a link for this stage? */
bool hooks_wanted(const txn_t *t, enum postern_stage st);
/* The transaction a C plugin callback on this thread is running for, or NULL. */
const txn_t *hooks_calling_txn(void);
/* Whether C links are running on the loop thread right now: host calls
 * that would block must not wait, but return POSTERN_WOULDBLOCK after
 * hooks_would_block() (the link is then called again on a worker). */
bool hooks_on_loop(void);
void hooks_would_block(void);
/* The same for a DNS answer not in the cache: posternd waits for it on the
 * loop (dns_fetch) and calls the link again, where a lookup that got no
 * answer is answered "no reply" (hooks_dns_failed). */
void hooks_would_block_dns(const char *name, int rrtype);
bool hooks_dns_failed(const char *name, int rrtype);
/* Loop runs waiting for a DNS answer (each ends within dns_timeout). */
int hooks_fetches_pending(void);
/* Run t's chain for a stage, then done(ctx, verdict) on the loop thread
 * (at once when nobody wants the stage, or when only Lua handlers run and
 * finish within their first slice). arg: HELO name, sender, recipient, or
 * body chunk (with len); it must stay valid until done() runs. On a
 * verdict other than CONTINUE, t->reply holds a complete SMTP reply line. */
typedef void (*hooks_done_fn)(void *ctx, postern_verdict v);
void hooks_run_async(enum postern_stage st, txn_t *t, const char *arg, size_t len, hooks_done_fn done,
                     void *ctx);

/* The same chain, run to the end on the calling thread (postern-milter). */
postern_verdict hooks_run_sync(enum postern_stage st, txn_t *t, const char *arg, size_t len);
/* Called by hooks_run_sync after every link it ran, with that link's
 * verdict (ERROR already turned into TEMPFAIL): `postern policy` traces a
 * run with it. One observer per process; NULL removes it. */
typedef void (*hooks_observer_fn)(void *ctx, enum postern_stage st, const char *link, postern_verdict v,
                                  const txn_t *t);
void hooks_set_observer(hooks_observer_fn fn, void *ctx);

const char *verdict_name(postern_verdict v);
const char *stage_name(enum postern_stage st);

#endif
