/* learn.c - see learn.h. One HTTP/1.0 request per message: the stored
 * message (from its spool file, after the envelope block) as the body. */
#include "learn.h"
#include "log.h"
#include "plugin_net.h"
#include "spool.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LEARN_TIMEOUT_S 10
#define LEARN_MAX_BYTES (20u << 20)     /* a larger message is not sent */

static char host[256], port[8], password[512];

void learn_configure(const struct config *cfg)
{
    host[0] = port[0] = password[0] = '\0';
    const char *u = cfg->rspamd_controller;
    if (!u || strncmp(u, "http://", 7))
        return;
    const char *hp = u + 7, *colon = strrchr(hp, ':');
    size_t hl = colon ? (size_t)(colon - hp) : strcspn(hp, "/");
    if (!hl || hl >= sizeof host)
        return;
    snprintf(host, sizeof host, "%.*s", (int)hl, hp);
    snprintf(port, sizeof port, "%.*s", (int)strcspn(colon ? colon + 1 : "11334", "/"), colon ? colon + 1 : "11334");
    snprintf(password, sizeof password, "%s", cfg->rspamd_controller_password ? cfg->rspamd_controller_password : "");
}

/* The stored message (headers and body), or NULL. */
static char *message_of(const char *id, size_t *len)
{
    struct envelope e;
    size_t off;
    const char *why = "";
    if (spool_load(id, &e, &off, &why) < 0)
        return NULL;
    envelope_free(&e);
    int fd = spool_open_message(id);
    struct stat st;
    char *data = NULL;
    if (fd >= 0 && fstat(fd, &st) == 0 && (size_t)st.st_size > off && (size_t)st.st_size - off <= LEARN_MAX_BYTES &&
        (data = malloc((size_t)st.st_size - off)) &&
        pread(fd, data, (size_t)st.st_size - off, (off_t)off) == (ssize_t)((size_t)st.st_size - off)) {
        *len = (size_t)st.st_size - off;
    } else {
        free(data);
        data = NULL;
    }
    if (fd >= 0)
        close(fd);
    return data;
}

int learn_message(const char *id, bool spam, char *why, size_t size)
{
    if (!host[0])
        return 1;
    size_t len = 0;
    char *msg = message_of(id, &len);
    if (!msg) {
        snprintf(why, size, "cannot read the message");
        return -1;
    }
    int fd = net_connect_tcp(host, port, LEARN_TIMEOUT_S);
    char head[1400], answer[512] = "";
    int n = snprintf(head, sizeof head, "POST /%s HTTP/1.0\r\nHost: %s\r\nPassword: %s\r\nContent-Length: %zu\r\n\r\n",
                     spam ? "learnspam" : "learnham", host, password, len);
    ssize_t got = -1;
    if (fd >= 0 && net_send_all(fd, head, (size_t)n) == 0 && net_send_all(fd, msg, len) == 0)
        got = read(fd, answer, sizeof answer - 1);
    if (fd >= 0)
        close(fd);
    free(msg);
    if (got <= 0) {
        snprintf(why, size, "rspamd controller %s:%s: %s", host, port, fd < 0 ? "cannot connect" : "no answer");
        return -1;
    }
    answer[got] = '\0';
    int status = 0;
    sscanf(answer, "HTTP/%*s %d", &status);
    /* 208: learned before (the same message), which is as good */
    if (status != 200 && status != 208) {
        snprintf(why, size, "rspamd controller answered %d", status);
        return -1;
    }
    log_info("%s: learned as %s by rspamd", id, spam ? "spam" : "ham");
    return 0;
}
