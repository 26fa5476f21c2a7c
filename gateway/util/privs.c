/* privs.c - privilege drop: chown the spool to the run user (so queue files
 * written by an earlier root run stay readable) without ever following a
 * path the run user could have changed, then setgroups/setgid/setuid and
 * verify that root cannot be regained. */
#include "privs.h"
#include "log.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* The tree below the spool is writable by the run user, who may swap
 * entries while we walk it (a symlink to /etc/shadow, a directory renamed
 * into place). So nothing is followed or changed by path: every entry is
 * opened relative to its parent's fd with O_NOFOLLOW, checked with fstat
 * on that fd, and chowned with fchown on it. Symlinks, devices, FIFOs and
 * files with more than one link are left alone (and logged). */
static void chown_fd_tree(int dirfd, const char *shown, uid_t uid, gid_t gid, int depth);

static void chown_entry(int dirfd, const char *name, const char *shown, uid_t uid, gid_t gid, int depth)
{
    struct stat st;
    /* the common case, a plain file already ours: one lstat, nothing to change (a
     * queue of a million messages is walked at every start) */
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1 &&
        st.st_uid == uid && st.st_gid == gid)
        return;
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0) {
        if (errno == ELOOP)
            log_warn("spool: %s/%s is a symbolic link; not touched", shown, name);
        if (fd >= 0)
            close(fd);
        return;
    }
    if (S_ISDIR(st.st_mode) && depth < 3) {
        chown_fd_tree(fd, shown, uid, gid, depth + 1);   /* takes fd */
        return;
    }
    if (S_ISREG(st.st_mode) && st.st_nlink == 1) {
        if ((st.st_uid != uid || st.st_gid != gid) && fchown(fd, uid, gid) < 0)
            log_warn("chown %s/%s: %s", shown, name, strerror(errno));
    } else if (!S_ISDIR(st.st_mode)) {
        log_warn("spool: %s/%s is not a plain file; not touched", shown, name);
    }
    close(fd);
}

static void chown_fd_tree(int dirfd, const char *shown, uid_t uid, gid_t gid, int depth)
{
    if (fchown(dirfd, uid, gid) < 0)
        log_warn("chown %s: %s", shown, strerror(errno));
    DIR *d = fdopendir(dirfd);
    if (!d) {
        close(dirfd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            chown_entry(dirfd, de->d_name, shown, uid, gid, depth);
    closedir(d);    /* closes dirfd */
}

static void chown_tree(const char *spool_dir, uid_t uid, gid_t gid)
{
    int fd = open(spool_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        log_warn("spool %s: %s", spool_dir, strerror(errno));
        return;
    }
    chown_fd_tree(fd, spool_dir, uid, gid, 0);
}

/* The run user's passwd entry, after the checks every caller needs. */
static const struct passwd *run_user_entry(const char *user, bool allow_nobody)
{
    const char *name = user && *user ? user : PRIVS_DEFAULT_USER;
    if (!strcmp(name, "nobody") && !allow_nobody) {
        log_error("user 'nobody' is shared with other services, which could then read the spool and use the "
                  "control socket; use a dedicated user (tools/install-deps.sh creates '%s') or set "
                  "allow_user_nobody = yes", PRIVS_DEFAULT_USER);
        return NULL;
    }
    struct passwd *pw = getpwnam(name);
    if (!pw) {
        log_error("user '%s' does not exist; refusing to run as root%s", name,
                  strcmp(name, PRIVS_DEFAULT_USER) ? "" : " (tools/install-deps.sh creates it)");
        return NULL;
    }
    if (pw->pw_uid == 0) {
        log_error("user '%s' is root; refusing to run as root", name);
        return NULL;
    }
    return pw;
}

static int switch_to(const struct passwd *pw)
{
    if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
        log_error("cannot drop privileges to %s: %s", pw->pw_name, strerror(errno));
        return -1;
    }
    if (setuid(0) == 0) {
        log_error("privilege drop did not stick");
        return -1;
    }
    return 0;
}

int privs_run_ids(const char *user, bool allow_nobody, uid_t *uid, gid_t *gid)
{
    const struct passwd *pw = run_user_entry(user, allow_nobody);
    if (!pw)
        return -1;
    *uid = pw->pw_uid;
    *gid = pw->pw_gid;
    return 0;
}

int privs_become(const char *user, bool allow_nobody)
{
    if (geteuid() != 0)
        return 0;
    const struct passwd *pw = run_user_entry(user, allow_nobody);
    return pw ? switch_to(pw) : -1;
}

int privs_drop(const char *user, bool allow_nobody, const char *spool_dir, const char *control_socket)
{
    if (geteuid() != 0)
        return 0;
    const struct passwd *pw = run_user_entry(user, allow_nobody);
    if (!pw)
        return -1;
    chown_tree(spool_dir, pw->pw_uid, pw->pw_gid);
    if (control_socket && lchown(control_socket, pw->pw_uid, pw->pw_gid) < 0)
        log_warn("chown %s: %s", control_socket, strerror(errno));
    if (switch_to(pw) < 0)
        return -1;
    log_info("running as user %s (uid %d)", pw->pw_name, (int)pw->pw_uid);
    return 0;
}

int privs_run_as(const char *user, bool allow_nobody, int (*fn)(int fd, void *ctx), void *ctx, struct buf *out)
{
    int p[2];
    if (pipe(p) < 0)
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        bool ready = geteuid() != 0 || privs_become(user, allow_nobody) == 0;
        _exit(ready && fn(p[1], ctx) == 0 ? 0 : 1);
    }
    close(p[1]);
    char chunk[65536];
    ssize_t r;
    while (pid > 0 && (r = read(p[0], chunk, sizeof chunk)) > 0)
        buf_append(out, chunk, (size_t)r);
    close(p[0]);
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0)
        return -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}
