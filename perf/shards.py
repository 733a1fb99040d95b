"""Symbol shards: 2 shards against 1 in throughput (engine/SCALING.md "Symbol shards").

The same closed-loop pipelined flow as perf/throughput.py (GTC limits away from the touch, each
cancelled 200 orders later; every session at most --window orders unacknowledged), with two
sessions of two accounts: one trading BTCUSDT, one ETHUSDT (the same price and lot scales). "1
shard": one server owning both symbols takes both sessions. "2 shards": shard a owns BTCUSDT
(and AAPL), shard b ETHUSDT, each a server process of its own with its own journal, and each
session goes to its symbol's shard (as clients.ShardedClient routes). Orders/s = orders
acknowledged by both sessions / time from the first send to the last acknowledgement. The
variants alternate within each run; medians over --runs.

Nothing is pinned: the servers and this generator share the machine's cores (2 on the VM used
for perf/RESULTS.md, with other work on it), so "2 shards" there measures what two engines gain
from overlapping their journal commits and loops on one box, not what two machines would give.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from perf import roundtrip as rt
from perf import throughput

ETH = """
[[symbols]]
id = 3
name = "ETHUSDT"
price_decimals = 2
qty_decimals = 3
tick_size = 1
lot_size = 1
"""
SYMBOLS = {"a": 1, "b": 3}            # the session's symbol on each shard (BTCUSDT, ETHUSDT)


class Session(throughput.Session):
    def __init__(self, port, account, n, symbol):
        super().__init__(port, account, n, echo=False)
        self.data, send_end, _ = rt.stream(n, self.first_clid, symbol=symbol)
        self.send_end = send_end.tolist()
        self.view = memoryview(self.data)


def _run(ports, n, window, pids, timeout=120.0):
    """Session i sends symbol SYMBOLS[shard i] to ports[i] (the same port twice: one shard)."""
    ss = [Session(port, 1 + i, n, sym) for i, (port, sym) in enumerate(zip(ports, SYMBOLS.values()))]
    cpu0 = {pid: rt.cpu_seconds(pid) for pid in pids}
    gen0, busy0 = time.process_time(), rt.busy_seconds()
    live = list(ss)
    t0 = time.perf_counter()
    while live:
        live = [s for s in live if s.pump(window)]
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError("shards run timed out")
    dt = time.perf_counter() - t0
    gen, busy = (time.process_time() - gen0) / dt, (rt.busy_seconds() - busy0) / dt
    for s in ss:
        s.verify()
    total = n * len(ss)
    server = [(rt.cpu_seconds(pid) - cpu0[pid]) / dt for pid in pids]
    return dict(orders=total, seconds=dt, orders_per_s=total / dt, server_cpu=server, generator_cpu=gen,
                other_cores=max(0.0, busy - sum(server) - gen))


def scenario(args):
    from engine.testing import ServerProc
    tmp = tempfile.TemporaryDirectory()
    root = Path(tmp.name)
    directory = root / "shards.toml"
    directory.write_text('[[shards]]\nname = "a"\naddress = "127.0.0.1:1"\nsymbols = ["BTCUSDT", "AAPL"]\n\n'
                         '[[shards]]\nname = "b"\naddress = "127.0.0.1:1"\nsymbols = ["ETHUSDT"]\n')
    results = {}
    procs = {}
    try:
        for d in args.durability:
            kw = dict(durability=d, server_extra=rt.server_limits(), output_buffer_bytes=64 << 20)
            procs[(d, "1")] = [ServerProc(root / f"{d}-one", extra=ETH, **kw).start()]
            procs[(d, "2")] = [ServerProc(root / f"{d}-{name}", extra=ETH + f'\n[shards]\nname = "{name}"\n'
                                          f'directory = "{directory}"\n', **kw).start() for name in SYMBOLS]
            for k in ("1", "2"):
                results[f"{d}, {k} shard{'s' if k == '2' else ''}"] = dict(runs=[])
        for _ in range(args.runs):
            for d in args.durability:
                for k in ("1", "2"):
                    ps = procs[(d, k)]
                    ports = [ps[0].port, ps[0].port] if k == "1" else [p.port for p in ps]
                    r = _run(ports, args.orders_per_session, args.window, [p.proc.pid for p in ps])
                    results[f"{d}, {k} shard{'s' if k == '2' else ''}"]["runs"].append(r)
    finally:
        for ps in procs.values():
            for p in ps:
                p.stop()
        tmp.cleanup()
    for v in results.values():
        rates = [r["orders_per_s"] for r in v["runs"]]
        v["orders_per_s"] = dict(median=float(np.median(rates)), min=min(rates), max=max(rates))
    for d in args.durability:
        one, two = results[f"{d}, 1 shard"], results[f"{d}, 2 shards"]
        two["vs_1_shard"] = two["orders_per_s"]["median"] / one["orders_per_s"]["median"]
    return results


def print_table(results):
    print("\n== shards (orders/s over the protocol, both sessions) ==")
    print(f"{'variant':<18}{'orders/s median':>17}{'min':>12}{'max':>12}{'vs 1 shard':>12}{'server cpu':>16}"
          f"{'gen cpu':>9}{'others, cores':>15}")
    for k, v in results.items():
        o = v["orders_per_s"]
        cpu = "+".join(f"{np.median([r['server_cpu'][i] for r in v['runs']]):.0%}"
                       for i in range(len(v["runs"][0]["server_cpu"])))
        ratio = f"{v['vs_1_shard']:.2f}x" if "vs_1_shard" in v else ""
        gen = np.median([r["generator_cpu"] for r in v["runs"]])
        others = np.median([r["other_cores"] for r in v["runs"]])
        print(f"{k:<18}{o['median']:>17,.0f}{o['min']:>12,.0f}{o['max']:>12,.0f}{ratio:>12}{cpu:>16}{gen:>9.0%}"
              f"{others:>15.2f}")
