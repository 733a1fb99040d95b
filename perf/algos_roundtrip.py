"""The order round trip with 1,000 live parents on the server against none, in the same run:
`python -m perf.algos_roundtrip [--parents 1000] [--rate 20000] [--seconds 5] [--runs 3]`.

Two servers (journal off, the test harness's config: engine/testing.py), started together: one idle, one
with --parents TWAP buys on symbol 2 (accounts 2-4; 1,000,000 lots each over 1,000 s in 100 slices, children
resting at a limit far below any price, so every 100 ms ALGO_CLOCK the server journals has about 10 slices
due: 10 cancels and 10 new children). Against each, perf/roundtrip.py's open-loop flow on symbol 1 (account
1, GTC limits away from the touch, each cancelled 200 orders later; latency from each order's scheduled
send to its ACCEPTED), runs alternating between the two servers, medians of --runs.
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import time
from pathlib import Path

from engine.testing import SECRETS, ServerProc
from perf import roundtrip
from perf.__main__ import OUT, machine
from protocol import wire
from protocol.codes import AlgoKind, Side
from protocol.wire import MsgType


def place_parents(port, n):
    per = (n + 2) // 3
    placed = 0
    for account in (2, 3, 4):
        k = min(per, n - placed)
        if k <= 0:
            break
        sock = socket.create_connection(("127.0.0.1", port))
        rest, clid = roundtrip.logon(sock, account, SECRETS[account])
        frames = b"".join(wire.encode(MsgType.ALGO_NEW, client_order_id=clid + i, symbol=2, side=Side.BUY,
                                      algo=AlgoKind.TWAP, qty=1_000_000, limit_price=100_000,
                                      duration_ms=1_000_000, slices=100, randomization_bps=5000,
                                      start_ts_ns=time.time_ns() + i * 10_000_000_000 // k)
                          for i in range(k))
        sock.sendall(frames)
        want = k * wire.frame_size(MsgType.ALGO_ACCEPTED)
        data = rest
        sock.settimeout(30)
        while len(data) < want:             # (their first children come later, after start_ts)
            data += sock.recv(1 << 16)
        frames, _ = wire.decode(data[:want])
        assert all(t == MsgType.ALGO_ACCEPTED for t, _, _ in frames), {t for t, _, _ in frames}
        sock.close()
        placed += k
    return placed


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parents", type=int, default=1000)
    p.add_argument("--rate", type=int, default=20_000)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="algos-rt-"))
    idle = ServerProc(tmp / "idle", durability="none", server_extra=roundtrip.server_limits()).start()
    busy = ServerProc(tmp / "busy", durability="none", server_extra=roundtrip.server_limits()).start()
    out = {"idle": [], "parents": []}
    try:
        place_parents(busy.port, args.parents)
        time.sleep(1.0)
        for _ in range(args.runs):
            for name, srv in (("idle", idle), ("parents", busy)):
                res, _ = roundtrip.run(srv.port, args.rate, args.seconds)
                out[name].append(res["latency_us"])
                print(name, {k: round(v, 1) for k, v in res["latency_us"].items() if k in ("50", "90", "99")},
                      flush=True)
    finally:
        idle.stop()
        busy.stop()
    med = {name: {q: statistics.median(r[q] for r in runs) for q in ("50", "90", "99")}
           for name, runs in out.items()}
    print(f"round trip at {args.rate}/s, medians of {args.runs}: idle server {med['idle']}, "
          f"{args.parents} live parents {med['parents']}")
    OUT.mkdir(exist_ok=True)
    path = OUT / f"algos-roundtrip-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(dict(machine=machine(), args=vars(args), runs=out, median=med), indent=1))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
