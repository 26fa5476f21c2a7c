/* control_client.h - one request to posternd's control socket, for the
 * CLI and the web console (which runs in posternd but off the loop, so it
 * asks the loop the same way the CLI does). */
#ifndef POSTERN_CONTROL_CLIENT_H
#define POSTERN_CONTROL_CLIENT_H
#include "buf.h"

/* Send request (one line), read the whole answer: 0 when posternd said OK
 * (answer in out), 1 when it said ERR (the reason in out), -1 with errno
 * when it could not be reached or answered nothing sensible. */
int control_request(const char *sock_path, const char *request, struct buf *out);

#endif
