/* dsn.c - builds bounce and delay DSNs: a text/plain part for people, a
 * message/delivery-status part for programs, the original headers as
 * text/rfc822-headers. Sent from the null sender so they can never bounce. */
#include "dsn.h"
#include "smtp_parse.h"
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static void rfc5322_date(int64_t t, char *out, size_t n)
{
    time_t tt = (time_t)t;
    struct tm tm;
    localtime_r(&tt, &tm);
    strftime(out, n, "%a, %d %b %Y %H:%M:%S %z", &tm);
}

static bool is_digit3(const char *s)
{
    return isdigit((unsigned char)s[0]) && isdigit((unsigned char)s[1]) && isdigit((unsigned char)s[2]);
}

void dsn_status(const char *reply, const char *fallback, char out[16])
{
    const char *p = reply;
    if (is_digit3(p) && (p[3] == ' ' || p[3] == '-'))
        p += 4;
    /* an enhanced code: class.subject.detail with class 2, 4 or 5 */
    int cls, subj, det, used = 0;
    if (sscanf(p, "%1d.%3d.%3d%n", &cls, &subj, &det, &used) == 3 && (cls == 2 || cls == 4 || cls == 5) &&
        (p[used] == ' ' || p[used] == '\0')) {
        snprintf(out, 16, "%d.%d.%d", cls, subj, det);
        return;
    }
    if (is_digit3(reply) && (reply[0] == '4' || reply[0] == '5')) {
        snprintf(out, 16, "%c.0.0", reply[0]);
        return;
    }
    snprintf(out, 16, "%s", fallback);
}

/* Diagnostic-Code: "smtp; ..." for a remote reply, our own type otherwise. */
static void diagnostic(struct buf *out, const char *reply)
{
    if (is_digit3(reply))
        buf_printf(out, "Diagnostic-Code: smtp; %s\r\n", reply);
    else
        buf_printf(out, "Diagnostic-Code: X-Postern; %s\r\n", reply);
}

static const char *const kind_text[] = {
    [DSN_FAILED] = "Your message could not be delivered to one or more recipients.\r\n"
                   "It has been returned to you; the reasons are below.\r\n\r\n",
    [DSN_DELAYED] = "####################################################################\r\n"
                    "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r\n"
                    "####################################################################\r\n\r\n",
    [DSN_RELAYED] = "Your message was relayed to the recipients below, as you asked. The next\r\n"
                    "mail system does not report delivery status, so no further notice will\r\n"
                    "follow from there.\r\n\r\n",
};
static const char *const kind_action[] = {[DSN_FAILED] = "failed", [DSN_DELAYED] = "delayed",
                                          [DSN_RELAYED] = "relayed"};
static const char *const kind_status[] = {[DSN_FAILED] = "5.0.0", [DSN_DELAYED] = "4.0.0",
                                          [DSN_RELAYED] = "2.0.0"};
static const char *const kind_subject[] = {[DSN_FAILED] = "Undelivered Mail Returned to Sender",
                                           [DSN_DELAYED] = "Delayed Mail (still being retried)",
                                           [DSN_RELAYED] = "Successful Mail Relay Report"};
static const char *const kind_tag[] = {[DSN_FAILED] = "bounce", [DSN_DELAYED] = "delay",
                                       [DSN_RELAYED] = "relayed"};

/* A DSN field holding an xtext value from the envelope, decoded; values
 * that do not decode to printable ASCII are given as received. */
static void xtext_field(struct buf *out, const char *name, const char *type, const char *xtext)
{
    char dec[DSN_MAX_ORCPT + 1];
    int n = xtext_decode(xtext, dec, sizeof dec);
    for (int i = 0; i < n; i++)
        if ((unsigned char)dec[i] < 32 || (unsigned char)dec[i] > 126)
            n = -1;
    buf_printf(out, "%s: %s%s%s\r\n", name, type ? type : "", type ? ";" : "", n >= 0 ? dec : xtext);
}

/* Original-Recipient: the ORCPT type and its decoded address. */
static void orcpt_field(struct buf *out, const char *orcpt)
{
    char type[64];
    size_t tl = strcspn(orcpt, ";");
    if (!orcpt[tl] || tl >= sizeof type)
        return;
    memcpy(type, orcpt, tl);
    type[tl] = '\0';
    if (!strcasecmp(type, "utf-8"))
        buf_printf(out, "Original-Recipient: %s\r\n", orcpt);
    else
        xtext_field(out, "Original-Recipient", type, orcpt + tl + 1);
}

/* "4.0 hours", "2.0 days", "45 seconds": how Postfix's notices say it. */
static void duration_text(int64_t secs, char *out, size_t n)
{
    if (secs < 120)
        snprintf(out, n, "%lld seconds", (long long)secs);
    else if (secs < 7200)
        snprintf(out, n, "%.1f minutes", (double)secs / 60);
    else if (secs < 86400)
        snprintf(out, n, "%.1f hours", (double)secs / 3600);
    else
        snprintf(out, n, "%.1f days", (double)secs / 86400);
}

static bool has(const char *s) { return s && s[0]; }

static void human_part(const struct dsn_report *r, struct buf *out)
{
    buf_puts(out, "Content-Type: text/plain; charset=us-ascii\r\nContent-Description: Notification\r\n\r\n");
    buf_printf(out, "This is the mail system at host %s.\r\n\r\n", r->reporting_mta);
    buf_puts(out, kind_text[r->kind]);
    if (r->kind == DSN_DELAYED) {
        char waited[64], until[64];
        duration_text(r->now - r->arrival, waited, sizeof waited);
        duration_text(r->lifetime, until, sizeof until);
        buf_printf(out, "Your message could not be delivered for %s.\r\nIt will be retried until it is %s old.\r\n\r\n",
                   waited, until);
    }
    for (size_t i = 0; i < r->nrcpts; i++) {
        const struct dsn_rcpt *d = &r->rcpts[i];
        buf_printf(out, "<%s>: ", d->addr);
        if (has(d->remote))
            buf_printf(out, "host %s said: ", d->remote);
        buf_puts(out, d->last_reply);
        if (has(d->remote) && has(d->in_reply_to))
            buf_printf(out, " (in reply to %s command)", d->in_reply_to);
        buf_puts(out, "\r\n");
    }
    buf_puts(out, "\r\n");
}

/* Remote-MTA: the host name part of "host[ip]". */
static void remote_mta_field(struct buf *out, const char *remote)
{
    if (!has(remote))
        return;
    size_t n = strcspn(remote, "[");
    buf_printf(out, "Remote-MTA: dns; %.*s\r\n", (int)n, remote);
}

static void status_part(const struct dsn_report *r, struct buf *out)
{
    char date[64];
    buf_puts(out, "Content-Type: message/delivery-status\r\nContent-Description: Delivery report\r\n\r\n");
    rfc5322_date(r->arrival, date, sizeof date);
    if (r->envid && r->envid[0])
        xtext_field(out, "Original-Envelope-Id", NULL, r->envid);
    buf_printf(out, "Reporting-MTA: dns; %s\r\nX-Postern-Queue-ID: %s\r\nArrival-Date: %s\r\n",
               r->reporting_mta, r->queue_id, date);
    rfc5322_date(r->now, date, sizeof date);
    for (size_t i = 0; i < r->nrcpts; i++) {
        char status[16];
        dsn_status(r->rcpts[i].last_reply, kind_status[r->kind], status);
        if (r->kind == DSN_RELAYED && status[0] != '2')   /* relayed: the 2xx reply's code */
            snprintf(status, sizeof status, "%s", kind_status[r->kind]);
        buf_puts(out, "\r\n");
        if (r->rcpts[i].orcpt)
            orcpt_field(out, r->rcpts[i].orcpt);
        buf_printf(out, "Final-Recipient: rfc822; %s\r\nAction: %s\r\nStatus: %s\r\n", r->rcpts[i].addr,
                   kind_action[r->kind], status);
        remote_mta_field(out, r->rcpts[i].remote);
        diagnostic(out, r->rcpts[i].last_reply);
        buf_printf(out, "Last-Attempt-Date: %s\r\n", date);
        if (r->kind == DSN_DELAYED) {
            char until[64];
            rfc5322_date(r->arrival + r->lifetime, until, sizeof until);
            buf_printf(out, "Will-Retry-Until: %s\r\n", until);
        }
    }
    buf_puts(out, "\r\n");
}

int dsn_build(const struct dsn_report *r, struct buf *out)
{
    char date[64], boundary[128];
    rfc5322_date(r->now, date, sizeof date);
    snprintf(boundary, sizeof boundary, "%s.%lld/%s", r->queue_id, (long long)r->now, r->reporting_mta);
    buf_printf(out, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", r->reporting_mta);
    buf_printf(out, "To: <%s>\r\n", r->orig_sender);
    buf_printf(out, "Subject: %s\r\n", kind_subject[r->kind]);
    buf_printf(out, "Date: %s\r\nMessage-ID: <%s.%s.%lld@%s>\r\nAuto-Submitted: auto-replied\r\n", date,
               r->queue_id, kind_tag[r->kind], (long long)r->now, r->reporting_mta);
    buf_printf(out, "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n"
                    "\tboundary=\"%s\"\r\n\r\nThis is a MIME-encapsulated message.\r\n\r\n", boundary);
    buf_printf(out, "--%s\r\n", boundary);
    human_part(r, out);
    buf_printf(out, "--%s\r\n", boundary);
    status_part(r, out);
    buf_printf(out, "--%s\r\n", boundary);
    if (r->message && r->kind == DSN_FAILED) {     /* RET=FULL */
        buf_puts(out, "Content-Type: message/rfc822\r\nContent-Description: Undelivered Message\r\n\r\n");
        buf_append(out, r->message, r->message_len);
        if (r->message_len < 2 || memcmp(r->message + r->message_len - 2, "\r\n", 2))
            buf_puts(out, "\r\n");
    } else {
        buf_printf(out, "Content-Type: text/rfc822-headers\r\nContent-Description: %s Message Headers\r\n\r\n",
                   r->kind == DSN_RELAYED ? "Relayed" : "Undelivered");
    }
    if (!(r->message && r->kind == DSN_FAILED) && r->headers && r->headers_len) {
        buf_append(out, r->headers, r->headers_len);
        if (r->headers_len < 2 || memcmp(r->headers + r->headers_len - 2, "\r\n", 2))
            buf_puts(out, "\r\n");
    }
    buf_printf(out, "\r\n--%s--\r\n", boundary);
    return out->data ? 0 : -1;
}
