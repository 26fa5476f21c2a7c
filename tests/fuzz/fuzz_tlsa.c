/* fuzz_tlsa.c - libFuzzer harness for the TLSA rdata parser (records from
 * any DNS zone), for handing the usable ones to OpenSSL's DANE code, and
 * for the TLSRPT record parser (the same input as TXT text). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "dane.h"
#include "report_mail.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static SSL_CTX *ctx;
    if (!ctx) {
        ctx = SSL_CTX_new(TLS_client_method());
        if (!ctx || SSL_CTX_dane_enable(ctx) <= 0)
            abort();
    }
    char txt[4096], addrs[4][320];
    size_t n = size < sizeof txt - 1 ? size : sizeof txt - 1, got;
    memcpy(txt, data, n);
    txt[n] = '\0';
    if (tlsrpt_parse_record(txt, addrs, 4, &got) == 0 && got > 4)
        abort();
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
