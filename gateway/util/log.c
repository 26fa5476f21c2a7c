/* log.c - formats a whole line and emits it with a single write(2) (or one
 * syslog(3) call), so lines from worker threads never interleave. */
#include "log.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static enum log_level current_level = LOG_LVL_INFO;
static const char *level_names[] = {"error", "warning", "info", "debug"};

enum target { TO_STDERR, TO_SYSLOG, TO_FILE };
static enum target target = TO_STDERR;
static char file_path[4096];
static int file_fd = -1;
static pthread_mutex_t reopen_lock = PTHREAD_MUTEX_INITIALIZER;   /* file_fd while it is replaced */

void log_set_level(enum log_level lvl) { current_level = lvl; }

const char *log_level_name(enum log_level lvl)
{
    return lvl >= LOG_LVL_ERROR && lvl <= LOG_LVL_DEBUG ? level_names[lvl] : "?";
}

int log_level_parse(const char *name)
{
    for (int i = LOG_LVL_ERROR; i <= LOG_LVL_DEBUG; i++)
        if (!strcmp(name, level_names[i]))
            return i;
    return -1;
}
bool log_enabled(enum log_level lvl) { return lvl <= current_level; }

static int open_file(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640);
}

int log_open(const char *spec, char *err, size_t errlen)
{
    if (!spec || !strcmp(spec, "stderr")) {
        target = TO_STDERR;
        return 0;
    }
    if (!strcmp(spec, "syslog")) {
        openlog("posternd", LOG_PID | LOG_NDELAY, LOG_MAIL);
        target = TO_SYSLOG;
        return 0;
    }
    if (strncmp(spec, "file:/", 6) || strlen(spec + 5) >= sizeof file_path) {
        snprintf(err, errlen, "log_target: expected stderr, syslog or file:/PATH, not '%s'", spec);
        return -1;
    }
    int fd = open_file(spec + 5);
    if (fd < 0) {
        snprintf(err, errlen, "log_target: cannot open %s: %s", spec + 5, strerror(errno));
        return -1;
    }
    snprintf(file_path, sizeof file_path, "%s", spec + 5);
    pthread_mutex_lock(&reopen_lock);
    file_fd = fd;
    target = TO_FILE;
    pthread_mutex_unlock(&reopen_lock);
    return 0;
}

void log_reopen(void)
{
    if (target != TO_FILE)
        return;
    int fd = open_file(file_path);
    if (fd < 0) {
        log_error("SIGUSR1: cannot reopen %s: %s; still writing to the old file", file_path, strerror(errno));
        return;
    }
    pthread_mutex_lock(&reopen_lock);
    int old = file_fd;
    file_fd = fd;
    pthread_mutex_unlock(&reopen_lock);
    close(old);
    log_info("SIGUSR1: reopened %s", file_path);
}

const char *log_ids(char *out, size_t size, unsigned long sid, const char *qid)
{
    int n = sid ? snprintf(out, size, "S%lu: ", sid) : (out[0] = '\0', 0);
    if (qid && qid[0] && n >= 0 && (size_t)n < size)
        snprintf(out + n, size - (size_t)n, "%s: ", qid);
    return out;
}

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
    if (target == TO_SYSLOG) {   /* syslog adds its own time, host and ident[pid] */
        static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
        line[n] = '\0';
        bool plain = lvl == LOG_LVL_INFO;       /* as Postfix: only non-info lines say their level */
        syslog(prio[lvl], "%s%s%s", plain ? "" : level_names[lvl], plain ? "" : ": ", line + start);
        return;
    }
    line[n++] = '\n';
    if (target == TO_FILE) {
        pthread_mutex_lock(&reopen_lock);
        ssize_t w = write(file_fd, line, (size_t)n);
        pthread_mutex_unlock(&reopen_lock);
        (void)w;
        return;
    }
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
