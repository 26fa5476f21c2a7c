/* smtp_auth.c - the SMTP AUTH command (RFC 4954) and what a login means:
 *   - offered only under TLS (STARTTLS or implicit TLS, RFC 8314) unless
 *     auth_allow_plaintext; the mechanisms are the backend's
 *     (auth_backend.h: Cyrus SASL or Dovecot's auth service);
 *   - each exchange step runs on a worker (a backend may block), the
 *     session waiting as for a hook; "334 challenge" lines go back and the
 *     client's next line is its answer ("*" cancels);
 *   - a login may relay anywhere, is the plugin host's auth_user, and the
 *     Received header says ESMTPSA (RFC 3848);
 *   - failures per client address are counted over auth_failure_window;
 *     past auth_failure_limit the client gets 421 and is dropped. Failures
 *     are logged with client, mechanism and the backend's reason, never with
 *     what the client sent.
 * smtp_auth_allows_mail() holds the submission rules (RFC 6409: AUTH or a
 * trusted network before MAIL on submission listeners) and the sender-login
 * check (sender_login_maps, as Postfix's reject_sender_login_mismatch). */
#include "auth_backend.h"
#include "base64.h"
#include "log.h"
#include "smtp_session.h"
#include "workers.h"
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define AUTH_LINE_MAX 12288        /* RFC 4954 4: an AUTH line or response */
#define FAIL_SLOTS 1024

static const struct auth_backend *backend;

struct auth_job {
    struct work work;
    struct session *s;
    struct auth_exchange x;
    unsigned char in[AUTH_LINE_MAX];
    size_t inlen;
    bool has_in;
    enum auth_result result;
};

/* ---- failures per client address ------------------------------------ */

static struct addr_window fail_table[FAIL_SLOTS];

static struct addr_window *failures_of(const char *ip)
{
    return addr_window_for(fail_table, FAIL_SLOTS, ip, smtp_cfg->auth_failure_window);
}

static bool over_failure_limit(const char *ip) { return failures_of(ip)->count >= smtp_cfg->auth_failure_limit; }

/* ---- the exchange --------------------------------------------------- */

const struct auth_backend *auth_backend_configured(const struct config *cfg)
{
    if (!cfg->auth_backend)
        return NULL;
    return !strcmp(cfg->auth_backend, "cyrus") ? &auth_cyrus : &auth_dovecot;
}

int smtp_auth_init(const struct config *cfg, char *err, size_t errlen)
{
    if (!cfg->auth_backend)
        return 0;
    backend = auth_backend_configured(cfg);
    return backend->init(cfg, err, errlen);
}

bool smtp_auth_offered(const struct session *s)
{
    return backend && (s->ssl || s->cfg->auth_allow_plaintext) && !s->authenticated;
}

const char *smtp_auth_mechanisms(void) { return backend ? backend->mechanisms() : ""; }

static bool mechanism_offered(const char *mech)
{
    const char *list = backend->mechanisms();
    size_t n = strlen(mech);
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, " ");
        if (len == n && !strncasecmp(p, mech, n))
            return true;
        p += len + (p[len] == ' ');
    }
    return false;
}

static void job_end(struct auth_job *j)
{
    backend->end(&j->x);
    free(j);
}

static void step_run(struct work *w)
{
    struct auth_job *j = (struct auth_job *)w;
    j->result = backend->step(&j->x, j->in, j->inlen, j->has_in);
}

static void exchange_over(struct session *s, struct auth_job *j)
{
    s->auth = NULL;
    s->auth_waiting = false;
    job_end(j);
}

static void auth_failed(struct session *s, struct auth_job *j)
{
    struct addr_window *f = failures_of(s->tx.client_ip);
    f->count++;
    log_info("S%lu: [%s] AUTH %s failed: %s (%d of %d in %ds)", s->sid, s->tx.client_ip, j->x.mech,
             j->x.why[0] ? j->x.why : "authentication failed", f->count, s->cfg->auth_failure_limit,
             s->cfg->auth_failure_window);
    exchange_over(s, j);
    if (f->count >= s->cfg->auth_failure_limit) {
        session_reply(s, "421 4.7.0 Error: too many failed authentications, try again later");
        session_close_after_reply(s);
        return;
    }
    /* a guesser waits for each answer (Postfix's smtpd_error_sleep_time) */
    session_reply_later(s, "535 5.7.8 Error: authentication failed", s->cfg->auth_failure_delay);
}

static void step_done(struct work *w)
{
    struct auth_job *j = (struct auth_job *)w;
    struct session *s = j->s;
    s->busy = false;
    if (s->dead) {
        s->auth = NULL;        /* session_free must not end it again */
        job_end(j);
        session_free(s);
        return;
    }
    s->phase = PH_COMMAND;
    session_set_timeout(s);
    switch (j->result) {
    case AUTH_CONTINUE: {
        char enc[AUTH_CHALLENGE_MAX * 4 / 3 + 8];
        base64_encode(j->x.challenge, j->x.challenge_len, enc, sizeof enc);
        session_replyf(s, "334 %s", enc);
        s->auth_waiting = true;
        break;
    }
    case AUTH_OK:
        snprintf(s->tx.auth_user, sizeof s->tx.auth_user, "%s", j->x.user);
        mask_control_bytes(s->tx.auth_user, strlen(s->tx.auth_user), false);
        s->authenticated = true;
        log_info("S%lu: [%s] AUTH %s: user=%s", s->sid, s->tx.client_ip, j->x.mech, s->tx.auth_user);
        exchange_over(s, j);
        session_reply(s, "235 2.7.0 Authentication successful");
        break;
    case AUTH_FAIL:
        auth_failed(s, j);
        break;
    case AUTH_TEMPFAIL:
        log_warn("S%lu: [%s] AUTH %s: temporary failure: %s", s->sid, s->tx.client_ip, j->x.mech, j->x.why);
        exchange_over(s, j);
        session_reply(s, "454 4.7.0 Temporary authentication failure");
        break;
    }
    session_resume(s);
}

/* Run the next step of s's exchange with in (decoded) on a worker. */
static void step_submit(struct session *s, struct auth_job *j)
{
    s->auth_waiting = false;
    s->phase = PH_HOOK;
    s->busy = true;
    j->work.run = step_run;
    j->work.done = step_done;
    workers_submit(&j->work);
}

/* A base64 client response into j->in; false after answering 501. */
static bool decode_response(struct session *s, struct auth_job *j, const char *b64)
{
    j->has_in = true;
    if (!strcmp(b64, "=")) {       /* an empty initial response */
        j->inlen = 0;
        return true;
    }
    int n = base64_decode(b64, strlen(b64), j->in, sizeof j->in - 1);
    if (n < 0) {
        session_reply(s, "501 5.5.2 Error: cannot decode the response");
        return false;
    }
    j->inlen = (size_t)n;
    j->in[n] = '\0';
    return true;
}

void smtp_cmd_auth(struct session *s, const char *args)
{
    if (!backend) {
        session_reply(s, "503 5.5.1 Error: authentication not enabled");
        return;
    }
    if (s->authenticated) {
        session_reply(s, "503 5.5.1 Error: already authenticated");
        return;
    }
    if (s->in_mail) {
        session_reply(s, "503 5.5.1 Error: MAIL transaction in progress");
        return;
    }
    if (!s->ssl && !s->cfg->auth_allow_plaintext) {
        session_reply(s, "538 5.7.11 Encryption required for requested authentication mechanism");
        return;
    }
    if (over_failure_limit(s->tx.client_ip)) {
        session_reply(s, "421 4.7.0 Error: too many failed authentications, try again later");
        session_close_after_reply(s);
        return;
    }
    char mech[32];
    size_t n = strcspn(args, " ");
    if (!n || n >= sizeof mech) {
        session_reply(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
        return;
    }
    snprintf(mech, sizeof mech, "%.*s", (int)n, args);
    for (char *p = mech; *p; p++)
        *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    if (!mechanism_offered(mech)) {
        session_reply(s, "504 5.5.4 Unrecognized authentication type");
        return;
    }
    struct auth_job *j = calloc(1, sizeof *j);
    if (!j) {
        session_reply(s, "454 4.7.0 Temporary authentication failure");
        return;
    }
    j->s = s;
    snprintf(j->x.mech, sizeof j->x.mech, "%s", mech);
    snprintf(j->x.client_ip, sizeof j->x.client_ip, "%s", s->tx.client_ip);
    j->x.tls = s->ssl != NULL;
    const char *initial = args + n + strspn(args + n, " ");
    if (*initial && !decode_response(s, j, initial)) {
        job_end(j);
        return;
    }
    s->auth = j;
    step_submit(s, j);
}

bool smtp_auth_waiting(const struct session *s) { return s->auth && s->auth_waiting; }

size_t smtp_auth_line_limit(const struct session *s, const char *head, size_t len)
{
    if (smtp_auth_waiting(s) || (len >= 5 && !strncasecmp(head, "AUTH ", 5)))
        return AUTH_LINE_MAX;
    return SMTP_MAX_COMMAND_LINE;
}

void smtp_auth_response(struct session *s, const char *line)
{
    struct auth_job *j = s->auth;
    if (!strcmp(line, "*")) {
        log_info("S%lu: [%s] AUTH %s cancelled by the client", s->sid, s->tx.client_ip, j->x.mech);
        exchange_over(s, j);
        session_reply(s, "501 5.7.0 Authentication aborted");
        return;
    }
    if (!decode_response(s, j, line)) {
        exchange_over(s, j);
        return;
    }
    step_submit(s, j);
}

void smtp_auth_session_end(struct session *s)
{
    if (s->auth && !s->busy)
        exchange_over(s, s->auth);
}

/* ---- what a login may do -------------------------------------------- */

bool smtp_auth_may_relay(const struct session *s) { return s->authenticated; }

/* MAIL FROM on this session: NULL, or the refusal. */
const char *smtp_auth_mail_refusal(struct session *s, const char *sender, char *buf, size_t size)
{
    bool trusted = config_is_trusted(s->cfg, (struct sockaddr *)&s->peer);
    if (s->submission && !s->authenticated && !trusted)
        return "530 5.7.0 Authentication required";
    if (s->authenticated && s->cfg->nlogins && sender[0] &&
        !config_login_may_send_as(s->cfg, s->tx.auth_user, sender)) {
        log_info("S%lu: [%s] reject: MAIL FROM <%s> not owned by user %s", s->sid, s->tx.client_ip, sender,
                 s->tx.auth_user);
        snprintf(buf, size, "553 5.7.1 <%s>: Sender address rejected: not owned by user %s", sender,
                 s->tx.auth_user);
        return buf;
    }
    return NULL;
}
