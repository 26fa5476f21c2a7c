/* archive_witness.h - the archive witness's wire protocol and checkpoint
 * format, shared by postern-witness (gateway/bin/postern_witness.c, which
 * signs), the archive plugin (which reports every chain link to it) and
 * `postern archive verify` (which checks the signatures).
 *
 * The witness runs as a user other than the daemon's (root, typically),
 * holds an Ed25519 key the daemon's user cannot read, and appends to a log
 * the daemon's user cannot write. It accepts a chain link only if it
 * continues the last link it witnessed, so history it has signed cannot be
 * rewritten by the daemon's uid, even one that recomputes the whole chain.
 *
 * Protocol over a unix socket, one line each way, at most
 * WITNESS_LINE_MAX bytes:
 *   HELLO                           -> OK SEQ HASH  (last witnessed link)
 *   LINK SEQ RELPATH FILEHASH HASH  -> nothing (ERR REASON and close if refused)
 *   COMMIT                          -> OK SEQ HASH  (signed and fsync'd)
 * Log lines: "SEQ HASH UNIXTIME SIGNATURE_HEX", the signature over
 * witness_message(); lines starting with '#' are notes (refusals). */
#ifndef POSTERN_ARCHIVE_WITNESS_H
#define POSTERN_ARCHIVE_WITNESS_H
#include "archive_chain.h"
#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <string.h>

#define WITNESS_LINE_MAX 4096
#define WITNESS_SIG_HEX 129      /* Ed25519: 64 bytes as hex + NUL */

/* What a checkpoint signs. */
static inline int witness_message(char *out, size_t len, unsigned long seq, const char *hash, long long when)
{
    return snprintf(out, len, "postern-archive-checkpoint 1 %lu %s %lld", seq, hash, when);
}

static inline int witness_is_hash(const char *s)
{
    if (strlen(s) != 64)
        return 0;
    for (; *s; s++)
        if (!isxdigit((unsigned char)*s) || isupper((unsigned char)*s))
            return 0;
    return 1;
}

/* A relative path as the archive writes them: DAY/NAME.eml, or a record
 * (expired@WHEN/DAY/NAME.eml, audit@WHEN/ACTION); no "..". */
static inline int witness_is_relpath(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 255 || s[0] == '/' || strstr(s, ".."))
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '/' && *s != '.' && *s != '-' && *s != '_' && *s != '@')
            return 0;
    return 1;
}

/* Parse a log line; 1 for a checkpoint, 0 for a note or blank, -1 if bad. */
static inline int witness_parse_checkpoint(const char *line, unsigned long *seq, char hash[ARCHIVE_HASH_HEX],
                                           long long *when, char sig[WITNESS_SIG_HEX])
{
    if (line[0] == '#' || line[0] == '\n' || line[0] == '\0')
        return 0;
    char h[80], s[200];
    if (sscanf(line, "%lu %79s %lld %199s", seq, h, when, s) != 4 || !witness_is_hash(h) || strlen(s) != 128)
        return -1;
    memcpy(hash, h, ARCHIVE_HASH_HEX);
    memcpy(sig, s, WITNESS_SIG_HEX);
    return 1;
}

/* Check a checkpoint's signature with the witness's public key: 1 good. */
static inline int witness_signature_ok(EVP_PKEY *pub, unsigned long seq, const char *hash, long long when,
                                       const char *sig_hex)
{
    unsigned char sig[64];
    for (int i = 0; i < 64; i++) {
        unsigned v;
        if (sscanf(sig_hex + 2 * i, "%2x", &v) != 1)
            return 0;
        sig[i] = (unsigned char)v;
    }
    char msg[256];
    int n = witness_message(msg, sizeof msg, seq, hash, when);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pub) == 1 &&
             EVP_DigestVerify(ctx, sig, sizeof sig, (const unsigned char *)msg, (size_t)n) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* One checkpoint line of a witness log, as read by witness_next(). */
struct witness_checkpoint {
    unsigned long line;          /* 1-based line number in the log */
    unsigned long seq;
    char hash[ARCHIVE_HASH_HEX];
    long long when;
    int good;                    /* parses, and the signature verifies with the key */
};

/* The next checkpoint in f (notes and blank lines skipped): 1 with *c
 * filled, 0 at the end of the log. c->line must start at 0. */
static inline int witness_next(FILE *f, EVP_PKEY *key, struct witness_checkpoint *c)
{
    char line[WITNESS_LINE_MAX], sig[WITNESS_SIG_HEX];
    while (fgets(line, sizeof line, f)) {
        c->line++;
        int kind = witness_parse_checkpoint(line, &c->seq, c->hash, &c->when, sig);
        if (kind == 0)
            continue;
        c->good = kind > 0 && witness_signature_ok(key, c->seq, c->hash, c->when, sig);
        return 1;
    }
    return 0;
}

#endif
