/* rcpt_settle.c - see rcpt_settle.h. */
#include "rcpt_settle.h"
#include <stdio.h>
#include <stdlib.h>

static int reply_class_of(int code) { return code / 100; }

int rcpt_settle_begin(struct rcpt_settle *s, struct delivery_rcpt *rcpts, size_t n, bool peer_dsn,
                      const char *remote, const char *where)
{
    *s = (struct rcpt_settle){.rcpts = rcpts, .n = n, .peer_dsn = peer_dsn, .remote = remote, .where = where};
    s->accepted = calloc(n ? n : 1, sizeof *s->accepted);
    return s->accepted ? 0 : -1;
}

void rcpt_settle_end(struct rcpt_settle *s)
{
    free(s->accepted);
    s->accepted = NULL;
}

void rcpt_settle_one(struct rcpt_settle *s, size_t k, int code, const char *text, const char *stage)
{
    struct delivery_rcpt *r = &s->rcpts[k];
    if (r->cls)
        return;
    int cls = reply_class_of(code);
    r->cls = cls == 2 ? 2 : cls == 5 ? 5 : 4;
    r->peer_dsn = s->peer_dsn;
    snprintf(r->reply, sizeof r->reply, "%s", text);
    /* a peer's reply names its command and its host; our own texts neither */
    snprintf(r->remote, sizeof r->remote, "%s", stage && s->remote ? s->remote : "");
    snprintf(r->relay, sizeof r->relay, "%s", stage && s->where ? s->where : "");
    snprintf(r->tls, sizeof r->tls, "%s", stage && s->tls ? s->tls : "");
    snprintf(r->in_reply_to, sizeof r->in_reply_to, "%s", stage ? stage : "");
}

void rcpt_settle_open(struct rcpt_settle *s, int code, const char *text, const char *stage)
{
    for (size_t k = 0; k < s->n; k++)
        rcpt_settle_one(s, k, code, text, stage);
}

void rcpt_settle_accepted(struct rcpt_settle *s, int code, const char *text, const char *stage)
{
    for (size_t k = 0; k < s->n; k++)
        if (s->accepted && s->accepted[k])
            rcpt_settle_one(s, k, code, text, stage);
}

void rcpt_settle_mail(struct rcpt_settle *s, int code, const char *text)
{
    if (reply_class_of(code) == 2)
        return;
    s->mail_failed = true;
    rcpt_settle_open(s, code, text, "MAIL FROM");
}

void rcpt_settle_rcpt(struct rcpt_settle *s, size_t k, int code, const char *text)
{
    if (s->mail_failed || k >= s->n)
        return;
    if (reply_class_of(code) == 2) {
        s->accepted[k] = true;
        s->naccepted++;
    } else {
        rcpt_settle_one(s, k, code, text, "RCPT TO");
    }
}

enum settle_data rcpt_settle_data(struct rcpt_settle *s, int code, const char *text)
{
    if (code == 354 && s->naccepted && !s->mail_failed)
        return SETTLE_SEND_BODY;
    if (code == 354) {         /* nobody accepted: end the data at once, its reply settles nothing */
        s->data_ignored = true;
        return SETTLE_SEND_EMPTY;
    }
    if (!s->mail_failed)
        rcpt_settle_accepted(s, code, text, "DATA");     /* DATA refused: only the accepted hear it */
    return SETTLE_DATA_REFUSED;
}

void rcpt_settle_data_end(struct rcpt_settle *s, int code, const char *text, const char *stage)
{
    if (!s->data_ignored)
        rcpt_settle_accepted(s, code, text, stage);
}

static void skip_refused(struct rcpt_settle *s)
{
    while (s->lmtp_next < s->n && !s->accepted[s->lmtp_next])
        s->lmtp_next++;
}

bool rcpt_settle_lmtp_data_end(struct rcpt_settle *s, int code, const char *text)
{
    skip_refused(s);
    if (s->lmtp_next < s->n)
        rcpt_settle_one(s, s->lmtp_next++, code, text, "end of DATA");
    skip_refused(s);
    return s->lmtp_next >= s->n;
}
