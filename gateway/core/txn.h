/* txn.h - one mail transaction as the hook chain sees it: the session
 * view, the envelope, the header list, and what plugins asked for. The
 * SMTP session embeds one; the queue builds one for QUEUE and DELIVER. */
#ifndef POSTERN_TXN_H
#define POSTERN_TXN_H
#include "postern_plugin.h"
#include "buf.h"
#include "headers.h"
#include "spool.h"
#include <stdbool.h>
#include <stdint.h>

struct pool_block;
struct hook_chain;
/* A plugin's own pointer for this transaction (host->data_set). */
struct txn_slot {
    struct txn_slot *next;
    const void *owner;
    void *data;
    void (*release)(void *data);
};

/* Variables scripts keep between their handlers (strings, numbers, booleans). */
enum var_type { VAR_NIL, VAR_BOOL, VAR_NUMBER, VAR_STRING };
struct var {
    char *key;
    enum var_type type;
    double num;
    char *str;
};
struct varmap {
    struct var *v;
    size_t n, cap;
    size_t bytes;                  /* keys and strings held, against VARMAP_MAX_BYTES */
};
/* Bounds per transaction: a script's variables live in C memory, outside
 * lua_memory_limit. */
#define VARMAP_MAX_VARS 1024
#define VARMAP_MAX_BYTES (1024 * 1024)
const struct var *varmap_get(const struct varmap *m, const char *key);
/* 0, or -1 (out of memory, or over VARMAP_MAX_VARS / VARMAP_MAX_BYTES). */
int varmap_set(struct varmap *m, const char *key, enum var_type type, double num, const char *str);
void varmap_free(struct varmap *m);

/* One recipient and what the RCPT command and plugins attached to it. */
struct txn_rcpt {
    char *addr;
    char *nexthop;             /* NULL = transport table */
    unsigned char min_tls;     /* enum tls_level a plugin demanded (0 = none) */
    struct rcpt_dsn dsn;       /* NOTIFY/ORCPT from RCPT */
    char *spam_reason;         /* held in the spam quarantine for this recipient (why), or NULL */
};

struct postern_txn {
    struct hook_chain *chain;  /* the chain it runs under (NULL = the current one) */
    /* session view */
    unsigned long sid;         /* the SMTP session's number, for log lines (0: none) */
    bool local_origin;         /* QUEUE/DELIVER of a message posternd made (no submit_message: loops) */
    char client_ip[64];
    char helo[256];
    char auth_user[256];       /* login a trusted proxy or the MTA vouched for ("" = none) */
    bool tls;
    enum postern_stage stage;
    /* envelope */
    char qid[QID_LEN];
    char *sender;              /* NULL before MAIL; "" for <> */
    struct txn_rcpt *rcpts;
    size_t nrcpts;
    uint64_t declared_size;
    uint64_t size;             /* message bytes seen so far */
    bool envelope_changed;     /* sender/recipients changed after DATA began */
    /* content */
    struct header_list hdrs;
    bool headers_written;      /* later header changes need a rewrite */
    bool headers_loaded;       /* QUEUE/DELIVER: read from the spool on first use */
    const char *inside_only;   /* relayed out: these header fields (headers.h's lists) are never added */
    struct buf new_body;
    bool body_replaced;
    /* what plugins asked for */
    bool archive;
    bool discard;
    bool quarantine;
    char *egress;              /* DELIVER: the egress pool for this attempt (set_egress), or NULL */
    char *queue_name;          /* DELIVER: the named queue for this attempt (set_queue), or NULL */
    char reply[512];           /* text for REJECT / TEMPFAIL / QUARANTINE */
    char hold_reason[256];     /* the QUARANTINE reason that will stick (the spool keeps 250 bytes) */
    const char *verdict_by;    /* plugin that decided */
    char *decisions;           /* every link's verdict other than continue, one line each; NULL
                                  until there is one (an idle session carries no 1 KiB log) */
    const char *prior_decisions;    /* QUEUE/DELIVER: the message's log before this stage (borrowed) */
    /* script variables: this transaction's, and the session's (NULL after the 250) */
    struct varmap vars;
    struct varmap *session_vars;
    /* the message being received, for EOM (the open spool file) */
    int data_fd;
    uint64_t body_start, body_len;
    const char *body_mem;      /* the body when the spool writer still holds it (not on disk yet), or NULL */
    /* stored message, for QUEUE and DELIVER */
    size_t body_off;
    uint64_t stored_len;
    int stored_fd;             /* > 0: the stored message is this file, not the spool's (policy runs) */
    struct pool_block *pool;
    struct txn_slot *slots;
    /* plugins' session data (host->session_data_*): the session's list,
     * kept across its transactions; NULL outside a session (QUEUE, DELIVER) */
    struct txn_slot **session_slots;
};
typedef struct postern_txn txn_t;

/* At EOM: up to len bytes of the received body from offset (from the
 * spool writer's memory or the open spool file). Bytes read, or -1. */
long txn_body_pread(const txn_t *t, char *buf, size_t len, uint64_t offset);

/* Forget the envelope and content, keep the session view. */
void txn_reset(txn_t *t);
/* Add "STAGE LINK VERDICT: REPLY" to a decision log of at most
 * DECISIONS_MAX bytes, made on first use (what no longer fits is left
 * out). */
void decisions_add(char **log, const char *stage, const char *link, const char *verdict, const char *reply);
/* *dst becomes a copy of src (NULL: none). */
void decisions_copy(char **dst, const char *src);
static inline const char *decisions_text(const char *log) { return log ? log : ""; }
void txn_free(txn_t *t);
int txn_add_rcpt(txn_t *t, const char *addr);
/* The recipient called addr (case-insensitively), or NULL. */
struct txn_rcpt *txn_find_rcpt(txn_t *t, const char *addr);
void txn_delete_rcpt(txn_t *t, struct txn_rcpt *r);
int txn_set_sender(txn_t *t, const char *addr);
/* The DSN request of recipient i (orcpt "" = none). */
int txn_set_rcpt_dsn(txn_t *t, size_t i, unsigned notify, const char *orcpt);
/* Per-recipient next hops in the sidecar's "route" form, for the spool. */
void *txn_alloc(txn_t *t, size_t n);
void *txn_slot_get(const txn_t *t, const void *owner);
int txn_slot_set(txn_t *t, const void *owner, void *data, void (*release)(void *data));
/* The same for the session's list (-1 / NULL without one). */
void *txn_session_slot_get(const txn_t *t, const void *owner);
int txn_session_slot_set(txn_t *t, const void *owner, void *data, void (*release)(void *data));
/* Release every slot of a list (a session's, when it ends: after its txn). */
void txn_slots_free(struct txn_slot **head);

#endif
