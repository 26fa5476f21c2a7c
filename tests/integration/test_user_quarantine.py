"""The end users' quarantine pages (/my/) against a real Cyrus sasldb:
users log in with their mail address and mail password, see only their own
held copies, release one (delivered to them alone), release and always allow
the sender (the next message from it comes straight through), block a
sender (the next one is refused at RCPT), manage their lists; another
user's message ID in a URL, a form or an `as=` field is refused (IDOR);
changes need the CSRF token; a user never reaches the admin pages; an admin
may act for a user. Then the same flow in headless Chromium, screenshots
kept as artifacts."""
import json
from harness import *

PASSWORD = "mail pass phrase 7"


def gateway(sink):
    # mail from evil senders is held for each recipient not allowing it
    script = readable_file("spam.lua",
                           'postern.on("eom", function(tx)\n'
                           '  if not tx:sender():match("evil") then return end\n'
                           '  for _, r in ipairs(tx:recipients()) do\n'
                           '    if tx:list(r) ~= "allow" then\n'
                           '      tx:spam_quarantine(r, "spam score 9.5")\n'
                           '    end\n'
                           '  end\nend)\n')
    return Gateway(sink=sink, plugins="lua:" + script, auth_backend="cyrus",
                   auth_cyrus_config_dir=cyrus_sasldb("example.test", ("b", "c"), PASSWORD),
                   **console_settings()).start()


def user(g, address, password=PASSWORD):
    w = Web(g)
    status, h, text = w.request("POST", "/my/login", {"user": address, "password": password})
    return w, status, h, text


def csrf_of(w):
    status, _, text = w.request("GET", "/my/")
    return re.search(r'name="csrf" value="([0-9a-f]{64})"', text).group(1)


def held(w):
    status, _, text = w.request("GET", "/my/api/quarantine")
    assert status == 200, text
    return [m["id"] for m in json.loads(text)]


def test_users_see_and_act_on_their_own_copies_only():
    sink = Sink(addr(2))
    g = gateway(sink)
    both = queue_id(send_mail(g, rcpts=("b@example.test", "c@example.test"), sender="spammer@evil.test",
                              headers="Subject: cheap pills\r\n"))
    only_b = queue_id(send_mail(g, rcpts=("b@example.test",), sender="spammer@evil.test",
                                headers="Subject: b only\r\n"))
    wait_for(lambda: g.log().count("status=quarantined (spam quarantine") == 3, 10, "three held copies")
    # logins: the mail password, a mail address
    assert user(g, "b@example.test", "wrong")[1] == 403
    assert "log in with your mail address" in user(g, "b", PASSWORD)[3]
    b, status, h, _ = user(g, "b@example.test")
    assert status == 303 and h["location"] == "/my/", (status, h)
    c, status, _, _ = user(g, "c@example.test")
    assert status == 303
    assert sorted(held(b)) == sorted([both, only_b]) and held(c) == [both]
    # a user is not an admin
    assert b.request("GET", "/api/queue")[0] == 403
    status, h, _ = b.request("GET", "/")
    assert status == 303 and h["location"] == "/my/"
    # IDOR: c names b's message, in the URL, the form, and as someone else
    c_csrf = csrf_of(c)
    assert c.request("GET", "/my/message?id=" + only_b)[0] == 404
    assert c.request("POST", "/my/action", {"id": only_b, "op": "release", "csrf": c_csrf})[0] == 404
    assert c.request("POST", "/my/action", {"id": only_b, "op": "release", "as": "b@example.test",
                                            "csrf": c_csrf})[0] == 404
    assert c.request("GET", "/my/message?id=0123456789ABCDEF")[0] == 404     # the same answer as a foreign ID
    assert c.request("POST", "/my/action", {"id": both, "op": "release"})[0] == 403    # no CSRF token
    # b releases their copy: delivered to b alone, c's stays held
    b_csrf = csrf_of(b)
    status, _, text = b.request("GET", "/my/message?id=" + both)
    assert status == 200 and "Subject: cheap pills" in text
    assert b.request("POST", "/my/action", {"id": both, "op": "release", "csrf": b_csrf})[0] == 303
    msgs = sink.wait_count(1)
    assert sink_rcpts(msgs[0]) == [b"b@example.test"] and b"cheap pills" in msgs[0]
    assert held(c) == [both] and held(b) == [only_b]
    # release and always allow: the next message from that sender comes straight through to b
    assert b.request("POST", "/my/action", {"id": only_b, "op": "allow", "csrf": b_csrf})[0] == 303
    sink.wait_count(2)
    status, _, text = b.request("GET", "/my/lists")
    assert "spammer@evil.test" in text and "allow" in text
    assert "queued as" in send_mail(g, rcpts=("b@example.test",), sender="spammer@evil.test", headers="Subject: ok\r\n")
    sink.wait_count(3)
    assert held(b) == []
    # block: the copy goes, and the next message from that sender is refused at RCPT for b
    other = queue_id(send_mail(g, rcpts=("b@example.test",), sender="other@evil2.test", headers="Subject: x\r\n"))
    wait_for(lambda: held(b) == [other], 10, "the third hold")
    assert b.request("POST", "/my/action", {"id": other, "op": "block", "csrf": b_csrf})[0] == 303
    wait_for(lambda: other not in g.queue_files(), 10, "the blocked copy to go")
    assert send_mail(g, rcpts=("b@example.test",), sender="other@evil2.test").startswith("550 5.7.1")
    # lists by hand, with bad input refused
    assert b.request("POST", "/my/lists", {"op": "block", "pattern": "@junk.test", "csrf": b_csrf})[0] == 303
    assert b.request("POST", "/my/lists", {"op": "block", "pattern": "not an address", "csrf": b_csrf})[0] == 400
    status, _, text = b.request("GET", "/my/lists")
    assert "@junk.test" in text and "other@evil2.test" in text
    # login rate limits: five failures for a user lock that user out for a while (the right password too)
    for _ in range(5):
        assert user(g, "c@example.test", "wrong")[1] == 403
    assert "too many failed logins" in user(g, "c@example.test")[3]
    assert user(g, "b@example.test")[1] == 303          # another user is not affected
    # an admin may act for a user
    a = Web(g)
    assert a.login("admin", "correct horse battery")[0] == 303
    status, _, text = a.request("GET", "/my/api/quarantine?as=c@example.test")
    assert status == 200 and [m["id"] for m in json.loads(text)] == [both]
    g.stop()


PEOPLE = """dn: uid=dana,dc=corp,dc=test
objectClass: inetOrgPerson
uid: dana
cn: Dana
sn: D
mail: dana@example.test
userPassword: dana pass phrase

dn: uid=twin1,dc=corp,dc=test
objectClass: inetOrgPerson
uid: twin1
cn: Twin
sn: T
mail: twin@example.test
userPassword: twin pass

dn: uid=twin2,dc=corp,dc=test
objectClass: inetOrgPerson
uid: twin2
cn: Twin
sn: T
mail: twin@example.test
userPassword: twin pass
"""


def test_ldap_bind_logins():
    """user_login = ldap: the entry is found with rcpt_verify's LDAP
    settings (service bind, StartTLS) and bound as with the typed password;
    an empty password, an unknown address, a filter injection and an address
    two entries share are refused; a directory down refuses and is logged."""
    sink = Sink(addr(2))
    slapd = Slapd(addr(5), PEOPLE).start()
    script = readable_file("hold.lua", 'postern.on("eom", function(tx)\n'
                           '  for _, r in ipairs(tx:recipients()) do tx:spam_quarantine(r, "score 12") end\nend)\n')
    ldap = {"rcpt_verify.ldap_uri": slapd.uri(), "rcpt_verify.ldap_base": "dc=corp,dc=test",
            "rcpt_verify.ldap_filter": "(mail=%s)", "rcpt_verify.ldap_bind_dn": "cn=reader,dc=corp,dc=test",
            "rcpt_verify.ldap_bind_password_file": readable_file("ldap-pw", "reader-secret\n"),
            "rcpt_verify.ldap_starttls": "yes", "rcpt_verify.ldap_ca_file": slapd.ca}
    g = Gateway(sink=sink, plugins="lua:" + script, user_login="ldap", **ldap, **console_settings()).start()
    qid = queue_id(send_mail(g, rcpts=("dana@example.test",), sender="x@spam.test"))
    wait_for(lambda: "status=quarantined (spam quarantine" in g.log(), 10, "the hold")
    for who, pw in (("dana@example.test", "wrong"), ("dana@example.test", ""), ("nobody@example.test", "x"),
                    ("*@example.test", "dana pass phrase"), ("twin@example.test", "twin pass")):
        assert user(g, who, pw)[1] == 403, (who, pw)
    assert "finds more than one entry" in g.log()
    w, status, h, _ = user(g, "DANA@example.test", "dana pass phrase")
    assert status == 303 and h["location"] == "/my/", (status, h)
    assert held(w) == [qid]
    slapd.stop()
    assert user(g, "dana@example.test", "dana pass phrase")[1] == 403
    assert re.search(r"console: LDAP ldap://[^ ]+: Can't contact LDAP server", g.log()), g.log()[-2000:]
    g.stop()
    # user_login = ldap without the LDAP settings stops start-up, saying what is missing
    bad = Gateway(sink=sink, plugins="lua:" + script, user_login="ldap", **console_settings())
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", bad.conf, "-t"], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode != 0 and "user_login = ldap needs rcpt_verify.ldap_uri" in r.stdout + r.stderr, r


def test_the_flow_in_chromium():
    if not os.path.exists(CHROMEDRIVER):
        skip("chromium-driver is not installed")
    sink = Sink(addr(2))
    g = gateway(sink)
    qid = queue_id(send_mail(g, rcpts=("b@example.test",), sender="spammer@evil.test",
                             headers="Subject: <b>bold</b> offer\r\n", body="<script>alert(1)</script>\r\n"))
    wait_for(lambda: "status=quarantined (spam quarantine" in g.log(), 10, "the hold")
    br = Browser()
    base = "https://%s:9443" % g.host
    br.go(base + "/my/login")
    br.type(br.find("#user"), "b@example.test")
    br.type(br.find("#password"), PASSWORD)
    br.click(br.find("#login"))
    wait_for(lambda: "1 message(s) held for you" in br.page(), 10, "the user's quarantine")
    assert "<b>bold</b> offer" in br.text(br.find("#held")) and not br.finds("#held b")
    br.screenshot(os.path.join(ARTIFACTS, "user-quarantine.png"))
    br.click(br.find("#held a"))
    wait_for(lambda: "A held message" in br.page(), 10, "the preview")
    assert "<script>alert(1)</script>" in br.text(br.find("#text")) and not br.finds("#text script")
    br.go(base + "/my/")
    br.click(br.find(".op-release"))
    wait_for(lambda: "0 message(s) held for you" in br.page(), 10, "the release")
    assert sink_rcpts(sink.wait_count(1)[0]) == [b"b@example.test"]
    br.screenshot(os.path.join(ARTIFACTS, "user-quarantine-released.png"))
    br.quit()
    assert qid not in g.queue_files()
    g.stop()


run_tests(globals())
