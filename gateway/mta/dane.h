/* dane.h - DANE for SMTP (RFC 7672): for each MX server of a delivery
 * under a `dane` or `dane-only` policy, look up its TLSA records (only
 * when its address records were DNSSEC-validated), decide the server's
 * own TLS level, and put the usable records on its TLS connection. */
#ifndef POSTERN_DANE_H
#define POSTERN_DANE_H
#include "config.h"
#include "mx.h"
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DANE_MAX_RECORDS 16      /* usable records kept per server; more are ignored */

/* The usable TLSA records of one server and the names a DANE-TA(2)
 * certificate may carry. Shared by reference (dane_tlsa_ref/unref). */
struct dane_tlsa {
    int refs;
    char base[256];              /* TLSA base domain: the host (or its CNAME target) */
    char names[2][256];          /* further reference identifiers (RFC 7672 3.2.2), "" unused */
    size_t n;
    struct dane_record {
        uint8_t usage, selector, mtype;
        size_t len;
        unsigned char *data;
    } rr[DANE_MAX_RECORDS];
};

/* Parsing one TLSA rdata (RFC 6698 2.1) for SMTP (RFC 7672 3.1.3): 1 a
 * usable record (DANE-TA(2) or DANE-EE(3), selector 0/1, matching type 0,
 * or 1/2 with a digest of the right length), 0 unusable, -1 malformed. */
int dane_parse_rdata(const unsigned char *rd, size_t len, struct dane_record *out);

/* Decide every target's TLS level for a job whose policy is TLS_DANE or
 * TLS_DANE_ONLY (queries run on the loop; cb runs there too, perhaps at
 * once). Each target gets t->tls (and t->tlsa when DANE applies); one that
 * must not be used gets t->tls = NULL and its reason in skip[i]. mx_route: the targets came from the MX records of domain. */
typedef void (*dane_cb)(void *arg);
struct dane_skip {
    char why[320];               /* "4.7.5 ..." */
    const char *result;          /* its RFC 8460 result type (TLS reports) */
};
void dane_resolve(struct mx_target *t, size_t n, const char *domain, bool mx_route, const struct tls_policy *policy,
                  struct dane_skip *skip, dane_cb cb, void *arg);

/* The level of a next hop DANE cannot apply to (an address): the policy's
 * fallback, or NULL under dane-only. */
const struct tls_policy *dane_without_tlsa(const struct tls_policy *policy);
/* The level when the sender waived DANE ("TLS-Required: No"): the fallback. */
const struct tls_policy *dane_waived(const struct tls_policy *policy);
/* Put tlsa on ssl before the handshake: 0, or -1 (no record OpenSSL took). */
int dane_ssl_setup(SSL *ssl, const struct dane_tlsa *tlsa);
/* After a verified handshake: "TLSA 3 1 1 matched the server's certificate" */
void dane_describe(SSL *ssl, char *out, size_t size);

struct dane_tlsa *dane_tlsa_ref(struct dane_tlsa *t);
void dane_tlsa_unref(struct dane_tlsa *t);
bool dane_tlsa_same(const struct dane_tlsa *a, const struct dane_tlsa *b);
/* Release the DANE references of a target list (before free()). */
void mx_targets_release(struct mx_target *t, size_t n);

#endif
