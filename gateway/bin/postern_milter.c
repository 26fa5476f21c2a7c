/* milter_server.c - postern-milter: Postern's plugin chain and Lua policies
 * as a milter (libmilter) inside an existing Postfix or Sendmail.
 *
 *   postern-milter -c postern.conf -p inet:8890@127.0.0.1
 *   (Postfix: smtpd_milters = inet:127.0.0.1:8890)
 *
 * The config is posternd's (plugins, plugin options, Lua, dns_server,
 * hostname); listeners, spool and delivery settings are not used. Each
 * milter callback runs its stage through the chain on libmilter's thread
 * (hooks_run_sync). Verdicts become milter replies (REJECT / TEMPFAIL with
 * the plugin's reply text, DISCARD, QUARANTINE -> smfi_quarantine), and at
 * end of message every change the chain made becomes a milter action: header
 * changes (by name and occurrence), added headers, a replaced body, added
 * and removed recipients, a changed sender. QUEUE and DELIVER stages belong
 * to the MTA's queue and do not run here.
 */
#include "config.h"
#include "dns.h"
#include "headers.h"
#include "hooks.h"
#include "log.h"
#include "txn.h"
#include "postern_lua.h"
#include <arpa/inet.h>
#include <libmilter/mfapi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

static struct config cfg;

/* One milter connection (an SMTP session at the MTA). */
struct conn {
    txn_t tx;
    struct varmap session_vars;
    struct txn_slot *session_slots;
    struct header_list original;   /* the headers as the MTA passed them */
    char **orig_rcpts;
    size_t norig_rcpts;
    char orig_sender[512];
    bool quarantine;
};

static struct conn *conn_of(SMFICTX *ctx) { return smfi_getpriv(ctx); }

/* ---- verdicts -> milter replies ---- */

static sfsistat reply_with(SMFICTX *ctx, const char *reply, const char *fallback)
{
    /* "550 5.7.1 text": code, enhanced code, text */
    char code[4] = "", xcode[32] = "";
    const char *text = reply;
    if (strlen(reply) >= 3 && sscanf(reply, "%3[0-9]", code) == 1) {
        text = reply + 3 + (reply[3] == ' ' || reply[3] == '-');
        if (sscanf(text, "%31[0-9.]", xcode) == 1 && strchr(xcode, '.')) {
            text += strlen(xcode);
            text += *text == ' ';
        } else {
            xcode[0] = '\0';
        }
    }
    if (!code[0] || code[0] != fallback[0])
        snprintf(code, sizeof code, "%s", fallback);
    smfi_setreply(ctx, code, xcode[0] ? xcode : NULL, (char *)(*text ? text : "Policy"));
    return code[0] == '5' ? SMFIS_REJECT : SMFIS_TEMPFAIL;
}

static sfsistat to_milter(SMFICTX *ctx, struct conn *c, postern_verdict v)
{
    switch (v) {
    case POSTERN_REJECT:
        return reply_with(ctx, c->tx.reply, "550");
    case POSTERN_TEMPFAIL:
    case POSTERN_ERROR:
        return reply_with(ctx, c->tx.reply, "451");
    case POSTERN_DISCARD:
        return SMFIS_DISCARD;
    case POSTERN_QUARANTINE:
        c->quarantine = true;   /* applied at end of message, the only place milters may */
        snprintf(c->tx.hold_reason, sizeof c->tx.hold_reason, "%.250s", c->tx.reply);
        return SMFIS_CONTINUE;
    default:
        return SMFIS_CONTINUE;
    }
}

static sfsistat run(SMFICTX *ctx, enum postern_stage st, const char *arg, size_t len)
{
    struct conn *c = conn_of(ctx);
    if (!c)
        return SMFIS_TEMPFAIL;
    return to_milter(ctx, c, hooks_run_sync(st, &c->tx, arg, len));
}

/* ---- callbacks ---- */

static void message_reset(struct conn *c)
{
    if (c->tx.data_fd >= 0)
        close(c->tx.data_fd);
    txn_reset(&c->tx);
    headers_free(&c->original);
    for (size_t i = 0; i < c->norig_rcpts; i++)
        free(c->orig_rcpts[i]);
    free(c->orig_rcpts);
    c->orig_rcpts = NULL;
    c->norig_rcpts = 0;
    c->quarantine = false;
}

static sfsistat on_connect(SMFICTX *ctx, char *hostname, _SOCK_ADDR *sa)
{
    (void)hostname;
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        return SMFIS_TEMPFAIL;
    c->tx.session_vars = &c->session_vars;
    c->tx.session_slots = &c->session_slots;
    c->tx.data_fd = -1;
    snprintf(c->tx.client_ip, sizeof c->tx.client_ip, "unknown");
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, c->tx.client_ip, sizeof c->tx.client_ip);
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, c->tx.client_ip, sizeof c->tx.client_ip);
    smfi_setpriv(ctx, c);
    return run(ctx, POSTERN_STAGE_CONNECT, NULL, 0);
}

static sfsistat on_helo(SMFICTX *ctx, char *helo)
{
    struct conn *c = conn_of(ctx);
    if (c)
        snprintf(c->tx.helo, sizeof c->tx.helo, "%s", helo);
    return run(ctx, POSTERN_STAGE_HELO, helo, strlen(helo));
}

/* "<a@b>" -> "a@b" */
static void unbracket(const char *in, char *out, size_t size)
{
    size_t n = strlen(in);
    if (n >= 2 && in[0] == '<' && in[n - 1] == '>')
        in++, n -= 2;
    snprintf(out, size, "%.*s", (int)(n < size ? n : size - 1), in);
}

static sfsistat on_mail(SMFICTX *ctx, char **argv)
{
    struct conn *c = conn_of(ctx);
    if (!c)
        return SMFIS_TEMPFAIL;
    message_reset(c);
    char sender[512];
    unbracket(argv[0], sender, sizeof sender);
    txn_set_sender(&c->tx, sender);
    snprintf(c->orig_sender, sizeof c->orig_sender, "%s", sender);
    const char *qid = smfi_getsymval(ctx, "i");
    snprintf(c->tx.qid, sizeof c->tx.qid, "%s", qid ? qid : "");
    const char *login = smfi_getsymval(ctx, "{auth_authen}");    /* SASL login, if the MTA has one */
    snprintf(c->tx.auth_user, sizeof c->tx.auth_user, "%s", login ? login : "");
    return run(ctx, POSTERN_STAGE_MAIL, sender, strlen(sender));
}

static sfsistat on_rcpt(SMFICTX *ctx, char **argv)
{
    struct conn *c = conn_of(ctx);
    if (!c)
        return SMFIS_TEMPFAIL;
    char rcpt[512];
    unbracket(argv[0], rcpt, sizeof rcpt);
    sfsistat r = run(ctx, POSTERN_STAGE_RCPT, rcpt, strlen(rcpt));
    if (r == SMFIS_CONTINUE) {
        char **grown = realloc(c->orig_rcpts, (c->norig_rcpts + 1) * sizeof *grown);
        if (!grown || txn_add_rcpt(&c->tx, rcpt) < 0)
            return SMFIS_TEMPFAIL;
        c->orig_rcpts = grown;
        c->orig_rcpts[c->norig_rcpts++] = strdup(rcpt);
    }
    return r;
}

/* Header values arrive without the leading space and with LF folds. */
static char *raw_header_value(const char *v)
{
    size_t n = strlen(v);
    char *out = malloc(2 * n + 2);
    if (!out)
        return NULL;
    size_t o = 0;
    out[o++] = ' ';
    for (; *v; v++) {
        if (*v == '\n' && (o == 0 || out[o - 1] != '\r'))
            out[o++] = '\r';
        out[o++] = *v;
    }
    out[o] = '\0';
    return out;
}

static sfsistat on_header(SMFICTX *ctx, char *name, char *value)
{
    struct conn *c = conn_of(ctx);
    char *raw = c ? raw_header_value(value) : NULL;
    int rc = raw ? headers_append(&c->tx.hdrs, name, raw) | headers_append(&c->original, name, raw) : -1;
    free(raw);
    return rc < 0 ? SMFIS_TEMPFAIL : SMFIS_CONTINUE;
}

static sfsistat on_eoh(SMFICTX *ctx)
{
    struct conn *c = conn_of(ctx);
    if (!c)
        return SMFIS_TEMPFAIL;
    c->tx.hdrs.changed = false;
    /* the body goes to an anonymous file, for tx:body() and host->body_read at EOM */
    c->tx.data_fd = memfd_create("postern-milter-body", MFD_CLOEXEC);
    c->tx.body_start = c->tx.body_len = 0;
    return run(ctx, POSTERN_STAGE_DATA, NULL, 0);
}

static sfsistat on_body(SMFICTX *ctx, unsigned char *chunk, size_t len)
{
    struct conn *c = conn_of(ctx);
    if (!c)
        return SMFIS_TEMPFAIL;
    if (c->tx.data_fd >= 0 && pwrite(c->tx.data_fd, chunk, len, (off_t)c->tx.body_len) == (ssize_t)len)
        c->tx.body_len += len;
    c->tx.size += len;
    return run(ctx, POSTERN_STAGE_BODY, (const char *)chunk, len);
}

/* The value a milter action wants: no leading space, LF folds. */
static char *milter_value(const char *raw)
{
    char *out = strdup(raw + (raw[0] == ' '));
    size_t o = 0;
    for (const char *p = out; out && *p; p++)
        if (*p != '\r')
            out[o++] = *p;
    if (out)
        out[o] = '\0';
    return out;
}

/* Occurrence number (0-based) of header i among headers of its name. */
static size_t nth_of(const struct header_list *l, size_t i)
{
    size_t n = 0;
    for (size_t j = 0; j < i; j++)
        n += !strcasecmp(l->h[j].name, l->h[i].name);
    return n;
}

static const char *find_nth(const struct header_list *l, const char *name, size_t nth)
{
    for (size_t j = 0; j < l->n; j++)
        if (!strcasecmp(l->h[j].name, name) && nth-- == 0)
            return l->h[j].value;
    return NULL;
}

/* Header changes as milter actions: each original header that is gone or
 * different is changed in place (by name and occurrence, as chgheader
 * counts); headers that were not there are added. */
static void apply_headers(SMFICTX *ctx, struct conn *c)
{
    const struct header_list *was = &c->original, *now = &c->tx.hdrs;
    for (size_t i = 0; i < was->n; i++) {
        size_t nth = nth_of(was, i);
        const char *v = find_nth(now, was->h[i].name, nth);
        if (v && !strcmp(v, was->h[i].value))
            continue;
        char *mv = v ? milter_value(v) : NULL;
        smfi_chgheader(ctx, was->h[i].name, (int)nth + 1, mv);
        free(mv);
    }
    for (size_t i = 0; i < now->n; i++) {
        if (find_nth(was, now->h[i].name, nth_of(now, i)))
            continue;
        char *mv = milter_value(now->h[i].value);
        if (mv)
            i == 0 ? smfi_insheader(ctx, 0, now->h[i].name, mv) : smfi_addheader(ctx, now->h[i].name, mv);
        free(mv);
    }
}

static bool in_list(char **list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (!strcasecmp(list[i], s))
            return true;
    return false;
}

static void apply_envelope(SMFICTX *ctx, struct conn *c)
{
    char b[600];
    for (size_t i = 0; i < c->norig_rcpts; i++)
        if (!txn_find_rcpt(&c->tx, c->orig_rcpts[i]))
            snprintf(b, sizeof b, "<%s>", c->orig_rcpts[i]), smfi_delrcpt(ctx, b);
    for (size_t i = 0; i < c->tx.nrcpts; i++)
        if (!in_list(c->orig_rcpts, c->norig_rcpts, c->tx.rcpts[i].addr))
            snprintf(b, sizeof b, "<%s>", c->tx.rcpts[i].addr), smfi_addrcpt(ctx, b);
    if (c->tx.sender && strcmp(c->tx.sender, c->orig_sender))
        snprintf(b, sizeof b, "<%s>", c->tx.sender), smfi_chgfrom(ctx, b, NULL);
}

static sfsistat on_eom(SMFICTX *ctx)
{
    struct conn *c = conn_of(ctx);
    if (!c)
        return SMFIS_TEMPFAIL;
    sfsistat r = run(ctx, POSTERN_STAGE_EOM, NULL, 0);
    if (r != SMFIS_CONTINUE)
        return r;
    apply_headers(ctx, c);
    if (c->tx.body_replaced)
        smfi_replacebody(ctx, (unsigned char *)buf_head(&c->tx.new_body), (int)c->tx.new_body.len);
    apply_envelope(ctx, c);
    if (c->quarantine || c->tx.quarantine)
        smfi_quarantine(ctx, c->tx.hold_reason[0] ? c->tx.hold_reason : (char *)"quarantined by Postern");
    return SMFIS_CONTINUE;
}

static sfsistat on_abort(SMFICTX *ctx)
{
    struct conn *c = conn_of(ctx);
    if (c)
        message_reset(c);
    return SMFIS_CONTINUE;
}

static sfsistat on_close(SMFICTX *ctx)
{
    struct conn *c = conn_of(ctx);
    if (c) {
        message_reset(c);             /* first: a message's data may use the session's */
        txn_slots_free(&c->session_slots);
        varmap_free(&c->session_vars);
        free(c);
    }
    smfi_setpriv(ctx, NULL);
    return SMFIS_CONTINUE;
}

/* On stdout for --help/-h (exit 0), else on stderr (exit 2). */
static void usage_to(int status)
{
    fprintf(status ? stderr : stdout, "usage: postern-milter [-c CONFIG] -p inet:PORT@HOST|unix:PATH\n"
                                      "  CONFIG: -c, else $POSTERN_CONFIG, else " CONFIG_DEFAULT_PATH "\n");
    exit(status);
}

static void usage(void) { usage_to(2); }

int main(int argc, char **argv)
{
    const char *path = NULL, *sock = NULL;
    if (argc == 2 && !strcmp(argv[1], "--help"))
        usage_to(0);
    int opt;
    while ((opt = getopt(argc, argv, "c:p:h")) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 'p': sock = optarg; break;
        case 'h': usage_to(0); break;
        default: usage();
        }
    }
    if (!sock || optind != argc)
        usage();
    path = config_path_or_default(path);
    char err[1024];
    if (config_load(path, &cfg, err, sizeof err) < 0) {
        fprintf(stderr, "postern-milter: %s\n", err);
        return 1;
    }
    log_set_level((enum log_level)cfg.log_level);
    dns_set_timeout(cfg.dns_timeout_ms);
    if (dns_init_blocking(cfg.dns_server, cfg.dns_trust_anchor) < 0 || hooks_load(&cfg, err, sizeof err) < 0) {
        log_error("%s", err);
        return 1;
    }
    if (lua_threads_start(cfg.lua_threads, false, false) < 0) {
        log_error("cannot start the Lua threads");
        return 1;
    }
    struct smfiDesc desc = {
        .xxfi_name = "postern-milter",
        .xxfi_version = SMFI_VERSION,
        .xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_CHGBODY | SMFIF_ADDRCPT | SMFIF_DELRCPT |
                      SMFIF_QUARANTINE | SMFIF_CHGFROM,
        .xxfi_connect = on_connect,
        .xxfi_helo = on_helo,
        .xxfi_envfrom = on_mail,
        .xxfi_envrcpt = on_rcpt,
        .xxfi_header = on_header,
        .xxfi_eoh = on_eoh,
        .xxfi_body = on_body,
        .xxfi_eom = on_eom,
        .xxfi_abort = on_abort,
        .xxfi_close = on_close,
    };
    if (smfi_setconn((char *)sock) == MI_FAILURE || smfi_register(desc) == MI_FAILURE) {
        log_error("cannot listen on %s", sock);
        return 1;
    }
    log_info("postern-milter ready on %s", sock);
    int rc = smfi_main() == MI_SUCCESS ? 0 : 1;
    if (lua_threads_stop()) {     /* else a stuck Lua thread may still read them */
        hooks_unload();
        dns_shutdown();
        config_free(&cfg);
    }
    return rc;
}
