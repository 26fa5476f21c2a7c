"""Archive retention (expiry records in the chain, verify stays green),
and `postern archive search|export|reindex` over a test archive of a few
thousand messages, with their time and memory measured."""
import hashlib
import mailbox

from harness import *

PLUGDIR = os.path.join(BUILD, "plugins")


def writable_dir():
    d = tempfile.mkdtemp(prefix="archtools-")
    os.chmod(d, 0o777)        # the daemon's user writes in it
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


def postern(conf, *args):
    r = subprocess.run([os.path.join(BUILD, "postern"), "-c", conf, "archive", *args], capture_output=True,
                       text=True, timeout=120)
    assert "AddressSanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr
    return r


def chain_lines(adir):
    return [l.split() for l in open(os.path.join(adir, "chain"))]


def test_retention_expires_in_chain_order_and_verify_stays_green():
    sink = Sink(addr(2))
    adir = os.path.join(writable_dir(), "archive")
    g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="archive",
                **{"archive.dir": adir, "archive.retention": "3s", "archive.expire_every": "1s"}).start()
    old = [queue_id(send_mail(g, headers="Subject: old %d\r\n" % i)) for i in range(3)]
    wait_for(lambda: len(chain_lines(adir)) == 3, 10, "three archived copies")
    wait_for(lambda: len(chain_lines(adir)) == 6, 15, "three expiry records")
    fresh = queue_id(send_mail(g, headers="Subject: fresh\r\n"))
    wait_for(lambda: len(chain_lines(adir)) == 7, 10, "the fresh copy")
    # the index line follows the chain line: wait for it before copying
    wait_for(lambda: fresh in open(os.path.join(adir, "index")).read(), 10, "the fresh copy's index line")
    copy = os.path.join(writable_dir(), "copy")     # checked at leisure: the fresh copy expires too
    shutil.copytree(adir, copy)
    for root, dirs, files in os.walk(copy):      # the daemon's user records the audit trail in it
        for n in dirs + files:
            os.chmod(os.path.join(root, n), 0o777 if n in dirs else 0o666)
    os.chmod(copy, 0o777)
    adir, live = copy, adir
    conf = readable_file("postern.conf", open(g.conf).read().replace(live, copy))
    lines = chain_lines(adir)
    expired = [l[1] for l in lines[3:6]]
    assert all(e.startswith("expired@") for e in expired), lines
    assert [e.split("/", 1)[1].split("/")[1][:16] for e in expired] == old      # in chain order
    assert [l[2] for l in lines[3:6]] == [l[2] for l in lines[:3]]                # the removed files' hashes
    assert not any(glob.glob(os.path.join(adir, "*", q + ".eml")) for q in old)
    assert glob.glob(os.path.join(adir, "*", fresh + ".eml"))
    r = postern(conf, "verify")
    assert r.returncode == 0 and "archive ok: 1 message(s), 3 expired" in r.stdout, r.stdout + r.stderr
    for q in old:
        assert re.search(r"^expired \S+/%s\.eml at \d{8}T\d{6}Z \(seq \d\)$" % q, r.stdout, re.M), r.stdout
    r = postern(conf, "search")
    assert r.stdout.splitlines()[-1].startswith("1 message(s) found") and fresh in r.stdout, r.stdout
    # tampering is still caught after an expiry
    path = glob.glob(os.path.join(adir, "*", fresh + ".eml"))[0]
    with open(path, "ab") as f:
        f.write(b"x")
    r = postern(conf, "verify")
    assert r.returncode == 1 and "CHANGED" in r.stdout, r.stdout
    # a restart knows what is expired: one record each, and the fresh copy's own in time
    g.stop()
    g.start()
    wait_for(lambda: len(chain_lines(live)) == 8, 10, "the fresh copy's expiry")
    time.sleep(1.5)
    records = [l[1] for l in chain_lines(live) if l[1].startswith("expired@")]
    assert sorted(r.rsplit("/", 1)[1][:16] for r in records) == sorted(old + [fresh]), records
    r = postern(g.conf, "verify")
    assert r.returncode == 0 and "archive ok: 0 message(s), 4 expired" in r.stdout, r.stdout + r.stderr
    g.stop()
    assert "archive: expired" in g.log() and "cannot expire" not in g.log()
    r = subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "policy", "replay"], capture_output=True,
                       text=True, timeout=60)      # replay skips what retention removed
    assert r.returncode == 0 and r.stdout.startswith("replayed 0 messages"), r.stdout + r.stderr
    assert re.search(r"^  expired or missing +4$", r.stdout, re.M), r.stdout


N = 3000
DAYS = ["2026-11-28", "2026-11-29", "2026-11-30"]


def build_archive(adir):
    """N archived messages as the plugin writes them (envelope block, file,
    chain line), spread over three days; what each one is, for checking."""
    os.makedirs(adir)
    for d in DAYS:
        os.makedirs(os.path.join(adir, d))
    link = "0" * 64
    facts, chain = [], []
    for i in range(N):
        day = DAYS[i * len(DAYS) // N]
        qid = "6B1%013X" % i
        rel = "%s/%s.eml" % (day, qid)
        sender = "alice@src.test" if i % 3 == 0 else "bob%d@src.test" % (i % 7)
        rcpts = ["x%d@example.test" % (i % 5)] + (["legal@example.test"] if i % 10 == 0 else [])
        subject = "invoice %d" % i if i % 4 == 0 else "hello %d" % i
        env = ("X-Postern-Archive: 1\r\nX-Postern-Queue-ID: %s\r\nX-Postern-Archived-At: %sT10:%02d:%02dZ\r\n"
               "X-Postern-Client: [192.0.2.1] helo=client.test\r\nX-Postern-Envelope-From: <%s>\r\n"
               % (qid, day, (i // 60) % 60, i % 60, sender))
        env += "".join("X-Postern-Envelope-To: <%s>\r\n" % r for r in rcpts)
        msg = ("Received: from client.test ([192.0.2.1])\r\n\tby gw.postern.test (Postern) id %s\r\n"
               "From: %s\r\nTo: %s\r\nSubject: %s\r\n\r\nbody %d\r\nFrom the start of a line\r\n"
               % (qid, sender, rcpts[0], subject, i))
        data = (env + msg).encode()
        with open(os.path.join(adir, rel), "wb") as f:
            f.write(data)
        fh = hashlib.sha256(data).hexdigest()
        link = hashlib.sha256(("%s|%s|%s" % (link, rel, fh)).encode()).hexdigest()
        chain.append("%d %s %s %s\n" % (i + 1, rel, fh, link))
        facts.append({"qid": qid, "sender": sender, "rcpts": rcpts, "subject": subject, "day": day, "data": data})
    with open(os.path.join(adir, "chain"), "w") as f:
        f.writelines(chain)
    with open(os.path.join(adir, "head"), "w") as f:
        f.write("%d %s\n" % (N, link))
    os.chmod(adir, 0o777)
    for root, dirs, files in os.walk(adir):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o777)
        for n in files:
            os.chmod(os.path.join(root, n), 0o666)
    return facts


def test_search_export_and_reindex_on_a_few_thousand_messages():
    adir = os.path.join(writable_dir(), "archive")
    facts = build_archive(adir)
    conf = readable_file("postern.conf", "listen = %s:2525\nspool_dir = %s\nrelay_domains = example.test\n"
                         "default_transport = smtp:[%s]:2526\nplugin_dir = %s\nplugins = archive\n"
                         "archive.dir = %s\n" % (addr(1), writable_dir(), addr(2), PLUGDIR, adir))
    assert postern(conf, "search").returncode == 1            # no index yet: a clear error
    r = archive_timed(conf, "reindex")
    assert r.returncode == 0 and "reindexed %d message(s)" % N in r.stdout, r.stdout + r.stderr
    print("  reindex %d: %.2fs, max RSS %d kB" % (N, r.secs, r.rss))
    assert os.stat(os.path.join(adir, "index")).st_uid != 0     # written as the daemon's user
    assert postern(conf, "verify").returncode == 0
    index_tampering_is_caught(conf, adir, facts)

    def found(*args):
        r = archive_timed(conf, "search", *args)
        assert r.returncode == 0, r.stderr
        last = r.stdout.splitlines()[-1]
        print("  search %s: %s in %.2fs, max RSS %d kB" % (" ".join(args), last, r.secs, r.rss))
        assert r.secs < 30 and r.rss < 100 * 1024, (r.secs, r.rss)
        return int(last.split()[0]), r.stdout

    n, out = found("--from", "ALICE@src.test")
    assert n == len([f for f in facts if f["sender"] == "alice@src.test"])
    assert "%s  2026-11-28T10:00:00Z  <alice@src.test>" % facts[0]["qid"] in out, out[:500]
    assert found("--rcpt", "legal@example.test")[0] == len([f for f in facts if "legal@example.test" in f["rcpts"]])
    assert found("--to", "legal@example.test")[0] == 0            # Bcc-style: only in the envelope
    assert found("--subject", "invoice")[0] == len([f for f in facts if "invoice" in f["subject"]])
    assert found("--since", "2026-11-29", "--until", "2026-11-29")[0] == \
        len([f for f in facts if f["day"] == "2026-11-29"])
    assert found("--from", "alice", "--subject", "invoice", "--limit", "5")[0] == 5
    # bounds are inclusive to the second, a minute bound covers its minute, either spelling
    first_minute = [f for f in facts[:60] if f["day"] == DAYS[0]]
    assert len(first_minute) == 60
    assert found("--until", "%s 10:00" % DAYS[0])[0] == 60
    assert found("--since", "%s 10:00:30" % DAYS[0], "--until", "%sT10:00:59Z" % DAYS[0])[0] == 30
    assert found("--since", "%s 10:00:59" % DAYS[0], "--until", "%s 10:00:59" % DAYS[0])[0] == 1
    for bad in (["--until", "garbage"], ["--since", "2026-02-30"], ["--until", "2026-11-28 25:00"],
                ["--since", "2026-11-28 10"]):
        r = postern(conf, "search", *bad)
        assert r.returncode == 2 and "is not a date" in r.stderr, (bad, r.returncode, r.stderr)

    # export to a directory: the files byte for byte, each with its proof
    out = os.path.join(writable_dir(), "hold")
    r = archive_timed(conf, "export", "--rcpt", "legal@example.test", "--dir", out)
    want = [f for f in facts if "legal@example.test" in f["rcpts"]]
    assert r.returncode == 0 and r.stdout.startswith("exported %d message(s)" % len(want)), r.stdout + r.stderr
    print("  export --dir %d: %.2fs, max RSS %d kB" % (len(want), r.secs, r.rss))
    assert r.secs < 60 and r.rss < 100 * 1024, (r.secs, r.rss)
    proof = [l.split() for l in open(os.path.join(out, "proof")) if not l.startswith("#")]
    assert [p[5] for p in proof] == [f["qid"] + ".eml" for f in want]
    for p, f in zip(proof, want):
        data = open(os.path.join(out, p[5]), "rb").read()
        assert data == f["data"] and hashlib.sha256(data).hexdigest() == p[2]
        assert hashlib.sha256(("%s|%s|%s" % (p[3], p[1], p[2])).encode()).hexdigest() == p[4]
    # the chain as it stood (the searches before and this export are audit records after it)
    exported = open(os.path.join(out, "chain")).read().splitlines()
    assert open(os.path.join(adir, "chain")).read().startswith("\n".join(exported) + "\n")
    assert [l.split()[1].split("/")[1] for l in open(os.path.join(adir, "chain")).read().splitlines()[len(exported):]] \
        == ["export"]
    last = exported[-1].split()
    assert open(os.path.join(out, "proof")).read().splitlines()[-1] == "# head %s %s" % (last[0], last[3])
    assert postern(conf, "export", "--dir", out).returncode == 1      # never into an existing export

    # export to an mbox: one entry per message, "From " lines quoted
    mb = os.path.join(writable_dir(), "hold.mbox")
    r = postern(conf, "export", "--subject", "invoice", "--since", "2026-11-30", "--mbox", mb)
    want = [f for f in facts if "invoice" in f["subject"] and f["day"] == "2026-11-30"]
    assert r.returncode == 0 and r.stdout.startswith("exported %d message(s)" % len(want)), r.stdout + r.stderr
    box = mailbox.mbox(mb)
    assert [m["Subject"] for m in box] == [f["subject"] for f in want]
    assert b"\n>From the start of a line\n" in open(mb, "rb").read()
    assert len([l for l in open(mb + ".proof") if not l.startswith("#")]) == len(want)

    # a copy the daemon's user swaps for a symlink is never followed (verify runs as root here)
    victim = os.path.join(adir, DAYS[0], facts[1]["qid"] + ".eml")
    os.unlink(victim)
    os.symlink("/etc/hostname", victim)
    r = postern(conf, "verify")
    assert r.returncode == 1 and "DELETED %s/%s.eml" % (DAYS[0], facts[1]["qid"]) in r.stdout, r.stdout[-500:]
    assert "CHANGED" not in r.stdout
    assert postern(conf, "search", "--subject", "hello 1").stdout.count(facts[1]["qid"]) == 0
    # an index or chain the daemon's user swaps for a link to a root-only file is never read through it
    secret = os.path.join(tempfile.mkdtemp(prefix="root-only-"), "secret")
    on_cleanup(lambda: shutil.rmtree(os.path.dirname(secret), ignore_errors=True))
    with open(secret, "w") as f:
        f.write("1\t2026-11-28T10:00:00Z\t2026-11-28/ROOTONLY.eml\tROOTONLY\ta@b\tc@d\t\t\troot only subject\n")
    os.chmod(secret, 0o600)
    for name in ("index", "chain"):
        os.rename(os.path.join(adir, name), os.path.join(adir, name + ".orig"))
        os.symlink(secret, os.path.join(adir, name))
        for cmd in (["search"], ["verify"]):
            r = postern(conf, *cmd)
            assert r.returncode != 0 and "ROOTONLY" not in r.stdout + r.stderr, (name, cmd, r.stdout[-300:])
        os.unlink(os.path.join(adir, name))
        os.rename(os.path.join(adir, name + ".orig"), os.path.join(adir, name))


def index_tampering_is_caught(conf, adir, facts):
    """The daemon's user drops one line of the index and alters another's
    recipients: verify names both, search refuses until a reindex, export
    (read from the chain and files) still finds both copies."""
    ix = os.path.join(adir, "index")
    good = open(ix).read()
    lines = good.splitlines(True)
    dropped, altered = facts[10], facts[20]          # both have legal@example.test in the envelope
    assert "legal@example.test" in dropped["rcpts"] and "legal@example.test" in altered["rcpts"]
    lines = [l for l in lines if dropped["qid"] not in l]
    lines = [l.replace("legal@example.test", "nobody@example.test") if altered["qid"] in l else l for l in lines]
    with open(ix, "w") as f:
        f.writelines(lines)
    r = postern(conf, "verify")
    assert r.returncode == 1 and "INDEX MISSING %s/%s.eml (seq 11)" % (dropped["day"], dropped["qid"]) in r.stdout
    assert "INDEX ALTERED %s/%s.eml (seq 21)" % (altered["day"], altered["qid"]) in r.stdout, r.stdout[-800:]
    assert "archive reindex" in r.stdout and "archive ok" not in r.stdout
    r = postern(conf, "search", "--rcpt", "legal@example.test")
    assert r.returncode == 1 and "index disagrees with the chain" in r.stderr and "archive reindex" in r.stderr, \
        r.stdout[-300:] + r.stderr
    out = os.path.join(writable_dir(), "hold-tampered")
    r = postern(conf, "export", "--rcpt", "legal@example.test", "--dir", out)
    want = [f for f in facts if "legal@example.test" in f["rcpts"]]
    assert r.returncode == 0 and r.stdout.startswith("exported %d message(s)" % len(want)), r.stdout + r.stderr
    assert os.path.exists(os.path.join(out, dropped["qid"] + ".eml"))
    assert os.path.exists(os.path.join(out, altered["qid"] + ".eml"))
    # a line for a copy the chain does not have
    with open(ix, "a") as f:
        f.write("99999\t2026-11-28T10:00:00Z\t2026-11-28/FAKE.eml\tFAKE\ta@src.test\tb@example.test\t\t\tx\n")
    assert "INDEX EXTRA line for seq 99999" in postern(conf, "verify").stdout
    assert postern(conf, "reindex").returncode == 0
    assert open(ix).read() == good
    assert postern(conf, "verify").returncode == 0


if __name__ == "__main__":
    run_tests(globals())
