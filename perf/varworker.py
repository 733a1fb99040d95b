"""The server's round trip with and without the risk worker beside it (`python -m perf varworker`).

One server (risk on, journal sync, every risk check including MAX_VAR with a model), one SDK session placing
--orders IOC orders one at a time (closed loop; each is acknowledged and cancelled, nothing rests), timed from
send to the acknowledgement. Phases alternate in the same server, --runs times each: without the worker, then
with `trading-engine risk worker` following the journal every 100 ms (it replays each order, recomputes and
journals VAR_UPDATE rows and its figures every cycle). The first tenth of each phase is dropped (warm-up).
p50 and p99 per phase, in microseconds; the medians over the phases of each kind. On the shared 2-core VM the
worker competes with the server for a core: that is part of what is measured.

Beside the latencies, per order of each phase, what the server did (from /proc and its /metrics, not clocks):
journal commits, batches, the mean commit (fsync) time, the server's CPU time (all threads) and its voluntary
context switches (all threads). A regression on the order or commit path shows there without the noise of the
shared machine: more commits or wake-ups per order, more CPU, or slower fsyncs.

--compare-tree PATH: a second server started from another checkout (built in place; its engine/testing.py
harness, so it runs that tree's code), the same phases interleaved with this tree's (the order of the two
alternates run by run, each tree's worker from its own tree; the client is this tree's for both). Reported
per tree, and the per-run difference of the phases' p50 (this minus compared), whose median is what to quote."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.admin import hash_password
from perf.sessions import UNLIMITED

PASSWORD = "perf-admin"
RISK = ('enabled = true\nmark_interval_ms = 50\n[risk.defaults]\ninitial_margin = "0.10"\n'
        'maintenance_margin = "0.05"\nmax_var = "1000000000"\n')
ANALYTICS = "\n[analytics]\nperiod_s = 1e-6\nhorizon_days = 1e-11\nworker_interval_ms = 100\n"
KINDS = ("without", "with")


async def round_trips(port: int, n: int, secret: str) -> np.ndarray:
    from clients import Client
    out = np.zeros(n, dtype=np.int64)
    async with Client.connect("127.0.0.1", port, account=1, secret=secret) as c:
        for i in range(n):
            t = time.perf_counter_ns()
            r = await c.place("BTCUSDT", "buy", "0.001", price="40000.00", tif="ioc")
            out[i] = time.perf_counter_ns() - t
            assert r.kind in ("accepted", "cancelled"), r
    return out[n // 10:]


def server_counters(srv) -> dict:
    """What the server has done so far: CPU seconds and voluntary context switches of all its threads,
    journal commits, batches and the seconds spent committing (its /metrics)."""
    from perf.roundtrip import batch_stats, cpu_seconds
    pid = srv.proc.pid
    vcsw = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                vcsw += next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))
        except (FileNotFoundError, StopIteration):
            pass
    batches, _, commit_s, commits, _ = batch_stats(srv.ops_port)
    return dict(cpu_s=cpu_seconds(pid), vcsw=vcsw, batches=batches, commit_s=commit_s, commits=commits)


def per_order(before: dict, after: dict, n: int) -> dict:
    d = {k: after[k] - before[k] for k in before}
    return dict(commits=d["commits"] / n, batches=d["batches"] / n,
                commit_us=1e6 * d["commit_s"] / d["commits"] if d["commits"] else 0.0,
                server_cpu_us=1e6 * d["cpu_s"] / n, voluntary_switches=d["vcsw"] / n)


def start_server(harness, tmp: Path, server_cpu):
    """A server from the harness's tree, funded and marked through its admin port."""
    srv = harness.ServerProc(tmp, durability="sync", risk=RISK, extra=ANALYTICS,
                             server_extra=(f"cpu = {server_cpu}" if server_cpu is not None else "") + UNLIMITED,
                             admins={"ops": hash_password(PASSWORD, n=1 << 10)}).start()
    s = socket.create_connection(("127.0.0.1", srv.admin_port))
    f = s.makefile("rb")
    for action, fields in (("deposit", dict(account="acct1", amount="1000000")),
                           *[("mark", dict(symbol="BTCUSDT", price=p))
                             for p in ("50000.00", "50500.00", "49800.00", "50100.00")]):
        s.sendall(json.dumps(dict(user="ops", password=PASSWORD, action=action, **fields)).encode() + b"\n")
        assert json.loads(f.readline())["ok"]
    s.close()
    return srv


def phase(srv, n: int, secret: str) -> tuple[np.ndarray, dict]:
    before = server_counters(srv)
    lat = asyncio.run(round_trips(srv.port, n, secret))
    return lat, per_order(before, server_counters(srv), n)


def worker(srv, root: Path) -> subprocess.Popen:
    """`trading-engine risk worker` from the server's tree, following its journal."""
    env = dict(os.environ, PYTHONPATH=str(root), TRADING_ENGINE_ADMIN_PASSWORD=PASSWORD)
    return subprocess.Popen([sys.executable, "-m", "engine.cli", "risk", "worker", str(srv.dir / "journal"),
                             "--config", str(srv.config), "--admin-port", str(srv.admin_port), "--user", "ops"],
                            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def scenario(args) -> dict:
    from perf.noisy import _harness
    trees = {"this": None} | ({"compared": args.compare_tree} if args.compare_tree else {})
    harness = {name: _harness(tree) for name, tree in trees.items()}
    phases = {name: {k: [] for k in KINDS} for name in trees}
    counts = {name: {k: [] for k in KINDS} for name in trees}
    load = []
    with tempfile.TemporaryDirectory() as tmp:
        servers = {}
        try:
            for name in trees:
                servers[name] = start_server(harness[name], Path(tmp) / name, args.server_cpu)
            for i in range(args.runs):
                order = list(trees) if i % 2 == 0 else list(trees)[::-1]    # ABBA: drifts in load cancel
                load.append(os.getloadavg()[0])
                for name in order:
                    lat, c = phase(servers[name], args.orders, harness[name].SECRETS[1])
                    phases[name]["without"].append(lat)
                    counts[name]["without"].append(c)
                for name in order:
                    w = worker(servers[name], Path(harness[name].ROOT))
                    try:
                        time.sleep(3.0)                      # its start-up and first cycles
                        lat, c = phase(servers[name], args.orders, harness[name].SECRETS[1])
                        phases[name]["with"].append(lat)
                        counts[name]["with"].append(c)
                    finally:
                        w.terminate()
                        w.wait(30)
        finally:
            for srv in servers.values():
                srv.stop()
    out = {}
    for name in trees:
        res = out[name] = {}
        for k, rs in phases[name].items():
            res[k] = {p: float(np.median([np.percentile(r, float(p)) for r in rs])) / 1e3 for p in ("50", "99")}
            res[k]["p50_per_phase_us"] = [round(float(np.percentile(r, 50)) / 1e3, 1) for r in rs]
            res[k]["per_order"] = {m: float(np.median([c[m] for c in counts[name][k]])) for m in counts[name][k][0]}
    if args.compare_tree:
        out["this_minus_compared_p50_us"] = {
            k: sorted(round(a - b, 1) for a, b in zip(out["this"][k]["p50_per_phase_us"],
                                                       out["compared"][k]["p50_per_phase_us"])) for k in KINDS}
        out["compare_tree"] = str(args.compare_tree)
    out["orders"], out["runs"], out["load_average"] = args.orders, args.runs, load
    return out
