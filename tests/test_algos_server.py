"""Execution algorithms through the server (engine/ALGOS.md): ALGO_NEW over the wire, the journaled
clock, sequenced parent reports, the ALGOS query, and kill -9 mid-schedule then a restart that goes on
with the schedule (its clock commands are journaled; recovery replays them)."""
import time

from protocol import wire
from protocol.codes import AlgoEnd, AlgoKind, AlgoState, CommandKind, Reject, Side
from protocol.wire import MsgType
from tests.test_server_session import Raw

REPORTS = (MsgType.ALGO_ACCEPTED, MsgType.ALGO_PROGRESS, MsgType.ALGO_DONE, MsgType.ALGO_PAUSED,
           MsgType.ALGO_RESUMED, MsgType.ALGO_AMENDED, MsgType.REJECTED)


def algos(c, rid=1):
    c.send(wire.encode(MsgType.ALGOS_REQUEST, request_id=rid))
    t, body, entries = c.until(MsgType.ALGOS)
    return [{k: int(e[k]) for k in wire.ALGO_ENTRY.offsets if not k.startswith("_")} for e in entries]


def asks_then_twap(port, duration_ms, slices):
    """Account 2 rests ten asks of 1000 at 10,000..10,009; account 1 sends a TWAP buying 600 with limit
    10,005 (client order id 7). Returns account 1's connection."""
    seller = Raw(port)
    seller.logon(2, next_seq=10**9)
    for i in range(10):
        seller.order(1 + i, Side.SELL, 1000, 10_000 + i)
    for _ in range(10):
        seller.until(MsgType.ACCEPTED)
    buyer = Raw(port)
    buyer.logon(1, next_seq=10**9)
    buyer.send(wire.encode(MsgType.ALGO_NEW, client_order_id=7, symbol=1, side=Side.BUY, algo=AlgoKind.TWAP,
                           qty=600, limit_price=10_005, duration_ms=duration_ms, slices=slices,
                           aggressiveness_bps=10_000))
    return buyer


def test_twap_when_killed_mid_schedule_then_restart_continues_it_to_the_end(server_factory):
    srv = server_factory().start()
    buyer = asks_then_twap(srv.port, duration_ms=3000, slices=6)
    t, acc, _ = buyer.until_any(REPORTS)
    assert t == MsgType.ALGO_ACCEPTED and int(acc["leaves"]) == 600 and int(acc["client_order_id"]) == 7
    pid = int(acc["order_id"])
    while True:                                    # two slices filled, then kill -9
        t, rep, _ = buyer.until_any(REPORTS)
        if t == MsgType.ALGO_PROGRESS and int(rep["qty"]) >= 200:
            break
    [row] = algos(buyer)
    assert row["parent_id"] == pid and row["state"] == AlgoState.ACTIVE and row["filled"] >= 200
    srv.kill9()
    time.sleep(0.5)                                # the schedule's time goes on while it is down
    srv.start()
    assert "recovered" in srv.output()
    buyer = Raw(srv.port)
    buyer.logon(1, next_seq=int(rep["seq"]) + 1)
    t, done, _ = buyer.until(MsgType.ALGO_DONE, timeout=10)
    assert int(done["order_id"]) == pid and int(done["reason"]) == AlgoEnd.FILLED and int(done["qty"]) == 600
    assert int(done["price"]) <= 10_005
    assert algos(buyer, 2) == []
    # the journal holds the clock: every report replays from seq 1 the same
    again = Raw(srv.port)
    again.logon(1, next_seq=1)
    seen, filled = [], 0
    while True:
        t, body, _ = again.next(timeout=5)
        seen.append(t)
        if t == MsgType.FILL:
            assert int(body["price"]) <= 10_005 and int(body["client_order_id"]) == 7
            assert int(body["flags"]) == wire.ReportFlag.ALGO_CHILD
            filled += int(body["qty"])
        if t == MsgType.ALGO_DONE:
            break
    assert seen[0] == MsgType.ALGO_ACCEPTED and filled == 600     # (slices due while it was down: caught up)


def test_algo_messages_when_sent_then_pause_resume_amend_cancel_answered_in_sequence(server):
    c = Raw(server.port)
    c.logon(1, next_seq=10**9)
    c.send(wire.encode(MsgType.ALGO_NEW, client_order_id=3, symbol=1, side=Side.SELL, algo=AlgoKind.TWAP,
                       qty=500, limit_price=20_000, duration_ms=60_000, slices=10, offset_ticks=1))
    t, acc, _ = c.until_any(REPORTS)
    assert t == MsgType.ALGO_ACCEPTED
    seq = int(acc["seq"])
    for mt, want in ((MsgType.ALGO_PAUSE, MsgType.ALGO_PAUSED), (MsgType.ALGO_RESUME, MsgType.ALGO_RESUMED)):
        c.send(wire.encode(mt, parent_id=int(acc["order_id"])))
        t, rep, _ = c.until_any(REPORTS)
        assert t == want and int(rep["seq"]) > seq
        seq = int(rep["seq"])
    c.send(wire.encode(MsgType.ALGO_AMEND, client_order_id=3, qty=800, limit_price=20_100))
    t, rep, _ = c.until_any(REPORTS)
    assert t == MsgType.ALGO_AMENDED and int(rep["leaves"]) + int(rep["qty"]) == 800
    [row] = algos(c)
    assert row["qty"] == 800 and row["limit_price"] == 20_100 and row["end_action"] == AlgoEnd.CANCEL
    c.send(wire.encode(MsgType.ALGO_CANCEL, parent_id=99))
    t, rep, _ = c.until_any(REPORTS)
    assert t == MsgType.REJECTED and int(rep["reason"]) == Reject.UNKNOWN_ALGO
    assert int(rep["cmd_kind"]) == CommandKind.ALGO_CANCEL
    c.send(wire.encode(MsgType.ALGO_CANCEL, parent_id=int(acc["order_id"])))
    t, rep, _ = c.until(MsgType.ALGO_DONE)
    assert int(rep["reason"]) == AlgoEnd.CANCELLED
    assert algos(c, 3) == []


def test_sdk_and_cli_when_parent_placed_then_reports_typed_and_listed(server):
    from decimal import Decimal

    from clients import AlgoReport, ExecutionReport, SyncClient
    from tests.server_proc import SECRETS
    from tests.test_sdk import cli
    with SyncClient.connect("127.0.0.1", server.port, account=2, secret=SECRETS[2]) as s:
        s.place("BTCUSDT", "sell", "5", price="100.00")
        s.place("BTCUSDT", "buy", "5", price="99.00")
    with SyncClient.connect("127.0.0.1", server.port, account=1, secret=SECRETS[1]) as c:
        r = c.place_algo("BTCUSDT", "buy", "1.2", "twap", duration_ms=1200, slices=4, randomization=0.1,
                         aggressiveness=1, limit_price="100.00")
        assert isinstance(r, AlgoReport) and r.kind == "algo_accepted" and r.leaves == Decimal("1.2")
        assert r.arrival_price == Decimal("99.50")           # the mid
        done = None
        for rep in c.reports():
            if isinstance(rep, AlgoReport) and rep.kind == "algo_done":
                done = rep
                break
        assert done.reason == "filled" and done.filled == Decimal("1.2") and done.avg_price == Decimal("100.00")
        assert done.slippage_bps == Decimal("50.25")         # 0.50 over 99.50, in bp
        bad = c.place_algo("BTCUSDT", "buy", "1", "pov", duration_ms=1000)
        assert isinstance(bad, ExecutionReport) and bad.kind == "rejected" and bad.reason == "INVALID_ALGO_PARAMS"
        r = c.place_algo("BTCUSDT", "buy", "1", "twap", duration_ms=600_000, limit_price="99.00")
        [info] = c.algos()
        assert (info.parent_id, info.algo, info.state, info.qty) == (r.parent_id, "twap", "waiting", Decimal("1"))
        assert info.interval_vwap is None and info.slippage_interval_bps == 0     # (waiting: no interval yet)
    out = cli(server, "algo", "list")
    assert out.returncode == 0 and "twap" in out.stdout, out.stderr
    out = cli(server, "algo", "pause", str(r.parent_id))
    assert out.returncode == 0 and "algo_paused" in out.stdout, out.stderr
    out = cli(server, "algo", "new", "sell", "BTCUSDT", "2", "--type", "pov", "--duration-ms", "60000",
              "--participation", "0.2", "--json")
    assert out.returncode == 0 and '"algo_accepted"' in out.stdout, out.stderr
    out = cli(server, "algo", "cancel", "999")
    assert out.returncode == 1 and "UNKNOWN_ALGO" in out.stdout
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.ops_port}/metrics", timeout=5).read().decode()
    metrics = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert float(metrics["te_algo_parents_active"]) == 2
    assert float(metrics["te_algo_children_total"]) >= 1
    # (negative buckets: prometheus-client leaves out _sum and _count, so +Inf is the count)
    assert float(metrics['te_algo_slippage_bps_bucket{le="+Inf"}']) == 1
    assert float(metrics['te_algo_slippage_bps_bucket{le="100.0"}']) == 1
    assert float(metrics['te_algo_slippage_bps_bucket{le="50.0"}']) == 0


def test_parent_when_server_restarts_from_its_snapshot_then_parent_and_schedule_restored(server_factory):
    srv = server_factory().start()
    c = Raw(srv.port)
    c.logon(1, next_seq=10**9)
    c.send(wire.encode(MsgType.ALGO_NEW, client_order_id=5, symbol=1, side=Side.BUY, algo=AlgoKind.TWAP,
                       qty=1000, duration_ms=600_000, slices=20, randomization_bps=3000))
    t, acc, _ = c.until_any(REPORTS)
    assert t == MsgType.ALGO_ACCEPTED
    before = algos(c)
    assert srv.terminate() == 0                    # the shutdown snapshot holds the parent
    srv.start()
    out = srv.output()
    assert "loaded snapshot" in out and "recovered: 0 commands replayed" in out
    c = Raw(srv.port)
    c.logon(1, next_seq=10**9)
    after = algos(c)
    assert [{k: v for k, v in r.items() if k != "expected"} for r in after] == \
        [{k: v for k, v in r.items() if k != "expected"} for r in before]
    c.send(wire.encode(MsgType.ALGO_CANCEL, client_order_id=5))
    t, rep, _ = c.until(MsgType.ALGO_DONE)
    assert int(rep["reason"]) == AlgoEnd.CANCELLED


def test_parent_when_cancel_on_disconnect_session_ends_then_parent_cancelled(server):
    c = Raw(server.port)
    c.logon(1, next_seq=10**9, flags=wire.LogonFlag.CANCEL_ON_DISCONNECT)
    c.send(wire.encode(MsgType.ALGO_NEW, client_order_id=9, symbol=1, side=Side.SELL, algo=AlgoKind.TWAP,
                       qty=500, limit_price=20_000, duration_ms=600_000, slices=10))
    t, acc, _ = c.until_any(REPORTS)
    assert t == MsgType.ALGO_ACCEPTED
    c.close()
    d = Raw(server.port)
    d.logon(1, next_seq=int(acc["seq"]) + 1)
    t, rep, _ = d.until(MsgType.ALGO_DONE)
    assert int(rep["order_id"]) == int(acc["order_id"]) and int(rep["reason"]) == AlgoEnd.CANCELLED
    assert algos(d) == []
