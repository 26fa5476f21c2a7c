"""Automatic back-off and suspend/resume (issue 38): a next hop answering
"421 4.7.0 try again later" matches a back-off rule, which suspends its
domain for a while: no connection is made to it meanwhile, `postern queue
suspended` shows why, the metric counts it, and the mail goes once the
suspension is over. The admin suspends a destination until resumed, and
resuming sends its waiting mail at once."""
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
    # no CSRF token: refused; then the page's own form resumes it
    status, _, _ = w.request("POST", "/action", {"op": "resume", "kind": "destination", "name": "example.test"})
    assert status == 403
    assert server.connections == 0 and qid in g.queue_files()
    status, headers, _ = w.request("POST", "/action", {"op": "resume", "kind": "destination", "name": "example.test",
                                                       "csrf": token})
    assert status in (302, 303) and headers["location"] == "/suspended", (status, headers)
    wait_for(lambda: server.senders == ["via-console@src.test"], 10, "the message after resume")
    assert json.loads(w.request("GET", "/api/suspended")[2]) == []
    assert "console: admin from [" in g.log() and "suspend destination example.test" in g.log()
    g.stop()


def test_backoff_table_errors_are_caught_at_start():
    for bad, why in (("pause 3s ^421\n", "expected suspend or suspend-source"), ("suspend soon ^421\n", "DURATION"),
                     ("suspend 3s\n", "DURATION"), ("suspend 3s ^421 (unclosed\n", "bad expression")):
        g = Gateway(backoff=table_file(bad, name="backoff"))
        r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf, "-t"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode != 0 and why in r.stdout + r.stderr, (bad, r.stdout, r.stderr)


run_tests(globals())
