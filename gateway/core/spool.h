/* spool.h - the on-disk queue. One file per message in queue/: an envelope
 * block of "key=value" lines ended by a blank line, then the raw message
 * (CRLF line ends, our Received header first). Written to tmp/, fsync'd,
 * renamed into queue/, directory fsync'd: only then is the message accepted.
 * Per-recipient delivery state lives in a sidecar "ID.st", replaced
 * atomically (write new + rename). Corrupt files move to corrupt/. */
#ifndef POSTERN_SPOOL_H
#define POSTERN_SPOOL_H
#include "buf.h"
#include "smtp_parse.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

/* The envelope's size and hop fields are fixed-width, so a commit or a
 * rewrite patches them in place (spool.c) in what spool_format.c wrote. */
#define SIZE_DIGITS 20
#define HOPS_DIGITS 4
#define QID_LEN 17   /* 16 hex digits + NUL: time-sortable and unique */
#define SPOOL_MAX_ENVELOPE (8u << 20)

/* A recipient's DSN request (RFC 3461): NOTIFY bits (0 = not given) and
 * ORCPT as received ("rfc822;xtext", NULL = none). */
struct rcpt_dsn {
    unsigned notify;
    char *orcpt;
};

struct envelope {
    char id[QID_LEN];
    int64_t arrival;          /* unix seconds */
    char client_ip[64];
    char helo[256];
    char proto[16];           /* SMTP / ESMTP */
    enum smtp_body body;
    bool smtputf8;
    bool requiretls;          /* MAIL REQUIRETLS (RFC 8689): relay only over authenticated TLS */
    bool tls_optional;        /* "TLS-Required: No" (RFC 8689 5), when honoured */
    char *sender;             /* "" for the null sender */
    char **rcpts;
    struct rcpt_dsn *dsn;     /* parallel to rcpts; NULL when no recipient asked */
    size_t nrcpts;
    enum dsn_ret ret;         /* MAIL RET= */
    char envid[DSN_MAX_ENVID + 1];   /* MAIL ENVID= (xtext), "" = none */
    uint64_t size;            /* bytes of message after the envelope block */
    int hops;                 /* Received: headers, ours included */
};

/* FAILED: a DSN is still owed; BOUNCED: failed and the DSN is queued (or
 * suppressed for the null sender). RELAYED: delivered to a next hop without
 * DSN support while the sender asked for NOTIFY=SUCCESS: a "relayed" notice
 * is owed; once queued the recipient is DONE. */
/* QUARANTINED: held in the spam quarantine for this recipient only (until
 * released, or removed after spam_quarantine_lifetime, with no notice). */
enum rcpt_status { RCPT_PENDING = 'P', RCPT_DONE = 'D', RCPT_FAILED = 'F', RCPT_BOUNCED = 'B', RCPT_RELAYED = 'R',
                   RCPT_QUARANTINED = 'Q' };

/* Message-level flags kept in the sidecar beside the recipients. */
#define DECISIONS_MAX 1024       /* the decision log of a message, bytes */
struct msg_flags {
    bool held;
    bool warned;    /* delay warning already sent */
    bool queued;    /* the QUEUE stage of the hook chain has run */
    bool archive;   /* a plugin requested an archive copy */
    char reason[256];   /* why it is held (quarantine) */
    char decisions[DECISIONS_MAX];  /* "STAGE LINK VERDICT: REPLY" lines: who decided what */
};

/* A recipient state's text, allocated to its size; .s is NULL for none (a
 * queued recipient that was never tried holds no text: issue 37's memory per
 * queued message). A struct, so code that still reads it as an array does
 * not compile. Set with rtext_printf, read with rtext_str. */
struct rtext {
    char *s;
};
static inline const char *rtext_str(struct rtext t) { return t.s ? t.s : ""; }
static inline bool rtext_has(struct rtext t) { return t.s && t.s[0]; }
/* Format into t, keeping at most size - 1 bytes (as snprintf would); an
 * empty result, or no memory, leaves no text. */
void rtext_printf(struct rtext *t, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void rtext_clear(struct rtext *t);

/* The most each text keeps, counting the NUL (the sidecar's limits). */
#define RCPT_REPLY_SIZE 256
#define RCPT_REMOTE_SIZE 160
#define RCPT_COMMAND_SIZE 24
#define RCPT_NEXTHOP_SIZE 80

/* A recipient's delivery state. It owns its texts: a copy is made with
 * rcpt_state_copy (or by moving the struct and forgetting the source), and
 * rcpt_state_clear frees them. */
struct rcpt_state {
    char status;
    int attempts;
    int64_t next_try;
    int min_tls;              /* TLS level a plugin demanded for delivery (0 = none) */
    struct rtext last_reply;
    struct rtext remote;      /* "host[ip]" that gave last_reply, none = our own reason */
    struct rtext in_reply_to; /* the command it answered: "RCPT TO", "end of DATA", ... */
    struct rtext nexthop;     /* plugin route override, none = transport table */
};
void rcpt_state_clear(struct rcpt_state *st);
/* A deep copy of from into to (to holds nothing yet); -1 out of memory
 * (to then holds what could be copied). */
int rcpt_state_copy(struct rcpt_state *to, const struct rcpt_state *from);
/* Clear n states and free the array. */
void rcpt_states_free(struct rcpt_state *st, size_t n);

void envelope_free(struct envelope *e);
/* Where the fixed-width fields sit, so the writer can fill them in at commit
 * time (they are only known once the whole message has been read). */
struct envelope_offsets {
    size_t size;
    size_t hops;
    size_t tls_optional;
};
/* Codec (pure). encode writes the block including the trailing blank line. */
int spool_envelope_encode(const struct envelope *e, struct buf *out, struct envelope_offsets *off);
int spool_envelope_decode(const char *data, size_t len, struct envelope *e, size_t *body_off,
                          const char **err);
int spool_state_encode(struct msg_flags f, const struct rcpt_state *st, size_t n, struct buf *out);
/* state_decode: f zeroed, st holding no texts or texts of their own (a
 * line replaces them); the texts set are st's (rcpt_state_clear). */
int spool_state_decode(const char *data, size_t len, struct msg_flags *f, struct rcpt_state *st, size_t n,
                       const char **err);

void qid_generate(char out[QID_LEN]);
bool qid_valid(const char *id);

/* Create the tree under dir (tmp, queue, corrupt); with recover (the daemon
 * at start) also clear temp files of messages that were never acknowledged. */
int spool_init(const char *dir, bool recover);
/* Bytes free for posternd on the spool's file system: 0, or -1. */
int spool_free_bytes(uint64_t *out);

/* Writer for one incoming message. Errors are sticky in err (an errno).
 * Writes are held back in pend, up to SPOOL_WRITE_BEHIND bytes, so a small
 * message (envelope, headers and body) reaches the file in one pwritev at
 * commit, and a header added at EOM rewrites it in memory (issue 37: a
 * system call costs dearly on a VM). Durability is unchanged: nothing is
 * acknowledged before the commit's fsync. */
#define SPOOL_WRITE_BEHIND (64u << 10)
struct spool_writer {
    char id[QID_LEN];
    int fd;
    struct envelope_offsets off;
    int hops;             /* set before commit */
    bool tls_optional;    /* set before commit (from the header section) */
    size_t hdr_len;       /* header section bytes written (the body follows) */
    size_t env_len;       /* body offset */
    uint64_t written;     /* bytes after the envelope */
    struct buf pend;      /* the file's last bytes, not written yet */
    uint64_t on_disk;     /* bytes of the file written (pend follows them) */
    int err;
};
int spool_writer_open(struct spool_writer *w, const struct envelope *e);
void spool_writer_write(struct spool_writer *w, const void *data, size_t n);
/* Where the file's bytes from offset on are in memory (to its end), or NULL
 * when some are only on disk. Valid until the next write. */
const char *spool_writer_in_memory(const struct spool_writer *w, uint64_t offset);
/* For reading the file from offset on (at EOM): the bytes in memory as
 * above, or NULL once what was held back is written (the file then has
 * them all). */
const char *spool_writer_readable(struct spool_writer *w, uint64_t offset);
/* Blocking: size, fsync, rename into queue/, fsync the directory. Run on a
 * worker. Returns 0 or an errno; on failure the temp file is removed. */
int spool_writer_commit(struct spool_writer *w);
void spool_writer_abort(struct spool_writer *w);
/* Blocking (worker): write the file anew with envelope e, headers, and
 * either body (if not NULL) or the body already written. */
int spool_writer_rewrite(struct spool_writer *w, const struct envelope *e, const char *headers, size_t hlen,
                         const char *body, size_t blen);

/* SPOOL/lock: an exclusive flock held by a running posternd for its whole
 * life, and by `postern queue` while it changes the spool with the daemon
 * down. wait_s > 0: retry for that long. The fd to keep open, or -1 with
 * errno (EWOULDBLOCK: someone else holds it). */
int spool_lock(const char *dir, int wait_s);
/* Drop tmp/ (never acknowledged): posternd at start, once it holds the lock. */
void spool_clear_tmp(void);

/* Load the envelope of queue/ID; body_off receives where the message starts. */
int spool_load(const char *id, struct envelope *e, size_t *body_off, const char **err);
/* Read the sidecar; returns 0 with defaults (all pending) when there is none. */
int spool_load_state(const char *id, struct msg_flags *f, struct rcpt_state *st, size_t n);
int spool_save_state(const char *id, struct msg_flags f, const struct rcpt_state *st, size_t n);
/* The same, fsync'd, for state decided before the 250 (quarantine, routes):
 * written before the message is renamed into queue/. */
int spool_save_state_durable(const char *id, struct msg_flags f, const struct rcpt_state *st, size_t n);
/* Remove queue/ID, and its sidecar unless the caller knows it has none
 * (sidecar false: one system call fewer). */
void spool_remove(const char *id, bool sidecar);
void spool_move_corrupt(const char *id, const char *why);
/* Open queue/ID for reading the message. */
int spool_open_message(const char *id);
/* The same, with its status (a regular file's: its size) in st. */
int spool_open_message_stat(const char *id, struct stat *st);
/* A queued message's Subject as one line of text (unfolded, control bytes
 * as '?', at most size-1 bytes), or "" (none, or unreadable). */
void spool_subject(const char *id, char *out, size_t size);
/* Call fn for every message ID in queue/ (sorted by ID = arrival). */
int spool_scan(void (*fn)(const char *id, void *ctx), void *ctx);
/* The queued messages' IDs, sorted (each and the array malloc'd). 0, or -1. */
int spool_list(char ***names, size_t *count);

#endif
