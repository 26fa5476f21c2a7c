/* dns.h - asynchronous DNS through libunbound, driven by the event loop.
 * libunbound: a real resolver library with a pollable fd (fits epoll),
 * forwarding to a configured server, and DNSSEC validation (DANE). */
#ifndef POSTERN_DNS_H
#define POSTERN_DNS_H
#include <stddef.h>

struct ub_result;

/* server: "addr:port" to forward every query to, or NULL for the
 * system's /etc/resolv.conf; trust_anchor: a file of DS or DNSKEY records
 * libunbound validates from (NULL: every answer is insecure). 0 ok, -1
 * with a logged reason. */
int dns_init(const char *server, const char *trust_anchor);
/* Without the event loop (postern-milter, the CLI): only dns_query_sync
 * works, answered by a resolver thread of dns.c's own (dns_timeout holds). */
int dns_init_blocking(const char *server, const char *trust_anchor);
/* Blocking, answering only from file's records (`postern policy
 * --dns-file`); every other name does not exist. 0, or -1 with err. */
int dns_init_canned(const char *file, char *err, size_t errlen);
/* cb runs later on the loop thread; result is freed after cb returns
 * (NULL with err != 0 when the resolver itself failed). */
typedef void (*dns_cb)(void *arg, int err, struct ub_result *result);
int dns_resolve(const char *name, int rrtype, dns_cb cb, void *arg);
/* Blocking lookup for worker threads (plugins): copies the raw reply
 * packet into answer and returns its length, or -1 without a reply (within
 * dns_timeout). A name no query can carry gets a "no such name" reply. */
int dns_query_sync(const char *name, int rrtype, unsigned char *answer, size_t size);
/* The same answered from the cache of dns_query_sync's answers alone, for
 * the loop thread: DNS_NOT_CACHED when it would have to ask. */
#define DNS_NOT_CACHED (-2)
int dns_query_cached(const char *name, int rrtype, unsigned char *answer, size_t size);
/* dns_timeout: how long dns_query_sync waits for one answer (default 5 s);
 * a lookup not answered by then is a temporary failure. */
void dns_set_timeout(int ms);
/* An answer as text records (postern.dns): A/AAAA addresses, "PREF HOST"
 * for MX, the joined strings of each TXT, the name of a PTR. status: 0
 * answered (n may be 0: no such name or no data), -1 no answer. */
struct dns_text_answer {
    int status;
    size_t n;
    char **rr;
};
typedef void (*dns_text_cb)(void *arg, struct dns_text_answer *a);
/* From any thread. With the loop running ub_process, cb runs later on the
 * loop thread; without (postern-milter), the lookup blocks and cb runs
 * before this returns. cb owns a (dns_text_answer_free). 0, or -1. */
int dns_lookup_text(const char *name, int rrtype, dns_text_cb cb, void *arg);
void dns_text_answer_free(struct dns_text_answer *a);
/* The loop thread only (dns_init): look name up without waiting and keep
 * the answer in dns_query_sync's cache; cb then runs on the loop with
 * whether the answer is there now. 0, or -1 (cb will not run). */
enum dns_fetch_result { DNS_FETCH_CACHED, DNS_FETCH_UNCACHED, DNS_FETCH_FAILED };
typedef void (*dns_fetch_cb)(void *arg, enum dns_fetch_result r, const char *name, int rrtype);
int dns_fetch(const char *name, int rrtype, dns_fetch_cb cb, void *arg);
/* Every tick on the loop: a dns_lookup_text or dns_fetch not answered
 * within dns_timeout is cancelled and answered as failed. */
void dns_tick(void);
void dns_shutdown(void);

#endif
