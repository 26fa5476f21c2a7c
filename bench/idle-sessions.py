#!/usr/bin/env python3
"""bench/idle-sessions.py - what an idle SMTP session costs posternd.

Starts posternd (BUILD/posternd) on loopback, measures the daemon's RSS,
opens N sessions (default 10,000) from 100 loopback source addresses, reads
each banner, sends EHLO and reads the reply (with --tls, STARTTLS and EHLO
again first), lets them sit idle, and measures the RSS again. Prints the
RSS before and after and the cost per session in KiB, for several rounds
(--rounds, a fresh daemon each). Usage:

  python3 bench/idle-sessions.py [--build build] [--sessions 10000] [--rounds 3] [--tls]
"""
import argparse
import os
import resource
import selectors
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from procstat import daemon_pid, rss_kib  # noqa: E402


def certs(d):
    key, crt = os.path.join(d, "gw.key"), os.path.join(d, "gw.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "2", "-subj", "/CN=gw.bench.test"], check=True, capture_output=True)
    os.chmod(key, 0o644)
    return key, crt


def start(build, d, port, tls_files, sessions):
    spool = os.path.join(d, "spool")
    conf = os.path.join(d, "postern.conf")
    with open(conf, "w") as f:
        f.write("listen = 127.0.0.1:%d\nhostname = gw.bench.test\nspool_dir = %s\nrelay_domains = dest.test\n"
                "default_transport = smtp:[127.0.0.1]:9\nlog_level = warning\nmax_sessions = %d\n"
                "max_sessions_per_client = %d\nclient_timeout = 600s\n" % (port, spool, sessions + 100, sessions))
        if tls_files:
            f.write("tls_cert = %s\ntls_key = %s\n" % (tls_files[1], tls_files[0]))
    log = open(os.path.join(d, "posternd.log"), "a")
    proc = subprocess.Popen([os.path.join(build, "posternd"), "-c", conf], stdout=log, stderr=subprocess.STDOUT)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc


def read_reply(sock, buf=b""):
    """Read until a final reply line (code + space)."""
    while True:
        lines = buf.split(b"\r\n")
        for line in lines[:-1]:
            if len(line) >= 4 and line[3:4] == b" ":
                return buf
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("closed")
        buf += chunk


def open_sessions(port, n, use_tls):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    socks = []
    for i in range(n):
        s = socket.socket()
        s.bind(("127.0.%d.%d" % (1 + i // 25000, 2 + (i % 100)), 0))
        s.settimeout(30)
        s.connect(("127.0.0.1", port))
        read_reply(s)
        s.sendall(b"EHLO client.bench.test\r\n")
        read_reply(s)
        if use_tls:
            s.sendall(b"STARTTLS\r\n")
            read_reply(s)
            s = ctx.wrap_socket(s, server_hostname="gw.bench.test")
            s.sendall(b"EHLO client.bench.test\r\n")
            read_reply(s)
        socks.append(s)
    return socks


def one_round(build, sessions, use_tls, port):
    d = tempfile.mkdtemp(prefix="idle-bench-")
    os.chmod(d, 0o755)
    proc = None
    socks = []
    try:
        tls_files = certs(d) if use_tls else None
        proc = start(build, d, port, tls_files, sessions)
        pid = daemon_pid(proc.pid)
        time.sleep(0.5)
        before = rss_kib(pid)
        t0 = time.time()
        socks = open_sessions(port, sessions, use_tls)
        took = time.time() - t0
        time.sleep(2)          # idle
        after = rss_kib(pid)
        return before, after, took
    finally:
        for s in socks:
            s.close()
        if proc:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--sessions", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--port", type=int, default=2640)
    a = ap.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = a.sessions + 1000 if hard == resource.RLIM_INFINITY else min(a.sessions + 1000, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    print("%d idle sessions after EHLO%s, posternd's RSS (KiB)" % (a.sessions, " over STARTTLS" if a.tls else ""))
    print("round  before   after  per-session  open-time")
    per = []
    for r in range(a.rounds):
        before, after, took = one_round(a.build, a.sessions, a.tls, a.port)
        per.append((after - before) / a.sessions)
        print("%5d %7d %7d %9.2f KiB %8.1f s" % (r + 1, before, after, per[-1], took))
    per.sort()
    print("median per session: %.2f KiB; %d sessions: %.1f MiB above the idle daemon" %
          (per[len(per) // 2], a.sessions, per[len(per) // 2] * a.sessions / 1024))


if __name__ == "__main__":
    sys.exit(main())
