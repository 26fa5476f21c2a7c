"""A large queue is read after start (queue_read_before_ready): posternd
takes mail at once while a loader reads the spool in batches; every queued
message ends up in memory, a corrupt file among them is moved aside; a
message asked for before it is loaded gets "still being read"; a stop in the
middle of the reading loses nothing."""
from harness import *
sys.path.insert(0, os.path.join(ROOT, "bench"))
import restart as restart_bench  # noqa: E402

QUEUED = 3000


def clone_queue(g, n):
    """The one deferred message in g's spool, cloned under n - 1 new IDs
    (bench/restart.py's cloner; next tries an hour away); the IDs, sorted."""
    qdir = os.path.join(g.spool, "queue")
    model = [f for f in os.listdir(qdir) if re.fullmatch(r"[0-9A-F]{16}", f)]
    assert len(model) == 1, os.listdir(qdir)
    return restart_bench.fill(qdir, model[0], n, later_s=3600)


def stopped_with_queue(sink, n, read_before_ready):
    """A stopped gateway whose spool holds n deferred messages (its next hop
    down), and their IDs."""
    g = Gateway(sink=sink, default_transport="smtp:[%s]:9" % addr(9), log_level="info",
                queue_read_before_ready=str(read_before_ready)).start()
    queue_id(send_mail(g))
    wait_for(lambda: "status=deferred" in g.log(), 20, "the first attempt to fail")
    g.stop()
    return g, clone_queue(g, n)


def queue_count(g):
    r = subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "queue", "list", "--json"],
                       capture_output=True, text=True, timeout=60)
    return len(json.loads(r.stdout))


def test_a_large_queue_is_read_after_start():
    sink = Sink(addr(2))
    g, ids = stopped_with_queue(sink, QUEUED + 1, 100)
    corrupt = ids[1500]
    with open(os.path.join(g.spool, "queue", corrupt), "r+b") as f:
        f.truncate(100)              # shorter than its recorded size
    g.set(default_transport="smtp:[%s]:%d" % (sink.host, sink.port))
    g.start()
    assert "queued message(s) to read: taking mail meanwhile" in g.log()
    assert "queued as" in send_mail(g, headers="Subject: during the reading\r\n")
    wait_for(lambda: "%d message(s) loaded from the queue (read after start)" % QUEUED in g.log(), 60,
             "the whole queue")
    aside = [corrupt, corrupt + ".st"]        # the file with its sidecar
    assert sorted(os.listdir(os.path.join(g.spool, "corrupt"))) == aside, g.log()[-1500:]
    wait_for(lambda: sink.count() >= 1, 20, "the new message delivered")
    wait_for(lambda: queue_count(g) == QUEUED, 20, "the delivered message off the queue")
    # each read message keeps its sidecar's state: its next try an hour away, its last reply
    time.sleep(1)
    assert sink.count() == 1, "a deferred message was tried before its next try"
    listed = subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "queue", "list"],
                            capture_output=True, text=True, timeout=60).stdout
    assert listed.count("last: 4.4.1 connect to") == QUEUED, listed[:500]
    # a stop while the queue is still being read (no limit before ready): nothing lost or moved aside
    g.stop()
    g.set(queue_read_before_ready="0")
    g.start()
    g.stop()
    g.set(queue_read_before_ready="100000")
    g.start()
    assert "%d message(s) loaded from the queue\n" % QUEUED in g.log().replace(" (read after start)", "!"), \
        g.log()[-1500:]
    assert sorted(os.listdir(os.path.join(g.spool, "corrupt"))) == aside
    assert queue_count(g) == QUEUED
    g.stop()


def ask_control(g, line, timeout=20):
    """One request on the control socket as soon as it answers: (ok, text)."""
    path = os.path.join(g.spool, "control.sock")
    deadline = time.time() + timeout
    while True:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            s.connect(path)
            break
        except OSError:
            s.close()
            if time.time() > deadline:
                raise
            time.sleep(0.002)
    s.sendall(line.encode() + b"\n")
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    s.close()
    head, _, text = out.decode().partition("\n")
    return head == "OK", text


def test_a_message_not_yet_read_is_said_to_be_coming():
    """queue show for an ID the loader has not reached yet says so; a stop
    in the middle of the reading, and the next start reads everything."""
    sink = Sink(addr(2))
    g, ids = stopped_with_queue(sink, 20000, 0)
    g.start(wait=False)
    ok, text = ask_control(g, "show " + ids[-1])
    if ok:
        skip("the queue was read before the question (a fast machine)")
    assert "no message with queue ID '%s' (the queue is still being read from the spool:" % ids[-1] in text, text
    g.stop()        # in the middle of the reading
    assert "20000 message(s) loaded from the queue" not in g.log()
    g.start()
    wait_for(lambda: "20000 message(s) loaded from the queue" in g.log(), 60, "the whole queue")
    ok, text = ask_control(g, "show " + ids[-1])
    assert ok and ids[-1] in text, text
    g.stop()


run_tests(globals())
