"""Round trip over loopback TCP: a server subprocess pinned to one core, this load
generator pinned to the other, open loop at a fixed rate.

Each order's latency runs from its *scheduled* send time (not the moment it was
actually sent) to the receipt of its ACCEPTED report, so a stall of the server or
of the generator is charged to every order scheduled during it (coordinated
omission corrected). Percentiles come from an HdrHistogram of every sample after a
warm-up (p50 .. p99.99 and max). Flow: GTC limit orders away from the touch, each
cancelled 200 orders later, so the book stays bounded; latency is taken on the
NEW_ORDER acks.

The generator does no per-message work while timing: the whole order stream is one
pre-encoded byte string sent in slices as orders fall due, replies are received
into one preallocated buffer and only their byte count is recorded per recv (the
server answers in wire order with fixed-size reports, so order k's ACCEPTED ends at
a known offset). After the run the received stream is checked report by report
against what it must be (every ACCEPTED for the right client order id, every
cancel CANCELLED), so a counting mistake cannot pass unnoticed. How late the
generator sent each order (its own lag) is reported beside the latencies.

Variants measured in the same run, interleaved run by run: `echo` (perf/echo.py:
the same loopback and Python at both ends, no engine, every byte written straight
back: the floor), the server per journal durability, and with --scrape the server
(journal off) while the generator itself scrapes /metrics every second (Scrape).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from perf import latency
from protocol import wire
from protocol.codes import Side
from protocol.wire import MsgType

REPORT = np.dtype([("h", wire.HEADER.dtype), ("r", wire.EXEC_REPORT.dtype)])
ORDER = np.dtype([("h", wire.HEADER.dtype), ("b", wire.NEW_ORDER.dtype)])
CANCEL = np.dtype([("h", wire.HEADER.dtype), ("b", wire.CANCEL.dtype)])
CANCEL_LAG = 200            # order k cancels order k - 200
ROOT = Path(__file__).resolve().parents[1]

# Logon's next_seq beyond any report: a benchmark session must not get the gap replay of an
# earlier run's reports (with next_seq=1 runs 2.. on one server received up to replay_ring
# old reports first, counted as acknowledgements of their own orders).
NO_REPLAY = 1 << 62


def logon(sock, account, secret):
    f = bytearray(wire.encode(MsgType.LOGON, account=account, heartbeat_ms=10_000, next_seq=NO_REPLAY,
                              timestamp_ns=time.time_ns(), proto_version=wire.SCHEMA_VERSION, nonce=int.from_bytes(os.urandom(4), "little")))
    key = hmac.new(secret.encode(), b"trading-engine signing key", hashlib.sha256).digest()
    f[40:72] = hmac.new(key, bytes(f[8:40]), hashlib.sha256).digest()
    sock.sendall(f)
    data = b""
    while len(data) < wire.frame_size(MsgType.LOGON_ACCEPTED):
        chunk = sock.recv(4096)
        if len(data) + len(chunk) > 2 and (data + chunk)[2] != MsgType.LOGON_ACCEPTED:
            raise RuntimeError(f"logon of account {account} refused: {MsgType((data + chunk)[2]).name} "
                               f"{(data + chunk)[:24].hex()}")
        if not chunk:
            raise RuntimeError(f"logon of account {account}: the server closed the connection")
        data += chunk
    (_, body, _), = wire.decode(data[:wire.frame_size(MsgType.LOGON_ACCEPTED)])[0]
    return data[wire.frame_size(MsgType.LOGON_ACCEPTED):], int(body["next_client_order_id"])


def stream(n, first_clid=1, cancels=True, symbol=1):
    """The order flow as one byte string: order k (a NEW_ORDER of `symbol`, BTCUSDT unless said)
    followed, from k = 200 on, by the cancel of order k - 200 (by client order id). Returns
    (bytes, end offset of each order's frames, end offset of each NEW_ORDER frame)."""
    i = np.arange(n)
    orders = np.zeros(n, dtype=ORDER)
    orders["h"]["length"] = ORDER.itemsize
    orders["h"]["msg_type"] = MsgType.NEW_ORDER
    orders["h"]["version"] = wire.SCHEMA_VERSION
    b = orders["b"]
    b["client_order_id"] = i + first_clid
    b["symbol"] = symbol
    b["side"] = np.where(i % 2, Side.SELL, Side.BUY)
    b["order_type"], b["tif"], b["stp"] = 1, 1, 4
    b["price"] = np.where(i % 2, 200_000 + i % 500, 100_000 - i % 500)
    b["qty"] = 1
    with_cancel = (i >= CANCEL_LAG) & cancels
    sizes = ORDER.itemsize + np.where(with_cancel, CANCEL.itemsize, 0)
    ends = np.cumsum(sizes)
    out = np.zeros(int(ends[-1]) if n else 0, dtype=np.uint8)
    starts = ends - sizes
    out[(starts[:, None] + np.arange(ORDER.itemsize)).ravel()] = orders.view(np.uint8)
    k = np.nonzero(with_cancel)[0]
    if len(k):
        cancels_arr = np.zeros(len(k), dtype=CANCEL)
        cancels_arr["h"]["length"] = CANCEL.itemsize
        cancels_arr["h"]["msg_type"] = MsgType.CANCEL
        cancels_arr["h"]["version"] = wire.SCHEMA_VERSION
        cancels_arr["b"]["client_order_id"] = k - CANCEL_LAG + first_clid
        pos = (starts[k] + ORDER.itemsize)[:, None] + np.arange(CANCEL.itemsize)
        out[pos.ravel()] = cancels_arr.view(np.uint8)
    return out.tobytes(), ends, starts + ORDER.itemsize


def expected_reports(n):
    """Per order k, the end offset of its ACCEPTED in the reply stream: the server answers in
    wire order, ACCEPTED(k) then CANCELLED(k - 200), every report one fixed-size frame."""
    k = np.arange(n)
    return (k + 1 + np.maximum(0, k - CANCEL_LAG)) * REPORT.itemsize


def verify_reports(data, n, first_clid):
    """The reply stream is exactly ACCEPTED(k) [+ CANCELLED(k - 200)] for every order: else raise."""
    reps = np.frombuffer(data, dtype=REPORT, count=len(data) // REPORT.itemsize)
    k = np.arange(n)
    idx_acc = k + np.maximum(0, k - CANCEL_LAG)
    acc = reps[idx_acc]
    bad = (acc["h"]["msg_type"] != MsgType.ACCEPTED) | (acc["r"]["client_order_id"] != k + first_clid)
    kc = k[(k >= CANCEL_LAG) & (idx_acc + 1 < len(reps))]      # the last cancels may still be on the way
    cx = reps[idx_acc[kc] + 1]
    bad_cx = (cx["h"]["msg_type"] != MsgType.CANCELLED) | (cx["r"]["client_order_id"] != kc - CANCEL_LAG + first_clid)
    if bad.any() or bad_cx.any():
        j = int(np.argmax(bad)) if bad.any() else int(kc[np.argmax(bad_cx)])
        raise RuntimeError(f"reply stream is not what the flow must produce (first difference at order {j})")


class Scrape:
    """GET /metrics every `every` seconds from inside the generator's loop, non-blocking (a few
    microseconds per poll; another process would take the generator's core for milliseconds
    per scrape). The response is read to its end and discarded."""

    def __init__(self, port, every=1.0):
        self.port, self.every = port, every
        self.sock = None
        self.next = time.monotonic()
        self.done = 0
        self.request = b""

    def poll(self):
        if self.sock is None:
            if time.monotonic() < self.next:
                return
            self.next += self.every
            self.sock = socket.socket()
            self.sock.setblocking(False)
            self.sock.connect_ex(("127.0.0.1", self.port))
            self.request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
            return
        try:
            if self.request:
                self.request = self.request[self.sock.send(self.request):]
                return
            data = self.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.sock.close()
            self.sock = None
            self.done += 1


def run(port, rate, seconds, cpu=None, warmup=0.5, echo=False, scrape_port=None):
    """One open-loop run against a server (or the echo floor); returns (result dict, latencies ns).
    With scrape_port, /metrics there is scraped every second meanwhile (Scrape)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    n = int(rate * seconds)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if echo:
        rest, first_clid = b"", 1
    else:
        rest, first_clid = logon(sock, 1, "secret-one-for-tests")
    data, send_end, order_end = stream(n, first_clid)
    ack_end = order_end if echo else expected_reports(n)
    need = int(ack_end[-1])
    rbuf = bytearray(max(need, len(data)) + (1 << 20))
    rview = memoryview(rbuf)
    rbuf[:len(rest)] = rest
    got = len(rest)
    view = memoryview(data)
    send_end_list = send_end.tolist()
    sock.setblocking(False)
    interval = 1e9 / rate
    rec_t, rec_b = [], []          # per recv: time, cumulative bytes received
    snd_t, snd_b = [], []          # per send: time, cumulative bytes handed to the kernel
    sent = target = 0
    i = 0
    clock = time.perf_counter_ns
    scrape = Scrape(scrape_port) if scrape_port else None
    start = clock() + 1_000_000
    deadline = start + int(seconds * 1e9) + 5_000_000_000
    while got < need:
        now = clock()
        if scrape is not None:
            scrape.poll()
        if i < n and now >= start:
            due = min(n, int((now - start) / interval) + 1)
            if due > i:
                i = due
                target = send_end_list[i - 1]
        if sent < target:
            try:
                sent += sock.send(view[sent:target])
                snd_t.append(clock())
                snd_b.append(sent)
            except BlockingIOError:
                pass
        try:
            r = sock.recv_into(rview[got:])
        except BlockingIOError:
            if now > deadline:
                break
            continue
        if r == 0:
            break
        got += r
        rec_t.append(clock())
        rec_b.append(got)
    sock.close()
    sched = start + (np.arange(n) * interval).astype(np.int64)
    rec_b, rec_t = np.array(rec_b, dtype=np.int64), np.array(rec_t, dtype=np.int64)
    at = np.searchsorted(rec_b, ack_end, side="left")
    acked = at < len(rec_b)
    if not acked.all():
        raise RuntimeError(f"{int((~acked).sum())} of {n} orders not acknowledged in time")
    if echo:
        if bytes(rbuf[:len(data)]) != data:
            raise RuntimeError("the echo server changed the bytes")
    else:
        verify_reports(bytes(rbuf[:got]), n, first_clid)
    lat = rec_t[at] - sched
    sent_at = np.array(snd_t, dtype=np.int64)[np.searchsorted(np.array(snd_b, dtype=np.int64), send_end, side="left")]
    lag = sent_at - sched
    skip = int(min(warmup, 0.1 * seconds) * rate)     # warm-up samples left out
    return dict(rate=rate, seconds=seconds, orders=n, acked=int(acked.sum()),
                recvs=len(rec_b), sends=len(snd_b), scrapes=scrape.done if scrape else 0,
                latency_us=latency.summary_us(lat[skip:]),
                generator_lag_us={"p50": float(np.percentile(lag[skip:], 50)) / 1000,
                                  "p99": float(np.percentile(lag[skip:], 99)) / 1000}), lat[skip:]


def _wait_port(path, proc, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{proc.args} did not start")
        time.sleep(0.02)
    return int(path.read_text())


def batch_stats(ops_port):
    """(batches, commands, commit seconds summed, commits, {le: cumulative count} of the server's
    receive-to-acknowledgement histogram) from its /metrics."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{ops_port}/metrics", timeout=5).read().decode()
    vals, ack = {}, {}
    for line in text.splitlines():
        if line.startswith(("te_batch_commands_", "te_journal_commit_seconds_")) and "{" not in line:
            name, value = line.split()
            vals[name] = float(value)
        elif line.startswith("te_ack_latency_seconds_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            ack[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return (vals["te_batch_commands_count"], vals["te_batch_commands_sum"], vals["te_journal_commit_seconds_sum"],
            vals["te_journal_commit_seconds_count"], ack)


def with_batch_stats(result, before, after):
    """Mean commands per batch (one journal commit each, or one read without a journal), mean
    commit time, and the server's own receive-to-acknowledgement latency over a run (issue 6:
    reported beside the client-observed figure, never instead of it): the upper bound of the
    histogram bucket where each percentile falls."""
    batches, commands, commit_s, commits = (a - b for a, b in zip(after[:4], before[:4]))
    result["batches"] = int(batches)
    result["mean_batch"] = commands / batches if batches else 0.0
    if commits:
        result["mean_commit_ms"] = 1000 * commit_s / commits
    counts = sorted((le, after[4][le] - before[4].get(le, 0.0)) for le in after[4])
    total = counts[-1][1] if counts else 0
    if total:
        result["server_internal_us"] = {
            p: next(le for le, c in counts if c >= total * float(p) / 100) * 1e6 for p in ("50", "99", "99.9")}
    return result


def cpu_seconds(pid):
    """User + system CPU seconds of a process so far."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def busy_seconds():
    """CPU seconds every process on the machine has used so far (all cores, from /proc/stat)."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(limit, threshold=0.1, window=1.0):
    """Wait up to `limit` s until the machine's other work uses < `threshold` cores over
    `window` s (our idle servers use ~0); returns the seconds waited (limit if never quiet)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        b = busy_seconds()
        time.sleep(window)
        if (busy_seconds() - b) / window < threshold:
            break
    return time.monotonic() - t0


class Noise:
    """How many cores other processes kept busy while we measured: the machine is shared,
    and this says how noisy each run was."""

    def __init__(self, pid):
        self.pid = pid
        self.t, self.busy, self.mine, self.gen = time.monotonic(), busy_seconds(), cpu_seconds(pid), time.process_time()

    def result(self):
        dt = time.monotonic() - self.t
        server = (cpu_seconds(self.pid) - self.mine) / dt
        gen = (time.process_time() - self.gen) / dt
        return dict(server_cpu=server, generator_cpu=gen,
                    other_cores=max(0.0, (busy_seconds() - self.busy) / dt - server - gen))


def server_limits():
    """The load generator's session may send far above the default throttle tiers."""
    return "".join(f"\n{k} = 1e12" for k in ("orders_per_s", "orders_burst", "cancels_per_s",
                                              "cancels_burst", "logout_per_s", "logout_burst"))


# "none+risk": the server with every risk check on (engine/RISK.md), every limit kind set loosely
# enough that the load generator's orders (perf/roundtrip.py stream: BTCUSDT buys near 1,000.00,
# sells near 2,000.00, 0.001 each) all pass, and every account funded: the same flow as "none",
# so the two differ by what risk costs the server.
RISK_ON = dict(risk="""enabled = true
[risk.defaults]
max_order_value = "1000000"
max_position_value = "1000000000"
max_open_orders = 1000000
max_leverage = "100"
max_daily_loss = "1000000000"
price_collar = "0.50"
market_band = "0.50"
max_var = "1000000000"
initial_margin = "0.10"
maintenance_margin = "0.05"
maker_fee = "-0.0001"
taker_fee = "0.0005"
""", account_extra='initial_deposit = "1000000000"\n', symbol_extra='reference_price = "1500.00"')


def replication_config(urls, node, **more):
    """A [replication] table for the NATS cluster at `urls` (engine/SCALING.md)."""
    import json
    return (f"\n[replication]\nservers = {json.dumps(list(urls))}\nnode = \"{node}\"\n" +
            "".join(f"{k} = {json.dumps(v)}\n" for k, v in more.items()))


class Targets:
    """The processes a scenario measures, pinned to the server CPU, one per variant:
    "echo" (perf/echo.py) or a server per journal durability ("none+scrape" shares the
    "none" server; "none+risk" is a server of its own with risk on, RISK_ON). A context
    manager: everything is stopped on exit."""

    def __init__(self, variants, server_cpu, **server_kw):
        from engine.testing import ServerProc
        self.tmp = tempfile.TemporaryDirectory()
        self.procs = {}
        self.echo = None
        self.nats = None
        try:
            for v in variants:
                if v == "echo":
                    pf = Path(self.tmp.name) / "echo.port"
                    self.echo = subprocess.Popen([sys.executable, "-m", "perf.echo", "--port-file", str(pf),
                                                  "--cpu", str(server_cpu)], cwd=ROOT)
                    self.echo_port = _wait_port(pf, self.echo)
                    continue
                durability = v.split("+")[0]
                key = self.key(v)
                if key not in self.procs:
                    kw = dict(server_kw, **(RISK_ON if v.endswith("+risk") else {}))
                    if durability == "replicated":        # beside a 3-node JetStream cluster (no standby)
                        kw["extra"] = kw.get("extra", "") + self.replication(Path(self.tmp.name))
                    self.procs[key] = ServerProc(
                        Path(self.tmp.name) / key.replace("+", "_"), durability=durability,
                        server_extra=f"cpu = {server_cpu}{server_limits()}", **kw).start()
        except BaseException:
            self.close()
            raise

    def replication(self, tmp):
        """The [replication] table of a `replicated` server, starting the NATS cluster once."""
        from engine.testing_nats import NatsCluster
        if self.nats is None:
            self.nats = NatsCluster(tmp / "nats").start()
        return replication_config(self.nats.urls, "a")

    @staticmethod
    def key(v):
        return v if v.endswith("+risk") else v.split("+")[0]

    def server(self, v):
        return self.procs[self.key(v)]

    def port(self, v):
        return self.echo_port if v == "echo" else self.server(v).port

    def pid(self, v):
        return self.echo.pid if v == "echo" else self.server(v).proc.pid

    def close(self):
        if self.echo is not None:
            self.echo.kill()
            self.echo.wait(10)
        for srv in self.procs.values():
            srv.stop()
        if self.nats is not None:
            self.nats.stop()
        self.tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def scenario(args):
    variants = (["echo"] if args.echo else []) + list(args.durability) + (["none+scrape"] if args.scrape else [])
    with Targets(variants, args.server_cpu) as targets:
        results = {v: dict(rate=args.rate, seconds=args.seconds, runs=[]) for v in variants}
        samples = {v: [] for v in variants}
        for _ in range(args.runs):
            for v in variants:                       # interleaved: the machine's noise hits every variant
                waited = wait_quiet(args.quiet_wait) if args.quiet_wait else 0.0
                before = None if v == "echo" else batch_stats(targets.server(v).ops_port)
                noise = Noise(targets.pid(v))
                r, lat = run(targets.port(v), args.rate, args.seconds, cpu=args.cpu, echo=v == "echo",
                             scrape_port=targets.server(v).ops_port if v.endswith("+scrape") else None)
                r.update(noise.result(), waited_for_quiet_s=waited)
                if before is not None:
                    with_batch_stats(r, before, batch_stats(targets.server(v).ops_port))
                results[v]["runs"].append(r)
                samples[v].append(lat)
    for v in variants:
        runs = results[v]["runs"]
        results[v]["median_latency_us"] = {p: float(np.median([r["latency_us"][p] for r in runs]))
                                           for p in runs[0]["latency_us"] if p != "count"}
        results[v]["spread_us"] = {p: [min(r["latency_us"][p] for r in runs), max(r["latency_us"][p] for r in runs)]
                                   for p in ("50", "99", "99.9")}
    if getattr(args, "plot", True):
        out = Path(args.out)
        for v in variants:
            path = latency.plot({f"run {i + 1}": lat for i, lat in enumerate(samples[v])},
                                f"round trip, {v}, {args.rate:,.0f} orders/s",
                                out / f"roundtrip-{v.replace('+', '-')}-{int(args.rate)}.png")
            if path:
                results[v]["plot"] = str(path)
        latency.plot({v: np.concatenate(samples[v]) for v in variants},
                     f"round trip, {args.rate:,.0f} orders/s, all runs", out / f"roundtrip-{int(args.rate)}.png")
    if args.scrape and "none" in results:
        base, scr = results["none"]["median_latency_us"], results["none+scrape"]["median_latency_us"]
        results["scrape_impact"] = {p: (scr[p] - base[p]) / base[p] for p in ("99", "99.9")}
    return results
