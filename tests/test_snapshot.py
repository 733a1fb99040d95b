"""Snapshots: the restored engine equals the original and behaves identically after;
corrupt or truncated files are detected and recovery falls back to an older one."""
import os
import random

import numpy as np
import pytest

from engine import snapshot
from engine.core import Engine
from protocol.codes import CommandKind, OrderType, Side, TimeInForce
from protocol.records import COMMAND


def make_engine():
    e = Engine(max_orders=4096, max_accounts=8, max_symbols=4, max_levels=64)
    e.add_symbol(1)
    e.add_symbol(2, tick_size=5, lot_size=10)
    for a in range(1, 5):
        e.add_account(a, stp_group=9 if a > 2 else 0)
    return e


def random_commands(seed, n):
    """Mixed flow with every order type, cancels and amends by client order id."""
    rng = random.Random(seed)
    cmds = np.zeros(n, dtype=COMMAND.dtype)
    clid = [0] * 5
    for i in range(n):
        c = cmds[i]
        a = rng.randint(1, 4)
        sym = rng.choice((1, 2))
        tick, lot = (1, 1) if sym == 1 else (5, 10)
        c["seq"] = i + 1
        c["account"] = a
        r = rng.random()
        if r < 0.6 or clid[a] == 0:
            clid[a] += 1
            ot = rng.choice((OrderType.LIMIT,) * 4 + (OrderType.MARKET, OrderType.STOP, OrderType.STOP_LIMIT))
            c["kind"] = CommandKind.NEW_ORDER
            c["client_order_id"] = clid[a]
            c["symbol"] = sym
            c["side"] = rng.choice((Side.BUY, Side.SELL))
            c["order_type"] = ot
            c["tif"] = rng.choice((TimeInForce.GTC, TimeInForce.GTC, TimeInForce.DAY, TimeInForce.IOC))
            c["stp"] = rng.randint(1, 4)
            c["qty"] = rng.randint(1, 6) * lot
            if ot in (OrderType.LIMIT, OrderType.STOP_LIMIT):
                c["price"] = rng.randint(95, 105) * tick
            if ot in (OrderType.STOP, OrderType.STOP_LIMIT):
                c["stop_price"] = rng.randint(95, 105) * tick
            if ot == OrderType.LIMIT and c["tif"] != TimeInForce.IOC and c["qty"] > lot and rng.random() < 0.3:
                c["display_qty"] = lot
        elif r < 0.85:
            c["kind"] = CommandKind.CANCEL
            c["client_order_id"] = rng.randint(1, clid[a])
        else:
            c["kind"] = CommandKind.AMEND
            c["client_order_id"] = rng.randint(1, clid[a])
            c["qty"] = rng.randint(1, 6)
    return cmds


def test_restore_when_snapshot_written_then_state_and_future_equal(tmp_path):
    a = make_engine()
    cmds = random_commands(1, 6000)
    a.process(cmds[:4000])
    a.validate()
    path = snapshot.write(tmp_path, a.export_state(), last_seq=4000)
    last_seq, state, _ = snapshot.read(path)
    assert last_seq == 4000
    b = Engine(max_orders=4096, max_accounts=8, max_symbols=4, max_levels=64)   # nothing configured
    b.import_state(state)
    b.validate()
    assert b.state_hash() == a.state_hash()
    assert a.live_orders == b.live_orders > 0
    ea, eb = a.process(cmds[4000:]), b.process(cmds[4000:])
    assert ea.tobytes() == eb.tobytes()
    assert a.state_hash() == b.state_hash()


def test_import_when_capacities_differ_then_refused(tmp_path):
    a = make_engine()
    a.process(random_commands(2, 500))
    _, state, _ = snapshot.read(snapshot.write(tmp_path, a.export_state(), last_seq=500))
    with pytest.raises(ValueError, match="capacities"):
        Engine(max_orders=2048, max_accounts=8, max_symbols=4, max_levels=64).import_state(state)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_load_latest_when_newest_damaged_then_falls_back_to_older(tmp_path, damage):
    a = make_engine()
    cmds = random_commands(3, 3000)
    a.process(cmds[:1000])
    old_hash = a.state_hash()
    snapshot.write(tmp_path, a.export_state(), last_seq=1000)
    a.process(cmds[1000:])
    newest = snapshot.write(tmp_path, a.export_state(), last_seq=3000)
    data = bytearray(newest.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x40
    else:
        data = data[: len(data) // 3]
    newest.write_bytes(bytes(data))
    with pytest.raises(snapshot.SnapshotError):
        snapshot.read(newest)
    bad = []
    found = snapshot.load_latest(tmp_path, on_bad=lambda p, e: bad.append(p))
    assert bad == [newest]
    path, last_seq, state, _ = found
    assert last_seq == 1000
    b = Engine(max_orders=4096, max_accounts=8, max_symbols=4, max_levels=64)
    b.import_state(state)
    assert b.state_hash() == old_hash


def test_fork_write_when_parent_keeps_trading_then_child_file_is_the_forked_state(tmp_path):
    a = make_engine()
    cmds = random_commands(4, 4000)
    a.process(cmds[:2000])
    expected = a.state_hash()
    pid = snapshot.fork_write(tmp_path, a.export_state(), last_seq=2000)
    a.process(cmds[2000:])          # the parent changes its arrays while the child writes
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    _, _, state, _ = snapshot.load_latest(tmp_path)
    b = Engine(max_orders=4096, max_accounts=8, max_symbols=4, max_levels=64)
    b.import_state(state)
    assert b.state_hash() == expected != a.state_hash()


def test_snapshot_when_book_thin_then_only_used_slots_stored_and_restore_into_used_engine_equal(tmp_path):
    a = make_engine()
    cmds = random_commands(5, 5000)
    a.process(cmds[:3000])
    state = a.export_state()
    assert len(state["orders_arr"]) == a.slot_hwm < a.max_orders         # the untouched capacity is not written
    assert len(state["levels_arr"]) == a.level_hwm < a.max_level_slots
    path = snapshot.write(tmp_path, state, last_seq=3000)
    assert path.stat().st_size < a.orders_arr.nbytes
    b = make_engine()                          # not fresh: its slots above a's mark are dirty
    b.process(random_commands(6, 4000))
    b.import_state(snapshot.read(path)[1])
    b.validate()
    assert b.state_hash() == a.state_hash()
    assert a.process(cmds[3000:]).tobytes() == b.process(cmds[3000:]).tobytes()
    assert a.state_hash() == b.state_hash()


def test_load_latest_when_file_of_an_older_layout_then_skipped_for_the_journal(tmp_path):
    # TESNAP01 files held each ladder at max_levels entries and no level pool size, TESNAP03 files
    # risk positions as one dense row per (account, symbol), TESNAP04 files the id tables as slot and
    # displacement arrays and 48-byte levels: a server of this version reads none of them (it replays
    # the journal instead of misreading one)
    a = make_engine()
    a.process(random_commands(7, 500))
    path = snapshot.write(tmp_path, a.export_state(), last_seq=500)
    data = bytearray(path.read_bytes())
    for old in (b"TESNAP01", b"TESNAP03", b"TESNAP04"):
        data[:8] = old
        path.write_bytes(bytes(data))
        bad = []
        assert snapshot.load_latest(tmp_path, on_bad=lambda p, e: bad.append(str(e))) is None
        assert len(bad) == 1 and "not a snapshot" in bad[0]


def test_import_when_level_pool_differs_then_refused(tmp_path):
    a = make_engine()
    a.process(random_commands(8, 500))
    state = a.export_state()
    with pytest.raises(ValueError, match="capacities"):
        Engine(max_orders=4096, max_accounts=8, max_symbols=4, max_levels=64, max_level_slots=100).import_state(state)
