/* smtp_proxy.c - a proxy in front presents the real client: XCLIENT
 * (Postfix's extension, from xclient_networks) and the PROXY protocol v1/v2
 * (on proxy_listen). Either way the session then greets the presented client
 * as if it had connected itself. */
#include "smtp_session.h"
#include "log.h"
#include "netaddr.h"
#include "proxy_proto.h"
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* XCLIENT (Postfix's extension): a trusted proxy or test tool presents the
 * original client. Everything after it (relay control, plugins, Lua, the
 * Received header) sees the presented client; the session restarts with a
 * new CONNECT stage and greeting. */
/* An XCLIENT value: xtext that decodes to printable ASCII without spaces. */
static int xclient_value_decode(const char *in, char *out, size_t size)
{
    int n = xtext_decode(in, out, size);
    for (int i = 0; i < n; i++)
        if ((unsigned char)out[i] < 33 || (unsigned char)out[i] > 126)
            return -1;
    return n < 0 ? -1 : 0;
}

/* What XCLIENT presents; applied only when every attribute parsed. */
struct xclient_view {
    struct sockaddr_storage addr;
    char name[256], helo[256], login[256];
    bool esmtp;
};

static const char *xclient_attr(struct xclient_view *x, const char *name, const char *value)
{
    bool unavailable = !strcmp(value, "[UNAVAILABLE]") || !strcmp(value, "[TEMPUNAVAIL]");
    if (!strcasecmp(name, "ADDR")) {
        const char *ip = strncasecmp(value, "IPV6:", 5) ? value : value + 5;
        socklen_t len;
        if (!unavailable && ip_parse(ip, 0, &x->addr, &len) < 0)
            return "501 5.5.4 Bad XCLIENT ADDR syntax";
    } else if (!strcasecmp(name, "NAME")) {
        snprintf(x->name, sizeof x->name, "%.250s%s", unavailable ? "" : value, unavailable ? "" : " ");
    } else if (!strcasecmp(name, "HELO")) {
        snprintf(x->helo, sizeof x->helo, "%.255s", unavailable ? "" : value);
    } else if (!strcasecmp(name, "PROTO")) {
        if (strcasecmp(value, "SMTP") && strcasecmp(value, "ESMTP") && !unavailable)
            return "501 5.5.4 Bad XCLIENT PROTO syntax";
        x->esmtp = !strcasecmp(value, "ESMTP");
    } else if (!strcasecmp(name, "LOGIN")) {
        snprintf(x->login, sizeof x->login, "%.255s", unavailable ? "" : value);
    } else if (strcasecmp(name, "PORT") && strcasecmp(name, "DESTADDR") && strcasecmp(name, "DESTPORT")) {
        return "501 5.5.4 Bad XCLIENT attribute name";
    }
    return NULL;
}

/* Parse every attribute into x (which starts as the current view). */
static const char *xclient_parse(char *args, struct xclient_view *x)
{
    char *save = NULL;
    for (char *tok = strtok_r(args, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(tok, '='), value[512];
        if (!eq || eq == tok || xclient_value_decode(eq + 1, value, sizeof value) < 0)
            return "501 5.5.4 Bad XCLIENT attribute syntax";
        *eq = '\0';
        const char *err = xclient_attr(x, tok, value);
        if (err)
            return err;
    }
    return NULL;
}

void smtp_cmd_xclient(struct session *s, const char *args)
{
    if (!s->xclient_allowed) {
        log_info("S%lu: XCLIENT refused from [%s]", s->sid, s->tx.client_ip);
        session_reply(s, "550 5.7.0 Error: insufficient authorization");
        return;
    }
    if (s->in_mail) {
        session_reply(s, "503 5.5.1 Error: MAIL transaction in progress");
        return;
    }
    if (!*args) {
        session_reply(s, "501 5.5.4 Syntax: XCLIENT attribute=value...");
        return;
    }
    char copy[1024];
    snprintf(copy, sizeof copy, "%s", args);
    struct xclient_view x = {.addr = s->peer, .esmtp = s->esmtp};
    snprintf(x.name, sizeof x.name, "%s", s->client_name ? s->client_name : "");
    snprintf(x.helo, sizeof x.helo, "%s", s->tx.helo);
    snprintf(x.login, sizeof x.login, "%s", s->tx.auth_user);
    const char *err = xclient_parse(copy, &x);
    if (err) {
        session_reply(s, err);
        return;
    }
    char was[sizeof s->tx.client_ip];
    snprintf(was, sizeof was, "%s", s->tx.client_ip);
    session_txn_restart(s);
    s->peer = x.addr;
    sockaddr_ip_text((struct sockaddr *)&x.addr, s->tx.client_ip, sizeof s->tx.client_ip);
    free(s->client_name);
    s->client_name = x.name[0] ? strdup(x.name) : NULL;
    memcpy(s->tx.helo, x.helo, sizeof s->tx.helo);
    memcpy(s->tx.auth_user, x.login, sizeof s->tx.auth_user);
    s->esmtp = x.esmtp;
    s->helo_done = false;
    log_info("S%lu: XCLIENT: client [%s] presents [%s]%s%s", s->sid, was, s->tx.client_ip,
             x.login[0] ? " login=" : "", x.login);
    session_greet(s);
}

/* PROXY protocol (proxy_listen): the header names the real client, who
 * then gets the greeting; anything that is not a valid header closes the
 * connection without a word (it is not an SMTP client we can talk to). */
void proxy_header_process(struct session *s)
{
    struct proxy_header h;
    int n = proxy_parse((const unsigned char *)buf_head(&s->in), s->in.len, &h);
    if (n == 0)
        return;
    if (n < 0) {
        log_info("S%lu: bad PROXY protocol header from [%s]: connection closed", s->sid, s->tx.client_ip);
        session_close(s);
        return;
    }
    buf_consume(&s->in, (size_t)n);
    char was[64];
    snprintf(was, sizeof was, "%s", s->tx.client_ip);
    if (h.has_source) {
        char ip[64];
        sockaddr_ip_text((struct sockaddr *)&h.source, ip, sizeof ip);
        const char *refusal = smtp_connection_refusal(&h.source, ip, true);
        if (refusal) {
            log_info("S%lu: refused connection from [%s] via PROXY [%s]: %.*s", s->sid, ip, was,
                     (int)strlen(refusal) - 2, refusal);
            buf_puts(&s->out, refusal);
            session_close_after_reply(s);
            session_flush(s);
            return;
        }
        s->peer = h.source;
        s->xclient_allowed = config_allows_xclient(s->cfg, (struct sockaddr *)&h.source);
        snprintf(s->tx.client_ip, sizeof s->tx.client_ip, "%s", ip);
    }
    log_info("S%lu: PROXY v%d from [%s]: client [%s]", s->sid, h.version, was, s->tx.client_ip);
    s->phase = PH_COMMAND;
    session_set_timeout(s);
    session_greet(s);
}
