"""Metrics: http_listen serves Prometheus text at /metrics, checked by
promtool (Debian's prometheus package) and against a known load: messages
accepted and delivered, a plugin's reject by stage and link, a connection
refused by the per-client limit, fsyncs timed, the queue gauge back to 0."""
import urllib.error
import urllib.request
from harness import *

PLUGDIR = os.path.join(BUILD, "plugins")


def scrape(g):
    with urllib.request.urlopen("http://%s:9025/metrics" % g.host, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return r.read().decode()


def value(text, series):
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


def test_metrics_count_a_known_load_and_pass_promtool():
    sink = Sink(addr(2))
    g = Gateway(sink=sink, plugin_dir=PLUGDIR, plugins="size_limit", http_listen="%s:9025" % addr(1),
                max_sessions_per_client="1", **{"size_limit.max": "2k"}).start()
    for i in range(5):
        assert "queued as" in send_mail(g, headers="Subject: m%d\r\n" % i)
    assert send_mail(g, body="x" * 70 + "\r\n" * 1 + ("y" * 70 + "\r\n") * 60).startswith("552 5.3.4")
    # the per-client limit (127.0.0.1 is trusted, so from another address)
    held = Client(g.host, source=addr(40))
    refused = Client(g.host, source=addr(40))
    assert refused.banner.startswith("421 4.7.0")
    refused.close()
    held.close()
    sink.wait_count(5)
    deadline = time.time() + 5
    text = scrape(g)
    while value(text, "postern_queue_messages") != 0 and time.time() < deadline:
        time.sleep(0.2)
        text = scrape(g)
    assert value(text, "postern_messages_accepted_total") == 5, text
    assert value(text, 'postern_delivery_recipients_total{result="delivered"}') == 5, text
    assert value(text, 'postern_chain_verdicts_total{stage="eom",verdict="REJECT",link="size_limit"}') == 1, text
    assert value(text, 'postern_smtp_sessions_refused_total{reason="per_client_sessions"}') == 1, text
    assert value(text, "postern_smtp_sessions_total") >= 7, text
    assert value(text, "postern_spool_fsync_seconds_count") >= 10, text     # the file and the directory, each
    assert value(text, "postern_delivery_attempt_seconds_count") >= 1, text
    assert value(text, "postern_queue_messages") == 0, text
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    # nothing else is served, and nothing is accepted
    for method, path, code in (("GET", "/", 404), ("POST", "/metrics", 405)):
        req = urllib.request.Request("http://%s:9025%s" % (g.host, path), method=method,
                                     data=b"" if method == "POST" else None)
        try:
            urllib.request.urlopen(req, timeout=10)
            raise AssertionError("%s %s answered 200" % (method, path))
        except urllib.error.HTTPError as e:
            assert e.code == code, (method, path, e.code)
    g.stop()


run_tests(globals())
