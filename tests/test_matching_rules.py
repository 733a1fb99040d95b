"""One test per rule of engine/RULES.md and per core reject code, run on the core and on the model."""
import pytest

from engine.core import Engine
from protocol import wire
from protocol.codes import (CancelReason as CR, CommandKind, EventKind as EK, OrderType as OT, Reject,
                            SelfTradePrevention as STP, Side, SymbolState, TimeInForce as TIF)
from tests.model import Model

BUY, SELL = Side.BUY, Side.SELL
A, B, C, D = 1, 2, 3, 4        # C and D share STP group 9
S, S2 = 1, 2                   # S: tick 1 lot 1; S2: tick 5 lot 10, max price 1000, max qty 500


class Harness:
    """The engine under test plus `o()`, which numbers client order ids per account."""

    def __init__(self, e):
        self.e = e
        self.clids = dict.fromkeys((A, B, C, D), 0)

    def __getattr__(self, name):
        return getattr(self.e, name)

    def o(self, acct, side, qty, price=0, **kw):
        self.clids[acct] += 1
        return self.e.new_order(acct, self.clids[acct], kw.pop("symbol", S), side, qty, price=price, **kw)


@pytest.fixture(params=["core", "model"])
def eng(request):
    cls = Engine if request.param == "core" else Model
    e = cls(max_orders=16, max_accounts=8, max_symbols=4, max_levels=3)
    e.add_symbol(S)
    e.add_symbol(S2, tick_size=5, lot_size=10, max_price=1000, max_qty=500)
    for acct in (A, B, C, D):
        e.add_account(acct, stp_group=9 if acct in (C, D) else 0)
    return Harness(e)


def kinds(evs):
    return [EK(ev.kind).name for ev in evs]


def fills(evs):
    return [(ev.other_order_id, ev.price, ev.qty) for ev in evs if ev.kind == EK.FILL]


def oid(evs):
    assert evs[0].kind == EK.ACCEPTED, evs
    return evs[0].order_id


def reason(evs):
    assert len(evs) == 1 and evs[0].kind == EK.REJECTED, evs
    return Reject(evs[0].reason)


# -- rule 1: price-time priority --

def test_sweep_when_orders_at_two_prices_then_best_price_first_and_fifo_within(eng):
    a1 = oid(eng.o(A, SELL, 5, 101))
    a2 = oid(eng.o(A, SELL, 5, 100))
    a3 = oid(eng.o(B, SELL, 5, 100))
    evs = eng.o(C, BUY, 12, 105)
    assert fills(evs) == [(a2, 100, 5), (a3, 100, 5), (a1, 101, 2)]  # at the resting price
    assert evs[-1].leaves == 0 and eng.depth(S) == ([], [(101, 3, 1)])


def test_fill_when_trading_then_both_leaves_reported(eng):
    a1 = oid(eng.o(A, SELL, 5, 100))
    (f,) = [e for e in eng.o(B, BUY, 3, 100) if e.kind == EK.FILL]
    assert (f.other_order_id, f.qty, f.leaves, f.other_leaves, f.trade_id) == (a1, 3, 0, 2, 1)


# -- rule 2: LIMIT, IOC, FOK --

def test_limit_when_not_fully_marketable_then_remainder_rests(eng):
    eng.o(A, SELL, 5, 100)
    evs = eng.o(B, BUY, 8, 100)
    assert kinds(evs) == ["ACCEPTED", "FILL"] and eng.depth(S) == ([(100, 3, 1)], [])


def test_ioc_when_partly_filled_then_remainder_cancelled(eng):
    eng.o(A, SELL, 5, 100)
    evs = eng.o(B, BUY, 8, 100, tif=TIF.IOC)
    assert kinds(evs) == ["ACCEPTED", "FILL", "CANCELLED"]
    assert (evs[-1].reason, evs[-1].qty) == (CR.IOC_REMAINDER, 3) and eng.depth(S) == ([], [])


def test_fok_when_not_enough_then_nothing_executes(eng):
    eng.o(A, SELL, 5, 100)
    eng.o(A, SELL, 5, 102)
    evs = eng.o(B, BUY, 8, 101, tif=TIF.FOK)
    assert kinds(evs) == ["ACCEPTED", "CANCELLED"] and evs[-1].reason == CR.FOK_UNFILLED
    assert eng.depth(S) == ([], [(100, 5, 1), (102, 5, 1)])


def test_fok_when_enough_across_levels_then_fills_completely(eng):
    eng.o(A, SELL, 5, 100)
    eng.o(A, SELL, 5, 102)
    evs = eng.o(B, BUY, 8, 102, tif=TIF.FOK)
    assert kinds(evs) == ["ACCEPTED", "FILL", "FILL"] and evs[-1].leaves == 0


def test_fok_when_own_order_behind_iceberg_then_only_its_slice_counts(eng):
    # iceberg 10 showing 2, then C's own order: a FOK for 3 from D (same STP group) under
    # CANCEL_NEWEST would take the slice (2), meet its own order and stop.
    eng.o(A, SELL, 10, 100, display_qty=2)
    eng.o(C, SELL, 5, 100)
    evs = eng.o(D, BUY, 3, 100, tif=TIF.FOK)
    assert kinds(evs) == ["ACCEPTED", "CANCELLED"] and evs[-1].reason == CR.FOK_UNFILLED
    evs = eng.o(D, BUY, 3, 100, tif=TIF.FOK, stp=STP.CANCEL_OLDEST)   # own order is cancelled instead
    assert kinds(evs)[:2] == ["ACCEPTED", "FILL"] and evs[-1].kind == EK.FILL and evs[-1].leaves == 0


# -- rule 3: MARKET --

def test_market_when_book_thin_then_remainder_cancelled_never_rests(eng):
    eng.o(A, SELL, 5, 100)
    evs = eng.o(B, BUY, 8, order_type=OT.MARKET)
    assert kinds(evs) == ["ACCEPTED", "FILL", "CANCELLED"]
    assert (evs[0].price, evs[-1].reason, evs[-1].qty) == (0, CR.MARKET_REMAINDER, 3)
    assert eng.depth(S) == ([], []) and eng.live_orders == 0


# -- rule 4: POST_ONLY --

def test_post_only_when_would_cross_then_rejected_without_executing(eng):
    eng.o(A, SELL, 5, 100)
    assert reason(eng.o(B, BUY, 5, 100, flags=1)) == Reject.POST_ONLY_WOULD_CROSS
    assert kinds(eng.o(B, BUY, 5, 99, flags=1)) == ["ACCEPTED"] and eng.depth(S) == ([(99, 5, 1)], [(100, 5, 1)])


# -- rule 5: stops --

def test_buy_stop_when_trade_reaches_stop_then_triggers_as_market(eng):
    eng.o(A, SELL, 5, 100)
    eng.o(A, SELL, 5, 105)
    eng.o(B, BUY, 1, 100)                                        # last = 100
    stop = oid(eng.o(B, BUY, 3, order_type=OT.STOP, stop_price=101))
    assert eng.depth(S)[1] == [(100, 4, 1), (105, 5, 1)]        # stops are not in the depth
    evs = eng.o(C, BUY, 4, 101)                                  # prints 100 only: stop not reached
    assert EK.TRIGGERED not in [e.kind for e in evs]
    evs = eng.o(C, BUY, 1, 105)                                  # prints 105 >= 101: triggers
    assert kinds(evs) == ["ACCEPTED", "FILL", "TRIGGERED", "FILL"]
    assert (evs[2].order_id, evs[2].price) == (stop, 101) and evs[3].price == 105


def test_stops_when_triggered_together_then_enter_in_acceptance_order_and_cascade(eng):
    eng.o(A, BUY, 1, 100)
    eng.o(A, SELL, 1, 101)
    eng.o(B, SELL, 1, 100)                                       # last = 100
    s1 = oid(eng.o(B, SELL, 1, order_type=OT.STOP, stop_price=99))   # triggered second (cascade)
    s2 = oid(eng.o(C, BUY, 1, order_type=OT.STOP, stop_price=102))
    s3 = oid(eng.o(D, BUY, 1, order_type=OT.STOP, stop_price=101))
    eng.o(A, SELL, 2, 103)
    eng.o(A, BUY, 1, 98)
    evs = eng.o(B, BUY, 1, 101)                                  # prints 101: s3 triggers, buys at 103...
    trig = [e.order_id for e in evs if e.kind == EK.TRIGGERED]
    assert trig == [s3, s2]                                      # ...which prints 103: s2 (accepted before s3) next
    assert s1 not in trig
    assert eng.last_price(S) == 103


def test_stop_when_already_reached_then_rejected(eng):
    eng.o(A, SELL, 1, 100)
    eng.o(B, BUY, 1, 100)
    assert reason(eng.o(B, BUY, 1, order_type=OT.STOP, stop_price=100)) == Reject.STOP_ALREADY_TRIGGERED
    assert reason(eng.o(B, SELL, 1, order_type=OT.STOP, stop_price=100)) == Reject.STOP_ALREADY_TRIGGERED
    assert kinds(eng.o(B, SELL, 1, order_type=OT.STOP, stop_price=99)) == ["ACCEPTED"]


def test_stop_limit_when_triggered_then_rests_as_limit_with_new_priority(eng):
    eng.o(A, SELL, 1, 100)
    eng.o(B, BUY, 1, 100)
    sl = oid(eng.o(B, BUY, 5, 102, order_type=OT.STOP_LIMIT, stop_price=101))
    eng.o(A, SELL, 1, 101)
    eng.o(C, BUY, 1, 101)                                        # prints 101: triggers; nothing left to buy
    o = eng.order(sl)
    assert (o["order_type"], o["state"], o["leaves"]) == (OT.LIMIT, 1, 5) and eng.depth(S)[0] == [(102, 5, 1)]


# -- rule 6: icebergs --

def test_iceberg_when_resting_then_only_slice_is_shown(eng):
    eng.o(A, SELL, 10, 100, display_qty=3)
    assert eng.depth(S)[1] == [(100, 3, 1)]


def test_iceberg_when_slice_used_then_refreshes_at_back_and_same_aggressor_reaches_it(eng):
    ice = oid(eng.o(A, SELL, 7, 100, display_qty=3))
    other = oid(eng.o(B, SELL, 2, 100))
    evs = eng.o(C, BUY, 7, 100)
    assert fills(evs) == [(ice, 100, 3), (other, 100, 2), (ice, 100, 2)]
    restated = [e for e in evs if e.kind == EK.RESTATED]
    assert [(e.qty, e.leaves) for e in restated] == [(3, 4)]
    assert kinds(evs)[:3] == ["ACCEPTED", "FILL", "RESTATED"]
    assert eng.depth(S)[1] == [(100, 1, 1)] and eng.order(ice)["shown"] == 1


def test_iceberg_when_arriving_marketable_then_matches_full_quantity(eng):
    eng.o(A, SELL, 8, 100)
    evs = eng.o(B, BUY, 10, 100, display_qty=2)
    assert fills(evs)[0][2] == 8 and eng.depth(S)[0] == [(100, 2, 1)]


# -- rule 7: self-trade prevention --

@pytest.mark.parametrize("mode,expect,book", [
    (STP.CANCEL_NEWEST, ["ACCEPTED", "STP_PREVENTED", "CANCELLED"], ([], [(100, 5, 1), (101, 5, 1)])),
    (0, ["ACCEPTED", "STP_PREVENTED", "CANCELLED"], ([], [(100, 5, 1), (101, 5, 1)])),     # 0: the default
    (STP.CANCEL_OLDEST, ["ACCEPTED", "STP_PREVENTED", "CANCELLED", "FILL"], ([(101, 1, 1)], [])),
    (STP.CANCEL_BOTH, ["ACCEPTED", "STP_PREVENTED", "CANCELLED", "CANCELLED"], ([], [(101, 5, 1)])),
    (STP.NONE, ["ACCEPTED", "FILL"], ([], [(101, 5, 1)])),
])
def test_stp_when_meeting_same_group_then_mode_decides(eng, mode, expect, book):
    resting = oid(eng.o(C, SELL, 5, 100))
    eng.o(A, SELL, 5, 101)
    evs = eng.o(D, BUY, 5 if mode != STP.CANCEL_OLDEST else 6, 101, stp=mode)
    assert kinds(evs) == expect
    if mode != STP.NONE:
        p = evs[1]
        assert (p.order_id, p.other_order_id, p.qty, p.price) == (evs[0].order_id, resting, 5, 100)
    assert eng.depth(S) == book
    if mode == STP.CANCEL_BOTH:
        assert [(e.order_id, e.reason) for e in evs[2:]] == [(resting, CR.SELF_TRADE), (evs[0].order_id, CR.SELF_TRADE)]


def test_stp_when_different_groups_then_trade(eng):
    eng.o(A, SELL, 5, 100)
    assert kinds(eng.o(C, BUY, 5, 100)) == ["ACCEPTED", "FILL"]


# -- rule 8: cancel and amend --

def test_cancel_when_iceberg_then_whole_remainder_including_hidden(eng):
    ice = oid(eng.o(A, SELL, 10, 100, display_qty=3))
    (ev,) = eng.cancel(A, order_id=ice)
    assert (ev.kind, ev.reason, ev.qty, ev.leaves) == (EK.CANCELLED, CR.USER, 10, 0) and eng.live_orders == 0


def test_cancel_when_by_client_order_id_then_found(eng):
    eng.o(A, SELL, 10, 100)
    assert kinds(eng.cancel(A, client_order_id=1)) == ["CANCELLED"]


def test_cancel_when_other_accounts_order_then_unknown_order(eng):
    o = oid(eng.o(A, SELL, 10, 100))
    assert reason(eng.cancel(B, order_id=o)) == Reject.UNKNOWN_ORDER
    assert reason(eng.cancel(B, client_order_id=1)) == Reject.UNKNOWN_ORDER
    assert eng.live_orders == 1


def test_amend_when_qty_decreased_then_keeps_priority(eng):
    first = oid(eng.o(A, SELL, 5, 100))
    second = oid(eng.o(B, SELL, 5, 100))
    (ev,) = eng.amend(A, order_id=first, qty=2)
    assert (ev.kind, ev.qty, ev.leaves) == (EK.REPLACED, 2, 2)
    assert fills(eng.o(C, BUY, 3, 100)) == [(first, 100, 2), (second, 100, 1)]


def test_amend_when_qty_increased_then_loses_priority(eng):
    first = oid(eng.o(A, SELL, 5, 100))
    second = oid(eng.o(B, SELL, 5, 100))
    eng.amend(A, order_id=first, qty=6)
    assert fills(eng.o(C, BUY, 6, 100)) == [(second, 100, 5), (first, 100, 1)]


def test_amend_when_price_crosses_then_reenters_and_matches(eng):
    ask = oid(eng.o(A, SELL, 5, 101))
    bid = oid(eng.o(B, BUY, 5, 99))
    evs = eng.amend(B, order_id=bid, qty=5, price=101)
    assert kinds(evs) == ["REPLACED", "FILL"] and fills(evs) == [(ask, 101, 5)]


def test_amend_when_qty_unchanged_marker_then_the_remainder_after_fills_is_kept(eng):
    ask = oid(eng.o(A, SELL, 10, 101))
    eng.o(B, BUY, 4, 101)                          # a fill between the client's read and its amend
    (ev,) = eng.amend(A, order_id=ask, qty=wire.AMEND_QTY_UNCHANGED, price=102)
    assert (ev.kind, ev.price, ev.qty, ev.leaves) == (EK.REPLACED, 102, 6, 6)
    assert reason(eng.amend(A, order_id=ask, qty=-2)) == Reject.INVALID_QTY


def test_amend_when_qty_zero_then_cancels(eng):
    o = oid(eng.o(A, SELL, 5, 101))
    (ev,) = eng.amend(A, order_id=o, qty=0)
    assert (ev.kind, ev.reason) == (EK.CANCELLED, CR.USER) and eng.live_orders == 0


def test_amend_when_untriggered_stop_then_qty_stop_and_limit_change(eng):
    eng.o(A, SELL, 1, 100)
    eng.o(B, BUY, 1, 100)
    s = oid(eng.o(B, BUY, 5, 105, order_type=OT.STOP_LIMIT, stop_price=103))
    (ev,) = eng.amend(B, order_id=s, qty=4, price=106, stop_price=104)
    assert (ev.kind, ev.price, ev.qty) == (EK.REPLACED, 106, 4)
    o = eng.order(s)
    assert (o["stop_price"], o["price"], o["leaves"], o["state"]) == (104, 106, 4, 2)
    assert reason(eng.amend(B, order_id=s, qty=4, stop_price=100)) == Reject.STOP_ALREADY_TRIGGERED


def test_amend_when_post_only_would_cross_then_rejected_and_unchanged(eng):
    eng.o(A, SELL, 5, 101)
    p = oid(eng.o(B, BUY, 5, 99, flags=1))
    assert reason(eng.amend(B, order_id=p, qty=5, price=101)) == Reject.POST_ONLY_WOULD_CROSS
    assert eng.order(p)["price"] == 99


# -- rule 9: mass cancel --

def test_mass_cancel_when_filtered_then_only_matching_orders_in_id_order(eng):
    a = oid(eng.o(A, SELL, 5, 101))
    b = oid(eng.o(A, BUY, 5, 99))
    c = oid(eng.o(A, BUY, 10, 95, symbol=S2))
    eng.o(B, BUY, 5, 98)
    evs = eng.mass_cancel(A, symbol=S, side=BUY)
    assert [(e.order_id, e.reason) for e in evs[:-1]] == [(b, CR.MASS_CANCEL)]
    assert (evs[-1].kind, evs[-1].qty) == (EK.MASS_CANCEL_DONE, 1)
    evs = eng.mass_cancel(A)
    assert [e.order_id for e in evs[:-1]] == [a, c] and evs[-1].qty == 2
    assert eng.live_orders == 1


# -- rule 10: DAY and GTD --

def test_end_of_day_when_day_orders_then_only_they_are_cancelled(eng):
    day = oid(eng.o(A, SELL, 5, 101, tif=TIF.DAY))
    eng.o(A, SELL, 5, 102)
    dstop = oid(eng.o(B, BUY, 5, order_type=OT.STOP, stop_price=110, tif=TIF.DAY))
    evs = eng.end_of_day()
    assert [(e.order_id, e.reason) for e in evs] == [(day, CR.END_OF_DAY), (dstop, CR.END_OF_DAY)]
    assert eng.live_orders == 1


def test_expire_when_time_passes_then_gtd_orders_cancelled_and_past_expiry_refused(eng):
    g1 = oid(eng.o(A, SELL, 5, 101, tif=TIF.GTD, expire_ts_ns=100))
    g2 = oid(eng.o(A, SELL, 5, 102, tif=TIF.GTD, expire_ts_ns=200))
    assert eng.expire(99) == []
    if isinstance(eng.e, Engine):
        assert eng.next_expiry_ns() == 100
    assert [(e.order_id, e.reason) for e in eng.expire(150)] == [(g1, CR.EXPIRED)]
    assert reason(eng.o(A, SELL, 5, 101, tif=TIF.GTD, expire_ts_ns=150)) == Reject.INVALID_EXPIRY
    assert eng.order(g2) is not None


# -- rule 11: halts --

def test_halt_when_symbol_halted_then_new_and_amend_refused_cancel_works(eng):
    o = oid(eng.o(A, SELL, 5, 101))
    (ev,) = eng.halt(S)
    assert (ev.kind, ev.reason) == (EK.SYMBOL_STATE, SymbolState.HALTED)
    assert reason(eng.o(B, BUY, 5, 101)) == Reject.SYMBOL_HALTED
    assert reason(eng.amend(A, order_id=o, qty=4)) == Reject.SYMBOL_HALTED
    assert kinds(eng.cancel(A, order_id=o)) == ["CANCELLED"]
    eng.resume(S)
    assert kinds(eng.o(B, BUY, 5, 101)) == ["ACCEPTED"]


# -- rule 12: capacity --

def test_orders_when_slots_exhausted_then_rejected_never_overwritten(eng):
    for i in range(16):
        eng.o(A, SELL, 1, 100 + i % 3)
    assert reason(eng.o(B, BUY, 1, 50)) == Reject.ORDER_CAPACITY_EXHAUSTED
    assert reason(eng.o(B, BUY, 1, order_type=OT.MARKET)) == Reject.ORDER_CAPACITY_EXHAUSTED
    assert eng.live_orders == 16 and sum(q for _, q, _ in eng.depth(S)[1]) == 16


def test_levels_when_ladder_full_then_new_price_rejected_existing_price_accepted(eng):
    for p in (101, 102, 103):
        eng.o(A, SELL, 1, p)
    assert reason(eng.o(A, SELL, 1, 104)) == Reject.LEVEL_CAPACITY_EXHAUSTED
    assert kinds(eng.o(A, SELL, 1, 103)) == ["ACCEPTED"]
    assert kinds(eng.o(B, BUY, 1, 101, tif=TIF.IOC)) == ["ACCEPTED", "FILL"]   # IOC needs no level
    eng.o(A, SELL, 1, 101)                                     # the ladder is full again
    o = eng.open_orders(A)[-2]["order_id"]                     # the second order at 103
    assert reason(eng.amend(A, order_id=o, qty=1, price=105)) == Reject.LEVEL_CAPACITY_EXHAUSTED


def test_triggered_stop_limit_when_ladder_full_then_remainder_cancelled(eng):
    eng.o(A, SELL, 1, 100)
    eng.o(B, BUY, 1, 100)                                      # last 100
    for p in (90, 91, 92):
        eng.o(C, BUY, 1, p)
    sl = oid(eng.o(D, BUY, 1, 95, order_type=OT.STOP_LIMIT, stop_price=101))
    eng.o(A, SELL, 1, 101)
    assert reason(eng.o(B, BUY, 1, 101)) == Reject.LEVEL_CAPACITY_EXHAUSTED   # a GTC bid needs a level
    evs = eng.o(B, BUY, 1, 101, tif=TIF.IOC)
    assert [(e.order_id, e.kind, e.reason) for e in evs if e.order_id == sl] == [
        (sl, EK.TRIGGERED, 0), (sl, EK.CANCELLED, CR.NO_LEVEL_CAPACITY)]


# -- every other reject code of the core --

@pytest.mark.parametrize("fields,code", [
    (dict(account=7), Reject.UNKNOWN_ACCOUNT),
    (dict(client_order_id=0), Reject.DUPLICATE_CLIENT_ORDER_ID),
    (dict(symbol=3), Reject.UNKNOWN_SYMBOL),
    (dict(side=3), Reject.INVALID_SIDE),
    (dict(order_type=9), Reject.INVALID_ORDER_TYPE),
    (dict(tif=0), Reject.INVALID_TIF),
    (dict(stp=5), Reject.INVALID_STP),
    (dict(flags=2), Reject.INVALID_FLAGS),
    (dict(qty=0), Reject.INVALID_QTY),
    (dict(symbol=S2, qty=15, price=500), Reject.QTY_NOT_LOT_MULTIPLE),
    (dict(symbol=S2, qty=510, price=500), Reject.QTY_ABOVE_MAX),
    (dict(price=0), Reject.INVALID_PRICE),
    (dict(order_type=OT.MARKET, price=100), Reject.INVALID_PRICE),
    (dict(symbol=S2, qty=10, price=502), Reject.PRICE_NOT_TICK_MULTIPLE),
    (dict(symbol=S2, qty=10, price=1005), Reject.PRICE_ABOVE_MAX),
    (dict(order_type=OT.STOP, price=0, stop_price=0), Reject.INVALID_STOP_PRICE),
    (dict(stop_price=5), Reject.INVALID_STOP_PRICE),
    (dict(display_qty=10), Reject.INVALID_DISPLAY_QTY),
    (dict(display_qty=2, tif=TIF.IOC), Reject.INVALID_DISPLAY_QTY),
    (dict(flags=1, tif=TIF.IOC), Reject.INVALID_POST_ONLY),
    (dict(tif=TIF.GTD), Reject.INVALID_EXPIRY),
    (dict(expire_ts_ns=5), Reject.INVALID_EXPIRY),
    (dict(kind=99), Reject.INVALID_COMMAND),
])
def test_new_order_when_field_invalid_then_documented_reject(eng, fields, code):
    base = dict(kind=CommandKind.NEW_ORDER, account=A, client_order_id=1, symbol=S, side=BUY,
                order_type=OT.LIMIT, tif=TIF.GTC, stp=STP.CANCEL_NEWEST, qty=10, price=100)
    base.update(fields)
    evs = eng.command(**base)
    assert reason(evs) == code
    if code != Reject.INVALID_COMMAND:                        # the REJECTED echoes what was sent
        assert (evs[0].side, evs[0].price, evs[0].qty) == (base["side"], base["price"], base["qty"])


def test_client_order_id_when_reused_or_lower_then_duplicate_and_consumed_even_if_rejected(eng):
    eng.o(A, SELL, 5, 100)                                     # clid 1
    assert reason(eng.new_order(A, 1, S, SELL, 5, price=100)) == Reject.DUPLICATE_CLIENT_ORDER_ID
    assert reason(eng.new_order(A, 5, S, SELL, 0, price=100)) == Reject.INVALID_QTY   # consumes 5
    assert reason(eng.new_order(A, 5, S, SELL, 5, price=100)) == Reject.DUPLICATE_CLIENT_ORDER_ID
    assert kinds(eng.new_order(A, 6, S, SELL, 5, price=100)) == ["ACCEPTED"]


def test_amend_and_cancel_when_invalid_then_documented_rejects(eng):
    o = oid(eng.o(A, SELL, 10, 500, symbol=S2))
    assert reason(eng.amend(A, order_id=o, qty=-10)) == Reject.INVALID_QTY
    assert reason(eng.amend(A, order_id=o, qty=15)) == Reject.QTY_NOT_LOT_MULTIPLE
    assert reason(eng.amend(A, order_id=o, qty=510)) == Reject.QTY_ABOVE_MAX
    assert reason(eng.amend(A, order_id=o, qty=10, price=502)) == Reject.PRICE_NOT_TICK_MULTIPLE
    assert reason(eng.amend(A, order_id=o, qty=10, price=1005)) == Reject.PRICE_ABOVE_MAX
    assert reason(eng.amend(A, order_id=o, qty=10, price=-5)) == Reject.INVALID_PRICE
    assert reason(eng.amend(A, order_id=o, qty=10, stop_price=505)) == Reject.INVALID_AMEND
    assert reason(eng.amend(A, order_id=o + 100, qty=10)) == Reject.UNKNOWN_ORDER
    assert reason(eng.cancel(7, order_id=o)) == Reject.UNKNOWN_ACCOUNT
    assert reason(eng.mass_cancel(A, symbol=3)) == Reject.UNKNOWN_SYMBOL
    assert reason(eng.mass_cancel(A, side=3)) == Reject.INVALID_SIDE
    assert reason(eng.halt(3)) == Reject.UNKNOWN_SYMBOL
    assert eng.order(o)["leaves"] == 10
