/* smtp_greet.c - a session's greeting: the CONNECT stage of the hook
 * chain, a refusal at the door (554/421, then hang up), and postscreen's
 * pregreet test. Before the final 220, a client that talks is a bot that
 * does not wait for the server: it is refused and disconnected. With
 * pregreet_banner the first line of a multi-line greeting goes out at
 * once, which catches the bots that talk as soon as they see "220". The
 * wait is a tick-driven timer (smtp_server_tick): nothing blocks. Trusted
 * networks, XCLIENT proxies and implicit TLS (the handshake already proves
 * patience) are exempt. */
#include "log.h"
#include "smtp_session.h"
#include <stdio.h>
#include <string.h>

static void connect_then(struct session *s, postern_verdict v);

void session_greet(struct session *s)
{
    session_run_stage(s, POSTERN_STAGE_CONNECT, NULL, 0, connect_then);
}

static bool pregreet_applies(const struct session *s)
{
    return s->cfg->pregreet_wait > 0 && !s->implicit_tls && !s->xclient_allowed &&
           !config_is_trusted(s->cfg, (const struct sockaddr *)&s->peer);
}

static void greet_wait_start(struct session *s)
{
    if (s->cfg->pregreet_banner)
        session_replyf(s, "220-%s ESMTP Postern", s->cfg->hostname);
    s->phase = PH_GREET;
    s->wait_until_ms = ev_now_ms() + (uint64_t)s->cfg->pregreet_wait * 1000;
    s->deadline_ms = s->wait_until_ms + (uint64_t)s->cfg->smtp_timeout * 1000;
}

static void connect_then(struct session *s, postern_verdict v)
{
    s->greeted = true;
    if (v == POSTERN_REJECT || v == POSTERN_TEMPFAIL) {
        session_log_verdict(s, POSTERN_STAGE_CONNECT, v);
        /* refused at the door: say so and hang up */
        const char *reply = v == POSTERN_TEMPFAIL && strncmp(s->tx.reply, "421", 3) ? "421 4.7.0 Try again later"
                                                                                     : s->tx.reply;
        session_track_refusal(s, POSTERN_STAGE_CONNECT, reply, s->tx.verdict_by);
        session_reply(s, reply);
        session_close_after_reply(s);
        return;
    }
    session_verdict_proceeds(s, POSTERN_STAGE_CONNECT, v);
    if (pregreet_applies(s)) {
        greet_wait_start(s);
        return;
    }
    session_replyf(s, "220 %s ESMTP Postern", s->cfg->hostname);
}

/* Input during the wait. */
void smtp_pregreet_caught(struct session *s)
{
    char first[80];
    size_t n = strcspn(buf_head(&s->in), "\r\n");
    snprintf(first, sizeof first, "%.*s", (int)(n < s->in.len ? n : s->in.len), buf_head(&s->in));
    mask_control_bytes(first, strlen(first), false);
    log_info("S%lu: PREGREET %zu byte(s) from [%s] before the greeting: %s", s->sid, s->in.len, s->tx.client_ip,
             first);
    buf_consume(&s->in, s->in.len);
    session_reply(s, "554 5.5.1 Protocol error: talking before the greeting");
    session_close_after_reply(s);
}

void smtp_greet_wait_end(struct session *s)
{
    s->phase = PH_COMMAND;
    session_set_timeout(s);
    session_replyf(s, "220 %s ESMTP Postern", s->cfg->hostname);
    session_flush(s);
}
