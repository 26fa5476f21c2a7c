/* console_auth.h - who may use the web console: a password file of
 * "name:crypt-hash:role" lines (yescrypt, bcrypt or SHA-512 crypt, checked
 * with libcrypt; there is no default user or password), and the logged-in
 * sessions with their CSRF tokens. Thread-safe: libmicrohttpd calls in from
 * a thread per connection. */
#ifndef POSTERN_CONSOLE_AUTH_H
#define POSTERN_CONSOLE_AUTH_H
#include <stdbool.h>
#include <stddef.h>

/* ROLE_USER: a mail user on the /my/ pages, their own quarantine only.
 * ROLE_REVIEWER: sees what readonly sees, and searches and exports the
 * archive (recorded in its audit trail); never changes the queue. */
enum console_role { ROLE_NONE, ROLE_READONLY, ROLE_ADMIN, ROLE_USER, ROLE_REVIEWER };
#define CONSOLE_TOKEN_LEN 64          /* hex characters */

struct console_session {
    char user[256];
    enum console_role role;
    char csrf[CONSOLE_TOKEN_LEN + 1];
};

/* Read the users file (at start, as root: it may be 0600). 0, or -1 with err. */
int console_users_load(const char *path, char *err, size_t errlen);
void console_users_free(void);
/* The role of user with this password, ROLE_NONE when either is wrong. */
enum console_role console_check_password(const char *user, const char *password);
/* A new session: its cookie token. false with *full when the user has 8
 * live sessions already or 256 are live: nobody else's is ever evicted. */
bool console_session_new(const char *user, enum console_role role, char token[CONSOLE_TOKEN_LEN + 1], bool *full);
/* The session for a cookie token (sliding 1 h idle expiry): copied out. */
bool console_session_find(const char *token, struct console_session *out);
void console_session_end(const char *token);
/* Two secrets compared in time independent of where they differ. */
bool console_secret_equal(const char *a, const char *b);
/* A yescrypt hash of password for the users file. 0, or -1. */
int console_hash_password(const char *password, char *out, size_t size);
const char *console_role_name(enum console_role r);

#endif
