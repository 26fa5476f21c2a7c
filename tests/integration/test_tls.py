"""TLS. Inbound: STARTTLS with a throw-away CA (swaks --tls and Python's
ssl as real clients), STARTTLS command injection refused, the session reset
after the handshake, the Received header naming protocol and cipher, TLS
visible to plugins and Lua, require_tls_networks, session resumption.
Outbound: per-domain policy (may / encrypt / verify) against a TLS-speaking
next hop (a second posternd with its own certificate, itself checked by swaks
above) and against smtp-sink (no STARTTLS): required TLS that fails defers,
never falls back to plain text, and says why in the queue listing."""
from harness import *


def tls_gw(sink, certs, **conf):
    d, _ = certs
    return Gateway(sink=sink, tls_cert=os.path.join(d, "gw.postern.test.crt"),
                   tls_key=os.path.join(d, "gw.postern.test.key"), **conf).start()


def test_swaks_starttls_and_received_cipher():
    certs = make_certs(["gw.postern.test"])
    sink = Sink(addr(2))
    g = tls_gw(sink, certs)
    r = subprocess.run(["swaks", "--server", "%s:2525" % g.host, "--tls", "--tls-verify", "--tls-ca-path", certs[1],
                        "--tls-sni", "gw.postern.test", "--from", "a@src.test", "--to", "x@example.test"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "TLS started" in r.stdout, r.stdout + r.stderr
    qid = queue_id(r.stdout)
    received, _ = our_received_and_rest(sink.wait_count(1)[0])
    assert re.search(rb"\(using TLSv1\.[23] with cipher \S+ \(\d+/\d+ bits\)\)", received), received
    assert ("with ESMTPS id %s" % qid).encode() in received
    assert "STARTTLS: TLSv1." in g.log()
    g.stop()


def test_ehlo_offers_starttls_only_before_tls_and_the_session_resets():
    certs = make_certs(["gw.postern.test"])
    sink = Sink(addr(2))
    g = tls_gw(sink, certs)
    c = Client(g.host)
    assert "250-STARTTLS" in c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<a@src.test>").startswith("250")
    assert c.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    c.starttls(cafile=certs[1], server_name="gw.postern.test")
    # RFC 3207: state from before TLS is gone - MAIL needs a new EHLO
    assert c.cmd("MAIL FROM:<a@src.test>").startswith("503 5.5.1")
    ehlo = c.cmd("EHLO client.test")
    assert "STARTTLS" not in ehlo and ehlo.startswith("250")
    assert c.cmd("STARTTLS").startswith("503 5.5.1")
    c.cmd("MAIL FROM:<a@src.test>")
    c.cmd("RCPT TO:<x@example.test>")
    c.cmd("DATA")
    c.send("Subject: over tls\r\n\r\nsecret\r\n")
    assert "queued as" in c.cmd(".")
    sink.wait_count(1)
    g.stop()


def test_starttls_command_injection_is_refused():
    certs = make_certs(["gw.postern.test"])
    sink = Sink(addr(2))
    g = tls_gw(sink, certs)
    c = Client(g.host)
    c.cmd("EHLO client.test")
    # the attacker's plain-text commands ride in the same packet as STARTTLS
    c.send("STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\nRCPT TO:<victim@example.test>\r\n")
    assert c.reply() == "220 2.0.0 Ready to start TLS"
    c.starttls(cafile=certs[1], server_name="gw.postern.test")
    # after the handshake none of the injected commands took effect
    assert c.cmd("EHLO client.test").startswith("250")
    assert c.cmd("RCPT TO:<victim@example.test>").startswith("503 5.5.1")   # no MAIL happened
    assert "pipelined" in g.log() and "after STARTTLS: discarded" in g.log()
    g.stop()


def test_tls_state_reaches_plugins_and_lua():
    certs = make_certs(["gw.postern.test"])
    sink = Sink(addr(2))
    d = tempfile.mkdtemp(prefix="lua-tls-")
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    script = os.path.join(d, "tls.lua")
    with open(script, "w") as f:
        f.write('postern.on("eom", function(tx) tx:add_header("X-Lua-TLS", tostring(tx:tls())) end)\n')
    os.chmod(script, 0o644)
    # tls_required (the shipped placeholder) now sees a real TLS state
    g = tls_gw(sink, certs, plugin_dir=os.path.join(BUILD, "plugins"),
               plugins="tls_required, lua:" + script, **{"tls_required.domains": "example.test"})
    c = Client(g.host)
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<a@src.test>")
    assert c.cmd("RCPT TO:<x@example.test>").startswith("530 5.7.0")    # plain text: refused
    assert c.cmd("STARTTLS").startswith("220")
    c.starttls()
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<a@src.test>")
    assert c.cmd("RCPT TO:<x@example.test>").startswith("250")          # under TLS: fine
    c.cmd("DATA")
    c.send("Subject: t\r\n\r\nx\r\n")
    assert "queued as" in c.cmd(".")
    assert b"X-Lua-TLS: true" in sink.wait_count(1)[0]
    g.stop()


def test_require_tls_networks():
    certs = make_certs(["gw.postern.test"])
    sink = Sink(addr(2))
    g = tls_gw(sink, certs, require_tls_networks=addr(7) + "/32")
    c = Client(g.host, source=addr(7))
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<a@src.test>") == "530 5.7.0 Must issue a STARTTLS command first"
    c.cmd("STARTTLS")
    c.starttls()
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<a@src.test>").startswith("250")
    other = Client(g.host, source=addr(8))          # not in the list: plain text is fine
    other.cmd("EHLO client.test")
    assert other.cmd("MAIL FROM:<a@src.test>").startswith("250")
    g.stop()


def test_session_resumption():
    import ssl
    certs = make_certs(["gw.postern.test"])
    sink = Sink(addr(2))
    g = tls_gw(sink, certs)
    ctx = ssl.create_default_context(cafile=certs[1])
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2    # session IDs: resumption is visible at once
    session = None
    reused = []
    for _ in range(2):
        c = Client(g.host)
        c.cmd("EHLO client.test")
        c.cmd("STARTTLS")
        c.sock = ctx.wrap_socket(c.sock, server_hostname="gw.postern.test", session=session)
        c.buf = b""
        assert c.cmd("EHLO client.test").startswith("250")
        reused.append(c.sock.session_reused)
        session = c.sock.session
        c.cmd("QUIT")
        c.close()
    assert reused == [False, True], reused
    assert "(resumed)" in g.log()
    g.stop()


def test_implicit_tls_port():
    import ssl
    certs = make_certs(["gw.postern.test"])
    sink = Sink(addr(2))
    g = tls_gw(sink, certs, smtps_listen="%s:4650" % addr(1))
    raw = socket.create_connection((g.host, 4650), timeout=10)
    ctx = ssl.create_default_context(cafile=certs[1])
    c = Client.__new__(Client)
    c.sock = ctx.wrap_socket(raw, server_hostname="gw.postern.test")
    c.buf = b""
    assert c.reply().startswith("220 gw.postern.test")       # the greeting comes over TLS
    assert "STARTTLS" not in c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<a@src.test>")
    c.cmd("RCPT TO:<x@example.test>")
    c.cmd("DATA")
    c.send("Subject: implicit\r\n\r\nx\r\n")
    assert "queued as" in c.cmd(".")
    assert b"with ESMTPS id" in sink.wait_count(1)[0]
    # plain text on the TLS port gets nowhere
    p = socket.create_connection((g.host, 4650), timeout=5)
    p.sendall(b"EHLO plain.test\r\n")
    p.settimeout(5)
    try:
        data = p.recv(100)
    except (ConnectionResetError, socket.timeout):
        data = b""
    assert not data.startswith(b"220") and not data.startswith(b"250"), data
    g.stop()


def test_bad_certificate_config_is_a_clear_error():
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2), tls_cert="/etc/hostname", tls_key="/etc/hostname")
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and "TLS: tls_cert /etc/hostname" in r.stderr, r.stderr
    g2 = Gateway(default_transport="smtp:[%s]:2526" % addr(2), tls_cert="/etc/hostname")
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g2.conf, "-t"], capture_output=True, text=True)
    assert r.returncode == 1 and "tls_cert and tls_key go together" in r.stderr


# ---- outbound -------------------------------------------------------------

def tls_peer(certs, sink, name="mx.right.test"):
    """A posternd on addr(5):2526 with a certificate for name, relaying to sink."""
    d, _ = certs
    return Gateway(host=addr(5), port=2526, sink=sink, hostname=name, relay_domains="example.test",
                   tls_cert=os.path.join(d, name + ".crt"), tls_key=os.path.join(d, name + ".key")).start()


def sender_gw(certs, policy_lines, **conf):
    return Gateway(default_transport="smtp:[%s]:2526" % addr(5), tls_policy_table=table_file(policy_lines),
                   tls_ca_file=certs[1], **conf).start()


def postern_list(g):
    return subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "queue", "list"], capture_output=True,
                          text=True, timeout=20).stdout



def daemon_fds(g):
    """How many files posternd's daemon (the privileged parent's child) has open."""
    kids = open("/proc/%d/task/%d/children" % (g.proc.pid, g.proc.pid)).read().split()
    return len(os.listdir("/proc/%s/fd" % kids[0]))


def test_clients_that_break_off_the_handshake():
    """The ClientHello's step runs on a worker: clients that hang up right
    after 220, send half a ClientHello and hang up, or send garbage, leave no
    open file and no stuck session behind, and a good client still gets in."""
    certs = make_certs(["gw.postern.test"])
    sink = Sink(addr(2))
    g = tls_gw(sink, certs, log_level="info")
    before = daemon_fds(g)
    hello = bytes.fromhex("16030100a0010000") + b"\x03\x03" + os.urandom(32)   # a ClientHello, cut short
    for i in range(60):
        c = Client(g.host)
        c.cmd("EHLO client.test")
        assert c.cmd("STARTTLS").startswith("220")
        if i % 3 == 1:
            c.sock.sendall(hello)
        elif i % 3 == 2:
            c.sock.sendall(b"GET / HTTP/1.0\r\n\r\n" * 20)
            time.sleep(0.01)
        c.close()
    wait_for(lambda: g.log().count("disconnect from") >= 60, 20, "every broken session to end")
    wait_for(lambda: daemon_fds(g) <= before, 10, "the sockets to be closed")
    assert "STARTTLS handshake failed" in g.log()
    r = subprocess.run(["swaks", "--server", "%s:2525" % g.host, "--tls", "--tls-verify", "--tls-ca-path", certs[1],
                        "--tls-sni", "gw.postern.test", "--from", "a@src.test", "--to", "x@example.test"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    sink.wait_count(1)
    g.stop()

def test_verify_policy_delivers_over_verified_tls():
    certs = make_certs(["mx.right.test"])
    sink = Sink(addr(2))
    peer = tls_peer(certs, sink)
    g = sender_gw(certs, "example.test verify match=mx.right.test\n")
    send_message(g.host, 2525, "a@src.test", ["x@example.test"], "Subject: secure\r\n\r\nx\r\n")
    m = sink.wait_count(1)[0]
    # the peer's Received header records that our client spoke TLS to it
    assert re.search(rb"from gw\.postern\.test \(\[127\.0\.\d+\.\d+\]\)\r?\n\t\(using TLSv1\.[23] with cipher", m), m[:600]
    assert re.search(r"TLS to %s:2526: TLSv1\.[23] .*certificate verified" % re.escape(addr(5)), g.log())
    g.stop()
    peer.stop()


def test_outbound_sessions_resume_per_next_hop_and_policy():
    """The outbound session cache: a new connection to the same next hop
    under the same policy resumes; another policy to the same server does
    not use that session; tls_session_cache = 0 never resumes."""
    certs = make_certs(["mx.right.test"])
    sink = Sink(addr(2))
    peer = tls_peer(certs, sink)
    policy = "example.test verify match=mx.right.test\nother.test encrypt\n"
    # idle connections are kept 1 s: each message after a 1.5 s pause needs a connection of its own
    g = sender_gw(certs, policy, connection_cache_time="1s", relay_domains="example.test other.test")
    tls_lines = lambda gw: [l for l in gw.log().splitlines() if "TLS to %s:2526" % addr(5) in l]
    for i in range(3):
        send_message(g.host, 2525, "a@src.test", ["x@example.test"], "Subject: %d\r\n\r\nx\r\n" % i)
        sink.wait_count(i + 1)
        time.sleep(1.5)
    wait_for(lambda: len(tls_lines(g)) == 3, 10, "three TLS connections")
    lines = tls_lines(g)
    assert "session resumed" not in lines[0] and all("session resumed" in l for l in lines[1:]), lines
    assert all("certificate verified" in l for l in lines), lines        # a resumed session keeps its verification
    for i in range(2):               # the same server under "encrypt": a session of its own
        send_message(g.host, 2525, "a@src.test", ["x@other.test"], "Subject: o%d\r\n\r\nx\r\n" % i)
        wait_for(lambda: len(tls_lines(g)) == 4 + i, 10, "the encrypt connection")
        time.sleep(1.5)
    lines = tls_lines(g)
    assert "session resumed" not in lines[3] and "session resumed" in lines[4], lines
    g.stop()
    off = sender_gw(certs, policy, connection_cache_time="1s", tls_session_cache="0")
    for i in range(2):
        send_message(off.host, 2525, "a@src.test", ["x@example.test"], "Subject: n%d\r\n\r\nx\r\n" % i)
        sink.wait_count(4 + i)
        time.sleep(1.5)
    wait_for(lambda: len(tls_lines(off)) == 2, 10, "two TLS connections")
    assert not any("session resumed" in l for l in tls_lines(off)), tls_lines(off)
    off.stop()
    peer.stop()


def test_verify_policy_defers_on_wrong_name_and_untrusted_ca():
    certs = make_certs(["mx.right.test"])
    sink = Sink(addr(2))
    peer = tls_peer(certs, sink)
    g = sender_gw(certs, "example.test verify match=mx.wrong.test\n")
    qid = queue_id(send_message(g.host, 2525, "a@src.test", ["x@example.test"], "Subject: s\r\n\r\nx\r\n"))
    wait_for(lambda: "TLS certificate verification failed" in g.log(), 10, "verification failure")
    assert "hostname mismatch" in g.log(), g.log()[-2000:]
    assert "TLS certificate verification failed" in postern_list(g)
    g.stop()
    # a certificate from a CA we do not trust
    other_ca = make_certs(["unused.test"])
    g2 = sender_gw(other_ca, "example.test verify match=mx.right.test\n")
    q2 = queue_id(send_message(g2.host, 2525, "a@src.test", ["y@example.test"], "Subject: s\r\n\r\nx\r\n"))
    wait_for(lambda: "TLS certificate verification failed" in g2.log(), 10, "untrusted CA")
    assert "unable to get local issuer certificate" in g2.log() or "self-signed" in g2.log(), g2.log()[-2000:]
    g2.attempt_ended(q2)
    assert sink.count() == 0, "mail went out although TLS could not be verified"
    assert qid in g.queue_files()
    g2.stop()
    peer.stop()


def test_encrypt_policy_defers_when_no_starttls_is_offered():
    certs = make_certs(["unused.test"])
    plain = Sink(addr(5), port=2526)           # smtp-sink offers no STARTTLS
    g = sender_gw(certs, "example.test encrypt\n")
    qid = queue_id(send_message(g.host, 2525, "a@src.test", ["x@example.test"], "Subject: s\r\n\r\nx\r\n"))
    wait_for(lambda: "does not offer STARTTLS" in g.log(), 10, "encrypt deferral")
    assert ("4.7.4 TLS is required (encrypt) but host %s[%s] does not offer STARTTLS" % (addr(5), addr(5))
            in postern_list(g))
    g.attempt_ended(qid)
    assert plain.count() == 0 and qid in g.queue_files()
    g.stop()


def test_may_is_opportunistic():
    certs = make_certs(["mx.right.test"])
    sink = Sink(addr(2))
    peer = tls_peer(certs, sink)
    plain = Sink(addr(6), port=2526)
    g = sender_gw(certs, "", transport_table=None)
    g.set(transport_table=table_file("plain.test smtp:[%s]:2526\n" % addr(6)))
    g.stop()
    g.start()
    send_message(g.host, 2525, "a@src.test", ["x@example.test", "y@plain.test"], "Subject: s\r\n\r\nx\r\n")
    assert b"(using TLS" in sink.wait_count(1)[0]               # TLS where offered (not verified: fine)
    assert sink_rcpts(plain.wait_count(1)[0]) == [b"y@plain.test"]   # plain text where not
    assert "certificate not verified" in g.log() or "certificate verified" in g.log()
    g.stop()
    peer.stop()


def tls_postfix(certs, sink, name="mx.right.test", port=2526):
    """A stock Postfix smtpd offering STARTTLS with certificate name on
    addr(5):port, relaying to sink; its Received header records the cipher."""
    d, _ = certs
    return Postfix(addr(5), port, "[%s]:%d" % (sink.host, sink.port), main={
        "myhostname": name, "smtpd_tls_security_level": "may", "smtpd_tls_received_header": "yes",
        "smtpd_tls_cert_file": os.path.join(d, name + ".crt"), "smtpd_tls_key_file": os.path.join(d, name + ".key"),
        "smtpd_tls_loglevel": "1"})


def test_outbound_tls_to_a_real_postfix():
    """posternd's client against Postfix's smtpd: verify succeeds on the
    right name, defers (and never goes plain) on a wrong one."""
    if not Postfix.available():
        skip("needs root and postfix to run a private Postfix")
    certs = make_certs(["mx.right.test"])
    sink = Sink(addr(2))
    pf = tls_postfix(certs, sink)
    g = sender_gw(certs, "example.test verify match=mx.right.test\nwrong.test verify match=mx.other.test\n",
                  relay_domains="example.test wrong.test")
    send_message(g.host, 2525, "a@src.test", ["x@example.test"], "Subject: to postfix\r\n\r\nx\r\n")
    m = sink.wait_count(1)[0]
    # Postfix's own Received header: it saw our client speak TLS
    assert re.search(rb"\(using TLSv1\.[23] with cipher \S+ \(\d+/\d+ bits\).*?\s+"
                     rb"\(No client certificate requested\)\s+by mx\.right\.test \(Postfix\) with ESMTPS", m, re.S), m[:800]
    assert re.search(r"TLS connection established from \S+: TLSv1\.[23] with cipher", pf.log()), pf.log()[-2000:]
    assert re.search(r"TLS to %s:2526: TLSv1\.[23] .*certificate verified" % re.escape(addr(5)), g.log())
    qid = queue_id(send_message(g.host, 2525, "a@src.test", ["y@wrong.test"], "Subject: s\r\n\r\nx\r\n"))
    wait_for(lambda: "hostname mismatch" in g.log(), 10, "verification failure against Postfix")
    g.attempt_ended(qid)
    assert sink.count() == 1 and qid in g.queue_files(), "mail for wrong.test left although TLS was not verified"
    g.stop()


def test_inbound_starttls_from_a_real_postfix_client():
    """Postfix's smtp client with smtp_tls_security_level=verify relays
    through posternd: our certificate verifies against the test CA under
    the name Postfix expects, and our Received header names the cipher."""
    if not Postfix.available():
        skip("needs root and postfix to run a private Postfix")
    certs = make_certs(["gw.postern.test"])
    sink = Sink(addr(2))
    g = tls_gw(sink, certs, trusted_networks="127.0.0.0/8")
    pf = Postfix(addr(6), 2525, "[%s]:2525" % g.host, main={
        "smtp_tls_security_level": "verify", "smtp_tls_CAfile": certs[1],
        "smtp_tls_verify_cert_match": "gw.postern.test", "smtp_tls_loglevel": "1"})
    send_message(addr(6), 2525, "a@src.test", ["x@example.test"], "Subject: via postfix\r\n\r\nx\r\n")
    received, _ = our_received_and_rest(sink.wait_count(1)[0])
    assert re.search(rb"from postfix\.peer\.test \(.*\)\s+\(using TLSv1\.[23] with cipher", received), received
    assert re.search(r"Verified TLS connection established to %s\[%s\]:2525" % (re.escape(g.host), re.escape(g.host)),
                     pf.log()), pf.log()[-2000:]
    g.stop()


def test_plugin_and_lua_demand_tls_per_sender_and_recipient():
    plain = Sink(addr(5), port=2526)          # no STARTTLS: demanded TLS cannot happen there
    d = tempfile.mkdtemp(prefix="lua-tls-")
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    script = os.path.join(d, "demand.lua")
    with open(script, "w") as f:
        f.write('postern.on("eom", function(tx)\n'
                '  for _, r in ipairs(tx:recipients()) do\n'
                '    if r:match("^private") then tx:require_tls(r, "verify") end\n'
                '  end\nend)\n')
    os.chmod(script, 0o644)
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(5), plugin_dir=os.path.join(BUILD, "plugins"),
                plugins="tls_required, lua:" + script,
                **{"tls_required.outbound_senders": "@legal.test", "tls_required.outbound_domains": "bank.test"}).start()
    q_sender = queue_id(send_message(g.host, 2525, "counsel@legal.test", ["x@example.test"], "Subject: a\r\n\r\nx\r\n"))
    q_domain = queue_id(send_message(g.host, 2525, "a@src.test", ["x@bank.test"], "Subject: b\r\n\r\nx\r\n"))
    q_lua = queue_id(send_message(g.host, 2525, "a@src.test", ["private@example.test"], "Subject: c\r\n\r\nx\r\n"))
    q_public = queue_id(send_message(g.host, 2525, "a@src.test", ["public@example.test"], "Subject: d\r\n\r\nx\r\n"))
    m = plain.wait_count(1)[0]
    assert sink_rcpts(m) == [b"public@example.test"]           # only the undemanding one goes out
    wait_for(lambda: re.search(r"%s: removed" % q_public, g.log()), 10, "the delivered message to leave the queue")
    wait_for(lambda: g.log().count("does not offer STARTTLS") >= 3, 10, "three TLS deferrals")
    for q in (q_sender, q_domain, q_lua):
        g.attempt_ended(q)
    assert plain.count() == 1
    assert sorted(g.queue_files()) == sorted([q_sender, q_domain, q_lua])
    assert "TLS is required (verify)" in g.log() and "TLS is required (encrypt)" in g.log()
    g.stop()


# ---- MTA-STS (RFC 8461) -------------------------------------------------

def test_mta_sts_enforce():
    if os.geteuid() != 0:
        skip("needs root to serve HTTPS on port 443")
    certs = make_certs(["mx.sts.test", "mta-sts.sts.test", "mta-sts.wrongmx.test", "mta-sts.plain.test",
                        "mta-sts.html.test", "mta-sts.big.test"])
    zone = ['_mta-sts.sts.test. TXT "v=STSv1; id=20261122"', "mta-sts.sts.test. A %s" % addr(80),
            "sts.test. MX 10 mx.sts.test.", "mx.sts.test. A %s" % addr(5),
            '_mta-sts.wrongmx.test. TXT "v=STSv1; id=1"', "mta-sts.wrongmx.test. A %s" % addr(81),
            "wrongmx.test. MX 10 mx.sts.test.",
            '_mta-sts.plain.test. TXT "v=STSv1; id=1"', "mta-sts.plain.test. A %s" % addr(82),
            "plain.test. MX 10 mx.plain.test.", "mx.plain.test. A %s" % addr(6),
            '_mta-sts.html.test. TXT "v=STSv1; id=1"', "mta-sts.html.test. A %s" % addr(83),
            "html.test. MX 10 mx.plain.test.",
            '_mta-sts.big.test. TXT "v=STSv1; id=1"', "mta-sts.big.test. A %s" % addr(84),
            "big.test. MX 10 mx.plain.test."]
    dns = DnsServer(zone)
    https_policy_server(addr(80), certs, "mta-sts.sts.test",           # chunked: the others send a length
                        "version: STSv1\nmode: enforce\nmx: mx.sts.test\nmax_age: 86400\n", chunked=True)
    https_policy_server(addr(81), certs, "mta-sts.wrongmx.test",
                        "version: STSv1\nmode: enforce\nmx: *.elsewhere.test\nmax_age: 86400\n")
    https_policy_server(addr(82), certs, "mta-sts.plain.test",
                        "version: STSv1\nmode: enforce\nmx: mx.plain.test\nmax_age: 86400\n")
    https_policy_server(addr(83), certs, "mta-sts.html.test",          # not text/plain: no policy (RFC 8461 3.2)
                        "version: STSv1\nmode: enforce\nmx: mx.plain.test\nmax_age: 86400\n",
                        content_type="text/html; charset=utf-8")
    https_policy_server(addr(84), certs, "mta-sts.big.test",           # 1 MiB: read no further than 72 KiB
                        "version: STSv1\nmode: enforce\nmx: mx.plain.test\nmax_age: 86400\n" + "x: y\n" * 262144)
    sink = Sink(addr(2))
    peer = tls_peer(certs, sink, name="mx.sts.test")     # TLS, certificate for mx.sts.test
    plain = Sink(addr(6), port=2526)                     # no STARTTLS
    g = Gateway(default_transport="mx", dns_server=dns.address(), smtp_port="2526", tls_ca_file=certs[1],
                relay_domains="example.test").start()
    peer.set(relay_domains="sts.test")
    peer.stop()
    peer.start()
    send_message(g.host, 2525, "a@src.test", ["x@sts.test"], "Subject: sts\r\n\r\nx\r\n")
    m = sink.wait_count(1)[0]
    assert b"(using TLSv1." in m                                           # delivered over TLS
    assert re.search(r"TLS to %s:2526 mx\.sts\.test: .*certificate verified" % re.escape(addr(5)), g.log())
    assert "MTA-STS: sts.test policy 20261122, mode enforce" in g.log(), [l for l in g.log().splitlines() if "STS" in l]
    # the policy names other MX hosts: deferred, not delivered
    q2 = queue_id(send_message(g.host, 2525, "a@src.test", ["y@wrongmx.test"], "Subject: w\r\n\r\nx\r\n"))
    wait_for(lambda: "MTA-STS: no MX host matches" in g.log(), 10, "policy mismatch deferral")
    # enforce needs verified TLS: an MX without STARTTLS defers instead of plain text
    q3 = queue_id(send_message(g.host, 2525, "a@src.test", ["z@plain.test"], "Subject: p\r\n\r\nx\r\n"))
    wait_for(lambda: "TLS is required (verify)" in g.log(), 10, "enforce without STARTTLS deferral")
    g.attempt_ended(q2)
    g.attempt_ended(q3)
    assert plain.count() == 0 and sink.count() == 1
    assert q2 in g.queue_files() and q3 in g.queue_files()
    # a "policy" served as text/html is none: the same enforce text, yet delivered in plain text
    send_message(g.host, 2525, "a@src.test", ["h@html.test"], "Subject: h\r\n\r\nx\r\n")
    assert sink_rcpts(plain.wait_count(1)[0]) == [b"h@html.test"]
    assert re.search(r"MTA-STS: html\.test publishes a policy .* could not be fetched or parsed "
                     r"\(.*Content-Type text/html, not text/plain\)", g.log()), \
        [l for l in g.log().splitlines() if "STS" in l]
    send_message(g.host, 2525, "a@src.test", ["b@big.test"], "Subject: b\r\n\r\nx\r\n")
    assert sorted(sink_rcpts(m) for m in plain.wait_count(2)) == [[b"b@big.test"], [b"h@html.test"]]
    assert re.search(r"MTA-STS: big\.test publishes a policy .*\(.* answered with over 73728 bytes\)", g.log()), \
        [l for l in g.log().splitlines() if "STS" in l]
    g.stop()
    peer.stop()


run_tests(globals())
