/* plugin_link.c - the C plugin link type: loads NAME.so from plugin_dir with
 * dlopen(RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE: plugins stay mapped after
 * dlclose, so sanitizer reports at exit can name them), checks its ABI
 * version and struct size, validates its declared options and calls its
 * init; then calls its stage callbacks in place. */
#include "link.h"
#include "plugin_options.h"
#include "plugin_host.h"
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct plugin_link {
    void *dl;
    const struct postern_plugin *p;   /* the plugin's own struct: only struct_size bytes of it exist */
    void *state;
};

static bool plugin_wants(const void *impl, enum postern_stage st)
{
    const struct postern_plugin *p = ((const struct plugin_link *)impl)->p;
    switch (st) {
    case POSTERN_STAGE_CONNECT: return p->on_connect;
    case POSTERN_STAGE_HELO: return p->on_helo;
    case POSTERN_STAGE_MAIL: return p->on_mail;
    case POSTERN_STAGE_RCPT: return p->on_rcpt;
    case POSTERN_STAGE_DATA: return p->on_data;
    case POSTERN_STAGE_BODY: return p->on_body;
    case POSTERN_STAGE_EOM: return p->on_eom;
    case POSTERN_STAGE_QUEUE: return p->on_queue;
    case POSTERN_STAGE_DELIVER: return p->on_deliver;
    }
    return false;
}

static postern_verdict plugin_call(void *impl, enum postern_stage st, txn_t *t, const char *arg, size_t len)
{
    const struct postern_plugin *p = ((struct plugin_link *)impl)->p;
    void *state = ((struct plugin_link *)impl)->state;
    switch (st) {
    case POSTERN_STAGE_CONNECT: return p->on_connect(t, state);
    case POSTERN_STAGE_HELO: return p->on_helo(t, arg, state);
    case POSTERN_STAGE_MAIL: return p->on_mail(t, arg, state);
    case POSTERN_STAGE_RCPT: return p->on_rcpt(t, arg, state);
    case POSTERN_STAGE_DATA: return p->on_data(t, state);
    case POSTERN_STAGE_BODY: return p->on_body(t, arg, len, state);
    case POSTERN_STAGE_EOM: return p->on_eom(t, state);
    case POSTERN_STAGE_QUEUE: return p->on_queue(t, state);
    case POSTERN_STAGE_DELIVER: return p->on_deliver(t, state);
    }
    return POSTERN_ERROR;
}

/* The plugin's struct from NAME.so, checked against this host's ABI. */
static int plugin_open(const struct config *cfg, const char *name, struct plugin_link *pl, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.so", cfg->plugin_dir, name);
    pl->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!pl->dl) {
        snprintf(err, errlen, "plugin %s: cannot load %s: %s", name, path, dlerror());
        return -1;
    }
    const struct postern_plugin *(*entry)(void);
    *(void **)&entry = dlsym(pl->dl, POSTERN_PLUGIN_ENTRY);
    if (!entry) {
        snprintf(err, errlen, "plugin %s: %s does not export %s()", name, path, POSTERN_PLUGIN_ENTRY);
        return -1;
    }
    if (!(pl->p = entry())) {
        snprintf(err, errlen, "plugin %s: %s() returned NULL", name, POSTERN_PLUGIN_ENTRY);
        return -1;
    }
    if (pl->p->abi_version != POSTERN_PLUGIN_ABI_VERSION) {
        snprintf(err, errlen, "plugin %s: built for plugin ABI version %u, this posternd speaks version %d",
                 name, pl->p->abi_version, POSTERN_PLUGIN_ABI_VERSION);
        return -1;
    }
    if (pl->p->struct_size < POSTERN_PLUGIN_MIN_SIZE) {
        snprintf(err, errlen, "plugin %s: plugin struct is %u bytes, expected at least %zu", name,
                 pl->p->struct_size, (size_t)POSTERN_PLUGIN_MIN_SIZE);
        return -1;
    }
    return 0;
}

/* For a failed init: " (OPTION at FILE:LINE, as user U)" naming the option
 * whose value (a file, say) the plugin's message quotes and who tried, so
 * a permission problem is found in one reading. "" when none is quoted. */
static void named_at(const struct config *cfg, const char *name, const char *perr, char *out, size_t size)
{
    out[0] = '\0';
    for (size_t i = 0; i < cfg->nplugin_opts; i++) {
        const struct plugin_option *o = &cfg->plugin_opts[i];
        if (strcmp(o->plugin, plugin_option_name(name)) || strlen(o->value) < 2 || !strstr(perr, o->value))
            continue;
        struct passwd *pw = getpwuid(geteuid());
        snprintf(out, size, " (%s.%s at %s:%d, as user %s)", o->plugin, o->key, cfg->path ? cfg->path : "?", o->line,
                 pw ? pw->pw_name : "?");
        return;
    }
}

static void plugin_release(void *impl)
{
    struct plugin_link *pl = impl;
    if (!pl)
        return;
    if (pl->p && pl->p->fini && pl->state)
        pl->p->fini(pl->state);
    if (pl->dl)
        dlclose(pl->dl);
    free(pl);
}

static int plugin_load(const struct config *cfg, const char *name, const struct postern_option *opts, size_t nopts,
                       struct link_loaded *out, char *err, size_t errlen)
{
    struct plugin_link *pl = calloc(1, sizeof *pl);
    if (!pl) {
        snprintf(err, errlen, "plugin %s: out of memory", name);
        return -1;
    }
    out->impl = pl;   /* released by the chain, also on failure */
    if (plugin_open(cfg, name, pl, err, errlen) < 0)
        return -1;
    /* appended fields exist only in plugins built against a newer header */
    if (pl->p->struct_size >= offsetof(struct postern_plugin, nonblocking_stages) + sizeof(uint32_t))
        out->nonblocking = pl->p->nonblocking_stages;
    if (pl->p->struct_size >= offsetof(struct postern_plugin, loop_first_stages) + sizeof(uint32_t))
        out->loop_first = pl->p->loop_first_stages;
    const struct postern_option_spec *specs = plugin_option_table(pl->p);
    if (specs && plugin_options_check(cfg, plugin_option_name(name), specs, err, errlen) < 0)
        return -1;
    char perr[512] = "";
    if (pl->p->init && pl->p->init(plugin_host(), opts, nopts, &pl->state, perr, sizeof perr) != 0) {
        char where[700];
        named_at(cfg, name, perr, where, sizeof where);
        snprintf(err, errlen, "plugin %s: %s%s", name, perr[0] ? perr : "init failed", where);
        return -1;
    }
    return 0;
}

const struct link_ops plugin_link_ops = {
    .kind = "plugin",
    .prefix = "",
    .load = plugin_load,
    .wants = plugin_wants,
    .call = plugin_call,
    .release = plugin_release,
};
