"""`trading-engine report positions|audit|tca` over a real server's journal: the end-of-day positions equal
the engine's own (the admin's positions over the protocol) and the fills the audit export rebuilds; each
order's lifecycle; TCA figures worked out by hand for a simple case."""
import asyncio
import base64
import csv
import html
import io
import json
import re
import struct
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
        server_factory, tmp_path):
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
    parquet_equals_csv(srv, tmp_path)


def parquet_equals_csv(srv, tmp_path):
    """`report audit --format parquet`: typed columns (ticks, lots, cash, ns as int64; ids and seqs uint64),
    read back equal to the --raw CSV, for the orders and for the events."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    for extra in ((), ("--events",)):
        out = tmp_path / f"audit{len(extra)}.parquet"
        want = report(srv, "audit", "--raw", *extra)
        assert report(srv, "audit", *extra, "--format", "parquet", "--out", out) == []      # nothing on stdout
        t = pq.read_table(out)
        for col in ("price", "qty", "last_ts_ns" if not extra else "ts_ns"):
            assert t.schema.field(col).type == pa.int64()
        assert t.schema.field("order_id").type == pa.uint64()
        got = t.to_pylist()
        assert len(got) == len(want) > 5
        for g, w in zip(got, want):
            if not extra:                          # the exact notional in place of the ratio the CSV writes
                n, avg = g.pop("filled_notional"), w.pop("avg_fill_price")
                assert avg == (f"{n}/{g['filled_qty']}" if g["filled_qty"] else "")
            assert {k: "" if v is None else str(v) for k, v in g.items()} == w


def test_tca_when_twap_parent_and_direct_orders_then_per_algorithm_rows_and_html_plots_equal_csv(
        server_factory, tmp_path):
    from protocol import wire
    from protocol.codes import AlgoKind, Side
    from protocol.wire import MsgType
    from tests.test_server_session import Raw
    srv = server_factory().start()
    bidder = Raw(srv.port)
    bidder.logon(3, next_seq=10**9)
    bidder.order(1, Side.BUY, 100, 9_990)                  # the bid: arrival mid (9,990 + 10,000) / 2
    bidder.until(MsgType.ACCEPTED)
    seller = Raw(srv.port)
    seller.logon(2, next_seq=10**9)
    for i in range(10):
        seller.order(1 + i, Side.SELL, 1000, 10_000 + i)
    for _ in range(10):
        seller.until(MsgType.ACCEPTED)
    buyer = Raw(srv.port)
    buyer.logon(1, next_seq=10**9)
    buyer.send(wire.encode(MsgType.ALGO_NEW, client_order_id=7, symbol=1, side=Side.BUY, algo=AlgoKind.TWAP,
                           qty=600, limit_price=10_005, duration_ms=600, slices=3, aggressiveness_bps=10_000,
                           strategy=5))
    t, done, _ = buyer.until(MsgType.ALGO_DONE, timeout=10)
    assert int(done["qty"]) == 600
    buyer.order(8, Side.BUY, 2000, 10_001, tif=3)          # direct: an IOC that fills part (what is left <= 10,001)
    buyer.until(MsgType.CANCELLED)
    srv.stop()

    events = report(srv, "audit", "--events", "--raw", "--format", "json")
    orders = {o["order_id"]: o for o in report(srv, "audit", "--raw", "--format", "json")}
    child_fills = [e for e in events
                   if e["event"] == "fill" and e["account"] == 1 and orders[e["order_id"]]["parent_id"]]
    assert sum(e["qty"] for e in child_fills) == 600
    assert {orders[e["order_id"]]["strategy"] for e in child_fills} == {5}      # the parent's strategy
    avg = sum(e["price"] * e["qty"] for e in child_fills) / 600
    direct = [o for o in orders.values() if o["account"] == 1 and not o["parent_id"]]
    assert len(direct) == 1 and 0 < int(direct[0]["filled_qty"]) < 2000

    tca = {(r["account"], r["strategy"], r["algo"]): r for r in report(srv, "tca", "--format", "json")}
    twap = tca[(1, 5, "twap")]                             # the parent is the unit: one order, all filled
    assert (twap["orders"], twap["orders_with_fill"], twap["fill_ratio_qty"]) == (1, 1, 1.0)
    assert twap["shortfall_bps"] == round((avg - 9_995) / 9_995 * 1e4, 4)
    d = tca[(1, 0, "")]                                    # the children are not counted as direct orders
    assert d["orders"] == 1 and d["fill_ratio_qty"] == round(int(direct[0]["filled_qty"]) / 2000, 6)

    out = tmp_path / "tca.html"
    r = subprocess.run([sys.executable, "-m", "engine.cli", "report", "tca", str(srv.dir / "journal"), "--config",
                        str(srv.config), "--html", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    page = out.read_text()
    csv_rows = report(srv, "tca")
    assert table_rows(page) == [list(r.values()) for r in csv_rows]        # the same figures, as text
    assert table_head(page) == list(csv_rows[0])
    pngs = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(pngs) == 3
    for p in pngs:
        data = base64.b64decode(p)
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
        w, h = struct.unpack(">II", data[16:24])
        assert w >= 400 and h >= 200


def table_head(page):
    return re.findall(r"<th>(.*?)</th>", page)


def table_rows(page):
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [[html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", tr)] for tr in re.findall(r"<tr>(.*?)</tr>", body)]


def test_report_when_matplotlib_or_pyarrow_missing_then_one_line_naming_the_extra_and_engine_never_imports_them():
    for mod, args, want in (
            ("matplotlib", "'tca', 'J', '--config', 'C', '--html', 'x.html'",
             "trading-engine report: --html needs matplotlib: pip install 'trading-engine[reports]'"),
            ("pyarrow", "'audit', 'J', '--config', 'C', '--format', 'parquet', '--out', 'x.parquet'",
             "trading-engine report: --format parquet needs pyarrow: pip install 'trading-engine[parquet]'")):
        code = (f"import sys; sys.modules['{mod}'] = None\n"
                "from engine import cli, server, reports, surveillance\n"
                "assert 'engine.tcareport' not in sys.modules\n"
                f"sys.argv = ['trading-engine', 'report', {args}]\n"
                "raise SystemExit(cli.main())")
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and r.stderr.strip() == want
    r = subprocess.run([sys.executable, "-c", "import sys; from engine import cli, server, reports, surveillance; "
                        "cli._tree(); print([m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'pyarrow')])"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "[]", r.stderr
