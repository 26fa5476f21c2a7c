"""Outbound controls: the source address and EHLO name, host names in
transports (Postfix's bracket meaning, through a real unbound), pacing per
recipient domain (dest_rate_limit), and SMTP AUTH to a smarthost that is a
real Postfix with Cyrus SASL (sasldb)."""
from harness import *
from scripted_smtp import ScriptedSmtp


def postern(g, *args):
    return subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, *args], capture_output=True, text=True,
                          timeout=30)


def table_file(lines):
    d = tempfile.mkdtemp(prefix="table-")
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    path = os.path.join(d, "t")
    with open(path, "w") as f:
        f.write("".join(l + "\n" for l in lines))
    os.chmod(d, 0o755)
    os.chmod(path, 0o644)
    return path


def send(g, rcpt, subject="x"):
    return queue_id(send_message(g.host, 2525, "alice@src.test", [rcpt], "Subject: %s\r\n\r\nbody\r\n" % subject))


def test_bind_address_and_helo_name():
    peer = ScriptedSmtp(addr(2))
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2), smtp_bind_address=addr(9),
                smtp_helo_name="out.postern.test").start()
    send(g, "ok-1@example.test")
    wait_for(lambda: peer.messages, 10, "delivery")
    assert peer.peers[-1] == addr(9), peer.peers
    assert peer.helos[-1] == "out.postern.test", peer.helos
    g.stop()
    bad = Gateway(default_transport="smtp:[%s]:2526" % addr(2), smtp_bind_address="2001:db8::1")
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", bad.conf, "-t"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode != 0 and "smtp_bind_address: expected an IPv4 address" in r.stdout + r.stderr, r


def test_host_names_in_transports():
    by_address = ScriptedSmtp(addr(2))              # relay.example.test's A record
    by_mx = ScriptedSmtp(addr(4), port=2527)        # the MX host of mxhost.test
    dns = DnsServer(["relay.example.test. A %s" % addr(2), "mxhost.test. MX 10 mx1.mxhost.test.",
                     "mx1.mxhost.test. A %s" % addr(4)])
    table = table_file(["bracket.test smtp:[relay.example.test]:2526", "mxed.test smtp:mxhost.test:2527",
                        "nomx.test smtp:[mxhost.test]:2527"])
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2), transport_table="file:" + table,
                dns_server=dns.address(), retry_min="1h", retry_max="1h", max_queue_lifetime="1d").start()
    send(g, "ok-b@bracket.test")
    send(g, "ok-m@mxed.test")
    nomx = send(g, "ok-n@nomx.test")
    wait_for(lambda: by_address.messages and by_mx.messages, 10, "both deliveries")
    assert by_address.messages[0]["rcpts"] == ["ok-b@bracket.test"]
    assert by_mx.messages[0]["rcpts"] == ["ok-m@mxed.test"]
    # the peer has the message a moment before posternd logs the reply to it
    wait_for(lambda: "relay=mx1.mxhost.test[%s]" % addr(4) in g.log(), 5, "the MX delivery logged")
    wait_for(lambda: "relay=relay.example.test[%s]" % addr(2) in g.log(), 5, "the A delivery logged")
    # brackets: no MX lookup, and mxhost.test has no address of its own
    wait_for(lambda: "%s: to=<ok-n@nomx.test>" % nomx in g.log(), 10, "the bracketed lookup")
    assert "status=deferred (451 4.4.3 no address found for any mail server of mxhost.test)" in g.log(), g.log()
    g.stop()


def test_rate_limit_spreads_arrivals_and_waits_in_the_queue():
    peer = ScriptedSmtp(addr(2))
    table = table_file(["fast.test 0"])
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2), dest_rate_limit="60",
                dest_rate_limit_table="file:" + table).start()
    for i in range(5):
        send(g, "ok-%d@rate.test" % i)
    listing = postern(g, "queue", "list").stdout
    assert "waiting: rate limit for rate.test" in listing, listing
    for i in range(3):
        send(g, "ok-%d@fast.test" % i)
    wait_for(lambda: len(peer.messages) >= 8, 15, "8 deliveries")
    fast = [m["time"] for m in peer.messages if m["rcpts"][0].endswith("@fast.test")]
    rate = [m["time"] for m in peer.messages if m["rcpts"][0].endswith("@rate.test")]
    assert max(fast) - min(fast) < 0.5, fast          # the table lifts the limit for fast.test
    gaps = [b - a for a, b in zip(rate, rate[1:])]
    assert all(0.8 <= gap <= 1.2 for gap in gaps), gaps        # 60/min: one a second, +-20%
    assert "bounced" not in g.log() and "deferred" not in g.log()
    g.stop()


def sasl_postfix(final, users):
    """Postfix as a smarthost: relays only for SASL-authenticated clients,
    AUTH only after STARTTLS, passwords in a Cyrus sasldb."""
    d = tempfile.mkdtemp(prefix="sasl-")
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    os.chmod(d, 0o755)
    db = os.path.join(d, "sasldb2")
    for user, password in users.items():
        subprocess.run(["saslpasswd2", "-c", "-p", "-f", db, "-u", "postfix.peer.test", user],
                       input=password, text=True, check=True, timeout=10)
    shutil.chown(db, "postfix")
    conf = "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\nsasldb_path: %s\n" % db
    certs, _ = make_certs(["postfix.peer.test"])
    return Postfix(addr(5), 2525, "[%s]:%d" % (final.host, final.port), etc_files={"sasl/smtpd.conf": conf}, main={
        "smtpd_sasl_auth_enable": "yes", "smtpd_sasl_type": "cyrus", "smtpd_sasl_path": "smtpd",
        "smtpd_sasl_local_domain": "postfix.peer.test",
        "smtpd_relay_restrictions": "permit_sasl_authenticated, reject", "mynetworks": "127.0.0.254/32",
        "smtpd_tls_security_level": "may", "smtpd_tls_auth_only": "yes",
        "smtpd_tls_cert_file": os.path.join(certs, "postfix.peer.test.crt"),
        "smtpd_tls_key_file": os.path.join(certs, "postfix.peer.test.key")})


def test_smarthost_auth_against_postfix_with_cyrus_sasl():
    if not Postfix.available():
        raise AssertionError("this test needs root and Postfix")
    final = Sink(addr(6))
    pf = sasl_postfix(final, {"alice": "s3cret pass"})
    ip = addr(5)
    table = table_file(["wrong.test smtp:%s:2525" % ip])
    passwords = table_file(["[%s]:2525 alice:s3cret pass" % ip, "%s:2525 alice:wrong" % ip])
    g = Gateway(default_transport="smtp:[%s]:2525" % ip, transport_table="file:" + table,
                smtp_sasl_password_maps="file:" + passwords, retry_min="1h", retry_max="1h",
                max_queue_lifetime="1d").start()
    good = send(g, "someone@example.test", "authenticated")
    wait_for(lambda: final.count() >= 1 or "%s: to=<someone@example.test>" % good in g.log(), 20, "the attempt")
    assert final.count() >= 1 or "status=sent" in g.log(), g.log()[-2000:] + pf.log()[-3000:]
    final.wait_count(1)
    assert "authenticated to postfix.peer.test" not in g.log()      # an IP next hop has no name
    assert re.search(r"authenticated to %s\[%s\]:2525 as alice" % (re.escape(ip), re.escape(ip)), g.log()), g.log()
    assert "TLS to %s:2525: TLSv1." % ip in g.log(), g.log()      # AUTH only after STARTTLS
    wait_for(lambda: "sasl_method=PLAIN, sasl_username=alice" in pf.log(), 10, "Postfix's SASL login line")
    wait_for(lambda: "%s: to=<someone@example.test>" % good in g.log() and "status=sent" in g.log(), 5, "sent")
    # the wrong password: deferred with the server's reply, never bounced
    bad = send(g, "x@wrong.test", "wrong password")
    wait_for(lambda: "%s: to=<x@wrong.test>" % bad in g.log(), 15, "the failed login")
    line = [l for l in g.log().splitlines() if "%s: to=<x@wrong.test>" % bad in l][0]
    assert "status=deferred (4.7.0 SASL authentication failed; server" in line and "535 5.7.8" in line, line
    assert final.count() == 1
    g.stop()


def test_auth_without_tls_only_when_the_table_says_plaintext():
    plain = ScriptedSmtp(addr(2))                       # no STARTTLS: credentials would go in clear
    plain.auth_mechs, plain.account = "PLAIN LOGIN", ("carol", "pw one")
    login = ScriptedSmtp(addr(3), port=2527)            # offers only LOGIN; the entry allows plain text
    login.auth_mechs, login.account = "LOGIN", ("dave", "pw two")
    table = table_file(["login.test smtp:[%s]:2527" % addr(3)])
    passwords = table_file(["[%s]:2526 carol:pw one" % addr(2), "[%s]:2527 dave:pw two plaintext" % addr(3)])
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2), transport_table="file:" + table,
                smtp_sasl_password_maps="file:" + passwords, retry_min="1h", retry_max="1h",
                max_queue_lifetime="1d").start()
    refused = send(g, "ok-1@example.test")
    wait_for(lambda: "%s: to=<ok-1@example.test>" % refused in g.log(), 10, "the refusal")
    assert "status=deferred (4.7.0 not sending credentials to %s[%s] without TLS" % (addr(2), addr(2)) in g.log()
    wait_for(lambda: plain.quits >= 1, 5, "QUIT")
    assert plain.logins == [] and plain.messages == []
    send(g, "ok-2@login.test")
    wait_for(lambda: login.messages, 10, "delivery after AUTH LOGIN")
    assert login.logins == [("LOGIN", "dave", "pw two")], login.logins
    assert "status=sent" in g.log()
    shown = subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "check-config"], capture_output=True,
                           text=True, timeout=10).stdout
    assert "pw one" not in shown and "pw two" not in shown and "dave" in shown, shown
    g.stop()


if __name__ == "__main__":
    run_tests(globals())
