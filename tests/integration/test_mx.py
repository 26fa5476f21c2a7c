"""MX routing against a real DNS server (unbound with test zones) and real
sinks on 127.0.N.x: best MX, fallback to the backup, all MX down then one
returns, posternd as backup MX (only better MX hosts, never itself), null
MX, implicit MX, NXDOMAIN, DNS temporary failure, equal preferences, every
address of a host, smtp_mx_address_limit (40 dead MX hosts: 5 connections
per attempt) and smtp_mx_session_limit (3 MX hosts that all defer: 2 sessions
per attempt)."""
from harness import *

ZONE = [
    "best.test. MX 10 mx1.best.test.", "best.test. MX 20 mx2.best.test.",
    "mx1.best.test. A {2}", "mx2.best.test. A {3}",
    "alldown.test. MX 10 a.alldown.test.", "alldown.test. MX 20 b.alldown.test.",
    "a.alldown.test. A {4}", "b.alldown.test. A {5}",
    # posternd (gw.postern.test at {1}) is the backup for backup.test
    "backup.test. MX 10 primary.backup.test.", "backup.test. MX 20 gw.backup.test.",
    "backup.test. MX 30 worse.backup.test.",
    "primary.backup.test. A {6}", "gw.backup.test. A {1}", "worse.backup.test. A {7}",
    # ... and the best MX of selfbest.test, by name
    "selfbest.test. MX 10 gw.postern.test.", "selfbest.test. MX 20 other.selfbest.test.",
    "gw.postern.test. A {1}", "other.selfbest.test. A {7}",
    "nullmx.test. MX 0 .",
    "implicit.test. A {8}",
    "equal.test. MX 10 e1.equal.test.", "equal.test. MX 10 e2.equal.test.",
    "e1.equal.test. A {9}", "e2.equal.test. A {10}",
    "multi.test. MX 10 m.multi.test.", "m.multi.test. A {11}", "m.multi.test. A {12}",
]


def setup(**conf):
    dns = DnsServer([z.format(*[addr(i) for i in range(13)]) for z in ZONE], refuse=["tempfail.test"])
    senders = Sink(addr(20))      # where DSNs to alice@src.test go
    table = tempfile.NamedTemporaryFile("w", delete=False, suffix=".transport")
    table.write("src.test smtp:[%s]:2526\n" % addr(20))
    table.close()
    on_cleanup(lambda: os.unlink(table.name))
    cfg = dict(default_transport="mx", dns_server=dns.address(), smtp_port="2526",
               transport_table="file:" + table.name, relay_domains="example.test, backup.test")
    cfg.update(conf)
    g = Gateway(**cfg).start()
    return g, senders


def send(g, rcpt, subject="mx"):
    return queue_id(send_message(g.host, 2525, "alice@src.test", [rcpt], "Subject: %s\r\n\r\nx\r\n" % subject))


def dsn_status(raw):
    m = re.search(rb"^Status: (\S+)", raw, re.M)
    return m.group(1).decode() if m else None


def test_best_mx_then_backup_when_primary_is_down():
    g, _ = setup()
    mx1 = Sink(addr(2))
    mx2 = Sink(addr(3))
    send(g, "x@best.test", "to best")
    mx1.wait_count(1)
    assert mx2.count() == 0
    mx1.stop()
    send(g, "y@best.test", "primary down")
    mx2.wait_count(1)
    assert "trying the next mail server for best.test" in g.log()
    g.stop()


def test_all_mx_down_then_one_returns():
    g, _ = setup()
    qid = send(g, "x@alldown.test")
    wait_for(lambda: g.log().count(qid + ": to=<x@alldown.test>") >= 2, 10, "attempts on both MX hosts")
    assert g.queue_files() == [qid]
    b = Sink(addr(5))
    b.wait_count(1, timeout=15)
    wait_for(lambda: not g.queue_files(), 5, "spool to empty")
    g.stop()


def test_backup_mx_holds_until_primary_returns_and_never_uses_itself_or_worse():
    g, _ = setup()
    worse = Sink(addr(7))
    c = Client(g.host, source=addr(30))       # an untrusted client: backup.test is a relay domain
    c.cmd("EHLO sender.test")
    c.cmd("MAIL FROM:<alice@src.test>")
    assert c.cmd("RCPT TO:<x@backup.test>").startswith("250")
    c.cmd("DATA")
    c.send("Subject: hold me\r\n\r\nx\r\n")
    qid = queue_id(c.cmd("."))
    wait_for(lambda: g.log().count(qid + ": to=<x@backup.test>") >= 3, 15, "three attempts on the primary")
    assert g.queue_files() == [qid]
    assert worse.count() == 0, "a worse MX must never get it"
    assert "[%s]:2526" % addr(1) not in g.log(), "posternd must never deliver to itself"
    assert all(("[%s]:2526" % addr(6)) in l for l in g.log().splitlines()
               if qid + ": to=<x@backup.test>" in l and "relay=" in l), g.log()
    primary = Sink(addr(6))
    primary.wait_count(1, timeout=15)
    wait_for(lambda: not g.queue_files(), 5, "spool to empty")
    assert worse.count() == 0
    g.stop()


def test_best_mx_is_ourselves_bounces_as_loop():
    g, senders = setup()
    other = Sink(addr(7))
    send(g, "x@selfbest.test")
    raw = senders.wait_count(1)[0]
    assert dsn_status(raw) == "5.4.6" and b"loops back to myself" in raw
    assert other.count() == 0
    g.stop()


def test_null_mx_bounces_immediately():
    g, senders = setup()
    send(g, "x@nullmx.test")
    raw = senders.wait_count(1)[0]
    assert dsn_status(raw) == "5.1.10", raw
    assert "removed" in g.log()
    g.stop()


def test_implicit_mx_uses_the_domain_address():
    g, _ = setup()
    s = Sink(addr(8))
    send(g, "x@implicit.test")
    s.wait_count(1)
    g.stop()


def test_nxdomain_bounces_and_dns_tempfail_defers():
    g, senders = setup()
    send(g, "x@nosuch.test")
    raw = senders.wait_count(1)[0]
    assert dsn_status(raw) == "5.1.2", raw
    qid = send(g, "x@tempfail.test")
    wait_for(lambda: "451 4.4.3 DNS lookup of MX for tempfail.test failed" in g.log(), 10, "DNS deferral")
    time.sleep(1.5)
    assert qid in g.queue_files()
    assert senders.count() == 1       # no bounce for a temporary failure
    g.stop()


def test_equal_preferences_are_randomised():
    g, _ = setup()
    e1, e2 = Sink(addr(9)), Sink(addr(10))
    for i in range(24):
        send(g, "u%d@equal.test" % i)
    wait_for(lambda: e1.count() + e2.count() >= 24, 20, "24 deliveries")
    assert e1.count() > 0 and e2.count() > 0, (e1.count(), e2.count())
    g.stop()


def test_every_address_of_a_host_is_tried():
    g, _ = setup()
    up = Sink(addr(12))
    for i in range(4):      # whichever address comes first, all four arrive at the live one
        send(g, "m%d@multi.test" % i)
    up.wait_count(4, timeout=15)
    g.stop()



def test_mx_address_limit_caps_connections_per_attempt():
    many = ["many.test. MX %d m%02d.many.test." % (i, i) for i in range(40)]
    many += ["m%02d.many.test. A 127.0.%d.%d" % (i, NET, 100 + i) for i in range(40)]   # nothing listens there
    dns = DnsServer(many)
    g = Gateway(default_transport="mx", dns_server=dns.address(), smtp_port="2526", relay_domains="many.test",
                retry_min="30s", retry_max="60s").start()
    send_message(g.host, 2525, "alice@src.test", ["x@many.test"], "Subject: s\r\n\r\nx\r\n")
    wait_for(lambda: "status=deferred" in g.log(), 20, "the attempt to end")
    tries = re.findall(r"trying the next mail server for many\.test", g.log())
    assert len(tries) == 4, "%d servers tried after the first (want 4: five addresses)" % len(tries)
    # (unbound's UDP answer holds some of the 40; more than five is the point)
    m = re.search(r"many\.test has (\d+) MX addresses; trying the first 5 \(smtp_mx_address_limit\)", g.log())
    assert m and int(m.group(1)) > 5, g.log()[-1500:]
    g.stop()


def test_mx_session_limit_stops_after_two_sessions():
    from scripted_smtp import ScriptedSmtp
    dns = DnsServer(["defer.test. MX 10 a.defer.test.", "defer.test. MX 20 b.defer.test.",
                     "defer.test. MX 30 c.defer.test.", "a.defer.test. A %s" % addr(2),
                     "b.defer.test. A %s" % addr(3), "c.defer.test. A %s" % addr(4)])
    peers = [ScriptedSmtp(addr(i)) for i in (2, 3, 4)]
    g = Gateway(default_transport="mx", dns_server=dns.address(), smtp_port="2526", relay_domains="defer.test",
                retry_min="30s", retry_max="60s").start()
    send_message(g.host, 2525, "alice@src.test", ["grey-x@defer.test"], "Subject: s\r\n\r\nx\r\n")
    wait_for(lambda: "smtp_mx_session_limit (2) reached for defer.test" in g.log(), 20, "the session limit")
    time.sleep(0.5)
    assert [len(p.helos) for p in peers] == [1, 1, 0], [p.helos for p in peers]
    g.stop()


run_tests(globals())
