"""Privilege drop when started as root (as in CI; skipped otherwise):
posternd binds port 25, then runs as its dedicated user (postern) with no
supplementary groups, on every thread; the spool belongs to that user;
mail still flows; user = root, an unknown user or the shared nobody (unless
allowed) refuses to start; a symlink swapped into the spool never makes
root chown outside it; a link planted by that user for any spool path a root
start touches (tmp/, queue/, corrupt/, lock, the control socket) changes
nothing outside the spool: posternd refuses to start, naming the path."""
from harness import *
import pwd


def ids(pid):
    """Uid/Gid/Groups lines of every thread of pid."""
    out = []
    for task in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/status" % (pid, task)) as f:
            st = dict(l.rstrip("\n").split(":\t", 1) for l in f if ":\t" in l)
        out.append((st["Uid"].split(), st["Gid"].split(), st.get("Groups", "").split()))
    return out


def test_drops_to_the_run_user_on_every_thread_after_binding_port_25():
    if os.geteuid() != 0:
        skip("needs root")
    nobody = pwd.getpwnam("postern")        # the dedicated user, the default
    sink = Sink(addr(2))
    g = Gateway(port=25, sink=sink).start()
    assert "running as user postern (uid %d)" % nobody.pw_uid in g.log()
    # the daemon is the privileged parent's child; the parent keeps root, one thread, no listener
    assert g.pid() != g.proc.pid and ids(g.proc.pid) == [(["0"] * 4, ["0"] * 4, ids(g.proc.pid)[0][2])]
    threads = ids(g.pid())
    assert len(threads) > 1, threads           # the worker pool exists and was checked too
    for uids, gids, groups in threads:
        assert uids == [str(nobody.pw_uid)] * 4, uids
        assert gids == [str(nobody.pw_gid)] * 4, gids
        assert groups == [], groups
    assert send_message(g.host, 25, "a@src.test", ["x@example.test"], "Subject: s\r\n\r\nx\r\n").startswith("250")
    sink.wait_count(1)
    for root, dirs, files in os.walk(g.spool):
        for n in dirs + files:
            assert os.lstat(os.path.join(root, n)).st_uid == nobody.pw_uid, os.path.join(root, n)
    g.stop()


def test_refuses_root_an_unknown_user_or_nobody():
    if os.geteuid() != 0:
        skip("needs root")
    sink = Sink(addr(2))
    for user, why in (("root", "is root; refusing to run as root"),
                      ("no-such-user-postern", "does not exist; refusing to run as root"),
                      ("nobody", "user 'nobody' is shared with other services")):
        g = Gateway(sink=sink, user=user)
        g.start(wait=False)
        rc = g.proc.wait(10)
        assert rc != 0 and why in g.log(), (user, rc, g.log()[-500:])
    # nobody only by explicit choice
    g = Gateway(sink=sink, user="nobody", allow_user_nobody="yes").start()
    assert "running as user nobody" in g.log()
    g.stop()


SWAPPER = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL("libc.so.6", use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
q, target = sys.argv[1], sys.argv[2]
d, l = os.path.join(q, "swap.d"), os.path.join(q, "swap.l")
os.mkdir(d)
os.symlink(target, l)
end = time.time() + float(sys.argv[3])
while time.time() < end:
    libc.renameat2(AT_FDCWD, d.encode(), AT_FDCWD, l.encode(), RENAME_EXCHANGE)
"""


def test_a_symlink_swapped_into_the_spool_never_gets_root_to_chown_outside_it():
    """The daemon user swaps a directory and a symlink to a root-only
    directory in queue/ as fast as it can (renameat2 RENAME_EXCHANGE) while
    root starts posternd 50 times; the chown walk must never follow it."""
    if os.geteuid() != 0:
        skip("needs root")
    nobody = pwd.getpwnam("postern")
    secret_dir = tempfile.mkdtemp(prefix="root-only-")      # 0700 root
    on_cleanup(lambda: shutil.rmtree(secret_dir, ignore_errors=True))
    secret = os.path.join(secret_dir, "secret")
    with open(secret, "w") as f:
        f.write("root only\n")
    os.chmod(secret, 0o600)
    sink = Sink(addr(2))
    g = Gateway(sink=sink).start()
    g.stop()
    def as_nobody():
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)
    swapper = subprocess.Popen(["/usr/bin/python3", "-c", SWAPPER, os.path.join(g.spool, "queue"), secret_dir, "120"],
                               preexec_fn=as_nobody)
    on_cleanup(lambda: terminate(swapper))
    wait_for(lambda: os.path.lexists(os.path.join(g.spool, "queue", "swap.l")), 5, "the swapper")
    for _ in range(50):
        g.start()
        g.stop()
        st = os.stat(secret)
        assert (st.st_uid, st.st_gid) == (0, 0), "root chowned %s outside the spool" % secret
        assert os.stat(secret_dir).st_uid == 0
    assert swapper.poll() is None, "the swapper died early"
    terminate(swapper)



def root_only_dir():
    """A 0700 root directory holding two 0600 files; returns (dir, snapshot)."""
    d = tempfile.mkdtemp(prefix="root-only-")
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    for n in ("passwd", "shadow"):
        with open(os.path.join(d, n), "w") as f:
            f.write("root only: %s\n" % n)
        os.chmod(os.path.join(d, n), 0o600)
    return d, snapshot(d)


def snapshot(d):
    return sorted((n, os.lstat(os.path.join(d, n)).st_uid, os.lstat(os.path.join(d, n)).st_mode,
                   open(os.path.join(d, n), "rb").read() if os.path.isfile(os.path.join(d, n)) else b"")
                  for n in os.listdir(d))


def plant_as_daemon_user(spool, name, target):
    """What the daemon's user can do in its spool: move NAME away and put a
    symbolic link to target in its place."""
    u = pwd.getpwnam("postern")
    script = ("import os,sys\nos.chdir(sys.argv[1])\n"
              "os.path.lexists(sys.argv[2]) and os.rename(sys.argv[2], sys.argv[2] + '.orig')\n"
              "os.symlink(sys.argv[3], sys.argv[2])\n")
    def as_user():
        os.setgroups([])
        os.setgid(u.pw_gid)
        os.setuid(u.pw_uid)
    subprocess.run(["/usr/bin/python3", "-c", script, spool, name, target], preexec_fn=as_user, check=True,
                   timeout=10)


def test_a_link_planted_for_any_spool_path_is_refused_and_nothing_outside_changes():
    if os.geteuid() != 0:
        skip("needs root")
    sink = Sink(addr(2))
    for name, target_is_dir in (("tmp", True), ("queue", True), ("corrupt", True), ("lock", False)):
        secret_dir, before = root_only_dir()
        g = Gateway(sink=sink).start()
        assert send_message(g.host, 2525, "a@src.test", ["x@example.test"], "Subject: s\r\n\r\nx\r\n")
        g.stop()
        plant_as_daemon_user(g.spool, name, secret_dir if target_is_dir else os.path.join(secret_dir, "shadow"))
        g.start(wait=False)
        try:
            g.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        assert snapshot(secret_dir) == before, "root changed %s through spool/%s" % (secret_dir, name)
        assert g.proc.poll() not in (None, 0), "posternd started with spool/%s a link" % name
        assert re.search(r"%s/%s\b.*symbolic link" % (re.escape(g.spool), name), g.log()), g.log()[-800:]
    # the control socket: a link there is removed, never followed
    secret_dir, before = root_only_dir()
    g = Gateway(sink=sink).start()
    g.stop()
    plant_as_daemon_user(g.spool, "control.sock", os.path.join(secret_dir, "shadow"))
    g.start()
    assert stat_is_socket(os.path.join(g.spool, "control.sock"))
    g.stop()
    assert snapshot(secret_dir) == before


def stat_is_socket(path):
    import stat
    return stat.S_ISSOCK(os.lstat(path).st_mode)


def test_an_unreadable_file_is_named_with_its_reason_user_and_config_line():
    if os.geteuid() != 0:
        skip("needs root")
    d = tempfile.mkdtemp(prefix="perm-")
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    rules = os.path.join(d, "rules")
    with open(rules, "w") as f:
        f.write("/^Subject: x/ REJECT no\n")
    os.chmod(rules, 0o600)          # root's: the daemon's user cannot read it
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2), plugin_dir=os.path.join(BUILD, "plugins"),
                plugins="header_checks", **{"header_checks.rules": rules})
    line = [n for n, l in enumerate(open(g.conf), 1) if l.startswith("header_checks.rules")][0]
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf, "-t"], capture_output=True, text=True,
                       timeout=30)
    # one reading says what, why, who and where
    assert r.returncode == 1 and ("cannot open rules file %s: Permission denied (header_checks.rules at %s:%d, "
                                  "as user postern)" % (rules, g.conf, line)) in r.stderr, r.stderr
    # the core's own errors name the user too
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.set(plugins="", relay_domains="file:/nonexistent/t").conf,
                        "-t"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "cannot open table /nonexistent/t: No such file or directory (as user" in r.stderr, \
        r.stderr


run_tests(globals())
