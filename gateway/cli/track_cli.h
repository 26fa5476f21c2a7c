/* track_cli.h - `postern track` (track_cli.c). */
#ifndef POSTERN_TRACK_CLI_H
#define POSTERN_TRACK_CLI_H
#include "config.h"

/* The exit code: 0, 1 (an error, said on stderr) or 2 (usage). */
int track_command(const struct config *cfg, int argc, char **argv);

#endif
