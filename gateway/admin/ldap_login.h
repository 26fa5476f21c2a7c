/* ldap_login.h - end users' logins by LDAP bind (user_login = ldap): the
 * user's entry is found with rcpt_verify's LDAP settings (ldap_uri,
 * ldap_base, ldap_filter with %s the address, the service bind DN), then
 * bound as with the password the user typed. */
#ifndef POSTERN_LDAP_LOGIN_H
#define POSTERN_LDAP_LOGIN_H
#include <stdbool.h>
#include <stddef.h>

struct config;
/* Read the settings (and the bind password file, so before privileges are
 * dropped). 0, or -1 with why in err. */
int ldap_login_configure(const struct config *cfg, char *err, size_t errlen);
/* True when address names exactly one entry and password binds as it. An
 * empty password is refused (it would be an unauthenticated bind). */
bool ldap_login_ok(const char *address, const char *password);

#endif
