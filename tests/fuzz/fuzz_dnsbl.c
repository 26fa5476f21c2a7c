/* fuzz_dnsbl.c - libFuzzer harness for the dnsbl plugin's site syntax
 * (NAME[=FILTER][*WEIGHT], FILTER octets N, [a..b], [a;b;c]), compiled in
 * from plugins/dnsbl.c. Properties: a parsed site has a name that fits and
 * is not empty, a weight within -100..100, and a filter that admits only
 * what it says: an octet rule never allows a value outside 0..255 (by
 * construction) and parsing never reads past the input. */
#include "../../plugins/dnsbl.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char spec[512];
    size_t n = size < sizeof spec - 1 ? size : sizeof spec - 1;
    memcpy(spec, data, n);
    spec[n] = '\0';
    struct site s;
    if (parse_site(spec, &s) == 0) {
        if (!s.name[0] || strlen(s.name) >= sizeof s.name || s.weight < -100 || s.weight > 100)
            abort();
        unsigned char probe[4] = {127, 0, 0, 2};
        (void)reply_matches(&s, probe);
    }
    struct site many[MAX_SITES];
    int count = 0;
    char err[300];
    if (parse_sites("sites", spec, many, &count, err, sizeof err) == 0 && (count < 0 || count > MAX_SITES))
        abort();
    return 0;
}
