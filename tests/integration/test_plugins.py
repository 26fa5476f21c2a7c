"""The hook chain end to end with the probe test plugin: every verdict at
every stage (codes on the wire, what reaches the sink, what sits in the
spool), chain order, plugin errors, every mutation, and the loader's
refusals (wrong ABI, missing symbol, unknown option)."""
from harness import *

PLUGDIR = os.path.join(BUILD, "test-plugins")
SMTP_STAGES = ["connect", "helo", "mail", "rcpt", "data", "body", "eom"]
NO = "550 5.7.1 probe says no"
LATER = "451 4.7.1 probe says later"


def gw(sink, **conf):
    conf.setdefault("plugins", "probe")
    return Gateway(sink=sink, plugin_dir=PLUGDIR, **conf).start()


def postern(g, *args):
    return subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, *args], capture_output=True, text=True,
                          timeout=30)


def transaction(g, subject="probe", rcpts=("x@example.test",), body="hello\r\n"):
    """Run one transaction; return the first refusal (stage, reply) or ("done", final reply)."""
    c = Client(g.host)
    if not c.banner.startswith("220"):
        return "connect", c.banner
    steps = [("helo", "EHLO client.test"), ("mail", "MAIL FROM:<alice@src.test>")]
    steps += [("rcpt", "RCPT TO:<%s>" % r) for r in rcpts]
    for stage, cmd in steps:
        rep = c.cmd(cmd)
        if not rep.startswith("250"):
            c.close()
            return stage, rep.split("\n")[-1]
    assert c.cmd("DATA").startswith("354")
    c.send("Subject: %s\r\nX-Remove: me\r\n\r\n%s" % (subject, body))
    rep = c.cmd(".")
    c.cmd("QUIT")
    c.close()
    return ("done" if rep.startswith("250") else "data"), rep


def test_reject_and_tempfail_at_every_smtp_stage():
    sink = Sink(addr(2))
    for stage in SMTP_STAGES:
        for verdict, text in (("REJECT", NO), ("TEMPFAIL", LATER)):
            reply = text if stage != "connect" or verdict == "REJECT" else "421 4.7.0 probe says later"
            g = gw(sink, **{"probe.rule": "%s %s * %s" % (stage, verdict, reply)})
            where, rep = transaction(g)
            expect = {"data": "data", "body": "data", "eom": "data"}.get(stage, stage)
            assert (where, rep) == (expect, reply), (stage, verdict, where, rep)
            # Postfix's NOQUEUE fields: the sender and recipients known by then, protocol, HELO
            fields = {"connect": "proto=SMTP helo=<>", "helo": "proto=ESMTP helo=<client.test>",
                      "mail": "from=<alice@src.test> proto=ESMTP helo=<client.test>",
                      "rcpt": "from=<alice@src.test> to=<x@example.test> proto=ESMTP helo=<client.test>"}.get(
                stage, "from=<alice@src.test> to=<x@example.test> proto=ESMTP helo=<client.test>")
            assert "%s by probe at %s: %s; %s" % (verdict, stage, reply, fields) in g.log(), g.log()[-800:]
            assert g.queue_files() == []
            g.stop()
    assert sink.count() == 0


def test_discard_at_every_stage():
    sink = Sink(addr(2))
    for stage in SMTP_STAGES + ["queue", "deliver"]:
        g = gw(sink, **{"probe.rule": "%s DISCARD *" % stage})
        where, rep = transaction(g)
        assert where == "done" and "queued as" in rep, (stage, rep)
        qid = queue_id(rep)
        wait_for(lambda: not g.queue_files(), 5, "discarded message gone (%s)" % stage)
        assert "DISCARD by probe at %s" % stage in g.log(), stage
        if stage in SMTP_STAGES:
            assert qid + ": discarded (probe)" in g.log()
        g.stop()
    time.sleep(0.3)
    assert sink.count() == 0


def test_quarantine_at_every_stage_then_release():
    sink = Sink(addr(2))
    for stage in SMTP_STAGES + ["queue", "deliver"]:
        g = gw(sink, **{"probe.rule": "%s QUARANTINE * held for review at %s" % (stage, stage)})
        before = sink.count()
        where, rep = transaction(g, subject="q-" + stage)
        assert where == "done", (stage, rep)
        qid = queue_id(rep)
        wait_for(lambda: "hold" in postern(g, "queue", "list").stdout, 5, "hold state (%s)" % stage)
        line = [l for l in postern(g, "queue", "list").stdout.splitlines() if l.startswith(qid)][0]
        assert "hold" in line and "held for review at %s" % stage in line, line
        time.sleep(0.5)
        assert sink.count() == before, "a quarantined message was delivered (%s)" % stage
        # released by the admin, it is delivered (the rule does not fire twice for stages before the 250)
        if stage != "deliver":    # a deliver-stage rule would quarantine it again on every attempt
            assert postern(g, "queue", "release", qid).returncode == 0
            sink.wait_count(before + 1)
        g.stop()


def test_accept_stops_the_chain_and_order_matters():
    sink = Sink(addr(2))
    g = gw(sink, plugins="probe, probe2", **{"probe.rule": "rcpt ACCEPT vip", "probe2.rule": "rcpt REJECT * " + NO})
    c = Client(g.host)
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<a@src.test>")
    assert c.cmd("RCPT TO:<vip@example.test>").startswith("250")      # probe accepts first
    assert c.cmd("RCPT TO:<other@example.test>") == NO                 # probe continues, probe2 rejects
    g.stop()


def test_plugin_error_tempfails_and_the_daemon_keeps_serving():
    sink = Sink(addr(2))
    g = gw(sink, **{"probe.rule": "mail ERROR boom"})
    c = Client(g.host)
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<boom@src.test>").startswith("451 4.3.0 Error: plugin probe failed")
    assert c.cmd("MAIL FROM:<fine@src.test>").startswith("250")
    assert "plugin probe failed at stage mail" in g.log()
    where, rep = transaction(g)
    assert where == "done"
    sink.wait_count(1)
    g.stop()


def test_queue_and_deliver_stage_reject_bounce_and_tempfail_defers():
    sink = Sink(addr(2))          # also the sender's route: DSNs land here
    for stage in ("queue", "deliver"):
        g = gw(sink, **{"probe.rule": "%s REJECT bounce-me 550 5.7.1 not after queueing (%s)" % (stage, stage)})
        before = sink.count()
        where, rep = transaction(g, subject="bounce-me")
        assert where == "done"
        msgs = sink.wait_count(before + 1)
        # dump file names are random: look for this stage's DSN among all
        want = b"550 5.7.1 not after queueing (%s)" % stage.encode()
        assert any(b"multipart/report" in m and want in m for m in msgs), stage
        g.stop()
    g = gw(sink, **{"probe.rule": "deliver TEMPFAIL later 451 4.7.1 not now"})
    qid = queue_id(transaction(g, subject="later")[1])
    wait_for(lambda: "not now" in postern(g, "queue", "list").stdout, 5, "deferral reason in queue list")
    assert qid in g.queue_files()
    g.stop()


def test_header_mutations():
    sink = Sink(addr(2))
    g = gw(sink, **{"probe.mutate": "data header_insert 0 X-First one"})
    with open(g.conf, "a") as f:      # several mutate lines for the one plugin
        f.write("probe.mutate = eom header_add X-Probe yes\nprobe.mutate = eom header_change Subject changed\n"
                "probe.mutate = eom header_delete X-Remove\n")
    g.stop()
    g.start()
    transaction(g, subject="original")
    m = strip_sink_headers(sink.wait_count(1)[0])
    headers = m.split(b"\n\n", 1)[0].split(b"\n")
    assert headers[0] == b"X-First: one", headers
    assert headers[1].startswith(b"Received: from client.test")
    assert b"Subject: changed" in headers and b"Subject: original" not in m
    assert not any(h.startswith(b"X-Remove") for h in headers)
    assert headers[-1] == b"X-Probe: yes", headers
    assert m.split(b"\n\n", 1)[1] == b"hello\n\n"
    # a body over 4 MiB is rewritten into a second file, not in place: the same result
    big = "".join("line %07d %s\r\n" % (i, "y" * 60) for i in range(70000))
    assert transaction(g, subject="big", body=big)[0] == "done"
    m = strip_sink_headers(max(sink.wait_count(2, timeout=60), key=len))
    head, body = m.split(b"\n\n", 1)
    assert b"X-Probe: yes" in head.split(b"\n") and b"Subject: changed" in head
    assert body == big.replace("\r\n", "\n").encode() + b"\n", (len(body), len(big))
    g.stop()


def test_body_replacement_and_envelope_mutations():
    sink = Sink(addr(2))
    other = Sink(addr(3), port=2600)
    g = gw(sink)
    with open(g.conf, "a") as f:
        f.write("probe.mutate = eom body_replace replaced body\n"
                "probe.mutate = mail rcpt_add added@example.test\n"
                "probe.mutate = eom rcpt_delete drop@example.test\n"
                "probe.mutate = eom sender_change bob@src.test\n"
                "probe.mutate = queue set_nexthop routed@example.test smtp:[%s]:2600\n" % addr(3))
    g.stop()
    g.start()
    where, rep = transaction(g, rcpts=("keep@example.test", "drop@example.test", "routed@example.test"),
                             body="original body\r\n")
    assert where == "done", rep
    m = sink.wait_count(1)[0]
    assert sorted(sink_rcpts(m)) == [b"added@example.test", b"keep@example.test"], sink_rcpts(m)
    assert b"X-Mail-Args: <bob@src.test>" in m
    assert strip_sink_headers(m).split(b"\n\n", 1)[1] == b"replaced body\n\n"
    r = other.wait_count(1)[0]
    assert sink_rcpts(r) == [b"routed@example.test"]
    g.stop()


def test_submit_message_queues_a_plugins_own_message_and_refuses_bad_ones():
    """host->submit_message from the QUEUE stage: a well-formed notice is
    committed and delivered; bare LF, NUL, an over-long line, no header
    section and a '%'-routed recipient are refused with EINVAL, and the
    notice's own QUEUE stage cannot make another (ELOOP)."""
    sink = Sink(addr(2))
    g = gw(sink)
    bad = ("bare_lf", "nul", "long_line", "no_header", "routed")
    with open(g.conf, "a") as f:
        for kind in ("good",) + bad:
            f.write("probe.mutate = queue submit %s notice@example.test\n" % kind)
    g.stop()
    g.start()
    assert transaction(g, subject="original")[0] == "done"
    msgs = sink.wait_count(2)
    notice = [m for m in msgs if b"Subject: probe notice good" in m]
    assert len(notice) == 1 and sink_rcpts(notice[0]) == [b"notice@example.test"], msgs
    assert re.search(rb"^Received: by gw\.postern\.test \(Postern\) id [0-9A-F]{16};", strip_sink_headers(notice[0]),
                     re.M), notice[0][:400]
    qid = re.search(r"probe: submit good: queued as ([0-9A-F]{16})", g.log()).group(1)
    assert re.search(r"%s: from=<probe@gw\.postern\.test>, nrcpt=1, .*proto=LOCAL" % qid, g.log())
    for kind in bad:
        assert "probe: submit %s: refused: Invalid argument" % kind in g.log(), kind
    # the notice's own QUEUE stage asks again: refused, or every notice would make another
    wait_for(lambda: "%s: plugin: probe: submit good: refused: Too many levels of symbolic links" % qid in g.log(), 5,
             "the notice's own submit refused")
    time.sleep(1)
    assert sink.count() == 2
    g.stop()


def test_mutations_outside_their_stage_are_refused():
    sink = Sink(addr(2))
    g = gw(sink, **{"probe.mutate": "rcpt header_add X-Too early"})
    with open(g.conf, "a") as f:
        f.write("probe.mutate = queue body_replace too late\n")
    g.stop()
    g.start()
    transaction(g)
    m = sink.wait_count(1)[0]
    assert b"X-Too" not in m and b"too late" not in m
    assert g.log().count("refused at this stage") == 2
    g.stop()


def test_stages_see_the_envelope_and_deliver_runs_per_attempt():
    sink = Sink(addr(2), extra=["-r", "RCPT"])     # 4xx: every attempt is deferred
    rec = os.path.join(tempfile.mkdtemp(), "record")
    os.chmod(os.path.dirname(rec), 0o777)      # plugins run as the unprivileged user
    on_cleanup(lambda: shutil.rmtree(os.path.dirname(rec), ignore_errors=True))
    g = gw(sink, **{"probe.record": rec})
    qid = queue_id(transaction(g, subject="seen")[1])
    wait_for(lambda: open(rec).read().count("deliver " + qid) >= 2, 10, "two deliver-stage calls")
    text = open(rec).read()
    for stage in ("connect", "helo", "mail", "rcpt", "data", "body", "eom"):
        assert any(l.startswith(stage + " ") for l in text.splitlines()), stage
    assert "queue %s <alice@src.test> <x@example.test> subject= seen" % qid in text, text
    g.stop()


def test_nonblocking_stages_run_on_the_loop_nested_and_pipelined():
    """probe_inline marks every stage nonblocking, so DATA, BODY and EOM all
    finish on the loop, one inside the other's continuation. With commands
    pipelined behind the end of data, each gets exactly one reply, in order,
    after a refusal at EOM and after an acceptance."""
    sink = Sink(addr(2))
    g = gw(sink, plugins="probe_inline", **{"probe_inline.rule": "eom REJECT bad 550 5.7.1 inline refusal",
                                             "probe_inline.mutate": "data header_add X-Inline yes"})
    c = Client(g.host)
    assert "PIPELINING" in c.cmd("EHLO client.test")
    msg = "Subject: %s\r\n\r\nbody\r\n.\r\n"
    c.send("MAIL FROM:<a@src.test>\r\nRCPT TO:<x@example.test>\r\nDATA\r\n")
    assert [c.reply()[:3] for _ in range(3)] == ["250", "250", "354"]
    c.send(msg % "bad" + "MAIL FROM:<b@src.test>\r\nRCPT TO:<y@example.test>\r\nDATA\r\n")
    replies = [c.reply() for _ in range(4)]
    assert [r[:3] for r in replies] == ["550", "250", "250", "354"], replies
    assert "inline refusal" in replies[0]
    c.send(msg % "good" + "QUIT\r\n")
    last = [c.reply() for _ in range(2)]
    assert last[0].startswith("250") and "queued as" in last[0] and last[1].startswith("221"), last
    assert c.closed()
    m = strip_sink_headers(sink.wait_count(1)[0])
    assert b"X-Inline: yes" in m and b"Subject: good" in m
    time.sleep(0.5)
    assert sink.count() == 1
    g.stop()


def test_plugin_built_against_the_older_header_loads():
    """struct postern_plugin grew (nonblocking_stages, 0.6): a plugin built
    with the 0.5 layout, whose struct_size is smaller, still loads and runs,
    and the field it lacks counts as 0 (its DATA callback runs on a worker)."""
    sink = Sink(addr(2))
    g = gw(sink, plugins="old_layout, probe")
    assert transaction(g, subject="old")[0] == "done"
    m = strip_sink_headers(sink.wait_count(1)[0])
    assert b"X-Old-Layout: loaded" in m.split(b"\n\n", 1)[0], m
    assert "plugin old_layout loaded" in g.log()
    g.stop()


def test_loader_refusals_are_clear():
    sink = Sink(addr(2))
    for plugin, expect in (("bad_abi", "built for plugin ABI version 999, this posternd speaks version 1"),
                           ("no_entry", "does not export postern_plugin_entry()"),
                           ("missing", "cannot load")):
        g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins=plugin)
        for args in (["-t"], []):
            r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf, *args], capture_output=True,
                               text=True, timeout=20)
            assert r.returncode != 0 and "plugin %s" % plugin in r.stderr and expect in r.stderr, r.stderr
    g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="probe", **{"probe.bogus": "1"})
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf, "-t"], capture_output=True, text=True)
    assert r.returncode != 0 and "plugin probe: unknown option 'bogus'" in r.stderr, r.stderr
    g = Gateway(sink=sink, plugin_dir=PLUGDIR, **{"other.key": "1"})
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf, "-t"], capture_output=True, text=True)
    assert r.returncode != 0 and "'other.key' for a plugin that is not in the plugins chain" in r.stderr


def test_out_of_tree_plugin_builds_against_the_installed_header_only():
    prefix = tempfile.mkdtemp(prefix="postern-prefix-")
    work = tempfile.mkdtemp(prefix="hello-plugin-")
    os.chmod(work, 0o755)
    on_cleanup(lambda: shutil.rmtree(prefix, ignore_errors=True))
    on_cleanup(lambda: shutil.rmtree(work, ignore_errors=True))
    san = ["SAN=1"] if os.path.basename(BUILD) == "build-san" else []
    r = subprocess.run(["make", "-s", "install", "PREFIX=" + prefix] + san, cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.path.exists(os.path.join(prefix, "include/postern/postern_plugin.h"))
    for f in ("hello.c", "Makefile"):          # built far from the source tree
        shutil.copy(os.path.join(ROOT, "tests/out-of-tree-plugin", f), work)
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(prefix, "lib/pkgconfig"))
    r = subprocess.run(["make", "-s"], cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    cflags = subprocess.run(["pkg-config", "--cflags", "postern"], env=env, capture_output=True, text=True).stdout
    assert cflags.strip() == "-I%s/include/postern" % prefix, cflags
    sink = Sink(addr(2))
    g = Gateway(sink=sink, plugin_dir=work, plugins="hello").start()
    c = Client(g.host)
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<a@src.test>")
    assert c.cmd("RCPT TO:<nobody@example.test>").startswith("550 5.1.1 hello plugin")
    c.close()
    send_message(g.host, 2525, "a@src.test", ["x@example.test"], "Subject: hello\r\n\r\nbody\r\n")
    assert b"X-Hello: from an out-of-tree plugin" in sink.wait_count(1)[0]
    g.stop()


run_tests(globals())
