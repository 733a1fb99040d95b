"""Risk analytics (engine/riskmodels.py, engine/analytics.py, `trading-engine risk`): every figure is
checked against a computation written out here, independently of the code under test (the normal
quantiles and the chi-square values as numbers, the recursions as loops), and end to end on the
journal of a live risk server, read beside it."""
import asyncio
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from engine import config as cfgmod, riskmodels as rm
from tests.server_proc import ROOT
from tests.test_risk_server import HASH, RISK, Admin, connect, fund

Z95 = 1.6448536269514722           # standard normal quantile at 0.95
Z99 = 2.3263478740408408
PHI95 = math.exp(-Z95 ** 2 / 2) / math.sqrt(2 * math.pi)


def ewma_loop(r, lam):
    """RiskMetrics EWMA by its recursion: seeded with the first return's outer product."""
    r = np.atleast_2d(np.asarray(r, dtype=float).T).T
    s = np.outer(r[0], r[0])
    for k in range(1, len(r)):
        s = lam * s + (1 - lam) * np.outer(r[k], r[k])
    return s


# -- parametric --

def test_parametric_var_when_one_position_then_z_sigma_exposure_sqrt_h():
    r = np.array([0.01, -0.02, 0.015, -0.005, 0.03, -0.012])
    var = ewma_loop(r, 0.94)[0, 0]
    for exposure in (250_000.0, -250_000.0):       # a short position has the same VaR
        got, es = rm.parametric(np.array([exposure]), rm.ewma_cov(r, 0.94), 0.95, horizon=10)
        want = Z95 * math.sqrt(var) * abs(exposure) * math.sqrt(10)
        assert got == pytest.approx(want, rel=1e-12)
        assert es == pytest.approx(math.sqrt(var) * abs(exposure) * math.sqrt(10) * PHI95 / 0.05, rel=1e-12)
    got99, _ = rm.parametric(np.array([1.0]), np.array([[0.0004]]), 0.99)
    assert got99 == pytest.approx(Z99 * 0.02, rel=1e-12)


def test_parametric_var_when_two_assets_then_portfolio_sigma_from_the_covariance():
    cov = np.array([[0.0004, 0.00012], [0.00012, 0.0009]])      # vols 2% and 3%, correlation 0.2
    e = np.array([100_000.0, -50_000.0])
    # e1^2 s11 + e2^2 s22 + 2 e1 e2 s12 = 4,000,000 + 2,250,000 - 1,200,000
    sigma = math.sqrt(5_050_000.0)
    v, es = rm.parametric(e, cov, 0.95)
    assert v == pytest.approx(Z95 * sigma, rel=1e-12)
    assert es == pytest.approx(sigma * PHI95 / 0.05, rel=1e-12)


def test_ewma_cov_when_compared_with_the_recursion_then_equal():
    rng = np.random.default_rng(7)
    r = rng.normal(0, 0.01, size=(60, 3))
    for lam in (0.94, 0.97):
        assert np.allclose(rm.ewma_cov(r, lam), ewma_loop(r, lam), rtol=1e-12, atol=0)
    path = rm.ewma_path(r[:, 0], 0.94)
    assert path[-1] == pytest.approx(ewma_loop(r[:, 0], 0.94)[0, 0], rel=1e-12)
    assert path[0] == r[0, 0] ** 2 and path[1] == pytest.approx(0.94 * r[0, 0] ** 2 + 0.06 * r[1, 0] ** 2)


# -- Monte Carlo --

def test_monte_carlo_when_1e5_paths_then_within_its_standard_error_of_parametric():
    cov = np.array([[0.0004, 0.00012], [0.00012, 0.0009]])
    e = np.array([100_000.0, -50_000.0])
    sigma = math.sqrt(5_050_000.0)
    n, p = 100_000, 0.05
    # the standard error of an empirical p-quantile of N(0, sigma^2): sqrt(p(1-p)/n) / phi(z) x sigma
    se = math.sqrt(p * (1 - p) / n) / PHI95 * sigma
    v, es = rm.monte_carlo(e, cov, 0.95, paths=n, seed=11)
    assert abs(v - Z95 * sigma) < 3 * se
    assert abs(es - sigma * PHI95 / 0.05) < 4 * se
    assert rm.monte_carlo(e, cov, 0.95, paths=n, seed=11) == (v, es)         # deterministic for a seed
    assert rm.monte_carlo(e, cov, 0.95, paths=n, seed=12) != (v, es)


def test_monte_carlo_when_student_t_then_its_scaled_quantile():
    # t with 5 dof scaled to unit variance: the 0.99 quantile is 3.36493 x sqrt(3/5) = 2.6065, fatter than 2.3263
    v, _ = rm.monte_carlo(np.array([1.0]), np.array([[1.0]]), 0.99, paths=200_000, seed=3, student_t_df=5)
    assert v == pytest.approx(3.36493 * math.sqrt(3 / 5), abs=0.03)
    assert v > Z99 + 0.2


def test_factor_when_covariance_not_positive_definite_then_eigenvalues_clipped():
    # two perfectly correlated series (rank 1) and a tiny negative eigenvalue from rounding
    cov = np.array([[0.0004, 0.0006], [0.0006, 0.0009]]) - np.eye(2) * 1e-12
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(cov)
    a, clipped = rm.factor(cov)
    assert clipped and np.allclose(a @ a.T, cov, atol=1e-11)
    # long one, short 1.5 of the other perfectly correlated asset (vol 3% = 1.5 x 2%): a hedge, VaR ~ 0
    v, _ = rm.monte_carlo(np.array([150_000.0, -100_000.0]), cov, 0.95, paths=10_000, seed=1)
    assert abs(v) < 1.0
    # an inconsistent matrix (a and c each 0.9 correlated with b, but uncorrelated): eigenvalues 1 and
    # 1 +- 0.9 sqrt(2); clipping the negative one leaves [0, 1, 1 + 0.9 sqrt(2)] at Frobenius distance
    # 0.9 sqrt(2) - 1 (the nearest positive semi-definite matrix)
    bad = np.array([[1.0, 0.9, 0.0], [0.9, 1.0, 0.9], [0.0, 0.9, 1.0]])
    a, clipped = rm.factor(bad)
    assert clipped and np.allclose(np.linalg.eigvalsh(a @ a.T), [0, 1, 1 + 0.9 * math.sqrt(2)], atol=1e-12)
    assert np.linalg.norm(a @ a.T - bad) == pytest.approx(0.9 * math.sqrt(2) - 1, rel=1e-12)
    a2, clipped2 = rm.factor(np.array([[0.0004, 0.0], [0.0, 0.0009]]))
    assert not clipped2 and np.allclose(a2, [[0.02, 0], [0, 0.03]])


def _exact_tails(e: np.ndarray, paths_r: np.ndarray, grid) -> tuple[np.ndarray, np.ndarray]:
    """The straightforward computation: per account, float64 P&L of every path, empirical() at each confidence."""
    out = [[rm.empirical(paths_r @ row, c) for c in grid] for row in e]
    return np.array([[v for v, _ in r] for r in out]), np.array([[s for _, s in r] for r in out])


def test_tail_rows_when_sigma_guess_good_bad_or_absent_then_exactly_the_empirical_figures():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 4000)) * rng.uniform(1, 100, (40, 1))
    x[:5] = rng.standard_t(2.5, (5, 4000)) * 10                  # fat tails
    sd = x.std(axis=1)
    exact = [[rm.empirical(row, c) for c in rm.GRID] for row in x]
    ev, es = np.array([[a for a, _ in r] for r in exact]), np.array([[b for _, b in r] for r in exact])
    # a guess 0.5x (rows done in full: too few outcomes below the cut), 3x (more kept), right, or none
    for guess in (sd, sd * 0.5, sd * 3, np.where(np.arange(40) % 2, sd * 0.3, sd), None):
        v, s_ = rm.tail_rows(x, rm.GRID, guess)
        assert np.array_equal(v, ev)                             # order statistics: the same numbers
        assert np.allclose(s_, es, rtol=1e-12, atol=0)           # means: summed in another order
        v32, s32 = rm.tail_rows(x.astype(np.float32), rm.GRID, guess)
        assert np.array_equal(v32, ev.astype(np.float32)) and np.allclose(s32, es, rtol=1e-6, atol=0)


def test_mc_tails_when_float32_product_then_within_the_stated_error_of_float64_empirical():
    rng = np.random.default_rng(9)
    d, n = 30, 10_000
    load = rng.normal(0, 1, (d, 3))
    r = (rng.normal(0, 0.01, (300, 3)) @ load.T) * 0.3 + rng.normal(0, 0.01, (300, d))
    e = rng.normal(0, 1e5, (200, d)) * (rng.random((200, d)) < 0.2)        # sparse holdings
    e[:10] = 0.0                                                             # no positions
    e[10] = 0.0
    e[10, :2] = [1e6, -1e6]                                                  # a large long-short pair
    e[11] = rng.normal(0, 1e5, d)                                            # dense
    cov = rm.ewma_cov(r)
    f = rm.portfolio_figures(e, r, 0.95, 1.0, 0.94, 250, n, 4, chunk=64)
    ev, es = _exact_tails(e, rm.mc_returns(cov, n, 4), rm.GRID)
    # the stated bound (engine/RISK.md): within 1e-5 of the undiversified sigma sum_s |e_s| sigma_s
    scale = np.abs(e) @ np.sqrt(np.diag(cov))
    assert np.all(np.abs(f["mc_var"] - ev) <= 1e-5 * scale[:, None])
    assert np.all(np.abs(f["mc_es"] - es) <= 1e-5 * scale[:, None])
    assert np.all(f["mc_var"][:10] == 0) and np.all(f["mc_es"][:10] == 0)
    worst = np.max(np.abs(f["mc_var"][10:] - ev[10:]) / ev[10:])
    assert 0 < worst < 1e-5                                                  # float32: close, not equal
    # historical (float64, the sigma guess only skips work): each account's historical() (the product
    # summed in another order)
    hist = [[rm.historical(row, r, c, window=250) for c in rm.GRID] for row in e]
    assert np.allclose(f["hist_var"], np.array([[v for v, _ in h] for h in hist]), rtol=1e-12, atol=1e-9)
    assert np.allclose(f["hist_es"], np.array([[s_ for _, s_ in h] for h in hist]), rtol=1e-12, atol=1e-9)
    # deterministic for a seed, float64 on request equals the straightforward computation
    g = rm.portfolio_figures(e, r, 0.95, 1.0, 0.94, 250, n, 4, chunk=64)
    assert np.array_equal(f["mc_var"], g["mc_var"]) and np.array_equal(f["mc_es"], g["mc_es"])
    v64, s64 = rm.mc_tails(e, rm.mc_returns(cov, n, 4), rm.GRID, f["sigma"], 64, np.float64)
    assert np.allclose(v64, ev, rtol=1e-9, atol=1e-6) and np.allclose(s64, es, rtol=1e-9, atol=1e-6)


# -- historical --

def test_historical_var_when_fixed_series_then_the_documented_order_statistic():
    pnl = np.array([3, -7, 1, -2, 5, -11, 4, 0, -1, 2, 6, -4, 8, -3, 9, -5, 7, -6, 10, -9], dtype=float)
    # 20 outcomes at 0.90: k = ceil(20 x 0.10) = 2: the second worst (-9); ES = mean(-11, -9) = -10
    v, es = rm.historical(np.array([1.0]), pnl[:, None], 0.90)
    assert (v, es) == (9.0, 10.0)
    # 100 outcomes at 0.95: k = 5 (100 x 0.05 in floats is 5.000000000000004): the fifth worst
    series = np.arange(100, dtype=float) - 50                    # -50 .. 49
    v, es = rm.historical(np.array([2.0]), series[:, None], 0.95, horizon=4)
    assert v == (46 * 2) * 2 and es == ((50 + 49 + 48 + 47 + 46) / 5 * 2) * 2
    # the window: only the last 10 returns (-> 40 .. 49): k = 1, the worst is 40, a gain: VaR -40
    v, _ = rm.historical(np.array([1.0]), series[:, None], 0.95, window=10)
    assert v == -40.0


# -- backtests --

def test_kupiec_when_worked_values_then_equal():
    # 250 days of a 99% VaR with 10 exceedances: the textbook case (Jorion), LR 12.955, reject at 5%
    lr, p = rm.kupiec(250, 10, 0.99)
    assert lr == pytest.approx(12.9555, abs=1e-4) and p == pytest.approx(0.000319, abs=1e-6)
    lr, p = rm.kupiec(250, 0, 0.99)                       # none: -2 x 250 ln 0.99
    assert lr == pytest.approx(5.02517, abs=1e-5)
    lr, p = rm.kupiec(100, 5, 0.95)                       # exactly as expected
    assert lr == pytest.approx(0.0, abs=1e-12) and p == pytest.approx(1.0)
    assert rm.chi2_sf(3.841459, 1) == pytest.approx(0.05, abs=1e-6)
    assert rm.chi2_sf(5.991465, 2) == pytest.approx(0.05, abs=1e-6)


def test_christoffersen_when_hits_cluster_then_worked_statistic():
    lr, p = rm.christoffersen([0, 0, 1, 1, 0, 0, 0, 1, 0, 0])   # n00 4, n01 2, n10 2, n11 1: pi0 = pi1 = pi
    assert lr == pytest.approx(0.0, abs=1e-12) and p == pytest.approx(1.0)
    lr, p = rm.christoffersen([0, 0, 0, 1, 1, 1, 0, 0, 0, 0])   # n00 5, n01 1, n10 1, n11 2
    l0 = 6 * math.log(2 / 3) + 3 * math.log(1 / 3)
    l1 = 5 * math.log(5 / 6) + math.log(1 / 6) + math.log(1 / 3) + 2 * math.log(2 / 3)
    assert lr == pytest.approx(-2 * (l0 - l1), rel=1e-12) and lr == pytest.approx(2.23144, abs=1e-5)
    assert p == pytest.approx(math.erfc(math.sqrt(lr / 2)))


def test_backtest_when_constant_position_then_counts_exceedances_of_the_ewma_forecast():
    r = np.array([0.01, -0.01, 0.01, -0.05, 0.002, 0.001, -0.03])
    e = np.array([1000.0])
    hits, s = [], r[0] ** 2
    for t in range(1, len(r)):
        hits.append(int(-1000 * r[t] > Z95 * math.sqrt(s) * 1000))
        s = 0.94 * s + 0.06 * r[t] ** 2
    assert hits == [0, 0, 1, 0, 0, 1]
    bt = rm.backtest(e, r[:, None], 0.95)
    assert (bt["observations"], bt["exceedances"]) == (6, 2)
    assert bt["kupiec_lr"] == pytest.approx(rm.kupiec(6, 2, 0.95)[0])


# -- config --

def test_analytics_config_when_unknown_key_or_bad_scenario_then_refused(tmp_path):
    base = '[[symbols]]\nid = 1\nname = "BTCUSDT"\n'
    p = tmp_path / "c.toml"
    p.write_text(base + "[analytics]\nconfidence = 0.99\nbogus = 1\n")
    with pytest.raises(cfgmod.ConfigError, match="bogus"):
        cfgmod.load(p)
    p.write_text(base + '[analytics]\n[[analytics.scenarios]]\nname = "x"\nshocks = { ETHUSDT = -0.3 }\n')
    with pytest.raises(cfgmod.ConfigError, match="ETHUSDT"):
        cfgmod.load(p)
    p.write_text(base + '[analytics]\nconfidence = 0.99\ngroups = { crypto = ["BTCUSDT"] }\n'
                 '[[analytics.scenarios]]\nname = "x"\nshocks = { crypto = -0.3 }\n')
    a = cfgmod.load(p).analytics
    assert a.confidence == 0.99 and a.scenarios[0].shocks == {"crypto": -0.3} and a.mc_paths == 10_000


def test_scenario_shocks_when_symbol_and_its_group_shocked_then_the_symbol_own_wins(tmp_path):
    from engine.analytics import scenario_shocks
    p = tmp_path / "c.toml"
    p.write_text('[[symbols]]\nid = 1\nname = "BTCUSDT"\n[[symbols]]\nid = 2\nname = "ETHUSDT"\n'
                 '[[symbols]]\nid = 3\nname = "AAPL"\n'
                 '[analytics]\ngroups = { crypto = ["BTCUSDT", "ETHUSDT"] }\n'
                 '[[analytics.scenarios]]\nname = "x"\nshocks = { crypto = -0.3, ETHUSDT = -0.5 }\n')
    cfg = cfgmod.load(p)
    assert scenario_shocks(cfg, cfg.analytics.scenarios[0]) == {1: -0.3, 2: -0.5}


# -- end to end: the journal of a live server --

PERIOD_S = 1e-6                     # one mark per period: every admin command is its own period
ANALYTICS = f"""
[analytics]
period_s = {PERIOD_S}
hist_window = 250
groups = {{ crypto = ["BTCUSDT"] }}

[[analytics.scenarios]]
name = "crypto -40%"
shocks = {{ crypto = -0.40 }}

[[analytics.scenarios]]
name = "btc +10%, vol x3"
shocks = {{ BTCUSDT = 0.10 }}
vol_multiplier = 3.0
"""
MARKS = ["50000.00", "51000.00", "50490.00", "52000.00", "50960.00", "50000.00"]


def risk_cli(srv, *args):
    r = subprocess.run([sys.executable, "-m", "engine.cli", "risk", *args, str(srv.dir / "journal"), "--config",
                        str(srv.config), "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr
    return {a["account"]: a for a in json.loads(r.stdout)["accounts"]}


def test_risk_var_when_run_beside_a_live_server_then_the_figures_from_its_marks_and_positions(server_factory):
    srv = server_factory(risk=RISK, admins={"ops": HASH}, extra=ANALYTICS).start()
    ad = Admin(srv)
    fund(ad, acct1="40000", acct2="1000000")
    for price in MARKS:
        ad.ok("mark", symbol="BTCUSDT", price=price)

    async def trade():
        async with connect(srv, 1) as c1, connect(srv, 2) as c2:
            assert (await c2.place("BTCUSDT", "sell", "2.000", price="50000.00")).kind == "accepted"
            assert (await c1.place("BTCUSDT", "buy", "2.000", price="50000.00")).kind == "accepted"
            assert (await c1.positions())[0].position == 2
    asyncio.run(trade())
    assert srv.proc.poll() is None
    prices = [float(p) for p in MARKS]
    r = np.array([b / a - 1 for a, b in zip(prices, prices[1:])])   # 0.02, -0.01, ...
    s = r[0] ** 2
    for x in r[1:]:
        s = 0.94 * s + 0.06 * x * x
    h = 1.0 * 86400 / PERIOD_S                                        # horizon_days 1 in periods of 1 us
    want = Z95 * math.sqrt(s) * 100_000 * math.sqrt(h)               # 2 BTC at the mark 50,000
    hist = -min(100_000 * r) * math.sqrt(h)                           # 5 returns at 0.95: k = 1, the worst
    got = risk_cli(srv, "var")
    assert srv.proc.poll() is None                                    # read beside it, the server still runs
    for acct, sign in ((1, 1), (2, -1)):
        a = got[acct]
        assert a["symbols"] == ["BTCUSDT"] and a["exposure"] == [f"{sign * 100000}.00"] and a["returns"] == 5
        assert float(a["models"]["parametric"]["var"]) == pytest.approx(want, abs=0.02)
        assert a["models"]["parametric"]["var"] == f"{math.ceil(round(want * 100, 6)) / 100:.2f}"
    assert float(got[1]["models"]["historical"]["var"]) == pytest.approx(hist, abs=0.02)
    assert float(got[2]["models"]["historical"]["var"]) == pytest.approx(-min(-100_000 * r) * math.sqrt(h), abs=0.02)
    assert got[3]["models"]["parametric"]["var"] == "0.00"                 # no position
    mc = float(got[1]["models"]["montecarlo"]["var"])
    assert mc == pytest.approx(want, rel=0.05)                              # 10,000 paths: se ~2%
    # a lower confidence and a shorter horizon scale the same way
    got = risk_cli(srv, "var", "--model", "parametric", "--confidence", "0.99", "--horizon-days", "0.5")
    assert list(got[1]["models"]) == ["parametric"]
    assert float(got[1]["models"]["parametric"]["var"]) == pytest.approx(want / Z95 * Z99 * math.sqrt(0.5), abs=0.02)
    # stress, by hand: acct1 long 2 at 50,000 on 40,000 of cash (no fees): -40% loses 40,000, leaving 0
    # equity against maintenance 5% x 2 x 30,000 = 3,000: below; acct2 short 2 gains it
    st = risk_cli(srv, "stress")
    crash1, rally1 = st[1]["scenarios"]
    assert (crash1["name"], crash1["pnl"], crash1["equity"], crash1["maintenance_margin"]) == \
        ("crypto -40%", "-40000.00", "0.00", "3000.00")
    assert crash1["below_maintenance"] is True
    crash2, rally2 = st[2]["scenarios"]
    assert (crash2["pnl"], crash2["below_maintenance"]) == ("40000.00", False)
    assert (rally1["pnl"], rally2["pnl"]) == ("10000.00", "-10000.00")
    assert float(rally1["stressed_var"]) == pytest.approx(3 * want, abs=0.05)
    assert "stressed_var" not in crash1
    # metrics: the figures and the backtest
    m = risk_cli(srv, "metrics", "--account", "1")
    assert list(m) == [1] and (m[1]["equity"], m[1]["state"], m[1]["max_var"]) == ("40000.00", "active", None)
    assert m[1]["backtest"]["observations"] == 4
    # another config than the server's is refused, not measured
    off = srv.dir / "risk_off.toml"
    off.write_text(srv.config.read_text().replace("enabled = true", "enabled = false", 1))
    r = subprocess.run([sys.executable, "-m", "engine.cli", "risk", "var", str(srv.dir / "journal"), "--config", str(off)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 1 and "risk is off" in r.stderr
    tick = srv.dir / "tick.toml"                      # BTCUSDT on another tick: the marks are rejected
    tick.write_text(srv.config.read_text().replace("tick_size = 1\n", "tick_size = 7\n", 1))
    r = subprocess.run([sys.executable, "-m", "engine.cli", "risk", "var", str(srv.dir / "journal"), "--config", str(tick)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 1 and "diverged" in r.stderr, r.stderr
