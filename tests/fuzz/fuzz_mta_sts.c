/* fuzz_mta_sts.c - libFuzzer harness for the MTA-STS policy parser (the
 * text fetched over HTTPS from a domain's mta-sts host) and MX matching. */
#include <stdint.h>
#include "mta_sts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sts_policy p;
    if (sts_parse((const char *)data, size, &p) == 0) {
        sts_mx_matches(&p, "mx1.example.com");
        sts_mx_matches(&p, "a.b.example.com");
    }
    return 0;
}
