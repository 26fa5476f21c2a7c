/* plugin_util.h - small helpers the shipped authentication plugins share
 * (spf, dkim_verify, dmarc, dkim_sign). Header-only, so each plugin stays
 * one self-contained .so built against postern_plugin.h alone.
 *   parse_action()  "continue" | "reject" | "tempfail" | "quarantine"
 *   act()           an action as a verdict, with the reply it needs
 *   from_domain()   the domain of the single From: address
 */
#ifndef POSTERN_PLUGIN_UTIL_H
#define POSTERN_PLUGIN_UTIL_H
#include "postern_plugin.h"
#include <ctype.h>
#include <stdio.h>
#include <string.h>

enum action { ACT_CONTINUE, ACT_REJECT, ACT_TEMPFAIL, ACT_QUARANTINE };

static inline int parse_action(const char *v, enum action *out)
{
    static const char *names[] = {"continue", "reject", "tempfail", "quarantine"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(v, names[i])) {
            *out = (enum action)i;
            return 0;
        }
    return -1;
}

/* The verdict for action a: reject and tempfail answer with their reply
 * line ("550 5.7.1 ..."), quarantine holds with the reason. */
static inline postern_verdict act(const struct postern_host *host, postern_txn *t, enum action a,
                                  const char *reject_reply, const char *tempfail_reply, const char *reason)
{
    switch (a) {
    case ACT_REJECT:
        host->set_reply(t, reject_reply);
        return POSTERN_REJECT;
    case ACT_TEMPFAIL:
        host->set_reply(t, tempfail_reply);
        return POSTERN_TEMPFAIL;
    case ACT_QUARANTINE:
        host->set_reply(t, reason);
        return POSTERN_QUARANTINE;
    default:
        return POSTERN_CONTINUE;
    }
}

/* The domain of the single From: address, lower-cased; "" when there is
 * not exactly one From: header with an address in it. */
static inline void from_domain(const struct postern_host *host, postern_txn *t, char *out, size_t size)
{
    out[0] = '\0';
    const char *v = host->header_get(t, "From", 0);
    if (!v || host->header_get(t, "From", 1))
        return;
    const char *lt = strrchr(v, '<');
    const char *at = strchr(lt ? lt : v, '@');
    size_t n = at ? strcspn(at + 1, "> \t\r\n;,)") : 0;
    if (!n || n >= size)
        return;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)tolower((unsigned char)at[1 + i]);
    out[n] = '\0';
}

#endif
