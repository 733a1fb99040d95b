"""Random command streams through the engine with risk on and through tests/risk_model.py:
every risk decision, every figure (positions, average prices, open quantities, realized P&L,
fees, exposure, margins, cash, equity) and every breaker trip must agree exactly, and no
account is ever left beyond its limits: after every accepted order that added risk the
model's figures, with the order counted in full, satisfy every limit, and after every command
an account is liquidating exactly when its equity is below its maintenance margin."""
from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from engine.core import Engine
from engine.risk import Risk
from protocol.codes import (AccountState, CommandKind, EventKind, LimitKind as K, LimitScope as LS, OrderFlag,
                            OrderType, Reject, Side, TimeInForce)
from tests.risk_model import RiskModel

# id -> (tick, lot, price_decimals, qty_decimals, multiplier, mark)
SYMBOLS = {1: (1, 1, 2, 3, 1, 10_000), 2: (5, 10, 4, 0, 3, 50_000)}
ACCOUNTS = (1, 2, 3, 4)
N_STRATEGIES = 4
EXAMPLES = int(os.environ.get("TE_RISK_EXAMPLES", "150"))

LIMIT_VALUES = {
    K.MAX_ORDER_QTY: [200, 2_000, 20_000], K.MAX_ORDER_VALUE: [50_000, 500_000, 5_000_000],
    K.MAX_POSITION_VALUE: [100_000, 1_000_000, 10_000_000], K.MAX_OPEN_ORDERS: [2, 5, 50],
    K.MAX_LEVERAGE: [10_000, 50_000, 100_000], K.MAX_DAILY_LOSS: [1_000, 20_000, 200_000],
    K.PRICE_COLLAR: [100, 500, 2_000], K.MARKET_BAND: [50, 300, 1_000], K.INITIAL_MARGIN: [500, 1_000, 2_500],
    K.MAINTENANCE_MARGIN: [200, 500, 1_500], K.MAKER_FEE: [-2, 0, 3], K.TAKER_FEE: [0, 5, 11],
    K.BREAKER_BAND: [300, 1_000], K.BREAKER_WINDOW_MS: [200, 2_000], K.BREAKER_COOLOFF_MS: [0, 500],
    K.ERROR_THRESHOLD: [0, 40, 8], K.ERROR_ACCOUNTS: [0, 2, 3], K.ACCOUNT_REJECT_LIMIT: [0, 3, 10],
    K.ACCOUNT_LOCKOUT_MS: [0, 300, 2_000],
}
OVERRIDE_SCOPES = {K.BREAKER_BAND: (LS.DEFAULT, LS.SYMBOL), K.BREAKER_WINDOW_MS: (LS.DEFAULT, LS.SYMBOL),
                   K.BREAKER_COOLOFF_MS: (LS.DEFAULT, LS.SYMBOL), K.ERROR_THRESHOLD: (LS.DEFAULT,),
                   K.ERROR_ACCOUNTS: (LS.DEFAULT,), K.ACCOUNT_REJECT_LIMIT: (LS.DEFAULT, LS.ACCOUNT),
                   K.ACCOUNT_LOCKOUT_MS: (LS.DEFAULT, LS.ACCOUNT)}
FLOORS = (K.INITIAL_MARGIN, K.MAINTENANCE_MARGIN)
RISK_CODES = range(2000, 3000)


def make(max_positions=None):
    eng = Engine(max_orders=4096, max_accounts=5, max_symbols=4, max_levels=256)
    risk = Risk(5, 4, max_strategies=N_STRATEGIES, cash_decimals=2, max_positions=max_positions or 0)
    spec = {}
    for s, (tick, lot, pd, qd, mult, _) in SYMBOLS.items():
        eng.add_symbol(s, tick_size=tick, lot_size=lot)
        risk.define_symbol(s, pd, qd, mult)
        spec[s] = (int(risk.sym_cols["num"][s]), int(risk.sym_cols["den"][s]), tick)
    for a in ACCOUNTS:
        eng.add_account(a, stp_group=9 if a >= 3 else 0)
    eng.attach_risk(risk)
    return eng, risk, RiskModel(spec, max_strategies=N_STRATEGIES, max_positions=max_positions)


@st.composite
def limit_op(draw):
    kind = draw(st.sampled_from(sorted(LIMIT_VALUES)))
    scopes = OVERRIDE_SCOPES.get(kind) or ((LS.DEFAULT, LS.ACCOUNT, LS.SYMBOL) if kind in FLOORS or kind in
                                          (K.MAKER_FEE, K.TAKER_FEE) else (LS.DEFAULT, LS.ACCOUNT, LS.SYMBOL,
                                                                           LS.STRATEGY))
    scope = draw(st.sampled_from(scopes))
    target = {LS.DEFAULT: 0, LS.ACCOUNT: draw(st.sampled_from(ACCOUNTS)), LS.SYMBOL: draw(st.sampled_from([1, 2])),
              LS.STRATEGY: draw(st.integers(0, N_STRATEGIES - 1))}[scope]
    clear = draw(st.integers(0, 5)) == 0
    return ("limit", scope, kind, target, draw(st.sampled_from(LIMIT_VALUES[kind])), clear)


op = st.one_of(
    st.tuples(st.just("new"), st.sampled_from(ACCOUNTS), st.sampled_from([1, 2]), st.sampled_from([1, 2]),
              st.sampled_from(["limit"] * 6 + ["ioc"] * 2 + ["market"] * 2 + ["stop_limit"]),
              st.integers(-12, 12), st.integers(1, 60), st.integers(0, 9), st.integers(0, N_STRATEGIES)),
    st.tuples(st.just("cancel"), st.sampled_from(ACCOUNTS), st.integers(0, 50)),
    st.tuples(st.just("amend"), st.sampled_from(ACCOUNTS), st.integers(0, 50), st.integers(1, 80),
              st.integers(-6, 6)),
    st.tuples(st.just("mark"), st.sampled_from([1, 2]), st.integers(-40, 40)),
    st.tuples(st.just("tick"),),
    st.tuples(st.just("bad"), st.sampled_from(ACCOUNTS), st.integers(1, 6)),     # a burst of invalid orders
    st.tuples(st.just("cash"), st.sampled_from(ACCOUNTS), st.booleans(), st.integers(1, 400_000)),
    limit_op(),
    st.tuples(st.just("admin"), st.sampled_from(["kill", "unkill", "kill_all", "unkill_all", "reduce_only",
                                                  "suspend", "activate", "restrict", "allow", "reset", "eod",
                                                  "resume"]),
              st.sampled_from(ACCOUNTS), st.sampled_from([1, 2])),
)
weighted = st.one_of(*([op] + [st.tuples(st.just("new"), st.sampled_from(ACCOUNTS), st.sampled_from([1, 2]),
                                         st.sampled_from([1, 2]), st.sampled_from(["limit", "limit", "ioc", "market"]),
                                         st.integers(-8, 8), st.integers(1, 40), st.integers(0, 9),
                                         st.just(0))] * 3))


def build(eng, ops_item, clids, seq):
    """The COMMAND fields of one stream step, or None when it has nothing to act on."""
    kind = ops_item[0]
    if kind == "new":
        _, a, s, side, otype, off, lots, flag, strategy = ops_item
        tick, lot, *_ = SYMBOLS[s]
        mark = int(eng.risk.sym_cols["mark"][s]) or SYMBOLS[s][5]
        price = max(tick, (mark // tick + off * 3) * tick)
        clids[a] += 1
        qty = lots * lot
        if flag == 0 and otype in ("limit", "stop_limit"):
            # reduce-only: most of these sized to the room the position leaves on its closing side,
            # so that they rest, and later fills or other orders make the engine cut them
            p = next((x for x in eng.risk.positions(a) if x["symbol"] == s), None)
            if p and p["position"] and lots % 4:
                side = Side.SELL if p["position"] > 0 else Side.BUY
                room = abs(p["position"]) - (p["open_sell"] if side == Side.SELL else p["open_buy"])
                qty = min(qty, room) if room > 0 else qty
        f = dict(kind=CommandKind.NEW_ORDER, account=a, client_order_id=clids[a], symbol=s, side=side,
                 qty=qty, strategy=strategy, stp=1, flags=OrderFlag.REDUCE_ONLY if flag == 0 else 0)
        if otype == "limit":
            f.update(order_type=OrderType.LIMIT, tif=TimeInForce.GTC, price=price)
        elif otype == "ioc":
            f.update(order_type=OrderType.LIMIT, tif=TimeInForce.IOC, price=price)
        elif otype == "market":
            f.update(order_type=OrderType.MARKET, tif=TimeInForce.IOC)
        else:
            last = eng.last_price(s) or mark
            stop = last + (5 * tick if side == Side.BUY else -5 * tick)
            f.update(order_type=OrderType.STOP_LIMIT, tif=TimeInForce.GTC, price=price, stop_price=max(stop, tick))
        return f
    if kind in ("cancel", "amend"):
        live = eng.open_orders(ops_item[1])
        if not live:
            return None
        o = live[ops_item[2] % len(live)]
        if kind == "cancel":
            return dict(kind=CommandKind.CANCEL, account=ops_item[1], order_id=o["order_id"])
        tick, lot, *_ = SYMBOLS[o["symbol"]]
        price = max(tick, o["price"] + ops_item[4] * tick) if o["price"] else 0
        return dict(kind=CommandKind.AMEND, account=ops_item[1], order_id=o["order_id"], qty=ops_item[3] * lot,
                    price=price)
    if kind == "mark":
        tick = SYMBOLS[ops_item[1]][0]
        m = int(eng.risk.sym_cols["mark"][ops_item[1]])
        return dict(kind=CommandKind.MARK_PRICE, symbol=ops_item[1], price=max(tick, (m // tick + ops_item[2]) * tick))
    if kind == "bad":                 # qty 0: INVALID_QTY, a reject that counts against the account
        clids[ops_item[1]] += 1
        return dict(kind=CommandKind.NEW_ORDER, account=ops_item[1], client_order_id=clids[ops_item[1]], symbol=1,
                    side=Side.BUY, order_type=OrderType.LIMIT, tif=TimeInForce.GTC, price=1, qty=0, stp=1)
    if kind == "tick":
        return dict(kind=CommandKind.RISK_TICK)
    if kind == "cash":
        return dict(kind=CommandKind.DEPOSIT if ops_item[2] else CommandKind.WITHDRAW, account=ops_item[1],
                    qty=ops_item[3])
    if kind == "limit":
        _, scope, lk, target, value, clear = ops_item
        f = dict(kind=CommandKind.SET_LIMIT, side=scope, order_type=lk, qty=value, flags=int(clear))
        if scope == LS.ACCOUNT:
            f["account"] = target
        elif scope == LS.SYMBOL:
            f["symbol"] = target
        elif scope == LS.STRATEGY:
            f["strategy"] = target
        return f
    _, what, a, s = ops_item
    return {"kill": dict(kind=CommandKind.KILL_SWITCH, account=a, side=1),
            "unkill": dict(kind=CommandKind.KILL_SWITCH, account=a, side=2),
            "kill_all": dict(kind=CommandKind.KILL_SWITCH, account=0, side=1),
            "unkill_all": dict(kind=CommandKind.KILL_SWITCH, account=0, side=2),
            "reduce_only": dict(kind=CommandKind.SET_ACCOUNT_STATE, account=a, side=AccountState.REDUCE_ONLY),
            "suspend": dict(kind=CommandKind.SET_ACCOUNT_STATE, account=a, side=AccountState.SUSPENDED),
            "activate": dict(kind=CommandKind.SET_ACCOUNT_STATE, account=a, side=AccountState.ACTIVE),
            "restrict": dict(kind=CommandKind.RESTRICT_SYMBOL, account=a, symbol=s, side=1),
            "allow": dict(kind=CommandKind.RESTRICT_SYMBOL, account=a, symbol=s, side=2),
            "reset": dict(kind=CommandKind.RESET_BREAKER),
            "eod": dict(kind=CommandKind.END_OF_DAY, symbol=0),
            "resume": dict(kind=CommandKind.RESUME, symbol=s)}[what]


def predicted(eng, model, cmd, ts=0):
    """The model's decision for a NEW_ORDER / AMEND that reaches the risk checks, or None."""
    if cmd["kind"] == CommandKind.NEW_ORDER:
        return model.check(cmd["account"], cmd["symbol"], cmd["strategy"], cmd["side"], cmd["order_type"],
                           cmd["tif"], cmd["flags"], cmd.get("price", 0), cmd.get("stop_price", 0), cmd["qty"],
                           cmd["qty"], len(eng.open_orders(cmd["account"])), ts)
    if cmd["kind"] == CommandKind.AMEND:
        o = eng.order(cmd["order_id"])
        new_price = cmd["price"] or o["price"]
        if not (cmd["qty"] > o["leaves"] or new_price != o["price"]):
            return 0
        return model.check(cmd["account"], o["symbol"], o["strategy"], o["side"], o["order_type"], o["tif"],
                           o["flags"], new_price, o["stop_price"], cmd["qty"], cmd["qty"] - o["leaves"], None, ts)
    return None


def compare_figures(risk, model, accounts=ACCOUNTS):
    for a in accounts:
        got = {p["symbol"]: p for p in risk.positions(a)}
        for s in SYMBOLS:
            x = model.e[(a, s)]
            f = model.figures(a, s)
            want = dict(position=x.pos, avg_price=x.avg, open_buy=x.ob, open_sell=x.os, realized=x.realized,
                        fees=x.fees, unrealized=f["upnl"], exposure=f["expo"], worst_exposure=f["wexpo"],
                        initial_margin=f["im"], maintenance_margin=f["mm"])
            if s not in got:
                assert all(v == 0 for v in want.values()) or (x.pos == x.ob == x.os == 0), (a, s, want)
                continue
            have = {k: got[s][k] for k in want}
            assert have == want, f"account {a} symbol {s}: engine {have} != model {want}"
        pf = risk.portfolio(a)
        acct = model.account(a)
        want = dict(cash=model.cash[a], equity=acct["equity"], unrealized=acct["upnl"], exposure=acct["expo"],
                    initial_margin=acct["im"], maintenance_margin=acct["mm"],
                    daily_pnl=acct["equity"] - model.day_base[a], state=int(model.state[a]))
        have = {k: pf[k] for k in want}
        assert have == want, f"account {a}: engine {have} != model {want}"


def run_stream(ops, initial_cash, limits=(), max_positions=None):
    eng, risk, model = make(max_positions)
    clids = {a: 0 for a in ACCOUNTS}
    ts = 1_000_000_000
    setup = [dict(kind=CommandKind.MARK_PRICE, symbol=s, price=SYMBOLS[s][5]) for s in SYMBOLS]
    setup += [dict(kind=CommandKind.DEPOSIT, account=a, qty=c) for a, c in zip(ACCOUNTS, initial_cash)]
    setup += [dict(kind=CommandKind.SET_LIMIT, side=LS.DEFAULT, order_type=K.INITIAL_MARGIN, qty=1000),
              dict(kind=CommandKind.SET_LIMIT, side=LS.DEFAULT, order_type=K.MAINTENANCE_MARGIN, qty=500)]
    setup += [dict(kind=CommandKind.SET_LIMIT, side=LS.DEFAULT, order_type=k, qty=v) for k, v in limits]
    steps = [(None, f) for f in setup] + [(o, None) for o in ops for _ in range(o[2] if o[0] == "bad" else 1)]
    for i, (item, fields) in enumerate(steps):
        ts += 37_000_000 * (i % 7)
        cmd = fields or build(eng, item, clids, i)
        if cmd is None:
            continue
        cmd.setdefault("tif", 0)
        cmd.setdefault("flags", 0)
        cmd.setdefault("strategy", 0)
        if cmd["kind"] == CommandKind.RISK_TICK:
            cmd["expire_ts_ns"] = ts
        want = predicted(eng, model, cmd, ts)
        band = None
        if cmd["kind"] == CommandKind.NEW_ORDER and cmd["order_type"] == OrderType.MARKET and \
                cmd["strategy"] < N_STRATEGIES:
            band = model.band_bound(cmd["account"], cmd["symbol"], cmd["side"], cmd["strategy"])
        events = eng.command(seq=i + 1, ts_ns=ts, **cmd)
        if band and events[0].kind == EventKind.ACCEPTED:
            # the sweep stops at the band, the strategy's included (RISK.md "Market orders never sweep")
            for e in events:
                if e.kind == EventKind.FILL and e.order_id == events[0].order_id:
                    assert (e.price <= band) if cmd["side"] == Side.BUY else (e.price >= band), \
                        f"step {i}: market fill at {e.price} beyond the band bound {band}"
        first = events[0] if events else None
        if want is not None:
            got = first.reason if first is not None and first.kind == EventKind.REJECTED else 0
            if got in RISK_CODES or got == 0:
                assert got == want, f"step {i} {cmd}: engine {Reject(got).name if got else 'accepted'}, " \
                                    f"model {Reject(want).name if want else 'accepted'}"
                if got == 0 and cmd["kind"] == CommandKind.NEW_ORDER:
                    assert_within_limits(model, cmd)
        tripped = model.apply(cmd, events, ts)
        engine_trips = {e.symbol for e in events if e.kind == EventKind.BREAKER and e.reason == 1 and e.symbol}
        assert engine_trips == tripped, f"step {i}: breaker trips engine {engine_trips} model {tripped}"
        assert bool(risk.breaker) == bool(model.breaker), f"step {i}: engine-wide breaker differs"
        assert [int(risk.acct_cols["lock_until"][a]) for a in ACCOUNTS] == [model.lock_until[a] for a in ACCOUNTS], \
            f"step {i}: reject-rate lockouts differ"
        compare_figures(risk, model)
        for a in ACCOUNTS:
            acct = model.account(a)
            liquidating = model.state[a] == AccountState.LIQUIDATING
            assert liquidating == (acct["equity"] < acct["mm"]), \
                f"step {i}: account {a} liquidating={liquidating}, equity {acct['equity']} mm {acct['mm']}"
        if i % 5 == 0:
            eng.validate()                  # every resting reduce-only order covered, among others
    eng.validate()
    return eng


def assert_within_limits(model, cmd):
    """An accepted NEW_ORDER that adds risk leaves the model's figures (the order counted in full,
    before it trades) inside every limit, recomputed here from the definitions."""
    a, s, t = cmd["account"], cmd["symbol"], cmd["strategy"]
    x = model.e[(a, s)]
    before = max(abs(x.pos + x.ob), abs(x.pos - x.os))
    ob, os_ = (x.ob + cmd["qty"], x.os) if cmd["side"] == Side.BUY else (x.ob, x.os + cmd["qty"])
    worst = max(abs(x.pos + ob), abs(x.pos - os_))
    if worst <= before:
        return
    saved = (x.ob, x.os)
    x.ob, x.os = ob, os_
    try:
        acct = model.account(a)
        here = model.figures(a, s)
        for kind, value in ((K.MAX_POSITION_VALUE, here["wexpo"]),):
            lim = model.cap(kind, a, s, t)
            assert lim is None or value <= lim, f"{kind.name} {value} > {lim}"
        lev = model.cap(K.MAX_LEVERAGE, a, s, t)
        assert lev is None or acct["wexpo"] * 10000 <= lev * acct["equity"], "leverage above its cap"
        assert acct["im"] <= acct["equity"], "initial margin above equity"
        assert model.state[a] == AccountState.ACTIVE
    finally:
        x.ob, x.os = saved


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(weighted, min_size=10, max_size=120),
       st.tuples(*[st.integers(0, 3_000_000) for _ in ACCOUNTS]))
def test_risk_when_random_streams_then_engine_equals_model(ops, cash):
    run_stream(ops, cash)


@settings(max_examples=max(20, EXAMPLES // 3), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(weighted, st.tuples(st.just("bad"), st.sampled_from(ACCOUNTS), st.integers(1, 6))),
                min_size=10, max_size=120),
       st.sampled_from([0, 300, 2_000]), st.sampled_from([0, 2, 3]))
def test_reject_lockout_when_random_streams_then_engine_equals_model(ops, lockout_ms, error_accounts):
    """Issue 18.7 in the differential: every account's reject budget (3/s) and lockout, and the
    engine-wide rate (5/s from error_accounts accounts), engine and model alike, step by step."""
    run_stream(ops, (500_000,) * 4, limits=((K.ACCOUNT_REJECT_LIMIT, 3), (K.ACCOUNT_LOCKOUT_MS, lockout_ms),
                                            (K.ERROR_THRESHOLD, 5), (K.ERROR_ACCOUNTS, error_accounts)))


@settings(max_examples=max(20, EXAMPLES // 3), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(weighted, min_size=10, max_size=120), st.tuples(*[st.integers(0, 3_000_000) for _ in ACCOUNTS]),
       st.sampled_from([1, 2, 3, 5]))
def test_position_pool_when_small_then_engine_rejects_exactly_where_the_model_does(ops, cash, max_positions):
    """A position pool smaller than the 8 (account, symbol) pairs: an order (or a restriction) that needs an
    entry for a new pair is rejected POSITION_CAPACITY_EXHAUSTED exactly when max_positions pairs hold a
    position, open orders, P&L, fees or a restriction (entries that hold nothing are released); nothing held
    is ever overwritten (every figure still equals the model's)."""
    eng = run_stream(ops, cash, max_positions=max_positions)
    used, _, cap = eng.risk.position_count()
    assert used <= cap == max_positions


def test_market_band_when_set_at_strategy_scope_then_it_bounds_the_sweep_and_the_valuation():
    """Issue 18.19: a strategy's MARKET_BAND (20 bps here, none elsewhere) stops a market sell of that
    strategy at the band; the other strategies sweep on; the model agrees on every decision."""
    ops = [("limit", LS.STRATEGY, K.MARKET_BAND, 1, 20, False),
           ("new", 2, 1, Side.BUY, "limit", -1, 5, 9, 0),        # bid 9,997: inside the band (bound 9,980)
           ("new", 2, 1, Side.BUY, "limit", -30, 5, 9, 0),       # bid 9,910: beyond it
           ("new", 1, 1, Side.SELL, "market", 0, 10, 9, 1)]      # strategy 1: takes 9,997 only
    eng = run_stream(ops, (3_000_000,) * 4)
    assert [(o["price"], o["leaves"]) for o in eng.open_orders(2)] == [(9910, 5)]
    assert eng.risk.effective(K.MARKET_BAND, 1, 1, 1) == 20 and eng.risk.effective(K.MARKET_BAND, 1, 1, 0) is None
    eng = run_stream(ops[:3] + [("new", 1, 1, Side.SELL, "market", 0, 10, 9, 0)], (3_000_000,) * 4)
    assert eng.open_orders(2) == []                              # strategy 0 has no band: both bids taken


def test_market_order_value_when_band_bound_is_off_tick_then_valued_at_the_tick_bound():
    """RISK.md: a market order is valued at its band bound, which is rounded to a tick like its sweep:
    AAPL-like symbol 2 (tick 5) marked 50,200 with a 50 bps band: the bound is 50,450 (50,451 unrounded);
    a cap of exactly notional(50,450, 10) = 15,135 accepts the market buy of 10."""
    ops = [("mark", 2, 40), ("limit", LS.DEFAULT, K.MARKET_BAND, 0, 50, False),
           ("limit", LS.SYMBOL, K.MAX_ORDER_VALUE, 2, 15_135, False),
           ("new", 1, 2, Side.BUY, "market", 0, 1, 9, 0)]
    eng = run_stream(ops, (3_000_000,) * 4)
    assert int(eng.risk.sym_cols["mark"][2]) == 50_200


def test_risk_differential_when_a_long_fixed_stream_then_engine_equals_model():
    """One long deterministic stream (hypothesis keeps the random ones short)."""
    import random
    rnd = random.Random(7)
    ops = []
    for _ in range(3000):
        r = rnd.random()
        a, s, side = rnd.choice(ACCOUNTS), rnd.choice([1, 2]), rnd.choice([1, 2])
        if r < 0.6:
            ops.append(("new", a, s, side, rnd.choice(["limit", "limit", "ioc", "market", "stop_limit"]),
                        rnd.randint(-10, 10), rnd.randint(1, 400), rnd.randint(0, 9),
                        N_STRATEGIES if rnd.random() < 0.02 else rnd.randint(0, N_STRATEGIES - 1)))
        elif r < 0.8:
            ops.append(("cancel", a, rnd.randint(0, 50)))
        elif r < 0.88:
            ops.append(("amend", a, rnd.randint(0, 50), rnd.randint(1, 80), rnd.randint(-5, 5)))
        elif r < 0.93:
            ops.append(("mark", s, rnd.randint(-300, 300) * (10 if rnd.random() < 0.2 else 1)))
        elif r < 0.95:
            ops.append(("tick",))
        elif r < 0.96:
            ops.append(("bad", a, rnd.randint(1, 8)))
        elif r < 0.98:
            ops.append(("cash", a, rnd.random() < 0.7, rnd.randint(1, 50_000)))
        elif r < 0.99:
            ops.append(("admin", rnd.choice(["resume", "resume", "reset", "eod", "kill", "unkill", "reduce_only",
                                             "activate", "restrict", "allow"]), a, s))
        else:
            kind = rnd.choice(sorted(LIMIT_VALUES))
            ops.append(("limit", LS.DEFAULT, kind, 0, rnd.choice(LIMIT_VALUES[kind]), False))
    run_stream(ops, (200_000, 150_000, 80_000, 300_000))


def state_bytes(eng):
    return {name: np.asarray(arr).tobytes() for name, arr in eng.export_state().items()}


@settings(max_examples=max(10, EXAMPLES // 5), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(weighted, st.sampled_from(["", "", "portfolio", "positions", "both"]),
                          st.sampled_from(ACCOUNTS)), min_size=10, max_size=80),
       st.tuples(*[st.integers(0, 3_000_000) for _ in ACCOUNTS]))
def test_queries_when_between_commands_then_hash_and_snapshot_bytes_equal_a_replays(steps, cash):
    """Issue 18.4: PORTFOLIO / POSITIONS (and a /metrics scrape, which reads portfolio()) between
    commands leave the state hash and every snapshot array byte-equal to an engine that only ran the
    commands (a replay)."""
    queried, _, _ = make()
    replayed, _, _ = make()
    clids = {a: 0 for a in ACCOUNTS}
    setup = [dict(kind=CommandKind.MARK_PRICE, symbol=s, price=SYMBOLS[s][5]) for s in SYMBOLS]
    setup += [dict(kind=CommandKind.DEPOSIT, account=a, qty=c) for a, c in zip(ACCOUNTS, cash)]
    setup += [dict(kind=CommandKind.SET_LIMIT, side=LS.DEFAULT, order_type=K.INITIAL_MARGIN, qty=1000)]
    seq, ts = 0, 1_000_000_000
    for item, query, a in [(f, "both", 1) for f in setup] + steps:
        cmd = item if isinstance(item, dict) else build(queried, item, clids, seq)   # build() queries too
        if cmd is None:
            continue
        seq += 1
        ts += 37_000_000
        if cmd["kind"] == CommandKind.RISK_TICK:
            cmd["expire_ts_ns"] = ts
        assert queried.command(seq=seq, ts_ns=ts, **cmd) == replayed.command(seq=seq, ts_ns=ts, **cmd)
        if query in ("portfolio", "both"):
            queried.risk.portfolio(a)
        if query in ("positions", "both"):
            queried.risk.positions(a)
        assert queried.state_hash() == replayed.state_hash(), f"step {seq}: a query changed the state hash"
    assert state_bytes(queried) == state_bytes(replayed)
