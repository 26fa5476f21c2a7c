/* test_pubkey_decode.c - posternd's d2i_PUBKEY_bio (gateway/util/pubkey_decode.c)
 * is linked in here as in posternd: it must give the same keys as
 * OpenSSL's own for RSA, hand every other key type to OpenSSL, leave a
 * memory BIO as OpenSSL's would (the key consumed, what follows kept), and
 * hand out one cached key object per distinct key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dlfcn.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <string.h>

typedef EVP_PKEY *(*d2i_fn)(BIO *, EVP_PKEY **);

static unsigned char *der_of(EVP_PKEY *k, int *len)
{
    unsigned char *der = NULL;
    *len = i2d_PUBKEY(k, &der);
    assert_true(*len > 0);
    return der;
}

static EVP_PKEY *generate(const char *type, int bits)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY *k = NULL;
    assert_non_null(c);
    assert_int_equal(EVP_PKEY_keygen_init(c), 1);
    if (bits)
        assert_int_equal(EVP_PKEY_CTX_set_rsa_keygen_bits(c, bits), 1);
    assert_int_equal(EVP_PKEY_keygen(c, &k), 1);
    EVP_PKEY_CTX_free(c);
    return k;
}

/* Decoded by ours and by OpenSSL's own: the same public key both ways. */
static void same_key_both_ways(const char *type, int bits)
{
    EVP_PKEY *k = generate(type, bits);
    int len;
    unsigned char *der = der_of(k, &len);
    d2i_fn openssl_own = (d2i_fn)dlsym(RTLD_NEXT, "d2i_PUBKEY_bio");
    assert_non_null(openssl_own);
    assert_ptr_not_equal(openssl_own, d2i_PUBKEY_bio);
    BIO *a = BIO_new_mem_buf(der, len), *b = BIO_new_mem_buf(der, len);
    EVP_PKEY *ours = d2i_PUBKEY_bio(a, NULL), *theirs = openssl_own(b, NULL);
    assert_non_null(ours);
    assert_non_null(theirs);
    assert_int_equal(EVP_PKEY_eq(ours, theirs), 1);
    assert_int_equal(EVP_PKEY_eq(ours, k), 1);
    assert_int_equal(EVP_PKEY_get_id(ours), EVP_PKEY_get_id(k));
    assert_int_equal(BIO_pending(a), 0);    /* consumed, as OpenSSL's own does */
    assert_int_equal(BIO_pending(b), 0);
    /* the key signs-and-verifies like the original */
    unsigned char sig[512], msg[] = "message";
    size_t siglen = sizeof sig;
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestSignInit(m, NULL, bits ? EVP_sha256() : NULL, NULL, k), 1);
    assert_int_equal(EVP_DigestSign(m, sig, &siglen, msg, sizeof msg), 1);
    EVP_MD_CTX_free(m);
    m = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestVerifyInit(m, NULL, bits ? EVP_sha256() : NULL, NULL, ours), 1);
    assert_int_equal(EVP_DigestVerify(m, sig, siglen, msg, sizeof msg), 1);
    EVP_MD_CTX_free(m);
    EVP_PKEY_free(ours);
    EVP_PKEY_free(theirs);
    BIO_free(a);
    BIO_free(b);
    OPENSSL_free(der);
    EVP_PKEY_free(k);
}

static void rsa_fast_path(void **state)
{
    (void)state;
    same_key_both_ways("RSA", 2048);
}

static void ed25519_goes_to_openssl(void **state)
{
    (void)state;
    same_key_both_ways("ED25519", 0);
}

static void garbage_and_trailing_bytes(void **state)
{
    (void)state;
    BIO *g = BIO_new_mem_buf("not a key at all", 16);
    assert_null(d2i_PUBKEY_bio(g, NULL));
    BIO_free(g);
    /* a key followed by more data: the key is read, the rest stays */
    EVP_PKEY *k = generate("RSA", 1024);
    int len;
    unsigned char *der = der_of(k, &len);
    BIO *b = BIO_new(BIO_s_mem());
    BIO_write(b, der, len);
    BIO_write(b, "tail", 4);
    EVP_PKEY *got = d2i_PUBKEY_bio(b, NULL);
    assert_non_null(got);
    assert_int_equal(BIO_pending(b), 4);
    EVP_PKEY_free(got);
    BIO_free(b);
    OPENSSL_free(der);
    EVP_PKEY_free(k);
}

static void same_der_same_key_object(void **state)
{
    (void)state;
    EVP_PKEY *k = generate("RSA", 1024), *other = generate("RSA", 1024);
    int len, olen;
    unsigned char *der = der_of(k, &len), *oder = der_of(other, &olen);
    BIO *a = BIO_new_mem_buf(der, len), *b = BIO_new_mem_buf(der, len), *c = BIO_new_mem_buf(oder, olen);
    EVP_PKEY *first = d2i_PUBKEY_bio(a, NULL);
    assert_non_null(first);
    EVP_PKEY_free(first);                    /* the caller's reference only: the cache keeps its own */
    EVP_PKEY *again = d2i_PUBKEY_bio(b, NULL), *different = d2i_PUBKEY_bio(c, NULL);
    assert_ptr_equal(again, first);          /* decoded and set up once */
    assert_ptr_not_equal(different, again);
    assert_int_equal(EVP_PKEY_eq(again, k), 1);
    assert_int_equal(EVP_PKEY_eq(different, other), 1);
    assert_int_equal(EVP_PKEY_eq(different, k), 0);
    EVP_PKEY_free(again);
    EVP_PKEY_free(different);
    BIO_free(a);
    BIO_free(b);
    BIO_free(c);
    OPENSSL_free(der);
    OPENSSL_free(oder);
    EVP_PKEY_free(k);
    EVP_PKEY_free(other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rsa_fast_path),
        cmocka_unit_test(ed25519_goes_to_openssl),
        cmocka_unit_test(garbage_and_trailing_bytes),
        cmocka_unit_test(same_der_same_key_object),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
