"""Concurrency: 2,000 simultaneous SMTP sessions; a stalled client and a
slow next hop never delay other sessions or other destinations."""
import resource
import threading
from harness import *

SESSIONS = 2000


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    assert hard >= SESSIONS + 200, "fd limit %d too low for the test" % hard


def timed_send(g, rcpt):
    t0 = time.time()
    rep = send_message(g.host, 2525, "a@src.test", [rcpt], "Subject: probe\r\n\r\nx\r\n")
    assert "queued as" in rep, rep
    return time.time() - t0


def test_2000_sessions_and_a_stalled_client():
    raise_fd_limit()
    sink = Sink(addr(2))
    g = Gateway(sink=sink, max_sessions="5000", smtp_timeout="60s", data_timeout="60s").start()
    # a stalled client: mid-DATA, sends nothing more
    stalled = Client(g.host)
    stalled.cmd("EHLO stalled.test")
    stalled.cmd("MAIL FROM:<s@src.test>")
    stalled.cmd("RCPT TO:<x@example.test>")
    assert stalled.cmd("DATA").startswith("354")
    stalled.send("Subject: half a message\r\n\r\npartial line without end")
    socks = []
    for i in range(SESSIONS):
        s = socket.create_connection((g.host, 2525), timeout=10)
        socks.append(s)
    # every one of them gets its banner
    for s in socks:
        buf = b""
        while not buf.endswith(b"\r\n"):
            chunk = s.recv(512)
            assert chunk, "connection closed before banner"
            buf += chunk
        assert buf.startswith(b"220 "), buf
    # with 2,001 sessions open, a new client is served promptly
    elapsed = timed_send(g, "probe@example.test")
    assert elapsed < 2.0, "a transaction took %.2fs with %d idle sessions" % (elapsed, SESSIONS)
    sink.wait_count(1)
    # the idle sessions still answer
    for s in socks[:50]:
        s.sendall(b"NOOP\r\n")
        assert s.recv(512).startswith(b"250")
    for s in socks:
        s.close()
    stalled.close()
    g.stop()


def test_slow_next_hop_does_not_delay_other_destinations():
    fast = Sink(addr(2))
    slow = Sink(addr(3), port=2600, extra=["-w", "6"])   # waits 6s before answering DATA
    table = tempfile.NamedTemporaryFile("w", delete=False, suffix=".transport")
    table.write("slow.test smtp:[%s]:2600\n" % addr(3))
    table.close()
    on_cleanup(lambda: os.unlink(table.name))
    g = Gateway(sink=fast, transport_table="file:" + table.name).start()
    for i in range(3):
        timed_send(g, "s%d@slow.test" % i)
    t0 = time.time()
    for i in range(10):
        assert timed_send(g, "f%d@example.test" % i) < 1.0
    fast.wait_count(10, timeout=5)
    fast_elapsed = time.time() - t0
    assert fast_elapsed < 3.0, "fast destination took %.2fs behind a slow one" % fast_elapsed
    assert slow.count() == 0, "slow sink should still be waiting"
    slow.wait_count(3, timeout=20)
    g.stop()


run_tests(globals())
