"""Durability: 10,000 messages over 20 sessions while posternd is
killed with SIGKILL several times and restarted. Every message that got a
250 must reach the sink (checked by queue ID and by a sequence header);
duplicates are allowed only for messages in flight at a kill."""
import random
import threading
from harness import *

TOTAL = int(os.environ.get("DURABILITY_MESSAGES", "10000"))
SESSIONS = 20
KILLS = int(os.environ.get("DURABILITY_KILLS", "5"))


class Load:
    def __init__(self, g, total=None):
        self.g = g
        self.total = total or TOTAL
        self.lock = threading.Lock()
        self.next_seq = 0
        self.acked = {}          # seq -> queue id
        self.errors = 0

    def take(self):
        with self.lock:
            if self.next_seq >= self.total:
                return None
            self.next_seq += 1
            return self.next_seq

    def worker(self):
        seq = self.take()
        deadline = time.time() + 240
        c = None
        while seq is not None and time.time() < deadline:
            try:
                if c is None:
                    c = Client(self.g.host, timeout=10)
                    if not c.banner.startswith("220") or not c.cmd("EHLO load.test").startswith("250"):
                        raise OSError("no greeting")
                c.send("MAIL FROM:<load@src.test>\r\nRCPT TO:<sink@example.test>\r\nDATA\r\n")
                r1, r2, r3 = c.reply(), c.reply(), c.reply()
                if not (r1.startswith("250") and r2.startswith("250") and r3.startswith("354")):
                    raise OSError("refused: %r %r %r" % (r1, r2, r3))
                c.send("Subject: durability\r\nX-Seq: %d\r\n\r\n%s\r\n.\r\n" % (seq, "x" * 200))
                rep = c.reply()
                if not rep.startswith("250"):
                    raise OSError("not accepted: %r" % rep)
                with self.lock:
                    self.acked[seq] = queue_id(rep)
                seq = self.take()
            except (OSError, AssertionError):
                # killed daemon, reset, timeout: the message was not acknowledged; send it again
                with self.lock:
                    self.errors += 1
                if c:
                    c.close()
                c = None
                time.sleep(0.05)
        if c:
            c.close()


def delivered(sink):
    """seq -> list of queue IDs it arrived under."""
    got = {}
    for m in sink.messages():
        s = re.search(rb"^X-Seq: (\d+)", m, re.M)
        q = re.search(rb"Postern\) with ESMTP id ([0-9A-F]{16})", m)
        if s and q:
            got.setdefault(int(s.group(1)), []).append(q.group(1).decode())
    return got


def test_kill9_under_load_loses_nothing():
    sink = Sink(addr(2))
    g = Gateway(sink=sink, log_level="warning").start()
    load = Load(g)
    threads = [threading.Thread(target=load.worker) for _ in range(SESSIONS)]
    for t in threads:
        t.start()
    rng = random.Random(int(os.environ.get("DURABILITY_SEED", str(int(time.time())))))
    kill_points = sorted(rng.sample(range(TOTAL // 10, TOTAL * 9 // 10), KILLS))
    for point in kill_points:
        wait_for(lambda: len(load.acked) >= point, 120, "%d acknowledged messages" % point, 0.005)
        g.kill9()
        time.sleep(rng.uniform(0.05, 0.3))
        g.start()
    for t in threads:
        t.join(300)
    assert len(load.acked) == TOTAL, "load did not finish: %d of %d acked" % (len(load.acked), TOTAL)
    wait_for(lambda: sink.count() >= TOTAL and not g.queue_files(), 120,
             "all acknowledged messages at the sink (have %d)" % sink.count(), 0.2)
    got = delivered(sink)
    missing = [s for s, q in load.acked.items() if q not in got.get(s, [])]
    assert not missing, "acknowledged but never delivered: %s" % missing[:20]
    dups = sum(len(v) - 1 for v in got.values())
    # at most the messages in flight at each kill: 20 sessions and 20 delivery connections
    assert dups <= KILLS * 2 * SESSIONS * 5, "too many duplicates: %d" % dups
    print("  acked=%d delivered=%d duplicates=%d client_retries=%d kills=%d" %
          (len(load.acked), sum(len(v) for v in got.values()), dups, load.errors, KILLS))
    g.stop()


def test_kill9_with_the_archive_journals_every_acknowledged_message():
    total, kills = 600, 2
    sink = Sink(addr(2))
    adir = tempfile.mkdtemp(prefix="archive-")
    os.chmod(adir, 0o777)
    on_cleanup(lambda: shutil.rmtree(adir, ignore_errors=True))
    g = Gateway(sink=sink, log_level="warning", plugin_dir=os.path.join(BUILD, "plugins"), plugins="archive",
                **{"archive.dir": adir}).start()
    load = Load(g, total)
    threads = [threading.Thread(target=load.worker) for _ in range(10)]
    for t in threads:
        t.start()
    rng = random.Random()
    for point in sorted(rng.sample(range(total // 5, total * 4 // 5), kills)):
        wait_for(lambda: len(load.acked) >= point, 120, "%d acknowledged messages" % point, 0.005)
        g.kill9()
        time.sleep(0.1)
        g.start()
    for t in threads:
        t.join(300)
    assert len(load.acked) == total
    wait_for(lambda: not g.queue_files(), 120, "the queue to drain", 0.2)
    archived = {os.path.basename(p)[:-4] for p in glob.glob(os.path.join(adir, "*", "*.eml"))}
    missing = [q for q in load.acked.values() if q not in archived]
    assert not missing, "acknowledged but not journaled: %s" % missing[:10]
    r = subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "archive", "verify"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout[-2000:]
    print("  acked=%d journaled=%d kills=%d: %s" % (len(load.acked), len(archived), kills, r.stdout.strip()))
    g.stop()


run_tests(globals())
