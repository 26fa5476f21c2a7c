/* rcpt_state.c - a recipient's delivery state owns its texts (the last
 * reply, the server that gave it, the command it answered, a route), each
 * allocated to its size and absent when empty: a queued recipient that was
 * never tried costs its fixed fields only (issue 37). */
#include "spool.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rtext_clear(struct rtext *t)
{
    free(t->s);
    t->s = NULL;
}

void rtext_printf(struct rtext *t, size_t size, const char *fmt, ...)
{
    char tmp[512];
    if (size > sizeof tmp)
        size = sizeof tmp;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, size, fmt, ap);
    va_end(ap);
    rtext_clear(t);    /* after formatting: the arguments may be t's own text */
    if (n > 0 && tmp[0])
        t->s = strdup(tmp);
}

void rcpt_state_clear(struct rcpt_state *st)
{
    rtext_clear(&st->last_reply);
    rtext_clear(&st->remote);
    rtext_clear(&st->in_reply_to);
    rtext_clear(&st->nexthop);
}

static int rtext_copy(struct rtext *to, struct rtext from)
{
    to->s = from.s ? strdup(from.s) : NULL;
    return from.s && !to->s ? -1 : 0;
}

int rcpt_state_copy(struct rcpt_state *to, const struct rcpt_state *from)
{
    *to = *from;
    int rc = rtext_copy(&to->last_reply, from->last_reply);
    rc |= rtext_copy(&to->remote, from->remote);
    rc |= rtext_copy(&to->in_reply_to, from->in_reply_to);
    rc |= rtext_copy(&to->nexthop, from->nexthop);
    return rc ? -1 : 0;
}

void rcpt_states_free(struct rcpt_state *st, size_t n)
{
    for (size_t i = 0; st && i < n; i++)
        rcpt_state_clear(&st[i]);
    free(st);
}
