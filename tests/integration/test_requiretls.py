"""REQUIRETLS (RFC 8689): offered and taken only over TLS, kept in the
spool, relayed only over authenticated TLS to a server that offers it, and
otherwise returned with 5.7.30 by a notice that is itself REQUIRETLS.

The gateway under test (addr(1)) relays everything to a second posternd
(addr(5):2526, certificate mx.right.test from the test's CA) that cannot
deliver onwards, so what it received stays in its queue to be read; and,
for nor.test, to a stock Postfix with STARTTLS but without REQUIRETLS."""
import os
import re
import time

from harness import (Client, Gateway, Postfix, Sink, addr, make_certs, queue_id, run_tests, send_message,
                     table_file, wait_for)


class Lab:
    def __init__(self, start_peer=True):
        self.certs = make_certs(["gw.postern.test", "mx.right.test"])
        d, self.ca = self.certs
        # the next hop: holds everything (its own next hop, addr(9), is not there)
        self.peer = Gateway(host=addr(5), port=2526, hostname="mx.right.test",
                            relay_domains="example.test, src.test, plain.test",
                            default_transport="smtp:[%s]:2526" % addr(9), tls_policy="verify match=next.test",
                            tls_cert=os.path.join(d, "mx.right.test.crt"),
                            tls_key=os.path.join(d, "mx.right.test.key"))
        if start_peer:
            self.peer.start()
        self.g = Gateway(tls_cert=os.path.join(d, "gw.postern.test.crt"),
                         tls_key=os.path.join(d, "gw.postern.test.key"), tls_ca_file=self.ca,
                         default_transport="smtp:[%s]:2526" % addr(5),
                         transport_table=table_file("nor.test smtp:[%s]:2526\n" % addr(6)),
                         tls_policy_table=table_file("example.test verify match=mx.right.test\n"
                                                "src.test verify match=mx.right.test\n"
                                                "nor.test verify match=mx.right.test\n"
                                                "plain.test may\n")).start()

    def client(self, tls=True):
        c = Client(self.g.host, 2525)
        assert c.cmd("EHLO client.test").startswith("250")
        if tls:
            assert c.cmd("STARTTLS").startswith("220")
            c.starttls(cafile=self.ca, server_name="gw.postern.test")
            self.ehlo = c.cmd("EHLO client.test")
        return c

    def send_requiretls(self, rcpt, subject="secret", extra_headers=""):
        c = self.client()
        assert c.cmd("MAIL FROM:<a@src.test> REQUIRETLS").startswith("250")
        assert c.cmd("RCPT TO:<%s>" % rcpt).startswith("250")
        assert c.cmd("DATA").startswith("354")
        r = c.cmd("Subject: %s\r\n%s\r\nconfidential\r\n." % (subject, extra_headers))
        c.close()
        return queue_id(r)


def queued(g):
    """{queue ID: envelope and message text} of what g holds."""
    out = {}
    for q in g.queue_files():
        try:
            with open(os.path.join(g.spool, "queue", q), "rb") as f:
                out[q] = f.read().decode(errors="replace")
        except FileNotFoundError:
            pass
    return out


def held_by(g, pred, what, timeout=15):
    return wait_for(lambda: [t for t in queued(g).values() if pred(t)], timeout, what)


def test_offered_and_accepted_only_over_tls():
    lab = Lab()
    c = lab.client(tls=False)
    ehlo = c.cmd("EHLO client.test")
    assert "REQUIRETLS" not in ehlo, ehlo
    assert c.cmd("MAIL FROM:<a@src.test> REQUIRETLS").startswith("530 5.7.10")
    c.close()
    c = lab.client()
    assert "250-REQUIRETLS" in lab.ehlo, lab.ehlo
    assert c.cmd("MAIL FROM:<a@src.test> REQUIRETLS=yes").startswith("501 5.5.4")
    assert c.cmd("MAIL FROM:<a@src.test> REQUIRETLS REQUIRETLS").startswith("501 5.5.4")
    assert c.cmd("MAIL FROM:<a@src.test> REQUIRETLS").startswith("250")
    c.close()


def test_kept_in_the_spool_and_relayed_with_requiretls():
    lab = Lab(start_peer=False)          # the next hop is down: the message waits in our queue
    qid = lab.send_requiretls("x@example.test")
    wait_for(lambda: qid in lab.g.queue_files(), 5, "the message in the queue")
    assert "\nrequiretls=1\n" in queued(lab.g)[qid]
    lab.g.stop()                         # and it survives a restart with the flag
    lab.g.start()
    lab.peer.start()
    got = held_by(lab.peer, lambda t: "Subject: secret" in t, "the message at the next hop")[0]
    assert "\nrequiretls=1\n" in got, got[:600]            # the next hop was told REQUIRETLS
    assert re.search(r"TLS to %s:2526: .*certificate verified" % re.escape(addr(5)), lab.g.log())
    wait_for(lambda: qid not in lab.g.queue_files(), 10, "the message to leave our queue")


def test_unauthenticated_next_hop_is_refused_with_5_7_30_and_the_notice_is_requiretls():
    lab = Lab()
    qid = lab.send_requiretls("y@plain.test", subject="not for plain")      # "may": no authentication
    wait_for(lambda: "status=bounced" in lab.g.log(), 15, "the bounce")
    assert re.search(r"%s: to=<y@plain\.test>.*dsn=5\.7\.30, status=bounced \(550 5\.7\.30 REQUIRETLS support "
                     r"required: the next hop is an address without a verify policy" % qid, lab.g.log()), \
        lab.g.log()[-2000:]
    # the notice went to the sender's domain (verify) with REQUIRETLS itself
    notice = held_by(lab.peer, lambda t: "\nfrom=\n" in t, "the notice at the next hop")[0]
    assert "\nrequiretls=1\n" in notice and "5.7.30" in notice and "rcpt=a@src.test" in notice, notice[:1500]
    # and the message itself never went out
    assert not [t for t in queued(lab.peer).values() if "Subject: not for plain" in t and "\nfrom=a@" in t]


def test_next_hop_without_requiretls_bounces():
    if not Postfix.available():
        skip("needs root and postfix to run a private Postfix")
    lab = Lab()
    sink = Sink(addr(2))
    d = lab.certs[0]
    pf = Postfix(addr(6), 2526, "[%s]:%d" % (sink.host, sink.port), main={
        "myhostname": "mx.right.test", "smtpd_tls_security_level": "may",
        "smtpd_tls_cert_file": os.path.join(d, "mx.right.test.crt"),
        "smtpd_tls_key_file": os.path.join(d, "mx.right.test.key")})
    qid = lab.send_requiretls("z@nor.test")
    wait_for(lambda: re.search(r"%s: to=<z@nor\.test>.*status=bounced" % qid, lab.g.log()), 20, "the bounce")
    assert "550 5.7.30 REQUIRETLS support required: no mail server for nor.test offers REQUIRETLS" in lab.g.log()
    # Postfix's certificate was verified: it is REQUIRETLS itself that is missing
    assert re.search(r"TLS to %s:2526: .*certificate verified" % re.escape(addr(6)), lab.g.log())
    held_by(lab.peer, lambda t: "\nfrom=\n" in t and "5.7.30" in t, "the notice")
    # the same message without REQUIRETLS goes through Postfix
    send_message(lab.g.host, 2525, "a@src.test", ["w@nor.test"], "Subject: ordinary\r\n\r\nx\r\n")
    m = sink.wait_count(1)[0]
    assert b"Subject: ordinary" in m
    time.sleep(0.5)
    assert sink.count() == 1
    pf.stop()


run_tests(globals())
