"""Fleet views (issue 39): one tracking search across nodes. Node A lists
node B (its console over HTTPS, B's token), a node that is down, and B
again with a wrong token; `postern track --fleet` and A's console
(/api/track?fleet=1 and /track?fleet=1) show A's and B's records merged,
each with its node, and name the nodes that did not answer. B answers
only a request with its token, and logs it. Two nodes that take the
connection and never answer are asked at the same time as the others:
the search waits for one timeout, not one each."""
from harness import *

TOKEN = "b-token-0123456789abcdef"


def test_one_search_answers_across_the_fleet():
    sink = Sink(addr(2))
    certs = ip_cert(addr(3))
    ca = os.path.join(certs, "ca.crt")
    b = Gateway(host=addr(3), sink=sink, hostname="b.postern.test", http_listen="%s:9443" % addr(3),
                tls_cert=os.path.join(certs, "hook.crt"), tls_key=os.path.join(certs, "hook.key"),
                http_users=console_settings()["http_users"], fleet_token=readable_file("token", TOKEN + "\n")).start()
    nodes = table_file("node b https://%s:9443 token=%s ca=%s\n"
                       "node gone https://%s:9443 token=%s ca=%s\n"
                       "node wrong https://%s:9443 token=%s ca=%s\n" %
                       (addr(3), readable_file("token", TOKEN), ca, addr(4), readable_file("token", TOKEN), ca,
                        addr(3), readable_file("token", "not-the-right-token-at-all"), ca), name="nodes")
    a = Gateway(sink=sink, hostname="a.postern.test", fleet_nodes=nodes, **console_settings()).start()
    qa = queue_id(send_mail(a, sender="fleet@src.test", rcpts=("one@example.test",)))
    qb = queue_id(send_mail(b, sender="fleet@src.test", rcpts=("two@example.test",)))
    sink.wait_count(2)
    time.sleep(0.6)                  # the tracking stores' writers (every 200 ms)
    r = subprocess.run([os.path.join(BUILD, "postern"), "-c", a.conf, "track", "--fleet", "--from", "fleet@src.test"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r
    assert re.search(r"^\[a\.postern\.test\] .*%s .*delivered" % qa, r.stdout, re.M), r.stdout
    assert re.search(r"^\[b\] .*%s .*delivered" % qb, r.stdout, re.M), r.stdout
    assert "from 4 node(s)" in r.stdout
    assert "node gone: connect to %s:9443" % addr(4) in r.stderr, r.stderr
    assert "node wrong: answered 401" in r.stderr, r.stderr
    j = subprocess.run([os.path.join(BUILD, "postern"), "-c", a.conf, "track", "--fleet", "--json", "--id", qb],
                       capture_output=True, text=True, timeout=60)
    timeline = json.loads(j.stdout)
    assert {x["node"] for x in timeline} == {"b"} and [x["status"] for x in timeline] == ["queued", "delivered"]
    # A's console: the API and the page
    w = Web(a)
    w.login("admin", "correct horse battery")
    status, _, text = w.request("GET", "/api/track?fleet=1&from=fleet%40src.test")
    merged = json.loads(text)
    assert status == 200 and {(x.get("node"), x["queue_id"]) for x in merged["records"]} == {(None, qa), ("b", qb)}
    assert any(e.startswith("node gone:") for e in merged["errors"]) and \
        any(e.startswith("node wrong: answered 401") for e in merged["errors"]), merged["errors"]
    status, _, page = w.request("GET", "/track?fleet=1&from=fleet%40src.test")
    assert status == 200 and qa in page and qb in page and "<td>b</td>" in page and "node gone:" in page
    # B: only with its token, and logged
    assert re.search(r"console: fleet peer from \[127\.[0-9.]+\] searches the tracking store", b.log()), b.log()[-2000:]
    import http.client
    import ssl
    c = http.client.HTTPSConnection(addr(3), 9443, context=ssl._create_unverified_context(), timeout=10)
    c.request("GET", "/api/track", headers={"Authorization": "Bearer nope-nope-nope-nope"})
    assert c.getresponse().status == 401
    # every node at once: two silent ones cost one timeout (5 s), not one each
    silent = []
    for n in (5, 6):                 # they take the connection (the kernel does) and never say a word
        sock = socket.socket()
        sock.bind((addr(n), 9443))
        sock.listen(8)
        silent.append(sock)
        on_cleanup(sock.close)
    slow_nodes = table_file("node b https://%s:9443 token=%s ca=%s\nnode silent1 https://%s:9443 token=%s ca=%s\n"
                            "node silent2 https://%s:9443 token=%s ca=%s\n" %
                            (addr(3), readable_file("token", TOKEN), ca, addr(5), readable_file("token", TOKEN), ca,
                             addr(6), readable_file("token", TOKEN), ca), name="slow-nodes")
    slow_conf = readable_file("slow.conf", open(a.conf).read().replace(nodes, slow_nodes))
    t0 = time.time()
    r = subprocess.run([os.path.join(BUILD, "postern"), "-c", slow_conf, "track", "--fleet", "--from", "fleet@src.test"],
                       capture_output=True, text=True, timeout=60)
    took = time.time() - t0
    assert "node silent1:" in r.stderr and "node silent2:" in r.stderr and qb in r.stdout, r.stdout + r.stderr
    assert took < 8.5, "the silent nodes were waited for one after the other: %.1fs" % took
    a.stop()
    b.stop()


def test_fleet_table_errors_are_caught_at_start():
    tok = readable_file("token", TOKEN)
    for bad, why in (("node b http://x:1 token=%s\n" % tok, "must be https://"),
                     ("node b https://x:1\n", "expected: node NAME"),
                     ("node b https://x:1 token=/nonexistent\n", "token /nonexistent"),
                     ("node b https://x:1 token=%s\nnode b https://y:1 token=%s\n" % (tok, tok), "given twice")):
        g = Gateway(fleet_nodes=table_file(bad, name="nodes"))
        r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf, "-t"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode != 0 and why in r.stdout + r.stderr, (bad, r.stdout, r.stderr)
    g = Gateway(fleet_token=readable_file("token", "short"))
    r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf, "-t"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "at least 16 characters" in r.stdout + r.stderr, r


run_tests(globals())
