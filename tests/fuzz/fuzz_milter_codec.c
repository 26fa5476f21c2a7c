/* fuzz_milter_codec.c - libFuzzer harness for plugins/milter_codec.h: what a
 * hostile or broken milter can send. Decodes every packet in the input,
 * walks each packet's NUL-separated strings, and re-frames it; the
 * re-framed packet must decode to the same thing. */
#include <stdint.h>
#include "milter_codec.h"
#include <assert.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    while (off < size) {
        struct milter_packet p;
        long n = milter_decode(data + off, size - off, &p);
        if (n <= 0)
            break;
        for (int i = 0; i < 64 && milter_string(p.data, p.len, i); i++)
            ;
        size_t cap = p.len + 5;
        unsigned char *again = malloc(cap);
        size_t framed = again ? milter_frame(again, cap, p.cmd, p.data, p.len) : 0;
        if (framed) {
            struct milter_packet q;
            assert(milter_decode(again, framed, &q) == (long)framed);
            assert(q.cmd == p.cmd && q.len == p.len && !memcmp(q.data, p.data, p.len));
        }
        free(again);
        off += (size_t)n;
    }
    return 0;
}
