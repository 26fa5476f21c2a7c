/* smtp_server.h - listeners and inbound SMTP sessions (RFC 5321 server). */
#ifndef POSTERN_SMTP_SERVER_H
#define POSTERN_SMTP_SERVER_H
#include "config.h"

/* Bind every listen address (before dropping privileges). */
int smtp_server_bind(const struct config *cfg);
/* After a reload: new sessions go by cfg. */
void smtp_server_configure(const struct config *cfg);
/* Start accepting on the event loop. */
int smtp_server_start(void);
/* Idle timeouts; called on every tick. */
void smtp_server_tick(void);
/* Stop accepting, close sessions that hold no acknowledged-but-unreplied
 * work. Returns the number of sessions still waiting for a commit. */
int smtp_server_shutdown(void);
int smtp_server_sessions(void);

#endif
