# Market data from the engine's event buffer: per-symbol trade rings, the symbols a
# batch touched, and the encoders of the TOP_OF_BOOK / DEPTH / TRADES frames.
# engine/feeds.py calls collect() once per processing batch, after its journal commit
# and before the events are cleared; every per-event step is here, in C. What is sent
# to whom (subscriptions, conflation of slow connections) is engine/feeds.py.
#
# Hot-module directives (setup.py): a symbol index comes from an Event (checked
# against max_symbols below before use) or from a Python caller (checked in each def
# by _symbol); ring positions are taken modulo `ring`; frame buffers are fixed-size
# arrays sized for the largest frame (MAX_DEPTH_LEVELS per side, TRADES_PER_FRAME
# trades), and the counts written are clamped to those sizes first.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.string cimport memset, memcmp
from cpython.bytes cimport PyBytes_FromStringAndSize

from protocol.cdefs cimport *
from engine.core cimport Engine, Level, LadderEntry, LADDER_BIDS, LADDER_ASKS

cimport numpy as cnp
import numpy as np

from protocol import wire
from protocol.records import COMMAND

cnp.import_array()

TRADE_DTYPE = wire.TRADE_ENTRY.dtype

cdef enum:
    HDR = 8                   # sizeof(FrameHeader); checked at import below
    TRADES_PER_FRAME = 84     # (MAX_FRAME - HDR - sizeof(TradesHeader)) // sizeof(TradeEntry)
    DEPTH_BUF = 2560          # >= HDR + sizeof(DepthHeader) + 2 * MAX_DEPTH_LEVELS * sizeof(LevelEntry)
    TRADES_BUF = 4096         # MAX_FRAME
    TOP_FRAME = 72            # HDR + sizeof(TopOfBook)

if sizeof(FrameHeader) != HDR or \
        TRADES_PER_FRAME != (MAX_FRAME - HDR - sizeof(TradesHeader)) // sizeof(TradeEntry) or \
        DEPTH_BUF < HDR + sizeof(DepthHeader) + 2 * MAX_DEPTH_LEVELS * sizeof(LevelEntry) or <int>TRADES_BUF != <int>MAX_FRAME or \
        TOP_FRAME != HDR + sizeof(TopOfBook):
    raise ImportError("engine.marketdata: frame size constants disagree with protocol/wire.py")

TRADES_PER_FRAME_ = TRADES_PER_FRAME


cdef inline void put_header(uint8_t* p, Py_ssize_t length, uint8_t msg_type) noexcept:
    cdef FrameHeader* h = <FrameHeader*>p
    h.length = <uint16_t>length
    h.msg_type = msg_type
    h.version = SCHEMA_VERSION
    h.reserved = 0


cdef inline bint changes_book(uint8_t kind) noexcept:
    """Events that can change a symbol's public book, state or last price (the others --
    rejects, STP notices, mass-cancel totals, risk bookkeeping, marks -- cannot)."""
    return kind == EV_ACCEPTED or kind == EV_FILL or kind == EV_CANCELLED or kind == EV_TRIGGERED or \
        kind == EV_REPLACED or kind == EV_RESTATED or kind == EV_SYMBOL_STATE or kind == EV_BREAKER


cdef inline void fill_top(Engine eng, uint32_t sym, TopOfBook* tb) noexcept:
    cdef int32_t ladder = <int32_t>sym * 4 + LADDER_BIDS
    cdef int32_t n = eng.ladders[ladder].count
    cdef Level* lv
    memset(tb, 0, sizeof(TopOfBook))
    tb.symbol = sym
    tb.state = eng.syms[sym].state
    if n > 0:
        lv = &eng.levels[eng.ladders[ladder].ent[n - 1].level]
        tb.bid_price = lv.price
        tb.bid_qty = lv.shown
        tb.bid_orders = <uint32_t>lv.count
    ladder = <int32_t>sym * 4 + LADDER_ASKS
    n = eng.ladders[ladder].count
    if n > 0:
        lv = &eng.levels[eng.ladders[ladder].ent[n - 1].level]
        tb.ask_price = lv.price
        tb.ask_qty = lv.shown
        tb.ask_orders = <uint32_t>lv.count
    if eng.syms[sym].has_last:
        tb.last_price = eng.syms[sym].last


cdef inline int32_t put_levels(Engine eng, int32_t ladder, int32_t levels, uint8_t side, LevelEntry* out) noexcept:
    """The best `levels` levels of a ladder into out[], best first; returns how many."""
    cdef LadderEntry* ent = eng.ladders[ladder].ent
    cdef int32_t pos = eng.ladders[ladder].count - 1, k = 0
    cdef Level* lv
    while pos >= 0 and k < levels:
        lv = &eng.levels[ent[pos].level]
        memset(&out[k], 0, sizeof(LevelEntry))
        out[k].price = lv.price
        out[k].qty = lv.shown
        out[k].orders = <uint32_t>lv.count
        out[k].side = side
        pos -= 1
        k += 1
    return k


cdef class MarketData:
    """Trade rings and per-batch market-data frames for every symbol id < max_symbols."""
    cdef readonly int32_t max_symbols
    cdef readonly int64_t ring
    cdef readonly object trades_arr, total_arr, watched_arr, top_arr, sum_arr, count_arr, mark_arr, dirty_arr
    cdef TradeEntry* trades       # [max_symbols][ring]
    cdef int64_t* total           # per symbol: trades ever recorded (ring position = total % ring)
    cdef uint8_t* watched         # per symbol: MdFlag bits some connection wants (engine/feeds.py sets it)
    cdef TopOfBook* last_top      # per symbol: the last TOP_OF_BOOK encoded, seq zeroed
    cdef TradeSummary* b_sum      # per symbol: this batch's trades, summarised (watched symbols only)
    cdef int64_t* b_count         # per symbol: this batch's trades (watched symbols only)
    cdef uint8_t* mark            # per symbol: already in dirty[]
    cdef uint32_t* dirty          # the watched symbols this batch touched
    cdef readonly Py_ssize_t n_dirty
    cdef readonly uint64_t batch_seq
    """Sequence of the last command of the batch given to collect()."""

    def __cinit__(self, int32_t max_symbols, int64_t ring):
        if max_symbols < 1 or ring < 1:
            raise ValueError("max_symbols and ring must be >= 1")
        self.max_symbols, self.ring = max_symbols, ring
        self.trades_arr = np.zeros((max_symbols, ring), dtype=TRADE_DTYPE)
        self.total_arr = np.zeros(max_symbols, dtype=np.int64)
        self.watched_arr = np.zeros(max_symbols, dtype=np.uint8)
        self.top_arr = np.zeros(max_symbols, dtype=wire.TOP_OF_BOOK.dtype)
        self.sum_arr = np.zeros(max_symbols, dtype=wire.TRADE_SUMMARY.dtype)
        self.count_arr = np.zeros(max_symbols, dtype=np.int64)
        self.mark_arr = np.zeros(max_symbols, dtype=np.uint8)
        self.dirty_arr = np.zeros(max_symbols, dtype=np.uint32)
        self.trades = <TradeEntry*>cnp.PyArray_DATA(self.trades_arr)
        self.total = <int64_t*>cnp.PyArray_DATA(self.total_arr)
        self.watched = <uint8_t*>cnp.PyArray_DATA(self.watched_arr)
        self.last_top = <TopOfBook*>cnp.PyArray_DATA(self.top_arr)
        self.b_sum = <TradeSummary*>cnp.PyArray_DATA(self.sum_arr)
        self.b_count = <int64_t*>cnp.PyArray_DATA(self.count_arr)
        self.mark = <uint8_t*>cnp.PyArray_DATA(self.mark_arr)
        self.dirty = <uint32_t*>cnp.PyArray_DATA(self.dirty_arr)

    cdef inline uint32_t _symbol(self, uint32_t sym) except 0:
        if sym == 0 or sym >= <uint32_t>self.max_symbols:
            raise ValueError(f"symbol {sym} outside 1..{self.max_symbols - 1}")
        return sym

    def collect(self, Engine eng, cnp.ndarray cmds not None):
        """Record the batch's trades (cmds: its commands, for receive times) in the rings and
        find the watched symbols its events touched. Returns how many (dirty_symbols())."""
        if cmds.dtype != COMMAND.dtype or not cmds.flags.c_contiguous or cmds.ndim != 1:
            raise TypeError("cmds must be a 1-D contiguous COMMAND array")
        cdef const Command* c = <const Command*>cnp.PyArray_DATA(cmds)
        cdef Py_ssize_t nc = cmds.shape[0], i
        cdef uint64_t first = c[0].seq if nc else 0
        cdef uint64_t k
        cdef const Event* e
        cdef uint32_t sym
        cdef TradeEntry* t
        cdef TradeSummary* sm
        for i in range(self.n_dirty):
            sym = self.dirty[i]
            self.mark[sym] = 0
            self.b_count[sym] = 0
        self.n_dirty = 0
        self.batch_seq = c[nc - 1].seq if nc else 0
        for i in range(eng.ev_count):
            e = &eng.ev_buf[i]
            sym = e.symbol
            if sym == 0 or sym >= <uint32_t>self.max_symbols or not changes_book(e.kind):
                continue
            if e.kind == EV_FILL:
                t = &self.trades[<int64_t>sym * self.ring + self.total[sym] % self.ring]
                memset(t, 0, sizeof(TradeEntry))
                t.trade_id = e.trade_id
                t.price = e.price
                t.qty = e.qty
                t.side = e.side                       # the taker's (aggressor's) side
                t.seq = e.seq
                k = e.seq - first
                if e.seq >= first and k < <uint64_t>nc:
                    t.ts_ns = c[k].ts_ns
                self.total[sym] += 1
            if self.watched[sym] == 0:
                continue
            if not self.mark[sym]:
                self.mark[sym] = 1
                self.dirty[self.n_dirty] = sym
                self.n_dirty += 1
            if e.kind == EV_FILL:
                sm = &self.b_sum[sym]
                if self.b_count[sym] == 0:
                    memset(sm, 0, sizeof(TradeSummary))
                    sm.symbol = sym
                    sm.first_trade_id = e.trade_id
                    sm.high = sm.low = e.price
                sm.count += 1
                sm.last_trade_id = e.trade_id
                sm.volume += e.qty
                if e.price > sm.high:
                    sm.high = e.price
                if e.price < sm.low:
                    sm.low = e.price
                sm.last_price = e.price
                sm.seq = e.seq
                self.b_count[sym] += 1
        return self.n_dirty

    def dirty_symbols(self):
        """The watched symbols the last collect() found touched, in first-touched order."""
        return [self.dirty[i] for i in range(self.n_dirty)]

    def batch_trades(self, uint32_t sym):
        """How many trades the last collect() recorded for a dirty watched symbol."""
        return self.b_count[self._symbol(sym)] if self.mark[sym] else 0

    def batch_summary(self, uint32_t sym):
        """(count, first_trade_id, last_trade_id, volume, high, low, last_price, seq) of the last
        collect()'s trades of `sym`, or None without trades."""
        if not self.mark[self._symbol(sym)] or self.b_count[sym] == 0:
            return None
        cdef TradeSummary* sm = &self.b_sum[sym]
        return (sm.count, sm.first_trade_id, sm.last_trade_id, sm.volume, sm.high, sm.low, sm.last_price, sm.seq)

    def encode_top(self, Engine eng, uint32_t sym, uint64_t seq, bint force=False):
        """A TOP_OF_BOOK frame of the symbol's current book, or None when neither side's best
        level, the state nor the last price changed since the last one encoded (unless force)."""
        self._symbol(sym)
        if sym >= <uint32_t>eng.max_symbols:
            raise ValueError(f"symbol {sym} outside the engine")
        cdef uint8_t buf[TOP_FRAME]
        cdef TopOfBook* tb = <TopOfBook*>(buf + HDR)
        fill_top(eng, sym, tb)
        if not force and memcmp(tb, &self.last_top[sym], sizeof(TopOfBook)) == 0:
            return None
        self.last_top[sym] = tb[0]
        tb.seq = seq
        put_header(buf, TOP_FRAME, MSG_TOP_OF_BOOK)
        return PyBytes_FromStringAndSize(<char*>buf, TOP_FRAME)

    def encode_depth(self, Engine eng, uint32_t sym, int32_t levels, uint64_t seq):
        """A DEPTH frame: the best `levels` (clamped to 1..MAX_DEPTH_LEVELS) levels per side."""
        self._symbol(sym)
        if sym >= <uint32_t>eng.max_symbols:
            raise ValueError(f"symbol {sym} outside the engine")
        levels = max(1, min(levels, MAX_DEPTH_LEVELS))
        cdef uint8_t buf[DEPTH_BUF]
        cdef DepthHeader* dh = <DepthHeader*>(buf + HDR)
        cdef LevelEntry* ent = <LevelEntry*>(buf + HDR + sizeof(DepthHeader))
        memset(dh, 0, sizeof(DepthHeader))
        dh.symbol = sym
        dh.levels = <uint16_t>levels
        dh.state = eng.syms[sym].state
        dh.seq = seq
        dh.bid_count = <uint16_t>put_levels(eng, <int32_t>sym * 4 + LADDER_BIDS, levels, SIDE_BUY, ent)
        dh.ask_count = <uint16_t>put_levels(eng, <int32_t>sym * 4 + LADDER_ASKS, levels, SIDE_SELL,
                                            ent + dh.bid_count)
        cdef Py_ssize_t length = HDR + sizeof(DepthHeader) + (dh.bid_count + dh.ask_count) * sizeof(LevelEntry)
        put_header(buf, length, MSG_DEPTH)
        return PyBytes_FromStringAndSize(<char*>buf, length)

    def encode_trades(self, uint32_t sym, uint64_t seq):
        """TRADES frames (up to TRADES_PER_FRAME prints each) of the last collect()'s trades of
        `sym`; b"" without trades, None if the batch printed more than the ring keeps (send
        its batch_summary() instead)."""
        self._symbol(sym)
        cdef int64_t n = self.b_count[sym] if self.mark[sym] else 0
        if n == 0:
            return b""
        if n > self.ring:
            return None
        cdef list parts = []
        cdef uint8_t buf[TRADES_BUF]
        cdef TradesHeader* th = <TradesHeader*>(buf + HDR)
        cdef TradeEntry* ent = <TradeEntry*>(buf + HDR + sizeof(TradesHeader))
        cdef int64_t pos = self.total[sym] - n, j, k
        cdef TradeEntry* row = &self.trades[<int64_t>sym * self.ring]
        cdef Py_ssize_t length
        while n > 0:
            k = min(n, <int64_t>TRADES_PER_FRAME)
            memset(th, 0, sizeof(TradesHeader))
            th.symbol = sym
            th.count = <uint16_t>k
            th.seq = seq
            for j in range(k):
                ent[j] = row[(pos + j) % self.ring]
            length = HDR + sizeof(TradesHeader) + k * sizeof(TradeEntry)
            put_header(buf, length, MSG_TRADES)
            parts.append(PyBytes_FromStringAndSize(<char*>buf, length))
            pos += k
            n -= k
        return b"".join(parts)

    def recent(self, uint32_t sym, Py_ssize_t n=0):
        """The last n trade prints of `sym` (n <= 0: all kept), oldest first, as a TRADE_DTYPE copy."""
        self._symbol(sym)
        cdef int64_t total = self.total[sym]
        cdef int64_t kept = min(total, self.ring)
        if n <= 0 or n > kept:
            n = kept
        idx = np.arange(total - n, total, dtype=np.int64) % self.ring
        return self.trades_arr[sym][idx]

    def kept(self, uint32_t sym):
        return min(self.total[self._symbol(sym)], self.ring)

    # -- snapshots --

    def export_state(self):
        """The rings, for the server's snapshot (views, not copies)."""
        return {"md.trades": self.trades_arr, "md.total": self.total_arr}

    def import_state(self, state):
        """Load rings saved by export_state(); a snapshot without them (older) or from a server
        with another max_symbols leaves the rings empty; another ring size keeps the newest prints."""
        if "md.trades" not in state or "md.total" not in state:
            return False
        trades, total = state["md.trades"], state["md.total"]
        if trades.dtype != TRADE_DTYPE or trades.shape[0] != self.max_symbols or total.shape != (self.max_symbols,):
            return False
        old_ring = trades.shape[1]
        if old_ring == self.ring:
            self.trades_arr[...] = trades
            self.total_arr[...] = total
            return True
        for sym in np.nonzero(total)[0]:
            t = int(total[sym])
            keep = min(t, old_ring, self.ring)
            idx = np.arange(t - keep, t, dtype=np.int64)
            self.trades_arr[sym][idx % self.ring] = trades[sym][idx % old_ring]
            self.total_arr[sym] = t
        return True
