/* test_config.c - config parsing, file:line errors, lookups. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>
#include "config.h"

static char dir[] = "/tmp/postern-test-config-XXXXXX";

static const char *write_file(const char *name, const char *text)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static const char *base =
    "listen = 127.0.0.1:2525, [::1]:2525\n"
    "hostname = gw.test\n"
    "spool_dir = /tmp/x\n"
    "relay_domains = example.test, .sub.test\n"
    "trusted_networks = 10.0.0.0/8 192.0.2.1\n"
    "default_transport = smtp:[127.0.0.1]:2526\n";

static int load(const char *text, struct config *cfg, char *err)
{
    return config_load(write_file("main.conf", text), cfg, err, 512);
}

static void good_config(void **state)
{
    (void)state;
    struct config cfg;
    char err[512];
    char text[2048];
    snprintf(text, sizeof text, "%sretry_min = 5m\nretry_max = 4h\nmax_queue_lifetime = 5d # comment\n", base);
    assert_int_equal(load(text, &cfg, err), 0);
    assert_int_equal(cfg.nlisten, 2);
    assert_string_equal(cfg.hostname, "gw.test");
    assert_int_equal(cfg.retry_min, 300);
    assert_int_equal(cfg.retry_max, 14400);
    assert_int_equal(cfg.max_queue_lifetime, 5 * 86400);
    assert_true(config_is_relay_domain(&cfg, "EXAMPLE.test"));
    assert_false(config_is_relay_domain(&cfg, "sub.example.test"));
    assert_true(config_is_relay_domain(&cfg, "a.sub.test"));
    assert_false(config_is_relay_domain(&cfg, "sub.test"));
    struct sockaddr_in sin = {.sin_family = AF_INET};
    inet_pton(AF_INET, "10.1.2.3", &sin.sin_addr);
    assert_true(config_is_trusted(&cfg, (struct sockaddr *)&sin));
    inet_pton(AF_INET, "192.0.2.2", &sin.sin_addr);
    assert_false(config_is_trusted(&cfg, (struct sockaddr *)&sin));
    config_free(&cfg);
}

static void errors_name_file_and_line(void **state)
{
    (void)state;
    struct config cfg;
    char err[512];
    char text[2048];
    snprintf(text, sizeof text, "%s\nbogus_key = 1\n", base);
    assert_int_equal(load(text, &cfg, err), -1);
    assert_non_null(strstr(err, "main.conf:8: unknown key 'bogus_key'"));
    config_free(&cfg);
    snprintf(text, sizeof text, "%sretry_min = 5 minutes\n", base);
    assert_int_equal(load(text, &cfg, err), -1);
    assert_non_null(strstr(err, "main.conf:7: retry_min"));
    config_free(&cfg);
    snprintf(text, sizeof text, "%sxclient_networks = 10.0.0.0/33\n", base);
    assert_int_equal(load(text, &cfg, err), -1);
    assert_non_null(strstr(err, ":7: bad network"));
    config_free(&cfg);
    /* a key given twice names both lines; plugin options may repeat */
    snprintf(text, sizeof text, "%strusted_networks = 10.0.0.0/8\n", base);
    assert_int_equal(load(text, &cfg, err), -1);
    assert_non_null(strstr(err, ":7: duplicate key 'trusted_networks' (first set at line"));
    config_free(&cfg);
    snprintf(text, sizeof text, "%slisten = nowhere\n", base);
    assert_int_equal(load(text, &cfg, err), -1);
    config_free(&cfg);
    snprintf(text, sizeof text, "%sjust words\n", base);
    assert_int_equal(load(text, &cfg, err), -1);
    assert_non_null(strstr(err, ":7: expected 'key = value'"));
    config_free(&cfg);
    assert_int_equal(load("hostname = x\n", &cfg, err), -1);
    assert_non_null(strstr(err, "listen"));
    config_free(&cfg);
}

/* Regression (fuzz_config): a config refused after lists and strings were
 * parsed leaked them. LeakSanitizer (make test) fails this binary if so. */
static void refused_config_leaves_nothing_allocated(void **state)
{
    (void)state;
    struct config cfg;
    char err[512];
    assert_int_equal(load("relay_domains = a.test, .b.test\ntrusted_networks = 10.0.0.0/8\n"
                          "spool_dir = /tmp/x\nplugins = a, b\nbogus line\n", &cfg, err), -1);
    assert_non_null(strstr(err, "expected 'key = value'"));
    assert_null(cfg.relay_domains);
    assert_null(cfg.spool_dir);
}

static void tables(void **state)
{
    (void)state;
    write_file("relay", "# relay domains\nfile.test\n\n.deep.test  # subdomains\n");
    write_file("transport", "special.test smtp:[127.0.0.3]:2600\n.deep.test smtp:[127.0.0.4]:2601\n");
    char text[2048];
    snprintf(text, sizeof text,
             "listen = 127.0.0.1:2525\nspool_dir = /tmp/x\nrelay_domains = file:%s/relay\n"
             "transport_table = file:%s/transport\ndefault_transport = smtp:[127.0.0.1]:2526\n",
             dir, dir);
    struct config cfg;
    char err[512];
    assert_int_equal(load(text, &cfg, err), 0);
    assert_true(config_is_relay_domain(&cfg, "file.test"));
    assert_true(config_is_relay_domain(&cfg, "x.deep.test"));
    assert_string_equal(config_transport_for(&cfg, "special.test")->text, "smtp:[127.0.0.3]:2600");
    assert_string_equal(config_transport_for(&cfg, "a.deep.test")->text, "smtp:[127.0.0.4]:2601");
    assert_string_equal(config_transport_for(&cfg, "other.test")->text, "smtp:[127.0.0.1]:2526");
    config_free(&cfg);
    write_file("transport", "ok.test smtp:[127.0.0.3]:2600\nbad.test nonsense\n");
    assert_int_equal(load(text, &cfg, err), -1);
    assert_non_null(strstr(err, "transport:2: bad next hop"));
    config_free(&cfg);
}

static void durations_and_sizes(void **state)
{
    (void)state;
    assert_int_equal(parse_duration("30"), 30);
    assert_int_equal(parse_duration("30s"), 30);
    assert_int_equal(parse_duration("2m"), 120);
    assert_int_equal(parse_duration("1w"), 604800);
    assert_int_equal(parse_duration("-1"), -1);
    assert_int_equal(parse_duration("5x"), -1);
    assert_int_equal(parse_duration("5mm"), -1);
    size_t s;
    assert_int_equal(parse_size("10M", &s), 0);
    assert_int_equal(s, 10 * 1024 * 1024);
    assert_int_equal(parse_size("-1", &s), -1);
    assert_int_equal(parse_size("1T", &s), -1);
}

/* Postfix's bracket meaning: [host] = its address, host = its MX. */
static void next_hops(void **state)
{
    (void)state;
    struct nexthop h;
    char err[200];
    assert_int_equal(nexthop_parse("smtp:[Relay.Example.test]:2526", &h, err, sizeof err), 0);
    assert_string_equal(h.host, "relay.example.test");
    assert_false(h.lookup_mx);
    assert_int_equal(h.port, 2526);
    assert_int_equal(nexthop_parse("smtp:mx.example.test", &h, err, sizeof err), 0);
    assert_true(h.lookup_mx);
    assert_int_equal(h.port, 25);
    assert_int_equal(nexthop_parse("smtp:[127.0.0.1]:2600", &h, err, sizeof err), 0);
    assert_string_equal(h.host, "");
    assert_int_equal(h.addr.ss_family, AF_INET);
    assert_int_equal(ntohs(((struct sockaddr_in *)&h.addr)->sin_port), 2600);
    assert_int_equal(nexthop_parse("smtp:127.0.0.1", &h, err, sizeof err), 0);
    assert_int_equal(ntohs(((struct sockaddr_in *)&h.addr)->sin_port), 25);
    assert_int_equal(nexthop_parse("smtp:[::1]:2525", &h, err, sizeof err), 0);
    assert_int_equal(h.addr.ss_family, AF_INET6);
    const char *bad[] = {"smtp:", "smtp:[a b]:25", "smtp:host:0", "smtp:host:99999", "smtp:[host", "smtp:host:25x",
                         "smtp:-host", "lmtpx:host", "smtp:[host]x", "lmtp:unix:relative", "lmtp:unix:/a b",
                         "lmtp:unix:/tab\there"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(nexthop_parse(bad[i], &h, err, sizeof err), -1);
    /* LMTP: A/AAAA only, port 24 unless given, or a Unix socket */
    assert_int_equal(nexthop_parse("lmtp:mail.example.test", &h, err, sizeof err), 0);
    assert_true(h.lmtp);
    assert_false(h.lookup_mx);
    assert_int_equal(h.port, 24);
    assert_int_equal(nexthop_parse("lmtp:[::1]:2424", &h, err, sizeof err), 0);
    assert_int_equal(ntohs(((struct sockaddr_in6 *)&h.addr)->sin6_port), 2424);
    assert_int_equal(nexthop_parse("lmtp:unix:/run/dovecot/lmtp", &h, err, sizeof err), 0);
    assert_int_equal(h.addr.ss_family, AF_UNIX);
    assert_string_equal(((struct sockaddr_un *)&h.addr)->sun_path, "/run/dovecot/lmtp");
}

static void outbound_tables(void **state)
{
    (void)state;
    write_file("sasl", "[10.0.0.1]:587 alice:pass with spaces\nsmart.test bob:pw plaintext\n");
    write_file("rates", "slow.test 10\n.big.test 600\nfree.test 0\n");
    char text[2048];
    snprintf(text, sizeof text, "%ssmtp_sasl_password_maps = file:%s/sasl\ndest_rate_limit = 120\n"
             "dest_rate_limit_table = file:%s/rates\nsmtp_bind_address = 192.0.2.9\nsmtp_helo_name = out.test\n",
             base, dir, dir);
    struct config cfg;
    char err[512];
    assert_int_equal(load(text, &cfg, err), 0);
    const struct sasl_entry *a = config_sasl_for(&cfg, "[10.0.0.1]:587");
    assert_non_null(a);
    assert_string_equal(a->user, "alice");
    assert_string_equal(a->password, "pass with spaces");
    assert_false(a->plaintext_ok);
    a = config_sasl_for(&cfg, "SMART.test");
    assert_non_null(a);
    assert_true(a->plaintext_ok);
    assert_null(config_sasl_for(&cfg, "other.test"));
    assert_int_equal(config_rate_limit_for(&cfg, "slow.test"), 10);
    assert_int_equal(config_rate_limit_for(&cfg, "a.big.test"), 600);
    assert_int_equal(config_rate_limit_for(&cfg, "free.test"), 0);
    assert_int_equal(config_rate_limit_for(&cfg, "else.test"), 120);
    assert_int_equal(cfg.smtp_bind_address.ss_family, AF_INET);
    assert_string_equal(cfg.smtp_helo_name, "out.test");
    config_free(&cfg);
    write_file("sasl", "nocolon.test justauser\n");
    assert_int_equal(load(text, &cfg, err), -1);
    assert_non_null(strstr(err, "sasl:1: smtp_sasl_password_maps: expected"));
    config_free(&cfg);
}

/* What check-config prints is a config that reads back as itself: every
 * row of the key table parses what it prints (secrets and empty values
 * aside, which print as "(set)" and nothing). */
static char *printed(const struct config *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    config_print(cfg, f);
    fclose(f);
    return text;
}

static void printed_config_reads_back_the_same(void **state)
{
    (void)state;
    struct config cfg, again;
    char err[512], text[4096];
    snprintf(text, sizeof text, "%sretry_min = 2m\nmessage_size_limit = 20M\ndns_timeout = 7s\nredis_timeout = 300ms\n"
             "redis_failure = tempfail\nlog_level = warning\npregreet_wait = 5s\ntlsrpt_interval = 2d\n"
             "smtp_mx_address_limit = 3\nsubmission_listen = 127.0.0.1:2587\nhttp_listen = 127.0.0.1:9025\n", base);
    assert_int_equal(load(text, &cfg, err), 0);
    char *first = printed(&cfg);
    /* keep the lines that carry a value; drop comments, empty values and secrets */
    char *filtered = calloc(1, strlen(first) + 1), *save = NULL, *copy = strdup(first);
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        const char *eq = strstr(line, " = ");
        if (line[0] == '#' || !eq || !eq[3] || !strcmp(eq + 3, "(set)"))
            continue;
        strcat(filtered, line);
        strcat(filtered, "\n");
    }
    assert_int_equal(load(filtered, &again, err), 0);
    char *second = printed(&again);
    assert_string_equal(first, second);
    free(first);
    free(second);
    free(filtered);
    free(copy);
    config_free(&cfg);
    config_free(&again);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(good_config), cmocka_unit_test(errors_name_file_and_line),
        cmocka_unit_test(tables), cmocka_unit_test(durations_and_sizes),
        cmocka_unit_test(refused_config_leaves_nothing_allocated), cmocka_unit_test(next_hops),
        cmocka_unit_test(outbound_tables), cmocka_unit_test(printed_config_reads_back_the_same),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        rc = 1;
    return rc;
}
