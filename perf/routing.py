"""The router's speed (issue 16): routing decision time, and the round trip it adds.

    python -m perf.routing [--orders 1000] [--direct 1000]

Three venue servers (engine/testing.py ServerProc, journal async, risk off) and the router
(engine/routing, its journal async, taker fees 0 / 5 / 10 bps) on loopback, 100 symbols (S3..S102)
plus BTCUSDT. Each venue holds, per symbol S*, a ladder of 10 asks of 10 lots, offset per venue so
that the all-in prices interleave: every buy of 30 lots takes the best level of each venue, three
IOC children. One client (raw socket, closed loop: the next order once the last report of the
previous one came) sends --orders such buys, round-robin over the 100 symbols.

Measured, in the same run:
- decision time: inside the router, from the read that brought the order (perf_counter at
  data_received) to the write of its last child order to its venue's socket; it includes
  decoding, the split, the journal commit (durability async: LMDB commit, no fsync) and the
  three venue writes (the client's ACCEPTED is written after them), and is split into those
  parts: read -> commit begun, the commit, commit end -> last child written. Samples from the
  router's ops listener (/decisions). The same code path in process (venues that write nothing).
- the router's round trip (send -> ACCEPTED; send -> the last FILL) for the 3-venue orders;
- the router's added round trip: a buy of 1 lot of BTCUSDT (one child, one venue: A holds 10**6
  lots at the best all-in price) through the router, against the same IOC buy sent straight to
  venue A by another account, send -> ACCEPTED and send -> FILL;
- the echo floor: a 72-byte frame to perf/echo.py's server and back (Python at both ends); and
  three back-to-back 72-byte sends to three echo connections (what three child writes cost at
  the least from Python on this loopback, the receiver woken each time).
Goals: decision p50 <= 50 us, p99 <= 200 us.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from clients.client import SyncClient
from engine.routing.codec import NEW_ORDER_FRAME
from engine.testing import SECRETS, RouterProc, ServerProc
from perf import latency
from perf.roundtrip import logon
from perf.sessions import UNLIMITED, config_extra
from protocol import wire
from protocol.codes import OrderType, Side, TimeInForce
from protocol.wire import MsgType

FEES = {"A": ("0", "0"), "B": ("0.0005", "0"), "C": ("0.0010", "0")}
OFFSET = {"A": 0, "B": -5, "C": -10}      # price units: the all-in ladders of the three venues interleave
SYMBOLS = list(range(3, 103))
LEVELS, LEVEL_QTY = 10, 10
BASE = 10_000                               # 100.00
REPORT = wire.frame_size(MsgType.ACCEPTED)
HEAD = struct.Struct("<HBBI")
LEAVES_AT = wire.HEADER.size + wire.EXEC_REPORT.offsets["leaves"]


class Raw:
    """A logged-on raw session: send one frame, read reports until one matches."""

    def __init__(self, port, account):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf, self.next_clid = logon(self.sock, account, SECRETS[account])
        self.buf = bytearray(self.buf)

    def frames(self):
        while True:
            while len(self.buf) >= 8:
                length, t, _, _ = HEAD.unpack_from(self.buf)
                if len(self.buf) < length:
                    break
                frame = bytes(self.buf[:length])
                del self.buf[:length]
                yield t, frame
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise RuntimeError("closed")
            self.buf += chunk

    def order(self, symbol, qty, price):
        """(ns to ACCEPTED, ns to the report that leaves it 0)."""
        clid = self.next_clid
        self.next_clid += 1
        frame = NEW_ORDER_FRAME.pack(clid, symbol, Side.BUY, OrderType.LIMIT, TimeInForce.IOC, price, qty)
        t0 = time.perf_counter_ns()
        self.sock.sendall(frame)
        acked = None
        for t, f in self.frames():
            now = time.perf_counter_ns()
            if t == MsgType.ACCEPTED and acked is None:
                acked = now - t0
            elif t == MsgType.REJECTED:
                raise RuntimeError(f"order rejected: {wire.decode(f)[0][0][1]}")
            elif t in (MsgType.FILL, MsgType.CANCELLED) and int.from_bytes(f[LEAVES_AT:LEAVES_AT + 8], "little") == 0:
                return acked, now - t0


class NullVenue:
    """A venue adapter that takes every frame and sends nothing (the in-process measurement)."""
    up = True
    raw_frames = True
    venue_symbol = {s: s for s in SYMBOLS}

    def raw(self, frame):
        return True


def in_process(n, tmp):
    """The same decision code path (decode, split, journal commit, effects) in this process with the
    same books and a real journal (async), venues that write nothing: the router's own CPU time,
    without the socket writes and the scheduling the end-to-end figure includes."""
    import asyncio
    from decimal import Decimal

    from engine.config import SymbolConfig
    from engine.journal import Journal
    from engine.routing.config import RouterSection, VenueConfig
    from engine.routing.monitor import Monitor
    from engine.routing.router import Router
    from protocol.records import ROUTE_INPUT, ROUTE_OUTPUT
    vcs = [VenueConfig(name=v, port=1, account=1, demo_secret="x" * 16, taker_fee=Decimal(FEES[v][0])) for v in "ABC"]
    j = Journal(str(Path(tmp) / "inproc"), "async", layouts=(ROUTE_INPUT, ROUTE_OUTPUT))
    r = Router(RouterSection(), vcs, {s: SymbolConfig(id=s, name=f"S{s}") for s in SYMBOLS}, j)
    r.metrics = Monitor(r, list("ABC"), 250.0, 0.2)
    for i, v in enumerate("ABC", 1):
        r.venues[i] = NullVenue()
        r.metrics.up(i)
        for s in SYMBOLS:           # deep levels: the books are not consumed here (no venue answers)
            r.book.update(s, i, [], [(BASE + OFFSET[v] + 3 * k, LEVEL_QTY, 1) for k in range(LEVELS)])
    out = []

    async def go():
        r.loop = asyncio.get_running_loop()
        for i in range(1, 4):
            r.venue_up(i, 1)
        r.flush()
        for k in range(n):
            buf = bytearray(NEW_ORDER_FRAME.pack(k + 1, SYMBOLS[k % len(SYMBOLS)], Side.BUY, OrderType.LIMIT,
                                                 TimeInForce.IOC, BASE + 40, 3 * LEVEL_QTY))
            t0 = time.perf_counter_ns()
            if not r.new_orders(1, buf, 0, t0):        # the client session's path: C, else Python
                r.client_order(1, MsgType.NEW_ORDER, bytes(buf[wire.HEADER.size:]), t0)
            r.flush()
            out.append(r.decision_ns[-1])
            parts.append(r.decision_parts[-1])
    parts = []
    asyncio.run(go())
    j.close()
    return out, parts


def echo_floor(n, tmp):
    """(the echo round trip, three back-to-back 72-byte sends to three echo connections: the floor
    of writing three children to three local venues from Python)."""
    port_file = str(Path(tmp) / "echo_port")
    proc = subprocess.Popen([sys.executable, "-m", "perf.echo", "--port-file", port_file])
    try:
        while not os.path.exists(port_file):
            time.sleep(0.02)
        socks = [socket.create_connection(("127.0.0.1", int(open(port_file).read()))) for _ in range(3)]
        for s in socks:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s = socks[0]
        frame = bytes(72)
        out, three = [], []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            s.sendall(frame)
            got = 0
            while got < len(frame):
                got += len(s.recv(4096))
            out.append(time.perf_counter_ns() - t0)
        for _ in range(n):
            t0 = time.perf_counter_ns()
            for x in socks:
                x.send(frame)
            three.append(time.perf_counter_ns() - t0)
            for x in socks:
                got = 0
                while got < len(frame):
                    got += len(x.recv(4096))
        return out, three
    finally:
        proc.kill()


def post(srv, name):
    with SyncClient.connect("127.0.0.1", srv.port, account=2, secret=SECRETS[2], timeout=60) as mm:
        for sym in SYMBOLS:
            for i in range(LEVELS):
                mm.place(sym, "sell", LEVEL_QTY, price=mm.client.symbols_by_id[sym].price(BASE + OFFSET[name] + 3 * i))
        if name == "A":
            mm.place("BTCUSDT", "sell", "1000.000", price="50000.00")
        else:
            mm.place("BTCUSDT", "sell", "1000.000", price="50010.00")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m perf.routing", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--orders", type=int, default=1000, help="3-venue orders through the router (<= 1000: the "
                                                           "ladders hold 10 per symbol)")
    p.add_argument("--direct", type=int, default=1000, help="1-lot orders, through the router and direct")
    p.add_argument("--nice-venues", type=int, default=0, help="run the venue servers at this nice value (on a "
                   "2-core machine a venue woken by a child preempts the router before its next child is written)")
    p.add_argument("--router-cpu", type=int, help="the router's [server] cpu (its core; on this 2-core machine "
                   "with --venue-cpu the other one)")
    p.add_argument("--router-nice", type=int, help="the router's [router] nice (below 0: above the venues)")
    p.add_argument("--venue-cpu", type=int, help="pin the venue servers (every thread) to this core")
    args = p.parse_args(argv)
    load = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="perf-routing-")
    extra = config_extra(0, len(SYMBOLS))
    venues = {}
    router = None
    try:
        for name in "ABC":
            venues[name] = ServerProc(Path(tmp) / f"venue{name}", durability="async", server_extra=UNLIMITED,
                                      engine={"max_symbols": 128}, extra=extra).start()
            post(venues[name], name)
            if args.nice_venues:
                os.setpriority(os.PRIO_PROCESS, venues[name].proc.pid, args.nice_venues)
            if args.venue_cpu is not None:
                for t in os.listdir(f"/proc/{venues[name].proc.pid}/task"):
                    os.sched_setaffinity(int(t), {args.venue_cpu})
        router = RouterProc(Path(tmp) / "router", list(venues.items()), fees=FEES, durability="async", extra=extra,
                            server_extra="" if args.router_cpu is None else f"cpu = {args.router_cpu}",
                            router_extra="" if args.router_nice is None else f"nice = {args.router_nice}").start()
        with SyncClient.connect("127.0.0.1", router.port, account=1, secret=SECRETS[1]) as c:
            deadline = time.monotonic() + 30
            while len(c.book(SYMBOLS[-1], 50).asks) < 3 * LEVELS or len(c.book("BTCUSDT", 5).asks) < 2:
                assert time.monotonic() < deadline, "the router's consolidated book never filled"
                time.sleep(0.1)
        ops = f"http://127.0.0.1:{router.ops_port}"
        urllib.request.urlopen(ops + "/decisions").read()
        client = Raw(router.port, 1)
        split_ack, split_done = [], []
        for k in range(args.orders):
            a, d = client.order(SYMBOLS[k % len(SYMBOLS)], 3 * LEVEL_QTY, BASE + 40)
            split_ack.append(a)
            split_done.append(d)
        got = json.loads(urllib.request.urlopen(ops + "/decisions").read())
        decisions, parts = got["total"], got["parts"]
        st = router.status()
        children = sum(v["children"] for v in st["venues"])
        r_ack, r_done, d_ack, d_done = [], [], [], []
        direct = Raw(venues["A"].port, 3)
        for _ in range(args.direct):
            a, d = client.order(1, 1, 5_000_000)
            r_ack.append(a)
            r_done.append(d)
            a, d = direct.order(1, 1, 5_000_000)
            d_ack.append(a)
            d_done.append(d)
        echo, three_sends = echo_floor(args.direct, tmp)
        inproc, inproc_parts = in_process(args.orders, tmp)
    finally:
        if router is not None:
            router.stop()
        for s in venues.values():
            s.stop()
    rows = {"decision (order read -> last child written)": decisions,
            "  read -> commit begun (the decision)": [x[0] for x in parts],
            "  journal commit (async)": [x[1] for x in parts],
            "  commit end -> last child written": [x[2] for x in parts],
            "decision in process, no sockets (same code)": inproc,
            "  in process: read -> commit begun": [x[0] for x in inproc_parts],
            "  in process: journal commit (async)": [x[1] for x in inproc_parts],
            "router, 3 children: send -> ACCEPTED": split_ack,
            "router, 3 children: send -> last FILL": split_done,
            "router, 1 child: send -> ACCEPTED": r_ack,
            "router, 1 child: send -> FILL": r_done,
            "venue A direct: send -> ACCEPTED": d_ack,
            "venue A direct: send -> FILL": d_done,
            "echo floor (72 bytes there and back)": echo,
            "three 72-byte sends to three echo sockets": three_sends}
    print(f"placement: router cpu {args.router_cpu} nice {args.router_nice}, venues cpu {args.venue_cpu} "
          f"nice {args.nice_venues}")
    print(f"{args.orders} orders over {len(SYMBOLS)} symbols, {children} children to 3 venues; "
          f"{args.direct} 1-lot orders through the router and direct; load average before "
          f"{load[0]:.2f}, after {os.getloadavg()[0]:.2f} ({os.cpu_count()} cpus)")
    print(f"{'us':<46}{'count':>7}{'p50':>9}{'p90':>9}{'p99':>9}{'p99.9':>9}{'max':>9}")
    out = {}
    for name, xs in rows.items():
        s = latency.summary_us(xs)
        out[name] = s
        print(f"{name:<46}{s['count']:>7}{s['50']:>9.1f}{s['90']:>9.1f}{s['99']:>9.1f}{s['99.9']:>9.1f}"
              f"{s['max']:>9.1f}")
    added = latency.summary_us([a - b for a, b in zip(sorted(r_done), sorted(d_done))])
    print(f"router added round trip to the FILL at matching percentiles: p50 {added['50']:.1f} us, "
          f"p99 {added['99']:.1f} us")
    od = Path(__file__).resolve().parent / "out"
    od.mkdir(exist_ok=True)
    (od / f"routing-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
