"""Real order flow: a day of Nasdaq AMZN (LOBSTER sample) replayed through the core.

The strict replay of ../shared/data/lobster/README.md: after the last event of
every reference row the top 5 levels must equal the published book, and every
execution must fill exactly its size at its price against the named order
(except the listed queue-position disagreements, which amend the named order).
"""
import csv
import gzip
from pathlib import Path

import numpy as np
import pytest

from engine.core import Engine
from protocol.codes import EventKind, SelfTradePrevention, Side, TimeInForce
from tests.server_proc import shared_dir

DATA = shared_dir() / "data" / "lobster"
MESSAGES = DATA / "AMZN_5_augmented.csv.gz"
BOOK = DATA / "AMZN_2012-06-21_34200000_57600000_orderbook_5.csv.gz"
DISAGREE = DATA / "AMZN_5_ioc_disagreements.csv"
EMPTY = 9999999999

pytestmark = pytest.mark.skipif(not MESSAGES.exists(), reason=f"LOBSTER sample not found at {DATA}")


def expected_top5(row):
    asks, bids = [], []
    for k in range(5):
        ap, asz, bp, bsz = (int(x) for x in row[4 * k:4 * k + 4])
        if asz > 0 and abs(ap) < EMPTY:
            asks.append((ap, asz))
        if bsz > 0 and abs(bp) < EMPTY:
            bids.append((bp, bsz))
    return bids, asks


def test_lobster_day_when_replayed_strictly_then_book_and_executions_match():
    with gzip.open(BOOK, "rt") as f:
        book = [row for row in csv.reader(f)]
    with open(DISAGREE) as f:
        disagree = {(int(r["ref_row"]), int(r["named_id"])) for r in csv.DictReader(f)}
    e = Engine(max_orders=1 << 17, max_symbols=2, max_levels=8192)
    e.add_symbol(1)                                   # tick 1 price unit ($0.0001), lot 1 share
    e.add_account(1)                                  # the resting liquidity
    e.add_account(2)                                  # the takers
    order_of = {}
    clid = {1: 0, 2: 0}
    rows_checked = executions = type4 = 0

    def check(ref):
        nonlocal rows_checked
        bids, asks = e.depth(1, 5)
        assert ([(p, q) for p, q, _ in bids], [(p, q) for p, q, _ in asks]) == expected_top5(book[ref]), \
            f"book differs after ref_row {ref}"
        rows_checked += 1

    prev = None
    with gzip.open(MESSAGES, "rt") as f:
        for r in csv.DictReader(f):
            ref, typ, lid = int(r["ref_row"]), int(r["type"]), int(r["order_id"])
            size, price = int(r["size"]), int(r["price"])
            side = Side.BUY if r["direction"] == "1" else Side.SELL
            if prev is not None and ref != prev:
                check(prev)
            prev = ref
            type4 += typ == 4
            if typ == 1:
                clid[1] += 1
                evs = e.new_order(1, clid[1], 1, side, size, price=price, stp=SelfTradePrevention.NONE)
                assert [ev.kind for ev in evs] == [EventKind.ACCEPTED], f"add at ref_row {ref} traded: {evs}"
                order_of[lid] = evs[0].order_id
            elif typ in (2, 3) or (typ == 4 and (ref, lid) in disagree):
                o = e.order(order_of[lid])
                if typ == 3 or o["leaves"] <= size:
                    e.cancel(1, order_id=order_of[lid])
                else:
                    e.amend(1, order_id=order_of[lid], qty=o["leaves"] - size)
            elif typ == 4:
                clid[2] += 1
                evs = e.new_order(2, clid[2], 1, Side.SELL if side == Side.BUY else Side.BUY, size, price=price,
                                  tif=TimeInForce.IOC, stp=SelfTradePrevention.NONE)
                got = [(ev.other_order_id, ev.price, ev.qty) for ev in evs if ev.kind == EventKind.FILL]
                assert got == [(order_of[lid], price, size)], f"execution at ref_row {ref}: {evs}"
                executions += 1
    check(prev)
    e.validate()
    assert rows_checked == len(book)
    assert executions == type4 - len(disagree) > 0      # every other execution was checked
