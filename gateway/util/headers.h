/* headers.h - a message's header section as a list: parsed from the raw
 * bytes, changed through the plugin API, written back byte-identical for
 * every header nobody touched. */
#ifndef POSTERN_HEADERS_H
#define POSTERN_HEADERS_H
#include "buf.h"
#include <stdbool.h>
#include <stddef.h>

struct header {
    char *name;
    char *value;      /* after the colon, folding kept, no final CRLF */
    char *raw;        /* the original bytes incl. CRLF; NULL once changed */
    bool trace;       /* posternd's own Received field: no plugin, milter or script changes or removes it */
};

struct header_list {
    struct header *h;
    size_t n, cap;
    bool changed;
};

/* Parse as many header fields from raw as form a valid header section.
 * Returns the number of bytes consumed (a prefix of raw ending in CRLF). */
size_t headers_parse(const char *raw, size_t len, struct header_list *l);
void headers_serialize(const struct header_list *l, struct buf *out);
void headers_free(struct header_list *l);

int headers_insert(struct header_list *l, size_t index, const char *name, const char *value);
/* Our trace field, first, protected from headers_change and headers_delete. */
int headers_insert_trace(struct header_list *l, const char *name, const char *value);
int headers_append(struct header_list *l, const char *name, const char *value);
/* nth (0-based) field called name, case-insensitive; -1 if absent. */
long headers_find(const struct header_list *l, const char *name, size_t nth);
/* How many fields are called name (case-insensitive). */
size_t headers_count(const struct header_list *l, const char *name);
/* -1 when absent, invalid, or our trace field */
int headers_change(struct header_list *l, const char *name, size_t nth, const char *value);
int headers_delete(struct header_list *l, const char *name, size_t nth);

/* A field name is printable ASCII without ':' or spaces (RFC 5322 2.2);
 * a value must not contain a bare CR or LF (folding is CRLF + WSP). */
bool header_name_valid(const char *name);
/* Is name in list ("A, B-*": names, or prefixes before a '*'; case-insensitive)? */
bool header_name_listed(const char *list, const char *name);
bool header_value_valid(const char *value);

#endif
