/* dkim_sign.c - DKIM signing (RFC 6376, RFC 8463) with libopendkim for mail
 * whose From: domain has a key. Runs at EOM and signs the message as it will
 * be stored: every header and body change by earlier links is in, so put
 * dkim_sign LAST in the chain and the signature stays valid.
 * Canonicalization relaxed/relaxed; rsa-sha256 or ed25519-sha256 from the
 * key's type.
 *
 *   dkim_sign.keys = file:/etc/postern/dkim-keys
 *       one line per domain:  example.com  selector  /path/to/private-key.pem
 *   dkim_sign.trusted_only = yes   sign only mail from trusted_networks or
 *                                  from a logged-in client (SMTP AUTH)
 *                                  (never vouch for mail from outside)
 */
#include "postern_plugin.h"
#include "plugin_util.h"
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <opendkim/dkim.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

struct key {
    char domain[256], selector[64];
    unsigned char *pem;        /* the key file's text, as libopendkim takes it */
    dkim_alg_t alg;
};

struct signer {
    DKIM_LIB *lib;
    struct key *keys;
    size_t nkeys;
    int trusted_only;
};

static const struct postern_host *host;

/* A key or the key table, through posternd (its privileged parent opens
 * what the daemon's user cannot read: keys are root's, mode 0600). The
 * reason in err names errno, the user and what was refused. */
static FILE *open_secret(const char *path, const char *what, char *err, size_t errlen)
{
    char why[300] = "";
    int fd = POSTERN_HOST_HAS(host, open_config_file) ? host->open_config_file(path, why, sizeof why)
                                                      : open(path, O_RDONLY | O_CLOEXEC);
    FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
    if (!f) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        snprintf(err, errlen, "cannot read %s %s: %s (as uid %d)%s%s", what, path, strerror(e), (int)geteuid(),
                 why[0] ? "; " : "", why);
    }
    return f;
}

/* Reads a PEM private key file; sets alg from the key type. */
static unsigned char *load_key(const char *path, dkim_alg_t *alg, char *err, size_t errlen)
{
    FILE *f = open_secret(path, "key", err, errlen);
    if (!f)
        return NULL;
    EVP_PKEY *pk = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    int type = pk ? EVP_PKEY_get_base_id(pk) : 0;
    EVP_PKEY_free(pk);
    if (type != EVP_PKEY_RSA && type != EVP_PKEY_ED25519) {
        fclose(f);
        snprintf(err, errlen, "%s: not an RSA or Ed25519 private key in PEM", path);
        return NULL;
    }
    *alg = type == EVP_PKEY_RSA ? DKIM_SIGN_RSASHA256 : DKIM_SIGN_ED25519SHA256;
    rewind(f);
    unsigned char *pem = calloc(1, 65536);
    size_t n = pem ? fread(pem, 1, 65535, f) : 0;
    if (!n) {
        snprintf(err, errlen, "cannot read key %s: %s", path, !pem ? "out of memory" : ferror(f) ? strerror(errno)
                                                                                        : "empty file");
        fclose(f);
        free(pem);
        return NULL;
    }
    fclose(f);
    return pem;
}

static int load_table(struct signer *s, const char *spec, char *err, size_t errlen)
{
    if (strncmp(spec, "file:", 5)) {
        snprintf(err, errlen, "keys: expected file:PATH");
        return -1;
    }
    FILE *f = open_secret(spec + 5, "the key table", err, errlen);
    if (!f)
        return -1;
    char line[1024];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        char domain[256], selector[64], path[700], extra;
        char *p = line + strspn(line, " \t");
        if (*p == '#' || *p == '\n' || !*p)
            continue;
        if (sscanf(p, "%255s %63s %699s %c", domain, selector, path, &extra) != 3) {
            snprintf(err, errlen, "%s:%d: expected: domain selector key-file", spec + 5, lineno);
            rc = -1;
            break;
        }
        struct key *grown = realloc(s->keys, (s->nkeys + 1) * sizeof *grown);
        if (!grown) {
            rc = -1;
            break;
        }
        s->keys = grown;
        struct key *k = &s->keys[s->nkeys];
        memset(k, 0, sizeof *k);
        snprintf(k->domain, sizeof k->domain, "%s", domain);
        snprintf(k->selector, sizeof k->selector, "%s", selector);
        if (!(k->pem = load_key(path, &k->alg, err, errlen)))
            rc = -1;
        else
            s->nkeys++;
    }
    fclose(f);
    return rc;
}

static void fini(void *state)
{
    struct signer *s = state;
    for (size_t i = 0; i < s->nkeys; i++)
        free(s->keys[i].pem);
    free(s->keys);
    if (s->lib)
        dkim_close(s->lib);
    free(s);
}

static int init(const struct postern_host *h, const struct postern_option *opts, size_t n, void **state,
                char *err, size_t errlen)
{
    host = h;
    if (POSTERN_HOST_REQUIRE(h, client_trusted, err, errlen) < 0)
        return -1;
    struct signer *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    s->trusted_only = 1;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (!strcmp(opts[i].key, "keys")) {
            rc = load_table(s, opts[i].value, err, errlen);
        } else if (!strcmp(opts[i].key, "trusted_only") &&
                   (!strcmp(opts[i].value, "yes") || !strcmp(opts[i].value, "no"))) {
            s->trusted_only = !strcmp(opts[i].value, "yes");
        } else {
            snprintf(err, errlen, "bad option '%s' (known: keys = file:PATH, trusted_only = yes|no)", opts[i].key);
            rc = -1;
        }
    }
    if (rc == 0 && !s->nkeys) {
        snprintf(err, errlen, "dkim_sign.keys names no key");
        rc = -1;
    }
    if (rc == 0 && !(s->lib = dkim_init(NULL, NULL))) {
        snprintf(err, errlen, "dkim_init failed");
        rc = -1;
    }
    if (rc < 0) {
        fini(s);
        return -1;
    }
    *state = s;
    return 0;
}

static const struct key *key_for(const struct signer *s, const char *domain)
{
    for (size_t i = 0; i < s->nkeys; i++)
        if (!strcasecmp(s->keys[i].domain, domain))
            return &s->keys[i];
    return NULL;
}

/* Feeds the headers and body as they stand into the signing handle. */
static int feed(postern_txn *t, DKIM *d)
{
    char *buf = malloc(65536);
    if (!buf)
        return -1;
    const char *name, *value;
    for (size_t i = 0; host->header_at(t, i, &name, &value) == 0; i++) {
        int len = snprintf(buf, 65536, "%s:%s", name, value);
        if (len > 0 && len < 65536)
            dkim_header(d, (unsigned char *)buf, (size_t)len);
    }
    int rc = dkim_eoh(d) == DKIM_STAT_OK ? 0 : -1;
    uint64_t off = 0;
    long got;
    while (rc == 0 && (got = host->body_read(t, off, buf, 65536)) > 0) {
        dkim_body(d, (unsigned char *)buf, (size_t)got);
        off += (uint64_t)got;
    }
    free(buf);
    return rc == 0 && dkim_eom(d, NULL) == DKIM_STAT_OK ? 0 : -1;
}

/* libopendkim folds with bare LF; our headers fold with CRLF. */
static void crlf_folds(const char *in, char *out, size_t size)
{
    size_t n = 0;
    for (; *in && n + 2 < size; in++) {
        if (*in == '\n' && (n == 0 || out[n - 1] != '\r'))
            out[n++] = '\r';
        out[n++] = *in;
    }
    out[n] = '\0';
}

static postern_verdict on_eom(postern_txn *t, void *state)
{
    struct signer *s = state;
    char domain[256];
    from_domain(host, t, domain, sizeof domain);
    const struct key *k = domain[0] ? key_for(s, domain) : NULL;
    if (!k)
        return POSTERN_CONTINUE;
    bool logged_in = POSTERN_HOST_HAS(host, auth_user) && host->auth_user(t);
    if (s->trusted_only && !host->client_trusted(t) && !logged_in) {
        host->log(t, POSTERN_LOG_INFO, "dkim_sign: not signing for %s: client %s is neither trusted nor logged in",
                  domain,
                  host->client_addr(t));
        return POSTERN_CONTINUE;
    }
    DKIM_STAT st;
    DKIM *d = dkim_sign(s->lib, (const unsigned char *)host->queue_id(t), NULL, k->pem,
                        (const unsigned char *)k->selector, (const unsigned char *)k->domain, DKIM_CANON_RELAXED,
                        DKIM_CANON_RELAXED, k->alg, -1, &st);
    if (!d) {
        host->log(t, POSTERN_LOG_ERROR, "dkim_sign: %s: %s", domain, dkim_getresultstr(st));
        return POSTERN_ERROR;
    }
    unsigned char sig[8192];
    char folded[8400], value[8401];
    int ok = feed(t, d) == 0 && dkim_getsighdr(d, sig, sizeof sig, strlen("DKIM-Signature: ")) == DKIM_STAT_OK;
    if (!ok)
        host->log(t, POSTERN_LOG_ERROR, "dkim_sign: %s: %s", domain, dkim_geterror(d) ? dkim_geterror(d) : "failed");
    dkim_free(d);
    if (!ok)
        return POSTERN_ERROR;
    crlf_folds((const char *)sig, folded, sizeof folded);
    snprintf(value, sizeof value, " %s", folded);
    if (host->header_insert(t, 0, "DKIM-Signature", value) < 0)
        return POSTERN_ERROR;
    host->log(t, POSTERN_LOG_INFO, "dkim_sign: signed for d=%s s=%s (%s)", k->domain, k->selector,
              k->alg == DKIM_SIGN_RSASHA256 ? "rsa-sha256" : "ed25519-sha256");
    return POSTERN_CONTINUE;
}

/* The options it takes (checked by posternd before init, documented in postern-plugins(5)). */
static const struct postern_option_spec options[] = {
    {"keys", POSTERN_OPT_PATH, NULL, "", 0, "`file:PATH`, lines `domain selector key-file` (keys root's, 0600: opened by the privileged parent)"},
    {"trusted_only", POSTERN_OPT_BOOL, NULL, "yes", 0, "sign only mail from trusted or logged-in clients"},
    {NULL, 0, NULL, NULL, 0, NULL},
};

static const struct postern_plugin plugin = {
    .abi_version = POSTERN_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct postern_plugin),
    .name = "dkim_sign",
    .init = init,
    .fini = fini,
    .on_eom = on_eom,
    .options = options,
};

const struct postern_plugin *postern_plugin_entry(void) { return &plugin; }
