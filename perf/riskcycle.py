"""One full cycle of the risk worker's models (engine/riskmodels.py) for --accounts accounts x --symbols
symbols on one core: the EWMA covariance, the parametric VaR/ES, historical simulation over the last
500 returns, Monte Carlo over 10,000 paths (one covariance and one set of paths shared by every account:
the P&L of all accounts is one matrix product per model), the VaR limit's per-account bounds and
per-symbol sensitivities, and the backtests. The issue's goal: 10,000 x 100 within 1 s on one core.

Workload: returns from a 5-factor model plus noise (seeded), --periods of them; every account holds every
symbol (dense exposures: the worst case for the products; a real book is sparser), a tenth of them with
open orders. Run in a child process pinned to one CPU with every BLAS/OpenMP pool at one thread, --runs
cycles after one warm-up; the median and the spread, per stage (wall time) and the cycle's CPU time (on a
shared, loaded machine the wall time includes waiting for the core: noisy, not a bound).
--var-models FILE times another riskmodels.py instead (e.g. `git show BASE:engine/riskmodels.py > FILE`:
a baseline on the same machine and load); --var-flat F: the first F of the accounts hold nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np
accounts, symbols, periods, runs, cpu = (int(x) for x in sys.argv[1:6])
flat = float(sys.argv[7])
if sys.argv[6]:                                          # --var-models: another riskmodels.py (a baseline)
    import importlib.util
    spec = importlib.util.spec_from_file_location("riskmodels_base", sys.argv[6])
    rm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rm)
else:
    from engine import riskmodels as rm
rng = np.random.default_rng(1)
load = rng.normal(0, 1, (symbols, 5))
r = (rng.normal(0, 0.01, (periods, 5)) @ load.T) * 0.3 + rng.normal(0, 0.01, (periods, symbols))
e = rng.normal(0, 1e5, (accounts, symbols))
e[:int(accounts * flat)] = 0.0                           # --var-flat: accounts without positions
ob = np.where(rng.random((accounts, symbols)) < 0.1, rng.random((accounts, symbols)) * 1e4, 0.0)
os_ = np.where(rng.random((accounts, symbols)) < 0.1, rng.random((accounts, symbols)) * 1e4, 0.0)
stages = {}
def timed(name, f):
    t0 = time.perf_counter()
    out = f()
    stages.setdefault(name, []).append(time.perf_counter() - t0)
    return out
for run in range(runs + 1):
    if run == 1:
        stages.clear()                                   # the first cycle warms up
    t0, c0 = time.perf_counter(), time.process_time()
    cov = timed("covariance", lambda: rm.ewma_cov(r, 0.94))
    sig = timed("parametric", lambda: rm.portfolio_sigmas(e, cov))
    hist = r[-500:]
    new = hasattr(rm, "mc_tails")                        # else a riskmodels.py from before: what it did
    timed("historical_500", lambda: rm.tail_rows(e @ hist.T, rm.GRID, sig if new else None))
    paths = timed("mc_paths_10000", lambda: rm.mc_returns(cov, 10_000, 0))
    def mc():
        if new:
            return rm.mc_tails(e, paths, rm.GRID, sig)
        for i in range(0, accounts, 512):                # a riskmodels.py from before mc_tails: its loop
            rm.tail_rows(e[i:i + 512] @ paths.T, rm.GRID, sig[i:i + 512])
    timed("mc_pnl_and_tails", mc)
    timed("limit_bounds", lambda: (rm.unit_var(cov, 0.95), rm.reachable_var_bounds(e, ob, os_, cov, 0.95)))
    timed("backtest", lambda: rm.backtest_many(r @ e.T, 0.95))
    stages.setdefault("cycle", []).append(time.perf_counter() - t0)
    stages.setdefault("cycle_cpu", []).append(time.process_time() - c0)   # CPU time: what the loaded VM gave us
print(json.dumps(stages))
"""


def scenario(args) -> dict:
    accounts, symbols = args.var_accounts, args.var_symbols
    cpu = args.cpu if args.cpu is not None else 0
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = ["taskset", "-c", str(cpu), sys.executable, "-c", CHILD, str(accounts), str(symbols), "501", str(args.runs),
           str(cpu), args.var_models or "", str(args.var_flat)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    stages = json.loads(out.strip().splitlines()[-1])
    import numpy as np
    res = {"accounts": accounts, "symbols": symbols, "historical_window": 500, "mc_paths": 10_000,
           "runs": args.runs, "cpu": cpu, "models": args.var_models or "engine/riskmodels.py",
           "flat_accounts": args.var_flat}
    for name, xs in stages.items():
        res[f"{name}_median_s"] = round(float(np.median(xs)), 4)
        res[f"{name}_min_max_s"] = f"{min(xs):.4f} .. {max(xs):.4f}"
    return res
