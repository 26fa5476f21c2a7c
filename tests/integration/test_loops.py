"""Mail loops end in one bounce, never in copies: a next hop that greets us
or answers EHLO with our own hostname is us ("5.4.6 mail for X loops back to
myself", as Postfix says), and two gateways relaying to each other over TLS
with CHUNKING stop at max_hop_count with exactly one bounce and nothing left
in either queue."""
from harness import *


def dsns(sink):
    return [m for m in sink.messages() if b"multipart/report" in m]


def test_a_next_hop_with_my_own_name_bounces_once():
    sink = Sink(addr(2))
    for how in ("greeting", "ehlo"):
        g = Gateway(sink=sink)
        g.set(transport_table=table_file("example.test smtp:[%s]:2526\n" % addr(3)))
        if how == "greeting":        # the next hop is this very gateway's name (a second listener of ours)
            peer = Gateway(host=addr(3), port=2526, sink=sink, hostname="gw.postern.test").start()
        else:                        # it greets with another name, then answers EHLO with ours
            from scripted_smtp import ScriptedSmtp
            peer = ScriptedSmtp(addr(3), my_name="gw.postern.test")
        g.start()
        before = len(dsns(sink))
        qid = queue_id(send_mail(g, headers="Subject: loop-%s\r\n" % how))
        wait_for(lambda: len(dsns(sink)) > before, 20, "the bounce")
        dsn = dsns(sink)[-1]
        assert b"5.4.6" in dsn and b"loops back to myself" in dsn, dsn[:2000]
        assert "loops back to myself" in g.log() and "my own hostname gw.postern.test" in g.log(), g.log()[-2000:]
        wait_for(lambda: qid not in g.queue_files(), 10, "the message to leave the queue")
        if how == "greeting":
            assert peer.queue_files() == [] and "queued as" not in peer.log(), "the looping hop took a copy"
        else:
            assert peer.messages == []
        time.sleep(0.5)
        assert len(dsns(sink)) == before + 1 and not [m for m in sink.messages() if b"Subject: loop-" in m and m not in dsns(sink)]
        g.stop()
        peer.stop()


def test_two_gateways_relaying_to_each_other_over_tls_stop_at_the_hop_limit():
    certs = make_certs(["a.loop.test", "b.loop.test"])
    d, ca = certs
    sink = Sink(addr(2))
    gws = []
    for i, (me, other) in enumerate(((1, 3), (3, 1))):
        name = "ab"[i] + ".loop.test"
        g = Gateway(host=addr(me), sink=sink, hostname=name, max_hop_count="12", tls_ca_file=ca,
                    tls_cert=os.path.join(d, name + ".crt"), tls_key=os.path.join(d, name + ".key"),
                    trusted_networks="127.0.0.0/8")
        g.set(transport_table=table_file("example.test smtp:[%s]:2525\n" % addr(other)),
              tls_policy_table=table_file("example.test encrypt\n"))
        gws.append(g.start())
    body = ("y" * 70 + "\r\n") * 200          # about 14 KiB: BDAT chunks over TLS at every hop
    qid = queue_id(send_mail(gws[0], headers="Subject: ping-pong\r\n", body=body))
    wait_for(lambda: len(dsns(sink)) >= 1, 60, "the hop-limit bounce")
    dsn = dsns(sink)[0]
    assert b"5.4.6" in dsn and b"too many hops" in dsn, dsn[:1500]
    time.sleep(1.5)
    assert len(dsns(sink)) == 1, "more than one bounce"
    for g in gws:
        assert g.queue_files() == [], "a copy is still queued at %s" % g.host
        assert "timed out" not in g.log(), g.log()[-2000:]
    hops = sum(len(re.findall(r"queued as", g.log())) for g in gws)
    # one acceptance per hop up to the limit and the bounce: no extra copies from retries
    assert hops <= 12 + 2, "%d acceptances for a 12-hop loop" % hops
    assert qid
    for g in gws:
        g.stop()


if __name__ == "__main__":
    run_tests(globals())
