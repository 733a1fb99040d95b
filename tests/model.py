"""A slow, obviously-correct model of engine/RULES.md: the oracle for the core.

Plain dicts and linear scans, no cleverness: every resting order has a time
priority number, the best opposite order is found by sorting, levels are
computed by grouping. Same API and the same EventTuple events as
engine.core.Engine, so tests can run either, or both side by side.
"""
from __future__ import annotations

from dataclasses import dataclass

from protocol.codes import (CancelReason, CommandKind, EventKind, OrderFlag, OrderState, OrderType, Reject,
                            SelfTradePrevention as STP, Side, SymbolState, TimeInForce as TIF)
from protocol.records import EventTuple
from protocol.wire import AMEND_QTY_UNCHANGED

RESTING_TIFS = (TIF.GTC, TIF.DAY, TIF.GTD)


@dataclass
class Order:
    order_id: int
    client_order_id: int
    account: int
    symbol: int
    side: int
    order_type: int
    tif: int
    stp: int
    flags: int
    price: int
    stop_price: int
    qty: int
    leaves: int
    display_qty: int
    expire_ts_ns: int
    strategy: int
    filled: int = 0
    shown: int = 0
    state: int = OrderState.IN_FLIGHT
    prio: int = 0          # time priority within its level (lower = earlier)
    registered: bool = False

    def as_dict(self):
        return dict(order_id=self.order_id, client_order_id=self.client_order_id, account=self.account,
                    symbol=self.symbol, side=self.side, order_type=self.order_type, tif=self.tif, stp=self.stp,
                    flags=self.flags, price=self.price, stop_price=self.stop_price, qty=self.qty,
                    leaves=self.leaves, shown=self.shown, display_qty=self.display_qty, filled=self.filled,
                    expire_ts_ns=self.expire_ts_ns, strategy=self.strategy, state=self.state)


@dataclass
class Sym:
    tick: int
    lot: int
    max_price: int
    max_qty: int
    state: int = SymbolState.TRADING
    last: int | None = None


class Model:
    def __init__(self, max_orders=1 << 16, max_accounts=1024, max_symbols=64, max_levels=4096, max_level_slots=0,
                 **_ignored):
        self.max_orders, self.max_accounts, self.max_symbols, self.max_levels = \
            max_orders, max_accounts, max_symbols, max_levels
        # the shared level pool (0: never below max_orders, so it never runs out first)
        self.max_level_slots = max_level_slots or max_orders
        self.syms: dict[int, Sym] = {}
        self.stp_key: dict[int, int] = {}
        self.last_clid: dict[int, int] = {}
        self.live: dict[int, Order] = {}      # registered orders (resting, untriggered, or re-entering)
        self.next_order_id = 1
        self.next_trade_id = 1
        self.clock = 0
        self.prio = 0
        self.events: list[EventTuple] = []
        self.cmd = None

    # -- configuration --
    def add_symbol(self, symbol, tick_size=1, lot_size=1, max_price=1 << 62, max_qty=1 << 62):
        assert 0 < symbol < self.max_symbols
        self.syms[symbol] = Sym(tick_size, lot_size, max_price, max_qty)

    def add_account(self, account, stp_group=0):
        assert 0 < account < self.max_accounts
        self.stp_key[account] = (stp_group, 1) if stp_group else (account, 0)
        self.last_clid.setdefault(account, 0)

    # -- events --
    def _ev(self, kind, o: Order | None = None, **f):
        base = dict(kind=kind, side=0, cmd_kind=self.cmd["kind"], flags=0, reason=0, symbol=0, account=0,
                    other_account=0, order_id=0, client_order_id=0, other_order_id=0, other_client_order_id=0,
                    price=0, qty=0, leaves=0, other_leaves=0, trade_id=0, seq=self.cmd["seq"],
                    ts_ns=self.cmd["ts_ns"], fee=0, other_fee=0)
        if o is not None:
            base.update(side=o.side, symbol=o.symbol, account=o.account, order_id=o.order_id,
                        client_order_id=o.client_order_id, price=o.price, leaves=o.leaves)
        base.update(f)
        self.events.append(EventTuple(**base))

    def _reject(self, reason):
        c = self.cmd
        self._ev(EventKind.REJECTED, reason=reason, side=c["side"], symbol=c["symbol"], account=c["account"],
                 order_id=c["order_id"], client_order_id=c["client_order_id"], price=c["price"], qty=c["qty"])

    # -- book views --
    def _resting(self, symbol, side):
        return [o for o in self.live.values() if o.symbol == symbol and o.side == side and o.state == OrderState.RESTING]

    def _untriggered(self, symbol, side):
        return [o for o in self.live.values()
                if o.symbol == symbol and o.side == side and o.state == OrderState.UNTRIGGERED]

    def _levels(self, symbol, side):
        """[(price, [orders in priority order])], best price first."""
        prices = sorted({o.price for o in self._resting(symbol, side)}, reverse=(side == Side.BUY))
        return [(p, sorted((o for o in self._resting(symbol, side) if o.price == p), key=lambda o: o.prio))
                for p in prices]

    def _has_room(self, symbol, side, price, stop=False):
        if stop:
            prices = {o.stop_price for o in self._untriggered(symbol, side)}
        else:
            prices = {o.price for o in self._resting(symbol, side)}
        if price in prices:
            return True
        in_use = len({(o.symbol, o.side, o.price) for o in self.live.values() if o.state == OrderState.RESTING} |
                     {(o.symbol, o.side, -o.stop_price) for o in self.live.values()
                      if o.state == OrderState.UNTRIGGERED})
        return len(prices) < self.max_levels and in_use < self.max_level_slots

    def _level_count(self, o):
        if o.state == OrderState.UNTRIGGERED:
            return sum(1 for x in self._untriggered(o.symbol, o.side) if x.stop_price == o.stop_price)
        return sum(1 for x in self._resting(o.symbol, o.side) if x.price == o.price)

    @staticmethod
    def _marketable(o, price):
        if o.order_type == OrderType.MARKET:
            return True
        return o.price >= price if o.side == Side.BUY else o.price <= price

    def _crosses(self, symbol, side, price):
        opp = self._levels(symbol, Side.SELL if side == Side.BUY else Side.BUY)
        if not opp:
            return False
        return price >= opp[0][0] if side == Side.BUY else price <= opp[0][0]

    def _own(self, a, b):
        return self.stp_key[a.account] == self.stp_key[b.account]

    def _next_prio(self):
        self.prio += 1
        return self.prio

    # -- lifecycle --
    def _register(self, o):
        o.registered = True
        self.live[o.order_id] = o

    def _done(self, o):
        if o.registered:
            del self.live[o.order_id]
            o.registered = False
        o.state = OrderState.FREE
        o.shown = 0

    def _cancel(self, o, reason):
        self._ev(EventKind.CANCELLED, o, reason=reason, qty=o.leaves, leaves=0)
        o.leaves = 0
        self._done(o)

    def _rest(self, o):
        if o.order_type in (OrderType.STOP, OrderType.STOP_LIMIT):
            o.state = OrderState.UNTRIGGERED
            o.shown = 0
        else:
            o.state = OrderState.RESTING
            o.shown = min(o.display_qty, o.leaves) if o.display_qty else o.leaves
        o.prio = self._next_prio()

    # -- matching --
    def _fok_ok(self, o):
        need, avail = o.leaves, 0
        opp = Side.SELL if o.side == Side.BUY else Side.BUY
        for price, orders in self._levels(o.symbol, opp):
            if not self._marketable(o, price):
                break
            if o.stp == STP.NONE:
                avail += sum(m.leaves for m in orders)
            else:
                ahead = 0
                for m in orders:
                    if self._own(m, o):
                        if o.stp != STP.CANCEL_OLDEST:
                            return avail + ahead >= need
                    else:
                        ahead += m.shown
                avail += sum(m.leaves for m in orders if not self._own(m, o))
            if avail >= need:
                return True
        return avail >= need

    def _execute(self, o):
        if o.tif == TIF.FOK and not self._fok_ok(o):
            self._cancel(o, CancelReason.FOK_UNFILLED)
            return
        opp = Side.SELL if o.side == Side.BUY else Side.BUY
        prints = []
        stopped = False
        while o.leaves > 0:
            levels = self._levels(o.symbol, opp)
            if not levels or not self._marketable(o, levels[0][0]):
                break
            price, orders = levels[0]
            m = orders[0]
            if o.stp != STP.NONE and self._own(m, o):
                self._ev(EventKind.STP_PREVENTED, o, other_account=m.account, other_order_id=m.order_id,
                         other_client_order_id=m.client_order_id, price=price, qty=min(o.leaves, m.shown),
                         other_leaves=m.leaves)
                if o.stp == STP.CANCEL_NEWEST:
                    stopped = True
                    break
                self._cancel(m, CancelReason.SELF_TRADE)
                if o.stp == STP.CANCEL_BOTH:
                    stopped = True
                    break
                continue
            q = min(o.leaves, m.shown)
            o.leaves -= q
            o.filled += q
            m.leaves -= q
            m.filled += q
            m.shown -= q
            prints.append(price)
            self._ev(EventKind.FILL, o, other_account=m.account, other_order_id=m.order_id,
                     other_client_order_id=m.client_order_id, price=price, qty=q, other_leaves=m.leaves,
                     trade_id=self.next_trade_id)
            self.next_trade_id += 1
            if m.leaves == 0:
                self._done(m)
            elif m.shown == 0:
                m.shown = min(m.display_qty, m.leaves)
                m.prio = self._next_prio()
                self._ev(EventKind.RESTATED, m, qty=m.shown)
        if prints:
            self.syms[o.symbol].last = prints[-1]
        if stopped:
            self._cancel(o, CancelReason.SELF_TRADE)
        elif o.leaves == 0:
            self._done(o)
        elif o.order_type == OrderType.MARKET:
            self._cancel(o, CancelReason.MARKET_REMAINDER)
        elif o.tif not in RESTING_TIFS:
            self._cancel(o, CancelReason.IOC_REMAINDER)
        elif not self._has_room(o.symbol, o.side, o.price):
            self._cancel(o, CancelReason.NO_LEVEL_CAPACITY)
        else:
            if not o.registered:
                self._register(o)
            self._rest(o)
        if prints:
            lo, hi = min(prints), max(prints)
            hit = [s for s in self.live.values() if s.symbol == o.symbol and s.state == OrderState.UNTRIGGERED and
                   ((s.side == Side.BUY and s.stop_price <= hi) or (s.side == Side.SELL and s.stop_price >= lo))]
            for s in sorted(hit, key=lambda s: s.order_id):
                s.state = OrderState.IN_FLIGHT
                self.queue.append(s)

    def _run_triggers(self):
        while self.queue:
            s = self.queue.pop(0)
            s.order_type = OrderType.MARKET if s.order_type == OrderType.STOP else OrderType.LIMIT
            self._ev(EventKind.TRIGGERED, s, price=s.stop_price, qty=s.leaves)
            self._execute(s)

    # -- commands --
    def _acct_ok(self, a):
        return a in self.stp_key

    def _new(self, c):
        a, sym = c["account"], c["symbol"]
        if not self._acct_ok(a):
            return self._reject(Reject.UNKNOWN_ACCOUNT)
        if c["client_order_id"] <= self.last_clid[a]:
            return self._reject(Reject.DUPLICATE_CLIENT_ORDER_ID)
        self.last_clid[a] = c["client_order_id"]
        if sym not in self.syms:
            return self._reject(Reject.UNKNOWN_SYMBOL)
        S = self.syms[sym]
        if S.state == SymbolState.HALTED:
            return self._reject(Reject.SYMBOL_HALTED)
        if c["side"] not in (Side.BUY, Side.SELL):
            return self._reject(Reject.INVALID_SIDE)
        ot = c["order_type"]
        if ot not in tuple(OrderType):
            return self._reject(Reject.INVALID_ORDER_TYPE)
        if c["tif"] not in tuple(TIF):
            return self._reject(Reject.INVALID_TIF)
        stp = c["stp"] or STP.CANCEL_NEWEST                # 0: the default
        if stp not in tuple(STP):
            return self._reject(Reject.INVALID_STP)
        if c["flags"] & ~OrderFlag.POST_ONLY:
            return self._reject(Reject.INVALID_FLAGS)
        qty = c["qty"]
        if qty <= 0:
            return self._reject(Reject.INVALID_QTY)
        if qty % S.lot:
            return self._reject(Reject.QTY_NOT_LOT_MULTIPLE)
        if qty > S.max_qty:
            return self._reject(Reject.QTY_ABOVE_MAX)
        has_limit = ot in (OrderType.LIMIT, OrderType.STOP_LIMIT)
        is_stop = ot in (OrderType.STOP, OrderType.STOP_LIMIT)
        price, stop = c["price"], c["stop_price"]
        if has_limit:
            if price <= 0:
                return self._reject(Reject.INVALID_PRICE)
            if price % S.tick:
                return self._reject(Reject.PRICE_NOT_TICK_MULTIPLE)
            if price > S.max_price:
                return self._reject(Reject.PRICE_ABOVE_MAX)
        elif price != 0:
            return self._reject(Reject.INVALID_PRICE)
        if is_stop:
            if stop <= 0 or stop % S.tick or stop > S.max_price:
                return self._reject(Reject.INVALID_STOP_PRICE)
        elif stop != 0:
            return self._reject(Reject.INVALID_STOP_PRICE)
        d = c["display_qty"]
        if d != 0 and not (has_limit and c["tif"] in RESTING_TIFS and 0 < d < qty and d % S.lot == 0):
            return self._reject(Reject.INVALID_DISPLAY_QTY)
        post = bool(c["flags"] & OrderFlag.POST_ONLY)
        if post and not (ot == OrderType.LIMIT and c["tif"] in RESTING_TIFS):
            return self._reject(Reject.INVALID_POST_ONLY)
        if c["tif"] == TIF.GTD:
            if c["expire_ts_ns"] <= self.clock:
                return self._reject(Reject.INVALID_EXPIRY)
        elif c["expire_ts_ns"] != 0:
            return self._reject(Reject.INVALID_EXPIRY)
        if len(self.live) >= self.max_orders:
            return self._reject(Reject.ORDER_CAPACITY_EXHAUSTED)
        if is_stop and S.last is not None:
            if (c["side"] == Side.BUY and stop <= S.last) or (c["side"] == Side.SELL and stop >= S.last):
                return self._reject(Reject.STOP_ALREADY_TRIGGERED)
        if is_stop and not self._has_room(sym, c["side"], stop, stop=True):
            return self._reject(Reject.LEVEL_CAPACITY_EXHAUSTED)
        if ot == OrderType.LIMIT and c["tif"] in RESTING_TIFS and not self._has_room(sym, c["side"], price):
            return self._reject(Reject.LEVEL_CAPACITY_EXHAUSTED)
        if post and self._crosses(sym, c["side"], price):
            return self._reject(Reject.POST_ONLY_WOULD_CROSS)
        o = Order(self.next_order_id, c["client_order_id"], a, sym, c["side"], ot, c["tif"], stp, c["flags"],
                  price, stop, qty, qty, d, c["expire_ts_ns"], c["strategy"])
        self.next_order_id += 1
        self._ev(EventKind.ACCEPTED, o, qty=qty)
        if is_stop:
            self._register(o)
            self._rest(o)
            return
        self._execute(o)
        self._run_triggers()

    def _find(self, a, order_id, clid):
        for o in self.live.values():
            if o.account == a and ((order_id and o.order_id == order_id) or
                                   (not order_id and o.client_order_id == clid)):
                return o
        return None

    def _cancel_cmd(self, c):
        if not self._acct_ok(c["account"]):
            return self._reject(Reject.UNKNOWN_ACCOUNT)
        o = self._find(c["account"], c["order_id"], c["client_order_id"])
        if o is None:
            return self._reject(Reject.UNKNOWN_ORDER)
        self._cancel(o, CancelReason.USER)

    def _amend(self, c):
        if not self._acct_ok(c["account"]):
            return self._reject(Reject.UNKNOWN_ACCOUNT)
        o = self._find(c["account"], c["order_id"], c["client_order_id"])
        if o is None:
            return self._reject(Reject.UNKNOWN_ORDER)
        S = self.syms[o.symbol]
        if S.state == SymbolState.HALTED:
            return self._reject(Reject.SYMBOL_HALTED)
        qty = o.leaves if c["qty"] == AMEND_QTY_UNCHANGED else c["qty"]
        if qty < 0:
            return self._reject(Reject.INVALID_QTY)
        if qty == 0:
            return self._cancel(o, CancelReason.USER)
        if qty % S.lot:
            return self._reject(Reject.QTY_NOT_LOT_MULTIPLE)
        if qty > S.max_qty:
            return self._reject(Reject.QTY_ABOVE_MAX)
        untriggered = o.state == OrderState.UNTRIGGERED
        new_price = o.price
        if c["price"] != 0:
            if o.order_type not in (OrderType.LIMIT, OrderType.STOP_LIMIT):
                return self._reject(Reject.INVALID_AMEND)
            if c["price"] < 0:
                return self._reject(Reject.INVALID_PRICE)
            if c["price"] % S.tick:
                return self._reject(Reject.PRICE_NOT_TICK_MULTIPLE)
            if c["price"] > S.max_price:
                return self._reject(Reject.PRICE_ABOVE_MAX)
            new_price = c["price"]
        new_stop = o.stop_price
        if c["stop_price"] != 0:
            st = c["stop_price"]
            if not untriggered:
                return self._reject(Reject.INVALID_AMEND)
            if st < 0 or st % S.tick or st > S.max_price:
                return self._reject(Reject.INVALID_STOP_PRICE)
            if S.last is not None and ((o.side == Side.BUY and st <= S.last) or (o.side == Side.SELL and st >= S.last)):
                return self._reject(Reject.STOP_ALREADY_TRIGGERED)
            new_stop = st
        old_leaves = o.leaves
        if untriggered:
            if new_stop != o.stop_price:
                if not self._has_room(o.symbol, o.side, new_stop, stop=True) and self._level_count(o) > 1:
                    return self._reject(Reject.LEVEL_CAPACITY_EXHAUSTED)
                o.prio = self._next_prio()
            o.stop_price, o.price = new_stop, new_price
            o.leaves, o.qty = qty, o.filled + qty
            self._ev(EventKind.REPLACED, o, qty=o.leaves, other_leaves=old_leaves)
            return
        loses = new_price != o.price or qty > o.leaves
        if not loses:
            o.shown = min(o.shown, qty)
            o.leaves, o.qty = qty, o.filled + qty
            self._ev(EventKind.REPLACED, o, qty=o.leaves, other_leaves=old_leaves)
            return
        if new_price != o.price:
            if not self._has_room(o.symbol, o.side, new_price) and self._level_count(o) > 1:
                return self._reject(Reject.LEVEL_CAPACITY_EXHAUSTED)
            if (o.flags & OrderFlag.POST_ONLY) and self._crosses(o.symbol, o.side, new_price):
                return self._reject(Reject.POST_ONLY_WOULD_CROSS)
        o.state = OrderState.IN_FLIGHT
        o.shown = 0
        o.price, o.leaves, o.qty = new_price, qty, o.filled + qty
        self._ev(EventKind.REPLACED, o, qty=o.leaves, other_leaves=old_leaves)
        self._execute(o)
        self._run_triggers()

    def _mass_cancel(self, c):
        a, sym, side = c["account"], c["symbol"], c["side"]
        if not self._acct_ok(a):
            return self._reject(Reject.UNKNOWN_ACCOUNT)
        if sym != 0 and sym not in self.syms:
            return self._reject(Reject.UNKNOWN_SYMBOL)
        if side not in (0, Side.BUY, Side.SELL):
            return self._reject(Reject.INVALID_SIDE)
        hit = sorted((o for o in self.live.values() if o.account == a and (sym == 0 or o.symbol == sym)
                      and (side == 0 or o.side == side)), key=lambda o: o.order_id)
        for o in hit:
            self._cancel(o, CancelReason.MASS_CANCEL)
        self._ev(EventKind.MASS_CANCEL_DONE, account=a, symbol=sym, side=side, qty=len(hit))

    def _eod(self, c):
        sym = c["symbol"]
        if sym != 0 and sym not in self.syms:
            return self._reject(Reject.UNKNOWN_SYMBOL)
        for o in sorted(self.live.values(), key=lambda o: o.order_id):
            if o.tif == TIF.DAY and (sym == 0 or o.symbol == sym):
                self._cancel(o, CancelReason.END_OF_DAY)

    def _expire(self, c):
        now = c["expire_ts_ns"]
        self.clock = max(self.clock, now)
        for o in sorted(self.live.values(), key=lambda o: o.order_id):
            if o.tif == TIF.GTD and o.expire_ts_ns <= now:
                self._cancel(o, CancelReason.EXPIRED)

    def _state(self, c, state):
        if c["symbol"] not in self.syms:
            return self._reject(Reject.UNKNOWN_SYMBOL)
        self.syms[c["symbol"]].state = state
        self._ev(EventKind.SYMBOL_STATE, symbol=c["symbol"], reason=state)

    # -- API (same as engine.core.Engine) --
    FIELDS = ("kind", "side", "order_type", "tif", "stp", "flags", "symbol", "account", "seq", "ts_ns",
              "client_order_id", "order_id", "price", "qty", "stop_price", "display_qty", "expire_ts_ns",
              "strategy", "session")

    def command(self, **fields):
        c = dict.fromkeys(self.FIELDS, 0)
        c.update({k: int(v) for k, v in fields.items()})
        self.cmd = c
        self.events = []
        self.queue = []
        k = c["kind"]
        if k == CommandKind.NEW_ORDER:
            self._new(c)
        elif k == CommandKind.CANCEL:
            self._cancel_cmd(c)
        elif k == CommandKind.AMEND:
            self._amend(c)
        elif k == CommandKind.MASS_CANCEL:
            self._mass_cancel(c)
        elif k == CommandKind.END_OF_DAY:
            self._eod(c)
        elif k == CommandKind.EXPIRE:
            self._expire(c)
        elif k == CommandKind.HALT:
            self._state(c, SymbolState.HALTED)
        elif k == CommandKind.RESUME:
            self._state(c, SymbolState.TRADING)
        else:
            self._reject(Reject.INVALID_COMMAND)
        return self.events

    def new_order(self, account, client_order_id, symbol, side, qty, price=0, order_type=OrderType.LIMIT,
                  tif=TIF.GTC, stp=STP.CANCEL_NEWEST, flags=0, stop_price=0, display_qty=0, expire_ts_ns=0,
                  strategy=0, seq=0):
        return self.command(kind=CommandKind.NEW_ORDER, account=account, client_order_id=client_order_id,
                            symbol=symbol, side=side, qty=qty, price=price, order_type=order_type, tif=tif, stp=stp,
                            flags=flags, stop_price=stop_price, display_qty=display_qty, expire_ts_ns=expire_ts_ns,
                            strategy=strategy, seq=seq)

    def cancel(self, account, order_id=0, client_order_id=0, seq=0):
        return self.command(kind=CommandKind.CANCEL, account=account, order_id=order_id,
                            client_order_id=client_order_id, seq=seq)

    def amend(self, account, order_id=0, client_order_id=0, qty=0, price=0, stop_price=0, seq=0):
        return self.command(kind=CommandKind.AMEND, account=account, order_id=order_id,
                            client_order_id=client_order_id, qty=qty, price=price, stop_price=stop_price, seq=seq)

    def mass_cancel(self, account, symbol=0, side=0, seq=0):
        return self.command(kind=CommandKind.MASS_CANCEL, account=account, symbol=symbol, side=side, seq=seq)

    def end_of_day(self, symbol=0, seq=0):
        return self.command(kind=CommandKind.END_OF_DAY, symbol=symbol, seq=seq)

    def expire(self, now_ns, seq=0):
        return self.command(kind=CommandKind.EXPIRE, expire_ts_ns=now_ns, seq=seq)

    def halt(self, symbol, seq=0):
        return self.command(kind=CommandKind.HALT, symbol=symbol, seq=seq)

    def resume(self, symbol, seq=0):
        return self.command(kind=CommandKind.RESUME, symbol=symbol, seq=seq)

    def depth(self, symbol, levels=5):
        def side(s):
            return [(p, sum(o.shown for o in os), len(os)) for p, os in self._levels(symbol, s)[:levels]]
        return side(Side.BUY), side(Side.SELL)

    def order(self, order_id):
        o = self.live.get(order_id)
        return o.as_dict() if o else None

    def open_orders(self, account):
        return [o.as_dict() for o in sorted(self.live.values(), key=lambda o: o.order_id) if o.account == account]

    def last_price(self, symbol):
        s = self.syms.get(symbol)
        return s.last if s else None

    @property
    def live_orders(self):
        return len(self.live)

    def validate(self):
        for o in self.live.values():
            assert o.leaves > 0 and o.qty == o.filled + o.leaves, o
            assert o.state in (OrderState.RESTING, OrderState.UNTRIGGERED), o
        for sym in self.syms:
            bids, asks = self.depth(sym, 1)
            if bids and asks:
                assert bids[0][0] < asks[0][0], f"crossed book on {sym}"
