/* smtp_client_int.h - what the parts of the SMTP client share: the
 * connection's state (smtp_client.c: lifecycle, I/O, the transaction and
 * settling; smtp_client_setup.c: greeting, EHLO, STARTTLS, AUTH;
 * smtp_client_body.c: the message as DATA or BDAT chunks). */
#ifndef POSTERN_SMTP_CLIENT_INT_H
#define POSTERN_SMTP_CLIENT_INT_H
#include "buf.h"
#include "event.h"
#include "smtp_client.h"
#include "rcpt_settle.h"
#include <openssl/ssl.h>

#define MAX_REPLY_TEXT 400
#define MAX_REPLY_BUF (64 * 1024)
#define BODY_CHUNK (64 * 1024)
#define OUT_HIGH_WATER (256 * 1024)
#define QUIT_WAIT 5
#define WHY_MAX 1024               /* our texts: a reason plus a peer reply */

enum cl_state {
    CL_CONNECTING, CL_BANNER, CL_EHLO, CL_HELO, CL_STARTTLS, CL_TLS, CL_AUTH,   /* not ready yet */
    CL_READY, CL_TXN, CL_BODY, CL_DOT, CL_RSET, CL_QUIT,
};

struct smtp_client {
    struct ev_watch w;
    struct client_peer peer;
    const struct client_ops *ops;
    void *owner;                    /* NULL once closed() was called */
    enum cl_state state;
    struct buf in, out;
    uint64_t deadline_ms;
    char remote[DELIVERY_REMOTE_MAX];   /* "name[ip]" for logs and notices */
    const char *tls_result;             /* a TLS failure as an RFC 8460 result type, or NULL */
    char local_ip[64];                  /* our end of the connection (TLS reports) */
    char where[DELIVERY_REMOTE_MAX + 8];  /* "name[ip]:port" */
    bool pipelining, size_ext, eightbit, smtputf8, starttls, dsn, chunking, binarymime, requiretls;
    bool auth_plain, auth_login;
    int auth_step;
    SSL *ssl;
    uint32_t tls_want;
    /* the current transaction */
    struct delivery_job *job;
    size_t ncmds, sent, answered;   /* MAIL, RCPT x n, and DATA unless BDAT */
    struct rcpt_settle settle;      /* who got which reply (rcpt_settle.c) */
    int body_fd;
    bool at_bol;
    bool body_cr;                   /* the last body byte checked was CR */
    uint64_t body_pos;              /* body bytes checked so far */
    bool bdat;
    uint64_t body_left;             /* bytes of the file still to send */
    uint64_t body_at;               /* where they start in the file (read with pread) */
    int bdat_outstanding;           /* chunks sent, not yet answered */
    bool bdat_failed;               /* a chunk was refused: send no more */
    int bdat_fail_code;
    char bdat_fail[MAX_REPLY_TEXT];
    /* the reply being assembled: its first line */
    char reply[MAX_REPLY_TEXT];
    size_t reply_len;
    struct smtp_client *next_all;
};

extern const struct config *client_cfg;

static inline int reply_class(int code) { return code / 100; }

/* smtp_client.c */
void cl_set_deadline(struct smtp_client *c, int seconds);
void cl_want_events(struct smtp_client *c);
/* Queue one command line (CRLF added) and restart the reply timer. */
void cl_send_cmd(struct smtp_client *c, const char *verb, const char *arg);
/* Give up: open recipients get why (our 4.x.x text); QUIT first if say_quit. */
void cl_fail(struct smtp_client *c, const char *why, bool say_quit);
/* An I/O failure, as "4.4.x ... while <what the client was doing>". */
void cl_fail_io(struct smtp_client *c, const char *what);
int cl_peer_port(const struct smtp_client *c);
/* Setup is over: the owner may hand over a job. */
void cl_ready(struct smtp_client *c);

/* smtp_client_setup.c */
void cl_note_extension(struct smtp_client *c, const char *kw, size_t len);
/* A reply while setting up (greeting, EHLO/HELO, STARTTLS, AUTH). */
void cl_on_setup_reply(struct smtp_client *c, int code);
void cl_tls_step(struct smtp_client *c);

/* smtp_client_body.c: fill the output buffer with the spooled message. */
void cl_fill_body(struct smtp_client *c);

#endif
