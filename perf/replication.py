"""Hot standby over NATS JetStream (engine/SCALING.md), on a 3-node cluster on loopback:

failover     --trials times: a `replicated` primary (--durability sync: a sync one) and a
             standby, three sessions sending orders (pipelined windows, as tests/load.py) for a
             random 0.5-1.5 s, kill -9 of the primary; the failover time is from the kill to the
             standby's first LOGON_ACCEPTED (a client polling it every 10 ms, as a failing-over
             SDK would); then every report the sessions had received from the old primary is
             checked at the same seq on the new one (lost acknowledged reports: must be 0 when
             replicated).
standbylag   a primary (--durability, default sync) and a standby; open-loop orders at --rate for
             --seconds (perf/roundtrip.py's generator); the standby's lag behind the primary in
             journaled commands sampled every 50 ms, and how long it takes to catch up after.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import random
import socket
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from clients import signing_key
from engine.testing import SECRETS, read_reports, split_reports
from perf import roundtrip
from protocol import wire
from protocol.codes import Side
from protocol.wire import MsgType


def _logon(port, account, next_seq):
    """A logged-on socket and what it received after LOGON_ACCEPTED, or None when refused."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    f = bytearray(wire.encode(MsgType.LOGON, account=account, heartbeat_ms=10_000, next_seq=next_seq,
                              timestamp_ns=time.time_ns(), proto_version=wire.SCHEMA_VERSION,
                              nonce=random.getrandbits(32)))
    f[40:72] = hmac.new(signing_key(SECRETS[account]), bytes(f[8:40]), hashlib.sha256).digest()
    sock.sendall(f)
    buf = b""
    while True:
        frames, used = wire.decode(buf)
        if frames:
            t, body, _ = frames[0]
            if t != MsgType.LOGON_ACCEPTED:
                sock.close()
                return None
            return sock, buf[wire.frame_size(t):], body
        data = sock.recv(1 << 16)
        if not data:
            sock.close()
            return None
        buf += data


class Session(threading.Thread):
    """Pipelined windows of crossing orders, keeping every sequenced report as received."""

    def __init__(self, port, account, seed):
        super().__init__(daemon=True)
        self.port, self.account, self.rng = port, account, random.Random(seed)
        self.reports: dict = {}
        self.stop = threading.Event()

    def run(self):
        try:
            sock, rest, body = _logon(self.port, self.account, 1 << 62)
            clid = int(body["next_client_order_id"]) - 1
            buf = bytearray(rest)
            sock.settimeout(0.002)
            while not self.stop.is_set():
                frames = []
                for _ in range(self.rng.randint(1, 16)):
                    clid += 1
                    frames.append(wire.encode(MsgType.NEW_ORDER, client_order_id=clid, symbol=1,
                                              side=self.rng.choice((Side.BUY, Side.SELL)), order_type=1, tif=1,
                                              stp=4, qty=self.rng.randint(1, 5), price=self.rng.randint(95, 105)))
                sock.sendall(b"".join(frames))
                if not read_reports(sock, buf, self.reports):
                    return
        except (OSError, TypeError):
            pass


def _lost(port, account, seen):
    got = _logon(port, account, 1)
    sock, rest, body = got
    last = int(body["next_seq"]) - 1
    have: dict = {}
    buf = bytearray(rest)
    sock.settimeout(10)
    while len(have) < last:
        data = sock.recv(1 << 16)
        if not data:
            break
        buf += data
        split_reports(buf, have)
    sock.close()
    return sum(1 for seq, frame in seen.items() if have.get(seq) != frame)


def _detailed(srv):
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.ops_port}/health/detailed", timeout=5) as r:
        return json.loads(r.read())


def failover_scenario(args):
    from engine.testing import ServerProc
    from engine.testing_nats import NatsCluster
    rng = random.Random(args.seed)
    durability = args.durability[0] if args.durability != ["none", "sync"] else "replicated"
    times, lost, acked = [], [], []
    with tempfile.TemporaryDirectory() as tmp, NatsCluster(Path(tmp) / "nats") as nats:
        for trial in range(args.trials):
            tag = f"t{trial}"
            procs = [ServerProc(Path(tmp) / f"{tag}{node}", durability=durability,
                                extra=roundtrip.replication_config(
                                    nats.urls, node, stream=f"TE_{tag}", subject=f"te.{tag}",
                                    lease_bucket=f"lease_{tag}", lease_ms=args.lease_ms))
                     for node in ("a", "b")]
            a, b = procs
            try:
                a.start()
                b.start(args=("--standby",))
                sessions = [Session(a.port, acct, rng.randrange(1 << 30)) for acct in (1, 2, 3)]
                for s in sessions:
                    s.start()
                deadline = time.monotonic() + 30      # a loaded machine: the kill comes after reports flow
                while not all(s.reports for s in sessions) and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.5, 1.5))
                a.kill9()
                t0 = time.monotonic()
                for s in sessions:
                    s.stop.set()
                while True:
                    try:
                        got = _logon(b.port, 1, 1 << 62)
                    except OSError:
                        got = None
                    if got is not None:
                        got[0].close()
                        break
                    if time.monotonic() - t0 > 30:
                        raise RuntimeError(f"trial {trial}: the standby never served: {b.output()[-2000:]}")
                    time.sleep(0.01)
                times.append(time.monotonic() - t0)
                for s in sessions:
                    s.join(10)
                lost.append(sum(_lost(b.port, s.account, s.reports) for s in sessions))
                acked.append(sum(len(s.reports) for s in sessions))
                print(f"trial {trial + 1}: failover {times[-1] * 1000:.0f} ms, {acked[-1]} reports seen, "
                      f"{lost[-1]} lost", flush=True)
            finally:
                for p in procs:
                    p.stop()
    ms = np.array(times) * 1000
    return dict(durability=durability, trials=args.trials, lease_ms=args.lease_ms,
                failover_ms={"min": float(ms.min()), "p50": float(np.percentile(ms, 50)),
                             "p90": float(np.percentile(ms, 90)), "max": float(ms.max())},
                within_2s=int((ms <= 2000).sum()), reports_seen=int(sum(acked)), lost_acknowledged=int(sum(lost)))


def standby_lag_scenario(args):
    from engine.testing import ServerProc
    from engine.testing_nats import NatsCluster
    durability = args.durability[0] if args.durability != ["none", "sync"] else "sync"
    with tempfile.TemporaryDirectory() as tmp, NatsCluster(Path(tmp) / "nats") as nats:
        procs = [ServerProc(Path(tmp) / node, durability=durability, server_extra=roundtrip.server_limits(),
                            extra=roundtrip.replication_config(nats.urls, node, lease_ms=args.lease_ms))
                 for node in ("a", "b")]
        a, b = procs
        try:
            a.start()
            b.start(args=("--standby",))
            samples = []
            done = threading.Event()

            def sample():
                while not done.is_set():
                    pa, pb = _detailed(a), _detailed(b)
                    samples.append(pa["journal"]["last_seq"] - pb["journal"]["last_seq"])
                    time.sleep(0.05)
            t = threading.Thread(target=sample, daemon=True)
            t.start()
            r, _ = roundtrip.run(a.port, args.rate, args.seconds, cpu=args.cpu)
            done.set()
            t.join()
            t0 = time.monotonic()
            want = _detailed(a)["journal"]["last_seq"]
            while _detailed(b)["journal"]["last_seq"] < want:
                time.sleep(0.005)
            catch_up = time.monotonic() - t0
            lag = np.array(samples)
            final = _detailed(b)
            return dict(durability=durability, rate=args.rate, seconds=args.seconds, commands=want,
                        primary_latency_us=r["latency_us"],
                        lag_commands={"p50": float(np.percentile(lag, 50)), "p99": float(np.percentile(lag, 99)),
                                      "max": int(lag.max())},
                        catch_up_after_load_s=catch_up,
                        standby_state_equal=final["replication"]["state_hash"] == _detailed(a)["replication"]["state_hash"])
        finally:
            for p in procs:
                p.stop()
