/* hello.c - the smallest useful Postern plugin, built outside the source
 * tree against the installed header only:
 *     cc $(pkg-config --cflags postern) -fPIC -shared -o hello.so hello.c
 * It stamps every message with a header and refuses one test recipient. */
#include <postern_plugin.h>
#include <string.h>

static const struct postern_host *host;

static int init(const struct postern_host *h, const struct postern_option *opts, size_t n, void **state,
                char *err, size_t errlen)
{
    (void)opts;
    (void)state;
    (void)err;
    (void)errlen;
    host = h;
    return n == 0 ? 0 : -1;
}

static postern_verdict on_rcpt(postern_txn *t, const char *rcpt, void *state)
{
    (void)state;
    if (strncmp(rcpt, "nobody@", 7) != 0)
        return POSTERN_CONTINUE;
    host->set_reply(t, "550 5.1.1 hello plugin: nobody lives here");
    return POSTERN_REJECT;
}

static postern_verdict on_data(postern_txn *t, void *state)
{
    (void)state;
    return host->header_add(t, "X-Hello", "from an out-of-tree plugin") == 0 ? POSTERN_CONTINUE : POSTERN_ERROR;
}

static const struct postern_plugin plugin = {
    .abi_version = POSTERN_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct postern_plugin),
    .name = "hello",
    .init = init,
    .on_rcpt = on_rcpt,
    .on_data = on_data,
};

const struct postern_plugin *postern_plugin_entry(void) { return &plugin; }
