"""Risk over the wire and in operations: the config's risk set-up is journaled at start-up
(and not again on a restart), POSITIONS/PORTFOLIO answer with the engine's figures, the
risk gauges move with trading, and a risk reject reaches the client with its code."""
from protocol import wire
from protocol.codes import Reject, Side
from protocol.wire import MsgType
from tests.test_ops import OPS_TOKEN, get, metric
from tests.test_server_session import Raw

RISK = """enabled = true
cash_decimals = 2
[risk.defaults]
initial_margin = "0.10"
maintenance_margin = "0.05"
max_order_value = "5000"
"""
# a third symbol with a reference price: 2 price decimals, whole units; notional = price x qty
SYMBOL = """
[[symbols]]
id = 3
name = "RSK"
price_decimals = 2
qty_decimals = 0
reference_price = "100.00"
"""


def start(server_factory, **kw):
    return server_factory(risk=RISK, extra=SYMBOL, account_extra='initial_deposit = "10000"\n', **kw).start()


def query(raw, t, **fields):
    raw.send(wire.encode(t, request_id=7, **fields))
    rec, entries = None, []
    while True:
        frame = raw.until({MsgType.POSITIONS_REQUEST: MsgType.POSITIONS,
                           MsgType.PORTFOLIO_REQUEST: MsgType.PORTFOLIO}[t])
        rec = frame[1]
        entries += list(frame[2])
        if not int(rec["more"]):
            return int(rec["status"]), entries


def test_risk_when_trading_over_the_wire_then_queries_metrics_and_rejects_agree(server_factory, tmp_path):
    token = tmp_path / "ops_token"
    token.write_text(OPS_TOKEN + "\n")
    token.chmod(0o600)
    srv = start(server_factory, server_extra=f'ops_token_file = "{token}"')
    a, b = Raw(srv.port), Raw(srv.port)
    a.logon(1)
    b.logon(2)
    b.order(1, Side.SELL, 10, 10_000, symbol=3)                  # 10 @ 100.00
    b.until(MsgType.ACCEPTED)
    a.order(1, Side.BUY, 10, 10_000, symbol=3)
    a.until(MsgType.FILL)
    status, rows = query(a, MsgType.POSITIONS_REQUEST)
    assert status == 0 and len(rows) == 1
    p = rows[0]
    # 10 x 100.00 = 1,000.00 = 100,000 cash units; im 10%, mm 5%
    assert (int(p["symbol"]), int(p["position"]), int(p["avg_price"]), int(p["exposure"]),
            int(p["initial_margin"]), int(p["maintenance_margin"])) == (3, 10, 10_000, 100_000, 10_000, 5_000)
    status, (pf,) = query(a, MsgType.PORTFOLIO_REQUEST)
    assert (int(pf["cash"]), int(pf["equity"]), int(pf["available"]), int(pf["leverage_bps"]),
            int(pf["cash_decimals"])) == (1_000_000, 1_000_000, 990_000, 1000, 2)
    # max order value 5,000.00: 51 x 100.00 is refused with its code
    a.order(2, Side.BUY, 51, 10_000, symbol=3)
    rej = a.until(MsgType.REJECTED)[1]
    assert int(rej["reason"]) == Reject.MAX_ORDER_VALUE
    _, text = get(srv, "/metrics", OPS_TOKEN)
    assert metric(text, 'te_account_exposure{account="acct1"}') == 1000.0
    assert metric(text, 'te_account_equity{account="acct1"}') == 10000.0
    assert metric(text, 'te_account_state{account="acct1",te_account_state="active"}') == 1
    assert metric(text, "te_error_breaker_tripped") == 0
    a.close()
    b.close()


def test_risk_when_restarted_then_setup_is_not_journaled_again_and_figures_survive(server_factory):
    srv = start(server_factory)
    a = Raw(srv.port)
    a.logon(1)
    _, (before,) = query(a, MsgType.PORTFOLIO_REQUEST)
    a.close()
    log = srv.output()
    assert "risk set-up from the config" in log
    srv.kill9()
    srv.start()
    a = Raw(srv.port)
    a.logon(1)
    _, (after,) = query(a, MsgType.PORTFOLIO_REQUEST)
    assert int(after["cash"]) == int(before["cash"]) == 1_000_000        # the initial deposit, once
    assert srv.output().count("risk set-up from the config") == 1
    b = Raw(srv.port)
    b.logon(2)
    b.order(1, Side.SELL, 5, 10_100, symbol=3)
    b.until(MsgType.ACCEPTED)
    a.order(1, Side.BUY, 5, 10_100, symbol=3)
    a.until(MsgType.FILL)
    _, (traded,) = query(a, MsgType.PORTFOLIO_REQUEST)
    _, positions = query(a, MsgType.POSITIONS_REQUEST)
    a.close()
    b.close()
    assert srv.terminate() == 0                  # graceful: a snapshot with the risk state in it
    srv.start()
    recovered = [line for line in srv.output().splitlines() if "recovered:" in line]
    assert len(recovered) == 3 and "recovered: 0 commands" in recovered[-1] and \
        "recovered: 0 commands" not in recovered[1]           # the kill -9 restart replayed, this one not
    a = Raw(srv.port)
    a.logon(1)
    _, (again,) = query(a, MsgType.PORTFOLIO_REQUEST)
    _, positions_again = query(a, MsgType.POSITIONS_REQUEST)
    assert again.tobytes() == traded.tobytes() and [p.tobytes() for p in positions_again] == \
        [p.tobytes() for p in positions]
    a.close()
