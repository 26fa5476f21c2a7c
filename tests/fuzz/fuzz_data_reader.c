/* fuzz_data_reader.c - libFuzzer harness for the DATA reader (dot-unstuffing,
 * the end-of-data marker, bare LF / lone CR refusal): the input is split
 * into pieces whose sizes come from its first byte, so every split point
 * gets exercised; the output can never be longer than the input. */
#include <stdint.h>
#include "data_reader.h"
#include <assert.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = (size_t)data[0] % 17 + 1;
    data++, size--;
    struct data_reader dr;
    data_reader_init(&dr);
    char *out = malloc(size + 1);
    size_t off = 0;
    bool done = false;
    while (out && off < size && !done) {
        size_t n = size - off < step ? size - off : step, out_len = 0;
        size_t used = data_reader_feed(&dr, (const char *)data + off, n, out, &out_len, &done);
        assert(used <= n && out_len <= n);
        if (used == 0 && !done)
            break;
        off += used;
    }
    free(out);
    return 0;
}
