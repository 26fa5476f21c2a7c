/* postern_plugin.h - the whole C plugin ABI of Postern, in one header.
 *
 * A plugin is a shared object that exports one function:
 *
 *     const struct postern_plugin *postern_plugin_entry(void);
 *
 * returning a static struct whose first two fields are abi_version and
 * struct_size (fields are only ever appended, as in nginx and Redis
 * modules: a plugin built against an older header keeps loading, and the
 * fields it does not have count as 0). posternd dlopen()s "<plugin_dir>/<name>.so" for every name in
 * the config's `plugins =` chain, refuses to start on a missing symbol or a
 * different ABI version, and calls the callbacks in chain order. The first
 * verdict other than POSTERN_CONTINUE wins for that stage.
 *
 * Threads: callbacks run on posternd's worker threads, so they may block
 * (DNS, files, sockets), unless the plugin marks a stage nonblocking_stages
 * or loop_first_stages (below): then it may run on the network loop. Two
 * transactions can be in callbacks of the same plugin at the same time:
 * guard your own shared state. One transaction is only ever in one callback
 * at a time.
 *
 * Memory: every pointer posternd passes in is borrowed for the duration of
 * the call. Memory that must live as long as the transaction comes from
 * host->alloc(); it is freed when the transaction ends. Plugin-wide state is
 * yours: create it in init, free it in fini.
 *
 * Errors: return POSTERN_ERROR (or crash-free garbage) and posternd tempfails
 * that message with 451 4.3.0 and logs the plugin name; it never stops.
 */
#ifndef POSTERN_PLUGIN_H
#define POSTERN_PLUGIN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define POSTERN_PLUGIN_ABI_VERSION 1
#define POSTERN_PLUGIN_ENTRY "postern_plugin_entry"

/* What a callback decides. */
typedef enum postern_verdict {
    POSTERN_CONTINUE = 0,  /* no opinion: ask the next plugin */
    POSTERN_ACCEPT,        /* stop the chain for this stage and accept */
    POSTERN_REJECT,        /* 5xx: set the text with host->set_reply() */
    POSTERN_TEMPFAIL,      /* 4xx: likewise */
    POSTERN_DISCARD,       /* answer 250, then drop the message (logged) */
    POSTERN_QUARANTINE,    /* answer 250, then keep it on hold; reason via set_reply() */
    POSTERN_ERROR,         /* the plugin failed: the message is tempfailed */
} postern_verdict;

/* Where in a message's life a callback runs. */
typedef enum postern_stage {
    POSTERN_STAGE_CONNECT,  /* client connected */
    POSTERN_STAGE_HELO,     /* HELO/EHLO */
    POSTERN_STAGE_MAIL,     /* MAIL FROM */
    POSTERN_STAGE_RCPT,     /* each RCPT TO (after relay control allowed it) */
    POSTERN_STAGE_DATA,     /* header section complete */
    POSTERN_STAGE_BODY,     /* each chunk of the body, in order */
    POSTERN_STAGE_EOM,      /* end of message, before it is committed */
    POSTERN_STAGE_QUEUE,    /* committed and answered 250, before scheduling */
    POSTERN_STAGE_DELIVER,  /* before each delivery attempt */
} postern_stage;

/* Opaque handles. A transaction handle is valid at every stage; at CONNECT
 * and HELO it has no envelope yet. */
typedef struct postern_txn postern_txn;

/* Log levels for host->log. */
enum { POSTERN_LOG_ERROR, POSTERN_LOG_WARN, POSTERN_LOG_INFO, POSTERN_LOG_DEBUG };

/* Functions posternd offers to plugins. Handed to init(); append-only. */
struct postern_host {
    uint32_t abi_version;
    uint32_t struct_size;

    void (*log)(postern_txn *t, int level, const char *fmt, ...);

    /* The SMTP reply (or, after 250, the reason) that goes with a REJECT,
     * TEMPFAIL or QUARANTINE verdict, e.g. "550 5.7.1 Not here". */
    void (*set_reply)(postern_txn *t, const char *reply);

    /* Session: client address ("192.0.2.1"), HELO name, whether TLS is on. */
    const char *(*client_addr)(postern_txn *t);
    const char *(*helo_name)(postern_txn *t);
    int (*tls_active)(postern_txn *t);

    /* Envelope. queue_id is "" before DATA. sender is "" for <>. */
    const char *(*queue_id)(postern_txn *t);
    const char *(*sender)(postern_txn *t);
    size_t (*rcpt_count)(postern_txn *t);
    const char *(*rcpt)(postern_txn *t, size_t i);
    /* SIZE= from MAIL (0 if none); bytes of message seen so far. */
    uint64_t (*declared_size)(postern_txn *t);
    uint64_t (*message_size)(postern_txn *t);

    /* Headers (from DATA on). index 0 is the first header. Values are raw:
     * everything after the colon, folding kept, no final CRLF. */
    size_t (*header_count)(postern_txn *t);
    int (*header_at)(postern_txn *t, size_t i, const char **name, const char **value);
    /* nth (0-based) header called name, case-insensitively, or NULL. */
    const char *(*header_get)(postern_txn *t, const char *name, size_t nth);

    /* Mutations. Each returns 0, or -1 if not allowed at this stage (header
     * and body changes: DATA, BODY, EOM; envelope changes: up to EOM). */
    int (*header_add)(postern_txn *t, const char *name, const char *value);     /* at the end */
    int (*header_insert)(postern_txn *t, size_t index, const char *name, const char *value);
    int (*header_change)(postern_txn *t, const char *name, size_t nth, const char *value);
    int (*header_delete)(postern_txn *t, const char *name, size_t nth);
    /* Replace the whole body (EOM only); call again to append more. */
    int (*body_replace)(postern_txn *t, const char *data, size_t len);
    int (*rcpt_add)(postern_txn *t, const char *addr);
    int (*rcpt_delete)(postern_txn *t, const char *addr);
    int (*sender_change)(postern_txn *t, const char *addr);
    /* Send this recipient's copy to "smtp:[ip]:port" or "mx" (any stage with an envelope). */
    int (*set_nexthop)(postern_txn *t, const char *rcpt, const char *nexthop);
    /* Ask for an archive copy: sets a flag archivers read with archive_requested. */
    int (*request_archive)(postern_txn *t);
    int (*archive_requested)(postern_txn *t);

    /* The stored message (QUEUE and DELIVER): an fd positioned at its first
     * byte, and its length. Close the fd when done. */
    int (*message_open)(postern_txn *t, uint64_t *length);

    /* Memory that lives until the transaction ends. */
    void *(*alloc)(postern_txn *t, size_t n);

    /* Demand TLS when delivering to this recipient: level "encrypt" (any
     * certificate) or "verify" (CA-verified, name-matched). The stricter of
     * this and the domain's TLS policy applies; never a downgrade. */
    int (*require_tls)(postern_txn *t, const char *rcpt, const char *level);

    /* ---- appended in 0.2 (check struct_size before use in code that must
     * also run on older hosts) ---- */

    /* Transaction variables, shared with later plugins and Lua (tx.vars):
     * strings in, strings out (Lua numbers and booleans read as text).
     * var_get returns NULL for an unset key; var_set with NULL unsets. */
    const char *(*var_get)(postern_txn *t, const char *key);
    int (*var_set)(postern_txn *t, const char *key, const char *value);

    /* One pointer of your own per transaction, keyed by any address of
     * yours (e.g. your state). release (may be NULL) runs when the
     * transaction ends, after RSET or a refusal too. Setting again releases
     * the old pointer. */
    void *(*data_get)(postern_txn *t, const void *owner);
    int (*data_set)(postern_txn *t, const void *owner, void *data, void (*release)(void *data));

    /* Blocking DNS through posternd's own resolver (the dns_server setting),
     * class IN. Writes the raw reply packet (parse it with ns_initparse) and
     * returns its length; NXDOMAIN and empty answers are replies too (look
     * at the rcode). -1: no reply (timeout, network, the buffer too small).
     * In a loop_first stage on the loop it answers from posternd's cache
     * only: POSTERN_WOULDBLOCK when the answer is not there (since 0.10). */
    int (*dns_query)(postern_txn *t, const char *name, int rrtype, unsigned char *answer, size_t size);

    /* EOM only: the body as it will be stored (after any body_replace),
     * from offset. Returns bytes copied, 0 at the end, -1 if not at EOM. */
    long (*body_read)(postern_txn *t, uint64_t offset, char *buf, size_t len);

    /* posternd's hostname setting: the authserv-id, the name in Received. */
    const char *(*hostname)(void);

    /* Whether the client is in trusted_networks (may relay anywhere): the
     * submitting side, as opposed to mail arriving from the internet. */
    int (*client_trusted)(postern_txn *t);

    /* ---- appended in 0.3 ---- */

    /* The login the client is known by, or NULL: posternd has no SMTP AUTH
     * of its own, so this is XCLIENT LOGIN from a trusted proxy or, under
     * postern-milter, the MTA's {auth_authen}. */
    const char *(*auth_user)(postern_txn *t);

    /* ---- appended in 0.4 ---- */

    /* 1 while posternd only checks its configuration (posternd -t): init
     * should check what it needs (a directory is writable, a file readable)
     * and create nothing; no stage will run. */
    int (*checking)(void);

    /* ---- appended in 0.6 ---- */

    /* Queue a new message of the plugin's own (a report, a notice) from
     * sender ("" = the null sender) to rcpts. message is the header section
     * and body, CRLF line ends only, lines of at most 998 octets, no NUL;
     * posternd adds its Received header. Blocking (it fsyncs): returns 0 once
     * the message is committed to the spool, with its queue ID in qid (17
     * bytes, may be NULL); it then runs the QUEUE and DELIVER stages and is
     * delivered like any other. -1 with errno: EINVAL (a bad address or
     * message), EFBIG (over message_size_limit), ELOOP (called from the
     * QUEUE or DELIVER stage of a message posternd made itself: a DSN or
     * another submitted message), EAGAIN (the queue is not
     * running yet or any more: try again later), ENOTSUP (no queue in this
     * process: postern-milter). Any thread; best a plugin thread of your own. */
    int (*submit_message)(const char *sender, const char *const *rcpts, size_t nrcpts, const char *message,
                          size_t len, char *qid);

    /* ---- appended in 0.7 ---- */

    /* 1 under `postern policy test` and `policy replay`: every stage runs,
     * but on a message nobody will deliver. Change nothing outside the
     * transaction: write no archive copy, persist no state (a greylist
     * reads its database and does not update it), record nothing for
     * reports, submit no messages. Verdicts and reply texts should be
     * the ones a real run would give. */
    int (*dry_run)(void);

    /* The links that decided something for this message so far (every
     * verdict other than continue, from CONNECT on), one line each:
     * "STAGE LINK VERDICT: REPLY\n" (verdict lower case). "" when none. */
    const char *(*decisions)(postern_txn *t);

    /* Recipient i's next hop as a plugin set it (set_nexthop), or NULL
     * (the transport table decides); the TLS level a plugin demanded for it
     * (require_tls: "encrypt", "verify"), or NULL. */
    const char *(*rcpt_nexthop)(postern_txn *t, size_t i);
    const char *(*rcpt_tls)(postern_txn *t, size_t i);

    /* ---- appended in 0.8 ---- */

    /* submit_message with POSTERN_SUBMIT_* flags. POSTERN_SUBMIT_JOURNAL:
     * the message wraps one posternd accepted (a journal report). It skips
     * the QUEUE and DELIVER stages (no plugin sees, journals or changes it),
     * may be up to 64 KiB over message_size_limit, and its lines are not
     * limited to 998 octets (the wrapped message's are as they came). It
     * may be called at EOM too, to commit the copy before the 250. */
    int (*submit_message_flags)(const char *sender, const char *const *rcpts, size_t nrcpts, const char *message,
                                size_t len, unsigned flags, char *qid);

    /* ---- appended in 0.9 ---- */

    /* Policy state shared by every node (redis_server; without it, this
     * posternd's own): a counter that starts at its first kv_incr and goes
     * after window seconds (*count: the new value); a value that goes after
     * ttl seconds (0: kept; *found 0 when not set). Blocking: worker
     * stages only, never from a stage marked nonblocking. 0, or -1 (a bad
     * key, or Redis did not answer under redis_failure = tempfail; under
     * open, this node's own state answers). Prefix keys with the plugin's
     * name; they are at most 500 bytes, values at most 4000. In a
     * loop_first stage on the loop they return POSTERN_WOULDBLOCK when
     * redis_server is set (since 0.10). */
    int (*kv_incr)(postern_txn *t, const char *key, long window, long long *count);
    int (*kv_get)(postern_txn *t, const char *key, char *value, size_t size, int *found);
    int (*kv_set)(postern_txn *t, const char *key, const char *value, long ttl);

    /* ---- appended in 0.10 ---- */

    /* In a loop_first stage on the loop: POSTERN_WOULDBLOCK, and the call
     * is made again on a worker (return at once, as after any
     * POSTERN_WOULDBLOCK). For a call that is heavy this time, such as a
     * message with many signatures to check. Elsewhere 0. */
    int (*defer_to_worker)(postern_txn *t);

    /* data_get/data_set for the SMTP session: the pointer lives across the
     * session's transactions until the client goes; release runs then,
     * after the last transaction's own data is released. NULL / -1 where
     * there is no session (QUEUE, DELIVER). */
    void *(*session_data_get)(postern_txn *t, const void *owner);
    int (*session_data_set)(postern_txn *t, const void *owner, void *data, void (*release)(void *data));

    /* ---- appended in 0.11 ---- */

    /* A file the configuration names (a key, a password file, a table
     * listing keys), opened for reading. posternd runs as an unprivileged
     * user; what that user cannot read (a key that is root's, mode 0600)
     * is opened by its privileged parent, at start and at every reload,
     * provided the configuration (or a file opened this way) names it and
     * the daemon's user cannot change it. A descriptor (close it), or -1
     * with errno and why (may be NULL) saying what was refused. Use it in
     * init for every secret, instead of open()/fopen(). */
    int (*open_config_file)(const char *path, char *why, size_t whylen);

    /* ---- appended in 0.12 ---- */

    /* Hold the message in the spam quarantine for one recipient only (RCPT
     * to EOM; reason, one line, is what that user is shown): the others
     * are delivered; this copy waits for its release, or is removed
     * spam_quarantine_lifetime after arrival, with no notice. 0, or -1
     * (no such recipient, or not at this stage). */
    int (*rcpt_quarantine)(postern_txn *t, const char *rcpt, const char *reason);
    /* What the recipient's personal lists (or its domain's) say of this
     * transaction's sender: 'A' (allowed: skip spam and greylist verdicts
     * for that recipient), 'B' (blocked) or 0. */
    int (*rcpt_list)(postern_txn *t, const char *rcpt);

    /* ---- appended in 0.13 ---- */

    /* DELIVER only: this attempt's connections come from egress pool (or
     * source) `pool` of the egress table, before its from/to rules. 0, or
     * -1 (no such pool, or another stage). */
    int (*set_egress)(postern_txn *t, const char *pool);
    /* DELIVER only: this attempt goes in named queue `queue` of the queues
     * table (its priority and concurrency), before its from/to rules. 0,
     * or -1 (no such queue, or another stage). */
    int (*set_queue)(postern_txn *t, const char *queue);
};

#define POSTERN_SUBMIT_JOURNAL 1u

/* What dns_query and kv_* return in a loop_first stage when answering
 * would block (see loop_first_stages). */
#define POSTERN_WOULDBLOCK (-2)

/* Whether posternd's host table has function fn (appended after your
 * posternd was built?): if (!POSTERN_HOST_HAS(host, dns_query)) ... */
#define POSTERN_HOST_HAS(h, fn) ((h)->struct_size >= offsetof(struct postern_host, fn) + sizeof((h)->fn))
/* For init: 0 if the host table has fn (the newest function you use),
 * else -1 with err naming it:
 *   if (POSTERN_HOST_REQUIRE(host, hostname, err, errlen) < 0) return -1; */
#define POSTERN_HOST_REQUIRE(h, fn, err, errlen) \
    (POSTERN_HOST_HAS(h, fn) ? 0 : (snprintf((err), (errlen), "posternd is too old for this plugin (no host->%s)", #fn), -1))

/* One name = value pair from the main config ("<plugin>.<key> = value"). */
struct postern_option {
    const char *key;
    const char *value;
};

/* What a plugin says of each option it takes (appended in 0.11, the
 * plugin struct's `options`): posternd refuses an option the table does not
 * name, a second value for one that does not repeat, and a value of the
 * wrong kind, naming file:line, before init runs; `postern plugin-options`
 * prints the tables and postern-plugins(5) is made from them. */
enum postern_option_type {
    POSTERN_OPT_TEXT,       /* anything (the plugin checks it) */
    POSTERN_OPT_NUMBER,     /* an integer */
    POSTERN_OPT_BOOL,       /* yes or no */
    POSTERN_OPT_CHOICE,     /* one of `choices`, "|"-separated */
    POSTERN_OPT_PATH,       /* an absolute path, or file:/PATH */
};

struct postern_option_spec {
    const char *key;                    /* NULL ends the table */
    enum postern_option_type type;
    const char *choices;                /* POSTERN_OPT_CHOICE: "reject|quarantine|discard" */
    const char *default_text;           /* as documentation; NULL: none, "" : required */
    int repeat;                         /* may be given more than once (each value counts) */
    const char *doc;                    /* one line */
};

/* The plugin. Any callback may be NULL: not interested in that stage. */
struct postern_plugin {
    uint32_t abi_version;        /* POSTERN_PLUGIN_ABI_VERSION */
    uint32_t struct_size;        /* sizeof(struct postern_plugin) */
    const char *name;

    /* Called once at start-up with this plugin's options. Return 0 and set
     * *state, or -1 with a message in err (posternd refuses to start). An
     * unknown option should be such an error. */
    int (*init)(const struct postern_host *host, const struct postern_option *opts, size_t nopts,
                void **state, char *err, size_t errlen);
    void (*fini)(void *state);

    postern_verdict (*on_connect)(postern_txn *t, void *state);
    postern_verdict (*on_helo)(postern_txn *t, const char *helo, void *state);
    postern_verdict (*on_mail)(postern_txn *t, const char *sender, void *state);
    postern_verdict (*on_rcpt)(postern_txn *t, const char *rcpt, void *state);
    postern_verdict (*on_data)(postern_txn *t, void *state);
    postern_verdict (*on_body)(postern_txn *t, const char *chunk, size_t len, void *state);
    postern_verdict (*on_eom)(postern_txn *t, void *state);
    postern_verdict (*on_queue)(postern_txn *t, void *state);
    postern_verdict (*on_deliver)(postern_txn *t, void *state);

    /* ---- appended in 0.6 (posternd loads plugins built before: a field
     * past their struct_size reads as 0) ---- */

    /* Stages whose callback never blocks, as bits POSTERN_NONBLOCKING(stage):
     * no DNS, network, disk or waiting on a lock, and quick (hashing a
     * chunk, adding a header). posternd may then call it on its network
     * loop rather than hand the stage to a worker and back, which saves two
     * thread hand-offs per stage. A callback that blocks there stalls every
     * session: leave 0 when unsure. */
    uint32_t nonblocking_stages;

    /* ---- appended in 0.10 ---- */

    /* Stages that block only in host->dns_query and host->kv_*, as bits
     * POSTERN_LOOP_FIRST(stage). posternd may call such a stage on its
     * loop first; there those calls never wait: dns_query answers from
     * posternd's DNS cache, kv_* from this node's own state when there is
     * no Redis, or they return POSTERN_WOULDBLOCK. After a POSTERN_WOULDBLOCK, return at once
     * (any verdict), before anything a second call would not redo: no
     * var_set, header or recipient change, log line or counter. posternd
     * discards that call and makes it again on a worker, where the calls
     * block as usual. Mail from the same senders then costs no thread
     * hand-off once their records are cached. */
    uint32_t loop_first_stages;

    /* ---- appended in 0.11 ---- */

    /* The options this plugin takes (see struct postern_option_spec), ended
     * by a NULL key; NULL: the plugin checks its options alone. */
    const struct postern_option_spec *options;
};

#define POSTERN_NONBLOCKING(stage) (1u << (stage))
#define POSTERN_LOOP_FIRST(stage) (1u << (stage))
/* The smallest plugin struct posternd loads: the layout of 0.5, before
 * nonblocking_stages was appended. */
#define POSTERN_PLUGIN_MIN_SIZE offsetof(struct postern_plugin, nonblocking_stages)

#endif
