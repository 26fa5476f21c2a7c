/* auth_cyrus.c - SMTP AUTH checked by Cyrus SASL (libsasl2), with the
 * mechanisms and password store its config file names: postern.conf in
 * auth_cyrus_config_dir (pwcheck_method, auxprop_plugin = sasldb,
 * sasldb_path, mech_list...), as Postfix's smtpd.conf. No SASL security
 * layer is negotiated (max_ssf 0): TLS protects the session. */
#include "auth_backend.h"
#include "log.h"
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <pwd.h>
#include <sasl/sasl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char mechs[512];
static char cyrus_hostname[256];   /* the service's FQDN for sasl_server_new */

static int cyrus_log(void *ctx, int level, const char *msg)
{
    (void)ctx;
    if (level <= SASL_LOG_WARN && msg) {
        char m[400];
        snprintf(m, sizeof m, "%s", msg);
        mask_control_bytes(m, strlen(m), false);
        log_warn("auth: cyrus sasl: %s", m);
    }
    return SASL_OK;
}

static sasl_callback_t callbacks[] = {
    {SASL_CB_LOG, (int (*)(void))(void *)cyrus_log, NULL},
    {SASL_CB_LIST_END, NULL, NULL},
};

static sasl_conn_t *new_conn(void)
{
    sasl_conn_t *conn = NULL;
    if (sasl_server_new("smtp", cyrus_hostname, NULL, NULL, NULL, NULL, 0, &conn) != SASL_OK)
        return NULL;
    sasl_security_properties_t props = {.max_ssf = 0, .maxbufsize = 0};
    sasl_setprop(conn, SASL_SEC_PROPS, &props);
    return conn;
}

/* The sasldb the config file names (auxprop_plugin sasldb; sasldb_path,
 * else /etc/sasldb2) must be readable by this process, the daemon's user:
 * libsasl2 opens it only at the first AUTH, and then every AUTH fails with
 * 454. Said at start and by `posternd -t` instead. */
static int check_sasldb(const struct config *cfg, char *err, size_t errlen)
{
    char conf[4200], line[1024], db[1024] = "/etc/sasldb2";
    snprintf(conf, sizeof conf, "%s/postern.conf", cfg->auth_cyrus_config_dir ? cfg->auth_cyrus_config_dir
                                                                               : "/etc/sasl2");
    FILE *f = fopen(conf, "r");
    bool sasldb = false;
    while (f && fgets(line, sizeof line, f)) {
        char key[64], value[1000];
        if (sscanf(line, " %63[^: ] : %999[^\r\n]", key, value) != 2)
            continue;
        if (!strcmp(key, "auxprop_plugin") && strstr(value, "sasldb"))
            sasldb = true;
        else if (!strcmp(key, "sasldb_path"))
            snprintf(db, sizeof db, "%s", value);
    }
    if (f)
        fclose(f);
    int fd = sasldb ? open(db, O_RDONLY | O_CLOEXEC) : 0;
    if (fd < 0) {
        int e = errno;
        struct passwd *pw = getpwuid(geteuid());
        snprintf(err, errlen, "auth_backend = cyrus: sasldb_path %s (from %s): %s as user %s (uid %d); every AUTH "
                 "would fail: let that user read it (chgrp %s; chmod 640)", db, conf, strerror(e),
                 pw ? pw->pw_name : "?", (int)geteuid(), pw ? pw->pw_name : "it");
        return -1;
    }
    if (sasldb)
        close(fd);
    return 0;
}

static int cyrus_init(const struct config *cfg, char *err, size_t errlen)
{
    if (check_sasldb(cfg, err, errlen) < 0)
        return -1;
    snprintf(cyrus_hostname, sizeof cyrus_hostname, "%s", cfg->hostname);
    if (cfg->auth_cyrus_config_dir)
        sasl_set_path(SASL_PATH_TYPE_CONFIG, cfg->auth_cyrus_config_dir);
    int rc = sasl_server_init(callbacks, "postern");
    sasl_conn_t *conn = rc == SASL_OK ? new_conn() : NULL;
    const char *list = NULL;
    if (!conn || sasl_listmech(conn, NULL, "", " ", "", &list, NULL, NULL) != SASL_OK || !list || !*list) {
        snprintf(err, errlen, "auth_backend = cyrus: %s", rc != SASL_OK ? sasl_errstring(rc, NULL, NULL)
                 : "no mechanisms (is postern.conf in auth_cyrus_config_dir, with mech_list?)");
        if (conn)
            sasl_dispose(&conn);
        return -1;
    }
    snprintf(mechs, sizeof mechs, "%s", list);
    sasl_dispose(&conn);
    return 0;
}

static const char *cyrus_mechanisms(void) { return mechs; }

static enum auth_result cyrus_step(struct auth_exchange *x, const unsigned char *in, size_t inlen, bool has_in)
{
    sasl_conn_t *conn = x->backend;
    if (!conn && !(conn = x->backend = new_conn())) {
        snprintf(x->why, sizeof x->why, "cannot start a Cyrus SASL exchange");
        return AUTH_TEMPFAIL;
    }
    const char *out = NULL;
    unsigned outlen = 0;
    int rc = x->steps++ == 0
                 ? sasl_server_start(conn, x->mech, has_in ? (const char *)in : NULL, (unsigned)inlen, &out, &outlen)
                 : sasl_server_step(conn, (const char *)in, (unsigned)inlen, &out, &outlen);
    if (rc == SASL_CONTINUE) {
        if (outlen > sizeof x->challenge)
            outlen = 0;
        memcpy(x->challenge, out, outlen);
        x->challenge_len = outlen;
        return AUTH_CONTINUE;
    }
    if (rc == SASL_OK) {
        const void *user = NULL;
        if (sasl_getprop(conn, SASL_USERNAME, &user) != SASL_OK || !user) {
            snprintf(x->why, sizeof x->why, "no user name after success");
            return AUTH_TEMPFAIL;
        }
        snprintf(x->user, sizeof x->user, "%s", (const char *)user);
        return AUTH_OK;
    }
    snprintf(x->why, sizeof x->why, "%s", sasl_errdetail(conn));
    return rc == SASL_TRYAGAIN || rc == SASL_UNAVAIL || rc == SASL_NOMEM || rc == SASL_FAIL ? AUTH_TEMPFAIL
                                                                                             : AUTH_FAIL;
}

static void cyrus_end(struct auth_exchange *x)
{
    sasl_conn_t *conn = x->backend;
    if (conn)
        sasl_dispose(&conn);
    x->backend = NULL;
}

const struct auth_backend auth_cyrus = {"cyrus", cyrus_init, cyrus_mechanisms, cyrus_step, cyrus_end};
