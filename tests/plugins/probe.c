/* probe.c - a test plugin that does what its options say, so the tests
 * can drive every verdict at every stage and every mutation.
 *   <name>.rule   = STAGE VERDICT TRIGGER [REPLY...]
 *       TRIGGER is a substring of the stage's subject (client address,
 *       HELO name, sender, recipient, Subject header, body chunk), or "*".
 *   <name>.mutate = STAGE OP [ARG1 [ARG2]]   (OP: header_add, header_insert,
 *       header_change, header_delete, body_replace, rcpt_add, rcpt_delete,
 *       sender_change, set_nexthop, quarantine (RCPT [REASON]: the spam
 *       quarantine for that recipient), request_archive, submit, count)
 *       submit KIND RCPT: host->submit_message a notice to RCPT; KIND good,
 *       or one posternd must refuse: bare_lf, nul, long_line, no_header,
 *       routed (RCPT with '%' routing). Logs "probe: submit KIND: ...".
 *       count KEY: host->kv_incr(KEY, 600); logs "probe: count KEY = N".
 *   <name>.record = PATH   append "stage qid sender rcpts subject" lines.
 * Built as probe_first.so every stage is loop_first: a count that would
 * block returns before anything else happens (posternd calls again). */
#include "postern_plugin.h"
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_RULES 32

struct rule {
    int stage;
    postern_verdict verdict;
    char trigger[128];
    char reply[256];
};

struct mutation {
    int stage;
    char op[32], a1[256], a2[256];
};

struct probe {
    struct rule rules[MAX_RULES];
    size_t nrules;
    struct mutation muts[MAX_RULES];
    size_t nmuts;
    char record[512];
};

static const struct postern_host *host;
static pthread_mutex_t record_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *stages[] = {"connect", "helo", "mail", "rcpt", "data", "body", "eom", "queue", "deliver"};
static const char *verdicts[] = {"CONTINUE", "ACCEPT", "REJECT", "TEMPFAIL", "DISCARD", "QUARANTINE", "ERROR"};

static int lookup(const char *word, const char **names, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(word, names[i]))
            return i;
    return -1;
}

static int parse_rule(struct probe *p, const char *v, char *err, size_t errlen)
{
    struct rule *r = &p->rules[p->nrules];
    char st[32], vd[32];
    int off = 0;
    if (p->nrules == MAX_RULES || sscanf(v, "%31s %31s %127s %n", st, vd, r->trigger, &off) < 3) {
        snprintf(err, errlen, "rule: expected 'STAGE VERDICT TRIGGER [REPLY]', got '%s'", v);
        return -1;
    }
    r->stage = lookup(st, stages, 9);
    int verdict = lookup(vd, verdicts, 7);
    if (r->stage < 0 || verdict < 0) {
        snprintf(err, errlen, "rule: unknown stage or verdict in '%s'", v);
        return -1;
    }
    r->verdict = (postern_verdict)verdict;
    snprintf(r->reply, sizeof r->reply, "%s", off ? v + off : "");
    p->nrules++;
    return 0;
}

static int parse_mutation(struct probe *p, const char *v, char *err, size_t errlen)
{
    struct mutation *m = &p->muts[p->nmuts];
    char st[32];
    int off = 0;
    if (p->nmuts == MAX_RULES || sscanf(v, "%31s %31s %255s %n", st, m->op, m->a1, &off) < 2) {
        snprintf(err, errlen, "mutate: expected 'STAGE OP [ARGS]', got '%s'", v);
        return -1;
    }
    snprintf(m->a2, sizeof m->a2, "%s", off ? v + off : "");
    if ((m->stage = lookup(st, stages, 9)) < 0) {
        snprintf(err, errlen, "mutate: unknown stage '%s'", st);
        return -1;
    }
    p->nmuts++;
    return 0;
}

/* secret = PATH: PATH opened through host->open_config_file, the outcome
 * logged; open_listed = FILE: each path FILE lists (one a line) the same
 * way, as a compromised daemon asking the privileged parent for files the
 * configuration never named would. */
static void open_one(const char *path, const char *how)
{
    char why[300] = "";
    int fd = host->open_config_file(path, why, sizeof why);
    host->log(NULL, POSTERN_LOG_INFO, "probe: %s %s: %s%s%s", how, path, fd >= 0 ? "opened" : "refused",
              why[0] ? ": " : "", why);
    if (fd >= 0)
        close(fd);
}

static void open_listed(const char *list)
{
    FILE *f = fopen(list, "r");
    char path[1024];
    while (f && fgets(path, sizeof path, f)) {
        path[strcspn(path, "\r\n")] = '\0';
        open_one(path, "open_listed");
    }
    if (f)
        fclose(f);
}

static int probe_init(const struct postern_host *h, const struct postern_option *opts, size_t n, void **state,
                      char *err, size_t errlen)
{
    host = h;
    struct probe *p = calloc(1, sizeof *p);
    if (!p)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int rc = 0;
        if (!strcmp(opts[i].key, "rule"))
            rc = parse_rule(p, opts[i].value, err, errlen);
        else if (!strcmp(opts[i].key, "mutate"))
            rc = parse_mutation(p, opts[i].value, err, errlen);
        else if (!strcmp(opts[i].key, "record"))
            snprintf(p->record, sizeof p->record, "%s", opts[i].value);
        else if (!strcmp(opts[i].key, "open_listed"))
            open_listed(opts[i].value);
        else if (!strcmp(opts[i].key, "secret"))
            open_one(opts[i].value, "secret");
        else {
            snprintf(err, errlen, "unknown option '%s'", opts[i].key);
            rc = -1;
        }
        if (rc < 0) {
            free(p);
            return -1;
        }
    }
    *state = p;
    return 0;
}

static void probe_fini(void *state) { free(state); }

/* The submit op: a small notice, well formed or broken as kind says. */
static void submit(postern_txn *t, const char *kind, const char *rcpt)
{
    char msg[2048], to[300];
    int n = snprintf(msg, sizeof msg, "From: <probe@gw.postern.test>\r\nSubject: probe notice %s\r\n\r\n"
                     "about %s\r\n", kind, host->queue_id(t));
    snprintf(to, sizeof to, "%s", rcpt);
    if (!strcmp(kind, "bare_lf"))
        msg[n - 2] = '\n', msg[n - 1] = '\0', n--;
    else if (!strcmp(kind, "nul"))
        msg[n - 3] = '\0';
    else if (!strcmp(kind, "long_line"))
        n += snprintf(msg + n, sizeof msg - (size_t)n, "%01000d\r\n", 0);
    else if (!strcmp(kind, "no_header"))
        n = snprintf(msg, sizeof msg, "just a line\r\n");
    else if (!strcmp(kind, "routed"))
        snprintf(to, sizeof to, "x%%elsewhere.test@%s", strchr(rcpt, '@') ? strchr(rcpt, '@') + 1 : "example.test");
    const char *rcpts[] = {to};
    char qid[17];
    if (host->submit_message("probe@gw.postern.test", rcpts, 1, msg, (size_t)n, qid) == 0)
        host->log(t, POSTERN_LOG_INFO, "probe: submit %s: queued as %s", kind, qid);
    else
        host->log(t, POSTERN_LOG_INFO, "probe: submit %s: refused: %s", kind, strerror(errno));
}

/* The count ops of this stage; -1 when one would have blocked (on the loop). */
static int count(postern_txn *t, const struct probe *p, int stage)
{
    for (size_t i = 0; i < p->nmuts; i++) {
        long long n = 0;
        if (p->muts[i].stage != stage || strcmp(p->muts[i].op, "count"))
            continue;
        int rc = host->kv_incr(t, p->muts[i].a1, 600, &n);
        if (rc == POSTERN_WOULDBLOCK)
            return -1;
        if (rc == 0)
            host->log(t, POSTERN_LOG_INFO, "probe: count %s = %lld", p->muts[i].a1, n);
        else
            host->log(t, POSTERN_LOG_WARN, "probe: count %s failed", p->muts[i].a1);
    }
    return 0;
}

static void mutate(postern_txn *t, const struct mutation *m)
{
    int rc = 0;
    const char *op = m->op;
    if (!strcmp(op, "header_add"))
        rc = host->header_add(t, m->a1, m->a2);
    else if (!strcmp(op, "header_insert"))
    {
        /* header_insert INDEX "Name value" */
        char name[300] = "", *value = NULL;
        snprintf(name, sizeof name, "%s", m->a2);
        value = strchr(name, ' ');
        if (value)
            *value++ = '\0';
        rc = host->header_insert(t, (size_t)atoi(m->a1), name, value ? value : "");
    }
    else if (!strcmp(op, "header_change"))
        rc = host->header_change(t, m->a1, 0, m->a2);
    else if (!strcmp(op, "header_delete"))
        rc = host->header_delete(t, m->a1, 0);
    else if (!strcmp(op, "body_replace")) {
        char body[600];
        snprintf(body, sizeof body, "%s %s\r\n", m->a1, m->a2);
        rc = host->body_replace(t, body, strlen(body));
    } else if (!strcmp(op, "rcpt_add"))
        rc = host->rcpt_add(t, m->a1);
    else if (!strcmp(op, "rcpt_delete"))
        rc = host->rcpt_delete(t, m->a1);
    else if (!strcmp(op, "sender_change"))
        rc = host->sender_change(t, m->a1);
    else if (!strcmp(op, "set_nexthop"))
        rc = host->set_nexthop(t, m->a1, m->a2);
    else if (!strcmp(op, "quarantine"))
        rc = host->rcpt_quarantine(t, m->a1, m->a2[0] ? m->a2 : "probe says spam");
    else if (!strcmp(op, "request_archive"))
        rc = host->request_archive(t);
    else if (!strcmp(op, "submit"))
        submit(t, m->a1, m->a2);
    if (rc < 0)
        host->log(t, POSTERN_LOG_WARN, "probe: %s refused at this stage", op);
}

static void record(struct probe *p, postern_txn *t, int stage)
{
    if (!p->record[0])
        return;
    pthread_mutex_lock(&record_lock);
    FILE *f = fopen(p->record, "a");
    if (f) {
        fprintf(f, "%s %s <%s>", stages[stage], host->queue_id(t)[0] ? host->queue_id(t) : "-", host->sender(t));
        for (size_t i = 0; i < host->rcpt_count(t); i++)
            fprintf(f, " <%s>", host->rcpt(t, i));
        const char *subj = stage >= 4 ? host->header_get(t, "Subject", 0) : NULL;
        fprintf(f, " subject=%s\n", subj ? subj : "");
        fclose(f);
    }
    pthread_mutex_unlock(&record_lock);
}

static postern_verdict run(postern_txn *t, int stage, const char *subject, size_t len, void *state)
{
    struct probe *p = state;
    if (count(t, p, stage) < 0)
        return POSTERN_CONTINUE;      /* posternd calls again on a worker */
    record(p, t, stage);
    for (size_t i = 0; i < p->nmuts; i++)
        if (p->muts[i].stage == stage)
            mutate(t, &p->muts[i]);
    for (size_t i = 0; i < p->nrules; i++) {
        const struct rule *r = &p->rules[i];
        if (r->stage != stage)
            continue;
        if (strcmp(r->trigger, "*") && !(subject && memmem(subject, len, r->trigger, strlen(r->trigger))))
            continue;
        if (r->reply[0])
            host->set_reply(t, r->reply);
        return r->verdict;
    }
    return POSTERN_CONTINUE;
}

static size_t slen(const char *s) { return s ? strlen(s) : 0; }

static postern_verdict on_connect(postern_txn *t, void *st)
{
    return run(t, 0, host->client_addr(t), slen(host->client_addr(t)), st);
}
static postern_verdict on_helo(postern_txn *t, const char *helo, void *st) { return run(t, 1, helo, slen(helo), st); }
static postern_verdict on_mail(postern_txn *t, const char *s, void *st) { return run(t, 2, s, slen(s), st); }
static postern_verdict on_rcpt(postern_txn *t, const char *r, void *st) { return run(t, 3, r, slen(r), st); }

static postern_verdict subject_stage(postern_txn *t, int stage, void *st)
{
    const char *s = host->header_get(t, "Subject", 0);
    return run(t, stage, s, slen(s), st);
}
static postern_verdict on_data(postern_txn *t, void *st) { return subject_stage(t, 4, st); }
static postern_verdict on_body(postern_txn *t, const char *c, size_t n, void *st) { return run(t, 5, c, n, st); }
static postern_verdict on_eom(postern_txn *t, void *st) { return subject_stage(t, 6, st); }
static postern_verdict on_queue(postern_txn *t, void *st) { return subject_stage(t, 7, st); }
static postern_verdict on_deliver(postern_txn *t, void *st) { return subject_stage(t, 8, st); }

static const struct postern_plugin plugin = {
    .abi_version = POSTERN_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct postern_plugin),
    .name = "probe",
    .init = probe_init,
    .fini = probe_fini,
    .on_connect = on_connect,
    .on_helo = on_helo,
    .on_mail = on_mail,
    .on_rcpt = on_rcpt,
    .on_data = on_data,
    .on_body = on_body,
    .on_eom = on_eom,
    .on_queue = on_queue,
    .on_deliver = on_deliver,
#ifdef PROBE_NONBLOCKING   /* probe_inline.so: every stage runs on posternd's loop */
    .nonblocking_stages = 0x1ff,
#endif
#ifdef PROBE_LOOP_FIRST    /* probe_first.so: every stage tries the loop first */
    .loop_first_stages = 0x1ff,
#endif
};

const struct postern_plugin *postern_plugin_entry(void) { return &plugin; }
