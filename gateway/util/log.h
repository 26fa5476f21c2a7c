/* log.h - one line per event: timestamp, level, message, to stderr (the
 * default), syslog (facility mail) or a file reopened on SIGUSR1. */
#ifndef POSTERN_LOG_H
#define POSTERN_LOG_H
#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_LVL_ERROR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

void log_set_level(enum log_level lvl);
/* "error", "warning", "info", "debug" (log_level's values, as logged) */
const char *log_level_name(enum log_level lvl);
/* The level so named; -1 if none is. */
int log_level_parse(const char *name);
/* Whether a line at lvl would be written (skip formatting what is not). */
bool log_enabled(enum log_level lvl);
/* "stderr", "syslog" or "file:PATH" (opened O_APPEND|O_NOFOLLOW as the
 * caller: posternd switches after dropping privileges). 0, or -1 with err. */
int log_open(const char *target, char *err, size_t errlen);
/* SIGUSR1: reopen a file target (after logrotate moved it). */
void log_reopen(void);
/* "S42: QID: " for a session and queue ID (either may be 0 / ""), so plugin
 * and Lua lines name what they are about; "" when neither is known. */
const char *log_ids(char *out, size_t size, unsigned long sid, const char *qid);
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

/* Show control bytes (and DEL) in s[0..n) as '?', keeping '\n' when
 * keep_newlines: text from peers and plugins is shown, never obeyed. */
void mask_control_bytes(char *s, size_t n, bool keep_newlines);

#endif
