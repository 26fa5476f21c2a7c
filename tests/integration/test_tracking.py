"""Message tracking against real peers: a recipient refused at RCPT, a
message refused at the end of data, one delivered, one deferred and then
delivered, one bounced by the next hop and one quarantined and released,
each found by `postern track` by sender, recipient, client, queue ID, status
and time, with its whole timeline; --json; records expire; bad options."""
import json
import sqlite3
from harness import *
from scripted_smtp import ScriptedSmtp


def track(g, *args):
    r = subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "track", *args], capture_output=True,
                       text=True, timeout=30)
    return r


def records(g, *args):
    r = track(g, "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def last(g, *args):
    """{(queue_id, to): status} of the records that match."""
    return {(x["queue_id"], x["to"]): x["status"] for x in records(g, *args)}


def test_every_fate_is_found_with_its_timeline():
    sink = Sink(addr(2))
    bouncer = ScriptedSmtp(addr(4))                  # 550 to bad-… recipients
    table = table_file("later.test smtp:[%s]:2526\nbounce.test smtp:[%s]:2526\n" % (addr(3), addr(4)))
    g = Gateway(sink=sink, transport_table=table, relay_domains="example.test, later.test, bounce.test",
                trusted_networks=addr(5) + "/32", plugin_dir=os.path.join(BUILD, "plugins"), plugins="header_checks",
                **{"header_checks.rules": readable_file("rules", "/^Subject: refuse me/ REJECT no thanks\n"
                                                                 "/^Subject: hold me/ QUARANTINE held for review\n")}).start()
    t0 = time.time()
    # refused at RCPT (relay denied from outside) and at the end of data (a rule)
    c = Client(g.host, source=addr(9))
    c.cmd("EHLO outside.test")
    c.cmd("MAIL FROM:<spammer@evil.test>")
    assert c.cmd("RCPT TO:<victim@elsewhere.test>").startswith("554")
    c.close()
    assert send_mail(g, rcpts=("x@example.test",), headers="Subject: refuse me\r\n", sender="r@src.test",
                     source=addr(9)).startswith("5")
    delivered = queue_id(send_mail(g, rcpts=("x@example.test",), sender="alice@src.test", source=addr(5)))
    later = queue_id(send_mail(g, rcpts=("y@later.test",), sender="alice@src.test", source=addr(5)))
    bounced = queue_id(send_mail(g, rcpts=("bad-z@bounce.test",), sender="bob@src.test", source=addr(5)))
    held = queue_id(send_mail(g, rcpts=("h@example.test",), headers="Subject: hold me\r\n", sender="carol@src.test",
                              source=addr(5)))
    wait_for(lambda: "status=deferred" in g.log() and ("%s: to=<bad-z@bounce.test>" % bounced) in g.log(), 15,
             "the deferral and the bounce")
    Sink(addr(3))                                    # the deferred one goes on its next retry
    wait_for(lambda: ("%s: to=<y@later.test>" % later) in g.log() and "status=sent" in g.log().split(later)[-1], 15,
             "the retry")
    r = subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "queue", "release", held], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: last(g, "--id", held).get((held, "h@example.test")) == "delivered", 15, "the released delivery")

    # by sender, recipient and client: each record's last status
    wait_for(lambda: last(g, "--to", "y@later.test") == {(later, "y@later.test"): "delivered"}, 10, "the retry's record")
    assert last(g, "--from", "alice@src.test") == {(delivered, "x@example.test"): "delivered",
                                                   (later, "y@later.test"): "delivered"}
    assert last(g, "--from", "@src.test", "--status", "bounced") == {(bounced, "bad-z@bounce.test"): "bounced"}
    refused = records(g, "--client", addr(9))
    assert sorted((x["queue_id"], x["to"], x["status"], x["stage"]) for x in refused) == [
        (None, "victim@elsewhere.test", "rejected", "rcpt"), (None, "x@example.test", "rejected", "data")], refused
    eom = [x for x in refused if x["stage"] == "data"][0]
    assert eom["from"] == "r@src.test" and eom["link"] == "header_checks" and eom["reply"].startswith("550 5.7.1"), eom
    assert {x["client"] for x in records(g, "--client", addr(5))} == {addr(5)}
    assert len(records(g, "--client", addr(5))) == 4
    # by time: everything since the start, nothing before it; --until to the second
    start = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t0 - 1))
    before = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t0 - 2))
    # the six, and the bounce notice to bob (delivered by its own attempt)
    wait_for(lambda: list(last(g, "--from", "<>").values()) == ["delivered"], 10, "the bounce notice's delivery")
    notice = last(g, "--from", "<>")
    assert list(notice)[0][1] == "bob@src.test", notice
    since = records(g, "--since", start)
    assert len(since) == 7, since
    assert records(g, "--until", before) == []

    # the whole timeline: by --id, or when one message matches
    tl = records(g, "--id", later)
    assert [x["status"] for x in tl][0] == "queued" and [x["status"] for x in tl][-1] == "delivered", tl
    assert "deferred" in [x["status"] for x in tl] and tl[0]["client"] == addr(5) and tl[0]["queue_id"] == later
    tl = [x["status"] for x in records(g, "--id", held)]
    assert tl == ["quarantined", "released", "delivered"], tl
    r = track(g, "--to", "bad-z@bounce.test")
    assert r.returncode == 0 and "timeline of %s:" % bounced in r.stdout and "bounced" in r.stdout, r.stdout
    assert re.search(r"from=<bob@src.test> to=<bad-z@bounce.test> client=%s" % re.escape(addr(5)), r.stdout)

    # bad options are refused, clearly
    for bad, why in [(["--status", "lost"], "is not one of"), (["--since", "yesterday"], "is not a date"),
                     (["--limit", "0"], "positive number")]:
        r = track(g, *bad)
        assert r.returncode == 1 and why in r.stderr, (bad, r.stderr)
    assert track(g, "--frobnicate", "x").returncode == 2
    g.stop()


def test_records_expire_after_the_retention():
    sink = Sink(addr(2))
    g = Gateway(sink=sink, tracking_retention="1m").start()
    qid = queue_id(send_mail(g))
    sink.wait_count(1)
    wait_for(lambda: last(g, "--id", qid).get((qid, "x@example.test")) == "delivered", 10, "the record")
    g.stop()
    # age the records by two minutes (as the clock would), then a start expires them
    db = sqlite3.connect(os.path.join(g.spool, "tracking.db"))
    db.execute("UPDATE events SET time = time - 120000")
    db.commit()
    db.close()
    g.start()
    wait_for(lambda: "tracking: 2 event(s) older than 60s removed" in g.log(), 10, "the expiry")
    assert records(g, "--id", qid) == []
    g.stop()


def test_tracking_off_records_nothing():
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2), tracking="no").start()
    assert not os.path.exists(os.path.join(g.spool, "tracking.db"))
    r = track(g)
    assert r.returncode == 1 and "tracking = no" in r.stderr
    g.stop()


run_tests(globals())
