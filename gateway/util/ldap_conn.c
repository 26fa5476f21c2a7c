/* ldap_conn.c - see ldap_conn.h. Synchronous libldap calls with the
 * settings' timeout on the network, each operation and StartTLS. */
#include "ldap_conn.h"
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

int ldap_conn_open(const struct ldap_settings *s, LDAP **out)
{
    int version = LDAP_VERSION3;
    struct timeval tv = {.tv_sec = s->timeout_s > 0 ? s->timeout_s : 5};
    LDAP *ld = NULL;
    int rc = ldap_initialize(&ld, s->uri);
    if (rc == LDAP_SUCCESS) {
        ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &version);
        ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
        ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv);
        ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
        if (s->ca_file[0]) {
            int newctx = 0;
            ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTFILE, s->ca_file);
            ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &newctx);
        }
        if (s->starttls)
            rc = ldap_start_tls_s(ld, NULL, NULL);
    }
    if (rc == LDAP_SUCCESS && s->bind_dn[0]) {
        struct berval cred = {.bv_val = (char *)s->password, .bv_len = strlen(s->password)};
        rc = ldap_sasl_bind_s(ld, s->bind_dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
    }
    if (rc != LDAP_SUCCESS) {
        if (ld)
            ldap_unbind_ext_s(ld, NULL, NULL);
        ld = NULL;
    }
    *out = ld;
    return rc;
}

/* RFC 4515: escape what would change the filter's meaning. */
static void filter_escape(const char *in, size_t len, char *out, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 4 < size; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '*' || c == '(' || c == ')' || c == '\\' || c < 0x20 || c >= 0x7f)
            o += (size_t)snprintf(out + o, size - o, "\\%02x", c);
        else
            out[o++] = (char)c;
    }
    out[o] = '\0';
}

int ldap_filter_expand(const char *tmpl, const char *address, char *out, size_t size)
{
    const char *at = strrchr(address, '@');
    size_t local_len = at ? (size_t)(at - address) : strlen(address);
    const char *domain = at ? at + 1 : "";
    size_t o = 0;
    for (const char *p = tmpl; *p; p++) {
        char esc[1024 * 3 + 1];
        const char *val = NULL;
        if (*p == '%' && (p[1] == 's' || p[1] == 'u' || p[1] == 'd')) {
            const char *v = p[1] == 's' ? address : p[1] == 'u' ? address : domain;
            size_t vlen = p[1] == 'u' ? local_len : strlen(v);
            if (vlen > 1024)
                return -1;
            filter_escape(v, vlen, esc, sizeof esc);
            val = esc;
            p++;
        }
        size_t n = val ? strlen(val) : 1;
        if (o + n >= size)
            return -1;
        memcpy(out + o, val ? val : p, n);
        o += n;
    }
    out[o] = '\0';
    return 0;
}
