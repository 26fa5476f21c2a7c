"""The event stream (issue 39): every kind of event of a known mix of mail
reaches a webhook (HTTPS, signed, started by the test), a Redis stream (a
private redis-server) and a RabbitMQ queue (a private rabbitmq-server,
publisher confirms) with the same IDs; a webhook down for a while gets
every event once it is back; after kill -9 with a slow webhook, every
accepted message's events arrive; and with the outbox full, mail still
flows while the lost events are counted."""
import hashlib
import hmac
import http.server
import ssl
import threading
from harness import *

SECRET = "s3cret-for-the-test"
MIX_TYPES = {"connection_refused", "rejected", "accepted", "quarantined", "delivered", "deferred", "bounced",
             "expired", "released", "deleted"}


class Webhook:
    """An HTTPS receiver on (host, port) that checks each POST's signature
    and keeps the events by path: .events[path] is a list, in arrival
    order. .delay makes it slow; stop() and start() take it down and up.
    It keeps connections open (HTTP/1.1) unless close_each, closes one
    idle for idle_timeout seconds, and counts connections (.conns) and
    those that resumed a TLS session (.resumed)."""

    def __init__(self, host, port, certs, close_each=False, idle_timeout=None):
        self.host, self.port, self.certs = host, port, certs
        self.close_each, self.idle_timeout = close_each, idle_timeout
        self.events, self.posts, self.bad, self.delay = {}, 0, 0, 0.0
        self.conns, self.resumed = 0, 0
        self.lock = threading.Lock()
        self.srv = None
        on_cleanup(self.stop)

    def start(self):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = outer.idle_timeout

            def setup(self):
                super().setup()
                with outer.lock:
                    outer.conns += 1
                    outer.resumed += bool(self.request.session_reused)

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                want = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                if outer.delay:
                    time.sleep(outer.delay)
                ok = self.headers.get("X-Postern-Signature") == want
                if ok:
                    batch = json.loads(body)
                    assert int(self.headers["X-Postern-Events"]) == len(batch)
                    with outer.lock:
                        outer.posts += 1
                        outer.events.setdefault(self.path, []).extend(batch)
                else:
                    outer.bad += 1
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", "0")
                if outer.close_each:
                    self.send_header("Connection", "close")
                self.end_headers()

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.srv = Server((self.host, self.port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(self.certs, "hook.crt"), os.path.join(self.certs, "hook.key"))
        self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.srv:
            self.srv.shutdown()
            self.srv.server_close()
            self.srv = None

    def got(self, path="/events"):
        with self.lock:
            return list(self.events.get(path, []))


def sinks_table(hook, extra=""):
    return table_file("webhook hook https://%s:%d/events secret=%s ca=%s batch=50 timeout=5s\n"
                      "webhook picky https://%s:%d/picky secret=%s ca=%s types=delivered,bounced\n%s" %
                      (hook.host, hook.port, readable_file("secret", SECRET + "\n"), os.path.join(hook.certs, "ca.crt"),
                       hook.host, hook.port, readable_file("secret", SECRET), os.path.join(hook.certs, "ca.crt"),
                       extra), name="sinks")


MIX_LUA = """postern.on("connect", function(tx)
  if tx:client_addr() == "%s" then return postern.REJECT("5.7.1", "not from there", 554) end
end)
postern.on("mail", function(tx)
  if tx:sender() == "refuse@src.test" then return postern.REJECT("5.7.1", "not this sender") end
end)
postern.on("eom", function(tx)
  local s = tx:sender()
  if s == "spam@src.test" then for _, r in ipairs(tx:recipients()) do tx:spam_quarantine(r, "spam (test)") end end
  if s:match("^hold") then return tx:quarantine("held by the test") end
end)
"""


def next_hop_reply(sender):
    return {"defer@src.test": "451 4.3.0 not now", "bounce@src.test": "550 5.1.1 no such user"}.get(
        sender, "250 2.1.0 Ok")


def redis_values(redis, key):
    """The "event" field of every entry of the stream."""
    r = subprocess.run(["redis-cli", "-h", redis.host, "-p", str(redis.port), "--raw", "XRANGE", key, "-", "+"],
                       capture_output=True, text=True, timeout=10).stdout.splitlines()
    return [r[i + 1] for i, line in enumerate(r) if line == "event" and i + 1 < len(r)]


def test_every_kind_of_event_reaches_the_webhook_and_the_stream():
    hook = Webhook(addr(6), 8443, ip_cert(addr(6))).start()
    redis = Redis(addr(5))
    rabbit = RabbitMQ(addr(8))
    rabbit.declare("postern.events")
    rabbit.declare("postern.batched")
    server = ScriptedSmtp(addr(2), 2526, mail_reply=next_hop_reply)
    script = readable_file("mix.lua", MIX_LUA % addr(7), prefix="lua-")
    sinks = ("redis stream maxlen=10000 batch=100\namqp broker %s\n"
             "amqp batched %s routing_key=postern.batched format=ndjson\n" % (rabbit.url(), rabbit.url()))
    g = Gateway(default_transport="smtp:[%s]:2526" % addr(2), plugins="lua:" + script, redis_server=redis.address(),
                event_sinks=sinks_table(hook, sinks), max_queue_lifetime="3s",
                hostname="gw1.postern.test", http_listen="%s:9025" % addr(1)).start()
    # the mix: a refused connection, a refused recipient, delivered, deferred then expired, bounced,
    # quarantined as spam, held then released, held then deleted
    c = Client(g.host, source=addr(7))
    assert c.banner.startswith("554"), c.banner
    c.close()
    assert send_mail(g, sender="refuse@src.test").startswith("550")
    qids = {s: queue_id(send_mail(g, sender=s)) for s in ("ok@src.test", "defer@src.test", "bounce@src.test",
                                                             "spam@src.test", "hold1@src.test", "hold2@src.test")}
    postern = lambda *a: subprocess.run([os.path.join(BUILD, "postern"), "-c", g.conf, "queue", *a],
                                        capture_output=True, text=True, timeout=30)
    assert postern("release", qids["hold1@src.test"]).returncode == 0
    assert postern("delete", qids["hold2@src.test"]).returncode == 0
    types = lambda: {e["type"] for e in hook.got()}
    try:
        wait_for(lambda: MIX_TYPES <= types(), 20, "every kind of event at the webhook")
    except AssertionError:
        raise AssertionError("missing %s; log:\n%s" % (MIX_TYPES - types(), g.log()[-3000:]))
    # the same events in the stream, with the same IDs (all sent by now, or soon)
    wait_for(lambda: {e["id"] for e in hook.got()} == {e["id"] for e in map(json.loads, redis_values(redis, "postern:events"))},
             10, "the stream to match the webhook")
    events = hook.got()
    assert len({e["id"] for e in events}) == len(events), "a repeated event"
    # and in RabbitMQ's queue, confirmed by the broker
    queued = [json.loads(m) for m in rabbit.take("postern.events", len(events))]
    assert {e["id"] for e in queued} == {e["id"] for e in events}, \
        (len(queued), len(events), [l for l in g.log().splitlines() if "broker" in l][-5:])
    # format=ndjson: the same events, a line each, in fewer messages
    batched, lines = [], []

    def all_batched():
        batched.extend(rabbit.drain("postern.batched"))
        lines[:] = [json.loads(l) for b in batched for l in b.splitlines() if l.strip()]
        return len(lines) >= len(events)
    wait_for(all_batched, 10, "the ndjson sink's events")
    assert sorted(e["id"] for e in lines) == sorted(e["id"] for e in events), (len(batched), len(lines), len(events))
    assert len(batched) < len(lines), (len(batched), len(lines))
    assert hook.bad == 0
    by = lambda t, **kv: [e for e in events if e["type"] == t and all(e.get(k) == v for k, v in kv.items())]
    accepted = by("accepted", qid=qids["ok@src.test"])
    assert accepted and accepted[0]["v"] == 1 and accepted[0]["node"] == "gw1.postern.test"
    assert accepted[0]["from"] == "ok@src.test" and accepted[0]["to"] == "x@example.test" and accepted[0]["size"] > 0
    assert accepted[0]["id"] == "gw1.postern.test/%s/accepted/x@example.test" % qids["ok@src.test"]
    delivered = by("delivered", qid=qids["ok@src.test"])
    assert delivered and "250" in delivered[0]["reply"] and addr(2) in delivered[0]["link"], delivered
    assert "duration_ms" in delivered[0] or delivered[0].get("duration_ms", 0) == 0
    assert by("deferred", qid=qids["defer@src.test"]) and by("expired", qid=qids["defer@src.test"])
    assert by("bounced", qid=qids["bounce@src.test"])[0]["reply"].startswith("550 5.1.1")
    assert by("quarantined", qid=qids["spam@src.test"])
    assert by("released", qid=qids["hold1@src.test"]) and by("delivered", qid=qids["hold1@src.test"])
    assert by("deleted", qid=qids["hold2@src.test"])
    assert by("connection_refused", client=addr(7))
    assert by("rejected", **{"from": "refuse@src.test", "stage": "mail"})
    # types=delivered,bounced: only those
    picky = hook.got("/picky")
    assert picky and {e["type"] for e in picky} <= {"delivered", "bounced"}, {e["type"] for e in picky}
    g.stop()


def test_a_webhook_down_for_a_while_gets_every_event_when_it_returns():
    hook = Webhook(addr(6), 8443, ip_cert(addr(6)))           # not started: down
    sink = Sink(addr(2))
    g = Gateway(sink=sink, event_sinks=sinks_table(hook), http_listen="%s:9025" % addr(1)).start()
    qids = [queue_id(send_mail(g, sender="down%d@src.test" % i)) for i in range(20)]
    sink.wait_count(20)
    wait_for(lambda: "events: sink hook: connect to" in g.log(), 10, "the sink's failure")
    wait_for(lambda: not g.queue_files(), 10, "the delivered messages' spool files to go")
    hook.start()
    want = {(q, t) for q in qids for t in ("accepted", "delivered")}
    have = lambda: {(e.get("qid"), e["type"]) for e in hook.got()}
    wait_for(lambda: want <= have(), 40, "every event after the webhook came back")
    events = hook.got()
    assert len({e["id"] for e in events}) == len(events), "repeats"
    # logged once the webhook's answer is read, which can be after the receiver has the events
    wait_for(lambda: "events: sink hook: sending again after" in g.log(), 10, "the sink's recovery logged")
    g.stop()


def test_the_webhook_connection_is_kept_and_a_new_one_resumes_tls():
    """Batches share one kept connection; one the receiver closed while
    idle is replaced without a failure or a lost event; a receiver that
    closes after each answer gets resumed TLS sessions."""
    sink = Sink(addr(2))
    for close_each, idle in ((False, 0.5), (True, None)):
        hook = Webhook(addr(6), 8443, ip_cert(addr(6)), close_each=close_each, idle_timeout=idle).start()
        table = table_file("webhook hook https://%s:%d/events secret=%s ca=%s batch=2 timeout=5s\n" %
                           (hook.host, hook.port, readable_file("secret", SECRET), os.path.join(hook.certs, "ca.crt")),
                           name="sinks")
        g = Gateway(sink=sink, event_sinks=table).start()
        qids = []
        for burst in range(3):                      # a pause longer than the receiver's idle timeout between
            qids += [queue_id(send_mail(g, sender="keep%d@src.test" % i)) for i in range(4)]
            want = {(q, t) for q in qids for t in ("accepted", "delivered")}
            wait_for(lambda: want <= {(e.get("qid"), e["type"]) for e in hook.got()}, 20, "burst %d's events" % burst)
            if not close_each:
                time.sleep(0.9)
        posts, conns, resumed = hook.posts, hook.conns, hook.resumed
        assert "events: sink hook:" not in g.log(), g.log()[-2000:]      # no failure, no "sending again"
        if close_each:
            assert conns == posts and resumed >= conns - 1 and conns >= 6, (posts, conns, resumed)
        else:
            # several batches per connection; a new one after each idle close, resumed
            assert posts >= 6 and 3 <= conns <= 4 and conns < posts and resumed >= conns - 1, (posts, conns, resumed)
        g.stop()
        hook.stop()


def test_after_kill_9_with_a_slow_webhook_every_accepted_message_has_its_events():
    hook = Webhook(addr(6), 8443, ip_cert(addr(6))).start()
    hook.delay = 0.5
    sink = Sink(addr(2))
    table = table_file("webhook hook https://%s:%d/events secret=%s ca=%s batch=5 timeout=5s\n" %
                       (hook.host, hook.port, readable_file("secret", SECRET), os.path.join(hook.certs, "ca.crt")),
                       name="sinks")
    g = Gateway(sink=sink, event_sinks=table)
    g.env["POSTERN_TEST_OUTBOX_DELAY_MS"] = "300"      # a slow disk: events wait in memory at the kill
    g.start()
    qids = []
    stop = threading.Event()

    def load():
        while not stop.is_set() and len(qids) < 400:
            try:
                reply = send_mail(g, sender="load@src.test")
            except OSError:
                return
            if "queued as" in reply:
                qids.append(queue_id(reply))

    t = threading.Thread(target=load)
    t.start()
    wait_for(lambda: len(qids) >= 60, 30, "some load")
    g.proc.kill()                  # kill -9 in the middle of it
    g.proc.wait()
    stop.set()
    t.join(10)
    hook.delay = 0
    del g.env["POSTERN_TEST_OUTBOX_DELAY_MS"]
    g.start()
    want = {(q, t) for q in qids for t in ("accepted", "delivered")}
    have = lambda: {(e.get("qid"), e["type"]) for e in hook.got()}
    wait_for(lambda: want <= have(), 60, "the events of all %d accepted messages (%d missing)" %
             (len(qids), len(want - have())))
    g.stop()


def test_a_full_outbox_drops_events_and_counts_them_but_mail_flows():
    hook = Webhook(addr(6), 8443, ip_cert(addr(6)))           # never up
    sink = Sink(addr(2))
    g = Gateway(sink=sink, event_sinks=sinks_table(hook), events_outbox_max_size="1M",
                http_listen="%s:9025" % addr(1)).start()
    r = subprocess.run(["smtp-source", "-s", "10", "-m", "2000", "-l", "200", "-f", "bulk@src.test", "-t",
                        "x@example.test", "%s:2525" % g.host], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    sink.wait_count(2000, timeout=60)
    wait_for(lambda: "dropped unsent" in g.log(), 20, "the outbox to drop events")
    import urllib.request
    with urllib.request.urlopen("http://%s:9025/metrics" % g.host, timeout=10) as resp:
        metrics = resp.read().decode()
    dropped = re.search(r'^postern_events_dropped_total\{reason="outbox_full"\} (\d+)', metrics, re.M)
    assert dropped and int(dropped.group(1)) > 0, metrics
    size = int(re.search(r"^postern_events_outbox_bytes (\d+)", metrics, re.M).group(1))
    assert size <= 1.3 * 1024 * 1024, size
    g.stop()


def test_event_sinks_table_errors_are_caught_at_start():
    for bad, why in (("webhook w ftp://x/\n", "not an https:// URL"), ("webhook w http://example.com/\n", "loopback"),
                     ("webhook w https://h/ types=sent\n", "not an event type"),
                     ("webhook w https://h/ secret=/nonexistent\n", "secret /nonexistent"),
                     ("redis r batch=0\n", "batch must be"), ("kafka k\n", "expected: webhook NAME URL"),
                     ("redis r\nredis r\n", "given twice"), ("amqp a http://h/\n", "not an amqp:// URL"),
                     ("amqp a amqp://u:p@h:99999/\n", "bad port"), ("amqp a amqp://u:p@/v\n", "no host"),
                     ("amqp a amqp://u:p@h/ format=xml\n", "format must be each or ndjson"), ("redis r\n", "a redis sink needs redis_server")):
        g = Gateway(event_sinks=table_file(bad, name="sinks"), default_transport="smtp:[%s]:2526" % addr(2))
        r = subprocess.run([os.path.join(BUILD, "posternd"), "-c", g.conf, "-t"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode != 0 and why in r.stdout + r.stderr, (bad, r.stdout, r.stderr)


run_tests(globals())
