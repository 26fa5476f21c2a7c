/* report_mail.h - pieces of the aggregate reports posternd mails: DMARC
 * (RFC 7489 7.2, the dmarc plugin) and SMTP TLS (RFC 8460 5.3, tlsrpt.c):
 * gzip, base64 in MIME lines, a mailto: URI, an RFC 5322 date. Only libc
 * and zlib: the dmarc plugin builds this file in too. */
#ifndef POSTERN_REPORT_MAIL_H
#define POSTERN_REPORT_MAIL_H
#include <stddef.h>

/* gzip (RFC 1952) of in: 0 and a malloc'd *out, or -1. */
int report_gzip(const void *in, size_t len, unsigned char **out, size_t *outlen);
/* base64 of in, in lines of 76 characters each ended by CRLF: a malloc'd
 * string (its length in *outlen), or NULL. */
char *report_base64_lines(const unsigned char *in, size_t n, size_t *outlen);
/* "mailto:a@b.example!10m" (n bytes): the address, %-decoded, into addr,
 * and the "!size" limit in bytes (0 = none). 0, or -1 when it is not a
 * mailto: URI with an address. */
int report_parse_mailto(const char *uri, size_t n, char *addr, size_t size, unsigned long long *max);
/* The mailto: addresses of an RFC 8460 "v=TLSRPTv1; rua=..." record, at
 * most max of them (https: ones are skipped). 0 (and *n), or -1 when it is
 * not such a record. */
int tlsrpt_parse_record(const char *txt, char (*addrs)[320], size_t max, size_t *n);
/* Now, as an RFC 5322 date in UTC. */
void report_date(char *out, size_t size);

#endif
