"""The plugins shipped in plugins/: size_limit, header_checks (PCRE2),
archive (Bcc in the journal, hash chain, `postern archive verify` catching
tampering), route, tls_required (placeholder)."""
from harness import *

PLUGDIR = os.path.join(BUILD, "plugins")


def gw(sink, plugins, **conf):
    return Gateway(sink=sink, plugin_dir=PLUGDIR, plugins=plugins, **conf).start()


def writable_dir():
    d = tempfile.mkdtemp(prefix="plugtest-")
    os.chmod(d, 0o777)        # plugins run as the unprivileged user
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


def postern(g, *args):
    return subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, *args], capture_output=True, text=True,
                          timeout=30)


send = send_mail


def test_size_limit():
    sink = Sink(addr(2))
    g = gw(sink, "size_limit", **{"size_limit.max": "2k"})
    c = Client(g.host)
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<a@src.test> SIZE=5000").startswith("552 5.3.4")
    assert send(g, body="x" * 70 + "\r\n" * 1).startswith("250")
    assert send(g, body=("y" * 70 + "\r\n") * 50).startswith("552 5.3.4")
    sink.wait_count(1)
    time.sleep(0.3)
    assert sink.count() == 1
    g.stop()


def test_header_checks():
    sink = Sink(addr(2))
    rules = os.path.join(writable_dir(), "header_checks")
    with open(rules, "w") as f:
        f.write("# test rules\n/^Subject:.*viagra/i REJECT No pharmacy spam\n/^Subject: later/ TEMPFAIL busy\n"
                "/^X-Spam-Flag: YES/ DISCARD\n/^Subject: review/ QUARANTINE needs review\n"
                "/^X-Secret:/ IGNORE\n/^X-Watch:/ WARN\n")
    g = gw(sink, "header_checks", **{"header_checks.rules": rules})
    assert send(g, headers="Subject: cheap VIAGRA\r\n") == "550 5.7.1 No pharmacy spam"
    assert send(g, headers="Subject: later\r\n") == "451 4.7.1 busy"
    assert send(g, headers="Subject: folded\r\n  viagra inside the fold\r\n").startswith("550 5.7.1")
    assert send(g, headers="Subject: x\r\nX-Spam-Flag: YES\r\n").startswith("250")          # discarded
    qid = queue_id(send(g, headers="Subject: review me\r\n"))
    assert send(g, headers="Subject: fine\r\nX-Secret: drop me\r\nX-Watch: log me\r\n").startswith("250")
    m = sink.wait_count(1)[0]
    assert b"Subject: fine" in m and b"X-Secret" not in m and b"X-Watch: log me" in m
    assert "header_checks: warning: X-Watch: log me" in g.log()
    line = [l for l in postern(g, "queue", "list").stdout.splitlines() if l.startswith(qid)][0]
    assert "hold" in line and "needs review" in line
    time.sleep(0.3)
    assert sink.count() == 1
    g.stop()
    with open(rules, "a") as f:
        f.write("/unclosed(/ REJECT broken\n")
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf, "-t"], capture_output=True, text=True)
    assert r.returncode != 0 and "%s:8: bad regex" % rules in r.stderr, r.stderr


def test_our_trace_header_survives_header_checks_and_lua():
    """A rule that drops every Received: field, and a script that tries to
    remove and rewrite ours: the upstream field goes, posternd's stays and
    nothing hangs on it."""
    sink = Sink(addr(2))
    rules = os.path.join(writable_dir(), "header_checks")
    with open(rules, "w") as f:
        f.write("/^Received:/ IGNORE\n")
    script = readable_file("trace.lua", 'postern.on("data", function(tx)\n'
                           '  local d = tx:delete_header("Received")\n'
                           '  local c = tx:change_header("Received", "forged", 1)\n'
                           '  tx:add_header("X-Trace-Test", "delete=" .. tostring(d) .. " change=" .. tostring(c))\n'
                           'end)\n')
    g = gw(sink, "header_checks, lua:" + script, **{"header_checks.rules": rules})
    qid = queue_id(send(g, headers="Received: from upstream.test by mx.upstream.test; Mon, 7 Dec 2026\r\n"
                                   "Subject: trace\r\n"))
    m = sink.wait_count(1)[0]
    ours, _ = our_received_and_rest(m)
    assert b"by gw.postern.test (Postern) with ESMTP id " + qid.encode() in ours, m[:800]
    assert b"upstream.test" not in m and b"forged" not in m, m[:800] + g.log()[-1500:].encode()
    assert b"X-Trace-Test: delete=false change=false" in m, m[:800]
    g.stop()


def test_declared_options_are_checked_with_file_and_line_and_documented():
    """Shipped plugins declare their options: posternd refuses an unknown
    one, a second value for one that does not repeat, and a value of the
    wrong kind before the plugin starts, naming file:line; postern-plugins(5)
    is made from the same tables."""
    sink = Sink(addr(2))
    for opts, want in (({"greylist.dealy": "300", "greylist.db": "/tmp/x.db"}, "greylist.dealy: unknown option (known: db,"),
                       ({"greylist.delay": "five", "greylist.db": "/tmp/x.db"}, "greylist.delay = five: expected a number"),
                       ({"greylist.on_error": "maybe", "greylist.db": "/tmp/x.db"},
                        "greylist.on_error = maybe: not one of the choices tempfail|accept")):
        g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="greylist", **opts)
        r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf, "-t"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode != 0 and want in r.stderr and re.search(re.escape(g.conf) + r":\d+: ", r.stderr), \
            (opts, r.stderr)
    g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="greylist")
    with open(g.conf, "a") as f:
        f.write("greylist.db = /tmp/a.db\ngreylist.db = /tmp/b.db\n")
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf, "-t"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0 and "greylist.db given twice (first at line" in r.stderr, r.stderr
    # a repeating option (header_checks.rule) may come twice
    g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="header_checks")
    with open(g.conf, "a") as f:
        f.write("header_checks.rule = /^X-A:/ IGNORE\nheader_checks.rule = /^X-B:/ IGNORE\n")
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf, "-t"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    doc = subprocess.run([os.path.join(BUILD, "postern"), "plugin-options", PLUGDIR], capture_output=True, text=True,
                         timeout=30)
    assert doc.returncode == 0 and "| `greylist.delay` | number | 300 |" in doc.stdout, doc.stdout[:500]
    assert "(declares no option table" not in doc.stdout, "a shipped plugin declares no options"
    man = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen-plugin-man.py"), BUILD, "--check"],
                         capture_output=True, text=True, timeout=60)
    assert man.returncode == 0, man.stderr


def test_archive_keeps_bcc_and_verify_detects_tampering():
    sink = Sink(addr(2))
    adir = os.path.join(writable_dir(), "archive")
    g = gw(sink, "archive", **{"archive.dir": adir})
    # To: names one recipient; the Bcc recipient exists only in the envelope
    qid = queue_id(send(g, rcpts=("to@example.test", "hidden-bcc@example.test"),
                        headers="Subject: journal me\r\nTo: to@example.test\r\n"))
    for i in range(3):
        send(g, headers="Subject: more %d\r\n" % i)
    sink.wait_count(4)
    files = sorted(glob.glob(os.path.join(adir, "*", "*.eml")))
    assert len(files) == 4
    mine = [f for f in files if f.endswith(qid + ".eml")][0]
    text = open(mine, "rb").read()
    assert b"X-Postern-Envelope-To: <hidden-bcc@example.test>" in text
    assert b"X-Postern-Envelope-To: <to@example.test>" in text
    assert b"X-Postern-Envelope-From: <alice@src.test>" in text
    assert b"Subject: journal me" in text and b"hello" in text
    r = postern(g, "archive", "verify")
    assert r.returncode == 0 and "archive ok: 4 message(s)" in r.stdout, r.stdout + r.stderr
    # change one byte of an archived message
    with open(files[1], "r+b") as f:
        f.seek(-4, 2)
        f.write(b"XXXX")
    r = postern(g, "archive", "verify")
    assert r.returncode == 1 and "CHANGED " + os.path.relpath(files[1], adir) in r.stdout, r.stdout
    # delete another
    os.unlink(files[2])
    r = postern(g, "archive", "verify")
    assert "DELETED " + os.path.relpath(files[2], adir) in r.stdout, r.stdout
    # an archived file the chain does not know
    shutil.copy(mine, os.path.join(os.path.dirname(mine), "0000000000000000.eml"))
    assert "UNCHAINED" in postern(g, "archive", "verify").stdout
    g.stop()


def test_archive_chain_truncation_is_detected():
    sink = Sink(addr(2))
    adir = os.path.join(writable_dir(), "archive")
    g = gw(sink, "archive", **{"archive.dir": adir})
    for i in range(3):
        send(g, headers="Subject: t%d\r\n" % i)
    sink.wait_count(3)
    g.stop()
    chain = os.path.join(adir, "chain")
    lines = open(chain).read().splitlines(True)
    os.unlink(os.path.join(adir, lines[-1].split()[1]))     # drop the last message and its chain line
    open(chain, "w").writelines(lines[:-1])
    r = postern(g, "archive", "verify")
    assert r.returncode == 1 and "TRUNCATED chain" in r.stdout, r.stdout
    # the chain continues correctly across a restart
    shutil.rmtree(adir)
    os.makedirs(adir)
    os.chmod(adir, 0o777)
    g.start()
    send(g, headers="Subject: a\r\n")
    sink.wait_count(4)
    g.stop()
    g.start()
    send(g, headers="Subject: b\r\n")
    sink.wait_count(5)
    r = postern(g, "archive", "verify")
    assert r.returncode == 0 and "archive ok: 2 message(s)" in r.stdout, r.stdout
    g.stop()


def test_archive_directory_replaced_under_the_daemon_is_detected():
    sink = Sink(addr(2))
    adir = os.path.join(writable_dir(), "archive")
    g = gw(sink, "archive", **{"archive.dir": adir})
    send(g, headers="Subject: before\r\n")
    sink.wait_count(1)
    os.rename(adir, adir + ".old")            # someone swaps the directory under the running daemon
    os.makedirs(adir)
    os.chmod(adir, 0o777)
    rep = send(g, headers="Subject: after\r\n")
    assert "queued as" in rep, rep
    wait_for(lambda: "is no longer the chain this daemon opened" in g.log(), 10, "the detection")
    time.sleep(0.5)
    assert sink.count() == 1, "a message went out without its archive copy"
    g.stop()


def test_archive_only_when_requested():
    sink = Sink(addr(2))
    adir = os.path.join(writable_dir(), "archive")
    g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="probe, archive", **{
        "archive.dir": adir, "archive.mode": "requested", "probe.mutate": "eom request_archive"})
    # the probe lives in test-plugins: link it next to the shipped ones for this run
    pdir = writable_dir()
    for so in glob.glob(os.path.join(PLUGDIR, "*.so")) + [os.path.join(BUILD, "test-plugins", "probe.so")]:
        os.symlink(so, os.path.join(pdir, os.path.basename(so)))
    g.set(plugin_dir=pdir)
    g.start()
    send(g)
    sink.wait_count(1)
    assert len(glob.glob(os.path.join(adir, "*", "*.eml"))) == 1, g.log()
    g.stop()
    # without the request nothing is archived
    g2 = gw(sink, "archive", **{"archive.dir": adir + "2", "archive.mode": "requested"})
    send(g2)
    sink.wait_count(2)
    assert glob.glob(os.path.join(adir + "2", "*", "*.eml")) == []
    g2.stop()


def test_route_by_recipient_and_sender():
    default, sales, vip = Sink(addr(2)), Sink(addr(3), port=2600), Sink(addr(4), port=2601)
    g = Gateway(sink=default, plugin_dir=PLUGDIR, plugins="route",
                **{"route.rule": "rcpt /^sales@/ smtp:[%s]:2600" % addr(3)})
    with open(g.conf, "a") as f:
        f.write("route.rule = sender /@vip\\.test$/ smtp:[%s]:2601\n" % addr(4))
    g.start()
    send(g, rcpts=("sales@example.test", "other@example.test"))
    send(g, rcpts=("ceo@example.test",), sender="boss@vip.test")
    assert sink_rcpts(sales.wait_count(1)[0]) == [b"sales@example.test"]
    assert sink_rcpts(default.wait_count(1)[0]) == [b"other@example.test"]
    assert sink_rcpts(vip.wait_count(1)[0]) == [b"ceo@example.test"]
    g.stop()


def test_tls_required_placeholder_refuses_listed_domains():
    sink = Sink(addr(2))
    g = gw(sink, "tls_required", **{"tls_required.domains": "secure.test, Partner.test"})
    c = Client(g.host)
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<a@src.test>")
    assert c.cmd("RCPT TO:<x@secure.test>").startswith("530 5.7.0")
    assert c.cmd("RCPT TO:<x@PARTNER.test>").startswith("530 5.7.0")
    assert c.cmd("RCPT TO:<x@example.test>").startswith("250")
    g.stop()


run_tests(globals())
