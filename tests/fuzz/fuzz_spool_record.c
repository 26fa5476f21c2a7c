/* fuzz_spool_record.c - libFuzzer harness for the spool readers: the
 * envelope block at the head of each queue file and the per-recipient
 * sidecar. A corrupt file must be refused with a reason, never crash. */
#include <stdint.h>
#include "spool.h"
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct envelope e = {0};
    size_t body_off = 0;
    const char *err = NULL;
    if (spool_envelope_decode((const char *)data, size, &e, &body_off, &err) == 0)
        envelope_free(&e);
    struct msg_flags f = {0};
    struct rcpt_state st[8];
    memset(st, 0, sizeof st);                 /* decode sets texts: they start empty */
    spool_state_decode((const char *)data, size, &f, st, 8, &err);
    for (size_t i = 0; i < 8; i++)
        rcpt_state_clear(&st[i]);
    return 0;
}
