"""Venue adapters: how the router reaches one venue.

The interface (VenueAdapter) is what the router calls, and the callbacks (VenueEvents) are
what an adapter calls back, all on the router's event loop, in integer units of the router's
symbols:

    connect(next_seq)        log on; replay the venue account's reports from next_seq (gap
                             replay); returns the smallest client order id the venue accepts
    subscribe(symbols)       depth of each (router symbol id -> venue symbol name) -> events.depth
    new_order(clid, ...)     one child order; False if it could not be written (venue down)
    cancel(clid) / amend(clid, qty, price)
    open_orders()            the account's live orders at the venue: [(clid, leaves)]
    close()
    events.report(venue, msg_type, body, seq)   an execution report (wire ExecReport body, bytes)
    events.depth(venue, symbol, bids, asks)     a depth snapshot, best first
    events.down(venue)                          the session ended (the router reconnects)

TradingEngineVenue: a trading-engine server through the SDK (clients/client.py; its logon,
heartbeats, queries and sequence tracking), with reports and depth taken raw off the wire.
CcxtVenue (engine/routing/ccxt_venue.py, the optional `ccxt` extra): an external exchange, the
same calls mapped onto ccxt's REST and websocket calls (engine/ROUTING.md "Adapters").
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

from clients.client import REPORT_KINDS, Client
from engine.routing.codec import AMEND_FRAME, CANCEL_FRAME, NEW_ORDER_FRAME
from protocol import wire
from protocol.wire import MdFlag, MsgType


class VenueEvents(Protocol):
    def report(self, venue: int, msg_type: int, body: bytes, seq: int) -> None: ...
    def depth(self, venue: int, symbol: int, bids: list, asks: list) -> None: ...
    def down(self, venue: int) -> None: ...


class VenueAdapter(Protocol):
    index: int
    name: str
    up: bool

    async def connect(self, next_seq: int) -> int: ...
    async def subscribe(self, symbols: dict[int, str], levels: int) -> dict[int, str]: ...
    def new_order(self, clid: int, symbol: int, side: int, order_type: int, tif: int, price: int, qty: int) -> bool: ...
    def cancel(self, clid: int) -> bool: ...
    def amend(self, clid: int, qty: int, price: int) -> bool: ...
    async def open_orders(self) -> list[tuple[int, int]]: ...
    async def close(self) -> None: ...


class _SessionClient(Client):
    """The SDK's session, with execution reports and depth handed to the adapter raw (the
    SDK's Decimal conversion and report queue are not used)."""

    def __init__(self, adapter: TradingEngineVenue):
        super().__init__()
        self.adapter = adapter

    def _on_frame(self, t: int, rec: Any, entries: Any) -> None:
        self.adapter.last_recv = time.monotonic()
        if t in REPORT_KINDS:
            seq = int(rec["seq"])
            if seq:
                if seq <= self.last_seq:
                    return                     # a replay overlap
                if seq != self.last_seq + 1:
                    self.gaps.append((self.last_seq + 1, seq))
                self.last_seq = seq
            self.adapter.on_report(t, rec.tobytes(), seq)
        elif t == MsgType.DEPTH:
            self.adapter.on_depth(rec, entries)
        elif t not in wire.MARKET_DATA_TYPES:
            super()._on_frame(t, rec, entries)

    def _end_streams(self) -> None:
        if not self._closed:
            self.adapter.on_down(self)


class TradingEngineVenue:
    def __init__(self, index: int, name: str, host: str, port: int | None, port_file: str | None, account: int,
                 secret: bytes, events: VenueEvents, tls: bool = False):
        self.index, self.name = index, name
        self.host, self.port, self.port_file = host, port, port_file
        self.account, self.secret, self.events, self.tls = account, secret, events, tls
        self.client: _SessionClient | None = None
        self.up = False
        self.last_recv = 0.0                           # monotonic time of the last frame from the venue
        self.by_venue_symbol: dict[int, int] = {}      # venue symbol id -> router symbol id
        self.venue_symbol: dict[int, int] = {}         # router symbol id -> venue symbol id

    async def connect(self, next_seq: int) -> int:
        self.last_recv = time.monotonic()
        port = self.port if self.port is not None else int(Path(self.port_file).read_text())
        c = _SessionClient(self)
        self.client = c
        c._ssl = None
        c.timeout = 10.0
        self.up = True                 # reports replayed during the logon are the venue's: take them
        try:
            await c._open(self.host, port, self.account, self.secret, 1000, False, next_seq)
        except BaseException:
            self.up = False
            self.client = None
            raise
        return c.next_client_order_id

    async def subscribe(self, symbols: dict[int, tuple[str, int, int, int, int]], levels: int) -> dict[int, str]:
        """symbols: router id -> (name, price_decimals, qty_decimals, tick, lot). Subscribes depth of each
        the venue lists alike; returns router id -> why not, for the others."""
        assert self.client is not None
        skipped = {}
        by_name = self.client.symbols_by_name
        for sid, (name, pd, qd, tick, lot) in symbols.items():
            vs = by_name.get(name)
            if vs is None or (vs.price_decimals, vs.qty_decimals, vs.tick_size, vs.lot_size) != (pd, qd, tick, lot):
                skipped[sid] = "not listed" if vs is None else "different decimals, tick or lot"
                continue
            self.by_venue_symbol[vs.id] = sid
            self.venue_symbol[sid] = vs.id
            status, _ = await self.client._query(MsgType.SUBSCRIBE, symbol=vs.id, flags=int(MdFlag.DEPTH),
                                                 levels=levels)
            if status:
                skipped[sid] = f"subscribe refused ({status})"
        return skipped

    def _write(self, frame: bytes) -> bool:
        c = self.client
        if c is None or not c._connected or c.writer is None or c.writer.is_closing():
            return False
        c.writer.write(frame)
        return True

    def new_order(self, clid: int, symbol: int, side: int, order_type: int, tif: int, price: int, qty: int) -> bool:
        vs = self.venue_symbol.get(symbol)
        if vs is None:
            return False
        return self._write(NEW_ORDER_FRAME.pack(clid, vs, side, order_type, tif, price, qty))

    def raw(self, frame: bytes) -> bool:
        return self._write(frame)

    def cancel(self, clid: int) -> bool:
        return self._write(CANCEL_FRAME.pack(clid, 0))

    def amend(self, clid: int, qty: int, price: int) -> bool:
        return self._write(AMEND_FRAME.pack(clid, 0, price, qty, 0))

    async def open_orders(self) -> list[tuple[int, int]]:
        assert self.client is not None
        _, entries = await self.client._query(MsgType.OPEN_ORDERS_REQUEST)
        return [(int(e["client_order_id"]), int(e["leaves"])) for e in entries]

    async def close(self) -> None:
        c, self.client, self.up = self.client, None, False
        if c is not None:
            await c.close()

    def silent(self, limit_s: float) -> bool:
        """Up, but nothing received for limit_s (a venue sends a heartbeat each second it is idle)."""
        return self.up and self.client is not None and time.monotonic() - self.last_recv > limit_s

    def drop(self) -> None:
        """End a session the venue no longer answers on: down now (the router reconnects)."""
        c = self.client
        if c is not None:
            self.up = False
            c._closed = True               # its read loop's end is not reported again
            if c.writer is not None:
                c.writer.transport.abort()
            self.client = None
            self.events.down(self.index)

    # -- from the session --
    def on_report(self, t: int, body: bytes, seq: int) -> None:
        self.events.report(self.index, t, body, seq)

    def on_depth(self, rec: Any, entries: Any) -> None:
        sid = self.by_venue_symbol.get(int(rec["symbol"]))
        if sid is None:
            return
        nb = int(rec["bid_count"])
        lv = [(int(p), int(q), int(o)) for p, q, o in zip(entries["price"], entries["qty"], entries["orders"])]
        self.events.depth(self.index, sid, lv[:nb], lv[nb:])

    def on_down(self, client: _SessionClient) -> None:
        if client is self.client:
            self.up = False
            self.events.down(self.index)
