"""Sender authentication against a real DNS server (unbound with test
zones): SPF (every result, the null sender's HELO check, the per-result
action and its Lua override), DKIM verify (pass, body changed, header
changed, no key; RSA and Ed25519), DKIM sign, DMARC (pass, fail, alignment),
the one Authentication-Results header, and interop both ways with the real
OpenDKIM milter inside a real Postfix."""
from harness import *

PLUGDIR = os.path.join(BUILD, "plugins")
# libspf2 passes every loopback client ("localhost is always allowed"), so
# the tests present a documentation address with XCLIENT, as a proxy would.
CLIENT = "198.51.100.7"
NET_CIDR = "198.51.100.0/24"


def spf_zone():
    return ['pass.test. TXT "v=spf1 ip4:%s -all"' % NET_CIDR,
            'fail.test. TXT "v=spf1 ip4:192.0.2.1 -all"',
            'soft.test. TXT "v=spf1 ip4:192.0.2.1 ~all"',
            'neutral.test. TXT "v=spf1 ?all"',
            'none.test. A 192.0.2.7',
            'perm.test. TXT "v=spf1 ip4:192.0.2.1 frobnicate:x -all"',
            'viamx.test. TXT "v=spf1 mx -all"', "viamx.test. MX 10 mail.viamx.test.",
            "mail.viamx.test. A %s" % CLIENT,
            'helo.client.test. TXT "v=spf1 ip4:%s -all"' % NET_CIDR,
            'strictspf.test. TXT "v=spf1 ip4:%s -all"' % NET_CIDR,
            '_dmarc.strictspf.test. TXT "v=DMARC1; p=reject; aspf=s"']


def auth_gw(sink, dns, plugins, **conf):
    return Gateway(sink=sink, plugin_dir=PLUGDIR, plugins=plugins, dns_server=dns.address(),
                   xclient_networks="127.0.0.0/8", **conf).start()


def mail_reply(g, sender, helo="client.test"):
    c = presented(g, CLIENT, helo)
    rep = c.cmd("MAIL FROM:<%s>" % sender)
    c.close()
    return rep


def transaction(g, sender, message, rcpts=("x@example.test",), helo="client.test"):
    """A whole transaction from the presented client; the first refusal or the final reply."""
    c = presented(g, CLIENT, helo)
    for line in ["MAIL FROM:<%s>" % sender] + ["RCPT TO:<%s>" % r for r in rcpts]:
        rep = c.cmd(line)
        if not rep.startswith("250"):
            return rep
    assert c.cmd("DATA").startswith("354")
    c.send(message)
    rep = c.cmd(".")
    c.close()
    return rep


def test_spf_every_result_and_its_default_action():
    sink = Sink(addr(2))
    dns = DnsServer(spf_zone(), refuse=["temp.test"])
    g = auth_gw(sink, dns, "spf")
    expect = {"pass.test": ("pass", "250"), "fail.test": ("fail", "550 5.7.23"), "soft.test": ("softfail", "250"),
              "neutral.test": ("neutral", "250"), "none.test": ("none", "250"), "perm.test": ("permerror", "250"),
              "temp.test": ("temperror", "451 4.7.24"), "viamx.test": ("pass", "250")}
    for domain, (result, code) in expect.items():
        rep = mail_reply(g, "alice@" + domain)
        assert rep.startswith(code), (domain, rep)
        assert re.search(r"spf: %s for mailfrom=%s from %s" % (result, re.escape(domain), re.escape(CLIENT)),
                         g.log()), (domain, g.log()[-1500:])
    g.stop()


def test_spf_null_sender_checks_helo_and_actions_are_configurable():
    sink = Sink(addr(2))
    dns = DnsServer(spf_zone())
    g = auth_gw(sink, dns, "spf", **{"spf.softfail": "reject", "spf.fail": "quarantine"})
    assert mail_reply(g, "", helo="helo.client.test").startswith("250")
    assert "spf: pass for helo=helo.client.test" in g.log()
    assert mail_reply(g, "a@soft.test").startswith("550 5.7.23 SPF softfail")
    r = transaction(g, "a@fail.test", "Subject: q\r\n\r\nx\r\n")     # quarantined: 250, then held
    assert r.startswith("250"), r
    qid = queue_id(r)
    wait_for(lambda: qid in g.queue_files(), 5, "held message")
    time.sleep(0.3)
    assert sink.count() == 0
    g.stop()
    bad = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="spf", **{"spf.fail": "bounce"})
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", bad.conf, "-t"], capture_output=True, text=True)
    # posternd checks the value against the options spf declares, naming file:line
    assert r.returncode != 0 and "%s:" % bad.conf in r.stderr and \
        "spf.fail = bounce: not one of the choices continue|reject|tempfail|quarantine" in r.stderr, r.stderr


def test_spf_result_reaches_lua_which_may_override_the_action():
    sink = Sink(addr(2))
    dns = DnsServer(spf_zone())
    d = tempfile.mkdtemp(prefix="lua-")
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    before = os.path.join(d, "before.lua")     # runs before spf: exempts a partner domain
    after = os.path.join(d, "after.lua")       # runs after spf: sees the result
    with open(before, "w") as f:
        f.write('postern.on("mail", function(tx, sender)\n'
                '  if sender:match("@fail%.test$") and sender:match("^partner") then tx.vars["spf.action"] = "continue" end\n'
                'end)\n')
    with open(after, "w") as f:
        f.write('postern.on("mail", function(tx, sender)\n'
                '  if tx.vars["spf.result"] == "softfail" then\n'
                '    return postern.TEMPFAIL("4.7.1", "softfail from lua, domain " .. tx.vars["spf.domain"])\n'
                '  end\n'
                'end)\n')
    os.chmod(before, 0o644)
    os.chmod(after, 0o644)
    g = auth_gw(sink, dns, "lua:%s, spf, lua:%s" % (before, after))
    assert mail_reply(g, "partner@fail.test").startswith("250")
    assert mail_reply(g, "other@fail.test").startswith("550 5.7.23")
    assert mail_reply(g, "x@soft.test").startswith("451 4.7.1 softfail from lua, domain soft.test")
    g.stop()


# ---- DKIM and DMARC ---------------------------------------------------------

def dkim_setup():
    """Keys for signed.test (RSA, selector s1) and ed.test (Ed25519,
    selector e1), the zone publishing them, and a key table for dkim_sign.
    nokey.test signs with a selector that is not published."""
    d = tempfile.mkdtemp(prefix="dkim-")
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    rsa, rsa_txt = dkim_key(d, "signed")
    ed, ed_txt = dkim_key(d, "ed", "ed25519")
    table = os.path.join(d, "keys")
    with open(table, "w") as f:
        f.write("signed.test s1 %s\ned.test e1 %s\nnokey.test gone %s\n" % (rsa, ed, rsa))
    os.chmod(table, 0o644)
    zone = ["s1._domainkey.signed.test. TXT %s" % rsa_txt, "e1._domainkey.ed.test. TXT %s" % ed_txt,
            '_dmarc.signed.test. TXT "v=DMARC1; p=reject; adkim=r"',
            '_dmarc.strict.signed.test. TXT "v=DMARC1; p=reject; adkim=s"',
            '_dmarc.ed.test. TXT "v=DMARC1; p=quarantine"',
            '_dmarc.pass.test. TXT "v=DMARC1; p=reject"',
            '_dmarc.fail.test. TXT "v=DMARC1; p=reject"',
            '_dmarc.soft.test. TXT "v=DMARC1; p=none"']
    return table, zone


VERIFY_CHAIN = "spf, dkim_verify, dmarc, authres"


def signer(sink, dns, table, **conf):
    """posternd on addr(1) signing for the key table's domains (we are a trusted client)."""
    return Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="dkim_sign", dns_server=dns.address(),
                   **{"dkim_sign.keys": "file:" + table}, **conf).start()


def verifier(sink, dns, **conf):
    """posternd on addr(5):2526, the receiving side: SPF, DKIM, DMARC, A-R."""
    return Gateway(host=addr(5), port=2526, sink=sink, hostname="mx.postern.test", plugin_dir=PLUGDIR,
                   plugins=VERIFY_CHAIN, dns_server=dns.address(), xclient_networks="127.0.0.0/8",
                   **{"dmarc.psl": lab_psl()}, **conf).start()


def signed_copy(dns, table, frm, subject="signed", body="line one\r\nline two\r\n"):
    """A message signed by posternd for From: frm, as it left (CRLF, no sink lines)."""
    sink = Sink(addr(3))
    g = signer(sink, dns, table)
    msg = "From: <%s>\r\nTo: <x@example.test>\r\nSubject: %s\r\n\r\n%s" % (frm, subject, body)
    assert send_message(g.host, 2525, frm, ["x@example.test"], msg).startswith("250")
    dumped = strip_sink_headers(sink.wait_count(1)[0])
    g.stop()
    sink.stop()
    return dumped[:-1].replace(b"\n", b"\r\n").decode()     # smtp-sink adds one LF at the end


def auth_results(msg):
    m = re.search(rb"^Authentication-Results: (.*?)\n(?=\S)", strip_sink_headers(msg), re.M | re.S)
    assert m, msg[:800]
    return re.sub(rb"\s+", b" ", m.group(1)).decode()


def test_dkim_sign_then_verify_rsa_and_ed25519_with_dmarc_pass():
    table, zone = dkim_setup()
    dns = DnsServer(spf_zone() + zone)
    sink = Sink(addr(2))
    v = verifier(sink, dns)
    g = Gateway(sink=None, default_transport="smtp:[%s]:2526" % addr(5), plugin_dir=PLUGDIR, plugins="dkim_sign",
                dns_server=dns.address(), **{"dkim_sign.keys": "file:" + table})
    # libopendkim 2.11.0~beta2 leaks about 500 bytes per Ed25519 signature
    # inside dkim_privkey_load (see README, "Known problems"); ASan's other
    # checks stay on for this process.
    g.env["ASAN_OPTIONS"] = g.env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
    g.start()
    for frm in ("a@signed.test", "b@ed.test", "c@sub.signed.test"):
        msg = "From: Someone <%s>\r\nSubject: hi\r\n\r\nbody of %s\r\n" % (frm, frm)
        assert send_message(g.host, 2525, frm, ["x@example.test"], msg).startswith("250")
    msgs = sink.wait_count(3)
    results = {re.search(rb"body of (\S+)", m).group(1).decode(): auth_results(m) for m in msgs}
    a = results["a@signed.test"]
    assert a.startswith("mx.postern.test;") and "dkim=pass header.d=signed.test header.s=s1" in a, a
    assert "dmarc=pass (p=reject) header.from=signed.test" in a, a
    b = results["b@ed.test"]
    assert "dkim=pass header.d=ed.test header.s=e1" in b and "dmarc=pass" in b, b
    # From: sub.signed.test is not in the key table: unsigned, and no aligned pass
    c = results["c@sub.signed.test"]
    assert "dkim=none" in c, c
    assert "rsa-sha256" in g.log() and "ed25519-sha256" in g.log()
    assert sum(1 for m in msgs for _ in re.finditer(rb"^Authentication-Results:", m, re.M)) == 3
    g.stop()
    v.stop()


def test_dkim_fail_on_changed_body_or_header_and_no_key():
    table, zone = dkim_setup()
    dns = DnsServer(spf_zone() + zone)
    good = signed_copy(dns, table, "a@signed.test")
    nokey = signed_copy(dns, table, "a@nokey.test")
    sink = Sink(addr(2))
    v = verifier(sink, dns, **{"dmarc.reject": "continue"})
    cases = {"good": good, "body": good.replace("line two", "line 2"),
             "header": good.replace("Subject: signed", "Subject: changed"), "nokey": nokey}
    for name, msg in cases.items():
        rep = transaction(v, "a@pass.test", msg, rcpts=("%s@example.test" % name,))
        assert rep.startswith("250"), (name, rep)
    out = {sink_rcpts(m)[0].split(b"@")[0].decode(): auth_results(m) for m in sink.wait_count(4)}
    assert "dkim=pass header.d=signed.test header.s=s1" in out["good"], out["good"]
    assert "dkim=fail (body hash mismatch) header.d=signed.test" in out["body"], out["body"]
    assert "dkim=fail (signature verification failed) header.d=signed.test" in out["header"], out["header"]
    assert "dmarc=fail (p=reject dis=reject) header.from=signed.test" in out["header"]
    assert re.search(r"dkim=permerror \([^)]*key[^)]*\) header.d=nokey.test header.s=gone", out["nokey"]), out["nokey"]
    v.stop()


def test_dmarc_policies_and_alignment():
    table, zone = dkim_setup()
    dns = DnsServer(spf_zone() + zone)
    sink = Sink(addr(2))
    v = verifier(sink, dns, **{"spf.fail": "continue"})
    cases = [  # (MAIL FROM, From:, expected reply, expected dmarc text)
        ("a@fail.test", "a@fail.test", "550 5.7.1 Rejected by the DMARC policy of fail.test", None),
        ("a@pass.test", "a@pass.test", "250", "dmarc=pass (p=reject) header.from=pass.test"),
        ("a@pass.test", "x@fail.test", "550 5.7.1", None),                      # SPF passes, but not aligned
        ("bounce@pass.test", "news@mail.pass.test", "250", "dmarc=pass (p=reject) header.from=mail.pass.test"),
        ("a@strictspf.test", "x@news.strictspf.test", "550 5.7.1", None),       # aspf=s: the org domain is not enough
        ("a@pass.test", "b@ed.test", "250", "dmarc=fail (p=quarantine dis=quarantine) header.from=ed.test"),
        ("a@pass.test", "c@soft.test", "250", "dmarc=fail (p=none dis=none) header.from=soft.test"),
        ("a@pass.test", "d@none.test", "250", "dmarc=none (no DMARC record) header.from=none.test")]
    delivered = {}
    for i, (env, frm, code, _) in enumerate(cases):
        rcpt = "case%d@example.test" % i
        rep = transaction(v, env, "From: <%s>\r\nSubject: case %d\r\n\r\nx\r\n" % (frm, i), rcpts=(rcpt,))
        assert rep.startswith(code), (env, frm, rep)
        if code == "250":
            delivered[rcpt.encode()] = i
    held = [i for i, c in enumerate(cases) if "quarantine dis" in (c[3] or "")]
    msgs = sink.wait_count(len(delivered) - len(held))
    for m in msgs:
        i = delivered[sink_rcpts(m)[0]]
        assert cases[i][3] in auth_results(m), (cases[i], auth_results(m))
    assert "QUARANTINE by dmarc" in v.log()
    v.stop()


def test_forged_authentication_results_are_removed():
    dns = DnsServer(spf_zone())
    sink = Sink(addr(2))
    v = verifier(sink, dns)
    msg = ("Authentication-Results: mx.postern.test; dkim=pass header.d=bank.test\r\n"
           "Authentication-Results: (comment) MX.POSTERN.TEST; spf=pass\r\n"
           "Authentication-Results: upstream.example; spf=pass smtp.mailfrom=x@y.test\r\n"
           "From: <a@pass.test>\r\nSubject: forged\r\n\r\nx\r\n")
    assert transaction(v, "a@pass.test", msg).startswith("250")
    m = strip_sink_headers(sink.wait_count(1)[0])
    ars = re.findall(rb"^Authentication-Results: ([^;\n]+)", m, re.M)
    assert ars == [b"mx.postern.test", b"upstream.example"], m[:1000]
    assert b"bank.test" not in m
    assert "spf=pass smtp.mailfrom=a@pass.test" in auth_results(m)
    assert v.log().count("removed an incoming Authentication-Results") == 2
    v.stop()


def test_cached_records_let_the_chain_run_on_the_loop():
    """spf (MAIL), dkim_verify (DATA, EOM) and dmarc (EOM) are loop_first:
    the first message's records are not cached, so each of those three
    stages waits on the loop for its answer (no worker is held) and runs
    again; the next messages from the same signer wait for nothing. No
    message makes a worker trip, and the results are the same."""
    table, zone = dkim_setup()
    dns = DnsServer(spf_zone() + zone)
    signed = signed_copy(dns, table, "a@signed.test")
    sink = Sink(addr(2))
    v = verifier(sink, dns, http_listen="%s:9025" % addr(5))
    assert chain_c_runs(v) == {"loop": 0, "worker": 0, "deferred": 0, "dns_wait": 0}
    assert transaction(v, "a@pass.test", signed, rcpts=("first@example.test",)).startswith("250")
    first = chain_c_runs(v)
    # pass.test's SPF record, the DKIM key, _dmarc.signed.test
    assert first["dns_wait"] == 3 and first["worker"] == 0 and first["deferred"] == 0, first
    for i in range(3):
        assert transaction(v, "a@pass.test", signed, rcpts=("again%d@example.test" % i,)).startswith("250")
    later = chain_c_runs(v)
    assert later["dns_wait"] == 3 and later["worker"] == 0 and later["loop"] > first["loop"], (first, later)
    for m in sink.wait_count(4):
        ar = auth_results(m)
        assert "spf=pass smtp.mailfrom=a@pass.test" in ar and "dkim=pass header.d=signed.test" in ar, ar
        assert "dmarc=pass (p=reject) header.from=signed.test" in ar, ar
    # records no message asked for yet are waited for again
    other = signed.replace("a@signed.test", "a@sub.signed.test")     # From: changes: header check fails
    rep = transaction(v, "a@soft.test", other, rcpts=("other@example.test",))
    assert rep.startswith("550 5.7.1 Rejected by the DMARC policy of sub.signed.test"), rep
    last = chain_c_runs(v)
    # soft.test's SPF record at MAIL, _dmarc.sub.signed.test at EOM (NXDOMAIN, then the org domain's: cached)
    assert last["dns_wait"] == 5 and last["worker"] == 0, (later, last)
    assert "temperror" not in v.log()
    v.stop()


def test_many_signatures_are_bounded_and_checked_on_a_worker():
    """dkim_verify.max_signatures bounds the signatures checked per message
    (the rest are ignored); a message with more than two signatures is
    checked on a worker even with its key cached, never on the loop."""
    table, zone = dkim_setup()
    dns = DnsServer(spf_zone() + zone)
    signed = signed_copy(dns, table, "a@signed.test")
    sig = re.search(r"^DKIM-Signature:.*?\r\n(?=\S)", signed, re.M | re.S).group(0)
    sink = Sink(addr(2))
    v = verifier(sink, dns, http_listen="%s:9025" % addr(5), **{"dkim_verify.max_signatures": "2"})
    for i in range(2):
        rep = transaction(v, "a@pass.test", sig + sig + signed, rcpts=("three%d@example.test" % i,))
        assert rep.startswith("250"), rep
    runs = chain_c_runs(v)
    # DATA (three signatures) goes to a worker both times; MAIL and EOM of the first wait for answers
    assert runs["deferred"] == 2 and runs["worker"] == 2 and runs["dns_wait"] == 2, runs
    for m in sink.wait_count(2):
        ar = auth_results(m)
        assert ar.count("dkim=pass header.d=signed.test header.s=s1") == 2 and ar.count("dkim=") == 2, ar
    assert v.log().count("1 more ignored (max_signatures)") == 2
    v.stop()
    bad = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="dkim_verify", **{"dkim_verify.max_signatures": "0"})
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", bad.conf, "-t"], capture_output=True, text=True)
    assert r.returncode != 0 and "max_signatures: a number from 1 to 50, not '0'" in r.stderr, r.stderr


run_tests(globals())
