/* fuzz_mime.c - libFuzzer harness for the MIME walk behind Lua's
 * tx:parts(): the first line is the top-level Content-Type, the rest the
 * body; every part is decoded, into a small buffer and counted. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "mime.h"

static void each(void *arg, const struct mime_part *p)
{
    char out[64];
    size_t whole = mime_decode(p, out, sizeof out);
    if (mime_decode(p, NULL, 0) != whole || p->body + p->len > (const char *)arg)
        abort();        /* the count must not depend on the buffer; a part stays inside the input */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char ct[512];
    const uint8_t *nl = memchr(data, '\n', size < sizeof ct - 1 ? size : sizeof ct - 1);
    size_t n = nl ? (size_t)(nl - data) : 0;
    memcpy(ct, data, n);
    ct[n] = '\0';
    const char *body = (const char *)data + (nl ? n + 1 : 0);
    size_t len = size - (size_t)(body - (const char *)data);
    if (mime_walk(ct, NULL, NULL, body, len, each, (void *)(body + len)) > MIME_MAX_PARTS)
        abort();
    return 0;
}
