"""Market-data subscriptions and their delivery (protocol/SPEC.md, "Market data").

Once per processing batch the server calls `Feeds.encode_batch(cmds)` when the batch is
sealed for its journal commit (its events are the engine's buffer, no later command is
applied yet) and `Feeds.publish()` with the result after the commit returns; without a
journal both at once, after each read. The per-event work -- trades into
the per-symbol rings, which watched symbols the batch touched -- is engine/marketdata.pyx;
then, per touched watched symbol (not per event), the frames are encoded there too, at
that moment, so they show the book exactly after the committed batch. Writing them to
the subscribers is left to `deliver()`, scheduled right after, so the batch's
execution reports go out first.

A connection whose unsent output is above `md_high_water_bytes` (the transport's
pause_writing) gets no more market data until it is back under `md_low_water_bytes`
(resume_writing): meanwhile only the latest TOP_OF_BOOK and DEPTH per symbol and one
TRADE_SUMMARY per symbol are kept for it (conflation), so what it costs the server is
bounded by its subscriptions, never by how far behind it is. Execution reports do not
pass through here and are never held or conflated.
"""
from __future__ import annotations

from engine.marketdata import MarketData
from protocol import wire
from protocol.codes import Reject
from protocol.wire import MdFlag, MsgType

REQUESTS = frozenset({MsgType.SUBSCRIBE, MsgType.UNSUBSCRIBE, MsgType.RECENT_TRADES_REQUEST})
ALL_FLAGS = MdFlag.TOP_OF_BOOK | MdFlag.DEPTH | MdFlag.TRADES
TOP, DEPTH, TRADES = int(MdFlag.TOP_OF_BOOK), int(MdFlag.DEPTH), int(MdFlag.TRADES)
SEQ_AT = wire.HEADER.size + wire.DEPTH_HEADER.offsets["seq"]     # a DEPTH frame's seq: not part of "changed"
MD_START = 3                         # Server.hold's kind for "updates of this new subscription may start"


class Sub:
    """One connection's subscriptions, and what is held for it while it is behind."""
    __slots__ = ("conn", "items", "paused", "held_top", "held_depth", "held_trades", "starting")

    def __init__(self, conn):
        self.conn = conn
        self.items: dict[int, tuple[int, int]] = {}     # symbol -> (MdFlag bits, depth levels)
        self.paused = False
        self.held_top: dict[int, bytes] = {}            # symbol -> latest unsent TOP_OF_BOOK
        self.held_depth: dict[int, bytes] = {}          # symbol -> latest unsent DEPTH
        self.held_trades: dict[int, list] = {}          # symbol -> summary of unsent trades
        self.starting: set[int] = set()                 # symbols subscribed whose SUBSCRIPTIONS answer is
                                                        # held (Server.hold): no updates before it

    def drop_held(self, sym):
        self.held_top.pop(sym, None)
        self.held_depth.pop(sym, None)
        self.held_trades.pop(sym, None)


def _summary_frame(sym, h) -> bytes:
    count, first, last, volume, high, low, last_price, seq = h
    return wire.encode(MsgType.TRADE_SUMMARY, symbol=sym, count=count, first_trade_id=first, last_trade_id=last,
                       volume=volume, high=high, low=low, last_price=last_price, seq=seq)


class Feeds:
    def __init__(self, server):
        self.server = server
        s = server.cfg.server
        self.high, self.low = s.md_high_water_bytes, s.md_low_water_bytes
        self.max_subscriptions = s.max_subscriptions
        self.md = MarketData(server.cfg.engine.max_symbols, s.recent_trades)
        self.watched = self.md.watched_arr                # MdFlag union per symbol, read by collect()
        self.subs: dict = {}                              # Connection -> Sub
        self.by_symbol: dict[int, dict] = {}              # symbol -> {Connection: (flags, levels)}
        self.want: dict[int, tuple[int, frozenset]] = {}  # symbol -> (flags union, depth levels wanted)
        self.last_depth: dict[tuple[int, int], bytes] = {}
        self.pending: list = []                           # encoded batch updates waiting for deliver()
        self.scheduled = False
        self.paused = 0
        self.frames_sent = 0                              # market-data frames written
        self.conflated = 0                                # updates replaced or merged while a connection was behind

    # -- the batch path --
    def on_batch(self, cmds, live=True):
        """After the journal commit of `cmds`, before the events are cleared (also during
        recovery, live=False: the trade rings only)."""
        self.publish(self.encode_batch(cmds, live))

    def encode_batch(self, cmds, live=True):
        """The batch's trades into the rings, and its market-data frames encoded from the book
        as it is now (the server calls this when the batch's events are the engine's buffer and
        no later command is applied: when it is sealed for its journal commit, or at once
        without a journal); publish() them after the commit. [(sym, trades, summary, top, depth)]"""
        md = self.md
        if not md.collect(self.server.engine, cmds) or not live:
            return []
        eng = self.server.engine
        seq = md.batch_seq
        out = []
        for sym in md.dirty_symbols():
            flags, levels = self.want[sym]
            trades = summary = None
            if flags & TRADES and md.batch_trades(sym):
                trades = md.encode_trades(sym, seq)          # None: more than the ring; the summary stands in
                summary = md.batch_summary(sym)
            top = md.encode_top(eng, sym, seq) if flags & TOP else None
            depth = None
            for n in levels:
                f = md.encode_depth(eng, sym, n, seq)
                last = self.last_depth.get((sym, n))
                if last is None or last[SEQ_AT + 8:] != f[SEQ_AT + 8:] or last[:SEQ_AT] != f[:SEQ_AT]:
                    self.last_depth[(sym, n)] = f
                    if depth is None:
                        depth = {}
                    depth[n] = f
            if summary or top or depth:
                out.append((sym, trades, summary, top, depth))
        return out

    def publish(self, updates):
        """Write encoded updates to the subscribers (scheduled: the batch's execution reports go first)."""
        if updates:
            self.pending.extend(updates)
        if self.pending and not self.scheduled:
            self.scheduled = True
            self.server.loop.call_soon(self.deliver)

    def deliver(self):
        self.scheduled = False
        pending, self.pending = self.pending, []    # all encoded after their own batch's commit
        if self.paused:
            for sub in [s for s in self.subs.values() if s.paused]:
                self._maybe_resume(sub)
        out: dict = {}
        for sym, trades, summary, top, depth in pending:
            for conn, (flags, levels) in self.by_symbol.get(sym, {}).items():
                sub = self.subs[conn]
                if sub.starting and sym in sub.starting:
                    continue                       # published before its image: older than it
                if sub.paused:
                    self._hold(sub, sym, flags, levels, summary, top, depth)
                    continue
                parts = out.get(conn)
                if parts is None:
                    parts = out[conn] = []
                if summary and flags & TRADES:
                    parts.append(trades if trades is not None else _summary_frame(sym, summary))
                if top is not None and flags & TOP:
                    parts.append(top)
                if depth and levels in depth:
                    parts.append(depth[levels])
        for conn, parts in out.items():
            if parts:
                self.frames_sent += len(parts)
                conn.write(b"".join(parts))        # may pause it (pause_writing) or, never for market data, close it

    def _hold(self, sub, sym, flags, levels, summary, top, depth):
        if summary and flags & TRADES:
            h = sub.held_trades.get(sym)
            if h is None:
                sub.held_trades[sym] = list(summary)
            else:
                count, _, last, volume, high, low, last_price, seq = summary
                h[0] += count
                h[2], h[3] = last, h[3] + volume
                h[4], h[5] = max(h[4], high), min(h[5], low)
                h[6], h[7] = last_price, seq
            self.conflated += 1
        if top is not None and flags & TOP:
            self.conflated += sym in sub.held_top
            sub.held_top[sym] = top
        if depth and levels in depth:
            self.conflated += sym in sub.held_depth
            sub.held_depth[sym] = depth[levels]

    # -- flow control (Connection.pause_writing / resume_writing) --
    def pause(self, conn):
        sub = self.subs.get(conn)
        if sub is not None and not sub.paused:
            sub.paused = True
            self.paused += 1

    def resume(self, conn):
        sub = self.subs.get(conn)
        if sub is not None and sub.paused:
            self._resume(sub)

    def _maybe_resume(self, sub):
        if sub.conn.transport is not None and sub.conn.transport.get_write_buffer_size() <= self.low:
            self._resume(sub)

    def _resume(self, sub):
        sub.paused = False
        self.paused -= 1
        parts = [_summary_frame(sym, h) for sym, h in sub.held_trades.items()]
        parts += sub.held_top.values()
        parts += sub.held_depth.values()
        sub.held_trades, sub.held_top, sub.held_depth = {}, {}, {}
        if parts:
            self.frames_sent += len(parts)
            sub.conn.write(b"".join(parts))

    # -- requests --
    def request(self, conn, t, body):
        srv = self.server
        rid, sym = int(body["request_id"]), int(body["symbol"])
        if t == MsgType.RECENT_TRADES_REQUEST:
            if not srv.engine.symbol_state(sym):
                return conn.send_list(MsgType.RECENT_TRADES, rid, [], status=Reject.UNKNOWN_SYMBOL)
            return conn.send_list(MsgType.RECENT_TRADES, rid, self.md.recent(sym, int(body["count"])))
        flags, levels = int(body["flags"]), int(body["levels"])
        sub = self.subs.get(conn)
        if t == MsgType.SUBSCRIBE:
            status = self._subscribe(conn, sub, sym, flags, levels)
        else:
            status = self._unsubscribe(sub, sym, flags)
        sub = self.subs.get(conn)
        rows = [dict(symbol=s, flags=f, levels=n) for s, (f, n) in sorted(sub.items.items())] if sub else []
        conn.send_list(MsgType.SUBSCRIPTIONS, rid, rows, status=status)
        if t == MsgType.SUBSCRIBE and status == 0:        # the current picture to start from
            seq = srv.next_cmd_seq - 1
            image = []
            if flags & TOP:
                image.append(self.md.encode_top(srv.engine, sym, seq, True))
            if flags & DEPTH:
                image.append(self.md.encode_depth(srv.engine, sym, levels, seq))
            conn.send(b"".join(image))                   # behind the SUBSCRIPTIONS answer (Server.hold)
            sub.starting.add(sym)
            if not srv.hold(conn, MD_START, sym):        # (answered now: updates may follow at once)
                sub.starting.discard(sym)

    def started(self, conn, sym):
        """The SUBSCRIPTIONS answer and image for sym went out: updates to it may follow."""
        sub = self.subs.get(conn)
        if sub is not None:
            sub.starting.discard(sym)

    def _subscribe(self, conn, sub, sym, flags, levels):
        if not self.server.engine.symbol_state(sym):
            return Reject.UNKNOWN_SYMBOL
        if not flags or flags & ~ALL_FLAGS or (flags & DEPTH and not 1 <= levels <= wire.MAX_DEPTH_LEVELS):
            return Reject.INVALID_SUBSCRIPTION
        if sub is None:
            if self.max_subscriptions == 0:
                return Reject.TOO_MANY_SUBSCRIPTIONS
            sub = self.subs[conn] = Sub(conn)
            tr = conn.transport
            tr.set_write_buffer_limits(high=self.high, low=self.low)      # may call pause_writing now
            if not sub.paused and tr.get_write_buffer_size() > self.high:
                self.pause(conn)
        elif sym not in sub.items and len(sub.items) >= self.max_subscriptions:
            return Reject.TOO_MANY_SUBSCRIPTIONS
        levels = levels if flags & DEPTH else 0
        sub.items[sym] = (flags, levels)
        sub.drop_held(sym)
        self.by_symbol.setdefault(sym, {})[conn] = (flags, levels)
        self._rewatch(sym)
        return 0

    def _unsubscribe(self, sub, sym, flags):
        if flags & ~ALL_FLAGS:
            return Reject.INVALID_SUBSCRIPTION
        if sub is None or (sym and sym not in sub.items):
            return Reject.NOT_SUBSCRIBED
        for s in ([sym] if sym else list(sub.items)):
            left = sub.items[s][0] & ~flags if flags else 0
            if left:
                sub.items[s] = (left, sub.items[s][1] if left & DEPTH else 0)
                self.by_symbol[s][sub.conn] = sub.items[s]
            else:
                del sub.items[s]
                del self.by_symbol[s][sub.conn]
            sub.drop_held(s)
            self._rewatch(s)
        if not sub.items:
            self._forget(sub)
        return 0

    def drop(self, conn):
        """The connection is closing: forget its subscriptions."""
        sub = self.subs.get(conn)
        if sub is None:
            return
        for s in sub.items:
            del self.by_symbol[s][conn]
            self._rewatch(s)
        self._forget(sub)

    def _forget(self, sub):
        if sub.paused:
            self.paused -= 1
        del self.subs[sub.conn]

    def _rewatch(self, sym):
        subs = self.by_symbol.get(sym)
        if not subs:
            self.by_symbol.pop(sym, None)
            self.want.pop(sym, None)
            self.watched[sym] = 0
            return
        flags = 0
        levels = set()
        for f, n in subs.values():
            flags |= f
            if f & DEPTH:
                levels.add(n)
        self.want[sym] = (flags, frozenset(levels))
        self.watched[sym] = flags

    def status(self) -> dict:
        return {"subscribed_connections": len(self.subs), "subscriptions": sum(len(s.items) for s in self.subs.values()),
                "behind": self.paused, "frames_sent": self.frames_sent, "conflated": self.conflated}
