/* postern_cli.c - the admin CLI. check-config prints the effective config;
 * queue commands go to the running daemon over its control socket. When the
 * daemon is not running, list and show fall back to reading the spool. */
#include "archive_verify.h"
#include "buf.h"
#include "config.h"
#include "log.h"
#include "spool.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static void usage(void)
{
    fprintf(stderr, "usage: postern -c FILE check-config\n"
                    "       postern -c FILE reload\n"
                    "       postern -c FILE queue list|show ID|flush [ID|domain]|hold ID|release ID|delete ID\n"
                    "       postern -c FILE archive verify\n");
    exit(2);
}

static int print_message(const char *id, bool verbose)
{
    struct envelope e;
    size_t body_off;
    const char *err = "";
    if (spool_load(id, &e, &body_off, &err) < 0) {
        fprintf(stderr, "postern: %s: %s\n", id, err);
        return -1;
    }
    struct rcpt_state *st = calloc(e.nrcpts, sizeof *st);
    struct msg_flags flags;
    if (!st) {
        envelope_free(&e);
        return -1;
    }
    spool_load_state(id, &flags, st, e.nrcpts);
    bool held = flags.held;
    long age = (long)(time(NULL) - e.arrival);
    if (!verbose) {
        printf("%s %10" PRIu64 " %6lds %-8s <%s>", id, e.size, age, held ? "hold" : "active", e.sender);
        for (size_t i = 0; i < e.nrcpts; i++)
            if (st[i].status == RCPT_PENDING)
                printf(" <%s>%s%s", e.rcpts[i], st[i].last_reply[0] ? " last: " : "", st[i].last_reply);
        printf("\n");
    } else {
        printf("id: %s\narrival: %" PRId64 " (%lds ago)\nsize: %" PRIu64 "\nclient: [%s] helo=%s proto=%s\n"
               "state: %s\nfrom: <%s>\n", id, e.arrival, age, e.size, e.client_ip, e.helo, e.proto,
               held ? "hold" : "active", e.sender);
        for (size_t i = 0; i < e.nrcpts; i++)
            printf("rcpt: <%s> status=%s attempts=%d next_try=%" PRId64 " last=%s\n", e.rcpts[i],
                   st[i].status == RCPT_DONE || st[i].status == RCPT_RELAYED ? "delivered" : st[i].status == RCPT_PENDING ? "pending" : "failed",
                   st[i].attempts, st[i].next_try, st[i].last_reply);
    }
    free(st);
    envelope_free(&e);
    return 0;
}

static void list_one(const char *id, void *ctx)
{
    (*(int *)ctx)++;
    print_message(id, false);
}

/* Send one request line to the daemon and print its answer. Returns the
 * exit code, or -1 when the daemon could not be reached. */
static int ask_daemon(const char *sock_path, const char *request)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", sock_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    char req[600];
    int n = snprintf(req, sizeof req, "%s\n", request);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    struct buf b;
    buf_init(&b);
    char tmp[8192];
    ssize_t r;
    while ((r = read(fd, tmp, sizeof tmp)) > 0)
        buf_append(&b, tmp, (size_t)r);
    close(fd);
    buf_append(&b, "", 1);
    char *text = buf_head(&b);
    int rc = 1;
    if (!strncmp(text, "OK\n", 3)) {
        fputs(text + 3, stdout);
        rc = 0;
    } else if (!strncmp(text, "ERR\n", 4)) {
        fprintf(stderr, "postern: %s", text + 4);
    } else {
        fprintf(stderr, "postern: unexpected answer from posternd\n");
    }
    buf_free(&b);
    return rc;
}

static int queue_command(const struct config *cfg, int argc, char **argv)
{
    static const char *with_id[] = {"show", "hold", "release", "delete"};
    if (argc < 1)
        usage();
    bool known = !strcmp(argv[0], "list") || !strcmp(argv[0], "flush");
    for (size_t i = 0; i < sizeof with_id / sizeof with_id[0]; i++)
        if (!strcmp(argv[0], with_id[i])) {
            if (argc != 2)
                usage();
            if (!qid_valid(argv[1])) {
                fprintf(stderr, "postern: '%s' is not a queue ID\n", argv[1]);
                return 1;
            }
            known = true;
        }
    if (!known || argc > 2)
        usage();
    char request[600];
    snprintf(request, sizeof request, "%s%s%s", argv[0], argc == 2 ? " " : "", argc == 2 ? argv[1] : "");
    int rc = ask_daemon(cfg->control_socket, request);
    if (rc >= 0)
        return rc;
    int err = errno;
    if (!strcmp(argv[0], "list") || !strcmp(argv[0], "show")) {
        fprintf(stderr, "postern: posternd not reachable at %s (%s); reading the spool directly\n",
                cfg->control_socket, strerror(err));
        log_set_level(LOG_LVL_ERROR);
        if (spool_init(cfg->spool_dir, false) < 0)
            return 1;
        if (!strcmp(argv[0], "show"))
            return print_message(argv[1], true) < 0 ? 1 : 0;
        int n = 0;
        spool_scan(list_one, &n);
        printf("-- %d message(s)\n", n);
        return 0;
    }
    fprintf(stderr, "postern: cannot reach posternd at %s: %s\n", cfg->control_socket, strerror(err));
    return 1;
}

/* check-config checks by running `posternd -t` (the posternd beside this
 * program, else PATH's), so the two can never disagree: plugin options,
 * unknown plugins, regexes, rules files and Lua scripts are all checked
 * the one way start-up checks them. */
static int run_posternd_check(const char *conf)
{
    char self[4096], prog[4200];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    const char *dir = NULL;
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            dir = self;
        }
    }
    snprintf(prog, sizeof prog, "%s/posternd", dir ? dir : ".");
    if (!dir || access(prog, X_OK) < 0)
        snprintf(prog, sizeof prog, "posternd");
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "postern: fork: %s\n", strerror(errno));
        return 1;
    }
    if (pid == 0) {
        dup2(STDERR_FILENO, STDOUT_FILENO);    /* its verdict goes with the errors */
        execlp(prog, "posternd", "-c", conf, "-t", (char *)NULL);
        fprintf(stderr, "postern: cannot run %s: %s\n", prog, strerror(errno));
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return 1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "+c:h")) != -1) {
        if (opt == 'c')
            path = optarg;
        else
            usage();
    }
    if (!path || optind >= argc)
        usage();
    struct config cfg;
    char err[1024];
    const char *cmd = argv[optind];
    if (config_load(path, &cfg, err, sizeof err) < 0) {
        fprintf(stderr, "postern: %s%s\n", err, !strcmp(cmd, "reload") ? " (not reloaded)" : "");
        return 1;
    }
    int rc;
    if (!strcmp(cmd, "check-config")) {
        config_print(&cfg, stdout);
        fflush(stdout);
        rc = run_posternd_check(path);
    } else if (!strcmp(cmd, "reload")) {
        if (optind + 1 != argc)
            usage();
        rc = ask_daemon(cfg.control_socket, "reload");
        if (rc < 0) {
            fprintf(stderr, "postern: cannot reach posternd at %s: %s\n", cfg.control_socket, strerror(errno));
            rc = 1;
        }    } else if (!strcmp(cmd, "archive")) {
        const char *dir = NULL, *witness_log = NULL, *witness_key = NULL;
        for (size_t i = 0; i < cfg.nplugin_opts; i++) {
            const struct plugin_option *o = &cfg.plugin_opts[i];
            if (strcmp(o->plugin, "archive"))
                continue;
            if (!strcmp(o->key, "dir"))
                dir = o->value;
            else if (!strcmp(o->key, "witness_log"))
                witness_log = o->value;
            else if (!strcmp(o->key, "witness_key"))
                witness_key = o->value;
        }
        if (optind + 2 != argc || strcmp(argv[optind + 1], "verify"))
            usage();
        if (!dir) {
            fprintf(stderr, "postern: %s has no archive.dir (is the archive plugin configured?)\n", path);
            rc = 1;
        } else {
            int problems = archive_verify(dir, witness_log, witness_key, stdout);
            rc = problems == 0 ? 0 : 1;
        }
    } else if (!strcmp(cmd, "queue")) {
        rc = queue_command(&cfg, argc - optind - 1, argv + optind + 1);
    } else {
        usage();
        rc = 2;
    }
    config_free(&cfg);
    return rc;
}
