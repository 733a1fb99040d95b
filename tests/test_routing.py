"""Smart order routing (engine/routing, engine/ROUTING.md) against three real venue servers with
different books and taker fees: a marketable order fills at the best combined all-in prices
(checked against a brute-force optimum over the venues' books at that moment), never through a
better all-in price left on another venue, within the client's limit; the SDK works against
the router unchanged; reports come in sequence."""
from __future__ import annotations

import itertools
import os
import time
from decimal import Decimal
from pathlib import Path

import pytest

from clients.client import SyncClient
from engine.testing import SECRETS, RouterProc, ServerProc

BPS = 10_000
FEES = {"A": ("0", "0"), "B": ("0.0005", "0.0001"), "C": ("0.0010", "-0.0001")}
# asks per venue: (price units, qty units); BTCUSDT has 2 price decimals, 3 qty decimals
ASKS = {"A": [(5_001_000, 5), (5_002_500, 5)],
        "B": [(4_999_000, 4), (5_000_000, 6)],
        "C": [(4_998_000, 3), (5_004_000, 10)]}
BIDS = {"A": [(4_990_000, 6)], "B": [(4_991_000, 5)], "C": [(4_992_000, 4), (4_989_000, 8)]}


def venue_risk(taker: str, maker: str) -> str:
    return f'enabled = true\n\n[risk.defaults]\ntaker_fee = "{taker}"\nmaker_fee = "{maker}"\n'


def bps(fraction: str) -> int:
    return int(Decimal(fraction) * BPS)


@pytest.fixture
def venues(tmp_path):
    made = {}
    for name in "ABC":
        made[name] = ServerProc(tmp_path / f"venue{name}", risk=venue_risk(*FEES[name]),
                                account_extra='initial_deposit = "100000000"\n',
                                symbol_extra='reference_price = "50000.00"').start()
    yield made
    for s in made.values():
        s.stop()


@pytest.fixture
def router_factory(tmp_path):
    made = []

    def make(venues, **kw):
        r = RouterProc(tmp_path / f"router{len(made)}", [(n, s) for n, s in venues.items()], fees=FEES, **kw)
        made.append(r)
        return r
    yield make
    for r in made:
        r.stop()


def post_books(venues, asks=ASKS, bids=BIDS):
    """Account 2 rests the books at each venue (the router trades as account 1 there)."""
    for name, srv in venues.items():
        with SyncClient.connect("127.0.0.1", srv.port, account=2, secret=SECRETS[2]) as mm:
            sym = mm.symbols_by_name["BTCUSDT"]
            for price, qty in asks[name]:
                assert mm.place("BTCUSDT", "sell", sym.qty(qty), price=sym.price(price)).kind == "accepted"
            for price, qty in bids[name]:
                assert mm.place("BTCUSDT", "buy", sym.qty(qty), price=sym.price(price)).kind == "accepted"


def wait_book(c, n_asks, n_bids, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        b = c.book("BTCUSDT", 20)
        if len(b.asks) == n_asks and len(b.bids) == n_bids:
            return b
        assert time.monotonic() < deadline, f"consolidated book never complete: {b}"
        time.sleep(0.05)


def until_done(c, clid, timeout=15.0):
    """The order's reports until it is over (leaves 0 on a fill, or cancelled)."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in c.received_reports():
            got.append(r)
            if getattr(r, "client_order_id", None) == clid and (r.kind == "cancelled" or
                                                               (r.kind == "fill" and r.leaves == 0)):
                return got
        time.sleep(0.02)
    raise AssertionError(f"order {clid} not over: {got}")


def venue_fills(srv):
    """The fills of the router's account (1) at a venue, from the venue itself (a replay from seq 1)."""
    with SyncClient.connect("127.0.0.1", srv.port, account=1, secret=SECRETS[1], next_seq=1) as v:
        v.open_orders()                       # answered after the replay written at logon
        return [(int(r.price * 100), int(r.qty * 1000)) for r in v.received_reports() if r.kind == "fill"]


def walk(levels, q):
    """Cost (sum price x qty) of taking q units off levels best first."""
    cost = 0
    for price, qty in levels:
        take = min(q, qty)
        cost += take * price
        q -= take
    assert q == 0
    return cost


def brute_force(side_levels, fees, qty, limit, buy=True):
    """The best all-in cost over every split of qty across the venues (exhaustive)."""
    names = sorted(side_levels)
    ok = {n: [(p, q) for p, q in side_levels[n] if (p <= limit if buy else p >= limit)] for n in names}
    avail = {n: sum(q for _, q in ok[n]) for n in names}
    target = min(qty, sum(avail.values()))
    best = None
    for combo in itertools.product(*(range(avail[n] + 1) for n in names)):
        if sum(combo) != target:
            continue
        total = sum(walk(ok[n], q) * (BPS + (fees[n] if buy else -fees[n])) for n, q in zip(names, combo))
        if best is None or (total < best if buy else total > best):
            best = total
    return target, best


def check_no_trade_through(side_levels, fills, fees, buy=True):
    """No unit filled at an all-in price worse than one left untaken on any venue's shown book."""
    worst_taken, best_left = None, None
    for n, levels in side_levels.items():
        taken = sorted(fills[n], reverse=not buy)
        left = dict(levels)
        for price, qty in taken:
            left[price] -= qty
            a = price * (BPS + (fees[n] if buy else -fees[n]))
            worst_taken = a if worst_taken is None else (max(worst_taken, a) if buy else min(worst_taken, a))
        for price, qty in left.items():
            if qty > 0:
                a = price * (BPS + (fees[n] if buy else -fees[n]))
                best_left = a if best_left is None else (min(best_left, a) if buy else max(best_left, a))
    if worst_taken is not None and best_left is not None:
        assert (worst_taken <= best_left) if buy else (worst_taken >= best_left), (worst_taken, best_left)


def test_marketable_buy_when_three_venues_then_fills_at_brute_force_optimum_after_fees(venues, router_factory):
    post_books(venues)
    router = router_factory(venues).start()
    fees = {n: bps(f[0]) for n, f in FEES.items()}
    with SyncClient.connect("127.0.0.1", router.port, account=1, secret=SECRETS[1]) as c:
        book = wait_book(c, n_asks=6, n_bids=4)           # the consolidated book: every venue's levels
        assert book.asks[0].price == Decimal("49980.00") and book.bids[0].price == Decimal("49920.00")
        qty, limit = 20, 5_004_000
        ack = c.place("BTCUSDT", "buy", "0.020", price="50040.00")
        assert ack.kind == "accepted" and ack.leaves == Decimal("0.020")
        reports = until_done(c, ack.client_order_id)
        fills = [r for r in reports if r.kind == "fill"]
        assert sum(r.qty for r in fills) == Decimal("0.020")
        assert reports[0] == ack and [r.seq for r in reports] == list(range(1, len(reports) + 1))   # no gap
        assert [r.leaves for r in fills] == sorted((r.leaves for r in fills), reverse=True)
    got = {n: venue_fills(s) for n, s in venues.items()}
    assert sorted(p for fs in got.values() for p in fs) == sorted((int(r.price * 100), int(r.qty * 1000))
                                                                 for r in fills)
    target, best = brute_force(ASKS, fees, qty, limit)
    actual = sum(p * q * (BPS + fees[n]) for n, fs in got.items() for p, q in fs)
    assert sum(q for fs in got.values() for _, q in fs) == target == qty
    assert actual == best
    assert all(p <= limit for fs in got.values() for p, _ in fs)
    check_no_trade_through(ASKS, got, fees)
    # price improvement against single-venue routing: a venue alone fills only what it shows within the limit
    # (at most 13 of 20), and the router's cheapest units of the same count cost less: vs all at C (the best
    # shown price, 49980.00), 11.5 bps on its 13 lots, and 7 lots more filled
    units = sorted(p * (BPS + fees[n]) for n, fs in got.items() for p, q in fs for _ in range(q))
    for n in ASKS:
        k = sum(q for p, q in ASKS[n] if p <= limit)
        alone = walk([(p, q) for p, q in ASKS[n] if p <= limit], k) * (BPS + fees[n])
        assert k < qty and sum(units[:k]) <= alone, n
    alone_c = walk(ASKS["C"], 13) * (BPS + fees["C"])
    assert (alone_c - sum(units[:13])) * BPS // alone_c == 11


def test_sell_with_limit_when_book_thin_then_limit_respected_and_remainder_cancelled(venues, router_factory):
    post_books(venues)
    router = router_factory(venues).start()
    fees = {n: bps(f[0]) for n, f in FEES.items()}
    with SyncClient.connect("127.0.0.1", router.port, account=1, secret=SECRETS[1]) as c:
        wait_book(c, n_asks=6, n_bids=4)
        ack = c.place("BTCUSDT", "sell", "0.030", price="49900.00")
        reports = until_done(c, ack.client_order_id)
        fills = [r for r in reports if r.kind == "fill"]
        last = reports[-1]
        assert last.kind == "cancelled" and last.reason == "ioc_remainder"
        assert all(r.price >= Decimal("49900.00") for r in fills)
    got = {n: venue_fills(s) for n, s in venues.items()}
    target, best = brute_force(BIDS, fees, 30, 4_990_000, buy=False)
    actual = sum(p * q * (BPS - fees[n]) for n, fs in got.items() for p, q in fs)
    assert sum(q for fs in got.values() for _, q in fs) == target == 15
    assert actual == best
    check_no_trade_through(BIDS, got, fees, buy=False)


def test_post_remainder_when_gtc_limit_then_rests_at_best_maker_venue_and_sdk_amend_cancel_work(venues,
                                                                                              router_factory):
    post_books(venues)
    router = router_factory(venues, router_extra='remainder = "post"').start()
    with SyncClient.connect("127.0.0.1", router.port, account=1, secret=SECRETS[1]) as c:
        wait_book(c, n_asks=6, n_bids=4)
        ack = c.place("BTCUSDT", "buy", "0.030", price="50000.00")
        deadline = time.monotonic() + 10
        while True:                                    # 13 fill within the limit (B 10, C 3), 17 are posted
            orders = c.open_orders()
            if orders and orders[0].filled == Decimal("0.013"):
                break
            assert time.monotonic() < deadline, orders
            time.sleep(0.05)
        assert (orders[0].order_id, orders[0].leaves) == (ack.order_id, Decimal("0.017"))
        with SyncClient.connect("127.0.0.1", venues["C"].port, account=1, secret=SECRETS[1]) as v:
            # C: the lowest maker fee (a rebate)
            assert [(o.price, o.leaves, o.tif) for o in v.open_orders()] == [(Decimal("50000.00"), Decimal("0.017"),
                                                                             "gtc")]
        rep = c.amend("BTCUSDT", order_id=ack.order_id, qty="0.010", price="49995.00")
        assert (rep.kind, rep.leaves, rep.price) == ("replaced", Decimal("0.010"), Decimal("49995.00"))
        with SyncClient.connect("127.0.0.1", venues["C"].port, account=1, secret=SECRETS[1]) as v:
            assert [(o.price, o.leaves) for o in v.open_orders()] == [(Decimal("49995.00"), Decimal("0.010"))]
        rep = c.cancel(order_id=ack.order_id)
        assert (rep.kind, rep.reason, rep.qty) == ("cancelled", "user", Decimal("0.010"))
        assert c.open_orders() == []
        with SyncClient.connect("127.0.0.1", venues["C"].port, account=1, secret=SECRETS[1]) as v:
            assert v.open_orders() == []


def test_venue_account_shared_when_another_session_takes_higher_ids_then_children_follow_them(venues, router_factory):
    post_books(venues)
    router = router_factory(venues).start()
    with SyncClient.connect("127.0.0.1", router.port, account=1, secret=SECRETS[1]) as c:
        wait_book(c, n_asks=6, n_bids=4)
        # another application on the router's account at A uses client order id 1000 (a resting bid)
        with SyncClient.connect("127.0.0.1", venues["A"].port, account=1, secret=SECRETS[1]) as other:
            assert other.place("BTCUSDT", "buy", "0.001", price="40000.00", client_order_id=1000).kind == "accepted"
        deadline = time.monotonic() + 10
        while not any(b.price == Decimal("40000.00") for b in c.book("BTCUSDT", 20).bids):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ack = c.place("BTCUSDT", "buy", "0.020", price="50040.00")
        reports = until_done(c, ack.client_order_id)
        assert sum(r.qty for r in reports if r.kind == "fill") == Decimal("0.020")   # A's share was not refused
    assert all(v["rejects"] == 0 for v in router.status()["venues"])


def test_posted_child_when_venue_cancels_it_then_parent_ends_with_venue_reason_not_posted_again(venues,
                                                                                              router_factory):
    post_books(venues)
    router = router_factory(venues, router_extra='remainder = "post"').start()
    with SyncClient.connect("127.0.0.1", router.port, account=1, secret=SECRETS[1]) as c:
        wait_book(c, n_asks=6, n_bids=4)
        ack = c.place("BTCUSDT", "buy", "0.005", price="49000.00")     # nothing within the limit: posted at once
        deadline = time.monotonic() + 10
        with SyncClient.connect("127.0.0.1", venues["C"].port, account=1, secret=SECRETS[1]) as v:
            while not v.open_orders():
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert v.mass_cancel().qty == 1                            # the venue account's other session
        reports = until_done(c, ack.client_order_id)
        assert (reports[-1].kind, reports[-1].reason, reports[-1].qty) == ("cancelled", "mass_cancel",
                                                                          Decimal("0.005"))
        time.sleep(0.3)
        assert c.open_orders() == []
    assert sum(v["children"] for v in router.status()["venues"]) == 1   # never posted again


def test_sdk_and_cli_when_pointed_at_router_then_consolidated_market_data_and_orders_work(venues, router_factory):
    import os
    import subprocess
    import sys

    from engine.testing import ROOT
    post_books(venues)
    router = router_factory(venues).start()
    with SyncClient.connect("127.0.0.1", router.port, account=2, secret=SECRETS[2]) as c:
        wait_book(c, n_asks=6, n_bids=4)
        sub = c.subscribe("BTCUSDT", depth=3)
        first = [sub.next_update(5), sub.next_update(5)]
        top = next(u for u in first if type(u).__name__ == "TopOfBook")
        depth = next(u for u in first if type(u).__name__ == "Depth")
        assert (top.bid, top.ask) == (Decimal("49920.00"), Decimal("49980.00"))
        assert [lv.price for lv in depth.asks] == [Decimal("49980.00"), Decimal("49990.00"), Decimal("50000.00")]
        with SyncClient.connect("127.0.0.1", venues["A"].port, account=2, secret=SECRETS[2]) as mm:
            mm.place("BTCUSDT", "sell", "0.007", price="49985.00")        # a new best-but-one level at A
        deadline = time.monotonic() + 10
        while True:
            u = sub.next_update(5)
            if type(u).__name__ == "Depth" and Decimal("49985.00") in [lv.price for lv in u.asks]:
                assert [(lv.price, lv.qty) for lv in u.asks][:2] == [(Decimal("49980.00"), Decimal("0.003")),
                                                                   (Decimal("49985.00"), Decimal("0.007"))]
                break
            assert time.monotonic() < deadline
        sub.close()
        assert [s.name for s in c.symbols()] == ["BTCUSDT", "AAPL"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), TRADING_ENGINE_SECRET=SECRETS[3],
               TRADING_ENGINE_PORT=str(router.port), TRADING_ENGINE_ACCOUNT="3")

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "engine.cli", *args], env=env, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout
    assert "49980" in cli("book", "BTCUSDT", "--depth", "3")
    out = cli("order", "buy", "BTCUSDT", "0.002", "--price", "49980.00", "--tif", "ioc")
    assert "accepted" in out.lower()


def test_fok_when_shown_books_short_then_nothing_sent_else_filled_whole_across_venues(venues, router_factory):
    post_books(venues)
    router = router_factory(venues).start()
    fees = {n: bps(f[0]) for n, f in FEES.items()}
    with SyncClient.connect("127.0.0.1", router.port, account=1, secret=SECRETS[1]) as c:
        wait_book(c, n_asks=6, n_bids=4)
        # 33 lots shown within 50040.00 over the three venues: a FOK for 40 is killed, nothing is sent
        ack = c.place("BTCUSDT", "buy", "0.040", price="50040.00", tif="fok")
        assert ack.kind == "accepted"
        reports = until_done(c, ack.client_order_id)
        assert [(r.kind, r.reason, r.qty) for r in reports[1:]] == [("cancelled", "fok_unfilled", Decimal("0.040"))]
        assert sum(v["children"] for v in router.status()["venues"]) == 0
        # 20 fit: filled whole, across the venues, at the brute-force optimum after fees
        ack = c.place("BTCUSDT", "buy", "0.020", price="50040.00", tif="fok")
        reports = until_done(c, ack.client_order_id)
        assert sum(r.qty for r in reports if r.kind == "fill") == Decimal("0.020") and reports[-1].leaves == 0
    got = {n: venue_fills(s) for n, s in venues.items()}
    assert sum(len(fs) > 0 for fs in got.values()) >= 2
    target, best = brute_force(ASKS, fees, 20, 5_004_000)
    assert sum(p * q * (BPS + fees[n]) for n, fs in got.items() for p, q in fs) == best
    check_no_trade_through(ASKS, got, fees)


def test_fok_when_one_venue_kills_its_child_then_other_fills_stand_and_rest_cancelled_fok_unfilled(venues,
                                                                                                  router_factory):
    post_books(venues)
    router = router_factory(venues).start()
    with SyncClient.connect("127.0.0.1", router.port, account=1, secret=SECRETS[1]) as c:
        # the router's own venue account rests 2 lots at C, the cheapest all-in after B's 49990.00: the
        # child sent against it is killed by C's self-trade prevention (a FOK child: nothing at C)
        with SyncClient.connect("127.0.0.1", venues["C"].port, account=1, secret=SECRETS[1]) as own:
            assert own.place("BTCUSDT", "sell", "0.002", price="49970.00").kind == "accepted"
        wait_book(c, n_asks=7, n_bids=4)
        # within 50000.00: B 4 + 6, C 2 (own) + 3: the shown books fill 12; B's children fill 10, C's die
        ack = c.place("BTCUSDT", "buy", "0.012", price="50000.00", tif="fok")
        reports = until_done(c, ack.client_order_id)
        fills = [r for r in reports if r.kind == "fill"]
        assert sum(r.qty for r in fills) == Decimal("0.010")
        assert (reports[-1].kind, reports[-1].reason, reports[-1].qty) == ("cancelled", "fok_unfilled",
                                                                          Decimal("0.002"))
        assert [r.seq for r in reports] == list(range(1, len(reports) + 1))
    assert venue_fills(venues["B"]) and not [f for f in venue_fills(venues["C"])]


def test_router_placement_when_cpu_and_nice_configured_then_every_thread_pinned_and_reniced(venues, router_factory):
    cpu = max(os.sched_getaffinity(0))
    post_books(venues)
    router = router_factory(venues, server_extra=f"cpu = {cpu}", router_extra="nice = 3").start()
    with SyncClient.connect("127.0.0.1", router.port, account=1, secret=SECRETS[1]) as c:
        wait_book(c, n_asks=6, n_bids=4)
        ack = c.place("BTCUSDT", "buy", "0.010", price="50040.00")
        assert sum(r.qty for r in until_done(c, ack.client_order_id) if r.kind == "fill") == Decimal("0.010")
    tasks = list(Path(f"/proc/{router.proc.pid}/task").iterdir())     # every thread (numpy's start at import)
    for t in tasks:
        status = (t / "status").read_text()
        assert f"Cpus_allowed_list:\t{cpu}\n" in status, status
        assert int((t / "stat").read_text().rsplit(")", 1)[1].split()[16]) == 3    # field 19: nice
    # a core the router may not use: a clear error at start, exit 2
    bad = router_factory(venues, server_extra=f"cpu = {cpu + 4096}")
    with pytest.raises(RuntimeError, match=r"router exited 2: .*\[server\] cpu = \d+: cannot pin the router"):
        bad.start()
    with pytest.raises(RuntimeError, match=r"router exited 2: .*`router.nice`: -20..19, not 20"):
        router_factory(venues, router_extra="nice = 20").start()
