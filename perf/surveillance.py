"""Surveillance on a real day: recall and false alerts, and the reading rate.

    python -m perf.surveillance [--episodes 10] [--keep DIR] [--runs N] [--baseline OTHER/surveillance.py]

Builds a journal (async durability, batches of 256 commands, outside the timing) of the AMZN LOBSTER
day (../shared/data/lobster/AMZN_5_augmented.csv.gz, replayed as its README says: adds are GTC limits,
partial cancels amends, executions IOC limits from the opposite side) with accounts given to the
flow: the resting orders' to 20 maker accounts (by LOBSTER order id), the executions' to 10 taker
accounts, each its own owner. Into that flow, spread evenly over the day, it injects --episodes
episodes of each type with their own accounts:
  wash_trade           owner inj-wash (accounts 41, 42): 41 offers inside the spread, 42 takes it (IOC)
  spoofing             owner inj-spoof (43, 44): 43 bids 5,000 shares 5 cents behind the best bid,
                       44 sells 100 with an IOC to a bid account 45 placed inside the spread, 43 cancels
  excessive_messaging  account 46: 300 adds and cancels far from the touch, 1 ns apart
  layering             owner inj-layer (47): 4 asks of 500 at 2, 4, 6 and 8 cents behind the best ask, then
                       47 buys 100 with an IOC from an ask account 48 placed inside the spread, then cancels
                       the 4 asks
  momentum_ignition    owner inj-momo (49): 3 IOC buys 1 ns apart (100 at the ask, then 3,000 up to 15 cents
                       and 3,000 up to 30 cents above it: they sweep the real asks), then an IOC sell of 100
                       at the best bid 5 s later
and one marking_the_close episode after the day's last message: owner inj-close (51) buys with
IOCs (3 x 8,000) sweeping up to 50 cents, 1 and 1.50 dollars above the ask in the last second, then the day's END_OF_DAY.
(Wash, spoofing, messaging and layering episodes leave the book as they found them, so the real flow goes
on unchanged; momentum and the close take real asks.) Then runs
the surveillance loop over the journal (engine.surveillance: the reader, the detectors, the store) and
reports, per type: episodes found (one alert within the episode's commands, of its owner), and false
alerts (any other alert) per 100,000 background orders; and the rate in journal events per second.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import importlib.util
import io
import os
import statistics
import sys
import tempfile
import time
from contextlib import redirect_stdout

import numpy as np

from engine.core import Engine
from engine.journal import Journal
from engine.testing import shared_dir
from protocol.codes import CommandKind, OrderType, SelfTradePrevention, Side, TimeInForce
from protocol.records import COMMAND

DATA = shared_dir() / "data" / "lobster"
TYPES = ("wash_trade", "spoofing", "excessive_messaging", "layering", "momentum_ignition", "marking_the_close")
N_KINDS = 5                          # injected through the day; marking the close once, at its end
DAY_NS = 1340236800 * 10**9          # 2012-06-21T00:00:00Z
MAKERS, TAKERS = 20, 10
CONFIG = """
[[surveillance.owners]]
name = "inj-wash"
accounts = [41, 42]
[[surveillance.owners]]
name = "inj-spoof"
accounts = [43, 44]
[[surveillance.owners]]
name = "inj-stuff"
accounts = [46]
[[surveillance.owners]]
name = "inj-layer"
accounts = [47]
[[surveillance.owners]]
name = "inj-momo"
accounts = [49]
[[surveillance.owners]]
name = "inj-close"
accounts = [51]
[surveillance.momentum]
min_move_bps = {momo_bps}
min_qty = {momo_qty}
[surveillance.close]
min_move_bps = {close_bps}
[surveillance.spoofing]
min_qty = {min_qty}
min_away = 100
[surveillance.messaging]
max_messages = {max_messages}
min_messages = {min_messages}
"""


def ts_of(text: str) -> int:
    s, _, frac = text.partition(".")
    return DAY_NS + int(s) * 10**9 + int(frac.ljust(9, "0")[:9])


class Builder:
    def __init__(self, path):
        self.j = Journal(path, durability="async", map_size=1 << 32)
        self.e = Engine(max_orders=1 << 18, max_symbols=2, max_levels=1 << 16, max_accounts=64)
        self.e.add_symbol(1)
        for a in range(1, 64):
            self.e.add_account(a)
        self.rows = []
        self.seq = 0
        self.clid = {}
        self.orders = 0
        self.pending = []                # (ts, step): an injected episode's step due later in the day

    def cmd(self, kind, account, ts, side=0, price=0, qty=0, clid=0, tif=TimeInForce.GTC):
        self.seq += 1
        if kind == CommandKind.NEW_ORDER:
            self.clid[account] = clid = self.clid.get(account, 0) + 1
            self.orders += 1
        new = kind == CommandKind.NEW_ORDER
        self.rows.append((kind, side, OrderType.LIMIT if new else 0, tif if new else 0,
                          SelfTradePrevention.NONE, account, self.seq, ts, clid, price, qty))
        if len(self.rows) >= 256:
            self.flush()
        return clid

    def flush(self):
        if not self.rows:
            return
        c = np.zeros(len(self.rows), dtype=COMMAND.dtype)
        for f, col in zip(("kind", "side", "order_type", "tif", "stp", "account", "seq", "ts_ns",
                           "client_order_id", "price", "qty"), zip(*self.rows)):
            c[f] = col
        c["symbol"] = 1
        self.e.feed(c)
        self.j.append(c, self.e.events_view())
        self.e.clear_events()
        self.rows = []

    def touch(self):
        self.flush()
        bids, asks = self.e.depth(1, 1)
        return (bids[0][0] if bids else None), (asks[0][0] if asks else None)


def build(path, episodes):
    with open(DATA / "AMZN_5_ioc_disagreements.csv") as f:
        disagree = {(int(r["ref_row"]), int(r["named_id"])) for r in csv.DictReader(f)}
    with gzip.open(DATA / "AMZN_5_augmented.csv.gz", "rt") as f:
        msgs = list(csv.DictReader(f))
    b = Builder(path)
    at = {len(msgs) * (k + 1) // (N_KINDS * episodes + 1): k % N_KINDS for k in range(N_KINDS * episodes)}
    resting = {}                                         # LOBSTER id -> (account, clid, leaves)
    injected = []                                        # (type, owner, first seq, last seq)
    for i, r in enumerate(msgs):
        typ, lid, size, price = int(r["type"]), int(r["order_id"]), int(r["size"]), int(r["price"])
        side = Side.BUY if r["direction"] == "1" else Side.SELL
        ts = ts_of(r["time"])
        while b.pending and b.pending[0][0] <= ts:      # an episode's later step, in time order
            b.pending.pop(0)[1]()
        if i in at:
            injected.append(inject(b, at[i], ts))
            if injected[-1] is None:          # a side of the book empty: the next message
                injected.pop()
                at[i + 1] = at[i]
        if typ == 1:
            a = 1 + lid % MAKERS
            resting[lid] = [a, b.cmd(CommandKind.NEW_ORDER, a, ts, side, price, size), size]
        elif typ in (2, 3) or (typ == 4 and (int(r["ref_row"]), lid) in disagree):
            o = resting.get(lid)
            if o is None:
                continue
            if typ == 3 or o[2] <= size:
                b.cmd(CommandKind.CANCEL, o[0], ts, clid=o[1])
                del resting[lid]
            else:
                o[2] -= size
                b.cmd(CommandKind.AMEND, o[0], ts, qty=o[2], clid=o[1])
        elif typ == 4:
            a = 1 + MAKERS + i % TAKERS
            b.cmd(CommandKind.NEW_ORDER, a, ts, 3 - side, price, size, tif=TimeInForce.IOC)
            o = resting.get(lid)
            if o is not None:
                o[2] -= size
                if o[2] <= 0:
                    del resting[lid]
    injected.append(inject_close(b, ts_of(msgs[-1]["time"])))
    b.flush()
    background = b.orders - sum(n for *_, n in injected)
    b.j.close()
    return [x[:4] for x in injected], background, b.seq


def inject(b, kind, ts):
    bid, ask = b.touch()
    first = b.seq + 1
    orders = b.orders
    if bid is None or ask is None:
        return None
    t = lambda k: ts + k                                                   # noqa: E731
    if kind == 0:
        p = ask - 1
        b.cmd(CommandKind.NEW_ORDER, 41, t(0), Side.SELL, p, 100)
        b.cmd(CommandKind.NEW_ORDER, 42, t(1), Side.BUY, p, 100, tif=TimeInForce.IOC)
        ep = ("wash_trade", "inj-wash")
    elif kind == 1:
        c = b.cmd(CommandKind.NEW_ORDER, 43, t(0), Side.BUY, bid - 500, 5000)
        b.cmd(CommandKind.NEW_ORDER, 45, t(1), Side.BUY, bid + 1, 100)
        b.cmd(CommandKind.NEW_ORDER, 44, t(2), Side.SELL, bid + 1, 100, tif=TimeInForce.IOC)
        b.cmd(CommandKind.CANCEL, 43, t(3), clid=c)
        ep = ("spoofing", "inj-spoof")
    elif kind == 2:
        for k in range(150):
            c = b.cmd(CommandKind.NEW_ORDER, 46, t(2 * k), Side.SELL, ask + 100_000 + k, 1)
            b.cmd(CommandKind.CANCEL, 46, t(2 * k + 1), clid=c)
        ep = ("excessive_messaging", "inj-stuff")
    elif kind == 3:
        layers = [b.cmd(CommandKind.NEW_ORDER, 47, t(k), Side.SELL, ask + 200 * (k + 1), 500) for k in range(4)]
        b.cmd(CommandKind.NEW_ORDER, 48, t(10), Side.SELL, ask - 1, 100)
        b.cmd(CommandKind.NEW_ORDER, 47, t(11), Side.BUY, ask - 1, 100, tif=TimeInForce.IOC)
        for k, c in enumerate(layers):
            b.cmd(CommandKind.CANCEL, 47, t(20 + k), clid=c)
        ep = ("layering", "inj-layer")
    else:
        b.cmd(CommandKind.NEW_ORDER, 49, t(0), Side.BUY, ask, 100, tif=TimeInForce.IOC)
        b.cmd(CommandKind.NEW_ORDER, 49, t(1), Side.BUY, ask + 1500, 3000, tif=TimeInForce.IOC)
        b.cmd(CommandKind.NEW_ORDER, 49, t(2), Side.BUY, ask + 3000, 3000, tif=TimeInForce.IOC)
        b.flush()
        ep = ["momentum_ignition", "inj-momo", first, b.seq, b.orders - orders]

        def reversal(due=ts + 5 * 10**9):                                # 5 s later, among the real flow
            bid, _ = b.touch()
            b.cmd(CommandKind.NEW_ORDER, 49, due, Side.SELL, bid, 100, tif=TimeInForce.IOC)
            b.flush()
            ep[3], ep[4] = b.seq, ep[4] + 1
        b.pending.append((ts + 5 * 10**9, reversal))
        return ep
    b.flush()
    return (*ep, first, b.seq, b.orders - orders)


def inject_close(b, ts):
    """Marking the close after the day's last message, then END_OF_DAY (the close)."""
    _, ask = b.touch()
    first, orders = b.seq + 1, b.orders
    for k in range(3):
        b.cmd(CommandKind.NEW_ORDER, 51, ts + (k + 1) * 1_000_000, Side.BUY, ask + 5000 * (k + 1), 8000,
              tif=TimeInForce.IOC)
    b.cmd(CommandKind.END_OF_DAY, 0, ts + 10_000_000)
    b.flush()
    return ("marking_the_close", "inj-close", first, b.seq, b.orders - orders)


def score(injected, alerts) -> dict:
    """Per type: (episodes injected, found with exactly one alert, the other alerts: false)."""
    out, used = {}, set()
    for typ in TYPES:
        eps = [x for x in injected if x[0] == typ]
        found = 0
        for _, owner, first, last in eps:
            hit = [x for x in alerts if x.type == typ and x.owner == owner and first <= x.seq <= last]
            found += len(hit) == 1
            used.update(x.id for x in hit)
        out[typ] = (len(eps), found, [x for x in alerts if x.type == typ and x.id not in used])
    return out


def main(argv=None):
    from engine import surveillance as sv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=10, help="injected episodes of each type")
    p.add_argument("--min-qty", type=int, default=2000, help="spoofing.min_qty (shares)")
    p.add_argument("--max-messages", type=int, default=250, help="messaging.max_messages (per 1 s)")
    p.add_argument("--min-messages", type=int, default=100, help="messaging.min_messages (order-to-trade rule)")
    p.add_argument("--momo-bps", type=int, default=5, help="momentum.min_move_bps")
    p.add_argument("--momo-qty", type=int, default=1000, help="momentum.min_qty (shares)")
    p.add_argument("--close-bps", type=int, default=5, help="close.min_move_bps")
    p.add_argument("--runs", type=int, default=1, help="surveil runs over the journal (the median is reported)")
    p.add_argument("--baseline", help="another engine/surveillance.py (e.g. main's, checked out to a temp dir): run "
                   "alternately with the current one over the same journal, its alerts compared byte for byte")
    p.add_argument("--keep", help="build the journal and store here (default: a temp dir)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or tmp
        os.makedirs(root, exist_ok=True)
        t = time.perf_counter()
        injected, background, commands = build(os.path.join(root, "journal"), args.episodes)
        print(f"journal: {commands} commands, {background} background orders, built in "
              f"{time.perf_counter() - t:.1f} s", file=sys.stderr)
        cfg_path = os.path.join(root, "config.toml")
        with open(cfg_path, "w") as f:
            f.write(CONFIG.format(min_qty=args.min_qty, max_messages=args.max_messages,
                                  min_messages=args.min_messages, momo_bps=args.momo_bps, momo_qty=args.momo_qty,
                                  close_bps=args.close_bps))
        j = Journal(os.path.join(root, "journal"), readonly=True)
        events = sum(len(e) for _, e in j.read_from(1))
        j.env.close()
        mods = [("now", sv)]
        if args.baseline:           # the same journal through another engine/surveillance.py, runs alternated
            spec = importlib.util.spec_from_file_location("surveillance_baseline", args.baseline)
            mods.append(("baseline", importlib.util.module_from_spec(spec)))
            spec.loader.exec_module(mods[-1][1])
        times, cpu, outputs = {name: [] for name, _ in mods}, {name: [] for name, _ in mods}, {}
        for r in range(args.runs):
            for name, mod in mods:
                store = os.path.join(root, f"store-{name}-{r}")
                a = argparse.Namespace(path=os.path.join(root, "journal"), config=cfg_path, store=store,
                                       from_seq=None, until_seq=None, follow=False)
                out = io.BytesIO()
                t, c = time.perf_counter(), time.process_time()
                with redirect_stdout(io.TextIOWrapper(out)) as w:
                    assert mod.surveil(a) == 0
                    w.flush()
                times[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
                outputs.setdefault(name, out.getvalue())
                assert out.getvalue() == outputs[name], "alerts differ between runs"
        if args.baseline:
            assert outputs["now"] == outputs["baseline"], "alerts differ from the baseline's"
        dt = statistics.median(times["now"])
        store = sv.Store(os.path.join(root, "store-now-0"), readonly=True)
        alerts = store.all()
        store.close()
    print(f"{'type':<20} {'injected':>8} {'found':>6} {'false':>6} {'false/100k orders':>18}")
    for typ, (n, found, false) in score(injected, alerts).items():
        print(f"{typ:<20} {n:>8} {found:>6} {len(false):>6} {len(false) * 100_000 / background:>18.2f}")
        for x in false[:5]:
            print(f"  false: {x.id} {x.owner} {x.evidence[0]}")
    for name, ts in times.items():
        print(f"surveil ({name}): {commands} commands, {events} events; {len(ts)} runs, median "
              f"{statistics.median(ts):.3f} s: "
              f"{events / statistics.median(ts):,.0f} events/s, {(commands + events) / statistics.median(ts):,.0f} "
              f"records/s (each: {', '.join(f'{events / t:,.0f}' for t in ts)}); per CPU second (the process's "
              f"own time, steadier on a shared machine): median {events / statistics.median(cpu[name]):,.0f} "
              f"events/s")
    if args.baseline:
        print(f"alerts byte-identical to the baseline's ({len(alerts)} alerts)")


if __name__ == "__main__":
    main()
