/* ldap_conn.h - one LDAP server's settings, a connection to it (StartTLS,
 * service bind) and RFC 4515 filter templates: shared by rcpt_verify's
 * recipient lookups and the end users' LDAP-bind logins, which read the
 * same rcpt_verify.ldap_* options. */
#ifndef POSTERN_LDAP_CONN_H
#define POSTERN_LDAP_CONN_H
#include <ldap.h>
#include <stdbool.h>
#include <stddef.h>

struct ldap_settings {
    char uri[512], base[512], filter[512], bind_dn[512], password[256], ca_file[1024];
    bool starttls;
    int timeout_s;
};

/* Connect, StartTLS when asked and bind as bind_dn (anonymous when unset).
 * LDAP_SUCCESS with *out set, or the failing call's LDAP result code. */
int ldap_conn_open(const struct ldap_settings *s, LDAP **out);
/* The filter template with %s (the address), %u (its local part) and %d
 * (its domain) filled in, each RFC 4515-escaped. 0, or -1 if too long. */
int ldap_filter_expand(const char *tmpl, const char *address, char *out, size_t size);

#endif
