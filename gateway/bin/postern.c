/* postern_cli.c - the admin CLI. check-config prints the effective config
 * and runs posternd -t; reload and the queue commands go to the running
 * daemon over its control socket. When it does not answer, the queue
 * commands work on the spool itself (queue_offline.c), as the daemon's
 * user and, for changes, under SPOOL/lock. cat and summary always read
 * the spool. policy test/replay run the chain in this process
 * (policy_cli.c). */
#include "plugin_docs.h"
#include "archive_search.h"
#include "archive_verify.h"
#include "archive_hold.h"
#include "archive_trail.h"
#include "archive_audit.h"
#include "buf.h"
#include "config.h"
#include "version.h"
#include "postern_plugin.h"
#include "console_auth.h"
#include "control_client.h"
#include "privs.h"
#include "queue_offline.h"
#include "queue_cmd.h"
#include "track_cli.h"
#include "lists.h"
#include "log.h"
#include "policy_cli.h"
#include "spool.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The usage: on stdout for --help (exit 0), else on stderr (exit 2). */
static void usage_to(int status)
{
    FILE *out = status == 0 ? stdout : stderr;
    fprintf(out, "usage: postern [-c FILE] COMMAND   (FILE: -c, else $POSTERN_CONFIG, else %s)\n"
                 "       postern check-config\n"
                 "       postern config [--defaults]   (settings the file makes; every default)\n"
                 "       postern reload\n"
                 "       postern reopen-logs   (after a log rotation: as SIGUSR1 to this config's posternd)\n"
                 "       postern digest   (the spam quarantine digests for newly held mail, now)\n"
                 "       postern console-user NAME admin|readonly|reviewer   (password on stdin; prints a users-file line)\n"
                 "       postern config-keys   (every configuration key, as the README's Markdown table)\n"
                 "       postern plugin-options DIR   (the options each plugin in DIR declares)\n"
                 "       postern queue ...   (postern queue --help)\n"
                 "       postern lists add allow|block OWNER PATTERN | del OWNER PATTERN | show [OWNER]\n"
                 "       postern track [--from A] [--to B] [--client IP] [--id QUEUEID] [--status S] [--since DATE] "
                 "[--until DATE] [--limit N] [--json]\n"
                 "       postern archive verify|reindex\n"
                 "       postern archive hold NAME [search filters] [--ongoing] | hold list [--all] | hold release NAME\n"
                 "       postern archive audit [--since DATE] [--user U] [--action A]\n"
                 "       postern archive search|export [--from S] [--to S] [--rcpt S] [--subject S] "
                 "[--since D] [--until D] [--limit N] [--mbox FILE|--dir DIR]\n"
                 "       postern policy test [--from A] --to B ... [--client IP] [--helo NAME] [--tls] "
                 "[--auth USER] [--dns-file F] [--json] MESSAGE.eml\n"
                 "       postern policy test [--dns-file F] --cases FILE\n"
                 "       postern policy replay [--archive DIR] [--since DATE] [--until DATE] [--limit N]\n"
                 "       postern --version | --help\n"
                 "DATE: 2026-12-07, \"2026-12-07 10:00\" or \"2026-12-07 10:00:30\" (UTC)\n",
            CONFIG_DEFAULT_PATH);
    exit(status);
}

static void usage(void) { usage_to(2); }

/* Send one request line to the daemon and print its answer. Returns the
 * exit code, or -1 when the daemon could not be reached. */
static int ask_daemon(const char *sock_path, const char *request)
{
    struct buf out;
    buf_init(&out);
    int rc = control_request(sock_path, request, &out);
    if (rc == 0)
        fwrite(buf_head(&out), 1, out.len, stdout);
    else if (rc > 0)
        fprintf(stderr, "postern: %.*s", (int)out.len, buf_head(&out));
    buf_free(&out);
    return rc;
}

/* Print a command's answer (out) or its error (err); the exit code. */
static int answer(int rc, struct buf *out, struct buf *err)
{
    fwrite(buf_head(out), 1, out->len, stdout);
    if (err->len)
        fprintf(stderr, "postern: %.*s", (int)err->len, buf_head(err));
    buf_free(out);
    buf_free(err);
    return rc == 0 ? 0 : 1;
}

/* Open the spool for the CLI's own use, as the daemon's user (never as
 * root in a tree that user can write). */
static int open_spool(const struct config *cfg)
{
    log_set_level(LOG_LVL_ERROR);
    if (privs_become(cfg->run_user, cfg->allow_user_nobody) < 0)
        return -1;
    return spool_init(cfg->spool_dir, false);
}

/* The spool itself, when the daemon does not answer (or for cat/summary). */
static int queue_on_spool(const struct config *cfg, const struct queue_cmd *cmd)
{
    struct buf out, err;
    buf_init(&out);
    buf_init(&err);
    if (open_spool(cfg) < 0)
        return 1;
    int lock = cmd->writes ? spool_lock(cfg->spool_dir, 0) : -1;
    if (cmd->writes && lock < 0) {
        fprintf(stderr, "postern: %s/lock is held (%s): posternd is running but does not answer at %s\n",
                cfg->spool_dir, strerror(errno), cfg->control_socket);
        return 1;
    }
    int rc = offline_run(cmd, &out, &err);
    if (lock >= 0)
        close(lock);
    return answer(rc, &out, &err);
}

/* One parsed command: to the daemon, else (where it can) to the spool. */
static int queue_run(const struct config *cfg, int argc, char **argv, const struct queue_cmd *cmd)
{
    if (cmd->where == QW_SPOOL)      /* read-only: always the spool */
        return queue_on_spool(cfg, cmd);
    struct buf request;
    buf_init(&request);
    if (queue_cmd_format(argc, argv, &request) < 0) {
        fprintf(stderr, "postern: the command is too long: give many queue IDs with - on standard input\n");
        buf_free(&request);
        return 1;
    }
    buf_append(&request, "", 1);
    int rc = ask_daemon(cfg->control_socket, buf_head(&request));
    buf_free(&request);
    if (rc >= 0)
        return rc;
    int err = errno;
    if (cmd->where == QW_DAEMON) {
        fprintf(stderr, "postern: cannot reach posternd at %s: %s (nothing is delivered until it runs)\n",
                cfg->control_socket, strerror(err));
        return 1;
    }
    fprintf(stderr, "postern: posternd not reachable at %s (%s); working on the spool directly\n",
            cfg->control_socket, strerror(err));
    return queue_on_spool(cfg, cmd);
}

/* `queue VERB ... -`: the IDs on standard input, one per line, sent in
 * requests of up to QUEUE_CMD_MAX_WORDS IDs (each worked through on its own). */
static int queue_from_stdin(const struct config *cfg, int argc, char **argv)
{
    char **av = calloc((size_t)argc + QUEUE_CMD_MAX_WORDS, sizeof *av);
    char (*ids)[QID_LEN] = calloc(QUEUE_CMD_MAX_WORDS, QID_LEN);
    int base = 0, rc = 0;
    for (int i = 0; av && i < argc; i++)
        if (strcmp(argv[i], "-"))
            av[base++] = argv[i];
    char line[256];
    unsigned long lineno = 0;
    size_t n = 0;
    bool more = av && ids;
    while (more) {
        more = fgets(line, sizeof line, stdin) != NULL;
        line[strcspn(line, "\r\n")] = '\0';
        lineno++;
        if (more && line[0] && !qid_valid(line)) {
            fprintf(stderr, "postern: standard input line %lu: '%.80s' is not a queue ID\n", lineno, line);
            rc = 1;
            continue;
        }
        if (more && line[0])
            memcpy(ids[n++], line, QID_LEN);
        if (n == QUEUE_CMD_MAX_WORDS || (!more && n)) {
            for (size_t i = 0; i < n; i++)
                av[base + i] = ids[i];
            struct queue_cmd *cmd = malloc(sizeof *cmd);
            char err[300];
            if (!cmd || queue_cmd_parse(base + (int)n, av, cmd, err, sizeof err) < 0)
                rc = 1;
            else if (queue_run(cfg, base + (int)n, av, cmd) != 0)
                rc = 1;
            free(cmd);
            n = 0;
        }
    }
    free(av);
    free(ids);
    return rc;
}

/* The queue's changes to messages go in the archive's audit trail. */
static bool queue_audited(enum queue_verb v)
{
    return v == QV_HOLD || v == QV_RELEASE || v == QV_DELETE || v == QV_REQUEUE || v == QV_FLUSH;
}

/* Record `queue VERB ARGS` (and whether it went) when an archive is
 * configured: 0, or 1 (said) when the record cannot be written. */
static int queue_audit(const struct config *cfg, int argc, char **argv, int rc)
{
    const char *dir = config_plugin_option(cfg, "archive", "dir");
    if (!dir)
        return 0;
    struct audit_actor who;
    archive_actor_cli(&who);
    char action[64], details[4096] = "", words[2048] = "", err[700];
    size_t len = 0, wl = 0;
    snprintf(action, sizeof action, "queue-%s", argv[0]);
    for (int i = 1; i < argc && wl + 2 < sizeof words; i++)
        wl += (size_t)snprintf(words + wl, sizeof words - wl, "%s%s", i > 1 ? " " : "", argv[i]);
    archive_audit_kv(details, sizeof details, &len, "args", words);
    archive_audit_kv(details, sizeof details, &len, "result", rc == 0 ? "done" : "failed");
    unsigned long seq;
    if (archive_audit_write(dir, cfg->run_user, cfg->allow_user_nobody, &who, action, details, &seq, err,
                            sizeof err) == 0)
        return 0;
    fprintf(stderr, "postern: the queue changed, but the audit trail could not record it: %s\n", err);
    return 1;
}

static int queue_command(const struct config *cfg, int argc, char **argv)
{
    struct queue_cmd *cmd = malloc(sizeof *cmd);
    char err[300];
    int parsed = cmd ? queue_cmd_parse(argc, argv, cmd, err, sizeof err) : -1;
    if (parsed < 0) {
        fprintf(stderr, "postern: queue: %s\n", cmd ? err : "out of memory");
        if (parsed == -2)      /* not a queue command at all: the usage */
            fprintf(stderr, "usage: postern [-c FILE] queue COMMAND\n%s", queue_cmd_usage);
        free(cmd);
        return parsed == -2 ? 2 : 1;
    }
    int rc = cmd->ids_on_stdin ? queue_from_stdin(cfg, argc, argv) : queue_run(cfg, argc, argv, cmd);
    if (cmd->writes && queue_audited(cmd->verb))
        rc |= queue_audit(cfg, argc, argv, rc);
    free(cmd);
    return rc;
}

/* `postern lists ...`: through the daemon (it holds them in memory), else
 * on the store itself as the daemon's user. */
static int lists_command(const struct config *cfg, int argc, char **argv)
{
    bool known = argc >= 1 && ((!strcmp(argv[0], "add") && argc == 4) || (!strcmp(argv[0], "del") && argc == 3) ||
                               (!strcmp(argv[0], "show") && argc <= 2));
    if (!known) {
        fprintf(stderr, "usage: postern [-c FILE] lists ...\n%s", lists_usage);
        return 2;
    }
    struct buf line, out;
    buf_init(&line);
    buf_init(&out);
    buf_puts(&line, "lists");
    for (int i = 0; i < argc; i++) {
        if (strpbrk(argv[i], " \t\r\n")) {
            fprintf(stderr, "postern: lists: '%s' has a blank\n", argv[i]);
            buf_free(&line);
            return 1;
        }
        buf_printf(&line, " %s", argv[i]);
    }
    buf_append(&line, "", 1);
    int rc = ask_daemon(cfg->control_socket, buf_head(&line));
    buf_free(&line);
    if (rc >= 0)
        return rc;
    if (cfg->redis_server && strcmp(argv[0], "show")) {
        fprintf(stderr, "postern: lists: posternd is not running; with redis_server the lists are changed through "
                        "it (a change made here would be overwritten by the shared copy)\n");
        return 1;
    }
    char path[4096], err[600];
    lists_db_path(cfg, path, sizeof path);
    if (open_spool(cfg) < 0)         /* as the daemon's user */
        return 1;
    if (lists_open(path, err, sizeof err) < 0) {
        fprintf(stderr, "postern: %s\n", err);
        return 1;
    }
    rc = lists_request(argc, argv, &out);
    lists_close();
    fwrite(buf_head(&out), 1, out.len, rc == 0 ? stdout : stderr);
    buf_free(&out);
    return rc;
}

/* `archive verify`, recorded in the audit trail with its outcome. */
static int archive_verify_command(const struct config *cfg, const char *dir, const struct archive_cmd *c)
{
    int problems = archive_verify(dir, config_plugin_option(cfg, "archive", "witness_log"),
                                  config_plugin_option(cfg, "archive", "witness_key"), c->run_user, c->allow_nobody,
                                  stdout);
    char details[64] = "", n[32], err[700];
    size_t len = 0;
    snprintf(n, sizeof n, "%d", problems);
    archive_audit_kv(details, sizeof details, &len, "problems", n);
    unsigned long seq;
    if (archive_audit_write(dir, c->run_user, c->allow_nobody, c->who, "verify", details, &seq, err, sizeof err) < 0) {
        fprintf(stderr, "postern: %s\n", err);
        return 1;
    }
    return problems == 0 ? 0 : 1;
}

/* `postern archive verify|search|export|reindex|hold|audit` on archive.dir. */
static int archive_command(const struct config *cfg, const char *path, int argc, char **argv)
{
    static const char *subcommands[] = {"verify", "search", "export", "reindex", "hold", "audit"};
    bool known = false;
    for (size_t i = 0; argc >= 1 && i < sizeof subcommands / sizeof subcommands[0]; i++)
        known |= !strcmp(argv[0], subcommands[i]);
    if (!known || (!strcmp(argv[0], "verify") && argc != 1))
        usage();
    const char *dir = config_plugin_option(cfg, "archive", "dir");
    if (!dir) {
        fprintf(stderr, "postern: %s has no archive.dir (is the archive plugin configured?)\n", path);
        return 1;
    }
    struct audit_actor who;
    archive_actor_cli(&who);
    struct archive_cmd c = {&who, cfg->run_user, cfg->allow_user_nobody};
    if (!strcmp(argv[0], "hold") || !strcmp(argv[0], "audit"))
        return archive_hold_command(dir, &c, argc, argv);
    if (strcmp(argv[0], "verify"))
        return archive_search_command(dir, cfg->run_user, cfg->allow_user_nobody, &who, argc, argv);
    return archive_verify_command(cfg, dir, &c);
}

/* `postern console-user NAME ROLE`: a users-file line with a yescrypt hash
 * of the password read from stdin (the password never on the command line). */
static int console_user(int argc, char **argv)
{
    if (argc != 2 || (strcmp(argv[1], "admin") && strcmp(argv[1], "readonly") && strcmp(argv[1], "reviewer")) ||
        !argv[0][0] ||
        strpbrk(argv[0], ": \t\n") || strlen(argv[0]) >= 64)
        usage();
    char password[1024];
    if (!fgets(password, sizeof password, stdin)) {
        fprintf(stderr, "postern: console-user: give the password on stdin\n");
        return 1;
    }
    password[strcspn(password, "\r\n")] = '\0';
    char hash[256];
    if (strlen(password) < 8 || console_hash_password(password, hash, sizeof hash) < 0) {
        fprintf(stderr, "postern: console-user: %s\n", strlen(password) < 8 ? "the password needs 8 characters or more"
                                                                        : "libcrypt cannot make a yescrypt hash");
        return 1;
    }
    memset(password, 0, sizeof password);
    printf("%s:%s:%s\n", argv[0], hash, argv[1]);
    return 0;
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
    if (argc == 2 && !strcmp(argv[1], "--version")) {
        printf("postern %s (plugin ABI %d)\n", POSTERN_VERSION, POSTERN_PLUGIN_ABI_VERSION);
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "--help"))
        usage_to(0);
    const char *path = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "+c:h")) != -1) {
        if (opt == 'c')
            path = optarg;
        else
            usage_to(opt == 'h' ? 0 : 2);
    }
    bool queue = optind < argc && !strcmp(argv[optind], "queue");
    for (int i = optind; i < argc; i++)     /* `postern COMMAND --help`, before any config is read */
        if (!strcmp(argv[i], "--help") && !queue)
            usage_to(0);
        else if (!strcmp(argv[i], "--help")) {
            printf("usage: postern [-c FILE] queue COMMAND\n%s", queue_cmd_usage);
            return 0;
        }
    if (optind + 2 == argc && !strcmp(argv[optind], "config") && !strcmp(argv[optind + 1], "--defaults")) {
        config_print_defaults(stdout);       /* postconf -d: needs no file */
        return 0;
    }
    if (optind < argc && !strcmp(argv[optind], "console-user"))
        return console_user(argc - optind - 1, argv + optind + 1);
    if (optind + 1 == argc && !strcmp(argv[optind], "config-keys")) {   /* the README's key table */
        config_keys_document(stdout);
        return 0;
    }
    if (optind + 2 == argc && !strcmp(argv[optind], "plugin-options"))  /* postern-plugins(5) */
        return plugin_docs_command(argv[optind + 1]);
    if (optind >= argc)
        usage();
    path = config_path_or_default(path);
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
        printf("# plugin options not given, at their defaults:\n");
        plugin_defaults_print(&cfg, stdout);
        fflush(stdout);
        rc = run_posternd_check(path);
    } else if (!strcmp(cmd, "config")) {
        if (optind + 1 != argc)
            usage();
        config_print_given(&cfg, stdout);
        rc = 0;
    } else if (!strcmp(cmd, "reload") || !strcmp(cmd, "reopen-logs") || !strcmp(cmd, "digest")) {
        if (optind + 1 != argc)
            usage();
        rc = ask_daemon(cfg.control_socket, cmd);
        if (rc < 0) {
            fprintf(stderr, "postern: cannot reach posternd at %s: %s\n", cfg.control_socket, strerror(errno));
            rc = 1;
        }
    } else if (!strcmp(cmd, "archive")) {
        rc = archive_command(&cfg, path, argc - optind - 1, argv + optind + 1);
    } else if (!strcmp(cmd, "queue")) {
        rc = queue_command(&cfg, argc - optind - 1, argv + optind + 1);
    } else if (!strcmp(cmd, "lists")) {
        rc = lists_command(&cfg, argc - optind - 1, argv + optind + 1);
    } else if (!strcmp(cmd, "track")) {
        rc = track_command(&cfg, argc - optind - 1, argv + optind + 1);
    } else if (!strcmp(cmd, "policy")) {
        rc = policy_command(&cfg, argc - optind - 1, argv + optind + 1);
    } else {
        usage();
        rc = 2;
    }
    config_free(&cfg);
    return rc;
}
