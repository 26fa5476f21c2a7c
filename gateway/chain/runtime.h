/* runtime.h - the running configuration and plugin chain, one generation
 * at a time. Sessions and delivery work hold the generation they started
 * under; a reload builds the next one beside it (the new config parsed and
 * checked, its C plugins initialised, its Lua scripts compiled) and only
 * then switches new work to it. An old generation is freed when its last
 * holder lets go. Loop thread only. */
#ifndef POSTERN_RUNTIME_H
#define POSTERN_RUNTIME_H
#include "config.h"

struct hook_chain;
struct runtime {
    struct config cfg;
    struct hook_chain *chain;
    int refs;                  /* holders, plus one while current */
    unsigned number;           /* 1 at start, +1 per reload */
};

/* Generation 1 from a loaded config (moved in: the caller must not free
 * it), and its chain (after privileges are dropped). */
void runtime_init(struct config *cfg);
int runtime_load_chain(char *err, size_t errlen);
struct runtime *runtime_current(void);
struct runtime *runtime_hold(void);             /* the current one, +1 */
struct runtime *runtime_ref(struct runtime *rt);  /* this one, +1 */
void runtime_release(struct runtime *rt);
/* Called with the new config after each switch, for modules that read it. */
void runtime_on_switch(void (*fn)(const struct config *cfg));
/* Re-read the config file: 0 when the new generation took over, -1 with err
 * when it was refused (the running one stays, untouched). */
int runtime_reload(char *err, size_t errlen);
/* At exit: free the current generation (older ones are gone once their
 * holders are). */
void runtime_shutdown(void);

#endif
