"""clamav: messages streamed to a real clamd (started here, with its own
one-signature database built from the EICAR test string; no freshclam, no
network) over its unix socket and over TCP; a virus is refused with its
name, clean mail passes, later links see clamav.result; clamd down answers
per on_error; quarantine and discard; messages over max_size are skipped."""
import base64
from harness import *

PLUGDIR = os.path.join(BUILD, "plugins")
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
VIRUS = "Postern.Test.EICAR.UNOFFICIAL"


class Clamd:
    def __init__(self, tcp_host, tcp_port=3310):
        self.dir = tempfile.mkdtemp(prefix="clamd-")
        os.chmod(self.dir, 0o755)
        on_cleanup(lambda: shutil.rmtree(self.dir, ignore_errors=True))
        os.makedirs(os.path.join(self.dir, "db"))
        with open(os.path.join(self.dir, "db", "postern.ndb"), "w") as f:
            f.write("Postern.Test.EICAR:0:*:%s\n" % b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE".hex())
        self.sock = os.path.join(self.dir, "clamd.sock")
        self.tcp = (tcp_host, tcp_port)
        self.conf = os.path.join(self.dir, "clamd.conf")
        with open(self.conf, "w") as f:
            f.write("LocalSocket %s\nLocalSocketMode 666\nTCPSocket %d\nTCPAddr %s\nDatabaseDirectory %s/db\n"
                    "Foreground yes\nLogFile %s/clamd.log\nStreamMaxLength 2M\n"
                    % (self.sock, tcp_port, tcp_host, self.dir, self.dir))
        self.proc = None
        on_cleanup(self.stop)

    def start(self):
        self.proc = subprocess.Popen(["clamd", "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(self.sock) and port_open(*self.tcp), 30, "clamd")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def gw(sink, chain="clamav", **opts):
    return Gateway(sink=sink, plugin_dir=PLUGDIR, plugins=chain,
                   **{"clamav." + k: v for k, v in opts.items()}).start()


def send_raw(g, body, headers="Subject: scan me\r\n"):
    return send_mail(g, headers=headers, body=body)


def attachment(payload):
    return ("This is a multi-part message.\r\n--B\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--B\r\n"
            "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
            "Content-Disposition: attachment; filename=tool.com\r\n\r\n%s\r\n--B--\r\n"
            % base64.b64encode(payload).decode())


MIME = "Subject: attached\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n"


def test_virus_refused_with_its_name_clean_mail_passes_over_unix_and_tcp():
    sink = Sink(addr(2))
    clamd = Clamd(addr(8)).start()
    d = tempfile.mkdtemp(prefix="lua-")
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    script = os.path.join(d, "tag.lua")
    with open(script, "w") as f:
        f.write('postern.on("eom", function(tx) tx:add_header("X-Scan", tx.vars["clamav.result"]) end)\n')
    os.chmod(script, 0o644)
    for n, sock in enumerate(("unix:" + clamd.sock, "inet:%s:3310" % addr(8))):
        g = gw(sink, chain="clamav, lua:" + script, socket=sock)
        rep = send_raw(g, "hello\r\n" + EICAR.decode() + "\r\n")
        assert rep == "554 5.7.1 Message rejected: virus found: " + VIRUS, (sock, rep)
        rep = send_raw(g, attachment(EICAR), headers=MIME)
        assert rep == "554 5.7.1 Message rejected: virus found: " + VIRUS, (sock, rep)
        # past one 64 KiB piece: the signature across the first boundary, and a clean 300 KiB message
        filler = ("x" * 78 + "\r\n") * 818 + "y" * 64 + "\r\n"        # the signature starts 30 bytes before 64 KiB
        rep = send_raw(g, filler + EICAR.decode() + "\r\n" + ("z" * 78 + "\r\n") * 3000)
        assert rep == "554 5.7.1 Message rejected: virus found: " + VIRUS, (sock, rep)
        assert "queued as" in send_raw(g, ("x" * 78 + "\r\n") * 3800)
        assert "queued as" in send_raw(g, attachment(b"just a harmless file\n"), headers=MIME)
        sink.wait_count(2 * (n + 1))
        g.stop()
    msgs = sink.messages()
    assert len(msgs) == 4 and all(b"X-Scan: clean" in m for m in msgs), [m[:300] for m in msgs]
    assert all(EICAR not in m for m in msgs)


def test_clamd_down_quarantine_discard_and_max_size():
    sink = Sink(addr(2))
    clamd = Clamd(addr(8), 3311)
    g = gw(sink, socket="unix:" + clamd.sock)          # never started
    assert send_raw(g, "hello\r\n").startswith("451 4.3.0 Virus scanner unavailable")
    assert "clamav: cannot connect to clamd" in g.log()
    g.stop()
    g = gw(sink, socket="unix:" + clamd.sock, on_error="accept")
    assert "queued as" in send_raw(g, "hello\r\n")
    sink.wait_count(1)
    g.stop()
    clamd.start()
    g = gw(sink, socket="unix:" + clamd.sock, action="discard")
    assert send_raw(g, EICAR.decode() + "\r\n").startswith("250")       # accepted, then dropped
    time.sleep(0.5)
    assert sink.count() == 1 and g.queue_files() == [] and "DISCARD by clamav" in g.log(), g.log()[-2000:]
    g.stop()
    g = gw(sink, socket="unix:" + clamd.sock, action="quarantine")
    rep = send_raw(g, EICAR.decode() + "\r\n")
    assert rep.startswith("250"), rep
    wait_for(lambda: "virus found: " + VIRUS in g.log() and "QUARANTINE by clamav" in g.log(), 5, "the quarantine")
    time.sleep(0.5)
    assert sink.count() == 1, "a quarantined message went out"
    g.stop()
    g = gw(sink, socket="unix:" + clamd.sock, max_size="200")
    assert "queued as" in send_raw(g, "padding " * 40 + "\r\n" + EICAR.decode() + "\r\n")
    assert "not scanned" in g.log()
    sink.wait_count(2)
    time.sleep(0.5)
    g.stop()
    assert sink.count() == 2, "discarded and quarantined mail must not go out"
    bad = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="clamav", **{"clamav.socket": "tcp:localhost"})
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", bad.conf, "-t"], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode != 0 and "clamav.socket = tcp:localhost" in r.stdout + r.stderr, r


def clamd_connections(clamd):
    """Established TCP connections to clamd's port (from the gateway)."""
    out = subprocess.run(["ss", "-Htn", "state", "established", "dst", "%s:%d" % clamd.tcp],
                         capture_output=True, text=True, timeout=10).stdout
    return len([l for l in out.splitlines() if l.strip()])


def test_sessions_kept_open_and_a_restarted_clamd():
    """persistent (the default): scans share one clamd session (IDSESSION,
    numbered answers), so five messages in a row leave one connection open;
    clamd restarted under it, the broken session is dropped and the scan
    tried again on a new one: the message is accepted, not tempfailed, and a
    virus is still found; persistent = no keeps nothing open."""
    sink = Sink(addr(2))
    clamd = Clamd(addr(8), 3312).start()
    g = gw(sink, socket="inet:%s:%d" % clamd.tcp)
    for i in range(5):
        assert "queued as" in send_raw(g, "clean %d\r\n" % i)
    assert clamd_connections(clamd) == 1
    assert send_raw(g, EICAR.decode() + "\r\n") == "554 5.7.1 Message rejected: virus found: " + VIRUS
    clamd.stop()
    clamd.start()
    assert "queued as" in send_raw(g, "after the restart\r\n")
    assert send_raw(g, EICAR.decode() + "\r\n") == "554 5.7.1 Message rejected: virus found: " + VIRUS
    assert clamd_connections(clamd) == 1
    sink.wait_count(6)
    g.stop()
    g = gw(sink, socket="inet:%s:%d" % clamd.tcp, persistent="no")
    assert "queued as" in send_raw(g, "one off\r\n")
    assert clamd_connections(clamd) == 0
    g.stop()


run_tests(globals())
