/* base64.c - see base64.h. */
#include "base64.h"
#include <stdbool.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int base64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

int base64_decode(const char *in, size_t len, unsigned char *out, size_t size)
{
    if (len % 4)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        bool last = i + 4 == len;
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            if (in[i + k] == '=' && last && k >= 2 && (k == 3 || in[i + 3] == '=')) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad || (v[k] = base64_value(in[i + k])) < 0)
                return -1;
        }
        unsigned n = (unsigned)v[0] << 18 | (unsigned)v[1] << 12 | (unsigned)v[2] << 6 | (unsigned)v[3];
        if ((pad == 1 && (v[2] & 3)) || (pad == 2 && (v[1] & 15)))
            return -1;                 /* bits beyond the data must be zero */
        size_t bytes = 3 - (size_t)pad;
        if (o + bytes > size)
            return -1;
        out[o++] = (unsigned char)(n >> 16);
        if (bytes > 1)
            out[o++] = (unsigned char)(n >> 8);
        if (bytes > 2)
            out[o++] = (unsigned char)n;
    }
    return (int)o;
}

int base64_encode(const unsigned char *in, size_t len, char *out, size_t size)
{
    size_t need = (len + 2) / 3 * 4 + 1;
    if (need > size || need > 0x7fffffff)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        unsigned n = (unsigned)in[i] << 16 | (i + 1 < len ? (unsigned)in[i + 1] << 8 : 0) |
                     (i + 2 < len ? in[i + 2] : 0);
        out[o++] = alphabet[n >> 18 & 63];
        out[o++] = alphabet[n >> 12 & 63];
        out[o++] = i + 1 < len ? alphabet[n >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? alphabet[n & 63] : '=';
    }
    out[o] = '\0';
    return (int)o;
}
