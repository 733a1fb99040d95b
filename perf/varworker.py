"""The server's round trip with and without the risk worker beside it (`python -m perf varworker`).

One server (risk on, journal sync, every risk check including MAX_VAR with a model), one SDK session placing
--orders IOC orders one at a time (closed loop; each is acknowledged and cancelled, nothing rests), timed from
send to the acknowledgement. Phases alternate in the same server, --runs times each: without the worker, then
with `trading-engine risk worker` following the journal every 100 ms (it replays each order, recomputes and
journals VAR_UPDATE rows and its figures every cycle). The first tenth of each phase is dropped (warm-up).
p50 and p99 per phase, in microseconds; the medians over the phases of each kind. On the shared 2-core VM the
worker competes with the server for a core: that is part of what is measured."""
from __future__ import annotations

import asyncio
import os
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


async def round_trips(port: int, n: int) -> np.ndarray:
    from clients import Client
    from engine.testing import SECRETS
    out = np.zeros(n, dtype=np.int64)
    async with Client.connect("127.0.0.1", port, account=1, secret=SECRETS[1]) as c:
        for i in range(n):
            t = time.perf_counter_ns()
            r = await c.place("BTCUSDT", "buy", "0.001", price="40000.00", tif="ioc")
            out[i] = time.perf_counter_ns() - t
            assert r.kind in ("accepted", "cancelled"), r
    return out[n // 10:]


def scenario(args) -> dict:
    from engine.testing import ROOT, ServerProc
    phases: dict[str, list[np.ndarray]] = {"without": [], "with": []}
    with tempfile.TemporaryDirectory() as tmp:
        srv = ServerProc(Path(tmp) / "srv", durability="sync", risk=RISK, extra=ANALYTICS,
                         server_extra=f"cpu = {args.server_cpu}{UNLIMITED}",
                         admins={"ops": hash_password(PASSWORD, n=1 << 10)}).start()
        try:
            import json
            import socket
            s = socket.create_connection(("127.0.0.1", srv.admin_port))
            f = s.makefile("rb")
            for action, fields in (("deposit", dict(account="acct1", amount="1000000")),
                                   *[("mark", dict(symbol="BTCUSDT", price=p))
                                     for p in ("50000.00", "50500.00", "49800.00", "50100.00")]):
                s.sendall(json.dumps(dict(user="ops", password=PASSWORD, action=action, **fields)).encode() + b"\n")
                assert json.loads(f.readline())["ok"]
            s.close()
            env = dict(os.environ, PYTHONPATH=str(ROOT), TRADING_ENGINE_ADMIN_PASSWORD=PASSWORD)
            for _ in range(args.runs):
                phases["without"].append(asyncio.run(round_trips(srv.port, args.orders)))
                w = subprocess.Popen([sys.executable, "-m", "engine.cli", "risk", "worker", str(srv.dir / "journal"),
                                      "--config", str(srv.config), "--admin-port", str(srv.admin_port), "--user",
                                      "ops"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                try:
                    time.sleep(3.0)                      # its start-up and first cycles
                    phases["with"].append(asyncio.run(round_trips(srv.port, args.orders)))
                finally:
                    w.terminate()
                    w.wait(30)
        finally:
            srv.stop()
    out = {}
    for k, rs in phases.items():
        out[k] = {p: float(np.median([np.percentile(r, float(p)) for r in rs])) / 1e3 for p in ("50", "99")}
        out[k]["p50_per_phase_us"] = [round(float(np.percentile(r, 50)) / 1e3, 1) for r in rs]
    out["orders"], out["runs"] = args.orders, args.runs
    return out
