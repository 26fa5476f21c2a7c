"""RFC 7208 conformance of the spf plugin through posternd's DNS layer, and
the iprev plugin (RFC 8601 2.7.3), against a real DNS server (unbound)
serving crafted records. Each case is named after the section it checks.
The client is presented with XCLIENT (libspf2 passes every loopback
client)."""
from harness import *

PLUGDIR = os.path.join(BUILD, "plugins")
LONG = "a" * 64                                   # one label over 63 octets
LOCAL = "l" * 60                                  # a local part: %{l} x5 > 253 octets


def zone():
    return [
        # 4.6.4 / 5: a mechanism's target no query can carry is a name that does not exist
        'longlabel.test. TXT "v=spf1 a:%s.longlabel.test -all"' % LONG,
        'macrolong.test. TXT "v=spf1 exists:%{l}.%{l}.%{l}.%{l}.%{l}.macrolong.test -all"',
        'emptylabel.test. TXT "v=spf1 a:foo..emptylabel.test -all"',
        # 5.2: include of a name that does not exist is permerror
        'badinclude.test. TXT "v=spf1 include:%s.badinclude.test -all"' % LONG,
        # 5.5: ptr, and the %{p} macro, need reverse lookups of documentation and private ranges
        'ptr.test. TXT "v=spf1 ptr -all"',
        '7.2.0.192.in-addr.arpa. PTR mail.ptr.test.',
        'mail.ptr.test. A 192.0.2.7',
        '9.1.168.192.in-addr.arpa. PTR lan.ptr.test.',
        'lan.ptr.test. A 192.168.1.9',
        'pmacro.test. TXT "v=spf1 exists:%{p}.allowed.pmacro.test -all"',
        'mail.ptr.test.allowed.pmacro.test. A 127.0.0.2',
        # 5.6: an IPv4-mapped IPv6 client is the IPv4 client
        'mapped.test. TXT "v=spf1 ip4:192.0.2.0/24 -all"',
        # 6.2: the domain's own explanation
        'exp.test. TXT "v=spf1 -all exp=why.exp.test"',
        'why.exp.test. TXT "%{i} is not a designated mail server of %{d}"',
        # 4.4 / dns_timeout: one slow name fails alone
        'fast.test. TXT "v=spf1 ip4:192.0.2.0/24 -all"',
        # RFC 8601 2.7.3: iprev (192.0.2.7 -> mail.ptr.test -> 192.0.2.7 passes, above)
        '8.2.0.192.in-addr.arpa. PTR liar.test.',
        'liar.test. A 192.0.2.99',
    ]


def gw(dns, sink, **conf):
    return Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="spf", dns_server=dns.address(),
                   xclient_networks="127.0.0.0/8", dns_timeout="1s", **conf).start()


def mail_from(g, sender, client="192.0.2.7"):
    c = presented(g, client)
    rep = c.cmd("MAIL FROM:<%s>" % sender)
    c.close()
    return rep


def spf_result(g, sender, **kw):
    rep = mail_from(g, sender, **kw)
    m = re.findall(r"spf: (\w+) for mailfrom=%s" % re.escape(sender.split("@")[1]), g.log())
    assert m, g.log()[-2000:]
    return m[-1], rep


def servers():
    sink = Sink(addr(2))
    dns = DnsServer(zone(), drop=("slow.test", "100.51.198.in-addr.arpa"),
                    zones=("2.0.192.in-addr.arpa", "168.192.in-addr.arpa"))
    return sink, dns


def test_rfc7208_4_6_4_unqueryable_names_are_not_temporary_errors():
    sink, dns = servers()
    g = gw(dns, sink)
    for sender, want in (("x@longlabel.test", "fail"), (LOCAL + "@macrolong.test", "fail"),
                         ("x@badinclude.test", "permerror")):
        result, rep = spf_result(g, sender)
        assert result == want, (sender, result, rep)
    result, _ = spf_result(g, "x@emptylabel.test")
    assert result in ("fail", "permerror"), result     # libspf2 refuses the record's syntax
    assert "temperror" not in g.log()
    g.stop()


def test_rfc7208_5_5_ptr_and_p_macro_reach_the_configured_server():
    sink, dns = servers()
    g = gw(dns, sink)
    assert spf_result(g, "x@ptr.test") == ("pass", "250 2.1.0 Ok"), g.log()[-1500:]   # a documentation range
    assert spf_result(g, "x@ptr.test", client="192.168.1.9")[0] == "pass", g.log()[-1500:]  # a private range
    assert spf_result(g, "x@pmacro.test")[0] == "pass", g.log()[-1500:]
    g.stop()


def test_rfc7208_5_6_ipv4_mapped_clients_are_ipv4():
    sink, dns = servers()
    g = gw(dns, sink)
    result, rep = spf_result(g, "x@mapped.test", client="IPV6:::ffff:192.0.2.7")
    assert result == "pass", (result, rep, g.log()[-1500:])
    assert spf_result(g, "x@mapped.test", client="IPV6:::ffff:198.51.100.1")[0] == "fail"
    g.stop()


def test_rfc7208_6_2_the_explanation_reaches_the_reply_and_lua():
    sink, dns = servers()
    g = gw(dns, sink)
    result, rep = spf_result(g, "x@exp.test")
    assert result == "fail"
    assert rep == "550 5.7.23 SPF fail for exp.test: 192.0.2.7 is not a designated mail server of exp.test", rep
    g.stop()
    script = readable_file("explain.lua", 'postern.on("rcpt", function(tx, r)\n'
                           '  local e = tx.vars["spf.explanation"]\n'
                           '  if e and e ~= "" then return postern.REJECT("5.7.1", "lua saw: " .. e) end\n'
                           'end)\n')
    g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="spf, lua:" + script, dns_server=dns.address(),
                xclient_networks="127.0.0.0/8", **{"spf.fail": "continue"}).start()
    c = presented(g, "192.0.2.7")
    assert c.cmd("MAIL FROM:<x@exp.test>").startswith("250")
    rep = c.cmd("RCPT TO:<x@example.test>")
    assert rep == "550 5.7.1 lua saw: 192.0.2.7 is not a designated mail server of exp.test", rep
    c.close()
    # a record without exp= keeps the plain text
    assert spf_result(g, "x@fast.test", client="198.51.100.1")[1].startswith("250")
    g.stop()


def test_rfc7208_4_4_dns_timeout_fails_one_slow_name_alone():
    sink, dns = servers()
    g = gw(dns, sink)
    t0 = time.time()
    result, rep = spf_result(g, "x@slow.test")
    took = time.time() - t0
    assert result == "temperror" and rep.startswith("451 4.7.24"), (result, rep)
    assert 0.8 < took < 3, took                      # dns_timeout = 1s, not libunbound's own 3-31 s
    assert "no answer within dns_timeout (1000 ms)" in g.log()
    t0 = time.time()
    assert spf_result(g, "x@fast.test")[0] == "pass"  # the server is asked again at once
    assert time.time() - t0 < 0.8
    g.stop()


def test_a_slow_name_holds_no_worker():
    """A stage waiting for an unanswered SPF name waits on the loop, not on
    a worker: with one worker thread, another session's greylist check (a
    worker stage) is answered at once meanwhile."""
    sink, dns = servers()
    d = tempfile.mkdtemp(prefix="grey-")
    os.chmod(d, 0o777)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="spf, greylist", dns_server=dns.address(),
                xclient_networks="127.0.0.0/8", dns_timeout="2s", worker_threads="1",
                **{"greylist.db": os.path.join(d, "grey.db")}).start()
    slow = presented(g, "192.0.2.7")
    slow.send("MAIL FROM:<x@slow.test>\r\n")         # its answer comes after dns_timeout
    time.sleep(0.2)
    other = presented(g, "192.0.2.8")
    t0 = time.time()
    assert other.cmd("MAIL FROM:<x@fast.test>").startswith("250")     # spf: a lookup answered at once
    rep = other.cmd("RCPT TO:<x@example.test>")
    took = time.time() - t0
    assert rep.startswith("450 4.7.1") and "Greylisted" in rep, rep
    assert took < 1, took
    assert slow.reply().startswith("451 4.7.24"), "the slow name is a temperror"
    slow.close()
    other.close()
    g.stop()


def test_rfc8601_2_7_3_iprev_pass_fail_permerror_temperror():
    sink, dns = servers()
    g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="iprev, authres", dns_server=dns.address(),
                xclient_networks="127.0.0.0/8", dns_timeout="1s", trusted_networks="10.9.9.9/32")
    g.start()
    cases = (("192.0.2.7", "pass", "mail.ptr.test"), ("192.0.2.8", "fail", "liar.test"),
             ("192.0.2.77", "permerror", ""), ("198.51.100.5", "temperror", ""))
    for client, want, name in cases:
        rep = mail_from(g, "x@fast.test", client=client)
        assert rep.startswith("250"), (client, rep)     # iprev's actions default to continue
        assert re.search(r"iprev: %s for %s%s" % (want, re.escape(client), (" name=" + name) if name else "$"),
                         g.log(), re.M), (client, want, g.log()[-1500:])
    # the result in Authentication-Results (the authres plugin)
    c = presented(g, "192.0.2.7")
    for line in ("MAIL FROM:<x@fast.test>", "RCPT TO:<x@example.test>", "DATA"):
        assert c.cmd(line)[0] in "23", line
    c.send("Subject: iprev\r\n\r\nbody\r\n")
    assert c.cmd(".").startswith("250")
    c.close()
    msg = sink.wait_count(1)[0]
    assert b"iprev=pass policy.iprev=192.0.2.7 (mail.ptr.test)" in msg, msg[:800]
    g.stop()
    # an action: fail rejects
    g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="iprev", dns_server=dns.address(),
                xclient_networks="127.0.0.0/8", **{"iprev.fail": "reject", "iprev.permerror": "tempfail"}).start()
    assert mail_from(g, "x@fast.test", client="192.0.2.8").startswith("550 5.7.25")
    assert mail_from(g, "x@fast.test", client="192.0.2.77").startswith("450 4.7.25")
    assert mail_from(g, "x@fast.test", client="192.0.2.7").startswith("250")
    g.stop()


if __name__ == "__main__":
    run_tests(globals())
