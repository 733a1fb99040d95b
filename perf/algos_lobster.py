"""Execution algorithms against real order flow: the AMZN LOBSTER day (../shared/data/lobster,
AMZN_5_augmented.csv.gz, replayed as its README says) as the rest of the market, while parents buy.
`python -m perf.algos_lobster [--share 0.02]`.

In process, through the same Engine.process path the server applies (no sockets, no journal: the
server adds neither to what the algorithms decide; what they decide is a function of the commands).
The day's resting orders belong to 20 maker accounts, its executions to 10 taker accounts (IOCs at the
execution price). ALGO_CLOCKs are inserted at every 100 ms of LOBSTER time, as the server's timer would
journal them. Our children take liquidity the day's later messages refer to: an execution against an
order we already consumed fills less or another order, an amend of one sets what is left.

Runs:
  day: a TWAP, a VWAP and an IS parent, each buying --share of the whole day's executed volume over the
    whole session (09:30-16:00), each in its own engine (the same market, not competing), 78 slices
    (5 minutes); VWAP's profile is the day's own executed volume per 5-minute bucket (an oracle: the
    profile a good historical one approaches; the engine has no multi-day history) with a 20%
    participation cap; IS with lambda 1e-6/bp, sigma 1.5 bp/sqrt(s), eta 655 bp s (kappa T ~ 1.4; 30-minute
    window: lambda 5e-6, eta 10 bp s, kappa T ~ 2). Aggressiveness 30%,
    passive children 0 ticks behind the touch, the rest swept at the end.
  trend: TWAP against IS over the 30-minute window of the day with the largest mid rise, each buying
    --share of that window's volume.
Reported per parent: filled, slippage against the arrival mid and against the market's VWAP over its
window (both bp, positive = paid more), participation (its fills / the market's volume in its window),
and schedule tracking (the largest and mean |filled - expected| at the clocks, % of the total).
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import time

import numpy as np

from engine.algos import Algos, pack_params
from engine.core import Engine
from engine.testing import shared_dir
from perf.__main__ import OUT, machine
from protocol.codes import AlgoEnd, AlgoKind, CommandKind as CK, EventKind as EK, Side, TimeInForce
from protocol.records import COMMAND

DATA = shared_dir() / "data" / "lobster"
MAKERS, TAKERS, OURS = 20, 10, 41
S = 10 ** 9
OPEN, CLOSE = 34_200 * S, 57_600 * S
TICK = S // 10


def t_ns(text):
    s, _, frac = text.partition(".")
    return int(s) * S + int(frac.ljust(9, "0")[:9])


def load():
    with open(DATA / "AMZN_5_ioc_disagreements.csv") as f:
        disagree = {(int(r["ref_row"]), int(r["named_id"])) for r in csv.DictReader(f)}
    with gzip.open(DATA / "AMZN_5_augmented.csv.gz", "rt") as f:
        msgs = [(int(r["ref_row"]), t_ns(r["time"]), int(r["type"]), int(r["order_id"]), int(r["size"]),
                 int(r["price"]), Side.BUY if r["direction"] == "1" else Side.SELL) for r in csv.DictReader(f)]
    return msgs, disagree


def market_profile(msgs, start, end, buckets):
    """Executed volume (type 4) per bucket of [start, end)."""
    vol = [0] * buckets
    for _, t, typ, _, size, _, _ in msgs:
        if typ == 4 and start <= t < end:
            vol[min(buckets - 1, (t - start) * buckets // (end - start))] += size
    return vol


class Run:
    """One engine: the day's flow plus our parents; the market's trades and our fills recorded."""

    def __init__(self, profile=None):
        self.e = Engine(max_orders=1 << 18, max_symbols=2, max_levels=1 << 16, max_accounts=64)
        Algos(max_parents=8, max_accounts=64, max_symbols=2, max_slices=128, profile=profile).attach(self.e)
        self.e.add_symbol(1)
        for a in range(1, 64):
            self.e.add_account(a)
        self.rec = np.zeros(1, dtype=COMMAND.dtype)
        self.seq = 0
        self.clid = {}
        self.trades = []          # (t, price, qty, ours)
        self.track = {}           # parent id -> [(t, filled, expected)]
        self.done = {}
        self.now = 0

    def cmd(self, **f):
        self.seq += 1
        r = self.rec
        r.fill(0)
        for k, v in f.items():
            r[k] = v
        r["seq"] = self.seq
        r["symbol"] = 1
        out = self.e.process(r)
        for ev in out[out["kind"] == EK.FILL]:
            ours = int(ev["account"]) >= OURS or int(ev["other_account"]) >= OURS
            self.trades.append((self.now, int(ev["price"]), int(ev["qty"]), ours))
        for ev in out[out["kind"] == EK.ALGO_DONE]:
            self.done[int(ev["order_id"])] = ev.copy()
        return out

    def order(self, a, side, price, qty, tif=TimeInForce.GTC):
        self.clid[a] = self.clid.get(a, 0) + 1
        out = self.cmd(kind=CK.NEW_ORDER, account=a, client_order_id=self.clid[a], side=side, order_type=1, tif=tif,
                       stp=4, price=price, qty=qty)
        return int(out[0]["order_id"]) if out[0]["kind"] == EK.ACCEPTED else 0

    def algo(self, a, kind, qty, start, end, **params):
        self.clid[a] = self.clid.get(a, 0) + 1
        pa, pb = pack_params(**params)
        out = self.cmd(kind=CK.ALGO_NEW, account=a, client_order_id=self.clid[a], side=Side.BUY, order_type=kind,
                       tif=AlgoEnd.SWEEP, qty=qty, stop_price=start, expire_ts_ns=end, display_qty=pa, order_id=pb)
        assert out[0]["kind"] == EK.ALGO_ACCEPTED, out
        return int(out[0]["order_id"]), int(out[0]["price"])

    def clock(self, t):
        self.now = t
        self.cmd(kind=CK.ALGO_CLOCK, expire_ts_ns=t)
        for p in self.e.algos.parents():
            self.track.setdefault(p["parent_id"], []).append((t, p["filled"], p["expected"], p["qty"]))

    def mid(self):
        bids, asks = self.e.depth(1, 1)
        return (bids[0][0] + asks[0][0]) // 2 if bids and asks else None


def replay(msgs, disagree, run, plan, until=CLOSE):
    """The day through `run`; plan(run, t) places parents when their time comes (called at each clock)."""
    resting = {}                                         # LOBSTER id -> (account, engine order id)
    next_clock = OPEN
    for ref, t, typ, lid, size, price, side in msgs:
        while t >= next_clock and next_clock <= until:
            plan(run, next_clock)
            run.clock(next_clock)
            next_clock += TICK
        run.now = t
        if typ == 1:
            a = 1 + lid % MAKERS
            oid = run.order(a, side, price, size)
            if oid:
                resting[lid] = (a, oid)
        elif typ in (2, 3) or (typ == 4 and (ref, lid) in disagree):
            o = resting.get(lid)
            if o is None:
                continue
            live = run.e.order(o[1])
            if live is None:
                del resting[lid]
                continue
            if typ == 3 or live["leaves"] <= size:
                run.cmd(kind=CK.CANCEL, account=o[0], order_id=o[1])
                del resting[lid]
            else:
                run.cmd(kind=CK.AMEND, account=o[0], order_id=o[1], qty=live["leaves"] - size)
        elif typ == 4:
            run.order(1 + MAKERS + ref % TAKERS, 3 - side, price, size, tif=TimeInForce.IOC)
    while next_clock <= until:
        run.clock(next_clock)
        next_clock += TICK


def report(run, pid, arrival, start, end, name):
    done = run.done.get(pid)
    window = [(p, q) for t, p, q, ours in run.trades if start <= t <= end and not ours]
    mvol = sum(q for _, q in window)
    mvwap = sum(p * q for p, q in window) / mvol
    if done is None:
        return dict(name=name, error="not done")
    filled, avg = int(done["qty"]), int(done["price"])
    tr = [(abs(f - x) / q) for _, f, x, q in run.track.get(pid, []) if q]
    return dict(name=name, filled=filled, total=filled + int(done["leaves"]), avg_price=avg / 1e4,
                arrival=arrival / 1e4, market_vwap=mvwap / 1e4,
                slip_arrival_bps=(avg - arrival) / arrival * 1e4, slip_vwap_bps=(avg - mvwap) / mvwap * 1e4,
                participation=filled / mvol if mvol else 0.0,
                track_max_pct=100 * max(tr) if tr else 0.0, track_mean_pct=100 * sum(tr) / len(tr) if tr else 0.0,
                end=AlgoEnd(int(done["reason"])).name)


def trend_window(msgs, minutes=30):
    """[start, end) of the `minutes` window with the largest rise of the executed price."""
    pts = [(t, p) for _, t, typ, _, _, p, _ in msgs if typ == 4 and OPEN <= t < CLOSE]
    best, span, j = None, minutes * 60 * S, 0
    for i, (t0, p0) in enumerate(pts):
        while j < len(pts) and pts[j][0] < t0 + span:
            j += 1
        if j == len(pts):
            break
        rise = pts[j - 1][1] - p0
        if best is None or rise > best[0]:
            best = (rise, t0)
    start = (best[1] // TICK + 1) * TICK
    return start, start + span, best[0]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--share", type=float, default=0.02, help="each parent's share of the window's volume")
    args = p.parse_args(argv)
    if not (DATA / "AMZN_5_augmented.csv.gz").exists():
        raise SystemExit(f"no LOBSTER data in {DATA}")
    t0 = time.time()
    msgs, disagree = load()
    day_vol = sum(m[4] for m in msgs if m[2] == 4 and OPEN <= m[1] < CLOSE)
    qty = int(day_vol * args.share)
    prof = market_profile(msgs, OPEN, CLOSE, 78)
    results = []
    is_day = dict(risk_aversion=1, volatility=150, impact=65535)     # kappa T ~ 1.4 over the session
    is_trend = dict(risk_aversion=5, volatility=150, impact=1000)    # kappa T ~ 2 over 30 minutes
    for name, kind, extra, profile in (("TWAP", AlgoKind.TWAP, dict(randomization_bps=2000), None),
                                       ("VWAP", AlgoKind.VWAP, dict(participation_bps=2000), prof),
                                       ("IS", AlgoKind.IS, is_day, None)):
        run = Run(profile)
        placed = {}

        def plan(r, t, kind=kind, extra=extra, placed=placed):
            if not placed and t >= OPEN + 60 * S:         # a minute in: a two-sided book and a mid
                placed["pid"], placed["arrival"] = r.algo(OURS, kind, qty, t, CLOSE - 60 * S, slices=78,
                                                          aggressiveness_bps=3000, **extra)
                placed["start"] = t
        replay(msgs, disagree, run, plan)
        results.append(report(run, placed["pid"], placed["arrival"], placed["start"], CLOSE - 60 * S,
                              f"day {name}"))
        print(results[-1], flush=True)
    start, end, rise = trend_window(msgs)
    wvol = sum(m[4] for m in msgs if m[2] == 4 and start <= m[1] < end)
    for name, kind, extra in (("TWAP", AlgoKind.TWAP, {}), ("IS", AlgoKind.IS, is_trend)):
        run = Run()
        placed = {}

        def plan(r, t, kind=kind, extra=extra, placed=placed):
            if not placed and t >= start:
                placed["pid"], placed["arrival"] = r.algo(OURS, kind, int(wvol * args.share), t, end, slices=30,
                                                          aggressiveness_bps=3000, **extra)
        replay(msgs, disagree, run, plan, until=end + S)
        results.append(report(run, placed["pid"], placed["arrival"], start, end, f"trend {name}"))
        results[-1]["window"] = (start / S, end / S, rise / 1e4)
        print(results[-1], flush=True)
    out = dict(machine=machine(), share=args.share, day_volume=day_vol, results=results,
               seconds=round(time.time() - t0, 1))
    OUT.mkdir(exist_ok=True)
    path = OUT / f"algos-lobster-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=1, default=float))
    print(f"-> {path} ({out['seconds']} s)")


if __name__ == "__main__":
    main()
