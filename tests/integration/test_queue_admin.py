"""Queue administration against a running daemon over its control socket:
list, show, hold, release, delete, flush (by ID, by domain, all)."""
from harness import *


def postern(g, *args):
    return subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "queue", *args],
                          capture_output=True, text=True, timeout=30)


def queued(g, rcpt, subject="admin"):
    return queue_id(send_message(g.host, 2525, "a@src.test", [rcpt], "Subject: %s\r\n\r\nx\r\n" % subject))


def slow_retry_gateway(**extra):
    # retries an hour apart: only an admin flush/release delivers within the test
    return Gateway(default_transport="smtp:[%s]:2526" % addr(2), retry_min="1h", retry_max="2h",
                   max_queue_lifetime="1d", **extra).start()


def test_list_and_show():
    g = slow_retry_gateway()
    qid = queued(g, "x@example.test")
    wait_for(lambda: "status=deferred" in g.log(), 10, "deferral")
    r = postern(g, "list")
    assert r.returncode == 0, r.stderr
    line = [l for l in r.stdout.splitlines() if l.startswith(qid)][0]
    assert "deferred" in line and "<a@src.test>" in line and "<x@example.test>" in line
    assert "Connection refused" in line, line
    assert "-- 1 message(s)" in r.stdout
    r = postern(g, "show", qid)
    assert r.returncode == 0
    assert "rcpt: <x@example.test> status=pending attempts=1" in r.stdout, r.stdout
    assert "next attempt: in" in r.stdout
    r = postern(g, "show", "0123456789ABCDEF")
    assert r.returncode == 1 and "no message with queue ID" in r.stderr
    r = postern(g, "show", "nonsense")
    assert r.returncode == 1 and "not a queue ID" in r.stderr
    g.stop()
    # with the daemon down, list and show read the spool
    r = postern(g, "list")
    assert r.returncode == 0 and qid in r.stdout and "reading the spool directly" in r.stderr
    r = postern(g, "hold", qid)
    assert r.returncode == 1 and "cannot reach posternd" in r.stderr


def test_flush_by_id_domain_and_all():
    g = slow_retry_gateway()
    a = queued(g, "x@example.test")
    b = queued(g, "y@other.test")
    c = queued(g, "z@third.test")
    wait_for(lambda: g.log().count("status=deferred") >= 3, 10, "deferrals")
    sink = Sink(addr(2))
    time.sleep(1.5)
    assert sink.count() == 0, "nothing is due for an hour"
    assert postern(g, "flush", a).returncode == 0
    sink.wait_count(1)
    r = postern(g, "flush", "other.test")
    assert "1 message(s)" in r.stdout, r.stdout
    sink.wait_count(2)
    assert sorted(g.queue_files()) == [c]
    r = postern(g, "flush")
    assert r.returncode == 0
    sink.wait_count(3)
    wait_for(lambda: not g.queue_files(), 5, "spool to empty")
    assert postern(g, "flush", a).returncode == 1      # gone now
    g.stop()


def test_hold_release_and_delete():
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2)).start()   # retries every 1-2s
    keep = queued(g, "keep@example.test", "keep")
    drop = queued(g, "drop@example.test", "drop")
    wait_for(lambda: g.log().count("status=deferred") >= 2, 10, "deferrals")
    assert postern(g, "hold", keep).returncode == 0
    assert "hold" in [l for l in postern(g, "list").stdout.splitlines() if l.startswith(keep)][0]
    r = postern(g, "delete", drop)
    assert r.returncode == 0 and "deleted" in r.stdout
    wait_for(lambda: drop not in g.queue_files(), 5, "deleted message to leave the spool")
    sink = Sink(addr(2))
    time.sleep(4)     # several retry rounds pass: the held message must stay put
    assert sink.count() == 0
    assert g.queue_files() == [keep]
    # hold survives a restart (it is in the sidecar state)
    g.stop()
    g.start()
    time.sleep(3)
    assert sink.count() == 0
    assert "hold" in [l for l in postern(g, "list").stdout.splitlines() if l.startswith(keep)][0]
    assert postern(g, "release", keep).returncode == 0
    msgs = sink.wait_count(1)
    assert b"Subject: keep" in msgs[0]
    wait_for(lambda: not g.queue_files(), 5, "spool to empty")
    assert b"Subject: drop" not in b"".join(sink.messages())
    assert postern(g, "delete", drop).returncode == 1
    g.stop()


def test_idle_control_connections_are_bounded_and_timed_out():
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2)).start()
    sock = os.path.join(g.spool, "control.sock")
    held = []
    for _ in range(100):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sock)
        held.append(s)
    time.sleep(0.3)
    fds = len(os.listdir("/proc/%d/fd" % g.proc.pid))
    assert fds < 80, "%d fds open with 100 idle control connections" % fds
    # an honest request is still answered while they are held
    wait_for(lambda: postern(g, "list").returncode == 0, 15, "a control answer")
    # and the idle ones are closed after their time
    def all_closed():
        for s in held:
            s.settimeout(0.01)
            try:
                if s.recv(1) != b"":
                    return False
            except socket.timeout:
                return False
            except OSError:
                pass
        return True
    wait_for(all_closed, 15, "the idle control connections to be closed")
    for s in held:
        s.close()
    g.stop()


run_tests(globals())
