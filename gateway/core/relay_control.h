/* relay_control.h - may this client send to this recipient? posternd's
 * RCPT and `postern policy test` ask the same question here. */
#ifndef POSTERN_RELAY_CONTROL_H
#define POSTERN_RELAY_CONTROL_H
#include "config.h"
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

enum relay_verdict { RELAY_OK, RELAY_DENIED, RELAY_ROUTED };

/* authenticated: our AUTH succeeded; postmaster: the recipient was a bare
 * "postmaster" (anyone may write to it, routing rules still apply). */
enum relay_verdict relay_check(const struct config *cfg, const struct sockaddr *peer, bool authenticated,
                               const char *addr, bool source_route, bool postmaster);
/* The refusal for a verdict other than RELAY_OK; *why: for the log. */
void relay_refusal(enum relay_verdict v, const char *addr, char *reply, size_t size, const char **why);

#endif
