"""The journal plugin: envelope journal reports (To/Cc/Bcc/envelope-only,
the original attached byte for byte) through posternd's own queue, a
journal next hop that is down, and compliance mode (journal.required)."""
import email
import email.policy
import hashlib

from harness import *
from scripted_smtp import ScriptedSmtp

PLUGDIR = os.path.join(BUILD, "plugins")
JOURNAL = "ok-journal@archive.test"


def journal_gateway(**conf):
    return Gateway(default_transport="smtp:[%s]:2526" % addr(2), plugin_dir=PLUGDIR,
                   transport_table=table_file("archive.test smtp:[%s]:2526\n" % addr(3)),
                   **{"plugins": "journal", "journal.address": JOURNAL, **conf}).start()


MESSAGE = ("From: Alice <alice@src.test>\r\nTo: Bob <ok-bob@example.test>\r\nCc: ok-carol@example.test\r\n"
           "Bcc: ok-dave@example.test\r\nSubject: quarterly figures\r\nMessage-ID: <q1@src.test>\r\n\r\n"
           "Figures attached.\r\n")
RCPTS = ["ok-bob@example.test", "ok-carol@example.test", "ok-dave@example.test", "ok-eve@example.test"]


def attached_original(data):
    """The message/rfc822 part's bytes, cut from the raw report."""
    b = re.search(rb'boundary="([^"]+)"', data).group(1)
    start = data.index(b"Content-Type: message/rfc822")
    start = data.index(b"\r\n\r\n", start) + 4
    return data[start:data.rindex(b"--" + b + b"--")]


def test_report_lists_every_recipient_and_attaches_the_original():
    orig, arch = ScriptedSmtp(addr(2)), ScriptedSmtp(addr(3))
    g = journal_gateway()
    qid = queue_id(send_message(g.host, 2525, "alice@src.test", RCPTS, MESSAGE))
    wait_for(lambda: orig.messages and arch.messages, 15, "the original and its journal report")
    original, report = orig.messages[0], arch.messages[0]
    assert sorted(original["rcpts"]) == sorted(RCPTS) and report["rcpts"] == [JOURNAL], (original, report)
    assert report["from"] == "postmaster@gw.postern.test", report["from"]
    # the original, exactly as delivered, is the attachment (by hash)
    assert hashlib.sha256(attached_original(report["data"])).hexdigest() == \
        hashlib.sha256(original["data"]).hexdigest()
    m = email.message_from_bytes(report["data"], policy=email.policy.default)
    assert m["X-MS-Journal-Report"] is not None and m["X-Postern-Journal"] == qid
    assert m["Subject"] == "quarterly figures" and m.get_content_type() == "multipart/mixed"
    parts = list(m.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/rfc822"]
    fields = [tuple(l.split(": ", 1)) for l in parts[0].get_content().splitlines() if l]
    assert ("Sender", "alice@src.test") in fields and ("Queue-Id", qid) in fields, fields
    assert ("Message-Id", "<q1@src.test>") in fields and ("TLS", "no") in fields, fields
    assert ("Client", "[127.0.0.1] helo=client.test") in fields, fields
    rcpt_lines = [f for f in fields if f[0] in ("To", "Cc", "Bcc")]
    assert rcpt_lines == [("To", "ok-bob@example.test"), ("Cc", "ok-carol@example.test"),
                          ("Bcc", "ok-dave@example.test"), ("Bcc", "ok-eve@example.test, Envelope-Only")], rcpt_lines
    inner = parts[1].get_content()
    assert inner["Message-ID"] == "<q1@src.test>" and inner["Bcc"] == "ok-dave@example.test"
    time.sleep(1)       # the report itself is never journaled
    assert len(arch.messages) == 1 and len(orig.messages) == 1
    assert "journal: report" in g.log()
    g.stop()


def test_journal_hop_down_loses_nothing_and_does_not_delay_the_original():
    orig = ScriptedSmtp(addr(2))          # the archive at addr(3) is down
    g = journal_gateway()
    sent = []
    for i in range(3):
        t0 = time.time()
        sent.append(queue_id(send_message(g.host, 2525, "alice@src.test", ["ok-bob@example.test"],
                                          MESSAGE.replace("quarterly", "run %d" % i))))
    wait_for(lambda: len(orig.messages) == 3, 10, "the three originals")
    assert orig.messages[-1]["time"] - t0 < 5, "the originals waited for the journal"
    reports = [l for l in g.log().splitlines() if "journal: report" in l]
    assert len(reports) == 3, g.log()[-2000:]
    wait_for(lambda: len(g.queue_files()) == 3, 10, "three journal reports queued")
    time.sleep(2)                          # a few failed attempts
    assert len(g.queue_files()) == 3
    arch = ScriptedSmtp(addr(3))           # the archive comes back
    wait_for(lambda: len(arch.messages) == 3, 30, "the three journal reports")
    got = sorted(m["data"].split(b"X-Postern-Journal: ")[1][:16].decode() for m in arch.messages)
    assert got == sorted(sent), (got, sent)
    wait_for(lambda: not g.queue_files(), 10, "an empty queue")
    g.stop()


def test_compliance_mode_commits_before_the_250_or_refuses():
    if os.geteuid() != 0:
        skip("needs root to mount a tmpfs")
    orig = ScriptedSmtp(addr(2))           # the archive stays down: reports wait in the queue
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2), plugin_dir=PLUGDIR, message_size_limit="2M",
                transport_table=table_file("archive.test smtp:[%s]:2526\n" % addr(3)),
                **{"plugins": "journal", "journal.address": JOURNAL, "journal.required": "yes"})
    os.makedirs(g.spool)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0755", "tmpfs", g.spool], check=True)
    on_cleanup(lambda: subprocess.run(["umount", "-l", g.spool]))
    g.start()
    rep = send_message(g.host, 2525, "alice@src.test", ["ok-bob@example.test"], MESSAGE)
    qid = queue_id(rep)
    journal_qid = re.search(r"journal: report ([0-9A-F]{16})", g.log()).group(1)
    assert journal_qid in g.queue_files()          # committed before the 250
    wait_for(lambda: len(orig.messages) == 1, 10, "the original")
    # 1.8 MB fits once in the 3 MB spool, not twice: the report cannot be committed
    big = MESSAGE + ("x" * 998 + "\r\n") * 1800
    rep = send_message(g.host, 2525, "alice@src.test", ["ok-bob@example.test"], big)
    assert rep.startswith("451 4.3.0") and "journal copy" in rep, rep
    assert "the report to <%s> could not be committed" % JOURNAL in g.log()
    assert g.queue_files() == [journal_qid], g.queue_files()     # neither half of the refused one
    time.sleep(0.5)
    assert len(orig.messages) == 1
    g.stop()
    assert qid


if __name__ == "__main__":
    run_tests(globals())
