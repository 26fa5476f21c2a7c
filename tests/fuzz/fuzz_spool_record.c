/* fuzz_spool_record.c - libFuzzer harness for the spool readers: the
 * envelope block at the head of each queue file and the per-recipient
 * sidecar. A corrupt file must be refused with a reason, never crash. */
#include <stdint.h>
#include "spool.h"
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct envelope e = {0};
    size_t body_off = 0;
    const char *err = NULL;
    if (spool_envelope_decode((const char *)data, size, &e, &body_off, &err) == 0)
        envelope_free(&e);
    struct msg_flags f;
    struct rcpt_state st[8];
    spool_state_decode((const char *)data, size, &f, st, 8, &err);
    return 0;
}
