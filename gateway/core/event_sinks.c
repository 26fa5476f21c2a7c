/* event_sinks.c - see event_sinks.h. */
#include "event_sinks.h"
#include "config.h"
#include "domain_rules.h"
#include "https_client.h"
#include "privsep.h"
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const event_type_names[EV_NTYPES] = {
    "connection_refused", "rejected", "accepted", "quarantined", "delivered", "deferred", "bounced",
    "expired", "released", "deleted", "dropped",
};

#define SECRET_MAX 4096

/* "t1,t2": their bits, or 0 with err naming the unknown one. */
static unsigned parse_types(char *list, char *err, size_t errlen)
{
    unsigned bits = 0;
    for (char *save = NULL, *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        size_t i = 0;
        while (i < EV_NTYPES && strcmp(t, event_type_names[i]))
            i++;
        if (i == EV_NTYPES) {
            snprintf(err, errlen, "types: '%s' is not an event type (connection_refused, rejected, accepted, "
                     "quarantined, delivered, deferred, bounced, expired, released, deleted, dropped)", t);
            return 0;
        }
        bits |= 1u << i;
    }
    if (!bits)
        snprintf(err, errlen, "types: no event type given");
    return bits;
}

/* An IPv4 or IPv6 loopback literal, or "localhost". */
static bool loopback_host(const char *h)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (!strcmp(h, "localhost"))
        return true;
    if (inet_pton(AF_INET, h, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    return inet_pton(AF_INET6, h, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

/* The webhook's URL into s: https://, or http:// to a loopback address. */
static int parse_url(struct event_sink *s, const char *url, char *err, size_t errlen)
{
    char why[300];
    if (https_url_parse(url, &s->tls, s->host, sizeof s->host, &s->port, s->path, sizeof s->path, why,
                        sizeof why) < 0) {
        snprintf(err, errlen, "webhook %s: %s", s->name, why);
        return -1;
    }
    if (!s->tls && !loopback_host(s->host)) {
        snprintf(err, errlen, "webhook %s: http:// only to a loopback address (use https://)", s->name);
        return -1;
    }
    return 0;
}

/* %XX decoded in place (an AMQP URL's vhost, user, password): 0, or -1. */
static int percent_decode(char *s)
{
    char *out = s;
    for (; *s; s++) {
        if (*s != '%') {
            *out++ = *s;
            continue;
        }
        unsigned v;
        if (sscanf(s + 1, "%2x", &v) != 1 || !s[1] || !s[2] || v == 0)
            return -1;
        *out++ = (char)v;
        s += 2;
    }
    *out = '\0';
    return 0;
}

/* amqp://[USER[:PASSWORD]@]HOST[:PORT][/VHOST] into s (user and password
 * guest, port 5672 and vhost "/" when not given). */
static int parse_amqp_url(struct event_sink *s, const char *url, char *err, size_t errlen)
{
    char buf[1024];
    if (strncmp(url, "amqp://", 7) || strlen(url) >= sizeof buf) {
        snprintf(err, errlen, "amqp %s: '%s' is not an amqp:// URL", s->name, url);
        return -1;
    }
    snprintf(buf, sizeof buf, "%s", url + 7);
    char *host = buf, *at = strrchr(buf, '@'), *slash;
    snprintf(s->user, sizeof s->user, "guest");
    snprintf(s->password, sizeof s->password, "guest");
    snprintf(s->vhost, sizeof s->vhost, "/");
    if (at) {
        *at = '\0';
        char *colon = strchr(buf, ':');
        if (colon)
            *colon = '\0';
        if (percent_decode(buf) < 0 || (colon && percent_decode(colon + 1) < 0) || strlen(buf) >= sizeof s->user ||
            (colon && strlen(colon + 1) >= sizeof s->password)) {
            snprintf(err, errlen, "amqp %s: bad user or password in the URL", s->name);
            return -1;
        }
        snprintf(s->user, sizeof s->user, "%s", buf);
        if (colon)
            snprintf(s->password, sizeof s->password, "%s", colon + 1);
        host = at + 1;
    }
    if ((slash = strchr(host, '/'))) {
        *slash = '\0';
        if (slash[1] && (percent_decode(slash + 1) < 0 || strlen(slash + 1) >= sizeof s->vhost)) {
            snprintf(err, errlen, "amqp %s: bad vhost in the URL", s->name);
            return -1;
        }
        if (slash[1])
            snprintf(s->vhost, sizeof s->vhost, "%s", slash + 1);
    }
    char *colon = strrchr(host, ':');
    s->port = 5672;
    if (colon) {
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (*end || port < 1 || port > 65535) {
            snprintf(err, errlen, "amqp %s: bad port in the URL", s->name);
            return -1;
        }
        s->port = (int)port;
        *colon = '\0';
    }
    if (!host[0] || strlen(host) >= sizeof s->host || strpbrk(host, " \t[]")) {
        snprintf(err, errlen, "amqp %s: no host in the URL", s->name);
        return -1;
    }
    snprintf(s->host, sizeof s->host, "%s", host);
    return 0;
}

/* secret=FILE: its bytes, without a final newline. */
static int read_secret(struct event_sink *s, const char *path, char *err, size_t errlen)
{
    char why[300] = "";
    FILE *f = privsep_fopen(path, why, sizeof why);     /* root's file: the parent opens it for a reload */
    char buf[SECRET_MAX + 1];
    size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f)
        fclose(f);
    if (!f || n == 0 || n > SECRET_MAX) {
        snprintf(err, errlen, "webhook %s: secret %s: %s", s->name, path,
                 !f ? why : n ? "longer than 4096 bytes" : "empty");
        return -1;
    }
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if (!(s->secret = malloc(n ? n : 1))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(s->secret, buf, n);
    s->secret_len = n;
    return 0;
}

/* One NAME=VALUE option of a sink's line. */
static int sink_option(struct event_sink *s, char *w, char *err, size_t errlen)
{
    char *eq = strchr(w, '=');
    if (!eq) {
        snprintf(err, errlen, "%s: '%s' is not NAME=VALUE", s->name, w);
        return -1;
    }
    *eq = '\0';
    const char *v = eq + 1;
    char *end;
    if (!strcmp(w, "types"))
        return (s->types = parse_types(eq + 1, err, errlen)) ? 0 : -1;
    if (!strcmp(w, "batch")) {
        long b = strtol(v, &end, 10);
        if (*end || b < 1 || b > 10000) {
            snprintf(err, errlen, "%s: batch must be 1-10000", s->name);
            return -1;
        }
        s->batch = (int)b;
        return 0;
    }
    if (!strcmp(w, "timeout")) {
        if ((s->timeout = parse_duration(v)) < 1 || s->timeout > 600) {
            snprintf(err, errlen, "%s: timeout must be 1s to 10m", s->name);
            return -1;
        }
        return 0;
    }
    if (s->kind == SINK_WEBHOOK && !strcmp(w, "secret") && !s->secret)
        return read_secret(s, v, err, errlen);
    if (s->kind == SINK_WEBHOOK && !strcmp(w, "ca") && !s->ca_file)
        return (s->ca_file = strdup(v)) ? 0 : -1;
    if (s->kind == SINK_REDIS && !strcmp(w, "stream") && *v && strlen(v) < sizeof s->stream) {
        snprintf(s->stream, sizeof s->stream, "%s", v);
        return 0;
    }
    char *field = s->kind != SINK_AMQP ? NULL : !strcmp(w, "exchange") ? s->exchange
                                              : !strcmp(w, "routing_key") ? s->routing_key : NULL;
    if (field && strlen(v) < sizeof s->exchange && !strpbrk(v, " \t")) {
        snprintf(field, sizeof s->exchange, "%s", v);
        return 0;
    }
    if (s->kind == SINK_AMQP && !strcmp(w, "format")) {
        if (strcmp(v, "each") && strcmp(v, "ndjson")) {
            snprintf(err, errlen, "%s: format must be each or ndjson", s->name);
            return -1;
        }
        s->ndjson = !strcmp(v, "ndjson");
        return 0;
    }
    if (s->kind == SINK_REDIS && !strcmp(w, "maxlen")) {
        s->maxlen = strtol(v, &end, 10);
        if (*end || s->maxlen < 1) {
            snprintf(err, errlen, "%s: maxlen must be a positive number", s->name);
            return -1;
        }
        return 0;
    }
    snprintf(err, errlen, "%s: unknown or repeated option '%s'", s->name, w);
    return -1;
}

static void sink_free(struct event_sink *s)
{
    free(s->secret);
    free(s->ca_file);
}

int event_sinks_add_line(struct event_sinks *sinks, const char *kind, char *rest, char *err, size_t errlen)
{
    char *w[16];
    size_t n = table_words(rest, w, 15);
    struct event_sink s = {.types = (1u << EV_NTYPES) - 1, .batch = 500, .timeout = 10, .maxlen = 1000000};
    snprintf(s.stream, sizeof s.stream, "postern:events");
    if (!strcmp(kind, "webhook") && n >= 2)
        s.kind = SINK_WEBHOOK;
    else if (!strcmp(kind, "redis") && n >= 1)
        s.kind = SINK_REDIS;
    else if (!strcmp(kind, "amqp") && n >= 2)
        s.kind = SINK_AMQP;
    else {
        snprintf(err, errlen, "expected: webhook NAME URL, redis NAME or amqp NAME URL, each [OPTION=VALUE...]");
        return -1;
    }
    if (!table_name_ok(w[0], sizeof s.name) || n > 14) {
        snprintf(err, errlen, "%s: bad name, or too many options", kind);
        return -1;
    }
    snprintf(s.name, sizeof s.name, "%s", w[0]);
    for (size_t i = 0; i < sinks->n; i++)
        if (!strcmp(sinks->v[i].name, s.name)) {
            snprintf(err, errlen, "sink %s: given twice", s.name);
            return -1;
        }
    if (sinks->n == EVENT_SINKS_MAX) {
        snprintf(err, errlen, "at most %d sinks", EVENT_SINKS_MAX);
        return -1;
    }
    size_t first = 1;
    if (s.kind == SINK_WEBHOOK && parse_url(&s, w[first++], err, errlen) < 0)
        return -1;
    if (s.kind == SINK_AMQP && parse_amqp_url(&s, w[first++], err, errlen) < 0)
        return -1;
    snprintf(s.routing_key, sizeof s.routing_key, "postern.events");
    for (size_t i = first; i < n; i++)
        if (sink_option(&s, w[i], err, errlen) < 0) {
            sink_free(&s);
            return -1;
        }
    struct event_sink *v = realloc(sinks->v, (sinks->n + 1) * sizeof *v);
    if (!v) {
        sink_free(&s);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    sinks->v = v;
    sinks->v[sinks->n++] = s;
    return 0;
}

void event_sinks_free(struct event_sinks *s)
{
    for (size_t i = 0; i < s->n; i++)
        sink_free(&s->v[i]);
    free(s->v);
    s->v = NULL;
    s->n = 0;
}
