/* bad_abi.c - a plugin built for a future ABI: posternd must refuse it. */
#include "postern_plugin.h"

static const struct postern_plugin plugin = {
    .abi_version = POSTERN_PLUGIN_ABI_VERSION + 998,
    .struct_size = sizeof(struct postern_plugin),
    .name = "bad_abi",
};

const struct postern_plugin *postern_plugin_entry(void) { return &plugin; }
