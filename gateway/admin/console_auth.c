/* console_auth.c - console users and sessions (see console_auth.h). */
#include "console_auth.h"
#include "log.h"
#include <crypt.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define MAX_USERS 64
#define MAX_SESSIONS 256          /* live sessions of all users */
#define MAX_USER_SESSIONS 8       /* of one user: more logins are refused, nobody is logged out */
#define SESSION_IDLE_S 3600

struct user {
    char name[64];
    char hash[256];
    enum console_role role;
};

struct slot {
    char token[CONSOLE_TOKEN_LEN + 1];
    struct console_session s;
    time_t last_used;
};

static struct user users[MAX_USERS];
static size_t nusers;
static char dummy_hash[256];      /* checked for unknown users: the same cost as a real one */
static struct slot slots[MAX_SESSIONS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

const char *console_role_name(enum console_role r)
{
    return r == ROLE_ADMIN ? "admin" : r == ROLE_READONLY ? "readonly" : r == ROLE_USER ? "user"
         : r == ROLE_REVIEWER ? "reviewer" : "none";
}

static int parse_user(char *line, struct user *u)
{
    char *name = line, *hash = strchr(line, ':');
    char *role = hash ? strrchr(hash + 1, ':') : NULL;
    if (!hash || !role || role == hash)
        return -1;
    *hash++ = '\0';
    *role++ = '\0';
    if (!*name || strlen(name) >= sizeof u->name || hash[0] != '$' || strlen(hash) >= sizeof u->hash)
        return -1;
    u->role = !strcmp(role, "admin") ? ROLE_ADMIN : !strcmp(role, "readonly") ? ROLE_READONLY
            : !strcmp(role, "reviewer") ? ROLE_REVIEWER : ROLE_NONE;
    if (u->role == ROLE_NONE)
        return -1;
    snprintf(u->name, sizeof u->name, "%s", name);
    snprintf(u->hash, sizeof u->hash, "%s", hash);
    return 0;
}

int console_users_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "http_users %s: %s", path, strerror(errno));
        return -1;
    }
    char line[512];
    int n = 0, rc = 0;
    nusers = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        n++;
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0] || line[0] == '#')
            continue;
        if (nusers == MAX_USERS || parse_user(line, &users[nusers]) < 0) {
            snprintf(err, errlen, "%s:%d: expected 'name:$hash$:admin|readonly|reviewer' (at most %d users; "
                     "make lines with `postern console-user NAME ROLE`)", path, n, MAX_USERS);
            rc = -1;
        } else {
            nusers++;
        }
    }
    fclose(f);
    if (rc == 0 && nusers == 0) {
        snprintf(err, errlen, "http_users %s: no users (there is no default login)", path);
        rc = -1;
    }
    if (rc == 0 && console_hash_password("no user has this password", dummy_hash, sizeof dummy_hash) < 0) {
        snprintf(err, errlen, "libcrypt cannot make a yescrypt hash");
        rc = -1;
    }
    return rc;
}

void console_users_free(void)
{
    memset(users, 0, sizeof users);
    nusers = 0;
}

bool console_secret_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = la != lb;
    for (size_t i = 0; i < la && i < lb; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

enum console_role console_check_password(const char *user, const char *password)
{
    const struct user *u = NULL;
    for (size_t i = 0; i < nusers && !u; i++)
        if (!strcmp(users[i].name, user))
            u = &users[i];
    struct crypt_data *cd = calloc(1, sizeof *cd);
    if (!cd)
        return ROLE_NONE;
    /* an unknown user costs a hash too, so timing does not tell users apart */
    const char *h = crypt_r(password, u ? u->hash : dummy_hash, cd);
    bool ok = u && h && h[0] == '$' && console_secret_equal(h, u->hash);
    enum console_role r = ok ? u->role : ROLE_NONE;
    free(cd);
    return r;
}

static bool random_hex(char *out, size_t hexlen)
{
    unsigned char raw[CONSOLE_TOKEN_LEN / 2];
    if (hexlen / 2 > sizeof raw || getrandom(raw, hexlen / 2, 0) != (ssize_t)(hexlen / 2))
        return false;
    for (size_t i = 0; i < hexlen / 2; i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    return true;
}

/* A new session, never at the cost of another live one: idle ones are
 * reclaimed, and a user at MAX_USER_SESSIONS (or a full table) is refused
 * (*full set) rather than anyone being logged out. */
bool console_session_new(const char *user, enum console_role role, char token[CONSOLE_TOKEN_LEN + 1], bool *full)
{
    struct slot fresh = {.last_used = time(NULL)};
    *full = false;
    if (!random_hex(fresh.token, CONSOLE_TOKEN_LEN) || !random_hex(fresh.s.csrf, CONSOLE_TOKEN_LEN))
        return false;
    snprintf(fresh.s.user, sizeof fresh.s.user, "%s", user);
    fresh.s.role = role;
    pthread_mutex_lock(&lock);
    long pick = -1;
    size_t mine = 0;
    for (size_t i = 0; i < MAX_SESSIONS; i++) {
        if (slots[i].token[0] && fresh.last_used - slots[i].last_used > SESSION_IDLE_S)
            memset(&slots[i], 0, sizeof slots[i]);
        if (!slots[i].token[0]) {
            if (pick < 0)
                pick = (long)i;
        } else if (!strcmp(slots[i].s.user, user)) {
            mine++;
        }
    }
    if (pick < 0 || mine >= MAX_USER_SESSIONS)
        *full = true;
    else
        slots[pick] = fresh;
    pthread_mutex_unlock(&lock);
    if (*full)
        return false;
    memcpy(token, fresh.token, CONSOLE_TOKEN_LEN + 1);
    return true;
}

bool console_session_find(const char *token, struct console_session *out)
{
    if (!token || strlen(token) != CONSOLE_TOKEN_LEN)
        return false;
    bool found = false;
    time_t now = time(NULL);
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < MAX_SESSIONS; i++) {
        struct slot *s = &slots[i];
        if (!s->token[0])
            continue;
        if (now - s->last_used > SESSION_IDLE_S) {
            memset(s, 0, sizeof *s);
            continue;
        }
        if (!found && console_secret_equal(s->token, token)) {
            s->last_used = now;
            *out = s->s;
            found = true;
        }
    }
    pthread_mutex_unlock(&lock);
    return found;
}

void console_session_end(const char *token)
{
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < MAX_SESSIONS; i++)
        if (slots[i].token[0] && console_secret_equal(slots[i].token, token))
            memset(&slots[i], 0, sizeof slots[i]);
    pthread_mutex_unlock(&lock);
}

int console_hash_password(const char *password, char *out, size_t size)
{
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    struct crypt_data *cd = calloc(1, sizeof *cd);
    if (!cd || !crypt_gensalt_rn("$y$", 0, NULL, 0, salt, sizeof salt)) {
        free(cd);
        return -1;
    }
    const char *h = crypt_r(password, salt, cd);
    int rc = h && h[0] == '$' && strlen(h) < size ? 0 : -1;
    if (rc == 0)
        snprintf(out, size, "%s", h);
    free(cd);
    return rc;
}
