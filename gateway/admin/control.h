/* control.h - the daemon's local control socket, spoken to by `postern`. */
#ifndef POSTERN_CONTROL_H
#define POSTERN_CONTROL_H
#include "config.h"

/* Create the unix socket at path and serve it on the event loop. */
int control_start(const char *path);
void control_stop(void);

/* Close control connections past their time; called on every tick. */
void control_tick(void);

#endif
