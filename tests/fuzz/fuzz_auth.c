/* fuzz_auth.c - libFuzzer harness for what SMTP AUTH decodes: the base64
 * of AUTH lines and responses (strict RFC 4648) and the sender-login check.
 * Properties: a decode never writes past its buffer; whatever decodes
 * encodes back to exactly the input (so the decoder accepts one spelling
 * per byte string); any bytes encode and decode back to themselves. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "base64.h"
#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 13000)
        return 0;
    unsigned char out[10000];
    char back[14000];
    int n = base64_decode((const char *)data, size, out, sizeof out);
    if (n >= 0) {
        if (base64_encode(out, (size_t)n, back, sizeof back) != (int)size || memcmp(back, data, size))
            abort();
    }
    char enc[18000];
    int e = base64_encode(data, size, enc, sizeof enc);
    if (e < 0 || base64_decode(enc, (size_t)e, out, sizeof out) != (size <= sizeof out ? (int)size : -1) ||
        (size <= sizeof out && memcmp(out, data, size)))
        abort();
    /* the sender-login table: "address login,login" lines */
    char text[600];
    size_t t = size < sizeof text - 1 ? size : sizeof text - 1;
    memcpy(text, data, t);
    text[t] = '\0';
    struct login_entry entry = {"@example.test", text};
    struct config cfg = {.logins = &entry, .nlogins = 1};
    (void)config_login_may_send_as(&cfg, "alice", "bob@example.test");
    (void)config_login_may_send_as(&cfg, text, text);
    return 0;
}
