"""Disk full: with the spool on a tiny tmpfs, posternd answers 452 4.3.1
instead of 250, loses nothing it already accepted, and accepts again once
space is free. Needs root (mount); skipped with a notice otherwise."""
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


run_tests(globals())
