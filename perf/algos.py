"""Execution algorithms: what one ALGO_CLOCK costs on the engine thread with many live parents, and what
the algorithms' hook adds to every other command. `python -m perf.algos [--parents 1000] [--runs 5]`.

Workload (in process, the core with the algorithms attached, risk off unless --risk):
  10 symbols, each with a two-sided book of 200 levels (a market maker, account 1); --parents TWAP
  parents (accounts 2..51, symbols round robin, buys and sells), each 1,000,000 lots over 1,000 s in 100
  slices (one per 10 s), randomization 5000 bps, aggressiveness 2000 bps (a fifth of each slice an IOC
  at the far touch, the rest resting 1 tick behind the own touch), starts spread over the first slice
  interval. Then ALGO_CLOCKs every 100 ms, as the server sends them, for --seconds of schedule time,
  each timed alone (Engine.run_timed: CLOCK_MONOTONIC around process_one).
  Reported: the clock's cost, percentiles over all clocks; the clocks with no slice due (the steady
  state: with 1,000 parents some slice falls due in nearly every clock), the cost per child sent. Also
  aligned parents (no randomization, one start): every first slice due in the same clock (the worst
  case), then clocks between slices (no slice due: the scan over the live parents alone).
  Hook cost: the `core` scenario's command mix (perf/workload.py, 1 symbol) through Engine.run with and
  without the algorithms attached (no parent live), interleaved runs, median ops/s.
The machine is a shared 2-core VM (other engineers' work): medians of --runs, and the spread.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from engine.algos import Algos, pack_params
from engine.core import Engine
from perf import workload
from perf.__main__ import OUT, machine, pin
from protocol.codes import AlgoKind, CommandKind as CK, Side
from protocol.records import COMMAND

S = 10 ** 9
SYMBOLS, MID = 10, 1_000_000


def build(parents, randomize=True):
    e = Engine(max_orders=1 << 17, max_accounts=64, max_symbols=SYMBOLS + 1, max_levels=1024)
    Algos(max_parents=max(parents, 1), max_accounts=64, max_symbols=SYMBOLS + 1, max_slices=128).attach(e)
    for s in range(1, SYMBOLS + 1):
        e.add_symbol(s)
    for a in range(1, 64):
        e.add_account(a)
    cmds = []
    clid = 0
    for s in range(1, SYMBOLS + 1):
        for k in range(1, 201):
            for side, px in ((Side.SELL, MID + k), (Side.BUY, MID - k)):
                clid += 1
                cmds.append(dict(kind=CK.NEW_ORDER, account=1, client_order_id=clid, symbol=s, side=side,
                                 order_type=1, tif=1, price=px, qty=10_000_000))
    pa, pb = pack_params(slices=100, randomization_bps=5000 if randomize else 0, aggressiveness_bps=2000,
                         offset_ticks=1)
    for i in range(parents):
        start = S + (i * 10 * S // parents if randomize else 0)
        cmds.append(dict(kind=CK.ALGO_NEW, account=2 + i % 50, client_order_id=10 + i, symbol=1 + i % SYMBOLS,
                         side=Side.BUY if i % 2 else Side.SELL, order_type=AlgoKind.TWAP, qty=1_000_000,
                         stop_price=start, expire_ts_ns=start + 1000 * S, display_qty=pa, order_id=pb))
    arr = np.zeros(len(cmds), dtype=COMMAND.dtype)
    for i, c in enumerate(cmds):
        for k, v in c.items():
            arr[i][k] = v
        arr[i]["seq"] = i + 1
    e.run(arr)
    assert e.algos.active == parents, e.algos.active
    return e


def clocks(times):
    arr = np.zeros(len(times), dtype=COMMAND.dtype)
    arr["kind"] = CK.ALGO_CLOCK
    arr["expire_ts_ns"] = times
    return arr


def pct(a, q):
    return float(np.percentile(a, q)) / 1000 if len(a) else float("nan")


def clock_run(parents, seconds):
    e = build(parents)
    e.run(clocks([S]))                                  # every parent's first clock (starts are spread after)
    times = np.arange(S + S // 10, S + seconds * S, S // 10, dtype=np.int64)
    lat = np.zeros(len(times), dtype=np.int64)
    spawned = []
    for i in range(len(times)):                         # one at a time: which clocks worked slices
        before = e.algos.children_spawned
        e.run_timed(clocks(times[i:i + 1]), lat[i:i + 1])
        spawned.append(e.algos.children_spawned - before)
    spawned = np.array(spawned)
    busy = lat[spawned > 0]
    per_child = float(busy.sum() / max(spawned.sum(), 1)) / 1000
    return dict(clocks=len(lat), p50_us=pct(lat, 50), p99_us=pct(lat, 99), max_us=float(lat.max()) / 1000,
                busy_clocks=len(busy), busy_p50_us=pct(busy, 50), busy_p99_us=pct(busy, 99),
                children_per_busy_clock=float(spawned[spawned > 0].mean()) if len(busy) else 0.0,
                us_per_child=per_child)


def worst_run(parents):
    """Aligned parents: every first slice in one clock (the worst case), then 99 clocks with no slice due
    (the scan over the live parents alone)."""
    e = build(parents, randomize=False)
    lat = np.zeros(1, dtype=np.int64)
    e.run_timed(clocks([S]), lat)                       # every parent's first slice at once
    children = int(e.algos.children_spawned)
    times = np.arange(S + S // 10, 11 * S, S // 10, dtype=np.int64)[:98]
    idle = np.zeros(len(times), dtype=np.int64)
    e.run_timed(clocks(times), idle)
    assert e.algos.children_spawned == children
    return dict(all_due_us=float(lat[0]) / 1000, children=children, idle_p50_us=pct(idle, 50),
                idle_p99_us=pct(idle, 99))


def hook_run(runs, n=1_000_000):
    cmds, _ = workload.generate(n, symbols=1, seed=1)
    out = {"off": [], "on": []}
    for _ in range(runs):
        for mode in ("off", "on"):
            e = workload.make_engine(1)
            if mode == "on":
                Algos(max_parents=16, max_accounts=e.max_accounts, max_symbols=e.max_symbols).attach(e)
            t = time.perf_counter()
            e.run(cmds)
            out[mode].append(n / (time.perf_counter() - t))
    return {k: statistics.median(v) for k, v in out.items()} | {"spread": {k: (min(v), max(v)) for k, v in out.items()}}


CHILD = """import sys
import numpy as np
from perf import workload
from engine.algos import Algos
cmds = np.load(sys.argv[1])
e = workload.make_engine(1)
if sys.argv[2] == "on":
    Algos(max_parents=16, max_accounts=e.max_accounts, max_symbols=e.max_symbols).attach(e)
e.run(cmds)
"""


def hook_instructions(n):
    """Instructions per core-mix command inside Engine.run, without and with the algorithms attached
    (callgrind, as perf/instructions.py counts risk's)."""
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from perf.instructions import ROOT, run_symbol
    cmds, _ = workload.generate(n, symbols=1, seed=1)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cmds.npy"
        np.save(path, cmds)
        for mode in ("off", "on"):
            dest = Path(tmp) / f"cg.{mode}"
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={dest}",
                            f"--toggle-collect={run_symbol()}", sys.executable, "-c", CHILD, str(path), mode],
                           cwd=ROOT, check=True, capture_output=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
            total = next(int(x.split()[1]) for x in dest.read_text().splitlines() if x.startswith("summary:"))
            out[mode] = total / len(cmds)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parents", type=int, default=1000)
    p.add_argument("--seconds", type=int, default=60, help="schedule time clocked, 100 ms apart")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    p.add_argument("--instructions", type=int, default=0, metavar="N",
                   help="also count the hook's instructions per command over N core-mix commands (callgrind)")
    args = p.parse_args(argv)
    pin(args.cpu)
    runs = [clock_run(args.parents, args.seconds) for _ in range(args.runs)]
    worst = [worst_run(args.parents) for _ in range(args.runs)]
    hook = hook_run(args.runs)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    result = dict(machine=machine(), parents=args.parents, runs=runs, median=med, worst=worst, hook=hook)
    print(f"{args.parents} live TWAP parents, clocks every 100 ms over {args.seconds} s, medians of {args.runs} runs:")
    print(f"  every clock:        p50 {med['p50_us']:.1f} us  p99 {med['p99_us']:.1f} us  max {med['max_us']:.1f} us")
    print(f"  no slice due (aligned parents between slices): p50 "
          f"{statistics.median(x['idle_p50_us'] for x in worst):.1f} us  p99 "
          f"{statistics.median(x['idle_p99_us'] for x in worst):.1f} us")
    print(f"  slices due:         p50 {med['busy_p50_us']:.1f} us  p99 {med['busy_p99_us']:.1f} us "
          f"({med['busy_clocks']:.0f} clocks, {med['children_per_busy_clock']:.1f} children each, "
          f"{med['us_per_child']:.2f} us per child incl. its cancel)")
    w = statistics.median(x["all_due_us"] for x in worst)
    print(f"  worst case, all {args.parents} slices due in one clock: {w:.0f} us ({worst[0]['children']} children)")
    print(f"  hook on the core mix (no parent live): {hook['on'] / 1e6:.2f}M ops/s with, {hook['off'] / 1e6:.2f}M "
          f"without ({hook['on'] / hook['off']:.3f}); spread {hook['spread']}")
    if args.instructions:
        ins = result["instructions"] = hook_instructions(args.instructions)
        print(f"  instructions per core-mix command: {ins['off']:.1f} without, {ins['on']:.1f} with the algorithms "
              f"attached (+{ins['on'] - ins['off']:.1f})")
    OUT.mkdir(exist_ok=True)
    path = OUT / f"algos-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1, default=float))
    print(f"  -> {path}")


if __name__ == "__main__":
    main()
