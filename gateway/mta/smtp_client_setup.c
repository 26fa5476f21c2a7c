/* smtp_client_setup.c - from the server's greeting to a connection ready
 * for mail: EHLO (HELO when EHLO is refused) and its extensions, STARTTLS
 * by the destination's TLS policy (RFC 3207; DANE, RFC 7672, authenticates
 * by TLSA records), and AUTH PLAIN or LOGIN
 * (RFC 4954) with the next hop's smtp_sasl_password_maps credentials. */
#include "smtp_client_int.h"
#include "tls_sessions.h"
#include "dane.h"
#include "metrics.h"
#include "log.h"
#include "tls.h"
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* The egress source's HELO name, else smtp_helo_name, else hostname. */
static const char *cl_helo_name(const struct smtp_client *c)
{
    if (c->peer.source)
        return c->peer.source->helo;
    return client_cfg->smtp_helo_name[0] ? client_cfg->smtp_helo_name : client_cfg->hostname;
}

/* A delivery deferred because the TLS level it needed was not had. */
static void tls_policy_failed(enum tls_level level, const char *reason)
{
    char labels[96];
    metric_inc(M_TLS_POLICY_FAILURES, metric_labels(labels, sizeof labels, "level", tls_level_name(level), "reason",
                                                    reason, NULL));
}

static void tls_begin(struct smtp_client *c);
static const char *tls_result_type(long vr, bool dane);
static void auth_begin(struct smtp_client *c);

static void after_ehlo(struct smtp_client *c)
{
    enum tls_level level = c->peer.tls->level;
    bool broken = c->peer.tls_broken && *c->peer.tls_broken;
    struct sockaddr_storage me;
    socklen_t melen = sizeof me;
    if (!c->local_ip[0] && getsockname(c->w.fd, (struct sockaddr *)&me, &melen) == 0)
        sockaddr_ip_text((const struct sockaddr *)&me, c->local_ip, sizeof c->local_ip);
    if (c->peer.addr.ss_family == AF_UNIX)
        level = TLS_NONE;            /* an LMTP socket on this machine: no network to protect */
    if (!c->ssl && level >= TLS_MAY && c->starttls && !(level == TLS_MAY && broken)) {
        c->state = CL_STARTTLS;
        cl_send_cmd(c, "STARTTLS", NULL);
        return;
    }
    if (!c->ssl && level >= TLS_ENCRYPT) {
        char why[WHY_MAX];
        tls_policy_failed(level, "starttls_not_offered");
        c->tls_result = "starttls-not-supported";
        snprintf(why, sizeof why, "4.7.4 TLS is required (%s) but host %s does not offer STARTTLS",
                 tls_level_name(level), c->remote);
        cl_fail(c, why, true);
        return;
    }
    if (c->peer.auth) {
        auth_begin(c);
        return;
    }
    cl_ready(c);
}

/* A next hop that greets us, or answers EHLO, with our own name is us (or
 * another gateway configured with our name): mail sent there comes back.
 * Postfix's loop detection, with its text; the message bounces (5.4.6)
 * instead of going round until the hop count ends it. Not for LMTP, which
 * is final delivery (and its server often has this machine's name). */
static bool loops_back(struct smtp_client *c)
{
    if (c->peer.lmtp)
        return false;     /* LMTP delivers into mailboxes: nothing is relayed back */
    const char *name = c->reply + (strlen(c->reply) > 4 ? 4 : strlen(c->reply));
    size_t n = strcspn(name, " ");
    const char *mine[] = {client_cfg->hostname, cl_helo_name(c)};
    for (size_t i = 0; i < sizeof mine / sizeof *mine; i++) {
        if (!mine[i][0] || strlen(mine[i]) != n || strncasecmp(name, mine[i], n))
            continue;
        char why[WHY_MAX];
        log_warn("host %s %s my own hostname %s", c->remote,
                 c->state == CL_BANNER ? "greeted me with" : "replied to HELO/EHLO with", mine[i]);
        snprintf(why, sizeof why, "5.4.6 mail for %s loops back to myself", c->peer.name[0] ? c->peer.name : c->remote);
        cl_fail(c, why, true);
        return true;
    }
    return false;
}

static void on_ehlo_reply(struct smtp_client *c, int code)
{
    if (reply_class(code) == 2) {
        if (!loops_back(c))
            after_ehlo(c);
        return;
    }
    if (c->state == CL_EHLO && reply_class(code) == 5 && !c->peer.lmtp) {
        c->state = CL_HELO;
        cl_send_cmd(c, "HELO", cl_helo_name(c));
        return;
    }
    char why[WHY_MAX];
    snprintf(why, sizeof why, "%s host %s refused to talk to me: %s", code / 100 == 4 ? "4.3.0" : "4.4.1",
             c->remote, c->reply);
    cl_fail(c, why, true);
}

static bool keyword(const char *kw, size_t len, const char *name)
{
    size_t n = strlen(name);
    return len >= n && !strncasecmp(kw, name, n) && (len == n || kw[n] == ' ' || kw[n] == '=');
}

/* "AUTH PLAIN LOGIN" or the old "AUTH=PLAIN LOGIN": note what we can use. */
static void note_auth(struct smtp_client *c, const char *kw, size_t len)
{
    for (size_t i = 5; i < len;) {
        size_t e = i;
        while (e < len && kw[e] != ' ')
            e++;
        c->auth_plain |= e - i == 5 && !strncasecmp(kw + i, "PLAIN", 5);
        c->auth_login |= e - i == 5 && !strncasecmp(kw + i, "LOGIN", 5);
        i = e + 1;
    }
}

/* Note ESMTP keywords from EHLO reply lines. */
void cl_note_extension(struct smtp_client *c, const char *kw, size_t len)
{
    c->pipelining |= keyword(kw, len, "PIPELINING");
    c->size_ext |= keyword(kw, len, "SIZE");
    c->eightbit |= keyword(kw, len, "8BITMIME");
    c->smtputf8 |= keyword(kw, len, "SMTPUTF8");
    c->starttls |= keyword(kw, len, "STARTTLS");
    c->requiretls |= keyword(kw, len, "REQUIRETLS");
    c->dsn |= keyword(kw, len, "DSN");
    c->chunking |= keyword(kw, len, "CHUNKING");
    c->binarymime |= keyword(kw, len, "BINARYMIME");
    if (keyword(kw, len, "AUTH"))
        note_auth(c, kw, len);
}

static void forget_extensions(struct smtp_client *c)
{
    c->pipelining = c->size_ext = c->eightbit = c->smtputf8 = c->starttls = c->dsn = false;
    c->chunking = c->binarymime = c->auth_plain = c->auth_login = c->requiretls = false;
}

static void send_base64(struct smtp_client *c, const char *prefix, const char *data, size_t len)
{
    unsigned char enc[1024];
    if (len > 700)
        len = 700;      /* the table bounds user and password; this bounds the line */
    EVP_EncodeBlock(enc, (const unsigned char *)data, (int)len);
    buf_printf(&c->out, "%s%s\r\n", prefix, (const char *)enc);
    cl_set_deadline(c, client_cfg->client_timeout);
}

/* AUTH PLAIN (preferred) or LOGIN, only under TLS unless the table entry
 * allows plain text. */
static void auth_begin(struct smtp_client *c)
{
    const struct sasl_entry *a = c->peer.auth;
    char why[WHY_MAX];
    if (!c->auth_plain && !c->auth_login) {
        log_warn("%s offers no AUTH PLAIN or LOGIN; sending without authentication", c->where);
        cl_ready(c);
        return;
    }
    if (!c->ssl && !a->plaintext_ok) {
        snprintf(why, sizeof why, "4.7.0 not sending credentials to %s without TLS "
                 "(the smtp_sasl_password_maps entry does not say plaintext)", c->remote);
        cl_fail(c, why, true);
        return;
    }
    c->state = CL_AUTH;
    c->auth_step = 0;
    if (c->auth_plain) {
        char resp[600];
        int n = snprintf(resp, sizeof resp, "%c%s%c%s", 0, a->user, 0, a->password);
        send_base64(c, "AUTH PLAIN ", resp, n > 0 && (size_t)n < sizeof resp ? (size_t)n : 0);
        c->auth_step = 2;
    } else {
        cl_send_cmd(c, "AUTH LOGIN", NULL);
    }
}

static void on_auth_reply(struct smtp_client *c, int code)
{
    const struct sasl_entry *a = c->peer.auth;
    if (code == 235) {
        log_info("authenticated to %s as %s", c->where, a->user);
        cl_ready(c);
        return;
    }
    if (code == 334 && c->auth_step < 2) {
        const char *v = c->auth_step == 0 ? a->user : a->password;
        send_base64(c, "", v, strlen(v));
        c->auth_step++;
        return;
    }
    /* Postfix's smtp_sasl_auth_soft_bounce: an authentication failure defers */
    char why[WHY_MAX];
    snprintf(why, sizeof why, "4.7.0 SASL authentication failed; server %s said: %s", c->remote, c->reply);
    cl_fail(c, why, code != 334);
}

void cl_on_setup_reply(struct smtp_client *c, int code)
{
    char why[WHY_MAX];
    switch (c->state) {
    case CL_BANNER:
        if (reply_class(code) != 2) {
            snprintf(why, sizeof why, "%s host %s refused to talk to me: %s",
                     reply_class(code) == 4 ? "4.3.0" : "4.4.1", c->remote, c->reply);
            cl_fail(c, why, true);
            return;
        }
        if (loops_back(c))
            return;
        c->state = CL_EHLO;
        cl_send_cmd(c, c->peer.lmtp ? "LHLO" : "EHLO", cl_helo_name(c));
        return;
    case CL_EHLO:
    case CL_HELO:
        on_ehlo_reply(c, code);
        return;
    case CL_STARTTLS:
        if (code == 220) {
            tls_begin(c);
        } else if (c->peer.tls->level >= TLS_ENCRYPT) {
            tls_policy_failed(c->peer.tls->level, "starttls_refused");
            c->tls_result = "starttls-not-supported";
            snprintf(why, sizeof why, "4.7.5 TLS is required, but host %s refused STARTTLS: %.300s", c->remote,
                     c->reply);
            cl_fail(c, why, true);
        } else if (c->peer.auth) {
            auth_begin(c);    /* opportunistic: go on in plain text */
        } else {
            cl_ready(c);
        }
        return;
    case CL_AUTH:
        on_auth_reply(c, code);
        return;
    default:
        return;
    }
}

/* ---- TLS ---------------------------------------------------------- */

void cl_tls_step(struct smtp_client *c)
{
    int r = tls_handshake_step(c->ssl, &c->tls_want);
    if (r == 0) {
        ev_mod(&c->w, c->tls_want);
        return;
    }
    char labels[96];
    if (r == 1) {
        metric_inc(M_TLS_HANDSHAKES, metric_labels(labels, sizeof labels, "direction", "out", "result",
                                                   SSL_get_version(c->ssl), NULL));
        char desc[160];
        tls_describe(c->ssl, desc, sizeof desc);
        bool verified = SSL_get_verify_result(c->ssl) == X509_V_OK;
        char ip[64], dane[96] = "";
        sockaddr_ip_text((const struct sockaddr *)&c->peer.addr, ip, sizeof ip);
        if (c->peer.tls->level == TLS_DANE) {
            memcpy(dane, " by DANE: ", 10);
            dane_describe(c->ssl, dane + 10, sizeof dane - 10);
        }
        log_info("TLS to %s:%d%s%s: %s, certificate %s%s%s", ip, cl_peer_port(c), c->peer.name[0] ? " " : "",
                 c->peer.name, desc, verified ? "verified" : "not verified", dane,
                 SSL_session_reused(c->ssl) ? ", session resumed" : "");
        forget_extensions(c);       /* RFC 3207: EHLO again, extensions may differ under TLS */
        c->state = CL_EHLO;
        cl_send_cmd(c, "EHLO", cl_helo_name(c));
        cl_want_events(c);
        return;
    }
    metric_inc(M_TLS_HANDSHAKES, metric_labels(labels, sizeof labels, "direction", "out", "result", "failed", NULL));
    char why[WHY_MAX], ssl_err[200];
    long vr = SSL_get_verify_result(c->ssl);
    tls_last_error(ssl_err, sizeof ssl_err);
    bool dane = c->peer.tls->level == TLS_DANE;
    c->tls_result = tls_result_type(vr, dane);
    if (c->peer.tls->level >= TLS_ENCRYPT)
        tls_policy_failed(c->peer.tls->level, vr == X509_V_OK ? "handshake" : dane ? "dane_verification"
                                                                                 : "certificate_verification");
    if (vr != X509_V_OK && dane)
        snprintf(why, sizeof why, "4.7.5 DANE: no TLSA record of %s matches the certificate of %s: %s",
                 c->peer.tlsa->base, c->remote, X509_verify_cert_error_string(vr));
    else if (vr != X509_V_OK)
        snprintf(why, sizeof why, "4.7.5 TLS certificate verification failed for %s: %s", c->remote,
                 X509_verify_cert_error_string(vr));
    else
        snprintf(why, sizeof why, "4.7.5 TLS handshake with %s failed: %s", c->remote, ssl_err);
    if (c->peer.tls->level == TLS_MAY && c->peer.tls_broken)
        *c->peer.tls_broken = true;   /* opportunistic: the next attempt goes in plain text */
    cl_fail(c, why, false);
}

/* A failed handshake as an RFC 8460 4.3 result type. */
static const char *tls_result_type(long vr, bool dane)
{
    if (vr == X509_V_OK)
        return "validation-failure";
    if (dane)
        return "tlsa-invalid";
    if (vr == X509_V_ERR_HOSTNAME_MISMATCH)
        return "certificate-host-mismatch";
    if (vr == X509_V_ERR_CERT_HAS_EXPIRED || vr == X509_V_ERR_CERT_NOT_YET_VALID)
        return "certificate-expired";
    return "certificate-not-trusted";
}

const char *smtp_client_tls_result(const struct smtp_client *c) { return c->tls_result; }
const char *smtp_client_local_ip(const struct smtp_client *c) { return c->local_ip; }

bool smtp_client_tls_authenticated(const struct smtp_client *c)
{
    return c->ssl && c->peer.tls->level >= TLS_VERIFY && SSL_get_verify_result(c->ssl) == X509_V_OK;
}

/* Names the certificate must carry for "verify": match= or the host name. */
static int set_verify_names(struct smtp_client *c)
{
    char names[512];
    snprintf(names, sizeof names, "%s", c->peer.tls->match ? c->peer.tls->match : c->peer.name);
    if (!names[0])
        return -1;
    SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    int n = 0;
    char *save = NULL;
    for (char *name = strtok_r(names, ":", &save); name; name = strtok_r(NULL, ":", &save))
        n += SSL_add1_host(c->ssl, name) == 1;
    return n ? 0 : -1;
}

/* The session cache's key: where, what name, and how it is checked. DANE
 * connections never resume (their TLSA records can change between
 * connections; a resumed session would not be checked against them). */
static void offer_session(struct smtp_client *c)
{
    if (c->peer.tls->level >= TLS_DANE)
        return;
    char ip[64], key[512];
    sockaddr_ip_text((const struct sockaddr *)&c->peer.addr, ip, sizeof ip);
    snprintf(key, sizeof key, "%s|%d|%s|%d|%s", ip, cl_peer_port(c), c->peer.name, (int)c->peer.tls->level,
             c->peer.tls->match ? c->peer.tls->match : "");
    tls_sessions_offer(c->ssl, key);
}

static void tls_begin(struct smtp_client *c)
{
    c->ssl = SSL_new(tls_client_ctx());
    if (!c->ssl || SSL_set_fd(c->ssl, c->w.fd) != 1) {
        cl_fail(c, "4.7.5 cannot start TLS", false);
        return;
    }
    SSL_set_connect_state(c->ssl);
    if (c->peer.tls->level >= TLS_DANE) {
        if (!c->peer.tlsa || dane_ssl_setup(c->ssl, c->peer.tlsa) < 0) {
            cl_fail(c, "4.7.5 DANE: OpenSSL took none of the TLSA records", true);
            return;
        }
    } else if (c->peer.name[0]) {
        SSL_set_tlsext_host_name(c->ssl, c->peer.name);
    }
    if (c->peer.tls->level == TLS_VERIFY) {
        if (set_verify_names(c) < 0) {
            cl_fail(c, "4.7.5 TLS verify: no host name to check the certificate against (set match=)", true);
            return;
        }
        SSL_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
    }
    offer_session(c);
    c->state = CL_TLS;
    cl_tls_step(c);
}
