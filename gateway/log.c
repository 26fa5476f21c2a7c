/* log.c - formats a whole line and emits it with a single write(2), so lines
 * from worker threads never interleave. */
#include "log.h"
#include <stdarg.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static enum log_level current_level = LOG_LVL_INFO;
static const char *level_names[] = {"error", "warning", "info", "debug"};

void log_set_level(enum log_level lvl) { current_level = lvl; }

void mask_control_bytes(char *s, size_t n, bool keep_newlines)
{
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] < 0x20 && !(keep_newlines && s[i] == '\n')) || s[i] == 0x7f)
            s[i] = '?';
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
    if (lvl > current_level)
        return;
    char line[2048];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    localtime_r(&tv.tv_sec, &tm);
    int n = (int)strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(line + n, sizeof line - (size_t)n, ".%03ld posternd[%d]: %s: ",
                  (long)(tv.tv_usec / 1000), (int)getpid(), level_names[lvl]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    int start = n;
    n += m;
    if ((size_t)n > sizeof line - 2)
        n = sizeof line - 2;
    mask_control_bytes(line + start, (size_t)(n - start), false);   /* one record per line */
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
