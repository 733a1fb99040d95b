"""The client's NEW_ORDER taken whole in C (engine/routing/decide.pyx Split.new_orders, router.py
Router.new_orders and settle) against the Python path it replaces (Router.client_order: decide_new,
_check_new, progress): over seeded random reads of orders (valid, rejected, unplaceable, FOK, market,
sells, duplicates, a cancel between them), the same journal records, the same frames to the venues,
the same reports to the client in the same order, and the same state, in process with a real journal.
"""
from __future__ import annotations

import asyncio
import logging
import random
from decimal import Decimal

import numpy as np

from engine.config import SymbolConfig
from engine.journal import Journal
from engine.routing import codec
from engine.routing.config import RouterSection, VenueConfig
from engine.routing.router import Router
from protocol import wire
from protocol.codes import OrderType, Side, TimeInForce
from protocol.records import ROUTE_INPUT, ROUTE_OUTPUT, RouteOutput
from protocol.wire import MsgType

SYMBOLS = {3: SymbolConfig(id=3, name="S3", tick_size=5, lot_size=10, max_qty=10_000, max_price=50_000),
           7: SymbolConfig(id=7, name="S7"),
           9: SymbolConfig(id=9, name="S9")}          # no venue lists S9: nothing can be placed there
TS_AT = wire.HEADER.size + wire.EXEC_REPORT.offsets["ts_ns"]      # a report frame's time (differs by run)


class Venue:
    """An adapter that takes every frame and keeps it (no venue process: nothing answers)."""
    up = True
    raw_frames = True

    def __init__(self):
        self.venue_symbol = {3: 103, 7: 107}
        self.got = bytearray()

    def raw(self, data):
        self.got += data
        return True


class Session:
    def __init__(self):
        self.got = []

    def write(self, frame):
        self.got.append(bytes(frame[:TS_AT]) + bytes(8) + bytes(frame[TS_AT + 8:]))


def router(path) -> tuple[Router, list[Venue], Session]:
    vcs = [VenueConfig(name=n, port=1, account=1, demo_secret="x" * 16, taker_fee=Decimal(f))
           for n, f in (("A", "0"), ("B", "0.0005"), ("C", "0.0010"))]
    r = Router(RouterSection(), vcs, SYMBOLS, Journal(str(path), "async", layouts=(ROUTE_INPUT, ROUTE_OUTPUT)))
    venues = [Venue() for _ in vcs]
    for i, v in enumerate(venues, 1):
        r.venues[i] = v
    r.rank = {1: 0, 2: 1, 3: 2}
    for i in (1, 2, 3):
        r.sync_listing(i)
        for sym in (3, 7):
            r.book.update(sym, i, [(10_000 - 5 * k - i, 20, 1) for k in range(4)],
                          [(10_005 + 5 * k + i, 20, 1) for k in range(4)])
    sess = Session()
    r.sessions[1] = {sess}
    return r, venues, sess


def random_frame(rng, clid) -> bytes:
    sym = rng.choice([3, 3, 3, 7, 7, 9, 4])
    side = rng.choice([Side.BUY, Side.SELL, Side.BUY, Side.SELL, 3])
    ot = rng.choice([OrderType.LIMIT] * 6 + [OrderType.MARKET, OrderType.STOP])
    tif = rng.choice([TimeInForce.IOC, TimeInForce.IOC, TimeInForce.GTC, TimeInForce.DAY, TimeInForce.FOK,
                      TimeInForce.FOK, TimeInForce.GTD])
    qty = rng.choice([10, 20, 30, 50, 70, 100, 200, 0, 15])
    price = 0 if ot == OrderType.MARKET and rng.random() < 0.9 else \
        rng.choice([9_990, 10_000, 10_010, 10_020, 10_040, 10_003, 0, 60_000])
    if side == Side.SELL and ot == OrderType.LIMIT:
        price -= 30
    return codec.NEW_ORDER_FRAME.pack(clid, sym, side, ot, tif, price, qty)


def reads(seed):
    """Client reads: lists of whole frames (each a NEW_ORDER; sometimes a duplicate client order id,
    sometimes a CANCEL of an earlier parent in between)."""
    rng = random.Random(seed)
    clid, out = 0, []
    for _ in range(60):
        read = []
        for _ in range(rng.randint(1, 4)):
            if rng.random() < 0.1 and clid:
                read.append(codec.CANCEL_FRAME.pack(0, rng.randint(1, clid)))
                continue
            clid += 0 if rng.random() < 0.05 and clid else 1
            read.append(random_frame(rng, clid))
        out.append(read)
    return out


def journal_records(j):
    got = []
    for cmds, events in j.batches():
        cmds = cmds.copy()
        cmds["ts_ns"] = 0
        raw = bytearray(events.tobytes())
        for i in np.flatnonzero(events["kind"] == RouteOutput.CLIENT_REPORT):
            at = i * ROUTE_OUTPUT.size + ROUTE_OUTPUT.offsets["body"] + wire.EXEC_REPORT.offsets["ts_ns"]
            raw[at:at + 8] = bytes(8)
        got.append((cmds.tobytes(), bytes(raw)))
    return got


def state(r):
    s = r.state
    parents = [(p.id, p.account, p.clid, p.symbol, p.side, p.order_type, p.tif, p.price, p.qty, p.filled, p.done,
                p.waves, p.last_wave, p.cancel_requested, [(c.venue, c.clid) for c in p.children])
               for p in s.parents.values()]
    children = [(k, c.parent, c.price, c.qty, c.tif, c.filled, c.leaves, c.state, c.unsent)
                for k, c in s.children.items()]
    return (parents, children, dict(s.last_clid), s.next_order_id, dict(s.report_seq), s.last_seq,
            list(s.next_child_clid), {a: len(x) for a, x in s.reports.items()})


def run(r, rds, fast):
    async def go():
        r.loop = asyncio.get_running_loop()
        for read in rds:
            if fast:
                buf, pos = bytearray(b"".join(read)), 0
                while pos < len(buf):
                    pos = r.new_orders(1, buf, pos, 1)
                    if pos < len(buf):            # what the C path left: the Python path, as the session does
                        if r.split.n_fast:
                            r.settle()
                        n = buf[pos]
                        r.client_order(1, buf[pos + 2], bytes(buf[pos + 8:pos + n]), 1)
                        pos += n
            else:
                for f in read:
                    r.client_order(1, f[2], f[8:], 1)
            r.flush()
    asyncio.run(go())


class Audit(logging.Handler):
    """The router's audit lines (engine/ROUTING.md "Venue score, monitoring, audit"), their fields."""

    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append((record.getMessage(), {k: v for k, v in vars(record).items() if k in AUDIT_FIELDS}))


AUDIT_FIELDS = {"event", "parent", "account", "symbol", "side", "qty", "limit", "wave", "unallocated", "children",
                "reason", "venue", "price"}


def test_new_orders_in_c_when_random_reads_then_same_records_frames_reports_audit_and_state_as_python(tmp_path):
    log = logging.getLogger("trading-engine.route")
    for seed in range(10):
        rds = reads(seed)
        got = {}
        for fast in (False, True):
            r, venues, sess = router(tmp_path / f"{seed}-{fast}")
            audit, level = Audit(), log.level
            log.addHandler(audit)
            log.setLevel(logging.INFO)
            try:
                run(r, rds, fast)
            finally:
                log.removeHandler(audit)
                log.setLevel(level)
            got[fast] = (journal_records(r.journal), [bytes(v.got) for v in venues], sess.got, audit.lines, state(r))
            r.journal.close()
        slow, fast = got[False], got[True]
        assert len(slow[0]) == len(rds) and any(m == "route" for m, _ in slow[3])
        for name, a, b in zip(("records", "venue frames", "reports", "audit", "state"), slow, fast):
            assert a == b, (seed, name)


def test_new_orders_in_c_when_taken_then_replay_gives_the_same_state(tmp_path):
    r, _, _ = router(tmp_path / "j")
    rds = reads(99)
    run(r, rds, True)
    want = state(r)
    assert r.split.n_fast == 0 and want[1], "orders were taken and settled"
    r.journal.close()
    again, _, _ = router(tmp_path / "j")
    again.recover()
    assert state(again) == want
    again.journal.close()


def test_new_orders_when_not_all_taken_then_stops_at_the_first_left_to_python(tmp_path):
    r, venues, _ = router(tmp_path / "j")
    ok = codec.NEW_ORDER_FRAME.pack(1, 3, Side.BUY, OrderType.LIMIT, TimeInForce.IOC, 10_010, 30)
    bad_lot = codec.NEW_ORDER_FRAME.pack(2, 3, Side.BUY, OrderType.LIMIT, TimeInForce.IOC, 10_010, 15)
    buf = bytearray(ok + ok[:40])                 # a whole order, then part of one
    assert r.new_orders(1, buf, 0) == len(ok) and r.split.n_fast == 1
    assert r.new_orders(1, bytearray(ok), 0) == 0, "a client order id not above the last (settled first)"
    assert r.split.n_fast == 0 and r.state.last_clid[1] == 1
    assert r.new_orders(1, bytearray(bad_lot + ok), 0) == 0
    r.flush()
    assert np.count_nonzero([len(v.got) for v in venues]) == 2      # 30 lots: the best level of A and of B
    # a FOK the shown books cannot fill within its limit (60 lots at or below 10,010): left to Python
    fok = codec.NEW_ORDER_FRAME.pack(2, 3, Side.BUY, OrderType.LIMIT, TimeInForce.FOK, 10_010, 70)
    assert r.new_orders(1, bytearray(fok), 0) == 0
    fok = codec.NEW_ORDER_FRAME.pack(2, 3, Side.BUY, OrderType.LIMIT, TimeInForce.FOK, 10_010, 60)
    assert r.new_orders(1, bytearray(fok), 0) == len(fok)
    r.flush()
    p = r.state.parents[2]
    assert [(c.venue, c.qty, c.tif) for c in p.children] == [(v, 20, TimeInForce.FOK) for v in (1, 2, 3)]
    r.journal.close()


def test_journal_when_killed_before_the_deferred_tail_write_then_reopens_with_every_record(tmp_path):
    """The router writes the journal's tail after the children (Journal.append_records tail=False, then
    write_tail): a kill in between leaves the journal ahead of its tail, which must open whole."""
    j = Journal(str(tmp_path / "j"), "async", layouts=(ROUTE_INPUT, ROUTE_OUTPUT))
    rec = bytes(ROUTE_INPUT.size)
    for seq in (1, 2, 3):
        j.append_packed(seq, seq, 1, 0, rec[:8] + seq.to_bytes(8, "little") + rec[16:], tail=False)
        if seq == 1:
            j.write_tail()
    assert j.read_tail()[0] == 1
    j.env.close()                 # no tail write, no sync: what a kill -9 leaves (the page cache holds the rest)
    j.release()
    again = Journal(str(tmp_path / "j"), "async", layouts=(ROUTE_INPUT, ROUTE_OUTPUT))
    assert again.last_seq == 3 and [int(c["seq"][0]) for c, _ in again.batches()] == [1, 2, 3]
    assert again.read_tail()[0] == 3
    again.close()
