/* header_scan.c - a line-prefix matcher over CRLF text split at any byte. */
#include "header_scan.h"
#include <strings.h>

void header_scan_init(struct header_scan *h)
{
    h->in_body = false;
    h->col = 0;
    h->received = 0;
}

void header_scan_feed(struct header_scan *h, const char *p, size_t n)
{
    for (size_t i = 0; i < n && !h->in_body; i++) {
        char c = p[i];
        if (c == '\n') {
            /* "\r\n" alone (col 1, prefix "\r") or "\n" alone ends the headers */
            if (h->col == 0 || (h->col == 1 && h->prefix[0] == '\r'))
                h->in_body = true;
            h->col = 0;
            continue;
        }
        if (h->col < sizeof h->prefix)
            h->prefix[h->col] = c;
        h->col++;
        if (h->col == sizeof h->prefix && strncasecmp(h->prefix, "Received:", 9) == 0)
            h->received++;
    }
}
