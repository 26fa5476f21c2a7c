"""Integration harness: starts posternd, Postfix's smtp-sink and other peers on
loopback addresses, and stops every one of them when a test ends.

Each test file gets its own 127.0.N.0/24 block (N passed by run.sh) so files
can run in parallel on fixed ports. Tests are plain functions named test_*;
run_tests() runs them in order and prints "ok NAME" / "FAIL NAME".
"""
import base64
import glob
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("POSTERN_BUILD", "build"))
NET = int(os.environ.get("POSTERN_TEST_NET", "10"))


def addr(host):
    """127.0.NET.host: this file's private loopback 'hosts'."""
    return "127.0.%d.%d" % (NET, host)


_cleanups = []


def on_cleanup(fn):
    _cleanups.append(fn)


def readable_file(name, text, prefix="postern-file-"):
    """text in a fresh directory as NAME, both readable by the daemon's user
    (a Lua script, a table); the directory goes at cleanup."""
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path


def table_file(text, name="table"):
    """A lookup table (transport, TLS policy, ...) the daemon's user can read:
    its "file:PATH" value."""
    return "file:" + readable_file(name, text, prefix="table-")


def lab_psl(suffixes=("test", "com", "co.uk", "example")):
    """A public suffix list that knows the lab TLDs: libopendmarc does not
    apply the PSL's default rule ("*") to TLDs missing from the list."""
    return readable_file("psl.dat", "// lab suffixes\n" + "".join(s + "\n" for s in suffixes), prefix="psl-")


def wait_for(pred, timeout, what, interval=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))


def terminate(proc):
    """SIGTERM, then SIGKILL if it has not gone within 5 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def port_open(host, port):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Sink:
    """Postfix's smtp-sink, dumping every message to its own file."""

    def __init__(self, host, port=2526, extra=()):
        self.host, self.port = host, port
        self.dir = tempfile.mkdtemp(prefix="sink-")
        os.chmod(self.dir, 0o777)
        self.log = open(os.path.join(self.dir, "sink.log"), "w")
        cmd = ["smtp-sink", "-u", "nobody", "-c", "-d", os.path.join(self.dir, "msgs", "%H."),
               *extra, "%s:%d" % (host, port), "1000"]
        os.makedirs(os.path.join(self.dir, "msgs"))
        os.chmod(os.path.join(self.dir, "msgs"), 0o777)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        on_cleanup(self.stop)
        wait_for(lambda: port_open(host, port), 5, "smtp-sink on %s:%d" % (host, port))

    def stop(self):
        terminate(self.proc)

    def messages(self):
        """Every dumped message as bytes (smtp-sink's X- headers included)."""
        out = []
        for p in sorted(glob.glob(os.path.join(self.dir, "msgs", "*"))):
            with open(p, "rb") as f:
                out.append(f.read())
        return out

    def count(self):
        """Messages completed, from smtp-sink's own -c counter (a dump file
        may still be growing; the counter moves at end of data)."""
        with open(self.log.name, "rb") as f:
            found = re.findall(rb"mesg=(\d+)", f.read().replace(b"\r", b"\n"))
        return int(found[-1]) if found else 0

    def sessions(self):
        """SMTP sessions smtp-sink has finished (its -c "sess=" counter)."""
        with open(self.log.name, "rb") as f:
            found = re.findall(rb"sess=(\d+)", f.read())
        return int(found[-1]) if found else 0

    def wait_count(self, n, timeout=20):
        wait_for(lambda: self.count() >= n, timeout, "%d message(s) at the sink on %s" % (n, self.host))
        return wait_for(lambda: len(self.messages()) >= n and self.messages(), 5, "dump files")


def strip_sink_headers(msg):
    """Drop the X-*-Args/Addr/Proto lines and the Received line smtp-sink adds."""
    lines = msg.split(b"\n")
    i = 0
    while i < len(lines) and lines[i].startswith((b"X-Client-", b"X-Helo-", b"X-Mail-", b"X-Rcpt-")):
        i += 1
    rest = b"\n".join(lines[i:])
    if rest.startswith(b"Received: from") and b"(smtp-sink)" in rest.split(b"\n")[1]:
        rest = rest.split(b"\n", 3)[3]
    return rest


def our_received_and_rest(msg):
    """Split a dumped message into our Received header (3 lines with "for",
    2 without) and the rest. smtp-sink writes LF line ends and one extra LF
    at the end of each dump, so the rest is compared against sent.replace(CRLF, LF) + LF."""
    m = strip_sink_headers(msg)
    lines = m.split(b"\n")
    assert lines[0].startswith(b"Received: from "), m[:300]
    n = 1
    while n < len(lines) and lines[n].startswith(b"\t"):
        n += 1
    return b"\n".join(lines[:n]), b"\n".join(lines[n:])


def as_dumped(sent):
    if isinstance(sent, str):
        sent = sent.encode()
    return sent.replace(b"\r\n", b"\n") + b"\n"


def sink_rcpts(msg):
    return re.findall(rb"^X-Rcpt-Args: <([^>]*)>", msg, re.M)


def parse_dsn(raw, returned="text/rfc822-headers"):
    """A DSN as smtp-sink dumped it: (message, its parts, the delivery-status
    blocks: per-message first, then one per recipient)."""
    import email
    import email.policy
    body = strip_sink_headers(raw).replace(b"\n", b"\r\n")
    msg = email.message_from_bytes(body, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status", returned]
    status_blocks = parts[1].get_payload()     # per-message + per-recipient header blocks
    return msg, parts, status_blocks


class DnsServer:
    """unbound serving test zones from local-data on addr(53):5353.
    records: zone-file lines ("example.test. MX 10 mx1.example.test.");
    refuse: domains answered REFUSED (a DNS temporary failure); drop:
    domains never answered (a timeout); zones: extra static zones it
    serves from its records (say a reverse zone unbound keeps by default)."""

    def __init__(self, records, refuse=(), host=None, port=5353, drop=(), zones=()):
        self.host, self.port = host or addr(53), port
        self.dir = tempfile.mkdtemp(prefix="dns-")
        conf = ["server:", "  interface: %s" % self.host, "  port: %d" % port, "  do-daemonize: no",
                '  chroot: ""', '  username: ""', '  pidfile: ""', '  directory: "%s"' % self.dir,
                "  use-syslog: no", '  logfile: ""', "  verbosity: 0", "  do-ip6: no",
                "  access-control: 127.0.0.0/8 allow", "  interface-automatic: no",
                '  module-config: "iterator"', '  local-zone: "test." static']
        for d in refuse:
            conf.append('  local-zone: "%s." refuse' % d)
        for d in drop:
            conf.append('  local-zone: "%s." deny' % d)
        for z in zones:
            conf.append('  local-zone: "%s." static' % z)
        for r in records:
            quote = "'" if '"' in r else '"'
            conf.append("  local-data: %s%s%s" % (quote, r, quote))
        conf += ["remote-control:", "  control-enable: no"]
        path = os.path.join(self.dir, "unbound.conf")
        with open(path, "w") as f:
            f.write("\n".join(conf) + "\n")
        self.log = open(os.path.join(self.dir, "unbound.log"), "w")
        exe = shutil.which("unbound") or "/usr/sbin/unbound"
        self.proc = subprocess.Popen([exe, "-d", "-c", path], stdout=self.log, stderr=subprocess.STDOUT)
        on_cleanup(self.stop)
        wait_for(lambda: port_open(self.host, port) or self.proc.poll() is not None, 10, "unbound to listen")
        assert self.proc.poll() is None, open(self.log.name).read()

    def address(self):
        return "%s:%d" % (self.host, self.port)

    def stop(self):
        terminate(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


class Redis:
    """A private redis-server on host:port (no persistence), stopped at
    cleanup; kill() and start() again for outage tests."""

    def __init__(self, host, port=6379, password=None):
        self.host, self.port, self.password = host, port, password
        self.dir = tempfile.mkdtemp(prefix="redis-")
        os.chmod(self.dir, 0o777)
        on_cleanup(lambda: shutil.rmtree(self.dir, ignore_errors=True))
        on_cleanup(self.stop)
        self.proc = None
        self.start()

    def start(self):
        cmd = ["redis-server", "--bind", self.host, "--port", str(self.port), "--save", "", "--appendonly", "no",
               "--dir", self.dir, "--protected-mode", "no"]
        if self.password:
            cmd += ["--requirepass", self.password]
        self.log = open(os.path.join(self.dir, "redis.log"), "a")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: port_open(self.host, self.port), 5, "redis-server on %s:%d" % (self.host, self.port))
        return self

    def address(self):
        return "%s:%d" % (self.host, self.port)

    def cli(self, *args):
        cmd = ["redis-cli", "-h", self.host, "-p", str(self.port)] + (["-a", self.password] if self.password else [])
        return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=10).stdout.strip()

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            terminate(self.proc)


class RabbitMQ:
    """A private rabbitmq-server on host:port (its own node name, files and
    distribution port; only the guest user, which RabbitMQ lets in from
    loopback addresses), stopped at cleanup with epmd if this started it.
    declare(queue) makes a durable queue; take(queue, n) reads n messages'
    bodies (amqp-tools)."""

    def __init__(self, host, port=5672):
        self.host, self.port = host, port
        self.dir = tempfile.mkdtemp(prefix="rabbitmq-")
        on_cleanup(lambda: shutil.rmtree(self.dir, ignore_errors=True))
        on_cleanup(self.stop)
        self.epmd_before = subprocess.run(["epmd", "-names"], capture_output=True).returncode == 0   # one answers
        with open(os.path.join(self.dir, "enabled_plugins"), "w") as f:
            f.write("[].\n")
        net = host.split(".")[1]
        env = dict(os.environ, HOME=self.dir, RABBITMQ_NODENAME="postern-test-%s@localhost" % net,
                   RABBITMQ_NODE_IP_ADDRESS=host, RABBITMQ_NODE_PORT=str(port),
                   RABBITMQ_DIST_PORT=str(25000 + int(net)), RABBITMQ_MNESIA_BASE=os.path.join(self.dir, "mnesia"),
                   RABBITMQ_LOG_BASE=os.path.join(self.dir, "log"),
                   RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(self.dir, "enabled_plugins"),
                   RABBITMQ_CONFIG_FILE=os.path.join(self.dir, "none"),
                   RABBITMQ_ADVANCED_CONFIG_FILE=os.path.join(self.dir, "none-advanced"),
                   RABBITMQ_PID_FILE=os.path.join(self.dir, "pid"))
        self.log = open(os.path.join(self.dir, "out.log"), "a")
        self.proc = subprocess.Popen(["/usr/lib/rabbitmq/bin/rabbitmq-server"], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: port_open(host, port) or self.proc.poll() is not None, 60, "rabbitmq-server on %s" % host)
        assert self.proc.poll() is None, open(os.path.join(self.dir, "out.log")).read()[-2000:]

    def url(self):
        return "amqp://guest:guest@%s:%d/" % (self.host, self.port)

    def declare(self, queue):
        r = subprocess.run(["amqp-declare-queue", "-s", self.host, "--port", str(self.port), "-d", "-q", queue],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, r.stderr

    def take(self, queue, n):
        """n messages' bodies from queue (acknowledged), or fewer after 20 s."""
        if n == 0:
            return []
        r = subprocess.run(["timeout", "20", "amqp-consume", "-s", self.host, "--port", str(self.port), "-q", queue,
                            "-c", str(n), "--", "sh", "-c", "cat; echo"], capture_output=True, text=True)
        return [line for line in r.stdout.splitlines() if line.strip()]

    def drain(self, queue, limit=1000):
        """Every message now in queue (taken with amqp-get, one at a time; at most limit)."""
        bodies = []
        for _ in range(limit):
            r = subprocess.run(["amqp-get", "-s", self.host, "--port", str(self.port), "-q", queue],
                               capture_output=True, text=True, timeout=20)
            if r.returncode != 0:
                break
            bodies.append(r.stdout)
        return bodies

    def stop(self):
        if self.proc:             # the whole group (the script, beam, its helpers): a test broker keeps nothing
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            self.proc = None
        if not self.epmd_before:        # it goes once the node has left it (bounded)
            for _ in range(50):
                if subprocess.run(["epmd", "-kill"], capture_output=True, text=True).stdout.startswith("Killed"):
                    break
                time.sleep(0.1)


class Nsd:
    """A real authoritative server (NSD) on addr(53):5353 for zones the test
    writes and, where asked, signs with ldns-signzone (ECDSA P-256 KSK and
    ZSK made here). zones: {origin: zone-file lines}; signed: origins to
    sign; tamper(origin, text): may change the signed text before NSD loads
    it (a broken signature). anchor: a file of the DS records of the signed
    zones, for dns_trust_anchor."""

    def __init__(self, zones, signed=(), tamper=None, host=None, port=5353):
        self.host, self.port = host or addr(53), port
        self.dir = tempfile.mkdtemp(prefix="nsd-")
        os.chmod(self.dir, 0o755)
        on_cleanup(lambda: shutil.rmtree(self.dir, ignore_errors=True))
        conf = ["server:", "  ip-address: %s@%d" % (self.host, port), '  username: ""', '  chroot: ""',
                '  zonesdir: "%s"' % self.dir, '  database: ""', '  pidfile: "%s/nsd.pid"' % self.dir,
                '  xfrdfile: "%s/xfrd.state"' % self.dir, '  zonelistfile: "%s/zone.list"' % self.dir,
                '  xfrdir: "%s"' % self.dir, '  logfile: "%s/nsd.log"' % self.dir, "  server-count: 1",
                "  verbosity: 1", "  do-ip6: no", "remote-control:", "  control-enable: no"]
        anchors = []
        for origin, lines in zones.items():
            path = os.path.join(self.dir, origin + ".zone")
            with open(path, "w") as f:
                f.write("$ORIGIN %s.\n$TTL 300\n" % origin + "\n".join(lines) + "\n")
            if origin in signed:
                ksk = self._run("ldns-keygen", "-a", "ECDSAP256SHA256", "-k", origin).strip()
                zsk = self._run("ldns-keygen", "-a", "ECDSAP256SHA256", origin).strip()
                self._run("ldns-signzone", "-f", path + ".signed", path, zsk, ksk)
                path += ".signed"
                if tamper:
                    with open(path) as f:
                        text = f.read()
                    with open(path, "w") as f:
                        f.write(tamper(origin, text))
                with open(os.path.join(self.dir, ksk + ".ds")) as f:
                    anchors.append(f.read())
            conf += ["zone:", "  name: %s" % origin, "  zonefile: %s" % os.path.basename(path)]
        self.anchor = os.path.join(self.dir, "anchor.ds")
        with open(self.anchor, "w") as f:
            f.write("".join(anchors))
        os.chmod(self.anchor, 0o644)
        path = os.path.join(self.dir, "nsd.conf")
        with open(path, "w") as f:
            f.write("\n".join(conf) + "\n")
        self.out = open(os.path.join(self.dir, "nsd.out"), "w")
        self.proc = subprocess.Popen(["nsd", "-d", "-c", path], stdout=self.out, stderr=subprocess.STDOUT)
        on_cleanup(self.stop)
        wait_for(lambda: port_open(self.host, port) or self.proc.poll() is not None, 10, "nsd to listen")
        assert self.proc.poll() is None, open(self.out.name).read()

    def _run(self, *cmd):
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=self.dir, timeout=60)
        assert r.returncode == 0, "%s: %s" % (cmd[0], r.stderr)
        return r.stdout

    def address(self):
        return "%s:%d" % (self.host, self.port)

    def stop(self):
        terminate(self.proc)


BASE_CONFIG = {
    "hostname": "gw.postern.test",
    "relay_domains": "example.test",
    "trusted_networks": "127.0.0.1/32",
    "retry_min": "1s",
    "retry_max": "2s",
    "max_queue_lifetime": "1h",
    "smtp_timeout": "30s",
    # loopback SYNs can stall on a TIME_WAIT left by an earlier test's sink
    "client_connect_timeout": "3s",
    "log_level": "info",
}


class Gateway:
    """posternd with a config in a temp dir; logs captured to a file."""

    def __init__(self, host=None, port=2525, sink=None, **conf):
        self.host = host or addr(1)
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="postern-")
        os.chmod(self.dir, 0o755)
        self.spool = os.path.join(self.dir, "spool")
        cfg = dict(BASE_CONFIG)
        cfg["listen"] = "%s:%d" % (self.host, port)
        cfg["spool_dir"] = self.spool
        if sink:
            cfg["default_transport"] = "smtp:[%s]:%d" % (sink.host, sink.port)
        cfg.update({k: v for k, v in conf.items() if v is not None})
        self.conf = os.path.join(self.dir, "postern.conf")
        with open(self.conf, "w") as f:
            for k, v in cfg.items():
                f.write("%s = %s\n" % (k, v))
        self.logpath = os.path.join(self.dir, "posternd.log")
        self.proc = None
        self.env = dict(os.environ)    # a test may add to it before start()
        self.prefix = []               # a command to run posternd under (prlimit ...)
        on_cleanup(self.cleanup)

    def start(self, wait=True):
        self.logf = open(self.logpath, "a")
        self.proc = subprocess.Popen([*self.prefix, os.path.join(BUILD, "posternd"), "-c", self.conf],
                                     stdout=self.logf, stderr=subprocess.STDOUT, env=self.env)
        if wait:
            # "ready" comes after the spool is loaded and every listener runs
            start = self.log().count("posternd ready")
            if "log_level = info" in open(self.conf).read() or "log_level = debug" in open(self.conf).read():
                ready = lambda: self.log().count("posternd ready") > start
            else:      # quieter logs: the listener answering is the best sign
                ready = lambda: port_open(self.host, self.port)
            wait_for(lambda: ready() or self.proc.poll() is not None, 10, "posternd to be ready")
            assert self.proc.poll() is None, "posternd exited: " + self.log()
        return self

    def set(self, **changes):
        """Change keys of the config file in place (None removes one): a key
        given twice is a config error."""
        lines = [l for l in open(self.conf).read().splitlines() if l.strip()]
        where = {l.split("=", 1)[0].strip(): i for i, l in enumerate(lines)}
        for k, v in changes.items():
            if k in where:
                lines[where[k]] = None if v is None else "%s = %s" % (k, v)
            elif v is not None:
                lines.append("%s = %s" % (k, v))
        with open(self.conf, "w") as f:
            f.write("\n".join(l for l in lines if l is not None) + "\n")
        return self

    def log(self):
        with open(self.logpath, errors="replace") as f:
            return f.read()

    def stop(self, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            rc = self.proc.wait(timeout)
            assert rc == 0, "posternd exited %s on SIGTERM:\n%s" % (rc, self.log()[-3000:])
        self.check_sanitizers()

    def pid(self):
        """The daemon's pid: started as root, posternd forks and the child
        (the unprivileged daemon) does the work while the parent keeps root
        to open files for it; otherwise the process itself."""
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                        return int(entry)
            except (OSError, IndexError, ValueError):
                continue
        return self.proc.pid

    def cpu_seconds(self):
        """posternd's CPU time so far (user and system), in seconds."""
        with open("/proc/%d/stat" % self.pid()) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kb(self):
        """posternd's resident memory, in kB."""
        with open("/proc/%d/status" % self.pid()) as f:
            return int([l for l in f if l.startswith("VmRSS")][0].split()[1])

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def check_sanitizers(self):
        text = self.log()
        assert "ERROR: AddressSanitizer" not in text and "runtime error:" not in text and \
            "WARNING: ThreadSanitizer" not in text, \
            "sanitizer report in posternd log:\n" + text[-4000:]

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def attempt_ended(self, qid, status="deferred", timeout=10):
        """Wait until an attempt for qid has logged its outcome (a recipient's
        status=...): after that, that attempt can deliver nothing more."""
        wait_for(lambda: re.search(r"%s: to=<[^>]*>, .*status=%s" % (re.escape(qid), status), self.log()), timeout,
                 "%s: status=%s" % (qid, status))

    def queue_files(self):
        d = os.path.join(self.spool, "queue")
        return [n for n in os.listdir(d) if re.fullmatch(r"[0-9A-F]{16}", n)] if os.path.isdir(d) else []


SLAPD_SCHEMA = """attributetype ( 1.3.6.1.4.1.55555.1.1 NAME 'proxyAddresses'
  EQUALITY caseIgnoreIA5Match SUBSTR caseIgnoreIA5SubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 )
objectclass ( 1.3.6.1.4.1.55555.2.1 NAME 'mailRecipient' SUP top AUXILIARY MAY ( proxyAddresses ) )
"""

SLAPD_BASE = """dn: dc=corp,dc=test
objectClass: dcObject
objectClass: organization
o: Corp
dc: corp

dn: cn=reader,dc=corp,dc=test
objectClass: person
cn: reader
sn: reader
userPassword: reader-secret

"""


class Slapd:
    """slapd with its own config, schema and directory, on host:port,
    serving StartTLS with a test certificate: dc=corp,dc=test with a
    service account cn=reader (password reader-secret) and entries, LDIF."""

    def __init__(self, host, entries="", port=3389):
        self.host, self.port = host, port
        self.dir = tempfile.mkdtemp(prefix="slapd-")
        on_cleanup(lambda: shutil.rmtree(self.dir, ignore_errors=True))
        certs, self.ca = make_certs([host])
        os.makedirs(os.path.join(self.dir, "db"))
        with open(os.path.join(self.dir, "ad.schema"), "w") as f:
            f.write(SLAPD_SCHEMA)
        self.conf = os.path.join(self.dir, "slapd.conf")
        with open(self.conf, "w") as f:
            f.write("""include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include %(dir)s/ad.schema
pidfile %(dir)s/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCertificateFile %(certs)s/%(host)s.crt
TLSCertificateKeyFile %(certs)s/%(host)s.key
TLSCACertificateFile %(ca)s
database mdb
maxsize 10485760
suffix "dc=corp,dc=test"
rootdn "cn=admin,dc=corp,dc=test"
rootpw admin-secret
directory %(dir)s/db
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
""" % {"dir": self.dir, "certs": certs, "host": host, "ca": self.ca})
        ldif = os.path.join(self.dir, "data.ldif")
        with open(ldif, "w") as f:
            f.write(SLAPD_BASE + entries)
        r = subprocess.run(["slapadd", "-f", self.conf, "-l", ldif], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        self.proc = None
        on_cleanup(self.stop)

    def uri(self):
        return "ldap://%s:%d" % (self.host, self.port)

    def start(self):
        self.proc = subprocess.Popen(["slapd", "-f", self.conf, "-h", self.uri(), "-d", "0"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: port_open(self.host, self.port), 10, "slapd on %s" % self.uri())
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Postfix:
    """A private, stock Postfix instance (its own config, queue and log
    directories) listening on host:port and relaying everything to relayhost
    ("[ip]:port"). main: extra main.cf settings; services: extra master.cf
    lines. Needs root (master runs as root and drops to the postfix user);
    Postfix.available() says whether this machine can run one."""

    @staticmethod
    def available():
        return os.geteuid() == 0 and shutil.which("postfix") is not None

    def __init__(self, host, port, relayhost, main=None, services=(), etc_files=None):
        self.host, self.port = host, port
        self.dir = tempfile.mkdtemp(prefix="postfix-")
        os.chmod(self.dir, 0o755)
        self.etc = os.path.join(self.dir, "etc")
        os.makedirs(self.etc)
        self.logpath = os.path.join(self.dir, "maillog")
        cfg = {
            "compatibility_level": "3.6", "queue_directory": os.path.join(self.dir, "queue"),
            "data_directory": os.path.join(self.dir, "data"), "mail_owner": "postfix",
            "setgid_group": "postdrop", "inet_protocols": "ipv4",
            # Postfix wants inet_interfaces on a real interface address; the
            # smtpd line in master.cf binds host:port itself
            "inet_interfaces": "127.0.0.1",
            "myhostname": "postfix.peer.test", "mydestination": "", "mynetworks": "127.0.0.0/8",
            "relay_domains": "", "relayhost": relayhost, "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "maillog_file": self.logpath, "maillog_file_prefixes": self.dir, "alias_maps": "", "alias_database": "",
            "smtp_tls_security_level": "none", "smtpd_tls_security_level": "none",
            "smtp_host_lookup": "native", "disable_dns_lookups": "yes", "queue_run_delay": "1s",
            "minimal_backoff_time": "1s", "maximal_backoff_time": "2s",
            "smtpd_client_connection_count_limit": "0", "smtpd_client_connection_rate_limit": "0",
            "in_flow_delay": "0"}
        cfg.update(main or {})
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.writelines("%s = %s\n" % kv for kv in cfg.items())
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(self.MASTER % {"listen": "%s:%d" % (host, port)})
            f.writelines(line + "\n" for line in services)
        # etc_files: {path under etc/: text}; Debian's Postfix reads Cyrus SASL's
        # smtpd.conf from etc/sasl/ (it ignores cyrus_sasl_config_path)
        for rel, text in (etc_files or {}).items():
            os.makedirs(os.path.dirname(os.path.join(self.etc, rel)), exist_ok=True)
            with open(os.path.join(self.etc, rel), "w") as f:
                f.write(text)
        os.makedirs(os.path.join(self.dir, "queue"))
        os.makedirs(os.path.join(self.dir, "data"))
        shutil.chown(os.path.join(self.dir, "data"), "postfix", "postfix")
        on_cleanup(self.stop)
        self.postfix("check")
        self.postfix("start")
        wait_for(lambda: port_open(host, port), 15, "Postfix on %s:%d" % (host, port))

    # every service runs unchrooted: the private queue directory has no copy of /etc
    MASTER = """%(listen)s inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

    def postfix(self, *args):
        cmd = ["postfix", "-c", self.etc, *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            # postfix(1) prints its fatal errors only to a terminal (or syslog)
            r = subprocess.run(["script", "-qc", " ".join(cmd), "/dev/null"], capture_output=True, text=True,
                               timeout=60)
            raise AssertionError("postfix %s: %s" % (" ".join(args), r.stdout + r.stderr))

    def log(self):
        try:
            with open(self.logpath, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self):
        subprocess.run(["postfix", "-c", self.etc, "stop"], capture_output=True, timeout=60)
        # master waits for its children; give it a moment, then make sure
        pidfile = os.path.join(self.dir, "queue", "pid", "master.pid")
        try:
            pid = int(open(pidfile).read().split()[0])
            wait_for(lambda: not os.path.exists("/proc/%d" % pid), 10, "Postfix master to exit")
        except (OSError, ValueError):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class ScriptedSmtp:
    """A minimal SMTP server on (host, port) whose answer to MAIL FROM is
    .mail_reply, or what .mail_reply(sender) returns when it is a function
    (a 421 closes the connection, as RFC 5321 has it); it
    counts .connections and keeps each accepted message's sender in
    .senders and the time it came (time.monotonic()) in .times. Everything
    else is accepted."""

    def __init__(self, host, port, mail_reply="250 2.1.0 Ok"):
        import socketserver
        self.mail_reply, self.connections, self.senders, self.times = mail_reply, 0, [], []
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                outer.connections += 1
                say = lambda line: self.wfile.write(line.encode() + b"\r\n")
                say("220 scripted.test ESMTP")
                sender = None
                for raw in self.rfile:
                    line = raw.decode(errors="replace").rstrip("\r\n")
                    verb = line[:4].upper()
                    if verb in ("EHLO", "HELO"):
                        say("250 scripted.test")
                    elif verb == "MAIL":
                        sender = line.split("<", 1)[1].split(">", 1)[0]
                        reply = outer.mail_reply(sender) if callable(outer.mail_reply) else outer.mail_reply
                        say(reply)
                        if reply.startswith("421"):
                            return
                    elif verb == "DATA":
                        say("354 go ahead")
                        for body in self.rfile:
                            if body in (b".\r\n", b".\n"):
                                break
                        outer.senders.append(sender)
                        outer.times.append(time.monotonic())
                        say("250 2.0.0 Ok: queued")
                    elif verb == "QUIT":
                        say("221 2.0.0 Bye")
                        return
                    else:
                        say("250 2.0.0 Ok")

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server((host, port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        on_cleanup(self.stop)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def make_certs(names, ca_name="Postern Test CA"):
    """A throw-away CA and one certificate per host name, made by openssl.
    Returns (dir, ca_cert_path); NAME.crt / NAME.key live in dir."""
    d = tempfile.mkdtemp(prefix="certs-")
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    ca_key, ca_crt = os.path.join(d, "ca.key"), os.path.join(d, "ca.crt")

    def openssl(*args):
        r = subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=d, timeout=60)
        assert r.returncode == 0, r.stderr

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_crt, "-days", "2",
            "-subj", "/CN=" + ca_name)
    for n in names:
        key, csr, crt = (os.path.join(d, n + ext) for ext in (".key", ".csr", ".crt"))
        ext = os.path.join(d, n + ".ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=DNS:%s\n" % n)
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=" + n)
        openssl("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-out", crt,
                "-days", "2", "-extfile", ext)
    for f in os.listdir(d):
        os.chmod(os.path.join(d, f), 0o644)     # the daemon reads them after dropping privileges
    return d, ca_crt


def ip_cert(ip):
    """A throw-away CA (DIR/ca.crt) and a certificate for the IP address ip
    (an IP SAN: DIR/hook.crt, DIR/hook.key); returns DIR."""
    d = tempfile.mkdtemp(prefix="hook-certs-")
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))

    def openssl(*args):
        r = subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=d, timeout=60)
        assert r.returncode == 0, r.stderr

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=Hook Test CA")
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("subjectAltName=IP:%s\n" % ip)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "hook.key", "-out", "hook.csr", "-subj", "/CN=hook")
    openssl("x509", "-req", "-in", "hook.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out",
            "hook.crt", "-days", "2", "-extfile", "ext")
    for f in os.listdir(d):
        os.chmod(os.path.join(d, f), 0o644)
    return d


def https_policy_server(host, certs, name, policy, chunked=False, content_type="text/plain"):
    """Serve policy at https://name/.well-known/mta-sts.txt on host:443;
    chunked: as HTTP/1.1 chunks of 7 bytes (one with an extension)."""
    import http.server
    import ssl
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if chunked else "HTTP/1.0"

        def do_GET(self):
            ok = self.path == "/.well-known/mta-sts.txt" and self.headers.get("Host") == name
            body = policy.encode() if ok else b"not here"
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", content_type)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.end_headers()
                for i in range(0, len(body), 7):
                    part = body[i:i + 7]
                    self.wfile.write(b"%x%s\r\n%s\r\n" % (len(part), b";ext=1" if i == 7 else b"", part))
                self.wfile.write(b"0\r\n\r\n")
                self.close_connection = True
                return
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(http.server.HTTPServer):
        def handle_error(self, request, client_address):
            pass                      # a client that stops reading a long answer is expected

    srv = Server((host, 443), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(certs[0], name + ".crt"), os.path.join(certs[0], name + ".key"))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    on_cleanup(lambda: (srv.shutdown(), srv.server_close()))
    return srv


def dkim_key(d, name, kind="rsa"):
    """A private key file and its DKIM TXT record data (RSA-2048 or Ed25519),
    split into 200-byte character-strings as long records must be."""
    key = os.path.join(d, name + ".pem")
    gen = ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"] if kind == "rsa" \
        else ["openssl", "genpkey", "-algorithm", "ED25519"]
    subprocess.run(gen + ["-out", key], check=True, capture_output=True, timeout=60)
    os.chmod(key, 0o644)
    der = subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-outform", "DER"], check=True,
                         capture_output=True, timeout=60).stdout
    pub = base64.b64encode(der if kind == "rsa" else der[-32:]).decode()   # RFC 8463: the raw 32 bytes
    txt = "v=DKIM1; k=%s; p=%s" % ("rsa" if kind == "rsa" else "ed25519", pub)
    return key, " ".join('"%s"' % txt[i:i + 200] for i in range(0, len(txt), 200))


class OpenDKIM:
    """opendkim -f with a config written here; mode "v" or "s"."""

    def __init__(self, port, dns, mode, authserv_id="odk.verify.test", domain=None, selector=None, key=None):
        self.dir = tempfile.mkdtemp(prefix="opendkim-")
        os.chmod(self.dir, 0o755)
        ub = os.path.join(self.dir, "unbound.conf")
        with open(ub, "w") as f:
            f.write('server:\n  do-not-query-localhost: no\n  local-zone: "test." transparent\n'
                    'forward-zone:\n  name: "."\n  forward-addr: %s@%d\n' % (dns.host, dns.port))
        conf = ["Mode %s" % mode, "Socket inet:%d@%s" % (port, addr(7)), "AuthservID %s" % authserv_id,
                "ResolverConfiguration %s" % ub, "Syslog no", "PidFile %s/pid" % self.dir,
                "Canonicalization relaxed/relaxed", "InternalHosts 127.0.0.0/8", "RequireSafeKeys no",
                "On-NoSignature accept", "On-BadSignature accept", "On-KeyNotFound accept"]
        if mode == "s":
            conf += ["Domain %s" % domain, "Selector %s" % selector, "KeyFile %s" % key]
        path = os.path.join(self.dir, "opendkim.conf")
        with open(path, "w") as f:
            f.write("\n".join(conf) + "\n")
        self.log = open(os.path.join(self.dir, "opendkim.log"), "w")
        self.proc = subprocess.Popen(["opendkim", "-f", "-x", path], stdout=self.log, stderr=subprocess.STDOUT)
        self.spec = "inet:%s:%d" % (addr(7), port)
        on_cleanup(self.stop)
        wait_for(lambda: port_open(addr(7), port) or self.proc.poll() is not None, 10, "opendkim to listen")
        assert self.proc.poll() is None, open(self.log.name).read()

    def stop(self):
        terminate(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


class Client:
    """A raw SMTP client for exact protocol checks."""

    def __init__(self, host, port=2525, source=None, timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.buf = b""
        self.banner = self.reply()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def reply(self):
        """One complete (possibly multi-line) reply as text; '' on EOF."""
        lines = []
        while True:
            while b"\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return "\n".join(lines)
                self.buf += chunk
            line, self.buf = self.buf.split(b"\n", 1)
            line = line.rstrip(b"\r").decode(errors="replace")
            lines.append(line)
            if len(line) < 4 or line[3] == " ":
                return "\n".join(lines)

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def starttls(self, cafile=None, server_name=None):
        """Upgrade after a 220 to STARTTLS (the caller sent it)."""
        import ssl
        ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl._create_unverified_context()
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_name)
        self.buf = b""

    def closed(self, timeout=3):
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, socket.timeout):
            return False

    def close(self):
        self.sock.close()


def presented(g, client, helo="client.test"):
    """A session to g whose client is `client` (an address, or IPV6:...),
    presented with XCLIENT as a trusted proxy would (g needs
    xclient_networks), then greeted with EHLO helo."""
    c = Client(g.host, g.port)
    assert "XCLIENT" in c.cmd("EHLO proxy.test")
    rep = c.cmd("XCLIENT ADDR=%s NAME=[UNAVAILABLE]" % client)
    assert rep.startswith("220"), rep
    assert c.cmd("EHLO " + helo).startswith("250")
    return c


def send_message(host, port, sender, rcpts, body, helo="client.test"):
    """A whole transaction; returns (code of end-of-data reply, its text)."""
    c = Client(host, port)
    assert c.cmd("EHLO " + helo).startswith("250")
    assert c.cmd("MAIL FROM:<%s>" % sender).startswith("250")
    for r in rcpts:
        rep = c.cmd("RCPT TO:<%s>" % r)
        assert rep.startswith("250"), rep
    assert c.cmd("DATA").startswith("354")
    c.send(body)   # must end with CRLF; the "." line follows
    rep = c.cmd(".")
    c.cmd("QUIT")
    c.close()
    return rep


def counts_by_where(g, metric, wheres, port=9025):
    """A counter's series by their where label (0 for one not shown yet), from
    g's http_listen on g.host:port."""
    import urllib.request
    with urllib.request.urlopen("http://%s:%d/metrics" % (g.host, port), timeout=10) as r:
        text = r.read().decode()
    found = dict(re.findall(r'^%s\{where="(\w+)"\} (\d+)$' % metric, text, re.M))
    return {w: int(found.get(w, 0)) for w in wheres}


def chain_c_runs(g, port=9025):
    """postern_chain_c_runs_total by where (loop, worker, deferred, dns_wait)."""
    return counts_by_where(g, "postern_chain_c_runs_total", ("loop", "worker", "deferred", "dns_wait"), port)


def lua_calls(g, port=9025):
    """postern_lua_calls_total by where (loop, moved, restarted, thread)."""
    return counts_by_where(g, "postern_lua_calls_total", ("loop", "moved", "restarted", "thread"), port)


def send_mail(g, rcpts=("x@example.test",), headers="Subject: hi\r\n", body="hello\r\n", sender="alice@src.test",
              source=None):
    """One transaction; returns the first refusal, or the reply to the final dot."""
    c = Client(g.host, source=source)
    c.cmd("EHLO client.test")
    rep = c.cmd("MAIL FROM:<%s>" % sender)
    if not rep.startswith("250"):
        return rep
    for r in rcpts:
        rep = c.cmd("RCPT TO:<%s>" % r)
        if not rep.startswith("250"):
            return rep
    c.cmd("DATA")
    c.send(headers + "\r\n" + body)
    rep = c.cmd(".")
    c.close()
    return rep


def queue_id(reply):
    m = re.search(r"queued as ([0-9A-F]{16})", reply)
    assert m, "no queue ID in %r" % reply
    return m.group(1)


def archive_timed(conf, *args, timeout=300):
    """postern -c conf archive ARGS, with its wall time (.secs) and peak RSS
    in kB (.rss) from GNU time: a child forked from this Python would count
    Python's pages."""
    fd, stats = tempfile.mkstemp(prefix="time-")
    os.close(fd)
    on_cleanup(lambda: os.unlink(stats))
    t0 = time.time()
    p = subprocess.run(["/usr/bin/time", "-o", stats, "-f", "%M", os.path.join(BUILD, "postern"), "-c", conf,
                        "archive", *args], capture_output=True, text=True, timeout=timeout)
    assert "AddressSanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr
    p.secs, p.rss = time.time() - t0, int(open(stats).read().split()[-1])
    return p


class Skipped(Exception):
    pass


def skip(reason):
    """End this test as skipped: it prints "skip NAME: reason", never "ok"."""
    raise Skipped(reason)


# ---- the web console: users made by `postern console-user`, requests with a cookie jar

def console_users(d, *users):
    """A users file made with `postern console-user` (yescrypt hashes)."""
    lines = []
    for name, password, role in users:
        r = subprocess.run([os.path.join(BUILD, "postern"), "console-user", name, role], input=password + "\n",
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(name + ":$y$") and r.stdout.rstrip().endswith(":" + role), r.stdout
        lines.append(r.stdout.strip())
    path = os.path.join(d, "users")
    with open(path, "w") as f:
        f.write("# console users\n" + "\n".join(lines) + "\n")
    os.chmod(path, 0o600)          # read at start, as root
    return path


class Web:
    """HTTPS requests with a cookie jar, as curl -b/-c would."""

    def __init__(self, g):
        self.host, self.port = g.host, 9443
        self.ctx = ssl._create_unverified_context()
        self.cookie = None

    def request(self, method, path, form=None, headers=None):
        c = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=20)
        h = dict(headers or {})
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form, doseq=True)
            h["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookie:
            h["Cookie"] = self.cookie
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        text = r.read().decode(errors="replace")
        for k, v in r.getheaders():
            if k.lower() == "set-cookie" and v.startswith("postern_session="):
                self.cookie = v.split(";")[0]
        c.close()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), text

    def login(self, user, password):
        return self.request("POST", "/login", {"user": user, "password": password})

    def csrf(self):
        status, _, text = self.request("GET", "/")
        m = re.search(r'name="csrf" value="([0-9a-f]{64})"', text)
        assert status == 200 and m, (status, text[:500])
        return m.group(1)


def cyrus_sasldb(realm, users, password):
    """A Cyrus sasldb with these users (password for all) and the postern.conf
    (auth_cyrus_config_dir) that names it: its directory."""
    d = tempfile.mkdtemp(prefix="sasl-")
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    db = os.path.join(d, "sasldb2")
    for user in users:
        r = subprocess.run(["saslpasswd2", "-f", db, "-c", "-p", "-u", realm, user], input=password + "\n",
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
    shutil.chown(db, "postern", "postern")
    with open(os.path.join(d, "postern.conf"), "w") as f:
        f.write("pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: %s\nmech_list: PLAIN LOGIN\n" % db)
    os.chmod(os.path.join(d, "postern.conf"), 0o644)
    return d


class Dovecot:
    """Dovecot with only its auth service: a passwd-file of users
    ({name: password}); its client socket is .socket."""

    def __init__(self, users):
        self.dir = tempfile.mkdtemp(prefix="dovecot-")
        os.chmod(self.dir, 0o755)
        on_cleanup(lambda: shutil.rmtree(self.dir, ignore_errors=True))
        run = os.path.join(self.dir, "run")
        os.makedirs(run)
        passwd = os.path.join(self.dir, "passwd")
        with open(passwd, "w") as f:
            for name, password in users.items():
                f.write("%s:{PLAIN}%s::::::\n" % (name, password))
        self.conf = os.path.join(self.dir, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write("""base_dir = %(run)s
state_dir = %(dir)s/state
log_path = %(dir)s/dovecot.log
protocols =
listen = 127.0.0.1
ssl = no
auth_mechanisms = plain login
disable_plaintext_auth = yes
passdb {
  driver = passwd-file
  args = scheme=PLAIN %(passwd)s
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}
service auth {
  unix_listener auth-client {
    mode = 0666
  }
}
""" % {"run": run, "dir": self.dir, "passwd": passwd})
        self.socket = os.path.join(run, "auth-client")
        self.proc = start_dovecot(self.conf, self.socket, os.path.join(self.dir, "dovecot.log"))
        on_cleanup(self.stop)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def start_dovecot(conf, ready_path, log):
    """dovecot -F on conf, once ready_path (a socket it makes) exists."""
    proc = subprocess.Popen(["dovecot", "-F", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: os.path.exists(ready_path) or proc.poll() is not None, 20, "dovecot's %s" % ready_path)
    assert proc.poll() is None, open(log).read() if os.path.exists(log) else "dovecot exited"
    return proc


class DovecotLmtp(Dovecot):
    """Dovecot's LMTP service delivering into Maildirs: users {name: quota}
    (a storage quota such as "1K", or None for none); .socket is its Unix
    listener, (host, port) its TCP one. fetch(user) gives each message in
    the user's INBOX as text, through doveadm."""

    def __init__(self, users, host, port):
        self.dir = tempfile.mkdtemp(prefix="dovecot-lmtp-")
        os.chmod(self.dir, 0o755)
        on_cleanup(lambda: shutil.rmtree(self.dir, ignore_errors=True))
        run = os.path.join(self.dir, "run")
        home = os.path.join(self.dir, "home")
        os.makedirs(run)
        os.makedirs(home)
        os.chmod(home, 0o777)
        userdb = os.path.join(self.dir, "users")
        with open(userdb, "w") as f:
            for name, quota in users.items():
                extra = "userdb_quota_rule=*:storage=%s" % quota if quota else ""
                f.write("%s::65534:65534::%s/%s::%s\n" % (name, home, name, extra))
        self.conf = os.path.join(self.dir, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write("""base_dir = %(run)s
state_dir = %(dir)s/state
log_path = %(dir)s/dovecot.log
protocols = lmtp
listen = %(host)s
ssl = no
mail_location = maildir:~/Maildir
mail_plugins = quota
first_valid_uid = 1
auth_username_format = %%n
passdb {
  driver = passwd-file
  args = %(userdb)s
}
userdb {
  driver = passwd-file
  args = %(userdb)s
}
plugin {
  quota = maildir:User quota
}
service lmtp {
  unix_listener lmtp {
    mode = 0666
  }
  inet_listener lmtp {
    address = %(host)s
    port = %(port)d
  }
}
""" % {"run": run, "dir": self.dir, "userdb": userdb, "host": host, "port": port})
        self.socket = os.path.join(run, "lmtp")
        self.host, self.port = host, port
        self.proc = start_dovecot(self.conf, self.socket, os.path.join(self.dir, "dovecot.log"))
        on_cleanup(self.stop)
        wait_for(lambda: port_open(host, port), 10, "dovecot's LMTP port")

    def fetch(self, user):
        r = subprocess.run(["doveadm", "-c", self.conf, "fetch", "-u", user, "text", "mailbox", "INBOX", "all"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return [m for m in re.split(r"^text:\n", r.stdout, flags=re.M) if m.strip()]

    def log(self):
        with open(os.path.join(self.dir, "dovecot.log")) as f:
            return f.read()


def console_settings():
    """Gateway settings for an HTTPS console with one admin (password
    "correct horse battery")."""
    d = tempfile.mkdtemp(prefix="console-")
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    certs = make_certs(["gw.postern.test"])
    crt, key = (os.path.join(certs[0], "gw.postern.test" + e) for e in (".crt", ".key"))
    return dict(http_listen="%s:9443" % addr(1), tls_cert=crt, tls_key=key,
                http_users=console_users(d, ("admin", "correct horse battery", "admin")))


ARTIFACTS = os.path.join(ROOT, BUILD, "artifacts")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


class Browser:
    """Headless Chromium through chromedriver (WebDriver over HTTP)."""

    def __init__(self):
        self.port = 9515 + int(os.environ.get("POSTERN_TEST_NET", "0"))
        self.proc = subprocess.Popen([CHROMEDRIVER, "--port=%d" % self.port, "--allowed-ips=127.0.0.1"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        on_cleanup(self.quit)
        wait_for(lambda: port_open("127.0.0.1", self.port), 20, "chromedriver")
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "acceptInsecureCerts": True,
                "goog:chromeOptions": {"binary": shutil.which("chromium") or "/usr/bin/chromium",
                                       "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                                                "--disable-dev-shm-usage", "--window-size=1280,900"]}}}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method, path, body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        c.request(method, path, body=json.dumps(body) if body is not None else None,
                  headers={"Content-Type": "application/json"})
        r = json.loads(c.getresponse().read())
        c.close()
        value = r.get("value")
        if isinstance(value, dict) and value.get("error"):
            raise AssertionError("webdriver: %s" % value)
        return r if path == "/session" and "sessionId" in r else value if not (isinstance(value, dict) and "sessionId" in value) else value

    def s(self, path, body=None, method="POST"):
        return self.call(method, "/session/%s%s" % (self.session, path), body)

    def go(self, url):
        self.s("/url", {"url": url})

    def find(self, css):
        el = self.s("/element", {"using": "css selector", "value": css})
        return list(el.values())[0]

    def finds(self, css):
        return [list(e.values())[0] for e in self.s("/elements", {"using": "css selector", "value": css})]

    def text(self, el):
        return self.s("/element/%s/text" % el, method="GET")

    def type(self, el, text):
        self.s("/element/%s/value" % el, {"text": text})

    def click(self, el):
        self.s("/element/%s/click" % el, {})

    def page(self):
        return self.s("/source", method="GET")

    def screenshot(self, path):
        png = base64.b64decode(self.s("/screenshot", method="GET"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(png)
        return png

    def log_in(self, base, user="admin", password="correct horse battery"):
        """The login form, then the queue page."""
        self.go(base + "/login")
        self.type(self.find("#user"), user)
        self.type(self.find("#password"), password)
        self.click(self.find("#login"))

    def quit(self):
        try:
            if getattr(self, "session", None):
                self.call("DELETE", "/session/%s" % self.session)
        except Exception:
            pass
        self.session = None
        terminate(self.proc)


def run_tests(namespace):
    names = [n for n in namespace if n.startswith("test_") and callable(namespace[n])]
    only = os.environ.get("ONLY")
    failed = 0
    for name in names:
        if only and only not in name:
            continue
        t0 = time.time()
        try:
            namespace[name]()
            print("ok %s (%.1fs)" % (name, time.time() - t0), flush=True)
        except Skipped as why:
            print("skip %s: %s" % (name, why), flush=True)
        except Exception:
            failed += 1
            print("FAIL %s (%.1fs)\n%s" % (name, time.time() - t0, traceback.format_exc()), flush=True)
        finally:
            while _cleanups:
                try:
                    _cleanups.pop()()
                except Exception:
                    traceback.print_exc()
    sys.exit(1 if failed else 0)
