"""`trading-engine report positions|audit|tca` over a real server's journal: the end-of-day positions equal
the engine's own (the admin's positions over the protocol) and the fills the audit export rebuilds; each
order's lifecycle; TCA figures worked out by hand for a simple case."""
import asyncio
import csv
import io
import json
import subprocess
import sys
from decimal import Decimal as D

from tests.server_proc import ROOT
from tests.test_risk_server import HASH, RISK, Admin, connect, fund


def report(srv, *args):
    r = subprocess.run([sys.executable, "-m", "engine.cli", "report", *args, str(srv.dir / "journal"), "--config",
                        str(srv.config)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    if "--format" in args:
        return [json.loads(line) for line in r.stdout.splitlines()]
    return list(csv.DictReader(io.StringIO(r.stdout)))


def test_reports_when_day_traded_then_positions_reconcile_with_engine_and_fills_and_lifecycles_rebuilt(
        server_factory):
    srv = server_factory(risk=RISK, admins={"ops": HASH},
                         symbol_extra='[symbols.limits]\nlarge_position_qty = "1.000"\n').start()
    ad = Admin(srv)
    fund(ad, acct1="1000000", acct2="1000000", acct3="1000000")
    ad.ok("mark", symbol="BTCUSDT", price="50000.00")
    ad.ok("mark", symbol="AAPL", price="190.00")

    async def day():
        async with connect(srv, 1) as c1, connect(srv, 2) as c2, connect(srv, 3) as c3:
            ask = await c2.place("BTCUSDT", "sell", "2.000", price="50000.00")
            await c3.place("BTCUSDT", "buy", "0.100", price="49990.00")                  # rests: mid 49995
            await c1.place("BTCUSDT", "buy", "0.500", price="50000.00")                  # fills 0.5
            await c3.place("BTCUSDT", "buy", "1.200", price="50010.00")                  # fills 1.2
            bid = await c1.place("BTCUSDT", "buy", "1.000", price="49000.00")            # rests
            await c1.amend("BTCUSDT", order_id=bid.order_id, qty="0.800", price="49000.00")
            await c1.cancel(order_id=bid.order_id)
            await c2.place("AAPL", "sell", 10, price="190.00")
            await c1.place("AAPL", "buy", 4, price="191.00")
            await c1.place("AAPL", "buy", 10, price="191.00", tif="ioc")                 # 6 fill, 4 cancelled
            r = await c1.place("BTCUSDT", "buy", "1000.000", price="50000.00")           # rejected (leverage)
            assert r.kind == "rejected"
            await c2.cancel(order_id=ask.order_id)
    asyncio.run(day())
    engine_view = {n: Admin(srv).ok("positions", account=n)["positions"] for n in ("acct1", "acct2", "acct3")}
    srv.stop()

    rows = report(srv, "positions")
    got = {}
    for r in rows:
        got.setdefault(r["account_name"], []).append(r)
    assert set(got) == {"acct1", "acct2", "acct3"}
    for name, want in engine_view.items():
        assert len(got[name]) == len(want)
        for r, w in zip(got[name], want):
            assert r["symbol"] == w["symbol"]
            for k in ("position", "avg_price", "mark", "open_buy", "open_sell", "realized", "fees", "unrealized",
                      "exposure"):
                assert D(r[k]) == D(w[k]), (name, k, r[k], w[k])
    large = {(r["account_name"], r["symbol"]): r["large"] for r in rows}
    assert large[("acct3", "BTCUSDT")] == "True" and large[("acct2", "BTCUSDT")] == "True"   # -1.7 and 1.2 > 1
    assert large[("acct1", "BTCUSDT")] == "False" and large[("acct1", "AAPL")] == "False"

    events = report(srv, "audit", "--events", "--format", "json")
    net = {}
    for e in events:
        if e["event"] == "fill":
            sym = e["symbol"]
            key = (e["account"], sym)
            net[key] = net.get(key, D(0)) + (D(e["qty"]) if e["side"] == "buy" else -D(e["qty"]))
    for r in rows:                                 # the engine's positions = the fills the journal holds
        assert net.get((int(r["account"]), r["symbol"]), D(0)) == D(r["position"]), r

    orders = report(srv, "audit", "--format", "json")
    by = {(o["account"], o["symbol"], o["qty"]): o for o in orders}
    assert by[(1, "BTCUSDT", "1.000")]["status"] == "cancelled" and by[(1, "BTCUSDT", "1.000")]["amends"] == 1
    ioc = by[(1, "AAPL", "10")]
    assert (ioc["status"], ioc["end_reason"], ioc["filled_qty"], ioc["fills"]) == \
        ("cancelled", "ioc_remainder", "6", 1)
    assert by[(2, "BTCUSDT", "2.000")]["filled_qty"] == "1.700"
    assert by[(2, "BTCUSDT", "2.000")]["avg_fill_price"] == 50000.0
    assert [o["end_reason"] for o in orders if o["status"] == "rejected"] == ["max_leverage"]

    tca = {(r["account"], r["strategy"]): r for r in report(srv, "tca", "--format", "json")}
    a1 = tca[(1, 0)]
    # acct1: BTC 0.5 (filled), BTC 1.0 (none), AAPL 4 (filled), AAPL 10 (6): 4 orders, 3 with a fill
    assert (a1["orders"], a1["orders_with_fill"], a1["fill_ratio_orders"]) == (4, 3, 0.75)
    assert a1["fill_ratio_qty"] == round((500 + 4 + 6) / (500 + 1000 + 4 + 10), 6)
    # acct1's BTC buy arrived with 49990.00 / 50000.00 (mid 49995.00) and filled at 50000.00:
    # (50000 - 49995) / 49995 = 1.0001 bps; its AAPL orders met no bid (no mid): left out
    assert a1["shortfall_bps"] == round(5 / 49995 * 1e4, 4)
    # acct3 too; the interval VWAP of its 1.2 is its own fill: 0 bps; 2 orders, 1 with a fill
    a3 = tca[(3, 0)]
    assert (a3["shortfall_bps"], a3["vwap_slippage_bps"], a3["fill_ratio_orders"]) == (1.0001, 0.0, 0.5)
