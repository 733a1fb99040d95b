"""Seeded order-flow workloads, generated before timing.

The default mix resembles real order flow (most adds are cancelled before they
trade, as in Nasdaq ITCH/LOBSTER data; a minority of orders take liquidity):
  55% passive limit adds, 1..20 ticks from a mid that drifts by one tick now and then
  35% cancels of a live order, chosen uniformly (by client order id); liveness is
      tracked by running the flow through the reference sorted-dict book while
      generating, so no cancel misses
  10% aggressive IOC limits that sweep exactly 1-3 levels of the opposite side
      (price = the k-th level, qty = the k levels' total; no fill if that side is empty)
With that mix the book settles at a few dozen orders near the touch, so a second
variant starts from `prefill` extra resting orders (a deep book that is never touched,
as in real books): it shows the cost of a large working set. The flow is generated
first and the deep book placed beyond the range its mid drifted over (bids 30-2030
ticks below the lowest mid, asks as far above the highest; adds rest within 20 ticks
of the mid and IOCs sweep within 25), so no command of the flow reaches it: the flow
is the same command for command with and without it, and every deep order is still
resting, untouched, at the end. The first `prefill` commands are the deep book; the
benchmarks apply them untimed.
Accounts: 8, all with STP NONE so every cross trades.

Each workload is returned twice: as a COMMAND array for the Cython core, and as a
list of neutral tuples for the Python baselines:
  ("add", symbol, account, clid, side, price, qty) | ("cancel", symbol, account, clid)
  | ("ioc", symbol, account, clid, side, price, qty)
"""
from __future__ import annotations

import bisect
import random

import numpy as np

from perf.baseline import SortedDictBook
from protocol.codes import CommandKind, OrderType, SelfTradePrevention, Side, TimeInForce
from protocol.records import COMMAND

ACCOUNTS = 8
MID = 1_000_000          # price units


def symbol_weights(symbols: int, zipf: float, seed: int = 1):
    """Cumulative weights of symbols 1..symbols for a Zipf spread: the symbol of rank k takes a share
    proportional to 1 / k**zipf; ranks are given to symbol ids in a seeded random order (the busy symbols
    are not neighbours in the engine's arrays)."""
    ranks = np.random.default_rng(seed).permutation(symbols) + 1     # symbol id i+1 has rank ranks[i]
    return np.cumsum(1.0 / ranks.astype(np.float64) ** zipf).tolist()


def generate(n: int, symbols: int = 1, seed: int = 1, prefill: int = 0, zipf: float = 0.0):
    """zipf > 0: the symbols' shares follow a Zipf law with that exponent (symbol_weights) instead of
    a uniform spread."""
    rng = random.Random(seed)
    cum = symbol_weights(symbols, zipf, seed) if zipf > 0 and symbols > 1 else None
    cmds = np.zeros(n, dtype=COMMAND.dtype)
    ops = []
    mids = [MID] * (symbols + 1)
    clid = [0] * (ACCOUNTS + 1)
    live: list[tuple[int, int]] = []             # (account, clid) of resting orders
    where: dict[tuple[int, int], int] = {}       # (account, clid) -> index in live
    books = [SortedDictBook() for _ in range(symbols + 1)]
    sym_of: dict[tuple[int, int], int] = {}

    for a in range(1, ACCOUNTS + 1):    # the deep book's client order ids (resting_adds) come first
        clid[a] = (prefill - a + ACCOUNTS) // ACCOUNTS
    lo = hi = MID                       # the range symbol 1's mid drifts over

    def drop(key):
        j = where.pop(key)
        last = live.pop()
        if j < len(live):
            live[j] = last
            where[last] = j
    kind = np.zeros(n, np.uint8)
    acct = np.zeros(n, np.uint32)
    cl = np.zeros(n, np.uint64)
    sym = np.zeros(n, np.uint32)
    side = np.zeros(n, np.uint8)
    tif = np.zeros(n, np.uint8)
    price = np.zeros(n, np.int64)
    qty = np.zeros(n, np.int64)
    for i in range(n):
        r = rng.random()
        s = rng.randint(1, symbols) if cum is None else bisect.bisect_left(cum, rng.random() * cum[-1]) + 1
        if rng.random() < 0.02:
            mids[s] += rng.choice((-1, 1))
            lo, hi = min(lo, mids[1]), max(hi, mids[1])
        if r < 0.35 and live:
            a, c = live[rng.randrange(len(live))]
            drop((a, c))
            s = sym_of.pop((a, c))
            kind[i], acct[i], cl[i], sym[i] = CommandKind.CANCEL, a, c, s
            ops.append(("cancel", s, a, c))
            books[s].apply(ops[-1])
            continue
        a = rng.randint(1, ACCOUNTS)
        clid[a] += 1
        sd = rng.choice((Side.BUY, Side.SELL))
        kind[i], acct[i], cl[i], sym[i], side[i] = CommandKind.NEW_ORDER, a, clid[a], s, sd
        if r < 0.90:
            off = rng.randint(1, 20)
            p = mids[s] - off if sd == Side.BUY else mids[s] + off
            q = rng.randint(1, 10) * 100
            tif[i] = TimeInForce.GTC
            ops.append(("add", s, a, clid[a], int(sd), p, q))
        else:
            opp = 1 if sd == Side.BUY else 0
            prices = [lp for lp in books[s].prices[opp] if abs(lp - mids[s]) <= 25]
            k = min(rng.randint(1, 3), len(prices))
            if k:
                swept = prices[:k] if opp == 1 else prices[::-1][:k]
                p = swept[-1]
                q = sum(e[1] for lp in swept for e in books[s].levels[opp][lp])
            else:
                p, q = (mids[s] + 1 if sd == Side.BUY else mids[s] - 1), 100
            tif[i] = TimeInForce.IOC
            ops.append(("ioc", s, a, clid[a], int(sd), p, q))
        price[i], qty[i] = p, q
        book = books[s]
        book.apply(ops[-1])
        for key in book.done:
            drop(key)
            sym_of.pop(key, None)
        book.done.clear()
        if (a, clid[a]) in book.orders:
            where[(a, clid[a])] = len(live)
            live.append((a, clid[a]))
            sym_of[(a, clid[a])] = s
    cmds["kind"], cmds["account"], cmds["client_order_id"], cmds["symbol"] = kind, acct, cl, sym
    cmds["side"], cmds["tif"], cmds["price"], cmds["qty"] = side, tif, price, qty
    cmds["order_type"] = np.where(kind == CommandKind.NEW_ORDER, OrderType.LIMIT, 0)
    cmds["stp"] = np.where(kind == CommandKind.NEW_ORDER, SelfTradePrevention.NONE, 0)
    cmds["seq"] = np.arange(1, n + 1)
    if prefill:
        deep = resting_adds(prefill, min_offset=30, low=lo, high=hi)
        ops = [("add", 1, int(a), int(c), int(sd), int(p), int(q)) for a, c, sd, p, q in zip(
            deep["account"], deep["client_order_id"], deep["side"], deep["price"], deep["qty"])] + ops
        cmds = np.concatenate([deep, cmds])
    return cmds, ops


def resting_adds(n: int, first_clid: int = 1, min_offset: int = 1, low: int = MID, high: int = MID):
    """n passive adds that never cross (bids min_offset..+2000 ticks below `low`, asks as far
    above `high`), symbol 1, client order ids per account from first_clid."""
    i = np.arange(n)
    cmds = np.zeros(n, dtype=COMMAND.dtype)
    cmds["kind"] = CommandKind.NEW_ORDER
    cmds["account"] = i % ACCOUNTS + 1
    cmds["client_order_id"] = i // ACCOUNTS + first_clid
    cmds["symbol"] = 1
    cmds["side"] = np.where(i % 2 == 0, Side.BUY, Side.SELL)
    cmds["order_type"] = OrderType.LIMIT
    cmds["tif"] = TimeInForce.GTC
    cmds["stp"] = SelfTradePrevention.NONE
    cmds["qty"] = 100
    band = (i // 2) % 2000
    cmds["price"] = np.where(i % 2 == 0, low - min_offset - band, high + min_offset + band)
    return cmds


def make_engine(symbols: int, max_orders: int = 1 << 20, max_levels: int = 4096, risk: bool = False,
                var: bool = True, max_accounts: int = ACCOUNTS + 1, **sizes):
    """An engine for the workload; risk=True turns every risk check on (engine/RISK.md) with
    limits loose enough that the same workload passes unchanged (no rejects: the same events
    plus the risk ones), so the two runs differ only by the cost of risk. var=False leaves MAX_VAR
    unset (the pre-trade VaR check stops at its limit lookup): the difference is that check's cost.
    max_accounts: the engine's (and risk's) capacity; the workload's ACCOUNTS trade. sizes: more
    Engine sizes (max_level_slots)."""
    from engine.core import Engine
    e = Engine(max_orders=max_orders, max_symbols=symbols + 1, max_levels=max_levels, max_accounts=max_accounts,
               **sizes)
    for s in range(1, symbols + 1):
        e.add_symbol(s)
    for a in range(1, ACCOUNTS + 1):
        e.add_account(a)
    if risk:
        from engine.risk import Risk
        from protocol.codes import LimitKind as K, LimitScope
        r = Risk(max_accounts, symbols + 1, max_strategies=16, cash_decimals=2)
        for s in range(1, symbols + 1):
            r.define_symbol(s, 2, 0)          # price units are cents, qty units are whole lots
        e.attach_risk(r)
        for s in range(1, symbols + 1):
            e.mark_price(s, MID)
        for a in range(1, ACCOUNTS + 1):
            e.deposit(a, 1 << 50)
        limits = {K.MAX_ORDER_QTY: 1 << 40, K.MAX_ORDER_VALUE: 1 << 50, K.MAX_POSITION_VALUE: 1 << 55,
                  K.MAX_OPEN_ORDERS: 1 << 20, K.MAX_LEVERAGE: 100_000, K.MAX_DAILY_LOSS: 1 << 50,
                  K.PRICE_COLLAR: 5_000, K.MARKET_BAND: 5_000, K.MAX_VAR: 1 << 50, K.INITIAL_MARGIN: 1_000,
                  K.MAINTENANCE_MARGIN: 500, K.MAKER_FEE: -1, K.TAKER_FEE: 5}
        if not var:
            del limits[K.MAX_VAR]
        for kind, value in limits.items():
            e.set_limit(LimitScope.DEFAULT, kind, value)
        e.set_limit(LimitScope.STRATEGY, K.MAX_ORDER_QTY, 1 << 40, target=0)
        if var:                               # every symbol with a VaR sensitivity of 10% of exposure, every
            from protocol.codes import CommandKind      # account with a model: the whole check runs
            for s in range(1, symbols + 1):
                e.command(kind=CommandKind.VAR_UPDATE, symbol=s, qty=100_000_000)
            for a in range(1, ACCOUNTS + 1):
                e.command(kind=CommandKind.VAR_UPDATE, account=a, qty=1, expire_ts_ns=1)
    return e
