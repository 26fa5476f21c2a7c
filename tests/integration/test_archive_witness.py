"""The archive witness (postern-witness): every chain link is signed, by a
key the daemon's user cannot read, into a log it cannot write, before the
message goes on. A daemon user who rewrites an archived message (drops the
Bcc line) and recomputes the whole chain and head is caught by
`postern archive verify`; the witness refuses the forged history; a witness
that is down makes archiving tempfail, never skip; a chain truncated behind
the witness's back stops start-up."""
import hashlib
import pwd
from harness import *

PLUGDIR = os.path.join(BUILD, "plugins")
WITNESS = os.path.join(BUILD, "postern-witness")
DAEMON = pwd.getpwnam("postern")


class Witness:
    """postern-witness as root in a root-owned 0755 directory."""

    def __init__(self, d=None):
        self.dir = d or tempfile.mkdtemp(prefix="witness-")
        os.chmod(self.dir, 0o755)
        self.key = os.path.join(self.dir, "key.pem")
        self.log = os.path.join(self.dir, "witness.log")
        self.sock = os.path.join(self.dir, "sock")
        self.proc = None

    def start(self):
        self.err = open(os.path.join(self.dir, "stderr"), "ab")
        self.proc = subprocess.Popen([WITNESS, "-k", self.key, "-l", self.log, "-s", self.sock, "-u", "postern",
                                      "-g"], stderr=self.err)
        on_cleanup(self.stop)
        wait_for(lambda: os.path.exists(self.sock) or self.proc.poll() is not None, 5, "the witness socket")
        assert self.proc.poll() is None, open(os.path.join(self.dir, "stderr")).read()
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            assert self.proc.wait(5) == 0
        text = self.stderr()
        assert "ERROR: AddressSanitizer" not in text and "runtime error:" not in text, text

    def stderr(self):
        return open(os.path.join(self.dir, "stderr")).read()


def archive_dir():
    d = tempfile.mkdtemp(prefix="archive-")
    os.chmod(d, 0o777)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    return os.path.join(d, "archive")


def gw(sink, adir, w, start=True, **conf):
    g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="archive", **{
        "archive.dir": adir, "archive.witness": w.sock, "archive.witness_log": w.log,
        "archive.witness_key": w.key + ".pub"}, **conf)
    return g.start() if start else g


def verify(g):
    return subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "archive", "verify"],
                          capture_output=True, text=True, timeout=30)


def as_daemon_user(fn):
    """Run fn in a child process with the daemon's uid and gid."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(DAEMON.pw_gid)
            os.setuid(DAEMON.pw_uid)
            fn()
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    return os.waitpid(pid, 0)[1] == 0


def rewrite_history(adir, victim):
    """What a compromised daemon user can do: edit a file, recompute every
    file hash and link, rewrite chain and head."""
    path = os.path.join(adir, victim)
    data = open(path, "rb").read()
    data = b"".join(l for l in data.splitlines(True) if b"hidden-bcc" not in l)
    open(path, "wb").write(data)
    prev = "0" * 64
    out = []
    for line in open(os.path.join(adir, "chain")):
        seq, rel, fh, _ = line.split()
        if "@" not in rel.split("/")[0]:        # a copy (not an audit record): its file as it is now
            fh = hashlib.sha256(open(os.path.join(adir, rel), "rb").read()).hexdigest()
        prev = hashlib.sha256(("%s|%s|%s" % (prev, rel, fh)).encode()).hexdigest()
        out.append("%s %s %s %s\n" % (seq, rel, fh, prev))
    open(os.path.join(adir, "chain"), "w").write("".join(out))
    open(os.path.join(adir, "head"), "w").write("%s %s\n" % (out[-1].split()[0], prev))
    return out


def witness_says(sock, lines):
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall("".join(l + "\n" for l in lines).encode())
    s.settimeout(5)
    got = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
            if got.count(b"\n") >= 2:
                break
    except OSError:
        pass
    s.close()
    return got.decode()


def test_rewritten_history_is_caught_and_the_witness_refuses_it():
    sink = Sink(addr(2))
    w = Witness().start()
    adir = archive_dir()
    g = gw(sink, adir, w)
    qid = queue_id(send_mail(g, rcpts=("to@example.test", "hidden-bcc@example.test"),
                             headers="Subject: journal me\r\nTo: to@example.test\r\n"))
    for i in range(2):
        send_mail(g, headers="Subject: more %d\r\n" % i)
    sink.wait_count(3)
    r = verify(g)
    assert r.returncode == 0 and "archive ok: 3 message(s)" in r.stdout, r.stdout + r.stderr
    assert "witnessed up to link 3 of 3" in r.stdout, r.stdout
    # the daemon's user cannot read the key nor write the witness log
    def try_key_and_log():
        for path, mode in ((w.key, "r"), (w.log, "a")):
            try:
                open(path, mode)
                raise AssertionError("the daemon user opened %s" % path)
            except PermissionError:
                pass
    assert as_daemon_user(try_key_and_log)
    # the daemon's uid rewrites history: drops the Bcc line, recomputes everything
    victim = [l.split()[1] for l in open(os.path.join(adir, "chain")) if qid in l][0]
    assert as_daemon_user(lambda: rewrite_history(adir, victim))
    assert b"hidden-bcc" not in open(os.path.join(adir, victim), "rb").read()
    r = verify(g)
    assert r.returncode == 1 and "REWRITTEN chain: link" in r.stdout, r.stdout
    # and cannot get the forged history signed
    forged = open(os.path.join(adir, "chain")).read().splitlines()
    got = witness_says(w.sock, ["HELLO", "LINK " + forged[0].strip(), "COMMIT"])
    assert "ERR link does not continue the witnessed chain" in got, got
    assert "refused link" in open(w.log).read()
    # a checkpoint line not signed by the witness's key (whoever wrote it) is caught too
    with open(w.log, "a") as f:
        f.write("%s %s 1700000000 %s\n" % (forged[-1].split()[0], forged[-1].split()[3], "ab" * 64))
    r = verify(g)
    assert "FORGED witness checkpoint at %s line" % w.log in r.stdout, r.stdout
    g.stop()


def test_another_user_may_not_talk_to_the_witness_nor_own_its_files():
    w = Witness().start()
    # files the daemon's user could replace are refused at start-up
    for mode, owner in ((0o777, 0), (0o755, DAEMON.pw_uid)):
        d = tempfile.mkdtemp(prefix="witness-bad-")
        on_cleanup(lambda d=d: shutil.rmtree(d, ignore_errors=True))
        os.chmod(d, mode)
        os.chown(d, owner, 0)
        p = subprocess.run([WITNESS, "-k", os.path.join(d, "k"), "-l", os.path.join(d, "log"), "-s",
                            os.path.join(d, "s"), "-u", "postern", "-g"], capture_output=True, text=True, timeout=10)
        assert p.returncode == 1 and "must not be writable by the daemon's user" in p.stderr, p.stderr
    nobody = pwd.getpwnam("nobody")
    pid = os.fork()
    if pid == 0:
        ok = False
        try:                  # the witness answers before reading anything
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            import socket
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)
            s.connect(w.sock)
            ok = s.recv(100).startswith(b"ERR not the daemon's user")
        finally:
            os._exit(0 if ok else 1)
    assert os.waitpid(pid, 0)[1] == 0


def test_witness_down_tempfails_archiving_then_catches_up():
    sink = Sink(addr(2))
    w = Witness().start()
    adir = archive_dir()
    g = gw(sink, adir, w)
    send_mail(g)
    sink.wait_count(1)
    w.stop()
    send_mail(g, headers="Subject: while the witness is down\r\n")
    wait_for(lambda: "could not be witnessed" in g.log() or "witness" in g.log() and "the message waits" in g.log(),
             10, "the witness failure logged")
    time.sleep(0.5)
    assert sink.count() == 1, "a message went on without its link signed"
    w.start()
    sink.wait_count(2, timeout=30)              # retried by the queue, now witnessed
    r = verify(g)
    assert r.returncode == 0 and "witnessed up to link 2 of 2" in r.stdout, r.stdout
    g.stop()


def test_audit_records_are_witnessed_without_mail_and_mail_follows_them():
    sink = Sink(addr(2))
    w = Witness().start()
    adir = archive_dir()
    g = gw(sink, adir, w)
    send_mail(g, headers="Subject: before\r\n")
    sink.wait_count(1)
    r = subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "archive", "hold", "h1", "--from", "alice"],
                       capture_output=True, text=True, timeout=30)
    link = int(re.search(r"recorded as chain link (\d+)", r.stdout).group(1))
    assert link == 2, r.stdout + r.stderr
    # posternd reads the other writer's link and has it signed within its 5 s tick, no mail needed
    signed = lambda: max([int(l.split()[0]) for l in open(w.log) if l[:1].isdigit()] or [0])
    try:
        wait_for(lambda: signed() >= link, 10, "the witness to sign the hold's link")
    except AssertionError:
        raise AssertionError("%s\n%s\n%s" % (open(w.log).read(), open(os.path.join(adir, "chain")).read(),
                                              "\n".join(l for l in g.log().splitlines() if "archive" in l)))
    send_mail(g, headers="Subject: after\r\n")       # the next copy follows the hold's link
    sink.wait_count(2)
    rels = [l.split()[1] for l in open(os.path.join(adir, "chain"))]
    assert rels[1].startswith("audit@") and rels[2].endswith(".eml"), rels
    r = verify(g)
    assert r.returncode == 0 and "archive ok: 2 message(s)" in r.stdout and "witnessed up to link 3 of 3" in r.stdout, \
        r.stdout + r.stderr
    g.stop()


def test_a_chain_truncated_behind_the_witness_stops_start_up():
    sink = Sink(addr(2))
    w = Witness().start()
    adir = archive_dir()
    g = gw(sink, adir, w)
    for i in range(3):
        send_mail(g, headers="Subject: %d\r\n" % i)
    sink.wait_count(3)
    g.stop()
    lines = open(os.path.join(adir, "chain")).readlines()
    open(os.path.join(adir, "chain"), "w").writelines(lines[:1])     # both chain and head rolled back
    open(os.path.join(adir, "head"), "w").write(" ".join(lines[0].split()[i] for i in (0, 3)) + "\n")
    r = verify(g)
    assert r.returncode == 1 and "TRUNCATED chain: the witness signed link 3" in r.stdout, r.stdout
    g2 = gw(sink, adir, w, start=False)
    p = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g2.conf], capture_output=True, text=True, timeout=20)
    assert p.returncode != 0 and "the chain was truncated, replaced or rewritten" in p.stderr + p.stdout, \
        p.stderr + p.stdout


run_tests(globals())
