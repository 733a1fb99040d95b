"""Every integer field over its full declared range (issue 18.1, 18.2): a u64 client order id at or
above 2**63, i64 prices at their extremes, u32 ids at 2**32-1 ... go through the core, the state
hash, a snapshot, the journal and its tool's rows unchanged, and a server holding such orders
restarts after kill -9; the end of the client-order-id space is a reject code, never an
unanswered logon."""
from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from clients import Client
from engine import journal_tool, snapshot
from engine.core import Engine
from engine.journal import Journal
from engine.risk import Risk
from protocol import wire
from protocol.codes import CommandKind, EventKind, OrderType, Reject, Side, TimeInForce
from protocol.records import COMMAND
from protocol.wire import MsgType
from tests.server_proc import ROOT, SECRETS
from tests.test_server_session import Raw

U64 = 2**64 - 1
EXTREMES = {   # the declared type of each field -> its interesting values
    "u8": [0, 1, 2, 255], "u16": [0, 1, 2**16 - 1], "u32": [0, 1, 2, 2**31, 2**32 - 1],
    "u64": [0, 1, 2, 2**63 - 1, 2**63, 2**64 - 2, U64],
    "i64": [-2**63, -1, 0, 1, 10, 2**62, 2**63 - 1],
}
FIELD_TYPES = {f: t for f, t, _ in COMMAND.fields}


def make_engine():
    eng = Engine(max_orders=256, max_accounts=4, max_symbols=4, max_levels=64)
    risk = Risk(4, 4, max_strategies=4)
    eng.add_symbol(1)
    risk.define_symbol(1, 0, 0)
    for a in (1, 2):
        eng.add_account(a)
    eng.attach_risk(risk)
    eng.mark_price(1, 10)
    eng.deposit(1, 2**61)
    eng.deposit(2, 2**61)
    return eng


def extreme_command(draw):
    """A command whose every field is an extreme of its type, or (for the fields that decide
    whether an order rests) a plain valid value, so that some orders with extreme ids rest."""
    rec = {}
    for name, ftype in FIELD_TYPES.items():
        if name.startswith("_"):
            continue
        rec[name] = draw(st.sampled_from(EXTREMES[ftype]))
    if draw(st.booleans()):          # a valid resting order carrying extreme ids, times and strategy
        rec.update(kind=CommandKind.NEW_ORDER, account=draw(st.sampled_from([1, 2])), symbol=1,
                   side=draw(st.sampled_from([Side.BUY, Side.SELL])), order_type=OrderType.LIMIT,
                   tif=draw(st.sampled_from([TimeInForce.GTC, TimeInForce.GTD])), stp=1, flags=0,
                   price=draw(st.sampled_from([1, 10, 2**40])), qty=draw(st.sampled_from([1, 5])), stop_price=0,
                   display_qty=0, strategy=draw(st.sampled_from([0, 3, 2**32 - 1])))
        rec["expire_ts_ns"] = draw(st.sampled_from([1, 2**63 - 1])) if rec["tif"] == TimeInForce.GTD else 0
    else:
        rec["kind"] = draw(st.sampled_from([int(k) for k in CommandKind] + [0, 255]))
        if rec["kind"] in (CommandKind.RISK_TICK, CommandKind.EXPIRE, CommandKind.END_OF_DAY, CommandKind.HALT):
            rec["kind"] = CommandKind.CANCEL          # keep the book for the orders above
    return rec


@settings(max_examples=int(os.environ.get("TE_RANGE_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fields_when_at_their_extremes_then_core_hash_snapshot_journal_and_tool_round_trip(tmp_path_factory, data):
    eng = make_engine()
    cmds = np.zeros(12, dtype=COMMAND.dtype)
    for i in range(len(cmds)):
        for name, value in extreme_command(data.draw).items():
            cmds[i][name] = value
        cmds[i]["seq"] = i + 1
    events = eng.process(cmds)
    eng.validate()
    h = eng.state_hash()

    # snapshot: export, the file format, import into a fresh engine: the same hash and bytes
    d = tmp_path_factory.mktemp("ranges")
    path = snapshot.write(d, eng.export_state(), int(cmds["seq"][-1]))
    _, state, _ = snapshot.read(path)
    other = make_engine()
    other.import_state(state)
    assert other.state_hash() == h
    other.validate()
    for name, arr in eng.export_state().items():
        assert np.asarray(arr).tobytes() == np.asarray(state[name]).tobytes(), name

    # the journal and the journal tool's rows (dump, audit): every value as the record holds it
    j = Journal(str(d / "journal"))
    j.append(cmds, events)
    (got_cmds, got_events), = list(j.batches())
    j.env.close()
    assert got_cmds.tobytes() == cmds.tobytes() and got_events.tobytes() == events.tobytes()
    for c in got_cmds:
        row = journal_tool.command_row(c)
        for f in ("client_order_id", "order_id", "price", "qty", "stop_price", "display_qty", "expire_ts_ns",
                  "strategy", "account", "symbol", "session", "ts_ns"):
            assert row[f] == int(c[f]), f
    for e in got_events:
        row = journal_tool.event_row(e, 2**64 - 1)
        for f in ("client_order_id", "order_id", "other_order_id", "other_client_order_id", "price", "qty",
                  "leaves", "trade_id", "account"):
            assert row[f] == int(e[f]), f
    # a replay of the same commands reaches the same state
    again = make_engine()
    assert again.process(cmds).tobytes() == events.tobytes()
    assert again.state_hash() == h


def _extremes_of(layout, draw):
    return {name: draw(st.sampled_from(EXTREMES[ftype])) for name, ftype, _ in layout.fields
            if ftype in EXTREMES and not name.startswith("_")}


@settings(max_examples=int(os.environ.get("TE_RANGE_EXAMPLES", "60")), deadline=None)
@given(st.sampled_from(sorted(wire.BODY)), st.data())
def test_wire_when_every_field_at_an_extreme_then_frames_round_trip(msg_type, data):
    """The SDK's and the server's codec (protocol/wire.py): each message's fields, and its entries'."""
    fields = _extremes_of(wire.BODY[msg_type], data.draw)
    entries = None
    if msg_type in wire.ENTRY:
        entries = [_extremes_of(wire.ENTRY[msg_type], data.draw) for _ in range(data.draw(st.integers(0, 3)))]
        fields.pop("count", None)
    frame = wire.encode(msg_type, entries=entries, **fields)
    (t, body, ents), = wire.decode(frame)[0]
    assert t == msg_type
    assert {k: int(body[k]) for k in fields} == fields
    for e, want in zip(ents if ents is not None else [], entries or []):
        assert {k: int(e[k]) for k in want} == want


def test_new_order_when_id_is_the_reserved_maximum_then_rejected_and_nothing_consumed():
    eng = make_engine()
    ev = eng.new_order(1, U64, 1, Side.BUY, 1, price=10)
    assert (ev[0].kind, ev[0].reason) == (EventKind.REJECTED, Reject.CLIENT_ORDER_ID_RESERVED)
    assert int(eng.acct_arr["last_clid"][1]) == 0
    assert eng.new_order(1, U64 - 1, 1, Side.BUY, 1, price=10)[0].kind == EventKind.ACCEPTED
    ev = eng.new_order(1, U64, 1, Side.BUY, 1, price=10)       # still the reserved code, not a duplicate
    assert ev[0].reason == Reject.CLIENT_ORDER_ID_RESERVED
    assert int(eng.acct_arr["last_clid"][1]) == U64 - 1


def tool(*args):
    r = subprocess.run([sys.executable, "-m", "engine.cli", "journal", *map(str, args)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr + r.stdout
    return r.stdout


def test_server_when_orders_rest_with_ids_at_and_above_2_63_then_restart_replay_sdk_and_cli_work(server_factory):
    srv = server_factory(risk="enabled = false").start()
    a = Raw(srv.port)
    assert a.logon(1)[0] == MsgType.LOGON_ACCEPTED
    ids = [2**63, U64 - 1]
    for i, clid in enumerate(ids):
        a.order(clid, Side.SELL, 1, 100 + i)
        t, body, _ = a.until_any((MsgType.ACCEPTED, MsgType.REJECTED))
        assert t == MsgType.ACCEPTED and int(body["client_order_id"]) == clid
    a.order(U64, Side.SELL, 1, 105)
    t, body, _ = a.until_any((MsgType.ACCEPTED, MsgType.REJECTED))
    assert (t, int(body["reason"])) == (MsgType.REJECTED, Reject.CLIENT_ORDER_ID_RESERVED)
    srv.kill9()
    srv.start()                                  # recovery's state hash covers the orders: no OverflowError
    assert "recovered" in srv.output()
    b = Raw(srv.port)
    t, body, _ = b.logon(1, next_seq=10**9)
    assert t == MsgType.LOGON_ACCEPTED and int(body["next_client_order_id"]) == U64
    b.send(wire.encode(MsgType.ORDER_STATUS_REQUEST, request_id=7, client_order_id=2**63))
    t, body, ents = b.until(MsgType.ORDER_STATUS)
    assert [int(e["client_order_id"]) for e in ents] == [2**63]

    async def sdk():
        async with Client.connect("127.0.0.1", srv.port, account=1, secret=SECRETS[1]) as c:
            assert c.next_client_order_id == U64
            assert sorted(o.client_order_id for o in await c.open_orders()) == ids
            info = await c.order(client_order_id=U64 - 1)
            assert info is not None and info.client_order_id == U64 - 1
            r = await c.place("BTCUSDT", "buy", "0.001", price="1.00")       # the SDK's next id: the reserved one
            assert (r.kind, r.reason) == ("rejected", "CLIENT_ORDER_ID_RESERVED")
            c2 = await c.cancel(client_order_id=2**63)
            assert c2.kind == "cancelled" and c2.client_order_id == 2**63
    asyncio.run(sdk())
    env = dict(os.environ, TRADING_ENGINE_SECRET=SECRETS[1], PYTHONPATH=str(ROOT),
               TRADING_ENGINE_PORT=str(srv.port), TRADING_ENGINE_ACCOUNT="1")
    r = subprocess.run([sys.executable, "-m", "engine.cli", "orders"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and str(U64 - 1) in r.stdout, r.stderr
    assert srv.terminate() == 0
    journal = srv.dir / "journal"
    out = tool("replay", journal, "--config", srv.config, "--compare-snapshot")
    assert re.search(r"state_hash 0x[0-9a-f]+", out) and "EQUAL" in out and str(U64 - 1) in out
    rows = [json.loads(line) for line in tool("dump", journal, "--format", "jsonl").splitlines()]
    assert {r["client_order_id"] for r in rows if r["record"] == "command"} >= {2**63, U64 - 1, U64}


def test_logon_when_account_sent_the_maximum_client_order_id_then_still_answered(server_factory):
    srv = server_factory(risk="enabled = false").start()
    a = Raw(srv.port)
    a.logon(2)
    a.order(U64, Side.BUY, 1, 99)
    t, body, _ = a.until_any((MsgType.ACCEPTED, MsgType.REJECTED))
    assert (t, int(body["reason"])) == (MsgType.REJECTED, Reject.CLIENT_ORDER_ID_RESERVED)
    for _ in range(2):                           # a second logon, and one after a restart
        b = Raw(srv.port)
        f = b.logon(2, next_seq=10**9)
        assert f is not None and f[0] == MsgType.LOGON_ACCEPTED, "logon dropped unanswered"
        assert int(f[1]["next_client_order_id"]) == 1           # nothing was consumed
        srv.kill9()
        srv.start()
