"""Execution reports, schema version 2, over a real server: every report carries the engine's
time (the journaled receive time of the command that caused it), fills carry this side's fee
and liquidity, a REJECTED echoes what was sent, and a replay from the journal after a kill -9
gives the same bytes. NEW_ORDER.stp 0 is the default (CANCEL_NEWEST), not a reject."""
import time

from protocol import wire
from protocol.codes import CancelReason, CommandKind, Reject, Side
from protocol.wire import Liquidity, MsgType
from tests.test_gap_replay import Tap

FEES = """enabled = true

[risk.defaults]
maker_fee = "-0.0001"
taker_fee = "0.0005"
"""
BTC_50000 = 5_000_000          # 50,000.00 in BTCUSDT price units (2 decimals)
ONE_BTC = 1_000                # 1.000 in qty units (3 decimals)


def fee_server(server_factory, **kw):
    return server_factory(risk=FEES, account_extra='initial_deposit = "1000000"\n',
                          symbol_extra='reference_price = "50000.00"', **kw).start()


def test_fill_when_risk_charges_fees_then_each_side_reports_fee_liquidity_and_engine_time(server_factory):
    srv = fee_server(server_factory, server_extra="replay_ring = 2\nreplay_index_every = 4")
    maker, taker = Tap(srv.port), Tap(srv.port)
    before = time.time_ns()
    assert maker.logon(2)[0] == MsgType.LOGON_ACCEPTED and taker.logon(1)[0] == MsgType.LOGON_ACCEPTED
    maker.order(1, Side.SELL, ONE_BTC, BTC_50000)
    maker.sync()
    taker.order(1, Side.BUY, ONE_BTC, BTC_50000)
    taker.sync()
    maker.sync()
    after = time.time_ns()
    got = {}
    for name, tap in (("maker", maker), ("taker", taker)):
        frames = [wire.decode(r)[0][0] for r in tap.reports]
        got[name] = {(t, int(b["cmd_kind"])): b for t, b, _ in frames}
    m_fill, t_fill = got["maker"][MsgType.FILL, CommandKind.NEW_ORDER], got["taker"][MsgType.FILL, CommandKind.NEW_ORDER]
    # 50,000.00 x 1: taker 5 bps = 25.00, maker -1 bp = a 5.00 rebate (cash units: cents)
    assert (int(t_fill["liquidity"]), int(t_fill["fee"])) == (Liquidity.TAKER, 2500)
    assert (int(m_fill["liquidity"]), int(m_fill["fee"])) == (Liquidity.MAKER, -500)
    # one command: the taker's ACCEPTED and both FILLs carry its receive time
    t_acc = got["taker"][MsgType.ACCEPTED, CommandKind.NEW_ORDER]
    assert int(t_acc["fee"]) == 0 and int(t_acc["liquidity"]) == 0
    assert before <= int(t_acc["ts_ns"]) == int(t_fill["ts_ns"]) == int(m_fill["ts_ns"]) <= after
    m_acc = got["maker"][MsgType.ACCEPTED, CommandKind.NEW_ORDER]
    assert before <= int(m_acc["ts_ns"]) < int(t_acc["ts_ns"])
    # the BALANCE of the initial deposit (a config command) has its time too
    bal = got["maker"][MsgType.BALANCE, CommandKind.DEPOSIT]
    assert (int(bal["qty"]), int(bal["leaves"])) == (100_000_000, 100_000_000) and 0 < int(bal["ts_ns"]) <= before
    # after a kill -9 and a restart the journal re-encodes the same bytes (ring of 2: gap replay)
    live = {1: taker.reports, 2: maker.reports}
    srv.kill9()
    srv.start()
    for acct, reports in live.items():
        late = Tap(srv.port)
        assert late.logon(acct, next_seq=1)[0] == MsgType.LOGON_ACCEPTED
        late.pump(until_seq=len(reports))
        assert late.reports == reports


def test_rejected_when_new_order_refused_then_echoes_side_price_and_qty_sent(server_factory):
    srv = server_factory().start()
    c = Tap(srv.port)
    assert c.logon(1)[0] == MsgType.LOGON_ACCEPTED
    c.order(7, Side.SELL, 5, 1_234_567, symbol=2)          # AAPL's tick is 100 price units
    c.sync()
    (t, r, _), = wire.decode(c.reports[-1])[0]
    assert (t, int(r["reason"]), int(r["cmd_kind"])) == (MsgType.REJECTED, Reject.PRICE_NOT_TICK_MULTIPLE,
                                                         CommandKind.NEW_ORDER)
    assert (int(r["client_order_id"]), int(r["symbol"]), int(r["side"]), int(r["price"]), int(r["qty"])) == \
        (7, 2, Side.SELL, 1_234_567, 5)
    assert int(r["ts_ns"]) > 0


def test_new_order_when_stp_0_then_default_cancel_newest_applies(server_factory):
    srv = server_factory().start()
    c = Tap(srv.port)
    assert c.logon(1)[0] == MsgType.LOGON_ACCEPTED
    c.order(1, Side.SELL, 3, 10_000, stp=0)
    c.order(2, Side.BUY, 3, 10_000, stp=0)                  # would trade with itself
    c.sync()
    frames = [wire.decode(r)[0][0] for r in c.reports]
    assert [t for t, _, _ in frames] == [MsgType.ACCEPTED, MsgType.ACCEPTED, MsgType.CANCELLED]
    cancelled = frames[2][1]
    assert (int(cancelled["client_order_id"]), int(cancelled["reason"])) == (2, CancelReason.SELF_TRADE)
    c.send(wire.encode(MsgType.ORDER_STATUS_REQUEST, request_id=9, client_order_id=1))
    _, _, (entry,) = c.until(MsgType.ORDER_STATUS)
    assert int(entry["leaves"]) == 3                         # the resting order stayed: CANCEL_NEWEST
