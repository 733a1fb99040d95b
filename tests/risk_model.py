"""A slow, obviously-correct model of engine/RISK.md, written from that page alone.

It keeps no caches: every figure is recomputed from positions with exact fractions
(Python ints and fractions.Fraction), rounded once where RISK.md says. It follows the
real core's events (matching is checked against tests/model.py elsewhere) and predicts
each risk decision, so a test can require the engine and this model to agree on every
check and every figure, to the last cash unit.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction

from protocol.codes import (AccountState, CommandKind, EventKind, LimitKind as K, LimitScope, OrderFlag, OrderType,
                            Reject, Side, TimeInForce)

CAP = {K.MAX_ORDER_QTY, K.MAX_ORDER_VALUE, K.MAX_POSITION_VALUE, K.MAX_OPEN_ORDERS, K.MAX_LEVERAGE,
       K.MAX_DAILY_LOSS, K.PRICE_COLLAR, K.MARKET_BAND, K.MAX_VAR}
FLOOR = {K.INITIAL_MARGIN, K.MAINTENANCE_MARGIN}


@dataclass
class Entry:
    pos: int = 0
    avg: int = 0
    ob: int = 0
    os: int = 0
    realized: int = 0
    fees: int = 0


class RiskModel:
    def __init__(self, symbols: dict[int, tuple[int, int, int]], max_strategies=16, max_accounts=5,
                 max_positions=None):
        """symbols: id -> (num, den, tick) as the engine derives them (notional = p*q*num/den);
        account ids 1 .. max_accounts-1 are the engine's (a reject naming another id is no account's);
        max_positions: the engine's position pool (None: never full)."""
        self.sym = symbols
        self.max_positions = max_positions
        self.known_accounts = range(1, max_accounts)
        self.max_strategies = max_strategies
        self.limits: dict[tuple[int, int, int], int] = {}        # (scope, target, kind) -> value
        self.e: dict[tuple[int, int], Entry] = defaultdict(Entry)
        self.cash = defaultdict(int)
        self.day_base = defaultdict(int)
        self.state = defaultdict(lambda: AccountState.ACTIVE)
        self.kill = defaultdict(int)
        self.kill_all = 0
        self.breaker = 0
        self.err = (0, 0, set())                                 # (window start ts, count, accounts)
        self.rej = {}                                            # account -> (window start ts, count)
        self.lock_until = defaultdict(int)                       # account -> end of its lockout
        self.mark = {s: 0 for s in symbols}
        self.restricted = set()
        self.window = {}                                         # symbol -> (start ts, first price)
        self.tripped = set()

    # -- position capacity (engine/CAPACITY.md "Risk positions") --
    def held(self, a, s):
        """(a, s) holds something an entry must keep: a position, open orders, P&L, fees, a restriction."""
        x = self.e.get((a, s))
        return (a, s) in self.restricted or (x is not None and any((x.pos, x.ob, x.os, x.realized, x.fees)))

    def pool_full(self, a, s):
        """(a, s) needs a new entry and max_positions pairs hold something."""
        if self.max_positions is None or self.held(a, s):
            return False
        pairs = set(self.e) | self.restricted
        return sum(self.held(*k) for k in pairs) >= self.max_positions

    # -- limits --
    def _get(self, scope, target, kind):
        return self.limits.get((scope, target, kind))

    def cap(self, kind, a, s, t=None):
        vals = [self._get(LimitScope.DEFAULT, 0, kind), self._get(LimitScope.ACCOUNT, a, kind),
                self._get(LimitScope.SYMBOL, s, kind)]
        if t is not None:
            vals.append(self._get(LimitScope.STRATEGY, t, kind))
        vals = [v for v in vals if v is not None]
        return min(vals) if vals else None

    def floor(self, kind, a, s):
        vals = [v for v in (self._get(LimitScope.DEFAULT, 0, kind), self._get(LimitScope.ACCOUNT, a, kind),
                            self._get(LimitScope.SYMBOL, s, kind)) if v is not None]
        return max([0] + vals)

    def override(self, kind, a, s):
        for v in (self._get(LimitScope.ACCOUNT, a, kind) if a else None, self._get(LimitScope.SYMBOL, s, kind),
                  self._get(LimitScope.DEFAULT, 0, kind)):
            if v is not None:
                return v
        return 0

    # -- valuation --
    def notional(self, s, price, qty) -> Fraction:
        num, den, _ = self.sym[s]
        return Fraction(price * qty * num, den)

    def figures(self, a, s):
        x = self.e[(a, s)]
        m = self.mark[s]
        worst = max(abs(x.pos + x.ob), abs(x.pos - x.os))
        upnl = math.floor(self.notional(s, m - x.avg, x.pos))
        expo = math.ceil(self.notional(s, m, abs(x.pos)))
        wexpo = math.ceil(self.notional(s, m, worst))
        im = math.ceil(Fraction(wexpo * self.floor(K.INITIAL_MARGIN, a, s), 10000))
        mm = math.ceil(Fraction(expo * self.floor(K.MAINTENANCE_MARGIN, a, s), 10000))
        return dict(upnl=upnl, expo=expo, wexpo=wexpo, im=im, mm=mm, worst=worst)

    def account(self, a):
        tot = dict(upnl=0, expo=0, wexpo=0, im=0, mm=0)
        for (aa, s) in list(self.e):
            if aa == a:
                f = self.figures(a, s)
                for k in tot:
                    tot[k] += f[k]
        tot["equity"] = self.cash[a] + tot["upnl"]
        return tot

    # -- checks --
    def band_bound(self, a, s, side, strategy=None):
        """The market band's bound for a market order of the strategy (caps apply at strategy scope)."""
        band = self.cap(K.MARKET_BAND, a, s, strategy)
        m = self.mark[s]
        tick = self.sym[s][2]
        if band is None or not m:
            return 0
        if side == Side.BUY:
            return max(math.floor(Fraction(m * (10000 + band), 10000 * tick)) * tick, tick)
        if band >= 10000:
            return tick
        return max(math.ceil(Fraction(m * (10000 - band), 10000 * tick)), 1) * tick

    def check(self, a, s, strategy, side, otype, tif, flags, price, stop, qty, added, open_orders, now=0):
        """The Reject code RISK.md's checks give, or 0 (now: the command's receive time)."""
        if self.kill_all or self.kill[a]:
            return Reject.KILL_SWITCH
        if self.breaker:
            return Reject.CIRCUIT_BREAKER
        if now < self.lock_until[a]:
            return Reject.REJECT_RATE_LOCKOUT
        st = self.state[a]
        if st == AccountState.SUSPENDED:
            return Reject.ACCOUNT_SUSPENDED
        if st == AccountState.LIQUIDATING:
            return Reject.ACCOUNT_LIQUIDATING
        if (a, s) in self.restricted:
            return Reject.SYMBOL_RESTRICTED
        if self.pool_full(a, s):
            return Reject.POSITION_CAPACITY_EXHAUSTED
        if strategy >= self.max_strategies:
            return Reject.INVALID_STRATEGY
        m = self.mark[s]
        if not m:
            return Reject.NO_REFERENCE_PRICE
        if otype == OrderType.MARKET:
            vp = self.band_bound(a, s, side, strategy) or m
        elif otype == OrderType.STOP:
            vp = stop
        else:
            vp = price
        lim = self.cap(K.MAX_ORDER_QTY, a, s, strategy)
        if lim is not None and qty > lim:
            return Reject.MAX_ORDER_QTY
        lim = self.cap(K.MAX_ORDER_VALUE, a, s, strategy)
        if lim is not None and self.notional(s, vp, qty) > lim:
            return Reject.MAX_ORDER_VALUE
        lim = self.cap(K.PRICE_COLLAR, a, s, strategy)
        if lim is not None and otype in (OrderType.LIMIT, OrderType.STOP_LIMIT) and abs(price - m) * 10000 > lim * m:
            return Reject.PRICE_COLLAR
        can_wait = tif in (TimeInForce.GTC, TimeInForce.DAY, TimeInForce.GTD) or otype in (OrderType.STOP,
                                                                                          OrderType.STOP_LIMIT)
        lim = self.cap(K.MAX_OPEN_ORDERS, a, s, strategy)
        if open_orders is not None and can_wait and lim is not None and open_orders >= lim:
            return Reject.MAX_OPEN_ORDERS
        x = self.e[(a, s)]
        if flags & OrderFlag.REDUCE_ONLY:
            ok = (x.pos < 0 and x.ob + added <= -x.pos) if side == Side.BUY else (x.pos > 0 and x.os + added <= x.pos)
            if not ok:
                return Reject.REDUCE_ONLY_VIOLATION
        worst = max(abs(x.pos + x.ob), abs(x.pos - x.os))
        ob, os_ = (x.ob + added, x.os) if side == Side.BUY else (x.ob, x.os + added)
        worst2 = max(abs(x.pos + ob), abs(x.pos - os_))
        if worst2 <= worst:
            return 0
        if st == AccountState.REDUCE_ONLY:
            return Reject.ACCOUNT_REDUCE_ONLY
        acct = self.account(a)
        eq = acct["equity"]
        lim = self.cap(K.MAX_DAILY_LOSS, a, s, strategy)
        if lim is not None and eq - self.day_base[a] < -lim:
            return Reject.MAX_DAILY_LOSS
        here = self.figures(a, s)
        w2 = math.ceil(self.notional(s, m, worst2))
        lim = self.cap(K.MAX_POSITION_VALUE, a, s, strategy)
        if lim is not None and w2 > lim:
            return Reject.MAX_POSITION_VALUE
        lim = self.cap(K.MAX_LEVERAGE, a, s, strategy)
        if lim is not None and (acct["wexpo"] - here["wexpo"] + w2) * 10000 > lim * eq:
            return Reject.MAX_LEVERAGE
        im2 = math.ceil(Fraction(w2 * self.floor(K.INITIAL_MARGIN, a, s), 10000))
        if acct["im"] - here["im"] + im2 > eq:
            return Reject.INSUFFICIENT_MARGIN
        return 0

    # -- events --
    def _fill(self, a, s, side, q, price, maker):
        x = self.e[(a, s)]
        num, den, _ = self.sym[s]
        d = q if side == Side.BUY else -q
        realized = 0
        if x.pos == 0 or (x.pos > 0) == (d > 0):
            total, n = x.avg * abs(x.pos) + price * q, abs(x.pos) + q
            x.avg = (total + n // 2) // n                       # half up, all non-negative
        else:
            closed = min(q, abs(x.pos))
            sign = 1 if x.pos > 0 else -1
            realized = math.floor(Fraction((price - x.avg) * sign * closed * num, den))
            npos = x.pos + d
            if npos == 0:
                x.avg = 0
            elif (npos > 0) != (x.pos > 0):
                x.avg = price
        x.pos += d
        bps = self.override(K.MAKER_FEE if maker else K.TAKER_FEE, a, s)
        fee = math.ceil(Fraction(price * q * num * bps, den * 10000)) if bps else 0
        x.realized += realized
        x.fees += fee
        self.cash[a] += realized - fee

    def _open(self, a, s, side, delta):
        x = self.e[(a, s)]
        if side == Side.BUY:
            x.ob += delta
        else:
            x.os += delta

    def apply(self, cmd, events, ts):
        """Fold one command's events (RISK.md "State", "Fills", "Circuit breakers"); returns the
        set of symbols whose breaker the model says tripped."""
        tripped = set()
        k = cmd["kind"]
        for e in events:
            ek = e.kind
            if ek == EventKind.ACCEPTED:
                self._open(e.account, e.symbol, e.side, e.qty)
            elif ek == EventKind.CANCELLED:
                self._open(e.account, e.symbol, e.side, -e.qty)
            elif ek == EventKind.REPLACED:
                self._open(e.account, e.symbol, e.side, e.qty - e.other_leaves)
            elif ek == EventKind.FILL:
                other = Side.SELL if e.side == Side.BUY else Side.BUY
                self._open(e.account, e.symbol, e.side, -e.qty)
                self._open(e.other_account, e.symbol, other, -e.qty)
                self._fill(e.account, e.symbol, e.side, e.qty, e.price, False)
                self._fill(e.other_account, e.symbol, other, e.qty, e.price, True)
                if self._breaker(e.symbol, e.price, ts):
                    tripped.add(e.symbol)
            elif ek == EventKind.REJECTED and e.reason not in (Reject.CIRCUIT_BREAKER, Reject.REJECT_RATE_LOCKOUT):
                self._reject(e, ts)
            elif ek == EventKind.ACCOUNT_STATE:
                if e.account:
                    self.state[e.account] = AccountState(e.reason)
                    self.kill[e.account] = e.qty
                else:
                    self.kill_all = e.qty
            elif ek == EventKind.BALANCE:
                self.cash[e.account] += e.qty
                self.day_base[e.account] += e.qty
            elif ek == EventKind.LIMIT_SET:
                if e.reason == 0:
                    (self.restricted.add if e.qty else self.restricted.discard)((e.account, e.symbol))
                else:
                    key = (e.side, int(e.order_id), e.reason)
                    if e.flags & 1:
                        self.limits.pop(key, None)
                    else:
                        self.limits[key] = e.qty
            elif ek == EventKind.MARK:
                self.mark[e.symbol] = e.price
            elif ek == EventKind.BREAKER:
                if e.symbol == 0 and e.account:
                    assert (e.reason, e.leaves) == (1, self.lock_until[e.account]), "lockout event != model's"
                elif e.symbol == 0:
                    self.breaker = int(e.reason == 1)
                    if e.reason == 2:
                        self.err = (0, 0, set())
                        self.rej.clear()
                        self.lock_until.clear()
                elif e.reason == 2:
                    self.tripped.discard(e.symbol)
                    self.window.pop(e.symbol, None)
            elif ek == EventKind.SYMBOL_STATE and e.reason == 1 and k == CommandKind.RESUME:
                self.tripped.discard(e.symbol)
                self.window.pop(e.symbol, None)
        if k == CommandKind.END_OF_DAY and cmd.get("symbol", 0) == 0:
            for a in set(a for a, _ in self.e) | set(self.cash):
                self.day_base[a] = self.account(a)["equity"]
        return tripped

    def _reject(self, e, ts):
        """RISK.md "Circuit breakers": the account's reject budget first, then the engine-wide rate."""
        a = e.account if e.account in self.known_accounts else 0
        if a and ts < self.lock_until[a]:
            return                                               # a locked-out account counts nowhere
        if a and e.cmd_kind in (CommandKind.NEW_ORDER, CommandKind.CANCEL, CommandKind.AMEND,
                                CommandKind.MASS_CANCEL):
            lim = self.override(K.ACCOUNT_REJECT_LIMIT, a, 0)
            if lim > 0:
                start, n = self.rej.get(a, (0, 0))
                if n == 0 or ts - start >= 10 ** 9:
                    start, n = ts, 0
                n += 1
                if n > lim:
                    ms = self.override(K.ACCOUNT_LOCKOUT_MS, a, 0)
                    self.lock_until[a] = ts + ms * 10 ** 6 if ms > 0 else 2 ** 63 - 1
                    n = 0
                self.rej[a] = (start, n)
        thr = self._get(LimitScope.DEFAULT, 0, K.ERROR_THRESHOLD) or 0
        if thr <= 0 or self.breaker:
            return
        start, n, accts = self.err
        if n == 0 or ts - start >= 10 ** 9:
            start, n, accts = ts, 0, set()
        n += 1
        if a:
            accts.add(a)
        self.err = (start, n, accts)
        if n > thr and len(accts) >= (self._get(LimitScope.DEFAULT, 0, K.ERROR_ACCOUNTS) or 0):
            self.breaker = 1

    def _breaker(self, s, price, ts):
        band = self.override(K.BREAKER_BAND, 0, s)
        if band <= 0 or s in self.tripped:
            return False
        window = self.override(K.BREAKER_WINDOW_MS, 0, s) * 10 ** 6
        start = self.window.get(s)
        if start is None or ts - start[0] > window:
            self.window[s] = (ts, price)
            return False
        if abs(price - start[1]) * 10000 > band * start[1]:
            self.tripped.add(s)
            return True
        return False
