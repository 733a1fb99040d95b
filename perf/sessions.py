"""Many sessions and many symbols through the real server (issue 6: `sessions`, `symbols`).

One load generator (pinned to --cpu) drives N logged-on sessions over loopback TCP from
a single epoll loop, open loop at an aggregate --rate: order i goes to session i % N,
and each order after the first 50 of its session carries the cancel of that session's
order 50 before it, so books stay bounded. Latency runs from each order's *scheduled*
send time to the receipt of its ACCEPTED (coordinated omission corrected, as in
perf/roundtrip.py); exact percentiles over every sample after a warm-up.

  sessions  N sessions (one account each), every order on one symbol
  symbols   4 sessions, every order on a symbol drawn uniformly from S symbols
            (server max_levels 64 so that S x 4 ladders fit in memory)

The server runs with the journal off (durability none) and is pinned to --server-cpu;
the run also reads the server's batches and RSS from /metrics.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import select
import socket
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from protocol import wire
from protocol.codes import OrderType, SelfTradePrevention, Side, TimeInForce
from perf.roundtrip import NO_REPLAY
from protocol.wire import MsgType

REPORT = np.dtype([("h", wire.HEADER.dtype), ("r", wire.EXEC_REPORT.dtype)])
ORDER = np.dtype([("h", wire.HEADER.dtype), ("b", wire.NEW_ORDER.dtype)])
CANCEL = np.dtype([("h", wire.HEADER.dtype), ("b", wire.CANCEL.dtype)])
CANCEL_LAG = 50
UNLIMITED = "".join(f"\n{k} = 1e12" for k in ("orders_per_s", "orders_burst", "cancels_per_s", "cancels_burst",
                                               "logout_per_s", "logout_burst"))
SECRET = "perf-secret-0123456"


def config_extra(accounts: int, symbols: int) -> str:
    """[[accounts]] 5.. and [[symbols]] 3.. beyond engine/testing.py's base config."""
    out = []
    for a in range(5, 5 + accounts):
        out.append(f'\n[[accounts]]\nid = {a}\nname = "perf{a}"\ndemo_secret = "{SECRET}"\n')
    for s in range(3, 3 + symbols):
        out.append(f'\n[[symbols]]\nid = {s}\nname = "S{s}"\nprice_decimals = 2\nqty_decimals = 0\n')
    return "".join(out)


def logon(port, account, secret):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = bytearray(wire.encode(MsgType.LOGON, account=account, heartbeat_ms=60_000, next_seq=NO_REPLAY,
                              timestamp_ns=time.time_ns(), proto_version=wire.SCHEMA_VERSION,
                              nonce=int.from_bytes(os.urandom(4), "little")))
    key = hmac.new(secret.encode(), b"trading-engine signing key", hashlib.sha256).digest()
    f[40:72] = hmac.new(key, bytes(f[8:40]), hashlib.sha256).digest()
    sock.sendall(f)
    n = wire.frame_size(MsgType.LOGON_ACCEPTED)
    data = b""
    while len(data) < n:
        data += sock.recv(4096)
    assert data[2] == MsgType.LOGON_ACCEPTED, data[:16]
    sock.setblocking(False)
    return sock, data[n:]


def payloads(n, sessions, symbols, seed=1):
    """Frame bytes of order i (plus a cancel of its session's order CANCEL_LAG before)."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    o = np.zeros(n, dtype=ORDER)
    o["h"]["length"], o["h"]["msg_type"], o["h"]["version"] = ORDER.itemsize, MsgType.NEW_ORDER, wire.SCHEMA_VERSION
    b = o["b"]
    b["client_order_id"] = i // sessions + 1
    b["symbol"] = rng.choice(symbols, n) if len(symbols) > 1 else symbols[0]
    sell = rng.random(n) < 0.5
    b["side"] = np.where(sell, Side.SELL, Side.BUY)
    b["order_type"], b["tif"], b["stp"] = OrderType.LIMIT, TimeInForce.GTC, SelfTradePrevention.NONE
    # multiples of 100: symbol 2 of the base config (AAPL) has a tick of 100
    b["price"] = 100 * np.where(sell, 2_000 + rng.integers(0, 50, n), 1_000 - rng.integers(0, 50, n))
    b["qty"] = 1
    c = np.zeros(n, dtype=CANCEL)
    c["h"]["length"], c["h"]["msg_type"], c["h"]["version"] = CANCEL.itemsize, MsgType.CANCEL, wire.SCHEMA_VERSION
    c["b"]["client_order_id"] = i // sessions + 1 - CANCEL_LAG
    ob, cb = o.tobytes(), c.tobytes()
    out = []
    for k in range(n):
        part = ob[k * ORDER.itemsize:(k + 1) * ORDER.itemsize]
        if k // sessions >= CANCEL_LAG:
            part += cb[k * CANCEL.itemsize:(k + 1) * CANCEL.itemsize]
        out.append(part)
    return out


def drive(port, accounts, secrets, rate, seconds, symbols, cpu=None, warmup=0.5):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    n_s = len(accounts)
    n = int(rate * seconds)
    conns = [logon(port, a, s) for a, s in zip(accounts, secrets)]
    socks = [c[0] for c in conns]
    bufs = [bytearray(c[1]) for c in conns]
    by_fd = {s.fileno(): k for k, s in enumerate(socks)}
    msgs = payloads(n, n_s, symbols)
    ep = select.epoll()
    for s in socks:
        ep.register(s.fileno(), select.EPOLLIN)
    recv_ns = np.zeros(n, dtype=np.int64)
    lag = np.zeros(n, dtype=np.int64)
    start = time.perf_counter_ns() + 2_000_000
    sched = start + (np.arange(n) * (1e9 / rate)).astype(np.int64)
    deadline = start + int(seconds * 1e9) + 5_000_000_000
    i = got = 0
    while got < n and time.perf_counter_ns() < deadline:
        now = time.perf_counter_ns()
        if i < n and sched[i] <= now:
            j = min(int(np.searchsorted(sched, now, side="right")), n)
            for k in range(i, j):
                _send_all(socks[k % n_s], msgs[k])
            lag[i:j] = now - sched[i:j]
            i = j
        for fd, _ in ep.poll(0):
            k = by_fd[fd]
            try:
                data = socks[k].recv(1 << 20)
            except BlockingIOError:
                continue
            if not data:
                raise RuntimeError(f"session {k} closed by the server")
            t = time.perf_counter_ns()
            buf = bufs[k]
            buf += data
            m = len(buf) // REPORT.itemsize
            reps = np.frombuffer(bytes(buf[:m * REPORT.itemsize]), dtype=REPORT)
            del buf[:m * REPORT.itemsize]
            if np.any(reps["h"]["length"] != REPORT.itemsize):
                raise RuntimeError("a frame other than an execution report: the generator's parser assumes 88-byte reports")
            acc = reps[reps["h"]["msg_type"] == MsgType.ACCEPTED]["r"]["client_order_id"].astype(np.int64)
            idx = (acc - 1) * n_s + k            # order index of (session k, client order id)
            recv_ns[idx] = t
            got += len(acc)
    for s in socks:
        s.close()
    ok = recv_ns > 0
    skip = int(min(warmup, 0.1 * seconds) * rate)
    lat = (recv_ns - sched)[skip:][ok[skip:]]
    if not len(lat):
        raise RuntimeError("no order was acknowledged")
    span = (recv_ns[ok].max() - sched[0]) / 1e9
    return dict(sessions=n_s, symbols=len(symbols), rate=rate, seconds=seconds, orders=n, acked=int(ok.sum()),
                achieved_per_s=float(ok.sum() / span),
                latency_us={str(p): float(np.percentile(lat, p)) / 1000 for p in (50, 90, 99, 99.9)}
                | {"max": float(lat.max()) / 1000, "min": float(lat.min()) / 1000},
                generator_lag_us={"p50": float(np.percentile(lag, 50)) / 1000,
                                  "p99": float(np.percentile(lag, 99)) / 1000})


def _send_all(sock, data):
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view):]
        except BlockingIOError:
            time.sleep(0)


def _metrics(srv):
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.ops_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        for name in ("te_commands_total", "te_batches_total", "process_resident_memory_bytes"):
            if line.startswith(name + " "):
                out[name] = float(line.split()[1])
    return out


def run_config(args, n_sessions, n_symbols):
    from engine.testing import SECRETS, ServerProc
    extra_accounts = max(0, n_sessions - 4)
    engine = dict(max_accounts=max(16, 5 + extra_accounts + 1), max_symbols=max(8, n_symbols + 3),
                  max_levels=64 if n_symbols > 2 else 1024)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        srv = ServerProc(Path(tmp), durability="none", server_extra=f"cpu = {args.server_cpu}{UNLIMITED}",
                         extra=config_extra(extra_accounts, max(0, n_symbols - 2)), engine=engine)
        srv.start(timeout=120)
        try:
            idle_rss = _metrics(srv).get("process_resident_memory_bytes", 0)
            for run in range(args.runs):
                accounts = [1, 2, 3, 4][:n_sessions] + list(range(5, 5 + extra_accounts))
                secrets = [SECRETS.get(a, SECRET) for a in accounts]
                if run:                          # a fresh server per run: client order ids start at 1
                    srv.stop()
                    srv.start(timeout=120)
                symbols = [1] if n_symbols == 1 else [1, 2] + list(range(3, 3 + n_symbols - 2))
                before = _metrics(srv)
                r = drive(srv.port, accounts, secrets, args.rate, args.seconds, symbols, cpu=args.cpu)
                after = _metrics(srv)
                cmds = after["te_commands_total"] - before.get("te_commands_total", 0)
                batches = after["te_batches_total"] - before.get("te_batches_total", 0)
                r["commands_per_batch"] = cmds / batches if batches else 0
                r["server_rss_mb"] = after["process_resident_memory_bytes"] / 2**20
                runs.append(r)
        finally:
            srv.stop()
    med = {p: float(np.median([r["latency_us"][p] for r in runs])) for p in runs[0]["latency_us"]}
    return dict(runs=runs, median_latency_us=med, idle_rss_mb=idle_rss / 2**20,
                median_achieved_per_s=float(np.median([r["achieved_per_s"] for r in runs])),
                median_commands_per_batch=float(np.median([r["commands_per_batch"] for r in runs])))


def sessions_scenario(args):
    return {f"{n}_sessions": run_config(args, n, 1) for n in args.sessions}


def symbols_scenario(args):
    return {f"{n}_symbols": run_config(args, 4, n) for n in args.symbol_counts}


def print_table(name, results):
    print(f"\n== {name} ==")
    print(f"{'config':<16}{'rate/s':>9}{'achieved/s':>12}{'p50 us':>9}{'p90 us':>9}{'p99 us':>9}{'p99.9 us':>10}"
          f"{'max us':>9}{'cmds/batch':>11}{'RSS MB':>8}")
    for k, r in results.items():
        lat = r["median_latency_us"]
        print(f"{k:<16}{r['runs'][0]['rate']:>9,}{r['median_achieved_per_s']:>12,.0f}{lat['50']:>9.0f}{lat['90']:>9.0f}"
              f"{lat['99']:>9.0f}{lat['99.9']:>10.0f}{lat['max']:>9.0f}{r['median_commands_per_batch']:>11.1f}"
              f"{r['runs'][-1]['server_rss_mb']:>8.0f}")
