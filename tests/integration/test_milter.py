"""The milter plugin against real milters: a libmilter milter of our own
(tests/milter/test_milter.c) for every reply and modification, the timeout
and default action for a milter that hangs or is down, and the real
OpenDKIM milter signing for posternd (the signature verifies in posternd's
own dkim_verify)."""
from harness import *

PLUGDIR = os.path.join(BUILD, "plugins")


class TestMilter:
    def __init__(self, port=8899):
        self.spec = "inet:%d@%s" % (port, addr(7))
        self.log = open(tempfile.mktemp(prefix="milter-", suffix=".log"), "w")
        self.proc = subprocess.Popen([os.path.join(BUILD, "test-milter"), self.spec], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        on_cleanup(self.stop)
        wait_for(lambda: port_open(addr(7), port) or self.proc.poll() is not None, 10, "test-milter")
        assert self.proc.poll() is None, open(self.log.name).read()

    def stop(self):
        terminate(self.proc)
        os.unlink(self.log.name)


def milter_gw(sink, server, **conf):
    return Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="milter", **{"milter.server": server}, **conf).start()


def send(g, subject, rcpts=("x@example.test",), extra="", body="original body\r\n"):
    return send_mail(g, rcpts=rcpts, headers="From: <a@src.test>\r\nSubject: %s\r\n%s" % (subject, extra), body=body)


def test_every_modification_is_applied():
    m = TestMilter()
    sink = Sink(addr(2))
    g = milter_gw(sink, m.spec)
    r = send(g, "mods", rcpts=("x@example.test", "del@example.test"), extra="X-Remove-Me: yes\r\n")
    assert r.startswith("250"), r
    msg = sink.wait_count(1)[0]
    assert sorted(sink_rcpts(msg)) == [b"added@example.test", b"x@example.test"], msg[:600]
    assert b"X-Mail-Args: <new-sender@milter.test>" in msg
    body = strip_sink_headers(msg)
    heads, text = body.split(b"\n\n", 1)
    names = [l.split(b":")[0] for l in heads.split(b"\n") if l and not l[:1].isspace()]
    assert names[0] == b"X-Milter-Top" and names[-1] == b"X-Milter-Added", names
    assert b"Subject: changed by the milter" in heads and b"X-Remove-Me" not in heads
    assert text == b"replaced body\nsecond line\n\n", text
    g.stop()


def test_every_reply():
    m = TestMilter()
    sink = Sink(addr(2))
    g = milter_gw(sink, m.spec)
    assert send(g, "x", rcpts=("reject-rcpt@example.test",)).startswith("550 5.7.1")
    assert send(g, "x", rcpts=("tempfail-rcpt@example.test",)).startswith("451 4.7.1")
    assert send(g, "x", rcpts=("custom-rcpt@example.test",)).startswith("550 5.7.9 custom rcpt refusal")
    assert send(g, "reject").startswith("550 5.7.1")
    assert send(g, "tempfail").startswith("451 4.7.1")
    assert send(g, "custom").startswith("554 5.7.2 custom refusal at end of message")
    assert send(g, "discard").startswith("250")
    q = send(g, "quarantine")
    assert q.startswith("250"), q
    assert send(g, "accept", rcpts=("acc@example.test",)).startswith("250")
    assert send(g, "progress", rcpts=("prog@example.test",)).startswith("250")
    got = {sink_rcpts(x)[0] for x in sink.wait_count(2)}
    assert got == {b"acc@example.test", b"prog@example.test"}, got
    time.sleep(0.5)
    assert sink.count() == 2                         # discarded and quarantined ones stay away
    qid = queue_id(q)
    assert qid in g.queue_files() and "QUARANTINE by milter" in g.log()
    listing = subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "queue", "list"], capture_output=True,
                             text=True, timeout=20).stdout
    assert "held by the test milter" in listing, listing
    g.stop()


def test_one_milter_connection_per_session_with_connect_and_helo_verdicts():
    """The milter sees a session as Postfix shows it: one connection, one
    connect and helo, every message in it (an aborted one as ABORT); its
    verdict on connect refuses the session, on HELO answers HELO."""
    m = TestMilter()
    sink = Sink(addr(2))
    g = milter_gw(sink, m.spec)
    c = Client(g.host)
    assert c.cmd("EHLO client.test").startswith("250")
    assert c.cmd("MAIL FROM:<a@src.test>").startswith("250")
    assert c.cmd("RCPT TO:<x@example.test>").startswith("250")
    assert c.cmd("RSET").startswith("250")                       # the milter gets ABORT
    for i in (1, 2):
        assert c.cmd("MAIL FROM:<a@src.test>").startswith("250")
        assert c.cmd("RCPT TO:<n%d@example.test>" % i).startswith("250")
        assert c.cmd("DATA").startswith("354")
        c.send("From: <a@src.test>\r\nSubject: count\r\n\r\nbody\r\n")
        assert c.cmd(".").startswith("250")
    c.close()
    counts = sorted(re.search(rb"X-Milter-Count: ([^\n]*)", msg).group(1).decode() for msg in sink.wait_count(2))
    assert counts == ["messages 2 helos 1 aborts 1", "messages 3 helos 1 aborts 1"], counts
    refused = Client(g.host, source="127.0.0.66")
    assert refused.banner.startswith("550 5.7.1"), refused.banner
    refused.close()
    c = Client(g.host)
    rep = c.cmd("EHLO bad-helo.test")
    assert rep.startswith("550 5.7.8 helo refused by the test milter"), rep
    assert c.cmd("EHLO client.test").startswith("250")          # HELO again, on the same connection
    c.close()
    g.stop()
    # XCLIENT presents another client: a new milter session, which refuses it
    g = milter_gw(sink, m.spec, xclient_networks="127.0.0.0/8")
    c = Client(g.host)
    c.cmd("EHLO proxy.test")
    rep = c.cmd("XCLIENT ADDR=127.0.0.66")
    assert rep.startswith("550 5.7.1"), rep
    c.close()
    g.stop()


def test_hanging_or_missing_milter_gets_the_default_action():
    m = TestMilter()
    sink = Sink(addr(2))
    g = milter_gw(sink, m.spec + " timeout=2 default=tempfail")
    t0 = time.time()
    assert send(g, "hang").startswith("451 4.7.1")
    assert 1.5 < time.time() - t0 < 10
    assert "no reply at end of message" in g.log()
    g.stop()
    g2 = milter_gw(sink, m.spec + " timeout=2 default=accept")
    assert send(g2, "hang", rcpts=("late@example.test",)).startswith("250")
    assert sink_rcpts(sink.wait_count(1)[0]) == [b"late@example.test"]
    g2.stop()
    # nothing listening: tempfail at MAIL, or go on without it
    g3 = milter_gw(sink, "inet:1@%s timeout=2" % addr(8))
    assert send(g3, "x").startswith("451 4.7.1")
    assert "cannot connect" in g3.log()
    g3.stop()
    bad = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="milter", **{"milter.server": "tcp:1.2.3.4"})
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", bad.conf, "-t"], capture_output=True, text=True)
    assert r.returncode != 0 and "expected inet:PORT@HOST" in r.stderr, r.stderr


def test_opendkim_signs_through_the_milter_plugin():
    """posternd calls the real OpenDKIM milter (sign mode); a second posternd
    verifies the signature with its own dkim_verify."""
    d = tempfile.mkdtemp(prefix="odk-")
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    key, txt = dkim_key(d, "m1")
    dns = DnsServer(["m1._domainkey.src.test. TXT %s" % txt])
    odk = OpenDKIM(8893, dns, "s", domain="src.test", selector="m1", key=key)
    sink = Sink(addr(2))
    v = Gateway(host=addr(5), port=2526, sink=sink, hostname="mx.postern.test", plugin_dir=PLUGDIR,
                plugins="dkim_verify, authres", dns_server=dns.address()).start()
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(5), plugin_dir=PLUGDIR, plugins="milter",
                **{"milter.server": odk.spec.replace("inet:%s:" % addr(7), "inet:") + "@" + addr(7)}).start()
    assert send(g, "sign me").startswith("250")
    m = sink.wait_count(1, timeout=30)[0]
    assert re.search(rb"^DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/\w+; d=src\.test; s=m1;", m, re.M), m[:1200]
    ar = re.sub(rb"\s+", b" ", re.search(rb"^Authentication-Results: (.*?)\n(?=\S)", strip_sink_headers(m),
                                         re.M | re.S).group(1))
    assert b"dkim=pass header.d=src.test header.s=m1" in ar, ar
    g.stop()
    v.stop()


run_tests(globals())
