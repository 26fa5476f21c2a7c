/* pubkey_decode.c - a faster d2i_PUBKEY_bio for the libraries posternd
 * loads. OpenSSL 3.0's generic public-key decoder builds a decoder chain on
 * every call: about 200 us and a dozen global lock round trips to decode one
 * RSA-2048 key, against 3 us for the RSA-specific decoder. libopendkim
 * decodes the signer's key with d2i_PUBKEY_bio for every DKIM signature it
 * verifies, which made key decoding the largest single cost of the
 * authentication chain (README, "Speed").
 *
 * posternd and postern-milter export this definition, so it comes first in
 * the dynamic linker's search order for every library they load (ELF symbol
 * interposition, as with malloc). A memory BIO holding an RSA
 * SubjectPublicKeyInfo is decoded with d2i_RSA_PUBKEY; anything else
 * (another key type, another kind of BIO, a reused *a) goes to OpenSSL's own.
 *
 * The last KEY_CACHE RSA keys decoded are kept, keyed by their exact DER
 * bytes, and handed out again as new references: the same key record (a
 * signer's DKIM key, message after message) is then neither decoded nor set
 * up for RSA again (OpenSSL computes its Montgomery context once per key
 * object, on first use). Public keys are only ever read once decoded, and
 * OpenSSL's RSA public operations are safe on one key from many threads. */
#define OPENSSL_SUPPRESS_DEPRECATED   /* d2i_RSA_PUBKEY and EVP_PKEY_assign_RSA: the fast path */
#include <dlfcn.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define KEY_CACHE 32
#define KEY_DER_MAX 2048        /* an RSA-8192 SubjectPublicKeyInfo is about 1 KiB */

typedef EVP_PKEY *(*d2i_pubkey_bio_fn)(BIO *bp, EVP_PKEY **a);

static d2i_pubkey_bio_fn openssl_own;
static pthread_once_t found = PTHREAD_ONCE_INIT;

static void find_openssl_own(void) { openssl_own = (d2i_pubkey_bio_fn)dlsym(RTLD_NEXT, "d2i_PUBKEY_bio"); }

struct cached_key {
    unsigned char der[KEY_DER_MAX];
    long len;                   /* 0: empty slot */
    EVP_PKEY *key;
    uint64_t used;              /* for least-recently-used replacement */
};

static struct cached_key cache[KEY_CACHE];
static uint64_t use_clock;
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

/* A new reference to the cached key for these DER bytes, or NULL. */
static EVP_PKEY *cache_get(const unsigned char *der, long len)
{
    EVP_PKEY *key = NULL;
    pthread_mutex_lock(&cache_lock);
    for (int i = 0; i < KEY_CACHE && !key; i++)
        if (cache[i].len == len && !memcmp(cache[i].der, der, (size_t)len) && EVP_PKEY_up_ref(cache[i].key)) {
            key = cache[i].key;
            cache[i].used = ++use_clock;
        }
    pthread_mutex_unlock(&cache_lock);
    return key;
}

static void cache_put(const unsigned char *der, long len, EVP_PKEY *key)
{
    if (len > KEY_DER_MAX || !EVP_PKEY_up_ref(key))
        return;
    pthread_mutex_lock(&cache_lock);
    int victim = 0;
    for (int i = 1; i < KEY_CACHE; i++)
        if (cache[i].used < cache[victim].used)
            victim = i;
    EVP_PKEY *old = cache[victim].key;
    memcpy(cache[victim].der, der, (size_t)len);
    cache[victim].len = len;
    cache[victim].key = key;
    cache[victim].used = ++use_clock;
    pthread_mutex_unlock(&cache_lock);
    EVP_PKEY_free(old);
}

static EVP_PKEY *decode_rsa(const unsigned char *der, long len)
{
    const unsigned char *p = der;
    RSA *rsa = d2i_RSA_PUBKEY(NULL, &p, len);
    if (!rsa)
        return NULL;
    EVP_PKEY *key = EVP_PKEY_new();
    if (!key || !EVP_PKEY_assign_RSA(key, rsa)) {
        EVP_PKEY_free(key);
        RSA_free(rsa);
        return NULL;
    }
    return key;
}

/* Read (and drop) the first n bytes of bp, as OpenSSL's decoder consumes them. */
static void consume(BIO *bp, long n)
{
    char sink[512];
    while (n > 0) {
        int r = BIO_read(bp, sink, n > (long)sizeof sink ? (int)sizeof sink : (int)n);
        if (r <= 0)
            break;
        n -= r;
    }
}

/* An RSA key in a memory BIO, or NULL (the BIO is left as it was). */
static EVP_PKEY *rsa_from_memory(BIO *bp)
{
    char *data = NULL;
    long n = BIO_method_type(bp) == BIO_TYPE_MEM ? BIO_get_mem_data(bp, &data) : 0;
    if (n <= 0)
        return NULL;
    /* the key's own bytes (its outer SEQUENCE), not whatever follows them */
    const unsigned char *der = (const unsigned char *)data, *p = der;
    long content;
    int tag, cls;
    if (ASN1_get_object(&p, &content, &tag, &cls, n) & 0x80 || tag != V_ASN1_SEQUENCE ||
        content > n - (long)(p - der))
        return NULL;
    long total = (long)(p - der) + content;
    EVP_PKEY *key = cache_get(der, total);
    if (!key) {
        key = decode_rsa(der, total);
        if (!key)
            return NULL;
        cache_put(der, total, key);
    }
    consume(bp, total);
    return key;
}

EVP_PKEY *d2i_PUBKEY_bio(BIO *bp, EVP_PKEY **a)
{
    EVP_PKEY *key = a || !bp ? NULL : rsa_from_memory(bp);
    if (key)
        return key;
    pthread_once(&found, find_openssl_own);
    return openssl_own ? openssl_own(bp, a) : NULL;
}
