"""SMTP server behaviour on the wire: every command, every error reply with
its enhanced status code, limits, pipelining, timeouts, Received header."""
from harness import *

MSG = "From: a@src.test\r\nTo: x@example.test\r\nSubject: hi\r\n\r\nbody line\r\n"


def gw(**conf):
    sink = Sink(addr(2))
    g = Gateway(sink=sink, **conf).start()
    return g, sink


def test_greeting_and_ehlo_keywords():
    g, _ = gw(message_size_limit="1M")
    c = Client(g.host)
    assert c.banner == "220 gw.postern.test ESMTP Postern", c.banner
    ehlo = c.cmd("EHLO client.test").split("\n")
    assert ehlo[0] == "250-gw.postern.test"
    kws = [l[4:] for l in ehlo[1:]]
    for k in ("PIPELINING", "SIZE 1048576", "8BITMIME", "DSN", "ENHANCEDSTATUSCODES", "SMTPUTF8"):
        assert k in kws, (k, kws)
    assert ehlo[-1][3] == " "
    assert c.cmd("HELO client.test") == "250 gw.postern.test"
    assert c.cmd("EHLO").startswith("501 5.5.4")
    assert c.cmd("HELO").startswith("501 5.5.4")
    g.stop()


def test_simple_commands():
    g, _ = gw()
    c = Client(g.host)
    assert c.cmd("NOOP") == "250 2.0.0 Ok"
    assert c.cmd("VRFY someone").startswith("252 2.0.0")
    assert c.cmd("VRFY").startswith("501 5.5.4")
    assert c.cmd("HELP").startswith("214 2.0.0")
    assert c.cmd("EXPN list").startswith("502 5.5.1")
    assert c.cmd("FOO bar") == "500 5.5.2 Error: command not recognized"
    assert c.cmd("RSET") == "250 2.0.0 Ok"
    assert c.cmd("QUIT") == "221 2.0.0 Bye"
    assert c.closed()
    g.stop()


def test_sequence_errors():
    g, _ = gw()
    c = Client(g.host)
    assert c.cmd("MAIL FROM:<a@src.test>").startswith("503 5.5.1")
    c.cmd("EHLO client.test")
    assert c.cmd("RCPT TO:<x@example.test>").startswith("503 5.5.1")
    assert c.cmd("DATA").startswith("503 5.5.1")
    assert c.cmd("MAIL FROM:<a@src.test>") == "250 2.1.0 Ok"
    assert c.cmd("MAIL FROM:<a@src.test>").startswith("503 5.5.1 Error: nested MAIL")
    assert c.cmd("DATA").startswith("554 5.5.1")
    assert c.cmd("RSET") == "250 2.0.0 Ok"
    assert c.cmd("RCPT TO:<x@example.test>").startswith("503 5.5.1")
    g.stop()


def test_syntax_errors():
    g, _ = gw()
    c = Client(g.host)
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:a@src.test").startswith("501 5.5.4")
    assert c.cmd("MAIL FROM:<a..b@src.test>").startswith("501 5.1.7")
    assert c.cmd("MAIL FROM:<a@src.test> FOO=1").startswith("555 5.5.4")
    assert c.cmd("MAIL FROM:<j\xf6rg@src.test>").startswith("553 5.6.7")
    assert c.cmd("MAIL FROM:<a@src.test> BODY=8BITMIME").startswith("250")
    assert c.cmd("RCPT TO:<bad address@example.test>").startswith("501 5.1.3")
    assert c.cmd("RCPT TO:<x@example.test> FOO=1").startswith("555 5.5.4")
    assert c.cmd("RCPT TO:<x@example.test> NOTIFY=NEVER,SUCCESS").startswith("501 5.5.4")
    assert c.cmd("RCPT TO:<postmaster>").startswith("550 5.1.1")
    assert c.cmd("DATA now").startswith("501 5.5.4")
    c.send(b"NOOP \x01\r\n")
    assert c.reply().startswith("500 5.5.2")
    g.stop()


def test_bare_postmaster_goes_to_postmaster_address():
    """RFC 5321 4.5.1: <postmaster> without a domain is accepted (from any
    client, relay or not) and delivered to postmaster_address."""
    g, sink = gw(postmaster_address="hostmaster@example.test")
    c = Client(g.host, source=addr(9))           # not trusted: may not relay
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<a@src.test>").startswith("250")
    assert c.cmd("RCPT TO:<elsewhere@other.test>").startswith("554 5.7.1")
    assert c.cmd("RCPT TO:<PostMaster>").startswith("250")
    assert c.cmd("RCPT TO:<postmistress>").startswith("501 5.1.3")     # only postmaster goes bare
    assert c.cmd("DATA").startswith("354")
    c.send(MSG)
    assert c.cmd(".").startswith("250")
    c.close()
    m = sink.wait_count(1)[0]
    assert sink_rcpts(m) == [b"hostmaster@example.test"], sink_rcpts(m)
    assert "RCPT <PostMaster> from [%s]: to postmaster_address <hostmaster@example.test>" % addr(9) in g.log()
    g.stop()


def test_command_line_limit():
    g, _ = gw()
    c = Client(g.host)
    c.cmd("EHLO client.test")
    # 510 chars + CRLF = 512: allowed; 511 + CRLF: too long
    assert c.cmd("NOOP " + "x" * 505) == "250 2.0.0 Ok"
    assert c.cmd("NOOP " + "x" * 506).startswith("500 5.5.2")
    # a huge line without newline is cut off once, then the session goes on
    c.send("NOOP " + "y" * 5000)
    assert c.reply().startswith("500 5.5.2")
    c.send("\r\n")
    assert c.cmd("NOOP") == "250 2.0.0 Ok"
    g.stop()


def test_size_enforced_at_mail_and_in_data():
    g, sink = gw(message_size_limit="2k")
    c = Client(g.host)
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<a@src.test> SIZE=4096").startswith("552 5.3.4")
    assert c.cmd("MAIL FROM:<a@src.test> SIZE=100").startswith("250")
    assert c.cmd("RCPT TO:<x@example.test>").startswith("250")
    assert c.cmd("DATA").startswith("354")
    c.send(("Subject: big\r\n\r\n" + ("z" * 70 + "\r\n") * 60))
    assert c.cmd(".").startswith("552 5.3.4")
    # the session is still usable and the next message goes through
    assert c.cmd("MAIL FROM:<a@src.test>").startswith("250")
    assert c.cmd("RCPT TO:<x@example.test>").startswith("250")
    assert c.cmd("DATA").startswith("354")
    c.send(MSG)
    assert c.cmd(".").startswith("250 2.0.0 Ok: queued as")
    sink.wait_count(1)
    time.sleep(0.3)
    assert len(sink.messages()) == 1
    g.stop()


def test_text_line_limit():
    g, sink = gw()
    c = Client(g.host)
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<a@src.test>")
    c.cmd("RCPT TO:<x@example.test>")
    c.cmd("DATA")
    c.send("Subject: long\r\n\r\n" + "a" * 999 + "\r\n")
    assert c.cmd(".").startswith("550 5.5.2"), "1001-octet line must be refused"
    c.cmd("MAIL FROM:<a@src.test>")
    c.cmd("RCPT TO:<x@example.test>")
    c.cmd("DATA")
    c.send("Subject: ok\r\n\r\n" + "a" * 998 + "\r\n")
    assert c.cmd(".").startswith("250")
    sink.wait_count(1)
    g.stop()


def test_nul_bytes_are_refused():
    g, sink = gw()
    c = Client(g.host)
    c.cmd("EHLO client.test")
    c.send(b"NOOP a\x00b\r\n")
    assert c.reply().startswith("500 5.5.2")
    for msg in (b"Subject: n\x00l\r\n\r\nbody\r\n", b"Subject: ok\r\n\r\nbo\x00dy\r\n"):
        c.cmd("MAIL FROM:<a@src.test>")
        c.cmd("RCPT TO:<x@example.test>")
        assert c.cmd("DATA").startswith("354")
        c.send(msg)
        assert c.cmd(".").startswith("554 5.6.0 Error: message contains NUL characters")
    c.cmd("MAIL FROM:<a@src.test>")                    # the session goes on
    c.cmd("RCPT TO:<x@example.test>")
    c.cmd("DATA")
    c.send("Subject: clean\r\n\r\nbody\r\n")
    assert c.cmd(".").startswith("250")
    assert b"Subject: clean" in sink.wait_count(1)[0]
    time.sleep(0.3)
    assert sink.count() == 1
    g.stop()


def test_max_recipients():
    g, _ = gw(max_recipients="3")
    c = Client(g.host)
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<a@src.test>")
    for i in range(3):
        assert c.cmd("RCPT TO:<r%d@example.test>" % i).startswith("250")
    assert c.cmd("RCPT TO:<r9@example.test>").startswith("452 4.5.3")
    g.stop()


def test_pipelining_replies_in_order():
    g, sink = gw()
    c = Client(g.host)
    c.cmd("EHLO client.test")
    c.send("MAIL FROM:<a@src.test>\r\nRCPT TO:<x@example.test>\r\nRCPT TO:<bad@elsewhere.test>\r\n"
           "RCPT TO:<y@example.test>\r\nDATA\r\n")
    replies = [c.reply() for _ in range(5)]
    assert replies[0].startswith("250 2.1.0")
    assert replies[1].startswith("250 2.1.5")
    # 127.0.N.x other than .1 is not trusted here? the client is 127.0.0.1 (trusted)
    assert replies[3].startswith("250 2.1.5")
    assert replies[4].startswith("354")
    c.send(MSG + ".\r\nQUIT\r\n")
    assert c.reply().startswith("250 2.0.0 Ok: queued as")
    assert c.reply() == "221 2.0.0 Bye"
    msgs = sink.wait_count(1)
    assert sorted(sink_rcpts(msgs[0])) == [b"bad@elsewhere.test", b"x@example.test", b"y@example.test"]
    g.stop()


def test_dot_stuffing_round_trip_and_received():
    g, sink = gw()
    body = "Subject: dots\r\n\r\n.leading\r\n..two\r\nend\r\n"
    stuffed = "Subject: dots\r\n\r\n..leading\r\n...two\r\nend\r\n"
    rep = send_message(g.host, 2525, "a@src.test", ["x@example.test"], stuffed)
    qid = queue_id(rep)
    received, rest = our_received_and_rest(sink.wait_count(1)[0])
    assert received.startswith(b"Received: from client.test ([127.0.0.1])"), received
    assert ("by gw.postern.test (Postern) with ESMTP id %s" % qid).encode() in received
    assert b"for <x@example.test>;" in received
    # after our Received header the message is what was sent, unstuffed
    assert rest == as_dumped(body), rest
    g.stop()


def test_idle_timeout():
    g, _ = gw(smtp_timeout="1s")
    c = Client(g.host)
    t0 = time.time()
    rep = c.reply()
    assert rep.startswith("421 4.4.2"), rep
    assert c.closed()
    assert time.time() - t0 < 3
    g.stop()


def test_too_many_errors_disconnects():
    g, _ = gw(max_errors="3")
    c = Client(g.host)
    for _ in range(2):
        assert c.cmd("BOGUS").startswith("500")
    assert c.cmd("BOGUS").startswith("500")
    rep = c.reply()
    assert rep.startswith("421 4.7.0"), rep
    assert c.closed()
    g.stop()


def test_smtputf8_accepted_with_parameter():
    g, sink = gw()
    c = Client(g.host)
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<j\u00f6rg@src.test> SMTPUTF8").startswith("250")
    assert c.cmd("RCPT TO:<m\u00fc@example.test>").startswith("250")
    assert c.cmd("DATA").startswith("354")
    c.send("Subject: utf8\r\n\r\nhi\r\n")
    assert c.cmd(".").startswith("250")
    # smtp-sink does not offer SMTPUTF8: RFC 6531 says such mail must not be
    # downgraded silently, so the recipient fails with 5.6.7
    wait_for(lambda: "status=bounced (553 5.6.7" in g.log(), 10, "SMTPUTF8 bounce in the log")
    # the bounce to the (UTF-8) sender fails the same way and is dropped: null sender
    wait_for(lambda: g.queue_files() == [], 10, "spool to drain")
    assert sink.count() == 0
    g.stop()


run_tests(globals())
