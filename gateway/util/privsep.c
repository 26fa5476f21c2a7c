/* privsep.c - the privileged parent and the daemon's side of it (see
 * privsep.h). The parent is small on purpose: a poll loop over one
 * socketpair and a signalfd, a scan of the configuration file for the paths
 * it names, and a walk up each requested path checking who may write it. */
#include "privsep.h"
#include "log.h"
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_NAMING_FILES 256         /* handed-over files whose paths count as named */
#define MAX_SCAN_BYTES (1 << 20)     /* of one such file */

struct reply {
    int32_t err;                     /* 0: the descriptor is attached */
    char why[240];
};

static int channel = -1;             /* the daemon's end */
static pid_t parent_pid;
static pthread_mutex_t channel_lock = PTHREAD_MUTEX_INITIALIZER;

bool privsep_active(void) { return channel >= 0; }

void privsep_bind_to_parent(void)
{
    if (channel < 0)
        return;
    prctl(PR_SET_PDEATHSIG, SIGKILL);     /* kill -9 of the parent ends the daemon too */
    if (getppid() != parent_pid)
        _exit(1);                         /* it went before we could ask */
}

/* ---- who may write a path --------------------------------------------- */

static bool in_group(gid_t gid, uid_t uid, gid_t primary)
{
    if (gid == primary)
        return true;
    struct passwd *pw = getpwuid(uid);
    struct group *gr = getgrgid(gid);
    for (char **m = gr && pw ? gr->gr_mem : NULL; m && *m; m++)
        if (!strcmp(*m, pw->pw_name))
            return true;
    return false;
}

/* Can uid/gid change what st is (write it, or replace entries in it)? */
static bool writable_by(const struct stat *st, uid_t uid, gid_t gid)
{
    if (st->st_uid == uid)
        return true;
    if ((st->st_mode & S_IWGRP) && in_group(st->st_gid, uid, gid))
        return true;
    /* a sticky directory (/tmp) lets others add, not replace, entries */
    return (st->st_mode & S_IWOTH) && !(S_ISDIR(st->st_mode) && (st->st_mode & S_ISVTX));
}

/* Every directory above path, and path itself, beyond uid/gid's reach. */
static int chain_safe(const char *path, uid_t uid, gid_t gid, char *why, size_t whylen)
{
    char p[PATH_MAX];
    if (path[0] != '/' || strlen(path) >= sizeof p)
        return snprintf(why, whylen, "%s: not an absolute path", path), -1;
    snprintf(p, sizeof p, "%s", path);
    for (;;) {
        struct stat st;
        if (lstat(p, &st) < 0)
            return snprintf(why, whylen, "%s: %s", p, strerror(errno)), -1;
        if (writable_by(&st, uid, gid))
            return snprintf(why, whylen, "%s can be changed by the daemon's user; keep what root reads for it "
                                         "in a directory only root writes (as /etc/postern)", p), -1;
        if (!strcmp(p, "/"))
            return 0;
        char *slash = strrchr(p, '/');
        if (slash == p)
            p[1] = '\0';
        else
            *slash = '\0';
    }
}

int privsep_path_safe(const char *path, uid_t uid, gid_t gid, char *why, size_t whylen)
{
    char real[PATH_MAX];
    if (chain_safe(path, uid, gid, why, whylen) < 0)
        return -1;
    if (!realpath(path, real))
        return snprintf(why, whylen, "%s: %s", path, strerror(errno)), -1;
    return strcmp(real, path) ? chain_safe(real, uid, gid, why, whylen) : 0;
}

/* ---- which paths the configuration names ------------------------------- */

/* Is p inside a comment line ("# ...")? */
static bool in_comment(const char *text, const char *p)
{
    const char *bol = p;
    while (bol > text && bol[-1] != '\n')
        bol--;
    bol += strspn(bol, " \t");
    return *bol == '#';
}

/* Does text name path, as a whole word ("tls_key = /x", "file:/x", "a /x b"),
 * outside comments? */
static bool names(const char *text, size_t len, const char *path)
{
    size_t n = strlen(path);
    for (const char *p = text; (p = memmem(p, len - (size_t)(p - text), path, n)); p++) {
        char before = p == text ? ' ' : p[-1], after = (size_t)(p - text) + n < len ? p[n] : ' ';
        if (strchr(" \t=:,\"'", before) && strchr(" \t\r\n,;\"'#", after) && !in_comment(text, p))
            return true;
    }
    return false;
}

static char *slurp(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > MAX_SCAN_BYTES) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    ssize_t r = buf ? read(fd, buf, (size_t)st.st_size) : -1;
    close(fd);
    if (r < 0) {
        free(buf);
        return NULL;
    }
    *len = (size_t)r;
    return buf;
}

struct parent {
    const char *config;
    uid_t uid;
    gid_t gid;
    char *handed[MAX_NAMING_FILES];  /* files given to the daemon: they may name more */
    size_t nhanded;
};

/* Is path named by the configuration or by a file handed over before (read
 * afresh: a reload may have changed them)? */
static bool named(const struct parent *pa, const char *path)
{
    char why[300];
    if (privsep_path_safe(pa->config, pa->uid, pa->gid, why, sizeof why) < 0) {
        log_warn("privsep: %s; it names nothing the parent would open", why);
        return false;        /* a configuration the daemon could edit could name anything */
    }
    if (!strcmp(path, pa->config))
        return true;
    size_t len;
    char *text = slurp(pa->config, &len);
    bool yes = text && names(text, len, path);
    free(text);
    for (size_t i = 0; !yes && i < pa->nhanded; i++) {
        if (privsep_path_safe(pa->handed[i], pa->uid, pa->gid, why, sizeof why) < 0)
            continue;                /* became changeable by the daemon: it names nothing now */
        text = slurp(pa->handed[i], &len);
        yes = text && names(text, len, path);
        free(text);
    }
    return yes;
}

static void remember(struct parent *pa, const char *path)
{
    for (size_t i = 0; i < pa->nhanded; i++)
        if (!strcmp(pa->handed[i], path))
            return;
    if (pa->nhanded < MAX_NAMING_FILES)
        pa->handed[pa->nhanded++] = strdup(path);
}

/* ---- the parent ---------------------------------------------------------- */

static int open_for_daemon(struct parent *pa, const char *path, struct reply *r)
{
    if (!named(pa, path)) {
        snprintf(r->why, sizeof r->why, "%.100s is not named by %.100s", path, pa->config);
        r->err = EPERM;
        return -1;
    }
    if (privsep_path_safe(path, pa->uid, pa->gid, r->why, sizeof r->why) < 0) {
        r->err = EPERM;
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        r->err = fd < 0 ? errno : EINVAL;
        snprintf(r->why, sizeof r->why, "%.160s: %.60s", path, fd < 0 ? strerror(errno) : "not a regular file");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, 0);           /* the daemon reads it blocking */
    remember(pa, path);
    return fd;
}

static void answer(int sock, struct parent *pa)
{
    char path[PATH_MAX + 1];
    ssize_t n = recv(sock, path, sizeof path - 1, 0);
    if (n <= 0)
        return;
    path[n] = '\0';
    struct reply r = {0};
    int fd = memchr(path, '\0', (size_t)n) ? (r.err = EINVAL, -1) : open_for_daemon(pa, path, &r);
    if (fd < 0)
        log_warn("privsep: refused to open %s for the daemon: %s", path, r.why);
    struct iovec iov = {&r, sizeof r};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        msg.msg_control = u.buf;
        msg.msg_controllen = sizeof u.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (fd >= 0)
        close(fd);
}

static int exit_like(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* Runs until the daemon is gone; never returns. */
static void parent_loop(struct parent *pa, int sock, pid_t child)
{
    sigset_t set;
    sigemptyset(&set);
    int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
    for (size_t i = 0; i < sizeof forwarded / sizeof *forwarded; i++)
        sigaddset(&set, forwarded[i]);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);
    prctl(PR_SET_NAME, "posternd-parent");
    for (;;) {
        struct pollfd p[2] = {{.fd = sfd, .events = POLLIN}, {.fd = sock, .events = POLLIN}};
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            _exit(1);
        if (p[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) == sizeof si && si.ssi_signo != SIGCHLD)
                kill(child, (int)si.ssi_signo);
            int status;
            if (waitpid(child, &status, WNOHANG) == child)
                _exit(exit_like(status));
        }
        if (p[1].revents & POLLIN)
            answer(sock, pa);
        else if (p[1].revents & (POLLHUP | POLLERR)) {   /* the daemon closed its end: wait for it */
            int status;
            if (waitpid(child, &status, 0) == child)
                _exit(exit_like(status));
            _exit(1);
        }
    }
}

int privsep_start(const char *config_path, uid_t run_uid, gid_t run_gid)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -1;
    pid_t parent = getpid(), child = fork();
    if (child < 0) {
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    if (child == 0) {
        close(sv[0]);
        channel = sv[1];
        parent_pid = parent;
        privsep_bind_to_parent();
        return 0;
    }
    /* the parent keeps nothing of the daemon's: no listener, no spool, no loop */
    close(sv[1]);
    int sock = sv[0];
    static struct parent pa;
    pa = (struct parent){.uid = run_uid, .gid = run_gid};
    char real[PATH_MAX];
    pa.config = strdup(realpath(config_path, real) ? real : config_path);
    if (sock > 3)
        close_range(3, (unsigned)sock - 1, 0);
    close_range((unsigned)sock + 1, ~0U, 0);
    parent_loop(&pa, sock, child);
    return -1;
}

/* ---- the daemon's side ---------------------------------------------------- */

int privsep_open(const char *path, char *why, size_t whylen)
{
    if (why && whylen)
        why[0] = '\0';
    int own = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (own >= 0 || channel < 0 || (errno != EACCES && errno != EPERM))
        return own;         /* what the daemon may read itself, it reads itself */
    char real[PATH_MAX];
    const char *ask = path[0] == '/' ? path : realpath(path, real) ? real : path;
    struct reply r = {0};
    int fd = -1;
    pthread_mutex_lock(&channel_lock);
    if (send(channel, ask, strlen(ask), MSG_NOSIGNAL) < 0) {
        r.err = errno;
        snprintf(r.why, sizeof r.why, "the privileged parent is gone: %s", strerror(errno));
    } else {
        union {
            char buf[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } u;
        struct iovec iov = {&r, sizeof r};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
        ssize_t n = recvmsg(channel, &msg, MSG_CMSG_CLOEXEC);
        struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&msg) : NULL;
        if (n != (ssize_t)sizeof r) {
            r.err = EIO;
            snprintf(r.why, sizeof r.why, "no answer from the privileged parent");
        } else if (c && c->cmsg_type == SCM_RIGHTS) {
            memcpy(&fd, CMSG_DATA(c), sizeof fd);
        }
    }
    pthread_mutex_unlock(&channel_lock);
    r.why[sizeof r.why - 1] = '\0';
    if (fd < 0) {
        if (why && whylen)
            snprintf(why, whylen, "%s", r.why);
        errno = r.err ? r.err : EIO;
    }
    return fd;
}

FILE *privsep_fopen(const char *path, char *why, size_t whylen)
{
    int fd = privsep_open(path, why, whylen);
    FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
    if (fd >= 0 && !f)
        close(fd);
    return f;
}
