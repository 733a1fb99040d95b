"""`trading-engine journal dump|audit|replay` on a journal made by a real server run: filters,
formats, an order's whole life, replay to a point, comparison with snapshots, determinism (two
replays of the same journal print the same bytes), and reading while the server writes."""
import csv
import io
import re
import subprocess
import sys

import msgspec
import pytest

from protocol import wire
from protocol.codes import OrderType, Side
from protocol.wire import MsgType
from tests.server_proc import ROOT, ServerProc
from tests.test_server_session import Raw


def tool(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "engine.cli", "journal", *map(str, args)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, r.stderr + r.stdout
    return r


def acks(c, n):
    return [c.until_any((MsgType.ACCEPTED, MsgType.REJECTED)) for _ in range(n)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A server session with rests, fills (maker and taker), an amend, a cancel, a stop trigger and
    a reject; periodic snapshots; stopped gracefully (a final snapshot) and started again."""
    srv = ServerProc(tmp_path_factory.mktemp("tool") / "srv", journal_extra="snapshot_every = 4")
    srv.start()
    a, b = Raw(srv.port), Raw(srv.port)
    a.logon(1)
    b.logon(2)
    for clid in range(1, 6):                                   # orders 1-5: asks 100..104, qty 2
        a.order(clid, Side.SELL, 2, 99 + clid)
        acks(a, 1)
    b.order(1, Side.BUY, 3, 101)                               # order 6 takes 2 @ 100 and 1 @ 101
    acks(b, 1)
    a.send(wire.encode(MsgType.AMEND, order_id=2, qty=1, price=105))           # order 2: 1 left, moved
    a.until(MsgType.REPLACED)
    a.send(wire.encode(MsgType.CANCEL, order_id=5))
    a.until(MsgType.CANCELLED)
    b.send(wire.encode(MsgType.NEW_ORDER, client_order_id=2, symbol=1, side=Side.BUY, order_type=OrderType.STOP,
                       tif=1, stp=1, qty=1, stop_price=102))  # order 7: a buy stop
    acks(b, 1)
    b.order(3, Side.BUY, 2, 102)                               # order 8 lifts 102: the stop triggers
    acks(b, 1)
    b.until(MsgType.TRIGGERED)
    b.order(3, Side.BUY, 1, 100)                               # a duplicate client order id: rejected
    acks(b, 1)
    assert srv.terminate() == 0
    srv.start()
    srv.hash = re.findall(r"state_hash (0x[0-9a-f]+)", srv.output())[-1]
    srv.journal = srv.dir / "journal"
    yield srv
    srv.stop()


def rows(run, *filters):
    out = tool("dump", run.journal, "--format", "jsonl", "--config", run.config, *filters).stdout
    return [msgspec.json.decode(line) for line in out.splitlines()]


def test_dump_when_unfiltered_then_every_command_followed_by_its_events(run):
    got = rows(run)
    cmds = [r for r in got if r["record"] == "command"]
    assert [r["seq"] for r in cmds] == list(range(1, len(cmds) + 1)) and len(cmds) == 11
    kinds = [r["kind"] for r in got]
    for k in ("new_order", "amend", "cancel", "accepted", "fill", "replaced", "cancelled", "triggered", "rejected"):
        assert k in kinds
    seq = 0
    for r in got:                                              # events follow their command
        if r["record"] == "command":
            seq = r["seq"]
        else:
            assert r["seq"] == seq
    table = tool("dump", run.journal, "--config", run.config).stdout.splitlines()
    assert table[0].split()[:4] == ["rec", "seq", "time", "kind"] and len(table) == 1 + len(got)
    csv_rows = list(csv.DictReader(io.StringIO(tool("dump", run.journal, "--format", "csv", "--config",
                                                    run.config).stdout)))
    assert [(r["record"], int(r["seq"]), r["kind"]) for r in csv_rows] == [(r["record"], r["seq"], r["kind"])
                                                                           for r in got]


def test_dump_when_filtered_then_only_matching_records(run):
    fills = rows(run, "--event-type", "fill")
    assert fills and all(r["kind"] == "fill" for r in fills)
    mine = rows(run, "--account", 2, "--event-type", "fill,new_order")
    assert all(r["account"] == 2 or r.get("other_account") == 2 for r in mine)
    assert {r["kind"] for r in mine} == {"fill", "new_order"}
    window = rows(run, "--from-seq", 3, "--to-seq", 5)
    assert {r["seq"] for r in window} == {3, 4, 5}
    order6 = rows(run, "--order-id", 6)
    assert [r["kind"] for r in order6] == ["new_order", "accepted", "fill", "fill"]
    times = [r["ts_ns"] for r in rows(run) if r["record"] == "command"]
    since = rows(run, "--since", times[6], "--until", times[6])
    assert since and all(r["ts_ns"] == times[6] for r in since)
    iso = rows(run, "--since", next(r["time"] for r in rows(run) if r["ts_ns"] == times[6]))
    assert min(r["ts_ns"] for r in iso) == times[6]
    assert all(r["account"] == 3 for r in rows(run, "--symbol", 2))   # only the live test trades AAPL
    bad = tool("dump", run.journal, "--event-type", "nonsense", check=False)
    assert bad.returncode != 0 and "unknown --event-type" in bad.stderr


def test_audit_when_order_filled_amended_then_whole_life_in_order(run):
    out = tool("audit", run.journal, 2, "--config", run.config).stdout
    kinds = [line.split()[3] for line in out.splitlines()[1:] if line.startswith(("cmd", "evt"))]
    # order 2 (ask 101 qty 2): accepted, 1 filled by order 6 (as maker), amended, then lifted by order 8
    assert kinds == ["new_order", "accepted", "new_order", "fill", "amend", "replaced"], out
    assert "order 2: account 1 client order id 2, sell 0.002 @ 1.01 on symbol BTCUSDT" in out
    assert "1 fills, 0.001 filled; still live" in out
    raw = tool("audit", run.journal, 2, "--raw").stdout
    assert "sell 2 @ 101 on symbol 1" in raw and "1 fills, 1 filled; still live" in raw
    out = tool("audit", run.journal, 5, "--config", run.config).stdout
    assert [line.split()[3] for line in out.splitlines()[1:] if line.startswith(("cmd", "evt"))] == \
        ["new_order", "accepted", "cancel", "cancelled"] and "cancelled (user)" in out
    out = tool("audit", run.journal, 7, "--config", run.config).stdout
    assert "triggered" in out and "filled" in out.splitlines()[-1]
    assert tool("audit", run.journal, 999, "--config", run.config, check=False).returncode == 1


def test_dump_when_config_given_then_symbol_names_and_human_units_unless_raw(run):
    fill = next(r for r in rows(run, "--order-id", 6) if r["kind"] == "fill")   # 2 @ 100 of BTCUSDT
    assert (fill["symbol"], fill["price"], fill["qty"], fill["leaves"]) == ("BTCUSDT", "1.00", "0.002", "0.001")
    order = next(r for r in rows(run, "--order-id", 6) if r["record"] == "command")
    assert (order["symbol"], order["price"], order["qty"]) == ("BTCUSDT", "1.01", "0.003")
    raw = next(r for r in rows(run, "--order-id", 6, "--raw") if r["kind"] == "fill")
    assert (raw["symbol"], raw["price"], raw["qty"], raw["leaves"]) == (1, 100, 2, 1)
    assert rows(run, "--symbol", "BTCUSDT") == rows(run, "--symbol", "1") != []
    assert rows(run, "--symbol", "aapl", "--raw") == rows(run, "--symbol", "2", "--raw")
    table = tool("dump", run.journal, "--config", run.config, "--order-id", 6).stdout
    assert "BTCUSDT" in table and "1.00" in table and "0.002" in table
    bad = tool("dump", run.journal, "--config", run.config, "--symbol", "NOPE", check=False)
    assert bad.returncode == 2 and "unknown symbol 'NOPE'" in bad.stderr and "BTCUSDT, AAPL" in bad.stderr
    demo = tool("dump", run.journal, "--order-id", 6)           # no --config: says where units come from
    assert "embedded demo config" in demo.stderr


def test_replay_when_run_twice_then_same_bytes_and_state_of_the_recovered_server(run):
    first = tool("replay", run.journal, "--config", run.config)
    second = tool("replay", run.journal, "--config", run.config)
    assert first.stdout == second.stdout                       # determinism: byte for byte
    assert "events/s" in first.stderr                          # the rate goes to stderr
    assert f"state_hash {run.hash}" in first.stdout           # what the restarted server recovered
    assert rows(run) == rows(run)
    assert re.search(r"next report seq per account: 1:\d+ 2:\d+", first.stdout)


def test_replay_when_until_seq_then_book_at_that_point(run):
    out = tool("replay", run.journal, "--config", run.config, "--until", 5).stdout
    assert out.startswith("replayed 5 commands") and "open orders (5 in all)" in out
    cmds = [r for r in rows(run) if r["record"] == "command"]
    if cmds[4]["ts_ns"] != cmds[5]["ts_ns"]:                  # (commands of one batch share a receive time)
        assert tool("replay", run.journal, "--config", run.config, "--until", f"@{cmds[4]['ts_ns']}").stdout == out
        assert tool("replay", run.journal, "--config", run.config, "--until", cmds[4]["time"]).stdout == out


def test_replay_when_compared_with_snapshots_then_equal(run):
    out = tool("replay", run.journal, "--config", run.config, "--compare-snapshot").stdout
    assert "EQUAL; report sequences equal" in out
    snaps = sorted((run.journal / "snapshots").glob("*.snap"))
    assert len(snaps) >= 2
    out = tool("replay", run.journal, "--config", run.config, "--compare-snapshot", snaps[0]).stdout
    seq = int(snaps[0].name.split("-")[1].split(".")[0])
    assert f"to seq {seq}" in out and "EQUAL" in out


def test_tools_when_server_writing_then_read_live(run):
    a = Raw(run.port)
    a.logon(3, next_seq=10**9)
    for clid in range(1, 51):
        a.order(clid, Side.SELL, 1, (200 + clid) * 100, symbol=2 if clid % 2 else 1)
    dumped = rows(run, "--account", 3, "--event-type", "accepted")
    acks(a, 50)
    assert len(dumped) <= 50
    assert tool("verify", run.journal).stdout.startswith("ok: ")
    assert len(rows(run, "--account", 3, "--event-type", "accepted")) == 50
