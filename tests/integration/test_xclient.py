"""XCLIENT (Postfix's extension): refused (550 5.7.0) outside
xclient_networks; from an allowed proxy, ADDR/NAME/HELO change what relay
control, plugins, Lua and the Received header see, LOGIN is what
tx:auth_user() returns, and the session restarts."""
from harness import *


def test_xclient_refused_from_an_untrusted_address():
    sink = Sink(addr(2))
    g = Gateway(sink=sink, xclient_networks=addr(9) + "/32").start()
    c = Client(g.host, source=addr(3))
    assert "XCLIENT" not in c.cmd("EHLO client.test")
    assert c.cmd("XCLIENT ADDR=192.0.2.1").startswith("550 5.7.0")
    # the session goes on as itself
    assert c.cmd("MAIL FROM:<a@src.test>").startswith("250")
    c.close()
    assert "XCLIENT refused from [%s]" % addr(3) in g.log()
    g.stop()


def test_xclient_addr_changes_relay_control_and_received():
    sink = Sink(addr(2))
    # the proxy itself (addr(3)) is trusted and may relay anywhere
    g = Gateway(sink=sink, trusted_networks=addr(3) + "/32", xclient_networks=addr(3) + "/32").start()
    c = Client(g.host, source=addr(3))
    assert "250-XCLIENT ADDR NAME PORT PROTO HELO LOGIN" in c.cmd("EHLO proxy.test")
    assert c.cmd("MAIL FROM:<a@src.test>").startswith("250")
    assert c.cmd("RCPT TO:<x@elsewhere.test>").startswith("250")          # trusted proxy: relays
    assert c.cmd("XCLIENT ADDR=192.0.2.1").startswith("503")              # not inside a transaction
    c.cmd("RSET")
    assert c.cmd("XCLIENT ADDR=192.0.2.1 NAME=client+2Eexample.test HELO=orig.test").startswith("220 gw.postern.test")
    assert c.cmd("MAIL FROM:<a@src.test>").startswith("503")              # the session restarted: EHLO first
    assert c.cmd("EHLO orig.test").startswith("250")
    assert c.cmd("MAIL FROM:<a@src.test>").startswith("250")
    rep = c.cmd("RCPT TO:<x@elsewhere.test>")
    assert rep.startswith("554 5.7.1") or rep.startswith("550 5.7.1"), rep   # 192.0.2.1 may not relay
    assert c.cmd("RCPT TO:<x@example.test>").startswith("250")
    assert c.cmd("DATA").startswith("354")
    c.send("Subject: via proxy\r\n\r\nbody\r\n")
    assert c.cmd(".").startswith("250")
    c.close()
    received, _ = our_received_and_rest(sink.wait_count(1)[0])
    assert received.startswith(b"Received: from orig.test (client.example.test [192.0.2.1])"), received
    assert "XCLIENT: client [%s] presents [192.0.2.1]" % addr(3) in g.log()
    assert c_bad_syntax(g) == "501"
    g.stop()


XCLIENT_VIEW_LUA = """
postern.on("connect", function(tx) tx.session.at_connect = tx:client_addr() end)
postern.on("eom", function(tx)
  tx:add_header("X-Seen", string.format("%s|%s|%s|%s", tx.session.at_connect, tx:client_addr(),
                                        tx:helo(), tostring(tx:auth_user())))
end)
"""


def test_xclient_client_and_login_reach_lua_and_plugins():
    sink = Sink(addr(2))
    d = tempfile.mkdtemp(prefix="xclient-lua-")
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    os.chmod(d, 0o755)
    with open(os.path.join(d, "view.lua"), "w") as f:
        f.write(XCLIENT_VIEW_LUA)
    g = Gateway(sink=sink, xclient_networks=addr(3) + "/32", plugins="lua:%s/view.lua, probe" % d,
                plugin_dir=os.path.join(BUILD, "test-plugins"),
                **{"probe.rule": "connect REJECT 192.0.2.66 554 5.7.1 probe refuses 192.0.2.66"}).start()
    c = Client(g.host, source=addr(3))
    c.cmd("EHLO proxy.test")
    # all or nothing: a bad attribute leaves NAME and LOGIN as they were
    assert c.cmd("XCLIENT NAME=evil.test LOGIN=mallory COLOR=blue").startswith("501")
    assert c.cmd("XCLIENT ADDR=192.0.2.1 LOGIN=alice").startswith("220")
    assert c.cmd("EHLO orig.test").startswith("250")
    assert c.cmd("MAIL FROM:<a@src.test>").startswith("250")
    assert c.cmd("RCPT TO:<x@example.test>").startswith("250")
    assert c.cmd("DATA").startswith("354")
    c.send("Subject: seen\r\n\r\nbody\r\n")
    assert c.cmd(".").startswith("250")
    # the plugin's CONNECT rule sees the next presented address
    rep = c.cmd("XCLIENT ADDR=192.0.2.66")
    assert rep.startswith("554 5.7.1 probe refuses 192.0.2.66"), rep
    c.close()
    m = sink.wait_count(1)[0]
    assert b"X-Seen: 192.0.2.1|192.0.2.1|orig.test|alice" in m, m[:600]
    received, _ = our_received_and_rest(m)
    assert b"[192.0.2.1])" in received and b"evil" not in received, received
    assert "presents [192.0.2.1] login=alice" in g.log()
    g.stop()


def c_bad_syntax(g):
    c = Client(g.host, source=addr(3))
    c.cmd("EHLO proxy.test")
    rep = c.cmd("XCLIENT ADDR=not-an-address")
    bad_name = c.cmd("XCLIENT COLOR=blue")
    c.close()
    assert bad_name.startswith("501"), bad_name
    return rep[:3]


run_tests(globals())
