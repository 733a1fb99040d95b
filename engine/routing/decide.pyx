"""The router's decision in C (engine/ROUTING.md "Speed"): the hot part of routing a client order.

What it holds:
- the venues' shown books, one preallocated array per field indexed [symbol slot, venue, side,
  level] (engine/routing/book.py ConsolidatedBook writes each depth snapshot here as well as into
  its dicts, which serve the consolidated market data);
- the split: a merge of the usable venues' ladders (venue up, trading the symbol) cheapest all-in
  price first -- a buy's price x (10000 + taker bps), a sell's proceeds price x (10000 - taker
  bps), in 128-bit integers -- ties to the lower rank (the monitor's score order), within the
  client's limit. book.allocate is the slow, obviously correct reference it must equal
  (tests/test_routing_split.py compares them over seeded random books);
- the open journal batch: RouteInput / RouteOutput records (protocol/records.py, their structs
  generated into protocol/cdefs.pxd) packed into preallocated buffers, and per venue the frames to
  write to it, so that a flush is one LMDB put of one bytes object and one write per venue;
- a client's NEW_ORDER taken whole (new_orders): the frame read in place from the session's buffer,
  router.py _check_new's checks (symbol rules by slot), the split, the children, the ACCEPTED
  report and every record of the order, with no Python object per order, for the orders that are
  accepted and routed at once (the common case); anything else stops it and goes to the Python path.

What it reads of the router's state: the next child client order id per venue (State's numpy
array, shared), and the counters new_orders is handed. It changes no state but that array, which
new_orders advances past each child it emits (as _apply_child would): the router applies every
record it emits through its one path (router.py apply_input / apply_output and their helpers), live
and in replay; for new_orders' orders once their children are written (Router.settle).

Invariants that make the unchecked indexing below safe (bounds, wraparound and initialization checks
are off in the functions so decorated, as in the other hot modules by setup.py): a slot is
< n_slots and a venue in 1..n_venues (the router maps symbols to slots and numbers its venues;
Python-facing methods check both); a level index is < nlev <= n_levels; every write into a batch
buffer follows _room, which grows the buffer first.
"""
cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.string cimport memcpy, memset
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from posix.time cimport CLOCK_REALTIME, clock_gettime, timespec

import numpy as np

from protocol.cdefs cimport (CMD_NEW_ORDER, ExecReport, FrameHeader, NewOrder, RouteInput, RouteOutput,
                             MSG_ACCEPTED, MSG_NEW_ORDER, OT_LIMIT, OT_MARKET, RIN_CLIENT_ORDER,
                             ROUT_CHILD_ORDER, ROUT_CLIENT_REPORT, ROUT_PARENT, SCHEMA_VERSION, SIDE_BUY,
                             SIDE_SELL, TIF_DAY, TIF_FOK, TIF_GTC, TIF_IOC)

cdef extern from *:
    ctypedef long long i128 "__int128"     # all-in prices: price (int64) x (10000 +- bps) needs 128 bits

DEF MAX_VENUES = 64                         # engine/routing/config.py refuses more
cdef int64_t BPS = 10000
cdef int64_t NEW_ORDER_FRAME = sizeof(FrameHeader) + sizeof(NewOrder)     # 72 bytes
cdef int64_t BODY = 96                      # RouteInput.body / RouteOutput.body, bytes


cdef class Split:
    def __init__(self, int n_venues, int n_levels, int n_slots, taker_bps, next_clid):
        """taker_bps: venue -> taker fee (basis points); next_clid: the router State's int64 array
        [venue] of next child client order ids (read at each split, never written here)."""
        if not 1 <= n_venues <= MAX_VENUES or n_levels < 1 or n_slots < 0:
            raise ValueError(f"1..{MAX_VENUES} venues, levels >= 1 ({n_venues}, {n_levels})")
        self.n_venues, self.n_levels, self.n_slots = n_venues, n_levels, n_slots
        slots = max(n_slots, 1)
        self.px = np.zeros((slots, n_venues + 1, 2, n_levels), dtype=np.int64)
        self.qt = np.zeros((slots, n_venues + 1, 2, n_levels), dtype=np.int64)
        self.nlev = np.zeros((slots, n_venues + 1, 2), dtype=np.int32)
        self.vsym = np.full((slots, n_venues + 1), -1, dtype=np.int64)
        self.taker = np.zeros(n_venues + 1, dtype=np.int64)
        cdef int v
        for v, bps in taker_bps.items():
            self.taker[v] = bps
        self.rank = np.full(n_venues + 1, -1, dtype=np.int64)
        if next_clid.dtype != np.uint64 or len(next_clid) != n_venues + 1:
            raise ValueError("next_clid: uint64 array [venue]")
        self.next_clid = next_clid
        self.out = np.zeros((n_venues + 1, 4), dtype=np.uint64)
        self._ibuf = np.zeros(64 * sizeof(RouteInput), dtype=np.uint8)
        self._obuf = np.zeros(256 * sizeof(RouteOutput), dtype=np.uint8)
        self._vbuf = np.zeros((n_venues + 1, 64 * NEW_ORDER_FRAME), dtype=np.uint8)
        self._meta = np.zeros((256, 6), dtype=np.uint64)
        self.ibuf, self.obuf, self.vbuf, self.meta = self._ibuf, self._obuf, self._vbuf, self._meta
        self.vpos = np.zeros(n_venues + 1, dtype=np.int64)
        self._fast = np.zeros((64, 4), dtype=np.uint64)
        self.fast = self._fast
        self.sym_slot = np.full(1, -1, dtype=np.int32)       # set_symbols: until then no order is taken in C
        self.rule = np.ones((max(n_slots, 1), 4), dtype=np.int64)

    # -- BOOKS (from the venues' depth, the monitor's rank; not on the order path) --
    def update(self, Py_ssize_t slot, int venue, bids, asks):
        """A venue's depth snapshot: sequences of (price, qty, orders) per level, best first; levels
        beyond n_levels are not kept (the router subscribes to n_levels)."""
        self._check(slot, venue)
        cdef int side, k
        for side, levels in ((0, bids), (1, asks)):
            k = 0
            for level in levels:
                if k == self.n_levels:
                    break
                self.px[slot, venue, side, k] = level[0]
                self.qt[slot, venue, side, k] = level[1]
                k += 1
            self.nlev[slot, venue, side] = k

    def drop(self, int venue):
        """A venue went down: its books are empty."""
        self._check(0, venue)
        cdef Py_ssize_t s
        for s in range(self.nlev.shape[0]):
            self.nlev[s, venue, 0] = 0
            self.nlev[s, venue, 1] = 0

    def set_rank(self, dict rank):
        """venue -> tie-break order among the venues up (lower first); a venue absent is not used."""
        cdef int v
        for v in range(self.n_venues + 1):
            self.rank[v] = -1
        for v, r in rank.items():
            self._check(0, v)
            self.rank[v] = r

    def set_listing(self, int venue, dict slot_vsym):
        """slot -> the venue's symbol id, for the symbols the venue trades (its earlier listing is replaced)."""
        self._check(0, venue)
        cdef Py_ssize_t s
        for s in range(self.vsym.shape[0]):
            self.vsym[s, venue] = -1
        for s, vs in slot_vsym.items():
            self._check(s, venue)
            self.vsym[s, venue] = vs

    def usable(self, Py_ssize_t slot):
        """How many venues are up and trade the symbol."""
        self._check(slot, 1)
        cdef int v, n = 0
        for v in range(1, self.n_venues + 1):
            n += self.rank[v] >= 0 and self.vsym[slot, v] >= 0
        return n

    def _check(self, Py_ssize_t slot, int venue):
        if not 0 <= slot < self.n_slots or not 0 <= venue <= self.n_venues:
            raise IndexError(f"symbol slot {slot} or venue {venue} out of range")

    # -- THE SPLIT --
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.initializedcheck(False)
    cdef int _walk(self, Py_ssize_t slot, int side, int64_t qty, int64_t limit, bint has_limit) noexcept nogil:
        """Split qty over the usable venues' levels, cheapest all-in first (ties: lower rank):
        out[0:n] = (venue, 0, qty, worst price) in the order the venues were first taken from,
        self.left = what no level within the limit could take; returns n."""
        cdef int64_t pos[MAX_VENUES + 1]
        cdef int64_t end[MAX_VENUES + 1]
        cdef int64_t took[MAX_VENUES + 1]
        cdef int64_t worst[MAX_VENUES + 1]
        cdef int64_t fee[MAX_VENUES + 1]
        cdef int first[MAX_VENUES + 1]
        cdef bint buy = side == SIDE_BUY
        cdef int s = 1 if buy else 0            # a buy takes asks, a sell bids
        cdef int nv = self.n_venues, v, best, n = 0, k
        cdef int64_t price, take, left = qty
        cdef i128 key, best_key = 0
        for v in range(1, nv + 1):
            pos[v] = 0
            took[v] = 0
            end[v] = self.nlev[slot, v, s] if self.rank[v] >= 0 and self.vsym[slot, v] >= 0 else 0
            fee[v] = BPS + self.taker[v] if buy else BPS - self.taker[v]
        while left > 0:
            best = 0
            for v in range(1, nv + 1):
                if pos[v] >= end[v]:
                    continue
                price = self.px[slot, v, s, pos[v]]
                if has_limit and ((buy and price > limit) or (not buy and price < limit)):
                    end[v] = pos[v]              # levels are best first: the rest are beyond it too
                    continue
                key = <i128>price * fee[v]
                if not buy:
                    key = -key                   # the highest proceeds first
                if best == 0 or key < best_key or (key == best_key and self.rank[v] < self.rank[best]):
                    best, best_key = v, key
            if best == 0:
                break
            take = self.qt[slot, best, s, pos[best]]
            if take > left:
                take = left
            if take > 0:
                if took[best] == 0:
                    first[n] = best
                    n += 1
                took[best] += take
                worst[best] = self.px[slot, best, s, pos[best]]
                left -= take
            pos[best] += 1
        for k in range(n):
            v = first[k]
            self.out[k, 0] = v
            self.out[k, 1] = 0
            self.out[k, 2] = <uint64_t>took[v]      # > 0
            self.out[k, 3] = <uint64_t>worst[v]     # a shown price: > 0
        self.left = left
        return n

    def route(self, Py_ssize_t slot, int side, int64_t qty, int64_t limit, bint has_limit):
        """The split alone: [(venue, qty, worst price)] (tests compare it with book.allocate)."""
        self._check(slot, 1)
        cdef int n = self._walk(slot, side, qty, limit, has_limit)
        return [(int(self.out[k, 0]), int(self.out[k, 2]), int(self.out[k, 3])) for k in range(n)]

    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.initializedcheck(False)
    cdef void _emit(self, Py_ssize_t slot, int n, int side, uint8_t tif, uint32_t account, uint64_t seq,
                    uint64_t parent, int64_t recv_ns, bint advance) noexcept:
        """The last walk's n children, each a LIMIT `tif` at the worst price taken at its venue: its
        NEW_ORDER frame queued for the venue, its CHILD_ORDER record in the batch, out[k, 1] its client
        order id (the venue's next; advance: that next moved past it). The caller made _room for n."""
        cdef RouteOutput* rec
        cdef FrameHeader* h
        cdef NewOrder* o
        cdef uint8_t* f
        cdef int k, v
        for k in range(n):
            v = <int>self.out[k, 0]
            self.out[k, 1] = self.next_clid[v]
            if advance:
                self.next_clid[v] += 1
            f = &self.vbuf[v, 0] + self.vpos[v]
            memset(f, 0, NEW_ORDER_FRAME)
            h = <FrameHeader*>f
            h.length = NEW_ORDER_FRAME
            h.msg_type = MSG_NEW_ORDER
            h.version = SCHEMA_VERSION
            o = <NewOrder*>(f + sizeof(FrameHeader))
            o.client_order_id = self.out[k, 1]
            o.symbol = <uint32_t>self.vsym[slot, v]
            o.side = side
            o.order_type = OT_LIMIT
            o.tif = tif
            o.price = <int64_t>self.out[k, 3]
            o.qty = <int64_t>self.out[k, 2]
            rec = <RouteOutput*>(&self.obuf[0] + self.n_out * sizeof(RouteOutput))
            memset(rec, 0, sizeof(RouteOutput))
            rec.kind = ROUT_CHILD_ORDER
            rec.msg_type = MSG_NEW_ORDER
            rec.venue = v
            rec.account = account
            rec.seq = seq
            rec.parent = parent
            rec.child = self.out[k, 1]
            memcpy(rec.body, o, sizeof(NewOrder))
            self.n_out += 1
            self._meta_row(v, self.out[k, 1], MSG_NEW_ORDER, o.qty, self.vpos[v], recv_ns)
            self.vpos[v] += NEW_ORDER_FRAME

    def children(self, Py_ssize_t slot, int side, int64_t qty, int64_t limit, bint has_limit, uint32_t account,
                 uint64_t seq, uint64_t parent, int64_t recv_ns, uint8_t tif=TIF_IOC, bint all_or_none=False):
        """Split, then per venue taken one child, LIMIT `tif` (IOC or FOK) at the worst price taken
        there: its NEW_ORDER frame queued for the venue and its CHILD_ORDER record in the batch.
        all_or_none: no child at all unless the shown books fill the whole qty within the limit.
        Returns [[venue, client order id, qty, price]] (the router applies each, router.py
        _apply_child, which moves the venue's next client order id past it)."""
        self._check(slot, 1)
        cdef int n = self._walk(slot, side, qty, limit, has_limit), k
        if all_or_none and self.left:
            n = 0
        self._room(0, n, n, NEW_ORDER_FRAME)
        self._emit(slot, n, side, tif, account, seq, parent, recv_ns, False)
        return [[int(self.out[k, 0]), int(self.out[k, 1]), int(self.out[k, 2]), int(self.out[k, 3])]
                for k in range(n)]

    # -- THE CLIENT'S NEW_ORDER --
    def set_symbols(self, dict rules, uint64_t max_clid):
        """rules: slot -> (router symbol id, lot, tick, max qty, max price); max_clid: the highest client
        order id a client may use (wire.MAX_CLIENT_ORDER_ID). A symbol id above 65535 is left to the
        Python path (new_orders stops at it)."""
        self.sym_slot = np.full(min(max([r[0] for r in rules.values()], default=0) + 1, 1 << 16), -1,
                                dtype=np.int32)
        self.rule = np.ones((max(self.n_slots, 1), 4), dtype=np.int64)
        self.max_clid = max_clid
        cdef Py_ssize_t slot, sid
        for slot, (sid, lot, tick, max_qty, max_price) in rules.items():
            self._check(slot, 1)
            if lot < 1 or tick < 1:
                raise ValueError(f"symbol {sid}: lot and tick >= 1")
            if sid < self.sym_slot.shape[0]:
                self.sym_slot[sid] = slot
            self.rule[slot, 0], self.rule[slot, 1] = lot, tick
            self.rule[slot, 2], self.rule[slot, 3] = max_qty, max_price

    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.initializedcheck(False)
    @cython.cdivision(True)        # qty > 0 and price >= 0 where taken modulo, lot and tick >= 1: as Python's
    cdef int _accepts(self, const uint8_t* body, uint64_t last_clid) noexcept nogil:
        """The symbol's slot if a NEW_ORDER body passes every check router.py _check_new makes, else -1
        (the Python path then answers it: the reject, with its code)."""
        cdef const NewOrder* o = <const NewOrder*>body
        cdef int64_t slot
        if o.client_order_id > self.max_clid or o.client_order_id <= last_clid:
            return -1
        if o.symbol >= <uint64_t>self.sym_slot.shape[0]:
            return -1
        slot = self.sym_slot[o.symbol]
        if slot < 0:
            return -1
        if o.side != SIDE_BUY and o.side != SIDE_SELL:
            return -1
        if o.flags or o.display_qty or o.stop_price or o.expire_ts_ns:
            return -1
        if o.order_type != OT_LIMIT and o.order_type != OT_MARKET:
            return -1
        if o.tif != TIF_GTC and o.tif != TIF_DAY and o.tif != TIF_IOC and o.tif != TIF_FOK:
            return -1
        if o.qty <= 0 or o.qty % self.rule[slot, 0] or o.qty > self.rule[slot, 2]:
            return -1
        if (o.order_type == OT_LIMIT and o.price <= 0) or (o.order_type == OT_MARKET and o.price != 0):
            return -1
        if o.price % self.rule[slot, 1] or o.price > self.rule[slot, 3]:
            return -1
        return <int>slot

    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.initializedcheck(False)
    def new_orders(self, bytearray buf not None, Py_ssize_t pos, uint32_t account, uint64_t last_seq,
                   uint64_t next_order_id, uint64_t last_clid, uint64_t report_seq, int64_t recv_ns):
        """A client's read from pos on: every whole NEW_ORDER frame in a row that is accepted and routed
        at once (it passes the checks and the walk places some of it: all of it for a FOK) is taken
        here, each packed as the Python path packs it (router.py decide_new, progress): its
        CLIENT_ORDER input (seq last_seq + 1, ...), the PARENT (order id next_order_id, ...), the
        ACCEPTED report (the account's report seq report_seq + 1, ...) and one child per venue taken,
        IOC (FOK for a FOK), the venue's next client order id advanced. The counters passed in are the
        router's state (settled: no order taken here unapplied) and run on locally. Returns the offset
        of the first frame not taken: another message, an incomplete frame, or an order the Python path
        must answer (a reject, nothing placed). Nothing here makes a Python object per order; the router
        applies the taken orders' records to its state after the children are written (Router.settle,
        through apply_input / apply_output, as a replay does)."""
        cdef Py_ssize_t n = PyByteArray_GET_SIZE(buf)
        cdef const uint8_t* data = <const uint8_t*>PyByteArray_AS_STRING(buf)
        cdef const FrameHeader* h
        cdef const NewOrder* o
        cdef RouteInput* inp
        cdef RouteOutput* rec
        cdef ExecReport* rep
        cdef int slot, k
        cdef bint fok
        cdef timespec now
        cdef uint64_t ts
        while n - pos >= NEW_ORDER_FRAME:
            h = <const FrameHeader*>(data + pos)
            if h.msg_type != MSG_NEW_ORDER or h.length != NEW_ORDER_FRAME or h.version != SCHEMA_VERSION:
                break
            o = <const NewOrder*>(data + pos + sizeof(FrameHeader))
            slot = self._accepts(<const uint8_t*>o, last_clid)
            if slot < 0:
                break
            fok = o.tif == TIF_FOK
            k = self._walk(slot, o.side, o.qty, o.price, o.order_type == OT_LIMIT)
            if k == 0 or (fok and self.left):
                break                          # nothing placed now: a remainder, a post or a wait (Python)
            self._room(1, 2 + k, k, NEW_ORDER_FRAME)
            if self.n_fast == self.fast.shape[0]:
                self._fast = np.concatenate((self._fast, np.zeros_like(self._fast)))
                self.fast = self._fast
            last_seq += 1
            clock_gettime(CLOCK_REALTIME, &now)
            ts = <uint64_t>now.tv_sec * 1000000000 + <uint64_t>now.tv_nsec
            self.fast[self.n_fast, 0] = self.n_in
            self.fast[self.n_fast, 1] = self.n_out
            self.fast[self.n_fast, 2] = 2 + k
            self.fast[self.n_fast, 3] = <uint64_t>self.left
            self.n_fast += 1
            inp = <RouteInput*>(&self.ibuf[0] + self.n_in * sizeof(RouteInput))
            memset(inp, 0, sizeof(RouteInput))
            inp.kind, inp.msg_type, inp.account = RIN_CLIENT_ORDER, MSG_NEW_ORDER, account
            inp.seq, inp.ts_ns = last_seq, ts
            memcpy(inp.body, o, sizeof(NewOrder))
            self.n_in += 1
            rec = <RouteOutput*>(&self.obuf[0] + self.n_out * sizeof(RouteOutput))
            memset(rec, 0, 2 * sizeof(RouteOutput))
            rec.kind, rec.msg_type, rec.account = ROUT_PARENT, MSG_NEW_ORDER, account
            rec.seq, rec.parent = last_seq, next_order_id
            memcpy(rec.body, o, sizeof(NewOrder))
            rec += 1
            report_seq += 1
            rec.kind, rec.msg_type, rec.account = ROUT_CLIENT_REPORT, MSG_ACCEPTED, account
            rec.seq, rec.parent = last_seq, next_order_id
            rep = <ExecReport*>rec.body
            rep.seq = report_seq
            rep.order_id = next_order_id
            rep.client_order_id = o.client_order_id
            rep.symbol = o.symbol
            rep.side = o.side
            rep.price = o.price
            rep.qty = o.qty
            rep.leaves = o.qty
            rep.cmd_kind = CMD_NEW_ORDER
            rep.ts_ns = ts
            self.n_out += 2
            self._emit(slot, k, o.side, TIF_FOK if fok else TIF_IOC, account, last_seq, next_order_id, recv_ns, True)
            last_clid = o.client_order_id
            next_order_id += 1
            pos += NEW_ORDER_FRAME
        return pos

    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.initializedcheck(False)
    def taken(self):
        """The orders new_orders took since the last call, as (input index, first output, outputs,
        quantity left unplaced) in the open batch; and forget them (the router applies them now)."""
        cdef Py_ssize_t i
        rows = [(int(self.fast[i, 0]), int(self.fast[i, 1]), int(self.fast[i, 2]), int(self.fast[i, 3]))
                for i in range(self.n_fast)]
        self.n_fast = 0
        return rows

    def batch_records(self):
        """The open batch's RouteInput records, then its RouteOutput records, as bytes (a copy)."""
        cdef Py_ssize_t ni = self.n_in * sizeof(RouteInput), no = self.n_out * sizeof(RouteOutput)
        records = PyBytes_FromStringAndSize(NULL, ni + no)
        cdef char* dst = PyBytes_AS_STRING(records)
        if ni:
            memcpy(dst, &self.ibuf[0], ni)
        if no:
            memcpy(dst + ni, &self.obuf[0], no)
        return records

    # -- THE BATCH --
    cdef int _room(self, int64_t n_in, int64_t n_out, int64_t frames, int64_t venue_bytes) except -1:
        """Grow (double) whatever buffer could not take n_in inputs, n_out outputs, `frames` frames
        and venue_bytes more bytes for any one venue."""
        cdef int64_t need
        need = (self.n_in + n_in) * sizeof(RouteInput)
        if need > self.ibuf.shape[0]:
            self._ibuf = np.concatenate((self._ibuf, np.zeros(max(need, self.ibuf.shape[0]), dtype=np.uint8)))
            self.ibuf = self._ibuf
        need = (self.n_out + n_out) * sizeof(RouteOutput)
        if need > self.obuf.shape[0]:
            self._obuf = np.concatenate((self._obuf, np.zeros(max(need, self.obuf.shape[0]), dtype=np.uint8)))
            self.obuf = self._obuf
        if self.n_frames + frames > self.meta.shape[0]:
            self._meta = np.concatenate((self._meta, np.zeros((max(frames, self.meta.shape[0]), 6), dtype=np.uint64)))
            self.meta = self._meta
        cdef int v
        need = 0
        for v in range(self.n_venues + 1):
            if self.vpos[v] > need:
                need = self.vpos[v]
        need += venue_bytes
        if need > self.vbuf.shape[1]:
            grown = np.zeros((self.n_venues + 1, max(need, 2 * self.vbuf.shape[1])), dtype=np.uint8)
            grown[:, :self.vbuf.shape[1]] = self._vbuf
            self._vbuf = grown
            self.vbuf = self._vbuf
        return 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.initializedcheck(False)
    cdef void _meta_row(self, uint64_t venue, uint64_t clid, uint64_t msg_type, int64_t qty, int64_t offset,
                        int64_t recv_ns) noexcept:
        cdef Py_ssize_t i = self.n_frames
        self.meta[i, 0] = venue
        self.meta[i, 1] = clid
        self.meta[i, 2] = msg_type
        self.meta[i, 3] = qty
        self.meta[i, 4] = offset
        self.meta[i, 5] = recv_ns
        self.n_frames += 1

    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.initializedcheck(False)
    def add_input(self, uint8_t kind, uint8_t msg_type, uint16_t venue, uint32_t account, uint64_t seq,
                  uint64_t ts_ns, const uint8_t[::1] body):
        """One RouteInput record into the batch (the body zero padded to 96 bytes)."""
        if body.shape[0] > BODY:
            raise ValueError(f"a body of {body.shape[0]} bytes does not fit a record")
        self._room(1, 0, 0, 0)
        cdef RouteInput* rec = <RouteInput*>(&self.ibuf[0] + self.n_in * sizeof(RouteInput))
        memset(rec, 0, sizeof(RouteInput))
        rec.kind, rec.msg_type, rec.venue, rec.account, rec.seq, rec.ts_ns = kind, msg_type, venue, account, seq, ts_ns
        if body.shape[0]:
            memcpy(rec.body, &body[0], body.shape[0])
        self.n_in += 1

    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.initializedcheck(False)
    def add_output(self, uint8_t kind, uint8_t msg_type, uint16_t venue, uint32_t account, uint64_t seq,
                   uint64_t parent, uint64_t child, const uint8_t[::1] body):
        """One RouteOutput record into the batch (the body zero padded to 96 bytes)."""
        if body.shape[0] > BODY:
            raise ValueError(f"a body of {body.shape[0]} bytes does not fit a record")
        self._room(0, 1, 0, 0)
        cdef RouteOutput* rec = <RouteOutput*>(&self.obuf[0] + self.n_out * sizeof(RouteOutput))
        memset(rec, 0, sizeof(RouteOutput))
        rec.kind, rec.msg_type, rec.venue, rec.account, rec.seq = kind, msg_type, venue, account, seq
        rec.parent, rec.child = parent, child
        if body.shape[0]:
            memcpy(rec.body, &body[0], body.shape[0])
        self.n_out += 1

    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.initializedcheck(False)
    def add_frame(self, int venue, uint64_t clid, const uint8_t[::1] frame, int64_t recv_ns=0):
        """A whole frame (header included) to write to `venue` after the commit, about child clid."""
        self._check(0, venue)
        if venue == 0 or frame.shape[0] < <Py_ssize_t>sizeof(FrameHeader):
            raise ValueError("a frame to a venue 1..n")
        self._room(0, 0, 1, frame.shape[0])
        cdef int64_t qty = 0
        if frame[2] == MSG_NEW_ORDER and frame.shape[0] == NEW_ORDER_FRAME:
            qty = (<NewOrder*>(&frame[0] + sizeof(FrameHeader))).qty
        self._meta_row(venue, clid, frame[2], qty, self.vpos[venue], recv_ns)
        memcpy(&self.vbuf[venue, 0] + self.vpos[venue], &frame[0], frame.shape[0])
        self.vpos[venue] += frame.shape[0]

    def venue_frames(self):
        """Per venue 1..n the open batch's bytes to write to it (b"" for none; index 0 unused)."""
        cdef int v
        return [PyBytes_FromStringAndSize(<char*>&self.vbuf[v, 0], self.vpos[v]) if self.vpos[v] else b""
                for v in range(self.n_venues + 1)]

    def frame_rows(self):
        """The open batch's frames to venues: [venue, client order id, msg type, qty, offset in its
        venue's bytes, recv ns] each."""
        return self._meta[:self.n_frames].tolist() if self.n_frames else []

    def clear(self):
        """Empty the open batch (records, frames, and orders not yet taken by taken())."""
        self.n_in = self.n_out = self.n_frames = self.n_fast = 0
        cdef int v
        for v in range(self.n_venues + 1):
            self.vpos[v] = 0

    def take(self):
        """The open batch, and empty it: (records = its RouteInput then its RouteOutput records as one
        bytes object, per venue 1..n the bytes to write (b"" for none), the frames' rows
        [venue, client order id, msg type, qty, offset in its venue's bytes, recv ns])."""
        records, frames, rows = self.batch_records(), self.venue_frames(), self.frame_rows()
        self.clear()
        return records, frames, rows
