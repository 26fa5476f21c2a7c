/* plugin_docs.c - `postern plugin-options DIR`: loads each DIR/NAME.so in
 * name order, as posternd would, and prints the option table it declares
 * (plugin_options.c); a plugin without one is named as such. And for
 * check-config, the defaults of the options a configured plugin was not
 * given. */
#include "plugin_docs.h"
#include "plugin_options.h"
#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The plugin at path (kept mapped), or NULL with the reason on stderr. */
static const struct postern_plugin *plugin_at(const char *path)
{
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    const struct postern_plugin *(*entry)(void) = NULL;
    if (dl)
        *(void **)&entry = dlsym(dl, POSTERN_PLUGIN_ENTRY);
    const struct postern_plugin *p = entry ? entry() : NULL;
    if (!p || p->abi_version != POSTERN_PLUGIN_ABI_VERSION) {
        fprintf(stderr, "postern: %s: %s\n", path, dl ? "not a plugin of this ABI" : dlerror());
        return NULL;
    }
    return p;
}

static int document_one(const char *dir, const char *file)
{
    char path[4096], name[256];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    snprintf(name, sizeof name, "%.*s", (int)(strlen(file) - 3), file);
    const struct postern_plugin *p = plugin_at(path);
    if (!p)
        return 1;
    const struct postern_option_spec *specs = plugin_option_table(p);
    if (specs)
        plugin_options_document(stdout, name, specs);
    else
        printf("### %s\n\n(declares no option table: it checks its options itself)\n\n", name);
    return 0;
}

int plugin_docs_command(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "postern: %s: cannot open\n", dir);
        return 1;
    }
    char *names[256];
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < sizeof names / sizeof *names) {
        size_t len = strlen(de->d_name);
        if (len > 3 && !strcmp(de->d_name + len - 3, ".so"))
            names[n++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_names);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        rc |= document_one(dir, names[i]);
        free(names[i]);
    }
    return rc;
}

int plugin_defaults_print(const struct config *cfg, FILE *out)
{
    int rc = 0;
    for (size_t i = 0; i < cfg->nplugins; i++) {
        if (!strncmp(cfg->plugins[i], "lua:", 4))
            continue;                   /* a script's options are its own */
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.so", cfg->plugin_dir, cfg->plugins[i]);
        const struct postern_plugin *p = plugin_at(path);
        const struct postern_option_spec *specs = p ? plugin_option_table(p) : NULL;
        rc |= !p;
        for (size_t k = 0; specs && specs[k].key; k++)
            if (!config_plugin_option(cfg, cfg->plugins[i], specs[k].key))
                fprintf(out, "# %s.%s = %s\n", cfg->plugins[i], specs[k].key,
                        specs[k].default_text && specs[k].default_text[0] ? specs[k].default_text : "(not set)");
    }
    return rc;
}
