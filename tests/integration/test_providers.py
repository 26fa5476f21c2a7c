"""Shaping by provider (issue 38): two recipient domains whose MX hosts
match one provider's pattern share its concurrency limit, across their
different servers; a third domain elsewhere is not held by it. The MX
records come from a local unbound; each server is an smtp-sink that takes
a second per message."""
from harness import *


def test_two_domains_with_the_same_mx_pattern_share_one_limit():
    dns = DnsServer(["one.test. MX 10 mx1.bigmail.test.", "two.test. MX 10 mx2.bigmail.test.",
                     "three.test. MX 10 mx.other.test.",
                     "mx1.bigmail.test. A %s" % addr(2), "mx2.bigmail.test. A %s" % addr(3),
                     "mx.other.test. A %s" % addr(4)])
    sinks = {n: Sink(addr(n), extra=["-w", "1"]) for n in (2, 3, 4)}     # a second per message
    g = Gateway(default_transport="mx", dns_server=dns.address(), smtp_port="2526",
                relay_domains="one.test, two.test, three.test",
                providers=table_file("provider bigmail concurrency=1 *.bigmail.test\n", name="providers")).start()
    t0 = time.time()
    for i in range(3):
        for dom in ("one.test", "two.test", "three.test"):
            c = Client(g.host)
            c.cmd("EHLO client.test")
            assert c.cmd("MAIL FROM:<a@src.test>").startswith("250")
            assert c.cmd("RCPT TO:<r%d@%s>" % (i, dom)).startswith("250")
            assert c.cmd("DATA").startswith("354")
            c.send("Subject: %s %d\r\n\r\nx\r\n" % (dom, i))
            assert "queued as" in c.cmd(".")
            c.close()
    # three.test's server is not bigmail's: its three messages go side by side
    sinks[4].wait_count(3, timeout=20)
    other_done = time.time() - t0
    sinks[2].wait_count(3, timeout=30)
    sinks[3].wait_count(3, timeout=30)
    bigmail_done = time.time() - t0
    # six bigmail messages one at a time, a second each, over two servers
    assert bigmail_done >= 5.5, bigmail_done
    assert other_done < 3.5, other_done
    g.stop()


def test_provider_table_errors_are_caught_at_start():
    for bad, why in (("provider big *.big.test\n", "expected: provider NAME concurrency=N"),
                     ("provider big concurrency=0 *.big.test\n", "concurrency must be"),
                     ("provider big concurrency=2 bad_host!\n", "neither a host name"),
                     ("provider big concurrency=1 a.test\nprovider big concurrency=1 b.test\n", "given twice")):
        g = Gateway(providers=table_file(bad, name="providers"))
        r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf, "-t"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode != 0 and why in r.stdout + r.stderr, (bad, r.stdout, r.stderr)


run_tests(globals())
