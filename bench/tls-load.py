#!/usr/bin/env python3
"""tls-load.py HOST PORT N SESSIONS SIZE [--tls] [--auth USER:PASSWORD]: send
N messages of SIZE bytes over SESSIONS threads, one SMTP session per message
(like smtp-source without -d), optionally upgrading each with STARTTLS (no
certificate check: the benchmark measures the cost of TLS, not PKI) and
logging in (AUTH PLAIN). Prints accept_s."""
import smtplib
import ssl
import sys
import threading
import time

host, port, total, sessions, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
use_tls = "--tls" in sys.argv
auth = sys.argv[sys.argv.index("--auth") + 1].split(":", 1) if "--auth" in sys.argv else None
body = "Subject: tls bench\r\n\r\n" + ("x" * 76 + "\r\n") * max(1, size // 78)
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
lock = threading.Lock()
left = [total]
failures = [0]


def worker():
    while True:
        with lock:
            if left[0] == 0:
                return
            left[0] -= 1
        try:
            with smtplib.SMTP(host, port, timeout=30) as s:
                s.ehlo("bench.test")
                if use_tls:
                    s.starttls(context=ctx)
                    s.ehlo("bench.test")
                if auth:
                    s.login(auth[0], auth[1], initial_response_ok=True)
                s.sendmail("sender@bench.test", ["rcpt@dest.test"], body)
        except Exception:
            with lock:
                failures[0] += 1


t0 = time.time()
threads = [threading.Thread(target=worker) for _ in range(sessions)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("accept_s=%.2f failures=%d" % (time.time() - t0, failures[0]))
sys.exit(1 if failures[0] else 0)
