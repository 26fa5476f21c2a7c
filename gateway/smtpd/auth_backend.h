/* auth_backend.h - who checks an SMTP AUTH login: Cyrus SASL (libsasl2:
 * sasldb, saslauthd, whatever its config names; auth_cyrus.c) or Dovecot's
 * auth service over its socket (auth_dovecot.c). One exchange per AUTH
 * command. Every call may block (a file, a socket): run them on a worker. */
#ifndef POSTERN_AUTH_BACKEND_H
#define POSTERN_AUTH_BACKEND_H
#include "config.h"
#include <stdbool.h>
#include <stddef.h>

enum auth_result { AUTH_CONTINUE, AUTH_OK, AUTH_FAIL, AUTH_TEMPFAIL };

#define AUTH_CHALLENGE_MAX 4096
#define AUTH_USER_MAX 256

/* One exchange. The backend's state, and what the last step produced. */
struct auth_exchange {
    char mech[32];
    char client_ip[64];
    bool tls;
    int steps;
    void *backend;                      /* the backend's own state */
    unsigned char challenge[AUTH_CHALLENGE_MAX];   /* AUTH_CONTINUE: raw, to be base64'd */
    size_t challenge_len;
    char user[AUTH_USER_MAX];           /* AUTH_OK: the login */
    char why[256];                      /* AUTH_FAIL / AUTH_TEMPFAIL: for the log, never a password */
};

struct auth_backend {
    const char *name;
    int (*init)(const struct config *cfg, char *err, size_t errlen);
    /* Space-separated mechanisms the backend offers, e.g. "PLAIN LOGIN". */
    const char *(*mechanisms)(void);
    /* First call: in = the initial response (or NULL for none); later
     * calls: the client's answer to the last challenge (decoded). */
    enum auth_result (*step)(struct auth_exchange *x, const unsigned char *in, size_t inlen, bool has_in);
    void (*end)(struct auth_exchange *x);
};

extern const struct auth_backend auth_cyrus, auth_dovecot;

/* The configured backend (auth_backend = cyrus | dovecot:SOCKET), or NULL. */
const struct auth_backend *auth_backend_configured(const struct config *cfg);

#endif
