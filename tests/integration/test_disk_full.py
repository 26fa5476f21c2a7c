"""Disk full: with the spool on a tiny tmpfs, posternd answers 452 4.3.1
instead of 250, loses nothing it already accepted, and accepts again once
space is free; queue_minfree and a MAIL's SIZE= refuse mail at MAIL before
the disk fills, as Postfix does; queue_max_messages bounds the queue (and
so posternd's memory) the same way. Needs root (mount); skipped with a
notice otherwise."""
from harness import *


def test_full_spool_tempfails_and_recovers():
    if os.geteuid() != 0:
        skip("needs root to mount a tmpfs")
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2), message_size_limit="1M")
    os.makedirs(g.spool)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", g.spool], check=True)
    on_cleanup(lambda: subprocess.run(["umount", "-l", g.spool]))
    g.start()
    body = "Subject: fill\r\n\r\n" + ("f" * 78 + "\r\n") * 1300     # ~100 KiB
    accepted, refused = [], None
    for i in range(40):
        c = Client(g.host)
        c.cmd("EHLO client.test")
        c.cmd("MAIL FROM:<a@src.test>")
        c.cmd("RCPT TO:<x@example.test>")
        rep = c.cmd("DATA")        # a full disk may already refuse the queue file here
        if rep.startswith("354"):
            c.send(body)
            rep = c.cmd(".")
        c.close()
        if rep.startswith("250"):
            accepted.append(queue_id(rep))
        else:
            refused = rep
            break
    assert refused is not None, "the 2 MiB spool never filled"
    assert refused.startswith("452 4.3.1") or refused.startswith("451 4.3.0"), refused
    assert len(accepted) >= 5
    # nothing half-written is left in queue/, every accepted file is intact
    assert sorted(g.queue_files()) == sorted(accepted)
    # delivery frees space; everything accepted arrives
    sink = Sink(addr(2))
    sink.wait_count(len(accepted), timeout=30)
    wait_for(lambda: not g.queue_files(), 10, "spool to drain")
    rep = send_message(g.host, 2525, "a@src.test", ["x@example.test"], "Subject: after\r\n\r\nok\r\n")
    assert "queued as" in rep
    g.stop()


def mail_reply(g, params=""):
    c = Client(g.host)
    c.cmd("EHLO client.test")
    rep = c.cmd("MAIL FROM:<a@src.test>%s" % params)
    c.close()
    return rep


def test_queue_minfree_and_size_refuse_at_mail():
    if os.geteuid() != 0:
        skip("needs root to mount a tmpfs")
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2), message_size_limit="10M", queue_minfree="1M")
    os.makedirs(g.spool)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", g.spool], check=True)
    on_cleanup(lambda: subprocess.run(["umount", "-l", g.spool]))
    g.start()
    # about 4 MiB free: room for a declared 1 MiB, none for 3.5 MiB (under 1M would be left) nor for
    # 2.9 MiB (over two thirds of what is free), all within message_size_limit
    assert mail_reply(g, " SIZE=1000000").startswith("250")
    assert mail_reply(g, " SIZE=3500000").startswith("452 4.3.1"), "queue_minfree"
    assert mail_reply(g, " SIZE=2900000").startswith("452 4.3.1"), "two thirds of what is free"
    assert "refusing new mail with 452 4.3.1" in g.log() and "queue_minfree 1048576" in g.log()
    g.stop()
    # queue_minfree above what the file system has: every MAIL waits, whatever its size
    g.set(queue_minfree="5M")
    g.start()
    assert mail_reply(g).startswith("452 4.3.1")
    g.stop()


def test_queue_max_messages_bounds_the_queue():
    from scripted_smtp import ScriptedSmtp
    hop = ScriptedSmtp(addr(2))          # grey-: 450 (the message stays), bad-: 550 (a notice is owed)
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2), queue_max_messages="3", retry_min="10m", retry_max="1h",
                relay_domains="example.test, src.test", http_listen="%s:9025" % addr(1)).start()
    body = "Subject: bound\r\n\r\nx\r\n"
    postern = lambda *a: subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "queue", *a],
                                        capture_output=True, text=True, timeout=30)
    qids = [queue_id(send_message(g.host, 2525, "a@src.test", ["grey-%d@example.test" % i], body)) for i in range(3)]
    assert mail_reply(g).startswith("452 4.3.1")
    wait_for(lambda: "the queue holds 3 messages (queue_max_messages 3)" in g.log(), 5, "the refusal logged")
    wait_for(lambda: g.log().count("status=deferred") >= 3, 10, "three deferrals")
    assert sorted(g.queue_files()) == sorted(qids)               # nothing accepted was touched
    import urllib.request
    with urllib.request.urlopen("http://%s:9025/metrics" % g.host, timeout=10) as resp:
        metrics = resp.read().decode()
    assert re.search(r'^postern_smtp_storage_refusals_total\{reason="queue_full"\} 1$', metrics, re.M), \
        [l for l in metrics.splitlines() if "storage" in l]
    # room for one: a message whose recipient the next hop refuses; its notice is queued although the
    # queue is at its bound again (posternd's own mail never meets it) and reaches the sender
    assert postern("delete", qids[0]).returncode == 0
    wait_for(lambda: len(g.queue_files()) == 2, 10, "the deleted message to go")
    assert "queued as" in send_message(g.host, 2525, "b@src.test", ["bad-1@example.test"], body)
    wait_for(lambda: any(m["from"] == "" and m["rcpts"] == ["b@src.test"] for m in hop.messages), 20,
             "the non-delivery notice at the next hop")
    wait_for(lambda: len(g.queue_files()) == 2, 10, "the refused message and its notice to go")
    assert "queued as" in send_message(g.host, 2525, "a@src.test", ["grey-9@example.test"], body)
    assert mail_reply(g).startswith("452 4.3.1")
    # the bound holds across a restart (the queue read back counts)
    g.stop()
    g.start()
    assert len(g.queue_files()) == 3 and mail_reply(g).startswith("452 4.3.1")
    g.stop()


run_tests(globals())
