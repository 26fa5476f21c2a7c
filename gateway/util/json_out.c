/* json_out.c - see json_out.h. */
#include "json_out.h"
#include "text_decode.h"
#include <string.h>

void json_out_string(struct buf *out, const char *s)
{
    buf_append(out, "\"", 1);
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        size_t u = c >= 0x80 ? utf8_valid_len(p + i, n - i) : 0;
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
