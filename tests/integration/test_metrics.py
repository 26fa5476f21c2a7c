"""Metrics: http_listen serves Prometheus text at /metrics, checked by
promtool (Debian's prometheus package) and against a known load: messages
accepted and delivered, a plugin's reject by stage and link, a connection
refused by the per-client limit, fsyncs timed, the queue gauge back to 0."""
import json
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
    # five messages left the queue, each within a second or so of arriving
    assert value(text, "postern_queue_residence_seconds_count") == 5, text
    assert value(text, 'postern_queue_residence_seconds_bucket{le="5"}') == 5, text
    assert value(text, 'postern_delivery_recipients_by_route_total{route="transport",result="delivered"}') == 5, text
    # size_limit ran at mail and eom for every message: its time and calls
    assert value(text, 'postern_chain_link_calls_total{link="size_limit"}') >= 12, text
    assert 0 < value(text, 'postern_chain_link_seconds_total{link="size_limit"}') < 5, text
    assert value(text, "postern_config_generation") == 1, text
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


def test_queue_gauges_by_state_and_age_and_tls_policy_failures():
    """Deferred and held messages in the by-state and by-age gauges, and a
    delivery deferred because TLS was required but not offered."""
    table = readable_file("tls_policy", "secure.test encrypt\n")
    sink = Sink(addr(2))                      # no STARTTLS
    g = Gateway(sink=sink, http_listen="%s:9025" % addr(1), relay_domains="example.test, secure.test",
                tls_policy_table="file:" + table, retry_min="1h", retry_max="2h", max_queue_lifetime="1d").start()
    held = queue_id(send_mail(g, rcpts=("a@secure.test",)))
    queue_id(send_mail(g, rcpts=("b@secure.test",)))
    wait_for(lambda: g.log().count("status=deferred") >= 2, 10, "two deferrals")
    r = subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "queue", "hold", held], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    def gauges():
        t = scrape(g)
        return t, value(t, 'postern_queue_messages_by_state{state="hold"}'), \
            value(t, 'postern_queue_messages_by_state{state="deferred"}')
    wait_for(lambda: gauges()[1:] == (1, 1), 10, "the by-state gauges")
    text = gauges()[0]
    assert value(text, 'postern_queue_messages_by_age{age="5m"}') == 2, text
    assert value(text, 'postern_queue_messages_by_age{age="older"}') == 0, text
    assert value(text, 'postern_tls_policy_failures_total{level="encrypt",reason="starttls_not_offered"}') == 2, text
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    g.stop()


def test_a_real_prometheus_scrapes_posternd():
    prom = shutil.which("prometheus")
    if not prom:
        skip("prometheus is not installed")
    sink = Sink(addr(2))
    g = Gateway(sink=sink, http_listen="%s:9025" % addr(1)).start()
    for i in range(3):
        assert "queued as" in send_mail(g)
    sink.wait_count(3)
    d = tempfile.mkdtemp(prefix="prometheus-")
    os.chmod(d, 0o777)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    conf = os.path.join(d, "prometheus.yml")
    with open(conf, "w") as f:
        f.write("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: postern\n    static_configs:\n"
                "      - targets: ['%s:9025']\n" % addr(1))
    web = "%s:9090" % addr(3)
    p = subprocess.Popen([prom, "--config.file=" + conf, "--storage.tsdb.path=" + os.path.join(d, "data"),
                          "--web.listen-address=" + web], stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "log"), "w"))
    on_cleanup(lambda: terminate(p))

    def query(q):
        try:
            with urllib.request.urlopen("http://%s/api/v1/query?query=%s" % (web, q), timeout=5) as r:
                res = json.loads(r.read())["data"]["result"]
                return res[0]["value"][1] if res else None
        except (OSError, ValueError, KeyError):
            return None
    wait_for(lambda: query("postern_messages_accepted_total") == "3", 40, "prometheus to scrape the count")
    assert query('up{job="postern"}') == "1"
    assert query('postern_delivery_recipients_total{result="delivered"}') == "3"
    terminate(p)
    g.stop()


run_tests(globals())
