"""One noisy session beside quiet ones (issue 18, item 5): does one client's traffic stall the rest?

Probe sessions (accounts 2..4) each send IOC sells that find no liquidity, open loop at
--probe-rate orders/s in all, and time each from its *scheduled* send to the receipt of its
ACCEPTED (coordinated omission corrected; every report is one fixed-size frame, so order k's
ACCEPTED ends at a known offset of the session's reply stream). Variants, interleaved run by run
on the same server (sync durability unless --durability says otherwise):
  quiet      the probes alone (the baseline of the same run)
  orders     beside one noisy session (account 1) sending --noisy-rate IOC orders/s alone
  heartbeat  the same, each order followed by a HEARTBEAT
  status     the same, each order followed by an ORDER_STATUS_REQUEST for it
The noisy session reads and discards everything it is sent. Reported: the probes' p50/p99/p99.9
per variant (median of --runs runs) and each noisy variant's ratio to quiet (goal: <= 1.2).
`orders` is what group commit itself costs the probes: with commits back to back, a probe's
order waits for the commit in flight before its own (about 1.5 fsyncs instead of one);
heartbeat and status against orders is what the session frames add.
--compare-tree PATH runs the same variants against a server started from another checkout (say,
the commit before a change), interleaved with this one's.

The generator is one Python thread with a selector: it sleeps until the next send is due, so it
leaves the server's core alone, but its own wake-up lag (reported) is part of every figure.
"""
from __future__ import annotations

import importlib.util
import os
import selectors
import socket
import tempfile
import time
from pathlib import Path

import numpy as np

from perf import latency
from perf.roundtrip import logon, server_limits
from protocol import wire
from protocol.codes import Side
from protocol.wire import MsgType

REPORT = wire.frame_size(MsgType.ACCEPTED)
PROBE_ACCOUNTS = (2, 3, 4)
VARIANTS = ("quiet", "orders", "heartbeat", "status")


def ioc(clid, symbol):
    return wire.encode(MsgType.NEW_ORDER, client_order_id=clid, symbol=symbol, side=Side.SELL, order_type=1,
                       tif=3, stp=1, price=100, qty=1)


class Session:
    def __init__(self, port, account, secrets):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rest, self.next_clid = logon(self.sock, account, secrets[account])
        self.got = len(rest)
        self.sock.setblocking(False)


def run(port, variant, seconds, probe_rate, noisy_rate, secrets, warmup=0.5):
    """One run; returns (result dict, probe latencies in ns after the warm-up)."""
    probes = [Session(port, a, secrets) for a in PROBE_ACCOUNTS]
    noisy = Session(port, 1, secrets) if variant != "quiet" else None
    sel = selectors.DefaultSelector()
    for s in probes + ([noisy] if noisy else []):
        sel.register(s.sock, selectors.EVENT_READ, s)
    n = int(probe_rate * seconds)
    sched_probe = np.arange(n) / probe_rate                  # seconds from start
    sent_at = np.zeros(n)
    acked_at = np.full(n, np.nan)
    owner = [probes[k % len(probes)] for k in range(n)]
    index_in_session = [k // len(probes) for k in range(n)]
    pending = {id(s): [] for s in probes}                    # per probe session: (offset, k) waiting
    m = int(noisy_rate * seconds) if noisy else 0
    noisy_sent = 0
    start = time.perf_counter() + 0.05
    k = 0
    while True:
        now = time.perf_counter() - start
        while k < n and sched_probe[k] <= now:
            s = owner[k]
            s.sock.send(ioc(s.next_clid + index_in_session[k], 1))
            sent_at[k] = time.perf_counter() - start
            pending[id(s)].append(((2 * index_in_session[k] + 1) * REPORT, k))
            k += 1
        if noisy is not None and noisy_sent < m:
            due = min(m, int(now * noisy_rate) + 1)
            if due > noisy_sent:
                parts = []
                for j in range(noisy_sent, due):
                    clid = noisy.next_clid + j
                    parts.append(ioc(clid, 2))
                    if variant == "heartbeat":
                        parts.append(wire.encode(MsgType.HEARTBEAT))
                    elif variant == "status":
                        parts.append(wire.encode(MsgType.ORDER_STATUS_REQUEST, request_id=j + 1, client_order_id=clid))
                data = b"".join(parts)
                noisy.sock.setblocking(True)
                noisy.sock.sendall(data)
                noisy.sock.setblocking(False)
                noisy_sent = due
        if k >= n and all(not p for p in pending.values()):
            break
        if now > seconds + 30:               # (counted as acknowledged now: a lower bound, reported)
            break
        next_due = sched_probe[k] if k < n else now + 0.01
        if noisy is not None and noisy_sent < m:
            next_due = min(next_due, (noisy_sent + 1) / noisy_rate)
        for key, _ in sel.select(max(0.0, next_due - (time.perf_counter() - start))):
            s = key.data
            try:
                data = s.sock.recv(1 << 20)
            except BlockingIOError:
                continue
            if not data:
                raise RuntimeError("the server closed a session")
            s.got += len(data)
            if s is noisy:
                continue
            t = time.perf_counter() - start
            waiting = pending[id(s)]
            while waiting and waiting[0][0] <= s.got:
                acked_at[waiting.pop(0)[1]] = t
    for s in probes + ([noisy] if noisy else []):
        sel.unregister(s.sock)
        s.sock.close()
    skip = int(warmup * probe_rate)
    unacked = int(np.isnan(acked_at).sum())
    acked_at[np.isnan(acked_at)] = time.perf_counter() - start
    lat = ((acked_at - sched_probe) * 1e9).astype(np.int64)[skip:]
    lag = (sent_at - sched_probe)[skip:] * 1e6
    return dict(variant=variant, probe_orders=n, noisy_orders=m, unacknowledged_after_30s=unacked,
                latency_us=latency.summary_us(lat),
                generator_lag_us={"p50": float(np.percentile(lag, 50)), "p99": float(np.percentile(lag, 99))}), lat


def _harness(tree):
    """The server harness (engine/testing.py, or tests/server_proc.py in an older checkout) of a
    tree, whose server runs from that tree: the module, for its ServerProc and SECRETS."""
    if tree is None:
        from engine import testing
        return testing
    path = Path(tree) / "engine" / "testing.py"
    if not path.exists():
        path = Path(tree) / "tests" / "server_proc.py"
    spec = importlib.util.spec_from_file_location(f"server_proc_{abs(hash(tree))}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def scenario(args):
    trees = {"this": None}
    if args.compare_tree:
        trees = {"compared": args.compare_tree, "this": None}
    durability = args.durability[0] if args.durability != ["none", "sync"] else "sync"
    tmp = tempfile.TemporaryDirectory()
    servers, harness = {}, {}
    try:
        for name, tree in trees.items():
            harness[name] = _harness(tree)
            cls = harness[name].ServerProc
            extra = server_limits() + (f"\ncpu = {args.server_cpu}" if args.server_cpu is not None else "")
            servers[name] = cls(Path(tmp.name) / name, durability=durability, server_extra=extra,
                                journal_extra="snapshot_every = 0").start()
        results = {name: {v: dict(runs=[]) for v in VARIANTS} for name in trees}
        samples = {name: {v: [] for v in VARIANTS} for name in trees}
        for _ in range(args.runs):
            for name in trees:                       # interleaved: the machine's noise hits every variant
                for v in VARIANTS:
                    r, lat = run(servers[name].port, v, args.seconds, args.probe_rate, args.noisy_rate,
                                 harness[name].SECRETS)
                    results[name][v]["runs"].append(r)
                    samples[name][v].append(lat)
    finally:
        for srv in servers.values():
            srv.stop()
        tmp.cleanup()
    for name in trees:
        for v in VARIANTS:
            runs = results[name][v]["runs"]
            results[name][v]["median_latency_us"] = {p: float(np.median([r["latency_us"][p] for r in runs]))
                                                     for p in ("50", "99", "99.9")}
            results[name][v]["spread_us"] = {p: [min(r["latency_us"][p] for r in runs),
                                                 max(r["latency_us"][p] for r in runs)] for p in ("50", "99")}
        quiet = results[name]["quiet"]["median_latency_us"]
        for v in VARIANTS[1:]:
            med = results[name][v]["median_latency_us"]
            results[name][v]["x_quiet"] = {p: med[p] / quiet[p] for p in ("50", "99")}
        if getattr(args, "plot", True):
            latency.plot({v: np.concatenate(samples[name][v]) for v in VARIANTS},
                         f"probe round trip beside a noisy session ({name})", Path(args.out) / f"noisy-{name}.png")
    results["setup"] = dict(durability=durability, probe_rate=args.probe_rate, noisy_rate=args.noisy_rate,
                            seconds=args.seconds, runs=args.runs, probe_sessions=len(PROBE_ACCOUNTS),
                            compare_tree=args.compare_tree)
    return results


def print_table(results):
    s = results["setup"]
    print(f"probes: {s['probe_sessions']} sessions, {s['probe_rate']:g} IOC orders/s in all; noisy: "
          f"{s['noisy_rate']:g} orders/s + a heartbeat or ORDER_STATUS each; {s['durability']}; "
          f"median of {s['runs']} runs of {s['seconds']:g} s")
    print(f"{'server':<10}{'variant':<11}{'p50 us':>10}{'p99 us':>10}{'p99.9 us':>10}{'p50 x':>8}{'p99 x':>8}"
          f"{'p50 spread':>20}{'lag p99 us':>12}")
    for name, by_variant in results.items():
        if name == "setup":
            continue
        for v, r in by_variant.items():
            med, x = r["median_latency_us"], r.get("x_quiet")
            lag = float(np.median([run["generator_lag_us"]["p99"] for run in r["runs"]]))
            spread = "{:.0f}-{:.0f}".format(*r["spread_us"]["50"])
            print(f"{name:<10}{v:<11}{med['50']:>10.0f}{med['99']:>10.0f}{med['99.9']:>10.0f}"
                  f"{(x['50'] if x else 1):>8.2f}{(x['99'] if x else 1):>8.2f}{spread:>20}{lag:>12.0f}")
