/* smtp_parse.c - SMTP command, path and parameter parsing (RFC 5321 4.1).
 * Strict where it matters for safety (no control bytes, bounded lengths),
 * tolerant where real clients differ harmlessly (a space after "FROM:"). */
#include "smtp_parse.h"
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *name;
    enum smtp_verb verb;
} verbs[] = {
    {"HELO", VERB_HELO}, {"EHLO", VERB_EHLO}, {"MAIL", VERB_MAIL}, {"RCPT", VERB_RCPT},
    {"DATA", VERB_DATA}, {"RSET", VERB_RSET}, {"NOOP", VERB_NOOP}, {"QUIT", VERB_QUIT},
    {"VRFY", VERB_VRFY}, {"EXPN", VERB_EXPN}, {"HELP", VERB_HELP}, {"STARTTLS", VERB_STARTTLS},
    {"BDAT", VERB_BDAT}, {"AUTH", VERB_AUTH}, {"XCLIENT", VERB_XCLIENT},
};

int smtp_parse_command(const char *line, struct smtp_command *out)
{
    for (const unsigned char *p = (const unsigned char *)line; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return -1;
    size_t n = strcspn(line, " ");
    out->verb = VERB_UNKNOWN;
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        if (strlen(verbs[i].name) == n && strncasecmp(line, verbs[i].name, n) == 0)
            out->verb = verbs[i].verb;
    const char *a = line + n;
    while (*a == ' ')
        a++;
    out->args = a;
    return 0;
}

static bool is_atext(unsigned char c, bool utf8)
{
    if (isalnum(c))
        return true;
    if (c >= 0x80)
        return utf8;
    return c && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* dot-string or quoted-string; returns length consumed or -1. */
static int scan_local_part(const char *s, bool utf8)
{
    const unsigned char *p = (const unsigned char *)s;
    if (*p == '"') {
        p++;
        while (*p && *p != '"') {
            if (*p == '\\') {
                p++;
                if (*p < 0x20 || *p > 0x7e)
                    return -1;
            } else if ((*p < 0x20 || *p == 0x7f) || (*p >= 0x80 && !utf8)) {
                return -1;
            }
            p++;
        }
        if (*p != '"')
            return -1;
        return (int)((const char *)p + 1 - s);
    }
    bool need_atom = true;
    while (*p && *p != '@') {
        if (*p == '.') {
            if (need_atom)
                return -1;
            need_atom = true;
        } else if (is_atext(*p, utf8)) {
            need_atom = false;
        } else {
            return -1;
        }
        p++;
    }
    if (need_atom)
        return -1;
    return (int)((const char *)p - s);
}

static bool valid_address_literal(const char *s, size_t n)
{
    /* "[1.2.3.4]" or "[IPv6:...]": shape check only; we never route to them blindly */
    if (n < 3 || s[0] != '[' || s[n - 1] != ']')
        return false;
    for (size_t i = 1; i < n - 1; i++)
        if (!(isalnum((unsigned char)s[i]) || strchr(".:-", s[i])))
            return false;
    return true;
}

static bool valid_domain(const char *s, size_t n, bool utf8)
{
    if (n == 0 || n > SMTP_MAX_DOMAIN)
        return false;
    if (s[0] == '[')
        return valid_address_literal(s, n);
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (c == '-' && label == 0)
            return false;
        if (!(isalnum(c) || c == '-' || (c >= 0x80 && utf8)))
            return false;
        if (++label > 63)
            return false;
    }
    return label > 0 && s[n - 1] != '-';
}

bool smtp_address_routed(const char *addr)
{
    const char *at = strrchr(addr, '@');
    for (const char *p = addr; at && p < at; p++)
        if (*p == '%' || *p == '!' || *p == '@')
            return true;
    return false;
}

const char *smtp_check_address(const char *addr, bool utf8)
{
    int lp = scan_local_part(addr, utf8);
    if (lp < 0)
        return "bad local part";
    if (lp > SMTP_MAX_LOCAL_PART)
        return "local part too long";
    if (addr[lp] != '@')
        return "missing domain";
    const char *dom = addr + lp + 1;
    if (!valid_domain(dom, strlen(dom), utf8))
        return "bad domain";
    return NULL;
}

bool utf8_valid(const char *str)
{
    const unsigned char *p = (const unsigned char *)str;
    while (*p) {
        unsigned c = *p++;
        if (c < 0x80)
            continue;
        int more = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : -1;
        if (more < 0 || c > 0xf4)
            return false;
        unsigned cp = c & (0x3fu >> more);
        for (int i = 0; i < more; i++, p++) {
            if ((*p & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (*p & 0x3fu);
        }
        static const unsigned min_cp[] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[more] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
    }
    return true;
}

int smtp_parse_bdat(const char *args, uint64_t *size, bool *last)
{
    const char *p = args;
    if (!isdigit((unsigned char)*p))
        return -1;
    uint64_t v = 0;
    for (; isdigit((unsigned char)*p); p++) {
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *last = false;
    if (*p == ' ' && !strcasecmp(p + 1, "LAST")) {
        *last = true;
        p += 5;
    }
    if (*p)
        return -1;
    *size = v;
    return 0;
}

bool xtext_valid(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '+') {
            if (!isxdigit((unsigned char)s[1]) || !isxdigit((unsigned char)s[2]))
                return false;
            s += 2;
        } else if (c < 33 || c > 126 || c == '=') {
            return false;
        }
    }
    return true;
}

int xtext_decode(const char *in, char *out, size_t cap)
{
    if (!xtext_valid(in))
        return -1;
    size_t n = 0;
    for (; *in; in++) {
        if (n + 1 >= cap)
            return -1;
        if (*in == '+') {
            char hex[3] = {in[1], in[2], 0};
            out[n++] = (char)strtol(hex, NULL, 16);
            in += 2;
        } else {
            out[n++] = *in;
        }
    }
    if (cap)
        out[n] = '\0';
    return (int)n;
}

int xtext_encode(const char *in, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
        bool escape = *p <= ' ' || *p >= 0x7f || *p == '+' || *p == '=';
        if (n + (escape ? 3 : 1) >= cap)
            return -1;
        if (escape) {
            out[n++] = '+';
            out[n++] = hex[*p >> 4];
            out[n++] = hex[*p & 15];
        } else {
            out[n++] = (char)*p;
        }
    }
    if (!cap)
        return -1;
    out[n] = '\0';
    return (int)n;
}

static const struct { unsigned bit; const char *name; } notify_names[] = {
    {DSN_NOTIFY_SUCCESS, "SUCCESS"}, {DSN_NOTIFY_FAILURE, "FAILURE"}, {DSN_NOTIFY_DELAY, "DELAY"},
    {DSN_NOTIFY_NEVER, "NEVER"},
};

void dsn_notify_text(unsigned notify, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof notify_names / sizeof *notify_names; i++)
        if (notify & notify_names[i].bit)
            n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "%s%s", n ? "," : "", notify_names[i].name);
}

int dsn_notify_parse(const char *v, unsigned *notify)
{
    unsigned bits = 0;
    while (*v) {
        size_t len = strcspn(v, ",");
        unsigned bit = 0;
        for (size_t i = 0; i < sizeof notify_names / sizeof *notify_names; i++)
            if (strlen(notify_names[i].name) == len && !strncasecmp(v, notify_names[i].name, len))
                bit = notify_names[i].bit;
        if (!bit || (bits & bit))
            return -1;
        bits |= bit;
        v += len;
        if (*v == ',' && !*++v)
            return -1;
    }
    /* NEVER stands alone (RFC 3461 4.1) */
    if (!bits || ((bits & DSN_NOTIFY_NEVER) && bits != DSN_NOTIFY_NEVER))
        return -1;
    *notify = bits;
    return 0;
}

const char *addr_domain(const char *addr)
{
    const char *at = strrchr(addr, '@');
    return at ? at + 1 : "";
}

/* Parse "<...>" at s into res->addr; sets res->params past the '>'. */
static int parse_path(const char *s, bool utf8, bool is_sender, struct path_result *res)
{
    const char *bad = is_sender ? "501 5.1.7 Bad sender address syntax"
                                : "501 5.1.3 Bad recipient address syntax";
    while (*s == ' ')
        s++;
    if (*s != '<') {
        res->reply = "501 5.5.4 Syntax: address must be enclosed in <>";
        return -1;
    }
    s++;
    /* obsolete source route "@a,@b:" is accepted and ignored (RFC 5321 4.1.2);
     * the caller refuses it from untrusted clients */
    res->source_route = *s == '@';
    if (*s == '@') {
        const char *colon = strchr(s, ':');
        const char *close = strchr(s, '>');
        if (!colon || !close || colon > close) {
            res->reply = bad;
            return -1;
        }
        s = colon + 1;
    }
    const char *close = strchr(s, '>');
    if (*s == '"') {     /* a quoted local part may contain '>' */
        int q = scan_local_part(s, utf8);
        close = q > 0 ? strchr(s + q, '>') : NULL;
    }
    if (!close) {
        res->reply = bad;
        return -1;
    }
    size_t n = (size_t)(close - s);
    if (n > SMTP_MAX_PATH) {
        res->reply = is_sender ? "501 5.1.7 Sender address too long" : "501 5.1.3 Recipient address too long";
        return -1;
    }
    memcpy(res->addr, s, n);
    res->addr[n] = '\0';
    res->params = close + 1;
    if (n == 0) {
        if (is_sender)
            return 0;
        res->reply = bad;
        return -1;
    }
    if (!is_sender && strcasecmp(res->addr, "postmaster") == 0)
        return 0;
    if (smtp_check_address(res->addr, utf8)) {
        res->reply = bad;
        return -1;
    }
    return 0;
}

static int parse_mail_param(char *kv, struct mail_params *p, const char **reply)
{
    char *eq = strchr(kv, '=');
    const char *val = eq ? eq + 1 : NULL;
    if (eq)
        *eq = '\0';
    if (!strcasecmp(kv, "SIZE")) {
        char *end;
        errno = 0;
        unsigned long long v = val ? strtoull(val, &end, 10) : 0;
        if (!val || !*val || *end || errno || !isdigit((unsigned char)val[0])) {
            *reply = "501 5.5.4 Bad SIZE parameter";
            return -1;
        }
        p->has_size = true;
        p->size = v;
        return 0;
    }
    if (!strcasecmp(kv, "BODY")) {
        if (val && !strcasecmp(val, "7BIT"))
            p->body = BODY_7BIT;
        else if (val && !strcasecmp(val, "8BITMIME"))
            p->body = BODY_8BITMIME;
        else if (val && !strcasecmp(val, "BINARYMIME"))
            p->body = BODY_BINARYMIME;
        else {
            *reply = "501 5.5.4 Bad BODY parameter (7BIT, 8BITMIME or BINARYMIME)";
            return -1;
        }
        return 0;
    }
    if (!strcasecmp(kv, "RET")) {
        if (p->ret || !val || (strcasecmp(val, "FULL") && strcasecmp(val, "HDRS"))) {
            *reply = "501 5.5.4 Bad RET parameter (FULL or HDRS, once)";
            return -1;
        }
        p->ret = !strcasecmp(val, "FULL") ? DSN_RET_FULL : DSN_RET_HDRS;
        return 0;
    }
    if (!strcasecmp(kv, "ENVID")) {
        if (p->envid[0] || !val || !*val || strlen(val) > DSN_MAX_ENVID || !xtext_valid(val)) {
            *reply = "501 5.5.4 Bad ENVID parameter (xtext, at most 100 characters, once)";
            return -1;
        }
        strcpy(p->envid, val);
        return 0;
    }
    if (!strcasecmp(kv, "AUTH")) {
        /* RFC 4954 5: the identity that submitted the message; we relay
         * none of it (it is not ours to vouch for), so it is only checked */
        if (!val || !*val || strlen(val) > 500 || !xtext_valid(val)) {
            *reply = "501 5.5.4 Bad AUTH parameter (xtext)";
            return -1;
        }
        return 0;
    }
    if (!strcasecmp(kv, "SMTPUTF8")) {
        if (val) {
            *reply = "501 5.5.4 SMTPUTF8 takes no value";
            return -1;
        }
        p->smtputf8 = true;
        return 0;
    }
    if (!strcasecmp(kv, "REQUIRETLS")) {
        if (val || p->requiretls) {
            *reply = "501 5.5.4 REQUIRETLS takes no value (and comes once)";
            return -1;
        }
        p->requiretls = true;
        return 0;
    }
    *reply = "555 5.5.4 Unsupported MAIL parameter";
    return -1;
}

static int parse_rcpt_param(char *kv, struct rcpt_params *p, const char **reply)
{
    char *eq = strchr(kv, '=');
    const char *val = eq ? eq + 1 : NULL;
    if (eq)
        *eq = '\0';
    if (!strcasecmp(kv, "NOTIFY")) {
        if (p->notify || !val || dsn_notify_parse(val, &p->notify) < 0) {
            *reply = "501 5.5.4 Bad NOTIFY parameter (NEVER, or SUCCESS, FAILURE, DELAY)";
            return -1;
        }
        return 0;
    }
    if (!strcasecmp(kv, "ORCPT")) {
        /* addr-type ";" xtext; "utf-8" addresses (RFC 6533) are checked as UTF-8 */
        const char *semi = val ? strchr(val, ';') : NULL;
        bool ok = semi && semi > val && strlen(val) <= DSN_MAX_ORCPT && semi[1] && !p->orcpt[0];
        for (const char *c = val; ok && c < semi; c++)
            ok = isalnum((unsigned char)*c) || *c == '-';
        if (ok)
            ok = !strncasecmp(val, "utf-8;", 6) ? utf8_valid(semi + 1) : xtext_valid(semi + 1);
        if (!ok) {
            *reply = "501 5.5.4 Bad ORCPT parameter (addr-type;xtext, once)";
            return -1;
        }
        strcpy(p->orcpt, val);
        return 0;
    }
    *reply = "555 5.5.4 Unsupported RCPT parameter";
    return -1;
}

/* Split parameters on spaces into a scratch copy and feed them to the
 * MAIL (mp) or RCPT (rp) parameter parser. */
static int parse_params(const char *params, struct mail_params *mp, struct rcpt_params *rp, const char **reply)
{
    char tmp[SMTP_MAX_COMMAND_LINE + 1];
    if (strlen(params) > SMTP_MAX_COMMAND_LINE) {
        *reply = "501 5.5.4 Parameters too long";
        return -1;
    }
    strcpy(tmp, params);
    char *save = NULL;
    const char *seen[16];       /* keywords so far: each may come once (RFC 5321 4.1.2's spirit, Postfix) */
    size_t seen_len[16], nseen = 0;
    for (char *t = strtok_r(tmp, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        if (!mp && !rp) {
            *reply = "555 5.5.4 Unsupported RCPT parameter";
            return -1;
        }
        size_t klen = strcspn(t, "=");
        for (size_t i = 0; i < nseen; i++)
            if (seen_len[i] == klen && !strncasecmp(seen[i], t, klen)) {
                *reply = "501 5.5.4 Duplicate parameter";
                return -1;
            }
        if (nseen == sizeof seen / sizeof *seen) {
            *reply = "501 5.5.4 Too many parameters";
            return -1;
        }
        seen[nseen] = t;
        seen_len[nseen++] = klen;
        if (mp ? parse_mail_param(t, mp, reply) < 0 : parse_rcpt_param(t, rp, reply) < 0)
            return -1;
    }
    return 0;
}

int smtp_parse_mail(const char *args, struct path_result *res, struct mail_params *params)
{
    memset(params, 0, sizeof *params);
    res->reply = NULL;
    if (strncasecmp(args, "FROM:", 5) != 0) {
        res->reply = "501 5.5.4 Syntax: MAIL FROM:<address>";
        return -1;
    }
    /* Parameters decide whether UTF-8 is allowed in the path, so find them
     * first with a permissive parse, then check the address strictly. */
    if (parse_path(args + 5, true, true, res) < 0)
        return -1;
    if (parse_params(res->params, params, NULL, &res->reply) < 0)
        return -1;
    if (params->smtputf8 && !utf8_valid(res->addr)) {
        res->reply = "553 5.6.7 Sender address is not valid UTF-8";
        return -1;
    }
    if (res->addr[0] && smtp_check_address(res->addr, params->smtputf8)) {
        res->reply = params->smtputf8 ? "501 5.1.7 Bad sender address syntax"
                                      : "553 5.6.7 Non-ASCII sender address needs SMTPUTF8";
        return -1;
    }
    return 0;
}

int smtp_parse_rcpt(const char *args, bool utf8, struct path_result *res, struct rcpt_params *rp)
{
    res->reply = NULL;
    if (rp)
        memset(rp, 0, sizeof *rp);
    if (strncasecmp(args, "TO:", 3) != 0) {
        res->reply = "501 5.5.4 Syntax: RCPT TO:<address>";
        return -1;
    }
    if (parse_path(args + 3, true, false, res) < 0)
        return -1;
    if (parse_params(res->params, NULL, rp, &res->reply) < 0)
        return -1;
    if (utf8 && !utf8_valid(res->addr)) {
        res->reply = "553 5.6.7 Recipient address is not valid UTF-8";
        return -1;
    }
    if (!utf8 && strcasecmp(res->addr, "postmaster") && smtp_check_address(res->addr, false)) {
        res->reply = "553 5.6.7 Non-ASCII recipient address needs SMTPUTF8";
        return -1;
    }
    return 0;
}

int smtp_reply_line(const char *line, size_t len, bool *last)
{
    if (len < 3 || !isdigit((unsigned char)line[0]) || !isdigit((unsigned char)line[1]) ||
        !isdigit((unsigned char)line[2]))
        return -1;
    int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (code < 100 || code > 599)
        return -1;
    if (len == 3 || line[3] == ' ')
        *last = true;
    else if (line[3] == '-')
        *last = false;
    else
        return -1;
    return code;
}

bool domain_matches(const char *pattern, const char *domain)
{
    if (pattern[0] != '.')
        return strcasecmp(pattern, domain) == 0;
    size_t pl = strlen(pattern), dl = strlen(domain);
    return dl > pl && strcasecmp(domain + dl - pl, pattern) == 0;
}
