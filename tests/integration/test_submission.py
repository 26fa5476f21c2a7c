"""Submission: SMTP AUTH (RFC 4954) with swaks against a real Cyrus sasldb
(saslpasswd2) and a real Dovecot auth service, both started here with
their own config. A login relays anywhere and shows as ESMTPSA; a wrong
password is 535 5.7.8; AUTH before TLS is refused; submission_listen needs
AUTH before MAIL; AUTH works on implicit TLS (465); sender_login_maps
refuses a mismatched sender with 553; repeated failures bring 421; the
password never reaches the log."""
import base64
from harness import *

PASSWORD = "s3cret-Pa55"


def swaks(*args, server, port=2525):
    r = subprocess.run(["swaks", "--server", server, "--port", str(port), "--from", "alice@example.test",
                        "--h-Subject", "submitted", "--body", "hello", "--timeout", "20", *args],
                       capture_output=True, text=True, timeout=60)
    return r.stdout + r.stderr


class Sasldb:
    """A Cyrus sasldb with alice's password and the postern.conf that names it."""

    def __init__(self, realm, mechs="PLAIN LOGIN"):
        self.dir = tempfile.mkdtemp(prefix="sasl-")
        os.chmod(self.dir, 0o755)
        on_cleanup(lambda: shutil.rmtree(self.dir, ignore_errors=True))
        self.db = os.path.join(self.dir, "sasldb2")
        for user in ("alice", "bob"):
            r = subprocess.run(["saslpasswd2", "-f", self.db, "-c", "-p", "-u", realm, user], input=PASSWORD + "\n",
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stderr
        shutil.chown(self.db, "postern", "postern")      # the daemon reads it after dropping privileges
        with open(os.path.join(self.dir, "postern.conf"), "w") as f:
            f.write("pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: %s\nmech_list: %s\n"
                    % (self.db, mechs))
        os.chmod(os.path.join(self.dir, "postern.conf"), 0o644)


def tls_gateway(sink, certs, **conf):
    d, ca = certs
    return Gateway(sink=sink, trusted_networks="192.0.2.1/32", hostname="gw.postern.test",
                   tls_cert=os.path.join(d, "gw.postern.test.crt"), tls_key=os.path.join(d, "gw.postern.test.key"),
                   **conf)


def test_cyrus_sasldb_plain_and_login_relay_and_refusals():
    sink = Sink(addr(2))
    certs = make_certs(["gw.postern.test"])
    sasl = Sasldb("gw.postern.test")
    logins = os.path.join(sasl.dir, "logins")
    with open(logins, "w") as f:
        f.write("alice@example.test alice\n@corp.test alice,bob\n")
    os.chmod(logins, 0o644)
    g = tls_gateway(sink, certs, auth_backend="cyrus", auth_cyrus_config_dir=sasl.dir,
                    submission_listen="%s:2587" % addr(1), smtps_listen="%s:2465" % addr(1),
                    sender_login_maps="file:" + logins, auth_failure_limit="3").start()
    # before TLS: no AUTH offered, and AUTH refused
    c = Client(g.host)
    assert "AUTH" not in c.cmd("EHLO client.test")
    assert c.cmd("AUTH PLAIN " + base64.b64encode(b"\0alice\0" + PASSWORD.encode()).decode()).startswith("538 5.7.11")
    c.close()
    # unauthenticated: no relaying to the outside
    out = swaks("--to", "friend@outside.test", "--tls", server=g.host)
    assert "554 5.7.1 <friend@outside.test>: Relay access denied" in out, out
    # PLAIN and LOGIN with the right password relay anywhere
    for mech in ("PLAIN", "LOGIN"):
        out = swaks("--to", "friend@outside.test", "--tls", "--auth", mech, "--auth-user", "alice",
                    "--auth-password", PASSWORD, server=g.host)
        assert "235 2.7.0 Authentication successful" in out and "queued as" in out, out
    sink.wait_count(2)
    msg = sink.messages()[0]
    assert b"with ESMTPSA id" in msg, msg
    # a wrong password, answered after auth_failure_delay (1 s)
    t0 = time.time()
    out = swaks("--to", "friend@outside.test", "--tls", "--auth", "PLAIN", "--auth-user", "alice",
                "--auth-password", "wrong-guess-1", server=g.host)
    assert "535 5.7.8 Error: authentication failed" in out, out
    assert time.time() - t0 >= 0.9, time.time() - t0
    # the submission port: AUTH (or a trusted network) before MAIL
    c = Client(g.host, port=2587)
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<alice@example.test>") == "530 5.7.0 Authentication required"
    c.close()
    out = swaks("--to", "x@example.test", "--tls", "--auth", "PLAIN", "--auth-user", "alice", "--auth-password",
                PASSWORD, server=g.host, port=2587)
    assert "queued as" in out, out
    # implicit TLS (RFC 8314)
    out = swaks("--to", "friend@outside.test", "--tlsc", "--auth", "LOGIN", "--auth-user", "bob",
                "--auth-password", PASSWORD, "--from", "bob@corp.test", server=g.host, port=2465)
    assert "235 2.7.0" in out and "queued as" in out, out
    # sender_login_maps: alice may not send as bob's address, bob not as alice's
    out = swaks("--to", "friend@outside.test", "--tls", "--auth", "PLAIN", "--auth-user", "bob",
                "--auth-password", PASSWORD, "--from", "alice@example.test", server=g.host)
    assert "553 5.7.1 <alice@example.test>: Sender address rejected: not owned by user bob" in out, out
    # brute force: the limit is 3 failures per address (one so far)
    for i in range(2):
        swaks("--to", "x@example.test", "--tls", "--auth", "PLAIN", "--auth-user", "alice", "--auth-password",
              "wrong-guess-%d" % (i + 2), server=g.host)
    out = swaks("--to", "x@example.test", "--tls", "--auth", "PLAIN", "--auth-user", "alice", "--auth-password",
                PASSWORD, server=g.host)
    assert "421 4.7.0 Error: too many failed authentications" in out, out
    log = g.log()
    assert "AUTH PLAIN failed" in log and "AUTH PLAIN: user=alice" in log
    assert PASSWORD not in log and "wrong-guess" not in log
    assert base64.b64encode(b"\0alice\0" + PASSWORD.encode()).decode() not in log
    g.stop()


def test_check_config_finds_a_sasldb_the_daemon_cannot_read():
    """A sasldb at 0640 root: `posternd -t` (and the start) say so, naming
    the file and the user, instead of every AUTH failing with 454 later."""
    if os.geteuid() != 0:
        skip("needs root")
    sasl = Sasldb("gw.postern.test")
    shutil.chown(sasl.db, "root", "root")
    os.chmod(sasl.db, 0o640)
    certs = make_certs(["gw.postern.test"])
    g = tls_gateway(Sink(addr(2)), certs, auth_backend="cyrus", auth_cyrus_config_dir=sasl.dir)
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf, "-t"], capture_output=True, text=True,
                       timeout=30)
    want = "sasldb_path %s (from %s/postern.conf): Permission denied as user postern" % (sasl.db, sasl.dir)
    assert r.returncode != 0 and want in r.stderr, r.stdout + r.stderr
    shutil.chown(sasl.db, "root", "postern")
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf, "-t"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def test_auth_dialogue_details():
    sink = Sink(addr(2))
    certs = make_certs(["gw.postern.test"])
    sasl = Sasldb("gw.postern.test")
    g = tls_gateway(sink, certs, auth_backend="cyrus", auth_cyrus_config_dir=sasl.dir,
                    auth_allow_plaintext="yes").start()
    c = Client(g.host)
    ehlo = c.cmd("EHLO client.test")
    assert "250-AUTH PLAIN LOGIN" in ehlo or "250-AUTH LOGIN PLAIN" in ehlo, ehlo
    assert c.cmd("AUTH CRAM-MD5").startswith("504 5.5.4")
    assert c.cmd("AUTH PLAIN not*base64").startswith("501 5.5.2")
    assert c.cmd("AUTH LOGIN") == "334 VXNlcm5hbWU6"
    assert c.cmd("*") == "501 5.7.0 Authentication aborted"
    assert c.cmd("AUTH PLAIN") == "334 "
    assert c.cmd(base64.b64encode(b"\0alice\0" + PASSWORD.encode()).decode()).startswith("235")
    assert c.cmd("AUTH PLAIN =").startswith("503 5.5.1 Error: already authenticated")
    assert c.cmd("MAIL FROM:<alice@example.test> AUTH=<>").startswith("250")
    assert c.cmd("RCPT TO:<friend@outside.test>").startswith("250")
    c.close()
    g.stop()


def test_submitted_mail_is_signed_stamped_and_completed():
    sink = Sink(addr(2))
    certs = make_certs(["gw.postern.test"])
    sasl = Sasldb("gw.postern.test")
    key, _ = dkim_key(sasl.dir, "example")
    keys = os.path.join(sasl.dir, "dkim-keys")
    with open(keys, "w") as f:
        f.write("example.test sel1 %s\n" % key)
    os.chmod(keys, 0o644)
    g = tls_gateway(sink, certs, auth_backend="cyrus", auth_cyrus_config_dir=sasl.dir,
                    plugin_dir=os.path.join(BUILD, "plugins"), plugins="authres, dkim_sign",
                    **{"dkim_sign.keys": "file:" + keys, "dkim_sign.trusted_only": "yes"}).start()
    # a bare message: no Date, no Message-ID
    def submit(*auth, to=None):
        return swaks("--to", to or ("friend@outside.test" if auth else "x@example.test"), "--tls", *auth,
                     "--data", "From: Alice <alice@example.test>\r\nTo: friend@outside.test\r\n"
                     "Subject: bare\r\n\r\nhello\r\n", server=g.host)
    login = ("--auth", "PLAIN", "--auth-user", "alice", "--auth-password", PASSWORD)
    assert "queued as" in submit(*login)
    assert "queued as" in submit()             # not logged in, to a relay domain: not signed, not completed
    assert "queued as" in submit(*login, to="colleague@example.test")     # logged in, inside
    sink.wait_count(3)
    inside = [m for m in sink.messages() if b"X-Rcpt-Args: <colleague@example.test>" in m][0]
    assert b"auth=pass smtp.auth=alice" in inside, inside      # RFC 8601 2.7.4, kept inside
    msgs = sink.messages()
    signed = [m for m in msgs if b"X-Rcpt-Args: <friend@outside.test>" in m][0]
    plain = [m for m in msgs if b"X-Rcpt-Args: <x@example.test>" in m][0]
    # relayed out (logged in, outside recipient): our Authentication-Results is inside-only, so it
    # is never added, and the signature covers no field that is not there
    assert b"Authentication-Results" not in signed and b"smtp.auth" not in signed, signed
    assert b"DKIM-Signature:" in signed and b"d=example.test" in signed
    signed_fields = re.search(rb"\bh=([^;]+);", signed.replace(b"\n\t", b"")).group(1).split(b":")
    assert b"Authentication-Results" not in signed_fields and b"From" in signed_fields, signed_fields
    assert re.search(rb"^Date: ", signed, re.M) and re.search(rb"^Message-ID: <\d{14}\.[0-9A-F]+@gw\.postern\.test>",
                                                            signed, re.M), signed
    assert b"DKIM-Signature:" not in plain and b"smtp.auth" not in plain, plain
    assert not re.search(rb"^Message-ID: ", plain, re.M)
    g.stop()


def b64(text):
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def scram_sha256(c, user, password):
    """RFC 5802 / 7677 client side; returns the final reply."""
    import hashlib
    import hmac
    nonce = b64(os.urandom(18))
    first_bare = "n=%s,r=%s" % (user, nonce)
    rep = c.cmd("AUTH SCRAM-SHA-256 " + b64("n,," + first_bare))
    assert rep.startswith("334 "), rep
    server_first = base64.b64decode(rep[4:]).decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    assert attrs["r"].startswith(nonce)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    without_proof = "c=%s,r=%s" % (b64("n,,"), attrs["r"])
    auth_message = ",".join([first_bare, server_first, without_proof])
    signature = hmac.new(hashlib.sha256(client_key).digest(), auth_message.encode(), "sha256").digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    rep = c.cmd(b64(without_proof + ",p=" + b64(proof)))
    if rep.startswith("334 "):          # the server's final message, as a last challenge
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        expect = hmac.new(server_key, auth_message.encode(), "sha256").digest()
        assert base64.b64decode(rep[4:]).decode() == "v=" + b64(expect), "the server proved nothing"
        rep = c.cmd("")
    return rep


def test_scram_through_cyrus():
    sink = Sink(addr(2))
    certs = make_certs(["gw.postern.test"])
    sasl = Sasldb("gw.postern.test", mechs="SCRAM-SHA-256 PLAIN")
    g = tls_gateway(sink, certs, auth_backend="cyrus", auth_cyrus_config_dir=sasl.dir).start()
    c = Client(g.host)
    c.cmd("EHLO client.test")
    assert c.cmd("STARTTLS").startswith("220")
    c.starttls()
    assert "SCRAM-SHA-256" in c.cmd("EHLO client.test")
    rep = scram_sha256(c, "alice", PASSWORD)
    assert rep.startswith("235 2.7.0"), rep
    assert c.cmd("MAIL FROM:<alice@example.test>").startswith("250")
    assert c.cmd("RCPT TO:<friend@outside.test>").startswith("250")
    c.close()
    c = Client(g.host)
    c.cmd("EHLO client.test")
    c.cmd("STARTTLS")
    c.starttls()
    c.cmd("EHLO client.test")
    assert scram_sha256(c, "alice", "not-the-password").startswith("535 5.7.8")
    c.close()
    g.stop()


def test_dovecot_auth_service():
    sink = Sink(addr(2))
    certs = make_certs(["gw.postern.test"])
    dv = Dovecot({"alice": PASSWORD})
    g = tls_gateway(sink, certs, auth_backend="dovecot:" + dv.socket).start()
    for mech in ("PLAIN", "LOGIN"):
        out = swaks("--to", "friend@outside.test", "--tls", "--auth", mech, "--auth-user", "alice",
                    "--auth-password", PASSWORD, server=g.host)
        assert "235 2.7.0 Authentication successful" in out and "queued as" in out, (mech, out)
    out = swaks("--to", "friend@outside.test", "--tls", "--auth", "PLAIN", "--auth-user", "alice",
                "--auth-password", "wrong", server=g.host)
    assert "535 5.7.8" in out, out
    sink.wait_count(2)
    # Dovecot down: a temporary failure, not a refusal
    dv.stop()
    out = swaks("--to", "friend@outside.test", "--tls", "--auth", "PLAIN", "--auth-user", "alice",
                "--auth-password", PASSWORD, server=g.host)
    assert "454 4.7.0 Temporary authentication failure" in out, out
    assert PASSWORD not in g.log()
    g.stop()


run_tests(globals())
