/* smtp_session.h - the inbound SMTP session shared by the files of the
 * SMTP server (internal to them, not for plugins):
 *   smtp_server.c   listeners, session lifecycle, commands, TLS, limits
 *   smtp_message.c  DATA: headers, body, hook stages, spool commit
 *   smtp_chunking.c BDAT (RFC 3030): counted chunks into the same path
 *   smtp_proxy.c    XCLIENT and the PROXY protocol: a proxy presents the client */
#ifndef POSTERN_SMTP_SESSION_H
#define POSTERN_SMTP_SESSION_H
#include "buf.h"
#include "config.h"
#include "data_reader.h"
#include "event.h"
#include "smtp_parse.h"
#include "spool.h"
#include "txn.h"
#include "workers.h"
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#define MAX_INPUT_BUFFER (64 * 1024)     /* pipelined commands or a DATA chunk */
#define MAX_OUTPUT_BACKLOG (64 * 1024)   /* stop reading while replies pile up */

/* PH_TLS: the 220 to STARTTLS is going out, then the handshake runs. */
/* PH_PROXY: a proxy_listen connection before its PROXY header is read. */
/* PH_GREET: pregreet_wait before the final 220; talking now is refused. */
/* PH_WAIT: a reply held back (after a failed AUTH); input waits. */
enum phase { PH_COMMAND, PH_DATA, PH_HOOK, PH_COMMIT, PH_CLOSING, PH_TLS, PH_PROXY, PH_GREET, PH_WAIT };
enum msg_part { PART_HEADERS, PART_BODY };

struct commit_job;
struct session;
typedef void (*stage_then)(struct session *s, postern_verdict v);

struct runtime;
struct session {
    struct ev_watch w;
    unsigned long sid;
    struct runtime *rt;            /* the configuration generation it started under */
    const struct config *cfg;      /* ... its config: a reload never changes it mid-session */
    struct sockaddr_storage peer;  /* the client: the connection's, or XCLIENT's ADDR */
    bool xclient_allowed;          /* the connection's address is in xclient_networks */
    char *client_name;             /* XCLIENT NAME, for the Received header (NULL: none) */
    struct buf in, out;
    enum phase phase, saved_phase;
    bool helo_done, esmtp, skip_line, dead, busy;
    unsigned in_stage_call;  /* run_stage calls on the stack: a synchronous finish (a stage run on
                                the loop, nested ones included) must not resume input itself */
    bool implicit_tls;       /* smtps_listen: handshake first, then the greeting */
    bool greeted;
    /* SMTP AUTH (smtp_auth.c) */
    bool submission;         /* a submission listener: AUTH (or trusted) before MAIL */
    bool authenticated;      /* our AUTH succeeded: tx.auth_user, may relay */
    struct auth_job *auth;   /* an exchange in progress */
    bool auth_waiting;       /* ... and the client's next line answers its 334 */
    bool session_discard, session_quarantine;   /* a CONNECT/HELO verdict for every message */
    char *session_reason;                       /* the QUARANTINE's reason (NULL: none) */
    const char *session_verdict_by;             /* the plugin behind those */
    char *session_decisions;                    /* ... and their lines of the decision log (NULL: none) */
    int errors;
    uint64_t deadline_ms;
    uint64_t wait_until_ms;        /* PH_GREET, PH_WAIT: when the held reply goes out */
    char held_reply[128];          /* PH_WAIT: that reply */
    struct varmap session_vars;   /* scripts' tx.session */
    struct txn_slot *session_slots;  /* plugins' session data (host->session_data_set) */
    SSL *ssl;                      /* after STARTTLS */
    uint32_t tls_want;             /* handshake: EPOLLIN or EPOLLOUT */
    bool tls_offloaded;            /* its ClientHello step went to a worker */
    /* transaction */
    txn_t tx;
    bool in_mail;
    struct mail_params mp;
    unsigned rcpt_notify;          /* the DSN parameters of the RCPT whose hooks run */
    char *rcpt_orcpt;              /* ... (NULL: no ORCPT) */
    char hook_arg[SMTP_MAX_PATH + 1];
    stage_then then;
    /* DATA */
    struct data_reader dr;
    int hops;               /* Received: headers, ours included (loop detection) */
    struct commit_job *commit;
    uint64_t data_bytes;
    enum msg_part part;
    struct buf hdr_buf;     /* header section so far */
    struct buf chunk;       /* body bytes not yet written */
    bool separator;         /* a blank line ended the header section */
    bool data_done;         /* the end of data has been read */
    /* BDAT (RFC 3030): the message arrives in counted chunks, no dot-stuffing */
    bool bdat;              /* this message is chunked */
    bool bdat_last;         /* the chunk being read is the last */
    uint64_t bdat_left;     /* its bytes still to read */
    uint64_t skip_bytes;    /* a refused chunk's bytes, read and dropped */
    struct session *prev, *next;
};

/* A message being received: its queue file, and what the commit needs. */
struct commit_job {
    struct work work;
    struct session *s;
    struct spool_writer sw;
    struct envelope env;
    /* changes after the headers were written: the file is rewritten */
    bool rewrite;
    struct buf headers;
    struct buf body;
    bool new_body;
    /* state decided before the 250 (quarantine, routes), saved durably */
    bool has_state;
    struct msg_flags flags;
    struct rcpt_state *state;       /* nstate of them, owning their texts */
    size_t nstate;
    int result;                     /* errno from the commit, 0 = durable */
    /* the reply that ends this DATA, if refused */
    char refusal[512];
    const char *refusal_by;         /* the link that refused (NULL: posternd itself) */
    enum postern_stage refusal_stage;
};

/* The config new sessions and the listeners go by (the current generation's). */
extern const struct config *smtp_cfg;

/* ---- smtp_server.c: the session ---- */
/* Queue a reply line (CRLF added); a 5xx counts as a client error. */
void session_reply(struct session *s, const char *line);
void session_replyf(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Forget the transaction (RSET, a new MAIL, after a message). */
void session_txn_restart(struct session *s);
/* A fresh deadline for the next command line or DATA section. */
void session_set_timeout(struct session *s);
void session_close_after_reply(struct session *s);
/* Queue line after secs; the session reads nothing meanwhile (tick-driven,
 * nothing blocks). */
void session_reply_later(struct session *s, const char *line, int secs);
void session_close(struct session *s);
/* Write pending replies; returns -1 if the session was closed. */
int session_flush(struct session *s);
void session_free(void *p);
/* Go on with buffered input after a pause (hook, commit, PROXY header). */
void session_resume(struct session *s);
/* Run the hook chain for a stage, then `then` (at once without plugins). */
void session_run_stage(struct session *s, enum postern_stage st, const char *arg, size_t len, stage_then then);
void session_log_verdict(struct session *s, enum postern_stage st, postern_verdict v);
/* One command line, through the command table (smtp_commands.c). */
void smtp_run_command(struct session *s, const char *line);
/* The tracking store's record of a refusal at stage st (one per recipient
 * known by then). */
void session_track_refusal(const struct session *s, enum postern_stage st, const char *reply, const char *link);
/* "from=<…> to=<…> proto=ESMTP helo=<…>" for a log line about stage st. */
void session_envelope_fields(const struct session *s, enum postern_stage st, char *out, size_t size);
/* For command stages: REJECT/TEMPFAIL answer and return false. */
bool session_verdict_proceeds(struct session *s, enum postern_stage st, postern_verdict v);
/* ---- smtp_greet.c: the greeting ---- */
/* The CONNECT stage, then the 220 greeting (or the refusal, or the
 * pregreet wait). */
void session_greet(struct session *s);
/* PH_GREET: the client talked before the greeting / the wait is over. */
void smtp_pregreet_caught(struct session *s);
void smtp_greet_wait_end(struct session *s);
/* A command line of linelen bytes (LF included) as a C string in line
 * (size bytes; a longer line is cut, but callers bound it first). */
size_t smtp_command_line_text(const char *head, size_t linelen, char *line, size_t size);
/* Count a refused connection (NULL: a PROXY peer not in proxy_networks). */
void smtp_count_refusal(const char *refusal);
/* smtp_server.c: a new session on an accepted connection; the sessions
 * open from ip. */
void session_open(int fd, const struct sockaddr_storage *ss, const struct listen_addr *l);
int smtp_server_sessions_from(const char *ip);
/* smtp_listen.c: resume accepting after a pause for descriptors; close the
 * listeners (shutdown). */
void smtp_listen_tick(uint64_t now);
void smtp_listen_close(void);
/* The refusal for a new client, or NULL (per_client: limits apply). */
const char *smtp_connection_refusal(const struct sockaddr_storage *ss, const char *ip, bool per_client);

/* ---- smtp_auth.c: SMTP AUTH ---- */
struct auth_job;
int smtp_auth_init(const struct config *cfg, char *err, size_t errlen);
/* Is AUTH offered in this session's EHLO (and with which mechanisms)? */
bool smtp_auth_offered(const struct session *s);
const char *smtp_auth_mechanisms(void);
void smtp_cmd_auth(struct session *s, const char *args);
/* The client's next line belongs to an AUTH exchange. */
bool smtp_auth_waiting(const struct session *s);
void smtp_auth_response(struct session *s, const char *line);
/* The longest line allowed for what head holds (AUTH lines are longer). */
size_t smtp_auth_line_limit(const struct session *s, const char *head, size_t len);
bool smtp_auth_may_relay(const struct session *s);
/* Submission and sender-login rules at MAIL: NULL, or the refusal. */
const char *smtp_auth_mail_refusal(struct session *s, const char *sender, char *buf, size_t size);
/* The session goes away: drop an exchange that is not on a worker. */
void smtp_auth_session_end(struct session *s);

/* ---- smtp_message.c: message data ---- */
void smtp_cmd_data(struct session *s, const char *args);
/* Open the queue file; -1 after answering when it cannot be created. */
int message_start(struct session *s);
/* Why this transaction cannot take message data now, or NULL. */
const char *message_precondition(struct session *s);
/* Drop an open message (refused, discarded, or the client went away). */
void message_abort(struct session *s);
bool message_refused(const struct session *s);
/* Move the message on as far as it can go without waiting. */
void message_progress(struct session *s);
/* Buffered input into the message (DATA, or BDAT chunks). */
void message_process_input(struct session *s);
/* n bytes of a BDAT chunk: line checks unless BINARYMIME, then the message. */
void message_chunk_bytes(struct session *s, const char *p, size_t n);

/* ---- smtp_chunking.c: BDAT ---- */
void smtp_cmd_bdat(struct session *s, const char *args);
void chunks_process(struct session *s);

/* ---- smtp_proxy.c: XCLIENT and PROXY ---- */
void smtp_cmd_xclient(struct session *s, const char *args);
/* PH_PROXY: read the PROXY header, then greet the client it names. */
void proxy_header_process(struct session *s);

#endif
