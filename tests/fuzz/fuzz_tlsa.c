/* fuzz_tlsa.c - libFuzzer harness for the TLSA rdata parser (records from
 * any DNS zone) and for handing the usable ones to OpenSSL's DANE code. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "dane.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static SSL_CTX *ctx;
    if (!ctx) {
        ctx = SSL_CTX_new(TLS_client_method());
        if (!ctx || SSL_CTX_dane_enable(ctx) <= 0)
            abort();
    }
    struct dane_record rec;
    if (dane_parse_rdata(data, size, &rec) != 1)
        return 0;
    struct dane_tlsa set = {.refs = 1, .n = 1};
    strcpy(set.base, "mx.example.com");
    rec.data = (unsigned char *)data + 3;
    set.rr[0] = rec;
    SSL *ssl = SSL_new(ctx);
    if (ssl && dane_ssl_setup(ssl, &set) < 0)
        abort();        /* a record the parser called usable that OpenSSL refused */
    SSL_free(ssl);
    return 0;
}
