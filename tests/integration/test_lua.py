"""Lua policies: every API function, every verdict, the sandbox (each
forbidden call refused), the runaway loop, the memory limit, script errors
with script:line, SIGHUP reload (good and broken), and every example policy
in policies/ end to end."""
import base64
import threading
from harness import *

LUA = os.path.join(ROOT, "tests", "lua")
POLICIES = os.path.join(ROOT, "policies")
PLUGDIR = os.path.join(BUILD, "plugins")


def gw(sink, scripts, start=True, **conf):
    g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins=", ".join(scripts), **conf)
    return g.start() if start else g


def script_dir():
    d = tempfile.mkdtemp(prefix="lua-")
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path


def rcpt_reply(g, rcpt, sender="a@src.test"):
    c = Client(g.host)
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<%s>" % sender)
    rep = c.cmd("RCPT TO:<%s>" % rcpt)
    c.close()
    return rep


send = send_mail


def postern(g, *args):
    return subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, *args], capture_output=True, text=True,
                          timeout=30)


def test_every_api_function():
    sink, routed = Sink(addr(2)), Sink(addr(3), port=2600)
    d = script_dir()
    table = write(os.path.join(d, "table"), "# a table\nkey value-from-file\n")
    adir = os.path.join(d, "archive")
    os.makedirs(adir)
    os.chmod(adir, 0o777)
    g = gw(sink, ["lua:%s/api_probe.lua" % LUA, "archive"], **{
        "api_probe.table": "file:" + table, "api_probe.greeting": "hello option",
        "api_probe.route_to": "smtp:[%s]:2600" % addr(3), "archive.dir": adir, "archive.mode": "requested"})
    rep = send(g, rcpts=("x@example.test", "drop@example.test", "routed@example.test"),
               headers="Subject: probe\r\nX-Remove: me\r\n", body="original body\r\n")
    assert "queued as" in rep, rep
    m = sink.wait_count(1)[0]
    h = dict(re.findall(rb"^X-Probe-([\w-]+): (.*)$", m, re.M))
    expect = {
        b"Client": b"127.0.0.1", b"Helo": b"client.test", b"Session-Helo": b"client.test",
        b"Session-Connected": b"127.0.0.1", b"Session-Count": b"1", b"TLS": b"false", b"Auth": b"nil",
        b"Stage": b"eom", b"Queue-Id-Set": b"true", b"Sender": b"alice@src.test", b"Mail-Arg": b"alice@src.test",
        b"Flag": b"true", b"Temp": b"nil", b"Rcpts-Seen": b"3", b"Subject": b"probe",
        b"Body-Bytes": b"15", b"Body": b"original body|", b"Relay": b"true", b"Not-Relay": b"false",
        b"Trusted": b"true", b"Transport": ("smtp:[%s]:2526" % addr(2)).encode(), b"File": b"value-from-file",
        b"Option": b"hello option", b"Incr": b"true", b"Domain": b"example.test", b"Module": b"42",
        b"First": b"inserted at data",
    }
    for k, v in expect.items():
        assert h.get(k) == v, (k, h.get(k), v)
    # added at MAIL, before any RCPT
    assert h[b"Rcpts"] == b"added@example.test,x@example.test,drop@example.test,routed@example.test", h[b"Rcpts"]
    assert h[b"Second-Received"] is not None
    assert int(h[b"Headers-At-Data"]) >= 4 and int(h[b"Size"]) > 15
    # mutations took effect
    assert b"Subject: changed by lua" in m and b"X-Remove" not in m
    assert b"X-Mail-Args: <lua@src.test>" in m
    assert sorted(sink_rcpts(m)) == [b"added@example.test", b"x@example.test"]
    assert sink_rcpts(routed.wait_count(1)[0]) == [b"routed@example.test"]
    assert len(glob.glob(os.path.join(adir, "*", "*.eml"))) == 1          # tx:archive()
    wait_for(lambda: "deliver stage for" in g.log(), 5, "deliver stage")
    assert "queue stage: session vars absent, body true" in g.log()
    assert "lua: %s/api_probe.lua:" % LUA in g.log() and "api probe done" in g.log()
    g.stop()


def test_tx_parts_gives_the_mime_structure_decoded():
    """tx:parts(): every leaf of a nested multipart, with type, charset, file
    name, decoded size, and decoded text (quoted-printable, base64) up to the
    limit the script asks for."""
    sink = Sink(addr(2))
    d = script_dir()
    script = write(os.path.join(d, "parts.lua"), """
postern.on("eom", function(tx)
  local out = {}
  for i, p in ipairs(tx:parts(12)) do
    out[#out + 1] = string.format("%d:%s:%s:%s:%s:%d:%s:%s", i, p.type, p.charset, p.filename, p.encoding, p.size,
                                  p.text and p.text:gsub("[\\r\\n]", "_") or "-", tostring(p.truncated))
  end
  tx:add_header("X-Parts", table.concat(out, " | "))
end)
""")
    g = gw(sink, ["lua:" + script])
    pdf = base64.b64encode(b"%PDF-1.4 fake document").decode()
    body = ("--outer\r\nContent-Type: multipart/alternative; boundary=\"in ner\"\r\n\r\n"
            "--in ner\r\nContent-Type: text/plain; charset=ISO-8859-1\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\nCaf=E9 au l=\r\nait\r\n"
            "--in ner\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.b64encode(b"<p>a longer html text</p>").decode() + "\r\n--in ner--\r\n"
            "--outer\r\nContent-Type: application/pdf; name=\"ignored.pdf\"\r\n"
            "Content-Disposition: attachment;\r\n filename=\"report 2026.pdf\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n" + pdf + "\r\n--outer--\r\n")
    send_mail(g, headers="Subject: parts\r\nMIME-Version: 1.0\r\n"
              "Content-Type: multipart/mixed;\r\n boundary=outer\r\n", body=body)
    m = sink.wait_count(1)[0]
    parts = re.search(rb"X-Parts: (.*)", m).group(1).decode("latin-1").strip()
    # the CRLF before a delimiter belongs to it; name= gives way to filename=
    assert parts == ("1:text/plain:iso-8859-1::quoted-printable:12:Caf\xe9 au lait:false | "
                     "2:text/html:::base64:25:<p>a longer :true | "
                     "3:application/pdf::report 2026.pdf:base64:22:-:nil"), parts
    g.stop()


def test_postern_dns_answers_without_holding_the_lua_thread():
    """postern.dns(name, type) yields while the lookup runs: with one Lua
    thread, a session whose lookup is never answered does not hold up
    another session's lookups."""
    dns = DnsServer(['listed.dnsbl.test. TXT "spam source" "since 2026"', "listed.dnsbl.test. A 127.0.0.2",
                     "dnsbl.test. MX 10 mx.dnsbl.test."], drop=("slow.dnsbl.test",))
    sink = Sink(addr(2))
    d = script_dir()
    script = write(os.path.join(d, "dnsbl.lua"), """
postern.on("rcpt", function(tx, rcpt)
  local name = postern.localpart(rcpt) .. ".dnsbl.test"
  local txt, err = postern.dns(name, "TXT")
  if not txt then return postern.TEMPFAIL("4.4.3", "dns: " .. err) end
  if #txt > 0 then
    local a = postern.dns(name)                 -- A by default
    local mx = postern.dns("dnsbl.test", "MX")
    return postern.REJECT("5.7.1", "listed: " .. txt[1] .. " / " .. a[1] .. " / " .. mx[1])
  end
end)
""")
    g = gw(sink, ["lua:" + script], dns_server=dns.address(), lua_threads="1", dns_timeout="1s",
           lua_time_limit="3s")
    slow = {}

    def stuck():
        # the client also sends NOOP while the session waits: the input it
        # does not want yet is taken out of epoll when it arrives (lazily),
        # never spun on, and read once the RCPT is answered
        t0 = time.time()
        c = Client(g.host)
        c.cmd("EHLO client.test")
        c.cmd("MAIL FROM:<a@src.test>")
        c.send("RCPT TO:<slow@example.test>\r\n")
        time.sleep(0.3)
        c.send("NOOP\r\n")
        slow["reply"] = c.reply()
        slow["took"] = time.time() - t0
        slow["noop"] = c.reply()
        c.close()
    th = threading.Thread(target=stuck)
    th.start()
    time.sleep(0.5)                             # its lookup is out and unanswered now
    t0 = time.time()
    assert rcpt_reply(g, "listed@example.test") == \
        "550 5.7.1 listed: spam sourcesince 2026 / 127.0.0.2 / 10 mx.dnsbl.test"
    assert rcpt_reply(g, "clean@example.test").startswith("250")      # no such name: {}
    assert time.time() - t0 < 2, "the other sessions waited for the stuck lookup"
    assert "reply" not in slow                  # still waiting meanwhile
    cpu = g.cpu_seconds()
    time.sleep(0.25)
    assert "reply" not in slow
    spent = g.cpu_seconds() - cpu
    assert spent < 0.1, "posternd spent %.2f s of CPU in 0.25 s while a session waited with input" % spent
    th.join(20)
    assert slow["noop"] == "250 2.0.0 Ok", slow
    assert slow["reply"] == "451 4.4.3 dns: DNS lookup failed", slow     # dns_timeout: nil, err
    assert 0.8 < slow["took"] < 3, slow
    g.stop()


def test_every_verdict_from_lua():
    sink = Sink(addr(2))
    g = gw(sink, ["lua:%s/verdicts.lua" % LUA, "probe"], start=False,
           **{"probe.rule": "rcpt REJECT * 550 5.7.1 probe rejects"})
    g.set(plugin_dir=os.path.join(BUILD, "test-plugins"))
    g.start()
    assert rcpt_reply(g, "reject@example.test") == "550 5.7.1 lua says no"
    assert rcpt_reply(g, "custom@example.test") == "551 5.1.1 no such user here"
    assert rcpt_reply(g, "tempfail@example.test") == "451 4.7.1 lua says later"
    assert rcpt_reply(g, "accept@example.test").startswith("250")       # ACCEPT: probe never runs
    assert rcpt_reply(g, "other@example.test") == "550 5.7.1 probe rejects"   # Lua continued, probe decided
    assert rcpt_reply(g, "bad@example.test").startswith("451 4.3.0")    # not a verdict: tempfail
    g.stop()
    g = gw(sink, ["lua:%s/verdicts.lua" % LUA])
    assert send(g, rcpts=("accept@example.test",), headers="Subject: reject\r\n") == \
        "550 5.7.1 content refused by lua"
    assert "queued as" in send(g, rcpts=("accept@example.test",), headers="Subject: discard\r\n")
    qid = queue_id(send(g, rcpts=("accept@example.test",), headers="Subject: quarantine\r\n"))
    wait_for(lambda: "lua quarantine" in postern(g, "queue", "list").stdout, 5, "quarantine in queue list")
    assert "queued as" in send(g, rcpts=("accept@example.test",), headers="Subject: fine\r\n")
    sink.wait_count(1)
    time.sleep(0.3)
    assert sink.count() == 1 and g.queue_files() == [qid]
    g.stop()


def test_sandbox_refuses_every_forbidden_call():
    sink = Sink(addr(2))
    # one Lua thread, so the stash and its later use meet the same Lua state
    g = gw(sink, ["lua:%s/sandbox.lua" % LUA], lua_instruction_limit="200000", lua_memory_limit="8M",
           lua_threads="1")
    forbidden = {"os_execute": "field 'execute'", "io_open": "global 'io'", "loadfile": "global 'loadfile'",
                 "dofile": "global 'dofile'", "load": "global 'load'", "require_path": "not a plain module name",
                 "require_missing": "no_such_module.lua", "getenv": "field 'getenv'", "debug": "global 'debug'",
                 "package": "global 'package'"}
    for name, why in forbidden.items():
        rep = rcpt_reply(g, name + "@example.test")
        assert rep.startswith("451 4.3.0"), (name, rep)
        assert why in g.log(), (name, why)
        assert re.search(r"lua: .*sandbox\.lua:\d+: ", g.log()), "script:line in the log"
    assert not os.path.exists("/tmp/postern-sandbox-escape")
    # a handle kept past its handler is dead
    assert rcpt_reply(g, "stash@example.test").startswith("250")
    assert rcpt_reply(g, "use_stash@example.test").startswith("451 4.3.0")
    assert "transaction handle used outside its handler" in g.log()
    # runtime errors carry script:line too
    assert rcpt_reply(g, "error@example.test").startswith("451 4.3.0")
    assert re.search(r"sandbox\.lua:\d+: a policy bug", g.log())
    g.stop()


def test_runaway_loop_and_memory_limit_tempfail_and_the_daemon_keeps_serving():
    sink = Sink(addr(2))
    g = gw(sink, ["lua:%s/sandbox.lua" % LUA], lua_instruction_limit="2000000", lua_memory_limit="8M")
    t0 = time.time()
    assert rcpt_reply(g, "loop@example.test").startswith("451 4.3.0")
    assert time.time() - t0 < 5
    assert "instruction limit exceeded" in g.log(), g.log()
    assert rcpt_reply(g, "memory@example.test").startswith("451 4.3.0")
    assert "not enough memory" in g.log()
    # other sessions and the next transactions are fine
    assert "queued as" in send(g)
    sink.wait_count(1)
    g.stop()
    g = gw(sink, ["lua:%s/sandbox.lua" % LUA], lua_time_limit="1s")     # default instruction budget: 10M
    t0 = time.time()
    rep = rcpt_reply(g, "loop@example.test")
    assert rep.startswith("451 4.3.0") and time.time() - t0 < 5, rep
    g.stop()


def test_a_busy_script_does_not_stall_other_sessions():
    import threading
    sink = Sink(addr(2))
    # a loop that runs for ~2 s before its time limit ends it
    g = gw(sink, ["lua:%s/sandbox.lua" % LUA], lua_instruction_limit="2000000000", lua_time_limit="2s")
    result = {}
    t = threading.Thread(target=lambda: result.update(rep=rcpt_reply(g, "loop@example.test")))
    t.start()
    time.sleep(0.3)                      # the loop is running now
    t0 = time.time()
    c = Client(g.host)
    assert c.cmd("EHLO other.test").startswith("250")
    assert c.cmd("NOOP") == "250 2.0.0 Ok"
    latency = time.time() - t0
    c.close()
    assert "queued as" in send(g, rcpts=("fine@example.test",))
    served = time.time() - t0
    t.join(10)
    assert latency < 0.5, "another session waited %.2fs behind a busy script" % latency
    assert served < 1.5, "a whole transaction took %.2fs beside a busy script" % served
    assert result["rep"].startswith("451 4.3.0") and "time limit exceeded" in g.log()
    g.stop()


def test_reload_keeps_the_old_set_on_a_syntax_error():
    sink = Sink(addr(2))
    d = script_dir()
    path = write(os.path.join(d, "policy.lua"),
                 'postern.on("rcpt", function(tx, r) return postern.REJECT("5.7.1", "version one") end)\n')
    g = gw(sink, ["lua:" + path])
    assert rcpt_reply(g, "x@example.test") == "550 5.7.1 version one"
    write(path, 'postern.on("rcpt", function(tx, r)\n  return postern.REJECT("5.7.1", "version two"\nend)\n')
    r = postern(g, "check-config")
    assert r.returncode == 1 and re.search(r"policy\.lua:3: .*expected", r.stderr), r.stderr
    c = Client(g.host)          # a session open across the reload keeps working
    c.cmd("EHLO client.test")
    g.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused, the running configuration stays" in g.log(), 5, "reload failure")
    assert "policy.lua:3:" in g.log()
    assert rcpt_reply(g, "x@example.test") == "550 5.7.1 version one"
    write(path, 'postern.on("rcpt", function(tx, r) return postern.REJECT("5.7.1", "version two") end)\n')
    g.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration generation 2 in use" in g.log(), 5, "reload")
    assert rcpt_reply(g, "x@example.test") == "550 5.7.1 version two"
    c.cmd("MAIL FROM:<a@src.test>")
    assert c.cmd("RCPT TO:<y@example.test>") == "550 5.7.1 version two"
    c.close()
    g.stop()


def test_declared_options_catch_a_misspelt_key_at_start_and_at_reload():
    """postern.options{...}: an undeclared option in the config (a typo), a
    missing required one or a value of the wrong type stops start-up, -t and
    a reload, instead of tempfailing every message."""
    sink = Sink(addr(2))
    table = write(os.path.join(script_dir(), "departments"), "sales smtp:[%s]:2600\n" % addr(3))
    script = "lua:%s/route_departments.lua" % POLICIES
    good = {"route_departments.domain": "example.test", "route_departments.table": "file:" + table}
    for conf, why in (({"route_departments.domain": "example.test", "route_departments.tabel": "file:" + table},
                       "option 'route_departments.tabel' is not one the script declares"),
                      ({"route_departments.domain": "example.test"}, "option 'route_departments.table' (file) is required"),
                      ({**good, "route_departments.table": "file:/nonexistent"}, "expected file"),
                      ({"rate_limit.max": "lots"}, "option 'rate_limit.max = lots': expected number")):
        scripts = ["lua:%s/rate_limit.lua" % POLICIES] if "rate_limit.max" in conf else [script]
        g = gw(sink, scripts, start=False, **conf)
        for cmd in ([os.path.join(BUILD, "posternd"), "-c", g.conf, "-t"],
                    [os.path.join(BUILD, "postern"), "-c", g.conf, "check-config"],
                    [os.path.join(BUILD, "posternd"), "-c", g.conf]):
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            assert r.returncode == 1 and why in r.stderr, (cmd, conf, r.stderr)
    g = gw(sink, [script], **good)
    g.set(**{"route_departments.table": None, "route_departments.tabel": "file:" + table})
    r = postern(g, "reload")
    assert r.returncode == 1 and "route_departments.tabel" in r.stderr, r.stderr
    assert "queued as" in send(g, rcpts=("bob@example.test",))     # the running version goes on
    g.stop()
    # postern.option() of an undeclared key is an error too, and "warning" is a log level
    d = script_dir()
    path = write(os.path.join(d, "strict.lua"), 'postern.options{ limit = "number?" }\n'
                 'postern.on("rcpt", function(tx, r)\n'
                 '  postern.log("warning", "checking " .. r)\n'
                 '  if r:find("^typo") then return postern.option("limt") end\n'
                 'end)\n')
    g2 = gw(sink, ["lua:" + path])
    assert rcpt_reply(g2, "ok@example.test").startswith("250")
    assert re.search(r"warning: S\d+: lua: %s:3: checking ok@example.test" % re.escape(path), g2.log()), g2.log()
    assert rcpt_reply(g2, "typo@example.test").startswith("451 4.3.0")
    assert "'limt' is not declared in postern.options" in g2.log()
    g2.stop()


def test_broken_script_fails_start_up_with_script_line():
    sink = Sink(addr(2))
    d = script_dir()
    path = write(os.path.join(d, "broken.lua"), "\n\nthis is not lua\n")
    g = gw(sink, ["lua:" + path], start=False)
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf, "-t"], capture_output=True, text=True)
    assert r.returncode == 1 and "broken.lua:3:" in r.stderr, r.stderr


# ---- the example policies in policies/ ----------------------------------

def test_policy_route_departments():
    default, sales, hr = Sink(addr(2)), Sink(addr(3), port=2600), Sink(addr(4), port=2601)
    d = script_dir()
    table = write(os.path.join(d, "departments"),
                  "sales smtp:[%s]:2600\nhr smtp:[%s]:2601\n" % (addr(3), addr(4)))
    g = gw(default, ["lua:%s/route_departments.lua" % POLICIES], **{
        "route_departments.domain": "example.test", "route_departments.table": "file:" + table})
    send(g, rcpts=("sales-eu@example.test", "hr@example.test", "ceo@example.test", "sales@other.test"))
    assert sink_rcpts(sales.wait_count(1)[0]) == [b"sales-eu@example.test"]
    assert sink_rcpts(hr.wait_count(1)[0]) == [b"hr@example.test"]
    assert sorted(sink_rcpts(default.wait_count(1)[0])) == [b"ceo@example.test", b"sales@other.test"]
    g.stop()


MIME = ("MIME-Version: 1.0\r\nSubject: {subj}\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n",
        "--b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b1\r\n"
        "Content-Type: application/octet-stream; name=\"{name}\"\r\n"
        "Content-Disposition: attachment; filename=\"{name}\"\r\n\r\nAAAA\r\n--b1--\r\n")


def test_policy_quarantine_executables():
    sink = Sink(addr(2))
    g = gw(sink, ["lua:%s/quarantine_executables.lua" % POLICIES])
    qid = queue_id(send(g, headers=MIME[0].format(subj="exe"), body=MIME[1].format(name="invoice.PDF.exe")))
    send(g, headers=MIME[0].format(subj="pdf"), body=MIME[1].format(name="invoice.pdf"))
    m = sink.wait_count(1)[0]
    assert b"Subject: pdf" in m
    line = [l for l in postern(g, "queue", "list").stdout.splitlines() if l.startswith(qid)][0]
    assert "hold" in line and "executable attachment invoice.PDF.exe" in line, line
    g.stop()


def test_policy_rate_limit():
    sink = Sink(addr(2))
    g = gw(sink, ["lua:%s/rate_limit.lua" % POLICIES], **{"rate_limit.max": "3", "rate_limit.window": "60"})
    replies = [send(g, sender="bulk@src.test") for _ in range(5)]
    assert all("queued as" in r for r in replies[:3]), replies
    assert all(r.startswith("450 4.7.1 Too many messages from bulk@src.test") for r in replies[3:]), replies
    assert "queued as" in send(g, sender="quiet@src.test")      # per sender
    sink.wait_count(4)
    g.stop()


def test_policy_journal_domain():
    sink = Sink(addr(2))
    d = script_dir()
    adir = os.path.join(d, "archive")
    os.makedirs(adir)
    os.chmod(adir, 0o777)
    g = gw(sink, ["lua:%s/journal_domain.lua" % POLICIES, "archive"], **{
        "journal_domain.domain": "legal.example.test", "archive.dir": adir, "archive.mode": "requested"})
    q1 = queue_id(send(g, rcpts=("counsel@legal.example.test",)))
    send(g, rcpts=("someone@example.test",))
    q3 = queue_id(send(g, rcpts=("x@example.test",), sender="partner@legal.example.test"))
    sink.wait_count(3)
    names = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(adir, "*", "*.eml")))
    assert names == sorted([q1, q3]), names
    assert postern(g, "archive", "verify").returncode == 0
    g.stop()


def test_policy_disclaimer_on_outbound_plain_text():
    sink = Sink(addr(2))
    g = gw(sink, ["lua:%s/disclaimer.lua" % POLICIES], trusted_networks=addr(5) + "/32",
           **{"disclaimer.text": "Confidential: Postern test."})
    send(g, rcpts=("out@elsewhere.test",), source=addr(5), body="plain text\r\n")           # outbound
    send(g, rcpts=("in@example.test",), source=addr(9), body="inbound text\r\n")             # inbound
    send(g, rcpts=("out2@elsewhere.test",), source=addr(5), headers=MIME[0].format(subj="mime"),
         body=MIME[1].format(name="a.txt"))
    msgs = sink.wait_count(3)
    by_rcpt = {sink_rcpts(m)[0]: strip_sink_headers(m) for m in msgs}
    assert by_rcpt[b"out@elsewhere.test"].endswith(b"plain text\n-- \nConfidential: Postern test.\n\n")
    assert b"Confidential" not in by_rcpt[b"in@example.test"]
    assert b"Confidential" not in by_rcpt[b"out2@elsewhere.test"]
    assert "disclaimer: not plain text" in g.log()
    g.stop()


def test_policy_allow_list():
    sink = Sink(addr(2))
    d = script_dir()
    allowed = write(os.path.join(d, "allowed"), "ok@example.test\nAlso-Ok@Example.test\n")
    g = gw(sink, ["lua:%s/allow_list.lua" % POLICIES], **{"allow_list.file": "file:" + allowed})
    assert rcpt_reply(g, "ok@example.test").startswith("250")
    assert rcpt_reply(g, "also-ok@example.test").startswith("250")
    assert rcpt_reply(g, "stranger@example.test") == \
        "550 5.1.1 <stranger@example.test>: recipient not on the allow-list"
    g.stop()


def test_lookup_reads_only_tables_the_script_was_given():
    sink = Sink(addr(2))
    d = script_dir()
    write(os.path.join(d, "local.table"), "near.test yes\n")
    other = write(os.path.join(script_dir(), "given.table"), "given.test yes\n")
    write(os.path.join(d, "lookup.lua"),
          'postern.on("rcpt", function(tx, rcpt)\n'
          '  local dom = rcpt:match("@(.*)$")\n'
          '  if dom == "shadow.test" then postern.lookup("file:/etc/shadow", "root") end\n'
          '  local hit = postern.lookup("file:%s/local.table", dom)\n'
          '    or postern.lookup(postern.option("table"), dom)\n'
          '  if not hit then return postern.REJECT("5.1.1", "not listed") end\n'
          'end)\n' % d)
    g = gw(sink, ["lua:%s/lookup.lua" % d], **{"lookup.table": "file:" + other})
    assert rcpt_reply(g, "x@near.test").startswith("250")
    assert rcpt_reply(g, "x@given.test").startswith("250")
    assert rcpt_reply(g, "x@else.test").startswith("550 5.1.1 not listed")
    assert rcpt_reply(g, "x@shadow.test").startswith("451")
    assert "postern.lookup: /etc/shadow is neither one of this script's options nor in its directory" in g.log()
    g.stop()


def test_limits_cannot_be_caught_finalizers_cannot_hang_and_metatables_are_locked():
    sink = Sink(addr(2))
    d = script_dir()
    write(os.path.join(d, "attack.lua"),
          'postern.on("rcpt", function(tx, rcpt)\n'
          '  local lp = rcpt:match("^(.-)@")\n'
          '  if lp == "pcall" then while true do pcall(function() while true do end end) end end\n'
          '  if lp == "xpcall" then while true do xpcall(function() while true do end end,\n'
          '    function() while true do end end) end end\n'
          '  if lp == "meta" then\n'
          '    local mt = getmetatable(tx)\n'
          '    if mt ~= "locked" then return postern.REJECT("5.7.1", "metatable open") end\n'
          '    local ok = pcall(setmetatable, tx, {})\n'
          '    if ok then return postern.REJECT("5.7.1", "metatable replaced") end\n'
          '  end\n'
          '  if lp == "gc" then\n'
          '    local ok, err = pcall(setmetatable, {}, {__gc = function() while true do end end})\n'
          '    if ok then return postern.REJECT("5.7.1", "a looping finalizer was allowed") end\n'
          '    postern.log("info", "gc refused: " .. err)\n'
          '    local t = {} for i = 1, 1e9 do t[i] = string.rep("x", 4096) .. i end\n'
          '  end\n'
          'end)\n')
    g = gw(sink, ["lua:%s/attack.lua" % d], lua_time_limit="1s", lua_instruction_limit="2000000000",
           lua_memory_limit="16M")
    for lp in ("pcall", "xpcall"):
        result = {}
        t = threading.Thread(target=lambda: result.update(rep=rcpt_reply(g, lp + "@example.test")))
        t0 = time.time()
        t.start()
        time.sleep(0.3)
        t1 = time.time()
        other = Client(g.host)                  # served while the script runs
        assert other.banner.startswith("220") and time.time() - t1 < 0.2, time.time() - t1
        other.close()
        t.join(10)
        assert result["rep"].startswith("451 4.3.0"), (lp, result)
        assert time.time() - t0 < 1 + 1.5, (lp, time.time() - t0)
    assert rcpt_reply(g, "meta@example.test").startswith("250")
    assert rcpt_reply(g, "gc@example.test").startswith("451 4.3.0")
    assert "gc refused: " in g.log() and "__gc is not allowed" in g.log()
    # a reload closes the old state (its looping finalizer included), and SIGTERM still stops the daemon
    g.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload" in g.log().lower(), 5, "the reload")
    assert rcpt_reply(g, "meta@example.test").startswith("250")
    t0 = time.time()
    g.stop()
    assert time.time() - t0 < 10


def test_one_long_c_call_holds_no_other_session_and_is_abandoned():
    # string.match on "a" + 150,000 spaces + "b" with "^%s*(.-)%s*$" backtracks
    # quadratically inside one C call, which no count hook can interrupt
    sink = Sink(addr(2))
    d = script_dir()
    write(os.path.join(d, "slow.lua"),
          'postern.on("rcpt", function(tx, rcpt)\n'
          '  if rcpt:match("^slow") then\n'
          '    local s = "a" .. string.rep(" ", 150000) .. "b"\n'
          '    tx.vars.matched = s:match("^%s*(.-)%s*$") ~= nil\n'
          '  end\n'
          '  tx.vars.seen = true\n'
          'end)\n')
    g = gw(sink, ["lua:%s/slow.lua" % d], lua_time_limit="1s")
    for round_ in range(2):          # the second finds the first's thread still stuck
        result = {}
        t = threading.Thread(target=lambda: result.update(rep=rcpt_reply(g, "slow%d@example.test" % round_)))
        t0 = time.time()
        t.start()
        time.sleep(0.3)
        t1 = time.time()
        other = Client(g.host)                  # a new session, and its own Lua call at RCPT
        assert other.banner.startswith("220") and time.time() - t1 < 0.2, time.time() - t1
        other.close()
        assert "queued as" in send(g, rcpts=("fine%d@example.test" % round_,))
        assert time.time() - t1 < 0.5, "a transaction with a Lua link waited %.2fs" % (time.time() - t1)
        t.join(10)
        assert result["rep"].startswith("451 4.3.0"), result
        assert time.time() - t0 < 1 + 1 + 0.5, time.time() - t0
    sink.wait_count(2)
    log = g.log()
    assert "did not finish within lua_time_limit + 1 s" in log, log
    assert "set aside" in log
    t0 = time.time()
    g.stop()                                    # SIGTERM with two threads still inside the match
    assert time.time() - t0 < 5, time.time() - t0
    assert "still inside a C call at exit" in g.log()


def test_tx_variables_are_bounded_outside_the_lua_memory_limit():
    sink = Sink(addr(2))
    d = script_dir()
    write(os.path.join(d, "vars.lua"),
          'postern.on("rcpt", function(tx, rcpt)\n'
          '  local big = string.rep("x", 1024 * 1024)\n'
          '  for i = 1, 1000 do tx.vars["k" .. i] = big end\n'
          'end)\n')
    g = gw(sink, ["lua:%s/vars.lua" % d], lua_memory_limit="16M")
    for _ in range(3):
        assert rcpt_reply(g, "x@example.test").startswith("451 4.3.0")
    assert "tx variables: out of memory or over the limit" in g.log()
    rss_kb = g.rss_kb()
    assert rss_kb < 400 * 1024, "%d kB resident after 3 x 1,000 x 1 MB variables" % rss_kb
    g.stop()


def until_the_loop_answers(g):
    """Messages until a Lua call is answered on the loop (its state is built
    on a Lua thread first); how many were sent, at most 20."""
    sent = 0
    while not lua_calls(g)["loop"]:
        assert sent < 20, lua_calls(g)
        assert "queued as" in send(g)
        sent += 1
    return sent


def test_short_calls_answer_on_the_loop_and_the_rest_move_to_a_lua_thread():
    # lua_loop_first: the loop runs a call until it would do anything long
    # or change something; then a Lua thread goes on with it (moved), or,
    # where it could not yield (inside __tostring under tostring()), runs it
    # again from the start (restarted). Each outcome checked by its metric
    # and by what the script did.
    sink = Sink(addr(2))
    d = script_dir()
    write(os.path.join(d, "fast.lua"),
          'local slow = setmetatable({}, {__tostring = function()\n'
          '  local x = 0\n'
          '  for i = 1, 200000 do x = x + i end\n'
          '  return tostring(x)\n'
          'end})\n'
          'postern.on("mail", function(tx, from) local _ = tx:sender() end)\n'
          'postern.on("rcpt", function(tx, rcpt)\n'
          '  local who = rcpt:sub(1, 4)\n'
          '  if who == "tag@" then tx.vars.tag = "v" end\n'
          '  if who == "str@" then tx.vars.s = tostring(slow) end\n'
          '  if who == "spn@" then local n = 0 for i = 1, 100000 do n = n + 1 end tx.vars.spin = n end\n'
          'end)\n'
          'postern.on("eom", function(tx)\n'
          '  for _, k in ipairs({"tag", "s", "spin"}) do\n'
          '    if tx.vars[k] then tx:add_header("X-" .. k, tostring(tx.vars[k])) end\n'
          '  end\n'
          'end)\n')
    g = gw(sink, ["lua:%s/fast.lua" % d], http_listen="%s:9025" % addr(1))
    sent = until_the_loop_answers(g)

    def one(rcpt):
        before = lua_calls(g)
        assert "queued as" in send(g, rcpts=(rcpt,))
        after = lua_calls(g)
        return {w: after[w] - before[w] for w in after}

    for rcpt, where in (("plain", {"loop": 3, "moved": 0, "restarted": 0, "thread": 0}),
                        ("tag", {"loop": 1, "moved": 2, "restarted": 0, "thread": 0}),
                        ("str", {"loop": 1, "moved": 1, "restarted": 1, "thread": 0}),
                        ("spn", {"loop": 1, "moved": 2, "restarted": 0, "thread": 0})):
        got = one(rcpt + "@example.test")
        assert got == where, (rcpt, got)
    sink.wait_count(sent + 4)
    by_rcpt = {re.search(rb"X-Rcpt-Args: <([^>]+)>", m).group(1): m for m in sink.messages()}
    assert b"X-tag: v" in by_rcpt[b"tag@example.test"]
    assert b"X-s: 20000100000" in by_rcpt[b"str@example.test"]
    assert b"X-spin: 100000" in by_rcpt[b"spn@example.test"]
    assert b"X-tag" not in by_rcpt[b"plain@example.test"] and b"X-s:" not in by_rcpt[b"plain@example.test"]
    assert ": error:" not in g.log(), g.log()  # no script error: the restart is not one
    g.stop()
    # lua_loop_first = no: every call a trip to a Lua thread, the same results
    g = gw(sink, ["lua:%s/fast.lua" % d], http_listen="%s:9025" % addr(1), lua_loop_first="no")
    assert "queued as" in send(g, rcpts=("str@example.test",))
    assert lua_calls(g) == {"loop": 0, "moved": 0, "restarted": 0, "thread": 3}
    g.stop()


def test_a_long_c_call_that_starts_on_the_loop_leaves_it_first():
    # table.remove on a table whose __len says 2^40 loops inside one C call;
    # a handler that the loop starts must hand it to a Lua thread before
    # that call, so the loop (and every other session) goes on
    sink = Sink(addr(2))
    d = script_dir()
    write(os.path.join(d, "len.lua"),
          'postern.on("rcpt", function(tx, rcpt)\n'
          '  if rcpt:sub(1, 4) == "len@" then\n'
          '    table.remove(setmetatable({}, {__len = function() return 1 << 40 end}), 1)\n'
          '  end\n'
          'end)\n')
    g = gw(sink, ["lua:%s/len.lua" % d], lua_time_limit="1s", http_listen="%s:9025" % addr(1))
    until_the_loop_answers(g)
    result = {}
    t = threading.Thread(target=lambda: result.update(rep=rcpt_reply(g, "len@example.test")))
    t0 = time.time()
    t.start()
    time.sleep(0.3)
    t1 = time.time()
    assert "queued as" in send(g, rcpts=("fine@example.test",))
    assert time.time() - t1 < 0.5, "a transaction waited %.2fs behind a long C call" % (time.time() - t1)
    t.join(10)
    assert result["rep"].startswith("451 4.3.0"), result
    assert time.time() - t0 < 1 + 1 + 0.5, time.time() - t0
    assert lua_calls(g)["moved"] >= 1
    g.stop()


run_tests(globals())
