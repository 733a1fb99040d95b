"""Hot standby by journal shipping over a 3-node NATS JetStream cluster on loopback
(engine/replication.py, engine/SCALING.md): the standby's journal and state equal the primary's;
kill -9 of a `replicated` primary under load loses no acknowledged report and the standby serves;
a primary paused past its lease (a partition, as it sees it) acknowledges nothing more; the SDK
fails over with every report exactly once; a read replica serves reports, queries and market data."""
import asyncio
import json
import os
import signal
import time
import uuid
from decimal import Decimal

import pytest

from clients.client import Client, ConnectionClosed
from engine import config as cfgmod
from engine.journal import Journal
from engine.testing_nats import NatsCluster, nats_server_binary
from protocol.codes import Reject, Side
from protocol.wire import MsgType
from tests.load import lost_reports, run_load
from tests.server_proc import SECRETS, ServerProc
from tests.test_ops import get
from tests.test_server_session import Raw

pytestmark = pytest.mark.skipif(nats_server_binary() is None, reason="nats-server not installed ([replication])")


@pytest.fixture(scope="module")
def nats(tmp_path_factory):
    c = NatsCluster(tmp_path_factory.mktemp("nats")).start()
    yield c
    c.stop()


@pytest.fixture
def pair(nats, tmp_path):
    """make(durability) -> (primary, standby) configs on a stream and lease of their own."""
    made = []

    def make(durability="replicated", lease_ms=1000):
        tag = uuid.uuid4().hex[:8]
        procs = []
        for node in ("a", "b"):
            extra = (f'\n[replication]\nservers = {json.dumps(nats.urls)}\nnode = "{node}"\nstream = "TE_{tag}"\n'
                     f'subject = "te.{tag}"\nlease_bucket = "lease_{tag}"\nlease_ms = {lease_ms}\n'
                     'state_hash_every = 1\n')
            procs.append(ServerProc(tmp_path / f"{node}{len(made)}", durability=durability, extra=extra))
        made.extend(procs)
        return procs
    yield make
    for s in made:
        if s.proc is not None and s.proc.poll() is None and s.proc.returncode is None:
            try:
                os.kill(s.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        s.stop()


def detailed(srv):
    return json.loads(get(srv, "/health/detailed")[1])


def wait_serving(srv, timeout=20.0):
    """Until a standby took over (its port is open from the start, refusing logons until then)."""
    deadline = time.monotonic() + timeout
    while detailed(srv)["replication"]["role"] != "primary":
        assert srv.proc.poll() is None, srv.output()
        assert time.monotonic() < deadline, srv.output()
        time.sleep(0.02)
    return srv


def records(srv):
    j = Journal(str(srv.dir / "journal"), readonly=True)
    try:
        with j.env.begin() as txn:
            return [(bytes(k), bytes(v)) for k, v in txn.cursor()]
    finally:
        j.close()


def test_standby_journal_and_state_equal_the_primarys_after_a_load(pair):
    a, b = pair(durability="sync")
    a.start()
    b.start(args=("--standby",))
    reports = {1: {}, 2: {}, 3: {}}
    run_load(a.port, reports, 1.0, seed=7, kill=lambda: None)
    deadline = time.monotonic() + 20
    before = None
    while True:                                      # until a is quiet (the same twice) and b has all a has
        want, got = detailed(a), detailed(b)
        if got["journal"]["last_seq"] == want["journal"]["last_seq"] and \
                got["replication"]["applied"] == want["replication"]["published"] and \
                (want["replication"], want["journal"]) == before:
            break
        before = (want["replication"], want["journal"])
        assert time.monotonic() < deadline and b.proc.poll() is None, b.output()
        time.sleep(0.05)
    assert want["journal"]["last_seq"] > 1000
    assert got["replication"]["role"] == "standby" and want["replication"]["role"] == "primary"
    assert got["replication"]["applied"] == want["replication"]["published"]
    assert got["replication"]["state_hash"] == want["replication"]["state_hash"]
    assert got["engine"] == want["engine"]
    assert records(b) == records(a)          # byte for byte: the same records, digests and chain
    metrics = get(b, "/metrics")[1]
    assert f"te_replication_applied_total {float(got['replication']['applied'])}" in metrics
    assert "te_replication_leader 0.0" in metrics and "te_replication_leader 1.0" in get(a, "/metrics")[1]
    assert "Diverged" not in b.output() and "diverged" not in b.output()
    t, body, _ = Raw(b.port).logon(1)                # a standby refuses sessions
    assert t == MsgType.LOGON_REJECTED and body["reason"] == Reject.NOT_PRIMARY


@pytest.mark.parametrize("trial", range(3))
def test_kill9_of_a_replicated_primary_under_load_loses_no_acknowledged_report(pair, trial):
    a, b = pair()
    a.start()
    b.start(args=("--standby",))
    reports = {1: {}, 2: {}, 3: {}}
    sent = run_load(a.port, reports, 0.5 + 0.4 * trial, seed=100 + trial, kill=a.kill9)
    wait_serving(b)
    assert sum(len(r) for r in reports.values()) > 100, sent
    assert lost_reports(b.port, reports) == []
    assert detailed(b)["replication"]["role"] == "primary"


def test_a_primary_that_lost_its_lease_acknowledges_nothing(pair):
    a, b = pair(lease_ms=500)
    a.start()
    b.start(args=("--standby",))
    c = Raw(a.port)
    assert c.logon(1)[0] == MsgType.LOGON_ACCEPTED
    c.order(1, Side.BUY, 1, 100)
    assert c.until(MsgType.ACCEPTED)[0] == MsgType.ACCEPTED
    a.proc.send_signal(signal.SIGSTOP)       # cut off from the cluster, as far as it can tell
    try:
        wait_serving(b)
    finally:
        a.proc.send_signal(signal.SIGCONT)
    c.order(2, Side.BUY, 1, 100)             # on the session it still has: never acknowledged
    f = c.until_any((MsgType.ACCEPTED, MsgType.LOGOUT))
    assert f is None or (f[0] == MsgType.LOGOUT and f[1]["reason"] == Reject.NOT_PRIMARY), f
    d = Raw(a.port)                          # and no new session there
    t, body, _ = d.logon(2)
    assert t == MsgType.LOGON_REJECTED and body["reason"] == Reject.NOT_PRIMARY
    e = Raw(b.port)                          # the new primary has the first order, not the second
    assert e.logon(1, next_seq=1)[0] == MsgType.LOGON_ACCEPTED
    assert e.until(MsgType.ACCEPTED)[1]["client_order_id"] == 1
    e.order(3, Side.BUY, 1, 100)
    assert e.until(MsgType.ACCEPTED)[1]["client_order_id"] == 3
    assert detailed(a)["replication"]["role"] == "fenced"


def test_replicated_durability_needs_nats_servers(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[journal]\ndurability = "replicated"\n')
    with pytest.raises(cfgmod.ConfigError, match="replication.servers"):
        cfgmod.load(str(p))


def test_sdk_with_failover_addresses_sees_every_report_exactly_once_across_a_kill9(pair):
    a, b = pair()
    a.start()
    b.start(args=("--standby",))

    async def go():
        loop = asyncio.get_running_loop()
        c = await Client.connect("127.0.0.1", b.port, account=1, secret=SECRETS[1], reconnect=True, timeout=3,
                                 failover=[("127.0.0.1", a.port)])     # b refuses (NOT_PRIMARY): a serves
        seen = []

        async def collect():
            async for r in c.reports():
                seen.append(r)
        reader = asyncio.ensure_future(collect())
        placed, killed = 0, False
        while placed < 60:
            if placed == 20 and not killed:
                killed = True
                await loop.run_in_executor(None, a.kill9)
                await loop.run_in_executor(None, wait_serving, b)
            try:
                side = "buy" if placed % 2 else "sell"
                await c.place("BTCUSDT", side, "0.001", price="1.00")
                placed += 1
            except ConnectionClosed:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert c.reconnects == 1 and c.gaps == []
        seqs = [r.seq for r in seen]
        assert seqs == list(range(1, len(seqs) + 1)), seqs           # no report twice, none missing
        async with Client.connect("127.0.0.1", b.port, account=1, secret=SECRETS[1], next_seq=1) as d:
            await asyncio.sleep(0.3)
            replayed = d.received_reports()
        assert replayed == seen                  # and they are the new primary's, byte for byte as decoded
        assert sum(1 for r in seen if r.kind == "accepted") >= 60
        await c.close()
        reader.cancel()
    asyncio.run(asyncio.wait_for(go(), 60))


@pytest.mark.parametrize("durability", ["replicated", "sync"])
def test_planned_switchover_and_back_when_each_node_restarts_as_the_standby(pair, durability):
    a, b = pair(durability=durability)
    a.start()
    b.start(args=("--standby",))
    reports = {1: {}, 2: {}, 3: {}}
    run_load(a.port, reports, 0.5, seed=11, kill=lambda: a.terminate())    # SIGTERM: the lease is released
    wait_serving(b)
    a.start(args=("--standby",))                     # the old primary follows from where it stopped
    run_load(b.port, reports, 0.5, seed=12, kill=lambda: b.terminate())
    wait_serving(a)
    assert lost_reports(a.port, reports) == []
    assert all(len(r) > 50 for r in reports.values())
    assert "diverged" not in a.output().lower()


def test_a_standby_whose_engine_disagrees_stops_naming_the_seq(pair):
    a, b = pair()
    # the standby's config differs: BTCUSDT's max_price, so the order below is rejected there
    b.config.write_text(b.config.read_text().replace("tick_size = 1\nlot_size = 1\n",
                                                     "tick_size = 1\nlot_size = 1\nmax_price = 50\n", 1))
    a.start()
    b.start(args=("--standby",))
    c = Raw(a.port)
    c.logon(1)
    c.order(1, Side.BUY, 1, 100)
    assert c.until(MsgType.ACCEPTED)[0] == MsgType.ACCEPTED
    assert b.proc.wait(20) == 1
    assert "diverged from the primary's events at seq" in b.output()


def test_read_replica_serves_reports_queries_and_market_data_and_refuses_orders(pair):
    from clients.client import Trade
    a, r = pair(durability="sync")
    a.start()
    r.start(args=("--replica",))

    async def go():
        buyer = await Client.connect("127.0.0.1", a.port, account=1, secret=SECRETS[1])
        seller = await Client.connect("127.0.0.1", a.port, account=2, secret=SECRETS[2])
        await buyer.place("BTCUSDT", "buy", "0.002", price="1.00")          # before the replica's session
        ro = await Client.connect("127.0.0.1", r.port, account=1, secret=SECRETS[1], next_seq=1)
        sub = await ro.subscribe("BTCUSDT", top=True, trades=True)
        reports = ro.reports()
        assert (await reports.__anext__()).kind == "accepted"          # replayed at logon
        await seller.place("BTCUSDT", "sell", "0.001", price="1.00")
        fill = await asyncio.wait_for(reports.__anext__(), 10)         # live, as the primary sequenced it
        assert fill.kind == "fill" and fill.seq == 2
        async for update in sub:
            if isinstance(update, Trade):
                assert update.qty == Decimal("0.001")
                break
        assert await ro.book("BTCUSDT") == await buyer.book("BTCUSDT")
        assert await ro.open_orders() == await buyer.open_orders()
        no = await ro.place("BTCUSDT", "buy", "0.001", price="1.00")   # order entry: refused here
        assert no.kind == "rejected" and no.reason == "NOT_PRIMARY" and no.seq == 0
        assert await ro.open_orders() == await buyer.open_orders()
        for c in (buyer, seller, ro):
            await c.close()
    asyncio.run(asyncio.wait_for(go(), 60))
    assert detailed(r)["replication"]["role"] == "replica"


@pytest.mark.parametrize("argv", [["failover", "--trials", "1"],
                                  ["standbylag", "--rate", "2000", "--seconds", "0.5"]])
def test_replication_benchmarks_run_small(tmp_path, argv):
    from perf import __main__ as bench
    assert bench.main([*argv, "--no-plot", "--out", str(tmp_path)]) == 0
    r = json.loads(next(tmp_path.glob("*.json")).read_text())["results"]
    if argv[0] == "failover":
        assert r["lost_acknowledged"] == 0 and r["reports_seen"] > 0
    else:
        assert r["standby_state_equal"] and r["commands"] >= 1000


def test_standby_and_replica_need_replication_servers(tmp_path):
    import subprocess
    import sys
    srv = ServerProc(tmp_path / "s")
    env = dict(os.environ, **{f"TE_TEST_SECRET_{a}": s for a, s in SECRETS.items()})
    for args in (["--standby"], ["--replica"]):
        r = subprocess.run([sys.executable, "-m", "engine.server", "--config", str(srv.config), *args],
                           capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 2 and "need [replication] servers" in r.stderr, r.stderr
