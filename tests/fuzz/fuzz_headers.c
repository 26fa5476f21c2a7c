/* fuzz_headers.c - libFuzzer harness for the header section parser: parse,
 * then serialize untouched headers, which must give back exactly the bytes
 * the parser consumed; then change, insert and delete some. */
#include <stdint.h>
#include "headers.h"
#include <assert.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct header_list l = {0};
    size_t used = headers_parse((const char *)data, size, &l);
    assert(used <= size);
    struct buf out;
    buf_init(&out);
    headers_serialize(&l, &out);
    assert(out.len == used && (used == 0 || !memcmp(buf_head(&out), data, used)));
    buf_free(&out);
    if (l.n) {
        headers_change(&l, l.h[0].name, 0, " changed");
        headers_insert(&l, l.n / 2, "X-Fuzz", " inserted");
        headers_delete(&l, "Received", 0);
        headers_count(&l, "From");
        buf_init(&out);
        headers_serialize(&l, &out);
        buf_free(&out);
    }
    headers_free(&l);
    return 0;
}
