/* fuzz_proxy_proto.c - libFuzzer harness for the PROXY protocol parser:
 * any bytes give a length, "need more" or a refusal; a length never
 * exceeds the input and a source address is always a valid family. */
#include <stdint.h>
#include <stdlib.h>
#include "proxy_proto.h"
#include <netinet/in.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proxy_header h;
    int n = proxy_parse(data, size, &h);
    if (n > 0 && (size_t)n > size)
        abort();
    if (n > 0 && h.has_source && h.source.ss_family != AF_INET && h.source.ss_family != AF_INET6)
        abort();
    return 0;
}
