"""The ccxt venue adapter: an external exchange as a router venue (engine/ROUTING.md "Adapters").

The optional extra `pip install 'trading-engine[ccxt]'` (ccxt: the standard multi-exchange
library; REST through `ccxt.async_support`, websockets through `ccxt.pro`, both in the ccxt
package). A [[venues]] entry with kind = "ccxt" and a [venues.ccxt] table (engine/routing/config.py)
selects it. It implements the interface of engine/routing/venues.py:

    connect(next_seq)   a fresh ccxt exchange, load_markets, each mapped market checked against
                        its router symbol (ticks and lots must convert exactly, else the symbol is
                        refused at this venue: MarketMap), then the reconciliation (below); returns
                        the next client order id: a journaled child at or above it was never
                        found at the exchange (the router routes its share again)
    subscribe(symbols)  watch_order_book (fetch_order_book every poll_s without a websocket) ->
                        events.depth, and watch_orders + watch_my_trades per market (fetch_order polling
                        without) -> reports
    raw(frame)          NEW_ORDER -> create_order(market, "limit", side, amount, price,
                        {"clientOrderId": prefix + clid, "timeInForce": "IOC" for an IOC child});
                        CANCEL -> cancel_order(exchange id, market); AMEND -> REJECTED 6059
    open_orders()       the child orders fetch_open_orders found open at the last connect

Integers stay integers: ccxt hands out floats, every one is turned into a Decimal through its
shortest repr (`Decimal(repr(x))`, which is the exchange's decimal string for any value of up
to 15 significant digits) and from there into the router's integer units, exactly; prices and
amounts go to ccxt as exact decimal strings. Rounding happens only where the router's unit is
coarser than the exchange's: depth levels (bids down and asks up to the router's tick, quantities
down to its lot: the book shown is never better than the exchange's). A fill or order value that
is not a whole number of the router's units (an exchange reporting beyond its own precision) is
rounded half-even and logged (`ccxt_inexact`).

Reports: an exchange has no sequenced replay, so the adapter numbers its reports itself: seq =
max(previous + 1, wall-clock ms << 10). The router journals the last one per venue and hands it
back to connect, which reads the time of the last journaled report out of it and reconciles from
that time less reconcile_margin_s: fetch_open_orders, fetch_closed_orders (or fetch_orders) and
fetch_my_trades of every mapped market; for each child the router holds open at this venue, the
fills beyond the quantity the router already has are reported (the earliest trades of the order
are the ones it has), then its end (CANCELLED, or REJECTED for an exchange-rejected order).

ccxt exceptions -> the router's outcome (outcome()): an exchange that answered with an error
refused the order (REJECTED with a 6050-6099 code); a network failure, a bad response or anything
else leaves the order in doubt: the session is dropped (events.down) and the reconciliation at the
reconnect settles it.

Tested here (tests/test_routing_ccxt.py, against the real ccxt library, offline): market loading
from a static markets dict, the precision checks and conversions, ccxt's own parsing of exchange
payloads into unified orders, trades and books and from there into the router's units and report
bodies, the exception mapping, the reconciliation. NOT tested: anything on the network
(load_markets, create_order, cancel_order, watch_*, fetch_*): there is no network here, and ccxt
has no exchange that runs locally.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Callable

from engine.config import ConfigError, read_secret
from engine.routing import codec
from engine.routing.router import DONE, LIVE, SENT
from protocol import wire
from protocol.codes import CancelReason, CommandKind, Reject, Side, TimeInForce
from protocol.wire import Liquidity, MsgType

try:
    import ccxt
    import ccxt.async_support as ccxt_async
    try:
        import ccxt.pro as ccxt_pro
    except ImportError:                    # a ccxt without ccxt.pro: REST only
        ccxt_pro = None
except ImportError:
    ccxt = ccxt_async = ccxt_pro = None

log = logging.getLogger("trading-engine.route")

HEADER = wire.HEADER.size
SEQ_SHIFT = 10                             # seq = ms << 10 | counter: 1024 reports a millisecond before it drifts
CLOSED = ("closed", "canceled", "cancelled", "expired", "rejected")


class Inexact(ValueError):
    pass


def dec(x: Any) -> Decimal | None:
    """A ccxt number (float, int, str) as a Decimal, exactly as the exchange wrote it: a float
    through its shortest repr, never through its binary value. None stays None."""
    if x is None:
        return None
    if isinstance(x, float):
        if not math.isfinite(x):
            raise Inexact(f"not a finite number: {x!r}")
        return Decimal(repr(x))
    if isinstance(x, bool):
        raise Inexact(f"not a number: {x!r}")
    try:
        d = Decimal(x) if isinstance(x, (int, Decimal)) else Decimal(str(x).strip())
    except InvalidOperation:
        raise Inexact(f"not a number: {x!r}") from None
    if not d.is_finite():
        raise Inexact(f"not a finite number: {x!r}")
    return d


def units(x: Any, unit: Decimal, rounding: str | None = None) -> int:
    """x in whole `unit`s: exact, or rounded as told (ROUND_FLOOR, ROUND_CEILING, ROUND_HALF_EVEN)."""
    d = dec(x)
    if d is None:
        raise Inexact("missing")
    q = d / unit
    n = q.to_integral_value(rounding=rounding or ROUND_HALF_EVEN)
    if rounding is None and n != q:
        raise Inexact(f"{d} is not a whole multiple of {unit}")
    return int(n)


def market_step(market: dict, which: str, precision_mode: int) -> Decimal:
    """The exchange's price tick or amount step of a market, from ccxt's precision: a step
    (TICK_SIZE) or a count of decimals (DECIMAL_PLACES); significant digits have no fixed step."""
    p = market.get("precision", {}).get(which)
    if p is None:
        raise Inexact(f"the market has no {which} precision")
    if precision_mode == ccxt.TICK_SIZE:
        step = dec(p)
    elif precision_mode == ccxt.DECIMAL_PLACES:
        n = dec(p)
        if n != n.to_integral_value():
            raise Inexact(f"{which} precision {p} is not a count of decimals")
        step = Decimal(1).scaleb(-int(n))
    else:
        raise Inexact("the exchange counts precision in significant digits: no fixed tick or step")
    if step <= 0:
        raise Inexact(f"{which} precision {p} is not positive")
    return step


class MarketMap:
    """One router symbol at one exchange market: the edge where the router's integers meet the
    exchange's decimals. Refused (Inexact) unless both ways convert exactly:
      - every exchange price is a whole number of router price units (10^-price_decimals) and every
        router tick is a whole number of exchange ticks (the router's prices are valid there);
      - the same for amounts: 10^-qty_decimals divides the exchange's step, which divides the lot."""

    def __init__(self, sid: int, name: str, price_decimals: int, qty_decimals: int, tick: int, lot: int,
                 market: dict, precision_mode: int):
        self.sid, self.name, self.market = sid, name, market
        self.symbol = market["symbol"]                   # the ccxt unified market symbol
        self.quote = market.get("quote")
        self.price_unit = Decimal(1).scaleb(-price_decimals)
        self.qty_unit = Decimal(1).scaleb(-qty_decimals)
        self.tick, self.lot = tick, lot
        ex_tick = market_step(market, "price", precision_mode)
        ex_step = market_step(market, "amount", precision_mode)
        for what, unit, step, mine in (("price", self.price_unit, ex_tick, tick), ("amount", self.qty_unit, ex_step,
                                                                                    lot)):
            if (step / unit) != (step / unit).to_integral_value():
                raise Inexact(f"the exchange's {what} step {step} is finer than the router's unit {unit}")
            if (mine * unit / step) != (mine * unit / step).to_integral_value():
                raise Inexact(f"the router's {'tick' if what == 'price' else 'lot'} {mine * unit} is not a "
                              f"multiple of the exchange's {what} step {step}")
        self.ex_tick, self.ex_step = ex_tick, ex_step

    # exchange -> router
    def price(self, x: Any) -> int:
        return units(x, self.price_unit)

    def qty(self, x: Any) -> int:
        return units(x, self.qty_unit)

    def book(self, ob: dict, levels: int) -> tuple[list, list]:
        """A ccxt order book as the router's depth: (price, qty, orders) best first; bids down and asks
        up to the router's tick, quantities down to its lot, levels that meet merged, empty ones dropped."""
        out = []
        for side, rnd in (("bids", ROUND_FLOOR), ("asks", ROUND_CEILING)):
            lv: list[list[int]] = []
            for entry in ob.get(side) or ():
                p = units(entry[0], self.price_unit * self.tick, rnd) * self.tick
                q = units(entry[1], self.qty_unit * self.lot, ROUND_FLOOR) * self.lot
                n = int(entry[2]) if len(entry) > 2 and entry[2] else 1
                if p <= 0 or q <= 0:
                    continue
                if lv and lv[-1][0] == p:
                    lv[-1][1] += q
                    lv[-1][2] += n
                elif len(lv) < levels:
                    lv.append([p, q, n])
                else:
                    break
            out.append([tuple(x) for x in lv])
        return out[0], out[1]

    # router -> exchange
    def price_str(self, ticks: int) -> str:
        return _plain(ticks * self.price_unit)

    def qty_str(self, lots: int) -> str:
        return _plain(lots * self.qty_unit)


def _plain(d: Decimal) -> str:
    s = format(d, "f")
    return s.rstrip("0").rstrip(".") if "." in s else s


def wire_id(x: Any) -> int:
    """An exchange's order or trade id in a u64 report field when it is a decimal number that fits, else 0."""
    s = str(x) if x is not None else ""
    return int(s) if s.isdigit() and int(s) < 1 << 64 else 0


def outcome(e: BaseException) -> int | None:
    """A ccxt exception from an order call as the router's outcome: the Reject code (6050-6099) when
    the exchange refused it, None when it is in doubt (it may have been taken: network failures, bad
    responses, anything not ccxt's): the session is dropped and the reconnect's reconciliation settles it."""
    if ccxt is None or not isinstance(e, ccxt.BaseError):
        return None
    table = ((ccxt.DuplicateOrderId, None),        # the client order id is taken there: it may be this order
             (ccxt.InsufficientFunds, Reject.VENUE_INSUFFICIENT_FUNDS),
             (ccxt.OrderNotFound, Reject.VENUE_ORDER_NOT_FOUND),
             (ccxt.InvalidOrder, Reject.VENUE_INVALID_ORDER),
             (ccxt.AuthenticationError, Reject.VENUE_AUTH_FAILED),
             ((ccxt.BadRequest, ccxt.ArgumentsRequired, ccxt.NotSupported), Reject.VENUE_BAD_REQUEST),
             (ccxt.OperationRejected, Reject.VENUE_REFUSED),
             (ccxt.RateLimitExceeded, Reject.VENUE_RATE_LIMITED),
             (ccxt.ExchangeError, Reject.VENUE_ERROR))
    for cls, code in table:
        if isinstance(e, cls):
            return code
    return None                                      # NetworkError, BadResponse, OperationFailed ...


def report_body(msg_type: int, seq: int, clid: int, symbol: int, side: int, price: int, qty: int, leaves: int,
                cmd_kind: int, ts_ns: int, reason: int = 0, liquidity: int = 0, fee: int = 0, order_id: int = 0,
                trade_id: int = 0) -> bytes:
    """A wire ExecReport body (what a trading-engine venue sends) for one ccxt event."""
    return codec.REPORT_FRAMES[msg_type].pack(seq, order_id, clid, symbol, side, liquidity, reason, price, qty, leaves,
                                              trade_id, 0, cmd_kind, 0, ts_ns, fee)[HEADER:]


def new_to_fill(held_filled: int, order_filled: int, trades: list[int]) -> int:
    """Reconciliation: of an order's listed trade quantities (oldest first), how many leading ones
    the router already has. The router holds held_filled; the exchange says order_filled in all,
    of which the trades not listed (older than the window) come first and were reported."""
    have = held_filled - (order_filled - sum(trades))      # of the listed trades, the quantity already reported
    n = 0
    while n < len(trades) and have > 0:
        have -= trades[n]
        n += 1
    return n


class _Order:
    """A child at the exchange, as the adapter follows it."""
    __slots__ = ("clid", "sid", "side", "price", "qty", "filled", "xid", "accepted", "done", "trade_ids",
                 "cancel_wanted", "end")

    def __init__(self, clid, sid, side, price, qty, filled=0, accepted=False):
        self.clid, self.sid, self.side, self.price, self.qty = clid, sid, side, price, qty
        self.filled = filled                  # quantity reported to the router (router units)
        self.xid: str | None = None           # the exchange's order id
        self.accepted = accepted
        self.done = False
        self.trade_ids: set[str] = set()
        self.cancel_wanted = False
        self.end: dict | None = None          # a closed order seen before all its trades


def market_maps(ex, symbols: dict[int, tuple], markets: dict[str, str]) -> tuple[dict[int, MarketMap], dict[int, str]]:
    """The router's symbols (id -> (name, price_decimals, qty_decimals, tick, lot)) at the loaded markets of
    ccxt exchange `ex` (markets: router name -> market symbol): the maps, and why the others are refused."""
    maps, refused = {}, {}
    for sid, (name, pd, qd, tick, lot) in symbols.items():
        try:
            market = ex.market(markets[name])
            if market.get("active") is False:
                raise Inexact("the exchange lists the market as inactive")
            maps[sid] = MarketMap(sid, name, pd, qd, tick, lot, market, ex.precisionMode)
        except (Inexact, ccxt.BadSymbol) as e:
            refused[sid] = f"{markets[name]}: {e}"
    return maps, refused


def held_children(state, venue: int) -> dict[int, tuple]:
    """The router's children at `venue` (its journal-rebuilt state): clid -> (router symbol, side, price,
    qty, filled, state) with state SENT, LIVE or DONE (engine/routing/router.py)."""
    out = {}
    for (v, clid), c in state.children.items():
        if v == venue:
            p = state.parents[c.parent]
            out[clid] = (p.symbol, p.side, c.price, c.qty, c.filled, c.state)
    return out


def credentials(name: str, c) -> dict[str, str]:
    """apiKey, secret, password from the environment or owner-only files (config.read_secret), never inline."""
    out = {}
    for key, env, path in (("apiKey", c.api_key_env, c.api_key_file), ("secret", c.secret_env, c.secret_file),
                           ("password", c.password_env, c.password_file)):
        v = read_secret(f"venue {name} ccxt {key}", env, path)
        if v is not None:
            out[key] = v.decode()
    return out


def exchange_class(exchange_id: str):
    """The ccxt class for an exchange id: ccxt.pro's (REST and websockets) where it has one, else
    async_support's (REST only). A ConfigError when the extra is missing or the id unknown."""
    if ccxt_async is None:
        raise ConfigError("a kind = \"ccxt\" venue needs the ccxt extra: pip install 'trading-engine[ccxt]'")
    cls = getattr(ccxt_pro, exchange_id, None) if ccxt_pro is not None else None
    cls = cls or getattr(ccxt_async, exchange_id, None)
    if exchange_id not in ccxt.exchanges or cls is None:
        raise ConfigError(f"ccxt has no exchange {exchange_id!r}")
    return cls


class CcxtVenue:
    """The adapter (module docstring). One ccxt exchange object per connection; everything on the
    router's event loop."""

    def __init__(self, index: int, name: str, cfg, events, symbols: dict, held: Callable[[], dict[int, tuple]],
                 secrets: dict[str, str] | None = None):
        """cfg: the venue's CcxtConfig; symbols: the router's directory (id -> SymbolConfig); held: the
        router's children at this venue (held_children); secrets: ccxt credentials (default: read from
        the environment or files the config names)."""
        self.index, self.name, self.cfg, self.events, self.held = index, name, cfg, events, held
        self.symbols = {s.id: (s.name, s.price_decimals, s.qty_decimals, s.tick_size, s.lot_size)
                        for s in symbols.values() if s.name in cfg.symbols}
        self.cls = exchange_class(cfg.exchange)
        self.secrets = credentials(name, cfg) if secrets is None else secrets
        self.exchange = None
        self.up = False
        self.last_recv = 0.0
        self.seq = 0
        self.maps: dict[int, MarketMap] = {}            # router symbol id -> market
        self.refused: dict[int, str] = {}               # router symbol id -> why its market is not used
        self.venue_symbol: dict[int, int] = {}          # router symbol id -> itself (the router packs it)
        self.orders: dict[int, _Order] = {}             # clid -> child
        self.by_xid: dict[str, _Order] = {}
        self.early: dict[str, list] = {}                # trades of an order whose create_order has not returned
        self.open_at_connect: list[tuple[int, int]] = []
        self.tasks: list[asyncio.Task] = []
        self.prefix = cfg.client_order_id_prefix

    # -- the exchange object --
    def new_exchange(self):
        opts = {"enableRateLimit": True, **self.secrets}
        if self.cfg.options:
            opts["options"] = dict(self.cfg.options)
        ex = self.cls(opts)
        if self.cfg.sandbox:
            ex.set_sandbox_mode(True)
        return ex

    def has(self, what: str) -> bool:
        return bool(self.exchange is not None and self.exchange.has.get(what))

    def clid_of(self, client_order_id: Any) -> int | None:
        s = str(client_order_id or "")
        if s.startswith(self.prefix) and s[len(self.prefix):].isdigit():
            return int(s[len(self.prefix):])
        return None

    def next_seq(self) -> int:
        self.seq = max(self.seq + 1, (time.time_ns() // 1_000_000) << SEQ_SHIFT)
        return self.seq

    def emit(self, msg_type: int, o: _Order, price: int, qty: int, leaves: int, cmd_kind: int, ts_ms: Any = None,
             **kw) -> None:
        ts = int(ts_ms) * 1_000_000 if ts_ms else time.time_ns()
        seq = self.next_seq()
        body = report_body(msg_type, seq, o.clid, o.sid, o.side, price, qty, leaves, cmd_kind, ts,
                           order_id=wire_id(o.xid), **kw)
        self.events.report(self.index, msg_type, body, seq)

    # -- the interface --
    async def connect(self, next_seq: int) -> int:
        self.seq = next_seq - 1
        self.orders.clear()
        self.by_xid.clear()
        self.early.clear()
        ex = self.new_exchange()
        try:
            await ex.load_markets(True)
        except BaseException:
            await ex.close()
            raise
        self.exchange = ex
        self.last_recv = time.monotonic()
        self.up = True
        self.maps, self.refused = market_maps(ex, self.symbols, self.cfg.symbols)
        try:
            return await self.reconcile(next_seq)
        except BaseException:
            await self.close()
            raise

    async def subscribe(self, symbols: dict[int, tuple], levels: int) -> dict[int, str]:
        skipped = {sid: "not mapped in [venues.ccxt] symbols" for sid in symbols if sid not in self.maps}
        for sid, why in self.refused.items():
            skipped[sid] = f"refused: {why}"
        ws = self.has("watchOrders") and self.has("watchMyTrades")
        for sid, mm in self.maps.items():
            if sid in symbols:
                self.venue_symbol[sid] = sid
                self.tasks.append(asyncio.ensure_future(self.watch_book(mm, levels)))
                if ws:
                    self.tasks.append(asyncio.ensure_future(self.watch("watch_orders", mm.symbol, self.on_order)))
                    self.tasks.append(asyncio.ensure_future(self.watch("watch_my_trades", mm.symbol,
                                                                       self.on_trade)))
        if not ws:
            self.tasks.append(asyncio.ensure_future(self.poll_orders()))
        return skipped

    def raw(self, frame: bytes) -> bool:
        t, body = frame[2], frame[HEADER:]
        if t == MsgType.NEW_ORDER:
            o = codec.NEW_ORDER.unpack(body)
            n = codec.NEW_ORDER.fields
            return self.new_order(o[n["client_order_id"]], o[n["symbol"]], o[n["side"]], o[n["order_type"]],
                                  o[n["tif"]], o[n["price"]], o[n["qty"]])
        if t == MsgType.CANCEL:
            return self.cancel(codec.CANCEL.unpack(body)[0])
        if t == MsgType.AMEND:
            a = codec.AMEND.unpack(body)
            return self.amend(a[0], a[3], a[2])
        return False

    def new_order(self, clid: int, symbol: int, side: int, order_type: int, tif: int, price: int, qty: int) -> bool:
        mm = self.maps.get(symbol)
        if not self.up or mm is None:
            return False
        o = self.orders[clid] = _Order(clid, symbol, side, price, qty)
        self.spawn(self.create(o, mm, tif))
        return True

    def cancel(self, clid: int) -> bool:
        if not self.up:
            return False
        o = self.orders.get(clid)
        if o is None:
            log.warning("venue %s: cancel of child %d, unknown here (in doubt since the reconnect): not sent",
                        self.name, clid, extra={"event": "ccxt_cancel_unknown", "venue": self.name})
            return True
        if o.done:
            return True                 # its end is reported already: the router ends the parent with it
        if o.xid is None:
            o.cancel_wanted = True      # create_order has not returned: cancelled when it does
        else:
            o.cancel_wanted = True
            self.spawn(self.cancel_at(o))
        return True

    def amend(self, clid: int, qty: int, price: int) -> bool:
        o = self.orders.get(clid)
        if not self.up or o is None:
            return False
        asyncio.get_running_loop().call_soon(lambda: self.emit(
            MsgType.REJECTED, o, price, qty, 0, CommandKind.AMEND, reason=Reject.VENUE_AMEND_UNSUPPORTED))
        return True

    async def open_orders(self) -> list[tuple[int, int]]:
        return list(self.open_at_connect)

    async def close(self) -> None:
        await self._close(self._stop())

    def _stop(self):
        """Down now: its loops cancelled, its exchange object taken away (returned, to be closed)."""
        self.up = False
        tasks, self.tasks = self.tasks, []
        for t in tasks:
            t.cancel()
        ex, self.exchange = self.exchange, None
        return ex

    async def _close(self, ex) -> None:
        if ex is not None:
            try:
                await ex.close()
            except Exception as e:      # closing a broken connection: nothing left to do with it
                log.info("venue %s: ccxt close: %s", self.name, e)

    def silent(self, limit_s: float) -> bool:
        """ccxt.pro keeps its websockets alive itself (pings) and raises from watch_* when one dies: the
        adapter goes down then (fail), not on silence (a quiet market sends nothing)."""
        return False

    def drop(self) -> None:
        self.fail("dropped")

    def fail(self, why: Any) -> None:
        """The session is over (an error, an order in doubt): down now; the router reconnects and the
        reconciliation settles what is in doubt."""
        if not self.up:
            return
        log.warning("venue %s (ccxt %s): session ended: %s", self.name, self.cfg.exchange, why,
                    extra={"event": "ccxt_session_ended", "venue": self.name})
        asyncio.ensure_future(self._close(self._stop()))
        self.events.down(self.index)

    def spawn(self, coro) -> None:
        self.tasks.append(asyncio.ensure_future(coro))
        self.tasks = [t for t in self.tasks if not t.done()]

    # -- orders --
    async def create(self, o: _Order, mm: MarketMap, tif: int) -> None:
        params: dict[str, Any] = {"clientOrderId": f"{self.prefix}{o.clid}"}
        if tif == TimeInForce.IOC:
            params["timeInForce"] = "IOC"
        side = "buy" if o.side == Side.BUY else "sell"
        try:
            r = await self.exchange.create_order(mm.symbol, "limit", side, mm.qty_str(o.qty), mm.price_str(o.price),
                                                 params)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            code = outcome(e)
            if code is None:
                return self.fail(f"create_order of child {o.clid} in doubt: {e!r}")
            o.done = True
            return self.emit(MsgType.REJECTED, o, o.price, o.qty, 0, CommandKind.NEW_ORDER, reason=code)
        self.on_order(r, o)
        if o.cancel_wanted and not o.done and o.xid is not None:
            await self.cancel_at(o)

    async def cancel_at(self, o: _Order) -> None:
        try:
            r = await self.exchange.cancel_order(o.xid, self.maps[o.sid].symbol)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            code = outcome(e)
            if code is None:
                log.warning("venue %s: cancel of child %d in doubt: %r (its end comes with the order's updates)",
                            self.name, o.clid, e)
            elif not o.done:
                self.emit(MsgType.REJECTED, o, o.price, o.qty - o.filled, 0, CommandKind.CANCEL, reason=code)
            return
        if isinstance(r, dict) and r.get("status"):
            self.on_order(r, o)

    def on_order(self, r: dict, o: _Order | None = None) -> None:
        """A unified ccxt order (create_order's answer, watch_orders, fetch_*): ACCEPTED once, its
        fills from its trades, its end once every fill it claims is reported."""
        self.last_recv = time.monotonic()
        if o is None:
            o = self.by_xid.get(str(r.get("id"))) if r.get("id") is not None else None
            if o is None:
                clid = self.clid_of(r.get("clientOrderId"))
                o = self.orders.get(clid) if clid is not None else None
            if o is None:
                return                        # not a child of this router (another user of the account)
        if o.xid is None and r.get("id") is not None:
            o.xid = str(r["id"])
            self.by_xid[o.xid] = o
        if o.done:
            return
        status = r.get("status")
        ts = r.get("lastUpdateTimestamp") or r.get("timestamp")
        if not o.accepted and status != "rejected":
            o.accepted = True
            self.emit(MsgType.ACCEPTED, o, o.price, o.qty, o.qty - o.filled, CommandKind.NEW_ORDER, ts)
        for t in r.get("trades") or ():
            if t.get("id") is not None:
                self.on_trade({**t, "order": o.xid}, o)
        for t in self.early.pop(o.xid or "", ()):
            self.on_trade(t, o)
        if status in CLOSED:
            o.end = r
            self.settle(o)

    def on_trade(self, t: dict, o: _Order | None = None) -> None:
        """A unified ccxt trade of the account: a FILL of its child, once (by trade id)."""
        self.last_recv = time.monotonic()
        xid = str(t.get("order")) if t.get("order") is not None else None
        if o is None:
            if xid is None:
                return
            o = self.by_xid.get(xid)
            if o is None:
                if any(x.xid is None and not x.done for x in self.orders.values()):
                    self.early.setdefault(xid, []).append(t)      # maybe a child whose create is in flight
                else:
                    self.early.clear()                            # none in flight: those were not ours
                return
        tid = str(t.get("id"))
        if o.done or tid in o.trade_ids:
            return
        o.trade_ids.add(tid)
        mm = self.maps[o.sid]
        qty = self.exact(mm, t.get("amount"), "amount", o.clid)
        price = self.exact(mm, t.get("price"), "price", o.clid)
        if qty <= 0 or price <= 0:
            log.warning("venue %s: child %d: trade %s without amount or price: not reported", self.name, o.clid, tid)
            return
        o.filled += qty
        self.emit(MsgType.FILL, o, price, qty, max(0, o.qty - o.filled), CommandKind.NEW_ORDER, t.get("timestamp"),
                  liquidity=liquidity(t), fee=self.fee(t, mm), trade_id=wire_id(tid))
        if o.filled >= o.qty:
            o.done = True
        elif o.end is not None:
            self.settle(o)

    def settle(self, o: _Order) -> None:
        """A closed order ends once the fills it claims are all reported (its trades can come after it)."""
        r = o.end
        if o.done or r is None:
            return
        mm = self.maps[o.sid]
        claimed = self.exact(mm, r.get("filled"), "filled", o.clid)
        if claimed > o.filled:
            return                            # its trades are still to come
        leaves = o.qty - o.filled
        o.done = True
        if leaves <= 0:
            return
        ts = r.get("lastUpdateTimestamp") or r.get("timestamp")
        if r.get("status") == "rejected" and not o.filled:
            self.emit(MsgType.REJECTED, o, o.price, o.qty, 0, CommandKind.NEW_ORDER, ts,
                      reason=Reject.VENUE_ORDER_REJECTED)
        else:
            why = CancelReason.IOC_REMAINDER if r.get("timeInForce") == "IOC" else (
                CancelReason.EXPIRED if r.get("status") == "expired" else CancelReason.USER)
            self.emit(MsgType.CANCELLED, o, o.price, leaves, 0,
                      CommandKind.CANCEL if o.cancel_wanted else CommandKind.NEW_ORDER, ts, reason=why)

    def exact(self, mm: MarketMap, x: Any, what: str, clid: int) -> int:
        """A price ("price") or a quantity (anything else) of child clid in router units: exact, else rounded
        half-even and logged (an exchange reporting beyond the precision it declares)."""
        unit = mm.price_unit if what == "price" else mm.qty_unit
        try:
            return units(x or 0, unit)
        except Inexact:
            n = units(x, unit, ROUND_HALF_EVEN)
            log.warning("venue %s: child %d: %s %s is not a whole number of the router's units: rounded half-even "
                        "to %d", self.name, clid, what, x, n, extra={"event": "ccxt_inexact", "venue": self.name})
            return n

    def fee(self, t: dict, mm: MarketMap) -> int:
        """A trade's fee in the market's quote currency, in router price units (the router has no cash
        decimals of its own), half-even; 0 when charged in another currency (logged at debug)."""
        f = t.get("fee") or {}
        if f.get("cost") is None:
            return 0
        if f.get("currency") != mm.quote:
            log.debug("venue %s: fee in %s, not %s: reported as 0", self.name, f.get("currency"), mm.quote)
            return 0
        return units(f["cost"], mm.price_unit, ROUND_HALF_EVEN)

    # -- the websocket and polling loops --
    async def loop_guard(self, coro_fn, what: str) -> None:
        try:
            while self.up:
                await coro_fn()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.fail(f"{what}: {e!r}")

    async def watch_book(self, mm: MarketMap, levels: int) -> None:
        ws = self.has("watchOrderBook")

        async def once():
            if ws:
                ob = await self.exchange.watch_order_book(mm.symbol)
            else:
                ob = await self.exchange.fetch_order_book(mm.symbol)
            self.last_recv = time.monotonic()
            bids, asks = mm.book(ob, levels)
            self.events.depth(self.index, mm.sid, list(bids), list(asks))
            if not ws:
                await asyncio.sleep(self.cfg.poll_s)
        await self.loop_guard(once, f"order book {mm.symbol}")

    async def watch(self, method: str, symbol: str, handle) -> None:
        """The account's order updates (watch_orders -> on_order) or trades (watch_my_trades -> on_trade) in
        one market (by market: some exchanges require the symbol)."""
        async def once():
            for x in await getattr(self.exchange, method)(symbol):
                handle(x)
        await self.loop_guard(once, f"{method} {symbol}")

    async def poll_orders(self) -> None:
        """Without websockets: each open child's order every poll_s, and its trades when it filled more."""
        async def once():
            await asyncio.sleep(self.cfg.poll_s)
            for o in [x for x in self.orders.values() if x.xid is not None and not x.done]:
                mm = self.maps[o.sid]
                r = await self.exchange.fetch_order(o.xid, mm.symbol)
                if self.exact(mm, r.get("filled"), "filled", o.clid) > o.filled:
                    for t in await self.order_trades(o, mm, r.get("timestamp")):
                        self.on_trade(t, o)
                self.on_order(r, o)
        await self.loop_guard(once, "order polling")

    async def order_trades(self, o: _Order, mm: MarketMap, since: int | None) -> list:
        if self.has("fetchOrderTrades"):
            ts = await self.exchange.fetch_order_trades(o.xid, mm.symbol)
        else:
            ts = await self.exchange.fetch_my_trades(mm.symbol, since)
        return sorted((t for t in ts if str(t.get("order")) == o.xid), key=_trade_key)

    # -- reconciliation at connect --
    async def reconcile(self, next_seq: int) -> int:
        """Fetch the exchange's view after a (re)connect: every mapped market's open orders, its closed
        orders (fetch_closed_orders, else fetch_orders) and the account's trades since the last journaled
        report less reconcile_margin_s; then settle the router's children against it (reconciled)."""
        ex = self.exchange
        last_ms = (next_seq - 1) >> SEQ_SHIFT
        since = max(0, last_ms - int(self.cfg.reconcile_margin_s * 1000)) if last_ms else None
        orders, open_ids, trades = [], set(), []
        for mm in self.maps.values():
            live = await ex.fetch_open_orders(mm.symbol)
            open_ids.update(str(r.get("id")) for r in live)
            orders += live
            if self.has("fetchClosedOrders"):
                orders += await ex.fetch_closed_orders(mm.symbol, since)
            elif self.has("fetchOrders"):
                orders += await ex.fetch_orders(mm.symbol, since)
            if self.has("fetchMyTrades"):
                trades += await ex.fetch_my_trades(mm.symbol, since)
        return self.reconciled(self.held(), orders, open_ids, trades)

    def reconciled(self, held: dict[int, tuple], orders: list[dict], open_ids: set[str], trades: list[dict]) -> int:
        """The router's children at this venue (held_children) against the exchange's unified orders (those
        open: their ids in open_ids) and trades. For each child not over that the exchange has: the fills
        beyond what the router holds (new_to_fill; one FILL at the order's average price when the exchange
        lists no trades), then ACCEPTED or its end, as live updates would have said. A child the exchange does
        not have: never taken if the router had no report of it (it is answered by the returned client order
        id: the smallest such one, so the router finds them unsent and routes their share again), else left
        in doubt and logged. Returns the next client order id; sets open_at_connect (open_orders)."""
        found: dict[int, dict] = {}
        for r in orders:
            clid = self.clid_of(r.get("clientOrderId"))
            if clid is not None:
                found.setdefault(clid, r)
        by_order: dict[str, list] = {}
        for t in trades:
            by_order.setdefault(str(t.get("order")), []).append(t)
        self.open_at_connect = []
        unsent = []
        for clid, (sid, side, price, qty, filled, state) in sorted(held.items()):
            if state == DONE:
                continue
            r = found.get(clid)
            mm = self.maps.get(sid)
            if r is None or mm is None:
                if state == SENT:
                    unsent.append(clid)
                else:
                    log.warning("venue %s: child %d not found at the exchange: left in doubt", self.name, clid,
                                extra={"event": "reconcile_mismatch", "venue": self.name})
                continue
            o = self.orders[clid] = _Order(clid, sid, side, price, qty, filled, accepted=state == LIVE)
            o.xid = str(r.get("id"))
            self.by_xid[o.xid] = o
            if o.xid in open_ids:
                self.open_at_connect.append((clid, self.exact(mm, r.get("remaining"), "remaining", clid)))
            ts = sorted(by_order.get(o.xid, []), key=_trade_key)
            claimed = self.exact(mm, r.get("filled"), "filled", clid)
            if ts:
                sizes = [self.exact(mm, t.get("amount"), "amount", clid) for t in ts]
                skip = new_to_fill(filled, claimed, sizes)
                o.trade_ids.update(str(t.get("id")) for t in ts[:skip])
                for t in ts[skip:]:
                    self.on_trade(t, o)
            elif claimed > o.filled and r.get("average") is not None:
                n, o.filled = claimed - o.filled, claimed
                self.emit(MsgType.FILL, o, units(r["average"], mm.price_unit, ROUND_HALF_EVEN), n,
                          max(0, qty - claimed), CommandKind.NEW_ORDER, r.get("lastUpdateTimestamp"),
                          liquidity=0)
            self.on_order({**r, "trades": None}, o)
        return min(unsent, default=max(found, default=0) + 1)


def _trade_key(t: dict):
    return (t.get("timestamp") or 0, str(t.get("id")))


def liquidity(t: dict) -> int:
    m = t.get("takerOrMaker")
    return Liquidity.MAKER if m == "maker" else Liquidity.TAKER if m == "taker" else 0
