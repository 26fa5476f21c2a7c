/* report_mail.c - see report_mail.h. */
#include "report_mail.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <zlib.h>

int report_gzip(const void *in, size_t len, unsigned char **out, size_t *outlen)
{
    z_stream z = {0};
    if (len > (256u << 20) || deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    uLong bound = deflateBound(&z, (uLong)len);
    unsigned char *buf = malloc(bound);
    if (!buf) {
        deflateEnd(&z);
        return -1;
    }
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    z.next_out = buf;
    z.avail_out = (uInt)bound;
    int rc = deflate(&z, Z_FINISH);
    *outlen = z.total_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END) {
        free(buf);
        return -1;
    }
    *out = buf;
    return 0;
}

char *report_base64_lines(const unsigned char *in, size_t n, size_t *outlen)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t groups = (n + 2) / 3, lines = (groups + 18) / 19;      /* 19 groups = 76 characters */
    char *out = malloc(groups * 4 + lines * 2 + 1), *o = out;
    if (!out)
        return NULL;
    size_t col = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        *o++ = alphabet[v >> 18 & 63];
        *o++ = alphabet[v >> 12 & 63];
        *o++ = i + 1 < n ? alphabet[v >> 6 & 63] : '=';
        *o++ = i + 2 < n ? alphabet[v & 63] : '=';
        col += 4;
        if (col == 76 || i + 3 >= n) {
            *o++ = '\r';
            *o++ = '\n';
            col = 0;
        }
    }
    *o = '\0';
    *outlen = (size_t)(o - out);
    return out;
}

int report_parse_mailto(const char *uri, size_t n, char *addr, size_t size, unsigned long long *max)
{
    if (n < 8 || size == 0 || strncasecmp(uri, "mailto:", 7))
        return -1;
    size_t o = 0;
    const char *p = uri + 7, *end = uri + n, *bang = memchr(p, '!', (size_t)(end - p));
    for (const char *stop = bang ? bang : end; p < stop && o + 1 < size; p++) {
        unsigned hex;
        if (*p == '%' && stop - p >= 3 && sscanf(p + 1, "%2x", &hex) == 1 && hex > ' ' && hex < 0x7f) {
            addr[o++] = (char)hex;
            p += 2;
        } else {
            addr[o++] = *p;
        }
    }
    addr[o] = '\0';
    *max = 0;
    if (bang) {
        char *unit;
        *max = strtoull(bang + 1, &unit, 10);
        int shift = *unit == 'k' ? 10 : *unit == 'm' ? 20 : *unit == 'g' ? 30 : *unit == 't' ? 40 : 0;
        *max <<= shift;
    }
    const char *at = strrchr(addr, '@');
    return at && at > addr && at[1] && !strpbrk(addr, " \t\r\n<>,") ? 0 : -1;
}

int tlsrpt_parse_record(const char *txt, char (*addrs)[320], size_t max, size_t *n)
{
    *n = 0;
    const char *p = txt + strspn(txt, " \t");
    if (strncmp(p, "v=TLSRPTv1", 10) || (p[10] && p[10] != ';' && p[10] != ' ' && p[10] != '\t'))
        return -1;
    for (p += 10; *p;) {
        p += strspn(p, "; \t");
        size_t len = strcspn(p, ";");
        if (len > 4 && !strncasecmp(p, "rua=", 4)) {
            for (const char *u = p + 4, *end = p + len; u < end;) {
                u += strspn(u, " \t,");
                size_t ulen = strcspn(u, ",;");
                while (ulen && (u[ulen - 1] == ' ' || u[ulen - 1] == '\t'))
                    ulen--;
                unsigned long long limit;
                if (ulen && *n < max && report_parse_mailto(u, ulen, addrs[*n], sizeof addrs[0], &limit) == 0)
                    (*n)++;     /* https: is not done: skipped */
                u += strcspn(u, ",;");
            }
        }
        p += len;
    }
    return 0;
}

void report_date(char *out, size_t size)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(out, size, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}
