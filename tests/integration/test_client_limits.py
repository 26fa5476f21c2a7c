"""Per-client limits: concurrent sessions from one address
(max_sessions_per_client) and new sessions per minute (client_connect_rate)
get 421 4.7.0 and are closed; other addresses and trusted_networks are not
affected."""
from harness import *


def banner(g, source):
    c = Client(g.host, source=source)
    return c, c.banner


def test_concurrent_sessions_per_client():
    sink = Sink(addr(2))
    g = Gateway(sink=sink, max_sessions_per_client="3").start()
    held = [banner(g, addr(3))[0] for _ in range(3)]
    c, b = banner(g, addr(3))
    assert b.startswith("421 4.7.0 Too many connections from your address"), b
    assert c.closed()
    other, b = banner(g, addr(4))                    # another client is served
    assert b.startswith("220"), b
    trusted = [banner(g, "127.0.0.1") for _ in range(5)]   # trusted_networks are exempt
    assert all(b.startswith("220") for _, b in trusted)
    held[0].cmd("QUIT")
    held[0].close()
    wait_for(lambda: banner(g, addr(3))[1].startswith("220"), 5, "a free slot after one session ended")
    assert "refused connection from [%s]: 421 4.7.0 Too many connections" % addr(3) in g.log()
    g.stop()


def test_connection_rate_per_client():
    sink = Sink(addr(2))
    g = Gateway(sink=sink, client_connect_rate="5").start()
    replies = []
    for _ in range(7):
        c, b = banner(g, addr(3))
        replies.append(b[:3])
        c.close()
    assert replies[:5] == ["220"] * 5 and replies[5:] == ["421"] * 2, replies
    assert banner(g, addr(4))[1].startswith("220")
    assert "Connection rate limit exceeded" in g.log()
    g.stop()


def test_limits_are_checked_in_config():
    bad = Gateway(max_sessions_per_client="-1", default_transport="smtp:[127.0.0.1]:9")
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", bad.conf, "-t"], capture_output=True, text=True)
    assert r.returncode != 0 and "max_sessions_per_client" in r.stderr, r.stderr


run_tests(globals())
