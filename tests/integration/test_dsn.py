"""DSN (RFC 3461): NOTIFY/ORCPT on RCPT and RET/ENVID on MAIL are stored
with the message, passed on to next hops that offer DSN (smtp-sink, a real
Postfix), and honoured by our own notices: a "relayed" success notice when
the next hop has no DSN, no bounce for NOTIFY=NEVER or NOTIFY without
FAILURE, the whole message returned for RET=FULL."""
from harness import *


def routed(hop_extra=(), hop=None, **conf):
    """Mail for src.test (the senders) -> sender sink; example.test -> the next hop
    (an smtp-sink run with hop_extra, or `hop` as "[ip]:port")."""
    sender_sink = Sink(addr(2))
    hop_sink = None
    if hop is None:
        hop_sink = Sink(addr(3), port=2600, extra=list(hop_extra))
        hop = "[%s]:2600" % addr(3)
    table = tempfile.NamedTemporaryFile("w", delete=False, suffix=".transport")
    table.write("example.test smtp:%s\n" % hop)
    table.close()
    on_cleanup(lambda: os.unlink(table.name))
    g = Gateway(sink=sender_sink, transport_table="file:" + table.name, **conf).start()
    return g, sender_sink, hop_sink


def send_dsn_mail(g, mail_params, rcpts, body="Subject: dsn test\r\n\r\nthe body\r\n"):
    """rcpts: [(address, "NOTIFY=.. ORCPT=..")]; returns the queue ID."""
    c = Client(g.host)
    assert "250-DSN" in c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<alice@src.test> %s" % mail_params).startswith("250")
    for addr_, params in rcpts:
        rep = c.cmd(("RCPT TO:<%s> %s" % (addr_, params)).rstrip())
        assert rep.startswith("250"), rep
    assert c.cmd("DATA").startswith("354")
    c.send(body)
    qid = queue_id(c.cmd("."))
    c.close()
    return qid


def test_notify_success_to_a_next_hop_without_dsn_gives_a_relayed_notice():
    g, sender_sink, hop_sink = routed(hop_extra=["-N"])      # -N: smtp-sink does not offer DSN
    qid = send_dsn_mail(g, "RET=FULL ENVID=QQ+2B1", [
        ("x@example.test", "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Alias+2Bx@example.test"),
        ("y@example.test", "")])
    delivered = hop_sink.wait_count(1)[0]
    assert sorted(sink_rcpts(delivered)) == [b"x@example.test", b"y@example.test"]
    assert b"NOTIFY=" not in delivered and b"RET=" not in delivered     # not offered: not sent
    raw = sender_sink.wait_count(1)[0]
    assert sink_rcpts(raw) == [b"alice@src.test"]
    assert b"X-Mail-Args: <>" in raw
    msg, parts, blocks = parse_dsn(raw)                  # headers only even though RET=FULL
    assert msg["Subject"] == "Successful Mail Relay Report"
    assert blocks[0]["Original-Envelope-Id"] == "QQ+1"
    assert blocks[0]["X-Postern-Queue-ID"] == qid
    assert len(blocks) == 2, "only x asked for a success notice"
    assert blocks[1]["Original-Recipient"] == "rfc822;Alias+x@example.test"
    assert blocks[1]["Final-Recipient"] == "rfc822; x@example.test"
    assert blocks[1]["Action"] == "relayed"
    assert blocks[1]["Status"] == "2.0.0"
    assert "the body" not in raw.decode()
    wait_for(lambda: not g.queue_files(), 10, "the spool to drain")
    time.sleep(0.5)
    assert sender_sink.count() == 1
    g.stop()


def test_dsn_parameters_are_passed_to_a_next_hop_with_dsn():
    g, sender_sink, hop_sink = routed()
    send_dsn_mail(g, "RET=HDRS ENVID=QQ+2B1", [
        ("x@example.test", "NOTIFY=SUCCESS,DELAY ORCPT=rfc822;Alias+2Bx@example.test"),
        ("y@example.test", "NOTIFY=NEVER"), ("z@example.test", "")])
    delivered = hop_sink.wait_count(1)[0]
    assert re.search(rb"^X-Mail-Args: <alice@src.test> .*RET=HDRS ENVID=QQ\+2B1", delivered, re.M), delivered[:600]
    args = re.findall(rb"^X-Rcpt-Args: (.*)$", delivered, re.M)
    assert b"<x@example.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;Alias+2Bx@example.test" in args, args
    assert b"<y@example.test> NOTIFY=NEVER" in args, args
    assert b"<z@example.test>" in args, args
    # the next hop took over: no notice from us
    wait_for(lambda: not g.queue_files(), 10, "the spool to drain")
    time.sleep(0.5)
    assert sender_sink.count() == 0
    g.stop()


def test_notify_never_and_notify_without_failure_suppress_the_bounce():
    g, sender_sink, _ = routed(hop_extra=["-f", "RCPT"])   # every recipient gets 5xx
    qid = send_dsn_mail(g, "RET=FULL", [
        ("never@example.test", "NOTIFY=NEVER"), ("success@example.test", "NOTIFY=SUCCESS"),
        ("failure@example.test", "NOTIFY=FAILURE ORCPT=rfc822;f+40example.test"), ("default@example.test", "")])
    raw = sender_sink.wait_count(1)[0]
    msg, parts, blocks = parse_dsn(raw, returned="message/rfc822")      # RET=FULL: the whole message
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    failed = sorted(b["Final-Recipient"] for b in blocks[1:])
    assert failed == ["rfc822; default@example.test", "rfc822; failure@example.test"], failed
    assert [b["Original-Recipient"] for b in blocks[1:] if b["Original-Recipient"]] == ["rfc822;f@example.test"]
    assert "the body" in parts[2].as_string()
    log = g.log()
    for a in ("never", "success"):
        assert "%s: to=<%s@example.test>: no non-delivery notification (NOTIFY excludes FAILURE)" % (qid, a) in log
    wait_for(lambda: not g.queue_files(), 10, "the spool to drain")
    time.sleep(0.5)
    assert sender_sink.count() == 1
    g.stop()


def test_delay_notice_only_for_recipients_that_allow_it():
    g, sender_sink, _ = routed(hop_extra=["-r", "RCPT"], delay_warning_time="1s")   # -r: 4xx for every RCPT
    send_dsn_mail(g, "", [("quiet@example.test", "NOTIFY=FAILURE"), ("loud@example.test", "NOTIFY=DELAY"),
                          ("plain@example.test", "")])
    raw = sender_sink.wait_count(1, timeout=20)[0]
    msg, parts, blocks = parse_dsn(raw)
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    assert sorted(b["Final-Recipient"] for b in blocks[1:]) == ["rfc822; loud@example.test",
                                                                "rfc822; plain@example.test"]
    assert all(b["Action"] == "delayed" for b in blocks[1:])
    g.stop()


def test_dsn_survives_a_restart_with_the_message_queued():
    sender_sink = Sink(addr(2))         # the next hop is started only after the restart
    table = tempfile.NamedTemporaryFile("w", delete=False, suffix=".transport")
    table.write("example.test smtp:[%s]:2600\n" % addr(3))
    table.close()
    on_cleanup(lambda: os.unlink(table.name))
    g = Gateway(sink=sender_sink, transport_table="file:" + table.name).start()
    send_dsn_mail(g, "ENVID=E1", [("x@example.test", "NOTIFY=SUCCESS ORCPT=rfc822;o+40example.test")])
    wait_for(lambda: "status=deferred" in g.log(), 10, "a deferral while the next hop is down")
    g.stop()
    g.start()
    hop_sink = Sink(addr(3), port=2600, extra=["-N"])
    hop_sink.wait_count(1, timeout=20)
    _, _, blocks = parse_dsn(sender_sink.wait_count(1, timeout=20)[0])
    assert blocks[0]["Original-Envelope-Id"] == "E1"
    assert blocks[1]["Original-Recipient"] == "rfc822;o@example.test"
    assert blocks[1]["Action"] == "relayed"
    g.stop()


def test_real_postfix_next_hop_gets_the_dsn_parameters():
    if not Postfix.available():
        skip("needs root and Postfix")
    final = Sink(addr(6), port=2600)
    pf = Postfix(addr(5), 2525, "[%s]:2600" % addr(6))
    g, sender_sink, _ = routed(hop="[%s]:2525" % addr(5))
    send_dsn_mail(g, "RET=HDRS ENVID=PF+2B1", [("x@example.test", "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;o+40example.test")])
    delivered = final.wait_count(1, timeout=30)[0]
    # Postfix accepted them from us and passed them on (in its own order and xtext spelling)
    mail_args = re.search(rb"^X-Mail-Args: <alice@src.test> (.*)$", delivered, re.M).group(1).split()
    assert sorted(mail_args) == [b"ENVID=PF+2B1", b"RET=HDRS"], delivered[:600]
    rcpt_args = re.search(rb"^X-Rcpt-Args: <x@example.test> (.*)$", delivered, re.M).group(1).split()
    assert sorted(rcpt_args) == [b"NOTIFY=SUCCESS,FAILURE", b"ORCPT=rfc822;o@example.test"], delivered[:600]
    assert "status=sent" in pf.log()
    wait_for(lambda: not g.queue_files(), 10, "the spool to drain")
    time.sleep(0.5)
    assert sender_sink.count() == 0          # Postfix took over DSN duty
    g.stop()


run_tests(globals())
