/* mime.c - see mime.h. Works on the raw bytes; CRLF or bare LF line ends. */
#include "mime.h"
#include "base64.h"
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

struct walk {
    mime_part_cb cb;
    void *arg;
    size_t parts;
};

int mime_param(const char *value, const char *name, char *out, size_t size)
{
    size_t nl = strlen(name);
    for (const char *p = value ? strchr(value, ';') : NULL; p; p = strchr(p + 1, ';')) {
        const char *k = p + 1;
        while (*k == ' ' || *k == '\t' || *k == '\r' || *k == '\n')
            k++;
        if (strncasecmp(k, name, nl) || (k[nl] != '=' && k[nl] != ' ' && k[nl] != '\t'))
            continue;
        const char *v = k + nl;
        while (*v == ' ' || *v == '\t')
            v++;
        if (*v++ != '=')
            continue;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t o = 0;
        if (*v == '"') {
            for (v++; *v && *v != '"' && o + 1 < size; v++) {
                if (*v == '\\' && v[1])
                    v++;
                out[o++] = *v;
            }
        } else {
            for (; *v && !strchr(";\r\n \t", *v) && o + 1 < size; v++)
                out[o++] = *v;
        }
        out[o] = '\0';
        return 0;
    }
    return -1;
}

/* The type of a Content-Type value, lower-case, without parameters. */
static void bare_type(const char *value, char *out, size_t size)
{
    const char *v = value;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t o = 0;
    for (; *v && !strchr("; \t\r\n", *v) && o + 1 < size; v++)
        out[o++] = (char)tolower((unsigned char)*v);
    out[o] = '\0';
}

/* The end of the line at p (after its LF), or end. */
static const char *next_line(const char *p, const char *end)
{
    const char *lf = memchr(p, '\n', (size_t)(end - p));
    return lf ? lf + 1 : end;
}

/* A part's header fields we need, unfolded, into ct/cd/cte. Returns where
 * its body starts. */
static const char *part_headers(const char *p, const char *end, char *ct, char *cd, char *cte, size_t size)
{
    ct[0] = cd[0] = cte[0] = '\0';
    char *cur = NULL;
    size_t curlen = 0;
    while (p < end) {
        const char *nl = next_line(p, end);
        size_t n = (size_t)(nl - p);
        while (n && (p[n - 1] == '\n' || p[n - 1] == '\r'))
            n--;
        if (n == 0)
            return nl;                            /* the blank line */
        if ((*p == ' ' || *p == '\t') && cur) {   /* a folded continuation */
            if (curlen + n + 1 < size) {
                memcpy(cur + curlen, p, n);
                curlen += n;
                cur[curlen] = '\0';
            }
        } else {
            const char *colon = memchr(p, ':', n);
            size_t name = colon ? (size_t)(colon - p) : 0;
            cur = !colon ? NULL : name == 12 && !strncasecmp(p, "Content-Type", 12) ? ct
                : name == 19 && !strncasecmp(p, "Content-Disposition", 19) ? cd
                : name == 25 && !strncasecmp(p, "Content-Transfer-Encoding", 25) ? cte : NULL;
            curlen = 0;
            if (cur) {
                size_t v = n - name - 1;
                curlen = v < size ? v : size - 1;
                memcpy(cur, colon + 1, curlen);
                cur[curlen] = '\0';
            }
        }
        p = nl;
    }
    return end;
}

/* Is the line at p "--boundary" (closing: "--boundary--")? */
static bool delimiter(const char *p, const char *end, const char *boundary, size_t bl, bool *closing)
{
    if ((size_t)(end - p) < bl + 2 || p[0] != '-' || p[1] != '-' || memcmp(p + 2, boundary, bl))
        return false;
    const char *q = p + 2 + bl;
    *closing = end - q >= 2 && q[0] == '-' && q[1] == '-';
    if (*closing)
        q += 2;
    while (q < end && (*q == ' ' || *q == '\t'))
        q++;
    return q == end || *q == '\r' || *q == '\n';
}

static void walk(struct walk *w, const char *ct, const char *cd, const char *cte, const char *body, size_t len,
                 int depth);

/* The parts of a multipart body, each walked in turn. */
static void walk_multipart(struct walk *w, const char *boundary, const char *body, size_t len, int depth)
{
    size_t bl = strlen(boundary);
    const char *end = body + len, *p = body, *part = NULL;
    char ct[1024], cd[1024], cte[1024];     /* one size: part_headers fills each up to sizeof ct */
    while (p < end && w->parts < MIME_MAX_PARTS) {
        bool closing = false;
        const char *nl = next_line(p, end);
        if (!delimiter(p, nl, boundary, bl, &closing)) {
            p = nl;
            continue;
        }
        if (part) {
            const char *stop = p;             /* the CRLF before the delimiter belongs to it */
            if (stop > part && stop[-1] == '\n')
                stop--;
            if (stop > part && stop[-1] == '\r')
                stop--;
            const char *pb = part_headers(part, stop, ct, cd, cte, sizeof ct);
            walk(w, ct, cd, cte, pb, (size_t)(stop - pb), depth + 1);
        }
        if (closing)
            return;
        part = p = nl;
    }
    if (part && w->parts < MIME_MAX_PARTS) {  /* no closing delimiter: to the end */
        const char *pb = part_headers(part, end, ct, cd, cte, sizeof ct);
        walk(w, ct, cd, cte, pb, (size_t)(end - pb), depth + 1);
    }
}

static void walk(struct walk *w, const char *ct, const char *cd, const char *cte, const char *body, size_t len,
                 int depth)
{
    struct mime_part p = {.body = body, .len = len};
    bare_type(ct && *ct ? ct : "text/plain", p.type, sizeof p.type);
    char boundary[128];
    if (!strncmp(p.type, "multipart/", 10) && depth < MIME_MAX_DEPTH &&
        mime_param(ct, "boundary", boundary, sizeof boundary) == 0 && boundary[0]) {
        walk_multipart(w, boundary, body, len, depth);
        return;
    }
    if (w->parts >= MIME_MAX_PARTS)
        return;
    if (mime_param(ct, "charset", p.charset, sizeof p.charset) == 0)
        for (char *c = p.charset; *c; c++)
            *c = (char)tolower((unsigned char)*c);
    if (mime_param(cd, "filename", p.filename, sizeof p.filename) < 0)
        mime_param(ct, "name", p.filename, sizeof p.filename);
    char enc[32];
    bare_type(cte ? cte : "", enc, sizeof enc);
    p.encoding = !strcmp(enc, "base64") ? MIME_BASE64 : !strcmp(enc, "quoted-printable") ? MIME_QP : MIME_IDENTITY;
    w->parts++;
    w->cb(w->arg, &p);
}

size_t mime_walk(const char *ct, const char *cd, const char *cte, const char *body, size_t len, mime_part_cb cb,
                 void *arg)
{
    struct walk w = {.cb = cb, .arg = arg};
    walk(&w, ct ? ct : "", cd ? cd : "", cte ? cte : "", body, len, 0);
    return w.parts;
}

static void put(char *out, size_t cap, size_t *n, char c)
{
    if (out && *n < cap)
        out[*n] = c;
    (*n)++;
}

static int hex_value(unsigned char c)
{
    return isdigit(c) ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

size_t mime_decode(const struct mime_part *p, char *out, size_t cap)
{
    size_t n = 0;
    const unsigned char *s = (const unsigned char *)p->body, *end = s + p->len;
    if (p->encoding == MIME_BASE64) {
        unsigned acc = 0;
        int bits = 0;
        for (; s < end && *s != '='; s++) {
            int v = base64_value((char)*s);
            if (v < 0)
                continue;         /* line ends and anything else outside the alphabet */
            acc = acc << 6 | (unsigned)v;
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                put(out, cap, &n, (char)(acc >> bits & 0xff));
            }
        }
    } else if (p->encoding == MIME_QP) {
        for (; s < end; s++) {
            if (*s != '=') {
                put(out, cap, &n, (char)*s);
            } else if (end - s >= 3 && hex_value(s[1]) >= 0 && hex_value(s[2]) >= 0) {
                put(out, cap, &n, (char)(hex_value(s[1]) << 4 | hex_value(s[2])));
                s += 2;
            } else {              /* a soft line break: "=" CRLF (or LF) */
                const unsigned char *q = s + 1;
                while (q < end && (*q == ' ' || *q == '\t'))
                    q++;
                if (q < end && *q == '\r')
                    q++;
                if (q < end && *q == '\n')
                    s = q;
                else
                    put(out, cap, &n, '=');
            }
        }
    } else {
        for (; s < end; s++)
            put(out, cap, &n, (char)*s);
    }
    return n;
}
