"""Spam quarantine digests: `postern digest` sends each recipient with newly
held copies one message through the queue (to a recording next hop),
listing only their own held mail (sender, subject, why; never the body),
as text and HTML, with signed links; a link confirms (GET) and acts once
(POST): the release reaches that recipient only, a second use and a changed
token are refused; the "your quarantine" link opens the recipient's pages;
a domain in digest_off_domains gets none; a second run lists only what was
held since."""
import email
import json
import urllib.parse
from harness import *


def gateway(sink, **extra):
    # mail from evil senders is held for every recipient
    script = readable_file("spam.lua",
                           'postern.on("eom", function(tx)\n'
                           '  if not tx:sender():match("evil") then return end\n'
                           '  for _, r in ipairs(tx:recipients()) do\n'
                           '    tx:spam_quarantine(r, "spam score 9.5")\n'
                           '  end\nend)\n')
    settings = console_settings()
    return Gateway(sink=sink, plugins="lua:" + script, digest_url="https://%s:9443" % addr(1), **settings,
                   **extra).start()


def digest_of(sink, rcpt):
    """The digest sent to rcpt: (text part, html part)."""
    for raw in sink.messages():
        if b"Subject: Spam quarantine:" in raw and ("X-Rcpt-Args: <%s>" % rcpt).encode() in raw:
            m = email.message_from_bytes(raw.split(b"\n\n", 0)[0] if False else raw)
            parts = {p.get_content_type(): p.get_payload(decode=True).decode() for p in m.walk()
                     if p.get_content_maintype() == "text"}
            return parts["text/plain"], parts["text/html"]
    return None


def links(text, label):
    return re.findall(r"%s: (https://\S+)" % re.escape(label), text)


def test_digest_links_act_once_for_their_recipient_only():
    sink = Sink(addr(2))
    g = gateway(sink, digest_off_domains="quiet.test")
    q1 = queue_id(send_mail(g, rcpts=("b@example.test", "c@example.test"), sender="spammer@evil.test",
                            headers="Subject: <i>cheap</i> pills\r\n", body="SECRET BODY WORDS\r\n"))
    q2 = queue_id(send_mail(g, rcpts=("b@example.test",), sender="other@evil.test", headers="Subject: for b\r\n"))
    queue_id(send_mail(g, rcpts=("q@quiet.test",), sender="spammer@evil.test", headers="Subject: quiet\r\n"))
    wait_for(lambda: g.log().count("status=quarantined (spam quarantine") == 4, 10, "four held copies")
    r = subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "digest"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0 and "digests for 3 new held copies" in r.stdout, r.stdout + r.stderr
    wait_for(lambda: digest_of(sink, "b@example.test") and digest_of(sink, "c@example.test"), 15, "two digests")
    b_text, b_html = digest_of(sink, "b@example.test")
    c_text, _ = digest_of(sink, "c@example.test")
    assert "<i>cheap</i> pills" in b_text and "for b" in b_text and "spam score 9.5" in b_text, b_text
    assert "&lt;i&gt;cheap&lt;/i&gt; pills" in b_html and "<i>" not in b_html
    assert "for b" not in c_text and "cheap" in c_text          # c sees only c's own
    assert "SECRET BODY" not in b_text + b_html + c_text       # never a word of the body
    assert digest_of(sink, "q@quiet.test") is None
    # a release link: GET confirms (changes nothing), POST acts, once, for b only
    release = [l for l in links(b_text, "Release") if True][0]
    w = Web(g)
    path = release.split("9443", 1)[1]
    status, _, page = w.request("GET", path)
    assert status == 200 and "Confirm" in page and "held for b@example.test" in page, page[-800:]
    token = urllib.parse.parse_qs(urllib.parse.urlparse(release).query)["t"][0]
    before = sink.count()
    status, _, page = w.request("POST", "/my/link", {"t": token})
    assert status == 200 and "Done" in page, page[-500:]
    wait_for(lambda: sink.count() == before + 1, 10, "the released copy")
    released = [m for m in sink.messages() if b"pills" in m and b"Spam quarantine" not in m]
    assert [sink_rcpts(m) for m in released] == [[b"b@example.test"]]
    status, _, page = w.request("POST", "/my/link", {"t": token})
    assert status in (200, 409) and "Done" not in page, page      # used (or no longer held): nothing again
    # a changed token is refused
    payload, mac = token.split(".")
    forged = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1] + "." + mac
    assert w.request("POST", "/my/link", {"t": forged})[0] == 403
    assert w.request("GET", "/my/link?t=" + urllib.parse.quote(forged))[0] == 403
    # the pages link: c's quarantine, as c
    pages = re.search(r"Your quarantine: (https://\S+)", c_text).group(1)
    c = Web(g)
    status, h, _ = c.request("GET", pages.split("9443", 1)[1])
    assert status == 303 and h["location"] == "/my/"
    status, _, text = c.request("GET", "/my/api/quarantine")
    assert status == 200 and [m["id"] for m in json.loads(text)] == [q1]
    # a second run: only what was held since
    q3 = queue_id(send_mail(g, rcpts=("b@example.test",), sender="third@evil.test", headers="Subject: later\r\n"))
    wait_for(lambda: ("%s: to=<b@example.test>, status=quarantined" % q3) in g.log(), 10, "the later hold")
    r = subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "digest"], capture_output=True, text=True,
                       timeout=30)
    assert "digests for 1 new held copies" in r.stdout, r.stdout
    assert q2 in g.queue_files()
    g.stop()


def test_the_daily_timer():
    """digest_time: a node whose last run (digest.last) was yesterday sends
    the digests once today's time has passed, by itself; a restart after it
    sends none again; a first start past the time waits for tomorrow."""
    sink = Sink(addr(2))
    now = time.gmtime()
    passed = "%02d:%02d" % (now.tm_hour, now.tm_min) if now.tm_hour or now.tm_min else "00:00"
    g = gateway(sink, digest_time=passed, log_level="info")
    queue_id(send_mail(g, rcpts=("b@example.test",), sender="spammer@evil.test", headers="Subject: timed\r\n"))
    wait_for(lambda: "status=quarantined (spam quarantine" in g.log(), 10, "the hold")
    time.sleep(0.5)
    assert "digest:" not in g.log(), "a first start past digest_time waits for tomorrow"
    g.stop()
    last = os.path.join(g.spool, "digest.last")
    with open(last, "w") as f:
        f.write("%d\n" % (time.time() - 86400))
    st = os.stat(g.spool)
    os.chown(last, st.st_uid, st.st_gid)
    g.start()
    wait_for(lambda: digest_of(sink, "b@example.test"), 15, "the timed digest: " + g.log()[-3000:])
    assert "timed" in digest_of(sink, "b@example.test")[0]
    assert g.log().count("digest(s) queued") == 1
    assert int(open(last).read()) >= time.time() - 60, "the run is recorded"
    g.stop()
    g.start()
    time.sleep(0.5)
    assert g.log().count("digest(s) queued") == 1, "a restart after today's run sends none again"
    g.stop()


run_tests(globals())
