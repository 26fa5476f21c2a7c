"""DKIM interop with the real OpenDKIM milter (Debian's opendkim) inside a
real Postfix, both started by the test on loopback with their own config:
a message signed by posternd verifies in OpenDKIM, and a message signed by
OpenDKIM verifies in posternd. OpenDKIM resolves keys through the test's
unbound (its ResolverConfiguration). Needs root (Postfix); skipped otherwise."""
from harness import *
import importlib.util

_spec = importlib.util.spec_from_file_location("auth", os.path.join(os.path.dirname(__file__), "test_auth.py"))
PLUGDIR = os.path.join(BUILD, "plugins")


def auth_helpers():
    """dkim_key() and auth_results() from test_auth.py, without running its tests."""
    src = open(_spec.origin).read().replace("run_tests(globals())", "")
    ns = {"__name__": "auth_helpers"}
    exec(compile(src, _spec.origin, "exec"), ns)
    return ns


def milter_postfix(host, relayhost, milter):
    return Postfix(host, 2525, relayhost, main={"smtpd_milters": milter.spec, "milter_default_action": "tempfail",
                                                "myhostname": "postfix.interop.test"})


def test_posternd_signature_verifies_in_opendkim():
    if not Postfix.available():
        skip("needs root and postfix to run a private Postfix")
    h = auth_helpers()
    table, zone = h["dkim_setup"]()
    dns = DnsServer(zone)
    sink = Sink(addr(2))
    odk = OpenDKIM(8891, dns, "v")
    pf = milter_postfix(addr(6), "[%s]:%d" % (sink.host, sink.port), odk)
    g = Gateway(default_transport="smtp:[%s]:2525" % addr(6), plugin_dir=PLUGDIR, plugins="dkim_sign",
                dns_server=dns.address(), **{"dkim_sign.keys": "file:" + table})
    g.env["ASAN_OPTIONS"] = g.env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"   # libopendkim Ed25519 leak
    g.start()
    for frm in ("a@signed.test", "b@ed.test"):
        msg = "From: <%s>\r\nTo: <x@example.test>\r\nSubject: interop %s\r\n\r\nSigned by posternd.\r\n" % (frm, frm)
        assert send_message(g.host, 2525, frm, ["x@example.test"], msg).startswith("250")
    msgs = sink.wait_count(2, timeout=30)
    seen = set()
    for m in msgs:
        ar = re.sub(rb"\s+", b" ", re.search(rb"^Authentication-Results: odk\.verify\.test;(.*?)\n(?=\S)", m,
                                            re.M | re.S).group(1)).decode()
        d = re.search(r"dkim=pass .*?header\.d=(\S+)", ar)
        assert d, (ar, m[:1500])
        seen.add(d.group(1))
    assert seen == {"signed.test", "ed.test"}, seen
    g.stop()


def test_opendkim_signature_verifies_in_posternd():
    if not Postfix.available():
        skip("needs root and postfix to run a private Postfix")
    h = auth_helpers()
    d = tempfile.mkdtemp(prefix="odk-")
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    key, txt = dkim_key(d, "o1")
    dns = DnsServer(["o1._domainkey.odk.test. TXT %s" % txt, '_dmarc.odk.test. TXT "v=DMARC1; p=reject"'])
    sink = Sink(addr(2))
    v = Gateway(host=addr(5), port=2526, sink=sink, hostname="mx.postern.test", plugin_dir=PLUGDIR,
                plugins="dkim_verify, dmarc, authres", dns_server=dns.address(),
                **{"dmarc.psl": lab_psl()}).start()
    odk = OpenDKIM(8892, dns, "s", domain="odk.test", selector="o1", key=key)
    pf = milter_postfix(addr(6), "[%s]:2526" % addr(5), odk)
    msg = "From: <a@odk.test>\r\nTo: <x@example.test>\r\nSubject: signed by opendkim\r\n\r\nHello.\r\n"
    assert send_message(addr(6), 2525, "a@odk.test", ["x@example.test"], msg).startswith("250")
    m = sink.wait_count(1, timeout=30)[0]
    assert re.search(rb"^DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=odk\.test;", m, re.M), m[:1500]
    ar = h["auth_results"](m)
    assert ar.startswith("mx.postern.test;") and "dkim=pass header.d=odk.test header.s=o1" in ar, ar
    assert "dmarc=pass" in ar, ar
    v.stop()


run_tests(globals())
