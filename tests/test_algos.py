"""Execution algorithms on the core (engine/ALGOS.md): schedules, the limit, participation, pause on
a refused child, the Almgren-Chriss trajectory, and deterministic replay (same commands -> same
events byte for byte and the same state hash, also through a snapshot)."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest

from engine.algos import Algos, is_schedule, pack_params
from engine.core import Engine
from engine.risk import Risk
from protocol.codes import (AlgoEnd, AlgoKind, AlgoState, CommandKind as CK, EventFlag, EventKind as EK,
                            Reject as R, Side)
from protocol.records import COMMAND

S = 10 ** 9                                       # ns per second
SYM, BUYER, SELLER, OTHER = 1, 1, 2, 3


class Desk:
    """An engine with the algorithms on; every command is kept, so it can be replayed."""

    def __init__(self, risk=False, seed=7, profile=None, bucket_ms=60_000):
        self.seed, self.profile, self.risk_on, self.bucket_ms = seed, profile, risk, bucket_ms
        self.e = self.fresh()
        self.cmds = []
        self.events = []
        self.clid = {a: 0 for a in range(1, 6)}
        self.seq = 0

    def fresh(self):
        e = Engine(max_orders=4096, max_accounts=8, max_symbols=4, max_levels=512)
        e.add_symbol(SYM, tick_size=1, lot_size=10)
        for a in range(1, 6):
            e.add_account(a)
        if self.risk_on:
            r = Risk(8, 4, max_strategies=8, cash_decimals=2)
            r.define_symbol(SYM, 2, 0)
            e.attach_risk(r)
        Algos(max_parents=64, max_accounts=8, max_symbols=4, max_slices=64, seed=self.seed,
              profile=self.profile, bucket_ms=self.bucket_ms).attach(e)
        return e

    def run(self, **fields):
        self.seq += 1
        fields.setdefault("ts_ns", 1000 * S + self.seq)
        rec = np.zeros(1, dtype=COMMAND.dtype)
        for k, v in fields.items():
            rec[k] = v
        rec["seq"] = self.seq
        self.cmds.append(rec)
        out = self.e.process(rec)
        self.events.append(out)
        return out

    def order(self, a, side, qty, price, tif=1):
        self.clid[a] += 1
        return self.run(kind=CK.NEW_ORDER, account=a, client_order_id=self.clid[a], symbol=SYM, side=side,
                        order_type=1, tif=tif, qty=qty, price=price)

    def algo(self, a, side, qty, kind=AlgoKind.TWAP, limit=0, start=1, end=11, end_action=AlgoEnd.CANCEL, **params):
        self.clid[a] += 1
        pa, pb = pack_params(**params)
        return self.run(kind=CK.ALGO_NEW, account=a, client_order_id=self.clid[a], symbol=SYM, side=side,
                        order_type=kind, tif=end_action, qty=qty, price=limit, stop_price=start * S,
                        expire_ts_ns=end * S, display_qty=pa, order_id=pb)

    def clock(self, t_ns):
        return self.run(kind=CK.ALGO_CLOCK, expire_ts_ns=t_ns)

    def parent(self, pid=1):
        return next((p for p in self.e.algos.parents() if p["parent_id"] == pid), None)


def kinds(evs):
    return [EK(int(k)) for k in evs["kind"]]


def reports(evs, kind):
    return evs[evs["kind"] == kind]


def test_twap_when_liquidity_ample_then_filled_within_one_slice_of_schedule_after_every_slice():
    d = Desk()
    for p in range(100, 120):
        d.order(SELLER, Side.SELL, 10_000, p)
    ev = d.algo(BUYER, Side.BUY, 10_000, slices=20, randomization_bps=1000, aggressiveness_bps=10_000,
                start=1, end=21)
    assert kinds(ev) == [EK.ALGO_ACCEPTED]
    slice_qty = 10_000 // 20
    for t in range(S, 22 * S, S // 10):                  # a clock every 100 ms
        ev = d.clock(t)
        p = d.parent()
        if p and t % S == S // 2:                         # after every slice (the middle of the next one)
            nominal = min(10_000, 10_000 * ((t - S) // S + 1) // 20)
            assert abs(p["filled"] - nominal) <= slice_qty, (t, p["filled"], nominal)
            assert p["filled"] == p["expected"]           # its own (randomized) schedule: exactly
    done = reports(np.concatenate(d.events), EK.ALGO_DONE)
    assert len(done) == 1 and done[0]["reason"] == AlgoEnd.FILLED and done[0]["qty"] == 10_000


def test_twap_when_randomized_then_slices_jitter_within_the_bound_and_sum_to_the_total():
    d = Desk(seed=11)
    d.algo(BUYER, Side.BUY, 5_000, slices=10, randomization_bps=2000, start=10, end=20)
    times, qtys = d.e.algos.schedule(1)
    step = S
    assert qtys[-1] == 5_000 and qtys == sorted(qtys)
    for i, (t, q) in enumerate(zip(times, qtys)):
        assert abs(t - (10 * S + i * step)) <= step * 2000 // 20000
        assert abs(q - 500 * (i + 1)) <= 500 * 2000 // 10000 + 10 or i == 9
    assert times != [10 * S + i * step for i in range(10)]     # it did jitter
    other = Desk(seed=12)
    other.algo(BUYER, Side.BUY, 5_000, slices=10, randomization_bps=2000, start=10, end=20)
    assert other.e.algos.schedule(1) != (times, qtys)          # another seed, another schedule


def test_algo_when_market_above_limit_then_no_child_priced_or_filled_beyond_it():
    rng = random.Random(5)
    for side in (Side.BUY, Side.SELL):
        d = Desk()
        limit = 1000
        ev = d.algo(BUYER, side, 5_000, limit=limit, slices=20, randomization_bps=500, aggressiveness_bps=5000,
                    end_action=AlgoEnd.SWEEP, start=1, end=21)
        assert kinds(ev) == [EK.ALGO_ACCEPTED]
        for t in range(S, 22 * S, S // 10):
            mid = limit + rng.randint(-40, 40)            # the market wanders across the limit
            d.order(SELLER, Side.SELL, 10 * rng.randint(1, 30), mid + rng.randint(0, 5), tif=3)
            d.order(SELLER, Side.SELL, 10 * rng.randint(1, 30), mid + rng.randint(1, 8))
            d.order(OTHER, Side.BUY, 10 * rng.randint(1, 30), mid - rng.randint(1, 8))
            d.order(OTHER, Side.BUY, 10 * rng.randint(1, 30), mid - rng.randint(0, 5), tif=3)
            d.clock(t)
        evs = np.concatenate(d.events)
        child = evs[(evs["flags"] & EventFlag.ALGO_CHILD) != 0]
        accepted = child[child["kind"] == EK.ACCEPTED]
        assert len(accepted) > 20
        fills = evs[(evs["kind"] == EK.FILL) & ((evs["account"] == BUYER) | (evs["other_account"] == BUYER))]
        assert len(fills) > 0
        if side == Side.BUY:
            assert (accepted["price"] <= limit).all() and (fills["price"] <= limit).all()
        else:
            assert (accepted["price"] >= limit).all() and (fills["price"] >= limit).all()
        assert len(reports(evs, EK.ALGO_DONE)) == 1


def test_pov_when_market_trades_then_participation_never_above_the_rate_at_any_clock():
    d = Desk()
    rng = random.Random(3)
    rate = 1500
    ev = d.algo(BUYER, Side.BUY, 1_000_000, kind=AlgoKind.POV, participation_bps=rate, aggressiveness_bps=5000,
                slices=60, start=1, end=30)
    assert kinds(ev) == [EK.ALGO_ACCEPTED]
    for t in range(S, 30 * S, S // 10):
        d.order(SELLER, Side.SELL, 10 * rng.randint(1, 50), 100 + rng.randint(0, 3))
        d.order(OTHER, Side.BUY, 10 * rng.randint(1, 50), 100 + rng.randint(0, 3), tif=3)   # market volume
        d.clock(t)
        p = d.parent()
        market = d.e.algos.symbol_volume(SYM) - p["vol_base"] - p["filled"]
        assert p["filled"] * 10_000 <= rate * market, (t, p["filled"], market)
    assert d.parent()["filled"] > 0


@pytest.mark.parametrize("kind", [AlgoKind.POV, AlgoKind.VWAP])
def test_participation_when_market_volume_moves_between_intervals_then_cap_holds_in_every_interval(kind):
    """Interval 1 trades 2,000 above the parent's limit (it cannot fill); interval 2 brings deep liquidity at
    the limit but trades only 100; interval 3 trades 1,000. Each interval's children volume stays within
    rate x that interval's market volume (its own fills left out), exactly (the cap is lot-floored). The
    cumulative rule (rate x the volume since the start) would let interval 2 use interval 1's allowance."""
    d = Desk()
    rate, t0, ivl = 1000, 1 * S, S                  # 10%; slices=4 over [1 s, 5 s): 1 s intervals
    ev = d.algo(BUYER, Side.BUY, 8_000, kind=kind, limit=100, participation_bps=rate, aggressiveness_bps=10_000,
                slices=4, start=1, end=5)
    assert kinds(ev) == [EK.ALGO_ACCEPTED]
    market = {5: [(SELLER, Side.SELL, 2000, 105, 1), (OTHER, Side.BUY, 2000, 105, 3)],       # 1.5 s
              15: [(SELLER, Side.SELL, 5000, 100, 1)],                                       # 2.5 s
              17: [(OTHER, Side.BUY, 100, 100, 3)],                                           # 2.7 s
              25: [(OTHER, Side.BUY, 1000, 100, 3)]}                                          # 3.5 s
    per_iv = {}                                      # interval -> [children volume, market volume]
    iv = -1
    for n, t in enumerate(range(t0, 5 * S, S // 10)):
        out = [d.clock(t)]
        iv = (t - t0) // ivl                         # the clock's events and those after it, until the next
        for a, side, qty, px, tif in market.get(n, []):
            out.append(d.order(a, side, qty, px, tif=tif))
        for evs in out:
            for f in evs[evs["kind"] == EK.FILL]:
                own = BUYER in (int(f["account"]), int(f["other_account"]))
                per_iv.setdefault(iv, [0, 0])[0 if own else 1] += int(f["qty"])
    assert per_iv[0] == [0, 2000] and per_iv[1][1] == 100 and per_iv[2][1] == 1000
    for k, (children, volume) in per_iv.items():
        assert children * 10_000 <= rate * volume, (k, children, volume)
    assert per_iv[1][0] == 10 and per_iv[2][0] == 100      # it does participate, up to the cap


def test_vwap_when_profile_configured_then_schedule_follows_it_and_cap_holds():
    d = Desk(profile=[1, 3, 0, 4])
    d.algo(BUYER, Side.BUY, 8_000, kind=AlgoKind.VWAP, slices=4, start=1, end=5)
    assert d.e.algos.schedule(1)[1] == [1000, 4000, 4000, 8000]


def test_vwap_when_no_profile_then_schedule_follows_the_symbols_traded_volume_per_bucket():
    d = Desk(bucket_ms=1000)
    for t, volume in zip(range(1, 5), (100, 300, 0, 400)):
        d.clock(t * S)                                    # the buckets roll on the clock
        if volume:
            d.order(SELLER, Side.SELL, volume, 100)
            d.order(OTHER, Side.BUY, volume, 100)
    d.algo(BUYER, Side.BUY, 8_000, kind=AlgoKind.VWAP, slices=4, start=5, end=9)
    assert d.e.algos.schedule(1)[1] == [1000, 4000, 4000, 8000]


def test_child_when_refused_by_risk_then_parent_paused_with_reason_and_no_retry():
    d = Desk(risk=True)
    d.run(kind=CK.MARK_PRICE, symbol=SYM, price=100)
    for a in (BUYER, SELLER):
        d.run(kind=CK.DEPOSIT, account=a, qty=10 ** 12)
    d.order(SELLER, Side.SELL, 100_000, 101)
    ev = d.algo(BUYER, Side.BUY, 1_000, slices=10, aggressiveness_bps=10_000, start=1, end=11)
    assert kinds(ev) == [EK.ALGO_ACCEPTED]
    d.clock(S)
    assert d.parent()["filled"] == 100
    d.run(kind=CK.KILL_SWITCH, account=BUYER, side=1)
    ev = d.clock(2 * S)
    assert kinds(ev) == [EK.REJECTED, EK.ALGO_PAUSED]
    assert ev[0]["reason"] == R.KILL_SWITCH and ev[0]["flags"] == 0 and ev[0]["client_order_id"] == 1
    assert ev[1]["reason"] == R.KILL_SWITCH
    p = d.parent()
    assert p["state"] == AlgoState.PAUSED and p["pause_reason"] == R.KILL_SWITCH
    for t in range(3, 8):
        assert len(d.clock(t * S)) == 0                 # paused: no child, no retry
    d.run(kind=CK.KILL_SWITCH, account=BUYER, side=2)
    ev = d.run(kind=CK.ALGO_RESUME, account=BUYER, order_id=1)
    assert kinds(ev) == [EK.ALGO_RESUMED]
    d.clock(8 * S)
    assert d.parent()["filled"] == 800                  # caught up with the schedule at once


def test_algo_new_when_parameters_bad_then_rejected_with_algo_codes():
    d = Desk()
    assert d.algo(BUYER, Side.BUY, 100, kind=9)[0]["reason"] == R.INVALID_ALGO
    assert d.algo(BUYER, Side.BUY, 100, slices=65)[0]["reason"] == R.INVALID_ALGO_PARAMS
    assert d.algo(BUYER, Side.BUY, 100, randomization_bps=6000)[0]["reason"] == R.INVALID_ALGO_PARAMS
    assert d.algo(BUYER, Side.BUY, 100, kind=AlgoKind.POV)[0]["reason"] == R.INVALID_ALGO_PARAMS
    assert d.algo(BUYER, Side.BUY, 100, start=5, end=5)[0]["reason"] == R.INVALID_ALGO_WINDOW
    assert d.algo(BUYER, Side.BUY, 105)[0]["reason"] == R.QTY_NOT_LOT_MULTIPLE
    assert d.algo(BUYER, Side.BUY, 100, kind=AlgoKind.IS, impact=100, volatility=100)[0]["reason"] == \
        R.NO_REFERENCE_PRICE_FOR_ALGO
    assert d.run(kind=CK.ALGO_CANCEL, account=BUYER, order_id=99)[0]["reason"] == R.UNKNOWN_ALGO
    d.clid[BUYER] = 0
    assert d.algo(BUYER, Side.BUY, 100)[0]["reason"] == R.DUPLICATE_CLIENT_ORDER_ID
    off = Engine(max_orders=64, max_accounts=8, max_symbols=4)
    off.add_account(1)
    assert off.command(kind=CK.ALGO_CLOCK)[0].reason == R.ALGOS_OFF


def test_cancel_when_child_resting_then_child_cancelled_and_parent_done():
    d = Desk()
    d.order(SELLER, Side.SELL, 1000, 110)
    d.order(OTHER, Side.BUY, 1000, 90)
    d.algo(BUYER, Side.BUY, 1000, slices=5, offset_ticks=2, start=1, end=6)
    ev = d.clock(S)
    child = ev[ev["kind"] == EK.ACCEPTED][0]
    assert child["price"] == 88 and child["flags"] == EventFlag.ALGO_CHILD and child["client_order_id"] == 1
    ev = d.run(kind=CK.ALGO_CANCEL, account=BUYER, client_order_id=1)
    assert kinds(ev) == [EK.CANCELLED, EK.ALGO_DONE] and ev[1]["reason"] == AlgoEnd.CANCELLED
    assert d.e.open_orders(BUYER) == [] and d.e.algos.active == 0
    d.e.validate()


def test_is_schedule_when_computed_then_equals_the_almgren_chriss_closed_form():
    qty, lot, n, dur = 1_000_000, 10, 20, 600 * S
    lam, vol, eta = 2000, 150, 1000                   # 2e-3 / bp, 1.5 bp / sqrt(s), 10 bp s
    got = is_schedule(qty, lot, n, dur, lam, vol, eta)
    kt2 = lam * 1e-6 * (vol / 100) ** 2 / (eta / 100)
    tau = dur / n / 1e9
    kappa_tau = math.acosh(1 + kt2 * tau * tau / 2)
    want = []
    for j in range(1, n + 1):
        left = qty * math.sinh(kappa_tau * (n - j)) / math.sinh(kappa_tau * n)
        want.append(qty if j == n else (qty - int(left)) // lot * lot)
    assert got == want
    assert got[0] > qty // n * 2                       # front-loaded: urgent with this risk aversion
    assert is_schedule(qty, lot, n, dur, 0, vol, eta) == [qty * j // n for j in range(1, n + 1)]   # lambda 0: TWAP
    # and an IS parent keeps exactly that schedule
    d = Desk()
    d.order(SELLER, Side.SELL, 10, 101)
    d.order(OTHER, Side.BUY, 10, 99)
    d.algo(BUYER, Side.BUY, qty, kind=AlgoKind.IS, slices=n, start=1, end=601, risk_aversion=lam, volatility=vol,
           impact=eta)
    assert d.e.algos.schedule(1)[1] == want
    assert d.parent()["arrival"] == 100


def random_session(d, rng, n_clocks=120):
    """Other accounts trade around 100 while four parents work; clocks every 100 ms."""
    d.order(SELLER, Side.SELL, 2000, 103)
    d.order(OTHER, Side.BUY, 2000, 97)
    d.algo(BUYER, Side.BUY, 3000, slices=12, randomization_bps=3000, aggressiveness_bps=3000, start=1, end=10)
    d.algo(BUYER, Side.SELL, 2000, kind=AlgoKind.POV, participation_bps=2000, limit=98, end=12)
    d.algo(4, Side.BUY, 2000, kind=AlgoKind.VWAP, participation_bps=3000, slices=8, end=9, end_action=AlgoEnd.SWEEP)
    d.algo(5, Side.SELL, 2000, kind=AlgoKind.IS, slices=10, risk_aversion=3000, volatility=200, impact=500, end=8)
    for k in range(n_clocks):
        for _ in range(rng.randint(0, 3)):
            side = rng.choice((Side.BUY, Side.SELL))
            px = 100 + rng.randint(-3, 3)
            d.order(rng.choice((SELLER, OTHER)), side, 10 * rng.randint(1, 20), px, tif=rng.choice((1, 3)))
        if k == 40:
            d.run(kind=CK.ALGO_PAUSE, account=BUYER, order_id=1)
        if k == 55:
            d.run(kind=CK.ALGO_RESUME, account=BUYER, order_id=1)
        if k == 60:
            d.run(kind=CK.ALGO_AMEND, account=4, order_id=3, qty=2500, expire_ts_ns=10 * S)
        d.clock(S + k * S // 10)


def test_replay_when_same_commands_fed_again_then_same_events_and_state_hash():
    d = Desk()
    random_session(d, random.Random(9))
    evs = np.concatenate(d.events)
    assert (evs["flags"] & EventFlag.ALGO_CHILD).sum() > 50 and len(reports(evs, EK.ALGO_DONE)) == 4
    cmds = np.concatenate(d.cmds)
    again = d.fresh()
    assert again.process(cmds).tobytes() == evs.tobytes()
    assert again.state_hash() == d.e.state_hash()
    # through a snapshot: export halfway, import into a fresh engine, feed the rest
    half = len(cmds) // 2
    first = d.fresh()
    first.process(cmds[:half])
    snap = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in first.export_state().items()}
    restored = d.fresh()
    restored.import_state(snap)
    assert restored.state_hash() == first.state_hash()
    assert restored.process(cmds[half:]).tobytes() == np.concatenate([e for e in d.events][half:]).tobytes()
    assert restored.state_hash() == d.e.state_hash()
    restored.validate()


def test_state_hash_when_parent_state_differs_then_hash_differs():
    a, b = Desk(), Desk()
    a.algo(BUYER, Side.BUY, 100)
    b.algo(BUYER, Side.BUY, 110)
    assert a.e.state_hash() != b.e.state_hash()


def test_parent_layout_when_compiled_then_struct_and_dtype_agree():
    from engine.algos import PARENT_DTYPE, SIZEOF_PARENT
    assert SIZEOF_PARENT == PARENT_DTYPE.itemsize == 232


def test_market_vwap_when_others_trade_then_parent_measured_against_it_without_its_own_fills():
    d = Desk()
    d.order(SELLER, Side.SELL, 100, 100)
    d.algo(BUYER, Side.BUY, 100, slices=1, aggressiveness_bps=10_000, start=1, end=5)
    d.clock(S)                                            # buys 100 at 100 (its own fill: not the market's)
    d.algo(BUYER, Side.BUY, 1000, slices=2, start=1, end=50, limit=90)
    d.clock(2 * S)                                        # (its child rests at its limit, out of the way)
    for px in (100, 102, 102):                            # the market: 100 @ 100, 200 @ 102
        d.order(SELLER, Side.SELL, 100, px)
        d.order(OTHER, Side.BUY, 100, px, tif=3)
    p = d.parent(2)
    assert p["market_vwap"] == 101 and p["filled"] == 0 and p["slippage_vwap_cbps"] == 0
    d.order(SELLER, Side.SELL, 10, 90)                    # now it buys 10 at 90, against 30400 / 300 = 101.33
    p = d.parent(2)
    assert p["filled"] == 10 and p["market_vwap"] == 101
    assert p["slippage_vwap_cbps"] == (90 * 300 - 30400) * 10**6 // 30400 == -111843   # -1118.43 bp


def test_interval_vwap_when_parent_fills_in_two_slices_then_each_fill_measured_against_its_own_interval():
    """Slice 1 buys 100 at 101 while the rest of the market trades 100 at 99 and 100 at 100 (VWAP 99.5);
    slice 2 buys 100 at 103 while the market trades 100 at 104. Against the interval VWAPs the benchmark is
    100 x 99.5 + 100 x 104 = 20,350 for 20,400 paid: +24.57 bp (the VWAP since the start, 101, says +99 bp)."""
    d = Desk()
    d.clock(S // 2)
    d.order(SELLER, Side.SELL, 100, 101)
    d.order(SELLER, Side.SELL, 100, 103)
    d.algo(BUYER, Side.BUY, 300, slices=3, aggressiveness_bps=10_000, start=1, end=4)
    d.clock(S)                                           # slice 1: 100 at 101
    for px in (99, 100):                                 # the rest of the market
        d.order(SELLER, Side.SELL, 100, px)
        d.order(OTHER, Side.BUY, 100, px, tif=3)
    p = d.parent()
    assert p["filled"] == 100 and p["notional"] == 10_100
    assert p["interval_vwap"] == (19_900 + 100) // 200 == 100
    assert p["slippage_interval_cbps"] == (10_100 - 9_950) * 10**6 // 9_950 == 15_075
    d.clock(2 * S)                                       # slice 2: 100 at 103
    assert d.parent()["interval_vwap"] == 0              # a new interval: no market volume yet
    d.order(SELLER, Side.SELL, 100, 104)
    d.order(OTHER, Side.BUY, 100, 104, tif=3)
    p = d.parent()
    assert p["filled"] == 200 and p["notional"] == 20_400 and p["interval_vwap"] == 104
    assert p["slippage_interval_cbps"] == (20_400 - 20_350) * 10**6 // 20_350 == 2_457
    assert p["market_vwap"] == 101 and p["slippage_vwap_cbps"] == 9_900       # 102 against 101 since the start


def test_is_when_volatility_not_given_then_estimated_from_the_symbols_bucket_closes():
    d = Desk(bucket_ms=1000)
    d.clock(S)
    for t, px in zip((2, 3, 4), (100, 101, 100)):        # trades at 100, 101, 100, one per 1 s bucket
        d.order(SELLER, Side.SELL, 10, px)
        d.order(OTHER, Side.BUY, 10, px, tif=3)
        d.clock(t * S)
    d.order(SELLER, Side.SELL, 10, 101)
    d.order(OTHER, Side.BUY, 10, 99)
    ev = d.algo(BUYER, Side.BUY, 1000, kind=AlgoKind.IS, slices=5, start=4, end=9, risk_aversion=2000, impact=1000)
    assert kinds(ev) == [EK.ALGO_ACCEPTED]
    r1, r2 = 10_000, -9901                                # 1/100 bp: +1% then -0.99% (floored)
    sigma = round(math.sqrt((r1 * r1 + r2 * r2) / 2 / 1.0))
    assert d.parent()["volatility"] == sigma == 9951
    assert d.e.algos.schedule(1)[1] == is_schedule(1000, 10, 5, 5 * S, 2000, sigma, 1000)
    fresh = Desk()                                        # no price history: refused
    assert fresh.algo(BUYER, Side.BUY, 100, kind=AlgoKind.IS, impact=100, limit=0)[0]["reason"] == \
        R.NO_REFERENCE_PRICE_FOR_ALGO
    fresh.order(SELLER, Side.SELL, 10, 101)
    fresh.order(OTHER, Side.BUY, 10, 99)
    assert fresh.algo(BUYER, Side.BUY, 100, kind=AlgoKind.IS, impact=100)[0]["reason"] == R.INVALID_ALGO_PARAMS


def test_amend_when_total_end_and_limit_change_then_schedule_rescaled_stretched_and_children_clamped():
    d = Desk()
    d.order(SELLER, Side.SELL, 100_000, 105)
    d.algo(BUYER, Side.BUY, 1000, slices=10, limit=110, aggressiveness_bps=10_000, start=1, end=11)
    d.clock(S)
    assert d.parent()["filled"] == 100
    ev = d.run(kind=CK.ALGO_AMEND, account=BUYER, order_id=1, qty=2000, price=104, expire_ts_ns=21 * S)
    assert kinds(ev) == [EK.ALGO_AMENDED] and ev[0]["leaves"] == 1900
    times, qtys = d.e.algos.schedule(1)
    assert qtys == [200 * (i + 1) for i in range(10)]                # rescaled to the new total
    assert times[1] == S + 2 * S and times[9] == S + 18 * S           # the rest stretched over the new end
    ev = d.clock(S + S // 10)                                         # kicked: works the current slice at once
    child = ev[ev["kind"] == EK.ACCEPTED]
    assert len(child) == 2 and (child["price"] == 104).all()          # IOC at the far touch 105, clamped to 104;
    assert child["qty"].tolist() == [100, 100]                        # then the rest resting there too
    assert d.parent()["filled"] == 100                                # nothing at 104 or better to take
    assert d.run(kind=CK.ALGO_AMEND, account=BUYER, order_id=1, qty=50)[0]["reason"] == R.INVALID_ALGO_AMEND


def test_algo_command_when_rejected_then_counted_by_the_engine_wide_error_breaker():
    from protocol.codes import LimitKind, LimitScope
    d = Desk(risk=True)
    d.run(kind=CK.SET_LIMIT, side=LimitScope.DEFAULT, order_type=LimitKind.ERROR_THRESHOLD, qty=1)
    ev = d.run(kind=CK.ALGO_CANCEL, account=BUYER, order_id=42)
    assert kinds(ev) == [EK.REJECTED] and ev[0]["reason"] == R.UNKNOWN_ALGO and ev[0]["order_id"] == 42
    ev = d.run(kind=CK.ALGO_CANCEL, account=BUYER, order_id=42)       # the second error within a second
    assert kinds(ev) == [EK.REJECTED, EK.BREAKER]
