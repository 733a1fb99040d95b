"""Journal and restart benchmarks.

journal    the Journal class alone: append rate and commit latency at each durability and
           batch size (the core workload's commands and events, encoded as the server journals
           them); then group commit under load: a producer thread offers commands at a fixed
           rate while the committer commits whatever has queued in one append, so batches grow
           while an fsync is in flight (the GIL is released during the LMDB commit); and the
           real server at rising offered loads, batch size = commands / batches from /metrics
recovery   restart-to-ready of the real server (`trading-engine serve`, a subprocess) over a
           journal of --n commands written straight through Journal from the core workload:
           without a snapshot (a full replay) and with a recent snapshot (the server's own,
           written at a graceful stop, then --tail more commands journaled after it); and the
           fork pause: the longest time a periodic snapshot stops the server's loop
"""
from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from engine.journal import Journal
from perf import workload

ROOT = Path(__file__).resolve().parents[1]


def recorded(n, seed=1, batch=256):
    """(commands, events per batch) of the core workload, for journaling without the engine's cost."""
    cmds, _ = workload.generate(n, symbols=1, seed=seed)
    e = workload.make_engine(1)
    out = []
    for start in range(0, n, batch):
        b = cmds[start:start + batch]
        e.feed(b)
        out.append((b, e.events_view().copy()))
        e.clear_events()
    return cmds, out


def append_rates(args, tmp):
    cmds, _ = workload.generate(args.journal_n, symbols=1, seed=args.seed)
    res = {}
    for durability in ("sync", "async"):
        for bs in args.batches:
            e = workload.make_engine(1)
            j = Journal(f"{tmp}/append-{durability}-{bs}", durability=durability, map_size=1 << 32)
            n = min(len(cmds), bs * (args.commits if durability == "sync" else 10**9))
            lat = []
            ev = 0
            t0 = time.perf_counter()
            for start in range(0, n, bs):
                b = cmds[start:start + bs]
                e.feed(b)
                ev += e.ev_count
                t = time.perf_counter()
                j.append(b, e.events_view())
                lat.append(time.perf_counter() - t)
                e.clear_events()
            dt = time.perf_counter() - t0
            j.close()
            lat = np.array(lat) * 1e6
            res[f"{durability}/batch {bs}"] = dict(commands=n, commits=len(lat), commands_per_s=n / dt,
                                                   records_per_s=(n + ev) / dt,
                                                   commit_us_p50=float(np.percentile(lat, 50)),
                                                   commit_us_p99=float(np.percentile(lat, 99)))
    return res


def group_commit(args, tmp):
    """A producer offers commands at `rate`; the committer appends everything queued per commit."""
    cmds, _ = workload.generate(400_000, symbols=1, seed=args.seed)
    res = {}
    for rate in args.offered:
        e = workload.make_engine(1)
        j = Journal(f"{tmp}/group-{rate}", durability="sync", map_size=1 << 32)
        q = queue.SimpleQueue()
        n = min(len(cmds), int(rate * args.seconds))
        done = threading.Event()

        def produce():         # sleeps between arrivals (a spinning thread would hold the GIL)
            t0 = time.perf_counter()
            i = 0
            while i < n:
                due = min(n, int((time.perf_counter() - t0) * rate))
                while i < due:
                    q.put(i)
                    i += 1
                time.sleep(0.0002)
            done.set()
        th = threading.Thread(target=produce, daemon=True)
        th.start()
        sizes = []
        pos = 0
        while pos < n:
            k = 0
            while True:
                try:
                    q.get(block=k == 0, timeout=1)
                    k += 1
                except queue.Empty:
                    break
            if k == 0:
                continue
            b = cmds[pos:pos + k]
            e.feed(b)
            j.append(b, e.events_view())
            e.clear_events()
            sizes.append(k)
            pos += k
        th.join()
        j.close()
        s = np.array(sizes)
        res[f"offered {rate:,}/s"] = dict(commits=len(s), commits_per_s=len(s) / args.seconds,
                                          batch_mean=float(s.mean()), batch_p50=float(np.percentile(s, 50)),
                                          batch_p99=float(np.percentile(s, 99)), batch_max=int(s.max()))
    return res


# -- the real server --

# no throttling: the benchmark offers more than a session's default budget
UNTHROTTLED = {f"{k}_{x}": 10_000_000.0 if x == "per_s" else 1_000_000.0
               for k in ("orders", "logout", "cancels") for x in ("per_s", "burst")}


def write_config(d, journal, durability="sync", max_orders=1 << 20, server_extra="", journal_extra="",
                 map_size=1 << 30):
    """A config for the core workload: one symbol, its accounts, ephemeral ports in files."""
    server = dict(host='"127.0.0.1"', port=0, port_file=f'"{d}/port"', ops_port=0, ops_port_file=f'"{d}/ops_port"',
                  admin_port=0, **UNTHROTTLED)
    text = "[server]\n" + "".join(f"{k} = {v}\n" for k, v in server.items()) + server_extra + "\n"
    text += (f"[engine]\nmax_orders = {max_orders}\nmax_accounts = {workload.ACCOUNTS + 1}\nmax_symbols = 2\n"
             f"max_levels = 4096\n\n[journal]\npath = \"{journal}\"\ndurability = \"{durability}\"\n"
             f"map_size = {map_size}\n{journal_extra}\n\n"
             # the core workload journaled without risk (no deposits or marks): matching-only state
             f"[risk]\nenabled = false\n\n[[symbols]]\nid = 1\nname = \"BENCH\"\n")
    for a in range(1, workload.ACCOUNTS + 1):
        text += f'\n[[accounts]]\nid = {a}\nname = "bench{a}"\ndemo_secret = "bench-secret-{a:04d}"\n'
    path = Path(d) / "config.toml"
    path.write_text(text)
    return path


class Server:
    def __init__(self, d, config, cpu=None):
        self.d = Path(d)
        for f in ("port", "ops_port"):
            (self.d / f).unlink(missing_ok=True)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.log = open(self.d / "server.log", "ab")
        cmd = [sys.executable, "-m", "engine.server", "--config", str(config)]
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu)] + cmd
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=self.log, cwd=self.d)

    def wait_ready(self, timeout=600):
        """Seconds from the process start to /health/ready answering 200."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError((self.d / "server.log").read_text()[-2000:])
            if (self.d / "ops_port").exists() and (self.d / "port").exists():
                port = int((self.d / "ops_port").read_text())
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1) as r:
                        if r.status == 200:
                            return time.perf_counter() - self.t0
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError("server not ready")
            time.sleep(0.002)

    def metrics(self):
        port = int((self.d / "ops_port").read_text())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(te_\w+?)(?:_total)? ([0-9.e+]+)$", text, re.M)}

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        self.proc.wait(600)
        self.log.close()

    def output(self):
        return (self.d / "server.log").read_text()


def server_batches(args, tmp):
    """The server with `sync`: offered loads from pipelining clients, batch size from /metrics."""
    from perf.roundtrip import logon
    res = {}
    d = Path(tmp) / "srv-batches"
    d.mkdir()
    cfg = write_config(d, d / "journal", server_extra=f"cpu = {args.server_cpu}")
    srv = Server(d, cfg)
    srv.wait_ready()
    port = int((d / "port").read_text())
    for rate in args.offered:
        before = srv.metrics()
        clients = 4
        stop = time.perf_counter() + args.seconds

        def client(account):
            s = socket.create_connection(("127.0.0.1", port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _, clid = logon(s, account, f"bench-secret-{account:04d}")
            s.setblocking(False)
            per = rate / clients
            t0 = time.perf_counter()
            sent = 0
            while time.perf_counter() < stop:
                due = int((time.perf_counter() - t0) * per) - sent
                if due > 0:
                    from protocol import wire
                    from protocol.wire import MsgType
                    frames = b"".join(wire.encode(MsgType.NEW_ORDER, client_order_id=clid + sent + i, symbol=1,
                                                  side=1 + (sent + i) % 2, order_type=1, tif=3, stp=4, qty=1,
                                                  price=1000 + (sent + i) % 7) for i in range(min(due, 64)))
                    try:
                        s.sendall(frames)
                    except BlockingIOError:
                        pass
                    sent += min(due, 64)
                try:
                    while s.recv(1 << 20):
                        pass
                except BlockingIOError:
                    pass
                time.sleep(0.0002)
            s.close()
        threads = [threading.Thread(target=client, args=(a,)) for a in range(1, clients + 1)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        time.sleep(0.2)
        after = srv.metrics()
        cmds = after["te_commands"] - before["te_commands"]
        batches = after["te_batches"] - before["te_batches"]
        res[f"offered {rate:,}/s"] = dict(commands_per_s=cmds / args.seconds, commits_per_s=batches / args.seconds,
                                          batch_mean=cmds / max(batches, 1))
    srv.stop()
    return res


def scenario_journal(args):
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        out = {"append": append_rates(args, tmp), "group_commit_journal_class": group_commit(args, tmp)}
        out["group_commit_server"] = server_batches(args, tmp)
    return out


def build_journal(path, n, batch=256, seed=1, engine=None, journal=None, first_seq=1, clid_base=None,
                  max_orders=1 << 20):
    """Journal n commands of the core workload (a 1M-command block repeated with client order
    ids shifted, so it is fast to make) through Journal at async durability, synced at the end.
    Returns (engine, journal, clid_base) to continue from."""
    block, _ = workload.generate(min(n, 1_000_000), symbols=1, seed=seed)
    span = int(block["client_order_id"].max()) + 1
    e = engine or workload.make_engine(1, max_orders=max_orders)
    j = journal or Journal(str(path), durability="async", map_size=1 << 34)
    base = clid_base if clid_base is not None else 0
    seq = first_seq
    done = 0
    while done < n:
        b = block[: n - done].copy()
        b["client_order_id"][b["client_order_id"] > 0] += np.uint64(base)
        b["seq"] = np.arange(seq, seq + len(b))
        for start in range(0, len(b), batch):
            part = b[start:start + batch]
            e.feed(part)
            j.append(part, e.events_view())
            e.clear_events()
        seq += len(b)
        done += len(b)
        base += span
    j.sync()
    return e, j, base


def scenario_recovery(args):
    res = {}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        d = Path(tmp)
        jpath = d / "journal"
        jpath.mkdir()
        t = time.perf_counter()
        e, j, base = build_journal(jpath, args.n - args.tail, max_orders=args.max_orders)
        res["build_s"] = time.perf_counter() - t
        j.close()
        cfg = write_config(d, jpath, map_size=1 << 34, journal_extra="snapshot_every = 0", max_orders=args.max_orders,
                           server_extra=f"cpu = {args.server_cpu}")
        full = []
        for _ in range(args.runs):
            srv = Server(d, cfg)
            full.append(srv.wait_ready())
            srv.stop(signal.SIGKILL)
        res["no_snapshot_ready_s"] = sorted(full)[len(full) // 2]
        res["no_snapshot_runs_s"] = full
        srv = Server(d, cfg)                      # a graceful stop writes the snapshot at its last seq
        srv.wait_ready()
        srv.stop()
        j = Journal(str(jpath), durability="async", map_size=1 << 34)
        build_journal(jpath, args.tail, engine=e, journal=j, first_seq=j.last_seq + 1, clid_base=base)
        j.close()
        snaps = sorted((jpath / "snapshots").glob("*.snap"))
        res["snapshot_bytes"] = snaps[-1].stat().st_size
        res["journal_bytes"] = (jpath / "data.mdb").stat().st_size
        res["commands"] = args.n
        res["tail_commands"] = args.tail
        with_snap = []
        for _ in range(args.runs):
            srv = Server(d, cfg)
            with_snap.append(srv.wait_ready())
            log = srv.output()
            srv.stop(signal.SIGKILL)
        res["snapshot_ready_s"] = sorted(with_snap)[len(with_snap) // 2]
        res["snapshot_runs_s"] = with_snap
        res["last_recovery_log"] = [r["msg"] for r in (json.loads(x) for x in log.splitlines() if x.startswith("{"))
                                    if r["msg"].startswith("recovered: ")][-1]      # (the log: JSON lines)
        res["fork_pause"] = fork_pause(args, d, cfg)
    return res


def fork_pause(args, d, cfg_path):
    """Periodic snapshots of the 1M-slot engine while a client trades: the loop's pause per fork."""
    from perf.roundtrip import logon
    from protocol import wire
    from protocol.wire import MsgType
    text = cfg_path.read_text().replace("snapshot_every = 0", "snapshot_every = 20000")
    cfg = Path(d) / "config-fork.toml"
    cfg.write_text(text)
    srv = Server(d, cfg)
    srv.wait_ready()
    port = int((Path(d) / "port").read_text())
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _, clid = logon(s, 1, "bench-secret-0001")
    n = 0
    t_end = time.perf_counter() + args.seconds * 2
    while time.perf_counter() < t_end:
        frames = b"".join(wire.encode(MsgType.NEW_ORDER, client_order_id=clid + n + i, symbol=1, side=1, order_type=1,
                                      tif=3, stp=4, qty=1, price=1) for i in range(200))
        s.sendall(frames)
        n += 200
        got = 0
        while got < 2 * 200 * wire.frame_size(MsgType.ACCEPTED):      # IOC: ACCEPTED + CANCELLED each
            got += len(s.recv(1 << 20))
    s.close()
    time.sleep(1)
    pauses = [float(x) for x in re.findall(r"loop paused ([0-9.]+) ms", srv.output())]
    srv.stop()
    return dict(snapshots=len(pauses), pause_ms_max=max(pauses) if pauses else None,
                pause_ms_median=float(np.median(pauses)) if pauses else None, orders=n)
