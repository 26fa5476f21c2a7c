"""postern-milter inside a real Postfix (started by the test with its own
config, queue and log directories; root only): a Lua policy's reject,
header changes and quarantine take effect in Postfix, Postfix's SASL login
(here from XCLIENT LOGIN) is tx:auth_user(), and a C plugin (header_checks)
runs in the same chain."""
from harness import *

PLUGDIR = os.path.join(BUILD, "plugins")
POLICY = '''
postern.on("rcpt", function(tx, rcpt)
  if rcpt:match("^blocked@") then return postern.REJECT("5.7.1", "blocked by the Lua policy") end
end)
postern.on("data", function(tx)
  local s = tx:header("Subject") or ""
  if s:find("reject me") then return postern.REJECT("5.7.3", "rejected by the Lua policy") end
  if s:find("quarantine me") then return postern.QUARANTINE("held by the Lua policy") end
end)
postern.on("eom", function(tx)
  tx:add_header("X-Postern-Policy", "checked by " .. tx:client_addr() .. " login " .. tostring(tx:auth_user()))
  tx:change_header("Subject", "[checked] " .. (tx:header("Subject") or ""))
  tx:delete_header("X-Internal")
  if (tx:body() or ""):find("REWRITE") then tx:replace_body("rewritten by the policy\\r\\n") end
end)
'''


class PosternMilter:
    def __init__(self, conf_path, port=8890):
        self.spec = "inet:%d@%s" % (port, addr(7))
        self.logpath = conf_path + ".milter.log"
        self.log = open(self.logpath, "w")
        self.proc = subprocess.Popen([os.path.join(BUILD, "postern-milter"), "-c", conf_path, "-p", self.spec],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        on_cleanup(self.stop)
        wait_for(lambda: port_open(addr(7), port) or self.proc.poll() is not None, 10, "postern-milter")
        assert self.proc.poll() is None, open(self.logpath).read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        text = open(self.logpath, errors="replace").read()
        assert "Sanitizer" not in text and "runtime error:" not in text, text[-3000:]


def setup():
    d = tempfile.mkdtemp(prefix="pmilter-")
    os.chmod(d, 0o755)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    script = os.path.join(d, "policy.lua")
    rules = os.path.join(d, "header_checks")
    with open(script, "w") as f:
        f.write(POLICY)
    with open(rules, "w") as f:
        f.write("/^X-Spam-Flag: YES/ REJECT spam flagged by header_checks\n")
    os.chmod(script, 0o644)
    os.chmod(rules, 0o644)
    sink = Sink(addr(2))
    # the posternd config the milter shares: only the chain and its options matter here
    g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="header_checks, lua:" + script,
                **{"header_checks.rules": rules})
    m = PosternMilter(g.conf)
    pf = Postfix(addr(6), 2525, "[%s]:%d" % (sink.host, sink.port),
                 main={"smtpd_milters": m.spec.replace("inet:8890@%s" % addr(7), "inet:%s:8890" % addr(7)),
                       "milter_default_action": "tempfail", "myhostname": "postfix.milter.test",
                       # XCLIENT LOGIN from the test client becomes Postfix's SASL login, {auth_authen}
                       "smtpd_sasl_auth_enable": "yes", "smtpd_authorized_xclient_hosts": addr(8)})
    return sink, m, pf


def test_lua_policy_in_postfix_via_postern_milter():
    if not Postfix.available():
        skip("needs root and postfix to run a private Postfix")
    sink, m, pf = setup()
    c = Client(addr(6), 2525)
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<a@src.test>")
    assert c.cmd("RCPT TO:<blocked@example.test>").startswith("550 5.7.1 blocked by the Lua policy")
    c.close()
    r = send_mail_to(addr(6), "Subject: please reject me\r\n")
    assert r.startswith("550 5.7.3 rejected by the Lua policy"), r
    r = send_mail_to(addr(6), "Subject: spam\r\nX-Spam-Flag: YES\r\n")
    assert r.startswith("550") and "spam flagged by header_checks" in r, r
    r = send_mail_to(addr(6), "Subject: hello\r\nX-Internal: secret\r\n", body="REWRITE this\r\n")
    assert r.startswith("250"), r
    msg = strip_sink_headers(sink.wait_count(1, timeout=30)[0])
    assert b"Subject: [checked] hello" in msg, msg[:1000]
    assert re.search(rb"^X-Postern-Policy: checked by 127\.0\.0\.1 login nil$", msg, re.M), msg[:1000]
    assert b"X-Internal" not in msg
    assert msg.rstrip(b"\n").endswith(b"rewritten by the policy"), msg[-300:]
    # a login Postfix knows (here XCLIENT LOGIN from an authorized host) is tx:auth_user()
    c = Client(addr(6), 2525, source=addr(8))
    c.cmd("EHLO client.test")
    assert c.cmd("XCLIENT LOGIN=alice").startswith("220"), "Postfix refused XCLIENT"
    r = send_mail_to(addr(6), "Subject: with login\r\n", client=c)
    assert r.startswith("250"), r
    msg = strip_sink_headers([m for m in sink.wait_count(2, timeout=30) if b"with login" in m][0])
    assert re.search(rb"^X-Postern-Policy: checked by " + re.escape(addr(8).encode()) + rb" login alice$", msg, re.M), msg[:1000]
    # quarantine: Postfix accepts and puts the message on hold
    r = send_mail_to(addr(6), "Subject: quarantine me\r\n")
    assert r.startswith("250"), r
    hold = os.path.join(pf.dir, "queue", "hold")
    wait_for(lambda: os.path.isdir(hold) and os.listdir(hold), 15, "a message in Postfix's hold queue")
    assert "milter-hold: END-OF-MESSAGE" in pf.log(), pf.log()[-2000:]
    time.sleep(0.5)
    assert sink.count() == 2


def send_mail_to(host, headers, body="body\r\n", client=None):
    c = client or Client(host, 2525)
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<a@src.test>")
    rep = c.cmd("RCPT TO:<x@example.test>")
    if not rep.startswith("250"):
        return rep
    c.cmd("DATA")
    c.send("From: <a@src.test>\r\n" + headers + "\r\n" + body)
    rep = c.cmd(".")
    c.close()
    return rep


def test_dns_timeout_bounds_a_plugin_lookup_in_the_milter():
    """postern-milter's lookups keep dns_timeout (1 s here, not libunbound's
    own 3-31 s): spf inside a real Postfix answers a sender whose SPF name
    is never answered with a temperror within about a second, and the next
    sender's lookup is answered at once."""
    if not Postfix.available():
        skip("needs root and postfix to run a private Postfix")
    dns = DnsServer(['fast.test. TXT "v=spf1 ip4:198.51.100.0/24 -all"'], drop=("slow.test",))
    sink = Sink(addr(12))
    g = Gateway(host=addr(11), sink=sink, plugin_dir=PLUGDIR, plugins="spf", dns_server=dns.address(),
                dns_timeout="1s")
    m = PosternMilter(g.conf, port=8891)
    Postfix(addr(16), 2525, "[%s]:%d" % (sink.host, sink.port),
            main={"smtpd_milters": "inet:%s:8891" % addr(7), "milter_default_action": "accept",
                  "myhostname": "postfix.dns.test", "smtpd_authorized_xclient_hosts": addr(18)})

    def mail_from(sender):
        c = Client(addr(16), 2525, source=addr(18))
        c.cmd("EHLO client.test")
        assert c.cmd("XCLIENT ADDR=198.51.100.7 NAME=client.test").startswith("220"), "Postfix refused XCLIENT"
        c.cmd("EHLO client.test")
        t0 = time.time()
        rep = c.cmd("MAIL FROM:<%s>" % sender)
        took = time.time() - t0
        c.close()
        return rep, took

    rep, took = mail_from("x@slow.test")
    assert rep.startswith("451 4.7.24 SPF temperror"), rep
    assert 0.8 < took < 3, took
    rep, took = mail_from("x@fast.test")
    assert rep.startswith("250") and took < 0.8, (rep, took)
    m.stop()
    log = open(m.logpath).read()
    assert "no answer within dns_timeout (1000 ms)" in log, log[-2000:]


run_tests(globals())
