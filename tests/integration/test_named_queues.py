"""Named queues with priorities (issue 38): a transactional message, and
one that Lua puts in the transactional queue at DELIVER, overtake a
5,000-message bulk backlog at the same next hop; the bulk queue's
concurrency holds it to one delivery at a time. The next hop is an
smtp-sink that waits a second before answering each DATA."""
from harness import *


def queues_table():
    d = tempfile.mkdtemp(prefix="queues-")
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    path = os.path.join(d, "queues")
    with open(path, "w") as f:
        f.write("queue transactional priority=9\n"
                "queue bulk priority=1 concurrency=1\n"
                "from tx.test transactional\n"
                "from bulk.test bulk\n")
    os.chmod(path, 0o644)
    script = os.path.join(d, "queue.lua")
    with open(script, "w") as f:
        f.write('postern.on("deliver", function(tx)\n'
                '  if tx:sender() == "lua@bulk.test" then tx:set_queue("transactional") end\n'
                'end)\n')
    os.chmod(script, 0o644)
    return path, script


def arrived(sink, sender):
    return any(("X-Mail-Args: <%s>" % sender).encode() in m for m in sink.messages())


def senders(sink, sender):
    return sum(("X-Mail-Args: <%s>" % sender).encode() in m for m in sink.messages())


def test_transactional_mail_overtakes_a_bulk_backlog():
    sink = Sink(addr(2), extra=["-w", "1"])        # a second per message and connection
    table, script = queues_table()
    g = Gateway(sink=sink, relay_domains="example.test, dest.test", queues="file:" + table, plugins="lua:" + script,
                dest_concurrency="2").start()
    r = subprocess.run(["smtp-source", "-s", "20", "-m", "5000", "-l", "300", "-f", "bulk@bulk.test", "-t",
                        "r@dest.test", "%s:2525" % g.host], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    # the backlog: 5,000 queued, a handful delivered, each shown in its queue
    assert senders(sink, "bulk@bulk.test") < 100
    page = json.loads(subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "queue", "list", "--json",
                                      "--limit", "3"], capture_output=True, text=True, timeout=30).stdout)
    assert [m["queue"] for m in page["messages"]] == ["bulk"] * 3, page
    by_queue = lambda name: json.loads(subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "queue", "list",
                                                       "--json", "--limit", "1", "--queue", name], capture_output=True,
                                                      text=True, timeout=30).stdout)["total"]
    assert by_queue("bulk") > 4800 and by_queue("transactional") == 0
    shape = subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "queue", "summary", "--queue"],
                           capture_output=True, text=True, timeout=30).stdout
    row = re.search(r"^\s*bulk\s+(\d+)", shape, re.M)
    assert row and int(row.group(1)) > 4800 and not re.search(r"^\s*transactional\s", shape, re.M), shape
    t0 = time.time()
    assert "queued as" in send_mail(g, rcpts=("r@dest.test",), sender="alert@tx.test")
    wait_for(lambda: arrived(sink, "alert@tx.test"), 10, "the transactional message")
    assert time.time() - t0 < 4, time.time() - t0
    t0 = time.time()
    assert "queued as" in send_mail(g, rcpts=("r@dest.test",), sender="lua@bulk.test")
    wait_for(lambda: arrived(sink, "lua@bulk.test"), 10, "the message Lua made transactional")
    assert time.time() - t0 < 4, time.time() - t0
    # bulk's concurrency=1: one message a second at most, though two connections are allowed
    before = senders(sink, "bulk@bulk.test")
    time.sleep(5)
    done = senders(sink, "bulk@bulk.test") - before
    assert 1 <= done <= 7, done
    t0 = time.time()
    g.stop()                   # the backlog stays queued: no new transaction starts while stopping
    assert time.time() - t0 < 5, time.time() - t0


def test_a_queue_rate_spreads_its_messages():
    sink = Sink(addr(2))
    g = Gateway(sink=sink, queues=table_file("queue slow priority=5 rate=60\nfrom slow.test slow\n", name="queues")).start()
    for i in range(3):
        assert "queued as" in send_mail(g, sender="s%d@slow.test" % i)
    t0 = time.time()
    assert "queued as" in send_mail(g, sender="fast@src.test")      # in no queue: not held back
    wait_for(lambda: any(b"<fast@src.test>" in m for m in sink.messages()), 10, "the unqueued message")
    assert time.time() - t0 < 1.5
    sink.wait_count(4, timeout=15)
    # 60 a minute: one a second, so the third waits about two seconds behind the first
    assert time.time() - t0 >= 1.5, time.time() - t0
    assert "s2@slow.test" in b"".join(sink.messages()).decode(errors="replace")
    g.stop()


def test_queues_table_errors_are_caught_at_start():
    d = tempfile.mkdtemp(prefix="queues-")
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    for bad, why in (("queue q\n", "priority=0-9 is required"), ("queue q priority=10\n", "priority=10"),
                     ("queue q priority=1 concurrency=0\n", "concurrency=0"),
                     ("queue q priority=1 rate=0\n", "rate=0"), ("to x.test nowhere\n", "defined before"),
                     ("queue q priority=1\nqueue q priority=2\n", "each name once"), ("lane x\n", "expected queue")):
        path = os.path.join(d, "queues")
        with open(path, "w") as f:
            f.write(bad)
        os.chmod(path, 0o644)
        g = Gateway(queues="file:" + path)
        r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf, "-t"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode != 0 and why in r.stdout + r.stderr, (bad, r.stdout, r.stderr)


run_tests(globals())
