/* json_out.c - see json_out.h. */
#include "json_out.h"
#include <string.h>

/* Length of the valid UTF-8 sequence at p (at most n bytes), or 0. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t len = p[0] >= 0xf0 && p[0] <= 0xf4 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 && p[0] < 0xe0 ? 2 : 0;
    if (!len || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* s as a JSON string: control characters and bytes that are not UTF-8
 * escaped (the latter as the Latin-1 character of that byte). */
void json_out_string(struct buf *out, const char *s)
{
    buf_append(out, "\"", 1);
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        size_t u = c >= 0x80 ? utf8_len(p + i, n - i) : 0;
        if (u) {
            buf_append(out, p + i, u);
            i += u;
            continue;
        }
        if (c == '"' || c == '\\')
            buf_printf(out, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            buf_printf(out, "\\u%04x", c);
        else
            buf_append(out, &c, 1);
        i++;
    }
    buf_append(out, "\"", 1);
}
