"""The router's state machine: parent orders from clients, child orders at venues, and the
journal that makes both survive a kill -9 (engine/ROUTING.md).

One event loop, one batch open at a time (group commit, as the server):
  1. an input (a client's order frame, a venue's execution report, a child found unsent) gets
     the next router sequence number and is applied to the state (apply_input);
  2. the decision for it (decide_*) emits outputs -- the parent accepted, reports to the client,
     child orders to venues -- each applied to the state as it is emitted (apply_output);
  3. at the end of the loop iteration (a client's read: at its end) the batch's inputs and
     outputs are committed to the router's LMDB journal (engine/journal.py, ROUTE_INPUT /
     ROUTE_OUTPUT records, packed in C as they are emitted: engine/routing/decide.pyx), and only
     then are the effects carried out: child orders written to the venues (one write per venue),
     then reports written to the client sessions. Nothing leaves before the journal holds it.
The client NEW_ORDERs that are accepted and routed at once (the common case) skip 1-2 in Python:
new_orders takes them in one C call (decide.pyx Split.new_orders) that packs the same records and
frames decide_new would; their state is applied from those records through apply_input /
apply_output (settle) once their children are written, or before anything else reads the state or
adds an effect (the next input, a query, after_commit), so the state is applied in sequence order.
Recovery replays the journal through the same apply_input / apply_output, so the state after a
restart is the state before the kill; then each venue is reconnected asking for the reports
after the last one journaled (gap replay), and a child the journal holds but whose venue never
received it (its client order id at or above the venue's LOGON_ACCEPTED.next_client_order_id)
is recorded unsent and its quantity routed again.

Decisions read the consolidated book, which is not journaled: the outputs are, so a replay
needs no book.
"""
from __future__ import annotations

import asyncio
import logging
import struct
import time
import types
from collections import deque

import numpy as np

from engine.journal import Journal
from engine.routing import book as bookmod, codec
from engine.routing.codec import R
from engine.routing.decide import Split
from protocol import codes, records, wire

log = logging.getLogger("trading-engine.route")


def _ints(enum) -> types.SimpleNamespace:
    """An IntEnum's members (aliases too) as plain ints: on Python 3.11 reading a member off its enum
    class costs ~110 ns, a plain attribute ~20, and a NEW_ORDER reads some forty (perf/RESULTS.md).
    Equal values, equal hashes: the state, the records and the frames are the same."""
    return types.SimpleNamespace(**{name: int(m) for name, m in enum.__members__.items()})


CancelReason, CommandKind, OrderState, OrderType, Reject, Side, TimeInForce = map(_ints, (
    codes.CancelReason, codes.CommandKind, codes.OrderState, codes.OrderType, codes.Reject, codes.Side,
    codes.TimeInForce))
RouteInput, RouteOutput, MsgType = _ints(records.RouteInput), _ints(records.RouteOutput), _ints(wire.MsgType)

SENT, LIVE, DONE = 1, 2, 3           # a child's state: journaled (maybe not yet acknowledged), acknowledged, over
TAKING = (TimeInForce.IOC, TimeInForce.FOK)    # the TIFs of wave children: over at once at their venue
N = codec.NEW_ORDER.fields           # NewOrder field -> index
REPORT_HEAD = {t: struct.pack("<HBBI", *f.head) for t, f in codec.REPORT_FRAMES.items()}   # an ExecReport's header
NEW_ORDER_SIZE = wire.frame_size(MsgType.NEW_ORDER)


class Child:
    __slots__ = ("venue", "clid", "parent", "price", "qty", "tif", "filled", "leaves", "state", "sent_ns", "reason",
                 "unsent")

    def __init__(self, venue, clid, parent, price, qty, tif):
        self.venue, self.clid, self.parent, self.price, self.qty, self.tif = venue, clid, parent, price, qty, tif
        self.filled, self.leaves, self.state, self.sent_ns = 0, qty, SENT, 0
        self.reason = 0               # the venue's CancelReason when it cancelled it (0: filled, rejected, unsent)
        self.unsent = False           # found never to have reached its venue


class Parent:
    __slots__ = ("id", "account", "clid", "symbol", "side", "order_type", "tif", "price", "qty", "filled", "done",
                 "children", "waves", "last_wave", "cancel_requested")

    def __init__(self, id, account, clid, symbol, side, order_type, tif, price, qty):
        self.id, self.account, self.clid, self.symbol, self.side = id, account, clid, symbol, side
        self.order_type, self.tif, self.price, self.qty = order_type, tif, price, qty
        self.filled = 0
        self.done = False
        self.children: list[Child] = []
        self.waves = 0
        self.last_wave = 0
        self.cancel_requested = False

    @property
    def leaves(self) -> int:
        return 0 if self.done else self.qty - self.filled

    def working(self) -> int:
        """Quantity at venues in children not over."""
        return sum(c.leaves for c in self.children if c.state != DONE)


class State:
    """Everything the journal rebuilds: parents, children, sequence numbers, the reports sent."""

    def __init__(self, n_venues: int):
        self.parents: dict[int, Parent] = {}
        self.by_clid: dict[tuple[int, int], Parent] = {}     # (account, client order id) -> parent
        self.children: dict[tuple[int, int], Child] = {}     # (venue, child client order id) -> child
        self.last_clid: dict[int, int] = {}                  # account -> last client order id accepted
        self.next_order_id = 1
        self.next_trade_id = 1
        self.report_seq: dict[int, int] = {}                 # account -> last report seq sent
        self.reports: dict[int, list[bytes]] = {}            # account -> every report frame, seq order
        self.venue_seq = [0] * (n_venues + 1)                # venue -> last report seq taken
        # venue -> next child client order id (uint64: decide.pyx Split reads it at each split)
        self.next_child_clid = np.ones(n_venues + 1, dtype=np.uint64)
        self.last_seq = 0                                    # router sequence

    def open_parents(self, account: int | None = None) -> list[Parent]:
        return [p for p in self.parents.values() if not p.done and (account is None or p.account == account)]


class Router:
    """The decisions and the journal; sessions (engine/routing/server.py) call in with inputs,
    venues (engine/routing/venues.py) with reports and depth."""

    def __init__(self, cfg, venues_cfg, symbols, journal: Journal, metrics=None):
        self.cfg = cfg                                   # RouterSection
        self.venues_cfg = venues_cfg                     # [VenueConfig], index = position + 1
        self.symbols = symbols                           # router symbol id -> SymbolConfig
        self.taker_bps = {i + 1: 0 for i in range(len(venues_cfg))}
        self.maker_bps = dict(self.taker_bps)
        from engine.routing.config import fee_bps
        for i, v in enumerate(venues_cfg, 1):
            self.taker_bps[i] = fee_bps(v.name, v.taker_fee)
            self.maker_bps[i] = fee_bps(v.name, v.maker_fee)
        self.journal = journal
        self.state = State(len(venues_cfg))
        self.slot = {sid: i for i, sid in enumerate(symbols)}    # symbol -> its row in split's arrays
        # the split, the children and the open batch's records and frames, in C
        self.split = Split(len(venues_cfg), cfg.depth_levels, len(self.slot), self.taker_bps,
                           self.state.next_child_clid)
        self.split.set_symbols({self.slot[sid]: (sid, sym.lot_size, sym.tick_size, sym.max_qty, sym.max_price)
                                for sid, sym in symbols.items()}, wire.MAX_CLIENT_ORDER_ID)
        self.book = bookmod.ConsolidatedBook(self.slot, self.split)
        self.venues: dict[int, object] = {}              # index -> adapter (set by the app)
        self.metrics = metrics
        self._rank: dict[int, int] = {}                  # venue -> tie-break order among venues up
        self.degraded: set[int] = set()
        self.sessions: dict[int, set] = {}               # account -> sessions (ClientSession)
        self.on_book = None                              # callback(symbol): consolidated market data changed
        # the open batch: its records and venue frames are in self.split
        self.inputs = 0                                  # inputs in it (0: no batch open)
        self.batch_first = 0                             # its first router sequence number
        self.effects: list = []                          # after the commit: (account, report frame), callables
        self.flush_scheduled = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.failed: Exception | None = None
        # client order received -> the last of its children written (ns), and its parts: received ->
        # the batch's commit begun (the decision), the commit, the commit's end -> that last write
        # (perf/routing.py reads them through /decisions)
        self.decision_ns: deque[int] = deque(maxlen=1 << 16)
        self.decision_parts: deque[tuple[int, int, int]] = deque(maxlen=1 << 16)

    @property
    def rank(self) -> dict[int, int]:
        return self._rank

    @rank.setter
    def rank(self, rank: dict[int, int]) -> None:
        """The monitor's tie-break order (venue -> rank, venues up only), mirrored into the split."""
        self._rank = rank
        self.split.set_rank(rank)

    def sync_listing(self, venue: int) -> None:
        """The symbols the venue's adapter trades (its venue_symbol, set when it subscribed), into the split."""
        vs = getattr(self.venues.get(venue), "venue_symbol", {})
        self.split.set_listing(venue, {self.slot[s]: v for s, v in vs.items() if s in self.slot})

    # -- recovery --
    def recover(self) -> int:
        """Replay the journal into the state; the number of records read."""
        n = 0
        for cmds, events in self.journal.batches():
            i = 0
            for inp in cmds:
                self.apply_input(int(inp["kind"]), int(inp["msg_type"]), int(inp["venue"]), int(inp["account"]),
                                 int(inp["seq"]), bytes(inp["body"]))
                # every output of a batch follows its inputs; outputs carry the seq that caused them
                while i < len(events) and int(events[i]["seq"]) == int(inp["seq"]):
                    e = events[i]
                    self.apply_output(int(e["kind"]), int(e["msg_type"]), int(e["venue"]), int(e["account"]),
                                      int(e["parent"]), int(e["child"]), bytes(e["body"]))
                    i += 1
            n += 1
        s = self.state
        for (v, clid) in s.children:
            s.next_child_clid[v] = max(s.next_child_clid[v], clid + 1)
        return n

    # -- the one path that changes the state (live and in replay) --
    def apply_input(self, kind, msg_type, venue, account, seq, body):
        s = self.state
        s.last_seq = seq
        if kind == RouteInput.VENUE_REPORT:
            r = codec.EXEC_REPORT.unpack(body)
            if r[R["seq"]]:
                s.venue_seq[venue] = r[R["seq"]]
            c = s.children.get((venue, r[R["client_order_id"]]))
            if c is None:
                # another session of the router's venue account placed it: its client order id is taken there
                if msg_type == MsgType.ACCEPTED and r[R["cmd_kind"]] == CommandKind.NEW_ORDER:
                    s.next_child_clid[venue] = max(s.next_child_clid[venue], r[R["client_order_id"]] + 1)
                return
            cmd = r[R["cmd_kind"]]
            if msg_type == MsgType.ACCEPTED and c.state == SENT:
                c.state = LIVE
            elif msg_type == MsgType.FILL:
                c.filled += r[R["qty"]]
                c.leaves = r[R["leaves"]]
                if c.leaves == 0:
                    c.state = DONE
                elif c.state == SENT:
                    c.state = LIVE
            elif msg_type == MsgType.CANCELLED or (msg_type == MsgType.REJECTED and cmd == CommandKind.NEW_ORDER):
                c.state, c.leaves = DONE, 0
                c.reason = r[R["reason"]] if msg_type == MsgType.CANCELLED else 0
            elif msg_type == MsgType.REPLACED:
                c.leaves = r[R["leaves"]]
                c.qty = c.filled + c.leaves
                c.price = r[R["price"]]
                if c.leaves == 0:
                    c.state = DONE
        elif kind == RouteInput.VENUE_UP:
            s.next_child_clid[venue] = max(s.next_child_clid[venue], int.from_bytes(body[:8], "little"))
        elif kind == RouteInput.CHILD_UNSENT:
            o = codec.NEW_ORDER.unpack(body)
            c = s.children.get((venue, o[N["client_order_id"]]))
            if c is not None and c.state == SENT:
                c.state, c.leaves, c.unsent = DONE, 0, True
        elif kind == RouteInput.CLIENT_ORDER and msg_type == MsgType.CANCEL:
            p = self._target(account, body)
            if p is not None:
                p.cancel_requested = True
        elif kind == RouteInput.CLIENT_ORDER and msg_type == MsgType.MASS_CANCEL:
            m = codec.MASS_CANCEL.unpack(body)
            for p in self._mass_targets(account, m[0], m[1]):
                p.cancel_requested = True

    def apply_output(self, kind, msg_type, venue, account, parent, child, body):
        s = self.state
        if kind == RouteOutput.PARENT:
            self._apply_parent(parent, account, codec.NEW_ORDER.unpack(body))
        elif kind == RouteOutput.CLIENT_REPORT:
            r = codec.EXEC_REPORT.unpack(body)
            self._apply_report(account, msg_type, parent, r[R["seq"]], r[R["price"]], r[R["qty"]], r[R["leaves"]],
                               r[R["trade_id"]], REPORT_HEAD[msg_type] + body[:codec.EXEC_REPORT.size])
        elif kind == RouteOutput.CHILD_ORDER and msg_type == MsgType.NEW_ORDER:
            o = codec.NEW_ORDER.unpack(body)
            self._apply_child(venue, child, s.parents[parent], o[N["price"]], o[N["qty"]], o[N["tif"]])

    # apply_output's parts; the live path enters them with the values it packed the record from
    def _apply_parent(self, pid, account, o) -> Parent:
        """A parent accepted; o: its NEW_ORDER body unpacked."""
        s = self.state
        p = Parent(pid, account, o[N["client_order_id"]], o[N["symbol"]], o[N["side"]], o[N["order_type"]],
                   o[N["tif"]], o[N["price"]], o[N["qty"]])
        s.parents[pid] = p
        s.by_clid[(account, p.clid)] = p
        s.last_clid[account] = p.clid
        s.next_order_id = max(s.next_order_id, pid + 1)
        return p

    def _apply_report(self, account, msg_type, parent, seq, price, qty, leaves, trade_id, frame) -> None:
        """A report to the client's account: frame is the whole frame sent."""
        s = self.state
        s.report_seq[account] = seq
        s.reports.setdefault(account, []).append(frame)
        p = s.parents.get(parent)
        if p is None:
            return
        if msg_type == MsgType.FILL:
            p.filled += qty
            s.next_trade_id = max(s.next_trade_id, trade_id + 1)
            if leaves == 0:
                p.done = True
        elif msg_type == MsgType.CANCELLED:
            p.done = True
        elif msg_type == MsgType.REPLACED:
            p.price = price
            p.qty = p.filled + leaves
            if leaves == 0:
                p.done = True

    def _apply_child(self, venue, clid, p, price, qty, tif) -> None:
        """A child order emitted (apply_output's CHILD_ORDER NEW_ORDER; the split's children enter here
        with the values they were packed from)."""
        s = self.state
        c = Child(venue, clid, p.id, price, qty, tif)
        s.children[(venue, clid)] = c
        p.children.append(c)
        if clid >= s.next_child_clid[venue]:
            s.next_child_clid[venue] = clid + 1
        if tif in TAKING and p.last_wave != s.last_seq:
            p.waves += 1
            p.last_wave = s.last_seq

    def _target(self, account, body) -> Parent | None:
        clid, oid = codec.CANCEL.unpack(body)
        s = self.state
        p = s.parents.get(oid) if oid else s.by_clid.get((account, clid))
        return p if p is not None and p.account == account and not p.done else None

    def _mass_targets(self, account, symbol, side) -> list[Parent]:
        return [p for p in self.state.open_parents(account) if (not symbol or p.symbol == symbol)
                and (not side or p.side == side)]

    # -- the batch --
    def _input(self, kind, msg_type, venue, account, body: bytes, ts: int) -> int:
        if self.failed is not None:
            raise self.failed
        if self.split.n_fast:
            self.settle()
        seq = self.state.last_seq + 1
        if not self.inputs:
            self.batch_first = seq
        self.split.add_input(kind, msg_type, venue, account, seq, ts, body)
        self.inputs += 1
        self.apply_input(kind, msg_type, venue, account, seq, body)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            (self.loop or asyncio.get_running_loop()).call_soon(self.flush)
        return seq

    def _output(self, kind, msg_type, venue, account, parent, child, body: bytes) -> None:
        self.split.add_output(kind, msg_type, venue, account, self.state.last_seq, parent, child, body)
        self.apply_output(kind, msg_type, venue, account, parent, child, body)

    def report(self, p_account, msg_type, parent_id, clid, symbol, side, price, qty, leaves, cmd_kind, ts,
               reason=0, trade_id=0, liquidity=0, fee=0) -> None:
        """A sequenced execution report to the client's account (journaled, then written)."""
        s = self.state
        seq = s.report_seq.get(p_account, 0) + 1
        frame = codec.REPORT_FRAMES[msg_type].pack(seq, parent_id, clid, symbol, side, liquidity, reason, price, qty,
                                                   leaves, trade_id, 0, cmd_kind, 0, ts, fee)
        self.split.add_output(RouteOutput.CLIENT_REPORT, msg_type, 0, p_account, s.last_seq, parent_id, 0,
                              frame[wire.HEADER.size:])
        self._apply_report(p_account, msg_type, parent_id, seq, price, qty, leaves, trade_id, frame)
        self.effects.append((p_account, frame))

    def after_commit(self, fn) -> bool:
        """Run fn once the open batch is committed (False: no batch is open, run it yourself)."""
        if not self.inputs:
            return False
        if self.split.n_fast:
            self.settle()              # their effects first
        self.effects.append(fn)
        return True

    def flush(self) -> None:
        """Commit the open batch (one LMDB put of the records split packed), then write each venue's
        frames (one write per venue), then apply the orders taken in C to the state (settle), then
        carry out the other effects in order."""
        self.flush_scheduled = False
        if not self.inputs:
            return
        sp = self.split
        n_in, n_out = sp.n_in, sp.n_out
        records, first = sp.batch_records(), self.batch_first
        commit_ns = time.perf_counter_ns()
        try:
            # the tail is written after the children (Journal.append_records): off the way to the venues
            # (the batch's inputs carry first .. first + inputs - 1; the state's last_seq lags for orders
            # taken in C until settle)
            self.journal.append_packed(first, first + self.inputs - 1, n_in, n_out, records, tail=False)
        except Exception as e:         # nothing of this batch is acknowledged; the router stops taking input
            self.failed = e
            log.error("router journal commit failed: %s; no further input is taken", e,
                      extra={"event": "journal_failed"})
            self.settle(records, n_in)    # the state holds the batch, as it would had it been applied live
            sp.clear()
            self.inputs, self.effects = 0, []
            return
        # the children first (the decision's point), then the client's reports and replies in their order
        committed_ns = time.perf_counter_ns()
        frames = sp.venue_frames()
        written = [0] * len(frames)    # venue -> perf_counter ns after its frames were written
        upto = [0] * len(frames)       # venue -> bytes of its frames written (the rest could not be)
        for v, data in enumerate(frames):
            ad = self.venues.get(v) if data else None
            if ad is None or not ad.up:
                continue
            if getattr(ad, "raw_frames", False):
                upto[v] = len(data) if ad.raw(data) else 0
            else:
                for f in _frames(data):
                    if not ad.raw(f):
                        break
                    upto[v] += len(f)
            written[v] = time.perf_counter_ns()
        self.settle(records, n_in)     # the orders taken in C: their state, their ACCEPTED and audit effects
        rows = sp.frame_rows()
        sp.clear()
        effects, self.effects, self.inputs = self.effects, [], 0
        try:
            self.journal.write_tail()
        except Exception as e:         # committed and sent, but the end not recorded: stop taking input
            self.failed = e
            log.error("router journal tail write failed: %s; no further input is taken", e,
                      extra={"event": "journal_failed"})
        for fx in effects:
            if callable(fx):
                fx()
            else:
                account, frame = fx
                for sess in self.sessions.get(account, ()):
                    sess.write(frame)
        unsent = []
        decided: dict[int, int] = {}   # client order received (perf_counter ns) -> its last child written
        children = self.state.children
        for venue, clid, msg_type, _, offset, recv_ns in rows:
            c = children.get((venue, clid))
            sent_ns = written[venue] if offset < upto[venue] else 0
            if sent_ns:
                if c is not None:
                    c.sent_ns = sent_ns
                    if recv_ns and sent_ns > decided.get(recv_ns, 0):
                        decided[recv_ns] = sent_ns
                if self.metrics and msg_type == MsgType.NEW_ORDER:
                    self.metrics.child_sent(venue, frames[venue][offset:offset + NEW_ORDER_SIZE])
            elif c is not None and msg_type == MsgType.NEW_ORDER:
                unsent.append((venue, frames[venue][offset + wire.HEADER.size:offset + NEW_ORDER_SIZE]))
        for recv_ns, sent_ns in decided.items():
            self.decision_ns.append(sent_ns - recv_ns)
            self.decision_parts.append((commit_ns - recv_ns, committed_ns - commit_ns, sent_ns - committed_ns))
        for venue, body in unsent:     # the venue was down: the child never left, route its share again
            self.child_unsent(venue, body)

    # -- the client's NEW_ORDERs in C --
    def new_orders(self, account: int, buf: bytearray, pos: int, recv_ns: int = 0) -> int:
        """Take the NEW_ORDER frames in buf from pos on that are accepted and routed at once, in one C
        call (decide.pyx Split.new_orders: the frame, the checks, the split, the children, the ACCEPTED
        report and every journal record, packed into the open batch as decide_new would pack them);
        the offset of the first frame left to the Python path. Their state is applied by settle(), at
        the latest in flush() once the children are written; the caller flushes (a client's read: at
        its end). With `waves` below 1 (no wave at all: a config refuses it) every order is Python's."""
        if self.failed is not None or self.cfg.waves < 1:
            return pos
        sp, s = self.split, self.state
        if sp.n_fast:
            self.settle()
        end = sp.new_orders(buf, pos, account, s.last_seq, s.next_order_id, s.last_clid.get(account, 0),
                            s.report_seq.get(account, 0), recv_ns)
        taken = sp.n_fast
        if taken:
            if not self.inputs:
                self.batch_first = s.last_seq + 1
            self.inputs += taken
        return end

    def settle(self, records: bytes | None = None, n_in: int = 0) -> None:
        """Apply the orders Split.new_orders took (not yet applied) to the state, from their journal
        records through apply_input / apply_output (the replay's path), and queue each one's ACCEPTED
        report and its audit line as decide_new would have. records: the open batch's records and
        n_in its inputs (read from the split when not given). Every other input settles first (_input),
        so the state is always applied in sequence order."""
        sp = self.split
        taken = sp.taken()
        if not taken:
            return
        if records is None:
            records, n_in = sp.batch_records(), sp.n_in
        s = self.state
        outs = n_in * codec.ROUTE_INPUT.size
        for i, first, n, left in taken:
            kind, msg_type, venue, account, seq, _, body = codec.ROUTE_INPUT.unpack(records, i * codec.ROUTE_INPUT.size)
            self.apply_input(kind, msg_type, venue, account, seq, body)
            for k in range(first, first + n):
                kind, msg_type, venue, account, _, parent, child, body = codec.ROUTE_OUTPUT.unpack(
                    records, outs + k * codec.ROUTE_OUTPUT.size)
                self.apply_output(kind, msg_type, venue, account, parent, child, body)
            p = s.parents[parent]
            self.effects.append((account, s.reports[account][-1]))
            self.audit_route(p, p.qty, None if p.order_type != OrderType.LIMIT else p.price, left,
                             [(c.venue, c.clid, c.qty, c.price) for c in p.children])

    # -- inputs --
    def client_order(self, account: int, msg_type: int, body: bytes, recv_ns: int = 0) -> None:
        ts = time.time_ns()
        self._input(RouteInput.CLIENT_ORDER, msg_type, 0, account, body, ts)
        if msg_type == MsgType.NEW_ORDER:
            self.decide_new(account, body, ts, recv_ns)
        elif msg_type == MsgType.CANCEL:
            self.decide_cancel(account, body, ts)
        elif msg_type == MsgType.AMEND:
            self.decide_amend(account, body, ts)
        elif msg_type == MsgType.MASS_CANCEL:
            self.decide_mass_cancel(account, body, ts)

    def venue_report(self, venue: int, msg_type: int, body: bytes, seq: int) -> None:
        s = self.state
        r = codec.EXEC_REPORT.unpack(body)
        c = s.children.get((venue, r[R["client_order_id"]]))
        prev_state = c.state if c is not None else None
        if self.metrics:
            self.metrics.report(venue, msg_type, r, c)
        if c is None and not seq:
            return                     # a session-level reject of nothing of ours
        if c is None:
            if seq > s.venue_seq[venue]:    # not our child (another session of the venue account): its seq is
                self._input(RouteInput.VENUE_REPORT, msg_type, venue, 0, body, time.time_ns())   # still taken
            return
        ts = time.time_ns()
        self._input(RouteInput.VENUE_REPORT, msg_type, venue, 0, body, ts)
        p = s.parents[c.parent]
        cmd = r[R["cmd_kind"]]
        if msg_type == MsgType.FILL:
            qty = r[R["qty"]]
            self.report(p.account, MsgType.FILL, p.id, p.clid, p.symbol, p.side, r[R["price"]], qty,
                        max(0, p.qty - p.filled - qty), CommandKind.NEW_ORDER, ts, trade_id=s.next_trade_id,
                        liquidity=r[R["liquidity"]], fee=r[R["fee"]])
        elif msg_type == MsgType.REPLACED and not p.done:
            self.report(p.account, MsgType.REPLACED, p.id, p.clid, p.symbol, p.side, r[R["price"]], r[R["leaves"]],
                        r[R["leaves"]], CommandKind.AMEND, ts)
        elif msg_type == MsgType.REJECTED and cmd == CommandKind.AMEND:
            self.report(p.account, MsgType.REJECTED, p.id, p.clid, p.symbol, p.side, r[R["price"]], r[R["qty"]], 0,
                        CommandKind.AMEND, ts, reason=r[R["reason"]])
        if c.state == DONE and prev_state != DONE:
            self.progress(p, ts)

    def child_unsent(self, venue: int, new_order_body: bytes) -> None:
        ts = time.time_ns()
        self._input(RouteInput.CHILD_UNSENT, MsgType.NEW_ORDER, venue, 0, new_order_body, ts)
        o = codec.NEW_ORDER.unpack(new_order_body)
        c = self.state.children.get((venue, o[N["client_order_id"]]))
        if c is not None:
            log.warning("child never reached its venue: routed again", extra={
                "event": "child_unsent", "venue": self.venues_cfg[venue - 1].name, "child": c.clid,
                "parent": c.parent})
            self.progress(self.state.parents[c.parent], ts)

    # -- decisions --
    def _reject(self, account, o, reason, ts):
        self.report(account, MsgType.REJECTED, 0, o[N["client_order_id"]], o[N["symbol"]], o[N["side"]],
                    o[N["price"]], o[N["qty"]], 0, CommandKind.NEW_ORDER, ts, reason=reason)

    def _check_new(self, account, o) -> int:
        sym = self.symbols.get(o[N["symbol"]])
        clid, side, ot, tif = o[N["client_order_id"]], o[N["side"]], o[N["order_type"]], o[N["tif"]]
        price, qty = o[N["price"]], o[N["qty"]]
        if clid > wire.MAX_CLIENT_ORDER_ID:
            return Reject.CLIENT_ORDER_ID_RESERVED
        if clid <= self.state.last_clid.get(account, 0):
            return Reject.DUPLICATE_CLIENT_ORDER_ID
        if sym is None:
            return Reject.UNKNOWN_SYMBOL
        if side not in (Side.BUY, Side.SELL):
            return Reject.INVALID_SIDE
        if ot in (OrderType.STOP, OrderType.STOP_LIMIT) or tif == TimeInForce.GTD or \
                o[N["flags"]] or o[N["display_qty"]] or o[N["stop_price"]] or o[N["expire_ts_ns"]]:
            return Reject.ROUTE_UNSUPPORTED
        if ot not in (OrderType.LIMIT, OrderType.MARKET):
            return Reject.INVALID_ORDER_TYPE
        if tif not in (TimeInForce.GTC, TimeInForce.DAY, TimeInForce.IOC, TimeInForce.FOK):
            return Reject.INVALID_TIF
        if qty <= 0:
            return Reject.INVALID_QTY
        if qty % sym.lot_size:
            return Reject.QTY_NOT_LOT_MULTIPLE
        if qty > sym.max_qty:
            return Reject.QTY_ABOVE_MAX
        if (ot == OrderType.LIMIT and price <= 0) or (ot == OrderType.MARKET and price != 0):
            return Reject.INVALID_PRICE
        if price % sym.tick_size:
            return Reject.PRICE_NOT_TICK_MULTIPLE
        if price > sym.max_price:
            return Reject.PRICE_ABOVE_MAX
        return 0

    def decide_new(self, account, body, ts, recv_ns=0):
        o = codec.NEW_ORDER.unpack(body)
        reason = self._check_new(account, o)
        if reason:
            return self._reject(account, o, reason, ts)
        if not self.split.usable(self.slot[o[N["symbol"]]]) and (self.cfg.remainder == "ioc" or o[N["tif"]] in TAKING
                                                                 or o[N["order_type"]] == OrderType.MARKET):
            return self._reject(account, o, Reject.NO_VENUE, ts)    # nothing could fill it, nothing may wait
        s = self.state
        pid = s.next_order_id
        self.split.add_output(RouteOutput.PARENT, MsgType.NEW_ORDER, 0, account, s.last_seq, pid, 0, body)
        p = self._apply_parent(pid, account, o)
        self.report(account, MsgType.ACCEPTED, pid, p.clid, p.symbol, p.side, p.price, p.qty, p.qty,
                    CommandKind.NEW_ORDER, ts)
        self.progress(p, ts, recv_ns)

    def decide_cancel(self, account, body, ts):
        p = self._target(account, body)            # apply_input set cancel_requested on it
        if p is None:
            clid, oid = codec.CANCEL.unpack(body)
            self.report(account, MsgType.REJECTED, oid, clid, 0, 0, 0, 0, 0, CommandKind.CANCEL, ts,
                        reason=Reject.UNKNOWN_ORDER)
            return
        self._cancel_parent(p, ts, CancelReason.USER)

    def decide_mass_cancel(self, account, body, ts):
        symbol, side = codec.MASS_CANCEL.unpack(body)[:2]
        targets = self._mass_targets(account, symbol, side)
        for p in targets:
            self._cancel_parent(p, ts, CancelReason.MASS_CANCEL)
        self.report(account, MsgType.MASS_CANCEL_DONE, 0, 0, symbol, side, 0, len(targets), 0,
                    CommandKind.MASS_CANCEL, ts)

    def _cancel_parent(self, p, ts, reason):
        live = [c for c in p.children if c.state != DONE]
        if not live:
            self.report(p.account, MsgType.CANCELLED, p.id, p.clid, p.symbol, p.side, p.price, p.qty - p.filled, 0,
                        CommandKind.CANCEL, ts, reason=reason)
            return
        for c in live:                 # IOC and FOK children end on their own; resting ones are cancelled
            if c.tif not in TAKING:
                self._child(c.venue, c.clid, p, codec.CANCEL_FRAME.pack(c.clid, 0))

    def decide_amend(self, account, body, ts):
        clid, oid, price, qty, stop = codec.AMEND.unpack(body)
        s = self.state
        p = s.parents.get(oid) if oid else s.by_clid.get((account, clid))
        if p is None or p.account != account or p.done:
            return self.report(account, MsgType.REJECTED, oid, clid, 0, 0, price, qty, 0, CommandKind.AMEND, ts,
                               reason=Reject.UNKNOWN_ORDER)
        live = [c for c in p.children if c.state != DONE]
        if stop or len(live) != 1 or live[0].tif in TAKING:
            # only a parent resting as one posted child can be amended (ROUTING.md)
            return self.report(account, MsgType.REJECTED, p.id, p.clid, p.symbol, p.side, price, qty, 0,
                               CommandKind.AMEND, ts, reason=Reject.ROUTE_UNSUPPORTED)
        c = live[0]
        self._child(c.venue, c.clid, p, codec.AMEND_FRAME.pack(c.clid, 0, price, qty, 0))

    def _child(self, venue, clid, p, frame, recv_ns=0):
        """A frame to a venue about child `clid` of p: journaled now, written after the commit."""
        self._output(RouteOutput.CHILD_ORDER, frame[2], venue, p.account, p.id, clid, frame[wire.HEADER.size:])
        self.split.add_frame(venue, clid, frame, recv_ns)

    def audit(self, event, msg, **fields) -> None:
        """A routing decision logged with its reason, once its orders are written (formatting a JSON log
        line costs ~100 us here: not on the way to the venues)."""
        fields["event"] = event
        self.effects.append(lambda: log.info(msg, extra=fields))

    def audit_route(self, p, qty, limit, rest, split) -> None:
        wave = p.waves

        def line():
            names = [(self.venues_cfg[v - 1].name, q, worst, self.taker_bps[v]) for v, _, q, worst in split]
            log.info("route", extra={"event": "route", "parent": p.id, "account": p.account, "symbol": p.symbol,
                                     "side": p.side, "qty": qty, "limit": limit, "wave": wave, "unallocated": rest,
                                     "children": names, "reason": "cheapest all-in price (price and taker fee) "
                                     "first, then venue score"})
        self.effects.append(line)

    def venue_rank(self, symbol) -> dict[int, int]:
        return {v: r for v, r in self.rank.items() if symbol in getattr(self.venues.get(v), "venue_symbol", {})}

    def progress(self, p: Parent, ts: int, recv_ns: int = 0) -> None:
        """p's children are all over (or it has none): route the rest again, post it, or end it."""
        if p.done or any(c.state != DONE for c in p.children):
            return
        left = p.qty - p.filled
        if left <= 0:
            return
        if p.cancel_requested:
            return self.report(p.account, MsgType.CANCELLED, p.id, p.clid, p.symbol, p.side, p.price, left, 0,
                               CommandKind.CANCEL, ts, reason=CancelReason.USER)
        posted = [c for c in p.children if c.tif not in TAKING]
        if posted and not posted[-1].unsent:
            # its resting child ended at the venue (the venue's own cancel: end of day, self-trade, kill
            # switch; an amend to 0; or a reject): the parent ends with it, never posted again in a loop
            why = posted[-1].reason or CancelReason.USER
            self.audit("route_end", "posted child ended at its venue", parent=p.id, qty=left, reason=int(why))
            return self.report(p.account, MsgType.CANCELLED, p.id, p.clid, p.symbol, p.side, p.price, left, 0,
                               CommandKind.NEW_ORDER, ts, reason=why)
        slot = self.slot.get(p.symbol)
        if p.waves < self.cfg.waves and slot is not None and self.split.usable(slot):
            # the split and its children, packed in C (decide.pyx); each applied as apply_output would
            # a FOK parent: FOK children, and none unless the shown books fill all it has left
            market, fok = p.order_type != OrderType.LIMIT, p.tif == TimeInForce.FOK
            tif = TimeInForce.FOK if fok else TimeInForce.IOC
            split = self.split.children(slot, p.side, left, p.price, not market, p.account, self.state.last_seq,
                                        p.id, recv_ns, tif, fok)
            if split:
                for v, clid, q, worst in split:
                    self._apply_child(v, clid, p, worst, q, tif)
                self.audit_route(p, left, None if market else p.price, self.split.left, split)
                return
        rank = self.venue_rank(p.symbol)
        if p.order_type == OrderType.MARKET or p.tif in TAKING or self.cfg.remainder == "ioc":
            why = CancelReason.FOK_UNFILLED if p.tif == TimeInForce.FOK else \
                CancelReason.MARKET_REMAINDER if p.order_type == OrderType.MARKET else CancelReason.IOC_REMAINDER
            self.audit("route_remainder", "route remainder cancelled", parent=p.id, qty=left,
                       reason="ioc" if rank else "no venue up")
            return self.report(p.account, MsgType.CANCELLED, p.id, p.clid, p.symbol, p.side, p.price, left, 0,
                               CommandKind.NEW_ORDER, ts, reason=why)
        # post: rest the remainder at the best venue for a maker (healthy first, lowest maker fee, then score)
        if not rank:
            self.audit("route_wait", "route remainder waits for a venue", parent=p.id,
                       reason="remainder post: no venue up")
            return
        v = min(rank, key=lambda x: (x in self.degraded, self.maker_bps[x], rank[x]))
        clid = int(self.state.next_child_clid[v])
        vs = self.venues[v].venue_symbol[p.symbol]
        self._child(v, clid, p, codec.NEW_ORDER_FRAME.pack(clid, vs, p.side, OrderType.LIMIT, TimeInForce.GTC,
                                                           p.price, left), recv_ns)
        self.audit("route_post", "route post", parent=p.id, venue=self.venues_cfg[v - 1].name, qty=left,
                   price=p.price, reason="remainder posted at the best venue for a maker (healthy first, lowest "
                   "maker fee, then score)")

    # -- venues --
    def venue_up(self, venue: int, next_clid: int) -> None:
        """A venue logged on (its replay taken): the children it never received are unsent (their
        client order id is at or above its next_client_order_id); parents waiting go on."""
        self.sync_listing(venue)
        ts = time.time_ns()
        self._input(RouteInput.VENUE_UP, 0, venue, 0, next_clid.to_bytes(8, "little"), ts)
        s = self.state
        for (v, clid), c in list(s.children.items()):
            if v == venue and c.state == SENT and clid >= next_clid:
                p = s.parents[c.parent]
                vs = self.venues[v].venue_symbol.get(p.symbol, 0)
                body = codec.NEW_ORDER_FRAME.pack(clid, vs, p.side, OrderType.LIMIT, c.tif, c.price, c.qty)
                self.child_unsent(v, body[wire.HEADER.size:])
        for p in s.open_parents():
            if all(c.state == DONE for c in p.children):
                self.progress(p, ts)

    def venue_down(self, venue: int) -> list[int]:
        return self.book.drop_venue(venue)

    def status(self) -> dict:
        s = self.state
        return {"parents_open": len(s.open_parents()), "parents": len(s.parents), "children": len(s.children),
                "children_in_doubt": sum(1 for c in s.children.values() if c.state == SENT),
                "last_seq": s.last_seq}


def _frames(data: bytes):
    """The whole frames in data, one by one (for an adapter that takes one frame per raw())."""
    pos = 0
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 2], "little")
        yield data[pos:pos + n]
        pos += n


def order_entry(p: Parent) -> dict:
    """A parent as an OPEN_ORDERS / ORDER_STATUS entry."""
    return dict(order_id=p.id, client_order_id=p.clid, symbol=p.symbol, side=p.side, order_type=p.order_type,
                tif=p.tif, state=OrderState.RESTING, price=p.price, stop_price=0, qty=p.qty, leaves=p.leaves,
                shown=p.leaves, filled=p.filled)
