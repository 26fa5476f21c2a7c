/* policy_run.h - one message through the configured chain, offline: every
 * stage from CONNECT to DELIVER on the calling thread (hooks_run_sync), no
 * SMTP, no spool, no delivery, plugins told host->dry_run. What each link
 * decided and changed is recorded, and what would become of each
 * recipient. `postern policy test` and `policy replay` are built on it. */
#ifndef POSTERN_POLICY_RUN_H
#define POSTERN_POLICY_RUN_H
#include "buf.h"
#include "config.h"
#include "txn.h"

enum policy_outcome { OUTCOME_ACCEPT, OUTCOME_REJECT, OUTCOME_TEMPFAIL, OUTCOME_QUARANTINE, OUTCOME_DISCARD };
#define POLICY_OUTCOMES 5
const char *policy_outcome_name(enum policy_outcome o);
/* "reject" -> OUTCOME_REJECT; -1 for a word that is no outcome. */
int policy_outcome_parse(const char *word);

struct policy_envelope {
    const char *from;              /* "" = the null sender */
    const char *const *to;
    size_t nto;
    const char *client_ip;
    const char *helo;
    const char *auth_user;         /* "" = none */
    bool tls;
};

/* One link's call at one stage. changes: one line per change it made
 * ("+ header X: v", "- rcpt <a>", "route <a>: HOP", "body replaced", ...). */
struct policy_step {
    enum postern_stage st;
    char arg[256];                 /* HELO name, sender or recipient */
    char link[128];
    postern_verdict v;
    char reply[512];
    struct buf changes;
};

struct policy_rcpt {
    char *addr;
    enum policy_outcome outcome;
    enum postern_stage stage;      /* where a refusal came (outcome != ACCEPT) */
    char reply[512];
    char *nexthop;                 /* a plugin's route, NULL = transport table */
    const char *tls;               /* a plugin's TLS demand, NULL = none */
};

#define POLICY_BODY_KEPT (1024 * 1024)
struct policy_result {
    struct policy_step *steps;
    size_t nsteps, capsteps;
    struct policy_rcpt *rcpts;     /* the envelope's, then any a plugin added */
    size_t nrcpts;
    enum policy_outcome outcome;   /* of the message as a whole */
    enum postern_stage decided_at;
    char decided_by[128];          /* "" = nobody (accepted by default) */
    char reply[512];
    char hold_reason[512];
    bool archive;                  /* an archive copy was requested */
    bool body_changed;
    char decisions[DECISIONS_MAX]; /* the decision log, as `queue show` prints it */
    struct buf final_headers;      /* the header section as it would be stored */
    struct buf final_body;         /* and the body (its first POLICY_BODY_KEPT bytes) */
};

/* Run env + message (raw bytes, CRLF or LF line ends) through the current
 * chain (hooks_load first). 0, or -1 with err when it could not run. */
int policy_run(const struct config *cfg, const struct policy_envelope *env, const char *msg, size_t len,
               struct policy_result *res, char *err, size_t errlen);
void policy_result_free(struct policy_result *res);

#endif
