/* archive_witness.c - postern-witness: signs checkpoints of the archive's
 * hash chain with a key the daemon's user cannot read, in a log it cannot
 * write (see plugins/archive_witness.h for the protocol and formats).
 *
 *   postern-witness -k KEY -l LOG -s SOCKET -u USER [-g]
 *
 * KEY is an Ed25519 private key (PEM; -g creates it and KEY.pub if
 * missing). Only USER (the daemon's user) and root may connect. KEY, LOG
 * and the directories of LOG and SOCKET must not be writable by USER, or
 * it could replace them: the witness refuses to start if they are. One
 * process, one poll loop, a handful of clients, every line bounded. */
#include "archive_witness.h"
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS 8

struct client {
    int fd;
    char buf[WITNESS_LINE_MAX];
    size_t len;
    bool linked;                 /* has links not committed yet */
    unsigned long base_seq;      /* the committed link its links continue */
    unsigned long seq;           /* its last link */
    char hash[ARCHIVE_HASH_HEX];
};

static EVP_PKEY *key;
static int log_fd = -1;
static unsigned long committed_seq;
static char committed_hash[ARCHIVE_HASH_HEX];
static uid_t daemon_uid;
static volatile sig_atomic_t stop_requested;

static void on_stop(int sig) { (void)sig; stop_requested = 1; }

static void die(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "postern-witness: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    exit(1);
}

/* Not writable by the daemon's user: not its own, no group/other write. */
static void require_safe(const char *path, bool must_exist)
{
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (!must_exist && errno == ENOENT)
            return;
        die("%s: %s", path, strerror(errno));
    }
    if (st.st_uid == daemon_uid || (st.st_mode & (S_IWGRP | S_IWOTH)) || S_ISLNK(st.st_mode))
        die("%s: %s (it must not be writable by the daemon's user, nor a symlink)", path,
            st.st_uid == daemon_uid ? "owned by the daemon's user" : "group or world writable");
}

static void require_safe_dir_of(const char *path)
{
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", path);
    require_safe(dirname(copy), true);
}

static void load_or_make_key(const char *path, bool generate)
{
    FILE *f = fopen(path, "r");
    if (!f && errno == ENOENT && generate) {
        key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        FILE *out = fd >= 0 ? fdopen(fd, "w") : NULL;
        if (!key || !out || !PEM_write_PrivateKey(out, key, NULL, NULL, 0, NULL, NULL) || fclose(out) != 0)
            die("cannot create %s: %s", path, strerror(errno));
        char pub[4200];
        snprintf(pub, sizeof pub, "%s.pub", path);
        out = fopen(pub, "w");
        if (!out || !PEM_write_PUBKEY(out, key) || fclose(out) != 0)
            die("cannot write %s: %s", pub, strerror(errno));
        chmod(pub, 0644);
        return;
    }
    if (!f)
        die("cannot read %s: %s (use -g to create a key)", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) < 0 || (st.st_mode & 077))
        die("%s: %s", path, "the private key must not be readable by group or others (chmod 600)");
    key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!key || EVP_PKEY_get_id(key) != EVP_PKEY_ED25519)
        die("%s: %s", path, "not an Ed25519 private key in PEM");
}

/* The log's last checkpoint becomes the committed state; every line's
 * signature is checked, so a damaged log stops start-up. */
static void load_log(const char *path)
{
    log_fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (log_fd < 0)
        die("cannot open %s: %s", path, strerror(errno));
    memset(committed_hash, '0', 64);
    committed_hash[64] = '\0';
    FILE *f = fdopen(dup(log_fd), "r");
    struct witness_checkpoint c = {0};
    while (f && witness_next(f, key, &c)) {
        if (!c.good || c.seq < committed_seq) {
            char where[64];
            snprintf(where, sizeof where, "line %lu", c.line);
            die("%s: %s is not a checkpoint signed by this key, in order", path, where);
        }
        committed_seq = c.seq;
        memcpy(committed_hash, c.hash, sizeof committed_hash);
    }
    if (f)
        fclose(f);
}

static void note(const char *text)
{
    char line[WITNESS_LINE_MAX + 32];
    int n = snprintf(line, sizeof line, "# %lld %s\n", (long long)time(NULL), text);
    if (write(log_fd, line, (size_t)n) < 0 || fsync(log_fd) < 0)
        fprintf(stderr, "postern-witness: cannot write the log: %s\n", strerror(errno));
    fprintf(stderr, "postern-witness: %s\n", text);
}

static int reply(struct client *c, const char *text)
{
    size_t n = strlen(text);
    return write(c->fd, text, n) == (ssize_t)n ? 0 : -1;
}

static int reply_state(struct client *c)
{
    char out[128];
    snprintf(out, sizeof out, "OK %lu %s\n", committed_seq, committed_hash);
    return reply(c, out);
}

/* LINK SEQ RELPATH FILEHASH HASH: it must continue the client's last link
 * (or the committed one). */
static int on_link(struct client *c, char *args)
{
    unsigned long seq;
    char rel[300], fh[80], h[80], expect[ARCHIVE_HASH_HEX], why[600];
    if (sscanf(args, "%lu %299s %79s %79s", &seq, rel, fh, h) != 4 || !witness_is_relpath(rel) ||
        !witness_is_hash(fh) || !witness_is_hash(h))
        return reply(c, "ERR malformed LINK\n"), -1;
    if (!c->linked) {
        c->base_seq = c->seq = committed_seq;
        memcpy(c->hash, committed_hash, sizeof c->hash);
    }
    if (seq != c->seq + 1 || archive_link(c->hash, rel, fh, expect) < 0 || strcmp(expect, h)) {
        snprintf(why, sizeof why, "refused link %lu (%s): it does not continue witnessed link %lu %s", seq, rel,
                 c->seq, c->hash);
        note(why);
        return reply(c, "ERR link does not continue the witnessed chain\n"), -1;
    }
    c->linked = true;
    c->seq = seq;
    memcpy(c->hash, h, sizeof c->hash);
    return 0;
}

static int on_commit(struct client *c)
{
    if (!c->linked || c->seq == committed_seq)
        return reply_state(c);
    if (c->base_seq != committed_seq)      /* another client committed meanwhile */
        return reply(c, "ERR another client moved the chain; start again with HELLO\n"), -1;
    long long when = (long long)time(NULL);
    char msg[256], sig_hex[WITNESS_SIG_HEX], line[400];
    unsigned char sig[64];
    size_t siglen = sizeof sig;
    int n = witness_message(msg, sizeof msg, c->seq, c->hash, when);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestSignInit(ctx, NULL, NULL, NULL, key) == 1 &&
             EVP_DigestSign(ctx, sig, &siglen, (const unsigned char *)msg, (size_t)n) == 1 && siglen == 64;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return reply(c, "ERR cannot sign\n"), -1;
    archive_hex(sig, 64, sig_hex);
    n = snprintf(line, sizeof line, "%lu %s %lld %s\n", c->seq, c->hash, when, sig_hex);
    if (write(log_fd, line, (size_t)n) != n || fsync(log_fd) < 0)
        return reply(c, "ERR cannot write the witness log\n"), -1;
    committed_seq = c->seq;
    memcpy(committed_hash, c->hash, sizeof committed_hash);
    c->linked = false;
    return reply_state(c);
}

/* One request line; -1 closes the client. */
static int on_line(struct client *c, char *line)
{
    if (!strcmp(line, "HELLO")) {
        c->linked = false;
        return reply_state(c);
    }
    if (!strncmp(line, "LINK ", 5))
        return on_link(c, line + 5);
    if (!strcmp(line, "COMMIT"))
        return on_commit(c);
    return reply(c, "ERR unknown command\n"), -1;
}

static int on_readable(struct client *c)
{
    ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (r <= 0)
        return -1;
    c->len += (size_t)r;
    char *nl;
    while ((nl = memchr(c->buf, '\n', c->len))) {
        *nl = '\0';
        if (nl > c->buf && nl[-1] == '\r')
            nl[-1] = '\0';
        if (on_line(c, c->buf) < 0)
            return -1;
        size_t used = (size_t)(nl - c->buf) + 1;
        memmove(c->buf, nl + 1, c->len - used);
        c->len -= used;
    }
    if (c->len == sizeof c->buf)
        return reply(c, "ERR line too long\n"), -1;
    return 0;
}

static int listen_on(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        die("%s: %s", path, "socket path too long");
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || chmod(path, 0666) < 0 || listen(fd, 8) < 0)
        die("cannot listen on %s: %s", path, strerror(errno));
    return fd;   /* who may talk is decided by SO_PEERCRED */
}

static void accept_client(int lfd, struct client *clients)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);   /* a client that does not read is dropped */
    if (fd < 0)
        return;
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || (cred.uid != daemon_uid && cred.uid != 0)) {
        const char *no = "ERR not the daemon's user\n";
        (void)!write(fd, no, strlen(no));
        close(fd);
        return;
    }
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (clients[i].fd < 0) {
            clients[i] = (struct client){.fd = fd};
            return;
        }
    close(fd);
}

/* On stdout for --help/-h (exit 0), else on stderr (exit 2). */
static void usage_to(int status)
{
    fprintf(status ? stderr : stdout, "usage: postern-witness -k KEY -l LOG -s SOCKET -u USER [-g]\n"
                                      "  -g  create KEY and KEY.pub if they are missing\n");
    exit(status);
}

static void usage(void) { usage_to(2); }

int main(int argc, char **argv)
{
    const char *keypath = NULL, *logpath = NULL, *sockpath = NULL, *user = NULL;
    bool generate = false;
    if (argc == 2 && !strcmp(argv[1], "--help"))
        usage_to(0);
    int opt;
    while ((opt = getopt(argc, argv, "k:l:s:u:gh")) != -1) {
        switch (opt) {
        case 'k': keypath = optarg; break;
        case 'l': logpath = optarg; break;
        case 's': sockpath = optarg; break;
        case 'u': user = optarg; break;
        case 'g': generate = true; break;
        case 'h': usage_to(0); break;
        default: usage();
        }
    }
    if (!keypath || !logpath || !sockpath || !user || optind != argc)
        usage();
    struct passwd *pw = getpwnam(user);
    if (!pw)
        die("no user %s%s", user, "");
    daemon_uid = pw->pw_uid;
    if (getuid() == daemon_uid)
        die("%s%s: the witness must not run as the daemon's user", user, "");
    require_safe_dir_of(keypath);
    require_safe(keypath, false);
    require_safe_dir_of(logpath);
    require_safe(logpath, false);
    require_safe_dir_of(sockpath);
    load_or_make_key(keypath, generate);
    load_log(logpath);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_stop};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int lfd = listen_on(sockpath);
    fprintf(stderr, "postern-witness: ready on %s for user %s; witnessed up to link %lu\n", sockpath, user,
            committed_seq);
    struct client clients[MAX_CLIENTS];
    for (int i = 0; i < MAX_CLIENTS; i++)
        clients[i].fd = -1;
    while (!stop_requested) {
        struct pollfd p[MAX_CLIENTS + 1] = {{.fd = lfd, .events = POLLIN}};
        for (int i = 0; i < MAX_CLIENTS; i++)
            p[i + 1] = (struct pollfd){.fd = clients[i].fd, .events = POLLIN};
        if (poll(p, MAX_CLIENTS + 1, 1000) < 0)
            continue;
        if (p[0].revents & POLLIN)
            accept_client(lfd, clients);
        for (int i = 0; i < MAX_CLIENTS; i++)
            if (clients[i].fd >= 0 && (p[i + 1].revents & (POLLIN | POLLHUP | POLLERR)) &&
                on_readable(&clients[i]) < 0) {
                close(clients[i].fd);
                clients[i].fd = -1;
            }
    }
    unlink(sockpath);
    EVP_PKEY_free(key);
    return 0;
}
