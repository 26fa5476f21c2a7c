/* mx.h - turns a recipient domain into an ordered list of SMTP server
 * addresses (RFC 5321 5.1): MX records by preference (shuffled among equal
 * preferences), every address of each host; no MX -> the domain's own
 * addresses; null MX (RFC 7505) -> permanent failure. When we are ourselves
 * an MX for the domain (backup MX), only strictly better MX hosts are kept. */
#ifndef POSTERN_MX_H
#define POSTERN_MX_H
#include "config.h"
#include <stddef.h>

struct dane_tlsa;
struct mx_target {
    char host[256];
    int pref;
    struct nexthop hop;      /* address and port to connect to */
    /* DNSSEC (libunbound's own validation; all false without a trust anchor) */
    bool mx_secure;          /* the MX RRset was validated (false for a host named directly) */
    bool addr_secure;        /* every A/AAAA answer for host was validated */
    char canon[256];         /* host after CNAMEs, when different ("" = none) */
    /* delivery's: this server's own TLS level (NULL = the job's) and its
     * DANE TLSA records (a reference, dane_tlsa_unref) */
    const struct tls_policy *tls;
    struct dane_tlsa *tlsa;
};

enum route_status { ROUTE_OK, ROUTE_TEMPFAIL, ROUTE_PERMFAIL };

struct route_result {
    enum route_status status;
    char reason[320];        /* an SMTP-style text for the recipient's state */
    struct mx_target *targets;
    size_t ntargets;
};

void mx_init(const struct config *cfg);
/* cb runs later on the loop thread; it owns result->targets (free()). A
 * bogus answer (DNSSEC validation failed) is a temporary failure. */
typedef void (*route_cb)(void *arg, struct route_result *result);
/* use_mx: MX records of name (else only its A/AAAA); servers on port,
 * speaking LMTP when lmtp is set (the targets' next hops say so). */
void mx_route(const char *name, int port, bool use_mx, bool lmtp, route_cb cb, void *arg);

/* Pure helpers (unit-tested): order MX records by preference with equal
 * preferences shuffled by rnd, and drop ours and everything not strictly
 * better than our best. Return the new count. */
struct mx_record {
    char host[256];
    int pref;
    bool self;
};
void mx_sort(struct mx_record *r, size_t n, unsigned (*rnd)(void));
size_t mx_keep_better_than_self(struct mx_record *r, size_t n, bool *we_are_best);

#endif
