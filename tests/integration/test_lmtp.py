"""LMTP delivery (RFC 2033) into a real Dovecot LMTP service started here:
`lmtp:unix:/PATH` and `lmtp:[host]:port` transports, LHLO, and the reply
per accepted recipient after the final dot, each settled on its own (one
delivered, one over quota bounced, one refused at RCPT, in the same
transaction); what arrived is read back with doveadm fetch."""
from harness import *


def lmtp_gateway(dovecot, sender_sink):
    """mail.test over the Unix socket, tcp.test over TCP to the address, and
    named.test over TCP to a host name (looked up, A only)."""
    dns = DnsServer(["lmtp-host.test. A %s" % dovecot.host])
    table = tempfile.NamedTemporaryFile("w", delete=False, suffix=".transport")
    table.write("mail.test lmtp:unix:%s\ntcp.test lmtp:[%s]:%d\nnamed.test lmtp:[lmtp-host.test]:%d\n" %
                (dovecot.socket, dovecot.host, dovecot.port, dovecot.port))
    table.close()
    os.chmod(table.name, 0o644)
    on_cleanup(lambda: os.unlink(table.name))
    return Gateway(sink=sender_sink, transport_table="file:" + table.name, dns_server=dns.address(),
                   relay_domains="example.test, mail.test, tcp.test, named.test").start()


def send(g, rcpts, subject):
    c = Client(g.host)
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<alice@src.test>").startswith("250")
    for r in rcpts:
        assert c.cmd("RCPT TO:<%s>" % r).startswith("250")
    assert c.cmd("DATA").startswith("354")
    c.send("Subject: %s\r\nFrom: alice@src.test\r\n\r\n%s" % (subject, ("x" * 70 + "\r\n") * 40))
    qid = queue_id(c.cmd("."))
    c.close()
    return qid


def test_lmtp_over_a_unix_socket_settles_each_recipient_on_its_own():
    dovecot = DovecotLmtp({"anne": None, "full": "1K", "bob": None}, addr(5), 2424)
    sender_sink = Sink(addr(2))
    g = lmtp_gateway(dovecot, sender_sink)
    # anne: delivered; full: accepted at RCPT, over quota after the dot (a
    # per-recipient 552 from LMTP); ghost: no such user, refused at RCPT
    qid = send(g, ["anne@mail.test", "full@mail.test", "ghost@mail.test"], "three ways")
    bounce = sender_sink.wait_count(1)[0]
    msg, parts, blocks = parse_dsn(bounce)
    failed = {b["Final-Recipient"]: b for b in blocks[1:]}
    assert set(failed) == {"rfc822; full@mail.test", "rfc822; ghost@mail.test"}, (bounce.decode(), g.log())
    assert failed["rfc822; full@mail.test"]["Status"].startswith("5.2."), failed
    assert "end of DATA" in bounce.decode(errors="replace")     # settled by the reply after the dot
    assert failed["rfc822; ghost@mail.test"]["Status"].startswith("5.1."), failed
    got = dovecot.fetch("anne")
    assert len(got) == 1 and "Subject: three ways" in got[0], got
    assert dovecot.fetch("full") == []
    log = g.log()
    assert re.search(r"%s: to=<anne@mail\.test>, relay=%s, .*status=sent \(250 " % (qid, re.escape(dovecot.socket)),
                     log), log
    assert "lmtp(anne" in dovecot.log() and "saved mail to INBOX" in dovecot.log()
    g.stop()


def test_lmtp_over_tcp_and_a_refused_transaction_leaves_nothing_open():
    dovecot = DovecotLmtp({"bob": None}, addr(5), 2424)
    sender_sink = Sink(addr(2))
    g = lmtp_gateway(dovecot, sender_sink)
    qid = send(g, ["bob@tcp.test"], "over tcp")
    wait_for(lambda: len(dovecot.fetch("bob")) == 1, 20, "bob's message")
    assert "Subject: over tcp" in dovecot.fetch("bob")[0]
    assert re.search(r"%s: to=<bob@tcp\.test>, relay=%s\[%s\]:2424, .*status=sent" %
                     (qid, re.escape(addr(5)), re.escape(addr(5))), g.log()), g.log()
    # a host name: looked up (A), and its address speaks LMTP too
    qid = send(g, ["bob@named.test"], "by name")
    wait_for(lambda: len(dovecot.fetch("bob")) == 2, 20, "bob's second message")
    assert re.search(r"%s: to=<bob@named\.test>, relay=lmtp-host\.test\[%s\]:2424, .*status=sent \(250 " %
                     (qid, re.escape(addr(5))), g.log()), g.log()
    # nobody known: every RCPT refused, DATA refused, nothing waits for a dot reply
    send(g, ["ghost1@tcp.test", "ghost2@tcp.test"], "nobody")
    bounce = sender_sink.wait_count(1)[0]
    blocks = parse_dsn(bounce)[2]
    assert sorted(b["Final-Recipient"] for b in blocks[1:]) == ["rfc822; ghost1@tcp.test", "rfc822; ghost2@tcp.test"]
    assert "timed out" not in g.log()
    g.stop()


def test_lmtp_transports_are_checked_at_start():
    for bad in ("lmtp:unix:relative/path", "lmtp:unix:/" + "x" * 120, "lmtp:", "lmtpx:[127.0.0.1]:24"):
        g = Gateway(default_transport=bad)
        r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf, "-t"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode != 0 and "bad next hop" in r.stdout + r.stderr, (bad, r.stdout, r.stderr)
    good = Gateway(default_transport="lmtp:unix:/run/dovecot/lmtp")
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", good.conf, "-t"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


run_tests(globals())
