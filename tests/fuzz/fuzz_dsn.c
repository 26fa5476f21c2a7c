/* fuzz_dsn.c - libFuzzer harness for DSN handling: the RFC 3461 parameter
 * codecs (xtext, NOTIFY, BDAT sizes) and the RFC 3464 report builder with an
 * arbitrary original message. Input: NUL-separated ENVID, ORCPT, the last
 * reply, a NOTIFY value, BDAT arguments, then the original message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "dsn.h"
#include "smtp_parse.h"

static const char *field(const char **p, const char *end)
{
    const char *start = *p;
    const char *nul = memchr(start, '\0', (size_t)(end - start));
    *p = nul ? nul + 1 : end;
    return start;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    copy[size] = '\0';
    const char *p = copy, *end = copy + size;
    const char *envid = field(&p, end), *orcpt = field(&p, end), *last_reply = field(&p, end);
    const char *notify_text = field(&p, end), *bdat = field(&p, end);
    unsigned notify, again;
    char text[64], dec[DSN_MAX_ORCPT + 1];
    if (dsn_notify_parse(notify_text, &notify) == 0) {      /* round trip */
        dsn_notify_text(notify, text, sizeof text);
        if (dsn_notify_parse(text, &again) < 0 || again != notify)
            abort();
    }
    int n = xtext_decode(envid, dec, sizeof dec);
    if (n >= (int)sizeof dec || (n >= 0 && !xtext_valid(envid)))
        abort();
    uint64_t chunk;
    bool last;
    smtp_parse_bdat(bdat, &chunk, &last);
    struct dsn_rcpt r = {"rcpt@dst.test", last_reply, orcpt[0] ? orcpt : NULL};
    for (int kind = DSN_FAILED; kind <= DSN_RELAYED; kind++) {
        struct dsn_report rep = {.reporting_mta = "gw.test", .queue_id = "0123456789ABCDEF",
                                 .orig_sender = "s@src.test", .kind = (enum dsn_kind)kind, .envid = envid,
                                 .rcpts = &r, .nrcpts = 1, .headers = p, .headers_len = (size_t)(end - p),
                                 .message = kind == DSN_FAILED ? p : NULL, .message_len = (size_t)(end - p)};
        struct buf b;
        buf_init(&b);
        if (dsn_build(&rep, &b) < 0 || !b.len)
            abort();
        buf_free(&b);
    }
    free(copy);
    return 0;
}
