"""SMTP smuggling (bare LF / lone CR end-of-data variants): the smuggled
second message must never be accepted or delivered, the carrier message is
refused with 550 5.5.2, and the session stays in sync."""
from harness import *

VARIANTS = {
    "lf_dot_lf": "\n.\n",
    "crlf_dot_lf": "\r\n.\n",
    "lf_dot_crlf": "\n.\r\n",
    "cr_dot_cr": "\r.\r",
    "crlf_dot_cr": "\r\n.\r",
    "cr_dot_crlf": "\r.\r\n",
}


def smuggle(g, terminator):
    c = Client(g.host)
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<a@src.test>")
    c.cmd("RCPT TO:<x@example.test>")
    assert c.cmd("DATA").startswith("354")
    c.send("Subject: carrier\r\n\r\nhello" + terminator +
           "MAIL FROM:<admin@example.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
           "Subject: SMUGGLED\r\n\r\nevil\r\n.\r\n")
    rep = c.reply()
    assert rep.startswith("550 5.5.2"), (terminator, rep)
    # the session is in sync: the next command gets exactly its own reply
    assert c.cmd("NOOP") == "250 2.0.0 Ok"
    c.cmd("QUIT")


def test_every_smuggling_variant_is_refused():
    sink = Sink(addr(2))
    g = Gateway(sink=sink).start()
    for name, term in VARIANTS.items():
        smuggle(g, term)
    # a clean message afterwards still flows, and is the only one delivered
    rep = send_message(g.host, 2525, "a@src.test", ["x@example.test"], "Subject: clean\r\n\r\nok\r\n")
    assert "queued as" in rep
    msgs = sink.wait_count(1)
    time.sleep(0.5)
    msgs = sink.messages()
    assert len(msgs) == 1, [m[:200] for m in msgs]
    assert b"SMUGGLED" not in msgs[0] and b"carrier" not in msgs[0]
    assert g.log().count("reject: DATA") == len(VARIANTS)
    g.stop()


def test_bare_lf_inside_a_line_is_refused_too():
    sink = Sink(addr(2))
    g = Gateway(sink=sink).start()
    c = Client(g.host)
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<a@src.test>")
    c.cmd("RCPT TO:<x@example.test>")
    c.cmd("DATA")
    c.send("Subject: x\r\n\r\nline one\nline two\r\n")
    assert c.cmd(".").startswith("550 5.5.2")
    time.sleep(0.3)
    assert sink.count() == 0 and g.queue_files() == []
    g.stop()


run_tests(globals())
