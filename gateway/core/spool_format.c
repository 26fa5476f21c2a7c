/* spool_format.c - the spool's two text formats, with no I/O: the envelope
 * block before each message (magic line, fixed-width size and hop fields
 * that a rewrite can patch in place, one record per line, every recipient
 * once) and the per-recipient state sidecar ("ID.st"). Decoding is strict:
 * a field given twice, an unknown record or a recipient listed twice makes
 * the file corrupt, never a guess. */
#include "spool.h"
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ENVELOPE_MAGIC "POSTERN-SPOOL 1\n"
#define STATE_MAGIC "POSTERN-STATE 1\n"

void envelope_free(struct envelope *e)
{
    free(e->sender);
    for (size_t i = 0; i < e->nrcpts; i++) {
        free(e->rcpts[i]);
        if (e->dsn)
            free(e->dsn[i].orcpt);
    }
    free(e->rcpts);
    free(e->dsn);
    e->sender = NULL;
    e->rcpts = NULL;
    e->dsn = NULL;
    e->nrcpts = 0;
}

static const char *body_name(enum smtp_body b)
{
    return b == BODY_8BITMIME ? "8BITMIME" : b == BODY_7BIT ? "7BIT" : b == BODY_BINARYMIME ? "BINARYMIME" : "";
}

int spool_envelope_encode(const struct envelope *e, struct buf *out, struct envelope_offsets *off)
{
    int rc = 0;
    rc |= buf_puts(out, ENVELOPE_MAGIC);
    rc |= buf_printf(out, "id=%s\narrival=%" PRId64 "\nclient=%s\nhelo=%s\nproto=%s\nbody=%s\nsmtputf8=%d\n",
                     e->id, e->arrival, e->client_ip, e->helo, e->proto, body_name(e->body),
                     e->smtputf8 ? 1 : 0);
    rc |= buf_printf(out, "from=%s\n", e->sender ? e->sender : "");
    if (e->ret)
        rc |= buf_printf(out, "ret=%s\n", e->ret == DSN_RET_FULL ? "FULL" : "HDRS");
    if (e->envid[0])
        rc |= buf_printf(out, "envid=%s\n", e->envid);
    if (e->requiretls)
        rc |= buf_puts(out, "requiretls=1\n");
    for (size_t i = 0; i < e->nrcpts; i++) {
        rc |= buf_printf(out, "rcpt=%s\n", e->rcpts[i]);
        const struct rcpt_dsn *d = e->dsn ? &e->dsn[i] : NULL;
        if (d && (d->notify || d->orcpt)) {   /* "rdsn=NOTIFY ORCPT" for the rcpt above */
            char notify[64];
            dsn_notify_text(d->notify, notify, sizeof notify);
            rc |= buf_printf(out, "rdsn=%s%s%s\n", notify[0] ? notify : "-", d->orcpt ? " " : "",
                             d->orcpt ? d->orcpt : "");
        }
    }
    rc |= buf_puts(out, "tls_optional=");     /* known only once the header section is in */
    off->tls_optional = out->len;
    rc |= buf_printf(out, "%d\n", e->tls_optional ? 1 : 0);
    rc |= buf_puts(out, "hops=");
    off->hops = out->len;
    rc |= buf_printf(out, "%0*u\n", HOPS_DIGITS, e->hops < 0 ? 0u : e->hops > 9999 ? 9999u : (unsigned)e->hops);
    rc |= buf_puts(out, "size=");
    off->size = out->len;
    rc |= buf_printf(out, "%0*" PRIu64 "\n\n", SIZE_DIGITS, e->size);
    return rc ? -1 : 0;
}

static int add_rcpt(struct envelope *e, const char *v)
{
    char **n = realloc(e->rcpts, (e->nrcpts + 1) * sizeof *n);
    if (!n)
        return -1;
    e->rcpts = n;
    struct rcpt_dsn *d = realloc(e->dsn, (e->nrcpts + 1) * sizeof *d);
    if (!d)
        return -1;
    e->dsn = d;
    e->dsn[e->nrcpts] = (struct rcpt_dsn){0, NULL};
    if (!(e->rcpts[e->nrcpts] = strdup(v)))
        return -1;
    e->nrcpts++;
    return 0;
}

static void copy_field(char *dst, size_t cap, const char *v)
{
    snprintf(dst, cap, "%s", v);
}

/* "rdsn=NOTIFY [ORCPT]": the DSN request of the recipient just before. */
static int decode_rcpt_dsn(struct envelope *e, const char *v, const char **err)
{
    if (!e->nrcpts || e->dsn[e->nrcpts - 1].notify || e->dsn[e->nrcpts - 1].orcpt)
        return *err = "rdsn without its rcpt", -1;
    struct rcpt_dsn *d = &e->dsn[e->nrcpts - 1];
    char notify[64];
    size_t n = strcspn(v, " ");
    if (n >= sizeof notify)
        return *err = "bad rdsn", -1;
    memcpy(notify, v, n);
    notify[n] = '\0';
    if (strcmp(notify, "-") && dsn_notify_parse(notify, &d->notify) < 0)
        return *err = "bad rdsn notify", -1;
    if (v[n] == ' ' && strlen(v + n + 1) <= DSN_MAX_ORCPT && !(d->orcpt = strdup(v + n + 1)))
        return *err = "out of memory", -1;
    return 0;
}

/* One "key=value" line of the envelope. */
static int decode_field(struct envelope *e, const char *key, const char *v, const char **err)
{
    char *end;
    if (!strcmp(key, "id")) {
        if (!qid_valid(v))
            return *err = "bad id", -1;
        copy_field(e->id, sizeof e->id, v);
    } else if (!strcmp(key, "arrival")) {
        e->arrival = strtoll(v, &end, 10);
        if (*end || end == v)
            return *err = "bad arrival", -1;
    } else if (!strcmp(key, "client")) {
        copy_field(e->client_ip, sizeof e->client_ip, v);
    } else if (!strcmp(key, "helo")) {
        copy_field(e->helo, sizeof e->helo, v);
    } else if (!strcmp(key, "proto")) {
        copy_field(e->proto, sizeof e->proto, v);
    } else if (!strcmp(key, "body")) {
        e->body = !strcmp(v, "8BITMIME") ? BODY_8BITMIME : !strcmp(v, "7BIT") ? BODY_7BIT
                : !strcmp(v, "BINARYMIME") ? BODY_BINARYMIME : BODY_UNSPEC;
    } else if (!strcmp(key, "ret")) {
        e->ret = !strcmp(v, "FULL") ? DSN_RET_FULL : !strcmp(v, "HDRS") ? DSN_RET_HDRS : DSN_RET_UNSPEC;
    } else if (!strcmp(key, "envid")) {
        if (strlen(v) > DSN_MAX_ENVID || !xtext_valid(v))
            return *err = "bad envid", -1;
        copy_field(e->envid, sizeof e->envid, v);
    } else if (!strcmp(key, "rdsn")) {
        return decode_rcpt_dsn(e, v, err);
    } else if (!strcmp(key, "smtputf8")) {
        e->smtputf8 = v[0] == '1';
    } else if (!strcmp(key, "requiretls")) {
        e->requiretls = v[0] == '1';
    } else if (!strcmp(key, "tls_optional")) {
        e->tls_optional = v[0] == '1';
    } else if (!strcmp(key, "from")) {
        free(e->sender);
        if (!(e->sender = strdup(v)))
            return *err = "out of memory", -1;
    } else if (!strcmp(key, "rcpt")) {
        if (add_rcpt(e, v) < 0)
            return *err = "out of memory", -1;
    } else if (!strcmp(key, "hops")) {
        e->hops = (int)strtol(v, &end, 10);
        if (*end || end == v || e->hops < 0)
            return *err = "bad hops", -1;
    } else if (!strcmp(key, "size")) {
        e->size = strtoull(v, &end, 10);
        if (*end || strlen(v) != SIZE_DIGITS)
            return *err = "bad size", -1;
    } else {
        return *err = "unknown envelope field", -1;
    }
    return 0;
}

/* Fields an envelope has at most once (rcpt and rdsn repeat). */
static const char *const once_fields[] = {"id",   "arrival", "client", "helo", "proto",    "body",         "ret",
                                          "envid", "smtputf8", "requiretls", "tls_optional", "from", "hops", "size"};

static bool field_repeated(const char *key, unsigned *seen)
{
    for (unsigned i = 0; i < sizeof once_fields / sizeof *once_fields; i++)
        if (!strcmp(key, once_fields[i])) {
            bool again = *seen & (1u << i);
            *seen |= 1u << i;
            return again;
        }
    return false;
}

static int addr_cmp(const void *a, const void *b)
{
    return strcasecmp(*(char *const *)a, *(char *const *)b);
}

/* A recipient twice (as RCPT never stores it) would be sent twice. */
static bool rcpt_repeated(const struct envelope *e)
{
    if (e->nrcpts < 2)
        return false;
    char **v = malloc(e->nrcpts * sizeof *v);
    if (!v)
        return false;
    memcpy(v, e->rcpts, e->nrcpts * sizeof *v);
    qsort(v, e->nrcpts, sizeof *v, addr_cmp);
    bool again = false;
    for (size_t i = 1; i < e->nrcpts && !again; i++)
        again = !strcasecmp(v[i - 1], v[i]);
    free(v);
    return again;
}

int spool_envelope_decode(const char *data, size_t len, struct envelope *e, size_t *body_off,
                          const char **err)
{
    unsigned seen = 0;
    memset(e, 0, sizeof *e);
    size_t ml = strlen(ENVELOPE_MAGIC);
    if (len < ml || memcmp(data, ENVELOPE_MAGIC, ml) != 0)
        return *err = "not a Postern spool file", -1;
    size_t pos = ml;
    bool have_size = false;
    char line[SMTP_MAX_PATH + 600];
    for (;;) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        if (!nl)
            return envelope_free(e), *err = "truncated envelope", -1;
        size_t n = (size_t)(nl - (data + pos));
        if (n == 0) {
            pos++;
            break;
        }
        if (n >= sizeof line)
            return envelope_free(e), *err = "envelope line too long", -1;
        for (size_t i = 0; i < n; i++)       /* CR, NUL and the like never belong in a field */
            if ((unsigned char)data[pos + i] < 0x20 || data[pos + i] == 0x7f)
                return envelope_free(e), *err = "control character in the envelope", -1;
        memcpy(line, data + pos, n);
        line[n] = '\0';
        pos += n + 1;
        char *eq = strchr(line, '=');
        if (!eq)
            return envelope_free(e), *err = "envelope line without '='", -1;
        *eq = '\0';
        if (field_repeated(line, &seen))
            return envelope_free(e), *err = "an envelope field that comes once is repeated", -1;
        if (decode_field(e, line, eq + 1, err) < 0)
            return envelope_free(e), -1;
        have_size |= !strcmp(line, "size");
    }
    if (!e->id[0] || !e->sender || e->nrcpts == 0 || !have_size)
        return envelope_free(e), *err = "envelope misses id, from, rcpt or size", -1;
    if (rcpt_repeated(e))
        return envelope_free(e), *err = "a recipient is listed twice in the envelope", -1;
    /* the addresses go out in MAIL and RCPT commands: the grammar we accept on input */
    if (e->sender[0] && smtp_check_address(e->sender, true))
        return envelope_free(e), *err = "bad sender address in the envelope", -1;
    for (size_t i = 0; i < e->nrcpts; i++)
        if (smtp_check_address(e->rcpts[i], true))
            return envelope_free(e), *err = "bad recipient address in the envelope", -1;
    *body_off = pos;
    return 0;
}

int spool_state_encode(struct msg_flags f, const struct rcpt_state *st, size_t n, struct buf *out)
{
    int rc = buf_puts(out, STATE_MAGIC);
    rc |= buf_printf(out, "held=%d\nwarned=%d\nqueued=%d\n", f.held ? 1 : 0, f.warned ? 1 : 0, f.queued ? 1 : 0);
    if (f.archive)
        rc |= buf_puts(out, "archive=1\n");
    if (f.reason[0])
        rc |= buf_printf(out, "reason=%s\n", f.reason);
    for (const char *d = f.decisions, *nl; *d; d = *nl ? nl + 1 : nl) {
        nl = d + strcspn(d, "\n");
        rc |= buf_printf(out, "decided=%.*s\n", (int)(nl - d), d);
    }
    for (size_t i = 0; i < n; i++) {
        rc |= buf_printf(out, "%zu %c %d %" PRId64 " %s\n", i, st[i].status, st[i].attempts, st[i].next_try,
                         rtext_str(st[i].last_reply));
        if (rtext_has(st[i].nexthop))
            rc |= buf_printf(out, "route %zu %s\n", i, st[i].nexthop.s);
        if (st[i].min_tls)
            rc |= buf_printf(out, "tls %zu %d\n", i, st[i].min_tls);
        if (rtext_has(st[i].remote))
            rc |= buf_printf(out, "mta %zu %s %s\n", i, st[i].remote.s, rtext_str(st[i].in_reply_to));
    }
    return rc ? -1 : 0;
}

int spool_state_decode(const char *data, size_t len, struct msg_flags *f, struct rcpt_state *st, size_t n,
                       const char **err)
{
    size_t ml = strlen(STATE_MAGIC);
    if (len < ml || memcmp(data, STATE_MAGIC, ml) != 0)
        return *err = "not a Postern state file", -1;
    char *copy = strndup(data + ml, len - ml);
    if (!copy)
        return *err = "out of memory", -1;
    int rc = 0;
    size_t seen = 0;
    char *save = NULL;
    for (char *l = strtok_r(copy, "\n", &save); l && rc == 0; l = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(l, "held=", 5)) {
            f->held = l[5] == '1';
            continue;
        }
        if (!strncmp(l, "warned=", 7)) {
            f->warned = l[7] == '1';
            continue;
        }
        if (!strncmp(l, "archive=", 8)) {
            f->archive = l[8] == '1';
            continue;
        }
        if (!strncmp(l, "queued=", 7)) {
            f->queued = l[7] == '1';
            continue;
        }
        if (!strncmp(l, "decided=", 8)) {
            size_t have = strlen(f->decisions);
            snprintf(f->decisions + have, sizeof f->decisions - have, "%s\n", l + 8);
            continue;
        }
        if (!strncmp(l, "reason=", 7)) {
            snprintf(f->reason, sizeof f->reason, "%s", l + 7);
            continue;
        }
        size_t ridx;
        int roff = 0, level;
        if (sscanf(l, "tls %zu %d", &ridx, &level) == 2 && ridx < n) {
            st[ridx].min_tls = level;
            continue;
        }
        char remote[RCPT_REMOTE_SIZE];
        if (sscanf(l, "mta %zu %159s %n", &ridx, remote, &roff) == 2 && roff && ridx < n) {
            rtext_printf(&st[ridx].remote, RCPT_REMOTE_SIZE, "%s", remote);
            rtext_printf(&st[ridx].in_reply_to, RCPT_COMMAND_SIZE, "%s", l + roff);
            continue;
        }
        roff = 0;
        if (sscanf(l, "route %zu %n", &ridx, &roff) == 1 && roff && ridx < n) {
            rtext_printf(&st[ridx].nexthop, RCPT_NEXTHOP_SIZE, "%s", l + roff);
            continue;
        }
        size_t idx;
        char status;
        int attempts, off = 0;
        int64_t next;
        if (sscanf(l, "%zu %c %d %" SCNd64 " %n", &idx, &status, &attempts, &next, &off) < 4 || idx >= n ||
            !strchr((char[]){RCPT_PENDING, RCPT_DONE, RCPT_FAILED, RCPT_BOUNCED, RCPT_RELAYED, RCPT_QUARANTINED, 0}, status)) {
            *err = "bad recipient state line";
            rc = -1;
            break;
        }
        st[idx].status = status;
        st[idx].attempts = attempts;
        st[idx].next_try = next;
        rtext_printf(&st[idx].last_reply, RCPT_REPLY_SIZE, "%s", off ? l + off : "");
        seen++;
    }
    free(copy);
    if (rc == 0 && seen != n)
        return *err = "state does not cover every recipient", -1;
    return rc;
}

