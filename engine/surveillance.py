"""`trading-engine surveil`: market-abuse detection from the journal, beside the engine, never on its thread.

    surveil JOURNAL_PATH --config FILE --store DIR [--from-seq N] [--until-seq N] [--follow]
    surveil alerts --store DIR [--type T] [--json]

Dispositions (reviewed, escalated, dismissed) are admin actions journaled in the engine's journal
(ALERT_DISPOSITION, with the operator); this loop reads them like any record and keeps each alert's
history of them in the store (engine/SURVEILLANCE.md "Dispositions"). --metrics-port serves
Prometheus counters per alert type and disposition.

What it reads: the journal, as the journal tool does (engine.journal_tool.open_journal: a read-only
LMDB reader, short read transactions, each record's digest checked); the detectors' parameters and
the accounts' beneficial owners from the server's config ([surveillance], engine/config.py).
What it writes: only its alert store, an LMDB environment in its own directory (never the
journal's): the alerts, and a cursor (the next command seq to read) with the detectors' state.
Alerts are also printed as JSON lines on stdout once stored.

How it resumes: the alerts a cycle (or 50 ms of a backlog) produced are committed in one store
transaction with their reach (the next seq after them); the cursor (a next seq with the detectors'
state) every surveillance.state_commit_ms and at the end. A restart (after a stop or a kill -9) loads
the cursor, reads on from it and drops what it finds again up to the reach (stored already), so
nothing is missed or found twice. Batch (a range) and
live (--follow: poll for newly committed records every surveillance.poll_ms) are the same loop over
the same records, so they find the same alerts. Every decision uses the journaled receive times
(ts_ns), never the wall clock. The rules and their parameters: engine/SURVEILLANCE.md. `surveil` runs the
per-event bookkeeping in C++ (engine/surveil_core.pyx, Detectors(native=True)); the detectors here build
every alert, and the plain Python path is the reference the tests compare it with.
"""
from __future__ import annotations

import argparse
import bisect
import os
import signal
import struct
import sys
import time
from collections import Counter

import lmdb
import msgspec
import numpy as np

from engine import config as cfgmod
from engine import notes
from engine.journal import MARKER, JournalError, JournalRefused, check_data_size
from protocol.codes import (AlertType, CancelReason, CommandKind, Disposition, EventKind, LimitKind, LimitScope,
                            OrderType, Side, TimeInForce)

MS = 1_000_000
ORDER_ENTRY = frozenset(int(k) for k in (CommandKind.NEW_ORDER, CommandKind.CANCEL, CommandKind.AMEND,
                                         CommandKind.MASS_CANCEL))
EVENT_COLS = ("kind", "side", "reason", "symbol", "account", "other_account", "order_id", "other_order_id", "price",
              "qty", "leaves", "other_leaves", "seq", "ts_ns", "flags")   # then the command's order type, operator
ORDER_ENTRY_LUT = np.zeros(256, dtype=bool)      # CommandKind (uint8) -> an order-entry message
ORDER_ENTRY_LUT[sorted(ORDER_ENTRY)] = True
USER_CANCEL = frozenset((int(CancelReason.USER), int(CancelReason.MASS_CANCEL)))
# an order: [account, symbol, side, price, qty, leaves, filled, ts_ns, seq, on_book, away, order_type]
ACCOUNT, SYMBOL, SIDE, PRICE, QTY, LEAVES, FILLED, TS, SEQ, ON_BOOK, AWAY, OTYPE = range(12)


# The codes the detectors compare, as plain ints: an IntEnum member costs ~160 ns a lookup in Python 3.11, a
# module global ~15 (profiled: a tenth of the loop's time).
EV_ACCEPTED = int(EventKind.ACCEPTED)
EV_ALERT_DISPOSITION = int(EventKind.ALERT_DISPOSITION)
EV_CANCELLED = int(EventKind.CANCELLED)
EV_FILL = int(EventKind.FILL)
EV_LIMIT_SET = int(EventKind.LIMIT_SET)
EV_REPLACED = int(EventKind.REPLACED)
EV_STP_PREVENTED = int(EventKind.STP_PREVENTED)
EV_TRIGGERED = int(EventKind.TRIGGERED)
SIDE_BUY = int(Side.BUY)
OT_LIMIT = int(OrderType.LIMIT)
OT_STOP_LIMIT = int(OrderType.STOP_LIMIT)
CMD_END_OF_DAY = int(CommandKind.END_OF_DAY)


class Alert(msgspec.Struct, kw_only=True):
    id: str                     # type:seq:n, n-th alert found at the command of that seq
    type: str                   # wash_trade, spoofing, excessive_messaging
    severity: str               # low, medium, high
    seq: int                    # the command at which the episode was found
    ts_ns: int
    owner: str
    accounts: list[int]
    symbol: int                 # 0: all symbols (messaging)
    window_start_ns: int
    window_end_ns: int
    rule: str
    evidence: list[dict]


class DispositionEntry(msgspec.Struct, kw_only=True):
    """One disposition of an alert, as journaled (the admin's ALERT_DISPOSITION command)."""
    alert: str                  # the alert's id, type:seq:n
    disposition: str            # reviewed, escalated, dismissed
    operator: int               # [[admins]] id
    seq: int                    # the command that recorded it
    ts_ns: int
    note_digest: str = ""       # the note's BLAKE2b digest as journaled ("" = no note; engine/notes.py)
    note: str | None = None     # its text, from the notes file beside the journal (None: none, or not found)


class State(msgspec.Struct, kw_only=True):
    """Everything the detectors remember between records (the store keeps it with the cursor)."""
    orders: dict[int, list[int]] = {}            # live orders by order id (layout above)
    levels: dict[int, dict[int, int]] = {}       # symbol*4+side -> price -> resting qty
    recent: dict[str, list[list[int]]] = {}      # wash: owner|symbol -> [ts, side, price, order_id, account, seq]
    fills: dict[str, list[list[int]]] = {}       # spoofing: owner|symbol -> [ts, side, order_id, price, qty, seq]
    episodes: dict[str, int] = {}                # type|key -> ts of its last finding
    msgs: dict[int, list[int]] = {}              # messaging: account -> message times
    trades: dict[int, list[int]] = {}            # messaging: account -> trade times
    msg_episode: dict[int, int] = {}             # account -> ts of the last breach of an open episode
    layers: dict[str, list[list[int]]] = {}      # layering: owner|symbol|side -> cancelled orders
                                                 # [cancel ts, order id, price, qty, placed ts, placed seq, seq]
    aggr: dict[str, list[list[int]]] = {}        # momentum: owner|symbol -> [ts, side, price, qty, order_id, seq]
    ignition: dict[str, list[int]] = {}          # momentum: owner|symbol -> [side, start ts, ts, from, to, n, qty,
                                                 # first seq, seq]: a run that awaits its reversal
    close_trades: dict[int, list[list[int]]] = {}  # marking the close: symbol -> [ts, price, qty, taker, side, seq]
    close_ref: dict[int, int] = {}               # symbol -> price of the last trade before the window
    closed_day: dict[int, int] = {}              # symbol -> the day (ts // 86400 s) whose close_time was judged
    large: dict[int, list[int]] = {}             # symbol -> [LARGE_ORDER_QTY, LARGE_POSITION_QTY] (0: none)
    positions: dict[int, int] = {}               # account * 2**32 + symbol -> position (large_position)
    owner_positions: dict[str, int] = {}         # owner|symbol -> its accounts' summed position (owners of 2+
                                                 # accounts; large_position)


class Cursor(msgspec.Struct, kw_only=True):
    next_seq: int
    state: State


class Detectors:
    """The three detectors over one stream of commands and their events (one State)."""

    def __init__(self, sv: cfgmod.SurveillanceConfig, state: State | None = None, quiet_path: bool = True,
                 native: bool = False):
        """native: the per-event bookkeeping (orders, levels, the owners' windows: wash's recent orders, fills,
        momentum's runs; messaging's windows) in engine/surveil_core.pyx, its state exported into self.s by
        sync(); else all of it here (the plain path, which tests compare it with)."""
        self.sv = sv
        self.s = state or State()
        self.owner_of = {a: o.name for o in sv.owners for a in o.accounts}
        self.groups = {o.name: sorted(set(o.accounts)) for o in sv.owners if len(set(o.accounts)) > 1}
        self.found: list[Alert] = []
        self.dispositions: list[DispositionEntry] = []
        self.n_at_seq = (0, 0)
        self.large_on, self.wash_on, self.spoof_on = sv.large.enabled, sv.wash.enabled, sv.spoofing.enabled
        self.layering_on, self.spoof_min_qty = sv.layering.enabled, sv.spoofing.min_qty
        self.wash_window_ns = sv.wash.window_ms * MS
        self.owner_sym: dict[int, str] = {}  # account * 2**32 + symbol -> "owner|symbol" (the detectors' keys)
        self.quiet_path = quiet_path         # False: every order-entry message through message() (tests compare)
        self.quiet_chunks = 0                # chunks that had quiet accounts
        self.last_ts: int | None = None      # messaging's fast path (quiet_accounts): the latest time seen
        self.lists_sorted = False
        self.wash_pending: dict[tuple[str, int], list] = {}
        self.fill_keep = max(sv.spoofing.max_lifetime_ms, sv.layering.window_ms + sv.layering.cancel_ms) * MS
        ct = sv.close.close_time
        self.close_tod = None if ct is None else sum(int(x) * m for x, m in zip(ct.split(":"), (3600, 60, 1))) * 10**9
        self.owner_names: list[str] = []     # the native core's owner indexes (owner_id)
        self.owner_ids: dict[str, int] = {}
        self.core = None
        if native:
            from engine.surveil_core import Core
            self.core = Core(self)

    def owner(self, account: int) -> str:
        o = self.owner_of.get(account)
        if o is None:                      # an account in no group owns itself (cached: no string per call)
            o = self.owner_of[account] = f"account {account}"
        return o

    def owner_id(self, name: str) -> int:
        """The native core's index of an owner (its keys hold indexes, State's keys the names)."""
        i = self.owner_ids.get(name)
        if i is None:
            i = self.owner_ids[name] = len(self.owner_names)
            self.owner_names.append(name)
        return i

    def owner_index(self, account: int) -> int:
        return self.owner_id(self.owner(account))

    def fills_of(self, account: int, symbol: int) -> list:
        """The fills of the account's owner in the symbol (spoofing's and layering's window)."""
        if self.core is not None:
            return self.core.fills_of(self.owner_index(account), symbol)
        return self.s.fills.get(self.osym(account, symbol), ())

    def sync(self) -> State:
        """The whole state, as the cursor stores it (the native core's part exported into it)."""
        if self.core is not None:
            self.core.export(self.s)
        return self.s

    def osym(self, account: int, symbol: int) -> str:
        """The detectors' "owner|symbol" key (cached: no string per event)."""
        k = account * 4294967296 + symbol
        v = self.owner_sym.get(k)
        if v is None:
            v = self.owner_sym[k] = f"{self.owner(account)}|{symbol}"
        return v

    # -- the stream --
    def feed(self, cmds, events, next_seq: int, until_seq: int | None) -> int:
        """Commands (and their events) with next_seq <= seq <= until_seq; the next seq to read.

        The loop walks the events (each with its command's order type and operator); a command is visited
        on its own, before its events, only when something needs it: an order-entry message of an account
        whose messaging window could breach in this chunk (the others are quiet: quiet_accounts), and, for
        the close, END_OF_DAY (every command when close.close_time is set)."""
        if self.core is not None:
            return self.core.feed(cmds, events, next_seq, until_seq)
        cseq_a = cmds["seq"]
        lo = int(np.searchsorted(cseq_a, next_seq, "left"))
        hi = len(cseq_a) if until_seq is None else int(np.searchsorted(cseq_a, until_seq, "right"))
        if hi <= lo:
            return next_seq
        c = cmds[lo:hi]
        cseq_r, ckind_a, cacct_a, cts_a = c["seq"], c["kind"], c["account"], c["ts_ns"]
        eseq = events["seq"]
        es = np.searchsorted(eseq, cseq_r, "left")
        ee = np.searchsorted(eseq, cseq_r, "right")
        msg_on, close_on = self.sv.messaging.enabled, self.sv.close.enabled
        quiet, loud = {}, []
        if msg_on and self.quiet_path:
            quiet, loud = self.quiet_accounts(cacct_a, cts_a, ckind_a, events["ts_ns"], es, ee)
        evs = events[int(es[0]):int(ee[-1])]               # the range's commands' events
        at = np.minimum(np.searchsorted(cseq_r, evs["seq"]), len(cseq_r) - 1)
        mine = cseq_r[at] == evs["seq"]
        if not mine.all():                                   # (an event of no command: never acted on)
            evs, at = evs[mine], at[mine]
        ev = list(zip(*(evs[k].tolist() for k in EVENT_COLS), c["order_type"][at].tolist(),
                      c["operator"][at].tolist()))
        stop = np.zeros(hi - lo, dtype=bool)                 # the commands visited on their own
        if close_on:
            if self.close_tod is not None:
                stop[:] = True
            else:
                stop |= ckind_a == CMD_END_OF_DAY
        if msg_on:
            entry = ORDER_ENTRY_LUT[ckind_a]
            if not quiet:
                stop |= entry
            elif loud:
                stop |= entry & np.isin(cacct_a, loud)
        stops = np.flatnonzero(stop).tolist()
        cseq, ckind, cacct, cts, csym = (c[k].tolist() for k in ("seq", "kind", "account", "ts_ns", "symbol"))
        stop_seq = [cseq[k] for k in stops]
        stop_seq.append(cseq[-1] + 1)
        si, nxt, prev = 0, stop_seq[0], -1
        orders, levels, fills = self.s.orders, self.s.levels, self.s.fills
        osym_get, cancel_ns = self.owner_sym.get, self.sv.layering.cancel_ms * MS
        for e in ev:
            seq = e[12]
            if seq != prev:                         # a command's first event
                if self.wash_pending:
                    self.flush_wash()
                while nxt <= seq:
                    k = stops[si]
                    self.command(ckind[k], cacct[k], csym[k], cseq[k], cts[k], quiet)
                    si += 1
                    nxt = stop_seq[si]
                prev = seq
            kind = e[0]
            if kind == EV_CANCELLED:                # the commonest event, here rather than in event()
                o = orders.pop(e[6], None)
                if o is None:
                    continue
                if o[ON_BOOK]:                      # level_add, inlined
                    lv = levels.get(e[3] * 4 + o[SIDE])
                    if lv is None:
                        lv = levels[e[3] * 4 + o[SIDE]] = {}
                    lq = lv.get(o[PRICE], 0) - o[LEAVES]
                    if lq > 0:
                        lv[o[PRICE]] = lq
                    else:
                        lv.pop(o[PRICE], None)
                if e[2] in USER_CANCEL:
                    if self.spoof_on and o[QTY] >= self.spoof_min_qty:    # (spoof's first test, hoisted)
                        self.spoof(e[6], o, e[12], e[13])
                    if self.layering_on:            # (layering's test of the owner's last trade, hoisted)
                        f = fills.get(osym_get(o[ACCOUNT] * 4294967296 + o[SYMBOL])
                                      or self.osym(o[ACCOUNT], o[SYMBOL]))
                        if f and e[13] - f[-1][0] <= cancel_ns:
                            self.layering(e[6], o, e[12], e[13])
            elif kind == EV_ACCEPTED:
                self.accepted(e, e[15])
            elif kind == EV_ALERT_DISPOSITION:
                self.disposition(e[2], e[6], e[9], e[1], e[16], seq, cts[bisect.bisect_left(cseq, seq)], e[8], e[10])
            else:
                self.event(e, e[15])
        if self.wash_pending:
            self.flush_wash()
        for k in stops[si:]:                            # commands after the last event
            self.command(ckind[k], cacct[k], csym[k], cseq[k], cts[k], quiet)
        if quiet:
            self.quiet_chunks += 1
            for a, t in zip(cacct_a[entry].tolist(), cts_a[entry].tolist()):
                q = quiet.get(a)
                if q is not None:
                    q.append(t)
            self.quiet_messages(quiet)
        return cseq[-1] + 1

    def command(self, kind, acct, sym, seq, ts, quiet) -> None:
        """What a command itself (before its events) means to the close and to messaging."""
        if self.sv.close.enabled:
            self.close_command(kind, sym, seq, ts)
        if self.sv.messaging.enabled and kind in ORDER_ENTRY and acct not in quiet:
            self.message(acct, seq, ts)

    def close_command(self, kind, sym, seq, ts) -> None:
        if kind == CMD_END_OF_DAY:
            self.closes(sym, seq, ts, "end_of_day")
        elif self.close_tod is not None:
            self.close_clock(seq, ts)

    def disposition(self, alert_type, alert_seq, alert_n, disposition, operator, seq, ts, note_price,
                    note_leaves) -> None:
        """An ALERT_DISPOSITION event (of the command seq at ts; its note's digest in price and leaves), for the
        store's trail."""
        self.dispositions.append(DispositionEntry(
            alert=f"{AlertType(alert_type).name.lower()}:{alert_seq}:{alert_n}",
            disposition=Disposition(disposition).name.lower(), operator=operator, seq=seq, ts_ns=ts,
            note_digest=notes.hexdigest(note_price, note_leaves)))

    def alert(self, type_, seq, ts, owner, accounts, symbol, start, severity, rule, evidence) -> None:
        n = self.n_at_seq[1] + 1 if self.n_at_seq[0] == seq else 0
        self.n_at_seq = (seq, n)
        self.found.append(Alert(id=f"{type_}:{seq}:{n}", type=type_, severity=severity, seq=seq, ts_ns=ts,
                                owner=owner, accounts=sorted(set(accounts)), symbol=symbol, window_start_ns=start,
                                window_end_ns=ts, rule=rule, evidence=evidence))

    def new_episode(self, key: str, ts: int, gap_ms: int) -> bool:
        """Whether a finding at ts starts an episode (else it continues the one open under key)."""
        last = self.s.episodes.get(key)
        self.s.episodes[key] = ts
        return last is None or ts - last > gap_ms * MS

    # -- the book (enough of it to know each side's best price) --
    def level_add(self, symbol, side, price, qty) -> None:
        lv = self.s.levels.setdefault(symbol * 4 + side, {})
        q = lv.get(price, 0) + qty
        if q > 0:
            lv[price] = q
        else:
            lv.pop(price, None)

    def best(self, symbol, side):
        lv = self.s.levels.get(symbol * 4 + side)
        if not lv:
            return None
        return max(lv) if side == SIDE_BUY else min(lv)

    def reduce(self, oid, qty, leaves) -> None:
        o = self.s.orders.get(oid)
        if o is None:
            return
        o[FILLED] += qty
        o[LEAVES] = leaves
        if o[ON_BOOK]:
            self.level_add(o[SYMBOL], o[SIDE], o[PRICE], -qty)
        if leaves <= 0:
            del self.s.orders[oid]

    # -- events --
    def accepted(self, e, order_type) -> None:
        """An ACCEPTED event: the order, its level, large_order and wash's opposite orders."""
        _, side, _, sym, acct, _, oid, _, price, qty, _, _, seq, ts, _, _, _ = e
        s = self.s
        if self.large_on:
            lim = s.large.get(sym)
            if lim and lim[0] and qty > lim[0]:
                self.large_order(acct, sym, side, oid, price, qty, lim[0], seq, ts)
        away = False
        if qty >= self.spoof_min_qty:      # only a large order can be a spoof: judge "away" for it alone
            best = self.best(sym, side)
            m = self.sv.spoofing.min_away
            away = best is not None and (price <= best - m if side == SIDE_BUY else price >= best + m)
        rests = order_type == OT_LIMIT
        s.orders[oid] = [acct, sym, side, price, qty, qty, 0, ts, seq, int(rests), int(away), order_type]
        if rests:                           # level_add, inlined (the hottest path)
            lv = s.levels.get(sym * 4 + side)
            if lv is None:
                lv = s.levels[sym * 4 + side] = {}
            q = lv.get(price, 0) + qty
            if q > 0:
                lv[price] = q
            else:
                lv.pop(price, None)
        if self.wash_on and (order_type == OT_LIMIT or order_type == OT_STOP_LIMIT):
            # wash: opposite orders of one owner at one price (inlined: once per accepted order)
            lst = s.recent.setdefault(self.owner_sym.get(acct * 4294967296 + sym) or self.osym(acct, sym), [])
            del lst[:bisect.bisect_left(lst, [ts - self.wash_window_ns])]
            for t, sd, p, o, a, sq in lst:
                if sd != side and p == price and o in s.orders:
                    self.wash_opposite(t, o, a, sq, oid, acct, sym, price, seq, ts)
                    break
            lst.append([ts, side, price, oid, acct, seq])

    def large_order(self, acct, sym, side, oid, price, qty, thr, seq, ts) -> None:
        self.alert("large_order", seq, ts, self.owner(acct), [acct], sym, ts, "low", self.LARGE_ORDER_RULE,
                   [{"finding": "order", "order_id": oid, "account": acct, "side": Side(side).name.lower(),
                     "price": price, "qty": qty, "threshold": thr, "seq": seq, "ts_ns": ts}])

    def wash_opposite(self, t, o, a, sq, oid, acct, sym, price, seq, ts) -> None:
        """Wash's opposite-orders finding: order oid of acct at price, opposite to the owner's live order o
        (of account a, placed at t by command sq)."""
        self.wash(seq, ts, a, acct, sym, "medium", {
            "finding": "opposite_orders", "first_ts_ns": t, "seq": seq, "ts_ns": ts, "first_order_id": o,
            "first_account": a, "first_seq": sq, "order_id": oid, "account": acct, "price": price,
            "window_ms": self.sv.wash.window_ms})

    def event(self, e, order_type) -> None:
        """One event (ACCEPTED and CANCELLED, the commonest, are handled in feed's loop)."""
        kind, side, reason, sym, acct, other, oid, other_oid, price, qty, leaves, other_leaves, seq, ts, flags = e[:15]
        s = self.s
        if kind == EV_FILL:
            self.reduce(oid, qty, leaves)
            self.reduce(other_oid, qty, other_leaves)
            if self.sv.messaging.enabled:
                for a in {acct, other}:
                    s.trades.setdefault(a, []).append(ts)
            self.fill(acct, other, sym, side, oid, other_oid, price, qty, seq, ts)
        elif kind == EV_REPLACED:
            o = s.orders.get(oid)
            if o is not None:
                if o[ON_BOOK]:
                    self.level_add(sym, o[SIDE], o[PRICE], -o[LEAVES])
                    self.level_add(sym, o[SIDE], price, leaves)
                o[PRICE], o[LEAVES] = price, leaves
        elif kind == EV_TRIGGERED:
            o = s.orders.get(oid)
            if o is not None and o[OTYPE] == OT_STOP_LIMIT:
                o[ON_BOOK] = 1
                self.level_add(sym, o[SIDE], o[PRICE], o[LEAVES])
        elif kind == EV_LIMIT_SET:
            if reason in (LimitKind.LARGE_ORDER_QTY, LimitKind.LARGE_POSITION_QTY) and side == LimitScope.SYMBOL:
                lim = s.large.setdefault(sym, [0, 0])
                lim[reason - LimitKind.LARGE_ORDER_QTY] = 0 if flags & 1 else qty
                if lim == [0, 0]:
                    del s.large[sym]
        elif kind == EV_STP_PREVENTED:
            if self.sv.wash.enabled and self.owner(acct) == self.owner(other):
                self.wash(seq, ts, acct, other, sym, "medium", {
                    "finding": "stp_prevented", "seq": seq, "ts_ns": ts, "taker_order_id": oid,
                    "maker_order_id": other_oid, "taker_account": acct, "maker_account": other, "price": price,
                    "qty": qty})

    def fill(self, acct, other, sym, side, oid, other_oid, price, qty, seq, ts) -> None:
        """A FILL, after its orders' bookkeeping (and messaging's trade times): wash, the owners' fills (spoofing,
        layering), momentum, the close's trades, large positions."""
        s = self.s
        if self.sv.wash.enabled and self.owner(acct) == self.owner(other):
            self.wash_fill(acct, other, sym, oid, other_oid, price, qty, seq, ts)
        if self.sv.spoofing.enabled or self.sv.layering.enabled:
            keep = self.fill_keep
            for a, sd, o in ((acct, side, oid), (other, 3 - side, other_oid)):
                lst = s.fills.setdefault(self.osym(a, sym), [])
                del lst[:bisect.bisect_left(lst, [ts - keep])]
                lst.append([ts, sd, o, price, qty, seq])
        if self.sv.momentum.enabled:
            self.momentum(acct, other, sym, side, price, qty, oid, seq, ts)
        if self.sv.close.enabled:
            self.close_trade(sym, price, qty, acct, side, seq, ts)
        if self.sv.large.enabled and sym in s.large:
            self.large_position(acct, other, sym, side, price, qty, seq, ts)

    def wash_fill(self, acct, other, sym, oid, other_oid, price, qty, seq, ts) -> None:
        self.wash(seq, ts, acct, other, sym, "high", {
            "finding": "fill", "seq": seq, "ts_ns": ts, "taker_order_id": oid, "maker_order_id": other_oid,
            "taker_account": acct, "maker_account": other, "price": price, "qty": qty})

    # -- wash trades --
    WASH_RULE = ("the same beneficial owner on both sides: a fill, a match self-trade prevention stopped, or "
                 "opposite orders at one price while the first is live, within wash.window_ms")

    def wash(self, seq, ts, acct, other, sym, severity, finding) -> None:
        """A finding; those of one command and owner make one alert (flush_wash), at the highest severity."""
        owner = self.owner(acct)
        p = self.wash_pending.setdefault((owner, sym), [seq, ts, set(), ts, "medium", []])
        p[2].update((acct, other))
        p[3] = min(p[3], finding.get("first_ts_ns", ts))
        if severity == "high":
            p[4] = "high"
        p[5].append(finding)

    def flush_wash(self) -> None:
        for (owner, sym), (seq, ts, accounts, start, severity, evidence) in self.wash_pending.items():
            if self.new_episode(f"wash|{owner}|{sym}", ts, self.sv.wash.episode_gap_ms):
                self.alert("wash_trade", seq, ts, owner, list(accounts), sym, start, severity, self.WASH_RULE,
                           evidence)
        self.wash_pending.clear()

    # -- spoofing --
    SPOOF_RULE = ("a large order behind its side's best price, cancelled soon after it was placed and mostly "
                  "unfilled, while the same owner traded on the other side")

    def spoof(self, oid, o, seq, ts) -> None:
        p = self.sv.spoofing
        if o[QTY] < p.min_qty or not o[AWAY] or ts - o[TS] > p.max_lifetime_ms * MS \
                or o[FILLED] * 100 > p.max_filled_pct * o[QTY]:
            return
        owner, sym = self.owner(o[ACCOUNT]), o[SYMBOL]
        trades = [f for f in self.fills_of(o[ACCOUNT], sym) if f[1] != o[SIDE] and o[TS] <= f[0] <= ts]
        if not trades:
            return
        if self.new_episode(f"spoof|{owner}|{sym}|{o[SIDE]}", ts, p.episode_gap_ms):
            self.alert("spoofing", seq, ts, owner, [o[ACCOUNT]], sym, o[TS], "high", self.SPOOF_RULE, [
                {"finding": "order", "order_id": oid, "account": o[ACCOUNT], "side": Side(o[SIDE]).name.lower(),
                 "price": o[PRICE], "qty": o[QTY], "filled": o[FILLED], "placed_seq": o[SEQ], "placed_ts_ns": o[TS],
                 "cancelled_seq": seq, "cancelled_ts_ns": ts},
                *({"finding": "opposite_fill", "ts_ns": t, "order_id": fo, "price": fp, "qty": fq, "seq": fs}
                  for t, _, fo, fp, fq, fs in trades)])

    # -- layering --
    LAYER_RULE = ("several orders of one owner on one side at several prices, placed shortly before the owner "
                  "traded on the other side and cancelled soon after that trade, mostly unfilled")

    def layering(self, oid, o, seq, ts) -> None:
        p = self.sv.layering
        if o[FILLED] * 100 > p.max_filled_pct * o[QTY]:
            return
        fills = self.fills_of(o[ACCOUNT], o[SYMBOL])
        if not fills or ts - fills[-1][0] > p.cancel_ms * MS:
            return       # no trade of the owner within cancel_ms: this cancel can be in no layer, now or later
        owner, sym, side = self.owner(o[ACCOUNT]), o[SYMBOL], o[SIDE]
        key = f"{owner}|{sym}|{side}"
        lst = self.s.layers.setdefault(key, [])
        horizon = ts - (p.window_ms + p.cancel_ms) * MS
        del lst[:bisect.bisect_left(lst, [horizon])]
        lst.append([ts, oid, o[PRICE], o[QTY], o[TS], o[SEQ], seq])
        # the owner's latest trade on the other side at most cancel_ms before this cancel
        trade = None
        for f in reversed(fills):
            if f[0] > ts:
                continue
            if ts - f[0] > p.cancel_ms * MS:
                break
            if f[1] != side:
                trade = f
                break
        if trade is None:
            return
        t = trade[0]
        layer = [x for x in lst if t - p.window_ms * MS <= x[4] <= t <= x[0] <= t + p.cancel_ms * MS]
        if len(layer) < p.min_orders or len({x[2] for x in layer}) < p.min_levels \
                or sum(x[3] for x in layer) < p.min_qty:
            return
        if self.new_episode(f"layer|{key}", ts, p.episode_gap_ms):
            accounts = {o[ACCOUNT]}
            self.alert("layering", seq, ts, owner, list(accounts), sym, min(x[4] for x in layer), "high",
                       self.LAYER_RULE, [
                           *({"finding": "layer_order", "order_id": x[1], "side": Side(side).name.lower(),
                              "price": x[2], "qty": x[3], "placed_seq": x[5], "placed_ts_ns": x[4],
                              "cancelled_seq": x[6], "cancelled_ts_ns": x[0]} for x in layer),
                           {"finding": "opposite_fill", "ts_ns": t, "order_id": trade[2], "price": trade[3],
                            "qty": trade[4], "seq": trade[5]}])

    # -- momentum ignition --
    MOMENTUM_RULE = ("a run of aggressive trades of one owner on one side moving the price by momentum.min_move_bps "
                     "within momentum.window_ms, then a trade of the owner on the other side within "
                     "momentum.reversal_ms")

    def momentum(self, taker, maker, sym, side, price, qty, oid, seq, ts) -> None:
        p, s = self.sv.momentum, self.s
        for a, sd in ((taker, side), (maker, 3 - side)):          # a reversal: any trade on the other side
            k = f"{self.owner(a)}|{sym}"
            ig = s.ignition.get(k)
            if ig is None:
                continue
            if ts - ig[2] > p.reversal_ms * MS:
                del s.ignition[k]
            elif sd != ig[0]:
                del s.ignition[k]
                run = [f[4] for f in s.aggr.get(k, ()) if f[1] == ig[0] and f[0] >= ig[1]]
                self.momentum_reversal(a, sym, ig, run, sd, price, qty, seq, ts)
        k = f"{self.owner(taker)}|{sym}"
        lst = s.aggr.setdefault(k, [])
        del lst[:bisect.bisect_left(lst, [ts - p.window_ms * MS])]
        lst.append([ts, side, price, qty, oid, seq])
        run = [f for f in lst if f[1] == side]
        if len(run) < p.min_trades or sum(f[3] for f in run) < p.min_qty:
            return
        first = run[0][2]
        move = (price - first) if side == SIDE_BUY else (first - price)
        if move * 10000 >= p.min_move_bps * first:
            ig = s.ignition.get(k)
            if ig is None or ig[0] != side:
                s.ignition[k] = [side, run[0][0], ts, first, price, len(run), sum(f[3] for f in run), run[0][5], seq]
            else:                                                  # the run goes on
                ig[2], ig[4], ig[5], ig[6], ig[8] = ts, price, ig[5] + 1, ig[6] + qty, seq

    def momentum_reversal(self, a, sym, ig, order_ids, sd, price, qty, seq, ts) -> None:
        """Account a's trade on side sd ends the run ig (the ignition layout above; order_ids: the run's
        aggressive fills' orders) of its owner in the symbol: an alert, unless the episode goes on."""
        p = self.sv.momentum
        if self.new_episode(f"momentum|{self.osym(a, sym)}", ts, p.episode_gap_ms):
            self.alert("momentum_ignition", seq, ts, self.owner(a), [a], sym, ig[1], "high", self.MOMENTUM_RULE, [
                {"finding": "run", "side": Side(ig[0]).name.lower(), "from_price": ig[3], "to_price": ig[4],
                 "trades": ig[5], "qty": ig[6], "first_seq": ig[7], "last_seq": ig[8], "start_ts_ns": ig[1],
                 "end_ts_ns": ig[2], "order_ids": sorted(set(order_ids))},
                {"finding": "reversal", "side": Side(sd).name.lower(), "price": price, "qty": qty, "seq": seq,
                 "ts_ns": ts}])

    # -- marking the close --
    CLOSE_RULE = ("in the closing window one owner's aggressive trades on one side make at least "
                  "close.min_share_pct of the volume, include the last trade, and the closing price moved "
                  "close.min_move_bps from the price before the window in their direction")

    def close_trade(self, sym, price, qty, taker, side, seq, ts) -> None:
        lst = self.s.close_trades.setdefault(sym, [])
        i = bisect.bisect_left(lst, [ts - self.sv.close.window_ms * MS])
        if i:
            self.s.close_ref[sym] = lst[i - 1][1]
            del lst[:i]
        lst.append([ts, price, qty, taker, side, seq])

    def close_clock(self, seq, ts) -> None:
        """close.close_time passed (the first command at or after it, each day): every symbol's close."""
        day, tod = divmod(ts, 86400 * 10**9)
        if tod < self.close_tod:
            return
        for sym in list(self.s.close_trades):
            if self.s.closed_day.get(sym) != day:
                self.s.closed_day[sym] = day
                self.closes(sym, seq, day * 86400 * 10**9 + self.close_tod, "close_time")

    def closes(self, sym, seq, ts, why) -> None:
        """The close of one symbol (0: all) at ts: judge its closing window, then start afresh."""
        p, s = self.sv.close, self.s
        for y in (list(s.close_trades) if sym == 0 else [sym]):
            trades = [t for t in s.close_trades.pop(y, ()) if ts - p.window_ms * MS <= t[0] <= ts]
            ref = s.close_ref.pop(y, None)
            if not trades:
                continue
            if ref is None:
                ref = trades[0][1]
            total = sum(t[2] for t in trades)
            vol: dict[tuple[str, int], int] = {}
            for t in trades:
                vol[(self.owner(t[3]), t[4])] = vol.get((self.owner(t[3]), t[4]), 0) + t[2]
            (owner, side), v = max(vol.items(), key=lambda kv: (kv[1], kv[0]))
            last = trades[-1]
            mine = [t for t in trades if self.owner(t[3]) == owner and t[4] == side]
            move = (last[1] - ref) if side == SIDE_BUY else (ref - last[1])
            if v * 100 < p.min_share_pct * total or self.owner(last[3]) != owner or last[4] != side \
                    or len(mine) < p.min_trades or move * 10000 < p.min_move_bps * ref:
                continue
            self.alert("marking_the_close", seq, ts, owner, [t[3] for t in mine], y, ts - p.window_ms * MS,
                       "high", self.CLOSE_RULE, [
                           {"finding": "close", "by": why, "close_ts_ns": ts, "price_before": ref,
                            "close_price": last[1], "volume": total, "owner_volume": v,
                            "side": Side(side).name.lower(), "window_ms": p.window_ms},
                           *({"finding": "trade", "seq": t[5], "ts_ns": t[0], "price": t[1], "qty": t[2],
                              "account": t[3]} for t in mine)])

    # -- large orders and positions (compliance flags; RISK.md "KYC") --
    LARGE_ORDER_RULE = "an order above its symbol's LARGE_ORDER_QTY (flagged, not rejected: LARGE_REJECT is 0)"
    LARGE_POSITION_RULE = "a position above its symbol's LARGE_POSITION_QTY (one alert each time it goes above)"
    LARGE_OWNER_RULE = ("a beneficial owner's position (its accounts' summed) above its symbol's LARGE_POSITION_QTY "
                        "(one alert each time it goes above)")

    def large_position(self, taker, maker, sym, side, price, qty, seq, ts) -> None:
        thr = self.s.large[sym][1]
        for a, sd in ((taker, side), (maker, 3 - side)):
            k = a * (1 << 32) + sym
            old = self.s.positions.get(k, 0)
            new = old + (qty if sd == SIDE_BUY else -qty)
            if new:
                self.s.positions[k] = new
            else:
                self.s.positions.pop(k, None)
            if thr and abs(new) > thr >= abs(old):
                self.alert("large_position", seq, ts, self.owner(a), [a], sym, ts, "low", self.LARGE_POSITION_RULE,
                           [{"finding": "position", "account": a, "position": new, "before": old, "threshold": thr,
                             "price": price, "seq": seq, "ts_ns": ts}])
        if not self.groups:
            return
        net: dict[str, int] = {}            # an owner of 2+ accounts: the fill's net change to its position
        for a, sd in ((taker, side), (maker, 3 - side)):
            o = self.owner_of.get(a)
            if o in self.groups:
                net[o] = net.get(o, 0) + (qty if sd == SIDE_BUY else -qty)
        for o, d in net.items():            # (one owner on both sides: no change, no alert)
            if not d:
                continue
            k = f"{o}|{sym}"
            old = self.s.owner_positions.get(k, 0)
            new = old + d
            if new:
                self.s.owner_positions[k] = new
            else:
                self.s.owner_positions.pop(k, None)
            if thr and abs(new) > thr >= abs(old):
                held = [(a, self.s.positions.get(a * (1 << 32) + sym, 0)) for a in self.groups[o]]
                held = [(a, p) for a, p in held if p]
                self.alert("large_position", seq, ts, o, [a for a, _ in held], sym, ts, "low", self.LARGE_OWNER_RULE,
                           [{"finding": "owner_position", "owner": o, "position": new, "before": old,
                             "threshold": thr, "price": price, "seq": seq, "ts_ns": ts},
                            *({"finding": "account_position", "account": a, "position": p} for a, p in held)])

    # -- excessive messaging --
    MSG_RULE = ("more than messaging.max_messages order-entry messages in messaging.window_ms, or at least "
                "messaging.min_messages with more than messaging.max_order_to_trade per trade")

    def quiet_accounts(self, acct, ts, kind, ets, es, ee) -> tuple[dict[int, list[int]], list[int]]:
        """The accounts whose order-entry messages in this chunk (numpy columns) cannot breach a messaging
        rule, with their message-time lists (and the other accounts with messages in it): no open episode
        and fewer than min(max_messages + 1, min_messages) messages in the window even counting every one of
        this chunk's. feed appends their messages' times and quiet_messages prunes their windows once after
        the chunk, which leaves them as message() would, given times that never go back: checked here (the
        chunk's command times in order, from the last time seen on, each event at its command's time, the
        windows' lists sorted); else none is quiet and every message goes through message()."""
        s, p = self.s, self.sv.messaging
        if self.last_ts is None:                 # a fresh or resumed state: the latest time it holds
            self.last_ts = max((lst[-1] for d in (s.msgs, s.trades) for lst in d.values() if lst), default=0)
        ok = bool((ts[1:] >= ts[:-1]).all()) and int(ts[0]) >= self.last_ts \
            and np.array_equal(ets[es[0]:ee[-1]], np.repeat(ts, ee - es))
        self.last_ts = max(self.last_ts, int(ts[-1]) if ok else int(ts.max()))
        if not ok:
            self.lists_sorted = False
            return {}, []
        if not self.lists_sorted:
            self.lists_sorted = all(all(a <= b for a, b in zip(lst, lst[1:]))
                                    for d in (s.msgs, s.trades) for lst in d.values())
            if not self.lists_sorted:
                return {}, []
        lim = min(p.max_messages + 1, p.min_messages)
        quiet, loud = {}, []
        for a, c in Counter(acct[ORDER_ENTRY_LUT[kind]].tolist()).items():
            if a not in s.msg_episode and len(s.msgs.get(a, ())) + c < lim:
                quiet[a] = s.msgs.setdefault(a, [])
            else:
                loud.append(a)
        return quiet, loud

    def quiet_messages(self, quiet) -> None:
        """The quiet accounts' windows after a chunk (see quiet_accounts)."""
        s, w = self.s, self.sv.messaging.window_ms * MS
        for a, msgs in quiet.items():
            if not msgs:
                continue
            start = msgs[-1] - w
            del msgs[:bisect.bisect_left(msgs, start + 1)]
            trades = s.trades.setdefault(a, [])
            del trades[:bisect.bisect_left(trades, start + 1)]

    def message(self, acct, seq, ts) -> None:
        p, s = self.sv.messaging, self.s
        start = ts - p.window_ms * MS
        msgs = s.msgs.setdefault(acct, [])
        del msgs[:bisect.bisect_left(msgs, start + 1)]
        msgs.append(ts)
        trades = s.trades.setdefault(acct, [])
        del trades[:bisect.bisect_left(trades, start + 1)]
        n, t = len(msgs), len(trades)
        breach = n > p.max_messages or (n >= p.min_messages and n > p.max_order_to_trade * t)
        last = s.msg_episode.get(acct)
        if breach:
            if last is None:
                self.msg_alert(acct, n, t, msgs[0], seq, ts)
            s.msg_episode[acct] = ts
        elif last is not None and ts - last > p.window_ms * MS:
            del s.msg_episode[acct]

    def msg_alert(self, acct, n, t, first, seq, ts) -> None:
        """An excessive-messaging episode starts: n messages (t trades) in the window from first to ts."""
        p = self.sv.messaging
        self.alert("excessive_messaging", seq, ts, self.owner(acct), [acct], 0, first,
                   "high" if n > 2 * p.max_messages else "medium", self.MSG_RULE,
                   [{"finding": "window", "messages": n, "trades": t, "window_ms": p.window_ms,
                     "first_ts_ns": first, "seq": seq, "ts_ns": ts}])


# -- the alert store --

class Store:
    """The alerts and the cursor, in an LMDB environment of its own (two named databases)."""

    def __init__(self, path: str, readonly: bool = False):
        if os.path.exists(os.path.join(path, MARKER)):
            raise SystemExit(f"trading-engine surveil: {path} is a journal; the alert store needs its own directory")
        if readonly and not os.path.exists(os.path.join(path, "data.mdb")):
            raise SystemExit(f"trading-engine surveil: no alert store at {path}")
        try:                      # a store cut short is refused by name before LMDB maps it (no SIGBUS)
            check_data_size(path, empty_ok=True)
        except JournalError as e:
            raise SystemExit(f"trading-engine surveil: the alert store: {e}") from None
        self.map_size = 1 << 30
        self.env = lmdb.open(path, map_size=self.map_size, max_dbs=3, subdir=True, readonly=readonly,
                             create=not readonly)
        if not readonly:        # all three in one transaction: a reader sees none of them or all
            with self.env.begin(write=True) as txn:
                self.alerts = self.env.open_db(b"alerts", txn=txn)
                self.meta = self.env.open_db(b"meta", txn=txn)
                self.disp = self.env.open_db(b"dispositions", txn=txn)
            return
        try:
            self.alerts = self.env.open_db(b"alerts", create=False)
            self.meta = self.env.open_db(b"meta", create=False)
        except lmdb.NotFoundError:
            self.env.close()
            raise SystemExit(f"trading-engine surveil: the alert store at {path} is still being created")
        try:        # (a store from before dispositions has none: opened read-only, it has no such database)
            self.disp = self.env.open_db(b"dispositions", create=False)
        except lmdb.NotFoundError:
            self.disp = None

    def cursor(self) -> Cursor | None:
        with self.env.begin() as txn:
            raw = txn.get(b"cursor", db=self.meta)
        return None if raw is None else msgspec.msgpack.decode(raw, type=Cursor)

    def reach(self) -> int | None:
        """The next seq after the commands whose alerts and dispositions are all stored (None: no store yet);
        at or past the cursor's next_seq (the State is stored less often: surveillance.state_commit_ms)."""
        with self.env.begin() as txn:
            raw = txn.get(b"reach", db=self.meta)
            if raw is None:
                raw = txn.get(b"cursor", db=self.meta)
                return None if raw is None else msgspec.msgpack.decode(raw, type=Cursor).next_seq
        return struct.unpack(">Q", raw)[0]

    def has(self, alert: Alert | None = None, disposition: DispositionEntry | None = None) -> bool:
        """Whether this alert (or disposition) is stored already (a restart's replay finds it again)."""
        with self.env.begin() as txn:
            if alert is not None:
                return txn.get(self.alert_key(alert), db=self.alerts) is not None
            return txn.get(struct.pack(">Q", disposition.seq), db=self.disp) is not None

    @staticmethod
    def alert_key(a: Alert) -> bytes:
        _, seq, n = a.id.rsplit(":", 2)
        return struct.pack(">QH", int(seq), int(n))

    def commit(self, alerts: list[Alert], cursor: Cursor | None, dispositions: list[DispositionEntry] = (),
               reach: int | None = None) -> None:
        """The alerts, the dispositions read and how far they reach (the next seq), in one transaction; with
        the cursor (the State) when given (reach: its next_seq)."""
        enc = msgspec.json.encode
        if reach is None:
            reach = cursor.next_seq
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for a in alerts:
                        txn.put(self.alert_key(a), enc(a), db=self.alerts)
                    for d in dispositions:          # keyed by the recording command's seq: an audit trail
                        txn.put(struct.pack(">Q", d.seq), enc(d), db=self.disp)
                    if cursor is not None:
                        txn.put(b"cursor", msgspec.msgpack.encode(cursor), db=self.meta)
                    txn.put(b"reach", struct.pack(">Q", reach), db=self.meta)
                return
            except lmdb.MapFullError:
                self.map_size *= 2
                self.env.set_mapsize(self.map_size)

    def all(self) -> list[Alert]:
        with self.env.begin() as txn:
            return [msgspec.json.decode(v, type=Alert) for _, v in txn.cursor(db=self.alerts)]

    def disposition_log(self) -> list[DispositionEntry]:
        """Every disposition read, in journal order."""
        if self.disp is None:
            return []
        with self.env.begin() as txn:
            return [msgspec.json.decode(v, type=DispositionEntry) for _, v in txn.cursor(db=self.disp)]

    def close(self) -> None:
        self.env.close()


# -- the loop --

def surveil(args) -> int:
    from engine.journal_tool import open_journal
    try:
        cfg = cfgmod.load(args.config)
        key = cfgmod.journal_key(cfg.journal)
    except (cfgmod.ConfigError, OSError) as e:
        print(f"trading-engine surveil: {e}", file=sys.stderr)
        return 2
    if os.path.realpath(args.store) == os.path.realpath(args.path):
        print("trading-engine surveil: --store must not be the journal's directory", file=sys.stderr)
        return 2
    from engine import journal_tool
    journal_tool.JOURNAL_KEY = key
    j = open_journal(args.path)
    os.makedirs(args.store, exist_ok=True)
    store = Store(args.store)
    cur = store.cursor()
    if cur is not None and args.from_seq is not None and args.from_seq != cur.next_seq:
        print(f"trading-engine surveil: the store {args.store} resumes at seq {cur.next_seq}, not --from-seq "
              f"{args.from_seq} (a new range needs a new --store)", file=sys.stderr)
        return 2
    if cur is None:
        cur = Cursor(next_seq=args.from_seq or 1, state=State())
    det = Detectors(cfg.surveillance, cur.state, native=True)
    note_reader = notes.Reader(args.path)
    if getattr(args, "metrics_port", None) is not None:
        _serve_metrics(args.metrics_port, store)
    stop = []
    if args.follow:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.append(1))
    # Each cycle stores the alerts and dispositions found and how far they reach (Store.reach): at its end, and
    # every PROGRESS_S while it reads a backlog; the State (the cursor) every state_commit_ms and at the end. A
    # restart resumes from the cursor and replays up to the reach, dropping what it finds again there (stored
    # already), so nothing is missed or repeated.
    replay_to = store.reach() or cur.next_seq
    total, stored, state_seq = 0, max(replay_to, cur.next_seq), cur.next_seq
    t_state = t_stored = time.monotonic()
    state_s = cfg.surveillance.state_commit_ms / 1000

    def commit(state: bool) -> None:
        nonlocal total, stored, state_seq, t_state, t_stored
        total += _commit(store, det, cur, note_reader, state=state, reach=max(replay_to, cur.next_seq))
        stored, t_stored = max(stored, cur.next_seq), time.monotonic()
        if state:
            state_seq, t_state = cur.next_seq, t_stored

    try:
        while not stop:
            n, done, t_cycle = 0, False, time.monotonic()
            for cmds, events in j.read_from(cur.next_seq):
                before = cur.next_seq
                cur.next_seq = det.feed(cmds, events, cur.next_seq, args.until_seq)
                if before < replay_to:              # replayed: drop what is stored already
                    det.found = [a for a in det.found if not store.has(alert=a)]
                    det.dispositions = [d for d in det.dispositions if not store.has(disposition=d)]
                n += 1
                done = args.until_seq is not None and cur.next_seq > args.until_seq
                if done or stop:
                    break
                now = time.monotonic()
                if now - t_state >= state_s:
                    commit(state=True)
                elif now - t_stored >= PROGRESS_S and cur.next_seq > stored:   # a long backlog
                    commit(state=False)
            final = done or stop or not args.follow
            if cur.next_seq != state_seq and (final or time.monotonic() - t_state >= state_s):
                commit(state=True)
            elif cur.next_seq > stored:
                commit(state=False)
            if final:
                break
            # cycles start poll_ms apart, or at once after one that took longer (a backlog: no wait added)
            time.sleep(max(0.0, cfg.surveillance.poll_ms / 1000 - (time.monotonic() - t_cycle)))
    except (JournalError, JournalRefused) as e:
        print(f"trading-engine surveil: {e}", file=sys.stderr)
        return 1
    finally:
        j.env.close()
        store.close()
    print(f"surveil: {total} alerts; next seq {cur.next_seq}", file=sys.stderr)
    return 0


METRICS = {}
PROGRESS_S = 0.05      # a cycle reading a long backlog stores its alerts (and their reach) this often


def _serve_metrics(port: int, store: Store) -> None:
    """Prometheus counters per alert type and per disposition, from the store's totals so far on."""
    from prometheus_client import Counter, start_http_server
    METRICS["alerts"] = Counter("te_surveillance_alerts", "Alerts found, by type", ["type"])
    METRICS["dispositions"] = Counter("te_surveillance_dispositions", "Alert dispositions read from the journal",
                                      ["disposition"])
    for t in AlertType:
        METRICS["alerts"].labels(t.name.lower())
    for d in Disposition:
        METRICS["dispositions"].labels(d.name.lower())
    _count(store.all(), store.disposition_log())
    start_http_server(port, addr="127.0.0.1")


def _count(alerts, dispositions) -> None:
    if METRICS:
        for a in alerts:
            METRICS["alerts"].labels(a.type).inc()
        for d in dispositions:
            METRICS["dispositions"].labels(d.disposition).inc()


def _commit(store: Store, det: Detectors, cur: Cursor, note_reader: notes.Reader | None = None,
            state: bool = True, reach: int | None = None) -> int:
    """The alerts and dispositions found so far, reaching cur.next_seq; with the State (det.sync()) if state."""
    alerts, det.found = det.found, []
    disps, det.dispositions = det.dispositions, []
    if state:
        det.sync()
    for d in disps:
        if d.note_digest and note_reader is not None:
            d.note = note_reader.get(d.note_digest)
    store.commit(alerts, cur if state else None, disps, reach=reach or cur.next_seq)
    _count(alerts, disps)
    for a in alerts:
        sys.stdout.buffer.write(msgspec.json.encode(a) + b"\n")
    sys.stdout.flush()
    return len(alerts)


def show_alerts(args) -> int:
    store = Store(args.store, readonly=True)
    try:
        alerts = [a for a in store.all() if args.type is None or a.type == args.type]
        log = store.disposition_log()
        reach = store.reach()
    finally:
        store.close()
    if args.dispositions:                     # the audit trail, in journal order
        for d in log:
            sys.stdout.buffer.write(msgspec.json.encode(d) + b"\n")
        return 0
    history: dict[str, list] = {}
    for d in log:
        history.setdefault(d.alert, []).append(msgspec.structs.asdict(d))
    if args.json:
        for a in alerts:
            row = msgspec.structs.asdict(a)
            if a.id in history:
                row["dispositions"] = history[a.id]
            sys.stdout.buffer.write(msgspec.json.encode(row) + b"\n")
        return 0
    from engine.journal_tool import format_time
    print(f"{'id':<30} {'type':<20} {'sev':<6} {'time':<30} {'owner':<16} {'acct':<8} {'sym':>4} {'evid':>4} "
          f"disposition")
    for a in alerts:
        last = history.get(a.id, [{}])[-1]
        note = "" if not last.get("note_digest") else \
            f"  ({last['note'] if last.get('note') is not None else 'note not found: ' + last['note_digest']})"
        print(f"{a.id:<30} {a.type:<20} {a.severity:<6} {format_time(a.ts_ns):<30} {a.owner:<16} "
              f"{','.join(map(str, a.accounts)):<8} {a.symbol:>4} {len(a.evidence):>4} "
              f"{last.get('disposition', 'open')}{note}")
    print(f"{len(alerts)} alerts; the commands before seq {reach or 1} read", file=sys.stderr)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("path", metavar="JOURNAL_PATH|alerts",
                   help="the journal to read; `alerts` lists the store's alerts (a journal named so: ./alerts)")
    p.add_argument("--config", help="the server's config: [surveillance] and the journal's key")
    p.add_argument("--store", required=True, help="the alert store's directory (LMDB, not the journal's)")
    p.add_argument("--from-seq", type=int, help="a new store starts at this command seq (default 1)")
    p.add_argument("--until-seq", type=int, help="stop after this command seq")
    p.add_argument("--follow", action="store_true",
                   help="then poll for new records until SIGTERM/SIGINT (the cursor is stored: a restart resumes)")
    p.add_argument("--type", help="alerts: only this type (wash_trade, spoofing, excessive_messaging)")
    p.add_argument("--json", action="store_true", help="alerts: JSON lines (with each alert's dispositions)")
    p.add_argument("--dispositions", action="store_true", help="alerts: the dispositions' audit trail, JSON lines")
    p.add_argument("--metrics-port", type=int,
                   help="serve Prometheus counters per alert type and disposition on 127.0.0.1:PORT")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    if args.path == "alerts":
        return show_alerts(args)
    if args.config is None:
        print("trading-engine surveil: --config FILE (the server's config) is needed", file=sys.stderr)
        return 2
    return surveil(args)
