/* ldap_login.c - see ldap_login.h. One connection per login (logins are
 * few and rate-limited by the caller): service bind, search for the entry
 * (at most two asked for, exactly one wanted), then a simple bind as its DN.
 * A directory that cannot be reached is logged as such, never reported to
 * the user as a wrong password. */
#include "ldap_login.h"
#include "config.h"
#include "ldap_conn.h"
#include "log.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

static struct ldap_settings settings;

static int copy_option(const struct config *cfg, const char *key, char *out, size_t size, bool required, char *err,
                       size_t errlen)
{
    const char *v = config_plugin_option(cfg, "rcpt_verify", key);
    if ((!v || !v[0]) && required)
        return snprintf(err, errlen, "user_login = ldap needs rcpt_verify.%s", key), -1;
    if (v && strlen(v) >= size)
        return snprintf(err, errlen, "rcpt_verify.%s: too long", key), -1;
    snprintf(out, size, "%s", v ? v : "");
    return 0;
}

static int read_password_file(const char *path, char *out, size_t size, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (!f || !fgets(out, (int)size, f)) {
        snprintf(err, errlen, "rcpt_verify.ldap_bind_password_file: cannot read %s: %s", path,
                 f ? "empty" : strerror(errno));
        if (f)
            fclose(f);
        return -1;
    }
    fclose(f);
    out[strcspn(out, "\r\n")] = '\0';
    return 0;
}

int ldap_login_configure(const struct config *cfg, char *err, size_t errlen)
{
    memset(&settings, 0, sizeof settings);
    char pwfile[1024], tls[8], timeout[16];
    if (copy_option(cfg, "ldap_uri", settings.uri, sizeof settings.uri, true, err, errlen) < 0 ||
        copy_option(cfg, "ldap_base", settings.base, sizeof settings.base, true, err, errlen) < 0 ||
        copy_option(cfg, "ldap_filter", settings.filter, sizeof settings.filter, true, err, errlen) < 0 ||
        copy_option(cfg, "ldap_bind_dn", settings.bind_dn, sizeof settings.bind_dn, false, err, errlen) < 0 ||
        copy_option(cfg, "ldap_ca_file", settings.ca_file, sizeof settings.ca_file, false, err, errlen) < 0 ||
        copy_option(cfg, "ldap_bind_password_file", pwfile, sizeof pwfile, false, err, errlen) < 0 ||
        copy_option(cfg, "ldap_starttls", tls, sizeof tls, false, err, errlen) < 0 ||
        copy_option(cfg, "ldap_timeout", timeout, sizeof timeout, false, err, errlen) < 0)
        return -1;
    if (pwfile[0] && read_password_file(pwfile, settings.password, sizeof settings.password, err, errlen) < 0)
        return -1;
    settings.starttls = !strcmp(tls, "yes");
    settings.timeout_s = timeout[0] ? atoi(timeout) : 5;
    return 0;
}

/* The DN of the one entry the filter finds for address, or "" (none, or
 * more than one). -1 when the directory could not answer. */
static int find_entry(LDAP *ld, const char *address, char *dn, size_t size)
{
    char filter[2048];
    dn[0] = '\0';
    if (ldap_filter_expand(settings.filter, address, filter, sizeof filter) < 0)
        return 0;
    struct timeval tv = {.tv_sec = settings.timeout_s};
    char *attrs[] = {LDAP_NO_ATTRS, NULL};
    LDAPMessage *res = NULL;
    int rc = ldap_search_ext_s(ld, settings.base, LDAP_SCOPE_SUBTREE, filter, attrs, 0, NULL, NULL, &tv, 2, &res);
    int found = rc == LDAP_SUCCESS ? ldap_count_entries(ld, res) : rc == LDAP_SIZELIMIT_EXCEEDED ? 2 : -1;
    if (found == 1) {
        char *d = ldap_get_dn(ld, ldap_first_entry(ld, res));
        if (d && strlen(d) < size)
            snprintf(dn, size, "%s", d);
        ldap_memfree(d);
    }
    if (found < 0)
        log_error("console: LDAP search %s under %s: %s", filter, settings.base, ldap_err2string(rc));
    else if (found > 1)
        log_warn("console: LDAP login for '%.64s': the filter finds more than one entry", address);
    if (res)
        ldap_msgfree(res);
    return found < 0 ? -1 : 0;
}

bool ldap_login_ok(const char *address, const char *password)
{
    if (!settings.uri[0] || !password[0])
        return false;
    LDAP *ld = NULL;
    int rc = ldap_conn_open(&settings, &ld);
    if (rc != LDAP_SUCCESS) {
        log_error("console: LDAP %s: %s", settings.uri, ldap_err2string(rc));
        return false;
    }
    char dn[1024];
    bool ok = false;
    if (find_entry(ld, address, dn, sizeof dn) == 0 && dn[0]) {
        struct berval cred = {.bv_val = (char *)password, .bv_len = strlen(password)};
        rc = ldap_sasl_bind_s(ld, dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
        ok = rc == LDAP_SUCCESS;
        if (!ok && rc != LDAP_INVALID_CREDENTIALS)
            log_error("console: LDAP bind as %s: %s", dn, ldap_err2string(rc));
    }
    ldap_unbind_ext_s(ld, NULL, NULL);
    return ok;
}
