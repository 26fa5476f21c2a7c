/* archive_journal.h - an Exchange / Microsoft 365 envelope journal report
 * read into the envelope it states and the original message it carries
 * (archive_journal.c). */
#ifndef POSTERN_ARCHIVE_JOURNAL_H
#define POSTERN_ARCHIVE_JOURNAL_H
#include <stdbool.h>
#include <stddef.h>

#define JOURNAL_RCPTS_MAX 1000

struct journal_rcpt {
    char type[12];              /* To, Cc, Bcc or Recipient */
    char addr[320];
    char via_kind[12];          /* "", Expanded or Forwarded */
    char via[320];              /* the group expanded, or the recipient forwarded */
};

struct journal_report {
    char sender[320];
    char message_id[1000];
    struct journal_rcpt rcpts[JOURNAL_RCPTS_MAX];
    size_t n;
    const char *original;       /* inside the report given to parse */
    size_t original_len;
};

/* Read msg[len] (the whole report, header section first): 0; 1 when it
 * is no journal report (no X-MS-Journal-Report header); -1 with err when
 * it is one that cannot be read. */
int journal_report_parse(const char *msg, size_t len, struct journal_report *r, char *err, size_t errlen);
/* The nth field of that name in the original's header, unfolded; false
 * when it has fewer. */
bool journal_original_header(const struct journal_report *r, const char *name, size_t nth, char *out, size_t size);

/* journal_from: who may send reports (the Exchange servers). */
#define JOURNAL_NETS_MAX 32
struct journal_net {
    int family;
    unsigned char addr[16];
    int prefix;
};
struct journal_networks {
    struct journal_net v[JOURNAL_NETS_MAX];
    size_t n;
};
/* "10.0.0.0/8, 2001:db8::/32, 192.0.2.7": 0, or -1 with err. */
int journal_networks_parse(const char *list, struct journal_networks *n, char *err, size_t errlen);
bool journal_networks_match(const struct journal_networks *n, const char *ip);

#endif
