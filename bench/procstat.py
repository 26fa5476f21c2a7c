"""bench/procstat.py - what the Python benchmarks read of a running
posternd in /proc: the daemon process (the privileged parent's child) and
its resident memory."""
import time


def daemon_pid(parent):
    """posternd's daemon: the privileged parent's child (the parent itself
    if none shows up within 5 s)."""
    for _ in range(100):
        try:
            with open("/proc/%d/task/%d/children" % (parent, parent)) as f:
                kids = f.read().split()
            if kids:
                return int(kids[0])
        except OSError:
            pass
        time.sleep(0.05)
    return parent


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
