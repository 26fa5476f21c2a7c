/* text_decode.c - text out of mail for full-text search: a charset to
 * UTF-8 (iconv; invalid or unknown input kept as far as it is UTF-8, the
 * rest replaced by U+FFFD), RFC 2047 encoded words in header values, and
 * the text of an HTML part (tags and scripts dropped, common entities
 * decoded). Everything is bounded by its input. */
#include "text_decode.h"
#include "base64.h"
#include <ctype.h>
#include <errno.h>
#include <iconv.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char replacement[] = "\xef\xbf\xbd";

size_t utf8_valid_len(const unsigned char *p, size_t n)
{
    if (p[0] < 0x80)
        return 1;
    size_t len = p[0] >= 0xf0 && p[0] <= 0xf4 ? 4 : p[0] >= 0xe0 && p[0] < 0xf0 ? 3 : p[0] >= 0xc2 && p[0] < 0xe0 ? 2 : 0;
    if (!len || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* in as UTF-8 as it stands: valid sequences kept, others replaced. */
static void utf8_clean(const char *in, size_t len, struct buf *out)
{
    const unsigned char *p = (const unsigned char *)in;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_valid_len(p + i, len - i);
        if (n) {
            buf_append(out, p + i, n);
            i += n;
        } else {
            buf_puts(out, replacement);
            i++;
        }
    }
}

void text_to_utf8(const char *charset, const char *in, size_t len, struct buf *out)
{
    if (!charset || !*charset || !strcasecmp(charset, "utf-8") || !strcasecmp(charset, "us-ascii") ||
        !strcasecmp(charset, "utf8")) {
        utf8_clean(in, len, out);
        return;
    }
    iconv_t cd = iconv_open("UTF-8", charset);
    if (cd == (iconv_t)-1) {             /* unknown: what is UTF-8 of it still counts */
        utf8_clean(in, len, out);
        return;
    }
    char chunk[4096];
    char *src = (char *)in;
    size_t left = len;
    while (left) {
        char *dst = chunk;
        size_t room = sizeof chunk;
        size_t r = iconv(cd, &src, &left, &dst, &room);
        buf_append(out, chunk, (size_t)(dst - chunk));
        if (r == (size_t)-1 && errno != E2BIG) {     /* a byte it cannot take: replace it, go on */
            buf_puts(out, replacement);
            src++;
            left--;
        }
    }
    iconv_close(cd);
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Q encoding (RFC 2047 4.2): '_' is a space, =XX a byte. */
static size_t q_decode(const char *in, size_t len, char *out)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] == '_')
            out[n++] = ' ';
        else if (in[i] == '=' && i + 2 < len && hexval(in[i + 1]) >= 0 && hexval(in[i + 2]) >= 0) {
            out[n++] = (char)(hexval(in[i + 1]) << 4 | hexval(in[i + 2]));
            i += 2;
        } else
            out[n++] = in[i];
    }
    return n;
}

/* One encoded word at p ("=?cs?E?text?="): its decoded text appended and
 * its length, or 0 if p is not one. */
static size_t encoded_word(const char *p, struct buf *out)
{
    const char *cs = p + 2, *q1 = strchr(cs, '?');
    if (!q1 || q1 - cs > 60 || !q1[1] || q1[2] != '?')
        return 0;
    char enc = (char)toupper((unsigned char)q1[1]);
    const char *text = q1 + 3, *end = strstr(text, "?=");
    if (!end || (enc != 'B' && enc != 'Q') || memchr(text, ' ', (size_t)(end - text)))
        return 0;
    char charset[64];
    snprintf(charset, sizeof charset, "%.*s", (int)(q1 - cs), cs);
    char *star = strchr(charset, '*');        /* RFC 2231 language: cs*lang */
    if (star)
        *star = '\0';
    size_t tlen = (size_t)(end - text);
    char *raw = malloc(tlen + 1);
    if (!raw)
        return 0;
    int n = enc == 'B' ? base64_decode(text, tlen, (unsigned char *)raw, tlen + 1) : (int)q_decode(text, tlen, raw);
    if (n >= 0)
        text_to_utf8(charset, raw, (size_t)n, out);
    free(raw);
    return n >= 0 ? (size_t)(end + 2 - p) : 0;
}

void header_text_decode(const char *value, struct buf *out)
{
    bool after_word = false;
    for (const char *p = value; *p;) {
        size_t used = p[0] == '=' && p[1] == '?' ? encoded_word(p, out) : 0;
        if (used) {
            p += used;
            after_word = true;
            continue;
        }
        size_t ws = strspn(p, " \t\r\n");
        if (ws && after_word && p[ws] == '=' && p[ws + 1] == '?') {
            p += ws;             /* blanks between two encoded words are not text */
            continue;
        }
        if (ws) {
            buf_puts(out, " ");
            p += ws;
            after_word = false;
            continue;
        }
        size_t run = strcspn(p, " \t\r\n=");
        run = run ? run : 1;
        utf8_clean(p, run, out);
        p += run;
        after_word = false;
    }
}

/* A named or numeric entity at p ("&amp;"): appended as UTF-8, its length. */
static size_t entity(const char *p, const char *end, struct buf *out)
{
    static const struct {
        const char *name, *text;
    } names[] = {{"amp", "&"}, {"lt", "<"}, {"gt", ">"}, {"quot", "\""}, {"apos", "'"}, {"nbsp", " "}};
    const char *semi = memchr(p, ';', (size_t)(end - p) < 12 ? (size_t)(end - p) : 12);
    if (!semi)
        return 0;
    size_t n = (size_t)(semi - p - 1);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i].name) == n && !strncmp(p + 1, names[i].name, n)) {
            buf_puts(out, names[i].text);
            return n + 2;
        }
    if (p[1] != '#')
        return 0;
    unsigned long cp = p[2] == 'x' || p[2] == 'X' ? strtoul(p + 3, NULL, 16) : strtoul(p + 2, NULL, 10);
    char u[4];
    size_t len = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    if (cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000))
        return n + 2;
    static const unsigned char first[] = {0, 0, 0xc0, 0xe0, 0xf0};
    for (size_t i = len; i-- > 1; cp >>= 6)
        u[i] = (char)(0x80 | (cp & 0x3f));
    u[0] = (char)(first[len] | cp);
    buf_append(out, u, len);
    return n + 2;
}

void html_to_text(const char *in, size_t len, struct buf *out)
{
    const char *p = in, *end = in + len;
    while (p < end) {
        if (*p == '<') {
            bool skip = end - p > 7 && (!strncasecmp(p, "<script", 7) || !strncasecmp(p, "<style", 6));
            const char *close = skip ? NULL : memchr(p, '>', (size_t)(end - p));
            if (skip) {                /* to the end of the element */
                const char *tag = !strncasecmp(p, "<script", 7) ? "</script" : "</style";
                const char *q = p;
                while (q < end && strncasecmp(q, tag, strlen(tag)))
                    q++;
                close = q < end ? memchr(q, '>', (size_t)(end - q)) : NULL;
            }
            p = close ? close + 1 : end;
            buf_puts(out, " ");
        } else if (*p == '&') {
            size_t used = entity(p, end, out);
            if (!used)
                buf_append(out, p, 1);
            p += used ? used : 1;
        } else {
            buf_append(out, p++, 1);
        }
    }
}
