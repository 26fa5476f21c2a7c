"""Connection-stage defence. dnsbl: weighted block and allow lists at
connect, against a local unbound serving test lists (RFC 5782 test entries:
127.0.0.2 listed, 127.0.0.1 not), return-code filters, a list that does not
answer, and domain lists on the HELO name and the MAIL FROM domain. The
pregreet test (core, pregreet_wait): a client talking before the final 220
is refused; a patient one is served; trusted networks do not wait."""
from harness import *

PLUGDIR = os.path.join(BUILD, "plugins")


def rev(ip):
    return ".".join(reversed(ip.split(".")))


def lists():
    return DnsServer([
        "2.0.0.127.zen.dnsbl.test. A 127.0.0.2",                 # RFC 5782: always listed
        "2.0.0.127.zen.dnsbl.test. TXT 'test entry'",
        "%s.zen.dnsbl.test. A 127.0.0.4" % rev(addr(61)),
        "%s.wl.dnswl.test. A 127.0.9.2" % rev(addr(61)),          # allowed: -5 outweighs +3
        "%s.bl.dnsbl.test. A 127.0.0.20" % rev(addr(62)),         # outside the filter: not counted
        "%s.bl.dnsbl.test. A 127.0.0.3" % rev(addr(63)),          # 2: under the threshold
        "%s.zen.dnsbl.test. A 127.0.0.10" % rev(addr(64)),
        "%s.bl.dnsbl.test. A 127.0.0.5" % rev(addr(64)),
        "spammer.test.dbl.dnsbl.test. A 127.0.1.2",
        "bad-helo.test.dbl.dnsbl.test. A 127.0.1.2",
    ], refuse=["down.dnsbl.test"])


def gw(dns, sink):
    return Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="dnsbl", dns_server=dns.address(),
                   trusted_networks="192.0.2.1/32", **{
                       "dnsbl.sites": "zen.dnsbl.test*3, bl.dnsbl.test=127.0.0.[2..11]*2, "
                                      "wl.dnswl.test=127.0.[0..255].[1;2;3]*-5, down.dnsbl.test*3",
                       "dnsbl.domain_sites": "dbl.dnsbl.test*3", "dnsbl.threshold": "3"}).start()


def test_weights_threshold_filters_and_rfc5782_entries():
    dns = lists()
    sink = Sink(addr(2))
    g = gw(dns, sink)
    c = Client(g.host, source="127.0.0.2")
    assert c.banner == "554 5.7.1 Service unavailable; client [127.0.0.2] blocked using zen.dnsbl.test (score 3)", \
        c.banner
    assert c.closed()
    for ip in ("127.0.0.1", addr(61), addr(62), addr(63)):
        c = Client(g.host, source=ip)
        assert c.banner.startswith("220"), (ip, c.banner)
        c.close()
    c = Client(g.host, source=addr(64))
    assert c.banner.startswith("554 5.7.1") and "zen.dnsbl.test bl.dnsbl.test (score 5)" in c.banner, c.banner
    assert "dnsbl: no answer for " in g.log() and "down.dnsbl.test" in g.log()
    g.stop()


def test_stages_with_nothing_to_look_up_stay_on_the_loop():
    """Without domain lists MAIL has nothing to look up, and a trusted
    client is not looked up at all: those calls finish on the loop. A
    connect that needs the lists still goes to a worker."""
    dns = lists()
    sink = Sink(addr(2))
    g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="dnsbl", dns_server=dns.address(),
                http_listen="%s:9025" % addr(1), **{"dnsbl.sites": "zen.dnsbl.test*3"}).start()
    assert send_mail(g, source=addr(65)).startswith("250")       # not listed: looked up at connect
    # a deferred run counts where it started (loop) and where it ran (worker)
    assert chain_c_runs(g) == {"loop": 2, "worker": 1, "deferred": 1, "dns_wait": 0}, chain_c_runs(g)
    assert send_mail(g).startswith("250")                         # 127.0.0.1: trusted_networks
    assert chain_c_runs(g) == {"loop": 4, "worker": 1, "deferred": 1, "dns_wait": 0}, chain_c_runs(g)
    g.stop()


def test_domain_lists_on_helo_and_sender():
    dns = lists()
    sink = Sink(addr(2))
    g = gw(dns, sink)
    c = Client(g.host, source=addr(63))       # 2 of its own
    c.cmd("EHLO mta.fine.test")
    rep = c.cmd("MAIL FROM:<x@spammer.test>")
    assert rep == "554 5.7.1 <x@spammer.test>: Sender address rejected: listed at bl.dnsbl.test dbl.dnsbl.test " \
                  "(score 5)", rep
    assert c.cmd("MAIL FROM:<x@fine.test>").startswith("250")
    c.close()
    c = Client(g.host, source="127.0.0.1")
    c.cmd("EHLO bad-helo.test")
    assert c.cmd("MAIL FROM:<x@fine.test>").startswith("554 5.7.1")
    c.close()
    assert "queued as" in send_mail(g)        # from 127.0.0.1, HELO client.test: fine
    g.stop()
    bad = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="dnsbl", **{"dnsbl.sites": "zen.test=127.0.0.[9..2]"})
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", bad.conf, "-t"], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode != 0 and "dnsbl.sites: bad site 'zen.test=127.0.0.[9..2]'" in r.stdout + r.stderr, r


def test_pregreet_refused_patient_clients_served_trusted_exempt():
    sink = Sink(addr(2))
    g = Gateway(sink=sink, pregreet_wait="1s", trusted_networks="127.0.0.1/32").start()
    # a bot talks as soon as it sees "220-"
    import socket
    bot = socket.create_connection((g.host, 2525), source_address=(addr(70), 0), timeout=5)
    first = bot.recv(200)
    assert first == b"220-gw.postern.test ESMTP Postern\r\n", first
    bot.sendall(b"EHLO bot.test\r\n")
    t0 = time.time()
    got = b""
    while b"554" not in got and time.time() - t0 < 5:
        chunk = bot.recv(200)
        if not chunk:
            break
        got += chunk
    assert got == b"554 5.5.1 Protocol error: talking before the greeting\r\n", got
    assert bot.recv(10) == b"", "closed after the refusal"
    bot.close()
    wait_for(lambda: "PREGREET" in g.log() and "EHLO bot.test" in g.log(), 5, "the PREGREET log line")
    # a patient client: the whole greeting after the wait, then business as usual
    import threading
    patient = {}

    def be_patient():
        t0 = time.time()
        c = Client(g.host, source=addr(71))
        patient["waited"] = time.time() - t0
        patient["banner"] = c.banner
        patient["ehlo"] = c.cmd("EHLO patient.test")
        c.close()
    t = threading.Thread(target=be_patient)
    t.start()
    time.sleep(0.2)
    # while it waits, others are served: the wait is a timer, not a sleep
    t0 = time.time()
    assert "queued as" in send_mail(g)        # 127.0.0.1: trusted, no wait
    assert time.time() - t0 < 0.7, time.time() - t0
    t.join(10)
    assert patient["banner"] == "220-gw.postern.test ESMTP Postern\n220 gw.postern.test ESMTP Postern", patient
    assert 0.9 <= patient["waited"] < 2.5, patient
    assert patient["ehlo"].startswith("250")
    g.stop()


run_tests(globals())
