/* learn.h - what the users' spam quarantine decisions teach rspamd: a
 * release is ham, "this is spam" is spam, sent to rspamd's controller
 * (POST /learnham, /learnspam with its password). On the console's
 * thread, bounded in time; a failure is logged and changes nothing else. */
#ifndef POSTERN_LEARN_H
#define POSTERN_LEARN_H
#include "config.h"
#include <stdbool.h>
#include <stddef.h>

void learn_configure(const struct config *cfg);
/* Queued message id as spam or ham: 0, 1 (no controller configured: nothing
 * to do), or -1 with why. */
int learn_message(const char *id, bool spam, char *why, size_t size);

#endif
