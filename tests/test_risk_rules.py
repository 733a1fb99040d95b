"""Each risk check and its reject code, P&L and margin arithmetic against figures worked out
by hand here, liquidation, breakers, the kill switch and market protection (engine/RISK.md),
on the core with risk on."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from engine.core import Engine
from engine.risk import Risk
from protocol.codes import (AccountState, CancelReason as CR, CommandKind, EventKind as EK, LimitKind as K,
                            LimitScope as LS, OrderFlag, OrderType as OT, Reject as R, Side, SymbolState,
                            TimeInForce as TIF)

BUY, SELL = Side.BUY, Side.SELL
# BTC-style: prices in cents (2 decimals), qty in 1e-3 (3 decimals), cash in cents:
# notional = price * qty / 1000 cents.  AAPL-style: price 4 decimals, tick 100, qty 0 decimals, x3 multiplier.
BTC, EQ = 1, 2


class Book:
    def __init__(self, margin=True):
        self.e = Engine(max_orders=1024, max_accounts=8, max_symbols=4, max_levels=128)
        self.r = Risk(8, 4, max_strategies=8, cash_decimals=2)
        self.e.add_symbol(BTC, tick_size=1, lot_size=1)
        self.e.add_symbol(EQ, tick_size=100, lot_size=1)
        self.r.define_symbol(BTC, 2, 3)
        self.r.define_symbol(EQ, 4, 0, 3)
        for a in range(1, 6):
            self.e.add_account(a)
        self.e.attach_risk(self.r)
        self.clid = {a: 0 for a in range(1, 8)}
        self.ts = 10 ** 12
        self.e.mark_price(BTC, 4_500_000)           # 45,000.00
        self.e.mark_price(EQ, 1_900_000)            # 190.0000
        if margin:
            self.limit(LS.DEFAULT, K.INITIAL_MARGIN, 1000)
            self.limit(LS.DEFAULT, K.MAINTENANCE_MARGIN, 500)

    def limit(self, scope, kind, value=0, target=0, clear=False):
        return self.e.set_limit(scope, kind, value, target=target, clear=clear)

    def order(self, a, side, qty, price=0, sym=BTC, ot=OT.LIMIT, tif=TIF.GTC, flags=0, strategy=0, stop=0,
              dt_ms=0):
        self.clid[a] += 1
        self.ts += dt_ms * 10 ** 6
        return self.e.command(kind=CommandKind.NEW_ORDER, account=a, client_order_id=self.clid[a], symbol=sym,
                              side=side, qty=qty, price=price, order_type=ot, tif=tif, stp=1, flags=flags,
                              strategy=strategy, stop_price=stop, ts_ns=self.ts)

    def pos(self, a, sym=BTC):
        return next((p for p in self.r.positions(a) if p["symbol"] == sym), None)


def rejected(evs):
    assert evs[0].kind == EK.REJECTED, evs
    return R(evs[0].reason)


def accepted(evs):
    assert evs[0].kind == EK.ACCEPTED, evs
    return evs


@pytest.fixture
def b():
    book = Book()
    book.e.deposit(1, 10_000_000)        # 100,000.00
    book.e.deposit(2, 10_000_000)
    return book


# -- P&L and margin arithmetic, worked out by hand --

def test_fills_when_opened_increased_reduced_and_flipped_then_figures_are_exact(b):
    b.limit(LS.SYMBOL, K.TAKER_FEE, 10, target=BTC)      # 0.10%
    b.limit(LS.SYMBOL, K.MAKER_FEE, -2, target=BTC)      # -0.02% rebate
    # account 2 rests asks; account 1 lifts them
    accepted(b.order(2, SELL, 1_500, 4_500_000))        # 1.5 BTC @ 45,000.00
    evs = b.order(1, BUY, 1_500, 4_500_000)
    assert [e.kind for e in evs] == [EK.ACCEPTED, EK.FILL]
    # notional 45,000.00 x 1.5 = 67,500.00 = 6,750,000 cents; taker fee 0.10% = 6,750 cents;
    # maker rebate 0.02% = -1,350 cents
    p1 = b.pos(1)
    assert (p1["position"], p1["avg_price"], p1["fees"], p1["realized"]) == (1_500, 4_500_000, 6_750, 0)
    assert b.pos(2)["fees"] == -1_350
    assert b.r.portfolio(1)["cash"] == 10_000_000 - 6_750
    assert b.r.portfolio(2)["cash"] == 10_000_000 + 1_350
    # buy 0.5 more at 45,100.01: avg = (4,500,000 x 1,500 + 4,510,001 x 500) / 2,000 = 4,502,500.25 -> 4,502,500
    accepted(b.order(2, SELL, 500, 4_510_001))
    b.order(1, BUY, 500, 4_510_001)
    p1 = b.pos(1)
    assert (p1["position"], p1["avg_price"]) == (2_000, 4_502_500)
    # fee: 4,510,001 x 500 / 1000 = 2,255,000.5 cents x 0.001 = 2,255.0005 -> 2,256 (rounded up)
    assert p1["fees"] == 6_750 + 2_256
    # sell 2.5 at 44,000.00: closes 2.0 (realized (4,400,000 - 4,502,500) x 2,000 / 1000 = -205,000 cents),
    # flips to -0.5 at avg 44,000.00
    accepted(b.order(2, BUY, 2_500, 4_400_000))
    b.order(1, SELL, 2_500, 4_400_000)
    p1 = b.pos(1)
    assert (p1["position"], p1["avg_price"], p1["realized"]) == (-500, 4_400_000, -205_000)
    fee3 = -(-4_400_000 * 2_500 * 10 // (1000 * 10000))      # ceil(11,000,000 x 0.001) = 11,000
    assert p1["fees"] == 6_750 + 2_256 + fee3
    # unrealized at the mark 45,000.00: (4,500,000 - 4,400,000) x -500 / 1000 = -50,000 cents
    assert p1["unrealized"] == -50_000
    # exposure 0.5 x 45,000.00 = 22,500.00; margins 10% / 5%
    assert (p1["exposure"], p1["initial_margin"], p1["maintenance_margin"]) == (2_250_000, 225_000, 112_500)
    pf = b.r.portfolio(1)
    assert pf["cash"] == 10_000_000 - 205_000 - (6_750 + 2_256 + fee3)
    assert pf["equity"] == pf["cash"] - 50_000
    assert pf["available"] == pf["equity"] - 225_000
    assert pf["leverage_bps"] == -(-2_250_000 * 10000 // pf["equity"])
    b.e.validate()


def test_realized_when_a_loss_does_not_divide_evenly_then_it_is_rounded_down():
    b = Book(margin=False)
    b.e.deposit(1, 10 ** 9)
    b.e.deposit(2, 10 ** 9)
    b.order(2, SELL, 3, 4_500_001)
    b.order(1, BUY, 3, 4_500_001)
    b.order(2, BUY, 3, 4_500_000)
    b.order(1, SELL, 3, 4_500_000)
    # -1 price unit x 3 qty units / 1000 = -0.003 cents -> -1 (floor); the short side gains +0.003 -> 0
    assert b.pos(1) is None or b.pos(1)["position"] == 0
    assert b.r.portfolio(1)["realized"] == -1
    assert b.r.portfolio(2)["realized"] == 0


def test_multiplier_when_an_equity_symbol_trades_then_notional_uses_it(b):
    # EQ: price 4 decimals, qty 0 decimals, multiplier 3: 100 shares at 190.0000 = 57,000.00 = 5,700,000 cents
    b.limit(LS.ACCOUNT, K.MAX_ORDER_VALUE, 5_699_999, target=1)
    assert rejected(b.order(1, BUY, 100, 1_900_000, sym=EQ)) == R.MAX_ORDER_VALUE
    b.limit(LS.ACCOUNT, K.MAX_ORDER_VALUE, 5_700_000, target=1)
    accepted(b.order(1, BUY, 100, 1_900_000, sym=EQ))
    assert b.pos(1, EQ)["worst_exposure"] == 5_700_000


# -- each check and its reject code, in RISK.md order --

def test_kill_switch_when_on_then_orders_cancelled_and_new_ones_rejected(b):
    accepted(b.order(1, BUY, 100, 4_400_000))
    evs = b.e.kill_switch(1, True)
    assert [(e.kind, e.reason) for e in evs] == [(EK.ACCOUNT_STATE, AccountState.ACTIVE), (EK.CANCELLED, CR.KILL_SWITCH)]
    assert rejected(b.order(1, BUY, 100, 4_400_000)) == R.KILL_SWITCH
    accepted(b.order(2, BUY, 100, 4_400_000))
    b.e.kill_switch(1, False)
    accepted(b.order(1, BUY, 100, 4_400_000))
    evs = b.e.kill_switch(0, True)                       # global: everyone's orders
    assert sorted(e.account for e in evs if e.kind == EK.CANCELLED) == [1, 2]
    assert rejected(b.order(2, BUY, 100, 4_400_000)) == R.KILL_SWITCH
    b.e.kill_switch(0, False)
    accepted(b.order(2, BUY, 100, 4_400_000))


def test_circuit_breaker_when_rejects_pass_the_threshold_then_new_orders_are_refused_until_reset(b):
    b.limit(LS.DEFAULT, K.ERROR_THRESHOLD, 3)
    for _ in range(4):
        rejected(b.order(1, BUY, 0, 4_500_000))              # INVALID_QTY: errors
    evs = b.order(1, BUY, 0, 4_500_000)
    assert b.r.breaker
    assert rejected(b.order(2, BUY, 100, 4_400_000)) == R.CIRCUIT_BREAKER
    evs = b.e.reset_breaker()
    assert [(e.kind, e.reason) for e in evs] == [(EK.BREAKER, 2)]
    accepted(b.order(2, BUY, 100, 4_400_000))


def test_account_state_when_suspended_or_reduce_only_then_orders_are_refused_as_documented(b):
    b.order(2, SELL, 100, 4_500_000)
    b.order(1, BUY, 100, 4_500_000)                          # account 1 is long 0.1
    b.e.set_account_state(1, AccountState.SUSPENDED)
    assert rejected(b.order(1, SELL, 50, 4_600_000)) == R.ACCOUNT_SUSPENDED
    b.e.set_account_state(1, AccountState.REDUCE_ONLY)
    assert rejected(b.order(1, BUY, 50, 4_400_000)) == R.ACCOUNT_REDUCE_ONLY
    accepted(b.order(1, SELL, 100, 4_600_000))              # reduces: passes
    # the worst case is now max(|0.1|, |0.1 - 0.1|) = 0.1; selling 0.1 more keeps it (max(0.1, 0.1));
    # 0.101 more would make it 0.101 short
    accepted(b.order(1, SELL, 100, 4_600_000))
    assert rejected(b.order(1, SELL, 1, 4_600_000)) == R.ACCOUNT_REDUCE_ONLY
    assert rejected(b.e.command(kind=CommandKind.SET_ACCOUNT_STATE, account=1, side=9)) == R.INVALID_STATE


def test_restriction_strategy_and_reference_when_violated_then_their_codes(b):
    b.e.restrict(1, EQ, True)
    assert rejected(b.order(1, BUY, 1, 1_900_000, sym=EQ)) == R.SYMBOL_RESTRICTED
    b.e.restrict(1, EQ, False)
    accepted(b.order(1, BUY, 1, 1_900_000, sym=EQ))
    assert rejected(b.order(1, BUY, 1, 4_500_000, strategy=8)) == R.INVALID_STRATEGY
    fresh = Book(margin=False)
    fresh.e.deposit(1, 10 ** 6)
    fresh.r.sym_cols["mark"][BTC] = 0                      # a symbol that never had a mark
    assert rejected(fresh.order(1, BUY, 1, 4_500_000)) == R.NO_REFERENCE_PRICE


def test_order_caps_when_exceeded_then_rejected_tightest_scope_wins(b):
    b.limit(LS.DEFAULT, K.MAX_ORDER_QTY, 1_000)
    b.limit(LS.STRATEGY, K.MAX_ORDER_QTY, 200, target=3)
    assert rejected(b.order(1, BUY, 1_001, 4_500_000)) == R.MAX_ORDER_QTY
    accepted(b.order(1, BUY, 1_000, 4_400_000))
    assert rejected(b.order(1, BUY, 201, 4_400_000, strategy=3)) == R.MAX_ORDER_QTY
    b.limit(LS.DEFAULT, K.MAX_ORDER_VALUE, 5_000_000)      # 50,000.00: the prototype's default
    # 1.2 BTC at 42,000.00 = 50,400.00 > 50,000.00
    assert rejected(b.order(1, BUY, 1_000 + 200, 4_200_000, strategy=1)) == R.MAX_ORDER_QTY
    b.limit(LS.DEFAULT, K.MAX_ORDER_QTY, clear=True)
    assert rejected(b.order(1, BUY, 1_200, 4_200_000)) == R.MAX_ORDER_VALUE
    # a stop-market is valued at its stop price, a market order at the mark (no band)
    assert rejected(b.order(1, BUY, 1_200, 0, ot=OT.STOP, stop=4_200_000)) == R.MAX_ORDER_VALUE
    assert rejected(b.order(1, BUY, 1_200, 0, ot=OT.MARKET, tif=TIF.IOC)) == R.MAX_ORDER_VALUE


def test_price_collar_when_limit_too_far_from_the_mark_then_rejected(b):
    b.limit(LS.DEFAULT, K.PRICE_COLLAR, 1000)                # 10% around 45,000.00
    accepted(b.order(1, BUY, 1, 4_050_000))                 # exactly 10% below
    assert rejected(b.order(1, BUY, 1, 4_049_999)) == R.PRICE_COLLAR
    assert rejected(b.order(1, SELL, 1, 4_950_001)) == R.PRICE_COLLAR


def test_open_orders_cap_when_reached_then_resting_orders_rejected_but_ioc_passes(b):
    b.limit(LS.ACCOUNT, K.MAX_OPEN_ORDERS, 2, target=1)
    accepted(b.order(1, BUY, 1, 4_400_000))
    accepted(b.order(1, BUY, 1, 4_400_001))
    assert rejected(b.order(1, BUY, 1, 4_400_002)) == R.MAX_OPEN_ORDERS
    accepted(b.order(1, BUY, 1, 4_400_002, tif=TIF.IOC))


def test_reduce_only_when_it_could_increase_the_position_then_rejected(b):
    assert rejected(b.order(1, SELL, 10, 4_600_000, flags=OrderFlag.REDUCE_ONLY)) == R.REDUCE_ONLY_VIOLATION
    b.order(2, SELL, 100, 4_500_000)
    b.order(1, BUY, 100, 4_500_000)                          # long 0.1
    accepted(b.order(1, SELL, 60, 4_600_000, flags=OrderFlag.REDUCE_ONLY))
    assert rejected(b.order(1, SELL, 41, 4_600_000, flags=OrderFlag.REDUCE_ONLY)) == R.REDUCE_ONLY_VIOLATION
    accepted(b.order(1, SELL, 40, 4_600_000, flags=OrderFlag.REDUCE_ONLY))
    assert rejected(b.order(1, BUY, 1, 4_400_000, flags=OrderFlag.REDUCE_ONLY)) == R.REDUCE_ONLY_VIOLATION


def cut(evs):
    """Client order ids of the orders a command's events cancelled as no longer reduce-only."""
    return [e.client_order_id for e in evs if e.kind == EK.CANCELLED and e.reason == CR.REDUCE_ONLY]


def long_0_1(b):
    b.order(2, SELL, 100, 4_500_000)
    b.order(1, BUY, 100, 4_500_000)                          # account 1 long 0.1
    assert b.pos(1)["position"] == 100


def test_reduce_only_when_a_fill_shrinks_the_position_below_it_then_the_newest_is_cancelled(b):
    long_0_1(b)
    accepted(b.order(1, SELL, 60, 4_600_000, flags=OrderFlag.REDUCE_ONLY))     # clid 2
    accepted(b.order(1, SELL, 40, 4_700_000, flags=OrderFlag.REDUCE_ONLY))     # clid 3: 0.1 covered
    b.order(2, BUY, 30, 4_400_000)                           # a bid for account 1 to hit
    evs = b.order(1, SELL, 30, 4_400_000, tif=TIF.IOC)       # not reduce-only: long 0.07 now
    assert cut(evs) == [3]                                   # 0.1 resting > 0.07: the newest goes
    assert [o["client_order_id"] for o in b.e.open_orders(1)] == [2]
    assert b.pos(1)["open_sell"] == 60
    b.e.validate()


def test_reduce_only_when_the_position_closes_then_every_one_is_cancelled(b):
    long_0_1(b)
    accepted(b.order(1, SELL, 50, 4_600_000, flags=OrderFlag.REDUCE_ONLY))     # clid 2
    accepted(b.order(1, SELL, 50, 4_700_000, flags=OrderFlag.REDUCE_ONLY, ot=OT.STOP_LIMIT,
                     stop=4_300_000))                        # clid 3, a waiting stop counts too
    b.order(2, BUY, 100, 4_400_000)
    evs = b.order(1, SELL, 100, 4_400_000, tif=TIF.IOC)      # flat: nothing left to reduce
    assert cut(evs) == [3, 2]                                # newest first
    assert b.e.open_orders(1) == [] and b.pos(1) is None
    b.e.validate()


def test_reduce_only_when_other_orders_on_its_side_outgrow_the_position_then_cancelled(b):
    # on entry a reduce-only sell needs every open sell, with it, within the position; that holds
    # while it rests: a normal sell (or an amend up) that breaks it cancels the reduce-only order,
    # which could otherwise trade after the normal one closed the position (even in one sweep)
    long_0_1(b)
    accepted(b.order(1, SELL, 60, 4_600_000, flags=OrderFlag.REDUCE_ONLY))     # clid 2
    evs = accepted(b.order(1, SELL, 40, 4_650_000))          # clid 3: 0.1 open, still covered
    assert cut(evs) == []
    oid = evs[0].order_id
    assert cut(b.e.amend(1, order_id=oid, qty=41)) == [2]    # 0.101 open > 0.1
    assert [o["client_order_id"] for o in b.e.open_orders(1)] == [3]
    accepted(b.order(1, BUY, 10, 4_400_000))                 # the other side: nothing to cut
    b.e.validate()


def test_reduce_only_when_exported_and_imported_then_counted_again_and_still_cut(b):
    long_0_1(b)
    accepted(b.order(1, SELL, 100, 4_600_000, flags=OrderFlag.REDUCE_ONLY))    # clid 2
    b.order(2, BUY, 10, 4_400_000)
    state = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in b.e.export_state().items()}
    other = Book(margin=False)
    other.e.import_state(state)
    other.clid = dict(b.clid)
    other.e.validate()                                       # the counts are derived from the orders
    assert other.e.state_hash() == b.e.state_hash()
    assert cut(other.order(1, SELL, 10, 4_400_000, tif=TIF.IOC)) == [2]


def test_snapshot_when_from_before_the_exposure_bound_then_it_loads_and_checks_the_same(b):
    # snapshots written before risk.acct.whi / risk.sym.wunit existed: both are derived (the bound
    # unknown until the account's next refresh), and every check still decides exactly
    b.limit(LS.DEFAULT, K.MAX_LEVERAGE, 20_000)              # 2x of 100,000.00
    b.order(2, SELL, 1_000, 4_500_000)
    b.order(1, BUY, 1_000, 4_500_000)                        # long 1 BTC: 45,000.00
    state = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in b.e.export_state().items()
             if k not in ("risk.acct.whi", "risk.sym.wunit")}
    other = Book(margin=False)
    other.e.import_state(state)
    other.clid = dict(b.clid)
    other.e.validate()
    assert other.r.sym_cols["wunit"][BTC] == b.r.sym_cols["wunit"][BTC]
    for book in (b, other):                                  # 1 + 3.44 BTC = 199,800.00: fits; 0.01 more does not
        assert rejected(book.order(1, BUY, 3_450, 4_400_000)) == R.MAX_LEVERAGE
        accepted(book.order(1, BUY, 3_440, 4_400_000))
    assert other.r.portfolio(1) == b.r.portfolio(1)


def test_reduce_only_flag_when_risk_is_off_then_invalid_flags():
    e = Engine(max_orders=64, max_accounts=4, max_symbols=4, max_levels=16)
    e.add_symbol(1)
    e.add_account(1)
    evs = e.new_order(1, 1, 1, BUY, 1, price=10, flags=OrderFlag.REDUCE_ONLY)
    assert evs[0].reason == R.INVALID_FLAGS
    assert e.deposit(1, 100)[0].reason == R.RISK_OFF


def test_daily_loss_when_breached_then_only_risk_reducing_orders_pass(b):
    b.limit(LS.DEFAULT, K.MAX_DAILY_LOSS, 100_000)           # 1,000.00
    b.order(2, SELL, 1_000, 4_500_000)
    b.order(1, BUY, 1_000, 4_500_000)                        # long 1 BTC
    b.e.mark_price(BTC, 4_390_000)                           # -1,100.00 unrealized
    assert b.r.portfolio(1)["daily_pnl"] == -110_000
    assert rejected(b.order(1, BUY, 1, 4_300_000)) == R.MAX_DAILY_LOSS
    accepted(b.order(1, SELL, 500, 4_500_000))              # reduces
    b.e.end_of_day()                                         # a new day: the baseline is today's equity
    accepted(b.order(1, BUY, 1, 4_300_000))


def test_position_value_when_worst_case_with_open_orders_exceeds_then_rejected(b):
    b.limit(LS.SYMBOL, K.MAX_POSITION_VALUE, 9_000_000, target=BTC)   # 90,000.00 at the mark
    accepted(b.order(1, BUY, 1_000, 4_400_000))             # worst case 1 BTC = 45,000.00
    accepted(b.order(1, BUY, 1_000, 4_400_000))             # 2 BTC = 90,000.00: at the cap
    assert rejected(b.order(1, BUY, 1, 4_400_000)) == R.MAX_POSITION_VALUE
    accepted(b.order(1, SELL, 2_000, 4_600_000))            # the sell side's worst case is 0 net: passes
    assert rejected(b.order(1, SELL, 2_001, 4_600_000)) == R.MAX_POSITION_VALUE


def test_leverage_and_margin_when_exceeded_then_rejected(b):
    b.limit(LS.DEFAULT, K.MAX_LEVERAGE, 20_000)              # 2x of 100,000.00 = 200,000.00
    # 4 BTC worst case = 180,000.00 (1.8x): ok; 5 BTC = 225,000.00: too much
    accepted(b.order(1, BUY, 4_000, 4_400_000))
    assert rejected(b.order(1, BUY, 1_000, 4_400_000)) == R.MAX_LEVERAGE
    b.limit(LS.DEFAULT, K.MAX_LEVERAGE, clear=True)
    b.limit(LS.ACCOUNT, K.INITIAL_MARGIN, 5_000, target=1)   # 50%: the largest requirement wins
    # im = 4 BTC x 45,000.00 x 50% = 90,000.00; one more BTC -> 112,500.00 > equity 100,000.00
    assert rejected(b.order(1, BUY, 1_000, 4_400_000)) == R.INSUFFICIENT_MARGIN
    accepted(b.order(1, BUY, 440, 4_400_000))                # 4.44 BTC: 99,900.00 of margin
    assert b.r.portfolio(1)["available"] == 10_000_000 - 9_990_000


@pytest.mark.parametrize("qty_1, qty_3", [(991, 1), (991, 4), (1_005, 1)])
def test_margin_when_one_cash_unit_short_on_fractional_figures_then_rejected(qty_1, qty_3):
    # Two BTC-style symbols whose marks make unit notionals fractions (45,009.99 and 33,333.33 per
    # BTC: 4,500.999 and 3,333.333 cents per 0.001), initial margin 10% rounded up per entry, no
    # maintenance margin: equity of exactly the margin both orders need is enough, one cent
    # less is not. The second order is judged after the first left the account's slack exact,
    # where the bound-only pass (Risk.far_from_limits) is tried first: it must leave these to the
    # exact checks (a bound rounded the wrong way, or one without the unit of rounding per entry,
    # passes the order one cent short).
    units = ((qty_1, Fraction(4_500_999, 1000)), (qty_3, Fraction(3_333_333, 1000)))
    need = sum(math.ceil(Fraction(math.ceil(q * u), 10)) for q, u in units)
    for cash, ok in ((need - 1, False), (need, True)):
        b = Book(margin=False)
        b.e.add_symbol(3, tick_size=1, lot_size=1)
        b.r.define_symbol(3, 2, 3)
        b.limit(LS.DEFAULT, K.INITIAL_MARGIN, 1000)
        b.e.mark_price(BTC, 4_500_999)
        b.e.mark_price(3, 3_333_333)
        b.e.deposit(1, cash)
        accepted(b.order(1, BUY, qty_1, 4_500_000))
        evs = b.order(1, BUY, qty_3, 3_300_000, sym=3)
        if ok:
            accepted(evs)
            assert b.r.portfolio(1)["initial_margin"] == need
        else:
            assert rejected(evs) == R.INSUFFICIENT_MARGIN


def test_amend_when_it_adds_risk_then_checked_and_when_it_reduces_then_passes(b):
    b.limit(LS.SYMBOL, K.MAX_POSITION_VALUE, 4_500_000, target=BTC)   # 1 BTC at the mark
    evs = accepted(b.order(1, BUY, 1_000, 4_400_000))
    oid = evs[0].order_id
    assert rejected(b.e.amend(1, order_id=oid, qty=1_001)) == R.MAX_POSITION_VALUE
    assert b.e.amend(1, order_id=oid, qty=500)[0].kind == EK.REPLACED
    b.limit(LS.DEFAULT, K.PRICE_COLLAR, 100)
    assert rejected(b.e.amend(1, order_id=oid, qty=500, price=4_000_000)) == R.PRICE_COLLAR
    assert b.r.positions(1)[0]["open_buy"] == 500


# -- market protection --

def test_market_order_when_book_beyond_the_band_then_rest_cancelled_market_protection(b):
    b.limit(LS.DEFAULT, K.MARKET_BAND, 100)                  # 1%: buys up to 45,450.00
    b.order(2, SELL, 100, 4_540_000)
    b.order(2, SELL, 100, 4_545_000)
    b.order(2, SELL, 100, 4_545_001)
    evs = b.order(1, BUY, 300, ot=OT.MARKET, tif=TIF.IOC)
    assert [(e.kind, e.price) for e in evs if e.kind == EK.FILL] == [(EK.FILL, 4_540_000), (EK.FILL, 4_545_000)]
    assert (evs[-1].kind, evs[-1].reason, evs[-1].qty) == (EK.CANCELLED, CR.MARKET_PROTECTION, 100)
    # a FOK market order is judged against the same bound: nothing executes
    evs = b.order(1, BUY, 100, ot=OT.MARKET, tif=TIF.FOK)
    assert (evs[-1].kind, evs[-1].reason) == (EK.CANCELLED, CR.FOK_UNFILLED)


# -- liquidation --

def test_liquidation_when_equity_falls_below_maintenance_then_orders_cancelled_and_positions_closed():
    b = Book()
    b.e.deposit(1, 500_000)                                   # 5,000.00
    b.e.deposit(2, 10 ** 9)
    b.e.deposit(3, 10 ** 9)
    b.order(2, SELL, 1_000, 4_500_000)
    b.order(1, BUY, 1_000, 4_500_000)                         # long 1 BTC: im 4,500.00, mm 2,250.00
    accepted(b.order(1, BUY, 10, 4_000_000))                  # a resting bid of its own
    b.order(3, BUY, 2_000, 4_250_000)                         # liquidity below
    # mark 42,600.00: equity 5,000 - 2,400 = 2,600.00; mm = 42,600 x 5% = 2,130.00: fine
    evs = b.e.mark_price(BTC, 4_260_000)
    assert not [e for e in evs if e.kind == EK.ACCOUNT_STATE]
    # mark 42,700.00 -> 42,500.00: equity 2,500.00 < mm 2,125.00? no; 42,300.00: 2,300.00 < 2,115.00? no;
    # 42,000.00: equity 2,000.00 < mm 2,100.00: liquidation
    evs = b.e.mark_price(BTC, 4_200_000)
    kinds = [(EK(e.kind).name, e.account, e.reason, e.flags) for e in evs]
    assert kinds[1] == ("ACCOUNT_STATE", 1, AccountState.LIQUIDATING, 0)
    assert kinds[2] == ("CANCELLED", 1, CR.LIQUIDATION, 0)
    liq = [e for e in evs if e.flags]
    assert liq[0].kind == EK.ACCEPTED and liq[0].side == SELL and liq[0].qty == 1_000 and liq[0].client_order_id == 0
    fills = [e for e in evs if e.kind == EK.FILL]
    assert [(f.price, f.qty, f.other_account) for f in fills] == [(4_250_000, 1_000, 3)]
    assert (evs[-1].kind, evs[-1].account, evs[-1].reason) == (EK.ACCOUNT_STATE, 1, AccountState.ACTIVE)
    assert b.pos(1) is None                                   # flat
    # realized (42,500.00 - 45,000.00) x 1 = -2,500.00: cash 2,500.00
    assert b.r.portfolio(1)["cash"] == 250_000
    b.e.validate()


def test_liquidation_when_no_liquidity_then_stays_liquidating_until_a_risk_tick_finds_some():
    b = Book()
    b.limit(LS.SYMBOL, K.EXTERNAL_MARK, 1, target=BTC)       # marks from MARK_PRICE only (an index)
    b.e.deposit(1, 500_000)
    b.e.deposit(2, 10 ** 9)
    b.order(2, SELL, 1_000, 4_500_000)
    b.order(1, BUY, 1_000, 4_500_000)
    evs = b.e.mark_price(BTC, 4_200_000)
    assert b.r.portfolio(1)["state"] == AccountState.LIQUIDATING
    assert rejected(b.order(1, SELL, 10, 4_300_000)) == R.ACCOUNT_LIQUIDATING
    b.order(2, BUY, 1_000, 4_190_000)                         # liquidity arrives
    evs = b.e.risk_tick(b.ts)
    assert [e for e in evs if e.kind == EK.FILL and e.flags]
    assert b.r.portfolio(1)["state"] == AccountState.ACTIVE


# -- circuit breaker per symbol --

def test_symbol_breaker_when_price_moves_past_the_band_then_halted_and_resumed_after_cooloff(b):
    b.limit(LS.SYMBOL, K.BREAKER_BAND, 500, target=BTC)       # 5%
    b.limit(LS.SYMBOL, K.BREAKER_WINDOW_MS, 60_000, target=BTC)
    b.limit(LS.SYMBOL, K.BREAKER_COOLOFF_MS, 300_000, target=BTC)
    b.order(2, SELL, 10, 4_500_000)
    b.order(1, BUY, 10, 4_500_000, dt_ms=1)                   # window starts at 45,000.00
    b.order(2, SELL, 10, 4_730_000)
    evs = b.order(1, BUY, 10, 4_730_000, dt_ms=1000)          # +5.1%
    assert [(EK(e.kind).name, e.reason) for e in evs[-2:]] == [("BREAKER", 1), ("SYMBOL_STATE", SymbolState.HALTED)]
    assert rejected(b.order(1, BUY, 10, 4_500_000)) == R.SYMBOL_HALTED
    assert not [e for e in b.e.risk_tick(b.ts + 299_000 * 10 ** 6) if e.kind == EK.SYMBOL_STATE]
    evs = b.e.risk_tick(b.ts + 300_000 * 10 ** 6)
    assert (EK.SYMBOL_STATE, SymbolState.TRADING) in [(e.kind, e.reason) for e in evs]
    accepted(b.order(1, BUY, 10, 4_500_000))


def test_symbol_breaker_when_the_window_has_passed_then_a_new_window_starts(b):
    b.limit(LS.SYMBOL, K.BREAKER_BAND, 500, target=BTC)
    b.limit(LS.SYMBOL, K.BREAKER_WINDOW_MS, 1_000, target=BTC)
    b.order(2, SELL, 10, 4_500_000)
    b.order(1, BUY, 10, 4_500_000, dt_ms=1)
    b.order(2, SELL, 10, 4_730_000)
    evs = b.order(1, BUY, 10, 4_730_000, dt_ms=1_001)
    assert not [e for e in evs if e.kind == EK.BREAKER]


# -- commands --

def test_deposit_withdraw_when_amount_bad_or_above_available_then_rejected(b):
    assert rejected(b.e.deposit(1, 0)) == R.INVALID_AMOUNT
    assert rejected(b.e.deposit(7, 10)) == R.UNKNOWN_ACCOUNT
    accepted(b.order(1, BUY, 1_000, 4_400_000))               # im 4,500.00
    assert rejected(b.e.withdraw(1, 10_000_000 - 450_000 + 1)) == R.INSUFFICIENT_FUNDS
    evs = b.e.withdraw(1, 10_000_000 - 450_000)
    assert (evs[0].kind, evs[0].qty, evs[0].leaves) == (EK.BALANCE, -(10_000_000 - 450_000), 450_000)


def test_set_limit_when_scope_kind_or_value_bad_then_invalid_limit(b):
    assert rejected(b.limit(LS.STRATEGY, K.INITIAL_MARGIN, 10, target=1)) == R.INVALID_LIMIT
    assert rejected(b.limit(LS.ACCOUNT, K.ERROR_THRESHOLD, 10, target=1)) == R.INVALID_LIMIT
    assert rejected(b.limit(LS.DEFAULT, K.MAX_ORDER_QTY, -1)) == R.INVALID_LIMIT
    assert rejected(b.e.command(kind=CommandKind.SET_LIMIT, side=9, order_type=K.MAX_ORDER_QTY, qty=1)) == \
        R.INVALID_LIMIT
    assert rejected(b.e.command(kind=CommandKind.SET_LIMIT, side=LS.DEFAULT, order_type=99, qty=1)) == \
        R.INVALID_LIMIT
    assert rejected(b.limit(LS.ACCOUNT, K.MAX_ORDER_QTY, 1, target=7)) == R.UNKNOWN_ACCOUNT
    assert b.r.effective(K.INITIAL_MARGIN, 1, BTC) == 1000
    assert b.r.effective(K.MAX_ORDER_QTY, 1, BTC) is None


def test_snapshot_when_risk_state_exported_and_imported_then_hash_and_figures_equal(b):
    b.order(2, SELL, 1_500, 4_500_000)
    b.order(1, BUY, 1_000, 4_500_000)
    b.limit(LS.DEFAULT, K.MAX_ORDER_QTY, 9_999)
    state = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in b.e.export_state().items()}
    other = Book(margin=False)
    other.e.import_state(state)
    other.clid = dict(b.clid)
    assert other.e.state_hash() == b.e.state_hash()
    assert other.r.positions(1) == b.r.positions(1)
    assert rejected(other.order(1, BUY, 10_000, 4_400_000)) == R.MAX_ORDER_QTY
    other.e.validate()
