/* control.c - one request line per connection ("reload", "reopen-logs", or a queue
 * command: queue_cmd.h), answered with "OK" or "ERR" on the first line and
 * the text after it, then the connection is closed. The socket is mode
 * 0600: only the daemon's user and root may talk to it. At most MAX_CONNS
 * are held, each for at most CONN_TIMEOUT_MS to send its request and
 * CONN_TIMEOUT_MS to read its answer; a command on many messages works in
 * slices on the loop thread in between, so a client that never reads only
 * costs its own socket. */
#include "control.h"
#include "buf.h"
#include "event.h"
#include "log.h"
#include "lists.h"
#include "lists_shared.h"
#include "digest.h"
#include "queue.h"
#include "queue_cmd.h"
#include "runtime.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_REQUEST 8192     /* a command names up to a few hundred queue IDs */
#define MAX_CONNS 32            /* held at once; more are closed at accept */
#define CONN_TIMEOUT_MS 5000    /* to send the request and read the answer */

struct ctl_conn {
    struct ev_watch w;
    struct buf in, out;
    struct queue_admin_job *job;   /* a queue command still working through its messages */
    struct lists_link_wait *link;  /* a digest link's nonce being claimed in Redis */
    bool started;                  /* ctl_dispatch returned: an answer is sent by ctl_answer */
    bool answered;
    uint64_t deadline_ms;
    struct ctl_conn *next;
};

static struct ctl_conn *conns;
static int nconns;

static struct ev_watch listen_watch;
static char sock_path[108];

static void ctl_free(void *p)
{
    struct ctl_conn *c = p;
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
}

static void ctl_flush(struct ctl_conn *c);

static void ctl_close(struct ctl_conn *c)
{
    queue_admin_detach(c->job);
    lists_shared_link_forget(c->link);
    c->job = NULL;
    for (struct ctl_conn **pp = &conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            nconns--;
            break;
        }
    int fd = c->w.fd;
    ev_del(&c->w);
    close(fd);
    ev_defer_free(c, ctl_free);
}

/* `postern reload`: the same as SIGHUP, with the outcome for the caller. */
static int ctl_reload(struct buf *body)
{
    char err[1024];
    if (runtime_reload(err, sizeof err) < 0) {
        log_error("reload (postern reload) refused, the running configuration stays: %s", err);
        buf_printf(body, "reload refused, the running configuration stays: %s\n", err);
        return -1;
    }
    buf_printf(body, "reloaded: configuration generation %u in use\n", runtime_current()->number);
    return 0;
}

/* The answer: OK or ERR, then its text, which is lines of text: other
 * control bytes (a plugin's hold reason, say) show as '?'. */
static void ctl_answer(void *ctx, int rc, struct buf *body)
{
    struct ctl_conn *c = ctx;
    c->job = NULL;
    buf_puts(&c->out, rc == 0 ? "OK\n" : "ERR\n");
    buf_append(&c->out, buf_head(body), body->len);
    mask_control_bytes(buf_head(&c->out), c->out.len, true);
    c->answered = true;
    c->deadline_ms = ev_now_ms() + CONN_TIMEOUT_MS;   /* to read the answer */
    if (c->started)
        ctl_flush(c);     /* else the caller flushes */
}

static void link_answer(void *ctx, int rc)
{
    struct ctl_conn *c = ctx;
    struct buf body;
    buf_init(&body);
    c->link = NULL;
    buf_puts(&body, rc == 1 ? "first use\n" : rc == 0 ? "used before\n" : "cannot record it\n");
    ctl_answer(c, rc == 1 ? 0 : -1, &body);
    buf_free(&body);
}

/* Run one request: reload, or a queue command (queue_cmd.h). */
static void ctl_dispatch(struct ctl_conn *c, const char *line)
{
    struct buf body;
    buf_init(&body);
    if (!strcmp(line, "reload")) {
        int rc = ctl_reload(&body);
        ctl_answer(c, rc, &body);
        buf_free(&body);
        return;
    }
    if (!strncmp(line, "lists ", 6) || !strcmp(line, "lists")) {     /* personal allow/block lists */
        char words[MAX_REQUEST], *argv[6];
        int argc = 0;
        snprintf(words, sizeof words, "%s", line + 5);
        for (char *w = strtok(words, " "); w && argc < 6; w = strtok(NULL, " "))
            argv[argc++] = w;
        int rc = lists_request(argc, argv, &body);
        ctl_answer(c, rc == 0 ? 0 : -1, &body);
        buf_free(&body);
        return;
    }
    if (!strcmp(line, "digest")) {            /* the spam quarantine digests, now */
        int rc = digest_run(&body);
        ctl_answer(c, rc, &body);
        buf_free(&body);
        return;
    }
    if (!strncmp(line, "link-use ", 9)) {     /* a digest link's nonce, once (in the fleet, with Redis) */
        char nonce[64];
        long long expires = 0;
        if (sscanf(line + 9, "%63s %lld", nonce, &expires) != 2)
            link_answer(c, -1);
        else if (lists_shared()) {
            c->deadline_ms = UINT64_MAX;    /* redis_timeout bounds the wait */
            c->link = lists_shared_use_link(nonce, (long)expires, link_answer, c);
        } else
            link_answer(c, lists_use_link(nonce, (long)expires));
        buf_free(&body);
        return;
    }
    if (!strcmp(line, "reopen-logs")) {      /* as SIGUSR1, for logrotate without a process name */
        log_reopen();
        log_info("log reopened (postern reopen-logs)");
        buf_puts(&body, "log reopened\n");
        ctl_answer(c, 0, &body);
        buf_free(&body);
        return;
    }
    struct queue_cmd *cmd = malloc(sizeof *cmd);
    char err[300];
    if (!cmd || queue_cmd_parse_line(line, cmd, err, sizeof err) < 0) {
        buf_printf(&body, "%s\n", cmd ? err : "out of memory");
        ctl_answer(c, -1, &body);
    } else {
        c->deadline_ms = UINT64_MAX;        /* a large set takes its slices; a hang-up ends the wait */
        c->job = queue_admin_run(cmd, ctl_answer, c);
    }
    free(cmd);
    buf_free(&body);
}

/* Read the request line; run it once it is complete. */
static void ctl_read(struct ctl_conn *c)
{
    char tmp[MAX_REQUEST];
    ssize_t r = recv(c->w.fd, tmp, sizeof tmp, 0);
    if (r <= 0 && !(r < 0 && errno == EAGAIN)) {
        ctl_close(c);       /* gone (a running job finishes without answering) */
        return;
    }
    if (r <= 0 || c->job)
        return;
    buf_append(&c->in, tmp, (size_t)r);
    char *nl = memchr(buf_head(&c->in), '\n', c->in.len);
    if (!nl && c->in.len < MAX_REQUEST)
        return;
    size_t len = nl ? (size_t)(nl - buf_head(&c->in)) : MAX_REQUEST;
    if (len >= MAX_REQUEST) {          /* never cut a request: refuse it whole */
        struct buf body;
        buf_init(&body);
        buf_puts(&body, "request too long\n");
        ctl_answer(c, -1, &body);
        buf_free(&body);
    } else {
        char line[MAX_REQUEST];
        memcpy(line, buf_head(&c->in), len);
        line[len] = '\0';
        log_info("control: %.300s%s", line, len > 300 ? "..." : "");
        c->started = false;
        ctl_dispatch(c, line);
        c->started = true;
        if (c->answered)
            ctl_flush(c);
    }
}

static void ctl_on_event(void *ctx, uint32_t events)
{
    struct ctl_conn *c = ctx;
    if (!c->answered && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        ctl_read(c);
    else if (c->answered)
        ctl_flush(c);
}

/* Send what is left of the answer; close when it is all out. */
static void ctl_flush(struct ctl_conn *c)
{
    while (c->out.len) {
        ssize_t w = send(c->w.fd, buf_head(&c->out), c->out.len, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN) {
                ev_mod(&c->w, EPOLLOUT);
                return;
            }
            break;
        }
        buf_consume(&c->out, (size_t)w);
    }
    ctl_close(c);
}

static void ctl_on_accept(void *ctx, uint32_t events)
{
    (void)ctx;
    (void)events;
    for (;;) {
        int fd = accept4(listen_watch.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct ctl_conn *c = nconns < MAX_CONNS ? calloc(1, sizeof *c) : NULL;
        if (!c || ev_add(&c->w, fd, EPOLLIN, ctl_on_event, c) < 0) {
            free(c);
            close(fd);
            continue;
        }
        c->deadline_ms = ev_now_ms() + CONN_TIMEOUT_MS;
        c->next = conns;
        conns = c;
        nconns++;
    }
}

void control_tick(void)
{
    uint64_t now = ev_now_ms();
    for (struct ctl_conn *c = conns, *next; c; c = next) {
        next = c->next;
        if (now >= c->deadline_ms)
            ctl_close(c);
    }
}

int control_start(const char *path)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t len = path ? strlen(path) : 0;
    if (len == 0 || len >= sizeof sun.sun_path) {
        log_error("control_socket path empty or too long: %s", path ? path : "");
        return -1;
    }
    memcpy(sun.sun_path, path, len + 1);
    memcpy(sock_path, path, len + 1);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    mode_t old = umask(0177);
    int rc = fd < 0 ? -1 : bind(fd, (struct sockaddr *)&sun, sizeof sun);
    umask(old);
    if (rc < 0 || listen(fd, 64) < 0 || ev_add(&listen_watch, fd, EPOLLIN, ctl_on_accept, NULL) < 0) {
        log_error("control socket %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return 0;
}

void control_stop(void)
{
    if (listen_watch.fd >= 0 && sock_path[0]) {
        int fd = listen_watch.fd;
        ev_del(&listen_watch);
        close(fd);
        unlink(sock_path);
    }
}
