/* headers.c - header section parsing (RFC 5322 2.2): "Name:" then value,
 * continuation lines start with space or tab. The first line that is
 * neither ends the section; the caller treats the rest as body. */
#include "headers.h"
#include "array_grow.h"
#include <stdlib.h>
#include <string.h>
#include <strings.h>

bool header_name_valid(const char *name)
{
    if (!*name)
        return false;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p <= 32 || *p >= 127 || *p == ':')
            return false;
    return true;
}

bool header_value_valid(const char *value)
{
    for (const char *p = value; *p; p++) {
        if (*p == '\n')
            return false;
        if (*p == '\r' && !(p[1] == '\n' && (p[2] == ' ' || p[2] == '\t')))
            return false;
        if (*p == '\r')
            p++;   /* skip the LF of a fold */
    }
    return true;
}

static int room_for_one(struct header_list *l)
{
    struct header *h = array_grow(l->h, &l->cap, l->n + 1, sizeof *l->h, 16);
    if (!h)
        return -1;
    l->h = h;
    return 0;
}

/* One field starting at p: its length including continuation lines. */
static size_t field_length(const char *p, size_t len)
{
    size_t i = 0;
    for (;;) {
        const char *nl = memchr(p + i, '\n', len - i);
        if (!nl)
            return 0;   /* incomplete line */
        i = (size_t)(nl - p) + 1;
        if (i >= len || (p[i] != ' ' && p[i] != '\t'))
            return i;
    }
}

size_t headers_parse(const char *raw, size_t len, struct header_list *l)
{
    size_t pos = 0;
    while (pos < len) {
        const char *p = raw + pos;
        size_t rest = len - pos;
        size_t name_len = 0;
        while (name_len < rest && p[name_len] != ':' && (unsigned char)p[name_len] > 32 &&
               (unsigned char)p[name_len] < 127)
            name_len++;
        if (name_len == 0 || name_len >= rest || p[name_len] != ':')
            break;   /* not a header field: the section ends here */
        size_t flen = field_length(p, rest);
        /* a NUL cannot live in a C string: such a field ends the parsed
         * section and its bytes pass on untouched (found by fuzz_headers) */
        if (flen < 2 || p[flen - 2] != '\r' || memchr(p, '\0', flen) || room_for_one(l) < 0)
            break;
        struct header *h = &l->h[l->n];
        h->trace = false;     /* only headers_insert_trace makes one */
        h->name = strndup(p, name_len);
        h->value = strndup(p + name_len + 1, flen - name_len - 1 - 2);
        h->raw = strndup(p, flen);
        if (!h->name || !h->value || !h->raw) {
            free(h->name);
            free(h->value);
            free(h->raw);
            break;
        }
        l->n++;
        pos += flen;
    }
    return pos;
}

void headers_serialize(const struct header_list *l, struct buf *out)
{
    for (size_t i = 0; i < l->n; i++) {
        const struct header *h = &l->h[i];
        if (h->raw) {
            buf_puts(out, h->raw);
            continue;
        }
        buf_puts(out, h->name);
        buf_puts(out, ":");
        /* a value added without a leading space gets one, as people expect */
        if (h->value[0] != ' ' && h->value[0] != '\t' && h->value[0])
            buf_puts(out, " ");
        buf_puts(out, h->value);
        buf_puts(out, "\r\n");
    }
}

static void header_clear(struct header *h)
{
    free(h->name);
    free(h->value);
    free(h->raw);
}

void headers_free(struct header_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        header_clear(&l->h[i]);
    free(l->h);
    memset(l, 0, sizeof *l);
}

int headers_insert(struct header_list *l, size_t index, const char *name, const char *value)
{
    if (!header_name_valid(name) || !header_value_valid(value) || room_for_one(l) < 0)
        return -1;
    if (index > l->n)
        index = l->n;
    memmove(&l->h[index + 1], &l->h[index], (l->n - index) * sizeof *l->h);
    l->h[index] = (struct header){strdup(name), strdup(value), NULL, false};
    l->n++;
    l->changed = true;
    return 0;
}

int headers_insert_trace(struct header_list *l, const char *name, const char *value)
{
    if (headers_insert(l, 0, name, value) < 0)
        return -1;
    l->h[0].trace = true;
    return 0;
}

int headers_append(struct header_list *l, const char *name, const char *value)
{
    return headers_insert(l, l->n, name, value);
}

long headers_find(const struct header_list *l, const char *name, size_t nth)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcasecmp(l->h[i].name, name) && nth-- == 0)
            return (long)i;
    return -1;
}

size_t headers_count(const struct header_list *l, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < l->n; i++)
        n += !strcasecmp(l->h[i].name, name);
    return n;
}

int headers_change(struct header_list *l, const char *name, size_t nth, const char *value)
{
    long i = headers_find(l, name, nth);
    if (i < 0 || l->h[i].trace || !header_value_valid(value))
        return -1;
    char *v = strdup(value);
    if (!v)
        return -1;
    free(l->h[i].value);
    free(l->h[i].raw);
    l->h[i].value = v;
    l->h[i].raw = NULL;
    l->changed = true;
    return 0;
}

int headers_delete(struct header_list *l, const char *name, size_t nth)
{
    long i = headers_find(l, name, nth);
    if (i < 0 || l->h[i].trace)
        return -1;
    header_clear(&l->h[i]);
    memmove(&l->h[i], &l->h[i + 1], (l->n - (size_t)i - 1) * sizeof *l->h);
    l->n--;
    l->changed = true;
    return 0;
}

bool header_name_listed(const char *list, const char *name)
{
    for (const char *p = list; p && *p; p += strspn(p, ", \t")) {
        size_t n = strcspn(p, ", \t");
        if (n && p[n - 1] == '*' ? !strncasecmp(name, p, n - 1) : n && strlen(name) == n && !strncasecmp(name, p, n))
            return true;
        p += n;
    }
    return false;
}
