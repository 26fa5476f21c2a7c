/* main.c - posternd: load the config, open the spool, bind, fork the
 * privileged parent (privsep.c) and drop privileges, then run the event loop until SIGTERM/SIGINT, finishing
 * in-flight commits (and, for a bounded time, deliveries) before exit 0. */
#include "suspend.h"
#include "outbox.h"
#include "sinks.h"
#include "config.h"
#include "control.h"
#include "plugin_host.h"
#include "delivery.h"
#include "dns.h"
#include "kv.h"
#include "redis.h"
#include "hooks.h"
#include "http.h"
#include "console_auth.h"
#include "metrics.h"
#include "postern_lua.h"
#include "track.h"
#include "lists.h"
#include "lists_shared.h"
#include "digest.h"
#include "mta_sts.h"
#include "tlsrpt.h"
#include "mx.h"
#include "event.h"
#include "local_submit.h"
#include "log.h"
#include "privs.h"
#include "privsep.h"
#include "queue.h"
#include "runtime.h"
#include "sd_notify.h"
#include "version.h"
#include "smtp_server.h"
#include "smtp_session.h"
#include "spool.h"
#include "tls.h"
#include "workers.h"
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#define SHUTDOWN_GRACE_MS 15000

static struct ev_watch signal_watch;
static bool signals_watched;
static uint64_t shutdown_started_ms;

/* On stdout for --help/-h (exit 0), else on stderr (exit 2). */
static void usage_to(int status)
{
    fprintf(status ? stderr : stdout,
            "usage: posternd [-c FILE] [-t] | --version | --help\n"
            "  -c FILE  configuration file (else $POSTERN_CONFIG, else " CONFIG_DEFAULT_PATH ")\n"
            "  -t       check the configuration and exit (0 good, 1 with file:line on error)\n");
    exit(status);
}

static void usage(void) { usage_to(2); }

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void shutdown_tick(void)
{
    if (!shutdown_started_ms)
        return;
    int waiting = smtp_server_shutdown();
    delivery_close_idle();
    bool grace_over = ev_now_ms() - shutdown_started_ms > SHUTDOWN_GRACE_MS;
    bool idle = workers_pending() == 0 && lua_calls_pending() == 0 &&    /* all end in bounded time */
                hooks_fetches_pending() == 0;
    if ((waiting == 0 && idle && delivery_busy() == 0) || (grace_over && idle))
        ev_stop();
}

/* Gauges the loop owns, published for the HTTP thread. */
static void metrics_tick(void)
{
    metric_set(M_QUEUE_MESSAGES, NULL, (int64_t)queue_size());
    queue_publish_metrics();
}

static void on_signal(void *ctx, uint32_t events)
{
    (void)ctx;
    (void)events;
    struct signalfd_siginfo si;
    while (read(signal_watch.fd, &si, sizeof si) == sizeof si) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
            if (!shutdown_started_ms) {
                log_info("signal %d: shutting down after in-flight work", (int)si.ssi_signo);
                sd_notify_state("STOPPING=1\nSTATUS=finishing in-flight work");
                shutdown_started_ms = ev_now_ms();
                queue_load_cancel();     /* a queue still being read starts no deliveries now */
                shutdown_tick();
            }
        } else if (si.ssi_signo == SIGHUP) {
            char err[1024];
            sd_notify_state("RELOADING=1");
            if (runtime_reload(err, sizeof err) < 0)
                log_error("SIGHUP: reload refused, the running configuration stays: %s", err);
            sd_notify_state("READY=1");
        } else if (si.ssi_signo == SIGUSR1) {
            log_reopen();
        }
    }
}

/* A new generation took over: modules that read the config re-point. */
static void reconfigure(const struct config *c)
{
    log_set_level((enum log_level)c->log_level);
    plugin_host_configure(c);
    local_submit_configure(c);
    kv_configure(c);
    dns_set_timeout(c->dns_timeout_ms);
    tlsrpt_configure(c);
    smtp_server_configure(c);
    mx_init(c);
    mta_sts_init(c);
    queue_init(c);
    delivery_init(c);
    digest_configure(c);
}

/* A signalfd registered in epoll before a fork wakes the parent's epoll
 * waiters, not ours: the daemon makes its own after the split. */
static int renew_signal_watch(void)
{
    if (!signals_watched)           /* posternd -t has no loop */
        return 0;
    int old = signal_watch.fd;
    ev_del(&signal_watch);
    close(old);
    sigset_t set;
    sigemptyset(&set);
    int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++)
        sigaddset(&set, sigs[i]);
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    return fd < 0 ? -1 : ev_add(&signal_watch, fd, EPOLLIN, on_signal, NULL);
}

static int setup_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        return -1;
    signals_watched = true;
    return ev_add(&signal_watch, fd, EPOLLIN, on_signal, NULL);
}

/* Started as root: fork the privileged parent (privsep.h), which stays
 * root to open the files the configuration names; this process goes on as
 * the daemon. Nothing when not root. */
static int split_privileges(const char *path, const struct config *cfg)
{
    uid_t uid;
    gid_t gid;
    if (geteuid() != 0)
        return 0;
    if (privs_run_ids(cfg->run_user, cfg->allow_user_nobody, &uid, &gid) < 0)
        return -1;
    if (privsep_start(path, uid, gid) < 0 || renew_signal_watch() < 0) {
        log_error("cannot fork the privileged parent: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* posternd -t: everything start-up checks, as the daemon's user, creating
 * nothing (plugins see host->checking). */
static int check_config(const char *path, struct config *cfg)
{
    char err[1024];
    if (cfg->http_users && console_users_load(cfg->http_users, err, sizeof err) < 0) {
        fprintf(stderr, "posternd: %s\n", err);
        return 1;
    }
    if (split_privileges(path, cfg) < 0 || privs_become(cfg->run_user, cfg->allow_user_nobody) < 0)
        return 1;
    privsep_bind_to_parent();
    /* what the daemon reads itself, checked as the daemon */
    if (cfg->dns_trust_anchor && access(cfg->dns_trust_anchor, R_OK) < 0) {
        fprintf(stderr, "posternd: dns_trust_anchor %s: %s as the daemon's user (uid %d), who reads it\n",
                cfg->dns_trust_anchor, strerror(errno), (int)geteuid());
        return 1;
    }
    plugin_host_set_checking(true);
    if (smtp_auth_init(cfg, err, sizeof err) < 0 || hooks_load(cfg, err, sizeof err) < 0) {
        fprintf(stderr, "posternd: %s\n", err);
        return 1;
    }
    hooks_unload();
    printf("posternd: %s: configuration ok\n", path);
    return 0;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    bool check_only = false;
    if (argc == 2 && !strcmp(argv[1], "--version")) {
        printf("posternd %s (plugin ABI %d)\n", POSTERN_VERSION, POSTERN_PLUGIN_ABI_VERSION);
        return 0;
    }
    if (argc == 2 && !strcmp(argv[1], "--help"))
        usage_to(0);
    int opt;
    while ((opt = getopt(argc, argv, "c:th")) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 't': check_only = true; break;
        case 'h': usage_to(0); break;
        default: usage();
        }
    }
    if (optind != argc)
        usage();
    path = config_path_or_default(path);
    char err[1024];
    struct config loaded;
    if (config_load(path, &loaded, err, sizeof err) < 0) {
        fprintf(stderr, "posternd: %s\n", err);
        return 1;
    }
    if (check_only) {
        int rc = check_config(path, &loaded);
        config_free(&loaded);
        return rc;
    }
    runtime_init(&loaded);
    const struct config *cfg = &runtime_current()->cfg;
    log_set_level((enum log_level)cfg->log_level);
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    raise_fd_limit();
    /* blocked before any thread starts, so workers inherit the mask */
    if (ev_init() < 0 || setup_signals() < 0) {
        log_error("event loop: %s", strerror(errno));
        return 1;
    }
    if (spool_init(cfg->spool_dir, false) < 0)
        return 1;
    if (spool_lock(cfg->spool_dir, 5) < 0) {    /* kept open (and locked) until exit */
        log_error("spool %s: cannot lock %s/lock: %s", cfg->spool_dir, cfg->spool_dir,
                  errno == EWOULDBLOCK ? "another posternd, or a postern queue command, is using this spool"
                  : errno == ELOOP || errno == EINVAL ? "it is a symbolic link or not a regular file; refusing to "
                                                       "use it (move it away)"
                                                     : strerror(errno));
        return 1;
    }
    spool_clear_tmp();
    if (smtp_server_bind(cfg) < 0 || http_bind(cfg) < 0)
        return 1;
    if (tls_server_init(cfg->tls_cert, cfg->tls_key, err, sizeof err) < 0 ||   /* as root: keys may be 0600 */
        tls_client_init(cfg->tls_ca_file, cfg->tls_session_cache, err, sizeof err) < 0) {
        log_error("TLS: %s", err);
        return 1;
    }
    if (control_start(cfg->control_socket) < 0)
        return 1;
    if (split_privileges(path, cfg) < 0)
        return 1;
    if (privs_drop(cfg->run_user, cfg->allow_user_nobody, cfg->spool_dir, cfg->control_socket) < 0)
        return 1;
    privsep_bind_to_parent();
    /* a log file is opened as the daemon's user, never by root in a tree it may write */
    if (log_open(cfg->log_target, err, sizeof err) < 0) {
        log_error("%s", err);
        return 1;
    }
    char lists_path[4096];
    lists_db_path(cfg, lists_path, sizeof lists_path);
    if (track_start(cfg, err, sizeof err) < 0 ||        /* as the daemon's user: the stores are its files */
        lists_open(lists_path, err, sizeof err) < 0 || digest_start(cfg, err, sizeof err) < 0) {
        log_error("%s", err);
        return 1;
    }
    local_submit_expect();
    local_submit_configure(cfg);
    if (smtp_auth_init(cfg, err, sizeof err) < 0 || runtime_load_chain(err, sizeof err) < 0) {
        log_error("%s", err);   /* AUTH's backend as the daemon's user: it must read its sasldb */
        return 1;
    }
    if (workers_start(cfg->worker_threads) < 0 || lua_threads_start(cfg->lua_threads, true, cfg->lua_loop_first) < 0) {
        log_error("cannot start worker threads");
        return 1;
    }
    if (dns_init(cfg->dns_server, cfg->dns_trust_anchor) < 0)
        return 1;
    dns_set_timeout(cfg->dns_timeout_ms);
    kv_configure(cfg);
    if (cfg->redis_server &&
        redis_start(cfg->redis_server, cfg->redis_password, cfg->redis_database, cfg->redis_timeout_ms) < 0) {
        log_error("cannot start the Redis connection");
        return 1;
    }
    lists_shared_start();        /* with redis_server: the allow/block lists shared by every node */
    if (outbox_start(cfg, err, sizeof err) < 0 || sinks_start(cfg, err, sizeof err) < 0) {
        log_error("%s", err);    /* the event stream: before the spool is read (events made again) */
        return 1;
    }
    mx_init(cfg);
    mta_sts_init(cfg);
    queue_init(cfg);
    suspend_load(cfg->spool_dir);
    delivery_init(cfg);
    runtime_on_switch(reconfigure);
    queue_load_spool((size_t)cfg->queue_read_before_ready);
    if (local_submit_start(queue_add_local) < 0) {
        log_error("cannot start local submission: %s", strerror(errno));
        return 1;
    }
    tlsrpt_start(cfg);
    if (smtp_server_start() < 0 || http_start() < 0) {
        log_error("cannot start listeners: %s", strerror(errno));
        return 1;
    }
    ev_on_tick(smtp_server_tick);
    ev_on_tick(delivery_tick);
    ev_on_tick(control_tick);
    ev_on_tick(queue_run_due);
    ev_on_tick(shutdown_tick);
    ev_on_tick(metrics_tick);
    ev_on_tick(tlsrpt_tick);
    ev_on_tick(dns_tick);
    ev_on_tick(digest_tick);
    log_info("posternd ready: hostname=%s spool=%s queue=%zu", cfg->hostname, cfg->spool_dir, queue_size());
    char status[300];
    snprintf(status, sizeof status, "READY=1\nSTATUS=ready: %zu message(s) queued", queue_size());
    sd_notify_state(status);
    ev_run();
    queue_load_stop();
    tlsrpt_stop();
    local_submit_stop();
    sinks_stop();            /* before the Redis connection goes; the rest waits in the outbox */
    redis_stop();            /* what is still out is answered now (failed) */
    control_stop();
    http_stop();
    workers_stop();
    outbox_stop();           /* after the last events; spool files waiting on them go */
    track_stop();            /* after the last events (workers' commits, deliveries) */
    lists_close();
    dns_shutdown();
    bool lua_clean = lua_threads_stop();
    log_info("posternd stopped; %zu message(s) remain queued", queue_size());
    if (lua_clean) {        /* else a stuck Lua thread may still read them */
        hooks_unload();     /* the chain is the current generation's: it goes with it */
        runtime_current()->chain = NULL;
        runtime_shutdown();
    }
    return 0;
}
