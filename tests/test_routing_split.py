"""The router's split in C (engine/routing/decide.pyx) against its slow, obviously correct
reference (engine/routing/book.py allocate, itself checked against a brute force in
tests/test_routing.py): the same children, quantities and worst prices over seeded random books,
fees, venue ranks and limits; and the child frames and journal records it packs, read back with
the protocol's own decoders."""
from __future__ import annotations

import random

import numpy as np

from engine.routing import book as bookmod
from engine.routing.decide import Split
from protocol import records, wire
from protocol.codes import OrderType, Side, TimeInForce
from protocol.records import RouteOutput
from protocol.wire import MsgType


def random_market(rng, n_venues, n_levels):
    books, taker = {}, {}
    for v in range(1, n_venues + 1):
        taker[v] = rng.choice([-2, 0, 0, 1, 5, 10, 25])
        mid = 10_000 + rng.randint(-20, 20)
        asks, bids = [], []
        price = mid + 1
        for _ in range(rng.randint(0, n_levels)):         # best first, strictly worse each level
            asks.append((price, rng.randint(1, 9), 1))
            price += rng.randint(1, 4)
        price = mid - 1
        for _ in range(rng.randint(0, n_levels)):
            bids.append((price, rng.randint(1, 9), 1))
            price -= rng.randint(1, 4)
        books[v] = (bids, asks)
    return books, taker


def test_split_when_random_books_then_equals_the_reference_allocation():
    rng = random.Random(16)
    for trial in range(3000):
        n_venues, n_levels = rng.randint(1, 5), rng.randint(1, 6)
        books, taker = random_market(rng, n_venues, n_levels)
        up = rng.sample(range(1, n_venues + 1), rng.randint(0, n_venues))
        rank = {v: i for i, v in enumerate(up)}
        listed = {v for v in up if rng.random() < 0.9}
        sp = Split(n_venues, n_levels, 1, taker, np.ones(n_venues + 1, dtype=np.uint64))
        sp.set_rank(rank)
        for v in range(1, n_venues + 1):
            sp.set_listing(v, {0: 100 + v} if v in listed else {})
            sp.update(0, v, *books[v])
        side = rng.choice([Side.BUY, Side.SELL])
        qty = rng.randint(1, 60)
        limit = None if rng.random() < 0.3 else 10_000 + rng.randint(-25, 25)
        want, rest = bookmod.allocate(books, side, qty, limit, taker, {v: r for v, r in rank.items() if v in listed})
        got = sp.route(0, side, qty, 0 if limit is None else limit, limit is not None)
        assert (got, sp.left) == (want, rest), (trial, books, taker, rank, listed, side, qty, limit)


def test_children_when_split_then_frames_and_records_match_the_protocol():
    taker = {1: 0, 2: 5, 3: 10}
    clids = np.array([0, 7, 1, 40], dtype=np.uint64)
    sp = Split(3, 4, 2, taker, clids)
    sp.set_rank({1: 0, 2: 1, 3: 2})
    for v in (1, 2, 3):
        sp.set_listing(v, {1: 10 + v})
        sp.update(1, v, [], [(100_000 - 10 * v, 5, 1), (100_100, 5, 1)])
    sp.add_input(records.RouteInput.CLIENT_ORDER, MsgType.NEW_ORDER, 0, 9, 5, 123, b"\x01" * 64)
    rows = sp.children(1, Side.BUY, 12, 100_050, True, 9, 5, 77, 0)
    want, _ = bookmod.allocate({v: ([], [(100_000 - 10 * v, 5, 1), (100_100, 5, 1)]) for v in (1, 2, 3)}, Side.BUY,
                               12, 100_050, taker, {1: 0, 2: 1, 3: 2})
    assert [(v, q, p) for v, _, q, p in rows] == want
    rec, frames, meta = sp.take()
    cmds = np.frombuffer(rec[:records.ROUTE_INPUT.size], dtype=records.ROUTE_INPUT.dtype)
    outs = np.frombuffer(rec[records.ROUTE_INPUT.size:], dtype=records.ROUTE_OUTPUT.dtype)
    assert int(cmds["seq"][0]) == 5 and int(cmds["account"][0]) == 9 and bytes(cmds["body"][0])[:64] == b"\x01" * 64
    assert len(outs) == len(rows) == len(meta)
    for (venue, clid, qty, price), out, m in zip(rows, outs, meta):
        assert clid == clids[venue]
        assert (int(out["kind"]), int(out["msg_type"]), int(out["venue"]), int(out["parent"]), int(out["child"])) == \
            (RouteOutput.CHILD_ORDER, MsgType.NEW_ORDER, venue, 77, clid)
        frame = frames[venue][m[4]:m[4] + wire.frame_size(MsgType.NEW_ORDER)]
        (t, o), = [(t, o) for t, o, _ in wire.decode(frame)[0]]
        assert t == MsgType.NEW_ORDER
        assert (int(o["client_order_id"]), int(o["symbol"]), int(o["side"]), int(o["order_type"]), int(o["tif"]),
                int(o["price"]), int(o["qty"])) == (clid, 10 + venue, Side.BUY, OrderType.LIMIT, TimeInForce.IOC,
                                                    price, qty)
        assert bytes(out["body"])[:64] == frame[8:]
        assert m[:4] == [venue, clid, MsgType.NEW_ORDER, qty]
    assert sum(r[2] for r in rows) == 12 and sp.left == 0
    assert sp.take() == (b"", [b""] * 4, [])


def test_batch_when_many_records_then_buffers_grow_and_keep_every_byte():
    sp = Split(2, 2, 1, {1: 0, 2: 0}, np.ones(3, dtype=np.uint64))
    frame = wire.frame_size(MsgType.CANCEL)
    for i in range(5000):
        sp.add_input(records.RouteInput.CLIENT_ORDER, MsgType.CANCEL, 0, 1, i + 1, i, i.to_bytes(16, "little"))
        sp.add_output(RouteOutput.CHILD_ORDER, MsgType.CANCEL, 1 + i % 2, 1, i + 1, i, i, i.to_bytes(16, "little"))
        sp.add_frame(1 + i % 2, i, bytes([frame, 0, MsgType.CANCEL, wire.SCHEMA_VERSION]) + bytes(4) +
                     i.to_bytes(16, "little"))
    rec, frames, meta = sp.take()
    cmds = np.frombuffer(rec[:5000 * records.ROUTE_INPUT.size], dtype=records.ROUTE_INPUT.dtype)
    outs = np.frombuffer(rec[5000 * records.ROUTE_INPUT.size:], dtype=records.ROUTE_OUTPUT.dtype)
    assert list(cmds["seq"]) == list(range(1, 5001)) and list(outs["parent"]) == list(range(5000))
    assert len(frames[1]) == len(frames[2]) == 2500 * frame and len(meta) == 5000
    assert [int.from_bytes(frames[2][m[4] + 8:m[4] + 24], "little") for m in meta if m[0] == 2] == \
        list(range(1, 5000, 2))
