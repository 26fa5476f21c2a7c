/* smtp_stage.c - a session's trips through the hook chain: run a stage
 * (the session pauses until the chain answers), and what a verdict means
 * at a command stage; refusals logged with Postfix's NOQUEUE fields and
 * recorded for message tracking. */
#include "smtp_session.h"
#include "track.h"
#include "metrics.h"
#include "hooks.h"
#include "runtime.h"
#include "log.h"
#include "netaddr.h"
#include "relay_control.h"
#include "tls.h"
#include "kv.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- hook stages -------------------------------------------------- */

static void stage_finished(void *ctx, postern_verdict v)
{
    struct session *s = ctx;
    s->busy = false;
    if (s->dead) {
        message_abort(s);
        session_free(s);
        return;
    }
    s->phase = s->saved_phase;
    session_set_timeout(s);          /* time spent in the chain is not the client's */
    stage_then then = s->then;
    then(s, v);
    /* finished later (worker, or a Lua run that gave the loop back): pick
     * up the input; finished at once: run_stage's caller goes on itself */
    if (!s->in_stage_call && s->phase != PH_HOOK && s->phase != PH_COMMIT)
        session_resume(s);
}

/* Run the chain for a stage, then `then`. Without interested plugins this
 * is a direct call; otherwise input pauses until the worker is done. */
void session_run_stage(struct session *s, enum postern_stage st, const char *arg, size_t len, stage_then then)
{
    if (!hooks_wanted(&s->tx, st)) {
        s->tx.stage = st;
        then(s, POSTERN_CONTINUE);
        return;
    }
    s->saved_phase = s->phase;
    s->phase = PH_HOOK;
    s->busy = true;
    s->then = then;
    s->in_stage_call++;
    hooks_run_async(st, &s->tx, arg, len, stage_finished, s);
    s->in_stage_call--;
}

/* Postfix's NOQUEUE fields for a refusal at stage st: "from=<…> to=<…>
 * proto=ESMTP helo=<…>", with the address the command under judgement
 * names (MAIL, RCPT) or the transaction's (at most 8 recipients, then a
 * count). */
void session_envelope_fields(const struct session *s, enum postern_stage st, char *out, size_t size)
{
    const char *from = st == POSTERN_STAGE_MAIL ? s->hook_arg : s->tx.sender;
    size_t n = 0;
    if (from && st >= POSTERN_STAGE_MAIL)
        n += (size_t)snprintf(out + n, size - n, "from=<%s> ", from);
    if (st == POSTERN_STAGE_RCPT && n < size)
        n += (size_t)snprintf(out + n, size - n, "to=<%s> ", s->hook_arg);
    for (size_t i = 0; st > POSTERN_STAGE_RCPT && i < s->tx.nrcpts && i < 8 && n < size; i++)
        n += (size_t)snprintf(out + n, size - n, "to=<%s> ", s->tx.rcpts[i].addr);
    if (st > POSTERN_STAGE_RCPT && s->tx.nrcpts > 8 && n < size)
        n += (size_t)snprintf(out + n, size - n, "(%zu more recipients) ", s->tx.nrcpts - 8);
    if (n < size)
        snprintf(out + n, size - n, "proto=%s helo=<%s>", s->esmtp ? "ESMTP" : "SMTP", s->tx.helo);
}

void session_track_refusal(const struct session *s, enum postern_stage st, const char *reply, const char *link)
{
    struct track_event e = {.status = "rejected", .from = st == POSTERN_STAGE_MAIL ? s->hook_arg : s->tx.sender,
                            .client = s->tx.client_ip, .helo = s->tx.helo, .stage = stage_name(st), .link = link,
                            .reply = reply, .session = s->sid};
    if (st < POSTERN_STAGE_MAIL)
        e.from = NULL;
    if (st == POSTERN_STAGE_RCPT)
        e.to = s->hook_arg;
    if (st <= POSTERN_STAGE_RCPT || !s->tx.nrcpts) {
        track_event(&e);
        return;
    }
    for (size_t i = 0; i < s->tx.nrcpts; i++) {      /* refused after RCPT: each recipient's record */
        e.to = s->tx.rcpts[i].addr;
        track_event(&e);
    }
}

void session_log_verdict(struct session *s, enum postern_stage st, postern_verdict v)
{
    char labels[300], fields[3000];
    metric_inc(M_VERDICTS, metric_labels(labels, sizeof labels, "stage", stage_name(st), "verdict", verdict_name(v),
                                         "link", s->tx.verdict_by ? s->tx.verdict_by : "?", NULL));
    session_envelope_fields(s, st, fields, sizeof fields);
    log_info("S%lu: %s%s%s: %s by %s at %s: %s; %s", s->sid, s->tx.qid[0] ? s->tx.qid : "", s->tx.qid[0] ? " " : "",
             s->tx.client_ip, verdict_name(v), s->tx.verdict_by ? s->tx.verdict_by : "?", stage_name(st),
             s->tx.reply, fields);
}

/* For command stages: REJECT/TEMPFAIL answer the command and return false;
 * DISCARD/QUARANTINE mark the transaction and let the command proceed. */
bool session_verdict_proceeds(struct session *s, enum postern_stage st, postern_verdict v)
{
    switch (v) {
    case POSTERN_REJECT:
    case POSTERN_TEMPFAIL:
        session_log_verdict(s, st, v);
        session_track_refusal(s, st, s->tx.reply, s->tx.verdict_by);
        session_reply(s, s->tx.reply);
        return false;
    case POSTERN_DISCARD:
        session_log_verdict(s, st, v);
        if (st <= POSTERN_STAGE_HELO) {
            s->session_discard = true;
            s->session_verdict_by = s->tx.verdict_by;
            decisions_copy(&s->session_decisions, s->tx.decisions);
        }
        s->tx.discard = true;
        return true;
    case POSTERN_QUARANTINE:
        session_log_verdict(s, st, v);
        if (st <= POSTERN_STAGE_HELO) {
            s->session_quarantine = true;
            s->session_verdict_by = s->tx.verdict_by;
            decisions_copy(&s->session_decisions, s->tx.decisions);
            free(s->session_reason);
            s->session_reason = strdup(s->tx.reply);
        }
        s->tx.quarantine = true;
        snprintf(s->tx.hold_reason, sizeof s->tx.hold_reason, "%.250s", s->tx.reply);
        return true;
    default:
        return true;
    }
}

