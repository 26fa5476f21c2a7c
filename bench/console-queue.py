#!/usr/bin/env python3
"""bench/console-queue.py [N]: the console's queue page with N (default
100,000) deferred messages: the daemon's answer time for a page (through the
console, over HTTPS), Chromium's load-and-render time, and `postern queue
list --json` for the whole queue beside it, each the median of 5 rounds.
Run as root on a quiet machine: POSTERN_BUILD=build python3 bench/console-queue.py"""
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
os.environ.setdefault("POSTERN_TEST_NET", "77")
from harness import *      # noqa: E402  (Gateway, Web, Browser, console_users, make_certs, ...)
from harness import _cleanups  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100000


def main():
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2), retry_min="1h", retry_max="2h", max_queue_lifetime="1d",
                log_level="warning", **console_settings()).start()
    t0 = time.monotonic()
    subprocess.run(["smtp-source", "-s", "20", "-m", str(N), "-l", "400", "-f", "a@src.test", "-t", "x@example.test",
                    "%s:2525" % g.host], check=True, timeout=1800, capture_output=True)
    wait_for(lambda: "%d message(s)" % N in subprocess.run(
        [os.path.join(BUILD, "postern"), "-c", g.conf, "queue", "list", "--limit", "1"], capture_output=True,
        text=True).stdout.replace("of %d" % N, "%d message(s)" % N), 600, "the queue", interval=2)
    print("queued %d messages in %.0f s" % (N, time.monotonic() - t0))
    w = Web(g)
    w.login("admin", "correct horse battery")
    answers, renders, lists = [], [], []
    b = Browser()
    base = "https://%s:9443" % g.host
    b.log_in(base)
    wait_for(lambda: "1 to 100 shown" in b.page(), 60, "the queue page")
    for _ in range(5):
        t = time.monotonic()
        status, _, page = w.request("GET", "/?page=500")
        answers.append(time.monotonic() - t)
        assert status == 200 and "%d message(s)" % N in page
        t = time.monotonic()
        b.go(base + "/")
        renders.append(time.monotonic() - t)
        t = time.monotonic()
        subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "queue", "list", "--json"],
                       capture_output=True, timeout=300)
        lists.append(time.monotonic() - t)
    b.quit()
    print("%d messages, median of 5: queue page answer %.3f s, Chromium load+render %.3f s, "
          "whole `queue list --json` %.3f s" % (N, statistics.median(answers), statistics.median(renders),
                                                 statistics.median(lists)))
    g.stop()


if __name__ == "__main__":
    try:
        main()
    finally:
        for fn in reversed(_cleanups):
            fn()
