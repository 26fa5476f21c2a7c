"""Relay out against real peers: swaks and smtp-source as clients,
smtp-sink as next hop; transport table routing; one transaction for all
recipients of a destination; 4xx defers and retries, 5xx fails; next hop
down then up; queued mail survives a restart."""
from harness import *

EXACT = ("From: Alice <alice@src.test>\r\nTo: bob@example.test\r\nSubject: exact bytes\r\n"
         "Message-ID: <exact-1@src.test>\r\n\r\nline 1\r\n.dot line\r\n\r\n  indented\r\nlast line")
# swaks ends the data with CRLF . CRLF, so the message it sends is EXACT + CRLF


def postern(*args, gw):
    return subprocess.run([os.path.join(BUILD, "postern"), "-c", gw.conf, *args],
                          capture_output=True, text=True, timeout=30)


def test_swaks_message_arrives_identical():
    sink = Sink(addr(2))
    g = Gateway(sink=sink).start()
    path = os.path.join(g.dir, "msg.eml")
    with open(path, "w", newline="") as f:
        f.write(EXACT)
    r = subprocess.run(["swaks", "--server", "%s:2525" % g.host, "--from", "alice@src.test",
                        "--to", "bob@example.test", "--data", "@" + path, "--helo", "swaks.test"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    qid = queue_id(r.stdout)
    received, rest = our_received_and_rest(sink.wait_count(1)[0])
    assert ("id %s" % qid).encode() in received
    assert rest == as_dumped(EXACT + "\r\n"), rest
    wait_for(lambda: qid + ": removed" in g.log(), 5, "the removed log line")
    assert not g.queue_files()
    for event in ("connect from", qid + ": accepted", qid + ": to=<bob@example.test>", "status=sent"):
        assert event in g.log(), event
    g.stop()


def test_smtp_source_load_with_multiple_recipients():
    sink = Sink(addr(2))
    g = Gateway(sink=sink).start()
    r = subprocess.run(["smtp-source", "-s", "5", "-m", "60", "-r", "3", "-l", "2048", "-f", "load@src.test",
                        "-t", "rcpt@example.test", "%s:2525" % g.host], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    msgs = sink.wait_count(60, timeout=30)
    assert len(msgs) == 60
    # all recipients of one destination go in one transaction
    for m in msgs:
        assert len(sink_rcpts(m)) == 3, m[:400]
    wait_for(lambda: not g.queue_files(), 5, "spool to empty")
    g.stop()


def test_connections_are_reused_within_the_concurrency_limit():
    sink = Sink(addr(2))
    g = Gateway(sink=sink, dest_concurrency="3", connection_cache_time="1s").start()
    time.sleep(0.3)
    base = sink.sessions()      # the harness's own readiness probe counts as one
    r = subprocess.run(["smtp-source", "-s", "10", "-m", "40", "-f", "load@src.test", "-t", "r@example.test",
                        "%s:2525" % g.host], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    sink.wait_count(40)
    # idle connections close after connection_cache_time; then every session has ended
    wait_for(lambda: g.log().count("status=sent") == 40, 10, "40 sent")
    time.sleep(2.5)
    sessions = sink.sessions() - base
    assert 1 <= sessions <= 3, "40 messages used %d connections (limit 3)" % sessions
    g.stop()


def test_transport_table_routes_per_domain():
    default = Sink(addr(2))
    special = Sink(addr(3), port=2600)
    table = tempfile.NamedTemporaryFile("w", delete=False, suffix=".transport")
    table.write("special.test smtp:[%s]:2600\n.dept.example.test smtp:[%s]:2600\n" % (addr(3), addr(3)))
    table.close()
    on_cleanup(lambda: os.unlink(table.name))
    g = Gateway(sink=default, transport_table="file:" + table.name).start()
    rep = send_message(g.host, 2525, "a@src.test",
                       ["x@example.test", "y@special.test", "z@hr.dept.example.test"], "Subject: split\r\n\r\nhi\r\n")
    assert "queued as" in rep
    d = default.wait_count(1)
    s = special.wait_count(1)
    assert sink_rcpts(d[0]) == [b"x@example.test"]
    assert sorted(sink_rcpts(s[0])) == [b"y@special.test", b"z@hr.dept.example.test"], s
    g.stop()


def test_5xx_fails_recipient_and_removes_message():
    sink = Sink(addr(2), extra=["-f", "RCPT"])
    g = Gateway(sink=sink).start()
    qid = queue_id(send_message(g.host, 2525, "a@src.test", ["x@example.test"], "Subject: f\r\n\r\nx\r\n"))
    wait_for(lambda: qid + ": removed" in g.log(), 10, "message removed after 5xx")
    assert "to=<x@example.test>" in g.log() and "status=bounced (500 5.3.0" in g.log(), g.log()
    assert sink.count() == 0
    g.stop()


def test_4xx_defers_then_delivers_after_retry():
    soft = Sink(addr(2), extra=["-r", "RCPT"])
    g = Gateway(sink=soft).start()
    qid = queue_id(send_message(g.host, 2525, "a@src.test", ["x@example.test"], "Subject: d\r\n\r\nx\r\n"))
    wait_for(lambda: "status=deferred (450 4.3.0" in g.log(), 10, "deferral")
    assert g.queue_files() == [qid]
    queue_dir = os.path.join(g.spool, "queue")
    assert qid + ".st" in os.listdir(queue_dir)        # the deferral saved its state
    listing = postern("queue", "list", gw=g)
    assert qid in listing.stdout and "450 4.3.0" in listing.stdout, listing.stdout + listing.stderr
    shown = postern("queue", "show", qid, gw=g)
    assert "status=pending" in shown.stdout and "attempts=" in shown.stdout, shown.stdout
    soft.stop()
    good = Sink(addr(2))
    good.wait_count(1, timeout=15)
    wait_for(lambda: not g.queue_files(), 5, "spool to empty")
    assert os.listdir(queue_dir) == []                 # the sidecar went with the message
    assert postern("queue", "show", qid, gw=g).returncode != 0
    # delivered at once: no sidecar was ever written, and nothing is left
    qid = queue_id(send_message(g.host, 2525, "a@src.test", ["x@example.test"], "Subject: e\r\n\r\nx\r\n"))
    wait_for(lambda: qid + ": removed" in g.log(), 10, "the second message delivered")
    assert os.listdir(queue_dir) == []
    g.stop()


def test_next_hop_down_then_up():
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2)).start()
    ids = [queue_id(send_message(g.host, 2525, "a@src.test", ["x%d@example.test" % i],
                                 "Subject: wait %d\r\n\r\nx\r\n" % i)) for i in range(20)]
    wait_for(lambda: g.log().count("status=deferred") >= 20, 10, "20 deferrals")
    assert sorted(g.queue_files()) == sorted(ids)
    sink = Sink(addr(2))
    msgs = sink.wait_count(20, timeout=20)
    got = sorted(re.search(rb"id ([0-9A-F]{16})", strip_sink_headers(m)).group(1).decode() for m in msgs)
    assert got == sorted(ids)
    wait_for(lambda: not g.queue_files(), 5, "spool to empty")
    g.stop()


def test_queue_survives_restart():
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2)).start()
    ids = [queue_id(send_message(g.host, 2525, "a@src.test", ["x@example.test"], "Subject: r\r\n\r\nx\r\n"))
           for _ in range(5)]
    wait_for(lambda: g.log().count("status=deferred") >= 5, 10, "deferrals")
    g.stop()
    assert sorted(g.queue_files()) == sorted(ids)
    sink = Sink(addr(2))
    g.start()
    assert "spool: 5 message(s) loaded" in g.log()
    sink.wait_count(5, timeout=20)
    wait_for(lambda: not g.queue_files(), 5, "spool to empty")
    g.stop()


def test_corrupt_spool_file_is_moved_aside():
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2)).start()
    qid = queue_id(send_message(g.host, 2525, "a@src.test", ["x@example.test"], "Subject: c\r\n\r\nx\r\n"))
    g.stop()
    with open(os.path.join(g.spool, "queue", qid), "r+b") as f:
        f.truncate(100)
    g.start()
    assert "corrupt spool file moved to corrupt/" in g.log()
    assert os.path.exists(os.path.join(g.spool, "corrupt", qid))
    assert g.queue_files() == []
    g.stop()


def test_a_fifo_and_a_symlinked_sidecar_in_the_spool_neither_hang_nor_are_read():
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2), retry_min="1h", retry_max="1h").start()
    qid = queue_id(send_message(g.host, 2525, "a@src.test", ["x@example.test"], "Subject: c\r\n\r\nx\r\n"))
    wait_for(lambda: qid + ": to=<x@example.test>" in g.log(), 10, "the deferral")
    g.stop()
    fifo = "0000000000000001"
    os.mkfifo(os.path.join(g.spool, "queue", fifo))
    sidecar = os.path.join(g.spool, "queue", qid + ".st")
    os.unlink(sidecar)
    os.symlink("/dev/zero", sidecar)
    t0 = time.time()
    g.start()
    assert time.time() - t0 < 8, "start-up waited on the FIFO"
    assert os.path.exists(os.path.join(g.spool, "corrupt", fifo)), g.log()
    assert g.queue_files() == [qid]
    listing = postern("queue", "list", gw=g)
    assert qid in listing.stdout, listing.stdout + listing.stderr
    rss_kb = g.rss_kb()
    assert rss_kb < 300 * 1024, "the sidecar symlink to /dev/zero was read: %d kB" % rss_kb
    g.stop()


run_tests(globals())
