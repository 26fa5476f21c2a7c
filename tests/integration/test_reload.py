"""Reload and configuration checks: `postern reload` and SIGHUP re-read the
main config, its tables and the C plugins (as well as Lua); new sessions go
by the new generation while an open session finishes under the one it
started with; an invalid reload is refused whole and the old configuration
stays; `postern check-config` fails exactly when `posternd -t` fails. With
secrets in the standard layout (root's, 0600: tls_key, DKIM keys and their
table, smtp_sasl_password_maps) every reload works: the privileged parent
opens them, only when the configuration names them and the daemon's user
cannot change them; the parent holds no socket but its channel."""
from harness import *

PLUGDIR = os.path.join(BUILD, "plugins")


def postern(g, *args):
    return subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, *args], capture_output=True, text=True,
                          timeout=30)


def rcpt(c, addr):
    return c.cmd("RCPT TO:<%s>" % addr)


def outside_session(g):
    c = Client(g.host, source=addr(40))       # not in trusted_networks
    assert c.cmd("EHLO client.test").startswith("250")
    assert c.cmd("MAIL FROM:<a@src.test>").startswith("250")
    return c


def finish(c, subject):
    assert c.cmd("DATA").startswith("354")
    c.send("Subject: %s\r\n\r\nbody\r\n" % subject)
    rep = c.cmd(".")
    c.cmd("QUIT")
    c.close()
    return rep


def gateway_with_rules(sink, rule):
    return Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="header_checks",
                   **{"header_checks.rule": rule}).start()


def test_reload_switches_new_sessions_and_an_open_one_finishes_under_the_old():
    sink = Sink(addr(2))
    g = gateway_with_rules(sink, "/^Subject: v1-blocked/ REJECT blocked by version one")
    old = outside_session(g)
    assert rcpt(old, "a@new.test").startswith("554 5.7.1")       # not a relay domain yet
    g.set(relay_domains="example.test, new.test",
            **{"header_checks.rule": "/^Subject: v2-blocked/ REJECT blocked by version two"})
    r = postern(g, "reload")
    assert r.returncode == 0 and "configuration generation 2 in use" in r.stdout, (r.stdout, r.stderr)
    assert "reload: configuration generation 2 in use" in g.log()
    # the open session keeps the config and chain it started with
    assert rcpt(old, "a@new.test").startswith("554 5.7.1")
    assert rcpt(old, "x@example.test").startswith("250")
    assert finish(old, "v2-blocked but old chain") .startswith("250")
    # new sessions: the new relay domain and the new rule
    new = outside_session(g)
    assert rcpt(new, "b@new.test").startswith("250")
    assert finish(new, "v1-blocked now allowed").startswith("250")
    new = outside_session(g)
    assert rcpt(new, "c@new.test").startswith("250")
    assert finish(new, "v2-blocked").startswith("550 5.7.1 blocked by version two")
    sink.wait_count(2)
    rcpts = sorted(sink_rcpts(m)[0].decode() for m in sink.messages())
    assert rcpts == ["b@new.test", "x@example.test"], rcpts
    # generation 1 goes once its last session and delivery are over
    wait_for(lambda: "configuration generation 1 released" in g.log(), 10, "generation 1 to be freed")
    # SIGHUP does the same
    g.set(relay_domains="example.test")
    g.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration generation 3 in use" in g.log(), 10, "the SIGHUP reload")
    c = outside_session(g)
    assert rcpt(c, "d@new.test").startswith("554 5.7.1")
    c.close()
    g.stop()


def test_an_invalid_reload_is_refused_whole_and_the_old_config_stays():
    sink = Sink(addr(2))
    g = gateway_with_rules(sink, "/^Subject: blocked/ REJECT blocked")
    d = tempfile.mkdtemp(prefix="reload-")
    os.chmod(d, 0o755)      # the daemon's user reads the script
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    broken_lua = os.path.join(d, "broken.lua")
    with open(broken_lua, "w") as f:
        f.write('postern.on("rcpt", function(tx, r)\n  return 1 +\nend)\n')
    good = open(g.conf).read()
    cases = [
        (dict(relay_domains="example.test, new.test", retry_mni="5m"), "unknown key 'retry_mni'"),
        (dict(relay_domains="example.test, new.test", **{"header_checks.rulez": "x"}), "rulez"),
        (dict(relay_domains="example.test, new.test", **{"header_checks.rule": "/([/ REJECT x"}), "header_checks"),
        (dict(relay_domains="example.test, new.test", plugins="header_checks, no_such_plugin"), "no_such_plugin"),
        (dict(relay_domains="example.test, new.test", plugins="header_checks, lua:" + broken_lua), "broken.lua:3"),
        (dict(relay_domains="example.test, new.test", listen="%s:2599" % g.host), "listen"),
        (dict(relay_domains="example.test, new.test", spool_dir=d,
              control_socket=os.path.join(g.spool, "control.sock")), "spool_dir"),
    ]
    for n, (changes, reason) in enumerate(cases):
        with open(g.conf, "w") as f:
            f.write(good)
        g.set(**changes)
        g.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: g.log().count("SIGHUP: reload refused, the running configuration stays") == n + 1, 10,
                 "the refusal")
        assert reason in g.log().splitlines()[-1], (changes, g.log()[-2000:])
        r = postern(g, "reload")     # the CLI refuses a file it cannot parse itself; else the daemon does
        assert r.returncode == 1 and reason in r.stderr and ("not reloaded" in r.stderr or "reload refused" in r.stderr), \
            (changes, r.stderr)
        # still the old relay domains and the old chain; mail still flows
        c = outside_session(g)
        assert rcpt(c, "a@new.test").startswith("554 5.7.1"), changes
        assert rcpt(c, "x@example.test").startswith("250")
        assert finish(c, "blocked").startswith("550 5.7.1 blocked"), changes
    assert "generation 2" not in g.log()
    assert "listening on %s:2599" % g.host not in g.log()
    with open(g.conf, "w") as f:
        f.write(good)
    assert "queued as" in send_mail(g)
    sink.wait_count(1)
    g.stop()


def test_a_reload_shares_the_open_archive_so_the_chain_never_forks():
    """The new chain's archive link writes through the archive the running
    one opened: one writer, one chain, across reloads."""
    sink = Sink(addr(2))
    adir = tempfile.mkdtemp(prefix="archive-")
    os.chmod(adir, 0o777)
    on_cleanup(lambda: shutil.rmtree(adir, ignore_errors=True))
    g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="archive", **{"archive.dir": adir}).start()
    for round in range(3):
        old = outside_session(g)           # holds the current generation open across the reload
        assert rcpt(old, "x@example.test").startswith("250")
        g.set(max_errors=str(10 + round))
        assert postern(g, "reload").returncode == 0
        assert "queued as" in send_mail(g)   # the new chain archives...
        assert finish(old, "old %d" % round).startswith("250")   # ...and the old one, in the same chain
    sink.wait_count(6)
    wait_for(lambda: g.log().count("archived as") == 6, 10, "six archive copies")
    r = postern(g, "archive", "verify")
    assert r.returncode == 0, r.stdout + r.stderr
    copies = [l for l in open(os.path.join(adir, "chain")).read().splitlines() if " audit@" not in l]
    assert len(copies) == 6, copies          # (verify itself is an audit record after them)
    g.stop()


def check_both(conf):
    t = subprocess.run([os.path.join(BUILD, "posternd"), "-c", conf, "-t"], capture_output=True, text=True, timeout=30)
    c = subprocess.run([os.path.join(BUILD, "postern"), "-c", conf, "check-config"], capture_output=True, text=True,
                       timeout=30)
    return t, c


def root_file(d, name, text=None, src=None, mode=0o600):
    path = os.path.join(d, name)
    data = open(src, "rb").read() if src else text.encode()
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return path


def sockets_of(pid):
    return [os.readlink("/proc/%d/fd/%s" % (pid, fd)) for fd in os.listdir("/proc/%d/fd" % pid)
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("socket:")]


def dkim_selectors(sink):
    """Subject -> the DKIM selector that signed it (dumps come in no order)."""
    out = {}
    for m in sink.messages():
        subject = re.search(rb"^Subject: (.*?)\r?$", m, re.M)
        sel = re.search(rb"\bs=(\w+);", m)
        if subject and sel:
            out[subject.group(1).decode()] = sel.group(1).decode()
    return out


def test_reloads_with_root_only_secrets_go_through_the_privileged_parent():
    if os.geteuid() != 0:
        skip("needs root")
    sink = Sink(addr(2))
    d = tempfile.mkdtemp(prefix="secrets-")          # root's, 0755: the layout of /etc/postern
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    certs = make_certs(["gw.postern.test"])
    cert = os.path.join(certs[0], "gw.postern.test.crt")
    key = root_file(d, "tls.key", src=os.path.join(certs[0], "gw.postern.test.key"))
    k1, _ = dkim_key(d, "one")
    k2, _ = dkim_key(d, "two")
    for k in (k1, k2):
        os.chmod(k, 0o600)
    table = root_file(d, "dkim-keys", "example.test one %s\n" % k1)
    sasl = root_file(d, "sasl", "[192.0.2.9]:587 user:secret\n")      # read at each reload, used elsewhere
    g = Gateway(sink=sink, tls_cert=cert, tls_key=key, plugin_dir=PLUGDIR, plugins="dkim_sign",
                smtp_sasl_password_maps="file:" + sasl, **{"dkim_sign.keys": "file:" + table}).start()
    # two processes: a parent that stays root with no socket but its channel, and the daemon
    parent, daemon = g.proc.pid, g.pid()
    assert parent != daemon and open("/proc/%d/comm" % parent).read().strip() == "posternd-parent"
    assert os.stat("/proc/%d" % parent).st_uid == 0 and os.stat("/proc/%d" % daemon).st_uid != 0
    assert len(sockets_of(parent)) == 1, sockets_of(parent)
    send_mail(g, headers="From: a@example.test\r\nSubject: one\r\n")
    wait_for(lambda: dkim_selectors(sink) == {"one": "one"}, 10, "a message signed with selector one")
    # a reload re-reads every root-only file, as `postern reload` and as SIGHUP
    root_file(d, "dkim-keys", "example.test two %s\n" % k2)
    r = postern(g, "reload")
    assert r.returncode == 0 and "configuration generation 2 in use" in r.stdout, r.stdout + r.stderr
    assert "Permission denied" not in g.log()
    send_mail(g, headers="From: a@example.test\r\nSubject: two\r\n")
    wait_for(lambda: dkim_selectors(sink).get("two") == "two", 10, "a message signed with selector two")
    g.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration generation 3 in use" in g.log(), 10, "the SIGHUP reload")
    # a key the daemon's user could swap (its directory is writable by it) is refused, naming why
    w = tempfile.mkdtemp(prefix="writable-")
    os.chmod(w, 0o777)
    on_cleanup(lambda: shutil.rmtree(w, ignore_errors=True))
    unsafe = root_file(w, "k.pem", src=k1)
    root_file(d, "dkim-keys", "example.test one %s\n" % unsafe)
    r = postern(g, "reload")
    assert r.returncode != 0 and "can be changed by the daemon's user" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "refused to open %s" % unsafe in g.log()
    send_mail(g, headers="From: a@example.test\r\nSubject: still two\r\n")
    wait_for(lambda: dkim_selectors(sink).get("still two") == "two", 10, "the old key still signing")
    g.stop()


def test_the_parent_opens_only_what_the_configuration_names():
    """A daemon that asks the parent for files nobody configured (as a
    compromised one would) is refused, whatever it asks for."""
    if os.geteuid() != 0:
        skip("needs root")
    sink = Sink(addr(2))
    d = tempfile.mkdtemp(prefix="secrets-")
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    named = root_file(d, "named.key", "secret\n")
    unnamed = root_file(d, "unnamed.key", "secret\n")
    listing = readable_file("list", "/etc/shadow\n%s\n%s\n" % (unnamed, named))
    g = Gateway(sink=sink, plugin_dir=os.path.join(BUILD, "test-plugins"), plugins="probe",
                **{"probe.open_listed": listing, "probe.secret": named}).start()
    log = g.log()
    assert "probe: open_listed /etc/shadow: refused: /etc/shadow is not named by" in log, log[-1500:]
    assert "probe: open_listed %s: refused: %s is not named by" % (unnamed, unnamed) in log
    assert "probe: secret %s: opened" % named in log
    assert "probe: open_listed %s: opened" % named in log        # named by the configuration
    g.stop()
    # a configuration the daemon's user could edit names nothing the parent would open
    g = Gateway(sink=sink, plugin_dir=os.path.join(BUILD, "test-plugins"), plugins="probe",
                **{"probe.secret": named})
    os.chmod(g.dir, 0o777)
    g.start()
    assert "probe: secret %s: refused" % named in g.log(), g.log()[-1500:]
    assert "can be changed by the daemon's user; keep what root reads" in g.log()
    g.stop()


def test_check_config_fails_exactly_when_posternd_t_fails():
    d = tempfile.mkdtemp(prefix="check-")
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    with open(os.path.join(d, "bad.lua"), "w") as f:
        f.write("postern.on('rcpt', function(tx, r) return nil end\n")
    base = dict(default_transport="smtp:[%s]:2526" % addr(2), plugin_dir=PLUGDIR)
    table = [
        (dict(), 0, ""),
        (dict(plugins="header_checks", **{"header_checks.rule": "/x/ REJECT no"}), 0, ""),
        (dict(plugins="no_such_plugin"), 1, "no_such_plugin"),
        (dict(plugins="header_checks", **{"header_checks.rule": "/x/ REJECT no", "header_checks.rulez": "x"}), 1,
         "rulez"),
        (dict(plugins="header_checks", **{"header_checks.rule": "/(/ REJECT no"}), 1, "header_checks"),
        (dict(plugins="header_checks", **{"header_checks.rules": "/nonexistent/rules"}), 1, "/nonexistent/rules"),
        (dict(plugins="archive"), 1, "archive.dir is required"),
        (dict(plugins="size_limit"), 1, "size_limit"),
        (dict(plugins="lua:" + os.path.join(d, "bad.lua")), 1, "bad.lua"),
        (dict(plugins="lua:" + os.path.join(d, "missing.lua")), 1, "missing.lua"),
        (dict(message_size_limit="10M", extra_dup=True), 1, "duplicate key 'message_size_limit'"),
    ]
    for conf, want, reason in table:
        dup = conf.pop("extra_dup", False)
        g = Gateway(**base, **conf)
        if dup:
            with open(g.conf, "a") as f:
                f.write("message_size_limit = 20M\n")
        t, c = check_both(g.conf)
        assert t.returncode == c.returncode == want, (conf, t.returncode, t.stderr, c.returncode, c.stderr)
        assert reason in t.stderr and reason in c.stderr, (conf, t.stderr, c.stderr)
        if want == 0:
            assert "configuration ok" in c.stderr


def test_check_config_prints_every_key_of_the_readme_table():
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2))
    r = subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "check-config"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    printed = set(re.findall(r"^([a-z0-9_]+) =", r.stdout, re.M))
    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")).read()
    table = readme[readme.index("| key | meaning | default |"):]
    table = table[:table.index("\n\n")]
    keys = set()
    for row in table.splitlines()[2:]:
        keys |= set(re.findall(r"`([a-z0-9_]+)`", row.split("|")[1]))
    assert len(keys) > 60, keys
    missing = sorted(keys - printed)
    assert not missing, missing


def test_check_config_shows_plugin_options_given_and_defaulted():
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2), plugin_dir=os.path.join(BUILD, "plugins"),
                plugins="greylist dnsbl", **{"greylist.delay": "60", "dnsbl.sites": "zen.example.test",
                                             "greylist.db": "/tmp/postern-greylist-check.db"})
    r = subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "check-config"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    # given: as a setting; not given: a comment with the plugin's declared default
    assert re.search(r"^greylist\.delay = 60$", r.stdout, re.M), r.stdout[-1500:]
    assert re.search(r"^dnsbl\.sites = zen\.example\.test$", r.stdout, re.M)
    assert "# greylist.retry_window = 172800" in r.stdout and "# dnsbl.threshold = 1" in r.stdout
    assert "# greylist.delay" not in r.stdout and "# dnsbl.sites" not in r.stdout


def test_the_readme_key_table_is_the_one_the_code_declares():
    """README.md's key table (and so postern.conf(5)) is `postern config-keys`: `make docs`
    rewrites both after a row of gateway/core/config_keys.c changes."""
    r = subprocess.run([os.path.join(BUILD, "postern"), "config-keys"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")).read()
    start = readme.index("| key | meaning | default |")
    table = readme[start:readme.index("\n\n", start)]
    assert table == r.stdout.rstrip("\n"), "README's key table differs from postern config-keys: run make docs"
    man = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen-conf-man.py"), "--check"],
                         capture_output=True, text=True, timeout=30)
    assert man.returncode == 0, man.stderr


if __name__ == "__main__":
    run_tests(globals())
