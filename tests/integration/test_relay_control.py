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


run_tests(globals())
