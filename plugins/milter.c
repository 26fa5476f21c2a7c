/* milter.c - calls external milters (Sendmail milter protocol, version 6)
 * such as OpenDKIM, rspamd or ClamAV, and applies what they answer.
 *
 *   milter.server = inet:8891@127.0.0.1 timeout=10 default=tempfail
 *   milter.server = unix:/run/clamav/clamav-milter.ctl default=accept
 *
 * Repeat milter.server for several milters; they are asked in that order.
 * timeout (seconds, default 10) bounds every connect, write and read;
 * default (tempfail | accept) is what happens when a milter is down, slow or
 * speaks garbage: tempfail the message (451 4.7.1) or go on without it.
 *
 * Each SMTP session gets one connection to each milter, opened when the
 * client connects (option negotiation, macros, connect), so a milter's
 * verdict on connect refuses the session and one on HELO answers HELO, as
 * under Postfix. Every message then sends mail, rcpt, data, header, eoh,
 * body and end of message as it streams in, honouring the steps and
 * replies the milter said it does not want; a message that does not reach
 * its end (RSET, a refusal) gets ABORT, and the session's end QUIT. A
 * connection that failed or that the milter closed is opened again at the
 * next MAIL, with connect and helo replayed (their verdicts then take
 * effect at MAIL). Every reply
 * (continue, accept, reject, tempfail, discard, custom reply code,
 * quarantine, skip, progress) and every modification (add / insert / change
 * / delete header, replace body, add / delete recipient, change sender) is
 * applied through the host table.
 */
#include "postern_plugin.h"
#include "milter_codec.h"
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_SERVERS 8

struct server {
    char spec[300];
    int timeout_ms;
    bool default_accept;
};

struct milter {
    struct server servers[MAX_SERVERS];
    size_t n;
};

/* One milter's connection, for the whole SMTP session. */
struct link {
    const struct server *srv;
    int fd;
    uint32_t proto;     /* the milter's SMFIP_* flags */
    bool accepted;      /* it accepted the session at connect or helo: nothing more to it */
    bool done;          /* this message: accepted, failed over to accept, or finished */
    bool skip_body;     /* it answered SKIP to a body chunk */
    bool in_message;    /* MAIL sent and the end of message not answered: ABORT when it ends */
};

/* The session's links (host->session_data); each message's data points
 * at them too (host->data), so that its end sends ABORT. */
struct links {
    struct link l[MAX_SERVERS];
    size_t n;
};

static const struct postern_host *host;

/* ---- configuration ---- */

static int parse_server(const char *value, struct server *s, char *err, size_t errlen)
{
    char copy[512], *save = NULL;
    snprintf(copy, sizeof copy, "%s", value);
    char *spec = strtok_r(copy, " \t", &save);
    if (!spec || (strncmp(spec, "inet:", 5) && strncmp(spec, "unix:", 5))) {
        snprintf(err, errlen, "server: expected inet:PORT@HOST, inet:HOST:PORT or unix:PATH, got '%s'", value);
        return -1;
    }
    snprintf(s->spec, sizeof s->spec, "%s", spec);
    s->timeout_ms = 10000;
    for (char *opt = strtok_r(NULL, " \t", &save); opt; opt = strtok_r(NULL, " \t", &save)) {
        int secs;
        char extra;
        if (sscanf(opt, "timeout=%d%c", &secs, &extra) == 1 && secs > 0 && secs <= 3600)
            s->timeout_ms = secs * 1000;
        else if (!strcmp(opt, "default=accept") || !strcmp(opt, "default=tempfail"))
            s->default_accept = !strcmp(opt, "default=accept");
        else {
            snprintf(err, errlen, "server %s: unknown setting '%s' (timeout=SECONDS, default=tempfail|accept)",
                     spec, opt);
            return -1;
        }
    }
    return 0;
}

static int init(const struct postern_host *h, const struct postern_option *opts, size_t n, void **state,
                char *err, size_t errlen)
{
    host = h;
    if (POSTERN_HOST_REQUIRE(h, session_data_set, err, errlen) < 0)
        return -1;
    struct milter *m = calloc(1, sizeof *m);
    if (!m)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(opts[i].key, "server") || m->n == MAX_SERVERS) {
            if (strcmp(opts[i].key, "server"))
                snprintf(err, errlen, "unknown option '%s' (known: server)", opts[i].key);
            else
                snprintf(err, errlen, "at most %d milter.server lines", MAX_SERVERS);
            free(m);
            return -1;
        }
        if (parse_server(opts[i].value, &m->servers[m->n], err, errlen) < 0) {
            free(m);
            return -1;
        }
        m->n++;
    }
    if (!m->n) {
        snprintf(err, errlen, "milter.server is required");
        free(m);
        return -1;
    }
    *state = m;
    return 0;
}

static void fini(void *state) { free(state); }

/* ---- socket I/O, every step bounded by the server's timeout ---- */

static int wait_fd(int fd, short events, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = events};
    int r;
    do
        r = poll(&p, 1, timeout_ms);
    while (r < 0 && errno == EINTR);
    return r == 1 && !(p.revents & POLLNVAL) ? 0 : -1;
}

static int open_socket(const struct server *s)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int family;
    memset(&ss, 0, sizeof ss);
    if (!strncmp(s->spec, "unix:", 5)) {
        struct sockaddr_un *un = (struct sockaddr_un *)&ss;
        un->sun_family = AF_UNIX;
        snprintf(un->sun_path, sizeof un->sun_path, "%s", s->spec + 5);
        len = sizeof *un;
        family = AF_UNIX;
    } else {
        char hostpart[256], port[16];
        const char *at = strchr(s->spec + 5, '@'), *colon = strrchr(s->spec + 5, ':');
        if (at)   /* inet:PORT@HOST */
            snprintf(port, sizeof port, "%.*s", (int)(at - s->spec - 5), s->spec + 5),
                snprintf(hostpart, sizeof hostpart, "%s", at + 1);
        else if (colon)   /* inet:HOST:PORT */
            snprintf(hostpart, sizeof hostpart, "%.*s", (int)(colon - s->spec - 5), s->spec + 5),
                snprintf(port, sizeof port, "%s", colon + 1);
        else
            return -1;
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV}, *ai;
        if (getaddrinfo(hostpart, port, &hints, &ai) != 0)
            return -1;
        memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
        len = ai->ai_addrlen;
        family = ai->ai_family;
        freeaddrinfo(ai);
    }
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&ss, len) < 0 &&
        (errno != EINPROGRESS || wait_fd(fd, POLLOUT, s->timeout_ms) < 0)) {
        close(fd);
        return -1;
    }
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
        close(fd);
        return -1;
    }
    return fd;
}

static int send_all(struct link *l, const unsigned char *p, size_t n)
{
    while (n) {
        if (wait_fd(l->fd, POLLOUT, l->srv->timeout_ms) < 0)
            return -1;
        ssize_t w = send(l->fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_exact(struct link *l, unsigned char *p, size_t n)
{
    while (n) {
        if (wait_fd(l->fd, POLLIN, l->srv->timeout_ms) < 0)
            return -1;
        ssize_t r = recv(l->fd, p, n, 0);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int send_packet(struct link *l, char cmd, const void *data, size_t len)
{
    unsigned char head[5];
    milter_put32(head, (uint32_t)len + 1);
    head[4] = (unsigned char)cmd;
    return send_all(l, head, 5) == 0 && (len == 0 || send_all(l, data, len) == 0) ? 0 : -1;
}

/* Reads one packet into a malloc'd buffer the caller frees (p->data). */
static int read_packet(struct link *l, struct milter_packet *p)
{
    unsigned char head[4];
    if (read_exact(l, head, 4) < 0)
        return -1;
    uint32_t len = milter_get32(head);
    if (len == 0 || len > MILTER_MAX_PACKET)
        return -1;
    unsigned char *buf = malloc(len + 1);
    if (!buf || read_exact(l, buf, len) < 0) {
        free(buf);
        return -1;
    }
    buf[len] = '\0';
    p->cmd = (char)buf[0];
    p->data = buf + 1;
    p->len = len - 1;
    return 0;
}

static void packet_free(struct milter_packet *p) { free((unsigned char *)p->data - 1); }

/* ---- verdicts ---- */

static postern_verdict failed(postern_txn *t, struct link *l, const char *what)
{
    host->log(t, POSTERN_LOG_WARN, "milter %s: %s: %s", l->srv->spec, what,
              l->srv->default_accept ? "going on without it (default=accept)" : "tempfailing (default=tempfail)");
    if (l->fd >= 0)
        close(l->fd);
    l->fd = -1;
    l->done = true;
    if (l->srv->default_accept)
        return POSTERN_CONTINUE;
    host->set_reply(t, "451 4.7.1 Service unavailable - try again later");
    return POSTERN_TEMPFAIL;
}

/* A custom reply must be a 4xx or 5xx SMTP reply. */
static postern_verdict reply_code(postern_txn *t, const struct milter_packet *p)
{
    const char *text = milter_string(p->data, p->len, 0);
    if (!text || (text[0] != '4' && text[0] != '5') || text[1] < '0' || text[1] > '9' || text[2] < '0' ||
        text[2] > '9')
        return POSTERN_ERROR;
    host->set_reply(t, text);
    return text[0] == '5' ? POSTERN_REJECT : POSTERN_TEMPFAIL;
}

/* Maps a final reply; POSTERN_ERROR for one that is not a reply. */
static postern_verdict final_reply(postern_txn *t, struct link *l, const struct milter_packet *p, bool eom)
{
    switch (p->cmd) {
    case SMFIR_CONTINUE:
        return POSTERN_CONTINUE;
    case SMFIR_ACCEPT:
        l->done = true;   /* no more from this milter for this message */
        return POSTERN_CONTINUE;
    case SMFIR_SKIP:
        l->skip_body = true;
        return POSTERN_CONTINUE;
    case SMFIR_REJECT:
        host->set_reply(t, eom ? "550 5.7.1 Message rejected by policy" : "550 5.7.1 Command rejected");
        return POSTERN_REJECT;
    case SMFIR_TEMPFAIL:
        host->set_reply(t, "451 4.7.1 Service unavailable - try again later");
        return POSTERN_TEMPFAIL;
    case SMFIR_DISCARD:
        return POSTERN_DISCARD;
    case SMFIR_REPLYCODE:
        return reply_code(t, p);
    default:
        return POSTERN_ERROR;
    }
}

/* Sends one step and, unless the milter said it will not reply, waits for
 * its answer (progress packets extend the wait). */
static postern_verdict step(postern_txn *t, struct link *l, char cmd, const void *data, size_t len, uint32_t no,
                            uint32_t noreply)
{
    if (l->done || (l->proto & no))
        return POSTERN_CONTINUE;
    if (send_packet(l, cmd, data, len) < 0)
        return failed(t, l, "cannot send");
    if (l->proto & noreply)
        return POSTERN_CONTINUE;
    for (;;) {
        struct milter_packet p;
        if (read_packet(l, &p) < 0)
            return failed(t, l, "no reply (timeout or connection lost)");
        if (p.cmd == SMFIR_PROGRESS) {
            packet_free(&p);
            continue;
        }
        postern_verdict v = final_reply(t, l, &p, false);
        packet_free(&p);
        return v == POSTERN_ERROR ? failed(t, l, "unexpected reply") : v;
    }
}

static postern_verdict each_link(postern_txn *t, struct links *ls, char cmd, const void *data, size_t len,
                                 uint32_t no, uint32_t noreply)
{
    for (size_t i = 0; i < ls->n; i++) {
        postern_verdict v = step(t, &ls->l[i], cmd, data, len, no, noreply);
        if (v != POSTERN_CONTINUE)
            return v;
    }
    return POSTERN_CONTINUE;
}

/* ---- the session: connect, helo, and its end ---- */

/* One command without data, not waited for (ABORT, QUIT). */
static void send_bare(const struct link *l, char cmd)
{
    const unsigned char packet[5] = {0, 0, 0, 1, (unsigned char)cmd};
    ssize_t w = send(l->fd, packet, sizeof packet, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)w;
}

/* A message ends (posternd's loop thread or a worker): ABORT to each milter
 * that has not seen it to its end (RSET, a refusal, or it accepted early). */
static void message_release(void *p)
{
    struct links *ls = p;
    for (size_t i = 0; i < ls->n; i++)
        if (ls->l[i].in_message && ls->l[i].fd >= 0)
            send_bare(&ls->l[i], SMFIC_ABORT);
    for (size_t i = 0; i < ls->n; i++)
        ls->l[i].in_message = false;
}

static void link_quit(struct link *l)
{
    if (l->fd >= 0) {
        send_bare(l, SMFIC_QUIT);
        close(l->fd);
    }
    l->fd = -1;
    l->accepted = l->in_message = false;
}

/* The session ends (after its last message's release): QUIT, then close. */
static void session_release(void *p)
{
    struct links *ls = p;
    for (size_t i = 0; i < ls->n; i++)
        link_quit(&ls->l[i]);
    free(ls);
}

static int negotiate(struct link *l)
{
    unsigned char o[12];
    milter_put32(o, MILTER_VERSION);
    milter_put32(o + 4, SMFIF_ALL);
    milter_put32(o + 8, SMFIP_ALL);
    struct milter_packet p;
    if (send_packet(l, SMFIC_OPTNEG, o, sizeof o) < 0 || read_packet(l, &p) < 0)
        return -1;
    int ok = p.cmd == SMFIC_OPTNEG && p.len >= 12 && milter_get32(p.data) >= 2;
    if (ok)
        l->proto = milter_get32(p.data + 8) & SMFIP_ALL;
    packet_free(&p);
    return ok ? 0 : -1;
}

/* Macros (name, value pairs) for the step cmd. */
static void send_macros(struct link *l, char cmd, const char *const *kv, size_t n)
{
    char buf[2048];
    buf[0] = cmd;
    size_t used = 1;
    for (size_t i = 0; i < n; i++)
        used = milter_arg(buf, used, sizeof buf, kv[i]);
    if (used <= sizeof buf)
        send_packet(l, SMFIC_MACRO, buf, used);
}

/* A session-wide step (connect, helo): an ACCEPT there is for the session. */
static postern_verdict session_step(postern_txn *t, struct link *l, char cmd, const void *data, size_t len,
                                    uint32_t no, uint32_t noreply)
{
    l->done = l->accepted;
    postern_verdict v = step(t, l, cmd, data, len, no, noreply);
    l->accepted = l->done && l->fd >= 0;
    return v;
}

static postern_verdict send_helo(postern_txn *t, struct link *l)
{
    const char *helo = host->helo_name(t);
    return session_step(t, l, SMFIC_HELO, helo, strlen(helo) + 1, SMFIP_NOHELO, SMFIP_NR_HELO);
}

/* Connect, negotiate, and send connect (and the HELO name, once there is
 * one: a link opened again at MAIL). */
static postern_verdict open_link(postern_txn *t, struct link *l)
{
    l->accepted = false;
    if ((l->fd = open_socket(l->srv)) < 0)
        return failed(t, l, "cannot connect");
    if (negotiate(l) < 0)
        return failed(t, l, "option negotiation failed");
    const char *ip = host->client_addr(t);
    const char *conn_macros[] = {"j", host->hostname(), "{daemon_name}", "posternd", "_", ip};
    send_macros(l, SMFIC_CONNECT, conn_macros, 6);
    /* connect: "[ip]\0", family, port, "ip\0" */
    char c[600];
    int n = snprintf(c, sizeof c, "[%s]", ip);
    c[n++] = '\0';
    c[n++] = strchr(ip, ':') ? '6' : '4';
    c[n++] = 0;
    c[n++] = 0;
    n += snprintf(c + n, sizeof c - (size_t)n, "%s", ip) + 1;
    postern_verdict v = session_step(t, l, SMFIC_CONNECT, c, (size_t)n, SMFIP_NOCONNECT, SMFIP_NR_CONN);
    if (v != POSTERN_CONTINUE || !host->helo_name(t)[0])
        return v;
    return send_helo(t, l);
}

/* The session's links, made at the first call of the session. */
static struct links *session_links(postern_txn *t, struct milter *m)
{
    struct links *ls = host->session_data_get(t, m);
    if (ls)
        return ls;
    if (!(ls = calloc(1, sizeof *ls)) || host->session_data_set(t, m, ls, session_release) < 0) {
        free(ls);
        return NULL;
    }
    for (size_t i = 0; i < m->n; i++)
        ls->l[ls->n++] = (struct link){.srv = &m->servers[i], .fd = -1};
    return ls;
}

static postern_verdict on_connect(postern_txn *t, void *state)
{
    struct links *ls = session_links(t, state);
    if (!ls)
        return POSTERN_ERROR;
    for (size_t i = 0; i < ls->n; i++) {
        link_quit(&ls->l[i]);     /* connect again (XCLIENT presents another client): a new milter session */
        postern_verdict v = open_link(t, &ls->l[i]);
        if (v != POSTERN_CONTINUE && ls->l[i].fd < 0)
            continue;      /* the milter failed, not refused: MAIL tries again, and its default applies there */
        if (v != POSTERN_CONTINUE)
            return v;
    }
    return POSTERN_CONTINUE;
}

static postern_verdict on_helo(postern_txn *t, const char *helo, void *state)
{
    (void)helo;
    struct links *ls = session_links(t, state);
    if (!ls)
        return POSTERN_ERROR;
    for (size_t i = 0; i < ls->n; i++) {
        postern_verdict v = ls->l[i].fd >= 0 ? send_helo(t, &ls->l[i]) : POSTERN_CONTINUE;
        if (v != POSTERN_CONTINUE)
            return v;
    }
    return POSTERN_CONTINUE;
}

/* Whether the milter closed the connection (or sent what it should not)
 * while it was idle between messages. */
static bool link_gone(const struct link *l)
{
    struct pollfd p = {.fd = l->fd, .events = POLLIN};
    return poll(&p, 1, 0) != 0;
}

static postern_verdict on_mail(postern_txn *t, const char *sender, void *state)
{
    struct milter *m = state;
    struct links *ls = session_links(t, m);
    if (!ls || host->data_set(t, m, ls, message_release) < 0)
        return POSTERN_ERROR;
    char arg[600];
    int n = snprintf(arg, sizeof arg, "<%s>", sender);
    for (size_t i = 0; i < ls->n; i++) {
        struct link *l = &ls->l[i];
        postern_verdict v = POSTERN_CONTINUE;
        if (l->fd >= 0 && link_gone(l)) {
            close(l->fd);
            l->fd = -1;
        }
        if (l->fd < 0)
            v = open_link(t, l);      /* first, or again: connect and helo replayed */
        l->done = l->accepted || l->fd < 0;
        l->skip_body = false;
        if (v == POSTERN_CONTINUE && !l->done) {
            const char *mail_macros[] = {"{mail_addr}", sender};
            send_macros(l, SMFIC_MAIL, mail_macros, 2);
            l->in_message = true;
            v = step(t, l, SMFIC_MAIL, arg, (size_t)n + 1, SMFIP_NOMAIL, SMFIP_NR_MAIL);
        }
        if (v != POSTERN_CONTINUE)
            return v;
    }
    return POSTERN_CONTINUE;
}

static postern_verdict on_rcpt(postern_txn *t, const char *rcpt, void *state)
{
    struct links *ls = host->data_get(t, state);
    if (!ls)
        return POSTERN_CONTINUE;
    char arg[600];
    int n = snprintf(arg, sizeof arg, "<%s>", rcpt);
    return each_link(t, ls, SMFIC_RCPT, arg, (size_t)n + 1, SMFIP_NORCPT, SMFIP_NR_RCPT);
}

/* A header value as milters expect it: LF line ends, no leading space
 * (unless the milter asked for it). */
static size_t header_packet(char *buf, size_t size, const char *name, const char *value, bool leadspc)
{
    size_t used = milter_arg(buf, 0, size, name);
    if (!leadspc && *value == ' ')
        value++;
    size_t n = 0;
    for (const char *p = value; *p && used + n + 2 < size; p++)
        if (*p != '\r')
            buf[used + n++] = *p;
    if (used + n + 1 > size)
        return size + 1;
    buf[used + n] = '\0';
    return used + n + 1;
}

static postern_verdict on_data(postern_txn *t, void *state)
{
    struct links *ls = host->data_get(t, state);
    if (!ls)
        return POSTERN_CONTINUE;
    postern_verdict v = each_link(t, ls, SMFIC_DATA, NULL, 0, SMFIP_NODATA, SMFIP_NR_DATA);
    const char *qid = host->queue_id(t);
    const char *kv[] = {"i", qid};
    for (size_t i = 0; i < ls->n; i++)
        if (!ls->l[i].done)
            send_macros(&ls->l[i], SMFIC_HEADER, kv, 2);
    char *buf = malloc(65536);
    const char *name, *value;
    for (size_t h = 0; buf && v == POSTERN_CONTINUE && host->header_at(t, h, &name, &value) == 0; h++)
        for (size_t i = 0; v == POSTERN_CONTINUE && i < ls->n; i++) {
            size_t n = header_packet(buf, 65536, name, value, ls->l[i].proto & SMFIP_HDR_LEADSPC);
            if (n <= 65536)
                v = step(t, &ls->l[i], SMFIC_HEADER, buf, n, SMFIP_NOHDRS, SMFIP_NR_HDR);
        }
    free(buf);
    if (v == POSTERN_CONTINUE)
        v = each_link(t, ls, SMFIC_EOH, NULL, 0, SMFIP_NOEOH, SMFIP_NR_EOH);
    return v;
}

static postern_verdict on_body(postern_txn *t, const char *chunk, size_t len, void *state)
{
    struct links *ls = host->data_get(t, state);
    for (size_t i = 0; ls && i < ls->n; i++)
        for (size_t off = 0; off < len && !ls->l[i].skip_body;) {
            size_t n = len - off < MILTER_CHUNK ? len - off : MILTER_CHUNK;
            postern_verdict v = step(t, &ls->l[i], SMFIC_BODY, chunk + off, n, SMFIP_NOBODY, SMFIP_NR_BODY);
            if (v != POSTERN_CONTINUE)
                return v;
            off += n;
        }
    return POSTERN_CONTINUE;
}

/* ---- end of message: modifications, then the final reply ---- */

/* A header value from a milter in our raw form: a leading space (unless
 * the milter negotiated HDR_LEADSPC and sends its own), CRLF folds, and
 * every continuation line starting with white space (no injected header
 * lines). */
static char *raw_value(const char *v, bool leadspc)
{
    size_t n = strlen(v);
    char *out = malloc(3 * n + 2);
    if (!out)
        return NULL;
    size_t o = 0;
    if (!leadspc)
        out[o++] = ' ';
    for (const char *p = v; *p; p++) {
        if (*p == '\r')
            continue;
        if (*p == '\n') {
            out[o++] = '\r';
            out[o++] = '\n';
            if (p[1] != ' ' && p[1] != '\t')
                out[o++] = '\t';
            continue;
        }
        out[o++] = *p;
    }
    out[o] = '\0';
    return out;
}

static int header_mod(postern_txn *t, const struct milter_packet *p, bool leadspc)
{
    size_t skip = p->cmd == SMFIR_ADDHEADER ? 0 : 4;
    if (p->len < skip)
        return -1;
    uint32_t index = skip ? milter_get32(p->data) : 0;
    const char *name = milter_string(p->data + skip, p->len - skip, 0);
    const char *value = milter_string(p->data + skip, p->len - skip, 1);
    if (!name || !value || !name[0] || strpbrk(name, ": \t\r\n"))
        return -1;
    if (p->cmd == SMFIR_CHGHEADER && !value[0])
        return host->header_delete(t, name, index ? index - 1 : 0);
    char *raw = raw_value(value, leadspc);
    int rc = -1;
    if (raw && p->cmd == SMFIR_ADDHEADER)
        rc = host->header_add(t, name, raw);
    else if (raw && p->cmd == SMFIR_INSHEADER)
        rc = host->header_insert(t, index, name, raw);
    else if (raw && host->header_get(t, name, index ? index - 1 : 0))
        rc = host->header_change(t, name, index ? index - 1 : 0, raw);
    else if (raw)   /* changing a header that is not there adds it (as Sendmail does) */
        rc = host->header_add(t, name, raw);
    free(raw);
    return rc;
}

/* An address argument: "<a@b>" or "a@b", without the brackets. */
static int address_arg(const struct milter_packet *p, char *out, size_t size)
{
    const char *a = milter_string(p->data, p->len, 0);
    if (!a)
        return -1;
    size_t n = strlen(a);
    if (n >= 2 && a[0] == '<' && a[n - 1] == '>')
        a++, n -= 2;
    if (n >= size)
        return -1;
    memcpy(out, a, n);
    out[n] = '\0';
    return 0;
}

/* Applies one modification; -1 for a malformed or refused one. */
static int apply(postern_txn *t, const struct link *l, const struct milter_packet *p, bool *body_started,
                 char *quarantine, size_t qsize)
{
    char addr[512];
    switch (p->cmd) {
    case SMFIR_ADDHEADER:
    case SMFIR_INSHEADER:
    case SMFIR_CHGHEADER:
        return header_mod(t, p, l->proto & SMFIP_HDR_LEADSPC);
    case SMFIR_REPLBODY:
        if (!*body_started && host->body_replace(t, "", 0) < 0)
            return -1;
        *body_started = true;
        return host->body_replace(t, (const char *)p->data, p->len);
    case SMFIR_ADDRCPT:
    case SMFIR_ADDRCPT_PAR:
        return address_arg(p, addr, sizeof addr) == 0 ? host->rcpt_add(t, addr) : -1;
    case SMFIR_DELRCPT:
        return address_arg(p, addr, sizeof addr) == 0 ? host->rcpt_delete(t, addr) : -1;
    case SMFIR_CHGFROM:
        return address_arg(p, addr, sizeof addr) == 0 ? host->sender_change(t, addr) : -1;
    case SMFIR_QUARANTINE: {
        const char *why = milter_string(p->data, p->len, 0);
        snprintf(quarantine, qsize, "%s", why && why[0] ? why : "quarantined by milter");
        return 0;
    }
    default:
        return -1;
    }
}

static postern_verdict end_of_message(postern_txn *t, struct link *l)
{
    const char *kv[] = {"i", host->queue_id(t)};
    send_macros(l, SMFIC_BODYEOB, kv, 2);
    if (send_packet(l, SMFIC_BODYEOB, NULL, 0) < 0)
        return failed(t, l, "cannot send");
    bool body_started = false;
    char quarantine[400] = "";
    for (;;) {
        struct milter_packet p;
        if (read_packet(l, &p) < 0)
            return failed(t, l, "no reply at end of message (timeout or connection lost)");
        postern_verdict v = final_reply(t, l, &p, true);
        if (v == POSTERN_ERROR && p.cmd != SMFIR_PROGRESS && apply(t, l, &p, &body_started, quarantine,
                                                                   sizeof quarantine) < 0) {
            host->log(t, POSTERN_LOG_WARN, "milter %s: modification '%c' could not be applied", l->srv->spec,
                      p.cmd);
            packet_free(&p);
            return failed(t, l, "bad modification");
        }
        bool final = v != POSTERN_ERROR;
        packet_free(&p);
        if (!final)
            continue;
        l->done = true;
        l->in_message = false;      /* seen to its end: no ABORT */
        if (quarantine[0] && (v == POSTERN_CONTINUE)) {
            host->set_reply(t, quarantine);
            return POSTERN_QUARANTINE;
        }
        return v;
    }
}

static postern_verdict on_eom(postern_txn *t, void *state)
{
    struct links *ls = host->data_get(t, state);
    for (size_t i = 0; ls && i < ls->n; i++) {
        if (ls->l[i].done)
            continue;
        postern_verdict v = end_of_message(t, &ls->l[i]);
        if (v != POSTERN_CONTINUE)
            return v;
    }
    return POSTERN_CONTINUE;
}

/* The options it takes (checked by posternd before init, documented in postern-plugins(5)). */
static const struct postern_option_spec options[] = {
    {"server", POSTERN_OPT_TEXT, NULL, "", 1, "a milter: `inet:HOST:PORT` or `unix:/PATH`, with `;timeout=` and `;on_error=` attributes"},
    {NULL, 0, NULL, NULL, 0, NULL},
};

static const struct postern_plugin plugin = {
    .abi_version = POSTERN_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct postern_plugin),
    .name = "milter",
    .init = init,
    .fini = fini,
    .on_connect = on_connect,
    .on_helo = on_helo,
    .on_mail = on_mail,
    .on_rcpt = on_rcpt,
    .on_data = on_data,
    .on_body = on_body,
    .on_eom = on_eom,
    .options = options,
};

const struct postern_plugin *postern_plugin_entry(void) { return &plugin; }
