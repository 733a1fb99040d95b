"""`trading-engine route --config router.toml`: the router process.

Clients connect as to a trading-engine server (protocol/SPEC.md, unchanged): LOGON (signed with
the account's secret from the router's [[accounts]]; lockouts and the durable logon timestamp
are the server's own engine/auth.py), order entry (routed: engine/routing/router.py), execution
reports sequenced per account and replayed from any next_seq (all of them are in the router's
journal), queries (SYMBOL_DIRECTORY, BOOK_DEPTH = the consolidated book, OPEN_ORDERS and
ORDER_STATUS = the parent orders; POSITIONS and PORTFOLIO answer RISK_OFF: risk is each venue's)
and market data (SUBSCRIBE: the consolidated TOP_OF_BOOK and DEPTH, sent on every venue update;
the router has no trade prints of its own: RECENT_TRADES is empty, TRADES never sent).

The venues are reached as clients (engine/routing/venues.py) and reconnected when they go down.
`trading-engine route status --config router.toml` prints the ops listener's /status.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import hashlib
import hmac
import json
import logging
import os
import signal
import socket
import struct
import sys
import time
import types
import urllib.request

from prometheus_client import generate_latest

from engine import auth as authmod
from engine.config import ConfigError, account_secret, journal_key, signing_key
from engine.journal import Journal, JournalError, JournalRefused
from engine.routing import codec, config as rconfig
from engine.routing.monitor import Monitor
from engine.routing.router import TAKING, Router, order_entry
from engine.routing.venues import TradingEngineVenue
from protocol import wire
from protocol.codes import Reject, Side, SymbolState
from protocol.records import ROUTE_INPUT, ROUTE_OUTPUT
from protocol.wire import MdFlag, MsgType

log = logging.getLogger("trading-engine.route")

HEAD = struct.Struct("<HBBI")
ORDER_TYPES = frozenset({MsgType.NEW_ORDER, MsgType.CANCEL, MsgType.AMEND, MsgType.MASS_CANCEL})
SIZES = {t: wire.frame_size(t) for t in wire.CLIENT_TYPES}


class ClientSession(asyncio.Protocol):
    def __init__(self, app: RouterApp):
        self.app = app
        self.buf = bytearray()
        self.offset = 0                       # stream offset of buf[0]
        self.transport: asyncio.Transport | None = None
        self.account = 0
        self.closed = False
        self.peer = None
        self.heartbeat = app.cfg.server.heartbeat_ms / 1000
        self.last_recv = self.last_sent = time.monotonic()
        self.subs: dict[int, tuple[int, int]] = {}    # symbol -> (MdFlag bits, levels)
        self.storing = False

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer = (transport.get_extra_info("peername") or ("?",))[0]
        self.app.conns.add(self)

    def connection_lost(self, exc):
        self.close()

    def data_received(self, data):
        recv_ns = time.perf_counter_ns()
        self.last_recv = time.monotonic()
        self.buf += data
        self.process(recv_ns)

    def process(self, recv_ns=0):
        router = self.app.router
        try:
            self._frames(router, recv_ns)
        finally:
            if router.inputs:
                router.flush()     # this read's orders committed and sent now, not behind other I/O callbacks

    def _frames(self, router, recv_ns):
        buf, pos, n = self.buf, 0, len(self.buf)
        while n - pos >= 8 and not self.closed and not self.storing:
            if self.account:
                # the NEW_ORDERs accepted and routed at once, in one C call (Router.new_orders)
                pos = router.new_orders(self.account, buf, pos, recv_ns)
                if n - pos < 8:
                    break
                if router.split.n_fast:
                    router.settle()    # the state, and the effects' order, before anything else reads them
            length, t, version, _ = HEAD.unpack_from(buf, pos)
            if length < 8 or length > wire.MAX_FRAME:
                return self.protocol_error(Reject.BAD_LENGTH, t, pos)
            if version != wire.SCHEMA_VERSION:
                return self.protocol_error(Reject.UNSUPPORTED_VERSION, t, pos)
            if t not in SIZES:
                return self.protocol_error(Reject.UNKNOWN_MSG_TYPE, t, pos)
            if length != SIZES[t]:
                return self.protocol_error(Reject.BAD_LENGTH, t, pos)
            if n - pos < length:
                break
            body = bytes(buf[pos + 8:pos + length])
            pos += length
            if not self.account and t != MsgType.LOGON:
                return self.protocol_error(Reject.NOT_LOGGED_ON, t, pos - length)
            if t in ORDER_TYPES:
                if router.failed is not None:
                    self.write(self.session_reject(t, body, Reject.JOURNAL_UNAVAILABLE))
                else:
                    router.client_order(self.account, t, body, recv_ns)
            elif t == MsgType.LOGON:
                self.logon(bytes(buf[pos - length:pos]), body)
            elif t == MsgType.HEARTBEAT:
                pass
            elif t == MsgType.LOGOUT:
                self.send(wire.encode(MsgType.LOGOUT))
                if not router.after_commit(self.close):
                    self.close()
            else:
                self.query(t, body)
        del buf[:pos]
        self.offset += pos

    def session_reject(self, t, body, reason) -> bytes:
        vals = wire.decode(wire.encode(t) [:8] + body)[0][0][1]
        names = vals.dtype.names
        sent = {f: int(vals[f]) for f in ("client_order_id", "order_id", "symbol", "side", "price", "qty")
                if f in names}
        kind = {MsgType.NEW_ORDER: 1, MsgType.CANCEL: 2, MsgType.AMEND: 3}.get(t, 4)
        return wire.encode(MsgType.REJECTED, seq=0, reason=reason, cmd_kind=kind, ts_ns=time.time_ns(), **sent)

    # -- logon: the server's checks (engine/server.py Connection.logon) with its Auth --
    def logon(self, frame, body):
        app = self.app
        if self.account:
            return self.protocol_error(Reject.ALREADY_LOGGED_ON, MsgType.LOGON, self.offset)
        lg = codec.LOGON.unpack(body)
        acct_id = lg[codec.LOGON.fields["account"]]
        key = app.keys.get(acct_id)
        if app.auth.logon_locked(acct_id, key is not None, self.peer):
            return self.logon_reject(Reject.LOCKED_OUT, acct_id)
        if key is None or not hmac.compare_digest(hmac.new(key, frame[8:40], hashlib.sha256).digest(), frame[40:72]):
            app.auth.logon_failed(acct_id, key is not None, self.peer)
            return self.logon_reject(Reject.AUTH_FAILED, acct_id, app.cfg.server.auth_failure_delay_s)
        if lg[codec.LOGON.fields["proto_version"]] != wire.SCHEMA_VERSION:
            return self.logon_reject(Reject.UNSUPPORTED_VERSION, acct_id)
        ts = lg[codec.LOGON.fields["timestamp_ns"]]
        if abs(ts - time.time_ns()) > app.cfg.server.logon_skew_s * 1e9:
            return self.logon_reject(Reject.STALE_TIMESTAMP, acct_id)
        stored = app.auth.claim_logon(acct_id, ts)
        if stored is None:
            return self.logon_reject(Reject.REPLAYED_LOGON, acct_id)
        app.auth.logon_succeeded(acct_id, self.peer)
        self.storing = True
        self.transport.pause_reading()
        stored.add_done_callback(lambda f: app.loop.call_soon_threadsafe(self.logon_stored, f, acct_id, lg))

    def logon_stored(self, stored, acct_id, lg):
        self.storing = False
        if self.closed:
            return
        try:
            stored.result()
        except Exception as e:
            log.error("logon of account %d not accepted: its timestamp could not be stored: %s", acct_id, e)
            return self.logon_reject(Reject.JOURNAL_UNAVAILABLE, acct_id)
        app, st = self.app, self.app.router.state
        self.account = acct_id
        hb = lg[codec.LOGON.fields["heartbeat_ms"]]
        self.heartbeat = max(app.cfg.server.heartbeat_ms, hb or app.cfg.server.heartbeat_ms) / 1000
        app.session_id += 1
        # reports of the open batch are not delivered yet: they reach this session when committed
        pending = sum(1 for fx in app.router.effects if isinstance(fx, tuple) and fx[0] == acct_id)
        delivered = st.report_seq.get(acct_id, 0) + 1 - pending
        self.write(wire.encode(MsgType.LOGON_ACCEPTED, session_id=app.session_id,
                               heartbeat_ms=int(self.heartbeat * 1000), next_seq=delivered,
                               next_client_order_id=st.last_clid.get(acct_id, 0) + 1, server_time_ns=time.time_ns()))
        want = lg[codec.LOGON.fields["next_seq"]] or 1
        if want < delivered:
            self.write(b"".join(st.reports.get(acct_id, [])[want - 1:delivered - 1]))
        app.router.sessions.setdefault(acct_id, set()).add(self)
        log.info("logon", extra={"event": "logon", "account": acct_id, "session": app.session_id, "peer": self.peer})
        self.transport.resume_reading()
        self.process()

    def logon_reject(self, reason, account, delay=0.0):
        self.app.auth.logon_refused(reason, account, self.peer)

        def send():
            if not self.closed:
                self.write(wire.encode(MsgType.LOGON_REJECTED, reason=reason))
                self.close()
        if delay:
            self.transport.pause_reading()
            self.app.loop.call_later(delay, send)
        else:
            send()

    # -- queries --
    def query(self, t, body):
        app, router = self.app, self.app.router
        if t in (MsgType.SUBSCRIBE, MsgType.UNSUBSCRIBE):
            return self.subscribe(t, body)
        if t == MsgType.RECENT_TRADES_REQUEST:
            rid = struct.unpack_from("<I", body)[0]
            return self.send_list(MsgType.RECENT_TRADES, rid, [])
        q = codec.QUERY.unpack(body)
        rid, sym = q[0], q[1]
        if t == MsgType.SYMBOL_DIRECTORY_REQUEST:
            rows = [dict(symbol=s.id, state=SymbolState.TRADING, price_decimals=s.price_decimals,
                         qty_decimals=s.qty_decimals, name=s.name.encode().ljust(16, b"\0"), tick_size=s.tick_size,
                         lot_size=s.lot_size, max_price=s.max_price, max_qty=s.max_qty) for s in app.symbols.values()]
            self.send_list(MsgType.SYMBOL_DIRECTORY, rid, rows)
        elif t == MsgType.BOOK_DEPTH_REQUEST:
            if sym not in app.symbols:
                return self.send_list(MsgType.BOOK_DEPTH, rid, [], Reject.UNKNOWN_SYMBOL)
            bids, asks = router.book.depth(sym, max(1, min(q[4] or 10, wire.MAX_DEPTH_LEVELS)))
            rows = [dict(price=p, qty=x, orders=o, side=Side.BUY) for p, x, o in bids] + \
                   [dict(price=p, qty=x, orders=o, side=Side.SELL) for p, x, o in asks]
            self.send_list(MsgType.BOOK_DEPTH, rid, rows)
        elif t == MsgType.OPEN_ORDERS_REQUEST:
            self.send_list(MsgType.OPEN_ORDERS, rid, [order_entry(p) for p in router.state.open_parents(self.account)])
        elif t == MsgType.ORDER_STATUS_REQUEST:
            oid, clid = q[2], q[3]
            st = router.state
            p = st.parents.get(oid) if oid else st.by_clid.get((self.account, clid))
            found = [order_entry(p)] if p is not None and p.account == self.account and not p.done else []
            self.send_list(MsgType.ORDER_STATUS, rid, found, 0 if found else Reject.UNKNOWN_ORDER)
        elif t in (MsgType.POSITIONS_REQUEST, MsgType.PORTFOLIO_REQUEST):
            self.send_list(wire.MsgType.POSITIONS if t == MsgType.POSITIONS_REQUEST else MsgType.PORTFOLIO, rid, [],
                           Reject.RISK_OFF)

    def subscribe(self, t, body):
        rid, sym, flags, _, levels, _ = codec.SUBSCRIBE.unpack(body)
        status = 0
        if t == MsgType.SUBSCRIBE:
            if sym not in self.app.symbols:
                status = Reject.UNKNOWN_SYMBOL
            elif not flags or flags & ~7 or (flags & MdFlag.DEPTH and not 1 <= levels <= wire.MAX_DEPTH_LEVELS):
                status = Reject.INVALID_SUBSCRIPTION
            elif sym not in self.subs and len(self.subs) >= self.app.cfg.server.max_subscriptions:
                status = Reject.TOO_MANY_SUBSCRIPTIONS
            else:
                self.subs[sym] = (flags, levels if flags & MdFlag.DEPTH else 0)
        elif sym == 0:
            self.subs.clear()
        elif sym not in self.subs:
            status = Reject.NOT_SUBSCRIBED
        else:
            del self.subs[sym]
        rows = [dict(symbol=s, flags=f, levels=lv) for s, (f, lv) in sorted(self.subs.items())]
        self.send_list(MsgType.SUBSCRIPTIONS, rid, rows, status)
        if t == MsgType.SUBSCRIBE and not status:
            self.send(self.app.md_frames(sym, flags, levels))

    def send_list(self, t, rid, rows, status=0):
        per = (wire.MAX_FRAME - wire.frame_size(t)) // wire.ENTRY[t].size
        chunks = [rows[i:i + per] for i in range(0, len(rows), per)] or [rows[:0]]
        self.send(b"".join(wire.encode(t, entries=c, request_id=rid, count=len(c), more=int(i < len(chunks) - 1),
                                       status=status) for i, c in enumerate(chunks)))

    # -- output --
    def send(self, data):
        """A reply in wire order: behind the reports of this session's commands not committed yet."""
        if data and not self.app.router.after_commit(lambda: self.write(data)):
            self.write(data)

    def write(self, data):
        if self.closed or not data:
            return
        self.transport.write(data)
        self.last_sent = time.monotonic()
        if self.transport.get_write_buffer_size() > self.app.cfg.server.output_buffer_bytes:
            log.warning("slow consumer closed", extra={"event": "slow_consumer", "account": self.account})
            self.write(wire.encode(MsgType.LOGOUT, reason=Reject.SLOW_CONSUMER))
            self.close()

    def protocol_error(self, reason, msg_type, offset):
        self.write(wire.encode(MsgType.PROTOCOL_ERROR, reason=reason, msg_type=msg_type & 0xFF,
                               offset=self.offset + offset))
        self.close()

    def tick(self, now):
        if self.closed:
            return
        s = self.app.cfg.server
        if not self.account:
            if now - self.last_recv > s.logon_timeout_s:
                self.close()
        elif now - self.last_recv > self.heartbeat * s.heartbeat_timeout_factor:
            self.write(wire.encode(MsgType.LOGOUT, reason=Reject.HEARTBEAT_TIMEOUT))
            self.close()
        elif now - self.last_sent >= self.heartbeat:
            self.write(wire.encode(MsgType.HEARTBEAT, timestamp_ns=time.time_ns()))

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.app.conns.discard(self)
        if self.account:
            self.app.router.sessions.get(self.account, set()).discard(self)
        if self.transport is not None:
            self.transport.close()


class RouterApp:
    def __init__(self, cfg: rconfig.RouterConfig):
        self.cfg = cfg
        self.symbols = {s.id: s for s in cfg.symbols}
        self.keys = {a.id: signing_key(account_secret(a)) for a in cfg.accounts}
        j = cfg.journal
        self.journal = Journal(j.path, j.durability, j.map_size, key=journal_key(j),
                               layouts=(ROUTE_INPUT, ROUTE_OUTPUT))
        # `async` durability: the journal flushed every sync_interval_ms on this thread, off the loop
        # (the commits stay inline on the loop); synced_seq = the last seq known to be on disk: none yet
        # (what a killed router committed may still be only in the page cache: the first interval flushes it)
        self.syncer = (concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="journal-sync")
                       if j.durability == "async" else None)
        self.synced_seq = 0
        self.router = Router(cfg.router, cfg.venues, self.symbols, self.journal)
        self.monitor = Monitor(self.router, [v.name for v in cfg.venues], cfg.router.degraded_p99_ms,
                               cfg.router.degraded_reject_ratio, cfg.router.degraded_min_samples)
        self.router.metrics = self.monitor
        shim = types.SimpleNamespace(server=cfg.server, journal=cfg.journal,
                                     engine=types.SimpleNamespace(max_accounts=max(self.keys, default=0) + 1))
        self.auth = authmod.Auth(shim, lambda: None)
        self.conns: set[ClientSession] = set()
        self.session_id = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.venue_tasks: list[asyncio.Task] = []
        self.stopping = False
        for i, v in enumerate(cfg.venues, 1):
            if v.kind == "ccxt":       # an external exchange (the ccxt extra): engine/routing/ccxt_venue.py
                from engine.routing import ccxt_venue
                self.router.venues[i] = ccxt_venue.CcxtVenue(
                    i, v.name, v.ccxt, self, self.symbols,
                    lambda i=i: ccxt_venue.held_children(self.router.state, i))
                continue
            self.router.venues[i] = TradingEngineVenue(i, v.name, v.host, v.port, v.port_file, v.account,
                                                       rconfig.venue_secret(v), self, v.tls)
        self.router.on_book = self.publish

    # -- venue events (VenueEvents) --
    def report(self, venue, msg_type, body, seq):
        self.router.venue_report(venue, msg_type, body, seq)

    def depth(self, venue, symbol, bids, asks):
        self.router.book.update(symbol, venue, bids, asks)
        self.publish(symbol)

    def down(self, venue):
        name = self.cfg.venues[venue - 1].name
        log.warning("venue down", extra={"event": "venue_down", "venue": name})
        self.monitor.down(venue)
        for sym in self.router.venue_down(venue):
            self.publish(sym)
        if not self.stopping:
            self.venue_tasks.append(self.loop.create_task(self.keep_venue(venue)))

    async def keep_venue(self, venue):
        """Connect (with gap replay from the last report journaled) until it works, then subscribe."""
        ad = self.router.venues[venue]
        v = self.cfg.venues[venue - 1]
        delay = 0.0
        last_error = None
        while not self.stopping:
            await asyncio.sleep(delay)
            delay = self.cfg.router.reconnect_s
            try:
                next_clid = await ad.connect(self.router.state.venue_seq[venue] + 1)
                syms = {s.id: (s.name, s.price_decimals, s.qty_decimals, s.tick_size, s.lot_size)
                        for s in self.symbols.values()}
                skipped = await ad.subscribe(syms, self.cfg.router.depth_levels)
                live = await ad.open_orders()
            except (OSError, ValueError, Exception) as e:   # refused, reset, logon refused: try again later
                if ad.up:
                    await ad.close()
                if str(e) != last_error:     # logged when the reason changes, not at every attempt
                    last_error = str(e)
                    log.info("venue %s not reachable: %s", v.name, e, extra={"event": "venue_connect_failed",
                                                                              "venue": v.name})
                continue
            for sid, why in skipped.items():
                log.warning("venue %s not used for %s: %s", v.name, self.symbols[sid].name, why)
            self.monitor.up(venue)
            self.router.venue_up(venue, next_clid)
            self.reconcile(venue, live)
            log.info("venue up", extra={"event": "venue_up", "venue": v.name, "next_clid": next_clid,
                                        "venue_seq": self.router.state.venue_seq[venue]})
            return

    def reconcile(self, venue, live):
        """The venue's open orders against the children the router holds open there: a difference is
        logged (the venue's report stream, replayed, is what changes the state)."""
        st = self.router.state
        ours = {clid: c.leaves for (v, clid), c in st.children.items() if v == venue and c.state == 2
                and c.tif not in TAKING}
        theirs = {clid: leaves for clid, leaves in live if (venue, clid) in st.children}
        if ours != theirs:
            log.warning("venue open orders differ from the router's children", extra={
                "event": "reconcile_mismatch", "venue": self.cfg.venues[venue - 1].name,
                "router": sorted(ours.items())[:20], "venue_side": sorted(theirs.items())[:20]})

    # -- consolidated market data --
    def md_frames(self, sym, flags, levels) -> bytes:
        bk = self.router.book
        out = []
        if flags & MdFlag.TOP_OF_BOOK:
            bids, asks = bk.depth(sym, 1)
            b = bids[0] if bids else (0, 0, 0)
            a = asks[0] if asks else (0, 0, 0)
            out.append(wire.encode(MsgType.TOP_OF_BOOK, symbol=sym, state=SymbolState.TRADING, seq=bk.seq,
                                   bid_price=b[0], bid_qty=b[1], bid_orders=b[2], ask_price=a[0], ask_qty=a[1],
                                   ask_orders=a[2]))
        if flags & MdFlag.DEPTH:
            bids, asks = bk.depth(sym, levels)
            rows = [dict(price=p, qty=q, orders=o, side=Side.BUY) for p, q, o in bids] + \
                   [dict(price=p, qty=q, orders=o, side=Side.SELL) for p, q, o in asks]
            out.append(wire.encode(MsgType.DEPTH, entries=rows, symbol=sym, levels=levels, state=SymbolState.TRADING,
                                   seq=bk.seq, bid_count=len(bids), ask_count=len(asks)))
        return b"".join(out)

    def publish(self, sym):
        for c in self.conns:
            sub = c.subs.get(sym)
            if sub is not None:
                c.write(self.md_frames(sym, *sub))

    # -- ops: /metrics and /status --
    def status(self) -> dict:
        j = self.journal
        synced = j.last_seq if self.syncer is None else self.synced_seq
        return {"router": self.router.status(), "venues": self.monitor.snapshot(),
                "journal": {"durability": self.cfg.journal.durability, "last_seq": j.last_seq, "synced_seq": synced},
                "sessions": sum(1 for c in self.conns if c.account),
                "decision_us": _pcts(self.router.decision_ns)}

    async def ops(self, reader, writer):
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            path = line.split(b" ")[1].decode() if len(line.split(b" ")) > 1 else "/"
            if path == "/metrics":
                self.monitor.snapshot()
                body, ctype, code = generate_latest(self.monitor.registry), "text/plain; version=0.0.4", 200
            elif path == "/decisions":       # perf/routing.py: the decision-time samples, taken (emptied)
                r = self.router
                body = json.dumps({"total": list(r.decision_ns), "parts": list(r.decision_parts)}).encode()
                ctype, code = "application/json", 200
                r.decision_ns.clear()
                r.decision_parts.clear()
            elif path == "/status":
                body, ctype, code = json.dumps(self.status()).encode(), "application/json", 200
            else:
                body, ctype, code = b"not found\n", "text/plain", 404
            writer.write(f"HTTP/1.1 {code} X\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()

    async def ticks(self):
        while not self.stopping:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for c in list(self.conns):
                c.tick(now)
            self.auth.expire()
            for i, ad in self.router.venues.items():     # a venue that went silent (hung, unreachable) is down
                if ad.silent(self.cfg.router.venue_silence_s):
                    log.warning("venue silent: session dropped", extra={
                        "event": "venue_silent", "venue": self.cfg.venues[i - 1].name,
                        "silent_s": round(time.monotonic() - ad.last_recv, 3)})
                    ad.drop()

    async def journal_syncs(self):
        """`async` durability: env.sync on the syncer thread every sync_interval_ms (engine/journal.py), as the
        engine server's timer does; a failed flush is logged and tried again at the next interval."""
        every = self.cfg.journal.sync_interval_ms / 1000
        while not self.stopping:
            await asyncio.sleep(every)
            seq = self.journal.last_seq
            if seq == self.synced_seq:
                continue
            try:
                await self.loop.run_in_executor(self.syncer, self.journal.sync)
            except Exception as e:       # lmdb.Error, OSError: not on disk yet; the next interval tries again
                log.error("journal sync failed", extra={"event": "journal_sync_failed", "error": str(e)})
                continue
            self.synced_seq = seq

    async def run(self, ready: asyncio.Event | None = None):
        self.loop = asyncio.get_running_loop()
        self.router.loop = self.loop
        n = self.router.recover()
        st = self.router.state
        log.info("router recovered", extra={"event": "recovered", "records": n, "parents": len(st.parents),
                                            "open": len(st.open_parents()), "last_seq": st.last_seq})
        self.venue_tasks = [self.loop.create_task(self.keep_venue(i)) for i in self.router.venues]
        await asyncio.wait(self.venue_tasks, timeout=5)      # clients wait for the venues' replays (or 5 s)
        s = self.cfg.server
        server = await self.loop.create_server(lambda: ClientSession(self), s.host, s.port)
        port = server.sockets[0].getsockname()[1]
        r = self.cfg.router
        ops = None
        if r.ops_port is not None:
            ops = await asyncio.start_server(self.ops, r.ops_host, r.ops_port)
            ops_port = ops.sockets[0].getsockname()[1]
            if r.ops_port_file:
                _write_port(r.ops_port_file, ops_port)
        if s.port_file:
            _write_port(s.port_file, port)
        log.info("router listening", extra={"event": "listening", "port": port})
        ticks = self.loop.create_task(self.ticks())
        syncs = self.loop.create_task(self.journal_syncs()) if self.syncer is not None else None
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        self.stopping = True
        ticks.cancel()
        if syncs is not None:
            syncs.cancel()
        server.close()
        if ops is not None:
            ops.close()
        self.router.flush()
        for c in list(self.conns):
            if c.account:
                c.write(wire.encode(MsgType.END_OF_SESSION, last_seq=st.report_seq.get(c.account, 0)))
            c.close()
        for t in self.venue_tasks:
            t.cancel()
        for ad in self.router.venues.values():
            await ad.close()
        self.auth.close()
        if self.syncer is not None:
            self.syncer.shutdown(wait=True)      # a flush under way finishes before the journal closes
        self.journal.close()


def _write_port(path, port):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.replace(tmp, path)


def _pcts(xs) -> dict:
    if not xs:
        return {}
    s = sorted(xs)
    return {"count": len(s), "p50": round(s[len(s) // 2] / 1e3, 1), "p99": round(s[int(len(s) * 0.99)] / 1e3, 1)}


# -- command line --
def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("action", nargs="?", choices=["run", "status"], default="run",
                   help="run the router (default), or print a running router's status (its ops listener)")
    p.add_argument("--config", required=True, help="router.toml (engine/ROUTING.md)")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    try:
        cfg = rconfig.load(args.config)
    except ConfigError as e:
        print(f"trading-engine route: {e}", file=sys.stderr)
        return 2
    if args.action == "status":
        return print_status(cfg)
    from engine.server import configure_logging
    configure_logging(args.log_level)
    try:
        place(cfg)
    except OSError as e:
        print(f"trading-engine route: {e}", file=sys.stderr)
        return 2
    try:
        app = RouterApp(cfg)
    except (ConfigError, JournalError, JournalRefused) as e:
        print(f"trading-engine route: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    try:
        import uvloop
        uvloop.run(app.run())
    except ImportError:
        asyncio.run(app.run())
    return 0


def place(cfg) -> None:
    """The router's CPU placement: [server] cpu pins the process to one core; [router] nice sets its
    priority, e.g. above venues or other processes sharing the core (engine/ROUTING.md "Speed").
    Linux applies both per thread: every thread already running (numpy's, started at import) is
    placed, and those started later (the loop's executor) inherit it. OSError: refused."""
    cpu, nice = cfg.server.cpu, cfg.router.nice
    if cpu is None and nice is None:
        return
    for tid in sorted(int(t) for t in os.listdir("/proc/self/task")):
        if cpu is not None:
            try:
                os.sched_setaffinity(tid, {cpu})
            except OSError as e:
                raise OSError(e.errno, f"[server] cpu = {cpu}: cannot pin the router there ({e.strerror}; "
                              f"allowed: {sorted(os.sched_getaffinity(0))})") from None
        if nice is not None:
            try:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
            except OSError as e:
                raise OSError(e.errno, f"[router] nice = {nice}: refused ({e.strerror}; below 0 needs "
                              "CAP_SYS_NICE, under systemd LimitNICE=)") from None
    log.info("router placed", extra={"event": "placed", "cpu": cpu, "nice": os.getpriority(os.PRIO_PROCESS, 0)})


def print_status(cfg) -> int:
    r = cfg.router
    port = r.ops_port
    if r.ops_port_file and os.path.exists(r.ops_port_file):
        port = int(open(r.ops_port_file).read())
    if not port:
        print("trading-engine route: no ops listener to ask ([router] ops_port, or ops_port = 0 with "
              "ops_port_file)", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(f"http://{r.ops_host}:{port}/status", timeout=5) as f:
            st = json.loads(f.read())
    except OSError as e:
        print(f"trading-engine route: router not reachable on {r.ops_host}:{port}: {e}", file=sys.stderr)
        return 1
    ro = st["router"]
    print(f"parents open {ro['parents_open']} of {ro['parents']}, children {ro['children']} "
          f"({ro['children_in_doubt']} in doubt), sessions {st['sessions']}, decision {st['decision_us']}")
    print(f"{'venue':<12}{'up':>4}{'degr':>6}{'rank':>6}{'score':>8}{'avail':>8}{'ack p50 ms':>12}{'p99 ms':>9}"
          f"{'children':>10}{'rejects':>9}{'fill':>7}{'taker':>7}")
    for v in st["venues"]:
        print(f"{v['venue']:<12}{'yes' if v['up'] else 'no':>4}{'yes' if v['degraded'] else 'no':>6}"
              f"{'' if v['rank'] is None else v['rank']:>6}{v['score']:>8}{v['availability']:>8}"
              f"{v['ack_p50_ms']:>12}{v['ack_p99_ms']:>9}{v['children']:>10}{v['rejects']:>9}{v['fill_ratio']:>7}"
              f"{v['taker_fee_bps']:>7}")
    return 0


def main(argv=None):
    p = add_arguments(argparse.ArgumentParser(prog="trading-engine route"))
    args = p.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
