"""Packaging: the systemd notify protocol (READY=1, RELOADING=1, STOPPING=1
to $NOTIFY_SOCKET, as Type=notify needs), --version, `make install` with
man pages that render and a unit systemd-analyze accepts, and `make deb`:
a .deb that lintian passes without errors, holding the daemon, the unit,
the man pages and the config; the daemon extracted from it into a
throw-away root accepts and delivers mail."""
import socket
import glob
from harness import *

MAKE_TIMEOUT = 600


def notify_socket():
    d = tempfile.mkdtemp(prefix="notify-")
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    path = os.path.join(d, "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    os.chmod(path, 0o666)          # posternd says READY=1 after dropping privileges
    s.settimeout(0.2)
    on_cleanup(s.close)
    return s, path


def datagrams(s, want, timeout=10):
    got = []
    deadline = time.time() + timeout
    while time.time() < deadline and not any(want in g for g in got):
        try:
            got.append(s.recv(4096).decode())
        except socket.timeout:
            pass
    assert any(want in g for g in got), (want, got)
    return got


def test_sd_notify_ready_reloading_stopping():
    sink = Sink(addr(2))
    s, path = notify_socket()
    g = Gateway(sink=sink)
    g.env["NOTIFY_SOCKET"] = path
    g.start()
    got = datagrams(s, "READY=1")
    assert "posternd ready" in g.log()       # READY comes after the listeners and the spool
    assert any("STATUS=" in x for x in got), got
    g.proc.send_signal(signal.SIGHUP)
    got = datagrams(s, "READY=1")
    assert any("RELOADING=1" in x for x in got), got
    assert "queued as" in send_mail(g)
    sink.wait_count(1)
    g.proc.send_signal(signal.SIGTERM)
    datagrams(s, "STOPPING=1")
    assert g.proc.wait(20) == 0


def test_version():
    for prog in ("posternd", "postern"):
        r = subprocess.run([os.path.join(BUILD, prog), "--version"], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0 and re.match(r"%s \d+\.\d+\.\d+ \(plugin ABI \d+\)" % prog, r.stdout), r.stdout


def test_daemons_export_the_fast_public_key_decoder():
    """posternd and postern-milter export d2i_PUBKEY_bio (gateway/util/pubkey_decode.c)
    so libopendkim binds to it instead of OpenSSL's slow generic decoder; a
    link change that drops the export would silently lose the speed-up."""
    for prog in ("posternd", "postern-milter"):
        out = subprocess.run(["nm", "-D", "--defined-only", os.path.join(BUILD, prog)], capture_output=True,
                             text=True, check=True).stdout
        assert re.search(r"\bT d2i_PUBKEY_bio$", out, re.M), prog


def test_make_install_puts_man_pages_and_a_valid_unit():
    root = tempfile.mkdtemp(prefix="install-")
    on_cleanup(lambda: shutil.rmtree(root, ignore_errors=True))
    san = ["SAN=1"] if os.path.basename(BUILD) == "build-san" else []
    r = subprocess.run(["make", "-s", "-C", ROOT, "PREFIX=" + root, "install"] + san, capture_output=True,
                       text=True, timeout=MAKE_TIMEOUT)
    assert r.returncode == 0, r.stderr[-2000:]
    for page in ("man8/posternd.8", "man1/postern.1", "man5/postern.conf.5", "man3/postern-plugin.3",
                 "man7/postern-lua.7", "man8/postern-milter.8", "man8/postern-witness.8", "man5/postern-plugins.5"):
        p = os.path.join(root, "share", "man", page)
        m = subprocess.run(["man", "--warnings", "-l", p], capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, MANWIDTH="80"))
        assert m.returncode == 0 and m.stdout.strip() and not m.stderr.strip(), (page, m.stderr)
    conf5 = subprocess.run(["man", "-l", os.path.join(root, "share", "man", "man5", "postern.conf.5")],
                           capture_output=True, text=True, timeout=30).stdout
    for key in ("relay_domains", "log_target", "http_users", "pregreet_wait"):
        assert key in conf5, key
    r = subprocess.run(["python3", os.path.join(ROOT, "tools", "gen-conf-man.py"), "--check"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    unit = os.path.join(root, "lib", "systemd", "system", "postern.service")
    text = open(unit).read()
    assert "ExecStart=%s/sbin/posternd -c /etc/postern/postern.conf" % root in text and "Type=notify" in text
    assert "@" not in text.replace("Documentation=man:", "")
    if shutil.which("systemd-analyze"):
        v = subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, MANPATH=os.path.join(root, "share", "man")))
        errors = [l for l in (v.stdout + v.stderr).splitlines() if "postern.service" in l]
        assert not errors, errors
    assert os.path.exists(os.path.join(root, "share", "postern", "postern.logrotate"))


def test_make_deb_passes_lintian_and_its_daemon_runs():
    if not shutil.which("dpkg-buildpackage") or not shutil.which("lintian"):
        skip("dpkg-dev, debhelper and lintian are not installed")
    r = subprocess.run(["make", "-C", ROOT, "deb"], capture_output=True, text=True, timeout=MAKE_TIMEOUT)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    debs = glob.glob(os.path.join(ROOT, "build-deb", "postern_*.deb"))
    assert len(debs) == 1, debs
    deb = debs[0]
    lint = subprocess.run(["lintian", "--fail-on", "error", deb], capture_output=True, text=True, timeout=300)
    assert lint.returncode == 0 and not re.search(r"^E: ", lint.stdout, re.M), lint.stdout
    warnings = set(re.findall(r"^W: postern: (\S+)", lint.stdout, re.M))
    assert warnings <= {"initial-upload-closes-no-bugs"}, lint.stdout     # a first upload closes no bug
    listing = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True, timeout=30).stdout
    for f in ("./usr/sbin/posternd", "./usr/bin/postern", "./usr/lib/postern/plugins/spf.so",
              "./usr/share/man/man8/posternd.8.gz", "./usr/share/man/man5/postern.conf.5.gz",
              "./usr/share/man/man8/postern-milter.8.gz", "./usr/share/man/man8/postern-witness.8.gz",
              "./usr/share/man/man5/postern-plugins.5.gz", "./etc/postern/postern.conf", "./etc/logrotate.d/postern",
              "./usr/share/doc/postern/README.md.gz"):
        assert f in listing, (f, listing)
    assert re.search(r"\./(usr/)?lib/systemd/system/postern\.service", listing), listing
    control = tempfile.mkdtemp(prefix="deb-control-")
    on_cleanup(lambda: shutil.rmtree(control, ignore_errors=True))
    subprocess.run(["dpkg-deb", "-e", deb, control], check=True, timeout=30)
    postinst = open(os.path.join(control, "postinst")).read()
    assert "adduser --system" in postinst and "postern" in postinst
    assert subprocess.run(["sh", "-n", os.path.join(control, "postinst")]).returncode == 0
    # the package's own files, unpacked into a throw-away root, run as a gateway
    root = tempfile.mkdtemp(prefix="deb-root-")
    os.chmod(root, 0o755)
    on_cleanup(lambda: shutil.rmtree(root, ignore_errors=True))
    subprocess.run(["dpkg-deb", "-x", deb, root], check=True, timeout=60)
    daemon = os.path.join(root, "usr", "sbin", "posternd")
    shipped = os.path.join(root, "etc", "postern", "postern.conf")
    t = subprocess.run([daemon, "-c", shipped, "-t"], capture_output=True, text=True, timeout=30)
    assert t.returncode == 0 and "configuration ok" in t.stdout, t.stdout + t.stderr     # the shipped config is valid
    sink = Sink(addr(2))
    g = Gateway(sink=sink, plugin_dir=os.path.join(root, "usr", "lib", "postern", "plugins"), plugins="size_limit",
                **{"size_limit.max": "1M"})
    g.prefix = []
    g.proc = subprocess.Popen([daemon, "-c", g.conf], stdout=open(g.logpath, "a"), stderr=subprocess.STDOUT)
    wait_for(lambda: "posternd ready" in g.log() or g.proc.poll() is not None, 10, "the packaged posternd")
    assert g.proc.poll() is None, g.log()
    assert "queued as" in send_mail(g)
    sink.wait_count(1)
    g.stop()


if __name__ == "__main__":
    run_tests(globals())
