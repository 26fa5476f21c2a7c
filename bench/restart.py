#!/usr/bin/env python3
"""bench/restart.py - how long posternd takes to be ready with a full queue.

Makes a spool of N deferred messages (default 100,000) by cloning one real
queued message (sent through posternd here) under new queue IDs, each with
its sidecar saying the next try is a day away, so nothing is delivered while
measuring. Then starts posternd on it (--rounds times, a fresh daemon each)
and takes the time from exec to its "posternd ready" log line (taking
mail), to the whole queue in memory ("loaded from the queue"; a large queue
is read after ready), and the daemon's RSS then. Several builds (--builds a,b) alternate round by
round in one run, to compare before and after. With --cold (root), the page
cache is dropped before each start. Usage:

  python3 bench/restart.py [--messages 100000] [--rounds 3] [--builds build[,other/build]] [--cold]
"""
import argparse
import os
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from procstat import daemon_pid, rss_kib  # noqa: E402
PORT = 2642


def conf(d):
    path = os.path.join(d, "postern.conf")
    with open(path, "w") as f:
        f.write("listen = 127.0.0.1:%d\nhostname = gw.bench.test\nspool_dir = %s/spool\nrelay_domains = dest.test\n"
                "trusted_networks = 127.0.0.0/8\ndefault_transport = smtp:[127.0.0.1]:9\nlog_level = info\n"
                "tracking = no\n" % (PORT, d))
    return path


def start(build, path, log):
    t0 = time.time()
    proc = subprocess.Popen([os.path.join(build, "posternd"), "-c", path], stdout=log, stderr=subprocess.STDOUT)
    return proc, t0


def wait_ready(logpath, before, proc, limit=600, what="posternd ready"):
    deadline = time.time() + limit
    while time.time() < deadline:
        text = open(logpath).read()
        if text.count(what) > before:
            return time.time()
        if proc.poll() is not None:
            raise SystemExit("posternd exited:\n" + text[-2000:])
        time.sleep(0.005)
    raise SystemExit("posternd not ready after %d s" % limit)


def one_message(build, d, logpath):
    """Send one message through posternd, for a real spool file to clone."""
    path = conf(d)
    log = open(logpath, "a")
    proc, _ = start(build, path, log)
    wait_ready(logpath, 0, proc)
    s = smtplib.SMTP("127.0.0.1", PORT, timeout=30)
    s.sendmail("sender@src.test", ["rcpt@dest.test"],
               "From: sender@src.test\r\nTo: rcpt@dest.test\r\nSubject: restart bench\r\n\r\n" + ("x" * 70 + "\r\n") * 40)
    s.quit()
    time.sleep(0.5)
    proc.terminate()
    proc.wait(30)
    qdir = os.path.join(d, "spool", "queue")
    ids = [n for n in os.listdir(qdir) if re.fullmatch(r"[0-9A-F]{16}", n)]
    assert len(ids) == 1, os.listdir(qdir)
    return qdir, ids[0]


def fill(qdir, model, n, later_s=86400):
    """The queued message model in qdir cloned under n - 1 new IDs, every
    sidecar saying the next try is later_s away; all n IDs, sorted."""
    body = open(os.path.join(qdir, model), "rb").read()
    state = open(os.path.join(qdir, model + ".st"), "rb").read()
    st = os.stat(os.path.join(qdir, model))
    later = int(time.time()) + later_s
    state = re.sub(rb"^(\d+ P \d+) \d+", lambda m: m.group(1) + b" %d" % later, state, flags=re.M)
    base = int(model, 16)
    ids = [model]
    for i in range(1, n):
        qid = "%016X" % (base + i * 16)
        ids.append(qid)
        data = body.replace(model.encode(), qid.encode())
        for name, blob in ((qid, data), (qid + ".st", state)):
            p = os.path.join(qdir, name)
            with open(p, "wb") as f:
                f.write(blob)
            os.chown(p, st.st_uid, st.st_gid)
            os.chmod(p, 0o600)
    with open(os.path.join(qdir, model + ".st"), "wb") as f:
        f.write(state)
    return sorted(ids)


def drop_caches():
    subprocess.run(["sync"])
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--builds", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--cold", action="store_true")
    a = ap.parse_args()
    builds = a.builds.split(",")
    d = tempfile.mkdtemp(prefix="restart-bench-")
    os.chmod(d, 0o755)
    logpath = os.path.join(d, "posternd.log")
    try:
        qdir, model = one_message(builds[0], d, logpath)
        t0 = time.time()
        fill(qdir, model, a.messages)
        print("spool of %d queued messages made in %.0f s" % (a.messages, time.time() - t0))
        path = conf(d)
        results = {b: [] for b in builds}
        for r in range(a.rounds):
            for b in builds:
                cold = a.cold and drop_caches()
                log = open(logpath, "a")
                text = open(logpath).read()
                before, loaded_before = text.count("posternd ready"), text.count("loaded from the queue")
                proc, t0 = start(b, path, log)
                took = wait_ready(logpath, before, proc) - t0
                whole = wait_ready(logpath, loaded_before, proc, what="loaded from the queue") - t0
                rss = rss_kib(daemon_pid(proc.pid))
                proc.terminate()
                proc.wait(120)
                loaded = re.findall(r"spool: (\d+) message\(s\) loaded", open(logpath).read())[-1]
                assert int(loaded) == a.messages, "loaded %s of %d" % (loaded, a.messages)
                results[b].append((took, whole, rss))
                print("round %d %-28s ready after %6.2f s, whole queue in memory after %6.2f s%s, RSS %6.1f MiB "
                      "(%.2f KiB per message)" % (r + 1, b, took, whole, " (cold cache)" if cold else "", rss / 1024,
                                                  rss / a.messages))
        for b in builds:
            ready = sorted(x[0] for x in results[b])
            whole = sorted(x[1] for x in results[b])
            print("%s: %d messages: median ready %.2f s, whole queue %.2f s" %
                  (b, a.messages, ready[len(ready) // 2], whole[len(whole) // 2]))
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
