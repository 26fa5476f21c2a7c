/* plugin_docs.h - `postern plugin-options DIR`: the options every plugin in
 * DIR declares, as Markdown (postern-plugins(5) is made from it). */
#ifndef POSTERN_PLUGIN_DOCS_H
#define POSTERN_PLUGIN_DOCS_H
#include "config.h"
#include <stdio.h>

/* The exit code: 0, or 1 when a plugin could not be loaded. */
int plugin_docs_command(const char *dir);
/* check-config: for each configured C plugin, every option it declares
 * and was not given, as a comment line "# name.key = default". 0, or 1
 * when a plugin could not be loaded (posternd -t then says why). */
int plugin_defaults_print(const struct config *cfg, FILE *out);

#endif
