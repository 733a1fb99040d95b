"""The Python SDK: an asyncio client (works under uvloop) and a blocking wrapper.

    async with Client.connect("127.0.0.1", 7001, account=1, secret="...") as c:
        report = await c.place("BTCUSDT", "buy", "1.5", price="45000.00")

Prices and quantities are Decimal (or str/int) at this edge and integer units on
the wire, converted with the symbol directory; a value that is not a multiple of
the symbol's tick or lot is refused here with ValueError before anything is sent.
Many requests may be in flight at once: each awaits its own reply, for at most the
client's `timeout` (RequestTimeout). Every error raised on purpose is a
TradingEngineError with `.code` (a protocol/codes.py Reject code, 0 when none
applies): AuthenticationError (logon refused), RateLimitError (THROTTLED),
ConnectionClosed (the session ended: every pending call fails with it, and so does
every later one unless the client reconnects), RequestTimeout, and with
`raise_on_reject=True` OrderRejected instead of a returned REJECTED report.
"""
from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import itertools
import os
import ssl as ssllib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Coroutine, Generator, Iterable, Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Generic, Literal, Protocol, Self, TypeVar

import msgspec
import numpy as np

from protocol import wire
from protocol.codes import (AccountState, AlgoEnd, AlgoKind, AlgoState, CancelReason, CommandKind, OrderFlag,
                            OrderState, OrderType, Reject, SelfTradePrevention, Side, SymbolState, TimeInForce)
from protocol.units import from_units, to_units
from protocol.wire import MdFlag, MsgType

REPORT_KINDS: dict[int, str] = {MsgType.ACCEPTED: "accepted", MsgType.REJECTED: "rejected", MsgType.FILL: "fill",
                MsgType.CANCELLED: "cancelled", MsgType.REPLACED: "replaced", MsgType.TRIGGERED: "triggered",
                MsgType.RESTATED: "restated", MsgType.MASS_CANCEL_DONE: "mass_cancel_done",
                MsgType.BALANCE: "balance", MsgType.ACCOUNT_STATE: "account_state",
                MsgType.ALGO_ACCEPTED: "algo_accepted", MsgType.ALGO_PROGRESS: "algo_progress",
                MsgType.ALGO_DONE: "algo_done", MsgType.ALGO_PAUSED: "algo_paused",
                MsgType.ALGO_RESUMED: "algo_resumed", MsgType.ALGO_AMENDED: "algo_amended"}
ALGO_REPORTS = frozenset({MsgType.ALGO_ACCEPTED, MsgType.ALGO_PROGRESS, MsgType.ALGO_DONE, MsgType.ALGO_PAUSED,
                          MsgType.ALGO_RESUMED, MsgType.ALGO_AMENDED})
ALGO_ACTIONS = {"algo_cancel": MsgType.ALGO_CANCEL, "algo_pause": MsgType.ALGO_PAUSE,
                "algo_resume": MsgType.ALGO_RESUME, "algo_amend": MsgType.ALGO_AMEND}
CASH_FIELDS = ("cash", "equity", "unrealized", "realized", "fees", "exposure", "worst_exposure", "initial_margin",
               "maintenance_margin", "available", "daily_pnl")


LOGON_ATTEMPTS = 3                 # a logon refused REPLAYED_LOGON is tried again with a later timestamp
_last_logon_ts = 0
_logon_ts_lock = threading.Lock()


def _logon_timestamp() -> int:
    """Wall time in ns, strictly above every one this process used before (the server refuses a
    logon whose timestamp is not above the account's last accepted one: REPLAYED_LOGON)."""
    global _last_logon_ts
    with _logon_ts_lock:
        _last_logon_ts = max(time.time_ns(), _last_logon_ts + 1)
        return _last_logon_ts


DEFAULT_TIMEOUT = 10.0          # seconds a request waits for its reply (RequestTimeout after)

T = TypeVar("T")
Number = Decimal | str | int    # a price or quantity at this edge (never float: ValueError/TypeError)


def _reason_name(code: int) -> str:
    try:
        return Reject(code).name
    except ValueError:
        return str(code)


class TradingEngineError(Exception):
    """The base of every error this SDK raises on purpose. `code` is the protocol's reject or
    logout reason (protocol/codes.py Reject; 0 when none applies)."""

    def __init__(self, message: str, code: int = 0):
        super().__init__(message)
        self.code = code


class ServerError(TradingEngineError):
    """The server refused something (a logon, a subscription, a query) or ended the session;
    `reason` is the same code as `code`."""

    def __init__(self, reason: int, text: str):
        super().__init__(f"{text}: {_reason_name(reason)}", reason)
        self.reason = reason


class AuthenticationError(ServerError):
    """The logon was refused (AUTH_FAILED, LOCKED_OUT, STALE_TIMESTAMP, REPLAYED_LOGON, ...)."""


class OrderRejected(ServerError):
    """With `raise_on_reject=True`: a request answered with a REJECTED report (`report`)."""

    def __init__(self, report: ExecutionReport):
        super().__init__(_reject_code(report), f"{report.request or 'request'} rejected")
        self.report = report


class RateLimitError(OrderRejected):
    """The session sent above its rate (REJECTED with THROTTLED; never reached the engine, so
    nothing changed): wait and send again. Raised whether or not `raise_on_reject` is set."""


class ConnectionClosed(TradingEngineError, ConnectionError):
    """The session ended (server shutdown, network, logout): pending and later calls fail with
    it. `code` is the server's reason when it gave one (SERVER_SHUTDOWN, HEARTBEAT_TIMEOUT...)."""


class RequestTimeout(TradingEngineError, TimeoutError):
    """No reply within the timeout. The request may still have reached the engine: its report,
    if any, comes through reports()."""


def _reject_code(report: ExecutionReport) -> int:
    try:
        return int(Reject[report.reason or ""])
    except KeyError:
        return 0


class Symbol(msgspec.Struct, frozen=True):
    id: int
    name: str
    price_decimals: int
    qty_decimals: int
    tick_size: int
    lot_size: int
    trading: bool

    def price_units(self, value: Number) -> int:
        """A price (Decimal, str or int) in integer ticks units; ValueError off the tick."""
        return to_units(value, self.price_decimals, self.tick_size, f"{self.name} price", "tick")

    def qty_units(self, value: Number) -> int:
        """A quantity in integer units; ValueError off the lot."""
        return to_units(value, self.qty_decimals, self.lot_size, f"{self.name} quantity", "lot")

    def price(self, units: int) -> Decimal:
        """Integer price units as a Decimal."""
        return from_units(units, self.price_decimals)

    def qty(self, units: int) -> Decimal:
        """Integer quantity units as a Decimal."""
        return from_units(units, self.qty_decimals)


class ExecutionReport(msgspec.Struct, frozen=True):
    """One execution report about an order: kind is accepted, rejected, fill, cancelled,
    replaced, triggered, restated or mass_cancel_done (the account-level ones are
    BalanceReport and AccountStateReport). Prices and quantities are Decimal; a rejected
    report echoes the side, price and qty that were sent. ts_ns is the engine's time of
    the command that caused it (its journaled receive time, ns since the epoch: the same
    in a replay). A fill has liquidity (maker or taker) and fee (this side's, in the quote
    currency, negative = rebate; None on other kinds). `liquidation` marks the orders the
    engine placed to liquidate the account (and their fills)."""
    kind: str
    seq: int
    order_id: int
    client_order_id: int
    symbol: str
    side: str | None
    price: Decimal
    qty: Decimal
    leaves: Decimal
    reason: str | None = None
    trade_id: int = 0
    liquidity: str | None = None
    request: str = ""                 # what caused it: new_order, cancel, amend, mass_cancel, ...
    liquidation: bool = False
    ts_ns: int = 0
    fee: Decimal | None = None


class BalanceReport(msgspec.Struct, frozen=True):
    """A deposit (amount > 0) or withdrawal (amount < 0) took effect (risk on). amount and
    cash (after it) are in the quote currency: Decimal with the PORTFOLIO's cash_decimals
    (integer cash units if the session could not learn them)."""
    seq: int
    amount: Decimal
    cash: Decimal
    ts_ns: int
    request: str = ""                 # deposit or withdraw
    kind: str = "balance"


class AccountStateReport(msgspec.Struct, frozen=True):
    """The account's risk state changed (risk on): state is active, reduce_only, suspended or
    liquidating; kill_switch is True while the account's (or the global) kill switch is on."""
    seq: int
    state: str
    kill_switch: bool
    ts_ns: int
    request: str = ""                 # what caused it: set_account_state, kill_switch, risk_tick, mark_price, ...
    kind: str = "account_state"


class AlgoReport(msgspec.Struct, frozen=True):
    """A parent order's report (engine/ALGOS.md): kind is algo_accepted, algo_progress, algo_done,
    algo_paused, algo_resumed or algo_amended. filled and leaves (total - filled) in the symbol's
    units; avg_price of the children's fills (None before a fill); expected: what the schedule
    expected filled by now; slippage_bps against the arrival price (positive = worse); arrival_price
    in algo_accepted. reason: algo_done's end (filled, expired, swept, cancelled) or the reject that
    paused it (algo_paused; None when paused by its owner)."""
    kind: str
    seq: int
    parent_id: int
    client_order_id: int
    symbol: str
    side: str
    filled: Decimal
    leaves: Decimal
    avg_price: Decimal | None
    expected: Decimal
    slippage_bps: Decimal
    reason: str | None = None
    arrival_price: Decimal | None = None
    child_order_id: int = 0
    request: str = ""                 # what caused it: algo_new, algo_clock, new_order (a fill), ...
    ts_ns: int = 0


class AlgoInfo(msgspec.Struct, frozen=True):
    """A live parent order (algos())."""
    parent_id: int
    client_order_id: int
    symbol: str
    side: str
    algo: str
    state: str                        # waiting, active, paused
    end_action: str                   # cancel, sweep
    qty: Decimal
    filled: Decimal
    avg_price: Decimal | None
    expected: Decimal
    limit_price: Decimal | None
    arrival_price: Decimal | None
    start_ts_ns: int
    end_ts_ns: int
    slippage_bps: Decimal
    child_order_id: int
    children: int
    pause_reason: str | None
    market_vwap: Decimal | None       # the market's VWAP since the start, its own fills left out
    slippage_vwap_bps: Decimal        # against market_vwap (positive = worse)
    interval_vwap: Decimal | None     # the market's VWAP in the parent's current interval, its own fills left out
    slippage_interval_bps: Decimal    # its fills against the VWAP of the interval each was filled in


Report = ExecutionReport | BalanceReport | AccountStateReport | AlgoReport


class Position(msgspec.Struct, frozen=True):
    """One symbol of the account (positions()): quantities and prices in the symbol's units, money
    in the quote currency; position > 0 is long. open_buy / open_sell: live orders' remaining."""
    symbol: str
    position: Decimal
    avg_price: Decimal
    mark: Decimal
    open_buy: Decimal
    open_sell: Decimal
    realized: Decimal
    fees: Decimal
    unrealized: Decimal
    exposure: Decimal
    initial_margin: Decimal
    maintenance_margin: Decimal


class Portfolio(msgspec.Struct, frozen=True):
    """The account's risk figures (portfolio()), money in the quote currency (engine/RISK.md):
    equity = cash + unrealized, available = equity - initial margin, leverage = exposure / equity
    (None when equity <= 0), state active / reduce_only / suspended / liquidating."""
    cash: Decimal
    equity: Decimal
    unrealized: Decimal
    realized: Decimal
    fees: Decimal
    exposure: Decimal
    worst_exposure: Decimal
    initial_margin: Decimal
    maintenance_margin: Decimal
    available: Decimal
    daily_pnl: Decimal
    leverage: Decimal | None
    open_orders: int
    state: str
    kill_switch: bool
    cash_decimals: int


class ModelFigures(msgspec.Struct, frozen=True):
    """One VaR model's figures: VaR and expected shortfall (losses, quote currency), None before the risk
    worker's first model."""
    var: Decimal | None
    es: Decimal | None


class RiskMetrics(msgspec.Struct, frozen=True):
    """risk_metrics() (engine/RISK.md "Risk queries"): the account's exposure, leverage and margin use
    (from the engine), its MAX_VAR and the VaR bound its orders are checked against (limit_use =
    var_limit / max_var), VaR and ES per model at the configured confidence and horizon, the parametric
    VaR backtest, and the model's journal time (model_ts_ns, 0 = none yet)."""
    exposure: Decimal
    worst_exposure: Decimal
    equity: Decimal
    leverage: Decimal | None
    initial_margin: Decimal
    maintenance_margin: Decimal
    margin_use: Decimal | None
    max_var: Decimal | None
    var_limit: Decimal
    limit_use: Decimal | None
    models: dict[str, ModelFigures]
    confidence: Decimal
    horizon_days: Decimal
    backtest_observations: int
    backtest_exceedances: int
    kupiec_p: Decimal
    christoffersen_p: Decimal
    model_ts_ns: int
    limit_model_ts_ns: int


class VaR(msgspec.Struct, frozen=True):
    """var(): VaR and ES at `confidence` (the one used: historical and Monte Carlo figures exist at a grid
    of confidences, the point at or above the one asked) over horizon_days, by `model`."""
    var: Decimal
    es: Decimal
    confidence: Decimal
    horizon_days: Decimal
    model: str
    model_ts_ns: int


class StressResult(msgspec.Struct, frozen=True):
    """One stress scenario (stress()): the account's P&L, equity and maintenance margin after, whether it
    would be liquidated, and with a volatility multiplier the stressed VaR."""
    name: str
    pnl: Decimal
    equity: Decimal
    maintenance_margin: Decimal
    below_maintenance: bool
    stressed_var: Decimal | None


class Level(msgspec.Struct, frozen=True):
    price: Decimal
    qty: Decimal
    orders: int


class Book(msgspec.Struct, frozen=True):
    symbol: str
    bids: list[Level]
    asks: list[Level]


class OrderInfo(msgspec.Struct, frozen=True):
    """One order (open_orders(), order()); stop_price is None unless it is a stop order."""
    order_id: int
    client_order_id: int
    symbol: str
    side: str
    type: str
    tif: str
    state: str
    price: Decimal
    stop_price: Decimal | None
    qty: Decimal
    leaves: Decimal
    shown: Decimal
    filled: Decimal


class TopOfBook(msgspec.Struct, frozen=True):
    """Best bid and ask (None when that side is empty), displayed quantities, order counts, and
    the last trade price; `seq` is the engine command sequence this state follows."""
    symbol: str
    seq: int
    bid: Decimal | None
    bid_qty: Decimal
    bid_orders: int
    ask: Decimal | None
    ask_qty: Decimal
    ask_orders: int
    last: Decimal | None
    halted: bool


class Depth(msgspec.Struct, frozen=True):
    """The top levels per side (best first) as of engine command `seq`."""
    symbol: str
    seq: int
    bids: list[Level]
    asks: list[Level]
    halted: bool


class Trade(msgspec.Struct, frozen=True):
    """A trade print: never an account or order id. `aggressor` is the taker's side."""
    symbol: str
    trade_id: int
    price: Decimal
    qty: Decimal
    aggressor: str
    seq: int
    time_ns: int


class TradeSummary(msgspec.Struct, frozen=True):
    """Trades not delivered one by one (the server or this SDK conflated them because the
    reader was behind); recent_trades() returns the prints themselves."""
    symbol: str
    count: int
    first_trade_id: int
    last_trade_id: int
    volume: Decimal
    high: Decimal
    low: Decimal
    last: Decimal
    seq: int


MarketUpdate = TopOfBook | Depth | Trade | TradeSummary


def _merge_trades(items: Iterable[Trade | TradeSummary]) -> TradeSummary | None:
    """One TradeSummary of a run of Trade and TradeSummary updates (oldest first)."""
    out: TradeSummary | None = None
    for x in items:
        if isinstance(x, Trade):
            x = TradeSummary(x.symbol, 1, x.trade_id, x.trade_id, x.qty, x.price, x.price, x.price, x.seq)
        if out is None:
            out = x
        else:
            out = TradeSummary(x.symbol, out.count + x.count, out.first_trade_id, x.last_trade_id,
                               out.volume + x.volume, max(out.high, x.high), min(out.low, x.low), x.last, x.seq)
    return out


class Subscription:
    """One symbol's market data as an async iterator of TopOfBook, Depth, Trade and
    TradeSummary. Bounded: when more than `maxsize` updates wait unread, they are conflated
    (the latest TopOfBook and Depth kept, the trades merged into one TradeSummary)."""

    def __init__(self, client: Client, symbol: Symbol, flags: int, levels: int, maxsize: int):
        self.client, self.symbol, self.flags, self.levels, self.maxsize = client, symbol, flags, levels, maxsize
        self._items: collections.deque[MarketUpdate] = collections.deque()
        self._wakeup = asyncio.Event()
        self._ended = False
        self.conflated = 0                    # updates merged here because the application read slowly

    def _push(self, update: MarketUpdate) -> None:
        self._items.append(update)
        if len(self._items) > self.maxsize:
            items = list(self._items)
            tops = [x for x in items if isinstance(x, TopOfBook)][-1:]
            depths = [x for x in items if isinstance(x, Depth)][-1:]
            merged = _merge_trades(x for x in items if isinstance(x, (Trade, TradeSummary)))
            kept: list[MarketUpdate] = [merged] if merged else []
            self._items = collections.deque([*kept, *tops, *depths])
            self.conflated += len(items) - len(self._items)
        self._wakeup.set()

    def _end(self) -> None:
        self._ended = True
        self._wakeup.set()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> MarketUpdate:
        while not self._items:
            if self._ended:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._items.popleft()

    def pending(self) -> int:
        """Updates received and not read yet."""
        return len(self._items)

    async def close(self) -> None:
        """Unsubscribe (the iterator ends after what was already received)."""
        if not self._ended:
            await self.client.unsubscribe(self.symbol.name)


def signing_key(secret: str | bytes) -> bytes:
    """Derived exactly as the server derives it (protocol/SPEC.md, session rule 1)."""
    s = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(s, b"trading-engine signing key", hashlib.sha256).digest()


class _Closable(Protocol):
    async def close(self) -> None: ...


C = TypeVar("C", bound=_Closable)


class _Connect(Generic[C]):
    """What Client.connect (and ShardedClient.connect) returns: await it for the client, or use it
    with `async with` (closed at the end of the block)."""

    def __init__(self, coro: Coroutine[Any, Any, C]):
        self._coro = coro
        self._client: C | None = None

    def __await__(self) -> Generator[Any, None, C]:
        return self._coro.__await__()

    async def __aenter__(self) -> C:
        self._client = await self._coro
        return self._client

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._client is not None:
            await self._client.close()


class Client:
    """An asyncio session. Use `Client.connect(...)` (awaitable or `async with`)."""

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.symbols_by_name: dict[str, Symbol] = {}
        self.symbols_by_id: dict[int, Symbol] = {}
        self.last_seq = 0
        self.gaps: list[tuple[int, int]] = []      # (expected, received) sequence gaps seen
        self.next_client_order_id = 1
        self.session_id = 0
        self.account = 0
        self.timeout: float | None = DEFAULT_TIMEOUT   # seconds per request (None: wait for ever)
        self.raise_on_reject = False               # REJECTED reports raise OrderRejected
        self.auto_reconnect = False
        self.reconnects = 0                        # sessions opened again after one ended
        self.last_error = 0                        # the reason of the last LOGOUT or PROTOCOL_ERROR
        # order requests' waiters: an ExecutionReport answers them, or an AlgoReport (algo requests)
        self._waiters: dict[tuple[Any, ...], list[asyncio.Future[Any]]] = {}
        self._queries: dict[int, tuple[asyncio.Future[list[tuple[Any, Any]]], list[tuple[Any, Any]]]] = {}
        self._request_ids = itertools.count(1)
        self._reports: asyncio.Queue[Report | tuple[int, Any] | None] = asyncio.Queue()
        self._reader_task: asyncio.Future[None] | None = None
        self._hb_task: asyncio.Future[None] | None = None
        self._reconnect_task: asyncio.Future[None] | None = None
        self._connected = False                    # a logged-on session is open: requests may be sent
        self._closed = False
        self.end_of_session = False
        self._subs: dict[int, Subscription] = {}
        self._ssl: ssllib.SSLContext | None = None
        self._reconnecting = False
        self._ready = False                        # symbols and cash units known: reports convert on arrival
        self.cash_decimals: int | None = None      # from the server's PORTFOLIO (None: risk is off)
        self._key = b""
        self._addr: tuple[str, int] = ("", 0)
        self._addrs: list[tuple[str, int]] = []     # (host, port) and the failover addresses
        self._addr_i = 0                           # the one the last logon succeeded at
        self._heartbeat_ms = 1000
        self._cod = False

    @classmethod
    def connect(cls, host: str, port: int, *, account: int, secret: str | bytes, heartbeat_ms: int = 1000,
                cancel_on_disconnect: bool = False, next_seq: int = 1,
                tls: bool | ssllib.SSLContext = False, timeout: float | None = DEFAULT_TIMEOUT,
                reconnect: bool = False, raise_on_reject: bool = False,
                failover: Sequence[tuple[str, int]] = ()) -> _Connect[Client]:
        """Open a session: `await Client.connect(...)` or `async with Client.connect(...) as c`.

        next_seq: the first execution report wanted (the server replays from there; 1 = all, a
        number above the newest just means none). tls=True: TLS verified against the system's
        CAs and the host name; or pass an ssl.SSLContext (e.g. one that trusts the server's
        own certificate). timeout: seconds each request (and the logon) waits for its reply
        before RequestTimeout (None: no limit). reconnect=True: when the session ends other
        than by close(), log on again with backoff (0.1 s doubling to 5 s) asking for the
        reports missed, and subscribe again; reports() and subscriptions carry on, calls made
        while it is down fail with ConnectionClosed. raise_on_reject=True: a REJECTED report
        raises OrderRejected instead of being returned. failover: the other nodes of a primary and
        hot standby ((host, port) each; engine/SCALING.md): every logon, the first and each
        reconnect, tries the address that worked last, then the others in turn, passing over one
        that refuses the connection, times out or answers NOT_PRIMARY; with reconnect=True the
        gap replay then continues at whichever serves, so each report arrives exactly once."""
        c = cls()
        c._ssl = (ssllib.create_default_context() if tls is True else tls) or None
        c.timeout, c.auto_reconnect, c.raise_on_reject = timeout, reconnect, raise_on_reject
        c._addrs = [(host, port), *failover]
        return _Connect(c._open(host, port, account, secret, heartbeat_ms, cancel_on_disconnect, next_seq))

    async def _open(self, host: str, port: int, account: int, secret: str | bytes, heartbeat_ms: int,
                    cancel_on_disconnect: bool, next_seq: int) -> Client:
        self.account, self._key, self._addr = account, signing_key(secret), (host, port)
        if not self._addrs:
            self._addrs = [(host, port)]
        self._heartbeat_ms, self._cod = heartbeat_ms, cancel_on_disconnect
        self.last_seq = next_seq - 1
        await self._logon()
        try:
            await asyncio.gather(self.symbols(), self._cash_units())
        except BaseException:
            await self._drop()
            raise
        self._ready = True
        return self

    async def _cash_units(self) -> None:
        status, entries = await self._query(MsgType.PORTFOLIO_REQUEST)
        if not status and len(entries):
            self.cash_decimals = int(entries[0]["cash_decimals"])

    async def _logon(self) -> None:
        """Log on at the address that worked last, else at the next one that serves (failover):
        the last address's error when none does."""
        n = len(self._addrs)
        for k in range(n):
            i = (self._addr_i + k) % n
            self._addr = self._addrs[i]
            try:
                await self._logon_at()
            except AuthenticationError as e:
                if e.code != Reject.NOT_PRIMARY or k == n - 1:
                    raise
                continue
            except (ConnectionClosed, RequestTimeout):
                if k == n - 1:
                    raise
                continue
            self._addr_i = i
            return

    async def _logon_at(self) -> None:
        """Connect and log on (within `timeout`): AuthenticationError, ConnectionClosed, RequestTimeout."""
        host, port = self._addr
        try:
            await self._await(self._logon_exchange(), "logon")
        except RequestTimeout:
            if self.writer is not None:
                self.writer.close()
            raise
        except ssllib.SSLError:          # a certificate not trusted: as the ssl module says it
            raise
        except OSError as e:             # refused, unreachable, reset: one typed error
            raise ConnectionClosed(f"cannot connect to {host}:{port}: {e.strerror or e}") from e
        except asyncio.IncompleteReadError as e:
            raise ConnectionClosed(f"{host}:{port} closed the connection during logon") from e

    async def _logon_exchange(self) -> None:
        """Logon timestamps must rise strictly per account (protocol/SPEC.md, session rule 1): this
        process never repeats or goes back on one, and when another logon of the account got in
        first with a later one (REPLAYED_LOGON), it tries again, up to LOGON_ATTEMPTS times."""
        for attempt in range(LOGON_ATTEMPTS):
            self.reader, self.writer = await asyncio.open_connection(*self._addr, ssl=self._ssl)
            frame = bytearray(wire.encode(MsgType.LOGON, account=self.account, heartbeat_ms=self._heartbeat_ms,
                                          next_seq=self.last_seq + 1, timestamp_ns=_logon_timestamp(),
                                          flags=wire.LogonFlag.CANCEL_ON_DISCONNECT if self._cod else 0,
                                          proto_version=wire.SCHEMA_VERSION,
                                          nonce=int.from_bytes(os.urandom(4), "little")))
            frame[40:72] = hmac.new(self._key, bytes(frame[8:40]), hashlib.sha256).digest()
            self.writer.write(frame)
            header = await self.reader.readexactly(wire.HEADER.size)
            length = int.from_bytes(header[:2], "little")
            body = await self.reader.readexactly(length - wire.HEADER.size)
            (t, rec, _), = wire.decode(header + body)[0]
            if t == MsgType.LOGON_ACCEPTED:
                break
            self.writer.close()
            if int(rec["reason"]) != Reject.REPLAYED_LOGON or attempt == LOGON_ATTEMPTS - 1:
                raise AuthenticationError(int(rec["reason"]), "logon refused")
        self.session_id = int(rec["session_id"])
        self.next_client_order_id = max(self.next_client_order_id, int(rec["next_client_order_id"]))
        newest = int(rec["next_seq"]) - 1
        if self.last_seq > newest:       # asked for reports beyond the newest: the next one is newest + 1
            self.last_seq = newest
        self._connected = True
        self.end_of_session, self.last_error = False, 0
        self._reader_task = asyncio.ensure_future(self._read_loop())
        self._hb_task = asyncio.ensure_future(self._heartbeats(int(rec["heartbeat_ms"]) / 1000))

    async def reconnect(self) -> None:
        """Log on again, asking for every report after the last one seen (the server replays the gap)."""
        self._reconnecting = True
        try:
            await self._drop()
            if self._reader_task is not None:
                await asyncio.gather(self._reader_task, return_exceptions=True)
            await self._logon()
        finally:
            self._reconnecting = False
        await self._resubscribe()

    async def _resubscribe(self) -> None:
        for sub in list(self._subs.values()):         # market data is not replayed: subscribe again
            await self._query(MsgType.SUBSCRIBE, symbol=sub.symbol.id, flags=sub.flags, levels=sub.levels)

    async def _reconnect_loop(self) -> None:
        """reconnect=True: log on again with exponential backoff until it works or close()."""
        delay = 0.1
        while not self._closed:
            await asyncio.sleep(delay)
            try:
                await self._logon()
            except AuthenticationError as e:
                if e.code != Reject.NOT_PRIMARY:
                    break                              # a refused logon does not cure itself
                delay = min(delay * 2, 5.0 if len(self._addrs) == 1 else 1.0)   # a standby: soon
                continue
            except ssllib.SSLError:
                break                                  # nor a refused certificate
            except (ConnectionClosed, RequestTimeout):
                delay = min(delay * 2, 5.0 if len(self._addrs) == 1 else 1.0)    # failover: try sooner
                continue
            self.reconnects += 1
            try:
                await self._resubscribe()
            except TradingEngineError:
                pass                                   # ended again: its read loop starts the next attempt
            return
        self._end_streams()

    async def _drop(self) -> None:
        self._connected = False
        for task in (self._reader_task, self._hb_task):
            if task is not None:
                task.cancel()
        if self.writer is not None:
            self.writer.close()

    async def close(self) -> None:
        """Log out and close the connection; reports() and subscriptions end."""
        if self._closed:
            return
        self._closed = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
        if self._connected and self.writer is not None:
            try:
                self.writer.write(wire.encode(MsgType.LOGOUT))
                await self.writer.drain()
            except (ConnectionError, RuntimeError):
                pass
        await self._drop()
        self._end_streams()

    async def _heartbeats(self, interval: float) -> None:
        while self._connected and self.writer is not None and not self.writer.is_closing():
            await asyncio.sleep(interval)
            if self._connected:
                self.writer.write(wire.encode(MsgType.HEARTBEAT, timestamp_ns=time.time_ns()))

    # -- incoming --
    async def _read_loop(self) -> None:
        assert self.reader is not None
        buf = b""
        try:
            while True:
                data = await self.reader.read(1 << 16)
                if not data:
                    break
                buf += data
                frames, used = wire.decode(buf)
                buf = buf[used:]
                for t, rec, entries in frames:
                    self._on_frame(t, rec, entries)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connected = False
            if self._hb_task is not None:
                self._hb_task.cancel()
            if self.writer is not None:
                self.writer.close()
            code = Reject.SERVER_SHUTDOWN if self.end_of_session else self.last_error
            err = ConnectionClosed("session closed" + (f": {_reason_name(code)}" if code else ""), code)
            for fs in list(self._waiters.values()):
                for f in fs:
                    if not f.done():
                        f.set_exception(err)
            for q, _ in list(self._queries.values()):
                if not q.done():
                    q.set_exception(err)
            self._waiters.clear()
            self._queries.clear()
            if not self._reconnecting and not self._closed:   # a reconnect() keeps the reports stream
                if self.auto_reconnect and self._ready:        # and renews the subscriptions
                    self._reconnect_task = asyncio.ensure_future(self._reconnect_loop())
                else:
                    self._end_streams()

    def _end_streams(self) -> None:
        """The session is over for good: reports() and every subscription end."""
        self._reports.put_nowait(None)
        for sub in self._subs.values():
            sub._end()

    def _on_frame(self, t: int, rec: Any, entries: Any) -> None:
        if t in REPORT_KINDS:
            seq = int(rec["seq"])
            if seq == 0:                           # a session-level reject (THROTTLED...): not sequenced
                report = self._report(t, rec)
                self._reports.put_nowait(report)
                self._resolve(report)
                return
            if seq <= self.last_seq:
                return                             # already seen (a replay overlap)
            if seq != self.last_seq + 1:
                self.gaps.append((self.last_seq + 1, seq))
            self.last_seq = seq
            if not self._ready:                    # replayed at logon, before the symbol directory came
                self._reports.put_nowait((t, rec))
                return
            report = self._report(t, rec)
            self._reports.put_nowait(report)
            self._resolve(report)
        elif t in wire.MARKET_DATA_TYPES:
            self._on_market_data(t, rec, entries)
        elif t in wire.ENTRY:
            rid = int(rec["request_id"])
            if rid in self._queries:
                fut, acc = self._queries[rid]
                acc.append((rec, entries))
                if not int(rec["more"]):
                    del self._queries[rid]
                    fut.set_result(acc)
        elif t == MsgType.END_OF_SESSION:
            self.end_of_session = True
        elif t in (MsgType.PROTOCOL_ERROR, MsgType.LOGOUT):
            self.last_error = int(rec["reason"])

    def _on_market_data(self, t: int, r: Any, entries: Any) -> None:
        sub = self._subs.get(int(r["symbol"]))
        if sub is None:
            return
        sym = sub.symbol
        if t == MsgType.TOP_OF_BOOK:
            bid, ask = int(r["bid_price"]), int(r["ask_price"])
            sub._push(TopOfBook(sym.name, int(r["seq"]), sym.price(bid) if bid else None, sym.qty(int(r["bid_qty"])),
                                int(r["bid_orders"]), sym.price(ask) if ask else None, sym.qty(int(r["ask_qty"])),
                                int(r["ask_orders"]), sym.price(int(r["last_price"])) if int(r["last_price"]) else None,
                                int(r["state"]) == SymbolState.HALTED))
        elif t == MsgType.DEPTH:
            levels = [Level(sym.price(int(e["price"])), sym.qty(int(e["qty"])), int(e["orders"])) for e in entries]
            nb = int(r["bid_count"])
            sub._push(Depth(sym.name, int(r["seq"]), levels[:nb], levels[nb:], int(r["state"]) == SymbolState.HALTED))
        elif t == MsgType.TRADES:
            for e in entries:
                sub._push(self._trade(sym, e))
        elif t == MsgType.TRADE_SUMMARY:
            sub._push(TradeSummary(sym.name, int(r["count"]), int(r["first_trade_id"]), int(r["last_trade_id"]),
                                   sym.qty(int(r["volume"])), sym.price(int(r["high"])), sym.price(int(r["low"])),
                                   sym.price(int(r["last_price"])), int(r["seq"])))

    @staticmethod
    def _trade(sym: Symbol, e: Any) -> Trade:
        return Trade(sym.name, int(e["trade_id"]), sym.price(int(e["price"])), sym.qty(int(e["qty"])),
                     "buy" if int(e["side"]) == Side.BUY else "sell", int(e["seq"]), int(e["ts_ns"]))

    def _cash(self, units: int) -> Decimal:
        return Decimal(units) if self.cash_decimals is None else from_units(units, self.cash_decimals)

    def _report(self, t: int, r: Any) -> Report:
        kind = REPORT_KINDS[t]
        try:
            request = CommandKind(int(r["cmd_kind"])).name.lower()
        except ValueError:
            request = ""
        ts_ns = int(r["ts_ns"])
        if t == MsgType.BALANCE:
            return BalanceReport(int(r["seq"]), self._cash(int(r["qty"])), self._cash(int(r["leaves"])), ts_ns,
                                 request)
        if t == MsgType.ACCOUNT_STATE:
            return AccountStateReport(int(r["seq"]), AccountState(int(r["reason"])).name.lower(), bool(int(r["qty"])),
                                      ts_ns, request)
        sym = self.symbols_by_id.get(int(r["symbol"]))
        if t in ALGO_REPORTS:
            return self._algo_report(t, r, sym, request, ts_ns)
        reason = None
        if t == MsgType.REJECTED:
            reason = _reason_name(int(r["reason"]))
        elif t == MsgType.CANCELLED:
            reason = CancelReason(int(r["reason"])).name.lower()
        side = {int(Side.BUY): "buy", int(Side.SELL): "sell"}.get(int(r["side"]))
        price = sym.price(int(r["price"])) if sym else Decimal(int(r["price"]))
        conv = sym.qty if sym and t != MsgType.MASS_CANCEL_DONE else Decimal
        liq = {int(wire.Liquidity.MAKER): "maker", int(wire.Liquidity.TAKER): "taker"}.get(int(r["liquidity"]))
        return ExecutionReport(kind, int(r["seq"]), int(r["order_id"]), int(r["client_order_id"]),
                               sym.name if sym else str(int(r["symbol"]) or ""), side, price, conv(int(r["qty"])),
                               conv(int(r["leaves"])), reason, int(r["trade_id"]), liq, request,
                               bool(int(r["flags"]) & wire.ReportFlag.LIQUIDATION), ts_ns,
                               self._cash(int(r["fee"])) if t == MsgType.FILL else None)

    def _algo_report(self, t: int, r: Any, sym: Symbol | None, request: str, ts_ns: int) -> AlgoReport:
        price = sym.price if sym else Decimal
        qty = sym.qty if sym else Decimal
        code, avg = int(r["reason"]), int(r["price"])
        reason = None
        if t == MsgType.ALGO_DONE and code:
            reason = AlgoEnd(code).name.lower()
        elif t == MsgType.ALGO_PAUSED and code:
            reason = _reason_name(code)
        accepted = t == MsgType.ALGO_ACCEPTED
        return AlgoReport(REPORT_KINDS[t], int(r["seq"]), int(r["order_id"]), int(r["client_order_id"]),
                          sym.name if sym else str(int(r["symbol"])), Side(int(r["side"])).name.lower(),
                          qty(int(r["qty"])), qty(int(r["leaves"])), None if accepted or not avg else price(avg),
                          qty(int(r["trade_id"])), Decimal(int(r["fee"])) / 100, reason,
                          price(avg) if accepted and avg else None, 0, request, ts_ns)

    def _resolve(self, rep: Report) -> None:
        if isinstance(rep, AlgoReport) or (isinstance(rep, ExecutionReport) and rep.request.startswith("algo_")):
            self._resolve_algo(rep)
            return
        if not isinstance(rep, ExecutionReport):
            return                                 # balances and account states answer no request
        keys: list[tuple[Any, ...]] = []
        if rep.request == "new_order" and rep.kind in ("accepted", "rejected"):
            keys.append(("new", rep.client_order_id))
        elif rep.request in ("cancel", "amend") and rep.kind in ("cancelled", "replaced", "rejected"):
            keys += [(rep.request, "oid", rep.order_id), (rep.request, "clid", rep.client_order_id)]
        elif rep.request == "mass_cancel" and rep.kind in ("mass_cancel_done", "rejected"):
            keys.append(("mass",))
        f = self._take_waiter(keys)
        if f is None or f.done():
            return
        if rep.kind == "rejected" and rep.reason == Reject.THROTTLED.name:
            f.set_exception(RateLimitError(rep))
        elif rep.kind == "rejected" and self.raise_on_reject:
            f.set_exception(OrderRejected(rep))
        else:
            f.set_result(rep)

    def _resolve_algo(self, rep: AlgoReport | ExecutionReport) -> None:
        """The answer to an algo request: ALGO_NEW's algo_accepted (or rejected); an action's
        algo_done (cancel), algo_paused, algo_resumed, algo_amended (or rejected)."""
        answers = {"algo_new": "algo_accepted", "algo_cancel": "algo_done", "algo_pause": "algo_paused",
                   "algo_resume": "algo_resumed", "algo_amend": "algo_amended"}
        if rep.kind not in (answers.get(rep.request), "rejected"):
            return
        pid = rep.parent_id if isinstance(rep, AlgoReport) else rep.order_id
        keys: list[tuple[Any, ...]] = [(rep.request, "clid", rep.client_order_id)]
        if rep.request != "algo_new":
            keys.insert(0, (rep.request, "oid", pid))
        f = self._take_waiter(keys)
        if f is None or f.done():
            return
        if isinstance(rep, ExecutionReport) and self.raise_on_reject:
            f.set_exception(OrderRejected(rep))
        else:
            f.set_result(rep)

    def _take_waiter(self, keys: list[tuple[Any, ...]]) -> asyncio.Future[Any] | None:
        """The oldest request waiting under the first of `keys` that has one, taken off its list."""
        for key in keys:
            fs = self._waiters.get(key)
            if fs:
                f = fs.pop(0)
                if not fs:
                    del self._waiters[key]
                return f
        return None

    async def _await(self, aw: Awaitable[T], what: str) -> T:
        """Wait for a reply for at most `timeout` seconds."""
        try:
            return await asyncio.wait_for(aw, self.timeout)
        except asyncio.TimeoutError:
            raise RequestTimeout(f"{what}: no reply within {self.timeout} s") from None

    def _send(self, frame: bytes) -> None:
        if not self._connected or self.writer is None:
            code = Reject.SERVER_SHUTDOWN if self.end_of_session else self.last_error
            raise ConnectionClosed("session closed" + (f": {_reason_name(code)}" if code else ""), code)
        self.writer.write(frame)

    async def _reply(self, key: tuple[Any, ...], what: str) -> ExecutionReport:
        """Wait for the report that answers the order request just sent."""
        rep: ExecutionReport = await self._wait(key, what)
        return rep

    async def _reply_algo(self, key: tuple[Any, ...], what: str) -> AlgoReport | ExecutionReport:
        """Wait for the report that answers the algo request just sent (an AlgoReport, or REJECTED)."""
        rep: AlgoReport | ExecutionReport = await self._wait(key, what)
        return rep

    async def _wait(self, key: tuple[Any, ...], what: str) -> Any:
        """Wait for the report that _resolve / _resolve_algo hands to `key`'s first waiter."""
        f: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(f)
        try:
            return await self._await(asyncio.shield(f), what)
        except RequestTimeout:
            fs = self._waiters.get(key, [])
            if f in fs:
                fs.remove(f)
                if not fs:
                    del self._waiters[key]
            raise

    async def reports(self) -> AsyncIterator[Report]:
        """Every execution report of the account, in sequence order: ExecutionReport (fills,
        cancels, triggers, ...), BalanceReport and AccountStateReport; ends when the session ends (with reconnect=True: when
        close() is called or a reconnect is refused)."""
        while True:
            r = await self._reports.get()
            if r is None:
                self._reports.put_nowait(None)       # a second reports() ends too
                return
            yield self._report(*r) if isinstance(r, tuple) else r

    def received_reports(self) -> list[Report]:
        """The reports received and not yet taken by reports(), taken now without waiting."""
        out: list[Report] = []
        while not self._reports.empty():
            r = self._reports.get_nowait()
            if r is None:
                self._reports.put_nowait(None)
                break
            out.append(self._report(*r) if isinstance(r, tuple) else r)
        return out

    # -- requests --
    def _symbol(self, symbol: str | int) -> Symbol:
        try:
            return self.symbols_by_name[symbol] if isinstance(symbol, str) else self.symbols_by_id[symbol]
        except KeyError:
            raise ValueError(f"unknown symbol {symbol!r}") from None

    async def place(self, symbol: str | int, side: Literal["buy", "sell"], qty: Number, price: Number | None = None,
                    type: Literal["limit", "market", "stop", "stop_limit"] | None = None,
                    tif: Literal["gtc", "day", "ioc", "fok", "gtd"] = "gtc", stop_price: Number | None = None,
                    display_qty: Number | None = None, post_only: bool = False,
                    stp: Literal["cancel_newest", "cancel_oldest", "cancel_both", "none"] = "cancel_newest",
                    client_order_id: int | None = None, expire: datetime | int | None = None, strategy: int = 0,
                    reduce_only: bool = False) -> ExecutionReport:
        """Send a NewOrder; returns its accepted or rejected report (fills follow in reports()).

        type: None infers it from the prices given: price -> limit, stop_price -> stop, both ->
        stop_limit; a market order must say type="market" (no price at all is a ValueError, not a
        market order by accident). expire: the GTD expiry (datetime or ns since the epoch).
        reduce_only: the order may only reduce the account's position (risk;
        REDUCE_ONLY_VIOLATION otherwise). RateLimitError when throttled; OrderRejected for a
        reject when the client was connected with raise_on_reject=True."""
        if type is None:
            if price is None and stop_price is None:
                raise ValueError("give a price (a limit order), a stop_price (a stop order) or type='market'")
            type = ("stop_limit" if price is not None else "stop") if stop_price is not None else "limit"
        if type in ("limit", "stop_limit") and price is None:
            raise ValueError(f"a {type} order needs a price")
        if type in ("stop", "stop_limit") and stop_price is None:
            raise ValueError(f"a {type} order needs a stop_price")
        sym = self._symbol(symbol)
        clid = client_order_id if client_order_id is not None else self.next_client_order_id
        expire_ns = 0
        if expire is not None:
            expire_ns = int(expire.timestamp() * 1e9) if isinstance(expire, datetime) else int(expire)
        frame = wire.encode(
            MsgType.NEW_ORDER, client_order_id=clid, symbol=sym.id, side=Side[side.upper()],
            order_type=OrderType[type.upper()], tif=TimeInForce[tif.upper()],
            stp=SelfTradePrevention[stp.upper()], price=sym.price_units(price) if price is not None else 0,
            qty=sym.qty_units(qty), stop_price=sym.price_units(stop_price) if stop_price is not None else 0,
            display_qty=sym.qty_units(display_qty) if display_qty is not None else 0,
            expire_ts_ns=expire_ns, strategy=strategy,
            flags=(OrderFlag.POST_ONLY if post_only else 0) | (OrderFlag.REDUCE_ONLY if reduce_only else 0))
        self._send(frame)
        self.next_client_order_id = max(self.next_client_order_id, clid + 1)   # only once it is sent
        return await self._reply(("new", clid), f"place client order id {clid}")

    def _target(self, order_id: int | None, client_order_id: int | None) -> tuple[tuple[str, int], int, int]:
        if order_id:
            return ("oid", order_id), order_id, 0
        if client_order_id:
            return ("clid", client_order_id), 0, client_order_id
        raise ValueError("give order_id or client_order_id")

    async def cancel(self, order_id: int | None = None, client_order_id: int | None = None) -> ExecutionReport:
        """Cancel one order (by order id or client order id); returns the cancelled or rejected report."""
        key, oid, clid = self._target(order_id, client_order_id)
        self._send(wire.encode(MsgType.CANCEL, order_id=oid, client_order_id=clid))
        return await self._reply(("cancel",) + key, f"cancel {key[1]}")

    async def amend(self, symbol: str | int, order_id: int | None = None, client_order_id: int | None = None,
                    qty: Number | None = None, price: Number | None = None,
                    stop_price: Number | None = None) -> ExecutionReport:
        """Amend an order: a new remaining qty (0 cancels), price or stop price (None = unchanged);
        returns the replaced or rejected report. With qty=None the engine keeps the order's
        remaining quantity as it is when the amend is applied (AMEND.qty = -1)."""
        sym = self._symbol(symbol)
        key, oid, clid = self._target(order_id, client_order_id)
        units = wire.AMEND_QTY_UNCHANGED if qty is None else sym.qty_units(qty)
        self._send(wire.encode(
            MsgType.AMEND, order_id=oid, client_order_id=clid, qty=units,
            price=sym.price_units(price) if price is not None else 0,
            stop_price=sym.price_units(stop_price) if stop_price is not None else 0))
        return await self._reply(("amend",) + key, f"amend {key[1]}")

    async def mass_cancel(self, symbol: str | int | None = None,
                          side: Literal["buy", "sell"] | None = None) -> ExecutionReport:
        """Cancel every live order of the account (of one symbol and/or side); returns the
        mass_cancel_done report (qty = how many were cancelled)."""
        self._send(wire.encode(MsgType.MASS_CANCEL, symbol=self._symbol(symbol).id if symbol else 0,
                               side=Side[side.upper()] if side else 0))
        return await self._reply(("mass",), "mass cancel")

    # -- execution algorithms (engine/ALGOS.md) --
    async def place_algo(self, symbol: str | int, side: Literal["buy", "sell"], qty: Number,
                         algo: Literal["twap", "vwap", "is", "pov"] = "twap", *, duration_ms: int,
                         limit_price: Number | None = None, start: datetime | int | None = None, slices: int = 0,
                         randomization: Number = 0, aggressiveness: Number = 0, participation_rate: Number = 0,
                         offset_ticks: int = 0, end_action: Literal["cancel", "sweep"] = "cancel",
                         risk_aversion: int = 0, volatility: int = 0, impact: int = 0,
                         client_order_id: int | None = None, strategy: int = 0) -> AlgoReport | ExecutionReport:
        """Send a parent order; returns its algo_accepted report (or the rejected ExecutionReport).

        duration_ms: the window from `start` (None = now); slices (0 = the server's default);
        randomization, aggressiveness and participation_rate as fractions (0.1 = 10%); the IS
        parameters in the units of engine/ALGOS.md. Its progress follows in reports()."""
        sym = self._symbol(symbol)
        clid = client_order_id if client_order_id is not None else self.next_client_order_id
        start_ns = 0
        if start is not None:
            start_ns = int(start.timestamp() * 1e9) if isinstance(start, datetime) else int(start)

        def bps(x: Number) -> int:
            return int((Decimal(str(x)) * 10_000).to_integral_value())
        frame = wire.encode(
            MsgType.ALGO_NEW, client_order_id=clid, symbol=sym.id, side=Side[side.upper()],
            algo=AlgoKind[algo.upper()], end_action=AlgoEnd[end_action.upper()], qty=sym.qty_units(qty),
            limit_price=sym.price_units(limit_price) if limit_price is not None else 0, start_ts_ns=start_ns,
            duration_ms=duration_ms, slices=slices, randomization_bps=bps(randomization),
            aggressiveness_bps=bps(aggressiveness), participation_bps=bps(participation_rate),
            offset_ticks=offset_ticks, risk_aversion=risk_aversion, volatility=volatility, impact=impact,
            strategy=strategy)
        self._send(frame)
        self.next_client_order_id = max(self.next_client_order_id, clid + 1)
        return await self._reply_algo(("algo_new", "clid", clid), f"place_algo client order id {clid}")

    async def _algo_action(self, request: str, parent_id: int | None, client_order_id: int | None,
                           **fields: int) -> AlgoReport | ExecutionReport:
        key, pid, clid = self._target(parent_id, client_order_id)
        self._send(wire.encode(ALGO_ACTIONS[request], parent_id=pid, client_order_id=clid, **fields))
        return await self._reply_algo((request,) + key, f"{request} {key[1]}")

    async def cancel_algo(self, parent_id: int | None = None,
                          client_order_id: int | None = None) -> AlgoReport | ExecutionReport:
        """Cancel a parent and its working child; returns the algo_done report (or rejected)."""
        return await self._algo_action("algo_cancel", parent_id, client_order_id)

    async def pause_algo(self, parent_id: int | None = None,
                         client_order_id: int | None = None) -> AlgoReport | ExecutionReport:
        """Pause a parent (its working child is cancelled); returns algo_paused (or rejected)."""
        return await self._algo_action("algo_pause", parent_id, client_order_id)

    async def resume_algo(self, parent_id: int | None = None,
                          client_order_id: int | None = None) -> AlgoReport | ExecutionReport:
        """Resume a paused parent (it catches up with its schedule); returns algo_resumed (or rejected)."""
        return await self._algo_action("algo_resume", parent_id, client_order_id)

    async def amend_algo(self, parent_id: int | None = None, client_order_id: int | None = None, *,
                         symbol: str | int, qty: Number | None = None, limit_price: Number | None = None,
                         end: datetime | int | None = None) -> AlgoReport | ExecutionReport:
        """Amend a parent: a new total quantity, limit price or end (None = unchanged); returns
        algo_amended (or rejected)."""
        sym = self._symbol(symbol)
        end_ns = 0
        if end is not None:
            end_ns = int(end.timestamp() * 1e9) if isinstance(end, datetime) else int(end)
        return await self._algo_action("algo_amend", parent_id, client_order_id,
                                       qty=sym.qty_units(qty) if qty is not None else 0,
                                       limit_price=sym.price_units(limit_price) if limit_price is not None else 0,
                                       end_ts_ns=end_ns)

    async def algos(self) -> list[AlgoInfo]:
        """The account's live parent orders, ascending parent id."""
        status, entries = await self._query(MsgType.ALGOS_REQUEST)
        if status:
            raise ServerError(status, "algos refused")
        out = []
        for e in entries:
            sym = self.symbols_by_id[int(e["symbol"])]
            f, avg, lim, arr = int(e["filled"]), int(e["avg_price"]), int(e["limit_price"]), int(e["arrival_price"])
            out.append(AlgoInfo(
                int(e["parent_id"]), int(e["client_order_id"]), sym.name, Side(int(e["side"])).name.lower(),
                AlgoKind(int(e["algo"])).name.lower(), AlgoState(int(e["state"])).name.lower(),
                AlgoEnd(int(e["end_action"])).name.lower(), sym.qty(int(e["qty"])), sym.qty(f),
                sym.price(avg) if f else None, sym.qty(int(e["expected"])), sym.price(lim) if lim else None,
                sym.price(arr) if arr else None, int(e["start_ts_ns"]), int(e["end_ts_ns"]),
                Decimal(int(e["slippage_cbps"])) / 100, int(e["child_order_id"]), int(e["children"]),
                _reason_name(int(e["pause_reason"])) if int(e["pause_reason"]) else None,
                sym.price(int(e["market_vwap"])) if int(e["market_vwap"]) else None,
                Decimal(int(e["slippage_vwap_cbps"])) / 100,
                sym.price(int(e["interval_vwap"])) if int(e["interval_vwap"]) else None,
                Decimal(int(e["slippage_interval_cbps"])) / 100))
        return out

    async def _query(self, t: int, **fields: int) -> tuple[int, Any]:
        rid = next(self._request_ids)
        self._send(wire.encode(t, request_id=rid, **fields))
        fut: asyncio.Future[list[tuple[Any, Any]]] = asyncio.get_running_loop().create_future()
        self._queries[rid] = (fut, [])
        try:
            parts = await self._await(asyncio.shield(fut), f"{MsgType(t).name.lower()} {rid}")
        except RequestTimeout:
            self._queries.pop(rid, None)
            raise
        status = int(parts[0][0]["status"])
        entries: Any = np.concatenate([e for _, e in parts]) if parts else []
        return status, entries

    async def symbols(self) -> list[Symbol]:
        """The symbol directory (also kept in symbols_by_name / symbols_by_id)."""
        _, entries = await self._query(MsgType.SYMBOL_DIRECTORY_REQUEST)
        out = [Symbol(int(e["symbol"]), bytes(e["name"]).rstrip(b"\0").decode(), int(e["price_decimals"]),
                      int(e["qty_decimals"]), int(e["tick_size"]), int(e["lot_size"]), int(e["state"]) == 1)
               for e in entries]
        self.symbols_by_name = {s.name: s for s in out}
        self.symbols_by_id = {s.id: s for s in out}
        return out

    async def book(self, symbol: str | int, depth: int = 10) -> Book:
        """The book's top `depth` levels per side, best first (ValueError if refused)."""
        sym = self._symbol(symbol)
        status, entries = await self._query(MsgType.BOOK_DEPTH_REQUEST, symbol=sym.id, levels=depth)
        if status:
            raise ValueError(f"book {symbol}: {_reason_name(status)}")
        lv = [(int(e["side"]), Level(sym.price(int(e["price"])), sym.qty(int(e["qty"])), int(e["orders"])))
              for e in entries]
        return Book(sym.name, [x for s, x in lv if s == Side.BUY], [x for s, x in lv if s == Side.SELL])

    # -- market data --
    async def subscribe(self, symbol: str | int, *, top: bool = True, depth: int = 0, trades: bool = True,
                        maxsize: int = 10_000) -> Subscription:
        """Subscribe to a symbol's top of book, `depth` levels per side (0 = no depth) and trade
        prints; returns a Subscription (async iterator of typed updates, the current
        TopOfBook/Depth first). Subscribing again to a symbol replaces the earlier one."""
        sym = self._symbol(symbol)
        flags = (int(MdFlag.TOP_OF_BOOK) if top else 0) | (int(MdFlag.DEPTH) if depth else 0) | \
            (int(MdFlag.TRADES) if trades else 0)
        if not flags:
            raise ValueError("subscribe to something: top, depth or trades")
        if depth and not 1 <= depth <= wire.MAX_DEPTH_LEVELS:
            raise ValueError(f"depth {depth}: 1..{wire.MAX_DEPTH_LEVELS} levels")
        sub = Subscription(self, sym, int(flags), depth, maxsize)
        old = self._subs.get(sym.id)
        self._subs[sym.id] = sub             # before the request: the current picture follows its response
        status, _ = await self._query(MsgType.SUBSCRIBE, symbol=sym.id, flags=int(flags), levels=depth)
        if status:
            if old is not None:
                self._subs[sym.id] = old
            else:
                del self._subs[sym.id]
            raise ServerError(status, f"subscribe {sym.name} refused")
        if old is not None:
            old._end()
        return sub

    async def unsubscribe(self, symbol: str | int | None = None) -> None:
        """Stop one symbol's market data (None: every symbol's)."""
        sym = self._symbol(symbol) if symbol is not None else None
        status, _ = await self._query(MsgType.UNSUBSCRIBE, symbol=sym.id if sym else 0)
        for sid in ([sym.id] if sym else list(self._subs)):
            sub = self._subs.pop(sid, None)
            if sub is not None:
                sub._end()
        if status:
            raise ServerError(status, f"unsubscribe {symbol if symbol is not None else 'all'} refused")

    async def recent_trades(self, symbol: str | int, n: int = 100) -> list[Trade]:
        """The last n trade prints of a symbol, oldest first (as many as the server keeps at most)."""
        sym = self._symbol(symbol)
        status, entries = await self._query(MsgType.RECENT_TRADES_REQUEST, symbol=sym.id, count=n)
        if status:
            raise ValueError(f"recent trades {symbol}: {_reason_name(status)}")
        return [self._trade(sym, e) for e in entries]

    def _order_info(self, e: Any) -> OrderInfo:
        sym = self.symbols_by_id[int(e["symbol"])]
        stop = int(e["order_type"]) in (OrderType.STOP, OrderType.STOP_LIMIT)
        return OrderInfo(int(e["order_id"]), int(e["client_order_id"]), sym.name, Side(int(e["side"])).name.lower(),
                         OrderType(int(e["order_type"])).name.lower(), TimeInForce(int(e["tif"])).name.lower(),
                         OrderState(int(e["state"])).name.lower(), sym.price(int(e["price"])),
                         sym.price(int(e["stop_price"])) if stop else None, sym.qty(int(e["qty"])), sym.qty(int(e["leaves"])),
                         sym.qty(int(e["shown"])), sym.qty(int(e["filled"])))

    async def open_orders(self) -> list[OrderInfo]:
        """The account's live orders (resting and untriggered stops)."""
        _, entries = await self._query(MsgType.OPEN_ORDERS_REQUEST)
        return [self._order_info(e) for e in entries]

    async def portfolio(self) -> Portfolio:
        """Cash, equity, margin, leverage, P&L and state of the account (ServerError RISK_OFF if the
        server runs without risk)."""
        status, entries = await self._query(MsgType.PORTFOLIO_REQUEST)
        if status or not len(entries):
            raise ServerError(status, "portfolio refused")
        e = entries[0]
        cd = self.cash_decimals = int(e["cash_decimals"])
        lev = int(e["leverage_bps"])
        return Portfolio(**{k: from_units(int(e[k]), cd) for k in CASH_FIELDS},
                         leverage=from_units(lev, 4) if lev >= 0 else None, open_orders=int(e["open_orders"]),
                         state=AccountState(int(e["state"])).name.lower(), kill_switch=bool(e["kill"]),
                         cash_decimals=cd)

    async def risk_metrics(self) -> RiskMetrics:
        """The account's risk metrics (RiskMetrics; ServerError RISK_OFF without risk)."""
        status, entries = await self._query(MsgType.RISK_METRICS_REQUEST)
        if status or not len(entries):
            raise ServerError(status, "risk metrics refused")
        e = entries[0]
        cd = int(e["cash_decimals"])

        def cash(k: str) -> Decimal | None:
            v = int(e[k])
            return None if v < 0 else from_units(v, cd)

        def bps(k: str) -> Decimal | None:
            v = int(e[k])
            return None if v < 0 else from_units(v, 4)
        models = {m: ModelFigures(cash("var_" + m), cash("es_" + m))
                  for m in ("parametric", "historical", "montecarlo")}
        return RiskMetrics(from_units(int(e["exposure"]), cd), from_units(int(e["worst_exposure"]), cd),
                           from_units(int(e["equity"]), cd), bps("leverage_bps"),
                           from_units(int(e["initial_margin"]), cd),
                           from_units(int(e["maintenance_margin"]), cd), bps("margin_use_bps"), cash("max_var"),
                           from_units(int(e["var_limit"]), cd), bps("limit_use_bps"), models,
                           from_units(int(e["confidence_ppm"]), 6), from_units(int(e["horizon_ppm"]), 6),
                           int(e["backtest_observations"]), int(e["backtest_exceedances"]),
                           from_units(int(e["kupiec_p_ppm"]), 6), from_units(int(e["christoffersen_p_ppm"]), 6),
                           int(e["model_ts_ns"]), int(e["limit_model_ts_ns"]))

    async def var(self, confidence: float | None = None, horizon_days: float | None = None,
                  model: str = "parametric") -> VaR | None:
        """VaR and ES of the account's positions at `confidence` and `horizon_days` (None: the server's
        configured ones) by model parametric | historical | montecarlo; None before the risk worker's first
        model. The parametric figure is exact at any confidence and horizon (engine/RISK.md "Risk queries")."""
        models = {"parametric": 1, "historical": 2, "montecarlo": 3}
        if model not in models:
            raise ValueError(f"model {model!r}: one of {', '.join(models)}")
        if confidence is not None and not 0.5 < confidence < 1:
            raise ValueError("confidence in (0.5, 1)")
        if horizon_days is not None and not 0 < horizon_days < 4000:
            raise ValueError("horizon_days in (0, 4000)")
        status, entries = await self._query(MsgType.VAR_REQUEST, model=models[model],
                                            confidence_ppm=round((confidence or 0) * 1e6),
                                            horizon_ppm=round((horizon_days or 0) * 1e6))
        if status:
            raise ServerError(status, "var refused")
        if not len(entries):
            return None
        e = entries[0]
        cd = int(e["cash_decimals"])
        return VaR(from_units(int(e["var"]), cd), from_units(int(e["es"]), cd), from_units(int(e["confidence_ppm"]), 6),
                   from_units(int(e["horizon_ppm"]), 6), model, int(e["model_ts_ns"]))

    async def stress(self, shock: float | None = None, symbol: str | int | None = None) -> list[StressResult]:
        """The configured stress scenarios (the risk worker's last figures), and with `shock` (a relative
        price move, -0.3 = -30%) an ad-hoc one on `symbol` (None: every symbol), last, named "ad-hoc"."""
        if shock is not None and not -1 < shock < 100:
            raise ValueError("shock in (-1, 100)")
        sym = self._symbol(symbol).id if symbol is not None else 0
        status, entries = await self._query(MsgType.STRESS_REQUEST, symbol=sym,
                                            shock_ppm=round((shock or 0) * 1e6))
        if status:
            raise ServerError(status, "stress refused")
        out = []
        for e in entries:
            cd = int(e["cash_decimals"])
            sv = int(e["stressed_var"])
            out.append(StressResult(bytes(e["name"]).rstrip(b"\0").decode(errors="replace"),
                                    from_units(int(e["pnl"]), cd), from_units(int(e["equity"]), cd),
                                    from_units(int(e["maintenance_margin"]), cd), bool(e["below_maintenance"]),
                                    None if sv < 0 else from_units(sv, cd)))
        return out

    async def positions(self) -> list[Position]:
        """The account's symbols with a position or open orders, ascending symbol id."""
        if self.cash_decimals is None:
            await self.portfolio()                 # the cash units (and RISK_OFF if risk is off)
        status, entries = await self._query(MsgType.POSITIONS_REQUEST)
        if status:
            raise ServerError(status, "positions refused")
        cd = self.cash_decimals or 0
        def cash(v: Any) -> Decimal:
            return from_units(int(v), cd)
        out = []
        for e in entries:
            sym = self.symbols_by_id[int(e["symbol"])]
            out.append(Position(sym.name, sym.qty(int(e["position"])), sym.price(int(e["avg_price"])),
                                sym.price(int(e["mark"])), sym.qty(int(e["open_buy"])), sym.qty(int(e["open_sell"])),
                                cash(e["realized"]), cash(e["fees"]), cash(e["unrealized"]), cash(e["exposure"]),
                                cash(e["initial_margin"]), cash(e["maintenance_margin"])))
        return out

    async def order(self, order_id: int | None = None, client_order_id: int | None = None) -> OrderInfo | None:
        """One order's state by order id or client order id (None when it is not live)."""
        _, oid, clid = self._target(order_id, client_order_id)
        status, entries = await self._query(MsgType.ORDER_STATUS_REQUEST, order_id=oid, client_order_id=clid)
        return self._order_info(entries[0]) if len(entries) else None


class LoopThread:
    """A private event loop in a daemon thread: what the blocking clients (SyncClient,
    clients.sharded.SyncShardedClient) run their asyncio client on."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def _start(self, connect: Coroutine[Any, Any, T]) -> T:
        """Run the logon coroutine; on failure stop the loop and raise."""
        try:
            return self._run(connect)
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def close(self) -> None:
        """Log out and stop the private loop."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _iterate(self, stream: AsyncIterator[T]) -> Iterator[T]:
        """An async iterator of the loop's, consumed blocking: each item waited for in turn."""
        async def step() -> tuple[bool, T | None]:
            try:
                return True, await stream.__anext__()
            except StopAsyncIteration:
                return False, None
        while True:
            more, item = self._run(step())
            if not more:
                return
            yield item  # type: ignore[misc]


class SyncClient(LoopThread):
    """The same surface as Client, blocking: for scripts and notebooks.

        with SyncClient.connect("127.0.0.1", 7001, account=1, secret="...") as c:
            ack = c.place("BTCUSDT", "buy", "1.5", price="45000.00")
            for report in c.reports():
                ...

    Runs a private event loop in a daemon thread; the asyncio Client is `client`. Errors are the
    same typed exceptions (TradingEngineError and its subclasses)."""

    def __init__(self, host: str, port: int, *, account: int, secret: str | bytes, **kw: Any):
        """Connect and log on (the arguments of Client.connect)."""
        super().__init__()

        async def connect() -> Client:
            return await Client.connect(host, port, account=account, secret=secret, **kw)
        self.client: Client = self._start(connect())

    @classmethod
    def connect(cls, host: str, port: int, *, account: int, secret: str | bytes, heartbeat_ms: int = 1000,
                cancel_on_disconnect: bool = False, next_seq: int = 1, tls: bool | ssllib.SSLContext = False,
                timeout: float | None = DEFAULT_TIMEOUT, reconnect: bool = False,
                raise_on_reject: bool = False, failover: Sequence[tuple[str, int]] = ()) -> SyncClient:
        """Open a session (see Client.connect for the options); use it as a context manager."""
        return cls(host, port, account=account, secret=secret, heartbeat_ms=heartbeat_ms,
                   cancel_on_disconnect=cancel_on_disconnect, next_seq=next_seq, tls=tls, timeout=timeout,
                   reconnect=reconnect, raise_on_reject=raise_on_reject, failover=failover)

    # -- the session --
    @property
    def symbols_by_name(self) -> dict[str, Symbol]:
        """The symbol directory by name."""
        return self.client.symbols_by_name

    @property
    def last_seq(self) -> int:
        """The sequence number of the last execution report received."""
        return self.client.last_seq

    @property
    def gaps(self) -> list[tuple[int, int]]:
        """(expected, received) report sequence gaps seen."""
        return self.client.gaps

    @property
    def next_client_order_id(self) -> int:
        """The client order id the next place() uses when none is given."""
        return self.client.next_client_order_id

    def reconnect(self) -> None:
        """Log on again, asking for every report missed (Client.reconnect)."""
        self._run(self.client.reconnect())

    def close(self) -> None:
        """Log out, close the connection and stop the private loop."""
        if self._thread.is_alive():
            self._run(self.client.close())
            self._stop_loop()

    # -- reports --
    def reports(self) -> Iterator[Report]:
        """Every execution report of the account, blocking for each; ends with the session."""
        return self._iterate(self.client.reports())

    def received_reports(self) -> list[Report]:
        """The reports received and not yet taken by reports(), without waiting."""
        async def take() -> list[Report]:
            return self.client.received_reports()
        return self._run(take())

    # -- orders --
    def place(self, symbol: str | int, side: Literal["buy", "sell"], qty: Number, price: Number | None = None,
              type: Literal["limit", "market", "stop", "stop_limit"] | None = None,
              tif: Literal["gtc", "day", "ioc", "fok", "gtd"] = "gtc", stop_price: Number | None = None,
              display_qty: Number | None = None, post_only: bool = False,
              stp: Literal["cancel_newest", "cancel_oldest", "cancel_both", "none"] = "cancel_newest",
              client_order_id: int | None = None, expire: datetime | int | None = None, strategy: int = 0,
              reduce_only: bool = False) -> ExecutionReport:
        """Send a NewOrder; its accepted or rejected report (Client.place)."""
        return self._run(self.client.place(symbol, side, qty, price, type, tif, stop_price, display_qty, post_only,
                                           stp, client_order_id, expire, strategy, reduce_only))

    def cancel(self, order_id: int | None = None, client_order_id: int | None = None) -> ExecutionReport:
        """Cancel one order; the cancelled or rejected report."""
        return self._run(self.client.cancel(order_id, client_order_id))

    def amend(self, symbol: str | int, order_id: int | None = None, client_order_id: int | None = None,
              qty: Number | None = None, price: Number | None = None,
              stop_price: Number | None = None) -> ExecutionReport:
        """Amend an order (None = unchanged; Client.amend); the replaced or rejected report."""
        return self._run(self.client.amend(symbol, order_id, client_order_id, qty, price, stop_price))

    def mass_cancel(self, symbol: str | int | None = None,
                    side: Literal["buy", "sell"] | None = None) -> ExecutionReport:
        """Cancel every live order (of one symbol and/or side); the mass_cancel_done report."""
        return self._run(self.client.mass_cancel(symbol, side))

    # -- execution algorithms --
    def place_algo(self, symbol: str | int, side: Literal["buy", "sell"], qty: Number,
                   algo: Literal["twap", "vwap", "is", "pov"] = "twap", **kw: Any) -> AlgoReport | ExecutionReport:
        """Send a parent order (Client.place_algo); its algo_accepted or rejected report."""
        return self._run(self.client.place_algo(symbol, side, qty, algo, **kw))

    def cancel_algo(self, parent_id: int | None = None,
                    client_order_id: int | None = None) -> AlgoReport | ExecutionReport:
        """Cancel a parent; its algo_done or rejected report."""
        return self._run(self.client.cancel_algo(parent_id, client_order_id))

    def pause_algo(self, parent_id: int | None = None,
                   client_order_id: int | None = None) -> AlgoReport | ExecutionReport:
        """Pause a parent; its algo_paused or rejected report."""
        return self._run(self.client.pause_algo(parent_id, client_order_id))

    def resume_algo(self, parent_id: int | None = None,
                    client_order_id: int | None = None) -> AlgoReport | ExecutionReport:
        """Resume a paused parent; its algo_resumed or rejected report."""
        return self._run(self.client.resume_algo(parent_id, client_order_id))

    def amend_algo(self, parent_id: int | None = None, client_order_id: int | None = None,
                   **kw: Any) -> AlgoReport | ExecutionReport:
        """Amend a parent (Client.amend_algo); its algo_amended or rejected report."""
        return self._run(self.client.amend_algo(parent_id, client_order_id, **kw))

    def algos(self) -> list[AlgoInfo]:
        """The account's live parent orders."""
        return self._run(self.client.algos())

    # -- queries --
    def symbols(self) -> list[Symbol]:
        """The symbol directory."""
        return self._run(self.client.symbols())

    def book(self, symbol: str | int, depth: int = 10) -> Book:
        """The book's top `depth` levels per side."""
        return self._run(self.client.book(symbol, depth))

    def open_orders(self) -> list[OrderInfo]:
        """The account's live orders."""
        return self._run(self.client.open_orders())

    def order(self, order_id: int | None = None, client_order_id: int | None = None) -> OrderInfo | None:
        """One order's state (None when it is not live)."""
        return self._run(self.client.order(order_id, client_order_id))

    def portfolio(self) -> Portfolio:
        """Cash, equity, margins, P&L and state of the account."""
        return self._run(self.client.portfolio())

    def positions(self) -> list[Position]:
        """The account's positions and P&L per symbol."""
        return self._run(self.client.positions())

    def risk_metrics(self) -> RiskMetrics:
        """VaR and ES per model, exposure, leverage, margin and VaR-limit use, backtest, model age."""
        return self._run(self.client.risk_metrics())

    def var(self, confidence: float | None = None, horizon_days: float | None = None,
            model: str = "parametric") -> VaR | None:
        """VaR and ES at a confidence, horizon and model (Client.var)."""
        return self._run(self.client.var(confidence, horizon_days, model))

    def stress(self, shock: float | None = None, symbol: str | int | None = None) -> list[StressResult]:
        """The configured stress scenarios, and an ad-hoc shock (Client.stress)."""
        return self._run(self.client.stress(shock, symbol))

    def recent_trades(self, symbol: str | int, n: int = 100) -> list[Trade]:
        """A symbol's last n trade prints, oldest first."""
        return self._run(self.client.recent_trades(symbol, n))

    # -- market data --
    def subscribe(self, symbol: str | int, *, top: bool = True, depth: int = 0, trades: bool = True,
                  maxsize: int = 10_000) -> SyncSubscription:
        """Subscribe to a symbol's market data (Client.subscribe); iterate the result."""
        return SyncSubscription(self, self._run(self.client.subscribe(symbol, top=top, depth=depth, trades=trades,
                                                                      maxsize=maxsize)))

    def unsubscribe(self, symbol: str | int | None = None) -> None:
        """Stop one symbol's market data (None: every symbol's)."""
        self._run(self.client.unsubscribe(symbol))


class SyncSubscription:
    """Subscription for SyncClient: iterate it, or next_update(timeout)."""

    def __init__(self, client: SyncClient, sub: Subscription):
        self._client, self.subscription = client, sub

    def next_update(self, timeout: float | None = None) -> MarketUpdate:
        """The next update; TimeoutError after `timeout` seconds, StopIteration once it has ended."""
        async def get() -> MarketUpdate | None:
            try:
                return await asyncio.wait_for(self.subscription.__anext__(), timeout)
            except StopAsyncIteration:
                return None
        update = self._client._run(get())
        if update is None:
            raise StopIteration
        return update

    def __iter__(self) -> SyncSubscription:
        return self

    def __next__(self) -> MarketUpdate:
        return self.next_update()

    def close(self) -> None:
        """Unsubscribe (the iterator ends after what was already received)."""
        self._client._run(self.subscription.close())
