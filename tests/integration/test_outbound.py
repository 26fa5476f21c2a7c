"""Outbound delivery against next hops that answer every combination:
a scripted server (a table of replies per recipient and per stage) and a
real Postfix that greylists at RCPT. Each recipient ends in the state
RFC 5321 gives it, with the peer's own reply in the log and the queue; a
reply to DATA or the final dot only ever applies to recipients the server
accepted at RCPT; one log line per recipient per attempt."""
from harness import *
from scripted_smtp import ScriptedSmtp

# (recipient local parts, X-Final, {local part: (status, start of the logged reply)})
CASES = [
    (["ok-a", "grey-a", "bad-a"], "250",
     {"ok-a": ("sent", "250 2.0.0 Ok: queued"), "grey-a": ("deferred", "450 4.2.0 <grey-a@example.test>"),
      "bad-a": ("bounced", "550 5.1.1 <bad-a@example.test>")}),
    (["ok-b", "grey-b", "bad-b"], "451",
     {"ok-b": ("deferred", "451 4.7.1 Content scanner unavailable"), "grey-b": ("deferred", "450 4.2.0"),
      "bad-b": ("bounced", "550 5.1.1")}),
    (["ok-c", "grey-c", "bad-c"], "554",
     {"ok-c": ("bounced", "554 5.7.1 Message content rejected"), "grey-c": ("deferred", "450 4.2.0"),
      "bad-c": ("bounced", "550 5.1.1")}),
    (["ok-d", "grey-d", "bad-d"], "drop",
     {"ok-d": ("deferred", "4.4.2 lost connection with"), "grey-d": ("deferred", "450 4.2.0"),
      "bad-d": ("bounced", "550 5.1.1")}),
    # nobody accepted: DATA's "554 no valid recipients" must change nothing
    (["grey-e", "grey-f"], "250",
     {"grey-e": ("deferred", "450 4.2.0 <grey-e@example.test>"),
      "grey-f": ("deferred", "450 4.2.0 <grey-f@example.test>")}),
    # 421 in the middle of the transaction: everything not final is deferred with it
    (["ok-g", "bye-g", "bad-g"], "250",
     {"ok-g": ("deferred", "421 4.3.2 Service shutting down"), "bye-g": ("deferred", "421 4.3.2"),
      "bad-g": ("deferred", "421 4.3.2")}),
]


def postern(g, *args):
    return subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, *args], capture_output=True, text=True,
                          timeout=30)


def outcomes(g, qid):
    """{recipient: [(status, reply), ...]}, one entry per logged attempt."""
    out = {}
    for m in re.finditer(r"%s: to=<([^>]+)>, relay=[^,]*, delay=\d+s, delays=[0-9.]+/[0-9.]+/[0-9.]+/[0-9.]+, dsn=[245]\.\d+\.\d+, status=(\w+) \((.*)\)$" % qid, g.log(), re.M):
        out.setdefault(m.group(1), []).append((m.group(2), m.group(3)))
    return out


def wait_attempts(g, qid, rcpts, n, timeout=15):
    wait_for(lambda: all(len(outcomes(g, qid).get(r, [])) >= n for r in rcpts), timeout,
             "%d logged attempt(s) for every recipient of %s" % (n, qid))
    return outcomes(g, qid)


def gateway_for(peer, **conf):
    dsn_sink = Sink(addr(3), port=2600)
    table = os.path.join(tempfile.mkdtemp(prefix="transport-"), "t")
    on_cleanup(lambda: shutil.rmtree(os.path.dirname(table), ignore_errors=True))
    with open(table, "w") as f:
        f.write("src.test smtp:[%s]:2600\n" % addr(3))
    # retries only when the test flushes
    g = Gateway(default_transport="smtp:[%s]:%d" % (peer.host, peer.port), transport_table="file:" + table,
                retry_min="1h", retry_max="1h", max_queue_lifetime="1d", **conf).start()
    return g, dsn_sink


def send(g, locals_, final, sender="alice@src.test"):
    rcpts = ["%s@example.test" % l for l in locals_]
    return queue_id(send_message(g.host, 2525, sender, rcpts,
                                 "Subject: case %s\r\nX-Final: %s\r\n\r\nbody\r\n" % (final, final)))


def check_matrix(pipelining, chunking):
    peer = ScriptedSmtp(addr(2), pipelining=pipelining, chunking=chunking)
    g, _ = gateway_for(peer)
    ids = [send(g, locals_, final) for locals_, final, _ in CASES]
    refused_sender = send(g, ["ok-h", "grey-h"], "250", sender="bad-mail@src.test")
    for qid, (locals_, final, expect) in zip(ids, CASES):
        got = wait_attempts(g, qid, ["%s@example.test" % l for l in locals_], 1)
        for local, (status, reply) in expect.items():
            attempts = got["%s@example.test" % local]
            assert len(attempts) == 1, (final, local, attempts)
            assert attempts[0][0] == status and attempts[0][1].startswith(reply), (final, local, attempts, expect)
    got = wait_attempts(g, refused_sender, ["ok-h@example.test", "grey-h@example.test"], 1)
    for r in ("ok-h@example.test", "grey-h@example.test"):
        assert got[r] == [("bounced", peer.mail_reject)], got
    # the accepted messages carried exactly the accepted recipients
    delivered = sorted(r for m in peer.messages for r in m["rcpts"])
    assert delivered == ["ok-a@example.test"], delivered

    # second attempt: the greylisted recipients are deferred again, never bounced
    grey = ids[4]
    assert postern(g, "queue", "flush").returncode == 0
    got = wait_attempts(g, grey, ["grey-e@example.test", "grey-f@example.test"], 2)
    for r in ("grey-e@example.test", "grey-f@example.test"):
        assert [s for s, _ in got[r]] == ["deferred", "deferred"], got
        assert got[r][1][1].startswith("450 4.2.0 <%s>" % r), got
    shown = postern(g, "queue", "show", grey).stdout
    assert "attempts: 2\n" in shown, shown
    assert shown.count("status=pending attempts=2 last=450 4.2.0") == 2, shown
    listing = postern(g, "queue", "list").stdout
    assert "last: 450 4.2.0" in listing, listing
    for invented in ("no recipient accepted", "delivery did not complete"):
        assert invented not in g.log(), g.log()
    g.stop()


def test_reply_matrix_with_pipelining_and_data():
    check_matrix(pipelining=True, chunking=False)


def test_reply_matrix_with_pipelining_and_bdat():
    check_matrix(pipelining=True, chunking=True)


def test_reply_matrix_without_pipelining():
    check_matrix(pipelining=False, chunking=False)


def test_required_tls_not_offered_defers_with_4_7_and_says_quit():
    peer = ScriptedSmtp(addr(2))
    g, _ = gateway_for(peer, tls_policy="encrypt")
    qid = send(g, ["ok-t"], "250")
    got = wait_attempts(g, qid, ["ok-t@example.test"], 1)
    status, reply = got["ok-t@example.test"][0]
    assert status == "deferred" and reply.startswith("4.7.4 "), got
    assert "STARTTLS" in reply, reply
    wait_for(lambda: peer.quits >= 1, 5, "QUIT before the connection is closed")
    assert peer.messages == []
    g.stop()


def test_bounce_and_delay_notices_read_like_postfix():
    peer = ScriptedSmtp(addr(2))
    g, dsn_sink = gateway_for(peer, delay_warning_time="1s")
    bounced = send(g, ["bad-n", "ok-n"], "250")
    raw = dsn_sink.wait_count(1)[0]
    msg, parts, blocks = parse_dsn(raw)
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    human = parts[0].get_payload()
    ip = addr(2)
    assert ("<bad-n@example.test>: host %s[%s] said: 550 5.1.1 <bad-n@example.test>: Recipient address "
            "rejected: User unknown (in reply to RCPT TO command)" % (ip, ip)) in human, human
    assert "ok-n@" not in human
    rcpt = blocks[1]
    assert rcpt["Final-Recipient"] == "rfc822; bad-n@example.test"
    assert rcpt["Action"] == "failed" and rcpt["Status"] == "5.1.1", rcpt
    assert rcpt["Remote-MTA"] == "dns; %s" % ip, rcpt
    assert rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 <bad-n@example.test>: Recipient address rejected: User unknown"
    # refused at the final dot: "in reply to end of DATA command"
    send(g, ["ok-o"], "554")
    raw = dsn_sink.wait_count(2)
    human = [parse_dsn(m)[1][0].get_payload() for m in raw if b"ok-o@" in m][0]
    assert "said: 554 5.7.1 Message content rejected (in reply to end of DATA command)" in human, human
    # greylisted for longer than delay_warning_time: a warning that says until when
    delayed = send(g, ["grey-p"], "250")
    time.sleep(1.2)
    assert postern(g, "queue", "flush").returncode == 0
    msgs = dsn_sink.wait_count(3, timeout=15)
    raw = [m for m in msgs if b"grey-p@" in m][0]
    msg, parts, blocks = parse_dsn(raw)
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    human = parts[0].get_payload()
    assert "THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE." in human, human
    assert "It will be retried until it is 1.0 days old." in human, human
    assert "host %s[%s] said: 450 4.2.0 <grey-p@example.test>" % (ip, ip) in human, human
    assert blocks[1]["Action"] == "delayed" and blocks[1]["Status"] == "4.2.0", blocks[1]
    assert blocks[1]["Remote-MTA"] == "dns; %s" % ip and blocks[1]["Will-Retry-Until"], blocks[1]
    assert bounced and delayed in g.queue_files()
    g.stop()


def greylisting_postfix(final_sink):
    d = tempfile.mkdtemp(prefix="greylist-")
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    access = os.path.join(d, "access")
    with open(access, "w") as f:
        f.write("grey@example.test DEFER Greylisted, please come back later\n")
    os.chmod(d, 0o755)
    os.chmod(access, 0o644)
    pf = Postfix(addr(5), 2525, "[%s]:%d" % (final_sink.host, final_sink.port),
                 main={"smtpd_recipient_restrictions": "check_recipient_access texthash:%s" % access})
    return pf, access


def check_real_postfix_greylist(client_bdat):
    if not Postfix.available():
        raise AssertionError("this test needs root and Postfix")
    final = Sink(addr(6))
    pf, access = greylisting_postfix(final)
    g, dsn_sink = gateway_for(pf, client_bdat=client_bdat)
    both = queue_id(send_message(g.host, 2525, "alice@src.test", ["grey@example.test", "ok@example.test"],
                                 "Subject: two\r\n\r\nx\r\n"))
    alone = queue_id(send_message(g.host, 2525, "alice@src.test", ["grey@example.test"],
                                  "Subject: one\r\n\r\nx\r\n"))
    for attempt in (1, 2, 3):
        if attempt > 1:
            assert postern(g, "queue", "flush").returncode == 0
        for qid in (both, alone):
            got = wait_attempts(g, qid, ["grey@example.test"], attempt, timeout=20)
            assert [s for s, _ in got["grey@example.test"]] == ["deferred"] * attempt, got
            assert "450 4.7.1 <grey@example.test>: Recipient address rejected: Greylisted" in \
                got["grey@example.test"][-1][1], got
    assert outcomes(g, both)["ok@example.test"] == [("sent", outcomes(g, both)["ok@example.test"][0][1])]
    final.wait_count(1)
    listing = postern(g, "queue", "list").stdout
    assert listing.count("Recipient address rejected: Greylisted") == 2, listing
    assert "bounced" not in g.log() and dsn_sink.count() == 0, g.log()
    # the greylist lifts: both are delivered on the next attempt
    with open(access, "w") as f:
        f.write("")
    pf.postfix("reload")
    # an smtpd from before the reload keeps the old table for its session:
    # let our cached connections (connection_cache_time 2s) close first
    time.sleep(3)
    assert postern(g, "queue", "flush").returncode == 0
    final.wait_count(3, timeout=20)
    wait_for(lambda: not g.queue_files(), 10, "spool to empty")
    assert dsn_sink.count() == 0
    g.stop()


def test_real_postfix_greylisting_with_bdat():
    check_real_postfix_greylist("yes")


def test_real_postfix_greylisting_with_data():
    check_real_postfix_greylist("no")


if __name__ == "__main__":
    run_tests(globals())
