/* archive_hold.c - legal holds and reading the audit trail:
 *
 *   postern archive hold NAME [FILTERS] [--ongoing]
 *   postern archive hold list [--all]
 *   postern archive hold release NAME
 *   postern archive audit [--since DATE] [--user U] [--action A]
 *
 * A hold is a record in the audit trail (plugins/archive_audit.h): it
 * keeps every copy chained before it that FILTERS match (with --ongoing,
 * later ones too) from retention until it is released, which is a record
 * too. Nothing about a hold lives outside the trail. */
#include "archive_hold.h"
#include "archive_audit.h"
#include "archive_search.h"
#include "archive_trail.h"
#include "utc_time.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(void)
{
    fprintf(stderr, "usage: postern -c FILE archive hold NAME [--from S] [--to S] [--rcpt S] [--subject S] "
                    "[--since DATE] [--until DATE] [--ongoing]\n"
                    "       postern -c FILE archive hold list [--all]\n"
                    "       postern -c FILE archive hold release NAME\n"
                    "       postern -c FILE archive audit [--since DATE] [--user U] [--action A]\n");
}

static bool good_name(const char *n)
{
    size_t len = strlen(n);
    return len > 0 && len < ARCHIVE_HOLD_NAME_MAX && strspn(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                               "0123456789._-") == len &&
           strcmp(n, "list") && strcmp(n, "release");
}

/* Every hold the trail records; 0, or -1 (said). */
static int load_holds(const char *dir, struct archive_holds *h)
{
    FILE *f = archive_open_in(dir, "audit", "r");
    if (!f && errno != ENOENT) {
        fprintf(stderr, "postern: %s/audit: %s\n", dir, strerror(errno));
        return -1;
    }
    archive_holds_load(h, f);
    return 0;
}

static const struct archive_hold *standing(const struct archive_holds *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++)
        if (!h->v[i].released && !strcmp(h->v[i].name, name))
            return &h->v[i];
    return NULL;
}

static void print_hold(const struct archive_hold *x)
{
    char filters[2048] = "";
    size_t len = 0;
    archive_filter_details(&x->filter, filters, sizeof filters, &len);
    printf("%-20s %s  since %s by %s  %s  %s\n", x->name, x->released ? "released" : "standing", x->when, x->who,
           x->ongoing ? "ongoing" : "copies before it", len ? filters : "(every copy)");
}

static int hold_list(const char *dir, bool all)
{
    struct archive_holds h;
    if (load_holds(dir, &h) < 0)
        return 1;
    size_t shown = 0;
    for (size_t i = 0; i < h.n; i++)
        if (all || !h.v[i].released) {
            print_hold(&h.v[i]);
            shown++;
        }
    printf("%zu hold(s)%s\n", shown, all ? "" : " standing");
    free(h.v);
    return 0;
}

/* The filters of `hold NAME ...` (the search's, plus --ongoing). */
static int hold_filters(int argc, char **argv, struct archive_filter *m, bool *ongoing)
{
    *m = (struct archive_filter){.since = -1, .until = -1};
    *ongoing = false;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--ongoing")) {
            *ongoing = true;
            continue;
        }
        if (i + 1 >= argc || archive_filter_option(argv[i], argv[i + 1], m) <= 0)
            return -1;
        i++;
    }
    return 0;
}

static int record(const char *dir, const struct archive_cmd *c, const char *action, const char *details)
{
    char err[700];
    unsigned long seq;
    if (archive_audit_write(dir, c->run_user, c->allow_nobody, c->who, action, details, &seq, err, sizeof err) < 0) {
        fprintf(stderr, "postern: %s\n", err);
        return -1;
    }
    printf("recorded as chain link %lu\n", seq);
    return 0;
}

static int hold_place(const char *dir, const struct archive_cmd *c, const char *name, int argc, char **argv)
{
    struct archive_filter m;
    bool ongoing;
    struct archive_holds h;
    if (hold_filters(argc, argv, &m, &ongoing) < 0) {
        usage();
        return 2;
    }
    if (load_holds(dir, &h) < 0)
        return 1;
    bool taken = standing(&h, name) != NULL;
    free(h.v);
    if (taken) {
        fprintf(stderr, "postern: a hold named %s stands already (release it, or choose another name)\n", name);
        return 1;
    }
    long now = archive_count(dir, &m);
    char details[4096] = "", n[32];
    size_t len = 0;
    archive_audit_kv(details, sizeof details, &len, "name", name);
    archive_audit_kv(details, sizeof details, &len, "ongoing", ongoing ? "yes" : "no");
    snprintf(n, sizeof n, "%ld", now);
    archive_audit_kv(details, sizeof details, &len, "count", n);
    archive_filter_details(&m, details, sizeof details, &len);
    if (record(dir, c, "hold", details) < 0)
        return 1;
    printf("hold %s placed: %ld archived message(s) match now%s\n", name, now,
           ongoing ? ", and mail archived from now on that matches is held too" : "");
    return 0;
}

static int hold_release(const char *dir, const struct archive_cmd *c, const char *name)
{
    struct archive_holds h;
    if (load_holds(dir, &h) < 0)
        return 1;
    bool known = standing(&h, name) != NULL;
    free(h.v);
    if (!known) {
        fprintf(stderr, "postern: no standing hold named %s (`archive hold list`)\n", name);
        return 1;
    }
    char details[256] = "";
    size_t len = 0;
    archive_audit_kv(details, sizeof details, &len, "name", name);
    if (record(dir, c, "release", details) < 0)
        return 1;
    printf("hold %s released: retention applies to its copies again\n", name);
    return 0;
}

static int audit_list(const char *dir, int argc, char **argv)
{
    time_t since = -1;
    const char *user = NULL, *action = NULL;
    for (int i = 0; i < argc; i += 2) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v || (!strcmp(k, "--since") && utc_time_parse(v, false, &since) < 0)) {
            usage();
            return 2;
        }
        if (!strcmp(k, "--user"))
            user = v;
        else if (!strcmp(k, "--action"))
            action = v;
        else if (strcmp(k, "--since")) {
            usage();
            return 2;
        }
    }
    int n = archive_audit_list(dir, since, user, action, stdout);
    if (n >= 0)
        printf("%d record(s)\n", n);
    return n < 0;
}

int archive_hold_command(const char *dir, const struct archive_cmd *c, int argc, char **argv)
{
    if (!strcmp(argv[0], "audit"))
        return audit_list(dir, argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "list") && (argc == 2 || (argc == 3 && !strcmp(argv[2], "--all"))))
        return hold_list(dir, argc == 3);
    if (argc == 3 && !strcmp(argv[1], "release") && good_name(argv[2]))
        return hold_release(dir, c, argv[2]);
    if (argc >= 2 && good_name(argv[1]))
        return hold_place(dir, c, argv[1], argc - 2, argv + 2);
    if (argc >= 2 && !good_name(argv[1]) && strcmp(argv[1], "list") && strcmp(argv[1], "release"))
        fprintf(stderr, "postern: a hold's name is 1-63 of A-Z a-z 0-9 . _ -\n");
    usage();
    return 2;
}
