/* old_layout.c - a plugin as built against the 0.5 header, before
 * nonblocking_stages was appended to struct postern_plugin: its struct is
 * that shorter layout, written out here (a copy of the old header's
 * struct). posternd must load it, run its callbacks, and treat the missing
 * field as 0. It adds "X-Old-Layout: loaded" at DATA. */
#include "postern_plugin.h"

struct postern_plugin_0_5 {
    uint32_t abi_version;
    uint32_t struct_size;
    const char *name;
    int (*init)(const struct postern_host *host, const struct postern_option *opts, size_t nopts, void **state,
                char *err, size_t errlen);
    void (*fini)(void *state);
    postern_verdict (*on_connect)(postern_txn *t, void *state);
    postern_verdict (*on_helo)(postern_txn *t, const char *helo, void *state);
    postern_verdict (*on_mail)(postern_txn *t, const char *sender, void *state);
    postern_verdict (*on_rcpt)(postern_txn *t, const char *rcpt, void *state);
    postern_verdict (*on_data)(postern_txn *t, void *state);
    postern_verdict (*on_body)(postern_txn *t, const char *chunk, size_t len, void *state);
    postern_verdict (*on_eom)(postern_txn *t, void *state);
    postern_verdict (*on_queue)(postern_txn *t, void *state);
    postern_verdict (*on_deliver)(postern_txn *t, void *state);
};

static const struct postern_host *host;

static int init(const struct postern_host *h, const struct postern_option *opts, size_t n, void **state, char *err,
                size_t errlen)
{
    (void)opts, (void)n, (void)err, (void)errlen;
    host = h;
    *state = NULL;
    return 0;
}

static postern_verdict on_data(postern_txn *t, void *state)
{
    (void)state;
    host->header_add(t, "X-Old-Layout", " loaded");
    return POSTERN_CONTINUE;
}

static const struct postern_plugin_0_5 plugin = {
    .abi_version = POSTERN_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct postern_plugin_0_5),
    .name = "old_layout",
    .init = init,
    .on_data = on_data,
};

_Static_assert(sizeof(struct postern_plugin_0_5) == POSTERN_PLUGIN_MIN_SIZE, "the 0.5 layout");

const struct postern_plugin *postern_plugin_entry(void) { return (const struct postern_plugin *)(const void *)&plugin; }
