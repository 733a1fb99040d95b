"""Slot reuse and capacity: millions of add/cancel cycles leak nothing; full tables reject."""
import numpy as np

from engine.core import Engine
from protocol.codes import CommandKind, EventKind, OrderType, Reject, Side, TimeInForce
from protocol.records import COMMAND


def test_slots_when_millions_of_add_cancel_cycles_then_no_leak():
    e = Engine(max_orders=1024, max_symbols=2, max_levels=64, max_accounts=4)
    e.add_symbol(1)
    e.add_account(1)
    n = 1_000_000                                       # 1M adds + 1M cancels
    cmds = np.zeros(2 * n, dtype=COMMAND.dtype)
    adds, cancels = cmds[0::2], cmds[1::2]
    ids = np.arange(1, n + 1, dtype=np.uint64)
    adds["kind"] = CommandKind.NEW_ORDER
    adds["account"] = 1
    adds["client_order_id"] = ids
    adds["symbol"] = 1
    adds["side"] = np.where(ids % 2 == 0, Side.BUY, Side.SELL)
    adds["order_type"] = OrderType.LIMIT
    adds["tif"] = TimeInForce.GTC
    adds["stp"] = 1
    adds["qty"] = 10
    adds["price"] = np.where(ids % 2 == 0, 100 - (ids % 40).astype(np.int64), 101 + (ids % 40).astype(np.int64))
    cancels["kind"] = CommandKind.CANCEL
    cancels["account"] = 1
    # cancel the order added 500 commands earlier (so ~500 stay live), by client order id
    cancels["client_order_id"] = np.maximum(ids.astype(np.int64) - 500, 0).astype(np.uint64)
    events = e.process(cmds)
    kinds = np.bincount(events["kind"], minlength=16)
    assert kinds[EventKind.ACCEPTED] == n
    assert kinds[EventKind.CANCELLED] == n - 500
    assert kinds[EventKind.REJECTED] == 500             # the first 500 cancels name no order
    assert e.live_orders == 500
    e.validate()                                        # free + used == capacity, tables hold live orders only
    e.mass_cancel(1)
    assert e.live_orders == 0
    e.validate()


def test_tables_when_capacity_reached_then_rejects_and_state_valid():
    e = Engine(max_orders=64, max_symbols=2, max_levels=8, max_accounts=4)
    e.add_symbol(1)
    e.add_account(1)
    cl = 0
    rejects = []
    for i in range(200):
        cl += 1
        evs = e.new_order(1, cl, 1, Side.SELL, 1, price=100 + i % 12)
        rejects += [ev.reason for ev in evs if ev.kind == EventKind.REJECTED]
    assert set(rejects) == {Reject.LEVEL_CAPACITY_EXHAUSTED, Reject.ORDER_CAPACITY_EXHAUSTED}
    assert e.live_orders == 64
    e.validate()
