"""Slot reuse and capacity: millions of add/cancel cycles leak nothing; full tables reject."""
import numpy as np

from engine.core import Engine
from protocol.codes import CancelReason, CommandKind, EventKind, OrderType, Reject, Side, TimeInForce
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


def _pool_engine(max_level_slots, max_levels=100, max_orders=64):
    e = Engine(max_orders=max_orders, max_symbols=3, max_levels=max_levels, max_accounts=4,
               max_level_slots=max_level_slots)
    e.add_symbol(1)
    e.add_symbol(2)
    e.add_account(1)
    e.add_account(2)
    return e


def test_level_pool_when_exhausted_then_new_prices_rejected_and_nothing_overwritten():
    e = _pool_engine(max_level_slots=6)
    cl = iter(range(1, 1000))
    for sym, side, price in ((1, Side.BUY, 90), (1, Side.BUY, 91), (1, Side.SELL, 110), (2, Side.BUY, 50),
                             (2, Side.SELL, 60), (2, Side.SELL, 61)):
        assert e.new_order(1, next(cl), sym, side, 5, price=price)[0].kind == EventKind.ACCEPTED
    before = [e.depth(1, 100), e.depth(2, 100)]
    # every ladder has room for prices (max_levels 100), but the shared pool of 6 is used up
    for sym, side, price in ((1, Side.BUY, 89), (2, Side.SELL, 62), (1, Side.SELL, 111)):
        (ev,) = e.new_order(1, next(cl), sym, side, 5, price=price)
        assert (ev.kind, ev.reason) == (EventKind.REJECTED, Reject.LEVEL_CAPACITY_EXHAUSTED)
    (ev,) = e.new_order(1, next(cl), 1, Side.BUY, 5, stop_price=120, order_type=OrderType.STOP)
    assert (ev.kind, ev.reason) == (EventKind.REJECTED, Reject.LEVEL_CAPACITY_EXHAUSTED)
    assert [e.depth(1, 100), e.depth(2, 100)] == before
    # a price already on its ladder needs no level; an IOC rests nowhere
    assert e.new_order(2, next(cl), 1, Side.BUY, 5, price=91)[0].kind == EventKind.ACCEPTED
    assert e.new_order(2, next(cl), 2, Side.BUY, 5, price=40, tif=TimeInForce.IOC)[-1].reason == \
        int(CancelReason.IOC_REMAINDER)
    # an amend to a new price is judged after the order left its level: alone there, it may move
    oid = e.new_order(1, next(cl), 2, Side.BUY, 1, price=50)[0].order_id      # 50 now holds 2 orders
    (ev,) = e.amend(1, order_id=oid, qty=1, price=49)
    assert (ev.kind, ev.reason) == (EventKind.REJECTED, Reject.LEVEL_CAPACITY_EXHAUSTED)
    only = [o for o in e.open_orders(1) if o["price"] == 110][0]["order_id"]
    assert e.amend(1, order_id=only, qty=5, price=112)[0].kind == EventKind.REPLACED
    # a level given back makes room again
    e.cancel(1, order_id=[o for o in e.open_orders(1) if o["price"] == 90][0]["order_id"])
    assert e.new_order(1, next(cl), 1, Side.SELL, 5, price=130)[0].kind == EventKind.ACCEPTED
    e.validate()


def test_level_pool_when_triggered_stop_limit_cannot_rest_then_remainder_cancelled():
    e = _pool_engine(max_level_slots=4)
    e.new_order(1, 1, 1, Side.SELL, 5, price=100)
    e.new_order(1, 2, 1, Side.SELL, 5, price=100)                                  # level 1: ask 100
    for cl, limit in ((3, 99), (4, 98)):                                           # level 2: buy stops at 100
        (ev,) = e.new_order(1, cl, 1, Side.BUY, 5, price=limit, order_type=OrderType.STOP_LIMIT, stop_price=100)
        assert ev.kind == EventKind.ACCEPTED
    e.new_order(1, 5, 2, Side.BUY, 5, price=50)                                    # levels 3 and 4
    e.new_order(1, 6, 2, Side.SELL, 5, price=60)
    assert e.new_order(1, 7, 2, Side.SELL, 5, price=61)[0].reason == Reject.LEVEL_CAPACITY_EXHAUSTED
    # a print at 100 (the ask level stays: one order left) triggers both stops; their level goes
    # back, so the first rests at 99; the pool is full again for the second at 98
    evs = e.new_order(2, 1, 1, Side.BUY, 5, price=100, tif=TimeInForce.IOC)
    assert [(ev.kind, ev.reason) for ev in evs] == [
        (EventKind.ACCEPTED, 0), (EventKind.FILL, 0),
        (EventKind.TRIGGERED, 0), (EventKind.TRIGGERED, 0),
        (EventKind.CANCELLED, CancelReason.NO_LEVEL_CAPACITY)]
    assert evs[-1].price == 98 and evs[-1].qty == 5
    assert e.depth(1, 10) == ([(99, 5, 1)], [(100, 5, 1)])
    e.validate()


def test_ladders_when_grown_and_shrunk_in_random_order_then_sorted_and_snapshot_equal():
    rng = np.random.default_rng(5)
    e = _pool_engine(max_level_slots=0, max_levels=3000, max_orders=6000)
    prices = rng.permutation(np.arange(1000, 4000))[:2500]
    cl = 0
    for p in prices:                       # bids below 5000, asks above: chunks 8 .. 4096
        cl += 1
        assert e.new_order(1, cl, 1, Side.BUY, 1, price=int(p))[0].kind == EventKind.ACCEPTED
        cl += 1
        assert e.new_order(2, cl, 1, Side.SELL, 1, price=int(p) + 5000)[0].kind == EventKind.ACCEPTED
    pool = e.ladder_pool()
    assert pool["levels"] == 5000 and pool["held"] == 2 * 4096
    bids, asks = e.depth(1, 5000)
    assert [b[0] for b in bids] == sorted(prices.tolist(), reverse=True)
    assert [a[0] for a in asks] == sorted((prices + 5000).tolist())
    for a in (1, 2):                       # cancel a random two thirds
        for o in e.open_orders(a):
            if rng.random() < 2 / 3:
                e.cancel(a, order_id=o["order_id"])
    e.validate()
    left = sorted(o["price"] for o in e.open_orders(1))
    assert [b[0] for b in e.depth(1, 5000)[0]] == left[::-1]
    b = _pool_engine(max_level_slots=0, max_levels=3000, max_orders=6000)
    b.import_state(e.export_state())
    b.validate()
    assert b.state_hash() == e.state_hash() and b.depth(1, 5000) == e.depth(1, 5000)
    assert b.ladder_pool()["held"] < e.ladder_pool()["held"]        # restored ladders are packed
    # the same commands give the same events on both (where chunks lie is not state)
    for eng in (e, b):
        eng.new_order(2, cl + 1, 1, Side.BUY, 10_000, price=9000, tif=TimeInForce.IOC)
    assert b.state_hash() == e.state_hash()
    b.validate()


def test_fresh_engine_when_built_then_touches_no_slot_and_holds_no_ladder_memory():
    e = Engine(max_orders=1 << 20, max_symbols=10_000, max_levels=4096, max_accounts=4)
    assert e.ladder_pool() == dict(segments=0, entries=0, held=0, levels=0)
    assert e.slot_hwm == e.level_hwm == 0
    # 10,000 symbols no longer take 4 x 4096 ladder entries each up front
    assert e.memory_bytes() < 400 << 20


def _gtc_limits(recs, account, clids, side, price):
    """Fill COMMAND records as GTC limit orders of qty 1 on symbol 1."""
    recs["kind"] = CommandKind.NEW_ORDER
    recs["account"] = account
    recs["client_order_id"] = clids
    recs["symbol"] = 1
    recs["side"] = side
    recs["order_type"] = OrderType.LIMIT
    recs["tif"] = TimeInForce.GTC
    recs["qty"] = 1
    recs["price"] = price


def test_order_id_table_when_ids_wrap_onto_long_resting_orders_then_probe_runs_stay_short():
    # Order ids one table size apart used to share a home (identity hash): once the ids wrapped
    # onto a dense block of long-resting orders, every insert shifted the whole block's run, and
    # the displacements grew with the live orders inserted in it (80x slower, perf/RESULTS.md).
    e = Engine(max_orders=4096, max_symbols=2, max_levels=4096, max_accounts=4)
    e.add_symbol(1)
    e.add_account(1)
    e.add_account(2)
    for i in range(3000):                                   # ids 1..3000 rest all along
        e.new_order(1, i + 1, 1, Side.BUY, 1, price=100 + i % 50)
    n = 40_000                                              # then add/cancel, 500 live at a time
    cmds = np.zeros(2 * n, dtype=COMMAND.dtype)
    adds, cancels = cmds[0::2], cmds[1::2]
    ids = np.arange(1, n + 1, dtype=np.uint64)
    _gtc_limits(adds, 2, ids, Side.SELL, 1000 + (ids % 30).astype(np.int64))
    cancels["kind"] = CommandKind.CANCEL
    cancels["account"] = 2
    cancels["client_order_id"] = np.maximum(ids.astype(np.int64) - 500, 0).astype(np.uint64)
    worst = 0
    for k in range(0, 2 * n, 2000):
        e.process(cmds[k:k + 2000])
        worst = max(worst, int(e.oid_table_arr["disp"].max()))
    assert e.next_order_id > 2 * len(e.oid_table_arr)      # the ids wrapped around the table twice
    assert e.live_orders == 3500
    assert worst <= 80, worst
    # the long-resting orders left the direct order-id map for the spill table as the ids came round
    assert int((e.oid_table_arr["ref"] != 0).sum()) == 3000
    assert all(e.order(i + 1)["client_order_id"] == i + 1 for i in range(0, 3000, 7))
    e.validate()


def test_order_id_map_when_ids_come_round_onto_live_orders_then_they_spill_never_overwritten():
    # The direct order-id map holds order_id & mask -> slot. Every live order here rests all along
    # while the ids come round the map many times: each time an id's entry is held by a live older
    # order, that order moves to the spill table (an overwrite would lose it: cancel by order id
    # would answer UNKNOWN_ORDER, the client id table would outlive it).
    e = Engine(max_orders=16, max_symbols=2, max_levels=64, max_accounts=4)
    e.add_symbol(1)
    e.add_account(1)
    size = len(e.oid_direct_arr)
    for i in range(15):
        e.new_order(1, i + 1, 1, Side.BUY, 1, price=100 - i)          # ids 1..15 rest all along
    cl = 15
    for _ in range(5 * size):                                          # one slot left: add, cancel, ...
        cl += 1
        (acc,) = e.new_order(1, cl, 1, Side.SELL, 1, price=200)
        assert acc.kind == EventKind.ACCEPTED
        (cxl,) = e.cancel(1, order_id=acc.order_id)
        assert cxl.kind == EventKind.CANCELLED and cxl.order_id == acc.order_id
    assert e.next_order_id > 5 * size
    e.validate()
    for i in range(15):                                                # every old order still found
        assert e.order(i + 1)["client_order_id"] == i + 1
        (cxl,) = e.cancel(1, order_id=i + 1)
        assert cxl.kind == EventKind.CANCELLED and cxl.order_id == i + 1
    assert e.live_orders == 0
    e.validate()


def _mix64(x):
    # engine/core.pyx mix64 (splitmix64's finalizer) over a uint64 array
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xbf58476d1ce4e5b9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94d049bb133111eb)
        return x ^ (x >> np.uint64(31))


def _clid_homes(account, clids, mask):
    # engine/core.pyx clid_hash & table_mask
    key = _mix64(np.array([account + 0x9e3779b97f4a7c15], dtype=np.uint64))[0]
    h = (_mix64((clids >> np.uint64(4)) ^ key) << np.uint64(4)) | (clids & np.uint64(15))
    return h & np.uint64(mask)


def test_client_id_table_when_chosen_ids_build_a_run_near_the_displacement_limit_then_rejected_never_wrapped():
    # A client who picks client ids whose blocks of 16 all home within 16 lines of the table builds one
    # Robin Hood run whose entries' displacements (uint16) would pass 65,535 before the order slots run
    # out: from DISP_MAX on, its new orders are rejected ORDER_CAPACITY_EXHAUSTED (a wrapped displacement
    # would lose orders from the table: lookups stop early, validate() finds entries off their home).
    e = Engine(max_orders=70_000, max_symbols=2, max_levels=16, max_accounts=4)
    e.add_symbol(1)
    e.add_account(1)
    e.add_account(2)
    mask = len(e.clid_table_arr) - 1
    blocks = np.arange(1, 8_000_000, dtype=np.uint64)
    homes = _clid_homes(1, blocks * np.uint64(16), mask)
    blocks = blocks[homes < 16 * 16][:4_300]                 # 68,800 client ids homed in 256 entries
    assert len(blocks) == 4_300
    clids = (blocks[:, None] * np.uint64(16) + np.arange(16, dtype=np.uint64)).ravel()
    cmds = np.zeros(len(clids), dtype=COMMAND.dtype)
    _gtc_limits(cmds, 1, clids, Side.BUY, 100)
    events = e.process(cmds)
    rejected = events[events["kind"] == EventKind.REJECTED]
    assert len(rejected) > 0 and set(rejected["reason"]) == {Reject.ORDER_CAPACITY_EXHAUSTED}
    assert e.live_orders == len(clids) - len(rejected) < e.max_orders   # the slots did not run out
    assert int(e.clid_table_arr["disp"].max()) >= 0xFFFD                 # the run reached the limit
    assert int(e.clid_table_arr["disp"].max()) <= 0xFFFE
    e.validate()                                            # every entry at its displacement from home
    # the longest-displaced order is still found and cancelled by its client id
    far = e.orders_arr[int(e.clid_table_arr["ref"][int(e.clid_table_arr["disp"].argmax())]) - 1]
    (cxl,) = e.cancel(1, client_order_id=int(far["client_order_id"]))
    assert cxl.kind == EventKind.CANCELLED and cxl.order_id == far["order_id"]
    # another account's order homed outside the run is accepted
    other = np.arange(1, 10_000, dtype=np.uint64)
    other = other[(_clid_homes(2, other, mask) > 200_000)][:1]
    (acc,) = e.new_order(2, int(other[0]), 1, Side.SELL, 1, price=200)
    assert acc.kind == EventKind.ACCEPTED
    e.validate()
