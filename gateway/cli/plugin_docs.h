/* plugin_docs.h - `postern plugin-options DIR`: the options every plugin in
 * DIR declares, as Markdown (postern-plugins(5) is made from it). */
#ifndef POSTERN_PLUGIN_DOCS_H
#define POSTERN_PLUGIN_DOCS_H

/* The exit code: 0, or 1 when a plugin could not be loaded. */
int plugin_docs_command(const char *dir);

#endif
