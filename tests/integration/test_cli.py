"""Command line contract: posternd -t, config errors with file:line,
postern check-config, SIGTERM exits 0."""
from harness import *


def run(*args):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30)


def test_check_config_good_and_bad():
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2))
    r = run(os.path.join(BUILD, "posternd"), "-c", g.conf, "-t")
    assert r.returncode == 0, r.stderr
    with open(g.conf, "a") as f:
        f.write("# a comment\nretry_mni = 5m\n")
    n = sum(1 for _ in open(g.conf))
    r = run(os.path.join(BUILD, "posternd"), "-c", g.conf, "-t")
    assert r.returncode != 0
    assert "%s:%d: unknown key 'retry_mni'" % (g.conf, n) in r.stderr, r.stderr
    # a running daemon refuses to start with it, too
    r = run(os.path.join(BUILD, "posternd"), "-c", g.conf)
    assert r.returncode != 0 and "unknown key" in r.stderr
    r = run(os.path.join(BUILD, "posternd"), "-c", "/nonexistent.conf", "-t")
    assert r.returncode != 0 and "/nonexistent.conf" in r.stderr
    r = run(os.path.join(BUILD, "posternd"), "-t", "extra")
    assert r.returncode == 2 and "usage" in r.stderr


def test_default_config_help_and_postconf_views():
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2), max_recipients="50", plugin_dir=os.path.join(BUILD, "plugins"),
                plugins="dnsbl", **{"dnsbl.sites": "zen.example.test"})
    env = dict(os.environ, POSTERN_CONFIG=g.conf)
    # no -c: $POSTERN_CONFIG, else /etc/postern/postern.conf
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-t"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([os.path.join(BUILD, "postern"), "config"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    given = r.stdout.splitlines()
    # postconf -n: only what the file sets, plugin options with their plugin
    assert "max_recipients = 50" in given and "dnsbl.sites = zen.example.test" in given, given
    assert not any(l.startswith(("smtp_mx_address_limit", "lua_threads", "message_size_limit")) for l in given), given
    assert len(given) < 30, given
    missing = dict(os.environ, POSTERN_CONFIG="/nonexistent/postern.conf")
    r = subprocess.run([os.path.join(BUILD, "postern"), "config"], env=missing, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "/nonexistent/postern.conf: cannot open" in r.stderr, r.stderr
    # postconf -d: every key at its default, with no file at all
    r = subprocess.run([os.path.join(BUILD, "postern"), "config", "--defaults"], env=missing, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and "retry_min = 300s" in r.stdout and "max_recipients = 1000" in r.stdout, r.stdout[:500]
    # --help on every program and command: stdout, exit 0, and no config read
    for prog, args in [("postern", ["--help"]), ("postern", ["queue", "--help"]), ("postern", ["archive", "--help"]),
                       ("postern", ["policy", "test", "--help"]), ("postern", ["-h"]), ("posternd", ["--help"]),
                       ("posternd", ["-h"]), ("postern-milter", ["--help"]), ("postern-witness", ["--help"])]:
        r = subprocess.run([os.path.join(BUILD, prog)] + args, env=missing, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stdout.startswith("usage: ") and not r.stderr, (prog, args, r.stdout, r.stderr)


def test_bad_values_are_named():
    for line, expect in (("listen = 127.0.0.1", "bad listen address"),
                         ("max_queue_lifetime = forever", "bad duration"),
                         ("trusted_networks = 300.0.0.0/8", "bad network"),
                         ("message_size_limit = 10Q", "bad size"),
                         ("default_transport = lmtpx:foo", "bad next hop"),
                         ("relay_domains = file:/nonexistent/relay", "cannot open table"),
                         ("postmaster_address = postmaster", "postmaster_address: expected local@domain")):
        g = Gateway(default_transport="smtp:[%s]:2526" % addr(2))
        key, value = (x.strip() for x in line.split("=", 1))
        g.set(**{key: value})
        r = run(os.path.join(BUILD, "posternd"), "-c", g.conf, "-t")
        assert r.returncode == 1 and expect in r.stderr and g.conf + ":" in r.stderr, (line, r.stderr)


def test_postern_check_config_prints_effective_config():
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2), retry_min="2m", retry_max="3h")
    r = run(os.path.join(BUILD, "postern"), "-c", g.conf, "check-config")
    assert r.returncode == 0, r.stderr
    assert "retry_min = 120s" in r.stdout
    assert "listen = %s:2525" % g.host in r.stdout
    assert "retry_max = 10800s" in r.stdout
    assert "message_size_limit = 52428800" in r.stdout   # a default shows too
    # contradictory keys are an error naming the file
    g2 = Gateway(default_transport="smtp:[%s]:2526" % addr(2), retry_min="2h", retry_max="1h")
    r = run(os.path.join(BUILD, "postern"), "-c", g2.conf, "check-config")
    assert r.returncode == 1 and g2.conf + ": retry_min must be" in r.stderr, r.stderr


def test_sigterm_finishes_and_exits_zero():
    sink = Sink(addr(2))
    g = Gateway(sink=sink).start()
    c = Client(g.host)
    c.cmd("EHLO client.test")
    g.proc.send_signal(signal.SIGTERM)
    assert g.proc.wait(20) == 0
    assert c.reply().startswith("421 4.3.2")
    g.check_sanitizers()


def test_a_check_as_root_runs_as_the_daemon_user_and_creates_nothing():
    """posternd -t runs plugin init as the daemon's user and in check mode:
    the archive plugin checks its directory and creates nothing; what the
    daemon creates later belongs to its user."""
    if os.geteuid() != 0:
        skip("needs root")
    import pwd
    adir = tempfile.mkdtemp(prefix="archive-")
    os.chmod(adir, 0o777)
    on_cleanup(lambda: shutil.rmtree(adir, ignore_errors=True))
    sink = Sink(addr(2))
    g = Gateway(sink=sink, plugin_dir=os.path.join(BUILD, "plugins"), plugins="archive", **{"archive.dir": adir})
    r = run(os.path.join(BUILD, "posternd"), "-c", g.conf, "-t")
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.listdir(adir) == [], "a check created %s" % os.listdir(adir)
    # a directory the daemon's user cannot write fails the check, saying why
    os.chmod(adir, 0o755)
    r = run(os.path.join(BUILD, "posternd"), "-c", g.conf, "-t")
    assert r.returncode != 0 and "Permission denied (the daemon's user must be able to write it)" in r.stderr, r
    os.chmod(adir, 0o777)
    g.start()
    postern_uid = pwd.getpwnam("postern").pw_uid
    assert send_message(g.host, 2525, "a@src.test", ["x@example.test"], "Subject: a\r\n\r\nx\r\n").startswith("250")
    sink.wait_count(1)
    for root, dirs, files in os.walk(adir):
        for n in dirs + files:
            assert os.lstat(os.path.join(root, n)).st_uid == postern_uid, os.path.join(root, n)
    g.stop()


run_tests(globals())
