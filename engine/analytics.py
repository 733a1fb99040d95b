"""`trading-engine risk var|stress|metrics|report JOURNAL_PATH`: risk analytics off the engine thread
(`risk report`: engine/riskreport.py; `risk worker`, the pre-trade VaR limit's live model: engine/riskworker.py).

Reads: the journal, as one more read-only LMDB reader (engine/journal_tool.open_journal; safe beside
the live server), replayed through a fresh engine built from --config (journal_tool.replayed: the
events are checked against the journal's, so another config than the server's is refused). From it:
- per symbol, the close of each period (`[analytics] period_s` of journal time: the commands' receive
  times) of its mark price (the MARK events: the price the engine values positions at; it follows
  the last trade every risk.mark_interval_ms unless marks are external). A row is a period in which
  some symbol's mark moved; a symbol that did not move keeps its close (a zero return);
- per account, the positions and figures of the replayed engine's risk state at the journal's end.
Computes (engine/riskmodels.py; formulas and parameters in engine/RISK.md "Analytics"): VaR and
expected shortfall by the parametric EWMA, historical and Monte Carlo models, the named stress
scenarios of [[analytics.scenarios]], and the Kupiec and Christoffersen backtests.
Writes: nothing (the report, on stdout); the pre-trade VaR limit's figures enter the engine as journaled
commands from the risk worker (engine/riskworker.py), which reads the journal through Tail below. It
keeps no state of its own: every run reads the journal from its start.
Money in the engine is integers; here it is floats in the quote currency (off the order path),
reported with risk.cash_decimals: VaR, ES and margins rounded up, P&L down (RISK.md's rule).
"""
from __future__ import annotations

import argparse
import math
import sys

import msgspec
import numpy as np

from engine import config as cfgmod, riskmodels as rm
from protocol.codes import AccountState, EventKind, LimitKind

MODELS = ("parametric", "historical", "montecarlo")


class AnalyticsError(Exception):
    """The analytics cannot run on this journal and config (one line, why)."""


class Book:
    """What the analytics read from one journal: the period closes and the replayed engine."""

    def __init__(self, cfg, eng, closes, times, last_seq, last_ts):
        self.cfg = cfg
        self.eng = eng
        self.symbols = list(cfg.symbols)          # column i of closes is symbols[i]
        self.col = {s.id: i for i, s in enumerate(self.symbols)}
        self.closes = closes                      # (rows, symbols) prices in the quote currency, NaN before the first
        self.times = times                        # each row's period start, ns of journal time
        self.last_seq, self.last_ts = last_seq, last_ts

    def returns(self, cols) -> np.ndarray:
        """Simple returns of the columns, over the rows where all of them have a close before and after."""
        c = self.closes[:, cols]
        if len(c) < 2:
            return np.zeros((0, len(cols)))
        r = c[1:] / c[:-1] - 1
        return r[np.isfinite(r).all(axis=1)]


class Tail:
    """The replayed engine and the period closes, brought forward batch by batch: read() feeds it the
    whole journal once; the risk worker (engine/riskworker.py) feeds it what was committed since."""

    def __init__(self, cfg):
        from engine.server import engine_from_config
        self.cfg = cfg
        self.eng = engine_from_config(cfg)
        if self.eng.risk is None:
            raise AnalyticsError("risk is off in this config ([risk] enabled = false): no positions to measure")
        self.period_ns = max(1, round(cfg.analytics.period_s * 1e9))
        self.col = {s.id: i for i, s in enumerate(cfg.symbols)}
        self.scale = np.array([10.0 ** -s.price_decimals for s in cfg.symbols])
        self.rows: dict[int, dict[int, int]] = {}     # period -> {column: last mark in it}
        self.last_seq = self.last_ts = 0

    def take(self, cmds, events) -> None:
        """One part the engine was fed (its events checked): the marks into the closes."""
        marks = events[events["kind"] == EventKind.MARK]
        if len(marks):
            ts = cmds["ts_ns"][np.searchsorted(cmds["seq"], marks["seq"])]
            for period, sym, price in zip((ts // self.period_ns).tolist(), marks["symbol"].tolist(),
                                          marks["price"].tolist()):
                if sym in self.col:
                    self.rows.setdefault(period, {})[self.col[sym]] = price
        self.eng.clear_events()
        self.last_seq, self.last_ts = int(cmds["seq"][-1]), int(cmds["ts_ns"][-1])

    def follow(self, j, limit: int | None = None) -> int:
        """Feed what the journal committed after last_seq (at most `limit` records); the commands fed."""
        from engine.journal_tool import ReplayDiverged
        n = 0
        for i, (cmds, events) in enumerate(j.read_from(self.last_seq + 1)):
            cmds = np.ascontiguousarray(cmds[cmds["seq"] > self.last_seq])
            if not len(cmds):
                continue
            self.eng.feed(cmds)
            want = events[events["seq"] >= cmds["seq"][0]]
            if self.eng.events_view().tobytes() != want.tobytes():
                raise ReplayDiverged(int(cmds["seq"][0]))
            self.take(cmds, want)
            n += len(cmds)
            if limit is not None and i + 1 >= limit:
                break
        return n

    def book(self) -> "Book":
        closes = np.full((len(self.rows), len(self.col)), np.nan)
        prev = np.full(len(self.col), np.nan)
        for i, period in enumerate(sorted(self.rows)):
            for c, price in self.rows[period].items():
                prev[c] = price
            closes[i] = prev                      # a symbol without a mark in this period keeps its close
        times = np.array(sorted(self.rows), dtype=np.int64) * self.period_ns
        return Book(self.cfg, self.eng, closes * self.scale, times, self.last_seq, self.last_ts)


def read(path: str, cfg, key: bytes | None = None, until_seq: int | None = None) -> Book:
    """Replay the journal at `path` (read-only) under `cfg`; the closes and the engine at its end."""
    from engine.journal_tool import open_journal, replayed
    tail = Tail(cfg)
    j = open_journal(path, key)
    try:
        for cmds, events in replayed(j, tail.eng, until_seq):
            tail.take(cmds, events)
    finally:
        j.env.close()
    return tail.book()


class Params(msgspec.Struct, kw_only=True):
    confidence: float
    horizon_days: float
    models: tuple[str, ...] = MODELS

    def periods(self, cfg) -> float:
        """The horizon in return periods: VaR scales by its square root."""
        return self.horizon_days * 86400.0 / cfg.analytics.period_s


def accounts(book: Book, only: int | None = None) -> list[int]:
    defined = np.nonzero(book.eng.acct_arr["defined"])[0]
    return [int(a) for a in defined if a and only in (None, int(a))]


def holdings(book: Book, account: int):
    """(columns, quantities, marks, multipliers) of the account's non-zero positions, in the units
    people use: qty in the symbol's units, marks in the quote currency."""
    cols, qty, mark, mult = [], [], [], []
    for p in book.eng.risk.positions(account):
        if p["position"] == 0 or p["symbol"] not in book.col:
            continue
        s = book.symbols[book.col[p["symbol"]]]
        cols.append(book.col[p["symbol"]])
        qty.append(p["position"] / 10 ** s.qty_decimals)
        mark.append(p["mark"] / 10 ** s.price_decimals)
        mult.append(s.multiplier)
    return cols, np.array(qty), np.array(mark), np.array(mult, dtype=float)


def var_report(book: Book, account: int, params: Params) -> dict:
    """VaR and ES by each model, the positions' exposure and the parametric backtest, one account."""
    a = book.cfg.analytics
    cols, qty, mark, mult = holdings(book, account)
    exposure = qty * mark * mult
    out = dict(account=account, symbols=[book.symbols[c].name for c in cols],
               exposure=exposure.tolist(), gross_exposure=float(np.abs(exposure).sum()),
               net_exposure=float(exposure.sum()), confidence=params.confidence, horizon_days=params.horizon_days,
               models={})
    if not cols:
        out["models"] = {m: dict(var=0.0, es=0.0, returns=0) for m in params.models}
        return out
    r = book.returns(cols)
    out["returns"] = len(r)
    h = params.periods(book.cfg)
    if len(r) == 0:
        out["models"] = {m: dict(var=None, es=None, returns=0) for m in params.models}
        out["note"] = "no returns yet: each held symbol needs marks in two periods"
        return out
    cov = rm.ewma_cov(r, a.ewma_lambda)
    for m in params.models:
        if m == "parametric":
            v, es = rm.parametric(exposure, cov, params.confidence, h)
            n = len(r)
        elif m == "historical":
            v, es = rm.historical(exposure, r, params.confidence, h, a.hist_window)
            n = min(len(r), a.hist_window)
        else:
            v, es = rm.monte_carlo(exposure, cov, params.confidence, h, a.mc_paths, a.mc_seed, a.mc_student_t_df)
            n = len(r)
        out["models"][m] = dict(var=v, es=es, returns=n)
    out["backtest"] = rm.backtest(exposure, r, params.confidence, a.ewma_lambda)
    return out


def scenario_shocks(cfg, scenario) -> dict[int, float]:
    """symbol id -> the scenario's relative price move (the symbol's own, else its group's)."""
    by_name = {s.name: s.id for s in cfg.symbols}
    out = {}
    for key, shock in scenario.shocks.items():
        if key in cfg.analytics.groups:
            for name in cfg.analytics.groups[key]:
                if name not in scenario.shocks:
                    out[by_name[name]] = shock
        else:
            out[by_name[key]] = shock
    return out


def stress_report(book: Book, account: int, params: Params) -> dict:
    """Per scenario: the account's P&L at the shocked marks, its equity and maintenance margin after,
    whether it would fall below maintenance (be liquidated: RISK.md "Liquidation"), and with a
    vol_multiplier the stressed parametric VaR (every volatility x m, correlations kept)."""
    cfg, risk = book.cfg, book.eng.risk
    cd = 10.0 ** cfg.risk.cash_decimals
    pf = risk.portfolio(account)
    cols, qty, mark, mult = holdings(book, account)
    ids = [book.symbols[c].id for c in cols]
    mm_bps = np.array([risk.effective(int(LimitKind.MAINTENANCE_MARGIN), account, s) for s in ids], dtype=float)
    base = None
    out = dict(account=account, equity=pf["equity"] / cd, maintenance_margin=pf["maintenance_margin"] / cd,
               scenarios=[])
    for sc in cfg.analytics.scenarios:
        shocks = scenario_shocks(cfg, sc)
        move = np.array([shocks.get(s, 0.0) for s in ids])
        pnl = float((qty * mark * mult * move).sum())
        equity = pf["equity"] / cd + pnl
        mm = float((np.abs(qty) * mark * (1 + move) * mult * mm_bps / 10000).sum())
        row = dict(name=sc.name, pnl=pnl, equity=equity, maintenance_margin=mm, below_maintenance=equity < mm)
        if sc.vol_multiplier != 1.0:
            if base is None:
                base = var_report(book, account, Params(confidence=params.confidence,
                                                        horizon_days=params.horizon_days, models=("parametric",)))
            v = base["models"]["parametric"]["var"]
            row["stressed_var"] = None if v is None else v * sc.vol_multiplier
        out["scenarios"].append(row)
    return out


def metrics_report(book: Book, account: int, params: Params) -> dict:
    """The account's figures (cash, equity, exposure, leverage, margins, state) with its VaR report."""
    cd = 10.0 ** book.cfg.risk.cash_decimals
    pf = book.eng.risk.portfolio(account)
    out = var_report(book, account, params)
    out.update(cash=pf["cash"] / cd, equity=pf["equity"] / cd, unrealized=pf["unrealized"] / cd,
               initial_margin=pf["initial_margin"] / cd, maintenance_margin=pf["maintenance_margin"] / cd,
               leverage=None if pf["leverage_bps"] is None else pf["leverage_bps"] / 10000,
               state=AccountState(pf["state"]).name.lower() if pf["state"] else "active")
    max_var = book.eng.risk.effective(int(LimitKind.MAX_VAR), account, 0)
    out["max_var"] = None if max_var is None else max_var / cd
    return out


# -- output: money with the cash decimals (risk up, P&L down) --

UP = {"var", "es", "stressed_var", "maintenance_margin", "initial_margin", "max_var", "gross_exposure"}
MONEY = UP | {"pnl", "equity", "cash", "unrealized", "net_exposure", "exposure"}


def money(x: float, decimals: int, up: bool) -> str:
    units = round(x * 10 ** decimals, 6)            # float noise must not move a whole cash unit
    v = math.ceil(units) if up else math.floor(units)
    sign, v = ("-" if v < 0 else ""), abs(v)
    return f"{sign}{v // 10 ** decimals}.{v % 10 ** decimals:0{decimals}d}" if decimals else f"{sign}{v}"


def _fmt(obj, decimals, key=None):
    if isinstance(obj, dict):
        return {k: _fmt(v, decimals, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fmt(v, decimals, key) for v in obj]
    if key in MONEY and isinstance(obj, float):
        return money(obj, decimals, key in UP)
    return obj


def _print_table(kind: str, reports: list[dict], book: Book) -> None:
    cfg = book.cfg
    print(f"journal to seq {book.last_seq}; {len(book.closes)} periods of {cfg.analytics.period_s:g} s; "
          f"quote currency, {cfg.risk.cash_decimals} decimals")
    for rep in reports:
        print(f"\naccount {rep['account']}")
        if kind == "stress":
            print(f"  equity {rep['equity']}  maintenance margin {rep['maintenance_margin']}")
            for sc in rep["scenarios"]:
                extra = f"  stressed VaR {sc['stressed_var']}" if "stressed_var" in sc else ""
                print(f"  {sc['name']:<24} P&L {sc['pnl']:>16}  equity {sc['equity']:>16}  maintenance "
                      f"{sc['maintenance_margin']:>14}{'  BELOW MAINTENANCE' if sc['below_maintenance'] else ''}"
                      + extra)
            continue
        if kind == "metrics":
            for k in ("state", "cash", "equity", "unrealized", "initial_margin", "maintenance_margin", "leverage",
                      "max_var"):
                print(f"  {k:<20} {rep[k]}")
        print(f"  positions: " + (", ".join(f"{s} {e}" for s, e in zip(rep["symbols"], rep["exposure"])) or "none")
              + f"  (gross {rep['gross_exposure']}, net {rep['net_exposure']})")
        print(f"  {'model':<12} {'VaR':>16} {'ES':>16} returns  (confidence {rep['confidence']}, "
              f"{rep['horizon_days']:g} days)")
        for m, v in rep["models"].items():
            print(f"  {m:<12} {v['var'] if v['var'] is not None else '-':>16} "
                  f"{v['es'] if v['es'] is not None else '-':>16} {v['returns']}")
        if rep.get("note"):
            print(f"  ({rep['note']})")
        bt = rep.get("backtest")
        if kind == "metrics" and bt and bt.get("observations"):
            print(f"  backtest (parametric, 1 period): {bt['exceedances']} exceedances in {bt['observations']} "
                  f"(expected {bt['expected']:.1f}); Kupiec LR {bt['kupiec_lr']:.3f} p {bt['kupiec_p']:.3f}; "
                  f"Christoffersen LR {bt['christoffersen_lr']:.3f} p {bt['christoffersen_p']:.3f}")


# -- the command line --

def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sub = p.add_subparsers(dest="action", required=True)
    helps = {"var": "VaR and expected shortfall per account and model",
             "stress": "P&L of the configured [[analytics.scenarios]] per account; who falls below maintenance",
             "metrics": "the account's figures, VaR and ES, and the VaR backtest (Kupiec, Christoffersen)",
             "report": "an HTML report with inline SVG charts: P&L distribution with VaR/ES, the VaR backtest over "
                       "time, the stress scenarios"}
    for name, text in helps.items():
        x = sub.add_parser(name, help=text, description=text)
        x.add_argument("path", metavar="JOURNAL_PATH")
        x.add_argument("--config", help="the server's config (default: the embedded demo config): symbols, "
                                        "accounts, risk and [analytics]")
        x.add_argument("--account", type=int, help="this account only")
        x.add_argument("--model", choices=[*MODELS, "all"], default="all")
        x.add_argument("--confidence", type=float, help="default: analytics.confidence")
        x.add_argument("--horizon-days", type=float, help="default: analytics.horizon_days")
        x.add_argument("--until", type=int, metavar="SEQ", help="the journal up to this command seq")
        if name in ("stress", "report"):
            x.add_argument("--shock", action="append", default=[], metavar="NAME=MOVE",
                           help="an ad-hoc scenario after the configured ones: a symbol's or group's relative move "
                                "(BTCUSDT=-0.3; repeat for several)")
            x.add_argument("--vol-multiplier", type=float, default=1.0, help="the ad-hoc scenario's volatility x")
        if name == "report":
            x.add_argument("--out", default="risk_report.html", help="the HTML file to write")
        else:
            x.add_argument("--json", action="store_true", help="one JSON document (money as strings)")
    p.set_defaults(run=run)
    from engine import riskworker
    riskworker.add_parser(sub)
    return p


def run(args) -> int:
    from engine.journal import JournalError, JournalRefused
    from engine.journal_tool import ReplayDiverged
    try:
        cfg = cfgmod.load(args.config)
        key = cfgmod.journal_key(cfg.journal)
    except (cfgmod.ConfigError, OSError) as e:
        print(f"trading-engine risk: {e}", file=sys.stderr)
        return 2
    confidence = cfg.analytics.confidence if args.confidence is None else args.confidence
    horizon = cfg.analytics.horizon_days if args.horizon_days is None else args.horizon_days
    if not 0.5 < confidence < 1 or horizon <= 0:
        print("trading-engine risk: --confidence in (0.5, 1), --horizon-days > 0", file=sys.stderr)
        return 2
    params = Params(confidence=confidence, horizon_days=horizon,
                    models=MODELS if args.model == "all" else (args.model,))
    shocks = getattr(args, "shock", [])
    if shocks:
        try:
            moves = {k: float(v) for k, v in (x.split("=", 1) for x in shocks)}
        except ValueError:
            print("trading-engine risk: --shock NAME=MOVE (BTCUSDT=-0.3)", file=sys.stderr)
            return 2
        known = {s.name for s in cfg.symbols} | set(cfg.analytics.groups)
        if set(moves) - known or any(m <= -1 for m in moves.values()):
            print(f"trading-engine risk: --shock: symbols or groups of the config, moves above -1 "
                  f"(unknown: {sorted(set(moves) - known)})", file=sys.stderr)
            return 2
        adhoc = cfgmod.ScenarioConfig(name="ad-hoc", shocks=moves, vol_multiplier=args.vol_multiplier)
        cfg = msgspec.structs.replace(cfg, analytics=msgspec.structs.replace(
            cfg.analytics, scenarios=[*cfg.analytics.scenarios, adhoc]))
    try:
        book = read(args.path, cfg, key, args.until)
    except ReplayDiverged as e:
        print(f"trading-engine risk: {e} (is --config the server's config?)", file=sys.stderr)
        return 1
    except (JournalError, JournalRefused, AnalyticsError) as e:
        print(f"trading-engine risk: {e}", file=sys.stderr)
        return 1
    if args.action == "report":
        from engine import riskreport
        n = riskreport.write(book, params, args.out, args.account)
        print(f"wrote {args.out} ({n} accounts)")
        return 0
    report = {"var": var_report, "stress": stress_report, "metrics": metrics_report}[args.action]
    reports = [_fmt(report(book, a, params), cfg.risk.cash_decimals) for a in accounts(book, args.account)]
    if args.json:
        sys.stdout.write(msgspec.json.encode(dict(seq=book.last_seq, ts_ns=book.last_ts, periods=len(book.closes),
                                                  accounts=reports)).decode() + "\n")
    else:
        _print_table(args.action, reports, book)
    return 0
