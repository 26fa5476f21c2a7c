"""Egress sources and pools (issue 38): the `egress` table's sources bind
outbound connections to their address and say their HELO name; a pool
shares messages by weight; `from` and `to` rules choose a pool by sender and
recipient domain; Lua's tx:set_egress at DELIVER overrides both. The next
hop (smtp-sink) records the client address and HELO of every message."""
from harness import *


def egress_table(extra=""):
    path = os.path.join(tempfile.mkdtemp(prefix="egress-"), "egress")
    os.chmod(os.path.dirname(path), 0o755)
    with open(path, "w") as f:
        f.write("# three sources on their own loopback addresses\n"
                "source a %s a.out.test\n"
                "source b %s b.out.test\n"
                "source c %s c.out.test\n"
                "pool both a=3 b\n"
                "to dest.test both\n"
                "from special.test b\n%s" % (addr(10), addr(11), addr(12), extra))
    os.chmod(path, 0o644)
    on_cleanup(lambda: shutil.rmtree(os.path.dirname(path), ignore_errors=True))
    return path


def origin(msg):
    """(client address, HELO) the sink saw for one message."""
    ip = re.search(rb"^X-Client-Addr: (\S+)", msg, re.M).group(1).decode()
    helo = re.search(rb"^X-Helo-Args: (\S+)", msg, re.M).group(1).decode()
    return ip, helo


def test_pool_weights_rules_and_lua_choose_the_source_and_helo():
    sink = Sink(addr(2))
    d = tempfile.mkdtemp(prefix="lua-")
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    script = os.path.join(d, "egress.lua")
    with open(script, "w") as f:
        f.write('postern.on("deliver", function(tx)\n'
                '  if tx:sender() == "lua@src.test" then tx:set_egress("c") end\n'
                '  if tx:sender() == "nopool@src.test" then\n'
                '    postern.log("info", "set_egress nope: " .. tostring(tx:set_egress("nope")))\n'
                '  end\n'
                'end)\n')
    os.chmod(script, 0o644)
    g = Gateway(sink=sink, relay_domains="example.test, dest.test", egress="file:" + egress_table(),
                plugins="lua:" + script).start()
    # 1,000 messages for dest.test: pool "both", a=3 b=1
    r = subprocess.run(["smtp-source", "-s", "10", "-m", "1000", "-l", "300", "-f", "bulk@src.test", "-t",
                        "rcpt@dest.test", "%s:2525" % g.host], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    msgs = sink.wait_count(1000, timeout=60)
    seen = {}
    for m in msgs:
        seen[origin(m)] = seen.get(origin(m), 0) + 1
    assert set(seen) == {(addr(10), "a.out.test"), (addr(11), "b.out.test")}, seen
    share = seen[(addr(10), "a.out.test")] / 1000
    assert abs(share - 0.75) < 0.03, seen
    # the sender rule wins over the recipient rule; Lua over both; an
    # unknown pool is refused and the rules apply
    for sender in ("x@special.test", "lua@src.test", "nopool@src.test"):
        assert "queued as" in send_mail(g, rcpts=("rcpt@dest.test",), sender=sender)
    msgs = sink.wait_count(1003)
    by_sender = {re.search(rb"^X-Mail-Args: <([^>]*)>", m, re.M).group(1).decode(): origin(m) for m in msgs}
    assert by_sender["x@special.test"] == (addr(11), "b.out.test")
    assert by_sender["lua@src.test"] == (addr(12), "c.out.test")
    assert by_sender["nopool@src.test"] in ((addr(10), "a.out.test"), (addr(11), "b.out.test"))
    assert "set_egress nope: false" in g.log()
    # without a rule: smtp_bind_address (here none: the kernel's choice, 127.0.0.1) and hostname
    assert "queued as" in send_mail(g, rcpts=("rcpt@example.test",))
    last = [m for m in sink.wait_count(1004) if b"rcpt@example.test" in m][0]
    assert origin(last) == ("127.0.0.1", "gw.postern.test"), origin(last)
    g.stop()


def test_a_rate_limit_holds_per_source():
    """dest_rate_limit is kept per source and domain, as each source has its
    own reputation: two sources of a pool take two slots at a time."""
    sink = Sink(addr(2))
    g = Gateway(sink=sink, relay_domains="paced.test", egress="file:" + egress_table("pool even a b\nto paced.test even\n"),
                dest_rate_limit_table=table_file("paced.test 30\n", name="rates")).start()
    t0 = time.time()
    for i in range(4):
        assert "queued as" in send_mail(g, rcpts=("r%d@paced.test" % i,), sender="s%d@src.test" % i)
    msgs = sink.wait_count(4, timeout=20)
    took = time.time() - t0
    # 30 a minute is a slot every 2 s: per source, two each take one wait (about 2 s);
    # shared by the domain, four would take three (about 6 s)
    assert 1.5 <= took < 4.5, took
    seen = sorted(origin(m)[0] for m in msgs)
    assert seen == [addr(10), addr(10), addr(11), addr(11)], seen
    g.stop()


def test_egress_table_errors_are_caught_at_start():
    for bad, why in (("pool p ghost\n", "no source 'ghost'"), ("source d 999.1.1.1 d.test\n", "not an IPv4"),
                     ("to x.test nowhere\n", "no pool or source 'nowhere'"), ("pool both a\n", "name is taken"),
                     ("pool w a=0\n", "weight"), ("route x y\n", "expected source, pool, from or to")):
        g = Gateway(egress="file:" + egress_table(bad))
        r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf, "-t"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode != 0 and why in r.stdout + r.stderr, (bad, r.stdout, r.stderr)


run_tests(globals())
