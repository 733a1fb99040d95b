"""Round trip over loopback TCP: a server subprocess pinned to one core, this load
generator pinned to the other, open loop at a fixed rate.

Each order's latency runs from its *scheduled* send time (not the moment it was
actually sent) to the receipt of its ACCEPTED report, so a stall of the server or
of the generator is charged to every order scheduled during it (coordinated
omission corrected). Percentiles are exact, over every sample. The generator also
reports how far behind schedule it sent (its own lag) so a generator bottleneck
is visible. Flow: GTC limit orders away from the touch, each cancelled 200 orders
later, so the book stays bounded; latency is taken on the NEW_ORDER acks.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import socket
import tempfile
import time
from pathlib import Path

import numpy as np

from protocol import wire
from protocol.codes import Side
from protocol.wire import MsgType

REPORT = np.dtype([("h", wire.HEADER.dtype), ("r", wire.EXEC_REPORT.dtype)])
# Logon's next_seq beyond any report: a benchmark session must not get the gap replay of an
# earlier run's reports (with next_seq=1 runs 2.. on one server received up to replay_ring
# old reports first, counted as acknowledgements of their own orders).
NO_REPLAY = 1 << 62


def logon(sock, account, secret):
    f = bytearray(wire.encode(MsgType.LOGON, account=account, heartbeat_ms=10_000, next_seq=NO_REPLAY,
                              timestamp_ns=time.time_ns(), proto_version=1, nonce=int.from_bytes(os.urandom(4), "little")))
    key = hmac.new(secret.encode(), b"trading-engine signing key", hashlib.sha256).digest()
    f[40:72] = hmac.new(key, bytes(f[8:40]), hashlib.sha256).digest()
    sock.sendall(f)
    data = b""
    while len(data) < wire.frame_size(MsgType.LOGON_ACCEPTED):
        data += sock.recv(4096)
    assert data[2] == MsgType.LOGON_ACCEPTED, data[:16]
    (_, body, _), = wire.decode(data[:wire.frame_size(MsgType.LOGON_ACCEPTED)])[0]
    return data[wire.frame_size(MsgType.LOGON_ACCEPTED):], int(body["next_client_order_id"])


def frames(n, first_clid=1):
    """Order i and, from i = 200 on, the cancel of order i - 200 (by client order id)."""
    orders = np.zeros(n, dtype=[("h", wire.HEADER.dtype), ("b", wire.NEW_ORDER.dtype)])
    orders["h"]["length"] = orders.itemsize
    orders["h"]["msg_type"] = MsgType.NEW_ORDER
    orders["h"]["version"] = wire.SCHEMA_VERSION
    b = orders["b"]
    i = np.arange(n)
    b["client_order_id"] = i + first_clid
    b["symbol"] = 1
    b["side"] = np.where(i % 2, Side.SELL, Side.BUY)
    b["order_type"], b["tif"], b["stp"] = 1, 1, 4
    b["price"] = np.where(i % 2, 200_000 + i % 500, 100_000 - i % 500)
    b["qty"] = 1
    cancels = np.zeros(n, dtype=[("h", wire.HEADER.dtype), ("b", wire.CANCEL.dtype)])
    cancels["h"]["length"] = cancels.itemsize
    cancels["h"]["msg_type"] = MsgType.CANCEL
    cancels["h"]["version"] = wire.SCHEMA_VERSION
    cancels["b"]["client_order_id"] = i - 200 + first_clid
    ob, cb = orders.tobytes(), cancels.tobytes()
    out = []
    for k in range(n):
        part = ob[k * orders.itemsize:(k + 1) * orders.itemsize]
        if k >= 200:
            part += cb[k * cancels.itemsize:(k + 1) * cancels.itemsize]
        out.append(part)
    return out


def run(port, rate, seconds, cpu=None, warmup=0.5):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    n = int(rate * seconds)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rest, first_clid = logon(sock, 1, "secret-one")
    msgs = frames(n, first_clid)
    sock.setblocking(False)
    interval = 1e9 / rate
    recv_ns = np.zeros(n + 1, dtype=np.int64)
    sent_lag = np.zeros(n, dtype=np.int64)
    buf = bytearray(rest)
    got = 0
    start = time.perf_counter_ns() + 1_000_000
    sched = start + (np.arange(n) * interval).astype(np.int64)
    i = 0
    deadline = start + int(seconds * 1e9) + 5_000_000_000
    while got < n and time.perf_counter_ns() < deadline:
        now = time.perf_counter_ns()
        if i < n and sched[i] <= now:
            j = int(np.searchsorted(sched, now, side="right"))
            j = min(j, n)
            _send_all(sock, b"".join(msgs[i:j]))
            sent_lag[i:j] = now - sched[i:j]
            i = j
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            data = b""
        if data:
            t = time.perf_counter_ns()
            buf += data
            k = len(buf) // REPORT.itemsize
            reps = np.frombuffer(bytes(buf[:k * REPORT.itemsize]), dtype=REPORT)
            del buf[:k * REPORT.itemsize]
            acc = reps[reps["h"]["msg_type"] == MsgType.ACCEPTED]["r"]["client_order_id"].astype(np.int64) \
                - first_clid + 1
            recv_ns[acc] = t
            got += len(acc)
    sock.close()
    ok = recv_ns[1:] > 0
    if not ok.any():
        raise RuntimeError("no order was acknowledged")
    lat = (recv_ns[1:] - sched)[ok]
    skip = int(min(warmup, 0.1 * seconds) * rate)     # warm-up samples left out
    return dict(rate=rate, seconds=seconds, orders=n, acked=int(ok.sum()),
                latency_us={str(p): float(np.percentile(lat[skip:], p)) / 1000 for p in (50, 90, 99, 99.9, 99.99)}
                | {"max": float(lat[skip:].max()) / 1000, "min": float(lat[skip:].min()) / 1000},
                generator_lag_us={"p50": float(np.percentile(sent_lag, 50)) / 1000,
                                  "p99": float(np.percentile(sent_lag, 99)) / 1000}), lat[skip:]


def _send_all(sock, data):
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
            view = view[sent:]
        except BlockingIOError:
            time.sleep(0)


def scenario(args):
    from tests.server_proc import ServerProc
    results = {}
    for durability in args.durability:
        with tempfile.TemporaryDirectory() as tmp:
            # the load generator's session may send far above the default throttle tiers
            limits = "".join(f"\n{k} = 1e12" for k in ("orders_per_s", "orders_burst", "cancels_per_s",
                                                          "cancels_burst", "logout_per_s", "logout_burst"))
            srv = ServerProc(Path(tmp), durability=durability,
                             server_extra=f"cpu = {args.server_cpu}{limits}").start()
            try:
                runs = [run(srv.port, args.rate, args.seconds, cpu=args.cpu)[0] for _ in range(args.runs)]
            finally:
                srv.stop()
        med = {p: float(np.median([r["latency_us"][p] for r in runs])) for p in runs[0]["latency_us"]}
        results[durability] = dict(rate=args.rate, seconds=args.seconds, runs=runs, median_latency_us=med)
    return results
