/* header_scan.h - watches a message as it streams by and counts the
 * Received: headers in its header section (hop count loop detection).
 * Stops looking at the first empty line. */
#ifndef POSTERN_HEADER_SCAN_H
#define POSTERN_HEADER_SCAN_H
#include <stdbool.h>
#include <stddef.h>

struct header_scan {
    bool in_body;
    size_t col;           /* bytes of the current line seen so far */
    char prefix[9];       /* first bytes of the line, for "Received:" */
    int received;
};

void header_scan_init(struct header_scan *h);
void header_scan_feed(struct header_scan *h, const char *p, size_t n);

#endif
