/* test_milter.c - a libmilter milter for the milter plugin's tests. What it
 * does is chosen by the message, so one process exercises every reply and
 * every modification:
 *   RCPT reject-rcpt@ / tempfail-rcpt@ / custom-rcpt@   reply at RCPT
 *   Subject: accept      SMFIS_ACCEPT at the headers (no more callbacks)
 *   Subject: mods        every modification at end of message
 *   Subject: discard | reject | tempfail | custom | quarantine | progress | hang
 *   Subject: count       adds X-Milter-Count: "messages M helos H aborts A" seen
 *                        on this milter connection (one per SMTP session)
 *   client 127.0.0.66    refused at connect; HELO bad-helo.test refused (550 5.7.8)
 * Usage: test-milter inet:PORT@HOST */
#include <libmilter/mfapi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

struct priv {
    char subject[64];
    int messages, helos, aborts;
};

static struct priv *priv(SMFICTX *ctx)
{
    struct priv *p = smfi_getpriv(ctx);
    if (!p) {
        p = calloc(1, sizeof *p);
        smfi_setpriv(ctx, p);
    }
    return p;
}

static sfsistat on_connect(SMFICTX *ctx, char *hostname, _SOCK_ADDR *sa)
{
    (void)hostname;
    priv(ctx);
    const char *addr = smfi_getsymval(ctx, "_");
    if (addr && strstr(addr, "127.0.0.66"))
        return SMFIS_REJECT;
    (void)sa;
    return SMFIS_CONTINUE;
}

static sfsistat on_helo(SMFICTX *ctx, char *helo)
{
    priv(ctx)->helos++;
    if (!strcasecmp(helo, "bad-helo.test")) {
        smfi_setreply(ctx, "550", "5.7.8", "helo refused by the test milter");
        return SMFIS_REJECT;
    }
    return SMFIS_CONTINUE;
}

static sfsistat on_mail(SMFICTX *ctx, char **argv)
{
    (void)argv;
    priv(ctx)->messages++;
    return SMFIS_CONTINUE;
}

static sfsistat on_rcpt(SMFICTX *ctx, char **argv)
{
    const char *r = argv[0];
    if (strstr(r, "reject-rcpt@"))
        return SMFIS_REJECT;
    if (strstr(r, "tempfail-rcpt@"))
        return SMFIS_TEMPFAIL;
    if (strstr(r, "custom-rcpt@")) {
        smfi_setreply(ctx, "550", "5.7.9", "custom rcpt refusal from the test milter");
        return SMFIS_REJECT;
    }
    return SMFIS_CONTINUE;
}

static sfsistat on_header(SMFICTX *ctx, char *name, char *value)
{
    if (!strcasecmp(name, "Subject")) {
        snprintf(priv(ctx)->subject, sizeof priv(ctx)->subject, "%s", value);
        if (!strcmp(value, "accept"))
            return SMFIS_ACCEPT;
    }
    return SMFIS_CONTINUE;
}

static sfsistat modify(SMFICTX *ctx)
{
    smfi_addheader(ctx, "X-Milter-Added", "added at the end");
    smfi_insheader(ctx, 0, "X-Milter-Top", "inserted at the top");
    smfi_chgheader(ctx, "Subject", 1, "changed by the milter");
    smfi_chgheader(ctx, "X-Remove-Me", 1, NULL);
    const char *body = "replaced body\r\nsecond line\r\n";
    smfi_replacebody(ctx, (unsigned char *)body, (int)strlen(body));
    smfi_addrcpt(ctx, "<added@example.test>");
    smfi_delrcpt(ctx, "<del@example.test>");
    smfi_chgfrom(ctx, "<new-sender@milter.test>", NULL);
    return SMFIS_CONTINUE;
}

static sfsistat on_eom(SMFICTX *ctx)
{
    const char *s = priv(ctx)->subject;
    if (!strcmp(s, "mods"))
        return modify(ctx);
    if (!strcmp(s, "discard"))
        return SMFIS_DISCARD;
    if (!strcmp(s, "reject"))
        return SMFIS_REJECT;
    if (!strcmp(s, "tempfail"))
        return SMFIS_TEMPFAIL;
    if (!strcmp(s, "custom")) {
        smfi_setreply(ctx, "554", "5.7.2", "custom refusal at end of message");
        return SMFIS_REJECT;
    }
    if (!strcmp(s, "quarantine")) {
        smfi_quarantine(ctx, "held by the test milter");
        return SMFIS_CONTINUE;
    }
    if (!strcmp(s, "progress")) {
        smfi_progress(ctx);
        sleep(1);
        smfi_progress(ctx);
        return SMFIS_CONTINUE;
    }
    if (!strcmp(s, "hang"))
        sleep(30);
    if (!strcmp(s, "count")) {
        char v[100];
        snprintf(v, sizeof v, "messages %d helos %d aborts %d", priv(ctx)->messages, priv(ctx)->helos,
                 priv(ctx)->aborts);
        smfi_addheader(ctx, "X-Milter-Count", v);
    }
    return SMFIS_CONTINUE;
}

static sfsistat on_close(SMFICTX *ctx)
{
    free(smfi_getpriv(ctx));
    smfi_setpriv(ctx, NULL);
    return SMFIS_CONTINUE;
}

static sfsistat on_abort(SMFICTX *ctx)
{
    priv(ctx)->subject[0] = '\0';
    priv(ctx)->aborts++;
    return SMFIS_CONTINUE;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test-milter inet:PORT@HOST\n");
        return 2;
    }
    struct smfiDesc desc = {
        .xxfi_name = "postern-test-milter",
        .xxfi_version = SMFI_VERSION,
        .xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_CHGBODY | SMFIF_ADDRCPT | SMFIF_DELRCPT |
                      SMFIF_QUARANTINE | SMFIF_CHGFROM,
        .xxfi_connect = on_connect,
        .xxfi_helo = on_helo,
        .xxfi_envfrom = on_mail,
        .xxfi_envrcpt = on_rcpt,
        .xxfi_header = on_header,
        .xxfi_eom = on_eom,
        .xxfi_abort = on_abort,
        .xxfi_close = on_close,
    };
    if (smfi_setconn(argv[1]) == MI_FAILURE || smfi_register(desc) == MI_FAILURE) {
        fprintf(stderr, "test-milter: cannot set up %s\n", argv[1]);
        return 1;
    }
    return smfi_main() == MI_SUCCESS ? 0 : 1;
}
