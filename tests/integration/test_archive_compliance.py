"""Archive compliance (issue 40): legal holds that outlive retention, the
audit trail (chained, checked by verify), and retention by rule, against a
running posternd with the archive plugin."""
import base64
from harness import *

PLUGDIR = os.path.join(BUILD, "plugins")


def writable_dir():
    d = tempfile.mkdtemp(prefix="archcomp-")
    os.chmod(d, 0o777)        # the daemon's user writes in it
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


def postern(conf, *args, env=None):
    r = subprocess.run([os.path.join(BUILD, "postern"), "-c", conf, "archive", *args], capture_output=True,
                       text=True, timeout=120, env=env)
    assert "AddressSanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr
    return r


def chain(adir):
    return [l.split() for l in open(os.path.join(adir, "chain"))]


def copies(adir):
    """Queue IDs of the copies still on disk."""
    return {os.path.basename(p)[:-4] for p in glob.glob(os.path.join(adir, "*", "*.eml"))}


def expired(adir):
    return {l[1].rsplit("/", 1)[1][:-4] for l in chain(adir) if l[1].startswith("expired@")}


def test_a_hold_outlives_retention_and_its_release_lets_it_go():
    sink = Sink(addr(2))
    adir = os.path.join(writable_dir(), "archive")
    g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="archive",
                **{"archive.dir": adir, "archive.retention": "4s", "archive.expire_every": "1s"}).start()
    # one held copy's Subject is RFC 2047 encoded: search, the hold and expiry read it decoded
    encoded = "=?UTF-8?B?%s?=" % base64.b64encode("Projekt Falcon für März".encode()).decode()
    held = [queue_id(send_mail(g, headers="Subject: %s\r\n" % subject))
            for subject in ("Project Falcon 0", encoded)]
    to_names = ("To: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <jm@example.test>\r\n", "")   # an encoded display name
    plain = [queue_id(send_mail(g, headers="Subject: lunch %d\r\n%s" % (i, to_names[i]))) for i in range(2)]
    counsel = queue_id(send_mail(g, rcpts=("counsel@example.test",), headers="Subject: advice\r\n"))
    wait_for(lambda: copies(adir) >= set(held + plain + [counsel]), 10, "five archived copies")
    index = lambda: open(os.path.join(adir, "index")).read()
    wait_for(lambda: all(q in index() for q in held + plain + [counsel]), 10, "the index lines")
    r = postern(g.conf, "search", "--subject", "für märz")
    assert r.returncode == 0 and held[1] in r.stdout and "Projekt Falcon für März" in r.stdout, r.stdout + r.stderr
    assert held[0] not in r.stdout
    r = postern(g.conf, "search", "--to", "Jürgen Müller")
    assert r.returncode == 0 and plain[0] in r.stdout and "1 message(s) found" in r.stdout, r.stdout + r.stderr
    r = postern(g.conf, "hold", "falcon", "--subject", "falcon")
    assert r.returncode == 0 and "2 archived message(s) match now" in r.stdout, r.stdout + r.stderr
    r = postern(g.conf, "hold", "litigation-7", "--rcpt", "counsel@", "--ongoing")
    assert r.returncode == 0 and "1 archived message(s) match now" in r.stdout, r.stdout + r.stderr
    assert postern(g.conf, "hold", "falcon", "--subject", "x").returncode == 1       # the name stands
    # mail after the holds: a falcon copy (not covered: that hold is not ongoing) and counsel's (covered)
    late_falcon = queue_id(send_mail(g, headers="Subject: Project Falcon late\r\n"))
    late_counsel = queue_id(send_mail(g, rcpts=("counsel@example.test",), headers="Subject: more advice\r\n"))
    wait_for(lambda: set(plain + [late_falcon]) <= expired(adir), 20, "the neighbours' expiry")
    time.sleep(1.5)               # another pass or more: the held copies stay
    assert set(held + [counsel, late_counsel]) <= copies(adir), (copies(adir), expired(adir))
    assert not set(held + [counsel, late_counsel]) & expired(adir)
    assert "keeping" in g.log() and "legal hold falcon" in g.log(), g.log()[-2000:]
    r = postern(g.conf, "hold", "list")
    assert r.returncode == 0 and "falcon" in r.stdout and "litigation-7" in r.stdout and "ongoing" in r.stdout, r.stdout
    assert "2 hold(s) standing" in r.stdout, r.stdout
    # a release is explicit and recorded; the next pass removes falcon's copies
    assert postern(g.conf, "hold", "release", "nosuch").returncode == 1
    r = postern(g.conf, "hold", "release", "falcon")
    assert r.returncode == 0 and "recorded as chain link" in r.stdout, r.stdout + r.stderr
    wait_for(lambda: set(held) <= expired(adir), 10, "falcon's copies going after the release")
    assert {counsel, late_counsel} <= copies(adir)
    r = postern(g.conf, "hold", "list", "--all")
    assert "falcon" in r.stdout and "released" in r.stdout and r.stdout.splitlines()[-1] == "2 hold(s)", r.stdout
    # every hold and release is a chain link, and verify checks them
    actions = [l[1].split("/")[1] for l in chain(adir) if l[1].startswith("audit@")]
    assert actions.count("hold") == 2 and actions.count("release") == 1, actions
    r = postern(g.conf, "verify")
    assert r.returncode == 0 and "archive ok:" in r.stdout, r.stdout + r.stderr
    g.stop()


def test_the_audit_trail_records_who_and_verify_misses_no_removed_record():
    sink = Sink(addr(2))
    adir = os.path.join(writable_dir(), "archive")
    g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="archive", **{"archive.dir": adir}).start()
    qid = queue_id(send_mail(g, headers="Subject: quarterly numbers\r\n"))
    wait_for(lambda: qid in copies(adir), 10, "the archived copy")
    wait_for(lambda: os.path.exists(os.path.join(adir, "index")) and qid in open(os.path.join(adir, "index")).read(),
             10, "its index line")
    env = dict(os.environ, SUDO_USER="carol")
    r = postern(g.conf, "search", "--subject", "quarterly", env=env)
    assert r.returncode == 0 and "1 message(s) found" in r.stdout, r.stdout + r.stderr
    out = os.path.join(writable_dir(), "export.mbox")
    assert postern(g.conf, "export", "--subject", "quarterly", "--mbox", out, env=env).returncode == 0
    assert postern(g.conf, "verify").returncode == 0
    r = postern(g.conf, "audit")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    search = [l for l in lines if "  search  " in l]
    export = [l for l in lines if "  export  " in l]
    assert search and "root via sudo by carol" in search[0] and "subject=quarterly" in search[0] and \
        "found=1" in search[0], lines
    assert export and "exported=1" in export[0] and out in export[0] and "cli " in export[0], lines
    assert any("  verify  " in l and "problems=0" in l for l in lines), lines
    r = postern(g.conf, "audit", "--action", "export")
    assert r.stdout.splitlines()[-1] == "1 record(s)", r.stdout
    r = postern(g.conf, "audit", "--user", "nobody-here")
    assert r.stdout.splitlines()[-1] == "0 record(s)", r.stdout
    # the daemon's user could edit the trail: verify says so
    path = os.path.join(adir, "audit")
    records = open(path).read().splitlines(True)
    with open(path, "w") as f:
        f.writelines(l for l in records if "\texport\t" not in l)
    r = postern(g.conf, "verify")
    assert r.returncode == 1 and "MISSING audit record" in r.stdout and "NOT intact" in r.stdout, r.stdout
    with open(path, "w") as f:
        f.writelines(l.replace("found=1", "found=0") for l in records)
    r = postern(g.conf, "verify")
    assert r.returncode == 1 and "CHANGED audit record" in r.stdout, r.stdout
    g.stop()


def test_console_search_and_export_by_a_reviewer_are_in_the_trail_and_queue_changes_too():
    sink = Sink(addr(2))
    d = tempfile.mkdtemp(prefix="archcons-")
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    certs = make_certs(["gw.postern.test"])
    crt, key = (os.path.join(certs[0], "gw.postern.test" + e) for e in (".crt", ".key"))
    users = console_users(d, ("boss", "correct horse battery", "admin"), ("rita", "reads everything", "reviewer"),
                          ("viewer", "just looking", "readonly"))
    adir = os.path.join(writable_dir(), "archive")
    g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="header_checks archive", http_listen="%s:9443" % addr(1),
                http_users=users, tls_cert=crt, tls_key=key,
                **{"archive.dir": adir, "header_checks.rule": "/^Subject: quarantine me/ QUARANTINE suspicious"}).start()
    qid = queue_id(send_mail(g, rcpts=("cfo@example.test", "hidden@example.test"),
                             headers="Subject: quarterly numbers\r\n"))
    held = queue_id(send_mail(g, headers="Subject: quarantine me\r\n"))
    wait_for(lambda: os.path.exists(os.path.join(adir, "index")) and qid in open(os.path.join(adir, "index")).read(),
             10, "the archived copy's index line")
    # the reviewer searches and exports
    rita = Web(g)
    rita.login("rita", "reads everything")
    status, _, text = rita.request("GET", "/archive?go=1&subject=quarterly")
    assert status == 200 and "1 message(s) found" in text and qid in text and "hidden@example.test" in text, text[-800:]
    csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', text).group(1)
    status, h, mbox = rita.request("POST", "/archive/export", {"csrf": csrf, "subject": "quarterly"})
    assert status == 200 and h["content-type"] == "application/mbox" and "attachment" in h["content-disposition"]
    assert mbox.startswith("From alice@src.test ") and "X-Postern-Envelope-To: <hidden@example.test>" in mbox, mbox[:600]
    assert rita.request("POST", "/archive/export", {"subject": "quarterly"})[0] == 403          # no CSRF token
    status, _, j = rita.request("GET", "/api/archive?rcpt=hidden")
    assert status == 200 and json.loads(j)["found"] == 1, j
    # a Subject in raw 8-bit bytes that are not UTF-8: listed, the byte shown as U+FFFD
    c = Client(g.host)
    for line in ("EHLO client.test", "MAIL FROM:<alice@src.test>", "RCPT TO:<x@example.test>", "DATA"):
        c.cmd(line)
    c.send(b"Subject: caf\xe9 budget\r\n\r\nhello\r\n")
    raw = queue_id(c.cmd("."))
    c.close()
    wait_for(lambda: raw.encode() in open(os.path.join(adir, "index"), "rb").read(), 10, "the 8-bit copy's index line")
    listed = json.loads(rita.request("GET", "/api/archive?subject=budget")[2])
    assert listed["found"] == 1 and [m["subject"] for m in listed["messages"]] == ["caf\ufffd budget"], listed
    # a reviewer may not change the queue; a read-only user may not see the archive
    assert rita.request("POST", "/action", {"id": held, "op": "release", "csrf": csrf})[0] == 403
    viewer = Web(g)
    viewer.login("viewer", "just looking")
    assert viewer.request("GET", "/archive?go=1")[0] == 403
    # the admin releases the held message from the console
    boss = Web(g)
    boss.login("boss", "correct horse battery")
    status, _, _ = boss.request("POST", "/action", {"id": held, "op": "release", "csrf": boss.csrf()})
    assert status == 303, status
    sink.wait_count(2)
    # all of it in the trail, with who and from where
    r = postern(g.conf, "audit", "--user", "rita")
    lines = r.stdout.splitlines()
    assert any("  export  " in l and "console %s" % addr(1) not in l and "console 127." in l and "exported=1" in l
               and "subject=quarterly" in l for l in lines), lines
    assert sum("  search  " in l for l in lines) == 3 and lines[-1] == "4 record(s)", lines
    r = postern(g.conf, "audit", "--action", "queue-release")
    assert "boss" in r.stdout and held in r.stdout and "result=done" in r.stdout, r.stdout
    # and from the CLI
    r = subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "queue", "hold", qid], capture_output=True,
                       text=True, timeout=30)
    r = postern(g.conf, "audit", "--action", "queue-hold")
    assert "root" in r.stdout and qid in r.stdout and "cli " in r.stdout, r.stdout
    assert postern(g.conf, "verify").returncode == 0
    g.stop()


ORIGINAL = ("From: CFO <cfo@contoso.test>\r\nTo: ceo@contoso.test\r\nCc: board@contoso.test\r\n"
            "To: deputy@contoso.test\r\n"
            "Subject: Quarterly results\r\nMessage-ID: <orig-1@contoso.test>\r\n\r\nThe numbers, before anyone.\r\n")


def journal_report(envelope_lines, original=ORIGINAL):
    """An envelope journal report as Exchange and Microsoft 365 send it: the
    X-MS-Journal-Report header, a text part listing the envelope one field
    a line, and the original attached unaltered as message/rfc822."""
    headers = ("From: Microsoft Exchange <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@contoso.test>\r\n"
               "To: journal@example.test\r\nSubject: Quarterly results\r\nMessage-ID: <report-1@contoso.test>\r\n"
               "X-MS-Journal-Report: \r\nMIME-Version: 1.0\r\n"
               "Content-Type: multipart/mixed; boundary=\"_journal_\"\r\n")
    body = ("--_journal_\r\nContent-Type: text/plain; charset=\"us-ascii\"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
            + "".join(l + "\r\n" for l in envelope_lines) +
            "\r\n--_journal_\r\nContent-Type: message/rfc822\r\n\r\n" + original + "\r\n--_journal_--\r\n")
    return headers, body


def test_an_exchange_journal_report_is_archived_as_its_original_with_the_bcc():
    sink = Sink(addr(2))
    adir = os.path.join(writable_dir(), "archive")
    g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="archive",
                **{"archive.dir": adir, "archive.journal_reports": "unwrap",
                   "archive.journal_from": "%s/32, 2001:db8::/32" % addr(7)}).start()
    headers, body = journal_report(["Sender: cfo@contoso.test", "Subject: Quarterly results",
                                    "Message-Id: <orig-1@contoso.test>", "To: ceo@contoso.test",
                                    "Cc: member@contoso.test, Expanded: board@contoso.test",
                                    "Bcc: auditor@contoso.test",
                                    "To: assistant@contoso.test, Forwarded: ceo-old@contoso.test",
                                    "Recipient: unverified@contoso.test"])
    rep = send_mail(g, rcpts=("journal@example.test",), headers=headers, body=body, sender="", source=addr(7))
    qid = queue_id(rep)
    wait_for(lambda: "journal report of <cfo@contoso.test>" in g.log(), 10, "the report unwrapped")
    copy = open(glob.glob(os.path.join(adir, "*", qid + ".eml"))[0], "rb").read().decode()
    env, original = copy.split("From: CFO", 1)
    assert ("From: CFO" + original).rstrip("\r\n") == ORIGINAL.rstrip("\r\n"), original     # unaltered
    assert "X-Postern-Envelope-From: <cfo@contoso.test>" in env, env
    for rcpt in ("ceo", "member", "auditor", "assistant", "unverified"):
        assert "X-Postern-Envelope-To: <%s@contoso.test>" % rcpt in env, env
    assert "X-Postern-Journal-Recipient: Bcc <auditor@contoso.test>" in env
    assert "X-Postern-Journal-Recipient: Cc <member@contoso.test>; Expanded <board@contoso.test>" in env
    assert "X-Postern-Journal-Recipient: To <assistant@contoso.test>; Forwarded <ceo-old@contoso.test>" in env
    assert "journal@example.test" not in env          # the report's own envelope is not the message's
    time.sleep(0.5)
    assert sink.count() == 0                         # an archive target: the report goes no further
    r = postern(g.conf, "search", "--rcpt", "auditor@contoso.test")
    assert r.returncode == 0 and qid in r.stdout and "Quarterly results" in r.stdout, r.stdout + r.stderr
    r = postern(g.conf, "search", "--to", "deputy@contoso.test")      # the original's second To field
    assert r.returncode == 0 and qid in r.stdout, r.stdout + r.stderr
    # a report from elsewhere is mail like any other: archived as it came, and relayed
    headers2, body2 = journal_report(["Sender: forger@evil.test", "To: ceo@contoso.test"])
    other = queue_id(send_mail(g, rcpts=("journal@example.test",), headers=headers2, body=body2, source=addr(8)))
    sink.wait_count(1)
    copy = open(glob.glob(os.path.join(adir, "*", other + ".eml"))[0], newline="").read()
    assert "X-Postern-Envelope-To: <journal@example.test>" in copy and "forger@evil.test" not in copy.split("\r\n\r\n")[0]
    # a report that cannot be read is kept as it is, never lost
    headers3, body3 = journal_report(["Sender: not an address", "To: ceo@contoso.test"])
    bad = queue_id(send_mail(g, rcpts=("journal@example.test",), headers=headers3, body=body3, source=addr(7)))
    wait_for(lambda: "cannot be read" in g.log(), 10, "the unreadable report")
    # logged before it is archived as it came: wait for the copy
    wait_for(lambda: glob.glob(os.path.join(adir, "*", bad + ".eml")), 10, "the unreadable report's copy")
    assert postern(g.conf, "verify").returncode == 0
    g.stop()
    broken = readable_file("bad.conf", open(g.conf).read().replace("%s/32, 2001:db8::/32" % addr(7), "10.0.0.0/99"))
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", broken, "-t"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "journal_from" in r.stdout + r.stderr, r.stdout + r.stderr


def test_retention_by_rule_first_match_wins():
    sink = Sink(addr(2))
    adir = os.path.join(writable_dir(), "archive")
    rules = readable_file("retention", "# periods\nsender @short.test 2s\ndomain keep.test forever\n"
                                       "rcpt @short.test 2s\n")
    g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="archive",
                **{"archive.dir": adir, "archive.retention": "1h", "archive.expire_every": "1s",
                   "archive.retention_rules": rules}).start()
    short = queue_id(send_mail(g, sender="news@short.test"))
    first = queue_id(send_mail(g, sender="x@short.test", rcpts=("y@keep.test",)))   # the sender rule comes first
    kept = queue_id(send_mail(g, rcpts=("y@KEEP.test", "z@short.test")))            # the domain rule does
    to_short = queue_id(send_mail(g, rcpts=("z@short.test",)))
    default = queue_id(send_mail(g))
    wait_for(lambda: {short, first, to_short} <= expired(adir), 15, "the 2 s copies' expiry")
    time.sleep(1.5)
    assert {default, kept} <= copies(adir) and not {default, kept} & expired(adir)
    g.stop()
    bad = readable_file("bad-retention", "domain keep.test 7 years\n")
    bad_conf = readable_file("bad.conf", open(g.conf).read().replace(rules, bad))
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", bad_conf, "-t"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0 and "line 1" in r.stdout + r.stderr, r.stdout + r.stderr


run_tests(globals())
