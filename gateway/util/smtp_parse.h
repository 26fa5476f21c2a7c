/* smtp_parse.h - pure parsers for SMTP input (RFC 5321): the command verb,
 * reverse/forward paths and ESMTP parameters. No I/O, no allocation. */
#ifndef POSTERN_SMTP_PARSE_H
#define POSTERN_SMTP_PARSE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMTP_MAX_COMMAND_LINE 512   /* including CRLF (RFC 5321 4.5.3.1.4) */
#define SMTP_MAX_AUTH_LINE 12288    /* an AUTH command or response, CRLF included (RFC 4954 4) */
#define SMTP_MAX_TEXT_LINE 1000     /* including CRLF (RFC 5321 4.5.3.1.6) */
#define SMTP_MAX_HEADER_SECTION (1024 * 1024)   /* a message's header section, at most */
#define SMTP_MAX_LOCAL_PART 64
#define SMTP_MAX_DOMAIN 255
#define SMTP_MAX_PATH 256

enum smtp_verb {
    VERB_UNKNOWN, VERB_HELO, VERB_EHLO, VERB_MAIL, VERB_RCPT, VERB_DATA, VERB_RSET,
    VERB_NOOP, VERB_QUIT, VERB_VRFY, VERB_EXPN, VERB_HELP, VERB_STARTTLS, VERB_BDAT, VERB_AUTH, VERB_XCLIENT,
};

struct smtp_command {
    enum smtp_verb verb;
    const char *args;   /* after the verb and one space; "" if none */
};

/* line: NUL-terminated, without CRLF. Returns 0, or -1 if the line holds a
 * byte SMTP commands never carry (NUL, CR, LF, other controls). */
int smtp_parse_command(const char *line, struct smtp_command *out);

/* Body types for MAIL BODY= (BINARYMIME: RFC 3030, only with BDAT) */
enum smtp_body { BODY_UNSPEC, BODY_7BIT, BODY_8BITMIME, BODY_BINARYMIME };

/* DSN (RFC 3461) */
enum dsn_ret { DSN_RET_UNSPEC, DSN_RET_FULL, DSN_RET_HDRS };
#define DSN_NOTIFY_SUCCESS 1u
#define DSN_NOTIFY_FAILURE 2u
#define DSN_NOTIFY_DELAY 4u
#define DSN_NOTIFY_NEVER 8u      /* 0 = NOTIFY not given: failure and delay notices */
#define DSN_MAX_ENVID 100        /* xtext as received */
#define DSN_MAX_ORCPT 500        /* "addr-type;xtext" as received */

struct mail_params {
    bool has_size;
    uint64_t size;
    enum smtp_body body;
    bool smtputf8;
    bool requiretls;                 /* RFC 8689 */
    enum dsn_ret ret;
    char envid[DSN_MAX_ENVID + 1];   /* "" = none */
};

struct rcpt_params {
    unsigned notify;                 /* DSN_NOTIFY_* bits */
    char orcpt[DSN_MAX_ORCPT + 1];   /* "" = none */
};

/* Result of parsing a path: the normalised address "local@domain" (or "" for
 * the null reverse-path), and where the parameters start. On error, reply holds
 * the full SMTP reply line (code, enhanced code and text) without CRLF. */
struct path_result {
    char addr[SMTP_MAX_PATH + 1];
    const char *params;
    const char *reply;
    bool source_route;        /* "<@a,@b:user@c>": the route was dropped from addr */
};

/* Sender-specified routing in addr (RFC 5321 3.6.1, Postfix's
 * allow_untrusted_routing): '%', '!' or '@' in the local part, quoted or not. */
bool smtp_address_routed(const char *addr);

/* "FROM:<a@b> SIZE=10" (args of MAIL). utf8: allow UTF-8 in the address. */
int smtp_parse_mail(const char *args, struct path_result *res, struct mail_params *params);
/* "TO:<a@b> NOTIFY=.. ORCPT=.." (args of RCPT). utf8 as above. Bare
 * "<postmaster>" is allowed. rp NULL: no parameters are accepted. */
int smtp_parse_rcpt(const char *args, bool utf8, struct path_result *res, struct rcpt_params *rp);

/* "SIZE [LAST]" (args of BDAT, RFC 3030). Returns 0 or -1 on bad syntax. */
int smtp_parse_bdat(const char *args, uint64_t *size, bool *last);

/* xtext (RFC 3461 4): printable ASCII but '+' and '=', "+XX" hex escapes.
 * decode returns the decoded length, or -1 if invalid or over cap-1. */
bool xtext_valid(const char *s);
int xtext_decode(const char *in, char *out, size_t cap);
/* in as xtext (every byte that is not printable ASCII, and '+' and '=',
 * as "+XX"): its length, or -1 when it does not fit cap (3 * strlen + 1
 * always does). */
int xtext_encode(const char *in, char *out, size_t cap);
/* NOTIFY bits as the parameter value ("SUCCESS,DELAY", "NEVER"); "" for 0. */
void dsn_notify_text(unsigned notify, char *out, size_t cap);
/* The reverse; returns -1 for a bad value. */
int dsn_notify_parse(const char *v, unsigned *notify);

/* Validate one address "local@domain" (no brackets). Returns NULL if valid,
 * else a short reason. */
const char *smtp_check_address(const char *addr, bool utf8);

/* Well-formed UTF-8 (RFC 3629): no overlong forms, surrogates or code points
 * above U+10FFFF. Plain ASCII is valid. */
bool utf8_valid(const char *s);

/* Domain part of "local@domain" (after the last '@'), or "" if none. */
const char *addr_domain(const char *addr);

/* Parse one reply line "250-text" / "250 text" (a client reading a server):
 * returns the code (100-599) and sets *last when the line ends a
 * (multi-line) reply; -1 if malformed. */
int smtp_reply_line(const char *line, size_t len, bool *last);

/* A table's domain key: "example.test" matches that domain, ".example.test"
 * its subdomains (not itself); case-insensitive. */
bool domain_matches(const char *pattern, const char *domain);

#endif
