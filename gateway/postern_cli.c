/* postern_cli.c - the admin CLI. check-config prints the effective config;
 * queue list / show read the spool directly (read-only, safe beside a running
 * daemon). Commands that change the queue need the daemon's control socket,
 * which arrives with the delivery issue: they say so and exit 2. */
#include "config.h"
#include "log.h"
#include "spool.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void usage(void)
{
    fprintf(stderr, "usage: postern -c FILE check-config\n"
                    "       postern -c FILE queue list|show ID|flush|hold ID|release ID|delete ID\n");
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
    bool held = false;
    if (!st) {
        envelope_free(&e);
        return -1;
    }
    spool_load_state(id, &held, st, e.nrcpts);
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
                   st[i].status == RCPT_DONE ? "delivered" : st[i].status == RCPT_FAILED ? "failed" : "pending",
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

static int queue_command(int argc, char **argv)
{
    if (argc < 1)
        usage();
    if (!strcmp(argv[0], "list")) {
        int n = 0;
        spool_scan(list_one, &n);
        printf("-- %d message(s)\n", n);
        return 0;
    }
    if (!strcmp(argv[0], "show")) {
        if (argc != 2)
            usage();
        if (!qid_valid(argv[1])) {
            fprintf(stderr, "postern: '%s' is not a queue ID\n", argv[1]);
            return 1;
        }
        return print_message(argv[1], true) < 0 ? 1 : 0;
    }
    if (!strcmp(argv[0], "flush") || !strcmp(argv[0], "hold") || !strcmp(argv[0], "release") ||
        !strcmp(argv[0], "delete")) {
        fprintf(stderr, "postern: queue %s is not implemented yet (it needs the daemon's control socket)\n",
                argv[0]);
        return 2;
    }
    usage();
    return 2;
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
    if (config_load(path, &cfg, err, sizeof err) < 0) {
        fprintf(stderr, "postern: %s\n", err);
        return 1;
    }
    const char *cmd = argv[optind];
    int rc;
    if (!strcmp(cmd, "check-config")) {
        config_print(&cfg, stdout);
        rc = 0;
    } else if (!strcmp(cmd, "queue")) {
        log_set_level(LOG_LVL_ERROR);
        if (spool_init(cfg.spool_dir, false) < 0)
            return 1;
        rc = queue_command(argc - optind - 1, argv + optind + 1);
    } else {
        usage();
        rc = 2;
    }
    config_free(&cfg);
    return rc;
}
