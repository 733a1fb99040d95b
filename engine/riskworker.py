"""`trading-engine risk worker JOURNAL_PATH --config FILE`: the live risk worker of the pre-trade VaR
limit (engine/RISK.md "Pre-trade VaR limit").

Reads: the journal, as one more read-only LMDB reader beside the server (engine/journal_tool.open_journal),
replayed through a fresh engine built from --config and checked against the journaled events
(engine/analytics.Tail), polled every `[analytics] worker_interval_ms`.
Computes, every cycle, at `[analytics] confidence` and `horizon_days`, from the EWMA covariance of the
symbols' period returns (engine/riskmodels.py):
- per symbol, the VaR sensitivity u_s = z sigma_s sqrt(h) (VaR per unit of exposure, an upper bound of
  every portfolio's marginal VaR in that symbol), in 1e-9 units;
- per account, an upper bound of the parametric VaR of every portfolio its open orders can reach
  (riskmodels.reachable_var_bound), in cash units, with the engine's VaR charges (var_charged) at the
  model's seq.
Writes back: journaled commands only: VAR_UPDATE rows sent to the server's admin listener (action
`var_update`, as an operator of [[admins]]: --user, password from TRADING_ENGINE_ADMIN_PASSWORD), the rows
whose values differ from the engine's (as replayed) and one row with the model's time, each cycle.
Gauges (prometheus-client, --metrics-port; no per-account label): cycle seconds, the model's age, the
journal seq modelled, rows sent, accounts whose VaR bound is above MAX_VAR.
Resumes: it keeps no state of its own: a restart replays the journal from its start (the engine state it
compares with, var_charged included, is the journal's).
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import socket
import sys
import time

import msgspec
import numpy as np

from engine import analytics, config as cfgmod, riskmodels as rm, riskqueries
from protocol.codes import LimitKind

PPB = 10 ** 9                      # sensitivities are 1e-9 of a cash unit of VaR per cash unit of exposure
ROWS_PER_REQUEST = 400             # a var_update request stays well below the admin listener's 64 KiB line
                                   # (a row is at most ~120 bytes of JSON); each request is one journal commit


def model(book: analytics.Book, confidence: float, horizon_days: float):
    """(columns, u) of the symbols with returns: u[i] the VaR per unit of exposure of column cols[i]."""
    c = book.closes
    cols = [i for i in range(c.shape[1]) if np.isfinite(c[:, i]).sum() >= 2] if len(c) else []
    if not cols:
        return [], np.zeros(0), None
    r = book.returns(cols)
    if len(r) == 0:
        return [], np.zeros(0), None
    cov = rm.ewma_cov(r, book.cfg.analytics.ewma_lambda)
    h = horizon_days * 86400.0 / book.cfg.analytics.period_s
    return cols, rm.unit_var(cov, confidence, h), (cov, h)


class Holdings:
    """Every account's exposures at the marks, in the quote currency, one column per configured symbol:
    pos (signed), open buy, open sell, and the positions' maintenance margin (read once per cycle)."""

    def __init__(self, book: analytics.Book):
        self.accounts = analytics.accounts(book)
        n, d = len(self.accounts), len(book.symbols)
        self.pos, self.ob, self.os_, self.mm = (np.zeros((n, d)) for _ in range(4))
        self.equity = np.zeros(n)
        risk = book.eng.risk
        cd = 10.0 ** book.cfg.risk.cash_decimals
        units = [s.multiplier / 10 ** (s.price_decimals + s.qty_decimals) for s in book.symbols]
        for i, a in enumerate(self.accounts):
            self.equity[i] = risk.portfolio(a)["equity"] / cd
            for p in risk.positions(a):
                c = book.col.get(p["symbol"])
                if c is None:
                    continue
                unit = p["mark"] * units[c]
                self.pos[i, c], self.ob[i, c], self.os_[i, c] = (p["position"] * unit, p["open_buy"] * unit,
                                                                  p["open_sell"] * unit)
                self.mm[i, c] = p["maintenance_margin"] / cd


def rows(book: analytics.Book, hold: Holdings, confidence: float, horizon_days: float, changed_only: bool = True):
    """The VAR_UPDATE rows [account, symbol, value, charged_at, model_seq, model_ts_ns] of one cycle
    (only those that change the engine's state, with changed_only) and the accounts' VaR bounds
    (cash units) by account."""
    risk = book.eng.risk
    cd = 10 ** book.cfg.risk.cash_decimals
    seq, ts = book.last_seq, book.last_ts
    cols, u, fit = model(book, confidence, horizon_days)
    out, bounds = [], {}
    for c, ui in zip(cols, u):
        sid = book.symbols[c].id
        v = min(math.ceil(float(ui) * PPB), 1 << 62)
        if not changed_only or risk.var_sensitivity(sid) != v:
            out.append([0, sid, v, 0, seq, ts])
    vs = np.zeros(len(hold.accounts), dtype=np.int64)
    if fit is not None and hold.accounts:   # a symbol without returns: no model (RISK.md)
        b = rm.reachable_var_bounds(hold.pos[:, cols], hold.ob[:, cols], hold.os_[:, cols], fit[0], confidence,
                                    fit[1])
        # rounded up: float noise never lowers a bound
        vs = np.minimum(np.ceil(b * cd * (1 + 1e-12)), float(1 << 62)).astype(np.int64)
    for a, v in zip(hold.accounts, vs.tolist()):
        st = risk.var_state(a)
        bounds[a] = v
        if not changed_only or st["var"] != v or st["model_ts_ns"] == 0:     # else: the same state
            out.append([a, 0, v, st["charged"], seq, ts])
    out.append([0, 0, 0, 0, seq, ts])
    return out, bounds


def figures(book: analytics.Book, hold: Holdings) -> riskqueries.Published:
    """What the server answers the risk queries from (engine/riskqueries.py): every model for every
    account at once (riskmodels.portfolio_figures), the backtests and the configured scenarios."""
    a = book.cfg.analytics
    grid = sorted(set(rm.GRID) | {a.confidence})
    pub = riskqueries.Published(seq=book.last_seq, ts_ns=book.last_ts, confidence=a.confidence,
                                horizon_days=a.horizon_days, period_s=a.period_s, grid=grid, accounts={})
    cols, _, fit = model(book, a.confidence, a.horizon_days)
    if fit is None or not hold.accounts:
        return pub
    r = book.returns(cols)
    e = hold.pos[:, cols]
    f = rm.portfolio_figures(e, r, a.confidence, fit[1], a.ewma_lambda, a.hist_window, a.mc_paths, a.mc_seed,
                             a.mc_student_t_df, grid)
    obs, hits = rm.backtest_many(r @ e.T, a.confidence, a.ewma_lambda)
    shocks = [(sc, np.array([analytics.scenario_shocks(book.cfg, sc).get(s.id, 0.0) for s in book.symbols]))
              for sc in a.scenarios]
    for i, acct in enumerate(hold.accounts):
        x = int(hits[i].sum()) if obs else 0
        bt = (obs, x, rm.kupiec(obs, x, a.confidence)[1] if obs else 1.0,
              rm.christoffersen(hits[i])[1] if obs else 1.0)
        scen = []
        for sc, move in shocks:
            pnl = float(hold.pos[i] @ move)
            eq = float(hold.equity[i]) + pnl
            mm = float(hold.mm[i] @ (1 + move))
            stressed = float(f["var"][i]) * sc.vol_multiplier if sc.vol_multiplier != 1.0 else None
            scen.append(riskqueries.Scenario(sc.name, pnl, eq, mm, eq < mm, stressed))
        pub.accounts[acct] = riskqueries.AccountFigures(
            float(f["sigma"][i]), [(float(v), float(s_)) for v, s_ in zip(f["hist_var"][i], f["hist_es"][i])],
            [(float(v), float(s_)) for v, s_ in zip(f["mc_var"][i], f["mc_es"][i])], bt, scen)
    return pub


class Admin:
    """A JSON-lines client of the admin listener (engine/admin.py), one connection kept open."""

    def __init__(self, host: str, port: int, user: str, password: str):
        self.addr, self.user, self.password = (host, port), user, password
        self.sock = self.file = None

    def call(self, action: str, **fields) -> dict:
        if self.sock is None:
            self.sock = socket.create_connection(self.addr, timeout=60)
            self.file = self.sock.makefile("rb")
        self.sock.sendall(msgspec.json.encode(dict(user=self.user, password=self.password, action=action,
                                                   **fields)) + b"\n")
        line = self.file.readline()
        if not line:
            self.close()
            raise ConnectionError("admin listener closed the connection")
        return msgspec.json.decode(line)

    def close(self):
        if self.sock is not None:
            self.file.close()
            self.sock.close()
            self.sock = self.file = None


class Gauges:
    """The worker's Prometheus figures: a fixed set of series (no account or symbol label)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge
        self.registry = CollectorRegistry()
        self.cycle = Gauge("te_risk_worker_cycle_seconds", "duration of the last cycle", registry=self.registry)
        self.seq = Gauge("te_risk_worker_model_seq", "the last journal seq the model includes",
                         registry=self.registry)
        self.model_ts = 0.0
        self.age = Gauge("te_risk_worker_model_age_seconds", "wall time since the model's journal time",
                         registry=self.registry)
        self.age.set_function(lambda: max(0.0, time.time() - self.model_ts) if self.model_ts else float("nan"))
        self.rows = Counter("te_risk_worker_rows_sent", "VAR_UPDATE rows journaled", registry=self.registry)
        self.rejected = Counter("te_risk_worker_rows_rejected", "VAR_UPDATE rows the engine rejected",
                                registry=self.registry)
        self.over = Gauge("te_risk_worker_accounts_over_max_var", "accounts whose VaR bound is above MAX_VAR",
                          registry=self.registry)

    def serve(self, port: int, host: str = "127.0.0.1"):
        from prometheus_client import start_http_server
        start_http_server(port, host, registry=self.registry)


def cycle(tail: analytics.Tail, j, admin: Admin | None, gauges: Gauges, confidence: float,
          horizon_days: float) -> dict:
    """Read what was committed, recompute, send the rows: one cycle."""
    t0 = time.perf_counter()
    tail.follow(j)
    book = tail.book()
    hold = Holdings(book)
    out, bounds = rows(book, hold, confidence, horizon_days)
    reply = {"applied": 0, "rejected": []}
    if admin is not None:
        for i in range(0, len(out), ROWS_PER_REQUEST):
            part = admin.call("var_update", rows=out[i:i + ROWS_PER_REQUEST])
            if "applied" not in part:
                raise RuntimeError(f"var_update refused: {part.get('error')}")
            reply["applied"] += part["applied"]
            reply["rejected"] += [[i + k, why] for k, why in part["rejected"]]
        gauges.rows.inc(reply["applied"])
        gauges.rejected.inc(len(reply["rejected"]))
    risk = book.eng.risk
    gauges.over.set(sum(1 for a, v in bounds.items()
                        if (lim := risk.effective(int(LimitKind.MAX_VAR), a, 0)) is not None and v > lim))
    riskqueries.publish(riskqueries.metrics_file(book.cfg), figures(book, hold))
    gauges.seq.set(book.last_seq)
    gauges.model_ts = book.last_ts / 1e9
    gauges.cycle.set(time.perf_counter() - t0)
    return dict(seq=book.last_seq, rows=len(out), applied=reply["applied"], rejected=reply["rejected"])


def add_parser(sub) -> None:
    text = "the live worker of the pre-trade VaR limit: tails the journal, journals VAR_UPDATE each cycle"
    x = sub.add_parser("worker", help=text, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    x.add_argument("path", metavar="JOURNAL_PATH")
    x.add_argument("--config", help="the server's config")
    x.add_argument("--admin-host", default=os.environ.get("TRADING_ENGINE_ADMIN_HOST", "127.0.0.1"))
    x.add_argument("--admin-port", type=int, default=int(os.environ.get("TRADING_ENGINE_ADMIN_PORT", "7003")))
    x.add_argument("--user", default=os.environ.get("TRADING_ENGINE_ADMIN_USER", "risk-worker"),
                   help="an operator of [[admins]] (password: TRADING_ENGINE_ADMIN_PASSWORD)")
    x.add_argument("--metrics-port", type=int, help="serve the gauges on 127.0.0.1:PORT/metrics")
    x.add_argument("--once", action="store_true", help="one cycle, then exit")
    x.add_argument("--dry-run", action="store_true", help="compute and print the rows; send nothing")
    x.set_defaults(run=run)


def run(args) -> int:
    from engine.journal import JournalError, JournalRefused
    from engine.journal_tool import ReplayDiverged, open_journal
    try:
        cfg = cfgmod.load(args.config)
        key = cfgmod.journal_key(cfg.journal)
        tail = analytics.Tail(cfg)
    except (cfgmod.ConfigError, OSError, analytics.AnalyticsError) as e:
        print(f"trading-engine risk worker: {e}", file=sys.stderr)
        return 2
    admin = None
    if not args.dry_run:
        password = os.environ.get("TRADING_ENGINE_ADMIN_PASSWORD")
        if not password:
            print("trading-engine risk worker: set TRADING_ENGINE_ADMIN_PASSWORD (the operator's password)",
                  file=sys.stderr)
            return 2
        admin = Admin(args.admin_host, args.admin_port, args.user, password)
    gauges = Gauges()
    if args.metrics_port is not None:
        gauges.serve(args.metrics_port)
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))
    a = cfg.analytics
    j = open_journal(args.path, key)
    try:
        while not stop:
            t0 = time.monotonic()
            try:
                if args.dry_run:
                    tail.follow(j)
                    book = tail.book()
                    out, _ = rows(book, Holdings(book), a.confidence, a.horizon_days)
                    sys.stdout.write(msgspec.json.encode(dict(seq=tail.last_seq, rows=out)).decode() + "\n")
                else:
                    res = cycle(tail, j, admin, gauges, a.confidence, a.horizon_days)
                    if res["rejected"]:
                        print(f"trading-engine risk worker: rejected rows {res['rejected'][:5]}", file=sys.stderr)
            except (ConnectionError, OSError) as e:      # the server restarting: try again next cycle
                print(f"trading-engine risk worker: {e}", file=sys.stderr)
                if admin is not None:
                    admin.close()
            sys.stdout.flush()
            if args.once:
                break
            time.sleep(max(0.0, a.worker_interval_ms / 1000 - (time.monotonic() - t0)))
    except ReplayDiverged as e:
        print(f"trading-engine risk worker: {e} (is --config the server's config?)", file=sys.stderr)
        return 1
    except (JournalError, JournalRefused) as e:
        print(f"trading-engine risk worker: {e}", file=sys.stderr)
        return 1
    finally:
        j.env.close()
        if admin is not None:
            admin.close()
    return 0
