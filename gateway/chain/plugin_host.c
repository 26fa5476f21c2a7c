/* plugin_host.c - implements struct postern_host on top of txn_t. Each
 * mutation checks the stage it is called in (see postern_plugin.h). */
#include "plugin_host.h"
#include "lists.h"
#include "privsep.h"
#include "config.h"
#include "dns.h"
#include "hooks.h"
#include "kv.h"
#include "local_submit.h"
#include "log.h"
#include "netaddr.h"
#include "smtp_parse.h"
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static bool in_content_stage(const txn_t *t)
{
    return t->stage == POSTERN_STAGE_DATA || t->stage == POSTERN_STAGE_BODY || t->stage == POSTERN_STAGE_EOM;
}

static bool has_envelope(const txn_t *t) { return t->sender != NULL; }

static bool envelope_mutable(const txn_t *t)
{
    return has_envelope(t) && t->stage >= POSTERN_STAGE_MAIL && t->stage <= POSTERN_STAGE_EOM;
}

/* Content/envelope changes after the spool file got its copy force a rewrite. */
static void note_envelope_change(txn_t *t)
{
    if (t->stage >= POSTERN_STAGE_DATA)
        t->envelope_changed = true;
}

static void h_log(postern_txn *t, int level, const char *fmt, ...)
{
    enum log_level l = level <= POSTERN_LOG_ERROR ? LOG_LVL_ERROR : level == POSTERN_LOG_WARN ? LOG_LVL_WARN
                       : level == POSTERN_LOG_INFO ? LOG_LVL_INFO : LOG_LVL_DEBUG;
    if (!log_enabled(l))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char ids[64];
    log_ids(ids, sizeof ids, t ? t->sid : 0, t ? t->qid : "");
    log_msg(l, "%splugin: %s", ids, msg);
}

static void h_set_reply(postern_txn *t, const char *reply)
{
    /* one line only: no CR/LF smuggling into our replies */
    size_t n = strcspn(reply, "\r\n");
    if (n >= sizeof t->reply)
        n = sizeof t->reply - 1;
    memcpy(t->reply, reply, n);
    t->reply[n] = '\0';
}

static const char *h_client_addr(postern_txn *t) { return t->client_ip; }
static const char *h_auth_user(postern_txn *t) { return t->auth_user[0] ? t->auth_user : NULL; }
static const char *h_helo_name(postern_txn *t) { return t->helo; }
static int h_tls_active(postern_txn *t) { return t->tls; }
static const char *h_queue_id(postern_txn *t) { return t->qid; }
static const char *h_sender(postern_txn *t) { return t->sender ? t->sender : ""; }
static size_t h_rcpt_count(postern_txn *t) { return t->nrcpts; }
static const char *h_rcpt(postern_txn *t, size_t i) { return i < t->nrcpts ? t->rcpts[i].addr : NULL; }
static uint64_t h_declared_size(postern_txn *t) { return t->declared_size; }
static uint64_t h_message_size(postern_txn *t) { return t->size; }
/* The stored message: the spool's file, or a policy run's own. */
static int stored_message(const postern_txn *t)
{
    return t->stored_fd > 0 ? dup(t->stored_fd) : spool_open_message(t->qid);
}

/* At QUEUE and DELIVER the headers come from the stored message. */
static void ensure_headers(postern_txn *t)
{
    if (t->headers_loaded || t->stage < POSTERN_STAGE_QUEUE)
        return;
    t->headers_loaded = true;
    int fd = stored_message(t);
    if (fd < 0)
        return;
    size_t cap = 1024 * 1024;
    char *buf = malloc(cap);
    ssize_t r = buf ? pread(fd, buf, cap, (off_t)t->body_off) : -1;
    close(fd);
    if (r > 0) {
        char *end = memmem(buf, (size_t)r, "\r\n\r\n", 4);
        headers_parse(buf, end ? (size_t)(end - buf) + 2 : (size_t)r, &t->hdrs);
    }
    free(buf);
}

static size_t h_header_count(postern_txn *t)
{
    ensure_headers(t);
    return t->hdrs.n;
}

static int h_header_at(postern_txn *t, size_t i, const char **name, const char **value)
{
    ensure_headers(t);
    if (i >= t->hdrs.n)
        return -1;
    *name = t->hdrs.h[i].name;
    *value = t->hdrs.h[i].value;
    return 0;
}

static const char *h_header_get(postern_txn *t, const char *name, size_t nth)
{
    ensure_headers(t);
    long i = headers_find(&t->hdrs, name, nth);
    return i < 0 ? NULL : t->hdrs.h[i].value;
}

/* An inside-only field on mail relayed out (outbound_remove_headers) is
 * taken and dropped: the link goes on as if it were added, and a later
 * signature never covers a field that will not be there. */
static bool dropped_inside_only(const txn_t *t, const char *name)
{
    return t->inside_only && header_name_listed(t->inside_only, name);
}

static int h_header_add(postern_txn *t, const char *name, const char *value)
{
    if (!in_content_stage(t))
        return -1;
    return dropped_inside_only(t, name) ? 0 : headers_append(&t->hdrs, name, value);
}

static int h_header_insert(postern_txn *t, size_t index, const char *name, const char *value)
{
    if (!in_content_stage(t))
        return -1;
    return dropped_inside_only(t, name) ? 0 : headers_insert(&t->hdrs, index, name, value);
}

static int h_header_change(postern_txn *t, const char *name, size_t nth, const char *value)
{
    return in_content_stage(t) ? headers_change(&t->hdrs, name, nth, value) : -1;
}

static int h_header_delete(postern_txn *t, const char *name, size_t nth)
{
    return in_content_stage(t) ? headers_delete(&t->hdrs, name, nth) : -1;
}

static const struct config *host_cfg;

/* A replacement body obeys the rules received data does: CRLF text (no
 * bare LF, no lone CR, not even a last one), no NUL, and within
 * message_size_limit. It replaces any earlier replacement. */
static int h_body_replace(postern_txn *t, const char *data, size_t len)
{
    if (t->stage != POSTERN_STAGE_EOM)
        return -1;
    if (host_cfg && len > host_cfg->message_size_limit)
        return -1;
    for (size_t i = 0; i < len; i++)
        if (data[i] == '\0' || (data[i] == '\n' && (i == 0 || data[i - 1] != '\r')) ||
            (data[i] == '\r' && (i + 1 >= len || data[i + 1] != '\n')))
            return -1;
    buf_reset(&t->new_body);
    t->body_replaced = true;
    return buf_append(&t->new_body, data, len);
}

static int h_rcpt_add(postern_txn *t, const char *addr)
{
    if (!envelope_mutable(t) || smtp_check_address(addr, true))
        return -1;
    for (size_t i = 0; i < t->nrcpts; i++)
        if (!strcmp(t->rcpts[i].addr, addr))
            return 0;
    if (txn_add_rcpt(t, addr) < 0)
        return -1;
    note_envelope_change(t);
    return 0;
}

static int h_rcpt_delete(postern_txn *t, const char *addr)
{
    if (!envelope_mutable(t))
        return -1;
    struct txn_rcpt *r = txn_find_rcpt(t, addr);
    if (!r)
        return -1;
    txn_delete_rcpt(t, r);
    note_envelope_change(t);
    return 0;
}

static int h_sender_change(postern_txn *t, const char *addr)
{
    if (!envelope_mutable(t) || (addr[0] && smtp_check_address(addr, true)) || txn_set_sender(t, addr) < 0)
        return -1;
    note_envelope_change(t);
    return 0;
}

static int h_rcpt_quarantine(postern_txn *t, const char *rcpt, const char *reason)
{
    if (!has_envelope(t) || t->stage < POSTERN_STAGE_RCPT || t->stage > POSTERN_STAGE_EOM)
        return -1;
    struct txn_rcpt *r = txn_find_rcpt(t, rcpt);
    char *why = r ? strndup(reason && reason[0] ? reason : "spam", 250) : NULL;
    if (!why)
        return -1;
    for (char *p = why; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';                  /* one line, shown to the user */
    free(r->spam_reason);
    r->spam_reason = why;
    return 0;
}

static int h_rcpt_list(postern_txn *t, const char *rcpt)
{
    return t->sender ? (int)lists_check(rcpt, t->sender) : 0;
}

/* *slot = a copy of name (DELIVER only, when known is true). */
static int set_deliver_choice(postern_txn *t, char **slot, const char *name, bool known)
{
    char *copy = t->stage == POSTERN_STAGE_DELIVER && known ? strdup(name) : NULL;
    if (!copy)
        return -1;
    free(*slot);
    *slot = copy;
    return 0;
}

static int h_set_egress(postern_txn *t, const char *pool)
{
    return set_deliver_choice(t, &t->egress, pool, host_cfg && egress_pool_named(&host_cfg->egress, pool));
}

static int h_set_queue(postern_txn *t, const char *queue)
{
    return set_deliver_choice(t, &t->queue_name, queue, host_cfg && named_queue_find(&host_cfg->queues, queue));
}

static int h_set_nexthop(postern_txn *t, const char *rcpt, const char *nexthop)
{
    if (!has_envelope(t) || t->stage < POSTERN_STAGE_RCPT)
        return -1;
    struct nexthop hop;
    char err[200];
    if (nexthop_parse(nexthop, &hop, err, sizeof err) < 0)
        return -1;
    struct txn_rcpt *r = txn_find_rcpt(t, rcpt);
    char *n = r ? strdup(nexthop) : NULL;
    if (!n)
        return -1;
    free(r->nexthop);
    r->nexthop = n;
    return 0;
}

static int h_require_tls(postern_txn *t, const char *rcpt, const char *level)
{
    enum tls_level l = !strcmp(level, "encrypt") ? TLS_ENCRYPT : !strcmp(level, "verify") ? TLS_VERIFY : TLS_NONE;
    if (l == TLS_NONE || !has_envelope(t) || t->stage < POSTERN_STAGE_RCPT)
        return -1;
    struct txn_rcpt *r = txn_find_rcpt(t, rcpt);
    if (!r)
        return -1;
    if (l > r->min_tls)
        r->min_tls = (unsigned char)l;
    return 0;
}

static int h_request_archive(postern_txn *t)
{
    t->archive = true;
    return 0;
}

static int h_archive_requested(postern_txn *t) { return t->archive; }

static int h_message_open(postern_txn *t, uint64_t *length)
{
    if (t->stage != POSTERN_STAGE_QUEUE && t->stage != POSTERN_STAGE_DELIVER)
        return -1;
    int fd = stored_message(t);
    if (fd < 0)
        return -1;
    if (lseek(fd, (off_t)t->body_off, SEEK_SET) < 0) {
        close(fd);
        return -1;
    }
    *length = t->stored_len;
    return fd;
}

static void *h_alloc(postern_txn *t, size_t n) { return txn_alloc(t, n); }

static const char *h_var_get(postern_txn *t, const char *key)
{
    const struct var *v = varmap_get(&t->vars, key);
    if (!v || v->type == VAR_NIL)
        return NULL;
    if (v->type == VAR_STRING)
        return v->str;
    if (v->type == VAR_BOOL)
        return v->num ? "true" : "false";
    char *s = txn_alloc(t, 32);
    if (s)
        snprintf(s, 32, "%.17g", v->num);
    return s;
}

static int h_var_set(postern_txn *t, const char *key, const char *value)
{
    return varmap_set(&t->vars, key, value ? VAR_STRING : VAR_NIL, 0, value);
}

static void *h_data_get(postern_txn *t, const void *owner) { return txn_slot_get(t, owner); }

static int h_data_set(postern_txn *t, const void *owner, void *data, void (*release)(void *))
{
    return txn_slot_set(t, owner, data, release);
}

/* On the loop (a loop_first stage), a host call that would wait says so
 * instead (postern_plugin.h, loop_first_stages). */
static int would_block(void)
{
    hooks_would_block();
    return POSTERN_WOULDBLOCK;
}

static int h_dns_query(postern_txn *t, const char *name, int rrtype, unsigned char *answer, size_t size)
{
    (void)t;
    if (!hooks_on_loop())
        return dns_query_sync(name, rrtype, answer, size);
    if (hooks_dns_failed(name, rrtype))
        return -1;           /* it got no answer while this stage waited for it */
    int n = dns_query_cached(name, rrtype, answer, size);
    if (n != DNS_NOT_CACHED)
        return n;
    hooks_would_block_dns(name, rrtype);
    return POSTERN_WOULDBLOCK;
}

static long h_body_read(postern_txn *t, uint64_t offset, char *buf, size_t len)
{
    if (t->stage != POSTERN_STAGE_EOM)
        return -1;
    if (t->body_replaced) {
        if (offset >= t->new_body.len)
            return 0;
        size_t n = t->new_body.len - (size_t)offset < len ? t->new_body.len - (size_t)offset : len;
        memcpy(buf, buf_head(&t->new_body) + offset, n);
        return (long)n;
    }
    return txn_body_pread(t, buf, len, offset);
}

void plugin_host_configure(const struct config *cfg) { host_cfg = cfg; }
static const char *h_hostname(void) { return host_cfg ? host_cfg->hostname : "localhost"; }

static int h_client_trusted(postern_txn *t)
{
    struct sockaddr_storage ss;
    socklen_t len;
    return host_cfg && ip_parse(t->client_ip, 0, &ss, &len) == 0 && config_is_trusted(host_cfg, (struct sockaddr *)&ss);
}

static bool checking_only, dry_run_only;
void plugin_host_set_checking(bool on) { checking_only = on; }
static int h_checking(void) { return checking_only; }
void plugin_host_set_dry_run(bool on) { dry_run_only = on; }
static int h_dry_run(void) { return dry_run_only; }

/* The log of earlier stages (QUEUE/DELIVER) followed by this one's. */
static const char *h_decisions(postern_txn *t)
{
    const char *mine = decisions_text(t->decisions);
    if (!t->prior_decisions || !t->prior_decisions[0])
        return mine;
    size_t a = strlen(t->prior_decisions), b = strlen(mine);
    char *all = txn_alloc(t, a + b + 1);
    if (!all)
        return mine;
    memcpy(all, t->prior_decisions, a);
    memcpy(all + a, mine, b + 1);
    return all;
}

static const char *h_rcpt_nexthop(postern_txn *t, size_t i) { return i < t->nrcpts ? t->rcpts[i].nexthop : NULL; }

static const char *h_rcpt_tls(postern_txn *t, size_t i)
{
    if (i >= t->nrcpts || t->rcpts[i].min_tls == TLS_NONE)
        return NULL;
    return tls_level_name((enum tls_level)t->rcpts[i].min_tls);
}

/* Shared state for C plugins: keys under "c:", apart from Lua's "lua:". */
static bool plugin_key(const char *key, char *out, size_t size)
{
    return key && key[0] && snprintf(out, size, "c:%s", key) < (int)size;
}

static int h_kv_incr(postern_txn *t, const char *key, long window, long long *count)
{
    (void)t;
    char k[KV_KEY_MAX];
    if (hooks_on_loop() && kv_shared())
        return would_block();
    return plugin_key(key, k, sizeof k) ? kv_incr_wait(k, window, count) : -1;
}

static int h_kv_get(postern_txn *t, const char *key, char *value, size_t size, int *found)
{
    (void)t;
    char k[KV_KEY_MAX];
    if (hooks_on_loop() && kv_shared())
        return would_block();
    bool f = false;
    int rc = plugin_key(key, k, sizeof k) ? kv_get_wait(k, value, size, &f) : -1;
    *found = f;
    return rc;
}

static int h_kv_set(postern_txn *t, const char *key, const char *value, long ttl)
{
    (void)t;
    char k[KV_KEY_MAX];
    if (hooks_on_loop() && kv_shared())
        return would_block();
    return plugin_key(key, k, sizeof k) ? kv_set_wait(k, value, ttl) : -1;
}

static void *h_session_data_get(postern_txn *t, const void *owner) { return txn_session_slot_get(t, owner); }

static int h_session_data_set(postern_txn *t, const void *owner, void *data, void (*release)(void *))
{
    return txn_session_slot_set(t, owner, data, release);
}

static int h_defer_to_worker(postern_txn *t)
{
    (void)t;
    return hooks_on_loop() ? would_block() : 0;
}

static const struct postern_host host = {
    .abi_version = POSTERN_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct postern_host),
    .log = h_log,
    .set_reply = h_set_reply,
    .client_addr = h_client_addr,
    .helo_name = h_helo_name,
    .tls_active = h_tls_active,
    .queue_id = h_queue_id,
    .sender = h_sender,
    .rcpt_count = h_rcpt_count,
    .rcpt = h_rcpt,
    .declared_size = h_declared_size,
    .message_size = h_message_size,
    .header_count = h_header_count,
    .header_at = h_header_at,
    .header_get = h_header_get,
    .header_add = h_header_add,
    .header_insert = h_header_insert,
    .header_change = h_header_change,
    .header_delete = h_header_delete,
    .body_replace = h_body_replace,
    .rcpt_add = h_rcpt_add,
    .rcpt_delete = h_rcpt_delete,
    .sender_change = h_sender_change,
    .set_nexthop = h_set_nexthop,
    .request_archive = h_request_archive,
    .archive_requested = h_archive_requested,
    .message_open = h_message_open,
    .alloc = h_alloc,
    .require_tls = h_require_tls,
    .var_get = h_var_get,
    .var_set = h_var_set,
    .data_get = h_data_get,
    .data_set = h_data_set,
    .dns_query = h_dns_query,
    .body_read = h_body_read,
    .hostname = h_hostname,
    .client_trusted = h_client_trusted,
    .auth_user = h_auth_user,
    .checking = h_checking,
    .submit_message = local_submit,
    .dry_run = h_dry_run,
    .decisions = h_decisions,
    .rcpt_nexthop = h_rcpt_nexthop,
    .rcpt_tls = h_rcpt_tls,
    .submit_message_flags = local_submit_flags,
    .kv_incr = h_kv_incr,
    .kv_get = h_kv_get,
    .kv_set = h_kv_set,
    .defer_to_worker = h_defer_to_worker,
    .session_data_get = h_session_data_get,
    .session_data_set = h_session_data_set,
    .open_config_file = privsep_open,
    .rcpt_quarantine = h_rcpt_quarantine,
    .rcpt_list = h_rcpt_list,
    .set_egress = h_set_egress,
    .set_queue = h_set_queue,
};

const struct postern_host *plugin_host(void) { return &host; }
