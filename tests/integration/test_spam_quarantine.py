"""The spam quarantine, per recipient: a link holds one recipient's copy
(host->rcpt_quarantine), the others are delivered; `queue release ID --for
RCPT` delivers to that recipient only; `queue delete ID --for RCPT` drops
that copy; a held copy survives a restart; after spam_quarantine_lifetime it
is removed with no notice; message tracking records each step."""
import json
from harness import *

PLUGDIR = os.path.join(BUILD, "test-plugins")


def postern(g, *args):
    return subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, *args], capture_output=True, text=True,
                          timeout=30)


def rcpt_states(g, qid):
    r = postern(g, "queue", "show", "--json", qid)
    assert r.returncode == 0, r.stderr
    return {x["address"]: x["status"] for x in json.loads(r.stdout)[0]["recipients"]}


def gateway(sink, **extra):
    return Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="probe",
                   **{"probe.mutate": "eom quarantine b@example.test score 12.5 (probe)"}, **extra).start()


def test_one_recipient_held_the_others_delivered_then_released_to_that_one_only():
    sink = Sink(addr(2))
    g = gateway(sink)
    qid = queue_id(send_mail(g, rcpts=("a@example.test", "b@example.test", "c@example.test")))
    msgs = sink.wait_count(1)
    assert sorted(sink_rcpts(msgs[0])) == [b"a@example.test", b"c@example.test"]
    wait_for(lambda: rcpt_states(g, qid) == {"a@example.test": "delivered", "b@example.test": "quarantined",
                                             "c@example.test": "delivered"}, 10, "b's copy in the spam quarantine")
    assert "%s: to=<b@example.test>, status=quarantined (spam quarantine: score 12.5 (probe))" % qid in g.log()
    listed = json.loads(postern(g, "queue", "list", "--json", "--state", "spam").stdout)
    assert [m["id"] for m in listed] == [qid], listed
    # a restart keeps it held, for b only
    g.stop()
    g.start()
    assert rcpt_states(g, qid)["b@example.test"] == "quarantined"
    # refusals: not a held copy, and the spool without the daemon cannot do it
    r = postern(g, "queue", "release", qid, "--for", "a@example.test")
    assert r.returncode == 1 and "no quarantined copy for <a@example.test>" in r.stderr, r.stderr
    r = postern(g, "queue", "release", "ALL", "--for", "b@example.test")
    assert r.returncode == 1 and "--for acts on one queue ID" in r.stderr
    # released to b: delivered to b alone
    r = postern(g, "queue", "release", qid, "--for", "b@example.test")
    assert r.returncode == 0, r.stderr
    msgs = sink.wait_count(2)
    assert [sink_rcpts(m) for m in msgs if b"X-Rcpt-Args: <b@example.test>" in m] == [[b"b@example.test"]]
    wait_for(lambda: not g.queue_files(), 10, "the message to leave the queue")
    def b_steps():         # the store is written in batches: what it has so far
        r = postern(g, "track", "--json", "--id", qid)
        return [x["status"] for x in json.loads(r.stdout) if x["to"] == "b@example.test"]
    wait_for(lambda: b_steps() == ["quarantined", "released", "delivered"], 5, "b's record")
    g.stop()


def test_a_held_copy_deleted_or_expired_goes_without_a_notice():
    sink = Sink(addr(2))
    g = gateway(sink, spam_quarantine_lifetime="3s")
    # deleted by the admin for b: the message goes, nothing is sent
    q1 = queue_id(send_mail(g, rcpts=("b@example.test",), sender="spammer@src.test"))
    wait_for(lambda: rcpt_states(g, q1) == {"b@example.test": "quarantined"}, 10, "the hold")
    r = postern(g, "queue", "delete", q1, "--for", "b@example.test")
    assert r.returncode == 0 and "deleted for 1 recipient(s)" in r.stdout, r.stdout + r.stderr
    wait_for(lambda: q1 not in g.queue_files(), 10, "the deleted message to go")
    # left alone: removed after spam_quarantine_lifetime
    q2 = queue_id(send_mail(g, rcpts=("b@example.test",), sender="spammer@src.test"))
    wait_for(lambda: q2 not in g.queue_files(), 15, "the expiry")
    assert "%s: to=<b@example.test>, status=expired (removed from the spam quarantine)" % q2 in g.log()
    assert sink.count() == 0                 # no copy, and no notice to the sender
    def steps(qid):        # the store is written in batches: what it has so far
        r = postern(g, "track", "--json", "--id", qid)
        return [(x["status"], x["stage"]) for x in json.loads(r.stdout)]
    wait_for(lambda: steps(q2) == [("quarantined", "eom"), ("deleted", "expire")], 5, "the expiry's record")
    g.stop()


def test_lua_holds_one_recipient():
    sink = Sink(addr(2))
    script = readable_file("spam.lua",
                           'postern.on("eom", function(tx)\n'
                           '  for _, r in ipairs(tx:recipients()) do\n'
                           '    if r:match("^careful@") then\n'
                           '      assert(tx:spam_quarantine(r, "looks like spam to " .. r))\n'
                           '    end\n'
                           '  end\nend)\n')
    g = Gateway(sink=sink, plugins="lua:" + script).start()
    qid = queue_id(send_mail(g, rcpts=("careful@example.test", "other@example.test")))
    assert sink_rcpts(sink.wait_count(1)[0]) == [b"other@example.test"]
    wait_for(lambda: rcpt_states(g, qid) == {"careful@example.test": "quarantined", "other@example.test": "delivered"},
             10, "careful's copy held")
    assert "looks like spam to careful@example.test" in g.log()
    g.stop()


run_tests(globals())
