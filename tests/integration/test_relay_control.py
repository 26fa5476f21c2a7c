"""Relay control: relay domains from anyone, anything from trusted networks,
everything else 554 5.7.1 (open-relay attempts)."""
from harness import *


def test_open_relay_attempt_is_refused():
    sink = Sink(addr(2))
    # only 127.0.N.5 is trusted; clients connect from 127.0.N.9
    g = Gateway(sink=sink, trusted_networks=addr(5) + "/32", relay_domains="example.test, .sub.example.test").start()
    c = Client(g.host, source=addr(9))
    c.cmd("EHLO attacker.test")
    assert c.cmd("MAIL FROM:<spammer@evil.test>").startswith("250")
    for victim in ("victim@gmail.test", "x@example.test.evil.test", "x@notexample.test",
                   "x%y@example.test@evil.test", "x@[192.0.2.1]"):
        rep = c.cmd("RCPT TO:<%s>" % victim)
        assert rep.startswith("554 5.7.1") or rep.startswith("501"), (victim, rep)
    assert c.cmd("DATA").startswith("554 5.5.1")
    # relay domains (and configured subdomains) are accepted from anyone
    assert c.cmd("RCPT TO:<x@example.test>").startswith("250")
    assert c.cmd("RCPT TO:<x@EXAMPLE.TEST>").startswith("250")
    assert c.cmd("RCPT TO:<x@a.sub.example.test>").startswith("250")
    assert "relay access denied" in g.log()
    g.stop()


ROUTED = ["victim%gmail.test@example.test", "gmail.test!victim@example.test", '"victim@gmail.test"@example.test',
          '"victim%gmail.test"@example.test', "@mx.example.test:victim@example.test",
          "@a.test,@b.test:victim@gmail.test"]


def test_sender_specified_routing_is_refused_from_untrusted_clients():
    """user%host@relay, host!user@relay, "a@b"@relay and source routes would
    be routed onwards by the internal server (Postfix's allow_untrusted_routing)."""
    sink = Sink(addr(2))
    g = Gateway(sink=sink, trusted_networks=addr(5) + "/32").start()
    c = Client(g.host, source=addr(9))
    c.cmd("EHLO attacker.test")
    assert c.cmd("MAIL FROM:<spammer@evil.test>").startswith("250")
    for victim in ROUTED:
        rep = c.cmd("RCPT TO:<%s>" % victim)
        assert rep.startswith("554 5.7.1") and "sender-specified routing" in rep, (victim, rep)
    assert c.cmd("RCPT TO:<plain@example.test>").startswith("250")
    assert c.cmd("DATA").startswith("354")
    c.send("Subject: only the plain one\r\n\r\nx\r\n")
    assert "queued as" in c.cmd(".")
    assert sink_rcpts(sink.wait_count(1)[0]) == [b"plain@example.test"]
    assert "sender-specified routing; from=<spammer@evil.test>" in g.log()
    # a trusted client may route as it likes (it may relay anywhere anyway)
    t = Client(g.host, source=addr(5))
    t.cmd("EHLO trusted.test")
    t.cmd("MAIL FROM:<app@internal.test>")
    for routed in ROUTED[:3]:
        assert t.cmd("RCPT TO:<%s>" % routed).startswith("250"), routed
    g.stop()
    # off only by explicit choice
    g2 = Gateway(sink=sink, trusted_networks=addr(5) + "/32", allow_untrusted_routing="yes").start()
    c = Client(g2.host, source=addr(9))
    c.cmd("EHLO attacker.test")
    c.cmd("MAIL FROM:<someone@evil.test>")
    assert c.cmd("RCPT TO:<%s>" % ROUTED[0]).startswith("250")
    g2.stop()


def test_trusted_network_relays_anywhere():
    sink = Sink(addr(2))
    g = Gateway(sink=sink, trusted_networks=addr(5) + "/32").start()
    c = Client(g.host, source=addr(5))
    c.cmd("EHLO trusted.test")
    c.cmd("MAIL FROM:<app@internal.test>")
    assert c.cmd("RCPT TO:<someone@elsewhere.test>").startswith("250")
    c.cmd("DATA")
    c.send("Subject: outbound\r\n\r\nhi\r\n")
    assert "queued as" in c.cmd(".")
    assert sink_rcpts(sink.wait_count(1)[0]) == [b"someone@elsewhere.test"]
    g.stop()


def test_swaks_open_relay_attempt():
    sink = Sink(addr(2))
    g = Gateway(sink=sink, trusted_networks=addr(5) + "/32").start()
    r = subprocess.run(["swaks", "--server", "%s:2525" % g.host, "--local-interface", addr(9),
                        "--from", "a@evil.test", "--to", "victim@other.test", "--quit-after", "RCPT"],
                       capture_output=True, text=True, timeout=30)
    assert "554 5.7.1 <victim@other.test>: Relay access denied" in r.stdout, r.stdout
    assert r.returncode != 0
    g.stop()


def test_inside_only_headers_never_leave_on_mail_relayed_out():
    sink = Sink(addr(2))
    # 127.0.N.5 is trusted; 127.0.N.9 is the Internet; authres adds our Authentication-Results
    g = Gateway(sink=sink, trusted_networks=addr(5) + "/32", plugin_dir=os.path.join(BUILD, "plugins"),
                plugins="authres").start()
    incoming = ("Subject: %s\r\nX-Spam-Score: 3.2\r\nX-Spam: Yes\r\nX-Spamd-Result: default\r\n"
                "Authentication-Results: mx.other.test; spf=pass\r\n")

    def delivered(subject):
        m = [x for x in sink.messages() if (b"Subject: %s" % subject.encode()) in x]
        return m[0] if m else None

    # a trusted client to a domain outside relay_domains: relayed out, the fields go
    assert "queued as" in send_mail(g, rcpts=("far@elsewhere.test",), headers=incoming % "out", source=addr(5))
    # the same client inside: they stay (ours added); the Internet to us: they stay
    assert "queued as" in send_mail(g, rcpts=("x@example.test",), headers=incoming % "inside", source=addr(5))
    assert "queued as" in send_mail(g, rcpts=("x@example.test",), headers=incoming % "inbound", source=addr(9))
    wait_for(lambda: all(delivered(s) for s in ("out", "inside", "inbound")), 15, "three deliveries")
    out = delivered("out")
    assert b"X-Spam" not in out.replace(b"X-Spamd-Result", b"") and b"Authentication-Results" not in out, out
    assert b"X-Spamd-Result: default" in out            # a prefix rule needs its dash: X-Spam-*
    # the three that came in are removed; ours (authres) is never added
    assert re.search(r": removed 3 inside-only header field\(s\) from mail relayed out", g.log()), g.log()[-1500:]
    for kept in ("inside", "inbound"):
        m = delivered(kept)
        assert b"X-Spam-Score: 3.2" in m and b"X-Spam: Yes" in m and m.count(b"Authentication-Results:") == 2, m
    g.stop()
    # configurable: empty keeps everything
    sink2 = Sink(addr(3))
    g = Gateway(sink=sink2, trusted_networks=addr(5) + "/32", outbound_remove_headers="").start()
    assert "queued as" in send_mail(g, rcpts=("far@elsewhere.test",), headers=incoming % "kept", source=addr(5))
    m = sink2.wait_count(1)[0]
    assert b"X-Spam-Score: 3.2" in m and b"Authentication-Results: mx.other.test" in m
    g.stop()


run_tests(globals())
