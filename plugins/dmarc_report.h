/* dmarc_report.h - DMARC aggregate reports (RFC 7489 7.2) for the dmarc
 * plugin: each evaluated message with a rua= destination is appended as one
 * line to REPORT_DIR/records; once per interval a thread of the plugin's own
 * turns the records into one XML report (gzip, base64 in a MIME message) per
 * policy domain and queues it through posternd (host->submit_message) to the
 * domain's rua mailto: addresses that pass the external destination check
 * (RFC 7489 7.1). */
#ifndef POSTERN_DMARC_REPORT_H
#define POSTERN_DMARC_REPORT_H
#include "postern_plugin.h"
#include <stddef.h>

struct dmarc_report_options {
    const char *dir;        /* "" = no reports */
    long interval;          /* seconds between reports */
    const char *org;        /* org_name; "" = hostname */
    const char *from;       /* the report's From: and envelope sender; "" = postmaster@hostname */
    long store_max;         /* bytes of records kept per interval */
};

/* Defaults into o. */
void dmarc_report_defaults(struct dmarc_report_options *o);
/* 1: key was a report option (set in o), 0: not one, -1: a bad value (err). */
int dmarc_report_option(struct dmarc_report_options *o, const char *key, const char *value, char *err,
                        size_t errlen);

/* One evaluated message, as the report needs it. Every field is text. */
struct dmarc_row {
    const char *policy_domain;   /* where the record was found */
    const char *header_from;
    const char *source_ip;
    const char *envelope_from;   /* RFC5321.MailFrom domain ("" for <>) */
    const char *disposition;     /* what was applied: none | quarantine | reject */
    const char *dkim_aligned;    /* pass | fail */
    const char *spf_aligned;
    const char *reason;          /* "" | local_policy | sampled_out */
    const char *p, *sp, *adkim, *aspf, *fo;
    int pct;
    const char *rua;             /* the record's rua= value */
    const char *spf_domain, *spf_scope, *spf_result;   /* scope: mfrom | helo */
    const char *dkim;            /* "domain:selector:result ..." or "" */
};

struct dmarc_reporter;
/* The organizational domain of a name (the dmarc plugin's PSL lookup). */
typedef void (*dmarc_org_fn)(const char *domain, char *org, size_t size);
/* NULL with err on failure; with o->dir empty, NULL and err "". Under
 * host->checking(), checks the directory and starts nothing. */
struct dmarc_reporter *dmarc_reporter_start(const struct postern_host *host, const struct dmarc_report_options *o,
                                            dmarc_org_fn org, char *err, size_t errlen);
void dmarc_reporter_stop(struct dmarc_reporter *r);
/* Any worker thread: append one record (dropped, and logged once per
 * interval, when the store is full). */
void dmarc_report_record(struct dmarc_reporter *r, postern_txn *t, const struct dmarc_row *row);

#endif
