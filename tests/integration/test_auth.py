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
            'helo.client.test. TXT "v=spf1 ip4:%s -all"' % NET_CIDR]


def auth_gw(sink, dns, plugins, **conf):
    return Gateway(sink=sink, plugin_dir=PLUGDIR, plugins=plugins, dns_server=dns.address(),
                   xclient_networks="127.0.0.0/8", **conf).start()


def presenting(g, helo="client.test", client=CLIENT):
    """A session whose client is `client`, presented with XCLIENT."""
    c = Client(g.host)
    assert "XCLIENT" in c.cmd("EHLO proxy.test")
    rep = c.cmd("XCLIENT ADDR=%s NAME=[UNAVAILABLE]" % client)
    assert rep.startswith("220"), rep
    assert c.cmd("EHLO " + helo).startswith("250")
    return c


def mail_reply(g, sender, helo="client.test"):
    c = presenting(g, helo)
    rep = c.cmd("MAIL FROM:<%s>" % sender)
    c.close()
    return rep


def transaction(g, sender, message, rcpts=("x@example.test",), helo="client.test"):
    """A whole transaction from the presented client; the first refusal or the final reply."""
    c = presenting(g, helo)
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
    assert r.returncode != 0 and "the action is continue, reject, tempfail or quarantine" in r.stderr, r.stderr


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


run_tests(globals())
