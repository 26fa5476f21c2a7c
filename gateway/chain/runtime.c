/* runtime.c - configuration generations and reload (see runtime.h). A
 * reload is refused whole when the file has an error, when a plugin's init
 * or a script fails, or when it changes a key only a restart can change. */
#include "runtime.h"
#include "hooks.h"
#include "log.h"
#include "metrics.h"
#include <stdio.h>
#include <stdlib.h>

static struct runtime *current;
static void (*on_switch)(const struct config *cfg);

void runtime_init(struct config *cfg)
{
    current = calloc(1, sizeof *current);
    if (!current) {
        log_error("out of memory");
        exit(1);
    }
    current->cfg = *cfg;
    current->refs = 1;
    current->number = 1;
    metric_set(M_CONFIG_GENERATION, NULL, 1);
}

int runtime_load_chain(char *err, size_t errlen)
{
    if (hooks_load(&current->cfg, err, errlen) < 0)
        return -1;
    current->chain = hooks_current();
    return 0;
}

struct runtime *runtime_current(void) { return current; }

struct runtime *runtime_hold(void)
{
    current->refs++;
    return current;
}

struct runtime *runtime_ref(struct runtime *rt)
{
    rt->refs++;
    return rt;
}

static void runtime_free(struct runtime *rt)
{
    log_info("configuration generation %u released", rt->number);
    hooks_chain_free(rt->chain);
    config_free(&rt->cfg);
    free(rt);
}

void runtime_release(struct runtime *rt)
{
    if (rt && --rt->refs == 0)
        runtime_free(rt);
}

void runtime_on_switch(void (*fn)(const struct config *cfg)) { on_switch = fn; }

static int refused(void)
{
    metric_inc(M_RELOADS, "result=\"refused\"");
    return -1;
}

int runtime_reload(char *err, size_t errlen)
{
    struct runtime *next = calloc(1, sizeof *next);
    if (!next) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (config_reload(&current->cfg, &next->cfg, err, errlen) < 0) {
        free(next);
        return refused();
    }
    const char *restart = config_restart_key_changed(&current->cfg, &next->cfg);
    if (restart) {
        snprintf(err, errlen, "%s: %s changed; that takes a restart (nothing was reloaded)", current->cfg.path,
                 restart);
        config_free(&next->cfg);
        free(next);
        return refused();
    }
    if (!(next->chain = hooks_build(&next->cfg, err, errlen))) {
        config_free(&next->cfg);
        free(next);
        return refused();
    }
    hooks_install(next->chain);
    struct runtime *old = current;
    next->refs = 1;
    next->number = old->number + 1;
    current = next;
    if (on_switch)
        on_switch(&next->cfg);
    log_info("reload: configuration generation %u in use (%s); generation %u stays for %d session(s) and job(s) "
             "that started under it", next->number, next->cfg.path, old->number, old->refs - 1);
    metric_inc(M_RELOADS, "result=\"ok\"");
    metric_set(M_CONFIG_GENERATION, NULL, next->number);
    runtime_release(old);
    return 0;
}

void runtime_shutdown(void)
{
    if (current)
        runtime_release(current);
    current = NULL;
}
