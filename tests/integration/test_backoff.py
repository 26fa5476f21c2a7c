"""Automatic back-off and suspend/resume (issue 38): a next hop answering
"421 4.7.0 try again later" matches a back-off rule, which suspends its
domain for a while: no connection is made to it meanwhile, `postern queue
suspended` shows why, the metric counts it, and the mail goes once the
suspension is over. The admin suspends a destination until resumed, and
resuming sends its waiting mail at once. Other rules throttle a
destination, bounce a recipient or send it elsewhere; scripts suspend,
throttle and resume through postern.suspend/throttle/resume."""
from harness import *


def backoff_gateway(server_host, port):
    table = table_file("# 421 from a busy provider: leave it alone for 3 s\n"
                       "suspend 3s ^421 4\\.7\\.0 .*try again later\n"
                       "suspend-source 1m ^450 .*too many connections from your IP\n", name="backoff")
    return Gateway(default_transport="smtp:[%s]:%d" % (server_host, port), backoff=table,
                   http_listen="%s:9025" % addr(1)).start()


def postern(g, *args):
    return subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "queue", *args], capture_output=True,
                          text=True, timeout=30)


def metric(g, name):
    import urllib.request
    with urllib.request.urlopen("http://%s:9025/metrics" % g.host, timeout=10) as r:
        found = re.search(r"^%s (\d+)$" % re.escape(name), r.read().decode(), re.M)
    return int(found.group(1)) if found else 0


def test_a_421_suspends_the_destination_and_it_recovers():
    server = ScriptedSmtp(addr(2), 2526, mail_reply="421 4.7.0 try again later")
    g = backoff_gateway(addr(2), 2526)
    assert "queued as" in send_mail(g, sender="first@src.test")
    wait_for(lambda: "destination example.test suspended for 3s" in g.log(), 10, "the back-off")
    assert server.connections == 1
    assert metric(g, 'postern_backoff_actions_total{action="suspend"}') == 1
    listed = postern(g, "suspended")
    assert listed.returncode == 0 and "destination example.test until " in listed.stdout, listed
    assert "backoff: 421 4.7.0 try again later" in listed.stdout
    # --json: the same, with the remote's reply (its ": ") as a field of its own
    listed = json.loads(postern(g, "suspended", "--json").stdout)
    assert [(x["kind"], x["name"], x["rate"]) for x in listed] == [("destination", "example.test", 0)], listed
    assert "421 4.7.0 try again later" in listed[0]["reason"] and listed[0]["until"].startswith("20"), listed
    # while suspended: a new message and the first one's retry (1-2 s) wait, no connection
    assert "queued as" in send_mail(g, sender="second@src.test")
    server.mail_reply = "250 2.1.0 Ok"           # the provider is fine again
    time.sleep(1.5)
    assert server.connections == 1, server.connections
    assert "waits: destination suspended" in g.log()
    # over after 3 s: both go
    wait_for(lambda: sorted(server.senders) == ["first@src.test", "second@src.test"], 15, "both messages")
    assert "destination example.test: suspension over" in g.log()
    assert postern(g, "suspended").stdout == ""
    # waiting is no attempt: the only deferral is the 421 itself
    assert len(re.findall(r"to=<x@example\.test>.*status=deferred", g.log())) == 1, g.log()
    g.stop()


def test_the_admin_suspends_and_resumes_a_destination():
    server = ScriptedSmtp(addr(2), 2526)
    g = backoff_gateway(addr(2), 2526)
    r = postern(g, "suspend", "destination", "example.test")
    assert r.returncode == 0 and "suspended until resumed" in r.stdout, r
    qid = queue_id(send_mail(g, sender="held@src.test"))
    time.sleep(1.5)
    assert server.connections == 0 and qid in g.queue_files()
    assert "destination example.test until resumed: by the admin" in postern(g, "suspended").stdout
    listed = postern(g, "list").stdout
    assert qid in listed and "waiting: destination suspended" in listed, listed
    # a restart keeps it (the spool's `suspended` file)
    g.stop()
    g.start()
    assert "1 still in force from before the restart" in g.log()
    assert "destination example.test until resumed: by the admin" in postern(g, "suspended").stdout
    time.sleep(1)
    assert server.connections == 0
    r = postern(g, "resume", "destination", "example.test")
    assert r.returncode == 0 and "1 message(s) scheduled" in r.stdout, r
    wait_for(lambda: server.senders == ["held@src.test"], 10, "the held-back message")
    # refusals
    for args, why in ((("suspend", "planet", "x"), "usage: queue suspend"), (("resume", "destination", "x.test"),
                      "is neither suspended nor throttled"), (("suspend", "destination"), "usage: queue suspend"),
                      (("suspend", "queue", "bulk", "soon"), "usage: queue suspend")):
        r = postern(g, *args)
        assert r.returncode != 0 and why in r.stdout + r.stderr, (args, r)
    g.stop()


def test_the_console_suspends_lists_and_resumes():
    server = ScriptedSmtp(addr(2), 2526)
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2), **console_settings()).start()
    w = Web(g)
    w.login("admin", "correct horse battery")
    token = w.csrf()
    status, _, text = w.request("POST", "/api/action", {"op": "suspend", "kind": "destination", "name": "example.test",
                                                        "duration": "1h"}, headers={"X-CSRF-Token": token})
    assert status == 200 and json.loads(text)["ok"], (status, text)
    status, _, text = w.request("GET", "/api/suspended")
    listed = json.loads(text)
    assert status == 200 and [(x["kind"], x["name"], x["reason"]) for x in listed] == \
        [("destination", "example.test", "by the admin")], listed
    qid = queue_id(send_mail(g, sender="via-console@src.test"))
    status, _, page = w.request("GET", "/suspended")
    assert status == 200 and "example.test" in page and "Resume" in page
    # the queue page says why the message waits, and filters by named queue
    wait_for(lambda: "destination suspended (postern queue suspended)" in w.request("GET", "/")[2], 10,
             "the queue page's reason")
    status, _, page = w.request("GET", "/?queue=nosuch")
    assert status == 200 and 'name="queue" value="nosuch"' in page and qid not in page, page
    # no CSRF token: refused; then the page's own form resumes it
    status, _, _ = w.request("POST", "/action", {"op": "resume", "kind": "destination", "name": "example.test"})
    assert status == 403
    assert server.connections == 0 and qid in g.queue_files()
    status, headers, _ = w.request("POST", "/action", {"op": "resume", "kind": "destination", "name": "example.test",
                                                       "csrf": token})
    assert status in (302, 303) and headers["location"] == "/suspended", (status, headers)
    wait_for(lambda: server.senders == ["via-console@src.test"], 10, "the message after resume")
    assert json.loads(w.request("GET", "/api/suspended")[2]) == []
    # throttling from the console: listed with its rate
    status, _, text = w.request("POST", "/api/action", {"op": "throttle", "kind": "provider", "name": "bigmail",
                                                        "rate": "20", "duration": "1h"}, headers={"X-CSRF-Token": token})
    assert status == 200 and json.loads(text)["ok"], (status, text)
    listed = json.loads(w.request("GET", "/api/suspended")[2])
    assert [(x["kind"], x["name"], x["limit"]) for x in listed] == [("provider", "bigmail", "20/min")], listed
    assert "20/min" in w.request("GET", "/suspended")[2]
    assert "console: admin from [" in g.log() and "suspend destination example.test" in g.log()
    g.stop()


def test_rules_throttle_a_destination_bounce_and_reroute():
    server, other = ScriptedSmtp(addr(2), 2526), ScriptedSmtp(addr(3), 2526)
    rules = ("throttle 40/min 1m ^451 4\\.7\\.1 .*slow down\n"
             "bounce ^452 4\\.3\\.1 .*gone for good\n"
             "reroute smtp:[%s]:2526 ^421 4\\.7\\.0 .*use the other door\n" % addr(3))
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2), backoff=table_file(rules, name="backoff"),
                http_listen="%s:9025" % addr(1)).start()
    # "slow down": example.test gets at most 40 a minute (one every 1.5 s) for a minute
    server.mail_reply = lambda s: "451 4.7.1 slow down" if s == "first@src.test" else "250 2.1.0 Ok"
    send_mail(g, sender="first@src.test")
    wait_for(lambda: "destination example.test throttled to 40/min for 60s" in g.log(), 10, "the throttle")
    assert "destination example.test throttled to 40/min until " in postern(g, "suspended").stdout
    assert metric(g, 'postern_backoff_actions_total{action="throttle"}') == 1
    server.mail_reply = "250 2.1.0 Ok"
    for i in range(3):
        send_mail(g, sender="paced%d@src.test" % i)
    wait_for(lambda: len(server.senders) == 4, 20, "the throttled messages")
    gaps = [b - a for a, b in zip(server.times, server.times[1:])]
    assert all(gap >= 1.2 for gap in gaps), gaps
    # the admin ends it: the next ones go together
    assert postern(g, "resume", "destination", "example.test").returncode == 0
    for i in range(3):
        send_mail(g, sender="free%d@src.test" % i)
    wait_for(lambda: len(server.senders) == 7, 10, "the messages after resume")
    assert server.times[-1] - server.times[-3] < 1.0, server.times
    # "gone for good" (a 4xx) bounces at once: the notice goes to the sender
    server.mail_reply = lambda s: "452 4.3.1 gone for good" if s == "bounce-me@src.test" else "250 2.1.0 Ok"
    qid = queue_id(send_mail(g, sender="bounce-me@src.test"))
    wait_for(lambda: "" in server.senders, 10, "the non-delivery notice")
    assert re.search(r"%s: to=<x@example\.test>.*status=bounced \(554 5\.4\.0 a backoff rule bounces this "
                     r"answer: 452 4\.3\.1 gone for good\)" % qid, g.log()), g.log()
    assert "bounce-me@src.test" not in server.senders
    # "use the other door": retried through the other server, and delivered there
    server.mail_reply = lambda s: "421 4.7.0 use the other door" if s == "door@src.test" else "250 2.1.0 Ok"
    qid = queue_id(send_mail(g, sender="door@src.test"))
    wait_for(lambda: other.senders == ["door@src.test"], 10, "the rerouted message")
    assert "%s: to=<x@example.test>: rerouted to smtp:[%s]:2526" % (qid, addr(3)) in g.log()
    assert metric(g, 'postern_backoff_actions_total{action="reroute"}') == 1
    assert metric(g, 'postern_backoff_actions_total{action="bounce"}') == 1
    g.stop()


LUA_BACKOFF = """postern.on("mail", function(tx)
  local s = tx:sender()
  if s == "pause@src.test" then postern.suspend("destination", "example.test", "1h", "asked to pause") end
  if s == "slow@src.test" then postern.throttle("provider", "bigmail", 10, 60) end
  if s == "ask@src.test" then
    postern.log("info", "until: " .. tostring(postern.suspended("destination", "example.test")))
  end
  if s == "go@src.test" then
    postern.log("info", "resumed: " .. tostring(postern.resume("destination", "example.test")))
  end
  if s == "bad@src.test" then postern.suspend("planet", "x", 5) end
end)
"""


def test_scripts_suspend_throttle_and_resume():
    server = ScriptedSmtp(addr(2), 2526)
    script = readable_file("backoff.lua", LUA_BACKOFF, prefix="lua-")
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2), plugins="lua:" + script).start()
    qid = queue_id(send_mail(g, sender="pause@src.test"))
    listed = postern(g, "suspended").stdout
    assert "destination example.test until " in listed and "by script backoff.lua: asked to pause" in listed, listed
    send_mail(g, sender="slow@src.test")
    assert "provider bigmail throttled to 10/min until " in postern(g, "suspended").stdout
    send_mail(g, sender="ask@src.test")
    until = int(re.search(r"until: (\d+)", g.log()).group(1))
    assert 3500 < until - time.time() <= 3600, until
    time.sleep(1.5)
    assert server.connections == 0 and qid in g.queue_files()
    # a bad kind is the script's error: that message tempfails, and the log says why
    c = Client(g.host)
    c.cmd("EHLO client.test")
    reply = c.cmd("MAIL FROM:<bad@src.test>")
    c.close()
    assert reply.startswith("4"), reply
    assert 'expected "destination", "source", "queue" or "provider"' in g.log()
    send_mail(g, sender="go@src.test")
    assert "resumed: true" in g.log()
    wait_for(lambda: "pause@src.test" in server.senders, 10, "the message the script held back")
    # a file from before throttles (no rate field) is still read at start
    g.stop()
    path = os.path.join(g.spool, "suspended")
    st = os.stat(path)
    with open(path, "w") as f:
        f.write("destination\t%d\told.test\tby the admin\n" % (time.time() + 600))
    os.chown(path, st.st_uid, st.st_gid)
    g.start()
    assert "destination old.test until " in postern(g, "suspended").stdout
    assert "provider bigmail" not in postern(g, "suspended").stdout   # a v1 file has only what it says
    g.stop()


def test_backoff_table_errors_are_caught_at_start():
    for bad, why in (("pause 3s ^421\n", "expected suspend, suspend-source"), ("suspend soon ^421\n", "DURATION"),
                     ("suspend 3s\n", "no expression"), ("suspend 3s ^421 (unclosed\n", "bad expression"),
                     ("throttle 0 1m ^421\n", "RATE"), ("throttle 10 ^421\n", "DURATION"),
                     ("reroute ^421\n", "NEXTHOP"), ("reroute mx ^421\n", "NEXTHOP"),
                     ("bounce provider=b@d ^421\n", "not a provider name"), ("bounce provider=big\n", "no expression")):
        g = Gateway(backoff=table_file(bad, name="backoff"))
        r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf, "-t"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode != 0 and why in r.stdout + r.stderr, (bad, r.stdout, r.stderr)


run_tests(globals())
