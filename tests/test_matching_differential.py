"""Differential property test: random command streams through the Cython core and the
pure-Python model (tests/model.py) must give identical events, books and open orders,
and the core's invariants must hold after every command.

Profile: HYPOTHESIS_PROFILE=thorough for a long run (default: a bounded, derandomized one).
"""
import os

from hypothesis import HealthCheck, given, settings, strategies as st

from engine.core import Engine
from protocol.codes import CommandKind, EventKind, OrderType, Side, TimeInForce as TIF
from tests.model import Model

settings.register_profile("ci", max_examples=300, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ACCOUNTS = (1, 2, 3, 4)           # 3 and 4 share an STP group
SYMBOLS = {1: (1, 1), 2: (5, 10)}  # symbol -> (tick, lot)
CAPS = dict(max_orders=24, max_accounts=8, max_symbols=4, max_levels=5)
# Ladders that grow (chunks of 8, 16, 32, 64 levels) over wide prices, with the shared level pool
# either never short (0) or smaller than the ladders allow (12: LEVEL_CAPACITY_EXHAUSTED from the pool).
WIDE = {"pool": dict(max_orders=64, max_accounts=8, max_symbols=4, max_levels=40, max_level_slots=12),
        "growth": dict(max_orders=96, max_accounts=8, max_symbols=4, max_levels=60, max_level_slots=0)}


def configure(e):
    for sym, (tick, lot) in SYMBOLS.items():
        e.add_symbol(sym, tick_size=tick, lot_size=lot, max_price=200 * tick, max_qty=50 * lot)
    for a in ACCOUNTS:
        e.add_account(a, stp_group=7 if a >= 3 else 0)
    return e


@st.composite
def command(draw, wide=False):
    kind = draw(st.sampled_from([CommandKind.NEW_ORDER] * 24 + [CommandKind.CANCEL] * 4 + [CommandKind.AMEND] * 6 +
                                [CommandKind.MASS_CANCEL, CommandKind.END_OF_DAY, CommandKind.EXPIRE,
                                 CommandKind.EXPIRE, CommandKind.HALT, CommandKind.RESUME, CommandKind.RESUME]))
    sym = draw(st.sampled_from(sorted(SYMBOLS)))
    tick, lot = SYMBOLS[sym]
    c = dict(kind=kind, account=draw(st.sampled_from(ACCOUNTS)), symbol=sym)
    price = (st.integers(40, 160) if wide else st.integers(96, 104)).map(lambda p: p * tick)
    if kind == CommandKind.NEW_ORDER:
        ot = draw(st.sampled_from([OrderType.LIMIT] * 6 + [OrderType.MARKET, OrderType.STOP, OrderType.STOP_LIMIT]))
        tif = draw(st.sampled_from([TIF.GTC] * 4 + [TIF.DAY, TIF.IOC, TIF.FOK, TIF.GTD]))
        qty = draw(st.integers(1, 8)) * lot
        c.update(side=draw(st.sampled_from((Side.BUY, Side.SELL))), order_type=ot, tif=tif, qty=qty,
                 stp=draw(st.integers(1, 4)),
                 price=draw(price) if ot in (OrderType.LIMIT, OrderType.STOP_LIMIT) else 0,
                 stop_price=draw(price) if ot in (OrderType.STOP, OrderType.STOP_LIMIT) else 0,
                  flags=draw(st.sampled_from((0, 0, 0, 1))) if ot == OrderType.LIMIT else 0,
                 display_qty=draw(st.sampled_from((0, 0, lot, 2 * lot)))
                 if ot != OrderType.MARKET and tif not in (TIF.IOC, TIF.FOK) and qty > 2 * lot else 0,
                 expire_ts_ns=draw(st.integers(1, 30)) if tif == TIF.GTD else 0)
        if draw(st.integers(0, 30)) == 0:  # occasionally an invalid field
            field = draw(st.sampled_from(("side", "order_type", "tif", "stp", "flags", "qty", "price")))
            bad = [0, 9] if field in ("side", "order_type", "tif", "stp", "flags") else [0, -lot, 999 * tick + 1]
            c[field] = draw(st.sampled_from(bad))
    elif kind in (CommandKind.CANCEL, CommandKind.AMEND):
        c["_target"] = draw(st.integers(0, 40))      # index into accepted orders (resolved at run time)
        c["_by_clid"] = draw(st.booleans())
        if kind == CommandKind.AMEND:
            c.update(qty=draw(st.integers(0, 8)) * lot,
                     price=draw(st.sampled_from((0, 0))) or draw(st.one_of(st.just(0), price)),
                     stop_price=draw(st.one_of(st.just(0), st.just(0), price)))
    elif kind == CommandKind.MASS_CANCEL:
        c.update(symbol=draw(st.sampled_from((0, 1, 2))), side=draw(st.sampled_from((0, 1, 2))))
    elif kind == CommandKind.END_OF_DAY:
        c["symbol"] = draw(st.sampled_from((0, 1, 2)))
    elif kind == CommandKind.EXPIRE:
        c["expire_ts_ns"] = draw(st.integers(0, 30))
    return c


def core_invariants(core):
    core.validate()
    for sym in SYMBOLS:
        bids, asks = core.depth(sym, 100)
        if bids and asks:
            assert bids[0][0] < asks[0][0]
        shown = {}
        for a in ACCOUNTS:
            for o in core.open_orders(a):
                assert o["leaves"] > 0
                if o["symbol"] == sym and o["state"] == 1:
                    key = (o["side"], o["price"])
                    shown[key] = shown.get(key, 0) + o["shown"]
        assert {(Side.BUY, p): q for p, q, _ in bids} | {(Side.SELL, p): q for p, q, _ in asks} == shown


@given(st.lists(command(), min_size=20, max_size=150))
def test_core_when_random_streams_then_equals_model(cmds):
    run_against_model(cmds, CAPS)


@given(st.lists(command(wide=True), min_size=20, max_size=200))
def test_core_when_level_pool_smaller_than_ladders_then_equals_model(cmds):
    run_against_model(cmds, WIDE["pool"])


@given(st.lists(command(wide=True), min_size=20, max_size=200))
def test_core_when_ladders_grow_through_chunk_sizes_then_equals_model(cmds):
    run_against_model(cmds, WIDE["growth"])


def run_against_model(cmds, caps):
    core, model = configure(Engine(**caps)), configure(Model(**caps))
    clid = dict.fromkeys(ACCOUNTS, 0)
    accepted = []          # (account, order_id, client_order_id)
    done = set()
    filled = {Side.BUY: 0, Side.SELL: 0}
    for seq, c in enumerate(cmds, 1):
        c = dict(c, seq=seq)
        if c["kind"] == CommandKind.NEW_ORDER:
            clid[c["account"]] += 1
            c["client_order_id"] = clid[c["account"]]
        target, by_clid = c.pop("_target", None), c.pop("_by_clid", False)
        if target is not None and accepted:
            a, oid, cl = accepted[-1 - target % len(accepted)]     # mostly recent orders
            if target % 5:           # mostly the owner; sometimes another account (must look unknown)
                c["account"] = a
            if by_clid:
                c["client_order_id"] = cl
            else:
                c["order_id"] = oid
        got, want = core.command(**c), model.command(**c)
        assert got == want, f"command {c}\ncore:  {got}\nmodel: {want}"
        for ev in got:
            if ev.kind == EventKind.ACCEPTED:
                accepted.append((ev.account, ev.order_id, ev.client_order_id))
            if ev.kind == EventKind.FILL:
                filled[ev.side] += ev.qty
                filled[Side.BUY if ev.side == Side.SELL else Side.SELL] += ev.qty
                if ev.other_leaves == 0:
                    done.add(ev.other_order_id)
            if (ev.kind == EventKind.FILL and ev.leaves == 0) or ev.kind == EventKind.CANCELLED:
                done.add(ev.order_id)
        for sym in SYMBOLS:
            assert core.depth(sym, 100) == model.depth(sym, 100)
            assert core.last_price(sym) == model.last_price(sym)
        for a in ACCOUNTS:
            opens = core.open_orders(a)
            assert opens == model.open_orders(a)
            assert not done & {o["order_id"] for o in opens}, "an order reported done is still open"
        assert core.live_orders == model.live_orders
        assert filled[Side.BUY] == filled[Side.SELL]
        core_invariants(core)
