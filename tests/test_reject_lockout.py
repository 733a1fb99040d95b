"""One client's invalid orders stop that client, not the venue (issue 18.7): an account over its
reject budget is locked out for a while (engine/RISK.md "Circuit breakers"), the engine-wide breaker
trips only on errors from several accounts; deterministic in journaled time, snapshotted, replayed."""
import asyncio
import json

from engine.core import Engine
from engine.risk import Risk
from protocol import wire
from protocol.codes import CommandKind, EventKind, LimitKind as K, LimitScope as LS, Reject, Side
from protocol.wire import MsgType
from tests.test_ops import get
from tests.test_risk_server import RISK, connect, trading_server
from tests.test_server_session import Raw

SECOND = 10**9
LIMITS = {K.ACCOUNT_REJECT_LIMIT: 5, K.ACCOUNT_LOCKOUT_MS: 1000, K.ERROR_THRESHOLD: 10, K.ERROR_ACCOUNTS: 3}


def make():
    eng = Engine(max_orders=1024, max_accounts=5, max_symbols=4, max_levels=64)
    risk = Risk(5, 4, max_strategies=4)
    eng.add_symbol(1)
    risk.define_symbol(1, 0, 0)
    for a in (1, 2, 3, 4):
        eng.add_account(a)
    eng.attach_risk(risk)
    eng.mark_price(1, 100)
    for a in (1, 2, 3, 4):
        eng.deposit(a, 10**9)
    for kind, value in LIMITS.items():
        assert eng.set_limit(LS.DEFAULT, kind, value)[0].kind == EventKind.LIMIT_SET
    return eng


class Stream:
    """Commands with increasing seqs at given journaled times."""

    def __init__(self, eng):
        self.eng, self.seq, self.clid = eng, 100, {}

    def order(self, account, ts, qty=1, price=100, side=Side.BUY):
        self.seq += 1
        self.clid[account] = self.clid.get(account, 0) + 1
        return self.eng.command(kind=CommandKind.NEW_ORDER, account=account, client_order_id=self.clid[account],
                                symbol=1, side=side, order_type=1, tif=1, stp=1, price=price, qty=qty,
                                seq=self.seq, ts_ns=ts)


def test_lockout_when_one_account_spams_invalid_orders_then_only_it_is_locked_out_until_the_time_passes():
    eng = make()
    s = Stream(eng)
    t0 = 5 * SECOND
    breakers = []
    for i in range(50):                                   # 50 invalid orders within half a second
        ev = s.order(1, t0 + i * 10**7, qty=0)
        assert ev[0].reason == Reject.INVALID_QTY
        breakers += [e for e in ev if e.kind == EventKind.BREAKER]
    assert [(b.account, b.reason, b.leaves) for b in breakers] == [(1, 1, t0 + 5 * 10**7 + 1000 * 10**6)]
    assert not eng.risk.breaker                           # one account: never the engine-wide breaker
    assert s.order(1, t0 + SECOND // 2)[0].reason == Reject.REJECT_RATE_LOCKOUT
    assert s.order(2, t0 + SECOND // 2)[0].kind == EventKind.ACCEPTED      # everyone else trades on
    # the lockout is state: a snapshot carries it, and replaying the same commands gives the same
    other = make()
    other.import_state(eng.export_state())
    assert other.state_hash() == eng.state_hash()
    s2 = Stream(other)
    s2.clid, s2.seq = dict(s.clid), s.seq
    assert s2.order(1, t0 + SECOND // 2)[0].reason == Reject.REJECT_RATE_LOCKOUT
    # the lockout ends in journaled time
    assert s.order(1, t0 + 5 * 10**7 + 1000 * 10**6)[0].kind == EventKind.ACCEPTED


def test_engine_breaker_when_rejects_come_from_several_accounts_then_it_trips():
    eng = make()
    s = Stream(eng)
    t0 = 7 * SECOND
    for i in range(4):                                    # 4 each (within every account's budget of 5)
        for a in (1, 2):
            s.order(a, t0 + i, qty=0)
    assert not eng.risk.breaker                           # 8 rejects, 2 accounts: below both thresholds
    for i in range(3):
        ev = s.order(3, t0 + 10 + i, qty=0)
    assert eng.risk.breaker and [e.account for e in ev if e.kind == EventKind.BREAKER] == [0]   # 11 from 3
    assert s.order(4, t0 + 20)[0].reason == Reject.CIRCUIT_BREAKER
    ev = eng.command(kind=CommandKind.RESET_BREAKER, seq=999, ts_ns=t0 + 30)
    assert ev[0].kind == EventKind.BREAKER and ev[0].reason == 2
    assert s.order(4, t0 + 40)[0].kind == EventKind.ACCEPTED


def test_limits_when_set_at_symbol_scope_then_refused():
    eng = make()
    for kind in (K.ACCOUNT_REJECT_LIMIT, K.ACCOUNT_LOCKOUT_MS, K.ERROR_ACCOUNTS):
        assert eng.set_limit(LS.SYMBOL, kind, 3, target=1)[0].reason == Reject.INVALID_LIMIT
    assert eng.set_limit(LS.ACCOUNT, K.ERROR_ACCOUNTS, 3, target=1)[0].reason == Reject.INVALID_LIMIT
    assert eng.set_limit(LS.ACCOUNT, K.ACCOUNT_REJECT_LIMIT, 3, target=1)[0].kind == EventKind.LIMIT_SET


def test_server_when_one_client_spams_invalid_orders_then_it_is_locked_out_and_others_keep_trading(server_factory):
    risk = RISK + "error_threshold = 10\nerror_accounts = 3\naccount_reject_limit = 5\naccount_lockout_ms = 600000\n"
    srv, ad = trading_server(server_factory, risk=risk)
    spam = Raw(srv.port)
    spam.logon(1)
    spam.send(b"".join(wire.encode(MsgType.NEW_ORDER, client_order_id=i, symbol=1, side=Side.BUY, order_type=1,
                                   tif=1, stp=1, price=4_900_000, qty=0) for i in range(1, 201)))
    reasons = [int(spam.until(MsgType.REJECTED)[1]["reason"]) for _ in range(200)]
    assert set(reasons) == {Reject.INVALID_QTY}

    async def trade():
        async with connect(srv, 1) as a, connect(srv, 2) as b:
            r = await a.place("BTCUSDT", "buy", "0.010", price="49000.00")
            assert (r.kind, r.reason) == ("rejected", "REJECT_RATE_LOCKOUT")
            assert (await b.place("BTCUSDT", "buy", "0.010", price="49000.00")).kind == "accepted"
    asyncio.run(trade())
    status, text = get(srv, "/health/detailed")
    assert json.loads(text)["risk"]["reject_rate_locked_accounts"] == 1    # a count without the ops token
    assert "te_accounts_reject_lockout 1.0" in get(srv, "/metrics")[1]
    srv.kill9()                                          # the lockout is journaled state: it survives
    srv.start()
    asyncio.run(trade())
    out = ad.__class__(srv).ok("reset_breaker")          # an operator may end it early
    assert out["events"][0]["event"] == "breaker"

    async def after():
        async with connect(srv, 1) as a:
            assert (await a.place("BTCUSDT", "buy", "0.010", price="49000.00")).kind == "accepted"
    asyncio.run(after())


def test_snapshot_when_written_before_the_lockout_existed_then_it_loads_with_no_lockouts():
    """A snapshot of the earlier layout (19 limit kinds, no lockout columns, 4 risk scalars) loads."""
    eng = make()
    Stream(eng).order(2, 3 * SECOND)
    state = dict(eng.export_state())
    for name in ("rej_ts", "rej_count", "lock_until", "err_seen"):
        del state["risk.acct." + name]
    kinds = state["risk.lim_default"].size            # N_LIMITS now
    for name in ("risk.lim_default", "risk.lim_acct", "risk.lim_sym", "risk.lim_strat"):
        state[name] = state[name].reshape(-1, kinds)[:, :19].ravel().copy()
    state["risk.scalars"] = state["risk.scalars"][:4].copy()
    other = make()
    other.import_state(state)
    other.validate()
    assert other.risk.limits() == [x for x in eng.risk.limits() if x[2] < 19]
    assert [o["order_id"] for o in other.open_orders(2)] == [o["order_id"] for o in eng.open_orders(2)]
