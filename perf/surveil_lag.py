"""Surveillance live lag: `trading-engine surveil --follow` beside a server at its sustained `sync` throughput.

    python -m perf.surveil_lag [--runs 3] [--sessions 2] [--orders-per-session 300000] [--window 8192]
    python -m perf.surveil_lag --rate 50000 [--seconds 10]       # open loop, one session

Per run: a fresh server (journal durability `sync`, pinned to CPU 0, throttles
off: perf/roundtrip.py server_limits) and perf/throughput.py's generator
(closed-loop pipelined sessions, each order a GTC limit away from the touch cancelled 200 orders later,
so two commands and two events per order; pinned to CPU 1) drive the server as fast as it acknowledges:
its sustained `sync` throughput. With --rate, perf/roundtrip.py's open-loop generator instead (one
session, that many orders/s for --seconds). `surveil JOURNAL --config CONFIG --store DIR --follow` runs beside it from
the journal's start, not pinned (the machine has two cores: it takes what the other two leave), with
the server's config (the default [surveillance] parameters; poll_ms 100).

A poller process (pinned with the generator) reads every --poll-ms (1) the journal's last committed
command seq (a read-only reader, as surveil's) and the store's reach (the next seq after the commands whose
alerts are all stored, committed in one transaction with them: what "processed" means; a store without one,
from before surveillance.state_commit_ms, has its cursor's next_seq). Each change of
the journal's end seen at time t is one sample; its lag is the time from t to the first poll that sees
the reach past it. So a lag counts from when the commit became visible to a reader (within a poll) to
when its alerts were stored (within a poll). Reported per run: p50 / p99 / max lag during the load and
over the whole run (the load, then the catch-up), the load's rate, surveil's CPU.

--baseline FILE: each run is done twice, alternately, first with that copy of engine/surveillance.py (e.g.
main's, copied out: `git show main:engine/surveillance.py > /tmp/base.py`; it runs with this tree's other
modules), then with this tree's. --state-commit-ms N: the server config's surveillance.state_commit_ms.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lmdb
import msgspec
import numpy as np

from engine.journal import HEAD
from engine.testing import ServerProc
from perf import roundtrip as rt
from perf import throughput


class _NextSeq(msgspec.Struct):
    """The store's cursor, its next seq only (the detectors' state is skipped)."""
    next_seq: int


def journal_end(env) -> int:
    """The last committed command seq (0: none): the last record's first seq + its command count - 1."""
    with env.begin(buffers=True) as txn:
        cur = txn.cursor()
        if not cur.last():
            return 0
        return struct.unpack(">Q", cur.key())[0] + HEAD.unpack_from(cur.value())[0] - 1


def reach(txn, meta) -> int:
    """The store's reach (see above; 0: nothing stored yet)."""
    raw = txn.get(b"reach", db=meta)
    if raw is not None:
        return struct.unpack(">Q", raw)[0]
    raw = txn.get(b"cursor", db=meta)
    return 0 if raw is None else msgspec.msgpack.decode(raw, type=_NextSeq).next_seq


def poll(journal, store, poll_s, stop, out, cpu=None) -> None:
    """(time, journal end, cursor) at each change of either, until stop is set (a child process)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:                                      # the probe wakes on time even beside busy processes
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    except PermissionError:
        pass
    jenv = lmdb.open(journal, readonly=True, lock=True, subdir=True, max_dbs=0)
    while not os.path.exists(os.path.join(store, "data.mdb")):
        time.sleep(poll_s)
    senv = lmdb.open(store, readonly=True, lock=True, subdir=True, max_dbs=3)
    meta = None
    rows, last, gaps = [], None, []
    while not stop.is_set():
        t = time.monotonic()
        gaps.append(t)
        try:
            end = journal_end(jenv)
        except lmdb.MapResizedError:          # the server grew its map: adopt its size
            jenv.set_mapsize(0)
            continue
        nxt = 0
        try:
            if meta is None:
                meta = senv.open_db(b"meta", create=False)
            with senv.begin() as txn:
                nxt = reach(txn, meta)
        except (lmdb.NotFoundError, lmdb.MapResizedError):
            senv.set_mapsize(0)
        if (end, nxt) != last:
            rows.append((t, end, nxt))
            last = (end, nxt)
        time.sleep(poll_s)
    out.send((rows, float(np.percentile(np.diff(gaps), 99)) if len(gaps) > 1 else 0.0))


def lags(rows, until=None) -> np.ndarray:
    """Seconds from each new journal end (seen at t, up to `until`) to the first poll with the cursor past it."""
    t = np.array([r[0] for r in rows])
    end = np.array([r[1] for r in rows])
    nxt = np.array([r[2] for r in rows])
    new = np.flatnonzero(np.diff(end, prepend=0) > 0)
    if until is not None:
        new = new[t[new] <= until]
    done = np.searchsorted(nxt, end[new], side="right")       # the cursor only moves on
    ok = done < len(rows)
    return np.maximum(t[np.minimum(done[ok], len(rows) - 1)] - t[new[ok]], 0.0), int((~ok).sum())


BASE_RUNNER = ("import argparse, importlib.util, sys; "
               "spec = importlib.util.spec_from_file_location('surveillance_base', sys.argv.pop(1)); "
               "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
               "a = m.add_arguments(argparse.ArgumentParser()).parse_args(sys.argv[1:]); sys.exit(a.run(a))")


def run_once(root, args, baseline=None):
    srv = ServerProc(Path(root) / "srv", durability="sync", output_buffer_bytes=64 << 20,
                     server_extra=f"cpu = 0{rt.server_limits()}",
                     extra="" if args.state_commit_ms is None else
                     f"\n[surveillance]\nstate_commit_ms = {args.state_commit_ms}\n").start()
    journal, store = str(srv.dir / "journal"), os.path.join(root, "store")
    err = open(os.path.join(root, "surveil.err"), "wb")
    cmd = ["-m", "engine.cli", "surveil"] if baseline is None else ["-c", BASE_RUNNER, baseline]
    sv = subprocess.Popen([sys.executable, *cmd, journal, "--config", str(srv.config), "--store", store, "--follow"],
                          stdout=subprocess.DEVNULL, stderr=err)
    if args.surveil_cpu is not None:
        os.sched_setaffinity(sv.pid, {args.surveil_cpu})
    stop = mp.Event()
    recv, send = mp.Pipe(duplex=False)
    poller = mp.get_context("fork").Process(target=poll, args=(journal, store, args.poll_ms / 1000, stop, send,
                                                                       args.surveil_cpu))
    try:
        while not os.path.exists(os.path.join(store, "data.mdb")):
            assert sv.poll() is None, open(os.path.join(root, "surveil.err")).read()
            time.sleep(0.01)
        poller.start()
        cpu0 = rt.cpu_seconds(sv.pid)
        t0 = time.monotonic()
        if args.rate:
            noise = rt.Noise(srv.proc.pid)
            r, _ = rt.run(srv.port, args.rate, args.seconds)
            r = dict(r, orders_per_s=r["orders"] / (time.monotonic() - t0), **noise.result())
        else:
            r = throughput.run(srv.port, args.sessions, args.orders_per_session, args.window,
                               server_pid=srv.proc.pid)
        t_load = time.monotonic()
        env = lmdb.open(journal, readonly=True, lock=True, subdir=True, max_dbs=0)
        end = journal_end(env)
        env.close()
        s_env = lmdb.open(store, readonly=True, lock=True, subdir=True, max_dbs=3)
        meta = s_env.open_db(b"meta", create=False)
        deadline = time.monotonic() + args.catch_up_timeout
        while True:                        # until surveil has stored everything the load journaled
            s_env.set_mapsize(0)
            with s_env.begin() as txn:
                nxt = reach(txn, meta)
            if nxt > end or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        s_env.close()
        t_end = time.monotonic()
        cpu = rt.cpu_seconds(sv.pid) - cpu0
        time.sleep(0.05)
        stop.set()
        rows, poll_p99 = recv.recv()
        poller.join(10)
        with open(os.path.join(root, "polls.txt"), "w") as f:     # (time, journal end, cursor): kept with --keep
            f.writelines(f"{t - t0:.4f} {e} {n}\n" for t, e, n in rows)
    finally:
        stop.set()
        if sv.poll() is None:
            sv.send_signal(signal.SIGTERM)
            sv.wait(30)
        srv.stop()
        err.close()
    during, _ = lags(rows, until=t_load)
    every, missing = lags(rows)
    return dict(orders_per_s=r["orders_per_s"], commands=end, load_s=t_load - t0, catch_up_s=t_end - t_load,
                caught_up=nxt > end, poll_p99=poll_p99, surveil_cpu=cpu / (t_end - t0), server_cpu=r["server_cpu"],
                during=during, every=every, missing=missing)


def pct(a, q):
    return float(np.percentile(a, q)) if len(a) else float("nan")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--sessions", type=int, default=2, help="pipelined sessions (perf/throughput.py)")
    p.add_argument("--orders-per-session", type=int, default=300_000)
    p.add_argument("--window", type=int, default=8192, help="unacknowledged orders per session")
    p.add_argument("--rate", type=int, help="open loop at this many orders/s (else closed loop, the maximum)")
    p.add_argument("--seconds", type=float, default=10.0, help="with --rate: the load's length")
    p.add_argument("--surveil-cpu", type=int, help="pin surveil and the poller to this CPU (default: not pinned)")
    p.add_argument("--poll-ms", type=float, default=1.0, help="the poller's period")
    p.add_argument("--catch-up-timeout", type=float, default=120.0)
    p.add_argument("--keep", help="run in this directory and keep it (the journal, the store)")
    p.add_argument("--state-commit-ms", type=int, help="surveillance.state_commit_ms (default: its default)")
    p.add_argument("--baseline", help="a copy of engine/surveillance.py to run alternately with this tree's")
    args = p.parse_args(argv)
    os.sched_setaffinity(0, {1})
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"{'run':>5} {'orders/s':>10} {'commands':>10} {'load s':>7} {'catch-up s':>10} {'surveil cpu':>11} "
          f"{'lag during load p50/p99/max s':>30} {'whole run p50/p99/max s':>25} {'poll gap p99 ms':>15}")
    for i, base in ((i, b) for i in range(args.runs) for b in ((args.baseline, None) if args.baseline else (None,))):
        name = f"{i}{'' if not args.baseline else ' b' if base else ' a'}"
        if args.keep:
            root = os.path.join(args.keep, f"run{name.replace(' ', '')}")
            os.makedirs(root)
            r = run_once(root, args, base)
        else:
            with tempfile.TemporaryDirectory() as root:
                r = run_once(root, args, base)
        d, e = r["during"], r["every"]
        print(f"{name:>5} {r['orders_per_s']:>10,.0f} {r['commands']:>10,} {r['load_s']:>7.2f} "
              f"{r['catch_up_s']:>10.2f} {r['surveil_cpu']:>11.2f} "
              f"{pct(d, 50):>10.3f}/{pct(d, 99):.3f}/{d.max() if len(d) else float('nan'):.3f} "
              f"{pct(e, 50):>9.3f}/{pct(e, 99):.3f}/{e.max() if len(e) else float('nan'):.3f} "
              f"{r['poll_p99'] * 1000:>15.1f}"
              f"{'' if r['caught_up'] else '  (not caught up)'}"
              f"{'  (%d never processed)' % r['missing'] if r['missing'] else ''}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
