"""PROXY protocol v1 and v2 on a proxy_listen listener (the headers are built
here, as a load balancer would send them): the presented address is what
relay control, per-client limits, the log and the Received header see; a
LOCAL / UNKNOWN header keeps the connection's address; anything that is not
a valid header closes the connection without a greeting."""
import struct
from harness import *

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
MSG = "Subject: via a balancer\r\n\r\nbody\r\n"


def v2_tcp4(src, dst="127.0.0.1", sport=40000, dport=2526, cmd=0x21):
    payload = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return V2_SIG + bytes([cmd, 0x11]) + struct.pack("!H", len(payload)) + payload


def v2_tcp6(src, dst="::1", sport=40000, dport=2526):
    payload = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst) + \
        struct.pack("!HH", sport, dport)
    return V2_SIG + bytes([0x21, 0x21]) + struct.pack("!H", len(payload)) + payload


class ProxiedClient(Client):
    """A Client that sends a PROXY header before reading the greeting."""

    def __init__(self, host, header, port=2526, timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.sendall(header)
        self.buf = b""
        self.banner = self.reply()


def gw(**conf):
    sink = Sink(addr(2))
    conf.setdefault("proxy_networks", "127.0.0.1/32")      # the test's "load balancer"
    g = Gateway(sink=sink, proxy_listen="%s:2526" % addr(1), **conf).start()
    wait_for(lambda: port_open(g.host, 2526), 5, "the proxy listener")
    return g, sink


def relay_check(c):
    """example.test is a relay domain; other.test only for trusted clients (127.0.0.1)."""
    assert c.cmd("EHLO client.test").startswith("250")
    assert c.cmd("MAIL FROM:<a@src.test>").startswith("250")
    return c.cmd("RCPT TO:<x@other.test>"), c.cmd("RCPT TO:<x@example.test>")


def test_v1_and_v2_set_the_client_address():
    g, sink = gw()
    cases = ((b"PROXY TCP4 192.0.2.1 127.0.0.1 40000 2526\r\n", "192.0.2.1"), (v2_tcp4("192.0.2.2"), "192.0.2.2"),
             (b"PROXY TCP6 2001:db8::7 ::1 40000 2526\r\n", "2001:db8::7"), (v2_tcp6("2001:db8::8"), "2001:db8::8"))
    for n, (header, shown) in enumerate(cases, 1):
        c = ProxiedClient(g.host, header)
        assert c.banner.startswith("220 gw.postern.test"), c.banner
        other, ours = relay_check(c)
        assert other.startswith("554 5.7.1"), "%s must not relay: %s" % (shown, other)   # not trusted
        assert ours.startswith("250")
        assert c.cmd("DATA").startswith("354")
        c.send(MSG)
        qid = queue_id(c.cmd("."))
        c.close()
        m = [m for m in sink.wait_count(n) if qid.encode() in m][0]
        received = our_received_and_rest(m)[0]
        assert ("[%s]" % shown).encode() in received, received
        assert "client [%s]" % shown in g.log()
    assert g.log().count("PROXY v1 from [127.0.0.1]") == 2 and g.log().count("PROXY v2 from [127.0.0.1]") == 2
    g.stop()


def test_local_and_unknown_keep_the_connection_address():
    g, _ = gw()
    for header in (b"PROXY UNKNOWN\r\n", v2_tcp4("0.0.0.0", cmd=0x20)):
        c = ProxiedClient(g.host, header)
        assert c.banner.startswith("220")
        other, _ = relay_check(c)
        assert other.startswith("250"), other        # 127.0.0.1 is trusted
        c.close()
    g.stop()


def test_malformed_or_missing_headers_close_the_connection():
    g, _ = gw()
    bad = [b"EHLO client.test\r\n",                                   # no header at all
           b"PROXY TCP4 999.0.2.1 127.0.0.1 1 2\r\n",
           b"PROXY TCP4 192.0.2.1 127.0.0.1 1 2\n",                   # LF only
           b"PROXY " + b"x" * 200,                                    # no line end within 107 bytes
           V2_SIG + bytes([0x11, 0x11, 0, 12]) + b"\0" * 12,          # wrong version
           V2_SIG + bytes([0x21, 0x12, 0, 12]) + b"\0" * 12]          # UDP
    for b in bad:
        s = socket.create_connection((g.host, 2526), timeout=5)
        s.sendall(b)
        got = s.recv(1000)
        assert got == b"", "%r answered %r" % (b[:20], got)
        s.close()
    assert g.log().count("bad PROXY protocol header from [127.0.0.1]: connection closed") == len(bad)
    # the plain listener is unaffected
    assert Client(g.host).banner.startswith("220")
    g.stop()


def test_header_timeout_and_per_client_limits_use_the_presented_address():
    g, _ = gw(smtp_timeout="1s", max_sessions_per_client="2")
    # a balancer that connects and says nothing is timed out
    s = socket.create_connection((g.host, 2526), timeout=5)
    t0 = time.time()
    assert s.recv(1000).startswith(b"421 4.4.2")
    assert time.time() - t0 < 3
    s.close()
    g.stop()
    g, _ = gw(max_sessions_per_client="2")
    # three clients from one presented address: the third is refused; another address is not
    keep = [ProxiedClient(g.host, v2_tcp4("192.0.2.9")) for _ in range(2)]
    assert all(k.banner.startswith("220") for k in keep)
    third = socket.create_connection((g.host, 2526), timeout=5)
    third.sendall(v2_tcp4("192.0.2.9"))
    assert third.recv(1000).startswith(b"421 4.7.0 Too many connections from your address")
    other = ProxiedClient(g.host, v2_tcp4("192.0.2.10"))
    assert other.banner.startswith("220"), "the balancer's own address must not be limited"
    for k in keep + [other]:
        k.close()
    g.stop()


def test_proxy_listen_without_proxy_networks_refuses_to_start():
    g = Gateway(sink=Sink(addr(2)), proxy_listen="%s:2526" % addr(1))
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf, "-t"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode != 0 and "proxy_listen needs proxy_networks" in r.stdout + r.stderr, r


def test_proxy_networks_limits_who_may_present_an_address():
    g, _ = gw(proxy_networks="%s/32" % addr(3))
    s = socket.create_connection((g.host, 2526), timeout=5)          # from 127.0.0.1: not the balancer
    try:
        s.sendall(b"PROXY TCP4 192.0.2.1 127.0.0.1 40000 2526\r\n")
        got = s.recv(1000)
    except ConnectionResetError:      # closed with the header unread: a reset
        got = b""
    assert got == b"", got
    s.close()
    assert "not in proxy_networks" in g.log()
    s = socket.create_connection((g.host, 2526), timeout=5, source_address=(addr(3), 0))
    s.sendall(b"PROXY TCP4 192.0.2.1 127.0.0.1 40000 2526\r\n")
    assert s.recv(1000).startswith(b"220")
    s.close()
    g.stop()


run_tests(globals())
