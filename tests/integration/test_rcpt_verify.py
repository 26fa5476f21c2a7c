"""rcpt_verify: unknown recipients refused at RCPT (550 5.1.1) by a table, by
LDAP (a real slapd started here, with an Active Directory style
multi-valued proxyAddresses attribute, a bind DN and StartTLS) and by
call-ahead to the internal server (a real Postfix with a relay recipient
table); lookup failures answer 451 4.3.0; a forged sender to an unknown
user gets no bounce at all; caches expire and stay bounded; call-ahead
probes per next hop stay within callahead_concurrency."""
import threading
from harness import *
from scripted_smtp import ScriptedSmtp

PLUGDIR = os.path.join(BUILD, "plugins")
UNKNOWN = "550 5.1.1 <%s>: Recipient address rejected: User unknown"


def gw(sink, **opts):
    return Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="rcpt_verify",
                   relay_domains="example.test, catchall.test, corp.test, backup.test",
                   **{"rcpt_verify." + k: v for k, v in opts.items()}).start()


def rcpt(g, addr, sender="someone@outside.test"):
    c = Client(g.host)
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<%s>" % sender)
    rep = c.cmd("RCPT TO:<%s>" % addr)
    c.close()
    return rep


def world_readable_file(text):
    fd, path = tempfile.mkstemp(prefix="rcpt-verify-")
    os.write(fd, text.encode())
    os.close(fd)
    os.chmod(path, 0o644)
    on_cleanup(lambda: os.unlink(path))
    return path


def test_table_refuses_unknown_users_with_no_backscatter_and_reloads():
    sink = Sink(addr(2))
    table = world_readable_file("alice@example.test\n# a comment\n@catchall.test\n")
    g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="rcpt_verify",
                relay_domains="example.test, catchall.test, other.test", **{"rcpt_verify.table": "file:" + table})
    with open(g.conf, "a") as f:     # two domain lines (a dict holds one key once)
        f.write("rcpt_verify.domain = example.test table\nrcpt_verify.domain = catchall.test table\n")
    g.start()
    assert rcpt(g, "alice@example.test").startswith("250")
    assert rcpt(g, "ALICE@Example.Test").startswith("250")
    assert rcpt(g, "nosuchuser@example.test") == UNKNOWN % "nosuchuser@example.test"
    assert rcpt(g, "anyone@catchall.test").startswith("250")
    assert rcpt(g, "whoever@other.test").startswith("250")      # not a checked domain
    # backscatter: a forged sender to an unknown user -> refused in the dialogue, nothing queued or sent
    rep = send_mail(g, rcpts=("nosuchuser@example.test",), sender="innocent@victim.test")
    assert rep.startswith("550 5.1.1") or rep.startswith("554"), rep
    time.sleep(0.5)
    assert g.queue_files() == [] and sink.count() == 0
    # the table is re-read when it changes
    with open(table, "a") as f:
        f.write("bob@example.test\n")
    assert rcpt(g, "bob@example.test").startswith("250")
    g.stop()
    # bad options stop start-up, naming them
    for extra, why in (("rcpt_verify.domain = example.test table\n", "rcpt_verify.table is not set"),
                       ("rcpt_verify.domain = example.test dns\n", "unknown source 'dns'"),
                       ("rcpt_verify.cache_ttl = soon\nrcpt_verify.domain = x.test table\n", "rcpt_verify.cache_ttl")):
        bad = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="rcpt_verify")
        with open(bad.conf, "a") as f:
            f.write(extra)
        r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", bad.conf, "-t"], capture_output=True, text=True,
                           timeout=20)
        assert r.returncode != 0 and why in r.stdout + r.stderr, (extra, r.stdout + r.stderr)


PEOPLE = """dn: uid=alice,dc=corp,dc=test
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: A
mail: alice@corp.test

dn: uid=bob,dc=corp,dc=test
objectClass: inetOrgPerson
objectClass: mailRecipient
uid: bob
cn: Bob
sn: B
proxyAddresses: SMTP:bob@corp.test
proxyAddresses: smtp:robert@corp.test
"""


def test_ldap_with_bind_dn_starttls_and_multi_valued_addresses():
    sink = Sink(addr(2))
    ldap = Slapd(addr(5), PEOPLE).start()
    pw = world_readable_file("reader-secret\n")
    g = gw(sink, domain="corp.test ldap", ldap_uri=ldap.uri(), ldap_base="dc=corp,dc=test",
           ldap_filter="(|(mail=%s)(proxyAddresses=smtp:%s))", ldap_bind_dn="cn=reader,dc=corp,dc=test",
           ldap_bind_password_file=pw, ldap_starttls="yes", ldap_ca_file=ldap.ca, negative_ttl="0")
    assert rcpt(g, "alice@corp.test").startswith("250")
    assert rcpt(g, "robert@corp.test").startswith("250"), "the second proxyAddresses value"
    assert rcpt(g, "bob@corp.test").startswith("250"), "SMTP: (primary) matches case-insensitively"
    assert rcpt(g, "nosuch@corp.test") == UNKNOWN % "nosuch@corp.test"
    # a filter injection: unescaped, "(mail=*@corp.test)" would match alice
    assert rcpt(g, "*@corp.test") == UNKNOWN % "*@corp.test"
    # LDAP down: a cached answer still holds, a new question is a 451, never an accept
    ldap.stop()
    assert rcpt(g, "alice@corp.test").startswith("250"), "alice is in the positive cache"
    rep = rcpt(g, "nosuch@corp.test")
    assert rep.startswith("451 4.3.0"), rep
    assert "rcpt_verify: LDAP" in g.log()
    g.stop()
    # a wrong password is an error (451), not "unknown"
    ldap.start()
    bad_pw = world_readable_file("wrong\n")
    g = gw(sink, domain="corp.test ldap", ldap_uri=ldap.uri(), ldap_base="dc=corp,dc=test",
           ldap_filter="(mail=%s)", ldap_bind_dn="cn=reader,dc=corp,dc=test", ldap_bind_password_file=bad_pw)
    assert rcpt(g, "alice@corp.test").startswith("451 4.3.0")
    assert "Invalid credentials" in g.log()
    g.stop()


def test_callahead_to_a_real_postfix_caches_and_next_hop_down():
    if not Postfix.available():
        raise AssertionError("needs root and Postfix")
    sink = Sink(addr(2))
    pf = Postfix(addr(6), 2527, "[%s]:%d" % (addr(2), 2526), main={
        "relay_domains": "backup.test", "relay_recipient_maps": "texthash:${config_directory}/rcpts"},
        etc_files={"rcpts": "carol@backup.test x\n"})
    g = gw(sink, domain="backup.test callahead:[%s]:2527" % addr(6), negative_ttl="2", cache_ttl="60")
    assert rcpt(g, "carol@backup.test").startswith("250")
    assert rcpt(g, "dave@backup.test") == UNKNOWN % "dave@backup.test"
    rejects = lambda: pf.log().count("<dave@backup.test>: Recipient address rejected")
    wait_for(lambda: rejects() == 1, 5, "Postfix's reject logged")
    assert rcpt(g, "dave@backup.test").startswith("550")          # the negative cache answers
    time.sleep(0.5)
    assert rejects() == 1, "a second probe within negative_ttl"
    time.sleep(2)
    assert rcpt(g, "dave@backup.test").startswith("550")          # expired: probed again
    wait_for(lambda: rejects() == 2, 5, "a new probe after negative_ttl")
    # the probe never turned into a queued message at the internal server
    assert "queued as" not in pf.log() and "status=sent" not in pf.log()
    # next hop down: a cached answer holds, a new address is 451
    pf.stop()
    assert rcpt(g, "carol@backup.test").startswith("250")
    rep = rcpt(g, "erin@backup.test")
    assert rep.startswith("451 4.3.0"), rep
    g.stop()


def test_callahead_concurrency_and_cache_bound():
    sink = Sink(addr(2))
    peer = ScriptedSmtp(addr(7), port=2528)
    peer.rcpt_delay = 0.4
    g = gw(sink, domain="backup.test callahead:[%s]:2528" % addr(7), callahead_concurrency="2",
           cache_size="1")
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(rcpt(g, "ok-%d@backup.test" % i)))
               for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 6 and all(r.startswith("250") for r in results), results
    # a probe holds its slot from connect to QUIT, so at most 2 wait on a RCPT at once
    assert peer.max_in_rcpt == 2, "%d probes at once" % peer.max_in_rcpt
    # cache_size = 1: two addresses evict each other, so each asks again
    before = peer.sessions
    for a in ("ok-a@backup.test", "ok-b@backup.test", "ok-a@backup.test"):
        assert rcpt(g, a).startswith("250")
    assert peer.sessions - before == 3
    assert rcpt(g, "ok-a@backup.test").startswith("250") and peer.sessions - before == 3   # cached now
    # a 4xx from the next hop is a 451, and is not cached
    assert rcpt(g, "grey-x@backup.test").startswith("451 4.3.0")
    assert rcpt(g, "grey-x@backup.test").startswith("451 4.3.0") and peer.sessions - before == 5
    # the probe: MAIL FROM:<>, RCPT, RSET, QUIT
    cmds = peer.client_commands()
    i = cmds.index("RCPT TO:<ok-a@backup.test>")
    assert cmds[i - 1] == "MAIL FROM:<>" and cmds[i + 1] == "RSET" and cmds[i + 2] == "QUIT", cmds[i - 2:i + 3]
    g.stop()


run_tests(globals())
