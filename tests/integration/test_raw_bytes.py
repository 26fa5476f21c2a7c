"""Bytes posternd must never emit: every message that leaves is CRLF text
with no lone CR, bare LF or NUL (unless it goes by BDAT as BINARYMIME),
whatever a peer replied, a Lua script wrote or a spool file says. Checked
on the raw bytes a recording next hop (scripted_smtp.py) received."""
from harness import *
from scripted_smtp import ScriptedSmtp, RCPT_REPLIES

RCPT_REPLIES["evil-"] = "550 5.1.1 x\r.\rMAIL FROM:<ceo@example.test>"


def clean_text(data):
    """No lone CR, bare LF or NUL anywhere."""
    for i, b in enumerate(data):
        if b == 0:
            return False
        if b == 13 and data[i + 1:i + 2] != b"\n":
            return False
        if b == 10 and (i == 0 or data[i - 1] != 13):
            return False
    return True


def gateway(peer, dsn_peer, **conf):
    d = tempfile.mkdtemp(prefix="transport-")
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    table = os.path.join(d, "t")
    with open(table, "w") as f:
        f.write("src.test smtp:[%s]:%d\n" % (dsn_peer.host, dsn_peer.port))
    conf.setdefault("default_transport", "smtp:[%s]:%d" % (peer.host, peer.port))
    return Gateway(transport_table="file:" + table, **conf)


def test_a_hostile_peer_reply_is_escaped_in_the_bounce_the_log_and_the_queue():
    peer, dsn_peer = ScriptedSmtp(addr(2)), ScriptedSmtp(addr(3), port=2600)
    g = gateway(peer, dsn_peer).start()
    qid = queue_id(send_message(g.host, 2525, "alice@src.test", ["evil-1@example.test"], "Subject: x\r\n\r\nx\r\n"))
    wait_for(lambda: dsn_peer.messages, 10, "the bounce")
    dsn = dsn_peer.messages[0]["data"]
    assert clean_text(dsn), dsn
    assert b"550 5.1.1 x?.?MAIL FROM:<ceo@example.test>" in dsn, dsn
    assert not any(c.startswith("MAIL FROM:<ceo") for c in peer.client_commands() + dsn_peer.client_commands())
    line = [l for l in g.log().splitlines() if qid + ": to=<evil-1@example.test>" in l][0]
    assert "x?.?MAIL FROM" in line and "\r" not in line, repr(line)
    g.stop()


def test_lua_body_mutations_keep_the_line_rules():
    peer, dsn_peer = ScriptedSmtp(addr(2)), ScriptedSmtp(addr(3), port=2600)
    d = tempfile.mkdtemp(prefix="lua-")
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    script = os.path.join(d, "mutate.lua")
    with open(script, "w") as f:
        f.write('postern.on("eom", function(tx)\n'
                '  local bare = tx:replace_body("hello\\r\\n.\\r")\n'
                '  local lf = tx:replace_body("a\\nb\\r\\n")\n'
                '  local nul = tx:replace_body("a\\0b\\r\\n")\n'
                '  local first = tx:replace_body("first\\r\\n")\n'
                '  local second = tx:replace_body("second\\r\\n")\n'
                '  postern.log("info", string.format("mutate: %s %s %s %s %s", tostring(bare), tostring(lf),\n'
                '    tostring(nul), tostring(first), tostring(second)))\n'
                'end)\n')
    os.chmod(script, 0o644)
    g = gateway(peer, dsn_peer, plugins="lua:" + script).start()
    send_message(g.host, 2525, "alice@src.test", ["ok-1@example.test"], "Subject: x\r\n\r\noriginal\r\n")
    wait_for(lambda: peer.messages, 10, "delivery")
    data = peer.messages[0]["data"]
    assert "mutate: false false false true true" in g.log(), g.log()
    assert clean_text(data), data
    assert data.endswith(b"\r\n\r\nsecond\r\n"), data     # the last replacement, not both appended
    assert b"first" not in data and b"original" not in data
    g.stop()


def test_a_binarymime_bounce_returns_headers_only():
    peer, dsn_peer = ScriptedSmtp(addr(2)), ScriptedSmtp(addr(3), port=2600)   # neither offers BINARYMIME
    g = gateway(peer, dsn_peer).start()
    c = Client(g.host)
    c.cmd("EHLO client.test")
    c.send("MAIL FROM:<alice@src.test> BODY=BINARYMIME RET=FULL\r\nRCPT TO:<ok-1@example.test>\r\n")
    assert c.reply().startswith("250") and c.reply().startswith("250")
    binary = b"Subject: bin\r\nContent-Type: application/octet-stream\r\n\r\nlone\rcr bare\nlf nul\x00\r\n.\r\n"
    c.send(b"BDAT %d LAST\r\n" % len(binary) + binary)
    assert "queued as" in c.reply()
    wait_for(lambda: dsn_peer.messages, 10, "the bounce")
    dsn = dsn_peer.messages[0]["data"]
    assert clean_text(dsn), dsn
    assert b"text/rfc822-headers" in dsn and b"Subject: bin" in dsn and b"lone" not in dsn, dsn
    assert peer.messages == []
    g.stop()


def test_a_crafted_spool_envelope_goes_to_corrupt_and_is_never_sent():
    peer, dsn_peer = ScriptedSmtp(addr(2)), ScriptedSmtp(addr(3), port=2600)
    peer_port_closed = "smtp:[%s]:2599" % addr(2)         # nothing listens: the message stays queued
    g = gateway(peer, dsn_peer, default_transport=peer_port_closed, retry_min="1h", retry_max="1h").start()
    qid = queue_id(send_message(g.host, 2525, "alice@src.test", ["ok-1@example.test"], "Subject: x\r\n\r\nx\r\n"))
    wait_for(lambda: "%s: to=<ok-1@example.test>" % qid in g.log(), 10, "the deferral")
    g.stop()
    path = os.path.join(g.spool, "queue", qid)
    with open(path, "rb") as f:
        raw = f.read()
    raw = raw.replace(b"from=alice@src.test\n", b"from=a@src.test>\rRCPT TO:<x@evil.test\n", 1)
    with open(path, "wb") as f:
        f.write(raw)
    g.set(default_transport="smtp:[%s]:2526" % addr(2))
    g.start()
    wait_for(lambda: os.path.exists(os.path.join(g.spool, "corrupt", qid)), 10, "the file in corrupt/")
    assert "control character in the envelope" in g.log()
    time.sleep(0.5)
    assert not any("evil" in c for c in peer.client_commands()), peer.client_commands()
    g.stop()



def queued_then_planted(peer, dsn_peer, body, plant, **conf):
    """A message queued while its next hop is down, its spool file edited
    as the daemon's user could (plant: bytes -> bytes), then the next hop up."""
    g = gateway(peer, dsn_peer, default_transport="smtp:[%s]:2599" % addr(2), retry_min="1h", retry_max="1h",
                **conf).start()
    qid = queue_id(send_message(g.host, 2525, "alice@src.test", ["ok-1@example.test", "ok-2@example.test"], body))
    wait_for(lambda: "%s: to=<ok-1@example.test>" % qid in g.log(), 10, "the deferral")
    g.stop()
    path = os.path.join(g.spool, "queue", qid)
    with open(path, "rb") as f:
        raw = f.read()
    planted = plant(raw)
    assert planted != raw
    with open(path, "wb") as f:
        f.write(planted)
    g.set(default_transport="smtp:[%s]:2526" % addr(2))
    g.start()
    r = subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "queue", "flush"], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    return g, qid


def test_a_spool_body_with_bare_lf_lone_cr_or_nul_is_never_sent():
    body = "Subject: planted\r\n\r\n" + "line of the body\r\n" * 2000     # about 36 KiB: several chunks
    for what, bad, client_bdat in (("a bare LF", b"body\n\n", "yes"), ("a lone CR", b"body\r\r", "no"),
                                    ("a NUL", b"bo\0y\r\n", "no")):
        peer, dsn_peer = ScriptedSmtp(addr(2), chunking=True), ScriptedSmtp(addr(3), port=2600)
        # the bad bytes far into the body, after what one read sends
        plant = lambda raw: raw[:-4000] + raw[-4000:].replace(b"body\r\n", bad, 1)
        g, qid = queued_then_planted(peer, dsn_peer, body, plant, client_bdat=client_bdat)
        try:
            wait_for(lambda: os.path.exists(os.path.join(g.spool, "corrupt", qid)), 10, "the file in corrupt/")
        except AssertionError:
            raise AssertionError("%s: not in corrupt/:\n%s" % (what, g.log()[-2500:]))
        assert "corrupt spool file: %s at byte" % what in g.log(), g.log()[-2000:]
        time.sleep(0.5)
        assert peer.messages == [] and dsn_peer.messages == [], "sent: %s" % what
        assert qid not in g.queue_files()
        g.stop()
        peer.stop()
        dsn_peer.stop()


def test_a_spool_envelope_with_a_field_or_recipient_twice_goes_to_corrupt():
    for plant, why in ((lambda raw: raw.replace(b"rcpt=ok-2@example.test\n", b"rcpt=ok-1@example.test\n", 1),
                        "a recipient is listed twice in the envelope"),
                       (lambda raw: raw.replace(b"helo=client.test\n", b"from=eve@src.test\n", 1),
                        "an envelope field that comes once is repeated")):
        peer, dsn_peer = ScriptedSmtp(addr(2)), ScriptedSmtp(addr(3), port=2600)
        g, qid = queued_then_planted(peer, dsn_peer, "Subject: x\r\n\r\nx\r\n", plant)
        wait_for(lambda: os.path.exists(os.path.join(g.spool, "corrupt", qid)), 10, "the file in corrupt/")
        assert why in g.log(), g.log()[-1500:]
        time.sleep(0.5)
        assert peer.messages == []
        g.stop()
        peer.stop()
        dsn_peer.stop()


if __name__ == "__main__":
    run_tests(globals())
