/* plugin_options.c - checking and documenting the options a plugin
 * declares (see plugin_options.h). The checks are the kind of each value,
 * never more than the plugin itself will check in init. */
#include "plugin_options.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static const char *const type_names[] = {"text", "number", "yes|no", "choice", "path"};

const struct postern_option_spec *plugin_option_table(const struct postern_plugin *p)
{
    if (p->struct_size < offsetof(struct postern_plugin, options) + sizeof p->options)
        return NULL;
    return p->options;
}

static const struct postern_option_spec *spec_of(const struct postern_option_spec *specs, const char *key)
{
    for (; specs->key; specs++)
        if (!strcmp(specs->key, key))
            return specs;
    return NULL;
}

static bool one_of(const char *choices, const char *value)
{
    size_t n = strlen(value);
    for (const char *c = choices; c && *c;) {
        size_t len = strcspn(c, "|");
        if (len == n && !strncmp(c, value, n))
            return true;
        c += len + (c[len] == '|');
    }
    return false;
}

/* What is wrong with value for spec, or NULL. */
static const char *bad_value(const struct postern_option_spec *spec, const char *value)
{
    char *end;
    switch (spec->type) {
    case POSTERN_OPT_NUMBER:
        strtol(value, &end, 10);
        return !*value || *end ? "expected a number" : NULL;
    case POSTERN_OPT_BOOL:
        return strcmp(value, "yes") && strcmp(value, "no") ? "expected yes or no" : NULL;
    case POSTERN_OPT_CHOICE:
        return one_of(spec->choices, value) ? NULL : "not one of the choices";
    case POSTERN_OPT_PATH:
        return value[0] == '/' || !strncmp(value, "file:/", 6) ? NULL : "expected an absolute path";
    case POSTERN_OPT_TEXT:
        return NULL;
    }
    return NULL;
}

static void known_keys(const struct postern_option_spec *specs, char *out, size_t size)
{
    size_t n = 0;
    out[0] = '\0';
    for (; specs->key && n + 1 < size; specs++) {
        int w = snprintf(out + n, size - n, "%s%s", n ? ", " : "", specs->key);
        if (w < 0 || (size_t)w >= size - n)
            break;
        n += (size_t)w;
    }
}

int plugin_options_check(const struct config *cfg, const char *name, const struct postern_option_spec *specs,
                         char *err, size_t errlen)
{
    for (size_t i = 0; i < cfg->nplugin_opts; i++) {
        const struct plugin_option *o = &cfg->plugin_opts[i];
        if (strcmp(o->plugin, name))
            continue;
        const struct postern_option_spec *spec = spec_of(specs, o->key);
        char known[600];
        if (!spec) {
            known_keys(specs, known, sizeof known);
            snprintf(err, errlen, "%s:%d: %s.%s: unknown option (known: %s)", cfg->path, o->line, name, o->key, known);
            return -1;
        }
        const char *why = bad_value(spec, o->value);
        if (why) {
            snprintf(err, errlen, "%s:%d: %s.%s = %s: %s%s%s", cfg->path, o->line, name, o->key, o->value, why,
                     spec->type == POSTERN_OPT_CHOICE ? " " : "", spec->type == POSTERN_OPT_CHOICE ? spec->choices : "");
            return -1;
        }
        for (size_t k = 0; !spec->repeat && k < i; k++)
            if (!strcmp(cfg->plugin_opts[k].plugin, name) && !strcmp(cfg->plugin_opts[k].key, o->key)) {
                snprintf(err, errlen, "%s:%d: %s.%s given twice (first at line %d)", cfg->path, o->line, name, o->key,
                         cfg->plugin_opts[k].line);
                return -1;
            }
    }
    return 0;
}

void plugin_options_document(FILE *out, const char *name, const struct postern_option_spec *specs)
{
    fprintf(out, "### %s\n\n| option | kind | default | meaning |\n|---|---|---|---|\n", name);
    for (; specs->key; specs++) {
        char kind[300] = "";
        const char *k = specs->type == POSTERN_OPT_CHOICE ? specs->choices : type_names[specs->type];
        for (size_t n = 0; *k && n + 3 < sizeof kind; k++) {     /* "|" inside a Markdown cell is "\|" */
            if (*k == '|')
                kind[n++] = '\\';
            kind[n++] = *k;
            kind[n] = '\0';
        }
        fprintf(out, "| `%s.%s` | %s%s | %s | %s |\n", name, specs->key, kind, specs->repeat ? ", repeats" : "",
                !specs->default_text ? "none" : !specs->default_text[0] ? "required" : specs->default_text, specs->doc);
    }
    fprintf(out, "\n");
}
