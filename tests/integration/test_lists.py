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


def control(g, line):
    """One request on posternd's control socket: (ok, text)."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(os.path.join(g.spool, "control.sock"))
    s.sendall(line.encode() + b"\n")
    out = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        out += chunk
    s.close()
    head, _, text = out.decode().partition("\n")
    return head == "OK", text


def test_lists_shared_by_two_nodes_through_redis():
    """With redis_server every node holds the same lists: a node that had
    lists before seeds Redis; a change on one node reaches the other (block,
    domain block, removal); Redis down, lookups go on from each node's copy
    and a change waits; Redis back empty, the nodes seed it again (the union)
    and agree; a digest link's nonce acts once in the fleet; the offline CLI
    refuses changes that the shared copy would undo."""
    sink = Sink(addr(2))
    redis = Redis(addr(7))
    a = Gateway(host=addr(3), sink=sink).start()
    assert lists(a, "add", "block", "b@example.test", "old@evil.test").returncode == 0
    a.stop()
    a.set(redis_server=redis.address()).start()
    b = Gateway(host=addr(4), sink=sink, redis_server=redis.address()).start()
    wait_for(lambda: "old@evil.test" in lists(b, "show").stdout, 10, "a's old entry on b")
    assert rcpt(b, "old@evil.test", "b@example.test").startswith("550")
    assert rcpt(b, "old@evil.test", "c@example.test").startswith("250")
    assert lists(b, "add", "block", "@example.test", "@spam.test").returncode == 0
    wait_for(lambda: rcpt(a, "x@spam.test", "c@example.test").startswith("550"), 10, "b's domain block on a")
    assert lists(a, "del", "b@example.test", "old@evil.test").returncode == 0
    wait_for(lambda: "old@evil.test" not in lists(b, "show").stdout, 10, "a's removal on b")
    assert rcpt(b, "old@evil.test", "b@example.test").startswith("250")
    # Redis down: each node's copy answers; a change on a waits for Redis
    redis.kill()
    assert rcpt(b, "x@spam.test", "c@example.test").startswith("550")
    assert lists(a, "add", "allow", "c@example.test", "friend@ok.test").returncode == 0
    redis.start()       # empty: it lost the lists
    wait_for(lambda: "friend@ok.test" in lists(b, "show").stdout, 30, "the change made while Redis was down, on b")
    wait_for(lambda: lists(a, "show").stdout == lists(b, "show").stdout, 10, "the nodes to agree")
    assert lists(a, "show").stdout.splitlines() == ["@example.test block @spam.test",
                                                    "c@example.test allow friend@ok.test"], lists(a, "show").stdout
    assert redis.cli("HLEN", "postern:lists") == "2"
    # a digest link's nonce: once in the fleet
    assert control(a, "link-use 0123abcd %d" % (time.time() + 600)) == (True, "first use\n")
    assert control(b, "link-use 0123abcd %d" % (time.time() + 600)) == (False, "used before\n")
    redis.kill()
    assert control(b, "link-use 4567abcd %d" % (time.time() + 600)) == (False, "cannot record it\n")
    # with redis_server, changes need the daemon: the offline CLI would be undone by the shared copy
    b.stop()
    r = lists(b, "add", "block", "x@example.test", "y@z.test")
    assert r.returncode == 1 and "redis_server" in r.stderr, r.stderr
    assert "@spam.test" in lists(b, "show").stdout, "show reads the node's copy"
    a.stop()


run_tests(globals())
