/* policy_run.c - one message through the chain with no SMTP and no spool,
 * stage by stage as posternd runs them (smtp_server.c, smtp_message.c,
 * queue.c): REJECT/TEMPFAIL answer the command, DISCARD/QUARANTINE mark
 * the transaction, RCPT adds the recipient after its stage, EOM sees the
 * body in a file, QUEUE and DELIVER see the message as it would be
 * stored. hooks.c reports every link it ran (hooks_set_observer); the
 * transaction is compared with a snapshot taken before, and what differs
 * is that link's changes. posternd's own refusals outside the chain
 * (relay control, recipient and size limits, malformed data) are steps of
 * the pseudo-link "posternd". */
#include "postern_io.h"
#include "policy_run.h"
#include "received.h"
#include "hooks.h"
#include "netaddr.h"
#include "plugin_host.h"
#include "relay_control.h"
#include "smtp_parse.h"
#include "spool.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define BODY_CHUNK 16384        /* posternd's BODY stage chunks are at least this */

static const char *outcome_names[POLICY_OUTCOMES] = {"accept", "reject", "tempfail", "quarantine", "discard"};

const char *policy_outcome_name(enum policy_outcome o) { return outcome_names[o]; }

int policy_outcome_parse(const char *word)
{
    for (int i = 0; i < POLICY_OUTCOMES; i++)
        if (!strcmp(word, outcome_names[i]))
            return i;
    return -1;
}

/* ---- what a transaction looks like, as lines to compare ---- */

/* One line per header, recipient, variable and flag. */
static void snapshot(const txn_t *t, struct buf *out)
{
    buf_reset(out);
    buf_printf(out, "sender <%s>\n", t->sender ? t->sender : "");
    for (size_t i = 0; i < t->nrcpts; i++) {
        const struct txn_rcpt *r = &t->rcpts[i];
        buf_printf(out, "rcpt <%s>", r->addr);
        if (r->nexthop)
            buf_printf(out, " route=%s", r->nexthop);
        if (r->min_tls)
            buf_printf(out, " tls=%s", tls_level_name((enum tls_level)r->min_tls));
        buf_puts(out, "\n");
    }
    for (size_t i = 0; i < t->hdrs.n; i++) {
        buf_printf(out, "header %s:", t->hdrs.h[i].name);
        for (const char *c = t->hdrs.h[i].value; *c; c++)     /* folds and all on one line */
            if (*c != '\r')
                buf_append(out, *c == '\n' || *c == '\t' ? " " : c, 1);
        buf_puts(out, "\n");
    }
    for (size_t i = 0; i < t->vars.n; i++) {
        const struct var *v = &t->vars.v[i];
        if (v->type == VAR_STRING)
            buf_printf(out, "var %s = \"%.200s\"\n", v->key, v->str);
        else if (v->type == VAR_NUMBER)
            buf_printf(out, "var %s = %.17g\n", v->key, v->num);
        else if (v->type == VAR_BOOL)
            buf_printf(out, "var %s = %s\n", v->key, v->num ? "true" : "false");
    }
    if (t->body_replaced)
        buf_printf(out, "body replaced (%zu bytes)\n", t->new_body.len);
    if (t->archive)
        buf_puts(out, "archive copy requested\n");
}

/* Split text into its lines (in place); the count. */
static size_t lines_of(char *text, size_t len, char ***out)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += text[i] == '\n';
    char **v = calloc(n ? n : 1, sizeof *v);
    size_t k = 0;
    for (char *p = text, *nl; v && k < n && (nl = memchr(p, '\n', len - (size_t)(p - text))); p = nl + 1) {
        *nl = '\0';
        v[k++] = p;
    }
    *out = v;
    return v ? k : 0;
}

/* Lines of `now` not in `was` as "+ LINE", lines gone as "- LINE" (each
 * line matched once, so a header added twice shows twice). */
static void diff_lines(const struct buf *was, const struct buf *now, struct buf *changes)
{
    char *a = was->len ? strndup(buf_head(was), was->len) : strdup("");
    char *b = now->len ? strndup(buf_head(now), now->len) : strdup("");
    char **la = NULL, **lb = NULL;
    size_t na = a ? lines_of(a, was->len, &la) : 0, nb = b ? lines_of(b, now->len, &lb) : 0;
    bool *matched = calloc(nb ? nb : 1, sizeof *matched);
    for (size_t i = 0; matched && i < na; i++) {
        size_t j = 0;
        while (j < nb && (matched[j] || strcmp(la[i], lb[j])))
            j++;
        if (j < nb)
            matched[j] = true;
        else
            buf_printf(changes, "- %s\n", la[i]);
    }
    for (size_t j = 0; matched && j < nb; j++)
        if (!matched[j])
            buf_printf(changes, "+ %s\n", lb[j]);
    free(matched);
    free(la);
    free(lb);
    free(a);
    free(b);
}

/* ---- the run ---- */

struct run {
    const struct config *cfg;
    txn_t t;
    struct varmap session_vars;
    struct txn_slot *session_slots;
    struct sockaddr_storage peer;   /* env->client_ip, for relay control (AF_UNSPEC: none) */
    struct policy_result *res;
    struct buf before;          /* the transaction before the link now running */
    struct buf after;
    const char *arg;            /* the stage's argument, for the steps */
    bool oom;
};

static void observe(void *ctx, enum postern_stage st, const char *link, postern_verdict v, const txn_t *t)
{
    struct run *r = ctx;
    struct policy_result *res = r->res;
    if (res->nsteps == res->capsteps) {
        size_t cap = res->capsteps ? 2 * res->capsteps : 16;
        struct policy_step *grown = realloc(res->steps, cap * sizeof *grown);
        if (!grown) {
            r->oom = true;
            return;
        }
        res->steps = grown;
        res->capsteps = cap;
    }
    struct policy_step *s = &res->steps[res->nsteps++];
    *s = (struct policy_step){.st = st, .v = v};
    snprintf(s->arg, sizeof s->arg, "%s", r->arg ? r->arg : "");
    snprintf(s->link, sizeof s->link, "%s", link);
    if (v != POSTERN_CONTINUE)
        snprintf(s->reply, sizeof s->reply, "%s", t->reply);
    buf_init(&s->changes);
    snapshot(t, &r->after);
    diff_lines(&r->before, &r->after, &s->changes);
    struct buf swap = r->before;     /* the next link's "before" */
    r->before = r->after;
    r->after = swap;
}

/* A refusal of posternd's own at stage st, as a step of link "posternd"
 * (so the trace and the outcome name it); leaves reply in t.reply. */
static postern_verdict own_refusal(struct run *r, enum postern_stage st, const char *arg, const char *reply)
{
    postern_verdict v = reply[0] == '4' ? POSTERN_TEMPFAIL : POSTERN_REJECT;
    r->arg = arg;
    snprintf(r->t.reply, sizeof r->t.reply, "%s", reply);
    snapshot(&r->t, &r->before);
    observe(r, st, "posternd", v, &r->t);
    return v;
}

/* What posternd's RCPT answers before the chain is asked: relay control
 * (for env's client, authenticated with --auth) and max_recipients. */
static bool rcpt_refused(struct run *r, const struct policy_envelope *env, const char *addr, char *reply,
                         size_t size)
{
    enum relay_verdict rv = relay_check(r->cfg, (struct sockaddr *)&r->peer, env->auth_user && env->auth_user[0],
                                        addr, false, false);
    const char *why;
    if (rv != RELAY_OK)
        relay_refusal(rv, addr, reply, size, &why);
    else if (r->t.nrcpts >= (size_t)r->cfg->max_recipients)
        snprintf(reply, size, "452 4.5.3 Error: too many recipients");
    else
        return false;
    return true;
}

/* What posternd answers at the end of data for a message it will not take
 * whatever the chain says (smtp_message.c), or NULL. */
static const char *data_refused(const struct config *cfg, const char *msg, size_t len)
{
    if (len > cfg->message_size_limit)
        return "552 5.3.4 Message size exceeds fixed maximum message size";
    const char *sep = memmem(msg, len, "\r\n\r\n", 4);
    if ((sep ? (size_t)(sep - msg) + 2 : len) > SMTP_MAX_HEADER_SECTION)
        return "552 5.3.4 Error: message header section too large";
    if (memchr(msg, '\0', len))
        return "554 5.6.0 Error: message contains NUL characters";
    for (const char *p = msg, *end = msg + len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t line = (size_t)((nl ? nl + 1 : end) - p);
        if (line > SMTP_MAX_TEXT_LINE)
            return "550 5.5.2 Error: message line longer than 1000 octets";
        p += line;
    }
    return NULL;
}

/* Run one stage; the verdict. ACCEPT ends the stage like CONTINUE does. */
static postern_verdict stage(struct run *r, enum postern_stage st, const char *arg, size_t len)
{
    r->arg = st == POSTERN_STAGE_BODY ? NULL : arg;
    snapshot(&r->t, &r->before);
    postern_verdict v = hooks_run_sync(st, &r->t, arg, len);
    if (v == POSTERN_DISCARD)
        r->t.discard = true;
    if (v == POSTERN_QUARANTINE && !r->t.quarantine) {
        r->t.quarantine = true;
        snprintf(r->t.hold_reason, sizeof r->t.hold_reason, "%.250s", r->t.reply);
    }
    return v == POSTERN_ACCEPT || v == POSTERN_DISCARD || v == POSTERN_QUARANTINE ? POSTERN_CONTINUE : v;
}

static struct policy_rcpt *result_rcpt(struct policy_result *res, const char *addr)
{
    for (size_t i = 0; i < res->nrcpts; i++)
        if (!strcasecmp(res->rcpts[i].addr, addr))
            return &res->rcpts[i];
    return NULL;
}

static int result_add_rcpt(struct policy_result *res, const char *addr)
{
    struct policy_rcpt *grown = realloc(res->rcpts, (res->nrcpts + 1) * sizeof *grown);
    if (!grown)
        return -1;
    res->rcpts = grown;
    res->rcpts[res->nrcpts] = (struct policy_rcpt){.addr = strdup(addr), .outcome = OUTCOME_ACCEPT};
    return res->rcpts[res->nrcpts++].addr ? 0 : -1;
}

/* Every recipient still in the transaction gets verdict v from stage st. */
static void refuse_pending(struct run *r, enum postern_stage st, postern_verdict v)
{
    for (size_t i = 0; i < r->t.nrcpts; i++) {
        struct policy_rcpt *p = result_rcpt(r->res, r->t.rcpts[i].addr);
        if (!p || p->outcome != OUTCOME_ACCEPT)
            continue;
        p->outcome = v == POSTERN_REJECT ? OUTCOME_REJECT : OUTCOME_TEMPFAIL;
        p->stage = st;
        snprintf(p->reply, sizeof p->reply, "%s", r->t.reply);
    }
}

/* Envelope-level stages: a refusal there refuses every recipient. */
static bool session_stages(struct run *r, const struct policy_envelope *env)
{
    static const enum postern_stage order[] = {POSTERN_STAGE_CONNECT, POSTERN_STAGE_HELO, POSTERN_STAGE_MAIL};
    const char *args[] = {NULL, env->helo, env->from};
    for (size_t i = 0; i < 3; i++) {
        postern_verdict v = stage(r, order[i], args[i], args[i] ? strlen(args[i]) : 0);
        if (v == POSTERN_CONTINUE)
            continue;
        for (size_t k = 0; k < r->res->nrcpts; k++) {
            struct policy_rcpt *p = &r->res->rcpts[k];
            p->outcome = v == POSTERN_REJECT ? OUTCOME_REJECT : OUTCOME_TEMPFAIL;
            p->stage = order[i];
            snprintf(p->reply, sizeof p->reply, "%s", r->t.reply);
        }
        return false;
    }
    return true;
}

/* RCPT for each: refused ones keep their reply; true if any was accepted. */
static bool rcpt_stages(struct run *r, const struct policy_envelope *env)
{
    for (size_t i = 0; i < env->nto; i++) {
        struct policy_rcpt *p = result_rcpt(r->res, env->to[i]);
        if (!p || p->outcome != OUTCOME_ACCEPT || txn_find_rcpt(&r->t, env->to[i]))
            continue;     /* a duplicate RCPT */
        char refusal[sizeof r->t.reply];
        postern_verdict v = rcpt_refused(r, env, env->to[i], refusal, sizeof refusal)
                                ? own_refusal(r, POSTERN_STAGE_RCPT, env->to[i], refusal)
                                : stage(r, POSTERN_STAGE_RCPT, env->to[i], strlen(env->to[i]));
        if (v == POSTERN_CONTINUE) {
            if (txn_add_rcpt(&r->t, env->to[i]) < 0)
                r->oom = true;
            continue;
        }
        p->outcome = v == POSTERN_REJECT ? OUTCOME_REJECT : OUTCOME_TEMPFAIL;
        p->stage = POSTERN_STAGE_RCPT;
        snprintf(p->reply, sizeof p->reply, "%s", r->t.reply);
    }
    return r->t.nrcpts > 0;
}

/* "a\nb" -> "a\r\nb": plugins see CRLF, as they would from SMTP. */
static char *crlf_copy(const char *msg, size_t len, size_t *outlen)
{
    char *out = malloc(2 * len + 3);
    size_t o = 0;
    for (size_t i = 0; out && i < len; i++) {
        if (msg[i] == '\n' && (i == 0 || msg[i - 1] != '\r'))
            out[o++] = '\r';
        out[o++] = msg[i];
    }
    if (out)
        out[o] = '\0';
    *outlen = o;
    return out;
}

/* Our Received header, as posternd adds it (received.c), so header checks
 * see the same. */
static void add_received(struct run *r)
{
    struct received_info ri = {
        .helo = r->t.helo, .client_name = "", .client_ip = r->t.client_ip, .tls = r->t.tls,
        .authenticated = r->t.auth_user[0] != '\0', .esmtp = true, .hostname = r->cfg->hostname, .qid = r->t.qid,
        .only_rcpt = r->t.nrcpts == 1 ? r->t.rcpts[0].addr : NULL,
    };
    received_add(&r->t.hdrs, &ri);
}

static int write_all(int fd, const char *p, size_t n) { return postern_write_all(fd, p, n, 0); }

/* DATA (headers), BODY in chunks, EOM with the body in a file. */
static postern_verdict content_stages(struct run *r, const char *msg, size_t len)
{
    const char *sep = memmem(msg, len, "\r\n\r\n", 4);
    size_t section = sep ? (size_t)(sep - msg) + 2 : len;
    size_t used = headers_parse(msg, section, &r->t.hdrs);
    const char *body = msg + used;     /* what did not parse as a header starts the body, as sent */
    size_t body_len = len - used;
    if (sep && used == section)
        body += 2, body_len -= 2;
    add_received(r);
    r->t.hdrs.changed = false;
    r->t.size = len;
    postern_verdict v = stage(r, POSTERN_STAGE_DATA, NULL, 0);
    if (v != POSTERN_CONTINUE)
        return v;
    r->t.data_fd = memfd_create("postern-policy-body", MFD_CLOEXEC);
    if (r->t.data_fd < 0 || write_all(r->t.data_fd, body, body_len) < 0) {
        r->oom = true;
        return POSTERN_TEMPFAIL;
    }
    for (size_t off = 0; off < body_len && v == POSTERN_CONTINUE; off += BODY_CHUNK) {
        size_t n = body_len - off < BODY_CHUNK ? body_len - off : BODY_CHUNK;
        v = stage(r, POSTERN_STAGE_BODY, body + off, n);
    }
    if (v != POSTERN_CONTINUE)
        return v;
    r->t.body_start = 0;
    r->t.body_len = body_len;
    return stage(r, POSTERN_STAGE_EOM, NULL, 0);
}

/* The message as it would be stored (headers + body after the chain's
 * changes), in a file QUEUE and DELIVER read (host->message_open). */
static int stored_copy(struct run *r)
{
    struct buf m;
    buf_init(&m);
    headers_serialize(&r->t.hdrs, &m);
    buf_puts(&m, "\r\n");
    buf_free(&r->res->final_headers);
    buf_init(&r->res->final_headers);
    buf_append(&r->res->final_headers, buf_head(&m), m.len);
    if (r->t.body_replaced) {
        buf_append(&m, buf_head(&r->t.new_body), r->t.new_body.len);
    } else {
        char chunk[65536];
        for (uint64_t off = 0; off < r->t.body_len;) {
            ssize_t n = pread(r->t.data_fd, chunk, sizeof chunk, (off_t)(r->t.body_start + off));
            if (n <= 0)
                break;
            buf_append(&m, chunk, (size_t)n);
            off += (uint64_t)n;
        }
    }
    size_t body_len = m.len - r->res->final_headers.len;
    buf_append(&r->res->final_body, buf_head(&m) + r->res->final_headers.len,
               body_len < POLICY_BODY_KEPT ? body_len : POLICY_BODY_KEPT);
    int fd = memfd_create("postern-policy-message", MFD_CLOEXEC);
    if (fd < 0 || write_all(fd, buf_head(&m), m.len) < 0) {
        if (fd >= 0)
            close(fd);
        buf_free(&m);
        return -1;
    }
    r->t.stored_fd = fd;
    r->t.body_off = 0;
    r->t.stored_len = r->t.size = m.len;
    r->t.headers_loaded = true;     /* the list in hand is the stored one */
    buf_free(&m);
    return 0;
}

/* After the 250: QUEUE once, then DELIVER unless the message is held. */
static void queue_stages(struct run *r)
{
    static const enum postern_stage order[] = {POSTERN_STAGE_QUEUE, POSTERN_STAGE_DELIVER};
    if (stored_copy(r) < 0) {
        r->oom = true;
        return;
    }
    for (size_t i = 0; i < 2 && !r->t.discard && !(i == 1 && r->t.quarantine); i++) {
        postern_verdict v = stage(r, order[i], NULL, 0);
        if (v != POSTERN_CONTINUE) {
            refuse_pending(r, order[i], v);
            return;
        }
    }
}

/* The recipients as the chain left them: routes, TLS demands, recipients
 * a plugin removed (dropped: discarded) or added. */
static void settle_rcpts(struct run *r)
{
    struct policy_result *res = r->res;
    for (size_t i = 0; i < r->t.nrcpts; i++)
        if (!result_rcpt(res, r->t.rcpts[i].addr) && result_add_rcpt(res, r->t.rcpts[i].addr) < 0)
            r->oom = true;
    for (size_t i = 0; i < res->nrcpts; i++) {
        struct policy_rcpt *p = &res->rcpts[i];
        struct txn_rcpt *tr = txn_find_rcpt(&r->t, p->addr);
        if (p->outcome != OUTCOME_ACCEPT)
            continue;
        if (!tr) {
            p->outcome = OUTCOME_DISCARD;       /* a plugin took it out */
            snprintf(p->reply, sizeof p->reply, "removed by the chain");
            continue;
        }
        p->nexthop = tr->nexthop ? strdup(tr->nexthop) : NULL;
        p->tls = tr->min_tls ? tls_level_name((enum tls_level)tr->min_tls) : NULL;
        if (r->t.discard)
            p->outcome = OUTCOME_DISCARD;
        else if (r->t.quarantine)
            p->outcome = OUTCOME_QUARANTINE;
    }
}

/* The message's outcome and the last link that decided it. */
static void settle_outcome(struct policy_result *res, const txn_t *t)
{
    bool any[POLICY_OUTCOMES] = {false};
    for (size_t i = 0; i < res->nrcpts; i++)
        any[res->rcpts[i].outcome] = true;
    res->outcome = t->discard ? OUTCOME_DISCARD : t->quarantine ? OUTCOME_QUARANTINE
                 : any[OUTCOME_ACCEPT] ? OUTCOME_ACCEPT : any[OUTCOME_TEMPFAIL] ? OUTCOME_TEMPFAIL : OUTCOME_REJECT;
    static const postern_verdict deciding[POLICY_OUTCOMES] = {POSTERN_ACCEPT, POSTERN_REJECT, POSTERN_TEMPFAIL,
                                                              POSTERN_QUARANTINE, POSTERN_DISCARD};
    for (size_t i = res->nsteps; i-- > 0;)
        if (res->steps[i].v == deciding[res->outcome]) {
            snprintf(res->decided_by, sizeof res->decided_by, "%s", res->steps[i].link);
            snprintf(res->reply, sizeof res->reply, "%s", res->steps[i].reply);
            res->decided_at = res->steps[i].st;
            break;
        }
    snprintf(res->hold_reason, sizeof res->hold_reason, "%s", t->hold_reason);
    snprintf(res->decisions, sizeof res->decisions, "%s", decisions_text(t->decisions));
    res->archive = t->archive;
    res->body_changed = t->body_replaced;
}

static void txn_setup(struct run *r, const struct policy_envelope *env)
{
    txn_t *t = &r->t;
    t->data_fd = -1;
    t->session_vars = &r->session_vars;
    t->session_slots = &r->session_slots;
    snprintf(t->client_ip, sizeof t->client_ip, "%s", env->client_ip);
    snprintf(t->helo, sizeof t->helo, "%s", env->helo);
    snprintf(t->auth_user, sizeof t->auth_user, "%s", env->auth_user ? env->auth_user : "");
    t->tls = env->tls;
    qid_generate(t->qid);
    socklen_t sl;
    if (ip_parse(env->client_ip, 25, &r->peer, &sl) < 0)
        r->peer.ss_family = AF_UNSPEC;      /* no network holds it: untrusted */
}

int policy_run(const struct config *cfg, const struct policy_envelope *env, const char *msg, size_t len,
               struct policy_result *res, char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    buf_init(&res->final_headers);
    buf_init(&res->final_body);
    struct run *r = calloc(1, sizeof *r);
    size_t clen;
    char *crlf = r ? crlf_copy(msg, len, &clen) : NULL;
    if (!crlf) {
        free(r);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    r->cfg = cfg;
    r->res = res;
    buf_init(&r->before);
    buf_init(&r->after);
    txn_setup(r, env);
    for (size_t i = 0; i < env->nto; i++)
        if (!result_rcpt(res, env->to[i]) && result_add_rcpt(res, env->to[i]) < 0)
            r->oom = true;
    hooks_set_observer(observe, r);
    if (session_stages(r, env) && txn_set_sender(&r->t, env->from) == 0 && rcpt_stages(r, env)) {
        const char *refusal = data_refused(cfg, crlf, clen);
        postern_verdict v = refusal ? own_refusal(r, POSTERN_STAGE_EOM, NULL, refusal) : content_stages(r, crlf, clen);
        if (v != POSTERN_CONTINUE)
            refuse_pending(r, r->t.stage, v);
        else
            queue_stages(r);
    }
    hooks_set_observer(NULL, NULL);
    settle_rcpts(r);
    settle_outcome(res, &r->t);
    bool oom = r->oom;
    if (r->t.data_fd >= 0)
        close(r->t.data_fd);
    if (r->t.stored_fd > 0)
        close(r->t.stored_fd);
    txn_free(&r->t);
    txn_slots_free(&r->session_slots);
    varmap_free(&r->session_vars);
    buf_free(&r->before);
    buf_free(&r->after);
    free(r);
    free(crlf);
    if (oom) {
        snprintf(err, errlen, "out of memory");
        policy_result_free(res);
        return -1;
    }
    return 0;
}

void policy_result_free(struct policy_result *res)
{
    for (size_t i = 0; i < res->nsteps; i++)
        buf_free(&res->steps[i].changes);
    for (size_t i = 0; i < res->nrcpts; i++) {
        free(res->rcpts[i].addr);
        free(res->rcpts[i].nexthop);
    }
    free(res->steps);
    free(res->rcpts);
    buf_free(&res->final_headers);
    buf_free(&res->final_body);
    memset(res, 0, sizeof *res);
}
