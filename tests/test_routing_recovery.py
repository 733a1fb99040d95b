"""The router's journal and recovery (engine/ROUTING.md "Guarantees"): after a kill -9 of the
router mid-order it replays its journal, reconnects to each venue asking for the reports after
the last one journaled (gap replay) and carries on, so the client's acknowledged order is neither
lost nor duplicated; a venue killed mid-order: the child it never received is found unsent when it
is back and its share is routed again."""
from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections import Counter
from decimal import Decimal

from clients.client import SyncClient
from engine.testing import SECRETS
from tests.test_power_loss import lossy  # noqa: F401 (fixture)
from tests.test_routing import post_books, router_factory, until_done, venues, wait_book  # noqa: F401 (fixtures)


def stop(srv):
    """SIGSTOP a venue and wait until it is stopped (the signal is asynchronous)."""
    srv.proc.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while open(f"/proc/{srv.proc.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "T":
        assert time.monotonic() < deadline
        time.sleep(0.001)


def venue_reports(srv):
    """Every report of the router's account (1) at a venue, from the venue itself."""
    with SyncClient.connect("127.0.0.1", srv.port, account=1, secret=SECRETS[1], next_seq=1) as v:
        v.open_orders()
        return v.received_reports()


def fills_of(reports):
    return sorted((int(r.price * 100), int(r.qty * 1000)) for r in reports if r.kind == "fill")


def check_consistent(venues, client_reports, clid, qty):
    """The client's fills are exactly the venues' fills of the router's children: none lost, none twice."""
    at_venues = {n: venue_reports(s) for n, s in venues.items()}
    venue_fills = sorted(f for rs in at_venues.values() for f in fills_of(rs))
    mine = [r for r in client_reports if getattr(r, "client_order_id", None) == clid]
    assert Counter(r.kind for r in mine)["accepted"] == 1
    assert fills_of(mine) == venue_fills
    assert sum(q for _, q in venue_fills) == qty
    for rs in at_venues.values():          # each child accepted once at its venue
        accepted = [r.client_order_id for r in rs if r.kind == "accepted"]
        assert len(accepted) == len(set(accepted))
    seqs = [r.seq for r in client_reports]
    assert seqs == list(range(1, len(seqs) + 1))


def test_router_kill9_when_children_unprocessed_then_recovers_by_gap_replay_without_loss_or_double(
        venues, router_factory):
    post_books(venues)
    router = router_factory(venues).start()
    c = SyncClient.connect("127.0.0.1", router.port, account=1, secret=SECRETS[1])
    wait_book(c, n_asks=6, n_bids=4)
    for s in venues.values():              # the venues take the children only once the router is dead
        stop(s)
    ack = c.place("BTCUSDT", "buy", "0.020", price="50040.00")
    assert ack.kind == "accepted"
    router.kill9()
    for s in venues.values():
        s.proc.send_signal(signal.SIGCONT)
    c.close()
    router.start()
    with SyncClient.connect("127.0.0.1", router.port, account=1, secret=SECRETS[1], next_seq=1) as c2:
        reports = until_done(c2, ack.client_order_id)
        assert reports[0] == ack                        # the same acknowledgement, replayed
        assert sum(r.qty for r in reports if r.kind == "fill") == Decimal("0.020")
        assert c2.place("BTCUSDT", "buy", "0.001", price="40000.00", client_order_id=ack.client_order_id).kind \
            == "rejected"                               # the client order id is still taken after the restart
    check_consistent(venues, reports, ack.client_order_id, 20)
    out = router.output()
    assert "router recovered" in out and "child_unsent" not in out    # the venues had them: replayed


def test_venue_kill9_when_child_in_flight_then_its_share_is_routed_again_once_it_is_back(venues, router_factory):
    post_books(venues)
    router = router_factory(venues).start()
    with SyncClient.connect("127.0.0.1", router.port, account=1, secret=SECRETS[1]) as c:
        wait_book(c, n_asks=6, n_bids=4)
        stop(venues["B"])                              # B never reads its child: killed with it unread
        ack = c.place("BTCUSDT", "buy", "0.020", price="50040.00")
        assert ack.kind == "accepted"
        venues["B"].kill9()
        venues["B"].start()                            # back, with its book from its journal
        reports = until_done(c, ack.client_order_id, timeout=30)
        assert sum(r.qty for r in reports if r.kind == "fill") == Decimal("0.020")
    check_consistent(venues, reports, ack.client_order_id, 20)
    out = router.output()
    assert "child_unsent" in out and "venue_down" in out


def test_venue_hung_when_silent_past_limit_then_dropped_its_book_out_and_back_when_it_answers(venues,
                                                                                             router_factory):
    post_books(venues)
    router = router_factory(venues, router_extra="venue_silence_s = 1.5").start()
    with SyncClient.connect("127.0.0.1", router.port, account=1, secret=SECRETS[1]) as c:
        wait_book(c, n_asks=6, n_bids=4)
        stop(venues["C"])                                   # hung: the connection stays open, nothing comes
        deadline = time.monotonic() + 15
        while router.status()["venues"][2]["up"]:
            assert time.monotonic() < deadline, "a silent venue was never dropped"
            time.sleep(0.1)
        assert all(a.price != Decimal("49980.00") for a in c.book("BTCUSDT", 20).asks)   # C's levels are out
        ack = c.place("BTCUSDT", "buy", "0.025", price="50040.00")     # C's 5 would be needed: not sent there
        reports = until_done(c, ack.client_order_id)
        assert sum(r.qty for r in reports if r.kind == "fill") == Decimal("0.020")
        assert reports[-1].kind == "cancelled" and reports[-1].qty == Decimal("0.005")
        assert router.status()["venues"][2]["children"] == 0
        venues["C"].proc.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 30
        while not router.status()["venues"][2]["up"]:
            assert time.monotonic() < deadline, "the venue never came back"
            time.sleep(0.1)
    st = router.status()["venues"][2]
    assert st["availability"] < 1
    assert '"event":"venue_silent"' in router.output()


def test_router_async_when_power_cut_after_a_sync_then_its_acknowledged_orders_are_there(venues, router_factory,
                                                                                       lossy):  # noqa: F811
    """`async` durability: no fsync per commit, the journal flushed every sync_interval_ms off the loop. The
    journal on lossyfs (unsynced writes kept in memory): once the router's status says the order's records are
    synced, a power cut keeps them (before, nothing was flushed until shutdown: the cut lost the journal)."""
    post_books(venues)
    router = router_factory(venues, durability="async")
    fs = lossy(router)
    fs.power_on()
    router.start()
    with SyncClient.connect("127.0.0.1", router.port, account=1, secret=SECRETS[1]) as c:
        wait_book(c, n_asks=6, n_bids=4)
        ack = c.place("BTCUSDT", "buy", "0.020", price="50040.00")
        assert ack.kind == "accepted"
        reports = until_done(c, ack.client_order_id)

        def journal():
            with urllib.request.urlopen(f"http://127.0.0.1:{router.ops_port}/status", timeout=10) as r:
                return json.load(r)["journal"]
        deadline = time.monotonic() + 30
        while (j := journal())["synced_seq"] < j["last_seq"]:
            assert time.monotonic() < deadline, f"the async journal never synced: {j}"
            time.sleep(0.05)
    router.kill9()
    fs.power_cut()
    fs.power_on()
    router.start()
    with SyncClient.connect("127.0.0.1", router.port, account=1, secret=SECRETS[1], next_seq=1) as c2:
        again = until_done(c2, ack.client_order_id)
    mine = [r for r in again if getattr(r, "client_order_id", None) == ack.client_order_id]
    assert mine == [r for r in reports if getattr(r, "client_order_id", None) == ack.client_order_id]
