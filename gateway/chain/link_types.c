/* link_types.c - the link types a chain entry can name, most specific
 * prefix first: "lua:PATH" is a Lua script, anything else a C plugin. */
#include "link.h"
#include <stddef.h>

const struct link_ops *const link_types[] = {&lua_link_ops, &plugin_link_ops, NULL};
