"""Admin actions and risk queries through the real server (`python -m perf admin`).

- Admin: --actions sequential `deposit` requests over one admin connection (each a journaled
  core command, fsync durability, its events read back for the reply; the password is checked
  once per connection), and as many `status` requests (no command) for comparison; then a few
  deposits each on a new connection with the production scrypt factor (N = 2**15): what one
  `trading-engine admin` call costs (the scrypt check runs in a worker thread).
- SDK: closed-loop portfolio() and positions() round trips (--orders each) for an account with
  positions in two symbols, against open_orders() (an existing query: the baseline, same run),
  and connect() (TCP, logon, symbol directory and cash units, two queries in flight at once).
Medians of --runs runs; latencies in microseconds (admin: milliseconds).
"""
from __future__ import annotations

import asyncio
import json
import socket
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.admin import SCRYPT_N, hash_password
from perf.sessions import UNLIMITED

PASSWORD = "perf-admin"
KINDS = ("deposit", "status", "deposit_production", "open_orders", "portfolio", "positions", "connect")
RISK = 'enabled = true\n[risk.defaults]\ninitial_margin = "0.10"\nmaintenance_margin = "0.05"\n'


def admin_times(port, user, action, n, fresh=False, **fields):
    """n requests, timed from connect (fresh: a new connection each) or send to the reply."""
    out = np.zeros(n, dtype=np.int64)
    line = json.dumps(dict(user=user, password=PASSWORD, action=action, **fields)).encode() + b"\n"
    sock = None
    for i in range(n):
        t = time.perf_counter_ns()
        if sock is None:
            sock = socket.create_connection(("127.0.0.1", port))
            f = sock.makefile("rb")
        sock.sendall(line)
        reply = json.loads(f.readline())
        out[i] = time.perf_counter_ns() - t
        assert reply["ok"], reply
        if fresh:
            sock.close()
            sock = None
    if sock is not None:
        sock.close()
    return out


async def sdk_times(port, n):
    from clients import Client
    from engine.testing import SECRETS
    connects = []
    for _ in range(20):
        t = time.perf_counter_ns()
        c = await Client.connect("127.0.0.1", port, account=1, secret=SECRETS[1])
        connects.append(time.perf_counter_ns() - t)
        await c.close()
    async with Client.connect("127.0.0.1", port, account=1, secret=SECRETS[1]) as c, \
            Client.connect("127.0.0.1", port, account=2, secret=SECRETS[2]) as c2:
        for sym, price in (("BTCUSDT", "50000.00"), ("AAPL", "190.00")):
            assert (await c2.place(sym, "sell", "1", price=price)).kind == "accepted"
            assert (await c.place(sym, "buy", "1", price=price)).kind == "accepted"
        out = {}
        for name, call in (("open_orders", c.open_orders), ("portfolio", c.portfolio), ("positions", c.positions)):
            lat = np.zeros(n, dtype=np.int64)
            for i in range(n):
                t = time.perf_counter_ns()
                await call()
                lat[i] = time.perf_counter_ns() - t
            out[name] = lat[n // 10:]
    out["connect"] = np.array(connects)
    return out


def scenario(args):
    from engine.testing import ServerProc
    cheap, prod = hash_password(PASSWORD, n=1 << 10), hash_password(PASSWORD, n=SCRYPT_N)
    runs = {k: [] for k in KINDS}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            srv = ServerProc(Path(tmp) / f"srv{run}", durability="sync", risk=RISK,
                             server_extra=f"cpu = {args.server_cpu}{UNLIMITED}",
                             admins={"cheap": cheap, "prod": prod}).start()
            try:
                admin_times(srv.admin_port, "cheap", "deposit", 1, account="acct1", amount="1000000")
                admin_times(srv.admin_port, "cheap", "deposit", 1, account="acct2", amount="1000000")
                for sym, price in (("BTCUSDT", "50000.00"), ("AAPL", "190.00")):
                    admin_times(srv.admin_port, "cheap", "mark", 1, symbol=sym, price=price)
                runs["deposit"].append(admin_times(srv.admin_port, "cheap", "deposit", args.actions,
                                                   account="acct3", amount="1.00"))
                runs["status"].append(admin_times(srv.admin_port, "cheap", "status", args.actions))
                runs["deposit_production"].append(admin_times(srv.admin_port, "prod", "deposit", 3, fresh=True,
                                                              account="acct3", amount="1.00"))
                sdk = asyncio.run(sdk_times(srv.port, args.orders))
                for k in ("open_orders", "portfolio", "positions", "connect"):
                    runs[k].append(sdk[k])
            finally:
                srv.stop()
    out = {}
    for k, rs in runs.items():
        scale = 1e6 if k in ("deposit", "status", "deposit_production") else 1e3
        out[k] = {p: float(np.median([np.percentile(r, float(p)) for r in rs])) / scale for p in ("50", "99")}
        out[k]["unit"] = "ms" if scale == 1e6 else "us"
        out[k]["spread_p50"] = [float(np.percentile(r, 50)) / scale for r in rs]
    out["runs"], out["actions"], out["orders"] = args.runs, args.actions, args.orders
    return out


def print_table(results):
    print("\n== admin actions and risk queries (medians of runs) ==")
    print(f"{'what':<22}{'p50':>10}{'p99':>10}  unit  p50 per run")
    for k in KINDS:
        r = results[k]
        print(f"{k:<22}{r['50']:>10.2f}{r['99']:>10.2f}  {r['unit']:<4}  "
              + " ".join(f"{x:.2f}" for x in r["spread_p50"]))
