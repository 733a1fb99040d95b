"""Risk positions made on demand (engine/CAPACITY.md "Risk positions"): a pool of max_positions
entries; an order or a restriction that needs a new (account, symbol) entry when every entry holds
something is rejected POSITION_CAPACITY_EXHAUSTED, never an overwrite; entries that hold nothing are
released and reused; memory follows the entries used; snapshots carry the pool exactly."""
from __future__ import annotations

import numpy as np

from engine import snapshot
from engine.core import Engine
from engine.risk import Risk
from protocol.codes import CommandKind, EventKind as EK, OrderType as OT, Reject as R, Side, TimeInForce as TIF

BUY, SELL = Side.BUY, Side.SELL


class Book:
    def __init__(self, max_positions, symbols=4, accounts=6):
        self.e = Engine(max_orders=1024, max_accounts=accounts + 1, max_symbols=symbols + 1, max_levels=64)
        self.r = Risk(accounts + 1, symbols + 1, max_strategies=4, cash_decimals=2, max_positions=max_positions)
        for s in range(1, symbols + 1):
            self.e.add_symbol(s)
            self.r.define_symbol(s, 2, 0)
        for a in range(1, accounts + 1):
            self.e.add_account(a)
        self.e.attach_risk(self.r)
        for s in range(1, symbols + 1):
            self.e.mark_price(s, 10_000)
        for a in range(1, accounts + 1):
            self.e.deposit(a, 100_000_000)
        self.clid = {a: 0 for a in range(1, accounts + 1)}

    def order(self, a, s, side, qty=10, price=10_000, tif=TIF.GTC):
        self.clid[a] += 1
        return self.e.command(kind=CommandKind.NEW_ORDER, account=a, client_order_id=self.clid[a], symbol=s,
                              side=side, qty=qty, price=price, order_type=OT.LIMIT, tif=tif, stp=1)

    def cancel(self, a, s):
        (o,) = [o for o in self.e.open_orders(a) if o["symbol"] == s]
        return self.e.cancel(a, order_id=o["order_id"])

    def used(self):
        return self.r.position_count()[0]


def reason(evs):
    return R(evs[0].reason) if evs[0].kind == EK.REJECTED else None


def test_pool_when_full_then_new_pairs_rejected_and_held_entries_untouched():
    b = Book(max_positions=3)
    for s in (1, 2, 3):
        assert reason(b.order(1, s, BUY)) is None
    assert b.used() == 3
    assert reason(b.order(1, 4, BUY)) == R.POSITION_CAPACITY_EXHAUSTED     # a new pair: no entry left
    assert reason(b.order(2, 1, SELL, price=10_100)) == R.POSITION_CAPACITY_EXHAUSTED
    assert reason(b.order(1, 2, BUY, qty=5)) is None                      # an existing pair trades on
    assert [(p["symbol"], p["open_buy"]) for p in b.r.positions(1)] == [(1, 10), (2, 15), (3, 10)]
    assert b.e.restrict(2, 4)[0].reason == R.POSITION_CAPACITY_EXHAUSTED    # a restriction needs an entry too
    b.e.validate()
    assert b.used() == 3


def test_pool_when_an_entry_goes_flat_without_pnl_then_it_is_released_for_another_pair():
    b = Book(max_positions=2)
    assert reason(b.order(1, 1, BUY)) is None
    assert reason(b.order(2, 2, BUY)) is None
    b.cancel(1, 1)               # (1, 1) holds nothing now (its figures not yet refreshed)
    assert reason(b.order(3, 1, SELL, price=10_100)) is None               # so (3, 1) takes its place
    assert b.used() == 2 and not b.r.has_entry(1, 1)
    assert reason(b.order(1, 1, BUY)) == R.POSITION_CAPACITY_EXHAUSTED
    b.e.validate()


def test_pool_when_a_pair_traded_then_its_entry_keeps_the_pnl_after_it_goes_flat():
    b = Book(max_positions=2)
    assert reason(b.order(1, 1, BUY, price=10_000)) is None
    assert reason(b.order(2, 1, SELL, price=10_000, tif=TIF.IOC)) is None   # 1 long 10, 2 short 10
    assert reason(b.order(2, 1, BUY, price=10_050)) is None
    assert reason(b.order(1, 1, SELL, price=10_050, tif=TIF.IOC)) is None   # both flat, 1 +5.00, 2 -5.00
    assert b.r.positions(1) == [] and b.r.portfolio(1)["realized"] == 500
    assert reason(b.order(3, 2, BUY)) == R.POSITION_CAPACITY_EXHAUSTED      # their P&L keeps both entries
    assert reason(b.order(1, 1, BUY, price=9_000)) is None
    assert b.r.positions(1)[0]["realized"] == 500                           # the same entry, P&L kept
    b.e.validate()


def test_restriction_when_cleared_on_an_unused_pair_then_its_entry_is_released():
    b = Book(max_positions=1)
    assert b.e.restrict(1, 2)[0].kind == EK.LIMIT_SET
    assert b.used() == 1
    assert reason(b.order(1, 2, BUY)) == R.SYMBOL_RESTRICTED
    assert reason(b.order(2, 3, BUY)) == R.POSITION_CAPACITY_EXHAUSTED
    b.e.restrict(1, 2, restricted=False)
    assert b.used() == 0
    assert reason(b.order(2, 3, BUY)) is None
    b.e.validate()


def test_pool_memory_when_few_pairs_used_then_only_their_entries_are_written():
    b = Book(max_positions=0, symbols=2000, accounts=100)        # 0: 100 x 2000 pairs, up to 2**20
    assert b.r.position_count() == (0, 0, 101 * 2001)
    for a in range(1, 11):
        assert reason(b.order(a, a * 7, BUY)) is None
    assert b.r.position_count() == (10, 10, 101 * 2001)
    assert b.r.memory_bytes()["pool_written"] == 10 * 128
    b.e.validate()


def test_snapshot_when_entries_released_and_reused_then_the_pool_round_trips_exactly(tmp_path):
    def steps(b, k):
        for i in range(k):
            a, s = 1 + i % 4, 1 + (i * 3) % 4
            if [o for o in b.e.open_orders(a) if o["symbol"] == s]:
                b.cancel(a, s)
            else:
                b.order(a, s, BUY if i % 3 else SELL, price=10_000 + (i % 5) * 10, tif=TIF.GTC if i % 4 else TIF.IOC)

    a = Book(max_positions=9)
    steps(a, 60)
    path = snapshot.write(tmp_path, a.e.export_state(), last_seq=60)
    b = Book(max_positions=9)
    b.e.import_state(snapshot.read(path)[1])
    b.e.validate()
    assert b.e.state_hash() == a.e.state_hash()
    assert b.r.position_count() == a.r.position_count()
    b.clid = dict(a.clid)
    steps(a, 80)
    steps(b, 80)
    assert b.e.state_hash() == a.e.state_hash()
    assert np.array_equal(a.r.entries()[0], b.r.entries()[0])
    other = Book(max_positions=10)
    try:
        other.e.import_state(snapshot.read(path)[1])
    except ValueError as e:
        assert "capacities" in str(e)
    else:
        raise AssertionError("a snapshot of another pool size loaded")
