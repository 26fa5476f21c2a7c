"""What real peers write over TLS: whole BDAT chunks, whole DATA messages,
long AUTH lines and pipelined bursts in single TLS records of every size up
to 16 KiB; posternd relaying to a second posternd over TLS with and without
CHUNKING at sizes around 8 KiB and 16 KiB and with batches of up to 500
recipients; a next hop whose multi-line replies fill one record; a client
whose first commands share a TCP segment with its Finished. OpenSSL
decrypts a whole record at once, so bytes the server has not yet taken from
it are no longer signalled by the socket: every reply must come without the
peer writing more, and every message arrive exactly once."""
import ssl

from harness import *
from scripted_smtp import ScriptedSmtp

REPLY_WAIT = 3      # a stalled session never answers; a working one within milliseconds


def tls_gateway(sink, certs, host=None, port=2525, name="gw.postern.test", **conf):
    d, _ = certs
    return Gateway(host=host, port=port, sink=sink, hostname=name, tls_cert=os.path.join(d, name + ".crt"),
                   tls_key=os.path.join(d, name + ".key"), **conf).start()


def tls_client(g):
    c = Client(g.host, g.port, timeout=REPLY_WAIT)
    c.cmd("EHLO client.test")
    assert c.cmd("STARTTLS").startswith("220")
    c.starttls()
    assert "CHUNKING" in c.cmd("EHLO client.test")
    return c


def one_record(c, data):
    """data in one SSL_write: one TLS record while it is at most 16 KiB"""
    assert isinstance(c.sock, ssl.SSLSocket)
    c.sock.sendall(data)


def replies(c, n, what):
    out = []
    for i in range(n):
        try:
            out.append(c.reply())
        except socket.timeout:
            raise AssertionError("%s: reply %d of %d did not come within %ds" % (what, i + 1, n, REPLY_WAIT))
    return out


def sizes_to_16k():
    """every 512th size up to 16 KiB and each size around 4, 8 and 16 KiB"""
    edges = {b + d for b in (4096, 8192, 16384) for d in range(-40, 41, 4)}
    return sorted(({0, 1} | set(range(512, 16385, 512)) | edges) - {x for x in edges if x > 16384})


def payload(n, tag):
    """exactly n bytes of a message whose lines end in CRLF (n >= 40)"""
    head = ("Subject: %s\r\n\r\n" % tag).encode()
    lines, rem = [], n - len(head)
    while rem >= 2:
        k = min(rem, 72)
        if rem - k == 1:
            k -= 1          # never leave a single byte for a last line
        lines.append(b"x" * (k - 2) + b"\r\n")
        rem -= k
    return head + b"".join(lines)


def sink_tags(sink):
    tags = []
    for m in sink.messages():
        found = re.search(rb"^Subject: (\S+)", m, re.M)
        tags.append(found.group(1).decode() if found else None)
    return tags


def assert_each_once(sink, tags, timeout=60):
    wait_for(lambda: sink.count() >= len(tags), timeout, "%d messages at the sink" % len(tags))
    time.sleep(0.5)
    got = sink_tags(sink)
    dup = sorted({t for t in got if got.count(t) > 1})
    missing = sorted(set(tags) - set(got))
    assert not dup and not missing, "duplicated %s, missing %s" % (dup[:10], missing[:10])


def test_bdat_and_data_in_one_record_of_every_size():
    certs = make_certs(["gw.postern.test"])
    sink = Sink(addr(2))
    g = tls_gateway(sink, certs)
    c = tls_client(g)
    tags = []
    for n in sizes_to_16k():
        msg = payload(max(n, 40), "bdat-%d" % n)
        # the envelope, the chunk command and all its bytes in one record, as Exchange writes it
        one_record(c, b"MAIL FROM:<a@src.test>\r\nRCPT TO:<x@example.test>\r\nBDAT %d LAST\r\n" % len(msg) + msg)
        r = replies(c, 3, "BDAT %d LAST" % len(msg))
        assert r[2].startswith("250") and "queued as" in r[2], (n, r)
        tags.append("bdat-%d" % n)
        # a whole DATA message in one record after the 354
        one_record(c, b"MAIL FROM:<a@src.test>\r\nRCPT TO:<x@example.test>\r\nDATA\r\n")
        r = replies(c, 3, "DATA")
        assert r[2].startswith("354"), r
        msg = payload(max(n - 3, 40), "data-%d" % n)
        one_record(c, msg + b".\r\n")
        r = replies(c, 1, "the dot after %d bytes" % len(msg))
        assert "queued as" in r[0], r
        tags.append("data-%d" % n)
    c.cmd("QUIT")
    assert_each_once(sink, tags)
    g.stop()


def test_first_commands_in_the_same_segment_as_the_clients_finished():
    """A TLS 1.3 client may write right after its Finished: EHLO and a
    pipelined envelope in the same TCP segment as the end of the handshake.
    The server reads them while finishing the handshake (OpenSSL reads
    ahead), so no later byte from the socket announces them; each must be
    answered all the same."""
    certs = make_certs(["gw.postern.test"])
    sink = Sink(addr(2))
    g = tls_gateway(sink, certs)
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        s = socket.create_connection((g.host, g.port), timeout=REPLY_WAIT)
        f = s.makefile("rb")
        read_reply = f.readline
        assert read_reply().startswith(b"220")
        s.sendall(b"EHLO client.test\r\n")
        while not read_reply().startswith(b"250 "):
            pass
        s.sendall(b"STARTTLS\r\n")
        assert read_reply().startswith(b"220")
        ctx = ssl.create_default_context(cafile=os.path.join(certs[0], "ca.crt"))
        ctx.minimum_version = ctx.maximum_version = version
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(inc, out, server_hostname="gw.postern.test")
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if out.pending:
                    s.sendall(out.read())
                data = s.recv(65536)
                assert data, "the server closed during the handshake"
                inc.write(data)
        # the last handshake flight and the first commands: one send
        tls.write(b"EHLO client.test\r\nMAIL FROM:<a@src.test>\r\nRCPT TO:<x@example.test>\r\nDATA\r\n")
        s.sendall(out.read())
        got, deadline = b"", time.time() + REPLY_WAIT
        while got.count(b"\r\n") < 1 or not re.search(rb"\r\n354 ", got):
            assert time.time() < deadline, "%s: no answer to the commands sent with the Finished: %r" % (version, got)
            try:
                got += tls.read(65536)
                continue
            except ssl.SSLWantReadError:
                pass
            try:
                data = s.recv(65536)
            except socket.timeout:
                raise AssertionError("%s: the session stalled after %r" % (version, got))
            assert data, got
            inc.write(data)
        assert re.search(rb"^250 ", got, re.M) and b"354 " in got, got
        tls.write(b"Subject: finished-%s\r\n\r\nx\r\n.\r\nQUIT\r\n" % version.name.encode())
        s.sendall(out.read())
        s.close()
    assert_each_once(sink, ["finished-TLSv1_3", "finished-TLSv1_2"])
    g.stop()


def test_bdat_chunks_in_full_records_and_a_big_last_chunk():
    certs = make_certs(["gw.postern.test"])
    sink = Sink(addr(2))
    g = tls_gateway(sink, certs)
    c = tls_client(g)
    tags = []
    for total in (8300, 16384, 20000, 70000, 262144):
        msg = payload(total, "chunks-%d" % total)
        assert c.cmd("MAIL FROM:<a@src.test>").startswith("250")
        assert c.cmd("RCPT TO:<x@example.test>").startswith("250")
        pos = 0
        while pos < len(msg):
            part = msg[pos:pos + 16384 - 30]
            pos += len(part)
            last = b" LAST" if pos >= len(msg) else b""
            one_record(c, b"BDAT %d%s\r\n" % (len(part), last) + part)
            r = replies(c, 1, "BDAT chunk ending at %d of %d" % (pos, total))[0]
            assert r.startswith("250"), r
        tags.append("chunks-%d" % total)
    c.cmd("QUIT")
    assert_each_once(sink, tags)
    g.stop()


def test_pipelined_bursts_and_auth_lines_in_one_record():
    certs = make_certs(["gw.postern.test"])
    sink = Sink(addr(2))
    # a Lua handler on MAIL and RCPT pauses input at each command while the rest waits in OpenSSL
    lua = readable_file("pause.lua", 'postern.on("mail", function(tx, m) end)\n'
                                     'postern.on("rcpt", function(tx, r) end)\n')
    g = tls_gateway(sink, certs, plugins="lua:" + lua)
    c = tls_client(g)
    tags = []
    for n in (1, 10, 100, 250, 400, 500):
        burst = b"MAIL FROM:<a@src.test>\r\n" + b"".join(b"RCPT TO:<r%03d@example.test>\r\n" % i
                                                         for i in range(n)) + b"DATA\r\n"
        assert len(burst) <= 16384
        one_record(c, burst)
        r = replies(c, n + 2, "%d pipelined RCPTs" % n)
        assert all(x.startswith("250") for x in r[:-1]) and r[-1].startswith("354"), r[-3:]
        one_record(c, payload(200, "burst-%d" % n) + b".\r\n")
        assert "queued as" in replies(c, 1, "the dot")[0]
        tags.append("burst-%d" % n)
    # an over-long AUTH line (AUTH is not offered here) is answered at once, whatever its size
    for n in (100, 4000, 8190, 8200, 8300, 12000, 16000):
        one_record(c, b"AUTH PLAIN " + b"A" * n + b"\r\n")
        r = replies(c, 1, "an AUTH line of %d bytes" % n)[0]
        assert r[:1] in ("5", "4"), r
        assert c.cmd("NOOP").startswith("250")
    c.cmd("QUIT")
    assert_each_once(sink, tags)
    g.stop()


def relay_pair(certs, sink, **sender_conf):
    peer = tls_gateway(sink, certs, host=addr(5), port=2526, name="mx.peer.test")
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(5), tls_ca_file=certs[1],
                tls_policy_table=table_file("example.test encrypt\n"), **sender_conf).start()
    return peer, g


def relay_sizes_and_batches(g, sink, prefix):
    tags = []
    for n in (1024, 4096, 8000, 8191, 8192, 8193, 8300, 12000, 16360, 16383, 16384, 16385, 16420, 32768, 65537,
              100000, 1048576):
        tag = "%s-size-%d" % (prefix, n)
        body = payload(n, tag).decode()
        head, rest = body.split("\r\n\r\n", 1)
        assert "queued as" in send_mail(g, headers=head[len("Subject: " + tag):] + "Subject: %s\r\n" % tag,
                                        body=rest)
        tags.append(tag)
    for n in (1, 2, 50, 499, 500):
        tag = "%s-rcpts-%d" % (prefix, n)
        assert "queued as" in send_mail(g, rcpts=["r%03d@example.test" % i for i in range(n)],
                                        headers="Subject: %s\r\n" % tag)
        tags.append(tag)
    return tags


def test_posternd_to_posternd_over_tls_with_chunking():
    certs = make_certs(["mx.peer.test"])
    sink = Sink(addr(2))
    peer, g = relay_pair(certs, sink)
    t0 = time.time()
    tags = relay_sizes_and_batches(g, sink, "bdat")
    assert_each_once(sink, tags, timeout=90)
    for log in (g.log(), peer.log()):
        assert "timed out" not in log and "lost connection" not in log, log[-3000:]
    assert re.search(r"TLS to %s:2526: TLSv1\.[23]" % re.escape(addr(5)), g.log())
    assert time.time() - t0 < 90
    g.stop()
    peer.stop()


def test_posternd_to_posternd_over_tls_with_data():
    certs = make_certs(["mx.peer.test"])
    sink = Sink(addr(2))
    peer, g = relay_pair(certs, sink, client_bdat="no")
    tags = relay_sizes_and_batches(g, sink, "data")
    assert_each_once(sink, tags, timeout=90)
    for log in (g.log(), peer.log()):
        assert "timed out" not in log and "lost connection" not in log, log[-3000:]
    g.stop()
    peer.stop()


def test_next_hop_writes_multiline_replies_of_8_to_16k_in_one_record():
    certs = make_certs(["scripted.peer.test"])
    d, _ = certs
    tags = []
    for pad in (8000, 8192, 12000, 16000):
        peer = ScriptedSmtp(addr(6), chunking=True, pad_replies=pad,
                            tls=(os.path.join(d, "scripted.peer.test.crt"), os.path.join(d, "scripted.peer.test.key")))
        g = Gateway(default_transport="smtp:[%s]:2526" % addr(6), tls_ca_file=certs[1],
                    tls_policy_table=table_file("example.test encrypt\n")).start()
        tag = "pad-%d" % pad
        assert "queued as" in send_mail(g, headers="Subject: %s\r\n" % tag, body=("x" * 70 + "\r\n") * 130)
        wait_for(lambda: len(peer.messages) >= 1, 15, "delivery through %d-byte replies" % pad)
        assert b"Subject: " + tag.encode() in peer.messages[0]["data"]
        assert "timed out" not in g.log(), g.log()[-2000:]
        tags.append(tag)
        g.stop()
        peer.stop()


def test_a_next_hop_that_reads_late_gets_a_large_message_whole_over_tls():
    """The next hop leaves a 6 MB message unread for a second after its 354,
    with a small receive buffer: more than the kernel buffers between them
    (a send buffer grows to 4 MiB), so posternd's TLS writes block half way
    (SSL_write wants to write again) and resume from its output buffer
    when the socket drains. The same bytes arrive, in order, and nothing
    is deferred."""
    certs = make_certs(["scripted.peer.test"])
    d, _ = certs
    peer = ScriptedSmtp(addr(6), tls=(os.path.join(d, "scripted.peer.test.crt"),
                                      os.path.join(d, "scripted.peer.test.key")))
    peer.server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    peer.data_delay = 1.0
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(6), tls_ca_file=certs[1], message_size_limit="10M",
                tls_policy_table=table_file("example.test encrypt\n")).start()
    body = "".join("%07d %s\r\n" % (i, "late reader " * 80) for i in range(6000))     # 6 MB in long lines
    assert "queued as" in send_mail(g, headers="Subject: late reader\r\n", body=body)
    wait_for(lambda: len(peer.messages) >= 1, 60, "the large message at the late reader")
    got = peer.messages[0]["data"]
    assert body.encode() in got, (len(got), len(body))
    assert "bad write retry" not in g.log() and "status=deferred" not in g.log(), g.log()[-2000:]
    g.stop()
    peer.stop()


if __name__ == "__main__":
    run_tests(globals())
