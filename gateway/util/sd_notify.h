/* sd_notify.h - tell systemd (Type=notify) how posternd is doing, through
 * $NOTIFY_SOCKET, without linking libsystemd. A no-op when it is unset. */
#ifndef POSTERN_SD_NOTIFY_H
#define POSTERN_SD_NOTIFY_H

/* state: "READY=1", "RELOADING=1", "STOPPING=1", "STATUS=..." lines. */
void sd_notify_state(const char *state);

#endif
