"""`trading-engine risk report JOURNAL_PATH --config FILE [--out FILE] [--account N]`: one HTML file
with, per account, the P&L distribution (historical simulation) with VaR and ES marked, the parametric
VaR backtest over time (each period's P&L against the forecast, exceedances marked), and the stress
scenarios; the figures are engine/analytics.py's (the same replay, the same models).

Charts are inline SVG written here (no plotting dependency: a report is a few hundred shapes; the file
opens anywhere and diffs as text). Reads the journal read-only, as every `risk` subcommand; writes only
--out.
"""
from __future__ import annotations

import html
import math

import numpy as np

from engine import analytics, riskmodels as rm

W, H, PAD = 640, 220, 36


def _scale(lo: float, hi: float, a: float, b: float):
    if hi <= lo:
        hi = lo + 1.0
    return lambda v: a + (v - lo) / (hi - lo) * (b - a)


def _frame(title: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
            f'font-family="sans-serif" font-size="11"><rect width="{W}" height="{H}" fill="#fff" stroke="#ccc"/>'
            f'<text x="{PAD}" y="16" font-weight="bold">{html.escape(title)}</text>' + "".join(body) + "</svg>")


def histogram_svg(pnl: np.ndarray, var: float, es: float, title: str) -> str:
    """Bars of the P&L outcomes; VaR and ES as vertical lines at -VaR and -ES (losses are negative P&L)."""
    if len(pnl) == 0:
        return _frame(title + " (no returns)", [])
    lo, hi = float(min(pnl.min(), -es)), float(max(pnl.max(), 0.0))
    counts, edges = np.histogram(pnl, bins=min(40, max(5, len(pnl) // 5)), range=(lo, hi))
    x = _scale(lo, hi, PAD, W - PAD)
    y = _scale(0, float(counts.max()) or 1.0, H - PAD, 28)
    body = [f'<rect x="{x(a):.1f}" y="{y(c):.1f}" width="{max(x(b) - x(a) - 1, 1):.1f}" height="{H - PAD - y(c):.1f}" '
            f'fill="{"#d9534f" if b <= -var else "#5b8bd9"}"/>' for a, b, c in zip(edges[:-1], edges[1:], counts)]
    for v, name, color in ((-var, f"VaR {var:,.2f}", "#b00"), (-es, f"ES {es:,.2f}", "#600")):
        body.append(f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="24" y2="{H - PAD}" stroke="{color}" '
                    f'stroke-dasharray="4 2"/><text x="{x(v) + 3:.1f}" y="{36 if "VaR" in name else 50}" '
                    f'fill="{color}">{name}</text>')
    body.append(f'<text x="{PAD}" y="{H - 10}">P&amp;L {lo:,.2f}</text>'
                f'<text x="{W - PAD}" y="{H - 10}" text-anchor="end">{hi:,.2f}</text>')
    return _frame(title, body)


def backtest_svg(pnl: np.ndarray, forecast: np.ndarray, title: str) -> str:
    """Each period's P&L (dots; red beyond the VaR) and the negated one-period VaR forecast (a line)."""
    if len(pnl) == 0:
        return _frame(title + " (no forecasts yet)", [])
    lo = float(min(pnl.min(), (-forecast).min()))
    hi = float(max(pnl.max(), 0.0))
    x = _scale(0, max(len(pnl) - 1, 1), PAD, W - PAD)
    y = _scale(lo, hi, H - PAD, 28)
    pts = " ".join(f"{x(i):.1f},{y(-f):.1f}" for i, f in enumerate(forecast))
    body = [f'<polyline points="{pts}" fill="none" stroke="#b00"/>']
    for i, (p, f) in enumerate(zip(pnl, forecast)):
        body.append(f'<circle cx="{x(i):.1f}" cy="{y(p):.1f}" r="2.5" fill="{"#d00" if -p > f else "#345"}"/>')
    body.append(f'<line x1="{PAD}" x2="{W - PAD}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#999"/>')
    return _frame(title, body)


def stress_svg(rows: list[dict], title: str) -> str:
    """One horizontal bar per scenario: its P&L (red when the account would fall below maintenance)."""
    if not rows:
        return _frame(title + " (no scenarios configured)", [])
    m = max(abs(r["pnl"]) for r in rows) or 1.0
    x = _scale(-m, m, 200, W - PAD)
    step = (H - 40) / len(rows)
    body = [f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="24" y2="{H - 8}" stroke="#999"/>']
    for i, r in enumerate(rows):
        top = 28 + i * step
        a, b = sorted((x(0), x(r["pnl"])))
        body.append(f'<text x="{PAD}" y="{top + step / 2 + 4:.1f}">{html.escape(r["name"][:28])}</text>'
                    f'<rect x="{a:.1f}" y="{top + 2:.1f}" width="{max(b - a, 1):.1f}" height="{max(step - 6, 2):.1f}" '
                    f'fill="{"#d9534f" if r["below_maintenance"] else "#5cb85c"}"/>'
                    f'<text x="{W - PAD}" y="{top + step / 2 + 4:.1f}" text-anchor="end">{r["pnl"]:,.2f}</text>')
    return _frame(title, body)


def _money(x, cd: int) -> str:
    return "-" if x is None else analytics.money(x, cd, True)


def account_section(book: analytics.Book, account: int, params: analytics.Params) -> str:
    a = book.cfg.analytics
    cd = book.cfg.risk.cash_decimals
    rep = analytics.var_report(book, account, params)
    stress = analytics.stress_report(book, account, params)
    cols, qty, mark, mult = analytics.holdings(book, account)
    e = qty * mark * mult
    r = book.returns(cols) if cols else np.zeros((0, 0))
    h = params.periods(book.cfg)
    pnl = (r[-a.hist_window:] @ e) * math.sqrt(h) if len(r) else np.zeros(0)
    hist = rep["models"].get("historical") or {}
    parts = [f"<h2>Account {account}</h2>",
             "<table><tr><th>model</th><th>VaR</th><th>ES</th><th>returns</th></tr>" + "".join(
                 f"<tr><td>{m}</td><td>{_money(v['var'], cd)}</td><td>{_money(v['es'], cd)}</td>"
                 f"<td>{v['returns']}</td></tr>" for m, v in rep["models"].items()) + "</table>",
             f"<p>exposure: {', '.join(f'{s} {x:,.2f}' for s, x in zip(rep['symbols'], rep['exposure'])) or 'none'}"
             f"; confidence {params.confidence}, {params.horizon_days:g} days</p>"]
    if hist.get("var") is not None and len(pnl):
        parts.append(histogram_svg(pnl, hist["var"], hist["es"], "P&L distribution (historical simulation)"))
    else:
        parts.append(histogram_svg(np.zeros(0), 0, 0, "P&L distribution"))
    fc, realized = [], []
    if len(r) > 1:
        z = rm.z_score(params.confidence)
        p1 = r @ e
        v = p1[0] ** 2
        for t in range(1, len(r)):
            fc.append(z * math.sqrt(max(v, 0.0)))
            realized.append(p1[t])
            v = a.ewma_lambda * v + (1 - a.ewma_lambda) * p1[t] ** 2
    bt = rep.get("backtest") or {}
    title = "VaR backtest (parametric, one period)"
    if bt.get("observations"):
        title += (f": {bt['exceedances']} exceedances in {bt['observations']}, Kupiec p {bt['kupiec_p']:.3f}, "
                  f"Christoffersen p {bt['christoffersen_p']:.3f}")
    parts.append(backtest_svg(np.array(realized), np.array(fc), title))
    parts.append(stress_svg(stress["scenarios"], "Stress scenarios: P&L (red: below maintenance)"))
    return "\n".join(parts)


STYLE = ("body{font-family:sans-serif;margin:2em;max-width:720px}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}svg{display:block;margin:8px 0}")


def write(book: analytics.Book, params: analytics.Params, path: str, only: int | None = None) -> int:
    accts = analytics.accounts(book, only)
    doc = ["<!doctype html><html><head><meta charset='utf-8'><title>Risk report</title>",
           f"<style>{STYLE}</style></head><body><h1>Risk report</h1>",
           f"<p>journal to seq {book.last_seq}; {len(book.closes)} periods of {book.cfg.analytics.period_s:g} s; "
           f"quote currency, {book.cfg.risk.cash_decimals} decimals</p>"]
    doc += [account_section(book, a, params) for a in accts]
    doc.append("</body></html>")
    with open(path, "w") as f:
        f.write("\n".join(doc))
    return len(accts)
