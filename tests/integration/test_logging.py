"""Logging like Postfix: log_target = syslog (the test is the syslog daemon
on /dev/log and checks the RFC 3164 records: facility mail, posternd[pid]),
file:PATH reopened on SIGUSR1 after a rotation, the Postfix fields
(message-id=, relay=host[ip]:port, delays=a/b/c/d, dsn=), and plugin and
Lua lines that name their session and queue ID."""
import socket
from harness import *

PLUGDIR = os.path.join(BUILD, "plugins")


class SyslogSocket:
    """A datagram socket on /dev/log, as syslogd has. Only when the machine
    has none (CI has no syslog daemon): never steals a real one."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("/dev/log")
        os.chmod("/dev/log", 0o666)
        self.sock.settimeout(0.2)
        self.records = []
        on_cleanup(self.close)

    def drain(self):
        while True:
            try:
                self.records.append(self.sock.recv(65536).decode(errors="replace"))
            except socket.timeout:
                return self.records

    def close(self):
        self.sock.close()
        if os.path.exists("/dev/log"):
            os.unlink("/dev/log")


def test_syslog_records_carry_the_postfix_fields():
    if os.geteuid() != 0 or os.path.exists("/dev/log"):
        skip("needs root and no syslog daemon of the machine's on /dev/log")
    log = SyslogSocket()
    sink = Sink(addr(2))
    g = Gateway(sink=sink, log_target="syslog").start(wait=False)
    wait_for(lambda: any("posternd ready" in r for r in log.drain()), 10, "posternd ready in syslog")
    qid = queue_id(send_mail(g, headers="Subject: hi\r\nMessage-ID: <abc.123@src.test>\r\n"))
    sink.wait_count(1)
    pid = g.pid()

    def record(pattern):
        for r in log.drain():
            if re.search(pattern, r):
                return r
        return None
    wait_for(lambda: record(qid + ": to=<x@example.test>"), 10, "the delivery record")
    accepted = record(qid + ": accepted ")
    # <22> = facility mail (2) * 8 + info (6); an RFC 3164 time stamp; ident[pid]
    assert re.match(r"<22>\w{3} [ \d]\d \d\d:\d\d:\d\d posternd\[%d\]: " % pid, accepted), accepted
    assert "message-id=<abc.123@src.test>" in accepted, accepted
    sent = record(qid + ": to=<x@example.test>")
    m = re.search(r"relay=([^,]+), delay=\d+s, delays=([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+), dsn=(\S+), "
                  r"status=sent \((.*)\)", sent)
    assert m, sent
    assert m.group(1) == "%s[%s]:%d" % (addr(2), addr(2), sink.port), sent
    assert m.group(6) == "2.0.0" or m.group(7).startswith("250 2"), sent
    assert all(float(x) < 10 for x in m.group(2, 3, 4, 5)), sent
    # a warning says so, as Postfix's do
    os.kill(pid, signal.SIGUSR1)       # a no-op for syslog, and not fatal
    g.stop()
    assert not any("info: " in r for r in log.drain())


def test_file_target_reopens_on_sigusr1_after_rotation():
    sink = Sink(addr(2))
    d = tempfile.mkdtemp(prefix="logs-")
    os.chmod(d, 0o777)           # the daemon's user opens (and reopens) the file
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    path = os.path.join(d, "postern.log")
    g = Gateway(sink=sink, log_target="file:" + path).start(wait=False)
    wait_for(lambda: os.path.exists(path) and "posternd ready" in open(path).read(), 10, "posternd ready in the file")
    first = queue_id(send_mail(g))
    sink.wait_count(1)
    wait_for(lambda: first + ": to=<x@example.test>" in open(path).read(), 10, "the first delivery in the file")
    os.rename(path, path + ".1")          # logrotate without copytruncate
    g.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: os.path.exists(path), 10, "a new log file")
    second = queue_id(send_mail(g))
    sink.wait_count(2)
    wait_for(lambda: second + ": to=<x@example.test>" in open(path).read(), 10, "the second delivery in the new file")
    assert second not in open(path + ".1").read()
    assert "SIGUSR1: reopened " + path in open(path).read()
    # logrotate's fallback: `postern reopen-logs` through the control socket, no process names
    os.rename(path, path + ".3")
    r = subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "reopen-logs"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0 and "log reopened" in r.stdout, r.stdout + r.stderr
    wait_for(lambda: os.path.exists(path) and "log reopened (postern reopen-logs)" in open(path).read(), 10,
             "the log reopened by postern reopen-logs")
    assert "pkill" not in open(os.path.join(ROOT, "dist", "postern.logrotate")).read()
    # a symlink in place of the log is never followed
    os.rename(path, path + ".2")
    os.symlink("/etc/passwd-postern-never", path)
    g.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: "cannot reopen" in open(path + ".2").read(), 10, "the refusal in the old file")
    assert not os.path.exists("/etc/passwd-postern-never")
    g.stop()
    # a bad target is a config error
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.set(log_target="journal").conf, "-t"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "log_target: expected stderr, syslog or file:/PATH" in r.stderr


def test_plugin_and_lua_lines_name_the_session_and_queue_id():
    sink = Sink(addr(2))
    script = readable_file("say.lua", 'postern.on("rcpt", function(tx, r) postern.log("info", "at rcpt") end)\n'
                                      'postern.on("eom", function(tx) postern.log("info", "at eom") end)\n')
    g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="header_checks, lua:" + script,
                **{"header_checks.rule": "/^Subject: warn/ WARN looked at"}).start()
    qid = queue_id(send_mail(g, headers="Subject: warn me\r\n"))
    log = g.log()
    assert re.search(r"info: S\d+: lua: %s:1: at rcpt" % re.escape(script), log), log   # no queue ID yet
    assert re.search(r"info: S\d+: %s: lua: %s:2: at eom" % (qid, re.escape(script)), log), log
    assert re.search(r"S\d+: %s: plugin: header_checks: warning: Subject: warn me" % qid, log), log
    assert ": -: plugin" not in log
    g.stop()


if __name__ == "__main__":
    run_tests(globals())
