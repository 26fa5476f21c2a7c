/* test_chain.c - the hook chain's verdicts (gateway/chain/hooks.c), run
 * synchronously over two real test plugins (tests/plugins/probe.c, built
 * as probe.so and probe2.so): which link decides, which links run after
 * it, the reply each verdict ends with (the plugin's, or the default when
 * it gave none or one of the wrong class), ERROR turned into a logged
 * TEMPFAIL, and the decision log. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "config.h"
#include "hooks.h"
#include "metrics.h"
#include "txn.h"

static char dir[] = "/tmp/postern-test-chain-XXXXXX";
static char plugin_dir[4096];
static struct config cfg;

/* Which links ran, in order, as the observer saw them. */
static char ran[256];

static void observe(void *ctx, enum postern_stage st, const char *link, postern_verdict v, const txn_t *t)
{
    (void)ctx, (void)st, (void)t;
    size_t n = strlen(ran);
    snprintf(ran + n, sizeof ran - n, "%s%s=%s", n ? " " : "", link, verdict_name(v));
}

static int setup(void **state)
{
    (void)state;
    if (!mkdtemp(dir))
        return -1;
    char conf[512];
    snprintf(conf, sizeof conf, "%s/chain.conf", dir);
    FILE *f = fopen(conf, "w");
    if (!f)
        return -1;
    fprintf(f, "listen = 127.0.0.1:2525\nspool_dir = %s\ndefault_transport = smtp:[127.0.0.1]:2526\n"
               "plugin_dir = %s\nplugins = probe probe2\n"
               "probe.rule = mail REJECT rej1@ 554 5.7.1 go away\n"
               "probe.rule = mail REJECT rej0@\n"
               "probe.rule = mail REJECT rejw@ 451 4.7.1 not a rejection\n"
               "probe.rule = mail TEMPFAIL tmp1@ 450 4.2.0 later\n"
               "probe.rule = mail TEMPFAIL tmp0@\n"
               "probe.rule = mail QUARANTINE qua1@ suspicious sender\n"
               "probe.rule = mail QUARANTINE qua0@\n"
               "probe.rule = mail DISCARD drop@\n"
               "probe.rule = mail ACCEPT acc@\n"
               "probe.rule = mail ERROR err@\n"
               "probe2.rule = mail REJECT second@ 550 5.7.1 said the second link\n",
            dir, plugin_dir);
    fclose(f);
    char err[1024];
    if (config_load(conf, &cfg, err, sizeof err) < 0 || hooks_load(&cfg, err, sizeof err) < 0) {
        fprintf(stderr, "setup: %s\n", err);
        return -1;
    }
    hooks_set_observer(observe, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    hooks_set_observer(NULL, NULL);
    hooks_unload();
    config_free(&cfg);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* One MAIL stage through the chain. */
/* t: zeroed, or from an earlier call (what it holds is freed first). */
static postern_verdict mail_from(txn_t *t, const char *sender)
{
    txn_free(t);
    memset(t, 0, sizeof *t);
    ran[0] = '\0';
    return hooks_run_sync(POSTERN_STAGE_MAIL, t, sender, strlen(sender));
}

static const struct verdict_case {
    const char *sender;
    postern_verdict verdict;
    const char *reply;        /* t->reply after the stage */
    const char *ran;          /* the links the observer saw, with their verdicts */
} cases[] = {
    {"a@example.test", POSTERN_CONTINUE, "", "probe=CONTINUE probe2=CONTINUE"},
    {"rej1@x.test", POSTERN_REJECT, "554 5.7.1 go away", "probe=REJECT"},
    {"rej0@x.test", POSTERN_REJECT, "550 5.7.1 Rejected by policy (probe)", "probe=REJECT"},
    {"rejw@x.test", POSTERN_REJECT, "550 5.7.1 Rejected by policy (probe)", "probe=REJECT"},
    {"tmp1@x.test", POSTERN_TEMPFAIL, "450 4.2.0 later", "probe=TEMPFAIL"},
    {"tmp0@x.test", POSTERN_TEMPFAIL, "451 4.7.1 Try again later (probe)", "probe=TEMPFAIL"},
    {"qua1@x.test", POSTERN_QUARANTINE, "suspicious sender", "probe=QUARANTINE"},
    {"qua0@x.test", POSTERN_QUARANTINE, "quarantined by probe", "probe=QUARANTINE"},
    {"drop@x.test", POSTERN_DISCARD, "", "probe=DISCARD"},
    /* ACCEPT ends the stage: the second link, which would reject, never runs */
    {"acc@second@x.test", POSTERN_ACCEPT, "", "probe=ACCEPT"},
    /* CONTINUE hands on: the second link decides */
    {"second@x.test", POSTERN_REJECT, "550 5.7.1 said the second link", "probe=CONTINUE probe2=REJECT"},
    /* a link that fails tempfails the message, named */
    {"err@x.test", POSTERN_TEMPFAIL, "451 4.3.0 Error: plugin probe failed", "probe=TEMPFAIL"},
};

static void each_verdict_ends_the_stage_with_its_reply(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct verdict_case *c = &cases[i];
        txn_t t = {0};
        postern_verdict v = mail_from(&t, c->sender);
        if (v != c->verdict || strcmp(t.reply, c->reply) || strcmp(ran, c->ran))
            fail_msg("%s: got %s \"%s\" (ran: %s), expected %s \"%s\" (ran: %s)", c->sender, verdict_name(v), t.reply,
                     ran, verdict_name(c->verdict), c->reply, c->ran);
        if (c->verdict != POSTERN_CONTINUE)
            assert_string_equal(t.verdict_by, strstr(c->ran, "probe2=") ? "probe2" : "probe");
        txn_free(&t);
    }
}

static void decisions_are_logged_and_errors_counted(void **state)
{
    (void)state;
    txn_t t = {0};
    int64_t errors = metric_value(M_PLUGIN_ERRORS, "link=\"probe\"");
    assert_int_equal(mail_from(&t, "err@x.test"), POSTERN_TEMPFAIL);
    assert_int_equal(metric_value(M_PLUGIN_ERRORS, "link=\"probe\""), errors + 1);
    assert_string_equal(decisions_text(t.decisions), "mail probe tempfail: 451 4.3.0 Error: plugin probe failed\n");
    assert_int_equal(mail_from(&t, "a@example.test"), POSTERN_CONTINUE);
    assert_string_equal(decisions_text(t.decisions), "");
    txn_free(&t);
}

static void stages_nobody_wants_are_not_wanted(void **state)
{
    (void)state;
    txn_t t = {0};
    assert_true(hooks_wanted(&t, POSTERN_STAGE_MAIL));      /* probe has every stage */
    assert_string_equal(stage_name(POSTERN_STAGE_EOM), "eom");
    assert_string_equal(verdict_name((postern_verdict)99), "invalid");
}

int main(int argc, char **argv)
{
    (void)argc;
    char self[4096];
    snprintf(self, sizeof self, "%s", argv[0]);
    snprintf(plugin_dir, sizeof plugin_dir, "%s/test-plugins", dirname(self));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(each_verdict_ends_the_stage_with_its_reply),
        cmocka_unit_test(decisions_are_logged_and_errors_counted),
        cmocka_unit_test(stages_nobody_wants_are_not_wanted),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
