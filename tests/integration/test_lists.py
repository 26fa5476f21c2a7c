"""Personal allow and block lists: `postern lists` through the daemon and
on the store with the daemon down; a blocked sender refused at RCPT (550)
for that recipient only, by the recipient's own list and by its domain's;
an allowed sender skipping greylisting; the lists surviving a restart;
block_action = quarantine holding the copy instead; tracking."""
import json
from harness import *


def lists(g, *args):
    return subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "lists", *args], capture_output=True,
                          text=True, timeout=30)


def rcpt(g, sender, to, source=None):
    c = Client(g.host, source=source)
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<%s>" % sender).startswith("250")
    rep = c.cmd("RCPT TO:<%s>" % to)
    c.close()
    return rep


def test_block_and_allow_at_rcpt_with_greylisting_and_a_restart():
    sink = Sink(addr(2))
    db = os.path.join(tempfile.mkdtemp(prefix="grey-"), "greylist.db")
    os.chmod(os.path.dirname(db), 0o777)
    g = Gateway(sink=sink, plugin_dir=os.path.join(BUILD, "plugins"), plugins="greylist",
                **{"greylist.db": db, "greylist.delay": "300"}, trusted_networks="10.9.9.9/32").start()
    for args in (["add", "block", "b@example.test", "spammer@evil.test"],
                 ["add", "allow", "b@example.test", "@friends.test"],
                 ["add", "block", "@example.test", "@bad.test"]):
        r = lists(g, *args)
        assert r.returncode == 0 and "added" in r.stdout, (args, r.stdout, r.stderr)
    r = lists(g, "show", "b@example.test")
    assert r.stdout.splitlines() == ["b@example.test allow @friends.test", "b@example.test block spammer@evil.test"], \
        r.stdout
    assert lists(g, "show").stdout.count("\n") == 3
    r = lists(g, "add", "block", "b@example.test", "not an address")
    assert r.returncode == 1 and "has a blank" in r.stderr, r.stderr
    r = lists(g, "add", "block", "b@example.test", "nodomain")
    assert r.returncode == 1 and "is not an address or @domain" in r.stderr, r.stderr
    assert lists(g, "frobnicate").returncode == 2
    # the recipient's own block list, for that recipient only; the domain's for all of it
    rep = rcpt(g, "spammer@evil.test", "b@example.test")
    assert rep.startswith("550 5.7.1 <b@example.test>: Sender address rejected: blocked by the recipient"), rep
    assert rcpt(g, "spammer@evil.test", "c@example.test").startswith("450")          # greylisted, not blocked
    assert rcpt(g, "x@mx.bad.test", "anyone@example.test").startswith("550 5.7.1")
    # allowed: greylisting skipped for b, not for c
    assert rcpt(g, "friend@mail.friends.test", "b@example.test").startswith("250")
    assert rcpt(g, "friend@mail.friends.test", "c@example.test").startswith("450")
    assert "sender on the block list of <b@example.test>; from=<spammer@evil.test> to=<b@example.test>" in g.log()
    # the daemon down: the store itself, as the daemon's user; loaded at the next start
    g.stop()
    r = lists(g, "del", "b@example.test", "spammer@evil.test")
    assert r.returncode == 0 and "removed" in r.stdout, r.stdout + r.stderr
    g.start()
    assert "lists: 2 allow/block entries" in g.log()
    assert rcpt(g, "spammer@evil.test", "b@example.test").startswith("450")          # no longer blocked
    assert rcpt(g, "x@bad.test", "b@example.test").startswith("550")                 # the domain's entry stayed
    wait_for(lambda: any(x["link"] == "block list" for x in json.loads(subprocess.run(
        [os.path.join(BUILD, "postern"), "-c", g.conf, "track", "--json", "--to", "b@example.test", "--status",
         "rejected"], capture_output=True, text=True, timeout=30).stdout)), 5, "the block in tracking")
    g.stop()


def test_block_action_quarantine_holds_the_copy():
    sink = Sink(addr(2))
    g = Gateway(sink=sink, block_action="quarantine").start()
    assert lists(g, "add", "block", "b@example.test", "@evil.test").returncode == 0
    qid = queue_id(send_mail(g, rcpts=("b@example.test", "c@example.test"), sender="spammer@evil.test"))
    assert sink_rcpts(sink.wait_count(1)[0]) == [b"c@example.test"]
    wait_for(lambda: "%s: to=<b@example.test>, status=quarantined (spam quarantine: sender on your block list)" % qid
             in g.log(), 10, "b's copy held")
    g.stop()


def test_lua_reads_the_lists():
    sink = Sink(addr(2))
    # hold every copy but the allowed ones
    script = readable_file("lists.lua",
                           'postern.on("eom", function(tx)\n'
                           '  for _, r in ipairs(tx:recipients()) do\n'
                           '    postern.log("info", r .. " says " .. tostring(tx:list(r)))\n'
                           '    if tx:list(r) ~= "allow" then tx:spam_quarantine(r, "not on the allow list") end\n'
                           '  end\nend)\n')
    g = Gateway(sink=sink, plugins="lua:" + script).start()
    assert lists(g, "add", "allow", "a@example.test", "@src.test").returncode == 0
    queue_id(send_mail(g, rcpts=("a@example.test", "b@example.test")))
    assert sink_rcpts(sink.wait_count(1)[0]) == [b"a@example.test"]
    wait_for(lambda: "b@example.test says nil" in g.log() and "a@example.test says allow" in g.log(), 10, "the lookups")
    g.stop()


run_tests(globals())
