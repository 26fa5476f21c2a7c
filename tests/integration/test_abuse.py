"""Abuse resistance: clients that dribble bytes at every stage (slowloris)
time out while others are served; an honest slow DATA does not; huge header
sections, 10,000 recipients and malformed UTF-8 each get a clear SMTP error
and leave the session usable. (Per-client limits: test_client_limits.py;
long lines, NUL bytes and too many errors: test_protocol.py.)"""
import threading
from harness import *

MSG = "From: a@src.test\r\nTo: x@example.test\r\nSubject: hi\r\n\r\nbody line\r\n"


def dribble(c, data, interval, max_time=8):
    """Send data one byte per interval until the server replies or closes, for
    at most max_time seconds. Returns what the server sent ('' = closed) or
    None if the session was still open at the end."""
    c.sock.settimeout(interval)
    end = time.time() + max_time
    for ch in data:
        if time.time() > end:
            return None
        try:
            c.sock.sendall(bytes([ch]))
            return c.sock.recv(4096).decode(errors="replace")
        except socket.timeout:
            continue
        except OSError:
            return ""
    return None


# the start of a TLS ClientHello record announcing 512 bytes that never all come
CLIENT_HELLO_START = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 600


def slow_session(g, stage, result):
    """Open a session, get to `stage` quickly, then dribble one byte every 0.2 s."""
    c = Client(g.host, timeout=10)
    if stage == "ehlo":
        rest = b"EHLO slow.test\r\n" * 20
    else:
        c.cmd("EHLO slow.test")
        if stage == "starttls":
            assert c.cmd("STARTTLS").startswith("220")
            rest = CLIENT_HELLO_START
        else:
            if stage in ("rcpt", "data"):
                c.cmd("MAIL FROM:<slow@src.test>")
            if stage == "data":
                c.cmd("RCPT TO:<x@example.test>")
                c.cmd("DATA")
            rest = {"mail": b"MAIL FROM:<slow@src.test>\r\n", "rcpt": b"RCPT TO:<x@example.test>\r\n",
                    "data": b"Subject: slow\r\n\r\n" + b"x" * 4000}[stage] * 20
    t_stage = time.time()
    rep = dribble(c, rest, 0.2)
    result.append((stage, rep, time.time() - t_stage))
    c.close()


def test_slowloris_at_every_stage_times_out_while_others_are_served():
    certs = make_certs(["gw.postern.test"])
    sink = Sink(addr(2))
    g = Gateway(sink=sink, smtp_timeout="2s", data_timeout="3s", smtp_min_data_rate="500",
                tls_cert=os.path.join(certs[0], "gw.postern.test.crt"),
                tls_key=os.path.join(certs[0], "gw.postern.test.key")).start()
    stages = ["ehlo", "mail", "rcpt", "data", "starttls"]
    result = []
    threads = [threading.Thread(target=slow_session, args=(g, st, result)) for st in stages * 4]
    for t in threads:
        t.start()
    time.sleep(0.5)
    # 20 dribbling sessions are open; an honest client is served at once
    t0 = time.time()
    rep = send_message(g.host, 2525, "a@src.test", ["x@example.test"], MSG)
    assert rep.startswith("250 2.0.0"), rep
    assert time.time() - t0 < 1.5, "honest client waited %.1fs" % (time.time() - t0)
    sink.wait_count(1)
    for t in threads:
        t.join(15)
    assert len(result) == len(threads), result
    for st, rep, took in result:
        assert rep is not None, "%s: still open after %.1fs of dribbling" % (st, took)
        if st == "starttls":
            # inside an unfinished handshake there is no plain-text reply: the connection is dropped
            assert rep == "" and took < 2 + 1.5, (st, took, rep)
            continue
        assert rep.startswith("421 4.4.2"), (st, rep)
        limit = 3 if st == "data" else 2
        assert limit - 0.3 < took < limit + 1.5, "%s: timed out after %.1fs" % (st, took)
    assert g.log().count("timeout from [") >= len(threads)
    # the messages cut off in DATA leave no temp file behind (they once leaked with their queue
    # file); posternd unlinks it just after writing the 421, so the client can be a moment ahead
    wait_for(lambda: os.listdir(os.path.join(g.spool, "tmp")) == [], 5, "the cut-off messages' temp files to go")
    g.stop()


def test_slow_but_steady_data_is_not_cut_off():
    """2,000 bytes/s for 6 s: longer than data_timeout, faster than smtp_min_data_rate."""
    sink = Sink(addr(2))
    g = Gateway(sink=sink, data_timeout="3s", smtp_min_data_rate="500").start()
    c = Client(g.host)
    c.cmd("EHLO steady.test")
    c.cmd("MAIL FROM:<a@src.test>")
    c.cmd("RCPT TO:<x@example.test>")
    assert c.cmd("DATA").startswith("354")
    c.send("Subject: steady\r\n\r\n")
    for _ in range(12):
        c.send(("y" * 98 + "\r\n") * 10)
        time.sleep(0.5)
    assert c.cmd(".").startswith("250 2.0.0"), "steady sender was cut off"
    assert sink.wait_count(1)[0].count(b"y" * 98) == 120
    g.stop()


def test_huge_header_section_is_refused_and_session_goes_on():
    sink = Sink(addr(2))
    g = Gateway(sink=sink, message_size_limit="20M").start()
    c = Client(g.host)
    c.cmd("EHLO client.test")
    # 1.2 MB of header fields, then one folded header field of 1.2 MB
    for hdr in ("".join("X-H%d: %s\r\n" % (i, "h" * 900) for i in range(1300)),
                "X-Fold: a\r\n" + " continued %s\r\n" % ("f" * 900) * 1300):
        assert c.cmd("MAIL FROM:<a@src.test>").startswith("250")
        assert c.cmd("RCPT TO:<x@example.test>").startswith("250")
        assert c.cmd("DATA").startswith("354")
        c.send(hdr + "\r\nbody\r\n")
        assert c.cmd(".") == "552 5.3.4 Error: message header section too large"
    # many tiny header fields under the limit are fine
    assert c.cmd("MAIL FROM:<a@src.test>").startswith("250")
    assert c.cmd("RCPT TO:<x@example.test>").startswith("250")
    assert c.cmd("DATA").startswith("354")
    c.send("".join("X-T: %d\r\n" % i for i in range(20000)) + "\r\nbody\r\n")
    assert c.cmd(".").startswith("250 2.0.0")
    assert sink.wait_count(1)[0].count(b"\nX-T: ") == 20000
    g.stop()


def test_ten_thousand_recipients():
    """Pipelined: the first max_recipients get 250, the rest 452 4.5.3 (not an error
    that disconnects), and the message goes to exactly those accepted."""
    sink = Sink(addr(2))
    g = Gateway(sink=sink).start()      # default max_recipients = 1000
    c = Client(g.host, timeout=30)
    c.cmd("EHLO client.test")
    lines = ["MAIL FROM:<a@src.test>"] + ["RCPT TO:<r%d@example.test>" % i for i in range(10000)] + ["DATA"]
    sender = threading.Thread(target=c.send, args=("\r\n".join(lines) + "\r\n",))
    sender.start()
    replies = [c.reply() for _ in range(len(lines))]
    sender.join(30)
    assert replies[0].startswith("250")
    rcpt = replies[1:-1]
    assert all(r.startswith("250 2.1.5") for r in rcpt[:1000]), [r for r in rcpt[:1000] if r[:3] != "250"][:3]
    assert all(r == "452 4.5.3 Error: too many recipients" for r in rcpt[1000:]), set(rcpt[1000:])
    assert replies[-1].startswith("354")
    c.send(MSG)
    assert c.cmd(".").startswith("250 2.0.0")
    msgs = sink.wait_count(1)
    wait_for(lambda: sum(len(sink_rcpts(m)) for m in sink.messages()) >= 1000, 30, "1000 delivered recipients")
    got = [r for m in sink.messages() for r in sink_rcpts(m)]
    assert sorted(got) == sorted(b"r%d@example.test" % i for i in range(1000)), len(got)
    assert msgs
    assert c.cmd("NOOP") == "250 2.0.0 Ok"
    g.stop()


def test_malformed_utf8_addresses():
    sink = Sink(addr(2))
    g = Gateway(sink=sink).start()
    c = Client(g.host)
    c.cmd("EHLO client.test")
    # non-ASCII without SMTPUTF8
    assert c.cmd("MAIL FROM:<j\u00f6rg@src.test>").startswith("553 5.6.7 Non-ASCII sender address needs SMTPUTF8")
    c.send(b"MAIL FROM:<j\xf6rg@src.test>\r\n")                       # Latin-1, not UTF-8
    assert c.reply().startswith("553 5.6.7")
    # with SMTPUTF8 the address must be well-formed UTF-8
    c.send(b"MAIL FROM:<j\xf6rg@src.test> SMTPUTF8\r\n")
    assert c.reply() == "553 5.6.7 Sender address is not valid UTF-8"
    c.send(b"MAIL FROM:<j\xc3\xb6rg@src.test> SMTPUTF8\r\n")
    assert c.reply().startswith("250")
    for bad in (b"m\xc0\xbc", b"m\xed\xa0\x80", b"m\xe2\x82", b"\xff"):   # overlong, surrogate, cut, invalid
        c.send(b"RCPT TO:<" + bad + b"@example.test>\r\n")
        assert c.reply() == "553 5.6.7 Recipient address is not valid UTF-8", bad
    c.send(b"RCPT TO:<m\xc3\xbc@example.test>\r\n")
    assert c.reply().startswith("250")
    assert c.cmd("RSET").startswith("250")
    c.send(b"MAIL FROM:<a@src.test>\r\nRCPT TO:<m\xc3\xbc@example.test>\r\n")
    assert c.reply().startswith("250")
    assert c.reply().startswith("553 5.6.7 Non-ASCII recipient address needs SMTPUTF8")
    g.stop()


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_file_descriptors_sheds_with_421_and_bounded_cpu_and_log():
    sink = Sink(addr(2))
    g = Gateway(sink=sink, max_sessions_per_client="0")
    g.prefix = ["prlimit", "--nofile=64:64"]
    g.start()
    held = []
    for _ in range(200):
        try:
            held.append(socket.create_connection((g.host, 2525), timeout=2))
        except OSError:
            break
    log_before = len(g.log())
    cpu0, t0 = cpu_seconds(g.pid()), time.time()
    time.sleep(3)
    cpu = (cpu_seconds(g.pid()) - cpu0) / (time.time() - t0)
    assert cpu < 0.3, "posternd used %.0f%% CPU out of descriptors" % (cpu * 100)
    grown = len(g.log()) - log_before
    assert grown < 20000, "%d bytes of log in 3 s" % grown
    assert "turned away with 421" in g.log()
    # the excess hears 421 rather than silence
    import select
    readable, _, _ = select.select(held, [], [], 1)
    greetings = []
    for s in readable:
        try:
            greetings.append(s.recv(200))
        except OSError:
            greetings.append(b"")
    assert any(b.startswith(b"421 4.3.2 Too many connections") for b in greetings), greetings
    for s in held:
        s.close()
    # once descriptors are free again, clients are served
    wait_for(lambda: Client(g.host).banner.startswith("220"), 10, "a greeting after the pressure")
    g.stop()


run_tests(globals())
