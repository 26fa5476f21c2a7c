"""CHUNKING / BDAT (RFC 3030): inbound chunks mixed with PIPELINING go
through the same hook chain and spool as DATA and arrive identical; size is
enforced per chunk; refused chunks are read and dropped (their bytes never
run as commands); BINARYMIME needs BDAT; outbound BDAT to a real Postfix
that offers CHUNKING, and the message arrives identical to one sent with DATA."""
from harness import *

MSG = ("From: a@src.test\r\nTo: x@example.test\r\nSubject: chunks\r\nMessage-ID: <c1@src.test>\r\n\r\n"
       + "".join("line %04d of the body, with a .dot and trailing spaces  \r\n" % i for i in range(300))
       + ".leading dot stays as sent\r\n")


def bdat_chunks(data, sizes):
    """BDAT commands with data cut into the given chunk sizes (the rest goes last)."""
    data = data.encode() if isinstance(data, str) else data
    out, pos = b"", 0
    for n in sizes:
        out += b"BDAT %d\r\n" % n + data[pos:pos + n]
        pos += n
    return out + b"BDAT %d LAST\r\n" % (len(data) - pos) + data[pos:]


def envelope(c, rcpt="x@example.test", mail_params=""):
    c.send("MAIL FROM:<a@src.test>%s\r\nRCPT TO:<%s>\r\n" % (mail_params, rcpt))
    assert c.reply().startswith("250") and c.reply().startswith("250")


def test_bdat_and_data_messages_arrive_identical():
    sink = Sink(addr(2))
    g = Gateway(sink=sink).start()
    c = Client(g.host)
    ehlo = c.cmd("EHLO client.test")
    assert "250-CHUNKING" in ehlo and "250-BINARYMIME" in ehlo, ehlo
    # pipelined: MAIL, RCPT and three chunks in one write
    c.send(b"MAIL FROM:<a@src.test>\r\nRCPT TO:<x@example.test>\r\n" + bdat_chunks(MSG, [10, 4000]))
    replies = [c.reply() for _ in range(5)]
    assert [r[:3] for r in replies] == ["250"] * 5, replies
    assert replies[2] == "250 2.0.0 Ok: 10 octets received" and replies[3] == "250 2.0.0 Ok: 4010 octets received"
    bdat_qid = queue_id(replies[4])
    data_qid = queue_id(send_message(g.host, 2525, "a@src.test", ["x@example.test"], MSG.replace("\r\n.", "\r\n..")))
    msgs = sink.wait_count(2)
    by_qid = {re.search(rb"with ESMTP id ([0-9A-F]{16})", m).group(1).decode(): m for m in msgs}
    bdat_rest, data_rest = our_received_and_rest(by_qid[bdat_qid])[1], our_received_and_rest(by_qid[data_qid])[1]
    assert bdat_rest == as_dumped(MSG), bdat_rest[:300]
    assert bdat_rest == data_rest
    assert "%s: accepted from=<a@src.test> size=" % bdat_qid in g.log()
    g.stop()


def test_a_header_added_at_the_end_writes_small_and_large_files_anew_intact():
    """A header a link adds at the end of data writes the queue file anew:
    in memory for a message the spool writer still holds (up to 64 KiB),
    in its own file past that, into a second file over 4 MiB. The script
    reads the body at EOM too (from memory or from the file) and says how
    long it was and how it ended. Every message arrives byte for byte, with
    both headers."""
    sink = Sink(addr(2))
    script = readable_file("add.lua", 'postern.on("eom", function(tx)\n'
                           '  local b = tx:body()\n'
                           '  tx:add_header("X-Body", b and (#b .. " " .. b:sub(-12, -3)) or "over the limit")\n'
                           '  tx:add_header("X-Added", "at eom")\n'
                           'end)\n', prefix="lua-")
    g = Gateway(sink=sink, plugins="lua:" + script, message_size_limit="10M").start()

    def body_of(n):
        return "".join("%07d of a body written anew, at sizes around the spool's buffers\r\n" % i for i in range(n))
    line = len(body_of(1))
    # the body alone, past the 64 KiB held back, by a line or two; a few times that; over 4 MiB
    sizes = [0, 65536 // line - 2, 65536 // line + 1, 300000 // line, 70000]
    sent = {}
    for n in sizes:
        data = (MSG + body_of(n)).encode()
        c = Client(g.host)
        c.cmd("EHLO client.test")
        envelope(c)
        c.send(b"BDAT %d LAST\r\n" % len(data) + data)
        sent[queue_id(c.reply())] = data
        c.close()
    assert len(sent[max(sent, key=lambda q: len(sent[q]))]) > (4 << 20) + 65536
    for m in sink.wait_count(len(sizes), timeout=60):
        qid = re.search(rb"with ESMTP id ([0-9A-F]{16})", m).group(1).decode()
        data = sent[qid]
        body = data.split(b"\r\n\r\n", 1)[1]
        said = b"%d %s" % (len(body), body[-12:-2]) if len(body) <= (1 << 20) else b"over the limit"
        want = data.replace(b"\r\n\r\n", b"\r\nX-Body: " + said + b"\r\nX-Added: at eom\r\n\r\n", 1)
        assert our_received_and_rest(m)[1] == as_dumped(want), (len(data), our_received_and_rest(m)[1][:400])
    g.stop()


def test_swaks_over_a_pipe_with_pipelining():
    """swaks --pipe drives the session through a child's stdin/stdout (socat
    carries it to the listener), pipelining MAIL, RCPT and DATA."""
    sink = Sink(addr(2))
    g = Gateway(sink=sink).start()
    pipe = "socat - TCP:%s:2525,bind=%s" % (g.host, addr(3))
    r = subprocess.run(["swaks", "--pipe", pipe, "--pipeline", "--from", "p@src.test", "--to", "x@example.test",
                        "--helo", "swaks.pipe.test", "--header", "Subject: over a pipe"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr
    assert "250-PIPELINING" in r.stdout and "queued as" in r.stdout, r.stdout[-1500:]
    # swaks sent MAIL and RCPT in one write: its transcript shows both before either reply
    assert re.search(r"-> MAIL FROM:<p@src.test>\n -> RCPT TO:<x@example.test>", r.stdout), r.stdout[-1500:]
    m = sink.wait_count(1)[0]
    assert b"Subject: over a pipe" in m and b"from swaks.pipe.test" in m and addr(3).encode() in m, m[:500]
    g.stop()


def test_bdat_runs_the_hook_chain():
    """The Lua verdicts policy sees a BDAT message at EOM as it sees a DATA one."""
    sink = Sink(addr(2))
    g = Gateway(sink=sink, plugin_dir=os.path.join(BUILD, "plugins"),
                plugins="lua:%s" % os.path.join(ROOT, "tests", "lua", "verdicts.lua")).start()
    c = Client(g.host)
    c.cmd("EHLO client.test")
    envelope(c)
    c.send(bdat_chunks("Subject: reject\r\n\r\nbody\r\n", [5]))
    assert c.reply().startswith("250")
    assert c.reply() == "550 5.7.1 content refused by lua"
    envelope(c)
    c.send(bdat_chunks("Subject: quarantine\r\n\r\nbody\r\n", [5]))
    assert c.reply().startswith("250") and c.reply().startswith("250 2.0.0 Ok: queued")
    envelope(c)
    c.send(bdat_chunks("Subject: fine\r\n\r\nbody\r\n", [5]))
    assert c.reply().startswith("250") and c.reply().startswith("250 2.0.0 Ok: queued")
    m = sink.wait_count(1)[0]
    assert b"Subject: fine" in m
    assert "(quarantined)" in g.log()
    time.sleep(0.3)
    assert sink.count() == 1
    g.stop()


def test_bdat_size_limit_per_chunk_and_refused_chunks_are_skipped():
    sink = Sink(addr(2))
    g = Gateway(sink=sink, message_size_limit="2k").start()
    c = Client(g.host)
    c.cmd("EHLO client.test")
    # one chunk over the limit: refused at once, its bytes (which look like commands) dropped
    envelope(c)
    evil = ("QUIT\r\n" * 600).encode()
    c.send(b"BDAT %d LAST\r\n" % len(evil) + evil + b"NOOP\r\n")
    assert c.reply().startswith("552 5.3.4")
    assert c.reply() == "250 2.0.0 Ok"           # NOOP, not QUIT
    # the second chunk pushes it over: refused, the message abandoned, later chunks get 503
    envelope(c)
    c.send(b"BDAT 1500\r\n" + b"Subject: a\r\n\r\n" + b"x" * 1486 + b"BDAT 1000\r\n" + b"y" * 1000 +
           b"BDAT 3 LAST\r\nz\r\n")
    assert c.reply().startswith("250 2.0.0 Ok: 1500")
    assert c.reply().startswith("552 5.3.4")
    assert c.reply().startswith("503 5.5.1")
    assert c.cmd("NOOP") == "250 2.0.0 Ok"
    # BDAT without MAIL: 503 and the chunk is skipped
    c.send(b"BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n")
    assert c.reply().startswith("503 5.5.1")
    assert c.reply() == "250 2.0.0 Ok"
    assert c.cmd("BDAT twelve") .startswith("501 5.5.4")
    time.sleep(0.3)
    assert sink.count() == 0
    g.stop()


def test_bdat_line_checks_and_abandoned_messages():
    sink = Sink(addr(2))
    g = Gateway(sink=sink).start()
    c = Client(g.host)
    c.cmd("EHLO client.test")
    for bad in (b"Subject: a\r\n\r\nbare\nLF\r\n", b"Subject: a\r\n\r\nlone\rCR\r\n", b"Subject: a\r\n\r\nends in CR\r"):
        envelope(c)
        c.send(b"BDAT %d LAST\r\n" % len(bad) + bad)
        assert c.reply().startswith("550 5.5.2 Error: bare <LF> or <CR>"), bad
    # a command between chunks abandons the message; RSET answers as usual
    envelope(c)
    c.send(b"BDAT 12\r\nSubject: a\r\nRSET\r\nBDAT 3 LAST\r\nb\r\n")
    assert c.reply().startswith("250 2.0.0 Ok: 12")
    assert c.reply() == "250 2.0.0 Ok"
    assert c.reply().startswith("503 5.5.1")
    assert "BDAT message from [127.0.0.1] abandoned: another command between chunks" in g.log()
    # DATA after a BDAT chunk is out of sequence too
    envelope(c)
    c.send(b"BDAT 3\r\nab\nDATA\r\n")
    assert c.reply().startswith("250")
    assert c.reply().startswith("503 5.5.1")
    time.sleep(0.3)
    assert sink.count() == 0
    g.stop()


def test_binarymime_needs_bdat_and_bounces_where_it_cannot_go():
    sink = Sink(addr(2))                      # smtp-sink offers neither CHUNKING nor BINARYMIME
    g = Gateway(sink=sink).start()
    c = Client(g.host)
    c.cmd("EHLO client.test")
    envelope(c, mail_params=" BODY=BINARYMIME")
    assert c.cmd("DATA").startswith("503 5.5.1 Error: BODY=BINARYMIME needs BDAT")
    binary = b"Subject: bin\r\nContent-Type: application/octet-stream\r\n\r\n" + bytes(range(256)) * 4
    c.send(b"BDAT %d LAST\r\n" % len(binary) + binary)
    qid = queue_id(c.reply())
    wait_for(lambda: "%s: to=<x@example.test>" % qid in g.log() and "554 5.6.3" in g.log(), 10, "the 5.6.3 failure")
    # the only mail out is the bounce to the sender (the same sink): 5.6.3
    raw = sink.wait_count(1)[0]
    assert sink_rcpts(raw) == [b"a@src.test"]
    _, _, blocks = parse_dsn(raw)
    assert blocks[1]["Status"] == "5.6.3" and blocks[1]["Action"] == "failed"
    # and a BINARYMIME header section may not hold NUL
    envelope(c, mail_params=" BODY=BINARYMIME")
    c.send(b"BDAT 15 LAST\r\nSubject: \x00\r\n\r\nb")
    assert c.reply().startswith("554 5.6.0")
    envelope(c, mail_params=" BODY=BINARYMIME")
    c.send(b"BDAT 24 LAST\r\nSubject: a\nX-B: b\r\n\r\n\nb\n")      # bare LF: in the body fine, in headers not
    assert c.reply().startswith("550 5.5.2 Error: bare <LF> or <CR> line ending in the header section")
    g.stop()


def postfix_hop(final):
    """A real Postfix on addr(5):2525 (it offers CHUNKING and DSN), logging each
    SMTP command it reads from us, relaying to the final sink."""
    return Postfix(addr(5), 2525, "[%s]:%d" % (final.host, final.port),
                   main={"debug_peer_list": "127.0.0.0/8", "debug_peer_level": "2"})


def test_outbound_bdat_to_a_real_postfix_arrives_identical_to_data():
    if not Postfix.available():
        skip("needs root and Postfix")
    final = Sink(addr(6), port=2600)
    pf = postfix_hop(final)
    # > one 64 KiB chunk; with its own Date: so Postfix adds none (its clock would differ per message)
    big = (MSG.replace("Subject: chunks\r\n", "Subject: chunks\r\nDate: Mon, 23 Nov 2026 00:00:00 +0000\r\n", 1)
           + "".join("%05d %s\r\n" % (i, "b" * 70) for i in range(2000)))
    got = {}
    for bdat in ("yes", "no"):
        g = Gateway(sink=None, default_transport="smtp:[%s]:2525" % addr(5), client_bdat=bdat).start()
        n0 = final.count()
        qid = queue_id(send_message(g.host, 2525, "a@src.test", ["x@example.test"], big.replace("\r\n.", "\r\n..")))
        got[bdat] = [m for m in final.wait_count(n0 + 1, timeout=30) if qid.encode() in m][0]
        wait_for(lambda: not g.queue_files(), 10, "the spool to drain")
        if bdat == "yes":
            # real clients in front: swaks with PIPELINING and smtp-source, on through BDAT
            r = subprocess.run(["swaks", "--pipeline", "--server", "%s:2525" % g.host, "--from", "s@src.test",
                                "--to", "x@example.test", "--helo", "swaks.test"], capture_output=True, text=True,
                               timeout=30)
            assert r.returncode == 0 and "PIPELINING" in r.stdout, r.stdout[-1000:]
            r = subprocess.run(["smtp-source", "-s", "2", "-m", "10", "-l", "3000", "-f", "load@src.test",
                                "-t", "x@example.test", "%s:2525" % g.host], capture_output=True, text=True,
                               timeout=60)
            assert r.returncode == 0, r.stderr
            final.wait_count(n0 + 12, timeout=30)
            wait_for(lambda: not g.queue_files(), 10, "the spool to drain")
        g.stop()
    log = pf.log()
    assert re.search(r"< \S+: BDAT 65536\b", log), "Postfix did not receive BDAT chunks"
    assert len(re.findall(r"< \S+: BDAT \d+ LAST", log)) == 12, "one BDAT LAST per message sent with client_bdat=yes"
    assert re.search(r"< \S+: DATA", log), "client_bdat=no must use DATA"
    # after Postfix's and our Received headers the two messages are the same bytes
    rest = {k: v.split(b"\n\tby gw.postern.test (Postern) with ESMTP id ", 1)[1].split(b"\n", 2)[2]
            for k, v in got.items()}
    assert rest["yes"] == rest["no"], (rest["yes"][:300], rest["no"][:300])
    assert rest["yes"] == as_dumped(big), rest["yes"][:400]
    g.stop()


run_tests(globals())
