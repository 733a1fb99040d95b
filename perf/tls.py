"""TLS costs through the real server (`python -m perf tls`): what a handshake costs the
engine's loop, and what TLS adds to a round trip, against plain TCP in the same run.

- Handshake: --handshakes sequential TLS connects (handshake, then close) to a server
  pinned to --server-cpu; the server is single-threaded, so the growth of its
  process_cpu_seconds_total (from /metrics) divided by the count is loop time per
  handshake. Per certificate key type (ECDSA P-256, RSA 2048), made with `openssl`.
- Round trip: one logged-on session, closed loop: a NEW_ORDER, wait for its ACCEPTED,
  --orders times; median and p99 over plain TCP and over TLS (ECDSA), same server config.
"""
from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from perf.sessions import UNLIMITED
from protocol import wire
from protocol.codes import Side
from protocol.wire import MsgType

KEYS = {"ecdsa-p256": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
        "rsa-2048": ["-newkey", "rsa:2048"]}


def make_cert(directory: Path, kind: str):
    key, crt = directory / f"{kind}.key", directory / f"{kind}.pem"
    subprocess.run(["openssl", "req", "-x509", *KEYS[kind], "-nodes", "-keyout", str(key), "-out", str(crt),
                    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    key.chmod(0o600)
    return crt, key


def cpu_seconds(srv) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.ops_port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("process_cpu_seconds_total "):
                return float(line.split()[1])
    raise RuntimeError("no process_cpu_seconds_total")


def handshakes(port, ctx, n):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        raw = socket.create_connection(("127.0.0.1", port))
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1"):
            times.append(time.perf_counter() - t)
    return times


def round_trips(port, n, ctx=None):
    from perf.roundtrip import logon
    raw = socket.create_connection(("127.0.0.1", port))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1") if ctx else raw
    rest, clid = logon(sock, 1, "secret-one-for-tests")
    size = wire.frame_size(MsgType.ACCEPTED)
    lat = np.zeros(n, dtype=np.int64)
    buf = bytearray(rest)
    for i in range(n):
        frame = wire.encode(MsgType.NEW_ORDER, client_order_id=clid + i, symbol=1, side=Side.BUY, order_type=1,
                            tif=1, stp=4, price=100_000 - i % 500, qty=1)
        t = time.perf_counter_ns()
        sock.sendall(frame)
        while len(buf) < size:
            buf += sock.recv(65536)
        lat[i] = time.perf_counter_ns() - t
        assert buf[2] == MsgType.ACCEPTED
        del buf[:size]
    sock.close()
    return lat[n // 10:]


def scenario(args):
    from engine.testing import ServerProc
    if shutil.which("openssl") is None:
        raise SystemExit("perf tls needs the openssl command line tool")
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    out = {"handshake": {}, "round_trip": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        limits = f"cpu = {args.server_cpu}{UNLIMITED}\ntls_handshakes_per_s = 1e9\ntls_handshake_burst = 1e9\n" \
                 "max_pending_logons = 100000"
        for kind in KEYS:
            crt, key = make_cert(tmp, kind)
            ctx = ssl.create_default_context(cafile=str(crt))
            srv = ServerProc(tmp / f"srv-{kind}", durability="none",
                             server_extra=f'{limits}\ntls_cert = "{crt}"\ntls_key = "{key}"').start()
            try:
                handshakes(srv.port, ctx, 20)                      # warm-up
                per = []
                client = []
                for _ in range(args.runs):
                    c0 = cpu_seconds(srv)
                    t = handshakes(srv.port, ctx, args.handshakes)
                    per.append((cpu_seconds(srv) - c0) / args.handshakes * 1000)
                    client.append(float(np.median(t)) * 1000)
                out["handshake"][kind] = dict(server_cpu_ms_per_handshake=float(np.median(per)),
                                              spread=[min(per), max(per)], client_ms_median=float(np.median(client)),
                                              runs=args.runs, handshakes_per_run=args.handshakes)
                if kind == "ecdsa-p256":
                    out["round_trip"]["tls"] = [round_trips(srv.port, args.orders, ctx) for _ in range(args.runs)]
            finally:
                srv.stop()
        srv = ServerProc(tmp / "srv-plain", durability="none", server_extra=limits).start()
        try:
            out["round_trip"]["plain"] = [round_trips(srv.port, args.orders) for _ in range(args.runs)]
        finally:
            srv.stop()
    for k, runs in list(out["round_trip"].items()):
        out["round_trip"][k] = {p: float(np.median([np.percentile(r, float(p)) for r in runs])) / 1000
                                for p in ("50", "90", "99")} | {"orders": args.orders, "runs": args.runs}
    rt = out["round_trip"]
    out["round_trip"]["tls_minus_plain_p50_us"] = rt["tls"]["50"] - rt["plain"]["50"]
    return out


def print_table(results):
    print("\n== tls: handshakes ==")
    print(f"{'key':<12}{'server CPU ms/handshake':>25}{'spread':>18}{'client ms':>11}")
    for k, r in results["handshake"].items():
        print(f"{k:<12}{r['server_cpu_ms_per_handshake']:>25.2f}{r['spread'][0]:>9.2f}-{r['spread'][1]:<8.2f}"
              f"{r['client_ms_median']:>11.2f}")
    print("\n== tls: closed-loop round trip (one order at a time) ==")
    print(f"{'transport':<12}{'p50 us':>9}{'p90 us':>9}{'p99 us':>9}")
    for k in ("plain", "tls"):
        r = results["round_trip"][k]
        print(f"{k:<12}{r['50']:>9.1f}{r['90']:>9.1f}{r['99']:>9.1f}")
    print(f"TLS adds {results['round_trip']['tls_minus_plain_p50_us']:.1f} us at the median")
