"""greylist: a new (client /24, sender, recipient) triplet is deferred with
450 4.7.1, passes when retried after the delay, and keeps passing after a
restart (SQLite); a retry after the window starts over; a network whose
triplets passed auto_whitelist times passes at once; expired rows go;
trusted, exempt and logged-in clients are never greylisted."""
import sqlite3
from harness import *

PLUGDIR = os.path.join(BUILD, "plugins")


def state_dir():
    d = tempfile.mkdtemp(prefix="greylist-")
    os.chmod(d, 0o777)                  # the daemon's user writes the database
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


def gw(sink, db, **opts):
    return Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="greylist", relay_domains="example.test",
                   **{"greylist.db": db, **{"greylist." + k: v for k, v in opts.items()}}).start()


def rcpt(g, to, sender="someone@outside.test", source=None):
    c = Client(g.host, source=source or addr(50))          # not in trusted_networks
    c.cmd("EHLO mta.outside.test")
    c.cmd("MAIL FROM:<%s>" % sender)
    rep = c.cmd("RCPT TO:<%s>" % to)
    c.close()
    return rep


def test_deferred_then_passed_and_the_state_survives_a_restart():
    sink = Sink(addr(2))
    db = os.path.join(state_dir(), "greylist.sqlite")
    g = gw(sink, db, delay="2", auto_whitelist="0")
    rep = rcpt(g, "u1@example.test")
    assert rep.startswith("450 4.7.1 <u1@example.test>: Recipient address rejected: Greylisted, try again in"), rep
    assert rcpt(g, "u1@example.test").startswith("450 4.7.1"), "retried before the delay"
    time.sleep(2.2)
    assert rcpt(g, "u1@example.test").startswith("250")
    assert rcpt(g, "u1@example.test", source=addr(51)).startswith("250"), "the same /24 is the same client"
    assert rcpt(g, "u2@example.test").startswith("450"), "another recipient is another triplet"
    assert rcpt(g, "u1@example.test", sender="other@outside.test").startswith("450")
    # trusted clients, exempt senders: never greylisted
    assert rcpt(g, "u3@example.test", source="127.0.0.1").startswith("250")
    g.stop()
    g = gw(sink, db, delay="2", auto_whitelist="0", exempt_senders="@partner.test")
    assert rcpt(g, "u1@example.test").startswith("250"), "the pass was forgotten by a restart"
    assert rcpt(g, "u4@example.test", sender="x@partner.test").startswith("250")
    rows = sqlite3.connect(db).execute("SELECT net, sender, rcpt, passed FROM triplet ORDER BY rcpt").fetchall()
    assert ("%s.0/24" % addr(50).rsplit(".", 1)[0], "someone@outside.test", "u1@example.test", 1) in rows, rows
    g.stop()


def test_retry_window_auto_whitelist_and_expiry():
    sink = Sink(addr(2))
    db = os.path.join(state_dir(), "greylist.sqlite")
    g = gw(sink, db, delay="1", retry_window="2", auto_whitelist="2", lifetime="3", expire_every="1")
    assert rcpt(g, "late@example.test").startswith("450")
    time.sleep(3.3)                       # past the window (whole seconds): starts over
    rep = rcpt(g, "late@example.test")
    assert rep.startswith("450") and "try again in 1 seconds" in rep, rep
    # two triplets pass -> the network is whitelisted
    for to in ("a@example.test", "b@example.test"):
        assert rcpt(g, to).startswith("450")
    time.sleep(1.2)
    for to in ("a@example.test", "b@example.test"):
        assert rcpt(g, to).startswith("250")
    assert rcpt(g, "brand-new@example.test").startswith("250"), "auto_whitelist after 2 passes"
    assert rcpt(g, "brand-new@example.test", source="127.1.99.7").startswith("450"), "another network is not"
    # expiry: after the lifetime (whole seconds), rows go
    time.sleep(4.2)
    rcpt(g, "trigger@example.test", source="127.1.98.7")
    rows = sqlite3.connect(db).execute("SELECT rcpt FROM triplet").fetchall()
    assert ("a@example.test",) not in rows and ("trigger@example.test",) in rows, rows
    g.stop()


def test_database_errors_and_bad_options():
    sink = Sink(addr(2))
    for extra, why in (("greylist.delay = soon\n", "greylist.delay = soon"),
                       ("greylist.exempt_networks = 10.0.0.0/99\n", "greylist.exempt_networks"),
                       ("", "greylist.db is required")):
        bad = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="greylist")
        with open(bad.conf, "a") as f:
            f.write(extra + ("greylist.db = /tmp/x.sqlite\n" if extra else ""))
        r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", bad.conf, "-t"], capture_output=True, text=True,
                           timeout=20)
        assert r.returncode != 0 and why in r.stdout + r.stderr, (extra, r.stdout + r.stderr)
    # a database the daemon cannot write: greylisting tempfails (on_error = tempfail), or passes (accept)
    d = state_dir()
    db = os.path.join(d, "greylist.sqlite")
    g = gw(sink, db)
    g.stop()
    os.chmod(db, 0o444)
    os.chown(db, 0, 0)
    g = gw(sink, db)
    rep = rcpt(g, "x@example.test")
    assert rep.startswith("451 4.3.0 Greylisting is unavailable"), rep
    assert "greylist: " in g.log()
    g.stop()
    g = gw(sink, db, on_error="accept")
    assert rcpt(g, "x@example.test").startswith("250")
    g.stop()


run_tests(globals())
