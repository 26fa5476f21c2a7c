/* plugin_options.h - a plugin's declared options (postern_plugin.h's
 * postern_option_spec): checked against the configuration before init,
 * and printed as documentation. */
#ifndef POSTERN_PLUGIN_OPTIONS_H
#define POSTERN_PLUGIN_OPTIONS_H
#include "config.h"
#include "postern_plugin.h"
#include <stdio.h>

/* The table of p, or NULL when its struct predates 0.11 or it declares none. */
const struct postern_option_spec *plugin_option_table(const struct postern_plugin *p);
/* Every "<name>.<key>" option of cfg against specs: 0, or -1 with err
 * naming file:line, the option and what is wrong. */
int plugin_options_check(const struct config *cfg, const char *name, const struct postern_option_spec *specs,
                         char *err, size_t errlen);
/* The table as a Markdown section: "### name", then key | kind | default | meaning. */
void plugin_options_document(FILE *out, const char *name, const struct postern_option_spec *specs);

#endif
