"""The pre-trade VaR limit (engine/RISK.md "Pre-trade VaR limit"): the engine's check 18 against figures
worked out here, the worker's bound against every reachable portfolio (a property test), and end to
end over the protocol: worker -> VAR_UPDATE -> MAX_VAR reject, the same decisions after kill -9."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from engine import riskmodels as rm
from engine.core import Engine
from engine.risk import Risk
from protocol.codes import CommandKind, EventKind as EK, LimitKind as K, LimitScope as LS, Reject as R, Side

BUY, SELL = Side.BUY, Side.SELL
BTC, EQ = 1, 2


class Book:
    """BTC: price in cents, qty in 1e-3 (notional = price x qty / 1000 cents); EQ: price 4 decimals, x1."""

    def __init__(self):
        self.e = Engine(max_orders=1024, max_accounts=8, max_symbols=4, max_levels=128)
        self.r = Risk(8, 4, max_strategies=8, cash_decimals=2)
        self.e.add_symbol(BTC)
        self.e.add_symbol(EQ, tick_size=100)
        self.r.define_symbol(BTC, 2, 3)
        self.r.define_symbol(EQ, 4, 0)
        for a in range(1, 6):
            self.e.add_account(a)
        self.e.attach_risk(self.r)
        self.e.mark_price(BTC, 4_500_000)            # 45,000.00
        self.e.mark_price(EQ, 1_900_000)             # 190.0000
        for a in (1, 2):
            self.e.deposit(a, 100_000_000)           # 1,000,000.00
        self.clid = 0

    def order(self, a, side, qty, price=4_500_000, sym=BTC):
        self.clid += 1
        return self.e.command(kind=CommandKind.NEW_ORDER, account=a, client_order_id=self.clid, symbol=sym,
                              side=side, qty=qty, price=price, order_type=1, tif=1, stp=1)

    def var(self, account=0, symbol=0, value=0, charged=0, ts=1):
        return self.e.command(kind=CommandKind.VAR_UPDATE, account=account, symbol=symbol, qty=value, price=charged,
                              expire_ts_ns=ts)


def reason(evs):
    return R(evs[0].reason) if evs[0].kind == EK.REJECTED else 0


def test_var_check_when_an_order_would_pass_max_var_then_rejected_2019_and_passing_orders_are_charged():
    b = Book()
    b.e.set_limit(LS.DEFAULT, K.MAX_VAR, 500_000)             # 5,000.00
    assert b.var(symbol=BTC, value=50_000_000)[0].kind == EK.VAR_SET      # 5% of exposure
    assert b.var(account=1, value=100_000)[0].kind == EK.VAR_SET         # the account's VaR: 1,000.00
    # 1 BTC at the 45,000.00 mark: exposure 4,500,000 cents, incremental VaR 225,000: 1,000 + 2,250 <= 5,000
    assert reason(b.order(1, BUY, 1000)) == 0
    assert b.r.var_state(1)["var"] == 325_000
    # another 1 BTC: 3,250 + 2,250 > 5,000
    assert reason(b.order(1, BUY, 1000)) == R.MAX_VAR
    # 0.7 BTC: 3,250 + 1,575 <= 5,000, charged up (the notional 3,150,000 x 5%)
    assert reason(b.order(1, BUY, 700)) == 0
    assert b.r.var_state(1)["var"] == 482_500
    # an order that does not add risk (a sell within the long worst case) is neither checked nor charged
    assert reason(b.order(1, SELL, 1000, price=4_600_000)) == 0
    assert b.r.var_state(1)["var"] == 482_500
    # the worker's next model (it saw 225,000 charged so far): VaR 0 plus the 157,500 charged since
    assert b.var(account=1, value=0, charged=225_000, ts=2)[0].kind == EK.VAR_SET
    assert b.r.var_state(1)["var"] == 157_500
    # account 2 has no limit table entry of its own but the default applies; no sensitivity for EQ: unlimited
    assert reason(b.order(2, BUY, 10_000, price=1_900_000, sym=EQ)) == 0


def test_var_update_when_its_figures_are_impossible_then_invalid_limit_and_nothing_changes():
    b = Book()
    b.var(account=1, value=10, ts=5)
    before = b.r.var_state(1)
    assert reason(b.var(account=1, value=10, charged=1, ts=6)) == R.INVALID_LIMIT     # more than ever charged
    assert reason(b.var(account=1, value=10, ts=4)) == R.INVALID_LIMIT                # an older model
    assert reason(b.var(account=1, value=-1, ts=6)) == R.INVALID_LIMIT
    assert reason(b.var(account=1, symbol=BTC, value=1)) == R.INVALID_LIMIT            # both set
    assert reason(b.var(account=7, value=1)) == R.UNKNOWN_ACCOUNT
    assert reason(b.var(symbol=3, value=1)) == R.UNKNOWN_SYMBOL
    assert b.r.var_state(1) == before
    assert reason(b.var(ts=9)) == 0 and b.r.var_state(1)["engine_model_ts_ns"] == 9


def test_var_state_when_exported_and_imported_then_the_same_decisions():
    b = Book()
    b.e.set_limit(LS.DEFAULT, K.MAX_VAR, 400_000)
    b.var(symbol=BTC, value=50_000_000)
    b.var(account=1, value=100_000)
    assert reason(b.order(1, BUY, 1000)) == 0
    c = Book()
    c.r.import_state({k: v.copy() for k, v in b.r.export_state().items()})
    assert c.r.state_bytes() == b.r.state_bytes()
    assert reason(b.order(1, BUY, 1000)) == reason(c.order(1, BUY, 1000)) == R.MAX_VAR
    # a snapshot from before the VaR limit: no model, no sensitivity, nothing charged; it loads
    old = {k: v.copy() for k, v in b.r.export_state().items() if ".var_" not in k}
    d = Book()
    d.r.import_state(old)
    assert d.r.var_state(1) == dict(var=0, charged=0, model_ts_ns=0, engine_model_ts_ns=0)
    assert d.r.var_sensitivity(BTC) == 0 and reason(d.order(1, BUY, 1000)) == 0


# -- the bound (hypothesis): never below the VaR of any portfolio the account can reach --

def engine_charge(sens_ppb: int, added_cash: float) -> float:
    """What the engine charges: ceil(sensitivity x exposure / 1e9), here on a float exposure."""
    return math.ceil(sens_ppb * added_cash / 1e9)


def vertices_max(cov, z, lo, hi):
    """The largest parametric VaR over the box [lo, hi] (convex: at a vertex)."""
    best = 0.0
    for corner in itertools.product(*zip(lo, hi)):
        e = np.array(corner)
        best = max(best, z * math.sqrt(max(float(e @ cov @ e), 0.0)))
    return best


@settings(max_examples=600, deadline=None)
@given(d=st.integers(1, 4), seed=st.integers(0, 2 ** 32 - 1), n_orders=st.integers(0, 6),
       confidence=st.sampled_from([0.9, 0.95, 0.99]))
def test_bound_when_orders_add_risk_then_model_plus_charges_is_at_least_the_var_of_every_reachable_portfolio(
        d, seed, n_orders, confidence):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(d, d)) * rng.uniform(0.001, 0.05, size=d)
    cov = f @ f.T                                         # any covariance (possibly near singular)
    if rng.random() < 0.3:
        cov[0, :] = cov[:, 0] = 0.0                       # a symbol without variance
    z = rm.z_score(confidence)
    pos = rng.integers(-1000, 1000, size=d) * rng.integers(0, 2, size=d) * 100.0
    ob = rng.integers(0, 1000, size=d) * rng.integers(0, 2, size=d) * 100.0
    os_ = rng.integers(0, 1000, size=d) * rng.integers(0, 2, size=d) * 100.0
    base = rm.reachable_var_bound(pos, ob, os_, cov, confidence)
    lo, hi = pos - os_, pos + ob
    assert base >= vertices_max(cov, z, lo, hi) * (1 - 1e-9) - 1e-6
    u = rm.unit_var(cov, confidence)
    sens = [math.ceil(x * 1e9) for x in u]
    charged, over, uncharged = 0.0, 0.0, 0.0
    for _ in range(n_orders):
        s = int(rng.integers(0, d))
        added = float(rng.integers(1, 1000)) * 100.0
        worst = max(abs(hi[s]), abs(lo[s]))
        if rng.integers(0, 2) == 0:
            hi[s] += added
        else:
            lo[s] -= added
        if max(abs(hi[s]), abs(lo[s])) > worst:        # adds risk: checked and charged
            charged += engine_charge(sens[s], added)
            over += u[s] * added
        else:                                           # does not: neither (the documented slack)
            uncharged += u[s] * added
    true = vertices_max(cov, z, lo, hi)
    # conservative up to the documented slack: the orders that did not add risk, u_s x added each
    assert base + charged + uncharged >= true * (1 - 1e-9) - 1e-6
    if uncharged == 0:
        assert base + charged >= true * (1 - 1e-9) - 1e-6     # every order added risk: never below
    # and its error: the charges overstate the growth by at most sum u_s x added (+ rounding)
    assert base + charged - true <= (base - vertices_max(cov, z, pos - os_, pos + ob)) + over + n_orders + 1e-6


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1))
def test_bound_when_nothing_is_open_then_it_is_the_parametric_var_exactly(seed):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(3, 3)) * 0.02
    cov = f @ f.T
    pos = rng.normal(size=3) * 1e5
    assert rm.reachable_var_bound(pos, np.zeros(3), np.zeros(3), cov, 0.95) == pytest.approx(
        rm.parametric(pos, cov, 0.95)[0], rel=1e-12)


# -- end to end: a live server, the worker, the protocol --

import asyncio  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from tests.server_proc import ROOT  # noqa: E402
from tests.test_risk_server import HASH, PASSWORD, RISK, Admin, connect, fund  # noqa: E402

Z95 = 1.6448536269514722
PERIOD_S = 1e-6                        # every admin mark is a period of its own
HORIZON_DAYS = 1e-11                   # h = 1e-11 x 86400 / 1e-6 = 0.864 periods
LIMIT_RISK = RISK + 'max_var = "2000"\n'
LIMIT_ANALYTICS = f"""
[analytics]
period_s = {PERIOD_S}
horizon_days = {HORIZON_DAYS}
"""
MARKS = ["50000.00", "51000.00", "50490.00", "52000.00", "50960.00", "50000.00"]


def worker_once(srv, *extra):
    r = subprocess.run([sys.executable, "-m", "engine.cli", "risk", "worker", str(srv.dir / "journal"), "--config",
                        str(srv.config), "--admin-port", str(srv.admin_port), "--user", "ops", "--once", *extra],
                       cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT), TRADING_ENGINE_ADMIN_PASSWORD=PASSWORD))
    assert r.returncode == 0, r.stderr
    return r


def test_max_var_when_the_worker_journals_its_model_then_orders_beyond_the_limit_are_rejected_also_after_kill_9(
        server_factory):
    srv = server_factory(risk=LIMIT_RISK, admins={"ops": HASH}, extra=LIMIT_ANALYTICS).start()
    ad = Admin(srv)
    fund(ad, acct1="1000000", acct2="1000000")
    for price in MARKS:
        ad.ok("mark", symbol="BTCUSDT", price=price)
    worker_once(srv)
    # the sensitivity by hand: the EWMA variance of the marks' returns, z x sigma x sqrt(h)
    prices = [float(p) for p in MARKS]
    r = [b / a - 1 for a, b in zip(prices, prices[1:])]
    s = r[0] ** 2
    for x in r[1:]:
        s = 0.94 * s + 0.06 * x * x
    u = Z95 * math.sqrt(s * HORIZON_DAYS * 86400 / PERIOD_S)
    charge = math.ceil(math.ceil(u * 1e9) * 5_000_000 / 1e9)        # 1 BTC at the 50,000.00 mark, in cents
    assert 100_000 < charge < 200_000                               # 1,000..2,000: one fits in 2,000, two do not

    async def orders():
        async with connect(srv, 1) as c1:
            first = await c1.place("BTCUSDT", "buy", "1.000", price="50000.00")
            second = await c1.place("BTCUSDT", "buy", "1.000", price="50000.00")
            small = await c1.place("BTCUSDT", "buy", "0.001", price="50000.00")
            return first.kind, (second.kind, second.reason), small.kind
    assert asyncio.run(orders()) == ("accepted", ("rejected", "MAX_VAR"), "accepted")
    # the worker's next cycle: account 1 now has 1.001 open (its bound, with what was charged since)
    worker_once(srv)

    async def again():
        async with connect(srv, 1) as c1:
            r = await c1.place("BTCUSDT", "buy", "1.000", price="50000.00")
            return r.kind, getattr(r, "reason", None)
    assert asyncio.run(again()) == ("rejected", "MAX_VAR")
    srv.kill9()
    srv.start()
    assert asyncio.run(again()) == ("rejected", "MAX_VAR")            # the same decision after kill -9
    # replay gives the same rejections: the journal replayed through a fresh engine (events compared)
    from engine import analytics, config as cfgmod
    book = analytics.read(str(srv.dir / "journal"), cfgmod.load(srv.config))
    st = book.eng.risk.var_state(1)
    assert st["model_ts_ns"] > 0 and st["var"] > 0
    from engine.journal_tool import open_journal
    j = open_journal(str(srv.dir / "journal"))
    try:
        reasons = [int(e["reason"]) for _, evs in j.read_from(1) for e in evs if int(e["kind"]) == EK.REJECTED]
    finally:
        j.env.close()
    assert reasons.count(R.MAX_VAR) == 3


def marked_server(server_factory):
    """A server with the analytics config, accounts 1 and 2 funded and BTCUSDT's mark history (the risk
    worker's input), and its Admin."""
    from tests.test_analytics import ANALYTICS, MARKS
    srv = server_factory(risk=RISK, admins={"ops": HASH}, extra=ANALYTICS).start()
    ad = Admin(srv)
    fund(ad, acct1="40000", acct2="1000000")
    for price in MARKS:
        ad.ok("mark", symbol="BTCUSDT", price=price)
    return srv, ad


def test_risk_queries_when_the_worker_published_then_the_sdk_gets_the_analytics_figures(server_factory):
    from decimal import Decimal as D
    from tests.test_analytics import risk_cli
    srv, ad = marked_server(server_factory)

    async def trade():
        async with connect(srv, 1) as c1, connect(srv, 2) as c2:
            assert (await c1.var()) is None                       # no model yet
            assert (await c1.risk_metrics()).models["parametric"].var is None
            assert (await c2.place("BTCUSDT", "sell", "2.000", price="50000.00")).kind == "accepted"
            assert (await c1.place("BTCUSDT", "buy", "2.000", price="50000.00")).kind == "accepted"
    asyncio.run(trade())
    worker_once(srv)
    cli = risk_cli(srv, "metrics", "--account", "1")[1]
    stress = risk_cli(srv, "stress", "--account", "1")[1]

    async def queries():
        async with connect(srv, 1) as c1:
            return (await c1.risk_metrics(), await c1.var(), await c1.var(0.99, 0.5),
                    await c1.var(0.96, model="historical"), await c1.stress(-0.4, "BTCUSDT"))
    m, v, v99, hist, st = asyncio.run(queries())
    # the same journal, the same models: the CLI's figures to the cent (Monte Carlo: the same paths, the
    # worker's product in float32 (riskmodels.mc_tails): within 1e-6 of the CLI's float64 for one symbol)
    assert (m.exposure, m.equity, m.leverage) == (D("100000.00"), D(cli["equity"]), D("2.5"))
    assert m.models["parametric"].var == D(cli["models"]["parametric"]["var"]) == v.var
    assert m.models["parametric"].es == D(cli["models"]["parametric"]["es"])
    assert m.models["historical"].var == D(cli["models"]["historical"]["var"])
    mc_cli = D(cli["models"]["montecarlo"]["var"])
    assert abs(m.models["montecarlo"].var - mc_cli) <= D("0.02") + mc_cli * D("1e-6")
    assert m.backtest_observations == cli["backtest"]["observations"] == 4
    assert (m.max_var, m.limit_use) == (None, None) and m.model_ts_ns > 0 and m.limit_model_ts_ns > 0
    # the bound the check would use: this model's, for 2 BTC long with nothing open, is its parametric VaR
    assert abs(m.var_limit - m.models["parametric"].var) <= D("0.01")
    # parametric at another confidence and horizon: exact scaling; historical: the grid point at or above
    want = float(cli["models"]["parametric"]["var"]) / Z95 * 2.3263478740408408 * math.sqrt(0.5)
    assert float(v99.var) == pytest.approx(want, abs=0.02) and v99.confidence == D("0.99")
    assert hist.confidence == D("0.975") and hist.model == "historical"
    # stress: the configured scenarios as the CLI computes them, then the ad-hoc -40% on BTCUSDT
    assert [(s.name, s.pnl, s.below_maintenance) for s in st[:2]] == \
        [(x["name"], D(x["pnl"]), x["below_maintenance"]) for x in stress["scenarios"]]
    assert (st[2].name, st[2].pnl, st[2].equity, st[2].maintenance_margin, st[2].below_maintenance) == \
        ("ad-hoc", D("-40000.00"), D("0.00"), D("3000.00"), True)


def test_worker_when_it_follows_the_journal_then_each_cycle_journals_the_model_and_serves_its_gauges(server_factory):
    import signal
    import socket
    import time
    import urllib.request
    srv = server_factory(risk=LIMIT_RISK, admins={"ops": HASH}, extra=LIMIT_ANALYTICS).start()
    ad = Admin(srv)
    fund(ad, acct1="1000000")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    w = subprocess.Popen([sys.executable, "-m", "engine.cli", "risk", "worker", str(srv.dir / "journal"), "--config",
                          str(srv.config), "--admin-port", str(srv.admin_port), "--user", "ops",
                          "--metrics-port", str(port)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=dict(os.environ, PYTHONPATH=str(ROOT), TRADING_ENGINE_ADMIN_PASSWORD=PASSWORD))
    try:
        for price in MARKS:                              # the marks arrive while it runs: it follows them
            ad.ok("mark", symbol="BTCUSDT", price=price)

        def scrape():
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            except OSError:
                return {}
            return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
                    if line.startswith("te_risk_worker")}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:                # until a cycle saw every mark
            g = scrape()
            if g.get("te_risk_worker_model_seq", 0) >= 8 and g.get("te_risk_worker_rows_sent_total", 0) >= 3:
                break
            time.sleep(0.2)
        assert g["te_risk_worker_rows_rejected_total"] == 0 and g["te_risk_worker_model_age_seconds"] >= 0
        assert g["te_risk_worker_accounts_over_max_var"] == 0
        assert set(g) >= {"te_risk_worker_cycle_seconds", "te_risk_worker_model_seq"}   # no per-account series

        async def orders():
            async with connect(srv, 1) as c1:
                first = await c1.place("BTCUSDT", "buy", "1.000", price="50000.00")
                second = await c1.place("BTCUSDT", "buy", "1.000", price="50000.00")
                return first.kind, second.kind, getattr(second, "reason", None)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:                # the sensitivity journaled by a cycle
            got = asyncio.run(orders())
            if got[1] == "rejected":
                break
            time.sleep(0.5)
        assert got[1:] == ("rejected", "MAX_VAR")
    finally:
        w.send_signal(signal.SIGTERM)
        out, err = w.communicate(timeout=30)
    assert w.returncode == 0, err


def test_risk_report_when_written_then_html_with_well_formed_charts_of_each_account(server_factory, tmp_path):
    import xml.etree.ElementTree as ET
    from tests.test_analytics import risk_cli
    srv, ad = marked_server(server_factory)

    async def trade():
        async with connect(srv, 1) as c1, connect(srv, 2) as c2:
            await c2.place("BTCUSDT", "sell", "2.000", price="50000.00")
            await c1.place("BTCUSDT", "buy", "2.000", price="50000.00")
    asyncio.run(trade())
    out = tmp_path / "report.html"
    r = subprocess.run([sys.executable, "-m", "engine.cli", "risk", "report", str(srv.dir / "journal"), "--config",
                        str(srv.config), "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    var1 = risk_cli(srv, "var", "--account", "1")[1]["models"]["historical"]["var"]
    assert "<h2>Account 1</h2>" in text and "<h2>Account 2</h2>" in text
    assert f"VaR {float(var1):,.2f}" in text                     # the historical VaR marked on its chart
    assert "crypto -40%" in text and "exceedances in 4" in text   # stress bars, the backtest's 4 forecasts
    svgs = [s[:s.index("</svg>") + 6] for s in text.split("<svg")[1:]]
    assert len(svgs) >= 6
    for s in svgs:
        ET.fromstring("<svg" + s)                                   # each chart is well-formed SVG
    # an ad-hoc scenario from the command line, after the configured ones (by hand: 2 BTC long at 50,000 on
    # 40,000 of cash: -40% loses 40,000, leaving 0 against maintenance 5% x 2 x 30,000 = 3,000)
    st = risk_cli(srv, "stress", "--account", "1", "--shock", "BTCUSDT=-0.4")[1]["scenarios"]
    assert [x["name"] for x in st] == ["crypto -40%", "btc +10%, vol x3", "ad-hoc"]
    assert (st[2]["pnl"], st[2]["equity"], st[2]["maintenance_margin"], st[2]["below_maintenance"]) == \
        ("-40000.00", "0.00", "3000.00", True)


def test_worker_cycle_when_its_rows_exceed_one_request_then_sent_in_parts_all_applied(server_factory, monkeypatch):
    from engine import analytics, config as cfgmod, riskworker
    from engine.journal_tool import open_journal
    srv = server_factory(risk=LIMIT_RISK, admins={"ops": HASH}, extra=LIMIT_ANALYTICS).start()
    ad = Admin(srv)
    for price in MARKS:
        ad.ok("mark", symbol="BTCUSDT", price=price)
    monkeypatch.setattr(riskworker, "ROWS_PER_REQUEST", 2)      # as 400 rows would be with 400+ accounts
    cfg = cfgmod.load(srv.config)
    tail, j = analytics.Tail(cfg), open_journal(str(srv.dir / "journal"))
    admin = riskworker.Admin("127.0.0.1", srv.admin_port, "ops", PASSWORD)
    try:
        res = riskworker.cycle(tail, j, admin, riskworker.Gauges(), 0.95, HORIZON_DAYS)
        assert res["rows"] == res["applied"] >= 6 and res["rejected"] == []  # BTCUSDT, 4 accounts, the time
        tail.follow(j)
        risk = tail.eng.risk
        assert risk.var_sensitivity(1) > 0 and all(risk.var_state(a)["model_ts_ns"] > 0 for a in (1, 2, 3, 4))
        again = riskworker.cycle(tail, j, admin, riskworker.Gauges(), 0.95, HORIZON_DAYS)
        assert again["rows"] == 1                      # nothing changed: the model's time alone
    finally:
        admin.close()
        j.env.close()
