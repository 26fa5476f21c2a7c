"""The web console in a real headless Chromium (Debian's chromium, driven
through chromedriver's W3C WebDriver protocol): log in over HTTPS, find a
quarantined message, release it, see it delivered at the sink; a screenshot
is kept as a test artifact. And with curl-like requests: no page without a
login, no change without the CSRF token or by a read-only user, wrong
passwords refused, mail text shown escaped, never as HTML."""
import base64
import http.client
import json
import ssl
import urllib.parse
from harness import *

PLUGDIR = os.path.join(BUILD, "plugins")


def console_gateway(sink):
    d = tempfile.mkdtemp(prefix="console-")
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    certs = make_certs(["gw.postern.test"])
    crt, key = (os.path.join(certs[0], "gw.postern.test" + e) for e in (".crt", ".key"))
    users = console_users(d, ("admin", "correct horse battery", "admin"), ("viewer", "just looking", "readonly"))
    g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="header_checks", http_listen="%s:9443" % addr(1),
                http_users=users, tls_cert=crt, tls_key=key,
                **{"header_checks.rule": "/^Subject: quarantine me/ QUARANTINE suspicious subject"}).start()
    return g, certs


def test_log_in_find_a_quarantined_message_release_it_in_chromium():
    if not os.path.exists(CHROMEDRIVER):
        skip("chromium-driver is not installed")
    sink = Sink(addr(2))
    g, certs = console_gateway(sink)
    qid = queue_id(send_mail(g, headers="Subject: quarantine me\r\nX-Note: <b>bold</b>\r\n",
                             body="<script>alert(1)</script> plain text\r\n"))
    wait_for(lambda: "on hold: suspicious subject" in g.log(), 10, "the quarantine")
    b = Browser()
    base = "https://%s:9443" % g.host
    b.go(base + "/")                     # not logged in: the login page
    assert "Log in" in b.page()
    b.type(b.find("#user"), "admin")
    b.type(b.find("#password"), "correct horse battery")
    b.click(b.find("#login"))
    wait_for(lambda: "Queue" in b.page() and "queue: 1" in b.page(), 10, "the queue page")
    b.go(base + "/quarantine")
    rows = b.finds("#messages tr")
    assert len(rows) == 2, b.page()      # the header row and our message
    assert qid in b.text(rows[1]) and "suspicious subject" in b.text(rows[1])
    b.click(b.find("#messages td a"))
    wait_for(lambda: qid in b.page() and "Release" in b.page(), 10, "the message page")
    assert b.text(b.find("#state")) == "hold" and b.text(b.find("#reason")) == "suspicious subject"
    decided = [b.text(e) for e in b.finds(".decided")]     # the decision log ("explain")
    assert decided == ["data header_checks quarantine: suspicious subject"], decided
    # mail text is shown as text: the markup is there as characters, not as elements
    assert "<script>alert(1)</script>" in b.text(b.find("#body"))
    assert "X-Note: <b>bold</b>" in b.text(b.find("#headers"))
    assert not b.finds("#body script") and not b.finds("#headers b")
    shot = b.screenshot(os.path.join(ARTIFACTS, "console-message.png"))
    assert shot.startswith(b"\x89PNG") and len(shot) > 5000
    b.click(b.find("#release"))
    msgs = sink.wait_count(1)
    assert b"Subject: quarantine me" in msgs[0]
    wait_for(lambda: not g.queue_files(), 10, "the spool to empty")
    assert re.search(r"console: admin from \[[\d.]+\]: release %s --keep x@example.test: done" % qid, g.log()), g.log()[-2000:]
    b.screenshot(os.path.join(ARTIFACTS, "console-after-release.png"))
    # tracking: search by recipient, then the message's timeline
    b.go(base + "/track")
    b.type(b.find("#track-search input[name=to]"), "x@example.test")
    b.click(b.find("#track-search button"))
    wait_for(lambda: "delivered" in b.page() and "1 record(s)" in b.page(), 10, "the tracking result")
    row = b.finds("#tracking tr")[1]
    assert qid in b.text(row) and "delivered" in b.text(row) and "alice@src.test" in b.text(row), b.text(row)
    b.screenshot(os.path.join(ARTIFACTS, "console-tracking.png"))
    b.click(b.find("#tracking a"))
    wait_for(lambda: "Message timeline" in b.page(), 10, "the timeline")
    steps = [b.text(r).split()[3] for r in b.finds("#tracking tr")[1:]]
    assert steps == ["quarantined", "released", "delivered"], steps
    b.screenshot(os.path.join(ARTIFACTS, "console-timeline.png"))
    b.quit()
    # the same as JSON
    w = Web(g)
    assert w.login("admin", "correct horse battery")[0] == 303
    status, _, text = w.request("GET", "/api/track?id=" + qid)
    assert status == 200 and [x["status"] for x in json.loads(text)] == ["quarantined", "released", "delivered"]
    status, _, text = w.request("GET", "/api/track?since=garbage")
    assert status == 400 and "a date is" in text
    g.stop()


def test_logins_csrf_roles_and_the_json_api():
    sink = Sink(addr(2))
    g, certs = console_gateway(sink)
    keep = queue_id(send_mail(g, rcpts=("a@example.test", "b@example.test"), headers="Subject: quarantine me\r\n"))
    wait_for(lambda: "on hold" in g.log(), 10, "the quarantine")
    w = Web(g)
    # nothing without a login: pages send you to it, the API says 401
    status, h, _ = w.request("GET", "/")
    assert status == 303 and h["location"] == "/login"
    status, _, text = w.request("GET", "/api/queue")
    assert status == 401 and "log in first" in text
    curl = subprocess.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-d",
                           "id=%s&op=delete" % keep, "https://%s:9443/api/action" % g.host],
                          capture_output=True, text=True, timeout=30)
    assert curl.stdout == "401", curl.stdout + curl.stderr
    status, _, _ = w.request("POST", "/action", {"id": keep, "op": "delete", "csrf": "0" * 64})
    assert status == 303
    # wrong passwords and unknown users are refused alike (after a delay)
    t0 = time.time()
    assert w.login("admin", "wrong")[0] == 403 and w.login("nobody", "x")[0] == 403
    assert time.time() - t0 >= 2 and w.cookie is None
    assert "console: failed login for 'admin'" in g.log()
    # a read-only user sees, but changes nothing
    assert w.login("viewer", "just looking")[0] == 303 and w.cookie
    csrf = w.csrf()
    status, _, text = w.request("GET", "/api/queue")
    msgs = json.loads(text)
    assert status == 200 and [m["id"] for m in msgs] == [keep] and msgs[0]["state"] == "hold"
    status, _, text = w.request("POST", "/action", {"id": keep, "op": "delete", "csrf": csrf})
    assert status == 403 and "read-only" in text
    # admin: a change without the token, or with another session's, is refused
    viewer_csrf = csrf
    w.cookie = None
    assert w.login("admin", "correct horse battery")[0] == 303
    for form in ({"id": keep, "op": "delete"}, {"id": keep, "op": "delete", "csrf": viewer_csrf}):
        status, _, text = w.request("POST", "/action", form)
        assert status == 403 and "CSRF" in text, (form, status, text)
    assert g.queue_files() == [keep]
    csrf = w.csrf()
    status, _, text = w.request("GET", "/api/message?id=" + keep)
    m = json.loads(text)
    assert status == 200 and "Subject: quarantine me" in m["headers"] and m["hold_reason"] == "suspicious subject"
    assert m["decisions"] == ["data header_checks quarantine: suspicious subject"], m
    # release to one of the two recipients (API, token in a header); the other is dropped
    status, _, text = w.request("POST", "/api/action", {"id": keep, "op": "release", "rcpt": "b@example.test"},
                                headers={"X-CSRF-Token": csrf})
    assert status == 200 and json.loads(text)["ok"], text
    msgs = sink.wait_count(1)
    assert sink_rcpts(msgs[0]) == [b"b@example.test"], sink_rcpts(msgs[0])
    wait_for(lambda: not g.queue_files(), 10, "the spool to empty")
    assert "a@example.test" in g.log() and "dropped" in g.log()
    # an empty selection from the release form is refused, not "release to nobody"
    other = queue_id(send_mail(g, headers="Subject: quarantine me\r\n"))
    wait_for(lambda: other in postern_list(g), 10, "the second quarantine")
    status, _, _ = w.request("POST", "/action", {"id": other, "op": "release", "select": "1", "csrf": csrf})
    assert status == 400 and g.queue_files() == [other]
    # filters on the queue page
    status, _, page = w.request("GET", "/quarantine?rcpt=x%40example.test")
    assert status == 200 and other in page
    status, _, page = w.request("GET", "/?domain=elsewhere.test")
    assert status == 200 and other not in page
    wait_for(lambda: json.loads(w.request("GET", "/api/counters")[2])["queue"] == 1, 10, "the queue counter")
    # "Retry all now" on the queue page: the control socket's flush
    status, h, page = w.request("GET", "/")
    assert 'value="flush"' in page
    status, h, _ = w.request("POST", "/action", {"id": "", "op": "flush", "csrf": csrf})
    assert status == 303 and h["location"] == "/"
    assert re.search(r"console: admin from \[[\d.]+\]: flush: done", g.log()), g.log()[-1500:]
    # log out: the cookie is dead
    assert w.request("POST", "/logout", {"csrf": csrf})[0] == 303
    assert w.request("GET", "/api/queue")[0] == 401
    # the metrics stay where they were, without a login
    c = http.client.HTTPSConnection(g.host, 9443, context=ssl._create_unverified_context(), timeout=10)
    c.request("GET", "/metrics")
    r = c.getresponse()
    assert r.status == 200 and b"postern_queue_messages 1" in r.read()
    g.stop()



def test_bidi_controls_shown_escaped_and_a_quoted_space_address_released():
    sink = Sink(addr(2))
    g, _ = console_gateway(sink)
    rlo = "\u202e"
    keep = queue_id(send_mail(g, rcpts=('"a b"@example.test', "c@example.test"),
                              headers="Subject: quarantine me\r\nX-Attachment: invoice%sgnp.exe\r\n" % rlo))
    wait_for(lambda: "on hold" in g.log(), 10, "the quarantine")
    w = Web(g)
    assert w.login("admin", "correct horse battery")[0] == 303
    csrf = w.csrf()
    status, _, page = w.request("GET", "/message?id=" + keep)
    assert status == 200 and "invoice<span class=\"bidi\">[U+202E]</span>gnp.exe" in page, page[-2500:]
    assert rlo not in page
    # the JSON API: visible as an escape in the text, the same string once decoded
    status, _, text = w.request("GET", "/api/message?id=" + keep)
    assert status == 200 and "\\u202e" in text.lower() and rlo not in text, text[:600]
    assert ("invoice%sgnp.exe" % rlo) in json.loads(text)["headers"]
    # the release form's checkbox for "a b"@example.test, as the browser posts it
    assert 'value="&quot;a b&quot;@example.test"' in page
    status, _, text = w.request("POST", "/action", {"id": keep, "op": "release", "select": "1", "csrf": csrf,
                                                    "rcpt": '"a b"@example.test'})
    assert status == 303, (status, text)
    msgs = sink.wait_count(1)
    assert sink_rcpts(msgs[0]) == [b'"a b"@example.test'], sink_rcpts(msgs[0])
    wait_for(lambda: not g.queue_files(), 10, "the spool to empty")
    g.stop()


def test_bulk_actions_by_checkbox_and_by_filter():
    sink = Sink(addr(2))
    g, _ = console_gateway(sink)
    first = [queue_id(send_mail(g, rcpts=("a@example.test",), headers="Subject: quarantine me\r\n")) for _ in range(3)]
    other = [queue_id(send_mail(g, rcpts=("o@other.test",), headers="Subject: quarantine me\r\n")) for _ in range(3)]
    wait_for(lambda: len(g.queue_files()) == 6, 10, "six quarantined messages")
    w = Web(g)
    assert w.login("viewer", "just looking")[0] == 303
    status, _, page = w.request("GET", "/quarantine")
    assert status == 200 and 'name="id"' not in page and "/bulk" not in page   # read-only: no bulk form
    viewer_csrf = w.csrf()
    status, _, text = w.request("POST", "/bulk", {"op": "delete", "matching": "1", "csrf": viewer_csrf})
    assert status == 403 and "read-only" in text
    w.cookie = None
    assert w.login("admin", "correct horse battery")[0] == 303
    csrf = w.csrf()
    status, _, page = w.request("GET", "/quarantine")
    assert status == 200 and page.count('name="id"') == 6 and "all 6 message(s) that match" in page, page[-3000:]
    assert '<a href="/api/quarantine">' in page
    # two checked messages
    status, _, page = w.request("POST", "/bulk", {"op": "delete", "id": first[:2], "csrf": csrf})
    assert status == 200 and "2 message(s) deleted" in page, page
    assert sorted(g.queue_files()) == sorted(first[2:] + other)
    # nothing checked, no token, a made-up op
    for form, code, why in [({"op": "delete", "csrf": csrf}, 400, "no message selected"),
                            ({"op": "delete", "id": first[2]}, 403, "CSRF"),
                            ({"op": "explode", "id": first[2], "csrf": csrf}, 400, "no such action"),
                            ({"op": "hold", "id": "not-an-id", "csrf": csrf}, 400, "not a queue ID")]:
        status, _, text = w.request("POST", "/bulk", form)
        assert status == code and why in text, (form, status, text)
    # everything the quarantine page's filter shows: the three to other.test
    status, _, page = w.request("GET", "/quarantine?domain=other.test")
    assert "all 3 message(s) that match" in page and first[2] not in page
    status, _, page = w.request("POST", "/bulk", {"op": "release", "matching": "1", "domain": "other.test",
                                                  "view": "quarantine", "csrf": csrf})
    assert status == 200 and "3 message(s) released" in page, page
    msgs = sink.wait_count(3)
    assert all(sink_rcpts(m) == [b"o@other.test"] for m in msgs)
    wait_for(lambda: g.queue_files() == [first[2]], 10, "only the first one left")
    assert re.search(r"console: admin from \[[\d.]+\]: release --domain other.test --state hold: done", g.log())
    # the JSON API, token in a header
    status, _, text = w.request("POST", "/api/bulk", {"op": "delete", "matching": "1", "view": "quarantine"},
                                headers={"X-CSRF-Token": csrf})
    assert status == 200 and json.loads(text)["ok"] and "1 message(s) deleted" in json.loads(text)["answer"], text
    assert g.queue_files() == []
    g.stop()


def https_get(host, path, source=None, timeout=5):
    c = http.client.HTTPSConnection(host, 9443, context=ssl._create_unverified_context(), timeout=timeout,
                                    source_address=(source, 0) if source else None)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


def test_idle_clients_and_logins_never_lock_out_admins_and_prometheus():
    sink = Sink(addr(2))
    g, _ = console_gateway(sink)
    admin = Web(g)
    assert admin.login("admin", "correct horse battery")[0] == 303
    # 40 idle connections from one client and a slowloris from another: a third is served at once
    idle = [socket.create_connection((g.host, 9443), timeout=20, source_address=(addr(50), 0)) for _ in range(40)]
    on_cleanup(lambda: [s.close() for s in idle])
    slow = socket.create_connection((g.host, 9443), timeout=20, source_address=(addr(51), 0))
    on_cleanup(slow.close)
    t0 = time.time()
    status, body = https_get(g.host, "/metrics", source=addr(60))
    assert status == 200 and b"postern_queue_messages" in body and time.time() - t0 < 3
    assert admin.request("GET", "/")[0] == 200
    # the idle ones and the slow one are cut once the request head is late (10 s), not served forever
    deadline = time.time() + 20
    def closed(s):
        try:
            s.settimeout(max(0.1, deadline - time.time()))
            return s.recv(100) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
    for s in idle[:8]:             # the rest were refused at once (8 per client)
        assert closed(s), "an idle connection outlived the request-head deadline"
    assert time.time() - t0 < 16
    # more logins of one user than it may have: refused, and nobody else is logged out
    viewer = [Web(g) for _ in range(12)]
    codes = [v.login("viewer", "just looking")[0] for v in viewer]
    assert codes.count(303) == 8 and codes.count(403) == 4, codes
    assert "too many open sessions" in viewer[-1].request("POST", "/login", {"user": "viewer", "password":
                                                                             "just looking"})[2]
    assert admin.request("GET", "/api/queue")[0] == 200, "the admin was logged out"
    assert "refused: too many open sessions" in g.log()
    # TLS 1.0/1.1 refused by the console as by SMTP, 1.2 accepted
    for version, works in (("-tls1_1", False), ("-tls1", False), ("-tls1_2", True)):
        r = subprocess.run(["openssl", "s_client", version, "-cipher", "DEFAULT@SECLEVEL=0", "-connect",
                            "%s:9443" % g.host], input="", capture_output=True, text=True, timeout=20)
        m = re.search(r"Protocol\s*: (TLSv1(\.\d)?)", r.stdout)
        connected = r.returncode == 0 and m is not None and "Cipher is (NONE)" not in r.stdout
        assert connected == works, (version, r.stdout[-600:], r.stderr[-600:])
    g.stop()


def postern_list(g):
    return subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "queue", "list"], capture_output=True,
                          text=True, timeout=30).stdout


def test_console_needs_users_and_refuses_bad_files():
    d = tempfile.mkdtemp(prefix="console-")
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    bad = os.path.join(d, "users")
    for text, why in (("admin:plaintext:admin\n", "expected 'name:$hash$:admin|readonly|reviewer'"),
                      ("# nobody\n", "no users")):
        with open(bad, "w") as f:
            f.write(text)
        g = Gateway(default_transport="smtp:[%s]:2526" % addr(2), http_listen="%s:9443" % addr(1), http_users=bad)
        r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf, "-t"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 1 and why in r.stderr, r.stderr
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2), http_users=bad)
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf, "-t"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1 and "http_users needs http_listen" in r.stderr, r.stderr


if __name__ == "__main__":
    run_tests(globals())
