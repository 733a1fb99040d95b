"""The mathematics of the risk analytics (engine/analytics.py; engine/RISK.md "Analytics"): EWMA
covariance, VaR and expected shortfall by three models, and the Kupiec and Christoffersen backtests.
numpy only (the normal quantile from the standard library's statistics.NormalDist, the chi-square
tails of 1 and 2 degrees of freedom in closed form). Floats are fine here: nothing of this runs on
the order path, and what feeds the engine (the VaR limit's figures) enters it as journaled commands
from the risk worker (engine/riskworker.py).

Conventions: `returns` is an (n, d) array of simple returns per period (rows oldest first, one
column per symbol); `exposure` a (d,) array of the positions' values in the quote currency
(signed: short is negative), so a period's P&L of a linear position is exposure . r. Losses are
positive numbers: VaR and ES are reported as the loss amount. A figure for h periods is the
one-period figure x sqrt(h) (i.i.d. returns, zero mean: the square-root-of-time rule).
"""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

_N = NormalDist()


def z_score(confidence: float) -> float:
    """The standard normal quantile at `confidence` (0.95 -> 1.6449)."""
    if not 0.5 < confidence < 1:
        raise ValueError(f"confidence {confidence}: must be in (0.5, 1)")
    return _N.inv_cdf(confidence)


def ewma_cov(returns: np.ndarray, lam: float = 0.94) -> np.ndarray:
    """RiskMetrics EWMA covariance (zero mean) after the last return: the forecast for the next
    period. S_1 = r_1 r_1', S_k = lam S_(k-1) + (1 - lam) r_k r_k' for k = 2..n; the weights
    (lam^(n-1) on r_1, (1-lam) lam^(n-k) on r_k) sum to 1."""
    r = np.asarray(returns, dtype=float)
    if r.ndim == 1:
        r = r[:, None]
    if len(r) == 0:
        raise ValueError("no returns")
    if not 0 < lam < 1:
        raise ValueError(f"ewma lambda {lam}: must be in (0, 1)")
    n = len(r)
    w = (1 - lam) * lam ** np.arange(n - 1, -1, -1, dtype=float)
    w[0] = lam ** (n - 1)
    return (r * w[:, None]).T @ r


def ewma_path(returns: np.ndarray, lam: float = 0.94) -> np.ndarray:
    """The one-period variance forecasts of a single series by the same recursion: out[k] is the
    forecast for return k + 1 made after returns 0..k (len n)."""
    r = np.asarray(returns, dtype=float)
    out = np.empty(len(r))
    s = r[0] * r[0] if len(r) else 0.0
    for k in range(len(r)):
        if k:
            s = lam * s + (1 - lam) * r[k] * r[k]
        out[k] = s
    return out


def parametric(exposure: np.ndarray, cov: np.ndarray, confidence: float, horizon: float = 1.0) -> tuple[float, float]:
    """(VaR, ES) delta-normal: sigma_P = sqrt(e' S e) x sqrt(h); VaR = z_c sigma_P;
    ES = sigma_P phi(z_c) / (1 - c)."""
    e = np.asarray(exposure, dtype=float)
    var_p = float(e @ np.asarray(cov, dtype=float) @ e)
    sigma = math.sqrt(max(var_p, 0.0) * horizon)
    z = z_score(confidence)
    return z * sigma, sigma * _N.pdf(z) / (1 - confidence)


def tail_count(n: int, confidence: float) -> int:
    """k = ceil(n (1 - c)) (at least 1): the k-th worst of n outcomes is the empirical VaR, the
    mean of the k worst the ES (1e-9 absorbs float error, so 100 x 0.05 is 5, not 6)."""
    return max(1, math.ceil(n * (1 - confidence) - 1e-9))


def empirical(pnl: np.ndarray, confidence: float, horizon: float = 1.0) -> tuple[float, float]:
    """(VaR, ES) of an empirical P&L distribution: VaR = -(k-th smallest P&L), ES = -(mean of the
    k smallest), k = tail_count(n, c); both x sqrt(h)."""
    x = np.sort(np.asarray(pnl, dtype=float))
    if len(x) == 0:
        raise ValueError("no P&L outcomes")
    k = tail_count(len(x), confidence)
    s = math.sqrt(horizon)
    return -float(x[k - 1]) * s, -float(x[:k].mean()) * s


def historical(exposure: np.ndarray, returns: np.ndarray, confidence: float, horizon: float = 1.0,
               window: int | None = None) -> tuple[float, float]:
    """(VaR, ES) by historical simulation: the last `window` return vectors applied to today's
    prices, the positions revalued at each (P(1 + r) - P per unit: for the linear instruments the
    engine carries, price x qty x multiplier, that is exposure . r exactly), then empirical()."""
    r = np.asarray(returns, dtype=float)
    if window:
        r = r[-window:]
    return empirical(r @ np.asarray(exposure, dtype=float), confidence, horizon)


def factor(cov: np.ndarray) -> tuple[np.ndarray, bool]:
    """(A, clipped) with A A' = cov: the Cholesky factor, or when cov is not positive definite
    (fewer returns than symbols, perfectly correlated series, rounding) the eigen-factor
    V sqrt(max(L, 0)) of cov = V L V', i.e. of the nearest positive semi-definite matrix in the
    Frobenius norm (negative eigenvalues clipped to 0); clipped says which."""
    c = np.asarray(cov, dtype=float)
    try:
        return np.linalg.cholesky(c), False
    except np.linalg.LinAlgError:
        vals, vecs = np.linalg.eigh((c + c.T) / 2)
        return vecs * np.sqrt(np.clip(vals, 0.0, None)), True


def monte_carlo(exposure: np.ndarray, cov: np.ndarray, confidence: float, horizon: float = 1.0,
                paths: int = 10_000, seed: int = 0, student_t_df: float | None = None) -> tuple[float, float]:
    """(VaR, ES) from `paths` simulated returns r = A z sqrt(h) (A from factor(cov)): z standard
    normal, or with student_t_df = nu (> 2) multivariate Student-t scaled to the same covariance,
    z = n sqrt((nu - 2) / W), W ~ chi2(nu). numpy's PCG64 seeded with `seed`: the same figures for
    the same seed. P&L per path = exposure . r; then empirical() (at horizon 1: h is in r)."""
    e = np.asarray(exposure, dtype=float)
    a, _ = factor(cov)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((paths, len(e)))
    if student_t_df is not None:
        if student_t_df <= 2:
            raise ValueError("student_t_df must be > 2 (a finite variance)")
        w = rng.chisquare(student_t_df, size=paths)
        z *= np.sqrt((student_t_df - 2) / w)[:, None]
    pnl = (z @ (a.T @ e)) * math.sqrt(horizon)
    return empirical(pnl, confidence)


# -- many accounts at once (the risk worker: one covariance, one set of paths, for every account) --

GRID = (0.9, 0.95, 0.975, 0.99, 0.995, 0.999)   # confidences the worker publishes historical / MC figures at


def tail_table(pnl: np.ndarray, confidences, sigma: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """tail_rows() of pnl (outcomes, accounts)."""
    return tail_rows(np.ascontiguousarray(np.asarray(pnl, dtype=float).T), confidences, sigma)


def tail_rows(x: np.ndarray, confidences, sigma: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(VaR, ES), each (accounts, len(confidences)), of the P&L outcomes x (accounts, outcomes), as
    empirical() defines them (k = tail_count(n, c): VaR = -(k-th smallest), ES = -(mean of the k
    smallest)), from the tail of each account's outcomes alone.
    sigma (optional, per account): a guess of each column's standard deviation (the parametric one for
    Monte Carlo): only outcomes below a normal quantile comfortably beyond the largest tail are kept and
    sorted, and an account with fewer of them than that tail (fat tails, a bad guess) is done in full, so
    the figures are the same either way; the guess only saves the selection over every outcome."""
    n = x.shape[1]
    ks = [tail_count(n, c) for c in confidences]
    kmax = max(ks)
    tail = np.empty((x.shape[0], kmax))
    full = np.ones(x.shape[0], dtype=bool)
    if sigma is not None and kmax < n // 4:
        q = min(0.5, (kmax + 4 * math.sqrt(kmax) + 8) / n * 1.25)   # the tail we keep, with binomial slack
        cut = -_N.inv_cdf(1 - q) * np.asarray(sigma, dtype=float)
        x = np.ascontiguousarray(x)
        mask = x <= cut.astype(x.dtype)[:, None]     # (the cut's rounding only moves which rows go in full)
        counts = mask.sum(axis=1)
        ok = counts >= kmax
        if ok.any():
            rows = np.nonzero(ok)[0]
            xs, ms = (x, mask) if ok.all() else (x[rows], mask[rows])
            vals = np.compress(ms.ravel(), xs.ravel())     # row by row, each row's in order (compress: 3x
            c = counts[rows]                                 # faster than x[mask])
            width = int(c.max())
            pad = np.full(len(rows) * width, np.inf, dtype=xs.dtype)
            at = np.repeat(np.arange(len(rows)) * width - np.concatenate(([0], np.cumsum(c)[:-1])), c)
            at += np.arange(len(vals))
            pad[at] = vals                                   # row i's values at the start of pad row i
            # a full sort of the short rows: numpy's vectorised sort beats partition + sort of the tail
            tail[rows] = np.sort(pad.reshape(len(rows), width), axis=1)[:, :kmax]
            full[rows] = False
    if full.any():
        rows = np.nonzero(full)[0]
        tail[rows] = np.sort(np.partition(x[rows], kmax - 1, axis=1)[:, :kmax] if kmax < n else x[rows], axis=1)
    csum = np.cumsum(tail, axis=1)
    var = np.stack([-tail[:, k - 1] for k in ks], axis=1)
    es = np.stack([-csum[:, k - 1] / k for k in ks], axis=1)
    return var, es


def portfolio_sigmas(exposures: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """sqrt(e' S e) for each row e of exposures (accounts, symbols): the one-period sigma of each."""
    e = np.asarray(exposures, dtype=float)
    return np.sqrt(np.clip(np.einsum("ij,ij->i", e @ np.asarray(cov, dtype=float), e), 0.0, None))


def mc_returns(cov: np.ndarray, paths: int, seed: int, student_t_df: float | None = None) -> np.ndarray:
    """(paths, symbols) one-period returns r = A z as monte_carlo() draws them (the same figures for
    a seed): shared by every account of a cycle."""
    a, _ = factor(cov)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((paths, a.shape[0]))
    if student_t_df is not None:
        w = rng.chisquare(student_t_df, size=paths)
        z *= np.sqrt((student_t_df - 2) / w)[:, None]
    return z @ a.T


MC_DTYPE = np.float32   # the Monte Carlo product's precision (mc_tails; the error bound in engine/RISK.md)


def mc_tails(exposures: np.ndarray, paths_r: np.ndarray, grid, sigma: np.ndarray, chunk: int = 512,
             dtype=MC_DTYPE) -> tuple[np.ndarray, np.ndarray]:
    """tail_rows() of every account's P&L over the shared paths (paths, symbols): (VaR, ES), each (accounts,
    len(grid)). The product exposures @ paths' runs in blocks of `chunk` accounts in `dtype` (float32 by
    default: half the time of float64; both operands rounded to float32 and summed in it, the P&L of a path
    is off by at most ~d 2^-24 sum_s |e_s r_s|, in practice ~1e-6 of the VaR, see engine/RISK.md); the tails
    and ES sums in float64. An account with no exposure has VaR = ES = 0, without a product."""
    e = np.asarray(exposures, dtype=float)
    var, es = np.zeros((len(e), len(grid))), np.zeros((len(e), len(grid)))
    live = np.flatnonzero(np.any(e != 0, axis=1))
    if len(live) == 0:
        return var, es
    p = np.ascontiguousarray(np.asarray(paths_r).T, dtype=dtype)      # (symbols, paths), converted once
    el = e[live].astype(dtype)
    sig = np.asarray(sigma, dtype=float)
    for i in range(0, len(live), chunk):
        rows = live[i:i + chunk]
        var[rows], es[rows] = tail_rows(el[i:i + chunk] @ p, grid, sig[rows])
    return var, es


def backtest_many(pnl: np.ndarray, confidence: float, lam: float = 0.94) -> tuple[np.ndarray, list]:
    """backtest() of many constant portfolios at once from their P&L series pnl (periods, accounts):
    e' S_t e follows the same EWMA recursion on (e . r_t)^2, so each account's forecast is a scalar
    recursion. Returns (observations, per account the hit sequence as a (periods - 1,) int array)."""
    z = z_score(confidence)
    n = pnl.shape[0]
    if n < 2:
        return 0, [np.zeros(0, dtype=np.int64)] * pnl.shape[1]
    v = pnl[0] ** 2
    hits = np.zeros((n - 1, pnl.shape[1]), dtype=np.int64)
    for t in range(1, n):
        hits[t - 1] = -pnl[t] > z * np.sqrt(np.clip(v, 0.0, None))
        v = lam * v + (1 - lam) * pnl[t] ** 2
    return n - 1, [hits[:, i] for i in range(pnl.shape[1])]


def portfolio_figures(exposures: np.ndarray, returns: np.ndarray, confidence: float, horizon: float, lam: float,
                      hist_window: int, paths: int, seed: int, student_t_df: float | None = None,
                      grid=GRID, chunk: int = 512) -> dict:
    """Every model for every account of one cycle (the risk worker; perf/riskcycle.py times it): one
    EWMA covariance, one set of historical return vectors and one set of Monte Carlo paths shared by all
    rows of exposures (accounts, symbols). One-period figures (the horizon scales them by sqrt(h)):
    sigma (parametric), historical and Monte Carlo (VaR, ES) at each confidence of grid; and the
    parametric VaR and ES at (confidence, horizon)."""
    e = np.asarray(exposures, dtype=float)
    r = np.asarray(returns, dtype=float)
    cov = ewma_cov(r, lam)
    sigma = portfolio_sigmas(e, cov)
    z = z_score(confidence)
    out = dict(cov=cov, sigma=sigma, var=z * sigma * math.sqrt(horizon),
               es=sigma * math.sqrt(horizon) * _N.pdf(z) / (1 - confidence))
    hist = r[-hist_window:] if hist_window else r
    out["hist_var"], out["hist_es"] = tail_rows(e @ hist.T, grid, sigma)     # (the guess saves time; exact)
    out["mc_var"], out["mc_es"] = mc_tails(e, mc_returns(cov, paths, seed, student_t_df), grid, sigma, chunk)
    return out


# -- the pre-trade VaR limit (engine/RISK.md "Pre-trade VaR limit") --

def unit_var(cov: np.ndarray, confidence: float, horizon: float = 1.0) -> np.ndarray:
    """u_s = z_c sigma_s sqrt(h): the parametric VaR of one unit of exposure to symbol s alone. For
    every portfolio e, |dVaR/de_s| (the marginal VaR) <= u_s (Cauchy-Schwarz), so the parametric VaR,
    a norm, grows by at most u_s |d| when e_s moves by d: the engine's sensitivity per symbol."""
    return z_score(confidence) * np.sqrt(np.clip(np.diag(np.asarray(cov, dtype=float)), 0.0, None) * horizon)


def reachable_var_bound(pos: np.ndarray, open_buy: np.ndarray, open_sell: np.ndarray, cov: np.ndarray,
                        confidence: float, horizon: float = 1.0) -> float:
    """An upper bound of the parametric VaR of every portfolio the account can reach by fills of its
    open orders: each symbol's exposure anywhere in [pos - open_sell, pos + open_buy] (exposures in
    the quote currency at the mark, open_buy/open_sell >= 0). The smaller of two bounds, both from the
    triangle inequality: VaR(pos) + sum u_s max(ob_s, os_s), and sum u_s max(|pos + ob|, |pos - os|)
    (no diversification). Exact when nothing is open (the first) or for one symbol (the second)."""
    p, ob, os_ = (np.asarray(x, dtype=float) for x in (pos, open_buy, open_sell))
    u = unit_var(cov, confidence, horizon)
    at_pos = parametric(p, cov, confidence, horizon)[0] + float(u @ np.maximum(ob, os_))
    undiversified = float(u @ np.maximum(np.abs(p + ob), np.abs(p - os_)))
    return min(at_pos, undiversified)


def reachable_var_bounds(pos: np.ndarray, open_buy: np.ndarray, open_sell: np.ndarray, cov: np.ndarray,
                         confidence: float, horizon: float = 1.0) -> np.ndarray:
    """reachable_var_bound() of every row (accounts, symbols) at once."""
    p, ob, os_ = (np.asarray(x, dtype=float) for x in (pos, open_buy, open_sell))
    u = unit_var(cov, confidence, horizon)
    at_pos = z_score(confidence) * math.sqrt(horizon) * portfolio_sigmas(p, cov) + np.maximum(ob, os_) @ u
    return np.minimum(at_pos, np.maximum(np.abs(p + ob), np.abs(p - os_)) @ u)


# -- backtests --

def _xlogy(x: float, y: float) -> float:
    return 0.0 if x == 0 else x * math.log(y)


def chi2_sf(x: float, dof: int) -> float:
    """P(X > x) for X ~ chi-square with 1 or 2 degrees of freedom: erfc(sqrt(x/2)), exp(-x/2)."""
    if x <= 0:
        return 1.0
    if dof == 1:
        return math.erfc(math.sqrt(x / 2))
    if dof == 2:
        return math.exp(-x / 2)
    raise ValueError("1 or 2 degrees of freedom")


def kupiec(n: int, x: int, confidence: float) -> tuple[float, float]:
    """Kupiec's proportion-of-failures test of x exceedances in n: (LR_pof, p-value, chi2(1)).
    LR = -2 [ (n-x) ln(1-p) + x ln p ] + 2 [ (n-x) ln(1-x/n) + x ln(x/n) ], p = 1 - c."""
    if n <= 0:
        raise ValueError("no observations")
    p = 1 - confidence
    phat = x / n
    lr = -2 * (_xlogy(n - x, 1 - p) + _xlogy(x, p)) + 2 * (_xlogy(n - x, 1 - phat) + _xlogy(x, phat))
    lr = lr if lr > 0 else 0.0             # (not max: max(-0.0, 0.0) is -0.0)
    return lr, chi2_sf(lr, 1)


def christoffersen(hits) -> tuple[float, float]:
    """Christoffersen's independence test of an exceedance sequence (1 = loss beyond VaR):
    (LR_ind, p-value, chi2(1)) from the transition counts n_ij (state i followed by j):
    pi0 = n01/(n00+n01), pi1 = n11/(n10+n11), pi = (n01+n11)/(all);
    LR = -2 ln L(pi) + 2 ln L(pi0, pi1)."""
    h = np.asarray(hits, dtype=np.int64)
    if len(h) < 2:
        return 0.0, 1.0
    a, b = h[:-1], h[1:]
    n00 = int(((a == 0) & (b == 0)).sum())
    n01 = int(((a == 0) & (b == 1)).sum())
    n10 = int(((a == 1) & (b == 0)).sum())
    n11 = int(((a == 1) & (b == 1)).sum())
    pi0 = n01 / (n00 + n01) if n00 + n01 else 0.0
    pi1 = n11 / (n10 + n11) if n10 + n11 else 0.0
    pi = (n01 + n11) / (n00 + n01 + n10 + n11)
    l0 = _xlogy(n00 + n10, 1 - pi) + _xlogy(n01 + n11, pi)
    l1 = _xlogy(n00, 1 - pi0) + _xlogy(n01, pi0) + _xlogy(n10, 1 - pi1) + _xlogy(n11, pi1)
    lr = -2 * (l0 - l1)
    lr = lr if lr > 0 else 0.0
    return lr, chi2_sf(lr, 1)


def backtest(exposure: np.ndarray, returns: np.ndarray, confidence: float, lam: float = 0.94,
             warmup: int = 1) -> dict:
    """The parametric EWMA model's one-period VaR forecasts over the history, on today's positions
    held constant (a hypothetical-portfolio backtest): the forecast for period t uses returns before
    t only; an exceedance is a loss (-exposure . r_t) beyond it. Kupiec, Christoffersen and their
    sum (conditional coverage, chi2(2)) over the forecasts after `warmup` returns."""
    e = np.asarray(exposure, dtype=float)
    r = np.asarray(returns, dtype=float)
    pnl = r @ e
    z = z_score(confidence)
    hits = []
    if len(r) > warmup:
        s = np.outer(r[0], r[0])
        for t in range(1, len(r)):
            if t >= warmup:
                hits.append(int(-pnl[t] > z * math.sqrt(max(float(e @ s @ e), 0.0))))
            s = lam * s + (1 - lam) * np.outer(r[t], r[t])
    n, x = len(hits), int(sum(hits))
    if n == 0:
        return dict(observations=0, exceedances=0)
    lr_pof, p_pof = kupiec(n, x, confidence)
    lr_ind, p_ind = christoffersen(hits)
    return dict(observations=n, exceedances=x, expected=n * (1 - confidence), kupiec_lr=lr_pof, kupiec_p=p_pof,
                christoffersen_lr=lr_ind, christoffersen_p=p_ind, conditional_coverage_lr=lr_pof + lr_ind,
                conditional_coverage_p=chi2_sf(lr_pof + lr_ind, 2))
