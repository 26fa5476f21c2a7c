"""Full-text search over the archive (issue 40): 30,000 archived messages
built as the plugin writes them, a phrase found inside a base64 text part
and in an ISO-8859-1 quoted-printable part, HTML, encoded words and
attachment names, combined with the envelope filters; the index checked
by verify and rebuilt by reindex; time and memory measured."""
import base64
import hashlib

from harness import *

PLUGDIR = os.path.join(BUILD, "plugins")
N = 30000
WORDS = ("invoice meeting budget report travel lunch contract shipment review draft quarterly forecast "
         "holiday schedule payroll audit vendor").split()
BASE64_AT, LATIN1_AT, HTML_AT, ATTACH_AT = 12345, 23456, 777, 29999


def writable_dir():
    d = tempfile.mkdtemp(prefix="archft-")
    os.chmod(d, 0o777)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


def message(i):
    """The message body and Content-Type lines of copy i."""
    words = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(40))
    if i == BASE64_AT:
        text = base64.encodebytes(("Hello,\r\nthe falcon lands at midnight, bring the %s.\r\n" % words).encode())
        return ("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n"
                "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n--b1--\r\n"
                % text.decode().replace("\n", "\r\n"))
    if i == LATIN1_AT:
        latin = "Grüße aus Köln, Herr Müller: die Übergabe ist am Freitag.".encode("iso-8859-1")
        qp = "".join(chr(b) if 32 < b < 127 and b != 61 else ("=%02X" % b if b != 32 else " ") for b in latin)
        return ("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
                "Content-Transfer-Encoding: quoted-printable\r\n\r\n%s\r\n" % qp)
    if i == HTML_AT:
        return ("MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><style>p{}</style>"
                "<p>The <b>saffron</b>&nbsp;protocol</p><script>var hidden_word = 1;</script></html>\r\n")
    if i == ATTACH_AT:
        return ("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b2\"\r\n\r\n--b2\r\n"
                "Content-Type: text/plain\r\n\r\nsee attached\r\n--b2\r\nContent-Type: application/pdf; "
                "name=\"=?utf-8?Q?Vertrag_M=C3=BCller_2026.pdf?=\"\r\nContent-Disposition: attachment\r\n"
                "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b2--\r\n")
    return "Content-Type: text/plain\r\n\r\n%s\r\nline %d of the body\r\n" % (words, i)


def build_archive(adir):
    os.makedirs(os.path.join(adir, "2026-12-01"))
    link, chain = "0" * 64, []
    for i in range(N):
        qid = "7C1%013X" % i
        rel = "2026-12-01/%s.eml" % qid
        sender = "ceo@corp.test" if i in (BASE64_AT, LATIN1_AT) else "user%d@corp.test" % (i % 50)
        subject = "=?utf-8?B?%s?=" % base64.b64encode(("Übergabe %d" % i).encode()).decode() if i == LATIN1_AT else \
            "weekly %s %d" % (WORDS[i % len(WORDS)], i)
        env = ("X-Postern-Archive: 1\r\nX-Postern-Queue-ID: %s\r\nX-Postern-Archived-At: 2026-12-01T%02d:%02d:%02dZ\r\n"
               "X-Postern-Envelope-From: <%s>\r\nX-Postern-Envelope-To: <legal@example.test>\r\n"
               % (qid, i // 3600 % 24, i // 60 % 60, i % 60, sender))
        msg = "From: %s\r\nTo: legal@example.test\r\nSubject: %s\r\n%s" % (sender, subject, message(i))
        data = (env + msg).encode("latin-1" if i == LATIN1_AT else "utf-8")
        with open(os.path.join(adir, rel), "wb") as f:
            f.write(data)
        fh = hashlib.sha256(data).hexdigest()
        link = hashlib.sha256(("%s|%s|%s" % (link, rel, fh)).encode()).hexdigest()
        chain.append("%d %s %s %s\n" % (i + 1, rel, fh, link))
    with open(os.path.join(adir, "chain"), "w") as f:
        f.writelines(chain)
    with open(os.path.join(adir, "head"), "w") as f:
        f.write("%d %s\n" % (N, link))
    for root, dirs, files in os.walk(adir):
        os.chmod(root, 0o777)
        for n in files:
            os.chmod(os.path.join(root, n), 0o666)


def run(conf, *args):
    return archive_timed(conf, *args)


def qids(out):
    return [l.split()[0] for l in out.splitlines() if l.startswith("7C1")]


def qid(i):
    return "7C1%013X" % i


def test_full_text_search_over_30000_messages():
    adir = os.path.join(writable_dir(), "archive")
    t0 = time.time()
    build_archive(adir)
    print("  built %d messages in %.1fs" % (N, time.time() - t0))
    conf = readable_file("postern.conf", "listen = %s:2525\nspool_dir = %s\nrelay_domains = example.test\n"
                         "default_transport = smtp:[%s]:2526\nplugin_dir = %s\nplugins = archive\n"
                         "archive.dir = %s\n" % (addr(1), writable_dir(), addr(2), PLUGDIR, adir))
    r = run(conf, "reindex")
    assert r.returncode == 0 and "full-text index rebuilt: %d message(s)" % N in r.stdout, r.stdout + r.stderr
    print("  reindex (index and full text) of %d: %.1fs, peak RSS %d kB, fulltext.db %d MB"
          % (N, r.secs, r.rss, os.path.getsize(os.path.join(adir, "fulltext.db")) // 2**20))
    assert os.stat(os.path.join(adir, "fulltext.db")).st_uid != 0          # the daemon's user's
    # a phrase inside a base64 part, and one in an ISO-8859-1 quoted-printable part (accents or not)
    r = run(conf, "search", "--text", '"falcon lands at midnight"')
    assert r.returncode == 0 and qids(r.stdout) == [qid(BASE64_AT)], r.stdout + r.stderr
    print("  search --text phrase: %.2fs, peak RSS %d kB" % (r.secs, r.rss))
    assert r.secs < 30 and r.rss < 200 * 1024
    for q in ('"Herr Müller"', '"herr muller"', "Grüße AND Köln", "Übergabe"):
        r = run(conf, "search", "--text", q)
        assert qids(r.stdout) == [qid(LATIN1_AT)], (q, r.stdout, r.stderr)
    # HTML as text (not its script), attachment names, AND / OR / NOT, combined with envelope filters
    assert qids(run(conf, "search", "--text", '"saffron protocol"').stdout) == [qid(HTML_AT)]
    assert qids(run(conf, "search", "--text", "hidden_word").stdout) == []
    assert qids(run(conf, "search", "--text", "files:vertrag").stdout) == [qid(ATTACH_AT)]
    r = run(conf, "search", "--text", "falcon OR Müller")          # the attachment's name has Müller too
    assert sorted(qids(r.stdout)) == sorted([qid(BASE64_AT), qid(LATIN1_AT), qid(ATTACH_AT)]), r.stdout
    r = run(conf, "search", "--text", "(falcon OR Müller) NOT Köln")
    assert qids(r.stdout) == [qid(BASE64_AT), qid(ATTACH_AT)], r.stdout
    r = run(conf, "search", "--text", "body:(falcon OR Müller) NOT Köln")
    assert qids(r.stdout) == [qid(BASE64_AT)], r.stdout
    r = run(conf, "search", "--text", "payroll AND vendor", "--from", "user7@")
    want = [l for l in r.stdout.splitlines() if l.startswith("7C1")]
    assert want and all("<user7@corp.test>" in l for l in want), r.stdout[-500:]
    r = run(conf, "search", "--text", '"unbalanced')
    assert r.returncode == 1 and "--text" in r.stderr, r.stderr
    # export by text
    out = os.path.join(writable_dir(), "x.mbox")
    r = run(conf, "export", "--text", "falcon", "--mbox", out)
    assert r.returncode == 0 and r.stdout.startswith("exported 1 message(s)"), r.stdout + r.stderr
    # verify checks the full-text index: a row removed is found, reindex repairs it
    r = run(conf, "verify")
    assert r.returncode == 0 and "FULLTEXT" not in r.stdout, r.stdout[-800:]
    subprocess.run(["sqlite3", os.path.join(adir, "fulltext.db"),
                    "DELETE FROM docs WHERE rowid = %d; DELETE FROM copies WHERE seq = %d" % (BASE64_AT + 1, BASE64_AT + 1)],
                   check=True, timeout=30)
    r = run(conf, "verify")
    assert r.returncode == 1 and "FULLTEXT MISSING 2026-12-01/%s.eml" % qid(BASE64_AT) in r.stdout, r.stdout[-800:]
    assert run(conf, "reindex").returncode == 0
    assert qids(run(conf, "search", "--text", "falcon").stdout) == [qid(BASE64_AT)]
    assert run(conf, "verify").returncode == 0


run_tests(globals())
