"""Shaping by provider (issue 38): two recipient domains whose MX hosts
match one provider's pattern share its concurrency limit, across their
different servers; a third domain elsewhere is not held by it. A provider's
rate spaces its deliveries; a back-off rule for that provider suspends it
when one of its servers answers "slow down", and so does the admin. The MX
records come from a local unbound; the servers are smtp-sinks that take a
second per message, or scripted ones."""
from harness import *


def provider_dns():
    return DnsServer(["one.test. MX 10 mx1.bigmail.test.", "two.test. MX 10 mx2.bigmail.test.",
                      "three.test. MX 10 mx.other.test.",
                      "mx1.bigmail.test. A %s" % addr(2), "mx2.bigmail.test. A %s" % addr(3),
                      "mx.other.test. A %s" % addr(4)])


def send_to(g, rcpt, sender="a@src.test"):
    c = Client(g.host)
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<%s>" % sender).startswith("250")
    assert c.cmd("RCPT TO:<%s>" % rcpt).startswith("250")
    assert c.cmd("DATA").startswith("354")
    c.send("Subject: to %s\r\n\r\nx\r\n" % rcpt)
    reply = c.cmd(".")
    c.close()
    assert "queued as" in reply, reply
    return queue_id(reply)


def queue_cmd(g, *args):
    r = subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "queue", *args], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r
    return r.stdout


def test_two_domains_with_the_same_mx_pattern_share_one_limit():
    dns = provider_dns()
    sinks = {n: Sink(addr(n), extra=["-w", "1"]) for n in (2, 3, 4)}     # a second per message
    g = Gateway(default_transport="mx", dns_server=dns.address(), smtp_port="2526",
                relay_domains="one.test, two.test, three.test",
                providers=table_file("provider bigmail concurrency=1 *.bigmail.test\n", name="providers")).start()
    t0 = time.time()
    for i in range(3):
        for dom in ("one.test", "two.test", "three.test"):
            send_to(g, "r%d@%s" % (i, dom))
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


def test_a_provider_backs_off_is_suspended_and_keeps_its_rate():
    dns = provider_dns()
    servers = {n: ScriptedSmtp(addr(n), 2526) for n in (2, 3, 4)}
    servers[2].mail_reply = "421 4.7.0 slow down please"
    rules = ("suspend-provider 4s provider=elsewhere ^421\n"        # another provider's rule: not this one
             "suspend-provider 4s provider=bigmail ^421 4\\.7\\.0 .*slow down\n")
    g = Gateway(default_transport="mx", dns_server=dns.address(), smtp_port="2526",
                relay_domains="one.test, two.test, three.test", backoff=table_file(rules, name="backoff"),
                providers=table_file("provider bigmail concurrency=5 rate=30 *.bigmail.test\n"
                                     "provider elsewhere concurrency=5 *.elsewhere.test\n", name="providers")).start()
    # one of bigmail's servers says "slow down": the whole provider waits 4 s
    send_to(g, "a@one.test", sender="first@src.test")
    wait_for(lambda: "provider bigmail suspended for 4s" in g.log(), 10, "the provider's back-off")
    assert "provider bigmail until " in queue_cmd(g, "suspended")
    servers[2].mail_reply = "250 2.1.0 Ok"
    t0 = time.monotonic()
    held = send_to(g, "b@two.test", sender="second@src.test")       # bigmail's other server
    send_to(g, "c@three.test", sender="third@src.test")             # not bigmail's
    wait_for(lambda: servers[4].senders == ["third@src.test"], 5, "the other provider's message")
    wait_for(lambda: "waiting: provider bigmail suspended" in queue_cmd(g, "list"), 5, "the listing")
    assert servers[3].connections == 0 and held in g.queue_files()
    wait_for(lambda: sorted(servers[2].senders + servers[3].senders) == ["first@src.test", "second@src.test"], 15,
             "both bigmail messages after the suspension")
    assert time.monotonic() - t0 >= 2.5
    # waiting on the provider was no attempt: the 421 is the only deferral the server gave
    assert len(re.findall(r"to=<a@one\.test>.*status=deferred \(421", g.log())) == 1, g.log()
    # rate=30: one start every 2 s for the provider, over both its servers
    for i in range(3):
        send_to(g, "r%d@%s" % (i, ("one.test", "two.test")[i % 2]), sender="paced%d@src.test" % i)
    wait_for(lambda: len(servers[2].senders) + len(servers[3].senders) == 5, 20, "the paced messages")
    times = sorted(servers[2].times[1:] + servers[3].times[1:])
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(gap >= 1.5 for gap in gaps), gaps
    # the admin suspends the provider and resumes it
    assert "suspended until resumed" in queue_cmd(g, "suspend", "provider", "bigmail")
    send_to(g, "d@one.test", sender="admin@src.test")
    wait_for(lambda: "waiting: provider bigmail suspended" in queue_cmd(g, "list"), 10, "the admin's suspension")
    assert "admin@src.test" not in servers[2].senders
    assert "1 message(s) scheduled" in queue_cmd(g, "resume", "provider", "bigmail")
    wait_for(lambda: "admin@src.test" in servers[2].senders, 10, "the message after resume")
    g.stop()


def test_provider_table_errors_are_caught_at_start():
    for bad, why in (("provider big *.big.test\n", "expected: provider NAME concurrency=N"),
                     ("provider big concurrency=1 rate=0 *.big.test\n", "rate must be"),
                     ("provider big concurrency=0 *.big.test\n", "concurrency must be"),
                     ("provider big concurrency=2 bad_host!\n", "neither a host name"),
                     ("provider big concurrency=1 a.test\nprovider big concurrency=1 b.test\n", "given twice")):
        g = Gateway(providers=table_file(bad, name="providers"))
        r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf, "-t"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode != 0 and why in r.stdout + r.stderr, (bad, r.stdout, r.stderr)


run_tests(globals())
