/* archive_chain.h - the archive's hash chain, shared by the archive plugin
 * (which appends) and `postern archive verify` (which checks).
 *
 * DIR/chain holds one line per archived message:
 *     SEQ RELPATH FILE_SHA256 CHAIN_SHA256
 * with CHAIN_SHA256 = SHA-256(previous CHAIN_SHA256 "|" RELPATH "|" FILE_SHA256)
 * and "0" * 64 before the first line. Changing, removing or reordering an
 * archived file or a chain line breaks every later link. DIR/head holds a
 * recent "SEQ CHAIN_SHA256" (written after the chain, not fsync'd: after a
 * crash it may lag behind the chain, never run ahead of it). A chain that
 * ends before the head's SEQ, or disagrees with it, was truncated; keep
 * copies of the head elsewhere to catch truncation of both. */
#ifndef POSTERN_ARCHIVE_CHAIN_H
#define POSTERN_ARCHIVE_CHAIN_H
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#define ARCHIVE_HASH_HEX 65   /* 64 hex digits + NUL */

static inline void archive_hex(const unsigned char *d, unsigned n, char *out)
{
    for (unsigned i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
    out[2 * n] = '\0';
}

/* SHA-256 of what is left to read of f (closed after), as hex; 0 or -1. */
static inline int archive_stream_hash(FILE *f, char out[ARCHIVE_HASH_HEX])
{
    if (!f)
        return -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char buf[65536], md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    int rc = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) ? 0 : -1;
    size_t n;
    while (rc == 0 && (n = fread(buf, 1, sizeof buf, f)) > 0)
        rc = EVP_DigestUpdate(ctx, buf, n) ? 0 : -1;
    if (rc == 0 && (ferror(f) || !EVP_DigestFinal_ex(ctx, md, &mdlen)))
        rc = -1;
    EVP_MD_CTX_free(ctx);
    fclose(f);
    if (rc == 0)
        archive_hex(md, mdlen, out);
    return rc;
}

/* SHA-256 of a whole file, as hex; 0 or -1. */
static inline int archive_file_hash(const char *path, char out[ARCHIVE_HASH_HEX])
{
    return archive_stream_hash(fopen(path, "rb"), out);
}

/* The next link of the chain. */
static inline int archive_link(const char *prev, const char *relpath, const char *file_hash,
                               char out[ARCHIVE_HASH_HEX])
{
    char input[4096];
    int n = snprintf(input, sizeof input, "%s|%s|%s", prev, relpath, file_hash);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (n < 0 || (size_t)n >= sizeof input || !EVP_Digest(input, (size_t)n, md, &mdlen, EVP_sha256(), NULL))
        return -1;
    archive_hex(md, mdlen, out);
    return 0;
}

#endif
