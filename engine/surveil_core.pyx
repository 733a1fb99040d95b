"""The surveillance loop's per-event bookkeeping in C++: surveillance.Detectors(native=True) feeds it.

It reads the journal's fixed-layout records (protocol.records COMMAND and EVENT, as the journal decodes
them: numpy arrays over the record's bytes) and keeps in C++ containers what every event touches: the
live orders, each side's resting quantity per price (the best price for spoofing's "away"), wash's
recent orders per owner and symbol (the opposite-orders scan), and excessive messaging's windows (each
account's message and trade times, its open episode). The rest stays in engine/surveillance.py's Python
detectors and their State, called for what is rarer: each FILL's detectors (wash's same-owner fill, the
owners' fills for spoofing and layering, momentum, the close, large positions), a cancel that can be a
spoof or a layer, a finding (the alert is built by the same Python code as on the plain path), the close,
LIMIT_SET, STP_PREVENTED and dispositions.

The order of operations and of the alerts is the plain path's (engine/surveillance.py feed): per command
in seq order, wash's pending findings of the previous command flushed, the command itself (the close,
its message), then its events. The windows are pruned with the same binary search (bisect_left), so times
that go back leave the same state as on the plain path. export() writes this state into the State in
the cursor's msgspec form, and Core(det) reads it back from det.s: a restart resumes exactly
(tests/test_surveillance_more.py compares both paths' alerts and whole state after every chunk).

Hot directives (setup.py: no bounds/wraparound checks): the records are read through pointers within
the arrays' lengths (the loop bounds); the deques are indexed below their sizes (the binary searches'
bounds); Python lists are indexed only with non-negative indices known in range.
"""
from cython.operator cimport dereference as deref, preincrement as inc
cimport numpy as cnp
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

from protocol.cdefs cimport (Command, Event, CMD_NEW_ORDER, CMD_CANCEL, CMD_AMEND, CMD_MASS_CANCEL,
                             CMD_END_OF_DAY, EV_ACCEPTED, EV_CANCELLED, EV_FILL, EV_REPLACED, EV_TRIGGERED,
                             EV_LIMIT_SET, EV_STP_PREVENTED, EV_ALERT_DISPOSITION, CXL_USER, CXL_MASS_CANCEL,
                             OT_LIMIT, OT_STOP_LIMIT, SIDE_BUY)

import numpy as np

from protocol.records import COMMAND, EVENT

cnp.import_array()

cdef int64_t MS = 1000000
cdef int64_t DAY_NS = 86400 * 1000000000
cdef int64_t NO_UNTIL = 0x7fffffffffffffff


cdef int64_t _NO_RECORD = 0


cdef const void* _records(cnp.ndarray arr, object dtype, str what) except NULL:
    """The records of a COMMAND or EVENT array, after checking it is one (an empty one: a pointer never read)."""
    if arr.dtype != dtype or not arr.flags.c_contiguous or arr.ndim != 1:
        raise TypeError(f"{what} must be a 1-D contiguous array of protocol.records.{what.upper()[:len(what) - 1]}.dtype")
    cdef const void* data = cnp.PyArray_DATA(arr)
    return data if data != NULL else <const void*>&_NO_RECORD


cdef inline Py_ssize_t _bisect_ts(deque[int64_t]& d, int64_t x) noexcept:
    """bisect.bisect_left(d, x), the same probes (so an unsorted window is cut as the plain path cuts it)."""
    cdef Py_ssize_t lo = 0, hi = <Py_ssize_t>d.size(), mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if d[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline Py_ssize_t _bisect_rows(deque[Row]& d, int64_t x) noexcept:
    """bisect.bisect_left(rows, [x]) over [ts, ...] rows: a row is below [x] when its ts is."""
    cdef Py_ssize_t lo = 0, hi = <Py_ssize_t>d.size(), mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if d[mid].ts < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline void _pop_front_ts(deque[int64_t]& d, Py_ssize_t n) noexcept:
    while n > 0:
        d.pop_front()
        n -= 1


# _rows_list copies the windows' rows as 6 int64 each
assert sizeof(Recent) == sizeof(FillRow) == sizeof(Aggr) == 6 * sizeof(int64_t)


cdef list _rows_list(deque[Row]& rows):
    """A window's rows as State keeps them, [[ts, ...], ...] (each Row is 6 int64 fields in State's order)."""
    cdef Py_ssize_t i, n = <Py_ssize_t>rows.size()
    arr = np.empty((n, 6), dtype=np.int64)
    cdef int64_t[:, ::1] v = arr
    for i in range(n):
        memcpy(&v[i, 0], &rows[i], sizeof(Row))
    return arr.tolist()


cdef list _times_list(deque[int64_t]& times):
    cdef Py_ssize_t i, n = <Py_ssize_t>times.size()
    arr = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] v = arr
    for i in range(n):
        v[i] = times[i]
    return arr.tolist()


cdef inline list _order_list(Order* o):
    """The order as the plain path's State keeps it (its spoof and layering detectors read it)."""
    return [o.account, o.symbol, o.side, o.price, o.qty, o.leaves, o.filled, o.ts, o.seq, o.on_book, o.away,
            o.otype]


cdef class Core:
    def __init__(self, det):
        """The detectors' C++ part for det (a surveillance.Detectors), from det.s (a new or a stored state)."""
        cdef Order o
        cdef Recent r
        cdef cmap[int64_t, int64_t]* lv
        cdef deque[Recent]* rows
        cdef deque[int64_t]* times
        cdef FillRow f
        cdef Aggr g
        cdef Ignition ig
        self.det = det
        self.wash_pending = det.wash_pending
        s = det.s
        self.large, self.close_trades, self.close_ref = s.large, s.close_trades, s.close_ref
        sv = det.sv
        self.large_on, self.wash_on, self.spoof_on = sv.large.enabled, sv.wash.enabled, sv.spoofing.enabled
        self.layering_on, self.msg_on, self.close_on = sv.layering.enabled, sv.messaging.enabled, sv.close.enabled
        self.spoof_min_qty, self.min_away = sv.spoofing.min_qty, sv.spoofing.min_away
        self.wash_window_ns, self.cancel_ns = sv.wash.window_ms * MS, sv.layering.cancel_ms * MS
        self.msg_window_ns, self.max_messages = sv.messaging.window_ms * MS, sv.messaging.max_messages
        self.min_messages, self.max_order_to_trade = sv.messaging.min_messages, sv.messaging.max_order_to_trade
        self.close_tod = -1 if det.close_tod is None else det.close_tod
        self.momentum_on, self.fill_keep = sv.momentum.enabled, det.fill_keep
        self.momo_window_ns, self.reversal_ns = sv.momentum.window_ms * MS, sv.momentum.reversal_ms * MS
        self.min_trades, self.momo_min_qty = sv.momentum.min_trades, sv.momentum.min_qty
        self.min_move_bps, self.close_window_ns = sv.momentum.min_move_bps, sv.close.window_ms * MS
        for oid, x in s.orders.items():
            (o.account, o.symbol, o.side, o.price, o.qty, o.leaves, o.filled, o.ts, o.seq, o.on_book, o.away,
             o.otype) = x
            self.orders[oid] = o
        for key, prices in s.levels.items():
            lv = &self.levels[key]                   # (an empty side is kept, as the plain path keeps it)
            for p, q in prices.items():
                deref(lv)[p] = q
        for key, lst in s.recent.items():
            name, sym = key.rsplit("|", 1)
            okey = (<int64_t>det.owner_id(name) << 32) | int(sym)
            rows = &self.recent[okey]
            for r.ts, r.side, r.price, r.order_id, r.account, r.seq in lst:
                rows.push_back(r)
                self.recent_at[okey][r.price * 4 + r.side].push_back(r)
        for acct, lst in s.msgs.items():
            times = &self.msgs[acct]
            for t in lst:
                times.push_back(t)
        for acct, lst in s.trades.items():
            times = &self.trades[acct]
            for t in lst:
                times.push_back(t)
        for acct, t in s.msg_episode.items():
            self.msg_episode[acct] = t
        for key, lst in s.fills.items():
            name, sym = key.rsplit("|", 1)
            okey = (<int64_t>det.owner_id(name) << 32) | int(sym)
            for f.ts, f.side, f.order_id, f.price, f.qty, f.seq in lst:
                self.fills[okey].push_back(f)
        for key, lst in s.aggr.items():
            name, sym = key.rsplit("|", 1)
            okey = (<int64_t>det.owner_id(name) << 32) | int(sym)
            for g.ts, g.side, g.price, g.qty, g.order_id, g.seq in lst:
                self.aggr[okey].push_back(g)
        for key, x in s.ignition.items():
            name, sym = key.rsplit("|", 1)
            (ig.side, ig.start, ig.ts, ig.from_price, ig.to_price, ig.trades, ig.qty, ig.first_seq,
             ig.seq) = x
            self.ignition[(<int64_t>det.owner_id(name) << 32) | int(sym)] = ig

    def export(self, state):
        """This part of the detectors' state into state (surveillance.State), as the plain path keeps it (the
        windows' rows through numpy: tolist makes their ints in C, several times faster than one by one)."""
        cdef unordered_map[int64_t, Order].iterator oi = self.orders.begin()
        cdef unordered_map[int64_t, cmap[int64_t, int64_t]].iterator li = self.levels.begin()
        cdef cmap[int64_t, int64_t].iterator pi
        cdef unordered_map[int64_t, deque[Recent]].iterator ri = self.recent.begin()
        cdef unordered_map[int64_t, deque[int64_t]].iterator ti
        cdef unordered_map[int64_t, int64_t].iterator ei = self.msg_episode.begin()
        cdef unordered_map[int64_t, deque[int64_t]]* times
        cdef unordered_map[int64_t, deque[FillRow]].iterator fi = self.fills.begin()
        cdef unordered_map[int64_t, deque[Aggr]].iterator gi = self.aggr.begin()
        cdef unordered_map[int64_t, Ignition].iterator ii = self.ignition.begin()
        cdef Ignition* ig
        orders = {}
        while oi != self.orders.end():
            orders[deref(oi).first] = _order_list(&deref(oi).second)
            inc(oi)
        levels = {}
        while li != self.levels.end():
            prices = levels[deref(li).first] = {}
            pi = deref(li).second.begin()
            while pi != deref(li).second.end():
                prices[deref(pi).first] = deref(pi).second
                inc(pi)
            inc(li)
        recent = {}
        while ri != self.recent.end():
            recent[self.key_name(deref(ri).first)] = _rows_list(deref(ri).second)
            inc(ri)
        state.orders, state.levels, state.recent = orders, levels, recent
        for name in ("msgs", "trades"):
            times = &self.msgs if name == "msgs" else &self.trades
            out = {}
            ti = times.begin()
            while ti != times.end():
                out[deref(ti).first] = _times_list(deref(ti).second)
                inc(ti)
            setattr(state, name, out)
        episodes = {}
        while ei != self.msg_episode.end():
            episodes[deref(ei).first] = deref(ei).second
            inc(ei)
        state.msg_episode = episodes
        fills = {}
        while fi != self.fills.end():
            fills[self.key_name(deref(fi).first)] = _rows_list(deref(fi).second)
            inc(fi)
        aggr = {}
        while gi != self.aggr.end():
            aggr[self.key_name(deref(gi).first)] = _rows_list(deref(gi).second)
            inc(gi)
        ignition = {}
        while ii != self.ignition.end():
            ig = &deref(ii).second
            ignition[self.key_name(deref(ii).first)] = [ig.side, ig.start, ig.ts, ig.from_price, ig.to_price,
                                                        ig.trades, ig.qty, ig.first_seq, ig.seq]
            inc(ii)
        state.fills, state.aggr, state.ignition = fills, aggr, ignition

    cdef str key_name(self, int64_t key):
        """owner index << 32 | symbol as State's key, "owner|symbol"."""
        return f"{self.det.owner_names[key >> 32]}|{key & 0xffffffff}"

    def fills_of(self, int64_t owner, int64_t symbol):
        """The owner's (owner index) fills in the symbol, as State.fills keeps them (spoofing, layering)."""
        cdef unordered_map[int64_t, deque[FillRow]].iterator fi = self.fills.find((owner << 32) | symbol)
        return [] if fi == self.fills.end() else _rows_list(deref(fi).second)

    # -- the stream --
    def feed(self, cnp.ndarray cmds not None, cnp.ndarray events not None, int64_t next_seq, until_seq):
        """Commands (and their events) with next_seq <= seq <= until_seq; the next seq to read (as
        surveillance.Detectors.feed)."""
        cdef const Command* c = <const Command*>_records(cmds, COMMAND.dtype, "commands")
        cdef const Event* ev = <const Event*>_records(events, EVENT.dtype, "events")
        cdef Py_ssize_t nc = cmds.shape[0], ne = events.shape[0], lo = 0, hi, k, ei = 0
        cdef int64_t until = NO_UNTIL if until_seq is None else until_seq
        cdef int64_t seq, ts
        cdef int kind
        cdef const Command* cmd
        while lo < nc and <int64_t>c[lo].seq < next_seq:
            lo += 1
        hi = lo
        while hi < nc and <int64_t>c[hi].seq <= until:
            hi += 1
        if hi <= lo:
            return next_seq
        det = self.det
        for k in range(lo, hi):
            cmd = &c[k]
            seq, ts, kind = <int64_t>cmd.seq, <int64_t>cmd.ts_ns, cmd.kind
            if self.wash_pending:                   # the previous command's wash findings: one alert per owner
                det.flush_wash()
            if self.close_on and (kind == CMD_END_OF_DAY or (self.close_tod >= 0 and ts % DAY_NS >= self.close_tod)):
                det.close_command(kind, cmd.symbol, seq, ts)
            if self.msg_on and (kind == CMD_NEW_ORDER or kind == CMD_CANCEL or kind == CMD_AMEND
                                or kind == CMD_MASS_CANCEL):
                self.message(cmd.account, seq, ts)
            while ei < ne and <int64_t>ev[ei].seq < seq:      # (an event of no command: never acted on)
                ei += 1
            while ei < ne and <int64_t>ev[ei].seq == seq:
                kind = ev[ei].kind
                if kind == EV_CANCELLED:
                    self.cancelled(&ev[ei])
                elif kind == EV_ACCEPTED:
                    self.accepted(&ev[ei], cmd.order_type)
                elif kind == EV_FILL:
                    self.fill(&ev[ei])
                elif kind == EV_ALERT_DISPOSITION:
                    det.disposition(ev[ei].reason, ev[ei].order_id, ev[ei].qty, ev[ei].side, cmd.operator, seq, ts,
                                    ev[ei].price, ev[ei].leaves)
                else:
                    self.other_event(&ev[ei], cmd.order_type)
                ei += 1
        if self.wash_pending:
            det.flush_wash()
        return <int64_t>c[hi - 1].seq + 1

    # -- events --
    cdef int accepted(self, const Event* e, int64_t otype) except -1:
        """An ACCEPTED event: large_order, the order and its level, wash's opposite orders."""
        cdef int64_t sym = e.symbol, acct = e.account, side = e.side, oid = <int64_t>e.order_id
        cdef int64_t price = e.price, qty = e.qty, seq = <int64_t>e.seq, ts = <int64_t>e.ts_ns, best, q
        cdef int64_t away = 0
        cdef cmap[int64_t, int64_t]* lv
        cdef cmap[int64_t, int64_t].iterator pi
        cdef unordered_map[int64_t, cmap[int64_t, int64_t]].iterator li
        cdef deque[Recent]* rows
        cdef deque[Recent]* same
        cdef unordered_map[int64_t, deque[Recent]]* at
        cdef unordered_map[int64_t, deque[Recent]].iterator ai
        cdef Recent* r
        cdef Py_ssize_t i, n
        cdef int64_t okey
        cdef Order o
        if self.large_on:
            large = self.det.s.large
            if large:
                lim = large.get(sym)
                if lim and lim[0] and qty > lim[0]:
                    self.det.large_order(acct, sym, side, oid, price, qty, lim[0], seq, ts)
        if qty >= self.spoof_min_qty:           # only a large order can be a spoof: judge "away" for it alone
            li = self.levels.find(sym * 4 + side)
            if li != self.levels.end() and not deref(li).second.empty():
                if side == SIDE_BUY:
                    best = deref(deref(li).second.rbegin()).first
                    away = price <= best - self.min_away
                else:
                    best = deref(deref(li).second.begin()).first
                    away = price >= best + self.min_away
        o.account, o.symbol, o.side, o.price, o.qty, o.leaves, o.filled = acct, sym, side, price, qty, qty, 0
        o.ts, o.seq, o.on_book, o.away, o.otype = ts, seq, otype == OT_LIMIT, away, otype
        self.orders[oid] = o
        if otype == OT_LIMIT:
            lv = &self.levels[sym * 4 + side]
            pi = lv.find(price)
            q = (deref(pi).second if pi != lv.end() else 0) + qty
            if q > 0:
                deref(lv)[price] = q
            elif pi != lv.end():
                lv.erase(pi)
        if self.wash_on and (otype == OT_LIMIT or otype == OT_STOP_LIMIT):
            okey = self.owner_key(acct, sym)
            rows, at = &self.recent[okey], &self.recent_at[okey]
            n = _bisect_rows(deref(rows), ts - self.wash_window_ns)
            while n > 0:                        # the window's start: the same rows leave recent_at
                r = &rows.front()
                ai = at.find(r.price * 4 + r.side)
                deref(ai).second.pop_front()
                if deref(ai).second.empty():
                    at.erase(ai)
                rows.pop_front()
                n -= 1
            # the first (in recent's order) opposite order at this price still live: the plain path's scan of
            # every row with side != this side (the sides are 1 and 2) and this price
            ai = at.find(price * 4 + 3 - side)
            if ai != at.end():
                same = &deref(ai).second
                for i in range(<Py_ssize_t>same.size()):
                    r = &deref(same)[i]
                    if self.orders.count(r.order_id):
                        self.det.wash_opposite(r.ts, r.order_id, r.account, r.seq, oid, acct, sym, price, seq, ts)
                        break
            rows.push_back(Recent(ts, side, price, oid, acct, seq))
            deref(at)[price * 4 + side].push_back(Recent(ts, side, price, oid, acct, seq))
        return 0

    cdef int cancelled(self, const Event* e) except -1:
        """A CANCELLED event: the order and its level; a cancel by its owner may end a spoof or a layer."""
        cdef int64_t oid = <int64_t>e.order_id, ts = <int64_t>e.ts_ns, q
        cdef unordered_map[int64_t, Order].iterator it = self.orders.find(oid)
        cdef cmap[int64_t, int64_t]* lv
        cdef cmap[int64_t, int64_t].iterator pi
        cdef unordered_map[int64_t, deque[FillRow]].iterator fi
        cdef Order o
        if it == self.orders.end():
            return 0
        o = deref(it).second
        self.orders.erase(it)
        if o.on_book:
            lv = &self.levels[<int64_t>e.symbol * 4 + o.side]
            pi = lv.find(o.price)
            q = (deref(pi).second if pi != lv.end() else 0) - o.leaves
            if q > 0:
                deref(lv)[o.price] = q
            elif pi != lv.end():
                lv.erase(pi)
        if e.reason == CXL_USER or e.reason == CXL_MASS_CANCEL:
            if self.spoof_on and o.qty >= self.spoof_min_qty:
                self.det.spoof(oid, _order_list(&o), <int64_t>e.seq, ts)
            if self.layering_on:                # only after a trade of the owner within cancel_ms
                fi = self.fills.find(self.owner_key(o.account, o.symbol))
                if fi != self.fills.end() and not deref(fi).second.empty() \
                        and ts - deref(fi).second.back().ts <= self.cancel_ns:
                    self.det.layering(oid, _order_list(&o), <int64_t>e.seq, ts)
        return 0

    cdef int fill(self, const Event* e) except -1:
        """A FILL: both orders and their levels, messaging's trade times, then (as the plain path's fill) wash's
        same-owner fill, the owners' fills, momentum, the close's trades, large positions."""
        cdef int64_t acct = e.account, other = e.other_account, ts = <int64_t>e.ts_ns, sym = e.symbol
        cdef int64_t side = e.side, oid = <int64_t>e.order_id, other_oid = <int64_t>e.other_order_id
        cdef int64_t price = e.price, qty = e.qty, seq = <int64_t>e.seq, mine, theirs, n, j
        cdef deque[FillRow]* rows
        self.reduce(oid, qty, e.leaves)
        self.reduce(other_oid, qty, e.other_leaves)
        if self.msg_on:
            self.trades[acct].push_back(ts)
            if other != acct:
                self.trades[other].push_back(ts)
        mine, theirs = self.owner_of(acct), self.owner_of(other)
        if self.wash_on and mine == theirs:
            self.det.wash_fill(acct, other, sym, oid, other_oid, price, qty, seq, ts)
        if self.spoof_on or self.layering_on:
            for j in range(2):
                rows = &self.fills[((mine if j == 0 else theirs) << 32) | sym]
                n = _bisect_rows(deref(rows), ts - self.fill_keep)
                while n > 0:
                    rows.pop_front()
                    n -= 1
                if j == 0:
                    rows.push_back(FillRow(ts, side, oid, price, qty, seq))
                else:
                    rows.push_back(FillRow(ts, 3 - side, other_oid, price, qty, seq))
        if self.momentum_on:
            self.momentum(acct, other, mine, theirs, sym, side, price, qty, oid, seq, ts)
        if self.close_on:
            self.close_trade(sym, price, qty, acct, side, seq, ts)
        if self.large_on and self.large and sym in self.large:
            self.det.large_position(acct, other, sym, side, price, qty, seq, ts)
        return 0

    cdef int momentum(self, int64_t taker, int64_t maker, int64_t taker_owner, int64_t maker_owner, int64_t sym,
                      int64_t side, int64_t price, int64_t qty, int64_t oid, int64_t seq, int64_t ts) except -1:
        """Momentum ignition at a fill (as surveillance.Detectors.momentum): a reversal of either party's owner's
        run, then the taker's owner's aggressive fills in the window and its run."""
        cdef unordered_map[int64_t, Ignition].iterator it
        cdef unordered_map[int64_t, deque[Aggr]].iterator gi
        cdef deque[Aggr]* rows
        cdef Aggr* g
        cdef Aggr* first = NULL
        cdef Ignition ig
        cdef Ignition* run
        cdef int64_t k, a, sd, n, trades = 0, total = 0, move
        cdef Py_ssize_t i, j
        for j in range(2):                      # a reversal: any trade on the other side
            a, sd = (taker, side) if j == 0 else (maker, 3 - side)
            k = ((taker_owner if j == 0 else maker_owner) << 32) | sym
            it = self.ignition.find(k)
            if it == self.ignition.end():
                continue
            ig = deref(it).second
            if ts - ig.ts > self.reversal_ns:
                self.ignition.erase(it)
            elif sd != ig.side:
                self.ignition.erase(it)
                order_ids = []
                gi = self.aggr.find(k)
                if gi != self.aggr.end():
                    for i in range(<Py_ssize_t>deref(gi).second.size()):
                        g = &deref(gi).second[i]
                        if g.side == ig.side and g.ts >= ig.start:
                            order_ids.append(g.order_id)
                self.det.momentum_reversal(a, sym, [ig.side, ig.start, ig.ts, ig.from_price, ig.to_price, ig.trades,
                                                    ig.qty, ig.first_seq, ig.seq], order_ids, sd, price, qty, seq, ts)
        k = (taker_owner << 32) | sym
        rows = &self.aggr[k]
        n = _bisect_rows(deref(rows), ts - self.momo_window_ns)
        while n > 0:
            rows.pop_front()
            n -= 1
        rows.push_back(Aggr(ts, side, price, qty, oid, seq))
        for i in range(<Py_ssize_t>rows.size()):       # the run: the window's fills on this side
            g = &deref(rows)[i]
            if g.side == side:
                if first == NULL:
                    first = g
                trades += 1
                total += g.qty
        if trades < self.min_trades or total < self.momo_min_qty:
            return 0
        move = (price - first.price) if side == SIDE_BUY else (first.price - price)
        if move * 10000 >= self.min_move_bps * first.price:
            it = self.ignition.find(k)
            if it == self.ignition.end() or deref(it).second.side != side:
                self.ignition[k] = Ignition(side, first.ts, ts, first.price, price, trades, total, first.seq, seq)
            else:                               # the run goes on (through a pointer: Cython compiles an
                run = &deref(it).second         # augmented assignment to deref(it).x on a copy)
                run.ts, run.to_price, run.seq = ts, price, seq
                run.trades += 1
                run.qty += qty
        return 0

    cdef int close_trade(self, int64_t sym, int64_t price, int64_t qty, int64_t taker, int64_t side, int64_t seq,
                         int64_t ts) except -1:
        """The symbol's trades in the closing window (State.close_trades, a Python list: the close reads it)."""
        cdef list lst = self.close_trades.get(sym)
        cdef Py_ssize_t lo = 0, hi, mid
        cdef int64_t x = ts - self.close_window_ns
        if lst is None:
            lst = self.close_trades[sym] = []
        hi = len(lst)
        while lo < hi:                          # bisect.bisect_left(lst, [x])
            mid = (lo + hi) >> 1
            if <int64_t>(<list>lst[mid])[0] < x:
                lo = mid + 1
            else:
                hi = mid
        if lo:
            self.close_ref[sym] = (<list>lst[lo - 1])[1]
            del lst[:lo]
        lst.append([ts, price, qty, taker, side, seq])
        return 0

    cdef int reduce(self, int64_t oid, int64_t qty, int64_t leaves) except -1:
        cdef unordered_map[int64_t, Order].iterator it = self.orders.find(oid)
        cdef Order* o
        if it == self.orders.end():
            return 0
        o = &deref(it).second
        o.filled += qty
        o.leaves = leaves
        if o.on_book:
            self.level_add(o.symbol, o.side, o.price, -qty)
        if leaves <= 0:
            self.orders.erase(it)
        return 0

    cdef int level_add(self, int64_t symbol, int64_t side, int64_t price, int64_t qty) except -1:
        cdef cmap[int64_t, int64_t]* lv = &self.levels[symbol * 4 + side]
        cdef cmap[int64_t, int64_t].iterator pi = lv.find(price)
        cdef int64_t q = (deref(pi).second if pi != lv.end() else 0) + qty
        if q > 0:
            deref(lv)[price] = q
        elif pi != lv.end():
            lv.erase(pi)
        return 0

    cdef int other_event(self, const Event* e, int64_t otype) except -1:
        """REPLACED and TRIGGERED (the book); LIMIT_SET and STP_PREVENTED go to the Python detectors."""
        cdef unordered_map[int64_t, Order].iterator it
        cdef Order* o
        cdef int kind = e.kind
        if kind == EV_REPLACED or kind == EV_TRIGGERED:
            it = self.orders.find(<int64_t>e.order_id)
            if it == self.orders.end():
                return 0
            o = &deref(it).second
            if kind == EV_REPLACED:
                if o.on_book:
                    self.level_add(e.symbol, o.side, o.price, -o.leaves)
                    self.level_add(e.symbol, o.side, e.price, e.leaves)
                o.price, o.leaves = e.price, e.leaves
            elif o.otype == OT_STOP_LIMIT:
                o.on_book = 1
                self.level_add(e.symbol, o.side, o.price, o.leaves)
        elif kind == EV_LIMIT_SET or kind == EV_STP_PREVENTED:
            self.det.event((e.kind, e.side, e.reason, e.symbol, e.account, e.other_account, e.order_id,
                            e.other_order_id, e.price, e.qty, e.leaves, e.other_leaves, e.seq, e.ts_ns, e.flags),
                           otype)
        return 0

    # -- excessive messaging --
    cdef int message(self, int64_t acct, int64_t seq, int64_t ts) except -1:
        """One order-entry message of acct: its window (as surveillance.Detectors.message)."""
        cdef int64_t start = ts - self.msg_window_ns, n, t
        cdef deque[int64_t]* msgs = &self.msgs[acct]
        cdef deque[int64_t]* trades
        cdef unordered_map[int64_t, int64_t].iterator last
        cdef bint breach
        _pop_front_ts(deref(msgs), _bisect_ts(deref(msgs), start + 1))
        msgs.push_back(ts)
        trades = &self.trades[acct]
        _pop_front_ts(deref(trades), _bisect_ts(deref(trades), start + 1))
        n, t = <int64_t>msgs.size(), <int64_t>trades.size()
        breach = n > self.max_messages or (n >= self.min_messages and n > self.max_order_to_trade * t)
        last = self.msg_episode.find(acct)
        if breach:
            if last == self.msg_episode.end():
                self.det.msg_alert(acct, n, t, deref(msgs)[0], seq, ts)
            self.msg_episode[acct] = ts
        elif last != self.msg_episode.end() and ts - deref(last).second > self.msg_window_ns:
            self.msg_episode.erase(last)
        return 0

    # -- owners --
    cdef int64_t owner_key(self, int64_t acct, int64_t symbol) except -1:
        """owner index << 32 | symbol: the windows' key (State's "owner|symbol")."""
        return (self.owner_of(acct) << 32) | symbol

    cdef int64_t owner_of(self, int64_t acct) except -1:
        """The account's owner index (det.owner_index, cached)."""
        cdef unordered_map[int64_t, int64_t].iterator it = self.acct_owner.find(acct)
        cdef int64_t i
        if it == self.acct_owner.end():
            i = self.det.owner_index(acct)
            self.acct_owner[acct] = i
            return i
        return deref(it).second
