"""trading-engine benchmarks: `python -m perf SCENARIO [options]`.

Scenarios here:
  core     the matching core alone, in-process, driven from a command buffer
           (perf/workload.py), 1 symbol and 100 symbols; median ops/s of --runs
           fresh engines with the spread, per-command latency percentiles from
           Engine.run_timed, and the same workload through the Python baselines
           in the same run, the same commands and --runs runs each (a sorted-dict book;
           lightmatchingengine if installed); --prefill: a deep book placed first, untimed
           --risk: the same commands also with every risk check on, interleaved,
           reported as the ratio of the two (engine/RISK.md; target >= 0.85)
  instructions  instructions per command of the core with risk off and every risk check on
           (callgrind: repeatable where wall time is not; --count-n commands, see perf/instructions.py)
  memory   RSS and preallocated array bytes holding 1,000,000 resting orders
  scale    one engine, bigger: memory (RSS, arrays) and ops/s of the core mix over 10,000 symbols
           with realistic books and on one symbol after 10,000,000 resting orders, beside the
           shallow book in the same run, each case in a fresh process (see perf/scale.py)
  roundtrip  client-observed latency over loopback TCP, open loop at --rate, server
           pinned to --server-cpu, generator to --cpu, per journal durability, beside
           an echo server (the floor) in the same run; --scrape adds the server under
           a /metrics scrape every second (see perf/roundtrip.py)
  throughput  closed-loop pipelined sessions, max sustained orders/s (perf/throughput.py);
           --risk adds a server with every risk check on (journal none) beside the others
  replay   journal replay rate (what a restart without a snapshot does) and snapshot
           write/load time (see perf/replay.py)
  journal  Journal append rate and commit latency per durability and batch size, and group
           commit under load (batches grow while an fsync is in flight), for the Journal
           class and for the server (see perf/journal.py)
  recovery restart-to-ready of the real server over --n journaled commands, without and with
           a recent snapshot, and the loop pause a periodic (forked) snapshot causes
  sessions N logged-on sessions (--sessions, default 1,100,500) trading at an aggregate open-loop
           --rate through the real server; symbols: 4 sessions spreading orders over S symbols
           (--symbol-counts, default 1,1000,5000) (see perf/sessions.py)
  tls      server CPU per TLS handshake (ECDSA P-256, RSA 2048) and the round trip over TLS
           against plain TCP (see perf/tls.py)
  noisy    quiet sessions' round trip beside one noisy session (orders + a heartbeat or an
           ORDER_STATUS each) against the quiet baseline of the same run (see perf/noisy.py)
  failover  hot standby over NATS JetStream: kill -9 of a `replicated` primary under load,
           --trials times: failover time to the standby's first logon, acknowledged reports
           lost (must be 0); standbylag: the standby's lag at an open-loop --rate (perf/replication.py);
           roundtrip --durability sync,replicated: the round trip of both in the same run
  riskcycle  one full cycle of the risk worker's models (parametric, historical 500, Monte Carlo
           10,000 paths, the VaR limit's bounds, backtests) for --var-accounts x --var-symbols on one
           core (see perf/riskcycle.py)
  varworker  the server's round trip with and without the risk worker following its journal,
           alternating phases (see perf/varworker.py)
  admin    admin action latency (a journaled deposit, status; test and production scrypt cost)
           and the SDK's portfolio()/positions()/connect() round trips (see perf/admin.py)
  shards   symbol shards: 2 shards against 1 in throughput, the same pipelined flow as throughput over
           two symbols and two sessions, per journal durability (see perf/shards.py)
Each prints a table and writes perf/out/<scenario>-<time>.json; latency scenarios
also draw latency-by-percentile PNGs there when matplotlib is installed.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

from perf import baseline, latency, workload

OUT = Path(__file__).resolve().parent / "out"
PERCENTILES = (50, 90, 99, 99.9, 99.99)


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = ""
    return dict(cpu=cpu, cores=os.cpu_count(), kernel=platform.release(), python=platform.python_version(),
                commit=commit, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))


def pin(cpu):
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def spread(xs):
    return dict(median=statistics.median(xs), min=min(xs), max=max(xs), runs=len(xs))


def core_scenario(args):
    """Per symbol count: ops/s of --runs fresh engines over the flow (a --prefill deep book is
    applied first, untimed), latency per command, and the Python baselines over the same
    commands, --runs times each."""
    results = {}
    for symbols in args.symbols:
        cmds, ops = workload.generate(args.n, symbols=symbols, seed=args.seed, prefill=args.prefill)
        deep, flow = cmds[:args.prefill], cmds[args.prefill:]
        if args.risk:
            results[f"{symbols}_symbols_risk"] = risk_comparison(args, symbols, deep, flow)
        rates, lat_runs = [], []
        for _ in range(args.runs):
            e = workload.make_engine(symbols, max_orders=args.max_orders)
            e.run(deep)
            gc.collect()
            gc.disable()
            t = time.perf_counter()
            events = e.run(flow)
            dt = time.perf_counter() - t
            gc.enable()
            rates.append(len(flow) / dt)
            e = workload.make_engine(symbols, max_orders=args.max_orders)
            e.run(deep)
            lat = np.zeros(len(flow), dtype=np.int64)
            e.run_timed(flow, lat)
            lat_runs.append(lat)
            e.validate()
        lat = np.concatenate(lat_runs)
        entry = dict(ops=len(flow), prefill=args.prefill, events_per_run=int(events), ops_per_s=spread(rates),
                     latency_ns={str(p): float(np.percentile(lat, p)) for p in PERCENTILES} | {"max": int(lat.max())})
        entry["live_orders_at_end"] = e.live_orders
        if args.prefill:              # the deep book is never touched: all of it still rests at the end
            alone = workload.make_engine(symbols, max_orders=args.max_orders)
            alone.run(flow)
            entry["deep_orders_touched"] = args.prefill - (e.live_orders - alone.live_orders)
        for name, run in (("sorted_dict", baseline.run_sorted_dict), ("lightmatchingengine",
                                                                        baseline.run_lightmatchingengine)):
            try:
                b_rates = [len(flow) / run(ops[args.prefill:], ops[:args.prefill]) for _ in range(args.runs)]
            except ImportError:
                entry[f"{name}_ops_per_s"] = None
                continue
            entry[f"{name}_ops_per_s"] = spread(b_rates)
            entry[f"ratio_vs_{name}"] = entry["ops_per_s"]["median"] / entry[f"{name}_ops_per_s"]["median"]
        results[f"{symbols}_symbols"] = entry
        if args.plot:
            latency.plot({"core": lat}, f"core, {symbols} symbol(s)", args.out / f"core-latency-{symbols}sym.png",
                         unit="ns")
    return results


def risk_comparison(args, symbols, deep, cmds):
    """The same commands with risk off and with every check on (after the untimed `deep` book),
    runs interleaved (off, on, off, on, ...) so both see the same machine; the events of both
    must be the matching ones."""
    rates = {"off": [], "on": []}
    lat = {"off": [], "on": []}
    counts = {}
    for _ in range(args.runs):
        for mode in ("off", "on"):
            e = workload.make_engine(symbols, max_orders=args.max_orders, risk=mode == "on")
            e.run(deep)
            gc.collect()
            gc.disable()
            t = time.perf_counter()
            counts[mode] = e.run(cmds)
            dt = time.perf_counter() - t
            gc.enable()
            rates[mode].append(len(cmds) / dt)
            e = workload.make_engine(symbols, max_orders=args.max_orders, risk=mode == "on")
            e.run(deep)
            x = np.zeros(len(cmds), dtype=np.int64)
            e.run_timed(cmds, x)
            lat[mode].append(x)
            e.validate()
    out = {}
    for mode in ("off", "on"):
        x = np.concatenate(lat[mode])
        out[mode] = dict(ops_per_s=spread(rates[mode]), events=int(counts[mode]),
                         latency_ns={str(p): float(np.percentile(x, p)) for p in PERCENTILES})
    pairs = [on / off for on, off in zip(rates["on"], rates["off"])]
    out["on_over_off"] = dict(median_of_pairs=statistics.median(pairs), min=min(pairs), max=max(pairs))
    return out


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_scenario(args):
    n = args.resting
    cmds = workload.resting_adds(n)
    before = rss_bytes()
    e = workload.make_engine(1, max_orders=max(n, 1 << 20), max_levels=4096)
    e.run(cmds)
    after = rss_bytes()
    assert e.live_orders == n, e.live_orders
    return dict(resting_orders=n, array_bytes=e.memory_bytes(), rss_delta_bytes=after - before,
                rss_total_bytes=after, bytes_per_order=e.memory_bytes() / n)


def _median(runs, key):
    """The median of a per-run figure, formatted; '-' where the runs do not have it."""
    xs = [r[key] for r in runs if key in r]
    return f"{statistics.median(xs):.1f}" if xs else "-"


def print_table(name, results):
    print(f"\n== {name} ==")
    if name == "core":
        for k, r in [(k, r) for k, r in results.items() if k.endswith("_risk")]:
            print(f"{k}: risk off {r['off']['ops_per_s']['median']:,.0f} ops/s (p50 {r['off']['latency_ns']['50']:.0f}"
                  f" ns, p99 {r['off']['latency_ns']['99']:.0f} ns), every check on "
                  f"{r['on']['ops_per_s']['median']:,.0f} ops/s (p50 {r['on']['latency_ns']['50']:.0f} ns, p99 "
                  f"{r['on']['latency_ns']['99']:.0f} ns); on/off median of pairs "
                  f"{r['on_over_off']['median_of_pairs']:.3f} (range {r['on_over_off']['min']:.3f}-"
                  f"{r['on_over_off']['max']:.3f})")
        results = {k: r for k, r in results.items() if not k.endswith("_risk")}
        for k, r in results.items():
            print(f"{k}: {r['ops']:,} commands timed after {r['prefill']:,} untimed prefill, "
                  f"{r['live_orders_at_end']:,} live at end" +
                  (f", {r['deep_orders_touched']:,} deep orders touched" if r['prefill'] else ""))
        print(f"{'workload':<12}{'ops/s median':>14}{'min':>12}{'max':>12}{'p50 ns':>8}{'p99 ns':>8}"
              f"{'p99.9 ns':>10}{'vs dict':>9}{'vs LME':>8}")
        for k, r in results.items():
            o, lat = r["ops_per_s"], r["latency_ns"]
            lme = r.get("ratio_vs_lightmatchingengine")
            print(f"{k:<12}{o['median']:>14,.0f}{o['min']:>12,.0f}{o['max']:>12,.0f}{lat['50']:>8.0f}{lat['99']:>8.0f}"
                  f"{lat['99.9']:>10.0f}{r['ratio_vs_sorted_dict']:>8.1f}x{(f'{lme:.1f}x' if lme else '-'):>8}")
    elif name == "roundtrip":
        print(f"{'variant':<13}{'rate/s':>9}{'p50 us':>9}{'p90 us':>9}{'p99 us':>9}{'p99.9 us':>10}"
              f"{'p99.99 us':>11}{'max us':>10}{'gen lag p99 us':>16}{'cmds/batch':>12}{'commit ms':>11}"
              f"{'others, cores':>15}")
        for k, r in results.items():
            if k == "scrape_impact":
                print("scrape impact (median p99, p99.9): " + ", ".join(f"{p}: {v:+.1%}" for p, v in r.items()))
                continue
            m = r["median_latency_us"]
            lag = max(x["generator_lag_us"]["p99"] for x in r["runs"])
            print(f"{k:<13}{r['rate']:>9,.0f}{m['50']:>9.1f}{m['90']:>9.1f}{m['99']:>9.1f}{m['99.9']:>10.1f}"
                  f"{m['99.99']:>11.1f}{m['max']:>10.0f}{lag:>16.1f}{_median(r['runs'], 'mean_batch'):>12}"
                  f"{_median(r['runs'], 'mean_commit_ms'):>11}{_median(r['runs'], 'other_cores'):>15}")
        internal = {k: r for k, r in results.items() if k != "scrape_impact" and
                    any("server_internal_us" in x for x in r["runs"])}
        if internal:
            print("server's own receive-to-acknowledgement time (its /metrics histogram; bucket upper "
                  "bounds, median of runs):")
            for k, r in internal.items():
                runs = [x["server_internal_us"] for x in r["runs"] if "server_internal_us" in x]
                print(f"  {k:<13}" + "  ".join(f"p{p} <= {statistics.median(x[p] for x in runs):,.0f} us"
                                              for p in ("50", "99", "99.9")))
    elif name == "throughput":
        print(f"{'variant':<10}{'sessions':>9}{'window':>8}{'orders/s median':>17}{'min':>12}{'max':>12}"
              f"{'server cpu':>12}{'gen cpu':>9}{'cmds/batch':>12}{'commit ms':>11}{'others, cores':>15}")
        for k, r in results.items():
            o = r["orders_per_s"]
            scpu = np.median([x["server_cpu"] for x in r["runs"]])
            gcpu = np.median([x["generator_cpu"] for x in r["runs"]])
            print(f"{k:<10}{r['sessions']:>9}{r['window']:>8}{o['median']:>17,.0f}{o['min']:>12,.0f}{o['max']:>12,.0f}"
                  f"{scpu:>11.0%}{gcpu:>9.0%}{_median(r['runs'], 'mean_batch'):>12}"
                  f"{_median(r['runs'], 'mean_commit_ms'):>11}{_median(r['runs'], 'other_cores'):>15}")
    elif name == "replay":
        for part, values in results.items():
            for k, v in values.items():
                print(f"{part + '.' + k:<28}{v:>18,.3f}" if isinstance(v, float) else f"{part + '.' + k:<28}{v:>18,}")
    else:
        def show(d, indent=""):
            for k, v in d.items():
                if isinstance(v, dict):
                    print(f"{indent}{k}")
                    show(v, indent + "  ")
                elif isinstance(v, float):
                    print(f"{indent}{k:<28}{v:>16,.3f}")
                elif isinstance(v, int):
                    print(f"{indent}{k:<28}{v:>16,}")
                else:
                    print(f"{indent}{k:<28}  {v}")
        show(results)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m perf", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=["core", "memory", "roundtrip", "replay", "journal", "recovery", "sessions",
                                        "symbols", "tls", "admin", "throughput", "instructions", "noisy",
                                        "failover", "standbylag", "riskcycle", "varworker", "scale", "shards"])
    p.add_argument("--trials", type=int, default=20, help="kill -9 trials (failover)")
    p.add_argument("--lease-ms", type=int, default=1000, help="the leader lease (failover, standbylag)")
    p.add_argument("--journal-n", type=int, default=300_000, help="commands for the append rates (journal)")
    p.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 256, 4096],
                   help="batch sizes (journal)")
    p.add_argument("--commits", type=int, default=1000, help="sync commits per batch size (journal)")
    p.add_argument("--offered", type=lambda s: [int(x) for x in s.split(",")], default=[2_000, 20_000, 100_000],
                   help="offered commands/s for group commit (journal)")
    p.add_argument("--tail", type=int, default=100_000, help="commands journaled after the snapshot (recovery)")
    p.add_argument("--tmp", default=None, help="directory for the benchmark's journals (journal, recovery)")
    p.add_argument("--handshakes", type=int, default=200, help="handshakes per run (tls)")
    p.add_argument("--orders", type=int, default=3000, help="closed-loop orders (tls) or queries (admin) per run")
    p.add_argument("--actions", type=int, default=200, help="admin requests per run and kind (admin)")
    p.add_argument("--sessions", type=lambda s: [int(x) for x in s.split(",")], default=[1, 100, 500],
                   help="session counts (sessions)")
    p.add_argument("--symbol-counts", type=lambda s: [int(x) for x in s.split(",")], default=[1, 1000, 5000],
                   help="symbol counts (symbols)")
    p.add_argument("--batch", type=int, default=256, help="commands per journal batch (replay)")
    p.add_argument("--rate", type=float, default=50_000, help="orders/s (roundtrip)")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per run (roundtrip)")
    p.add_argument("--server-cpu", type=int, default=0, help="the server's CPU (roundtrip)")
    p.add_argument("--durability", type=lambda s: s.split(","), default=["none", "sync"],
                   help="journal durabilities to run (roundtrip, throughput); none+risk: journal off, every "
                        "risk check on (perf/roundtrip.py RISK_ON)")
    p.add_argument("--pipelined", type=int, default=2, help="pipelined sessions (throughput)")
    p.add_argument("--window", type=int, default=8192, help="unacknowledged orders per session (throughput)")
    p.add_argument("--orders-per-session", type=int, default=500_000, help="orders per session per run (throughput)")
    p.add_argument("--quiet-wait", type=float, default=0.0,
                   help="before each run, wait up to this many seconds for the shared machine to be idle "
                        "(roundtrip, throughput)")
    p.add_argument("--no-echo", dest="echo", action="store_false", help="skip the echo floor (roundtrip)")
    p.add_argument("--scrape", action="store_true", help="also run under a /metrics scrape every second (roundtrip)")
    p.add_argument("--probe-rate", type=float, default=300, help="quiet sessions' orders/s in all (noisy)")
    p.add_argument("--noisy-rate", type=float, default=1000, help="the noisy session's orders/s (noisy)")
    p.add_argument("--compare-tree", default=None, help="another checkout, built in place, measured interleaved beside this one: a server from it (noisy, varworker), the same cases from it (scale)")
    p.add_argument("--n", type=int, default=2_000_000, help="commands per run (core)")
    p.add_argument("--count-n", type=int, default=300_000, help="commands per counted run (instructions)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--var-accounts", type=int, default=10_000, help="accounts (riskcycle)")
    p.add_argument("--var-symbols", type=int, default=100, help="symbols (riskcycle)")
    p.add_argument("--var-models", default=None, help="time this riskmodels.py instead of engine's (riskcycle)")
    p.add_argument("--var-flat", type=float, default=0.0, help="fraction of accounts without positions (riskcycle)")
    p.add_argument("--symbols", type=lambda s: [int(x) for x in s.split(",")], default=[1, 100])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--prefill", type=int, default=0, help="deep resting orders placed before the flow (core)")
    p.add_argument("--risk", action="store_true",
                   help="core: also run with every risk check on, same commands; throughput: also a server "
                        "with every risk check on (journal none), the same flow")
    p.add_argument("--max-orders", type=int, default=1 << 20)
    p.add_argument("--resting", type=int, default=1_000_000, help="resting orders (memory)")
    p.add_argument("--cases", type=lambda s: s.split(","), default=["shallow", "symbols", "deep"],
                   help="cases (scale)")
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per case, interleaved (scale)")
    p.add_argument("--scale-symbols", type=int, default=10_000, help="symbols (scale)")
    p.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent of the zipf case's symbol spread (scale)")
    p.add_argument("--risk-accounts", type=int, default=1024, help="max_accounts of the risk case (scale)")
    p.add_argument("--book-levels", type=int, default=25, help="price levels per side of each symbol's book (scale)")
    p.add_argument("--book-orders", type=int, default=2, help="orders per book level (scale)")
    p.add_argument("--scale-max-orders", type=int, default=0, help="max_orders of the symbols case (scale; 0 = "
                   "the book + 2**20)")
    p.add_argument("--scale-level-slots", type=int, default=0, help="max_level_slots of the symbols case (scale)")
    p.add_argument("--deep", type=int, default=10_000_000, help="resting orders of the deep case (scale)")
    p.add_argument("--deep-max-orders", type=int, default=0, help="max_orders of the deep case (scale; 0 = the "
                   "book + 2**20)")
    p.add_argument("--deep-level-slots", type=int, default=0, help="max_level_slots of the deep case (scale)")
    p.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    p.add_argument("--no-plot", dest="plot", action="store_false")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    pin(args.cpu)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.scenario == "core":
        results = core_scenario(args)
    elif args.scenario == "memory":
        results = memory_scenario(args)
    elif args.scenario == "replay":
        from perf import replay
        results = replay.scenario(args)
    elif args.scenario == "throughput":
        from perf import throughput
        results = throughput.scenario(args)
    elif args.scenario == "varworker":
        from perf import varworker
        results = varworker.scenario(args)
    elif args.scenario == "shards":
        from perf import shards
        results = shards.scenario(args)
    elif args.scenario == "riskcycle":
        from perf import riskcycle
        results = riskcycle.scenario(args)
    elif args.scenario == "scale":
        from perf import scale
        results = scale.scenario(args)
    elif args.scenario == "instructions":
        from perf import instructions
        results = instructions.scenario(args)
    elif args.scenario in ("journal", "recovery"):
        from perf import journal
        results = journal.scenario_journal(args) if args.scenario == "journal" else journal.scenario_recovery(args)
    elif args.scenario in ("sessions", "symbols"):
        from perf import sessions
        results = (sessions.sessions_scenario if args.scenario == "sessions" else sessions.symbols_scenario)(args)
    elif args.scenario == "tls":
        from perf import tls
        results = tls.scenario(args)
    elif args.scenario == "admin":
        from perf import admin
        results = admin.scenario(args)
    elif args.scenario == "noisy":
        from perf import noisy
        results = noisy.scenario(args)
    elif args.scenario in ("failover", "standbylag"):
        from perf import replication
        results = (replication.failover_scenario if args.scenario == "failover" else
                   replication.standby_lag_scenario)(args)
    else:
        from perf import roundtrip
        results = roundtrip.scenario(args)
    doc = dict(scenario=args.scenario, machine=machine(), args={k: str(v) for k, v in vars(args).items()},
               results=results)
    path = args.out / f"{args.scenario}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(doc, indent=2))
    if args.scenario in ("sessions", "symbols"):
        from perf import sessions
        sessions.print_table(args.scenario, results)
    elif args.scenario == "tls":
        from perf import tls
        tls.print_table(results)
    elif args.scenario == "admin":
        from perf import admin
        admin.print_table(results)
    elif args.scenario == "noisy":
        from perf import noisy
        noisy.print_table(results)
    elif args.scenario == "scale":
        from perf import scale
        scale.print_table(results)
    elif args.scenario == "shards":
        from perf import shards
        shards.print_table(results)
    else:
        print_table(args.scenario, results)
    print(f"\nmachine: {doc['machine']}\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
