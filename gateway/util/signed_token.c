/* signed_token.c - see signed_token.h. */
#include "signed_token.h"
#include "base64.h"
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

/* base64 to base64url, padding dropped (in place). */
static void to_url(char *s)
{
    for (char *p = s; *p; p++)
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    s[strcspn(s, "=")] = '\0';
}

/* base64url (no padding) to bytes: the length, or -1. */
static int from_url(const char *s, size_t n, unsigned char *out, size_t size)
{
    char b[SIGNED_TOKEN_MAX + 4];
    if (n > SIGNED_TOKEN_MAX)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '+' || c == '/' || c == '=')
            return -1;
        b[i] = c == '-' ? '+' : c == '_' ? '/' : c;
    }
    while (n % 4)
        b[n++] = '=';
    return base64_decode(b, n, out, size);
}

static void mac_of(const unsigned char *key, size_t keylen, const char *payload, size_t len, unsigned char mac[32])
{
    unsigned int maclen = 32;
    HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)payload, len, mac, &maclen);
}

int token_make(const unsigned char *key, size_t keylen, const char *payload, char *out, size_t size)
{
    size_t len = strlen(payload);
    unsigned char mac[32];
    char p64[SIGNED_TOKEN_MAX], m64[64];
    mac_of(key, keylen, payload, len, mac);
    if (base64_encode((const unsigned char *)payload, len, p64, sizeof p64) < 0 ||
        base64_encode(mac, sizeof mac, m64, sizeof m64) < 0)
        return -1;
    to_url(p64);
    to_url(m64);
    size_t need = strlen(p64) + 1 + strlen(m64) + 1;
    if (need > size)
        return -1;
    memcpy(out, p64, strlen(p64));
    out[strlen(p64)] = '.';
    memcpy(out + strlen(p64) + 1, m64, strlen(m64) + 1);
    return 0;
}

int token_open(const unsigned char *key, size_t keylen, const char *token, char *payload, size_t size)
{
    const char *dot = strchr(token, '.');
    unsigned char given[64], mac[32];
    if (!dot || strchr(dot + 1, '.'))
        return -1;
    int plen = from_url(token, (size_t)(dot - token), (unsigned char *)payload, size - 1);
    int mlen = from_url(dot + 1, strlen(dot + 1), given, sizeof given);
    if (plen < 0 || mlen != 32)
        return -1;
    payload[plen] = '\0';
    if (strlen(payload) != (size_t)plen)
        return -1;              /* a NUL inside: not what we made */
    mac_of(key, keylen, payload, (size_t)plen, mac);
    return CRYPTO_memcmp(mac, given, sizeof mac) == 0 ? 0 : -1;
}
