/* privs.c - privilege drop: chown the spool to the run user (so queue files
 * written by an earlier root run stay readable), then setgroups/setgid/setuid
 * and verify that root cannot be regained. */
#include "privs.h"
#include "log.h"
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void chown_tree(const char *path, uid_t uid, gid_t gid, int depth)
{
    if (lchown(path, uid, gid) < 0)
        log_warn("chown %s: %s", path, strerror(errno));
    if (depth > 2)
        return;
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char sub[4096];
        snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
        struct stat st;
        if (lstat(sub, &st) == 0 && (S_ISDIR(st.st_mode) || S_ISREG(st.st_mode)))
            chown_tree(sub, uid, gid, depth + 1);
    }
    closedir(d);
}

int privs_drop(const char *user, const char *spool_dir, const char *control_socket)
{
    if (geteuid() != 0)
        return 0;
    const char *name = user && *user ? user : "nobody";
    struct passwd *pw = getpwnam(name);
    if (!pw) {
        log_error("user '%s' does not exist; refusing to run as root", name);
        return -1;
    }
    if (pw->pw_uid == 0) {
        log_error("user '%s' is root; refusing to run as root", name);
        return -1;
    }
    chown_tree(spool_dir, pw->pw_uid, pw->pw_gid, 0);
    if (control_socket && lchown(control_socket, pw->pw_uid, pw->pw_gid) < 0)
        log_warn("chown %s: %s", control_socket, strerror(errno));
    if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
        log_error("cannot drop privileges to %s: %s", name, strerror(errno));
        return -1;
    }
    if (setuid(0) == 0) {
        log_error("privilege drop did not stick");
        return -1;
    }
    log_info("running as user %s (uid %d)", name, (int)pw->pw_uid);
    return 0;
}
