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
 * SubjectPublicKeyInfo is decoded with d2i_RSA_PUBKEY into a new EVP_PKEY
 * (the same key, usable everywhere an EVP_PKEY is); anything else (another
 * key type, another kind of BIO, a reused *a) goes to OpenSSL's own. */
#define OPENSSL_SUPPRESS_DEPRECATED   /* d2i_RSA_PUBKEY and EVP_PKEY_assign_RSA: the fast path */
#include <dlfcn.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <pthread.h>

typedef EVP_PKEY *(*d2i_pubkey_bio_fn)(BIO *bp, EVP_PKEY **a);

static d2i_pubkey_bio_fn openssl_own;
static pthread_once_t found = PTHREAD_ONCE_INIT;

static void find_openssl_own(void) { openssl_own = (d2i_pubkey_bio_fn)dlsym(RTLD_NEXT, "d2i_PUBKEY_bio"); }

/* An RSA key in a memory BIO, or NULL (the BIO is left as it was). */
static EVP_PKEY *rsa_from_memory(BIO *bp)
{
    char *data = NULL;
    long n = BIO_method_type(bp) == BIO_TYPE_MEM ? BIO_get_mem_data(bp, &data) : 0;
    const unsigned char *p = (const unsigned char *)data;
    RSA *rsa = n > 0 ? d2i_RSA_PUBKEY(NULL, &p, n) : NULL;
    if (!rsa)
        return NULL;
    EVP_PKEY *key = EVP_PKEY_new();
    if (!key || !EVP_PKEY_assign_RSA(key, rsa)) {
        EVP_PKEY_free(key);
        RSA_free(rsa);
        return NULL;
    }
    /* consume what was decoded, as OpenSSL's own does */
    char sink[512];
    for (long left = (long)(p - (const unsigned char *)data); left > 0;) {
        int r = BIO_read(bp, sink, left > (long)sizeof sink ? (int)sizeof sink : (int)left);
        if (r <= 0)
            break;
        left -= r;
    }
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
