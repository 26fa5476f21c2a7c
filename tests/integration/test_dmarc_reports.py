"""DMARC aggregate reports (RFC 7489 7.2): the dmarc plugin records what it
evaluated, and every report_interval queues one gzip'd XML report per policy
domain through posternd's own queue to the domain's rua= addresses (only
those that pass the external destination check of 7.1). The reports reach a
real smtp-sink; each is validated with xmllint against the RFC's schema
(tests/data/dmarc-rfc7489.xsd) and its rows are counted. Records come from
real SPF (unbound serving the zone) and a real DKIM signature made by a
second posternd."""
import email
import gzip
import xml.etree.ElementTree as ET
from harness import *

PLUGDIR = os.path.join(BUILD, "plugins")
SCHEMA = os.path.join(ROOT, "tests", "data", "dmarc-rfc7489.xsd")
SPF_NET = "198.51.100.0/24"


def zone(dkim_txt):
    return [
        'rep.test. TXT "v=spf1 ip4:198.51.100.7 -all"',
        'pass.test. TXT "v=spf1 ip4:%s -all"' % SPF_NET,
        # four destinations: one inside the domain, one outside that agrees
        # to receive (7.1), one outside that does not, and one whose size
        # limit (1 KiB) the report is over
        '_dmarc.rep.test. TXT "v=DMARC1; p=reject; fo=1; rua=mailto:agg@rep.test,'
        'mailto:dmarc@reports.example!200k,mailto:nobody@unverified.example,mailto:tiny@rep.test!1k"',
        'rep.test._report._dmarc.reports.example. TXT "v=DMARC1"',
        # a subdomain under sp=none, reported at the organizational domain
        '_dmarc.sub.test. TXT "v=DMARC1; p=quarantine; sp=none; rua=mailto:r@sub.test"',
        # no rua=: nothing to report
        '_dmarc.quiet.test. TXT "v=DMARC1; p=none"',
        "d1._domainkey.rep.test. TXT %s" % dkim_txt,
    ]


def make_report_dir():
    d = tempfile.mkdtemp(prefix="dmarc-reports-")
    os.chmod(d, 0o777)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


def reporter(sink, dns, report_dir, **conf):
    opts = {"dmarc.psl": lab_psl(), "dmarc.report_dir": report_dir, "dmarc.report_interval": "3",
            "dmarc.report_org": "Postern Lab", "dmarc.report_from": "dmarc-reports@mx.postern.test",
            "spf.fail": "continue"}
    opts.update(conf)
    return Gateway(sink=sink, hostname="mx.postern.test", plugin_dir=PLUGDIR, plugins="spf, dkim_verify, dmarc",
                   dns_server=dns.address(), xclient_networks="127.0.0.0/8", relay_domains="example.test",
                   **opts).start()


def send_as(g, client, sender, message, rcpt="x@example.test"):
    c = presented(g, client)
    assert c.cmd("MAIL FROM:<%s>" % sender).startswith("250")
    assert c.cmd("RCPT TO:<%s>" % rcpt).startswith("250")
    assert c.cmd("DATA").startswith("354")
    rep = c.cmd(message.replace("\r\n.", "\r\n..") + "\r\n.")
    c.cmd("QUIT")
    c.close()
    return rep


def signed_message(dns, key):
    """From: a@rep.test signed by posternd's dkim_sign (selector d1)."""
    table = readable_file("keys", "rep.test d1 %s\n" % key)
    sink = Sink(addr(3))
    g = Gateway(sink=sink, port=2527, plugin_dir=PLUGDIR, plugins="dkim_sign", dns_server=dns.address(),
                **{"dkim_sign.keys": "file:" + table}).start()
    msg = "From: <a@rep.test>\r\nTo: <x@example.test>\r\nSubject: signed\r\n\r\nsigned body\r\n"
    assert send_message(g.host, 2527, "a@rep.test", ["x@example.test"], msg).startswith("250")
    dumped = strip_sink_headers(sink.wait_count(1)[0])
    g.stop()
    sink.stop()
    return dumped[:-1].replace(b"\n", b"\r\n").decode()


def reports(sink):
    """{policy domain: (message, xml bytes, attachment file name)} of the reports at the sink."""
    out = {}
    for raw in sink.messages():
        if b"Subject: Report Domain:" not in raw:
            continue
        m = email.message_from_bytes(strip_sink_headers(raw))
        part = next(p for p in m.walk() if p.get_content_type() == "application/gzip")
        dom = re.search(r"Report Domain: (\S+)", m["Subject"]).group(1)
        out[dom] = (m, gzip.decompress(part.get_payload(decode=True)), part.get_filename(), raw)
    return out


def schema_check(xml_bytes):
    path = os.path.join(tempfile.mkdtemp(prefix="dmarc-xml-"), "report.xml")
    on_cleanup(lambda: shutil.rmtree(os.path.dirname(path), ignore_errors=True))
    with open(path, "wb") as f:
        f.write(xml_bytes)
    return subprocess.run(["xmllint", "--noout", "--schema", SCHEMA, path], capture_output=True, text=True)


def rows(root):
    out = {}
    for r in root.findall("record"):
        pe = r.find("row/policy_evaluated")
        key = (r.findtext("row/source_ip"), pe.findtext("disposition"), pe.findtext("dkim"), pe.findtext("spf"),
               r.findtext("identifiers/header_from"), pe.findtext("reason/type"))
        out[key] = out.get(key, 0) + int(r.findtext("row/count"))
    return out


def test_aggregate_report_per_domain_valid_against_the_rfc_schema():
    d = tempfile.mkdtemp(prefix="dkim-")
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    key, txt = dkim_key(d, "rep")
    dns = DnsServer(zone(txt), zones=("example",))
    sink = Sink(addr(2))
    report_dir = make_report_dir()
    g = reporter(sink, dns, report_dir)
    plain = "From: <a@rep.test>\r\nTo: <x@example.test>\r\nSubject: %s\r\n\r\nbody\r\n"
    for i in range(3):      # SPF passes and aligns: dmarc pass, disposition none
        assert send_as(g, "198.51.100.7", "a@rep.test", plain % i).startswith("250")
    for i in range(2):      # SPF passes for pass.test, not aligned, no DKIM: fail, rejected
        assert send_as(g, "198.51.100.8", "b@pass.test", plain % i).startswith("550 5.7.1")
    # IPv6 client: SPF fails, rejected; the schema only takes all eight groups
    assert send_as(g, "IPV6:2001:db8::5", "a@rep.test", plain % "v6").startswith("550 5.7.1")
    # DKIM-signed by rep.test from an address SPF fails: DKIM aligns, dmarc passes
    assert send_as(g, "198.51.100.9", "a@rep.test", signed_message(dns, key)).startswith("250")
    # a subdomain: sp=none, reported to the organizational domain's rua
    sub = "From: <n@news.sub.test>\r\nTo: <x@example.test>\r\nSubject: sub\r\n\r\nbody\r\n"
    assert send_as(g, "198.51.100.7", "n@news.sub.test", sub).startswith("250")
    quiet = "From: <q@quiet.test>\r\nTo: <x@example.test>\r\nSubject: quiet\r\n\r\nbody\r\n"
    assert send_as(g, "198.51.100.7", "q@quiet.test", quiet).startswith("250")

    try:
        wait_for(lambda: len(reports(sink)) >= 2, 30, "two reports at the sink")
    except AssertionError:
        raise AssertionError("no reports; the log ends: " + g.log()[-3000:])
    time.sleep(4)           # another interval: no third report, nothing sent twice
    got = reports(sink)
    assert sorted(got) == ["rep.test", "sub.test"], sorted(got)

    msg, xml, fname, raw = got["rep.test"]
    assert sorted(sink_rcpts(raw)) == [b"agg@rep.test", b"dmarc@reports.example"], sink_rcpts(raw)
    assert re.search(r"<nobody@unverified\.example> is outside the domain .* not sent there", g.log())
    assert re.search(r"over <tiny@rep\.test>'s limit of 1024 bytes; not sent there", g.log())
    m = re.fullmatch(r"mx\.postern\.test!rep\.test!(\d+)!(\d+)\.xml\.gz", fname)
    assert m and int(m.group(1)) <= int(m.group(2)), fname
    assert msg["From"] == "<dmarc-reports@mx.postern.test>"
    assert re.fullmatch(r"Report Domain: rep\.test Submitter: Postern Lab Report-ID: <\S+>",
                        re.sub(r"\s+", " ", msg["Subject"])), msg["Subject"]
    check = schema_check(xml)
    assert check.returncode == 0, check.stderr + xml.decode()
    root = ET.fromstring(xml)
    assert root.findtext("report_metadata/org_name") == "Postern Lab"
    assert int(root.findtext("report_metadata/date_range/begin")) == int(m.group(1))
    pp = root.find("policy_published")
    assert [pp.findtext(k) for k in ("domain", "p", "sp", "pct", "fo", "adkim", "aspf")] == \
        ["rep.test", "reject", "reject", "100", "1", "r", "r"], ET.tostring(pp)
    assert rows(root) == {
        ("198.51.100.7", "none", "fail", "pass", "rep.test", None): 3,
        ("198.51.100.8", "reject", "fail", "fail", "rep.test", None): 2,
        ("2001:db8:0:0:0:0:0:5", "reject", "fail", "fail", "rep.test", None): 1,
        ("198.51.100.9", "none", "pass", "fail", "rep.test", None): 1,
    }, rows(root)
    signed = next(r for r in root.findall("record") if r.findtext("row/source_ip") == "198.51.100.9")
    assert [signed.findtext("auth_results/dkim/" + k) for k in ("domain", "selector", "result")] == \
        ["rep.test", "d1", "pass"]
    assert [signed.findtext("auth_results/spf/" + k) for k in ("domain", "scope", "result")] == \
        ["rep.test", "mfrom", "fail"]
    rejected = next(r for r in root.findall("record") if r.findtext("row/source_ip") == "198.51.100.8")
    assert rejected.findtext("identifiers/envelope_from") == "pass.test"

    # the schema check can fail: a report without the required <fo> is refused
    broken = re.sub(rb"<fo>.*?</fo>", b"", xml)
    assert schema_check(broken).returncode != 0

    msg, xml, fname, raw = got["sub.test"]
    assert sink_rcpts(raw) == [b"r@sub.test"]
    assert schema_check(xml).returncode == 0
    root = ET.fromstring(xml)
    assert root.findtext("policy_published/domain") == "sub.test"
    assert rows(root) == {("198.51.100.7", "none", "fail", "fail", "news.sub.test", None): 1}, rows(root)

    # every batch is finished and removed; nothing waits in the store
    left = [f for f in os.listdir(report_dir) if f.startswith("batch.") or f == "records"]
    assert not left, left
    g.stop()


def test_local_policy_override_and_restart_keep_records():
    """dmarc.reject = quarantine: the report says so (disposition quarantine,
    reason local_policy). Records made before a restart are reported after it."""
    dns = DnsServer(zone('"v=DKIM1; p="')[:-1], zones=("example",))
    sink = Sink(addr(2))
    report_dir = make_report_dir()
    g = reporter(sink, dns, report_dir, **{"dmarc.reject": "quarantine", "dmarc.report_interval": "5"})
    plain = "From: <a@rep.test>\r\nTo: <x@example.test>\r\nSubject: q\r\n\r\nbody\r\n"
    assert send_as(g, "198.51.100.8", "b@pass.test", plain).startswith("250")
    g.stop()
    assert os.path.exists(os.path.join(report_dir, "records"))
    g.start()
    wait_for(lambda: reports(sink), 30, "the report after the restart")
    msg, xml, fname, raw = reports(sink)["rep.test"]
    assert schema_check(xml).returncode == 0
    assert rows(ET.fromstring(xml)) == {("198.51.100.8", "quarantine", "fail", "fail", "rep.test", "local_policy"): 1}
    g.stop()


def test_store_limit_leaves_messages_out_and_says_so_once():
    """report_store_max bounds one interval's records: past it messages are
    left out (logged once), and the report of what was kept is still valid."""
    dns = DnsServer(zone('"v=DKIM1; p="')[:-1], zones=("example",))
    sink = Sink(addr(2))
    report_dir = make_report_dir()
    g = reporter(sink, dns, report_dir, **{"dmarc.report_store_max": "4k", "dmarc.report_interval": "4"})
    plain = "From: <a@rep.test>\r\nTo: <x@example.test>\r\nSubject: n\r\n\r\nbody\r\n"
    for i in range(30):
        assert send_as(g, "198.51.100.7", "a@rep.test", plain).startswith("250")
    assert os.path.getsize(os.path.join(report_dir, "records")) <= 4096
    assert g.log().count("is full") == 1, g.log()[-2000:]
    wait_for(lambda: reports(sink), 30, "the report")
    msg, xml, fname, raw = reports(sink)["rep.test"]
    assert schema_check(xml).returncode == 0
    kept = sum(rows(ET.fromstring(xml)).values())
    assert 0 < kept < 30, kept
    g.stop()


def test_report_options_are_checked():
    dns = DnsServer([])
    g = Gateway(sink=Sink(addr(2)), plugin_dir=PLUGDIR, plugins="dmarc", dns_server=dns.address(),
                **{"dmarc.report_dir": "/nonexistent/dmarc", "dmarc.psl": lab_psl()})
    out = subprocess.run([os.path.join(BUILD, "posternd"), "-t", "-c", g.conf], capture_output=True, text=True)
    assert out.returncode != 0 and "report_dir /nonexistent/dmarc" in out.stderr, out.stderr
    g.set(**{"dmarc.report_dir": make_report_dir(), "dmarc.report_interval": "0"})
    out = subprocess.run([os.path.join(BUILD, "posternd"), "-t", "-c", g.conf], capture_output=True, text=True)
    assert out.returncode != 0 and "report_interval" in out.stderr, out.stderr


run_tests(globals())
