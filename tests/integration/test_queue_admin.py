"""Queue administration against a running daemon over its control socket:
list, show, hold, release, delete, flush (by ID, by domain, all); and the
same commands on the spool itself with the daemon down (identical list
columns, hold/release/delete under SPOOL/lock), cat, summary, --json."""
import fcntl
import json
import threading
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
    assert re.search(r"arrival: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(\d+s ago\)", r.stdout), r.stdout
    assert re.search(r"next attempt: .* UTC \(in (59m \d+s|1h 0m)\)", r.stdout), r.stdout
    r = postern(g, "show", "0123456789ABCDEF")
    assert r.returncode == 1 and "no message with queue ID" in r.stderr
    r = postern(g, "show", "nonsense")
    assert r.returncode == 1 and "not a queue ID" in r.stderr
    online = postern(g, "list").stdout
    online_show = postern(g, "show", qid).stdout
    g.stop()
    # with the daemon down, list and show read the spool: the same columns
    r = postern(g, "list")
    assert r.returncode == 0 and qid in r.stdout and "working on the spool directly" in r.stderr

    def without_age(text):
        return [re.sub(r"^(\S+ +\d+) +\d+s ", r"\1 AGE ", l) for l in text.splitlines()]
    assert without_age(r.stdout) == without_age(online), (r.stdout, online)
    def without_spans(text):       # "(3s ago)", "(in 59m 59s)": a second may pass between the two
        return re.sub(r"\((in )?[\dhms ]+( ago)?\)", "", text)
    assert without_spans(postern(g, "show", qid).stdout) == without_spans(online_show)


def test_show_explains_which_link_decided():
    """Issue 23's "explain": a quarantine by a shipped Lua policy is shown by
    queue show with its stage, link, verdict and reason, live and offline."""
    script = os.path.join(ROOT, "policies", "quarantine_executables.lua")
    g = slow_retry_gateway(plugins="lua:" + script)
    body = ("Subject: tool\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
            "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"setup.exe\"\r\n"
            "\r\nTVqQAAMAAAAEAAAA\r\n--b--\r\n")
    qid = queue_id(send_message(g.host, 2525, "a@src.test", ["x@example.test"], body))
    plain = queued(g, "y@example.test")          # nobody decided anything about this one
    wait_for(lambda: "on hold" in g.log(), 10, "the quarantine")
    line = "decided: eom lua:%s quarantine: executable attachment setup.exe" % script
    shown = postern(g, "show", qid).stdout
    assert line in shown.splitlines(), shown
    assert "decided:" not in postern(g, "show", plain).stdout
    g.stop()
    offline = postern(g, "show", qid).stdout     # the log is in the spool
    assert line in offline.splitlines(), offline


def test_flush_by_id_domain_and_all():
    g = slow_retry_gateway()
    a = queued(g, "x@example.test")
    b = queued(g, "y@other.test")
    c = queued(g, "z@third.test")
    wait_for(lambda: g.log().count("status=deferred") >= 3, 10, "deferrals")
    sink = Sink(addr(2))
    for q in (a, b, c):       # nothing is due for an hour
        assert re.search(r"next attempt: .* UTC \(in (59m \d+s|1h 0m)\)", postern(g, "show", q).stdout)
    assert sink.count() == 0
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
    keep_queued = time.time()
    drop = queued(g, "drop@example.test", "drop")
    wait_for(lambda: g.log().count("status=deferred") >= 2, 10, "deferrals")
    assert postern(g, "hold", keep).returncode == 0
    assert "hold" in [l for l in postern(g, "list").stdout.splitlines() if l.startswith(keep)][0]
    r = postern(g, "delete", drop)
    assert r.returncode == 0 and "deleted" in r.stdout
    wait_for(lambda: drop not in g.queue_files(), 5, "deleted message to leave the spool")
    # a witness, not held, is delivered by its next retry: by then the held one had its chance
    witness = queued(g, "witness@example.test", "witness")
    wait_for(lambda: re.search(r"%s: to=<witness@example\.test>.*status=deferred" % witness, g.log()), 10,
             "the witness's deferral")
    sink = Sink(addr(2))
    wait_for(lambda: witness not in g.queue_files(), 10, "the witness's retry")
    assert [b"Subject: witness" in m for m in sink.messages()] == [True]
    assert g.queue_files() == [keep]
    # hold survives a restart (it is in the sidecar state): a new witness goes, it stays
    g.stop()
    g.start()
    witness = queued(g, "witness@example.test", "witness2")
    wait_for(lambda: witness not in g.queue_files(), 10, "the second witness")
    assert sink.count() == 2 and g.queue_files() == [keep]
    assert "hold" in [l for l in postern(g, "list").stdout.splitlines() if l.startswith(keep)][0]
    # retries are scheduled in whole seconds, so the steps above can take well under one:
    # hold it for a second at least, or the comparison below would measure nothing
    time.sleep(max(0.0, 1.0 - (time.time() - keep_queued)))
    waited = time.time() - keep_queued
    assert postern(g, "release", keep).returncode == 0
    msgs = sink.wait_count(3)
    # delays= counts the time in the queue before the attempt, hold included
    in_queue = float(re.search(r"%s: to=<keep@example.test>, .* delays=([\d.]+)/.* status=sent" % keep,
                               g.log()).group(1))
    assert waited > 0.8 and in_queue >= waited - 0.5, (in_queue, waited)
    assert sorted(re.search(rb"Subject: (\w+)", m).group(1) for m in msgs) == [b"keep", b"witness", b"witness2"]
    wait_for(lambda: not g.queue_files(), 5, "spool to empty")
    assert b"Subject: drop" not in b"".join(sink.messages()) and sink.count() == 3
    assert postern(g, "delete", drop).returncode == 1
    g.stop()


def test_offline_hold_release_delete_under_the_spool_lock():
    g = slow_retry_gateway()
    keep = queued(g, "keep@example.test", "keep")
    drop = queued(g, "drop@example.test", "drop")
    wait_for(lambda: g.log().count("status=deferred") >= 2, 10, "deferrals")
    g.stop()
    r = postern(g, "hold", keep)
    assert r.returncode == 0 and "%s: on hold" % keep in r.stdout, r.stderr
    assert "hold" in [l for l in postern(g, "list").stdout.splitlines() if l.startswith(keep)][0]
    r = postern(g, "delete", drop)
    assert r.returncode == 0 and "%s: deleted" % drop in r.stdout
    assert g.queue_files() == [keep]
    assert postern(g, "delete", drop).returncode == 1
    # a spool that someone holds the lock of is left alone (a running daemon whose socket is gone)
    lock = open(os.path.join(g.spool, "lock"), "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    r = postern(g, "release", keep)
    assert r.returncode == 1 and "lock is held" in r.stderr, r.stderr
    # ... and a daemon waits for it (up to 5 s) before it starts
    t0 = time.time()
    threading.Timer(1.0, lambda: fcntl.flock(lock, fcntl.LOCK_UN)).start()
    g.start()
    assert time.time() - t0 >= 0.9
    # the daemon holds it now: no second daemon on the same spool
    second = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf], capture_output=True, text=True,
                            timeout=30)
    assert second.returncode == 1 and "another posternd" in second.stderr, second.stderr
    sink = Sink(addr(2))
    time.sleep(1.5)
    assert sink.count() == 0, "still held after the restart"
    g.stop()
    r = postern(g, "release", keep)
    assert r.returncode == 0 and "released" in r.stdout
    g.start()                        # released offline: due at once, not in an hour
    msgs = sink.wait_count(1)
    assert b"Subject: keep" in msgs[0]
    g.stop()
    lock.close()


def test_cat_summary_and_json():
    g = slow_retry_gateway()
    ids = [queued(g, r) for r in ("a@one.test", "b@one.test", "c@two.test")]
    wait_for(lambda: g.log().count("status=deferred") >= 3, 10, "deferrals")
    r = postern(g, "cat", ids[0])
    assert r.returncode == 0, r.stderr
    assert "*** ENVELOPE RECORDS %s ***" % ids[0] in r.stdout and "sender: <a@src.test>" in r.stdout
    assert "recipient: <a@one.test> (pending)" in r.stdout
    assert "*** MESSAGE CONTENTS" in r.stdout and "Subject: admin" in r.stdout and "Received: from" in r.stdout
    assert postern(g, "cat", "0123456789ABCDEF").returncode == 1
    r = postern(g, "summary")
    assert r.returncode == 0, r.stderr
    rows = {l.split()[0]: l.split()[1:] for l in r.stdout.splitlines()[1:]}
    assert rows["TOTAL"][0] == "3" and rows["one.test"][0] == "2" and rows["two.test"][0] == "1", r.stdout
    assert rows["one.test"][1] == "2"        # all in the first bucket (under 5 minutes)
    r = postern(g, "summary", "--sender")
    assert "src.test" in r.stdout
    for down in (False, True):
        if down:
            g.stop()
        r = postern(g, "list", "--json")
        assert r.returncode == 0, r.stderr
        msgs = json.loads(r.stdout)
        assert sorted(m["id"] for m in msgs) == sorted(ids)
        m = [m for m in msgs if m["id"] == ids[2]][0]
        assert m["state"] == "deferred" and m["sender"] == "a@src.test"
        assert m["recipients"][0]["address"] == "c@two.test" and m["recipients"][0]["attempts"] == 1
        assert "Connection refused" in m["recipients"][0]["last_reply"]


def test_idle_control_connections_are_bounded_and_timed_out():
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2)).start()
    sock = os.path.join(g.spool, "control.sock")
    held = []
    for _ in range(100):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sock)
        held.append(s)
    time.sleep(0.3)
    fds = len(os.listdir("/proc/%d/fd" % g.pid()))
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
