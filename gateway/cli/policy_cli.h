/* policy_cli.h - `postern policy test` and `postern policy replay`: the
 * configured chain run offline (policy_run.c) on one message, on a table
 * of cases, or over the archive, with no delivery and no side effects. */
#ifndef POSTERN_POLICY_CLI_H
#define POSTERN_POLICY_CLI_H
#include "config.h"
#include "policy_run.h"
#include <stdio.h>

/* Exit codes of `policy test` on one message. */
enum { POLICY_EXIT_ACCEPT = 0, POLICY_EXIT_REJECT = 1, POLICY_EXIT_TEMPFAIL = 2, POLICY_EXIT_HELD = 3,
       POLICY_EXIT_ERROR = 4 };

/* argv[0] is "test" or "replay". Returns the exit code. */
int policy_command(const struct config *cfg, int argc, char **argv);

/* Shared by test and replay: load the chain as a dry run (dns_file: canned
 * answers, or NULL for the configured resolver), and unload it. */
int policy_setup(const struct config *cfg, const char *dns_file);
void policy_teardown(void);
/* policy_replay.c */
int policy_replay(const struct config *cfg, int argc, char **argv);

#endif
