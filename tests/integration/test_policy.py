"""`postern policy test` and `postern policy replay`: the configured chain
(C plugins and Lua) run offline on one message, on a cases file, and over
the archive, with no side effects; the cases shipped in policies/tests."""
import glob
import hashlib
import json

from harness import *

PLUGDIR = os.path.join(BUILD, "plugins")
POLICY_TESTS = os.path.join(ROOT, "policies", "tests")


def writable_dir():
    d = tempfile.mkdtemp(prefix="policytest-")
    os.chmod(d, 0o777)        # the chain runs as the daemon's user
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


def config(**conf):
    """A config file for policy runs (nothing listens)."""
    cfg = dict(BASE_CONFIG, listen="%s:2525" % addr(1), spool_dir=os.path.join(writable_dir(), "spool"),
               plugin_dir=PLUGDIR, default_transport="smtp:[%s]:2526" % addr(2))
    cfg.update(conf)
    return readable_file("postern.conf", "".join("%s = %s\n" % kv for kv in cfg.items()), prefix="policyconf-")


def policy(conf, *args, cwd=None):
    r = subprocess.run([os.path.join(BUILD, "postern"), "-c", conf, "policy", *args], capture_output=True,
                       text=True, timeout=60, cwd=cwd)
    assert "AddressSanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr
    return r


def message(text):
    return readable_file("msg.eml", text.replace("\n", "\r\n"), prefix="policymsg-")


PLAIN = "From: Alice <alice@partner.test>\nTo: bob@example.test\nSubject: hello\nX-Drop: me\n\nhi Bob\n"

TAGGER = """
postern.on("rcpt", function(tx, rcpt)
  if rcpt:match("^nobody@") then return postern.REJECT("5.1.1", "no such user") end
end)
postern.on("eom", function(tx)
  if tx:header("Subject") == "boom" then error("script bug") end
  tx:add_header("X-Policy", "tagged")
  tx:delete_header("X-Drop")
  tx.vars["policy.seen"] = "yes"
  for _, r in ipairs(tx:recipients()) do
    if r:match("^sales@") then tx:route(r, "smtp:[192.0.2.10]:25") end
    if r:match("^legal@") then tx:require_tls(r, "verify") end
  end
end)
"""


def tagger_conf(**more):
    rules = readable_file("header_checks", "/^Subject: review/ QUARANTINE needs review\n"
                          "/^Subject: later/ TEMPFAIL busy\n", prefix="rules-")
    script = readable_file("tagger.lua", TAGGER, prefix="lua-")
    return config(plugins="header_checks, lua:" + script, **{"header_checks.rules": rules}, **more)


def test_shipped_policy_cases_pass():
    cases = sorted(glob.glob(os.path.join(POLICY_TESTS, "*.cases")))
    assert len(cases) == len(glob.glob(os.path.join(ROOT, "policies", "*.lua"))), "a policy without its cases"
    for path in cases:
        conf = path[:-len(".cases")] + ".conf"
        r = policy(conf, "test", "--cases", path, cwd=ROOT)
        n = len([l for l in open(path) if l.strip() and not l.lstrip().startswith("#")])
        assert r.returncode == 0 and r.stdout.endswith("%d case%s, 0 failed\n" % (n, "" if n == 1 else "s")), \
            path + "\n" + r.stdout + r.stderr
        assert r.stdout.count("\nok ") + r.stdout.startswith("ok ") == n, r.stdout


def test_a_case_that_does_not_hold_fails():
    d = writable_dir()
    shutil.copy(os.path.join(POLICY_TESTS, "msgs", "plain.eml"), d)
    cases = os.path.join(d, "x.cases")
    with open(cases, "w") as f:
        f.write("listed  accept  plain.eml  --to bob@example.test\n"
                "wrong   reject  plain.eml  --to carol@example.test\n"
                "route   accept  plain.eml  --to bob@example.test --expect-route bob@example.test=smtp:[h]:25\n")
    conf = os.path.join(POLICY_TESTS, "allow_list.conf")
    r = policy(conf, "test", "--cases", cases, cwd=ROOT)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "ok   listed", lines
    assert lines[1].startswith("FAIL wrong (line 2): expected reject, got accept"), lines
    assert lines[2].startswith("FAIL route (line 3): <bob@example.test> route default, not smtp:[h]:25"), lines
    assert lines[-1] == "3 cases, 2 failed"
    with open(cases, "w") as f:
        f.write("bad  sometimes  plain.eml --to bob@example.test\n")
    r = policy(conf, "test", "--cases", cases, cwd=ROOT)
    assert r.returncode == 4 and "line 1: want NAME EXPECT MESSAGE" in r.stderr, r.stderr


def test_trace_per_stage_and_link_with_changes():
    conf = tagger_conf()
    msg = message(PLAIN)
    r = policy(conf, "test", "--client", "198.51.100.7", "--to", "sales@example.test", "--to", "legal@example.test",
               "--to", "nobody@example.test", msg)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    script = [l for l in open(conf) if l.startswith("plugins")][0].split("lua:")[1].strip()
    assert "rcpt <nobody@example.test>\n  lua:%s" % script in out, out
    assert "reject  550 5.1.1 no such user" in out, out
    assert re.search(r"\ndata\n  header_checks +continue\n", out), out
    eom = out[out.index("\neom\n"):]
    for change in ("+ header X-Policy: tagged", "- header X-Drop: me", '+ var policy.seen = "yes"',
                   "- rcpt <sales@example.test>", "+ rcpt <sales@example.test> route=smtp:[192.0.2.10]:25",
                   "+ rcpt <legal@example.test> tls=verify"):
        assert "      " + change + "\n" in eom, (change, eom)
    assert "outcome: accept\n" in out
    assert "  <sales@example.test> accept route=smtp:[192.0.2.10]:25\n" in out
    assert "  <legal@example.test> accept tls=verify\n" in out
    assert "  <nobody@example.test> reject at rcpt: 550 5.1.1 no such user\n" in out


def test_exit_status_by_outcome_and_json():
    conf = tagger_conf()
    cases = {"hello": 0, "review me": 3, "later": 2, "boom": 2}
    for subject, code in cases.items():
        msg = message(PLAIN.replace("Subject: hello", "Subject: " + subject))
        r = policy(conf, "test", "--json", "--to", "bob@example.test", msg)
        assert r.returncode == code, (subject, r.returncode, r.stdout, r.stderr)
        j = json.loads(r.stdout)
        assert j["outcome"] == ["accept", "reject", "tempfail", "quarantine"][code if code != 3 else 3], j
        if subject == "review me":
            assert j["decided_by"] == "header_checks" and j["stage"] == "data", j
            assert j["quarantine_reason"] == "needs review" and j["recipients"][0]["outcome"] == "quarantine", j
        if subject == "boom":      # a script error tempfails, as it would live
            assert j["reply"].startswith("451 4.3.0") and j["stage"] == "eom", j
    r = policy(conf, "test", "--json", "--to", "nobody@example.test", message(PLAIN))
    assert r.returncode == 1 and json.loads(r.stdout)["recipients"][0]["stage"] == "rcpt", r.stdout
    r = policy(conf, "test", "--to", "bob@example.test", "/nonexistent.eml")
    assert r.returncode == 4 and "/nonexistent.eml" in r.stderr, r.stderr
    r = policy(conf, "test", message(PLAIN))
    assert r.returncode == 4 and "--to" in r.stderr, r.stderr
    r = policy(conf, "test", "--to", "two words@example.test", message(PLAIN))
    assert r.returncode == 4 and "501 5.1.3" in r.stderr, r.stderr


def test_posternd_own_refusals_outside_the_chain():
    """Relay control, max_recipients, message_size_limit and long lines are
    posternd's own checks: policy test reports them as link "posternd",
    as the live gateway would answer."""
    conf = config(plugins="size_limit", max_recipients="2", message_size_limit="2000", **{"size_limit.max": "1m"})
    msg = message(PLAIN)
    r = policy(conf, "test", "--json", "--to", "bob@example.test", "--to", "x@elsewhere.test",
               "--to", "user%other.test@example.test", "--to", "carol@example.test", "--to", "dave@example.test", msg)
    assert r.stdout.startswith("{"), r.stdout + r.stderr
    j = json.loads(r.stdout)
    got = {p["address"]: (p["outcome"], p.get("reply", "")) for p in j["recipients"]}
    assert got["bob@example.test"][0] == "accept" and got["carol@example.test"][0] == "accept", got
    assert got["x@elsewhere.test"] == ("reject", "554 5.7.1 <x@elsewhere.test>: Relay access denied"), got
    assert got["user%other.test@example.test"][0] == "reject" and "sender-specified routing" in \
        got["user%other.test@example.test"][1], got
    assert got["dave@example.test"] == ("tempfail", "452 4.5.3 Error: too many recipients"), got
    assert r.returncode == 0 and j["outcome"] == "accept", r.stdout
    # from a trusted client, or logged in, relaying is allowed
    for who in (["--client", "127.0.0.1"], ["--auth", "alice"]):
        r = policy(conf, "test", "--json", *who, "--to", "x@elsewhere.test", msg)
        assert r.returncode == 0 and json.loads(r.stdout)["outcome"] == "accept", (who, r.stdout)
    r = policy(conf, "test", "--to", "x@elsewhere.test", msg)
    assert r.returncode == 1 and re.search(r"^rcpt <x@elsewhere.test>\n  posternd +reject +554 5.7.1", r.stdout,
                                           re.M), r.stdout
    for body, reply in (("y" * 3000, "552 5.3.4 Message size exceeds"), ("z" * 1200, "550 5.5.2 Error: message line")):
        r = policy(conf, "test", "--json", "--to", "bob@example.test", message(PLAIN + body + "\n"))
        j = json.loads(r.stdout)
        assert r.returncode == 1 and j["decided_by"] == "posternd" and j["reply"].startswith(reply), r.stdout
        assert j["stage"] == "eom", j


def test_no_side_effects_archive_and_greylist():
    d = writable_dir()
    adir = os.path.join(d, "archive")
    os.mkdir(adir)
    os.chmod(adir, 0o777)
    db = os.path.join(d, "greylist.sqlite")
    conf = config(plugins="greylist, archive", **{"archive.dir": adir, "greylist.db": db, "greylist.delay": "60"})
    msg = message(PLAIN)
    for _ in range(2):      # greylisted both times: the first run recorded nothing
        r = policy(conf, "test", "--client", "198.51.100.7", "--to", "bob@example.test", msg)
        assert r.returncode == 2 and "450 4.7.1" in r.stdout, r.stdout + r.stderr
    assert not os.path.exists(db) and os.listdir(adir) == [], os.listdir(d)
    # a trusted client skips greylisting: the archive link runs and writes nothing
    r = policy(conf, "test", "--client", "127.0.0.1", "--to", "bob@example.test", msg)
    assert r.returncode == 0 and re.search(r"queue\n  archive +continue", r.stdout), r.stdout + r.stderr
    assert os.listdir(adir) == [] and not os.path.exists(db)


def test_dns_file_canned_answers():
    d = writable_dir()
    zone = os.path.join(d, "dns.txt")
    with open(zone, "w") as f:
        f.write("# canned answers\npartner.test. 300 IN TXT \"v=spf1 ip4:192.0.2.1 -all\"\n")
    os.chmod(zone, 0o644)
    conf = config(plugins="spf")
    msg = message(PLAIN)
    r = policy(conf, "test", "--dns-file", zone, "--client", "192.0.2.1", "--to", "bob@example.test", msg)
    assert r.returncode == 0 and '+ var spf.result = "pass"' in r.stdout, r.stdout + r.stderr
    r = policy(conf, "test", "--dns-file", zone, "--client", "198.51.100.7", "--to", "bob@example.test", msg)
    assert r.returncode == 1 and re.search(r"mail <alice@partner.test>\n  spf +reject  550 5.7", r.stdout), \
        r.stdout + r.stderr
    r = policy(conf, "test", "--dns-file", zone, "--from", "x@elsewhere.test", "--client", "198.51.100.7",
               "--to", "bob@example.test", msg)
    assert r.returncode == 0 and '+ var spf.result = "none"' in r.stdout, r.stdout
    with open(zone, "a") as f:
        f.write("this is not a record\n")
    r = policy(conf, "test", "--dns-file", zone, "--to", "bob@example.test", msg)
    assert r.returncode == 4 and "line 3" in r.stderr, r.stderr


LIVE = """
postern.on("eom", function(tx)
  if tx:header("Subject") == "hold" then return tx:quarantine("held for review") end
end)
"""

CANDIDATE = """
postern.on("rcpt", function(tx, rcpt)
  if rcpt:match("^blocked@") then return postern.REJECT("5.7.1", "blocked recipient") end
end)
postern.on("eom", function(tx)
  if tx:header("Subject") == "promo" then return postern.REJECT("5.7.1", "no promotions") end
  for _, r in ipairs(tx:recipients()) do
    if r:match("^sales@") then tx:route(r, "smtp:[192.0.2.10]:25") end
  end
end)
"""


def test_replay_over_the_archive():
    sink = Sink(addr(2))
    adir = os.path.join(writable_dir(), "archive")
    live_script = readable_file("live.lua", LIVE, prefix="lua-")
    g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="lua:%s, archive" % live_script,
                **{"archive.dir": adir}).start()
    sent = [("hello 1", ["a@example.test"]), ("hello 2", ["a@example.test"]), ("hello 3", ["sales@example.test"]),
            ("hold", ["a@example.test"]), ("promo", ["a@example.test"]), ("promo", ["b@example.test"]),
            ("hello 4", ["a@example.test", "blocked@example.test"])]
    qids = {}
    for subject, rcpts in sent:
        qids[subject] = queue_id(send_mail(g, rcpts=rcpts, headers="Subject: %s\r\n" % subject))
    sink.wait_count(6)
    wait_for(lambda: len([l for l in open(os.path.join(adir, "chain"))]) == 7, 10, "7 archived messages")
    held = glob.glob(os.path.join(adir, "*", qids["hold"] + ".eml"))[0]
    assert "X-Postern-Decided: eom lua:%s quarantine: held for review\r\n" % live_script in \
        open(held, newline="").read()
    chain_before = hashlib.sha256(open(os.path.join(adir, "chain"), "rb").read()).hexdigest()
    g.stop()

    cand = config(plugins="lua:%s, archive" % readable_file("cand.lua", CANDIDATE, prefix="lua-"),
                  **{"archive.dir": adir})
    r = policy(cand, "replay", "--archive", adir)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    expect = {"unchanged": 2, "newly accepted": 1, "newly rejected": 2, "newly quarantined": 0,
              "partly refused": 1, "routes or TLS changed": 1, "could not be replayed": 0}
    assert out.startswith("replayed 7 messages from %s\n" % adir), out
    for name, n in expect.items():
        assert re.search(r"^  %s +%d$" % (re.escape(name), n), out, re.M), (name, out)
    changed = out[out.index("changed:\n"):]
    assert re.search(r"^%s .* live: quarantine by eom lua:\S+  now accept$" % qids["hold"], changed, re.M), changed
    assert re.search(r"^%s .* live: accept  now reject by lua:\S+ at eom: 550 5.7.1 no promotions$"
                     % qids["promo"], changed, re.M), changed
    assert re.search(r"^%s .* <sales@example.test> default -> hop=smtp:\[192.0.2.10\]:25$" % qids["hello 3"],
                     changed, re.M), changed
    assert re.search(r"^%s .* <blocked@example.test> reject at rcpt: 550 5.7.1 blocked recipient$"
                     % qids["hello 4"], changed, re.M), changed
    assert qids["hello 1"] not in changed
    # bounded runs, and nothing written to the archive
    r = policy(cand, "replay", "--archive", adir, "--limit", "3")
    assert r.stdout.startswith("replayed 3 messages"), r.stdout
    r = policy(cand, "replay", "--since", "2999-01-01")      # archive.dir from the config
    assert r.returncode == 0 and r.stdout.startswith("replayed 0 messages"), r.stdout + r.stderr
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    r = policy(cand, "replay", "--until", "%s 00:00" % tomorrow)
    assert r.returncode == 0 and r.stdout.startswith("replayed 7 messages"), r.stdout + r.stderr
    r = policy(cand, "replay", "--until", "garbage")
    assert r.returncode != 0 and "'garbage' is not a date" in r.stderr, r.stdout + r.stderr
    assert hashlib.sha256(open(os.path.join(adir, "chain"), "rb").read()).hexdigest() == chain_before
    r = subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "archive", "verify"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and "archive ok: 7 message(s)" in r.stdout, r.stdout + r.stderr
    r = policy(cand, "replay", "--archive", "/nonexistent")
    assert r.returncode == 4 and "/nonexistent/chain" in r.stderr, r.stderr


if __name__ == "__main__":
    run_tests(globals())
