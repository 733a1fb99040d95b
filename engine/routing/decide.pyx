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
  write to it, so that a flush is one LMDB put of one bytes object and one write per venue.

What it reads of the router's state: the next child client order id per venue (State's numpy
array, shared). It changes no state: the router applies every record it emits through its one
path (router.py apply_output and its helpers), live and in replay.

Invariants that make the unchecked indexing below safe (bounds, wraparound and initialization checks
are off in the functions so decorated, as in the other hot modules by setup.py): a slot is
< n_slots and a venue in 1..n_venues (the router maps symbols to slots and numbers its venues;
Python-facing methods check both); a level index is < nlev <= n_levels; every write into a batch
buffer follows _room, which grows the buffer first.
"""
cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.string cimport memcpy, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

import numpy as np

from protocol.cdefs cimport (FrameHeader, NewOrder, RouteInput, RouteOutput, MSG_NEW_ORDER, OT_LIMIT,
                             ROUT_CHILD_ORDER, SCHEMA_VERSION, SIDE_BUY, TIF_IOC)

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
    def children(self, Py_ssize_t slot, int side, int64_t qty, int64_t limit, bint has_limit, uint32_t account,
                 uint64_t seq, uint64_t parent, int64_t recv_ns, uint8_t tif=TIF_IOC, bint all_or_none=False):
        """Split, then per venue taken one child, LIMIT `tif` (IOC or FOK) at the worst price taken
        there: its NEW_ORDER frame queued for the venue and its CHILD_ORDER record in the batch.
        all_or_none: no child at all unless the shown books fill the whole qty within the limit.
        Returns [[venue, client order id, qty, price]] (the router applies each, router.py
        _apply_child)."""
        self._check(slot, 1)
        cdef int n = self._walk(slot, side, qty, limit, has_limit), k, v
        if all_or_none and self.left:
            n = 0
        self._room(0, n, n, NEW_ORDER_FRAME)
        cdef RouteOutput* rec
        cdef FrameHeader* h
        cdef NewOrder* o
        cdef uint8_t* f
        for k in range(n):
            v = <int>self.out[k, 0]
            self.out[k, 1] = self.next_clid[v]
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
        return [[int(self.out[k, 0]), int(self.out[k, 1]), int(self.out[k, 2]), int(self.out[k, 3])]
                for k in range(n)]

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

    def take(self):
        """The open batch, and empty it: (records = its RouteInput then its RouteOutput records as one
        bytes object, per venue 1..n the bytes to write (b"" for none), the frames' rows
        [venue, client order id, msg type, qty, offset in its venue's bytes, recv ns])."""
        cdef Py_ssize_t ni = self.n_in * sizeof(RouteInput), no = self.n_out * sizeof(RouteOutput)
        records = PyBytes_FromStringAndSize(NULL, ni + no)
        cdef char* dst = PyBytes_AS_STRING(records)
        if ni:
            memcpy(dst, &self.ibuf[0], ni)
        if no:
            memcpy(dst + ni, &self.obuf[0], no)
        frames = [bytes(self._vbuf[v, :self.vpos[v]]) if self.vpos[v] else b"" for v in range(self.n_venues + 1)]
        rows = self._meta[:self.n_frames].tolist() if self.n_frames else []
        self.n_in = self.n_out = self.n_frames = 0
        for v in range(self.n_venues + 1):
            self.vpos[v] = 0
        return records, frames, rows
