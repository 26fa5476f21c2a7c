"""DANE for outbound SMTP (RFC 7672): TLSA records in a zone signed here
(ldns-signzone), served by a real NSD, validated by posternd's own
libunbound from the zone's DS as trust anchor (dns_trust_anchor).

Next hops are two TLS-capable posternd on port 2526: addr(5) with a
self-signed certificate for mx-ee.dane.test (DANE-EE), addr(6) with a
certificate from the test's CA for mx-ta.dane.test, sent with its chain
(DANE-TA). Both relay to one smtp-sink."""
import base64
import email
import gzip
import hashlib
import json
import os
import re
import ssl
import subprocess
import time

from harness import (BUILD, Client, Gateway, Nsd, Sink, addr, https_policy_server, make_certs, queue_id,
                     run_tests, send_message, table_file, wait_for)

PORT = 2526
DOMAINS = ["ee", "ta", "bad", "bogus", "unusable", "cname", "sts", "hosted.insecure"]


def der_of(pem_path):
    with open(pem_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def spki_sha256(cert_path):
    pub = subprocess.run(["openssl", "x509", "-in", cert_path, "-noout", "-pubkey"], capture_output=True,
                         check=True, timeout=30).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub, capture_output=True,
                         check=True, timeout=30).stdout
    return hashlib.sha256(der).hexdigest()


def self_signed(d, name):
    key, crt = os.path.join(d, name + ".ss.key"), os.path.join(d, name + ".ss.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "2", "-subj", "/CN=" + name], check=True, capture_output=True, timeout=60)
    os.chmod(key, 0o644)
    os.chmod(crt, 0o644)
    return crt, key


def break_tlsa_signature(origin, text):
    """Flip one character in the signature over mx-bogus's TLSA RRset."""
    out = []
    for line in text.splitlines():
        if line.startswith("_%d._tcp.mx-bogus.dane.test." % PORT) and "\tRRSIG\tTLSA" in line:
            sig = line.rstrip()
            k = len(sig) - 12
            line = sig[:k] + ("A" if sig[k] != "A" else "B") + sig[k + 1:]
        out.append(line)
    return "\n".join(out) + "\n"


class Lab:
    """The zones, the two next hops and their sink."""

    def __init__(self):
        self.certs = make_certs(["mx-ta.dane.test", "mta-sts.sts.dane.test", "gw.postern.test"])
        self.certs_dir, self.ca = self.certs
        ee_crt, ee_key = self_signed(self.certs_dir, "mx-ee.dane.test")
        ta_chain = os.path.join(self.certs_dir, "mx-ta.chain.pem")
        with open(ta_chain, "w") as f:
            f.write(open(os.path.join(self.certs_dir, "mx-ta.dane.test.crt")).read() + open(self.ca).read())
        os.chmod(ta_chain, 0o644)
        ee_hash = spki_sha256(ee_crt)
        ca_hash = hashlib.sha256(der_of(self.ca)).hexdigest()
        tlsa = "_%d._tcp" % PORT
        parent = [
            "@ SOA ns.dane.test. admin.dane.test. 1 3600 600 86400 300", "@ NS ns.dane.test.",
            "ns A %s" % addr(53),
            # DANE-EE(3) SPKI SHA-256: the self-signed next hop
            "ee MX 10 mx-ee.dane.test.", "mx-ee A %s" % addr(5), "%s.mx-ee TLSA 3 1 1 %s" % (tlsa, ee_hash),
            # DANE-TA(2) full certificate SHA-256 of the CA: the CA-issued next hop
            "ta MX 10 mx-ta.dane.test.", "mx-ta A %s" % addr(6), "%s.mx-ta TLSA 2 0 1 %s" % (tlsa, ca_hash),
            # a record that matches nothing the server has
            "bad MX 10 mx-bad.dane.test.", "mx-bad A %s" % addr(5), "%s.mx-bad TLSA 3 1 1 %s" % (tlsa, "ab" * 32),
            # the right record, but its signature is broken after signing
            "bogus MX 10 mx-bogus.dane.test.", "mx-bogus A %s" % addr(5),
            "%s.mx-bogus TLSA 3 1 1 %s" % (tlsa, ee_hash),
            # only PKIX-EE(1), which SMTP does not use: mandatory TLS, no authentication
            "unusable MX 10 mx-unusable.dane.test.", "mx-unusable A %s" % addr(5),
            "%s.mx-unusable TLSA 1 1 1 %s" % (tlsa, ee_hash),
            # an MX host that is a CNAME: TLSA at the target's name
            "cname MX 10 alias.dane.test.", "alias CNAME mx-ee.dane.test.",
            # an MTA-STS policy (served by the test) that names other MX hosts
            "sts MX 10 mx-ee.dane.test.", '_mta-sts.sts TXT "v=STSv1; id=1"', "mta-sts.sts A %s" % addr(80),
            # TLS reports (RFC 8460) wanted by mail: ee, bad, bogus; ta only over https:
            '_smtp._tls.ee TXT "v=TLSRPTv1; rua=mailto:tls@reports.test"',
            '_smtp._tls.bad TXT "v=TLSRPTv1;rua=https://reports.test/x,mailto:tls@reports.test"',
            '_smtp._tls.bogus TXT "v=TLSRPTv1; rua=mailto:tls@reports.test"',
            '_smtp._tls.ta TXT "v=TLSRPTv1; rua=https://reports.test/tlsrpt"',
            # an unsigned child zone (no DS): its answers are insecure
            "insecure NS ns.insecure.dane.test.", "ns.insecure A %s" % addr(53),
        ]
        child = ["@ SOA ns.insecure.dane.test. admin.dane.test. 1 3600 600 86400 300",
                 "@ NS ns.insecure.dane.test.", "ns A %s" % addr(53),
                 "@ MX 10 mx.insecure.dane.test.", "mx A %s" % addr(5),
                 "%s.mx TLSA 3 1 1 %s" % (tlsa, ee_hash),
                 # an unsigned domain hosted on a signed provider's MX host (2.2.1)
                 "hosted MX 10 mx-ee.dane.test."]
        self.nsd = Nsd({"dane.test": parent, "insecure.dane.test": child}, signed=("dane.test",),
                       tamper=break_tlsa_signature)
        self.sink = Sink(addr(2))
        relay = ", ".join("%s.dane.test" % d for d in DOMAINS + ["insecure"])
        self.hops = [Gateway(host=addr(5), port=PORT, sink=self.sink, hostname="mx-ee.dane.test",
                             relay_domains=relay, tls_cert=ee_crt, tls_key=ee_key).start(),
                     Gateway(host=addr(6), port=PORT, sink=self.sink, hostname="mx-ta.dane.test",
                             relay_domains=relay, tls_cert=ta_chain,
                             tls_key=os.path.join(self.certs_dir, "mx-ta.dane.test.key")).start()]

    def sender(self, policies, anchor=True, **conf):
        table = table_file("".join("%s %s\n" % kv for kv in policies.items()))
        return Gateway(default_transport="mx", dns_server=self.nsd.address(), smtp_port=str(PORT),
                       dns_trust_anchor=self.nsd.anchor if anchor else None,
                       tls_policy_table=table, **conf).start()


def send(g, rcpt):
    return queue_id(send_message(g.host, 2525, "a@src.test", [rcpt], "Subject: dane %s\r\n\r\nx\r\n" % rcpt))


def queue_list(g):
    return subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "queue", "list"], capture_output=True,
                          text=True, timeout=20).stdout


def deferred(g, qid, text):
    """The attempt for qid deferred with text (its outcome logged: it delivers nothing more)."""
    wait_for(lambda: text in g.log(), 15, "deferral: %s" % text)
    g.attempt_ended(qid)
    assert qid in g.queue_files()
    wait_for(lambda: text in queue_list(g), 10, "the reason in queue list")


def test_rfc7672_usage_3_and_usage_2_authenticate_and_deliver():
    lab = Lab()
    g = lab.sender({"ee.dane.test": "dane-only", "ta.dane.test": "dane-only", "cname.dane.test": "dane-only"})
    send(g, "x@ee.dane.test")
    send(g, "y@ta.dane.test")
    send(g, "z@cname.dane.test")
    msgs = lab.sink.wait_count(3)
    assert all(b"(using TLSv1." in m for m in msgs), msgs[0][:800]
    log = g.log()
    assert re.search(r"TLS to %s:%d mx-ee\.dane\.test: .*certificate verified by DANE: TLSA 3 1 1 matched "
                     r"the certificate at depth 0" % (re.escape(addr(5)), PORT), log), log[-3000:]
    assert re.search(r"TLS to %s:%d mx-ta\.dane\.test: .*certificate verified by DANE: TLSA 2 0 1 matched "
                     r"the certificate at depth 1" % (re.escape(addr(6)), PORT), log), log[-3000:]
    # the CNAME's TLSA records were looked up at its target
    assert re.search(r"TLS to %s:%d alias\.dane\.test: .*by DANE: TLSA 3 1 1" % (re.escape(addr(5)), PORT), log)
    g.stop()


def test_rfc7672_mismatching_tlsa_defers():
    lab = Lab()
    g = lab.sender({"bad.dane.test": "dane"})
    qid = send(g, "x@bad.dane.test")
    deferred(g, qid, "4.7.5 DANE: no TLSA record of mx-bad.dane.test matches the certificate of mx-bad.dane.test")
    assert lab.sink.count() == 0
    g.stop()


def test_rfc7672_bogus_tlsa_defers_and_is_never_insecure():
    lab = Lab()
    g = lab.sender({"bogus.dane.test": "dane"})       # opportunistic: still not a fallback to "may"
    qid = send(g, "x@bogus.dane.test")
    deferred(g, qid, "4.7.5 DANE: DNSSEC validation of the TLSA records of mx-bogus.dane.test failed")
    assert lab.sink.count() == 0
    g.stop()


def test_rfc7672_insecure_zone_falls_back_under_dane_defers_under_dane_only():
    lab = Lab()
    g = lab.sender({"insecure.dane.test": "dane"})
    send(g, "x@insecure.dane.test")
    m = lab.sink.wait_count(1)[0]
    assert b"(using TLSv1." in m                              # opportunistic STARTTLS, not authenticated
    assert re.search(r"TLS to %s:%d mx\.insecure\.dane\.test: .*certificate not verified" %
                     (re.escape(addr(5)), PORT), g.log())
    g.stop()
    g2 = lab.sender({"insecure.dane.test": "dane-only", "hosted.insecure.dane.test": "dane-only"})
    qid = send(g2, "y@insecure.dane.test")
    deferred(g2, qid, "4.7.5 dane-only: no DNSSEC-validated TLSA records for mx.insecure.dane.test "
                      "(its address records are not DNSSEC-signed)")
    assert lab.sink.count() == 1
    # RFC 7672 2.2.1: an insecure MX RRset naming a secure server still gets DANE
    send(g2, "z@hosted.insecure.dane.test")
    lab.sink.wait_count(2)
    assert re.search(r"TLS to %s:%d mx-ee\.dane\.test: .*by DANE: TLSA 3 1 1" % (re.escape(addr(5)), PORT), g2.log())
    g2.stop()


def test_rfc7672_unusable_records_mean_encrypt():
    lab = Lab()
    g = lab.sender({"unusable.dane.test": "dane"})
    send(g, "x@unusable.dane.test")
    m = lab.sink.wait_count(1)[0]
    assert b"(using TLSv1." in m
    assert "certificate not verified" in g.log()
    g.stop()
    g2 = lab.sender({"unusable.dane.test": "dane-only"})
    qid = send(g2, "y@unusable.dane.test")
    deferred(g2, qid, "4.7.5 dane-only: the TLSA records of mx-unusable.dane.test are all unusable for SMTP")
    g2.stop()


def test_rfc8461_dane_beats_mta_sts():
    if os.geteuid() != 0:
        skip("needs root to serve HTTPS on port 443")
    lab = Lab()
    https_policy_server(addr(80), lab.certs, "mta-sts.sts.dane.test",
                        "version: STSv1\nmode: enforce\nmx: *.elsewhere.test\nmax_age: 86400\n")
    g = lab.sender({"sts.dane.test": "dane"}, tls_ca_file=lab.ca)
    send(g, "x@sts.dane.test")
    lab.sink.wait_count(1)
    assert re.search(r"TLS to %s:%d mx-ee\.dane\.test: .*by DANE: TLSA 3 1 1" % (re.escape(addr(5)), PORT), g.log())
    g.stop()
    # without DANE the same policy rules mx-ee.dane.test out
    g2 = lab.sender({"sts.dane.test": "may"}, tls_ca_file=lab.ca)
    qid = send(g2, "y@sts.dane.test")
    deferred(g2, qid, "MTA-STS: no MX host matches the domain's policy")
    assert lab.sink.count() == 1
    g2.stop()


def test_rfc8689_tls_required_no_waives_dane():
    lab = Lab()
    body = "Subject: waived\r\nTLS-Required: No\r\n\r\nx\r\n"
    g = lab.sender({"bad.dane.test": "dane-only"}, tls_required_header="no")
    qid = queue_id(send_message(g.host, 2525, "a@src.test", ["x@bad.dane.test"], body))
    deferred(g, qid, "4.7.5 DANE: no TLSA record of mx-bad.dane.test matches")     # not honoured: DANE holds
    g.stop()
    g2 = lab.sender({"bad.dane.test": "dane-only"})                              # honoured by default
    send_message(g2.host, 2525, "a@src.test", ["y@bad.dane.test"], body)
    m = lab.sink.wait_count(1)[0]
    assert b"(using TLSv1." in m and b"Subject: waived" in m     # still TLS where offered, just not DANE
    g2.stop()


def test_rfc8689_requiretls_goes_over_dane():
    """A REQUIRETLS message: a DANE-authenticated server found through a
    signed MX RRset qualifies; the insecure zone's server does not."""
    lab = Lab()
    d = lab.certs_dir
    g = lab.sender({"ee.dane.test": "dane", "insecure.dane.test": "dane"},
                   tls_cert=os.path.join(d, "gw.postern.test.crt"), tls_key=os.path.join(d, "gw.postern.test.key"))
    ids = []
    for rcpt in ("x@ee.dane.test", "y@insecure.dane.test"):
        c = Client(g.host, 2525)
        c.cmd("EHLO client.test")
        assert c.cmd("STARTTLS").startswith("220")
        c.starttls(cafile=lab.ca, server_name="gw.postern.test")
        c.cmd("EHLO client.test")
        assert c.cmd("MAIL FROM:<a@src.test> REQUIRETLS").startswith("250")
        assert c.cmd("RCPT TO:<%s>" % rcpt).startswith("250")
        assert c.cmd("DATA").startswith("354")
        ids.append(queue_id(c.cmd("Subject: r %s\r\n\r\nx\r\n." % rcpt)))
        c.close()
    # (the next hop cannot pass it on to the plain sink: what counts is that it took it)
    wait_for(lambda: re.search(r"%s: to=<x@ee\.dane\.test>, relay=mx-ee\.dane\.test\[.*status=sent" % ids[0],
                               g.log()), 15, "delivery over DANE")
    assert re.search(r"TLS to %s:%d mx-ee\.dane\.test: .*by DANE" % (re.escape(addr(5)), PORT), g.log())
    assert "accepted from=<a@src.test>" in lab.hops[0].log()
    wait_for(lambda: re.search(r"%s: to=<y@insecure\.dane\.test>.*dsn=5\.7\.30, status=bounced" % ids[1], g.log()),
             15, "the REQUIRETLS bounce")
    g.stop()


def tls_reports(sink):
    """Every TLS report at sink: (message, parsed JSON)."""
    out = []
    for raw in sink.messages():
        m = email.message_from_bytes(raw)
        for part in m.walk():
            if part.get_content_type() == "application/tlsrpt+gzip":
                out.append((m, json.loads(gzip.decompress(base64.b64decode(part.get_payload())))))
    return out


def test_rfc8460_tls_reports_count_sessions_per_policy_domain():
    lab = Lab()
    reports = Sink(addr(3))
    g = lab.sender({"ee.dane.test": "dane", "ta.dane.test": "dane", "bad.dane.test": "dane",
                    "bogus.dane.test": "dane"}, tlsrpt="yes", tlsrpt_interval="4s", tlsrpt_org="Postern Test",
                   transport_table=table_file("reports.test smtp:[%s]:2526\n" % addr(3)))
    send(g, "a@ee.dane.test")
    send(g, "b@ee.dane.test")
    send(g, "c@ta.dane.test")
    bad, bogus = send(g, "d@bad.dane.test"), send(g, "e@bogus.dane.test")
    lab.sink.wait_count(3)
    wait_for(lambda: "to=<d@bad.dane.test>" in g.log() and "to=<e@bogus.dane.test>" in g.log(), 15, "attempts")
    for qid in (bad, bogus):           # no more attempts from here: the counts are what the log says
        subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "queue", "delete", qid], check=True,
                       capture_output=True, timeout=20)
    g.stop()                           # the counts are kept across a restart
    g.start()
    log = g.log()
    n_bad = len(re.findall(r"to=<d@bad\.dane\.test>.*status=deferred", log))
    n_bogus = len(re.findall(r"to=<e@bogus\.dane\.test>.*status=deferred", log))
    assert n_bad >= 1 and n_bogus >= 1

    def totals():
        t = {}
        for m, r in tls_reports(reports):
            for p in r["policies"]:
                d = p["policy"]["policy-domain"]
                ok, fail, det = t.get(d, (0, 0, {}))
                for f in p.get("failure-details", []):
                    det[f["result-type"]] = det.get(f["result-type"], 0) + f["failed-session-count"]
                t[d] = (ok + p["summary"]["total-successful-session-count"],
                        fail + p["summary"]["total-failure-session-count"], det)
        return t
    wait_for(lambda: totals().get("ee.dane.test", (0,))[0] >= 2 and "bad.dane.test" in totals() and
             "bogus.dane.test" in totals(), 30, "TLS reports for ee, bad and bogus")
    time.sleep(5)                      # a later period would add to nothing: the counts stay put
    t = totals()
    assert t["ee.dane.test"][:2] == (2, 0), t
    assert t["bad.dane.test"][:2] == (0, n_bad) and t["bad.dane.test"][2] == {"tlsa-invalid": n_bad}, t
    assert t["bogus.dane.test"][:2] == (0, n_bogus) and t["bogus.dane.test"][2] == {"dnssec-invalid": n_bogus}, t
    assert "ta.dane.test" not in t and "cname.dane.test" not in t      # https: only / no record
    # the shape RFC 8460 4.4 and 5.3 give the report and its message
    m, r = [x for x in tls_reports(reports) if x[1]["policies"][0]["policy"]["policy-domain"] == "bad.dane.test"][0]
    assert m["TLS-Report-Domain"] == "bad.dane.test" and m["TLS-Report-Submitter"] == "gw.postern.test"
    assert m.get_content_type() == "multipart/report" and m.get_param("report-type") == "tlsrpt"
    assert re.fullmatch(r"Report Domain: bad\.dane\.test Submitter: gw\.postern\.test Report-ID: <\S+>",
                        m["Subject"]), m["Subject"]
    assert m["To"] == "<tls@reports.test>"
    part = [p for p in m.walk() if p.get_content_type() == "application/tlsrpt+gzip"][0]
    assert re.fullmatch(r"gw\.postern\.test!bad\.dane\.test!\d+!\d+\.json\.gz", part.get_filename())
    assert set(r) == {"organization-name", "date-range", "contact-info", "report-id", "policies"}, r
    assert r["organization-name"] == "Postern Test" and r["contact-info"] == "postmaster@gw.postern.test"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["date-range"]["start-datetime"])
    assert r["date-range"]["end-datetime"] > r["date-range"]["start-datetime"]
    pol = r["policies"][0]
    assert pol["policy"]["policy-type"] == "tlsa" and pol["policy"]["mx-host"] == ["mx-bad.dane.test"]
    assert pol["policy"]["policy-string"] == ["3 1 1 " + "ab" * 32], pol
    f = pol["failure-details"][0]
    assert f["receiving-mx-hostname"] == "mx-bad.dane.test" and f["receiving-ip"] == addr(5)
    assert f["sending-mta-ip"].startswith("127."), f
    g.stop()


def test_without_the_trust_anchor_nothing_is_secure():
    """posternd validates itself: NSD sets no AD bit, and without the anchor
    the same signed zone is only insecure, so dane-only refuses it."""
    lab = Lab()
    g = lab.sender({}, anchor=False, tls_policy="dane-only")      # the default policy this time
    qid = send(g, "x@ee.dane.test")
    deferred(g, qid, "dane-only: no DNSSEC-validated TLSA records for mx-ee.dane.test")
    g.stop()


run_tests(globals())
