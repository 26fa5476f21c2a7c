/* tlsrpt.h - SMTP TLS reporting (RFC 8460). Delivery counts every attempt
 * at a server under a published policy (DANE TLSA, MTA-STS) per recipient
 * domain: a success, or a failure by result type. Once per tlsrpt_interval
 * (periods aligned to UTC) each domain that asks for reports in its
 * _smtp._tls TXT record (rua=mailto:) is sent one gzipped JSON report
 * through posternd's own queue. Everything runs on the loop thread. */
#ifndef POSTERN_TLSRPT_H
#define POSTERN_TLSRPT_H
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct config;
struct dane_tlsa;

enum tlsrpt_policy { TLSRPT_TLSA, TLSRPT_STS };

/* The keys of a generation (tlsrpt, tlsrpt_interval, _org, _contact, _from). */
void tlsrpt_configure(const struct config *cfg);
/* After local_submit_start: read SPOOL/tlsrpt/state. */
void tlsrpt_start(const struct config *cfg);
/* One attempt at a server for a recipient domain under a policy: result
 * NULL = it met the policy, else an RFC 8460 result type. receiving,
 * sending_ip and tlsa (the server's records: the report's policy-string)
 * may be NULL. */
struct tlsrpt_attempt {
    const char *domain;
    enum tlsrpt_policy type;
    const char *mx_host;
    const struct sockaddr_storage *receiving;
    const char *sending_ip;
    const struct dane_tlsa *tlsa;
    const char *result;
};
void tlsrpt_count(const struct tlsrpt_attempt *a);
/* Every tick: save, close a period that ended, send what is due. */
void tlsrpt_tick(void);
/* At shutdown: save. */
void tlsrpt_stop(void);

#endif
