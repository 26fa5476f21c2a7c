"""Two posternd nodes and one real redis-server: a sender rate limit, a
greylisting triplet, Lua counters and values shared across the nodes;
Redis killed mid-load (redis_failure = open and tempfail) without a node
stalling; sharing again once Redis is back."""
import urllib.request

from harness import *

PLUGDIR = os.path.join(BUILD, "plugins")
OUTSIDE = addr(9)       # a client address outside trusted_networks (127.0.0.1/32)

COUNTER = """
postern.on("mail", function(tx, sender)
  local n = postern.incr("mail:" .. sender:lower(), 60)
  if n > 5 then return postern.TEMPFAIL("4.7.1", "Too many messages from " .. sender, 450) end
end)
postern.on("eom", function(tx)
  local seen = postern.incr("seen", 60)
  local last = postern.get("last") or "none"
  postern.set("last", tx:header("Subject") or "", 60)
  tx:add_header("X-Seen", tostring(seen))
  tx:add_header("X-Last", last)
end)
"""


def nodes(redis, sink, script=COUNTER, **conf):
    lua = readable_file("shared.lua", script, prefix="lua-")
    common = dict(sink=sink, plugin_dir=PLUGDIR, redis_server=redis.address(), redis_timeout="200ms", **conf)
    if "plugins" not in conf:
        common["plugins"] = "lua:" + lua
    a = Gateway(host=addr(1), http_listen="%s:9025" % addr(1), **common).start()
    b = Gateway(host=addr(3), http_listen="%s:9025" % addr(3), **common).start()
    wait_for(lambda: "redis: connected" in a.log() and "redis: connected" in b.log(), 10, "both nodes on Redis")
    return a, b


def metric(g, name):
    """The value of one series in g's /metrics (0 when absent)."""
    with urllib.request.urlopen("http://%s:9025/metrics" % g.host, timeout=10) as r:
        text = r.read().decode()
    found = [l.rsplit(" ", 1)[1] for l in text.splitlines() if l.startswith(name + " ")]
    return float(found[0]) if found else 0.0


def mail_reply(g, sender, source=None):
    c = Client(g.host, source=source)
    c.cmd("EHLO client.test")
    rep = c.cmd("MAIL FROM:<%s>" % sender)
    c.close()
    return rep


def test_a_sender_limit_holds_across_both_nodes():
    redis, sink = Redis(addr(5)), Sink(addr(2))
    a, b = nodes(redis, sink)
    replies = [mail_reply((a, b)[i % 2], "bulk@src.test") for i in range(9)]
    accepted = [r for r in replies if r.startswith("250")]
    assert len(accepted) == 5, replies
    assert all(r.startswith("450 4.7.1 Too many") for r in replies[5:]), replies
    assert redis.cli("GET", "postern:lua:mail:bulk@src.test") == "9"
    assert redis.cli("TTL", "postern:lua:mail:bulk@src.test") not in ("-1", "-2")     # the window expires
    assert mail_reply(b, "other@src.test").startswith("250")
    a.stop()
    b.stop()


def test_counters_and_values_agree_across_nodes():
    redis, sink = Redis(addr(5)), Sink(addr(2))
    a, b = nodes(redis, sink)
    for i in range(4):
        assert send_mail((a, b)[i % 2], headers="Subject: m%d\r\n" % i).startswith("250")
    msgs = sink.wait_count(4)
    seen = sorted(int(re.search(rb"X-Seen: (\d+)", m).group(1)) for m in msgs)
    last = sorted(re.search(rb"X-Last: (\S+)", m).group(1).decode() for m in msgs)
    assert seen == [1, 2, 3, 4], seen
    assert last == ["m0", "m1", "m2", "none"], last
    a.stop()
    b.stop()


def test_greylisting_at_one_node_passes_at_the_other():
    redis, sink = Redis(addr(5)), Sink(addr(2))
    a, b = nodes(redis, sink, plugins="greylist", **{"greylist.store": "shared", "greylist.delay": "1"})

    def rcpt(g):
        c = Client(g.host, source=OUTSIDE)
        c.cmd("EHLO client.test")
        c.cmd("MAIL FROM:<alice@src.test>")
        rep = c.cmd("RCPT TO:<x@example.test>")
        c.close()
        return rep

    assert rcpt(a).startswith("450 4.7.1") and rcpt(b).startswith("450 4.7.1")     # too soon, anywhere
    time.sleep(1.5)
    assert rcpt(b).startswith("250"), "the triplet greylisted via A passes at B"
    assert rcpt(a).startswith("250")
    keys = redis.cli("KEYS", "postern:c:greylist:*").split()
    assert len(keys) == 2, keys         # the triplet and the network's passes
    a.stop()
    b.stop()


def test_connection_rate_counts_connections_at_both_nodes():
    redis, sink = Redis(addr(5)), Sink(addr(2))
    a, b = nodes(redis, sink, client_connect_rate="4")
    greeted = 0
    for i in range(10):
        c = Client((a, b)[i % 2].host, source=OUTSIDE)
        greeted += c.banner.startswith("220")
        c.close()
        time.sleep(0.05)
    # each node alone would let 4 through (8); together they brake at 4, one late per node
    assert 4 <= greeted <= 6, greeted
    assert int(redis.cli("GET", "postern:conn:" + OUTSIDE)) == 10
    a.stop()
    b.stop()


def test_destination_pacing_is_shared():
    redis = Redis(addr(5))
    sink = Sink(addr(2))
    a, b = nodes(redis, sink, plugins=None, dest_rate_limit="30")       # one message per 2 s per domain
    t0 = time.time()
    for g, pause in ((a, 0), (a, 0.5), (b, 0.5), (b, 0)):
        assert send_mail(g, rcpts=("x@example.test",)).startswith("250")
        time.sleep(pause)
    # alone, B would send its second at +2.5 s; sharing A's schedule it waits until about +6 s
    wait_for(lambda: sink.count() >= 3, 10, "three deliveries")
    time.sleep(max(0, t0 + 4.0 - time.time()))
    assert sink.count() == 3, ("B kept only its own pace", sink.count(), redis.cli("KEYS", "*"))
    sink.wait_count(4, timeout=10)
    assert time.time() - t0 >= 5
    a.stop()
    b.stop()


def answered_quickly(g):
    """A session that needs no shared state: greeting, EHLO, NOOP."""
    t0 = time.time()
    c = Client(g.host)
    assert c.cmd("EHLO client.test").startswith("250")
    assert c.cmd("NOOP").startswith("250")
    c.close()
    return time.time() - t0


def test_redis_killed_mid_load_open_then_shared_again():
    redis, sink = Redis(addr(5)), Sink(addr(2))
    a, b = nodes(redis, sink, redis_failure="open")
    for i in range(3):
        assert mail_reply((a, b)[i % 2], "bulk@src.test").startswith("250")
    # load on both nodes while Redis dies: every MAIL answered, none waits long
    import threading
    results, stop = [], threading.Event()

    def load(g, tag):
        for i in range(3000):                  # bounded; stops 0.8 s after the kill
            if stop.is_set():
                return
            t0 = time.time()
            rep = mail_reply(g, "load-%s-%d@src.test" % (tag, i))
            results.append((rep[:3], time.time() - t0))

    threads = [threading.Thread(target=load, args=(g, tag)) for g, tag in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    time.sleep(0.2)
    redis.kill()
    time.sleep(0.8)
    stop.set()
    for t in threads:
        t.join(60)
    assert results and all(r == "250" for r, _ in results), [r for r in results if r[0] != "250"][:5]
    assert max(d for _, d in results) < 1.0, max(d for _, d in results)
    assert metric(a, "postern_redis_up") == 0
    assert metric(a, 'postern_shared_state_requests_total{backend="redis"}') >= 3
    assert metric(a, 'postern_shared_state_requests_total{backend="fallback"}') > 0, "the load did not span the kill"
    # open: each node falls back to its own count (5 each), nobody waits
    replies = []
    for i in range(6):
        t0 = time.time()
        replies.append(mail_reply(a, "bulk@src.test"))
        assert time.time() - t0 < 1.0, "a MAIL waited on a dead Redis"
    assert [r[:3] for r in replies] == ["250"] * 5 + ["450"], replies
    assert answered_quickly(b) < 0.2
    wait_for(lambda: "redis:" in a.log() and "shared state is unavailable" in a.log(), 5, "the outage logged")
    assert a.log().count("shared state is unavailable") == 1, "logged once per minute, not per request"
    redis.start()
    wait_for(lambda: "again: state is shared" in a.log() and "again: state is shared" in b.log(), 15,
             "both nodes back on Redis")
    assert metric(a, "postern_redis_up") == 1
    # shared again: a fresh sender's limit holds across the nodes
    replies = [mail_reply((a, b)[i % 2], "fresh@src.test") for i in range(7)]
    assert [r[:3] for r in replies] == ["250"] * 5 + ["450"] * 2, replies
    a.stop()
    b.stop()


def test_redis_gone_with_tempfail_refuses_without_stalling():
    redis, sink = Redis(addr(5)), Sink(addr(2))
    a, b = nodes(redis, sink, redis_failure="tempfail")
    assert mail_reply(a, "x@src.test").startswith("250")
    redis.proc.send_signal(signal.SIGSTOP)          # slow: it takes the connection but never answers
    on_cleanup(lambda: redis.proc.send_signal(signal.SIGCONT))
    t0 = time.time()
    rep = mail_reply(a, "x@src.test")
    took = time.time() - t0
    assert rep.startswith("451 4.3.0"), rep          # the script's error tempfails the message
    assert took < 1.5, took                          # redis_timeout (200 ms) and a tick, not a hang
    assert answered_quickly(a) < 0.2 and answered_quickly(b) < 0.2
    assert metric(a, 'postern_redis_failures_total{reason="timed out"}') >= 1
    redis.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: mail_reply(b, "y@src.test").startswith("250"), 15, "Redis answering again")
    a.stop()
    b.stop()
    assert "did not answer" in a.log()


def test_a_loop_first_plugin_counts_each_call_once():
    """probe_first marks RCPT loop_first and counts every recipient with
    host->kv_incr: without Redis the node's own counter answers on the
    loop; with Redis each call would block there, so it is deferred to a
    worker and counted once, not twice."""
    sink = Sink(addr(2))
    rcpts = ["r%d@example.test" % i for i in range(5)]
    for shared in (False, True):
        redis = Redis(addr(5)) if shared else None
        conf = dict(redis_server=redis.address(), redis_timeout="500ms") if shared else {}
        g = Gateway(host=addr(1), http_listen="%s:9025" % addr(1), sink=sink,
                    plugin_dir=os.path.join(BUILD, "test-plugins"), plugins="probe_first",
                    **{"probe_first.mutate": "rcpt count rcpts"}, **conf).start()
        if shared:
            wait_for(lambda: "redis: connected" in g.log(), 10, "the node on Redis")
        assert send_message(g.host, 2525, "a@src.test", rcpts, "Subject: c\r\n\r\nx\r\n").startswith("250")
        counts = re.findall(r"probe: count rcpts = (\d+)", g.log())
        assert counts == ["1", "2", "3", "4", "5"], counts
        deferred = metric(g, 'postern_chain_c_runs_total{where="deferred"}')
        worker = metric(g, 'postern_chain_c_runs_total{where="worker"}')
        if shared:
            assert redis.cli("GET", "postern:c:rcpts") == "5"
            assert deferred == worker == 5, (deferred, worker)
        else:
            assert deferred == worker == 0 and metric(g, 'postern_chain_c_runs_total{where="loop"}') >= 5
        g.stop()
        if redis:
            redis.stop()
    sink.wait_count(2)


if __name__ == "__main__":
    run_tests(globals())
