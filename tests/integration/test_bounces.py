"""Bounces: 5xx and expiry produce an RFC 3464 DSN that reaches the
sender's sink and parses as multipart/report; a bounce to the null sender
is never sent; delay warnings go out once; a mail loop (too many Received
headers) bounces."""
from harness import *


def routed_gateway(bad_extra=(), **conf):
    """Sender domain src.test -> sender sink; bad.test -> a sink run with bad_extra."""
    sender_sink = Sink(addr(2))
    bad_sink = Sink(addr(3), port=2600, extra=list(bad_extra)) if bad_extra is not None else None
    table = tempfile.NamedTemporaryFile("w", delete=False, suffix=".transport")
    table.write("bad.test smtp:[%s]:2600\n" % addr(3))
    table.close()
    on_cleanup(lambda: os.unlink(table.name))
    g = Gateway(sink=sender_sink, transport_table="file:" + table.name, **conf).start()
    return g, sender_sink, bad_sink


def test_5xx_produces_a_dsn_to_the_sender():
    g, sender_sink, _ = routed_gateway(bad_extra=["-f", "RCPT"])
    qid = queue_id(send_message(g.host, 2525, "alice@src.test", ["nobody@bad.test"],
                                "Subject: will bounce\r\nMessage-ID: <b1@src.test>\r\n\r\nhello\r\n"))
    raw = sender_sink.wait_count(1)[0]
    assert sink_rcpts(raw) == [b"alice@src.test"]
    assert b"X-Mail-Args: <>" in raw            # sent from the null sender
    msg, parts, blocks = parse_dsn(raw)
    assert msg["From"] == "Mail Delivery System <MAILER-DAEMON@gw.postern.test>"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    per_msg, per_rcpt = blocks[0], blocks[1]
    assert per_msg["Reporting-MTA"] == "dns; gw.postern.test"
    assert per_msg["X-Postern-Queue-ID"] == qid
    assert per_rcpt["Final-Recipient"] == "rfc822; nobody@bad.test"
    assert per_rcpt["Action"] == "failed"
    assert per_rcpt["Status"] == "5.3.0"
    assert per_rcpt["Diagnostic-Code"].startswith("smtp; 500 5.3.0")
    assert "Message-ID: <b1@src.test>" in parts[2].get_payload()
    wait_for(lambda: not g.queue_files(), 5, "original and DSN gone from the spool")
    g.stop()


def test_bounce_to_null_sender_is_never_sent():
    g, sender_sink, _ = routed_gateway(bad_extra=["-f", "RCPT"])
    c = Client(g.host)
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<>").startswith("250")
    assert c.cmd("RCPT TO:<nobody@bad.test>").startswith("250")
    c.cmd("DATA")
    c.send("Subject: a bounce that bounces\r\n\r\nx\r\n")
    qid = queue_id(c.cmd("."))
    wait_for(lambda: qid + ": removed" in g.log(), 10, "message removed")
    assert qid + ": to=<nobody@bad.test>: no non-delivery notification (the sender is null)" in g.log()
    time.sleep(0.5)
    assert sender_sink.count() == 0
    g.stop()


def test_expiry_bounces_with_4_4_7():
    # bad.test's next hop is down for good; the message expires after 3s
    g, sender_sink, _ = routed_gateway(bad_extra=None, max_queue_lifetime="3s", retry_min="1s", retry_max="1s")
    send_message(g.host, 2525, "alice@src.test", ["x@bad.test"], "Subject: expires\r\n\r\nx\r\n")
    raw = sender_sink.wait_count(1, timeout=20)[0]
    _, _, blocks = parse_dsn(raw)
    assert blocks[1]["Action"] == "failed"
    assert blocks[1]["Status"] == "4.4.7"
    assert "Connection refused" in blocks[1]["Diagnostic-Code"]
    assert "status=expired" in g.log()
    wait_for(lambda: not g.queue_files(), 5, "spool to empty")
    g.stop()


def test_delay_warning_is_sent_once():
    g, sender_sink, _ = routed_gateway(bad_extra=None, delay_warning_time="2s", retry_min="1s", retry_max="1s")
    qid = queue_id(send_message(g.host, 2525, "alice@src.test", ["x@bad.test"], "Subject: slow\r\n\r\nx\r\n"))
    raw = sender_sink.wait_count(1, timeout=15)[0]
    msg, _, blocks = parse_dsn(raw)
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    assert blocks[1]["Action"] == "delayed"
    time.sleep(4)     # more retries happen; no second warning
    assert sender_sink.count() == 1
    assert g.queue_files() == [qid]      # still queued, still retried
    g.stop()


def test_mail_loop_bounces():
    g, sender_sink, bad_sink = routed_gateway(bad_extra=[], max_hop_count="10")
    hops = "".join("Received: from hop%d.test by relay%d.test; Sun, 22 Nov 2026 10:00:00 +0000\r\n" % (i, i)
                   for i in range(10))
    send_message(g.host, 2525, "alice@src.test", ["x@bad.test"], hops + "Subject: loop\r\n\r\nx\r\n")
    raw = sender_sink.wait_count(1)[0]
    _, _, blocks = parse_dsn(raw)
    assert blocks[1]["Status"] == "5.4.6", blocks[1]["Status"]
    assert "mail forwarding loop" in blocks[1]["Diagnostic-Code"]
    assert bad_sink.count() == 0
    # 9 foreign hops + ours = 10: within the limit, delivered
    ok_hops = "".join(hops.splitlines(True)[:9])
    send_message(g.host, 2525, "alice@src.test", ["y@bad.test"], ok_hops + "Subject: fine\r\n\r\nx\r\n")
    bad_sink.wait_count(1)
    g.stop()


run_tests(globals())
