"""The risk queries of the protocol (RISK_METRICS_REQUEST, VAR_REQUEST, STRESS_REQUEST: engine/RISK.md
"Risk queries"), answered by the server without computing any model on its thread.

Two sources: the engine's risk state (exposure, margins, leverage, the MAX_VAR in force and the VaR bound
the pre-trade check uses: journaled, replayed, exact), and the figures the risk worker publishes each
cycle (engine/riskworker.py) into one file beside the journal (`[analytics] metrics_file`, default
`risk_metrics.msgpack` in journal.path), replaced atomically: per account the one-period parametric sigma,
the historical and Monte Carlo VaR and ES at the confidences of riskmodels.GRID, the backtest and the
configured stress scenarios, with the model's journal time. The server decodes it again only when its
modification time changed. Ad-hoc requests: the parametric VaR at any confidence and horizon is exact from
the published sigma (z_c sigma sqrt(h)); the historical and Monte Carlo figures are published at the grid
only, so a request is answered at the grid point at or above the confidence asked (never a smaller VaR;
the response says which), scaled by sqrt(h); an ad-hoc stress shock is linear arithmetic on the engine's
positions at the marks (no model).
"""
from __future__ import annotations

import math
import os
from statistics import NormalDist

import msgspec

from protocol.codes import LimitKind, Reject
from protocol.wire import MsgType, VarModel

REQUESTS = frozenset({MsgType.RISK_METRICS_REQUEST, MsgType.VAR_REQUEST, MsgType.STRESS_REQUEST})
RESPONSE = {MsgType.RISK_METRICS_REQUEST: MsgType.RISK_METRICS, MsgType.VAR_REQUEST: MsgType.VAR,
            MsgType.STRESS_REQUEST: MsgType.STRESS}
_N = NormalDist()


class Scenario(msgspec.Struct, array_like=True):
    name: str
    pnl: float
    equity: float
    maintenance_margin: float
    below_maintenance: bool
    stressed_var: float | None            # with a vol_multiplier: at the configured confidence and horizon


class AccountFigures(msgspec.Struct, array_like=True):
    sigma: float                          # one period, quote currency
    hist: list[tuple[float, float]]       # (VaR, ES) one period, per grid confidence
    mc: list[tuple[float, float]]
    backtest: tuple[int, int, float, float]     # observations, exceedances, Kupiec p, Christoffersen p
    scenarios: list[Scenario]


class Published(msgspec.Struct):
    seq: int
    ts_ns: int
    confidence: float
    horizon_days: float
    period_s: float
    grid: list[float]
    accounts: dict[int, AccountFigures]


def metrics_file(cfg) -> str:
    return cfg.analytics.metrics_file or os.path.join(cfg.journal.path, "risk_metrics.msgpack")


def publish(path: str, pub: Published) -> None:
    """Write the figures atomically (a reader sees the old file or the new one)."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(msgspec.msgpack.encode(pub))
    os.replace(tmp, path)


def _up(x: float, cd: int) -> int:
    return math.ceil(round(x * 10 ** cd, 6))


def _down(x: float, cd: int) -> int:
    return math.floor(round(x * 10 ** cd, 6))


class RiskQueries:
    """The server's answers (Connection.query calls answer() for REQUESTS)."""

    def __init__(self, server):
        self.server = server
        self.path = metrics_file(server.cfg)
        self.mtime = None
        self.pub: Published | None = None

    def published(self) -> Published | None:
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError:
            return None
        if mtime != self.mtime:
            try:
                with open(self.path, "rb") as f:
                    self.pub = msgspec.msgpack.decode(f.read(), type=Published)
                self.mtime = mtime
            except (OSError, msgspec.DecodeError):
                return self.pub           # being replaced, or damaged: the last good figures
        return self.pub

    def answer(self, conn, t, body) -> None:
        srv = self.server
        rid = int(body["request_id"])
        risk = srv.engine.risk
        if risk is None:
            return conn.send_list(RESPONSE[t], rid, [], status=Reject.RISK_OFF)
        acct = conn.account.id
        pub = self.published()
        figs = pub.accounts.get(acct) if pub is not None else None
        cd = risk.cash_decimals
        if t == MsgType.RISK_METRICS_REQUEST:
            return conn.send_list(MsgType.RISK_METRICS, rid, [self.metrics(acct, pub, figs)])
        if t == MsgType.VAR_REQUEST:
            if pub is None or figs is None:
                return conn.send_list(MsgType.VAR, rid, [])
            c = int(body["confidence_ppm"]) / 1e6 or pub.confidence
            h_days = int(body["horizon_ppm"]) / 1e6 or pub.horizon_days
            model = int(body["model"]) or VarModel.PARAMETRIC
            if not 0.5 < c < 1 or model not in tuple(VarModel):
                return conn.send_list(MsgType.VAR, rid, [], status=Reject.INVALID_LIMIT)
            v, es, used = var_at(pub, figs, model, c, h_days)
            return conn.send_list(MsgType.VAR, rid, [dict(
                var=_up(v, cd), es=_up(es, cd), model_ts_ns=pub.ts_ns, confidence_ppm=round(used * 1e6),
                horizon_ppm=round(h_days * 1e6), model=model, cash_decimals=cd)])
        rows = []                          # STRESS_REQUEST
        for sc in (figs.scenarios if figs is not None else []):
            rows.append(dict(name=sc.name.encode()[:32], pnl=_down(sc.pnl, cd), equity=_down(sc.equity, cd),
                             maintenance_margin=_up(sc.maintenance_margin, cd),
                             stressed_var=-1 if sc.stressed_var is None else _up(sc.stressed_var, cd),
                             below_maintenance=int(sc.below_maintenance), cash_decimals=cd))
        shock = int(body["shock_ppm"])
        if shock:
            if shock <= -1_000_000:
                return conn.send_list(MsgType.STRESS, rid, [], status=Reject.INVALID_LIMIT)
            rows.append(self.ad_hoc(acct, int(body["symbol"]), shock))
        conn.send_list(MsgType.STRESS, rid, rows)

    def ad_hoc(self, acct: int, symbol: int, shock_ppm: int) -> dict:
        """Every position (or the one in `symbol`) at mark x (1 + shock): exact integer arithmetic on the
        engine's figures (P&L down, maintenance up)."""
        risk = self.server.engine.risk
        pf = risk.portfolio(acct)
        pnl, mm = 0, 0
        for p in risk.positions(acct):
            s = 0 if symbol and p["symbol"] != symbol else shock_ppm
            # the position's value moves by exposure x s (sign of the position); maintenance scales with the mark
            signed = p["exposure"] if p["position"] > 0 else -p["exposure"]
            pnl += (signed * s) // 1_000_000
            mm += -(-p["maintenance_margin"] * (1_000_000 + s) // 1_000_000)
        eq = pf["equity"] + pnl
        return dict(name=b"ad-hoc", pnl=pnl, equity=eq, maintenance_margin=mm, stressed_var=-1,
                    below_maintenance=int(eq < mm), cash_decimals=risk.cash_decimals)

    def metrics(self, acct: int, pub: Published | None, figs: AccountFigures | None) -> dict:
        srv = self.server
        risk = srv.engine.risk
        cd = risk.cash_decimals
        pf = risk.portfolio(acct)
        st = risk.var_state(acct)
        max_var = risk.effective(int(LimitKind.MAX_VAR), acct, 0)
        eq = pf["equity"]
        row = dict(exposure=pf["exposure"], worst_exposure=pf["worst_exposure"], equity=eq,
                   leverage_bps=-1 if pf["leverage_bps"] is None else pf["leverage_bps"],
                   initial_margin=pf["initial_margin"], maintenance_margin=pf["maintenance_margin"],
                   margin_use_bps=-(-pf["initial_margin"] * 10000 // eq) if eq > 0 else -1,
                   max_var=-1 if max_var is None else max_var, var_limit=st["var"],
                   limit_use_bps=-1 if not max_var else -(-st["var"] * 10000 // max_var),
                   limit_model_ts_ns=st["model_ts_ns"], cash_decimals=cd,
                   **{k: -1 for k in ("var_parametric", "es_parametric", "var_historical", "es_historical",
                                      "var_montecarlo", "es_montecarlo")})
        a = srv.cfg.analytics
        row.update(confidence_ppm=round(a.confidence * 1e6), horizon_ppm=round(a.horizon_days * 1e6))
        if pub is not None and figs is not None:
            for name, model in (("parametric", VarModel.PARAMETRIC), ("historical", VarModel.HISTORICAL),
                                ("montecarlo", VarModel.MONTECARLO)):
                v, es, _ = var_at(pub, figs, model, pub.confidence, pub.horizon_days)
                row["var_" + name], row["es_" + name] = _up(v, cd), _up(es, cd)
            obs, exc, kp, cp = figs.backtest
            row.update(model_ts_ns=pub.ts_ns, backtest_observations=obs, backtest_exceedances=exc,
                       kupiec_p_ppm=round(kp * 1e6), christoffersen_p_ppm=round(cp * 1e6),
                       confidence_ppm=round(pub.confidence * 1e6), horizon_ppm=round(pub.horizon_days * 1e6))
        return row


def var_at(pub: Published, figs: AccountFigures, model: int, confidence: float, horizon_days: float):
    """(VaR, ES, the confidence used) in the quote currency: parametric exactly at any confidence and
    horizon; historical and Monte Carlo at the smallest grid confidence >= the one asked (the largest
    if none is), x sqrt(h)."""
    h = math.sqrt(horizon_days * 86400.0 / pub.period_s)
    if model == VarModel.PARAMETRIC:
        z = _N.inv_cdf(confidence)
        return z * figs.sigma * h, figs.sigma * h * _N.pdf(z) / (1 - confidence), confidence
    i = next((k for k, g in enumerate(pub.grid) if g >= confidence - 1e-12), len(pub.grid) - 1)
    v, es = (figs.hist if model == VarModel.HISTORICAL else figs.mc)[i]
    return v * h, es * h, pub.grid[i]
