/* utc_time.c - see utc_time.h. */
#include "utc_time.h"
#include <stdio.h>
#include <string.h>

int utc_time_parse(const char *text, bool end, time_t *out)
{
    int y, mo, d, h = 0, mi = 0, s = 0, n = 0;
    char sep = ' ';
    size_t len = strlen(text);
    if (sscanf(text, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3 || n != 10)
        return -1;
    int parts = 1;           /* day, minute, second */
    if (len > 10) {
        int m = 0;
        if (sscanf(text + 10, "%c%2d:%2d%n", &sep, &h, &mi, &m) != 3 || m != 6 || (sep != ' ' && sep != 'T'))
            return -1;
        parts = 2;
        n = 16;
        if (text[n] == ':') {
            if (sscanf(text + n, ":%2d%n", &s, &m) != 1 || m != 3)
                return -1;
            parts = 3;
            n += 3;
        }
        if (text[n] == 'Z')
            n++;
        if ((size_t)n != len)
            return -1;
    }
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi, .tm_sec = s};
    time_t t = timegm(&tm);
    /* timegm normalizes 2026-02-30 to March: a date that changed was not a date */
    if (t == (time_t)-1 || tm.tm_year != y - 1900 || tm.tm_mon != mo - 1 || tm.tm_mday != d || tm.tm_hour != h ||
        tm.tm_min != mi || tm.tm_sec != s)
        return -1;
    if (end)
        t += parts == 1 ? 86399 : parts == 2 ? 59 : 0;
    *out = t;
    return 0;
}

void utc_time_format(time_t t, char *out, size_t size)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}
