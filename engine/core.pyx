# The matching core: price-time order books for many symbols over preallocated
# numpy arrays. Rules: engine/RULES.md. Layout and entry points: core.pxd.
#
# Hot-module directives (setup.py): boundscheck/wraparound/initializedcheck off.
# What makes that safe: every index used here is a slot, level or ladder index
# produced by this module itself (free lists, ladders, id tables), all sized at
# construction; ids coming from commands (symbol, account) are range-checked
# before use (UNKNOWN_SYMBOL / UNKNOWN_ACCOUNT); validate() checks the links.
#
# Processing order of one command (process_one):
#   1. checks, in the order of RULES.md ("Checks, in order")
#   2. ACCEPTED / REJECTED
#   3. the sweep (execute): fills, iceberg refreshes, self-trade prevention
#   4. the remainder: rest, or cancel (IOC / MARKET / FOK / capacity)
#   5. stop triggers, cascading through the trigger FIFO (run_triggers)
cimport cython
cimport numpy as cnp
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t, uintptr_t
from libc.string cimport memset, memmove, memcpy
from libc.stdlib cimport qsort
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from protocol.cdefs cimport *
from engine.risk cimport Risk, check_order, open_change, ro_count, ro_touch, NO_STRATEGY

import numpy as np

from protocol.records import COMMAND, EVENT, SET_LIMIT_TARGET, EventTuple
from protocol.codes import OrderType, SelfTradePrevention, TimeInForce, CommandKind

cnp.import_array()

# Ladder kinds (LADDER_*): core.pxd.

# Sizes (engine/CAPACITY.md). The id tables have at least TABLE_FACTOR entries per order slot
# (a power of two: load <= 1/3 with every slot live). A ladder's first chunk holds
# LADDER_MIN_CHUNK levels; it doubles when full. Ladder pool segments hold at least
# LADDER_SEGMENT entries (and at least the biggest chunk).
cdef enum:
    TABLE_FACTOR = 3
    DISP_MAX = 0xFFFE       # the largest displacement an id-table entry is given (IdEntry.disp is a uint16)
    LADDER_MIN_CHUNK = 8
    LADDER_SEGMENT = 1 << 16


# Order.flags bit of an order the engine placed to liquidate an account (never on the wire:
# NEW_ORDER's flags are checked against the OrderFlag bits).
cdef enum:
    OFLAG_LIQUIDATION = 0x80

# AMEND.qty that keeps the remaining quantity (protocol/wire.py AMEND_QTY_UNCHANGED)
cdef enum:
    AMEND_QTY_UNCHANGED = -1

# The one client order id never accepted (protocol/wire.py MAX_CLIENT_ORDER_ID is the largest that is).
cdef extern from "<stdint.h>":
    const uint64_t CLID_RESERVED "UINT64_MAX"


cdef inline int64_t stp_key(uint32_t account, int64_t stp_group) noexcept:
    """An account's self-trade key: its STP group's (above 2**32, so never a bare account's), or its own."""
    return (stp_group + (<int64_t>1 << 32)) if stp_group else <int64_t>account


cdef extern from *:
    void prefetch "__builtin_prefetch"(const void* p) noexcept nogil


cdef inline void* _data(object arr) noexcept:
    return cnp.PyArray_DATA(<cnp.ndarray>arr)


def _aligned(Py_ssize_t n, dtype, Py_ssize_t align=128):
    """A 1-D zeroed array of n `dtype` items starting on an `align`-byte boundary. numpy's big
    arrays start 16 bytes into a page, so a 128-byte order slot spanned three cache lines and a
    64-byte id-table block two (perf/RESULTS.md, issue 17 "10M resting")."""
    dtype = np.dtype(dtype)
    buf = np.zeros(n * dtype.itemsize + align, dtype=np.uint8)     # calloc'd: pages cost nothing until written
    cdef Py_ssize_t off = (-<Py_ssize_t><uintptr_t>cnp.PyArray_DATA(buf)) % align
    return buf[off:off + n * dtype.itemsize].view(dtype)


cdef const Command* _commands(cnp.ndarray commands) except NULL:
    """The records of a command array, after checking it is one (every batch entry point)."""
    if commands.dtype != COMMAND.dtype or not commands.flags.c_contiguous or commands.ndim != 1:
        raise TypeError("commands must be a 1-D contiguous array of protocol.records.COMMAND.dtype")
    return <const Command*>_data(commands)

ORDER_DTYPE = np.dtype([
    ("price", "<i8"), ("stop_price", "<i8"), ("qty", "<i8"), ("leaves", "<i8"), ("shown", "<i8"),
    ("display", "<i8"), ("filled", "<i8"), ("expire_ts_ns", "<i8"), ("order_id", "<u8"),
    ("client_order_id", "<u8"), ("next", "<i4"), ("prev", "<i4"), ("level", "<i4"),
    ("acct_next", "<i4"), ("acct_prev", "<i4"), ("tif_next", "<i4"), ("tif_prev", "<i4"),
    ("account", "<u4"), ("symbol", "<u4"), ("strategy", "<u4"), ("side", "u1"), ("order_type", "u1"),
    ("tif", "u1"), ("stp", "u1"), ("flags", "u1"), ("state", "u1"), ("registered", "u1"), ("_pad", "u1"),
])
LEVEL_DTYPE = np.dtype([
    ("price", "<i8"), ("shown", "<i8"), ("total", "<i8"), ("head", "<i4"), ("tail", "<i4"),
    ("count", "<i4"), ("next_free", "<i4"), ("ladder", "<u4"), ("_pad", "<u4"), ("_pad2", "<i8"), ("_pad3", "<i8"),
])
ID_ENTRY_DTYPE = np.dtype([("ref", "<i4"), ("disp", "<u2"), ("tag", "<u2")])
LADDER_ENTRY_DTYPE = np.dtype([("key", "<i8"), ("level", "<i4"), ("_pad", "<i4")])
LADDER_DTYPE = np.dtype([("ent", "<u8"), ("count", "<i4"), ("cap", "<i4")])
SYMBOL_DTYPE = np.dtype([
    ("tick", "<i8"), ("lot", "<i8"), ("max_price", "<i8"), ("max_qty", "<i8"), ("best_bid", "<i8"),
    ("best_ask_key", "<i8"), ("last", "<i8"), ("has_last", "u1"), ("state", "u1"), ("_pad", "u1", (6,)),
])
# the symbol columns a snapshot holds (as "sym.<name>"); best_bid/best_ask_key are derived from the ladders
SYMBOL_STATE_COLUMNS = ("tick", "lot", "max_price", "max_qty", "last", "has_last", "state")
ACCOUNT_DTYPE = np.dtype([
    ("last_clid", "<u8"), ("stp_key", "<i8"), ("head", "<i4"), ("tail", "<i4"), ("open", "<i4"),
    ("defined", "u1"),
])

# The sizes the C structs must have (checked by tests against the dtypes).
SIZEOF_ORDER = sizeof(Order)
SIZEOF_LEVEL = sizeof(Level)
SIZEOF_ID_ENTRY = sizeof(IdEntry)
SIZEOF_LADDER = sizeof(Ladder)
SIZEOF_LADDER_ENTRY = sizeof(LadderEntry)
SIZEOF_SYMBOL = sizeof(Symbol)
SIZEOF_COMMAND = sizeof(Command)
SIZEOF_EVENT = sizeof(Event)


cdef inline uint64_t mix64(uint64_t x) noexcept:
    # splitmix64 finalizer: a bijection, so distinct ids never collide before masking
    x ^= x >> 30
    x *= <uint64_t>0xbf58476d1ce4e5b9ULL
    x ^= x >> 27
    x *= <uint64_t>0x94d049bb133111ebULL
    x ^= x >> 31
    return x


cdef inline uint64_t oid_hash(uint64_t order_id) noexcept:
    # The spill table's (the direct map, oid_direct, holds the others). Order ids are assigned
    # 1, 2, 3, ...: sixteen consecutive ids share one block of the table, and the blocks are
    # placed by a mix. Not the identity: ids one table size apart would share a home, and once
    # the ids wrap onto a dense block of long-resting orders every insert shifted the whole run
    # (80x slower, perf/RESULTS.md 2026-12-04 "One engine, bigger").
    return (mix64((order_id >> 4) ^ <uint64_t>0x9e3779b97f4a7c15ULL) << 4) | (order_id & 15)


cdef inline uint64_t clid_hash(uint32_t account, uint64_t clid) noexcept:
    # Client order ids rise per account. Sixteen consecutive ids of one account
    # share one 64-byte line of the table (a block at a mixed position), so an
    # account's add/cancel traffic stays in few cache lines; ids spaced apart
    # land in unrelated blocks, so no choice of ids builds long probe runs.
    return (mix64((clid >> 4) ^ mix64(<uint64_t>account + <uint64_t>0x9e3779b97f4a7c15ULL)) << 4) | (clid & 15)


cdef inline uint16_t id_tag(uint64_t h) noexcept:
    # A key's tag from its hash (oid_hash, clid_hash): the mix's bits 44-59 (above any table's home
    # bits) xor its low bits (which hold the id's place in its block of 16, so the keys of one
    # block, which share the mix, get distinct tags)
    return <uint16_t>((h >> 48) ^ h)


cdef inline int64_t min64(int64_t a, int64_t b) noexcept:
    return a if a < b else b


cdef inline bint stp_mode_valid(uint8_t m) noexcept:
    return STP_CANCEL_NEWEST <= m <= STP_NONE


cdef inline bint can_rest(uint8_t tif) noexcept:
    return tif == TIF_GTC or tif == TIF_DAY or tif == TIF_GTD


# qsort of trigger slots by order id: single-threaded, so a module-level pointer is safe.
cdef Order* _sort_orders = NULL

cdef int _cmp_by_order_id(const void* a, const void* b) noexcept nogil:
    cdef uint64_t x = _sort_orders[(<const int32_t*>a)[0]].order_id
    cdef uint64_t y = _sort_orders[(<const int32_t*>b)[0]].order_id
    return (x > y) - (x < y)


cdef inline void set_best(Symbol* sy, int32_t kind, int64_t key) noexcept:
    """The symbol record's copy of a book ladder's best (last) key (LADDER_BIDS or LADDER_ASKS)."""
    if kind == LADDER_BIDS:
        sy.best_bid = key
    else:
        sy.best_ask_key = key


cdef inline void _fnv(uint64_t* h, uint64_t v) noexcept:
    h[0] = (h[0] ^ mix64(v)) * <uint64_t>0x100000001b3ULL


@cython.final
cdef class Engine:
    """A multi-symbol price-time matching core. See engine/RULES.md."""

    def __cinit__(self, int32_t max_orders=1 << 16, int32_t max_accounts=1024, int32_t max_symbols=64,
                  int32_t max_levels=4096, Py_ssize_t event_capacity=1 << 14, int32_t max_level_slots=0):
        if max_orders < 1 or max_accounts < 2 or max_symbols < 2 or max_levels < 1 or max_level_slots < 0:
            raise ValueError("capacities must be positive (accounts and symbols >= 2: id 0 is never valid)")
        if max_orders >= (1 << 30) or max_levels >= (1 << 30):
            raise ValueError("max_orders and max_levels must be below 2**30")
        self.max_orders = max_orders
        self.max_accounts = max_accounts
        self.max_symbols = max_symbols
        self.max_levels = max_levels
        cdef int64_t nladders = <int64_t>max_symbols * 4
        # Every level holds at least one order, and every ladder at most max_levels: a bigger pool is
        # never used. 0: that bound (the pool never runs out before the order slots do).
        cdef int64_t bound = min(<int64_t>max_orders, nladders * max_levels)
        self.max_level_slots = <int32_t>(min(<int64_t>max_level_slots, bound) if max_level_slots else bound)

        # Order and level slots are handed out lowest first (then the released ones are reused), so
        # the arrays are never written above their high-water marks: untouched pages cost no memory.
        self.orders_arr = _aligned(max_orders, ORDER_DTYPE)
        self.levels_arr = _aligned(self.max_level_slots, LEVEL_DTYPE)
        self.ladders_arr = _aligned(nladders, LADDER_DTYPE)
        self.ladder_segments = []
        cdef uint64_t tsize = 16
        while tsize < <uint64_t>max_orders * TABLE_FACTOR:
            tsize <<= 1
        self.table_mask = tsize - 1
        self.oid_table_arr = _aligned(tsize, ID_ENTRY_DTYPE)
        self.clid_table_arr = _aligned(tsize, ID_ENTRY_DTYPE)
        tsize = 16
        while tsize < <uint64_t>max_orders:
            tsize <<= 1
        self.oid_direct_mask = tsize - 1
        self.oid_direct_arr = _aligned(tsize, np.int32)
        self.queue_arr = np.zeros(max_orders, dtype=np.int32)
        self.sym_arr = _aligned(max_symbols, SYMBOL_DTYPE)
        self.acct_arr = np.zeros(max_accounts, dtype=ACCOUNT_DTYPE)
        self.events_arr = np.zeros(max(event_capacity, 64), dtype=EVENT.dtype)

        self.orders = <Order*>_data(self.orders_arr)
        self.levels = <Level*>_data(self.levels_arr)
        self.ladders = <Ladder*>_data(self.ladders_arr)
        self.oid_direct = <int32_t*>_data(self.oid_direct_arr)
        self.oid_table = <IdEntry*>_data(self.oid_table_arr)
        self.clid_table = <IdEntry*>_data(self.clid_table_arr)
        self.queue = <int32_t*>_data(self.queue_arr)
        self.syms = <Symbol*>_data(self.sym_arr)
        self._bind_columns()
        self.ev_buf = <Event*>_data(self.events_arr)
        self.ev_cap = len(self.events_arr)
        self.ev_count = 0

        cdef int32_t i
        self.free_head = -1
        self.level_free_head = -1
        for i in range(32):
            self.chunk_free[i] = NULL
        self.seg_ent = NULL
        self.seg_used = self.seg_size = 0
        for i in range(max_accounts):
            self.acct_head[i] = -1
            self.acct_tail[i] = -1
        self.day_head = self.day_tail = self.gtd_head = self.gtd_tail = -1
        self.next_order_id = 1
        self.next_trade_id = 1

    def _bind_columns(self):
        # Per-account columns are strided views of a structured array; copy them into contiguous
        # column arrays so C sees plain vectors. (Per-symbol state stays one record a symbol.)
        self.acct_arr = {name: np.zeros(self.max_accounts, dtype=self.acct_arr.dtype[name])
                         for name in self.acct_arr.dtype.names}
        self.acct_last_clid = <uint64_t*>_data(self.acct_arr["last_clid"])
        self.acct_stp_key = <int64_t*>_data(self.acct_arr["stp_key"])
        self.acct_head = <int32_t*>_data(self.acct_arr["head"])
        self.acct_tail = <int32_t*>_data(self.acct_arr["tail"])
        self.acct_open = <int32_t*>_data(self.acct_arr["open"])
        self.acct_defined = <uint8_t*>_data(self.acct_arr["defined"])

    # -- CONFIGURATION --

    def add_symbol(self, uint32_t symbol, int64_t tick_size=1, int64_t lot_size=1,
                   int64_t max_price=(1 << 62), int64_t max_qty=(1 << 62)):
        """Define a symbol (ids 1 .. max_symbols-1). Prices/quantities are in its integer units."""
        if symbol == 0 or symbol >= <uint32_t>self.max_symbols:
            raise ValueError(f"symbol id {symbol} outside 1..{self.max_symbols - 1}")
        if tick_size <= 0 or lot_size <= 0 or max_price <= 0 or max_qty <= 0:
            raise ValueError("tick_size, lot_size, max_price and max_qty must be positive")
        self.syms[symbol].tick = tick_size
        self.syms[symbol].lot = lot_size
        self.syms[symbol].max_price = max_price
        self.syms[symbol].max_qty = max_qty
        if self.syms[symbol].state == 0:
            self.syms[symbol].state = SYM_TRADING

    def add_account(self, uint32_t account, uint32_t stp_group=0):
        """Define an account (ids 1 .. max_accounts-1); accounts sharing a non-zero STP group never self-trade."""
        if account == 0 or account >= <uint32_t>self.max_accounts:
            raise ValueError(f"account id {account} outside 1..{self.max_accounts - 1}")
        self.acct_defined[account] = 1
        # group keys live above 2**32 so they never equal a bare account key
        self.acct_stp_key[account] = stp_key(account, stp_group)

    # -- ENTRY POINTS --

    cdef int process_one(self, const Command* cmd) except -1:
        """Apply one command; its events are appended to ev_buf[ev_count:]."""
        self.cur = cmd
        cdef uint8_t k = cmd.kind
        cdef Py_ssize_t start = self.ev_count
        if k == CMD_NEW_ORDER:
            self.cmd_new()
        elif k == CMD_CANCEL:
            self.cmd_cancel()
        elif k == CMD_AMEND:
            self.cmd_amend()
        elif k == CMD_MASS_CANCEL:
            self.cmd_mass_cancel()
        elif k == CMD_END_OF_DAY:
            self.cmd_end_of_day()
        elif k == CMD_EXPIRE:
            self.cmd_expire()
        elif k == CMD_HALT:
            self.cmd_symbol_state(SYM_HALTED)
        elif k == CMD_RESUME:
            self.cmd_symbol_state(SYM_TRADING)
        elif CMD_DEPOSIT <= k <= CMD_RISK_TICK:
            if self.risk is None:
                self.reject(REJ_RISK_OFF)
            else:
                self.cmd_risk()
        elif k == CMD_ADD_ACCOUNT:
            self.cmd_add_account()
        elif k == CMD_VAR_UPDATE:
            if self.risk is None:
                self.reject(REJ_RISK_OFF)
            else:
                self.cmd_var_update()
        elif k == CMD_SET_KYC:
            if self.risk is None:
                self.reject(REJ_RISK_OFF)
            else:
                self.cmd_kyc()
        elif k == CMD_ALERT_DISPOSITION:
            self.cmd_disposition()
        elif CMD_ALGO_NEW <= k <= CMD_ALGO_AMEND:
            if self.algos is None:
                self.reject(REJ_ALGOS_OFF)
            else:
                # the children are commands of their own (process_one, nested): their events are folded
                # into risk and observed there, so nothing more is done for this one
                self.algo_command(self.algos, self, start)
                self.cur = NULL
                return 0
        else:
            self.reject(REJ_INVALID_COMMAND)
        if self.risk is not None:
            self.risk_after(start)
        if self.algos is not None:
            self.algo_observe(self.algos, self, start)
        self.cur = NULL
        return 0

    def process(self, cnp.ndarray commands not None):
        """Apply every command of a contiguous COMMAND-dtype array; return a copy of the events."""
        cdef const Command* cmds = _commands(commands)
        cdef Py_ssize_t i, n = commands.shape[0]
        self.ev_count = 0
        for i in range(n):
            self.process_one(&cmds[i])
        out = self.events_arr[:self.ev_count].copy()
        self.ev_count = 0
        return out

    def feed(self, cnp.ndarray commands not None):
        """Apply the commands and leave their events in the buffer (events_view(), clear_events()):
        the server's path, which journals and encodes them without a copy. Returns the event count."""
        cdef const Command* cmds = _commands(commands)
        cdef Py_ssize_t i, n = commands.shape[0]
        for i in range(n):
            self.process_one(&cmds[i])
        return self.ev_count

    def events_view(self):
        """The events in the buffer (a view: valid until the next feed/clear)."""
        return self.events_arr[:self.ev_count]

    def clear_events(self):
        self.ev_count = 0

    def run(self, cnp.ndarray commands not None):
        """Apply the commands and discard the events (benchmarks); returns the number of events."""
        cdef const Command* cmds = _commands(commands)
        cdef Py_ssize_t i, n = commands.shape[0], total = 0
        for i in range(n):
            self.process_one(&cmds[i])
            if self.ev_count > 4096:
                total += self.ev_count
                self.ev_count = 0
        total += self.ev_count
        self.ev_count = 0
        return total

    def run_timed(self, cnp.ndarray commands not None, cnp.ndarray latencies_ns not None):
        """Benchmark driver: run() that also stores each command's processing time (ns,
        CLOCK_MONOTONIC around process_one) in latencies_ns (int64, same length).
        The clock is read here, by the driver, never by matching."""
        cdef const Command* cmds = _commands(commands)
        if latencies_ns.dtype != np.int64 or not latencies_ns.flags.c_contiguous or \
                latencies_ns.shape[0] < commands.shape[0]:
            raise TypeError("latencies_ns must be a contiguous int64 array at least as long as commands")
        cdef int64_t* lat = <int64_t*>_data(latencies_ns)
        cdef Py_ssize_t i, n = commands.shape[0], total = 0
        cdef timespec t0, t1
        for i in range(n):
            clock_gettime(CLOCK_MONOTONIC, &t0)
            self.process_one(&cmds[i])
            clock_gettime(CLOCK_MONOTONIC, &t1)
            lat[i] = (t1.tv_sec - t0.tv_sec) * 1000000000 + (t1.tv_nsec - t0.tv_nsec)
            if self.ev_count > 4096:
                total += self.ev_count
                self.ev_count = 0
        total += self.ev_count
        self.ev_count = 0
        return total

    cdef int grow_events(self) except -1:
        bigger = np.zeros(self.ev_cap * 2, dtype=EVENT.dtype)
        memcpy(_data(bigger), self.ev_buf, self.ev_count * sizeof(Event))
        self.events_arr = bigger
        self.ev_buf = <Event*>_data(bigger)
        self.ev_cap *= 2
        return 0

    def drain(self):
        """The events written since the last drain, as a copied EVENT-dtype array."""
        out = self.events_arr[:self.ev_count].copy()
        self.ev_count = 0
        return out

    # -- EVENTS --

    cdef Event* emit(self, uint8_t kind, slot_t s) except NULL:
        """Append a zeroed event for the current command, filled from order slot s (if s >= 0)."""
        if self.ev_count == self.ev_cap:
            self.grow_events()
        cdef Event* e = &self.ev_buf[self.ev_count]
        self.ev_count += 1
        memset(e, 0, sizeof(Event))
        e.kind = kind
        e.cmd_kind = self.cur.kind
        e.seq = self.cur.seq
        e.ts_ns = self.cur.ts_ns            # copied for the reports (their engine time), never acted on
        cdef Order* o
        if s >= 0:
            o = &self.orders[s]
            e.side = o.side
            e.symbol = o.symbol
            e.account = o.account
            e.order_id = o.order_id
            e.client_order_id = o.client_order_id
            e.price = o.price
            e.leaves = o.leaves
            if o.flags & OFLAG_LIQUIDATION:
                e.flags = EVFLAG_LIQUIDATION
            elif o.flags & OFLAG_ALGO_CHILD:
                e.flags = EVFLAG_ALGO_CHILD
        return e

    cdef int reject(self, uint16_t reason) except -1:
        cdef Event* e = self.emit(EV_REJECTED, -1)
        cdef const Command* c = self.cur
        e.reason = reason
        e.side = c.side
        e.symbol = c.symbol
        e.account = c.account
        e.order_id = c.order_id
        e.client_order_id = c.client_order_id
        e.price = c.price                   # echoed as sent (REJECTED reports)
        e.qty = c.qty
        return 0

    # -- COMMANDS --

    cdef inline bint account_ok(self, uint32_t a) noexcept:
        """A configured account (ids come from commands: range-checked before any array use)."""
        return 0 < a < <uint32_t>self.max_accounts and self.acct_defined[a]

    cdef inline bint symbol_ok(self, uint32_t sym) noexcept:
        return 0 < sym < <uint32_t>self.max_symbols and self.syms[sym].state != 0

    cdef int cmd_new(self) except -1:
        cdef const Command* c = self.cur
        cdef uint32_t a = c.account, sym = c.symbol
        if not self.account_ok(a):
            return self.reject(REJ_UNKNOWN_ACCOUNT)
        # an execution algorithm's child carries its parent's client order id (consumed by the parent)
        cdef uint8_t child = OFLAG_ALGO_CHILD if (c.flags & OFLAG_ALGO_CHILD) and self.algo_depth > 0 else 0
        if not child:
            if c.client_order_id == CLID_RESERVED:      # the end of the id space: never consumed (RULES.md)
                return self.reject(REJ_CLIENT_ORDER_ID_RESERVED)
            if c.client_order_id <= self.acct_last_clid[a]:
                return self.reject(REJ_DUPLICATE_CLIENT_ORDER_ID)
            self.acct_last_clid[a] = c.client_order_id
        if not self.symbol_ok(sym):
            return self.reject(REJ_UNKNOWN_SYMBOL)
        cdef Symbol* sy = &self.syms[sym]      # its checks' fields: one line
        if sy.state == SYM_HALTED:
            return self.reject(REJ_SYMBOL_HALTED)
        if c.side != SIDE_BUY and c.side != SIDE_SELL:
            return self.reject(REJ_INVALID_SIDE)
        cdef uint8_t ot = c.order_type
        if ot < OT_LIMIT or ot > OT_STOP_LIMIT:
            return self.reject(REJ_INVALID_ORDER_TYPE)
        if c.tif < TIF_GTC or c.tif > TIF_GTD:
            return self.reject(REJ_INVALID_TIF)
        cdef uint8_t stp = c.stp if c.stp else STP_CANCEL_NEWEST     # 0: the default (RULES.md)
        if not stp_mode_valid(stp):
            return self.reject(REJ_INVALID_STP)
        if c.flags & ~(FLAG_POST_ONLY | FLAG_REDUCE_ONLY | child) or \
                ((c.flags & FLAG_REDUCE_ONLY) and self.risk is None):
            return self.reject(REJ_INVALID_FLAGS)
        if c.qty <= 0:
            return self.reject(REJ_INVALID_QTY)
        if c.qty % sy.lot:
            return self.reject(REJ_QTY_NOT_LOT_MULTIPLE)
        if c.qty > sy.max_qty:
            return self.reject(REJ_QTY_ABOVE_MAX)
        cdef bint has_limit = ot == OT_LIMIT or ot == OT_STOP_LIMIT
        cdef bint is_stop = ot == OT_STOP or ot == OT_STOP_LIMIT
        if has_limit:
            if c.price <= 0:
                return self.reject(REJ_INVALID_PRICE)
            if c.price % sy.tick:
                return self.reject(REJ_PRICE_NOT_TICK_MULTIPLE)
            if c.price > sy.max_price:
                return self.reject(REJ_PRICE_ABOVE_MAX)
        elif c.price != 0:
            return self.reject(REJ_INVALID_PRICE)
        if is_stop:
            if c.stop_price <= 0 or c.stop_price % sy.tick or c.stop_price > sy.max_price:
                return self.reject(REJ_INVALID_STOP_PRICE)
        elif c.stop_price != 0:
            return self.reject(REJ_INVALID_STOP_PRICE)
        if c.display_qty != 0:
            if (not has_limit or not can_rest(c.tif) or c.display_qty < 0 or c.display_qty >= c.qty
                    or c.display_qty % sy.lot):
                return self.reject(REJ_INVALID_DISPLAY_QTY)
        cdef bint post_only = (c.flags & FLAG_POST_ONLY) != 0
        if post_only and (ot != OT_LIMIT or not can_rest(c.tif)):
            return self.reject(REJ_INVALID_POST_ONLY)
        if c.tif == TIF_GTD:
            if c.expire_ts_ns <= self.clock_ns:
                return self.reject(REJ_INVALID_EXPIRY)
        elif c.expire_ts_ns != 0:
            return self.reject(REJ_INVALID_EXPIRY)
        if self.free_head < 0 and self.slot_hwm == self.max_orders:
            return self.reject(REJ_ORDER_CAPACITY_EXHAUSTED)
        if self.long_runs and not self.ids_fit(a, c.client_order_id):
            return self.reject(REJ_ORDER_CAPACITY_EXHAUSTED)
        if is_stop and sy.has_last:
            if (c.side == SIDE_BUY and c.stop_price <= sy.last) or \
               (c.side == SIDE_SELL and c.stop_price >= sy.last):
                return self.reject(REJ_STOP_ALREADY_TRIGGERED)
        cdef int32_t ladder
        cdef Ladder* ld
        if is_stop:
            if c.side == SIDE_BUY:
                ladder = sym * 4 + LADDER_BUY_STOPS
                if not self.ladder_has_room(ladder, -c.stop_price):
                    return self.reject(REJ_LEVEL_CAPACITY_EXHAUSTED)
            else:
                ladder = sym * 4 + LADDER_SELL_STOPS
                if not self.ladder_has_room(ladder, c.stop_price):
                    return self.reject(REJ_LEVEL_CAPACITY_EXHAUSTED)
        elif ot == OT_LIMIT and can_rest(c.tif):
            if c.side == SIDE_BUY:
                ladder = sym * 4 + LADDER_BIDS
                if not self.ladder_has_room(ladder, c.price):
                    return self.reject(REJ_LEVEL_CAPACITY_EXHAUSTED)
            else:
                ladder = sym * 4 + LADDER_ASKS
                if not self.ladder_has_room(ladder, -c.price):
                    return self.reject(REJ_LEVEL_CAPACITY_EXHAUSTED)
            # where it will rest, near its ladder's top: asked for now, so that taking a slot,
            # registering it (and a sweep, if it crosses) overlap the miss
            ld = &self.ladders[ladder]
            if ld.count > 0:
                prefetch(&ld.ent[ld.count - 1])
        if post_only and self.crosses(sym, c.side, c.price):
            return self.reject(REJ_POST_ONLY_WOULD_CROSS)
        cdef int code
        if self.risk is not None:
            if self.risk.gate[a]:              # compliance first (RISK.md "KYC"): one byte test per order
                code = self.risk.compliance(a, sym, c.side, c.qty, c.qty)
                if code:
                    return self.reject(code)
            code = check_order(self.risk, a, sym, c.strategy, c.side, ot, c.tif, c.flags, c.price, c.stop_price,
                               c.qty, c.qty, self.acct_open[a], <int64_t>c.ts_ns, sy.tick)
            if code:
                return self.reject(code)

        # accepted: take a slot
        cdef slot_t s = self.new_slot(a, sym, c.side, ot, c.tif, stp, c.flags, c.price, c.stop_price, c.qty,
                                      c.display_qty, c.expire_ts_ns, c.client_order_id, c.strategy)
        cdef Event* e = self.emit(EV_ACCEPTED, s)
        e.qty = c.qty
        if is_stop:
            self.register(s)
            self.rest(s)
            return 0
        self.execute(s)
        self.run_triggers()
        return 0

    cdef slot_t new_slot(self, uint32_t account, uint32_t symbol, uint8_t side, uint8_t order_type, uint8_t tif,
                         uint8_t stp, uint8_t flags, int64_t price, int64_t stop_price, int64_t qty,
                         int64_t display, int64_t expire_ts_ns, uint64_t client_order_id, uint32_t strategy) noexcept:
        """Take a free slot (the caller checked there is one) for an accepted order, IN_FLIGHT:
        the last released, else the lowest never used ([0, slot_hwm) is all ever used)."""
        cdef slot_t s = self.free_head
        cdef Order* o
        if s >= 0:
            self.free_head = self.orders[s].acct_next
        else:
            s = self.slot_hwm
            self.slot_hwm = s + 1
        o = &self.orders[s]
        self.used_slots += 1
        memset(o, 0, sizeof(Order))
        o.price = price
        o.stop_price = stop_price
        o.qty = qty
        o.leaves = qty
        o.display = display
        o.expire_ts_ns = expire_ts_ns
        o.order_id = self.next_order_id
        self.next_order_id += 1
        o.client_order_id = client_order_id
        o.next = o.prev = o.level = -1
        o.acct_next = o.acct_prev = o.tif_next = o.tif_prev = -1
        o.account = account
        o.symbol = symbol
        o.strategy = strategy
        o.side = side
        o.order_type = order_type
        o.tif = tif
        o.stp = stp
        o.flags = flags
        o.state = OS_IN_FLIGHT
        return s

    cdef int cmd_cancel(self) except -1:
        cdef const Command* c = self.cur
        cdef uint32_t a = c.account
        if not self.account_ok(a):
            return self.reject(REJ_UNKNOWN_ACCOUNT)
        cdef slot_t s = self.find_order(a, c.order_id, c.client_order_id)
        if s < 0:
            return self.reject(REJ_UNKNOWN_ORDER)
        return self.cancel_order(s, CXL_USER)

    cdef int cmd_amend(self) except -1:
        cdef const Command* c = self.cur
        cdef uint32_t a = c.account
        if not self.account_ok(a):
            return self.reject(REJ_UNKNOWN_ACCOUNT)
        cdef slot_t s = self.find_order(a, c.order_id, c.client_order_id)
        if s < 0:
            return self.reject(REJ_UNKNOWN_ORDER)
        cdef Order* o = &self.orders[s]
        cdef uint32_t sym = o.symbol
        if self.syms[sym].state == SYM_HALTED:
            return self.reject(REJ_SYMBOL_HALTED)
        cdef int64_t qty = o.leaves if c.qty == AMEND_QTY_UNCHANGED else c.qty
        if qty < 0:
            return self.reject(REJ_INVALID_QTY)
        if qty == 0:
            return self.cancel_order(s, CXL_USER)
        if qty % self.syms[sym].lot:
            return self.reject(REJ_QTY_NOT_LOT_MULTIPLE)
        if qty > self.syms[sym].max_qty:
            return self.reject(REJ_QTY_ABOVE_MAX)
        cdef bint untriggered = o.state == OS_UNTRIGGERED
        cdef int64_t new_price = o.price
        if c.price != 0:
            if o.order_type != OT_LIMIT and o.order_type != OT_STOP_LIMIT:
                return self.reject(REJ_INVALID_AMEND)
            if c.price < 0:
                return self.reject(REJ_INVALID_PRICE)
            if c.price % self.syms[sym].tick:
                return self.reject(REJ_PRICE_NOT_TICK_MULTIPLE)
            if c.price > self.syms[sym].max_price:
                return self.reject(REJ_PRICE_ABOVE_MAX)
            new_price = c.price
        cdef int64_t new_stop = o.stop_price
        if c.stop_price != 0:
            if not untriggered:
                return self.reject(REJ_INVALID_AMEND)
            if c.stop_price < 0 or c.stop_price % self.syms[sym].tick or c.stop_price > self.syms[sym].max_price:
                return self.reject(REJ_INVALID_STOP_PRICE)
            if self.syms[sym].has_last and (
                    (o.side == SIDE_BUY and c.stop_price <= self.syms[sym].last) or
                    (o.side == SIDE_SELL and c.stop_price >= self.syms[sym].last)):
                return self.reject(REJ_STOP_ALREADY_TRIGGERED)
            new_stop = c.stop_price
        cdef int32_t ladder
        cdef int64_t key
        cdef Event* e
        cdef Level* lv
        cdef int64_t new_shown, old_leaves = o.leaves
        cdef int code
        if self.risk is not None and (qty > o.leaves or new_price != o.price or new_stop != o.stop_price):
            if self.risk.gate[a]:
                code = self.risk.compliance(a, sym, o.side, qty, qty - o.leaves)
                if code:
                    return self.reject(code)
            code = self.risk.check_amend(a, sym, o.strategy, o.side, o.order_type, o.tif, o.flags, new_price,
                                         new_stop, qty, qty - o.leaves, <int64_t>c.ts_ns, self.syms[sym].tick)
            if code:
                return self.reject(code)
        if untriggered:
            if new_stop != o.stop_price:
                if o.side == SIDE_BUY:
                    ladder = sym * 4 + LADDER_BUY_STOPS
                    key = -new_stop
                else:
                    ladder = sym * 4 + LADDER_SELL_STOPS
                    key = new_stop
                if not self.ladder_has_room(ladder, key) and self.levels[o.level].count > 1:
                    return self.reject(REJ_LEVEL_CAPACITY_EXHAUSTED)
                self.unrest(s)
                o.stop_price = new_stop
                o.price = new_price
                o.leaves = qty
                o.qty = o.filled + qty
                self.rest(s)
            else:
                o.price = new_price
                lv = &self.levels[o.level]
                lv.total += qty - o.leaves
                o.leaves = qty
                o.qty = o.filled + qty
            e = self.emit(EV_REPLACED, s)
            e.qty = o.leaves
            e.other_leaves = old_leaves
            return 0
        # a resting limit order
        cdef bint loses = new_price != o.price or qty > o.leaves
        if not loses:
            lv = &self.levels[o.level]
            new_shown = min64(o.shown, qty)
            lv.total -= o.leaves - qty
            lv.shown -= o.shown - new_shown
            o.shown = new_shown
            o.leaves = qty
            o.qty = o.filled + qty
            e = self.emit(EV_REPLACED, s)
            e.qty = o.leaves
            e.other_leaves = old_leaves
            return 0
        if new_price != o.price:
            if o.side == SIDE_BUY:
                ladder = sym * 4 + LADDER_BIDS
                key = new_price
            else:
                ladder = sym * 4 + LADDER_ASKS
                key = -new_price
            # capacity is judged after the order has left its old level
            if not self.ladder_has_room(ladder, key) and self.levels[o.level].count > 1:
                return self.reject(REJ_LEVEL_CAPACITY_EXHAUSTED)
            if (o.flags & FLAG_POST_ONLY) and self.crosses(sym, o.side, new_price):
                return self.reject(REJ_POST_ONLY_WOULD_CROSS)
        self.unrest(s)
        o.price = new_price
        o.leaves = qty
        o.qty = o.filled + qty
        e = self.emit(EV_REPLACED, s)
        e.qty = o.leaves
        e.other_leaves = old_leaves
        self.execute(s)
        self.run_triggers()
        return 0

    cdef int cmd_mass_cancel(self) except -1:
        cdef const Command* c = self.cur
        cdef uint32_t a = c.account, sym = c.symbol
        if not self.account_ok(a):
            return self.reject(REJ_UNKNOWN_ACCOUNT)
        if sym != 0 and not self.symbol_ok(sym):
            return self.reject(REJ_UNKNOWN_SYMBOL)
        if c.side > SIDE_SELL:
            return self.reject(REJ_INVALID_SIDE)
        cdef slot_t s = self.acct_head[a], nxt
        cdef int64_t n = 0
        while s >= 0:
            nxt = self.orders[s].acct_next
            if (sym == 0 or self.orders[s].symbol == sym) and (c.side == 0 or self.orders[s].side == c.side):
                self.cancel_order(s, CXL_MASS_CANCEL)
                n += 1
            s = nxt
        cdef Event* e = self.emit(EV_MASS_CANCEL_DONE, -1)
        e.account = a
        e.symbol = sym
        e.side = c.side
        e.qty = n
        return 0

    cdef int cmd_end_of_day(self) except -1:
        cdef uint32_t sym = self.cur.symbol
        if sym != 0 and not self.symbol_ok(sym):
            return self.reject(REJ_UNKNOWN_SYMBOL)
        if sym == 0 and self.risk is not None:
            self.risk.end_of_day()
        cdef slot_t s = self.day_head, nxt
        while s >= 0:
            nxt = self.orders[s].tif_next
            if sym == 0 or self.orders[s].symbol == sym:
                self.cancel_order(s, CXL_END_OF_DAY)
            s = nxt
        return 0

    cdef int cmd_expire(self) except -1:
        cdef int64_t now = self.cur.expire_ts_ns
        if now > self.clock_ns:
            self.clock_ns = now
        cdef slot_t s = self.gtd_head, nxt
        while s >= 0:
            nxt = self.orders[s].tif_next
            if self.orders[s].expire_ts_ns <= now:
                self.cancel_order(s, CXL_EXPIRED)
            s = nxt
        return 0

    cdef int cmd_symbol_state(self, uint8_t state) except -1:
        cdef uint32_t sym = self.cur.symbol
        if not self.symbol_ok(sym):
            return self.reject(REJ_UNKNOWN_SYMBOL)
        if state == SYM_TRADING and self.risk is not None:
            self.risk.end_breaker(sym)              # an admin resume also ends a breaker halt
        return self.set_symbol_state(sym, state)

    cdef int cmd_add_account(self) except -1:
        """ADD_ACCOUNT (an admin's, at run time): what add_account() does for a configured account,
        as a journaled command, so replay defines the account at the same point."""
        cdef const Command* c = self.cur
        cdef uint32_t a = c.account
        if a == 0 or a >= <uint32_t>self.max_accounts or self.acct_defined[a] or c.qty < 0 or \
                c.qty > <int64_t>0xFFFFFFFF:
            self.reject(REJ_INVALID_NEW_ACCOUNT)
            self.ev_buf[self.ev_count - 1].account = 0      # the admin's error: no report to that account
            return 0
        self.acct_defined[a] = 1
        self.acct_stp_key[a] = stp_key(a, c.qty)
        cdef Event* e = self.emit(EV_ACCOUNT_ADDED, -1)
        e.account = a
        e.qty = c.qty
        return 0

    cdef int cmd_kyc(self) except -1:
        """SET_KYC (RISK.md "KYC"): an account's KYC state, or (account 0) the default."""
        cdef const Command* c = self.cur
        cdef Risk r = self.risk
        cdef uint32_t a = c.account
        if a != 0 and not self.account_ok(a):
            return self.reject(REJ_UNKNOWN_ACCOUNT)
        cdef int code = r.set_kyc(a, c.side, c.flags & 1)
        if code:
            return self.reject(code)
        cdef Event* e = self.emit(EV_KYC_STATE, -1)
        e.account = a
        e.reason = r.kyc_state(a)
        e.qty = 1 if a == 0 or r.kyc[a] else 0
        return 0

    cdef int cmd_disposition(self) except -1:
        """ALERT_DISPOSITION: recorded in the journal with its operator; no engine state changes."""
        cdef const Command* c = self.cur
        if c.order_id == 0 or c.side < DISP_REVIEWED or c.side > DISP_DISMISSED or \
                c.order_type < ALERT_WASH_TRADE or c.order_type > ALERT_LARGE_POSITION or c.qty < 0:
            self.reject(REJ_INVALID_DISPOSITION)
            self.ev_buf[self.ev_count - 1].account = 0      # the admin's error: no report to an account
            return 0
        cdef Event* e = self.emit(EV_ALERT_DISPOSITION, -1)
        e.order_id = c.order_id
        e.qty = c.qty
        e.side = c.side
        e.reason = c.order_type
        e.price = c.price               # the note's BLAKE2b digest, if any (engine/notes.py)
        e.leaves = c.stop_price
        return 0

    cdef int set_symbol_state(self, uint32_t sym, uint8_t state) except -1:
        self.syms[sym].state = state
        cdef Event* e = self.emit(EV_SYMBOL_STATE, -1)
        e.symbol = sym
        e.reason = state
        return 0

    # -- RISK ORCHESTRATION (engine/RISK.md) --
    # Risk keeps the numbers; the core acts on them. After every command (process_one) the
    # new events are folded into risk (open quantities, positions, cash, breakers), then what
    # that calls for is done here, each action's events folded in turn, until nothing is left:
    # the engine-wide breaker event, breaker halts, then margin checks of the accounts the
    # command touched (liquidation steps). All of it belongs to the command being processed.

    def check_attach(self, what, max_accounts, max_symbols):
        """Before `what` (risk, the algorithms) is attached: its capacities must equal the engine's,
        and the engine must not have processed a command yet."""
        if max_accounts != self.max_accounts or max_symbols != self.max_symbols:
            raise ValueError(f"{what} capacities (accounts, symbols) must equal the engine's")
        if self.next_order_id != 1 or self.used_slots:
            raise ValueError(f"attach {what} to a fresh engine")

    def attach_risk(self, Risk risk not None):
        """Turn on pre-trade risk (before any command; the capacities must match the engine's)."""
        self.check_attach("risk", risk.max_accounts, risk.max_symbols)
        self.risk = risk

    cdef int risk_after(self, Py_ssize_t i) except -1:
        """Fold the events from ev_buf[i:] into risk; then act on what they call for."""
        cdef Risk r = self.risk
        cdef Event* e
        cdef int64_t ts = self.cur.ts_ns
        while True:
            while i < self.ev_count:
                # ACCEPTED and CANCELLED (most events) only move open quantities: folded right
                # here by risk.pxd's inline helper; every other kind by Risk.on_event
                e = &self.ev_buf[i]
                if e.kind == EV_ACCEPTED:
                    open_change(r, e.account, e.symbol, e.side, e.qty)
                elif e.kind == EV_CANCELLED:
                    open_change(r, e.account, e.symbol, e.side, -e.qty)
                else:
                    r.on_event(e, ts)
                i += 1
            if (r.touch_n | r.n_trip | r.ro_n | r.breaker_new | r.lock_new) == 0:
                return 0            # nothing to act on (most commands)
            self.risk_act(r)        # its events are folded in turn

    cdef int risk_act(self, Risk r) except -1:
        """One action that the folded events call for: the engine-wide breaker event, the breaker
        halts, the next margin check of an account the command touched (a liquidation step), or
        the next reduce-only check."""
        cdef int32_t a, k, n
        cdef uint32_t sym
        cdef Event* e
        if r.breaker_new:
            r.breaker_new = 0
            e = self.emit(EV_BREAKER, -1)
            e.reason = 1
            return 0
        if r.lock_new:                  # an account's reject-rate lockout: BREAKER with its account
            e = self.emit(EV_BREAKER, -1)
            e.account = r.lock_new
            e.reason = 1
            e.leaves = r.lock_until[r.lock_new]
            r.lock_new = 0
            return 0
        if r.n_trip:
            n = r.n_trip
            r.n_trip = 0
            for k in range(n):
                sym = r.trip_q[k]
                e = self.emit(EV_BREAKER, -1)
                e.symbol = sym
                e.price = r.brk_ref[sym]
                e.reason = 1
                if self.syms[sym].state != SYM_HALTED:
                    self.set_symbol_state(sym, SYM_HALTED)
            return 0
        a = r.pop_touched()
        if a:
            self.margin_step(a)
            return 0
        a = r.pop_ro()
        if a:
            self.reduce_only_step(a)
        return 0

    cdef int reduce_only_step(self, uint32_t a) except -1:
        """Cancel the account's newest resting (or waiting) reduce-only order that its position no
        longer covers (RISK.md "Reduce-only orders"), if there is one; then check it again."""
        cdef Risk r = self.risk
        if not r.ro_violated(a):
            return 0
        cdef slot_t s = self.acct_tail[a]
        cdef Order* o
        while s >= 0:
            o = &self.orders[s]
            if (o.flags & FLAG_REDUCE_ONLY) and r.ro_violation(a, o.symbol) & (1 if o.side == SIDE_BUY else 2):
                self.cancel_order(s, CXL_REDUCE_ONLY)
                ro_touch(r, a)
                return 0
            s = o.acct_prev
        return 0

    cdef int margin_step(self, uint32_t a) except -1:
        """One step of margin monitoring for account a (RISK.md "Liquidation")."""
        cdef Risk r = self.risk
        cdef bint below = r.below_maintenance(a)
        cdef int64_t qty
        cdef uint8_t side
        cdef uint32_t sym
        if r.state[a] != ACCT_LIQUIDATING:
            if not below:
                return 0
            r.prev_state[a] = r.state[a]
            r.state[a] = ACCT_LIQUIDATING
            r.liq_cursor[a] = 0
            self.emit_account(EV_ACCOUNT_STATE, a)
            self.cancel_account(a, CXL_LIQUIDATION)
            r.touch(a)
            return 0
        if not below:
            r.state[a] = r.prev_state[a]
            self.emit_account(EV_ACCOUNT_STATE, a)
            return 0
        sym = r.next_liquidation(a, &qty, &side)
        if sym == 0:
            return 0                # every position tried this pass; the next RISK_TICK tries again
        self.place_liquidation(a, sym, side, qty)
        r.touch(a)
        return 0

    cdef int place_liquidation(self, uint32_t a, uint32_t sym, uint8_t side, int64_t qty) except -1:
        """A reduce-only market IOC for the account (protected by the market band), placed by the
        engine: client order id 0, flagged LIQUIDATION in its events. Skipped when the symbol is
        halted or no order slot is free."""
        if (self.free_head < 0 and self.slot_hwm == self.max_orders) or self.syms[sym].state == SYM_HALTED:
            return 0
        cdef slot_t s = self.new_slot(a, sym, side, OT_MARKET, TIF_IOC, STP_CANCEL_OLDEST, OFLAG_LIQUIDATION,
                                      0, 0, qty, 0, 0, 0, 0)
        cdef Event* e = self.emit(EV_ACCEPTED, s)
        e.qty = qty
        self.execute(s)
        self.run_triggers()
        return 0

    cdef int cancel_account(self, uint32_t a, uint16_t reason) except -1:
        """Cancel every live order of account a, ascending order id."""
        cdef slot_t s = self.acct_head[a], nxt
        while s >= 0:
            nxt = self.orders[s].acct_next
            self.cancel_order(s, reason)
            s = nxt
        return 0

    cdef Event* emit_account(self, uint8_t kind, uint32_t a) except NULL:
        """An account-level risk event (ACCOUNT_STATE: reason = state, qty = kill switch)."""
        cdef Event* e = self.emit(kind, -1)
        e.account = a
        if kind == EV_ACCOUNT_STATE:
            e.reason = self.risk.state[a]
            e.qty = self.risk.kill[a]
        return e

    cdef int cmd_risk(self) except -1:
        """DEPOSIT .. RISK_TICK (CommandKind; RISK.md "Commands")."""
        cdef const Command* c = self.cur
        cdef Risk r = self.risk
        cdef uint8_t k = c.kind
        cdef uint32_t a = c.account, sym = c.symbol, target
        cdef int64_t amount, now
        cdef int code
        cdef Event* e
        cdef int32_t i
        if k == CMD_DEPOSIT or k == CMD_WITHDRAW:
            if not self.account_ok(a):
                return self.reject(REJ_UNKNOWN_ACCOUNT)
            if c.qty <= 0:
                return self.reject(REJ_INVALID_AMOUNT)
            if k == CMD_WITHDRAW and c.qty > r.available(a):
                return self.reject(REJ_INSUFFICIENT_FUNDS)
            amount = c.qty if k == CMD_DEPOSIT else -c.qty
            if (amount > 0 and r.cash[a] > (<int64_t>1 << 62) - amount):
                return self.reject(REJ_INVALID_AMOUNT)      # cash stays within +-2**62
            r.cash[a] += amount
            r.day_base[a] += amount                         # deposits are not profit
            e = self.emit_account(EV_BALANCE, a)
            e.qty = amount
            e.leaves = r.cash[a]
            r.touch(a)
        elif k == CMD_SET_LIMIT:
            target = a if c.side == SCOPE_ACCOUNT else (sym if c.side == SCOPE_SYMBOL else
                                                       (c.strategy if c.side == SCOPE_STRATEGY else 0))
            if c.side == SCOPE_ACCOUNT and not self.account_ok(a):
                return self.reject(REJ_UNKNOWN_ACCOUNT)
            if c.side == SCOPE_SYMBOL and not self.symbol_ok(sym):
                return self.reject(REJ_UNKNOWN_SYMBOL)
            code = r.set_limit(c.side, c.order_type, target, c.qty, c.flags & 1)
            if code:
                return self.reject(code)
            e = self.emit(EV_LIMIT_SET, -1)
            e.side = c.side
            e.reason = c.order_type
            e.account = a if c.side == SCOPE_ACCOUNT else 0
            e.symbol = sym if c.side == SCOPE_SYMBOL else 0
            e.order_id = target
            e.qty = c.qty
            e.flags = c.flags & 1
        elif k == CMD_SET_ACCOUNT_STATE:
            if not self.account_ok(a):
                return self.reject(REJ_UNKNOWN_ACCOUNT)
            if c.side < ACCT_ACTIVE or c.side > ACCT_SUSPENDED:
                return self.reject(REJ_INVALID_STATE)
            if r.state[a] == ACCT_LIQUIDATING:
                r.prev_state[a] = c.side                    # applied when the liquidation ends
            else:
                r.state[a] = c.side
            self.emit_account(EV_ACCOUNT_STATE, a)
        elif k == CMD_KILL_SWITCH:
            if c.side != 1 and c.side != 2:
                return self.reject(REJ_INVALID_STATE)
            if a == 0:
                r.kill_all = c.side == 1
                e = self.emit(EV_ACCOUNT_STATE, -1)
                e.qty = r.kill_all
                if r.kill_all:
                    for i in range(1, self.max_accounts):
                        self.cancel_account(i, CXL_KILL_SWITCH)
            else:
                if not self.account_ok(a):
                    return self.reject(REJ_UNKNOWN_ACCOUNT)
                r.kill[a] = c.side == 1
                self.emit_account(EV_ACCOUNT_STATE, a)
                if r.kill[a]:
                    self.cancel_account(a, CXL_KILL_SWITCH)
        elif k == CMD_RESTRICT_SYMBOL:
            if not self.account_ok(a):
                return self.reject(REJ_UNKNOWN_ACCOUNT)
            if not self.symbol_ok(sym):
                return self.reject(REJ_UNKNOWN_SYMBOL)
            if c.side != 1 and c.side != 2:
                return self.reject(REJ_INVALID_STATE)
            code = r.set_restricted(a, sym, c.side == 1)
            if code:
                return self.reject(code)
            e = self.emit(EV_LIMIT_SET, -1)                 # kind 0: a symbol restriction
            e.account = a
            e.symbol = sym
            e.qty = c.side == 1
        elif k == CMD_MARK_PRICE:
            if not self.symbol_ok(sym):
                return self.reject(REJ_UNKNOWN_SYMBOL)
            if c.price <= 0 or c.price % self.syms[sym].tick or c.price > self.syms[sym].max_price:
                return self.reject(REJ_INVALID_PRICE)
            r.set_mark(sym, c.price)
            e = self.emit(EV_MARK, -1)
            e.symbol = sym
            e.price = c.price
        elif k == CMD_RESET_BREAKER:
            r.breaker = 0
            r.err_count = 0
            for i in range(1, self.max_accounts):           # and every account's reject-rate lockout
                r.lock_until[i] = 0
                r.rej_count[i] = 0
            e = self.emit(EV_BREAKER, -1)
            e.reason = 2
        else:                                               # RISK_TICK
            now = c.expire_ts_ns
            for i in range(1, self.max_symbols):
                if self.syms[i].state == 0:
                    continue
                if cooloff_over(r, i, now):
                    r.end_breaker(i)
                    e = self.emit(EV_BREAKER, -1)
                    e.symbol = i
                    e.reason = 2
                    if self.syms[i].state == SYM_HALTED:
                        self.set_symbol_state(i, SYM_TRADING)
                if mark_behind(self, r, i):
                    r.mark[i] = self.syms[i].last
                    r.chg[i] = 1
                    e = self.emit(EV_MARK, -1)
                    e.symbol = i
                    e.price = r.mark[i]
            r.revalue()
            for i in range(1, self.max_accounts):
                if r.state[i] == ACCT_LIQUIDATING:
                    r.liq_cursor[i] = 0
                    r.touch(i)
        return 0

    cdef int cmd_var_update(self) except -1:
        """VAR_UPDATE (RISK.md "Pre-trade VaR limit"): an account's VaR (symbol 0), a symbol's VaR
        sensitivity (account 0), or the model's time (both 0), from the risk worker; event VAR_SET."""
        cdef const Command* c = self.cur
        cdef int code
        if c.symbol == 0:
            if c.account != 0 and not self.account_ok(c.account):
                return self.reject(REJ_UNKNOWN_ACCOUNT)
        elif c.account != 0:
            return self.reject(REJ_INVALID_LIMIT)
        elif not self.symbol_ok(c.symbol):
            return self.reject(REJ_UNKNOWN_SYMBOL)
        code = self.risk.var_update(c.account, c.symbol, c.qty, c.price, c.expire_ts_ns)
        if code:
            return self.reject(code)
        cdef Event* e = self.emit(EV_VAR_SET, -1)
        e.account = c.account
        e.symbol = c.symbol
        e.qty = c.qty
        e.price = c.price
        e.order_id = c.order_id
        e.leaves = c.expire_ts_ns
        return 0

    def risk_tick_due(self, int64_t now_ns):
        """Would a RISK_TICK at now_ns change anything (a mark behind the last trade, or a breaker
        cool-off over, or an account liquidating)? The server's timer journals one only then."""
        if self.risk is None:
            return False
        cdef Risk r = self.risk
        cdef int32_t i
        for i in range(1, self.max_symbols):
            if self.syms[i].state and (mark_behind(self, r, i) or cooloff_over(r, i, now_ns)):
                return True
        for i in range(1, self.max_accounts):
            if r.state[i] == ACCT_LIQUIDATING:
                return True
        return False

    # -- MATCHING --

    cdef bint crosses(self, uint32_t symbol, uint8_t side, int64_t price) noexcept:
        """Would a limit at `price` be marketable against the opposite best?"""
        cdef int32_t ladder = symbol * 4 + (LADDER_ASKS if side == SIDE_BUY else LADDER_BIDS)
        if self.ladders[ladder].count == 0:
            return False
        return price >= -self.syms[symbol].best_ask_key if side == SIDE_BUY else price <= self.syms[symbol].best_bid

    cdef int64_t best_price(self, uint32_t symbol, uint8_t side) noexcept:
        """The best bid (side BUY) or ask (SELL) of a defined symbol, 0 when that side is empty."""
        if self.ladders[symbol * 4 + (LADDER_BIDS if side == SIDE_BUY else LADDER_ASKS)].count == 0:
            return 0
        return self.syms[symbol].best_bid if side == SIDE_BUY else -self.syms[symbol].best_ask_key

    cdef bint fok_can_fill(self, slot_t s, int64_t bound) noexcept:
        """Dry run of the sweep of aggressor s: would it fill completely? (RULES.md 2 and 7)
        bound: a market order's protection price (0 = none)."""
        cdef Order* o = &self.orders[s]
        cdef bint market = o.order_type == OT_MARKET and bound == 0
        cdef int64_t limit = bound if o.order_type == OT_MARKET else o.price
        cdef bint buy = o.side == SIDE_BUY
        cdef int32_t ladder = o.symbol * 4 + (LADDER_ASKS if buy else LADDER_BIDS)
        cdef LadderEntry* ent = self.ladders[ladder].ent     # (a dry run: the ladder does not change)
        cdef int32_t pos = self.ladders[ladder].count - 1
        cdef int64_t need = o.leaves, avail = 0, ahead, level_leaves, own_key = self.acct_stp_key[o.account]
        cdef bint stp = o.stp != STP_NONE
        cdef Level* lv
        cdef slot_t m
        while pos >= 0:
            lv = &self.levels[ent[pos].level]
            if not market and ((buy and lv.price > limit) or (not buy and lv.price < limit)):
                break
            if not stp:
                avail += lv.total
            else:
                # Without an own order in the level, every other order trades in full
                # (icebergs refresh behind and are met again). Under CANCEL_NEWEST/BOTH
                # the sweep stops at the first own order: only the shown slices ahead
                # of it trade (an iceberg's refresh goes behind it).
                ahead = 0
                level_leaves = 0
                m = lv.head
                while m >= 0:
                    if self.acct_stp_key[self.orders[m].account] == own_key:
                        if o.stp != STP_CANCEL_OLDEST:
                            return avail + ahead >= need
                    else:
                        ahead += self.orders[m].shown
                        level_leaves += self.orders[m].leaves
                    m = self.orders[m].next
                avail += level_leaves
            if avail >= need:
                return True
            pos -= 1
        return avail >= need

    cdef int execute(self, slot_t s) except -1:
        """Sweep with aggressor s (IN_FLIGHT, not on a ladder), then rest or cancel its remainder."""
        cdef Order* o = &self.orders[s]
        cdef Order* mo
        cdef bint market = o.order_type == OT_MARKET
        cdef bint buy = o.side == SIDE_BUY
        cdef uint32_t sym = o.symbol
        cdef int32_t ladder = sym * 4 + (LADDER_ASKS if buy else LADDER_BIDS)
        cdef int64_t own_key = self.acct_stp_key[o.account]
        cdef bint stp = o.stp != STP_NONE
        cdef int32_t lvi
        cdef Level* lv
        cdef slot_t m
        cdef int64_t q
        cdef Event* e
        cdef bint stopped = False, protected = False
        cdef int64_t bound = 0            # a market order's protection price (risk's market band)
        if market and self.risk is not None:
            # the order's strategy caps the band too; an engine liquidation order has none
            bound = self.risk.market_bound(o.account, sym, o.side, self.syms[sym].tick,
                                           NO_STRATEGY if o.flags & OFLAG_LIQUIDATION else o.strategy)
        self.sw_traded = False
        if o.tif == TIF_FOK and not self.fok_can_fill(s, bound):
            return self.cancel_order(s, CXL_FOK_UNFILLED)
        # one resting order per iteration: the best level's head (matched orders leave the
        # head, refreshed icebergs go to the back, so the same aggressor may meet them again)
        # (the swept ladder only shrinks meanwhile: its header's pointers stay valid)
        cdef Ladder* ld = &self.ladders[ladder]
        cdef Symbol* sy = &self.syms[sym]
        cdef int64_t best
        while o.leaves > 0 and ld.count > 0:
            # the best price from the symbol's record (asks: -key): an order that does not cross
            # reads nothing of the opposite ladder but its count
            best = -sy.best_ask_key if buy else sy.best_bid
            if not market:
                if (buy and best > o.price) or (not buy and best < o.price):
                    break
            elif bound and ((buy and best > bound) or (not buy and best < bound)):
                protected = True
                break
            lvi = ld.ent[ld.count - 1].level
            lv = &self.levels[lvi]
            m = lv.head
            mo = &self.orders[m]
            if stp and self.acct_stp_key[mo.account] == own_key:
                e = self.emit(EV_STP_PREVENTED, s)
                e.other_account = mo.account
                e.other_order_id = mo.order_id
                e.other_client_order_id = mo.client_order_id
                e.price = lv.price
                e.qty = min64(o.leaves, mo.shown)
                e.other_leaves = mo.leaves
                if o.stp == STP_CANCEL_NEWEST:
                    stopped = True
                    break
                self.cancel_order(m, CXL_SELF_TRADE)   # drops the level if it empties
                if o.stp == STP_CANCEL_BOTH:
                    stopped = True
                    break
                continue
            q = min64(o.leaves, mo.shown)
            o.leaves -= q
            o.filled += q
            mo.leaves -= q
            mo.filled += q
            mo.shown -= q
            lv.shown -= q
            lv.total -= q
            if not self.sw_traded:
                self.sw_traded = True
                self.sw_lo = self.sw_hi = lv.price
            elif lv.price < self.sw_lo:
                self.sw_lo = lv.price
            elif lv.price > self.sw_hi:
                self.sw_hi = lv.price
            e = self.emit(EV_FILL, s)
            e.other_account = mo.account
            e.other_order_id = mo.order_id
            e.other_client_order_id = mo.client_order_id
            e.price = lv.price
            e.qty = q
            e.other_leaves = mo.leaves
            e.trade_id = self.next_trade_id
            self.next_trade_id += 1
            if mo.leaves == 0:
                self.fifo_unlink(m)
                mo.level = -1
                self.release(m)
                if lv.count == 0:
                    self.level_drop(lvi)
            elif mo.shown == 0:
                # iceberg: a new slice at the back of the level, new time priority
                self.fifo_unlink(m)
                mo.shown = min64(mo.display, mo.leaves)
                lv.shown += mo.shown
                self.fifo_append(lvi, m)
                e = self.emit(EV_RESTATED, m)
                e.qty = mo.shown
        if self.sw_traded:
            # buy sweeps print upwards, sell sweeps downwards: the last print is the extreme
            sy.last = self.sw_hi if buy else self.sw_lo
            sy.has_last = 1
        if stopped:
            self.cancel_order(s, CXL_SELF_TRADE)
        elif o.leaves == 0:
            self.release(s)
        elif market:
            self.cancel_order(s, CXL_MARKET_PROTECTION if protected else CXL_MARKET_REMAINDER)
        elif not can_rest(o.tif):
            self.cancel_order(s, CXL_IOC_REMAINDER)   # FOK never gets here with leaves: the dry run said so
        elif not self.ladder_has_room(sym * 4 + (LADDER_BIDS if buy else LADDER_ASKS), o.price if buy else -o.price):
            self.cancel_order(s, CXL_NO_LEVEL_CAPACITY)
        else:
            if not o.registered:
                self.register(s)
            self.rest(s)
        if self.sw_traded:
            self.trigger_stops(sym)
        return 0

    cdef int trigger_stops(self, uint32_t sym) except -1:
        """After a sweep that traded between sw_lo and sw_hi: queue the stops it reached."""
        cdef int32_t start = self.q_tail
        cdef int32_t ladder, lvi
        cdef Level* lv
        cdef slot_t m
        cdef int k
        for k in range(2):
            ladder = sym * 4 + LADDER_BUY_STOPS + k
            while self.ladders[ladder].count > 0:
                lvi = self.ladders[ladder].ent[self.ladders[ladder].count - 1].level
                lv = &self.levels[lvi]
                if (ladder & 3) == LADDER_BUY_STOPS:
                    if lv.price > self.sw_hi:
                        break
                elif lv.price < self.sw_lo:
                    break
                while lv.count > 0:
                    m = lv.head
                    self.fifo_unlink(m)
                    self.orders[m].level = -1
                    self.orders[m].state = OS_IN_FLIGHT
                    self.queue[self.q_tail] = m
                    self.q_tail += 1
                self.level_drop(lvi)
        global _sort_orders
        if self.q_tail - start > 1:
            _sort_orders = self.orders
            qsort(&self.queue[start], self.q_tail - start, sizeof(int32_t), _cmp_by_order_id)
        return 0

    cdef int run_triggers(self) except -1:
        """Enter queued stops one at a time, first in first out, until none is left (RULES.md 5)."""
        cdef slot_t s
        cdef Order* o
        cdef Event* e
        while self.q_head < self.q_tail:
            s = self.queue[self.q_head]
            self.q_head += 1
            o = &self.orders[s]
            o.order_type = OT_MARKET if o.order_type == OT_STOP else OT_LIMIT
            e = self.emit(EV_TRIGGERED, s)
            e.price = o.stop_price
            e.qty = o.leaves
            self.execute(s)
        self.q_head = self.q_tail = 0
        return 0

    # -- BOOK MAINTENANCE --

    cdef int32_t ladder_find(self, int32_t ladder, int64_t key, bint* found) noexcept:
        """Position of `key` in the ascending ladder (lower bound); found set if present."""
        cdef LadderEntry* ent = self.ladders[ladder].ent
        cdef int32_t n = self.ladders[ladder].count
        cdef int32_t lo = 0, hi = n, mid, i = n - 1, step = 4
        # most activity is near the top of the book: look at the last few first
        while i >= 0 and i >= n - 4:
            if ent[i].key <= key:
                found[0] = ent[i].key == key
                return i if found[0] else i + 1
            i -= 1
        # then gallop down (entries 4, 8, 16, ... further), so the lines read are the ones near the
        # top (which a new level's memmove moves anyway), not the middle of a deep book's chunk
        hi = i + 1
        while i >= 0 and ent[i].key > key:
            hi = i
            i -= step
            step <<= 1
        if i >= 0:
            if ent[i].key == key:
                found[0] = True
                return i
            lo = i + 1
        while lo < hi:
            mid = (lo + hi) >> 1
            if ent[mid].key < key:
                lo = mid + 1
            else:
                hi = mid
        found[0] = lo < n and ent[lo].key == key
        return lo

    cdef bint ladder_has_room(self, int32_t ladder, int64_t key) noexcept:
        """Can `key` be on the ladder: it is there already, or the ladder holds fewer than
        max_levels prices and the shared level pool has a free level."""
        cdef bint found
        if self.ladders[ladder].count < self.max_levels and (
                self.level_free_head >= 0 or self.level_hwm < self.max_level_slots):
            return True
        if self.ladders[ladder].count == 0:
            return False
        self.ladder_find(ladder, key, &found)
        return found

    # -- LADDER POOL --
    # A ladder's entries (key and level index) live in a chunk of cap entries (a power of two) carved
    # from a segment of the pool; a full ladder moves to a chunk twice as big (copying its
    # entries) and its old chunk goes to the free list of its size. Chunks never shrink (a ladder
    # keeps the room it once needed; a snapshot's restore packs them again). Segments are added
    # when the free lists and the newest segment cannot serve a chunk: growth allocates memory,
    # so it can raise MemoryError, but never rejects (what rejects is ladder_has_room's rule).
    # Where a chunk lies is not state: snapshots hold each ladder's entries, not the pool.

    cdef int new_segment(self, int64_t size) except -1:
        """A new segment of the ladder pool (the rest of the current one goes to the free lists)."""
        cdef int64_t rest = self.seg_size - self.seg_used, c
        cdef int k
        while rest >= LADDER_MIN_CHUNK:          # carve the rest into free chunks, biggest first
            k = 31
            while (<int64_t>1 << k) > rest:
                k -= 1
            c = <int64_t>1 << k
            self.seg_ent[self.seg_used].key = <int64_t><uintptr_t>self.chunk_free[k]
            self.chunk_free[k] = &self.seg_ent[self.seg_used]
            self.seg_used += c
            rest -= c
        # aligned, and chunks are multiples of LADDER_MIN_CHUNK entries (128 bytes): every chunk starts a line
        ents = _aligned(size, LADDER_ENTRY_DTYPE)
        self.ladder_segments.append(ents)
        self.seg_ent = <LadderEntry*>_data(ents)
        self.seg_used = 0
        self.seg_size = size
        return 0

    cdef int ladder_grow(self, int32_t ladder, int32_t cap) except -1:
        """Move the ladder to a chunk of `cap` entries (a power of two >= its count)."""
        cdef int k = 0
        while (1 << k) < cap:
            k += 1
        cdef LadderEntry* ent = self.chunk_free[k]
        if ent != NULL:                                   # a free chunk of that size
            self.chunk_free[k] = <LadderEntry*><uintptr_t>ent[0].key
        else:
            if self.seg_size - self.seg_used < cap:
                self.new_segment(max(<int64_t>LADDER_SEGMENT, <int64_t>cap))
            ent = &self.seg_ent[self.seg_used]
            self.seg_used += cap
        cdef int32_t n = self.ladders[ladder].count, old = self.ladders[ladder].cap
        cdef LadderEntry* oent = self.ladders[ladder].ent
        if old:
            memcpy(ent, oent, n * sizeof(LadderEntry))
            k = 0
            while (1 << k) < old:
                k += 1
            oent[0].key = <int64_t><uintptr_t>self.chunk_free[k]
            self.chunk_free[k] = oent
        self.ladders[ladder].ent = ent
        self.ladders[ladder].cap = cap
        return 0

    cdef int32_t level_get(self, int32_t ladder, int64_t price) except -1:
        """The level at `price` on `ladder`, created if absent (the caller checked room)."""
        cdef int64_t key = price if ((ladder & 3) == LADDER_BIDS or (ladder & 3) == LADDER_SELL_STOPS) else -price
        cdef bint found
        cdef int32_t pos = self.ladder_find(ladder, key, &found)
        if found:
            return self.ladders[ladder].ent[pos].level
        cdef int32_t n = self.ladders[ladder].count
        if n == self.ladders[ladder].cap:
            self.ladder_grow(ladder, 2 * n if n else LADDER_MIN_CHUNK)
        cdef int32_t lvi = self.level_free_head
        if lvi >= 0:
            self.level_free_head = self.levels[lvi].next_free
        else:
            lvi = self.level_hwm                          # never used: the lowest first
            self.level_hwm = lvi + 1
        cdef Level* lv = &self.levels[lvi]
        memset(lv, 0, sizeof(Level))
        lv.price = price
        lv.head = lv.tail = -1
        lv.next_free = -1
        lv.ladder = ladder
        cdef LadderEntry* ent = self.ladders[ladder].ent
        if pos < n:
            memmove(&ent[pos + 1], &ent[pos], (n - pos) * sizeof(LadderEntry))
        elif (ladder & 3) <= LADDER_ASKS:                 # a new best: the symbol's record keeps it
            set_best(&self.syms[ladder >> 2], ladder & 3, key)
        ent[pos].key = key
        ent[pos].level = lvi
        self.ladders[ladder].count = n + 1
        return lvi

    cdef void level_drop(self, int32_t lvi) noexcept:
        """Remove an empty level from its ladder and free it."""
        cdef Level* lv = &self.levels[lvi]
        cdef int32_t ladder = lv.ladder
        cdef LadderEntry* ent = self.ladders[ladder].ent
        cdef int32_t n = self.ladders[ladder].count
        cdef int64_t key = lv.price if ((ladder & 3) == LADDER_BIDS or (ladder & 3) == LADDER_SELL_STOPS) else -lv.price
        cdef bint found
        cdef int32_t pos
        if ent[n - 1].level != lvi:
            pos = self.ladder_find(ladder, key, &found)
            memmove(&ent[pos], &ent[pos + 1], (n - pos - 1) * sizeof(LadderEntry))
        elif n > 1 and (ladder & 3) <= LADDER_ASKS:       # the best went: the next one is
            set_best(&self.syms[ladder >> 2], ladder & 3, ent[n - 2].key)
        self.ladders[ladder].count = n - 1
        lv.next_free = self.level_free_head
        lv.count = 0
        self.level_free_head = lvi

    cdef void fifo_append(self, int32_t lvi, slot_t s) noexcept:
        cdef Level* lv = &self.levels[lvi]
        cdef Order* o = &self.orders[s]
        o.level = lvi
        o.next = -1
        o.prev = lv.tail
        if lv.tail >= 0:
            self.orders[lv.tail].next = s
        else:
            lv.head = s
        lv.tail = s
        lv.count += 1

    cdef void fifo_unlink(self, slot_t s) noexcept:
        """Take s out of its level's FIFO (aggregates are the caller's)."""
        cdef Order* o = &self.orders[s]
        cdef Level* lv = &self.levels[o.level]
        if o.prev >= 0:
            self.orders[o.prev].next = o.next
        else:
            lv.head = o.next
        if o.next >= 0:
            self.orders[o.next].prev = o.prev
        else:
            lv.tail = o.prev
        o.next = o.prev = -1
        lv.count -= 1

    cdef int rest(self, slot_t s) except -1:
        """Put s at the back of its level: a book level (limit) or a stop level (untriggered stop)."""
        cdef Order* o = &self.orders[s]
        cdef int32_t lvi
        cdef bint stop = o.order_type == OT_STOP or o.order_type == OT_STOP_LIMIT
        if stop:
            lvi = self.level_get(o.symbol * 4 + (LADDER_BUY_STOPS if o.side == SIDE_BUY else LADDER_SELL_STOPS),
                                 o.stop_price)
            o.shown = 0
            o.state = OS_UNTRIGGERED
        else:
            lvi = self.level_get(o.symbol * 4 + (LADDER_BIDS if o.side == SIDE_BUY else LADDER_ASKS), o.price)
            o.shown = min64(o.display, o.leaves) if o.display > 0 else o.leaves
            o.state = OS_RESTING
        self.fifo_append(lvi, s)
        self.levels[lvi].shown += o.shown
        self.levels[lvi].total += o.leaves
        return 0

    cdef void unrest(self, slot_t s) noexcept:
        """Take a RESTING/UNTRIGGERED order off its ladder (it stays registered)."""
        cdef Order* o = &self.orders[s]
        cdef int32_t lvi = o.level
        cdef Level* lv = &self.levels[lvi]
        # the symbol's ladder headers (one line), read by level_drop if the level empties: asked for
        # beside the level, not after it
        prefetch(&self.ladders[o.symbol * 4])
        lv.shown -= o.shown
        lv.total -= o.leaves
        self.fifo_unlink(s)
        o.level = -1
        o.shown = 0
        o.state = OS_IN_FLIGHT
        if lv.count == 0:
            self.level_drop(lvi)

    # -- ORDER LIFECYCLE --

    cdef void register(self, slot_t s) noexcept:
        """Make s findable (id tables) and listed (account, DAY/GTD lists): it rests or waits."""
        cdef Order* o = &self.orders[s]
        cdef uint32_t a = o.account
        o.registered = 1
        if o.flags & FLAG_REDUCE_ONLY and self.risk is not None:   # (the flag is refused without risk)
            ro_count(self.risk, a, o.symbol, o.side, 1)
        cdef uint64_t nxt = o.order_id & self.oid_direct_mask
        cdef int32_t old = self.oid_direct[nxt]
        if old:     # a live order one map size (or more) older: it moves to the spill table
            self.table_insert(self.oid_table, old - 1, oid_hash(self.orders[old - 1].order_id))
        self.oid_direct[nxt] = s + 1
        self.table_insert(self.clid_table, s, clid_hash(a, o.client_order_id))
        if (o.client_order_id & 15) == 8:
            # halfway through a block of 16 ids: ask for the next block's two lines now (ids rise,
            # so it is where the next orders go; a block is a random place, not the adjacent one)
            nxt = clid_hash(a, o.client_order_id + 8) & self.table_mask
            prefetch(&self.clid_table[nxt])
            prefetch(&self.clid_table[nxt + 8])
        o.acct_prev = self.acct_tail[a]
        o.acct_next = -1
        if self.acct_tail[a] >= 0:
            self.orders[self.acct_tail[a]].acct_next = s
        else:
            self.acct_head[a] = s
        self.acct_tail[a] = s
        self.acct_open[a] += 1
        self.live_orders += 1
        o.tif_prev = o.tif_next = -1
        if o.tif == TIF_DAY:
            o.tif_prev = self.day_tail
            if self.day_tail >= 0:
                self.orders[self.day_tail].tif_next = s
            else:
                self.day_head = s
            self.day_tail = s
        elif o.tif == TIF_GTD:
            o.tif_prev = self.gtd_tail
            if self.gtd_tail >= 0:
                self.orders[self.gtd_tail].tif_next = s
            else:
                self.gtd_head = s
            self.gtd_tail = s

    cdef void release(self, slot_t s) noexcept:
        """s is done: unregister it (if registered) and free its slot. It must be off any ladder."""
        cdef Order* o = &self.orders[s]
        cdef uint32_t a = o.account
        if o.registered:
            if o.flags & FLAG_REDUCE_ONLY and self.risk is not None:
                ro_count(self.risk, a, o.symbol, o.side, -1)
            if self.oid_direct[o.order_id & self.oid_direct_mask] == s + 1:
                self.oid_direct[o.order_id & self.oid_direct_mask] = 0
            else:
                self.table_erase(self.oid_table, s, oid_hash(o.order_id))
            self.table_erase(self.clid_table, s, clid_hash(a, o.client_order_id))
            if o.acct_prev >= 0:
                self.orders[o.acct_prev].acct_next = o.acct_next
            else:
                self.acct_head[a] = o.acct_next
            if o.acct_next >= 0:
                self.orders[o.acct_next].acct_prev = o.acct_prev
            else:
                self.acct_tail[a] = o.acct_prev
            self.acct_open[a] -= 1
            self.live_orders -= 1
            if o.tif == TIF_DAY or o.tif == TIF_GTD:
                if o.tif_prev >= 0:
                    self.orders[o.tif_prev].tif_next = o.tif_next
                elif o.tif == TIF_DAY:
                    self.day_head = o.tif_next
                else:
                    self.gtd_head = o.tif_next
                if o.tif_next >= 0:
                    self.orders[o.tif_next].tif_prev = o.tif_prev
                elif o.tif == TIF_DAY:
                    self.day_tail = o.tif_prev
                else:
                    self.gtd_tail = o.tif_prev
            o.registered = 0
        o.state = OS_FREE
        o.shown = 0
        o.acct_next = self.free_head
        self.free_head = s
        self.used_slots -= 1

    cdef int cancel_order(self, slot_t s, uint16_t reason) except -1:
        """Cancel the whole remainder of s (resting, untriggered or in flight) and free it."""
        cdef Order* o = &self.orders[s]
        if o.level >= 0:
            self.unrest(s)
        cdef Event* e = self.emit(EV_CANCELLED, s)
        e.reason = reason
        e.qty = o.leaves
        e.leaves = 0
        o.leaves = 0
        self.release(s)
        return 0

    cdef slot_t find_order(self, uint32_t account, uint64_t order_id, uint64_t client_order_id) noexcept:
        """The live order of `account` with that order id (or, if 0, that client order id); -1 if none."""
        cdef slot_t s
        if order_id != 0:
            s = self.find_by_id(order_id)
            return s if s >= 0 and self.orders[s].account == account else -1
        cdef uint64_t mask = self.table_mask
        cdef uint64_t h = clid_hash(account, client_order_id)
        cdef uint64_t i = h & mask
        cdef uint16_t d = 0, tag = id_tag(h)
        cdef IdEntry* t
        while True:
            t = &self.clid_table[i]
            s = t.ref - 1
            if s < 0 or t.disp < d:
                return -1
            if t.tag == tag and self.orders[s].client_order_id == client_order_id \
                    and self.orders[s].account == account:
                return s
            i = (i + 1) & mask
            d += 1

    cdef slot_t find_by_id(self, uint64_t order_id) noexcept:
        cdef slot_t s = self.oid_direct[order_id & self.oid_direct_mask] - 1
        if s >= 0 and self.orders[s].order_id == order_id:
            return s
        cdef uint64_t mask = self.table_mask
        cdef uint64_t h = oid_hash(order_id)
        cdef uint64_t i = h & mask
        cdef uint16_t d = 0, tag = id_tag(h)
        cdef IdEntry* t
        while True:                 # the spill table
            t = &self.oid_table[i]
            s = t.ref - 1
            if s < 0 or t.disp < d:
                return -1
            if t.tag == tag and self.orders[s].order_id == order_id:
                return s
            i = (i + 1) & mask
            d += 1

    # -- ID TABLES --
    # Order ids: the direct map (oid_direct, see register/release/find_by_id), and the spill
    # table for the live orders whose direct entry a newer id took. Client order ids, and the
    # spill table: Robin Hood linear probing over 8-byte entries (IdEntry): the slot + 1, its
    # displacement from its home (so inserts and deletes never read another order's key) and a
    # 16-bit tag of its key's hash (so a lookup reads no other order's slot but 1 in 65,536 times:
    # with 10M resting orders those slots are cold lines, perf/RESULTS.md issue 17 "10M resting").
    # At least TABLE_FACTOR entries per order slot: load <= 1/3, so never full (a table holds
    # live orders only; the order slots run out first: ORDER_CAPACITY_EXHAUSTED). Both ids are
    # hashed in blocks of 16 consecutive ids at mixed (splitmix64) positions (oid_hash,
    # clid_hash), so no pattern of ids, engine-assigned or chosen by clients, builds long probe
    # runs. Deletion shifts the run after the hole back until an entry at its home (the Robin
    # Hood invariant keeps a run sorted by home, so nothing after that entry can move).

    cdef void table_insert(self, IdEntry* table, slot_t s, uint64_t h) noexcept:
        cdef uint64_t mask = self.table_mask
        cdef uint64_t i = h & mask
        cdef IdEntry e, t
        e.ref = s + 1
        e.disp = 0
        e.tag = id_tag(h)
        while table[i].ref:
            if table[i].disp < e.disp:
                if e.disp >= DISP_MAX - 1:
                    self.long_runs = True
                t = table[i]
                table[i] = e
                e = t
            i = (i + 1) & mask
            e.disp += 1
        if e.disp >= DISP_MAX - 1:
            self.long_runs = True
        table[i] = e

    cdef void table_erase(self, IdEntry* table, slot_t s, uint64_t h) noexcept:
        cdef uint64_t mask = self.table_mask
        cdef uint64_t i = h & mask, j
        s += 1
        while table[i].ref != s:
            i = (i + 1) & mask
        j = (i + 1) & mask
        while table[j].ref and table[j].disp > 0:
            table[i] = table[j]
            table[i].disp -= 1
            i = j
            j = (j + 1) & mask
        table[i].ref = 0
        table[i].disp = 0
        table[i].tag = 0

    # Bounded displacements. An insert raises the largest displacement in a table by at most one
    # (each entry it moves lands right after the last entry of its own home, the new one after the
    # last of its home or before), so while none was ever placed DISP_MAX - 1 from home the next
    # insert places none above DISP_MAX. Past that (long_runs: only client ids chosen so that
    # thousands of blocks share a home build such a run; mixed homes never do) NEW_ORDER first
    # walks the inserts it will make (its client id; the spill of the order holding its order id's
    # direct entry) and is rejected ORDER_CAPACITY_EXHAUSTED if one would go above DISP_MAX: a
    # displacement never wraps. Between the check and the inserts only entries leave the tables
    # (fills, cancels), which moves nothing further from home.

    cdef bint table_fits(self, IdEntry* table, uint64_t h) noexcept:
        """Would inserting a key of hash h place every entry it moves at most DISP_MAX from home?"""
        cdef uint64_t mask = self.table_mask
        cdef uint64_t i = h & mask
        cdef uint32_t d = 0         # the carried entry's displacement (table_insert's e.disp)
        while table[i].ref:
            if table[i].disp < d:
                if d > DISP_MAX:
                    return False
                d = table[i].disp
            i = (i + 1) & mask
            d += 1
        return d <= DISP_MAX

    cdef bint ids_fit(self, uint32_t account, uint64_t client_order_id) noexcept:
        cdef int32_t old = self.oid_direct[self.next_order_id & self.oid_direct_mask]
        if old and not self.table_fits(self.oid_table, oid_hash(self.orders[old - 1].order_id)):
            return False
        return self.table_fits(self.clid_table, clid_hash(account, client_order_id))

    # -- PYTHON-FRIENDLY WRAPPER (tests and tools; not the hot path) --

    def command(self, **fields):
        """Apply one command given as COMMAND fields; return its events as EventTuples."""
        rec = np.zeros(1, dtype=COMMAND.dtype)
        for name, value in fields.items():
            rec[name] = value
        return [EventTuple(*(int(ev[f]) for f in EventTuple._fields)) for ev in self.process(rec)]

    def new_order(self, account, client_order_id, symbol, side, qty, price=0, order_type=OrderType.LIMIT,
                  tif=TimeInForce.GTC, stp=SelfTradePrevention.CANCEL_NEWEST, flags=0, stop_price=0,
                  display_qty=0, expire_ts_ns=0, strategy=0, seq=0):
        return self.command(kind=CommandKind.NEW_ORDER, account=account, client_order_id=client_order_id,
                            symbol=symbol, side=side, qty=qty, price=price, order_type=order_type, tif=tif,
                            stp=stp, flags=flags, stop_price=stop_price, display_qty=display_qty,
                            expire_ts_ns=expire_ts_ns, strategy=strategy, seq=seq)

    def cancel(self, account, order_id=0, client_order_id=0, seq=0):
        return self.command(kind=CommandKind.CANCEL, account=account, order_id=order_id,
                            client_order_id=client_order_id, seq=seq)

    def amend(self, account, order_id=0, client_order_id=0, qty=0, price=0, stop_price=0, seq=0):
        return self.command(kind=CommandKind.AMEND, account=account, order_id=order_id,
                            client_order_id=client_order_id, qty=qty, price=price, stop_price=stop_price, seq=seq)

    def mass_cancel(self, account, symbol=0, side=0, seq=0):
        return self.command(kind=CommandKind.MASS_CANCEL, account=account, symbol=symbol, side=side, seq=seq)

    def end_of_day(self, symbol=0, seq=0):
        return self.command(kind=CommandKind.END_OF_DAY, symbol=symbol, seq=seq)

    def expire(self, now_ns, seq=0):
        return self.command(kind=CommandKind.EXPIRE, expire_ts_ns=now_ns, seq=seq)

    def halt(self, symbol, seq=0):
        return self.command(kind=CommandKind.HALT, symbol=symbol, seq=seq)

    def resume(self, symbol, seq=0):
        return self.command(kind=CommandKind.RESUME, symbol=symbol, seq=seq)

    # risk commands (engine/RISK.md); amounts in cash units, ratios in bps
    def deposit(self, account, amount, seq=0):
        return self.command(kind=CommandKind.DEPOSIT, account=account, qty=amount, seq=seq)

    def withdraw(self, account, amount, seq=0):
        return self.command(kind=CommandKind.WITHDRAW, account=account, qty=amount, seq=seq)

    def set_limit(self, scope, kind, value=0, target=0, clear=False, seq=0):
        fields = dict(kind=CommandKind.SET_LIMIT, side=scope, order_type=kind, qty=value, flags=int(clear), seq=seq)
        if scope in SET_LIMIT_TARGET:
            fields[SET_LIMIT_TARGET[scope]] = target
        return self.command(**fields)

    def set_kyc(self, account, state, clear=False, seq=0):
        return self.command(kind=CommandKind.SET_KYC, account=account, side=state, flags=1 if clear else 0, seq=seq)

    def set_account_state(self, account, state, seq=0):
        return self.command(kind=CommandKind.SET_ACCOUNT_STATE, account=account, side=state, seq=seq)

    def kill_switch(self, account=0, on=True, seq=0):
        return self.command(kind=CommandKind.KILL_SWITCH, account=account, side=1 if on else 2, seq=seq)

    def restrict(self, account, symbol, restricted=True, seq=0):
        return self.command(kind=CommandKind.RESTRICT_SYMBOL, account=account, symbol=symbol,
                            side=1 if restricted else 2, seq=seq)

    def mark_price(self, symbol, price, seq=0):
        return self.command(kind=CommandKind.MARK_PRICE, symbol=symbol, price=price, seq=seq)

    def reset_breaker(self, seq=0):
        return self.command(kind=CommandKind.RESET_BREAKER, seq=seq)

    def risk_tick(self, now_ns, seq=0):
        return self.command(kind=CommandKind.RISK_TICK, expire_ts_ns=now_ns, ts_ns=now_ns, seq=seq)

    # -- QUERIES --

    def depth(self, uint32_t symbol, int levels=5):
        """(bids, asks): lists of (price, shown_qty, order_count), best first."""
        if symbol == 0 or symbol >= <uint32_t>self.max_symbols:
            raise ValueError(f"unknown symbol {symbol}")
        out = []
        cdef int32_t ladder, pos, k
        cdef Level* lv
        for ladder in (symbol * 4 + LADDER_BIDS, symbol * 4 + LADDER_ASKS):
            side = []
            pos = self.ladders[ladder].count - 1
            k = 0
            while pos >= 0 and k < levels:
                lv = &self.levels[self.ladders[ladder].ent[pos].level]
                side.append((lv.price, lv.shown, lv.count))
                pos -= 1
                k += 1
            out.append(side)
        return out[0], out[1]

    cdef dict _order_dict(self, slot_t s):
        cdef Order* o = &self.orders[s]
        return dict(order_id=o.order_id, client_order_id=o.client_order_id, account=o.account,
                    symbol=o.symbol, side=o.side, order_type=o.order_type, tif=o.tif, stp=o.stp,
                    flags=o.flags, price=o.price, stop_price=o.stop_price, qty=o.qty, leaves=o.leaves,
                    shown=o.shown, display_qty=o.display, filled=o.filled, expire_ts_ns=o.expire_ts_ns,
                    strategy=o.strategy, state=o.state)

    def order(self, uint64_t order_id):
        """The live order with that id as a dict, or None."""
        cdef slot_t s = self.find_by_id(order_id) if order_id else -1
        return self._order_dict(s) if s >= 0 else None

    def open_orders(self, uint32_t account):
        """The account's live orders (resting and untriggered), ascending order id."""
        if account == 0 or account >= <uint32_t>self.max_accounts:
            return []
        out = []
        cdef slot_t s = self.acct_head[account]
        while s >= 0:
            out.append(self._order_dict(s))
            s = self.orders[s].acct_next
        return out

    def next_expiry_ns(self):
        """The earliest expiry among live GTD orders, or 0 if there is none (the server's timer
        turns the clock into an EXPIRE command only when one is due). O(GTD orders)."""
        cdef slot_t s = self.gtd_head
        cdef int64_t best = 0
        while s >= 0:
            if best == 0 or self.orders[s].expire_ts_ns < best:
                best = self.orders[s].expire_ts_ns
            s = self.orders[s].tif_next
        return best

    def last_price(self, uint32_t symbol):
        if symbol == 0 or symbol >= <uint32_t>self.max_symbols or not self.syms[symbol].has_last:
            return None
        return self.syms[symbol].last

    def symbol_state(self, uint32_t symbol):
        return self.syms[symbol].state if 0 < symbol < <uint32_t>self.max_symbols else 0

    def memory_bytes(self):
        """Bytes held by the arrays (preallocated, and the ladder pool's segments so far). Order and
        level slots above their high-water marks are allocated but never written: see
        touched_bytes()."""
        total = 0
        for arr in (self.orders_arr, self.levels_arr, self.ladders_arr, self.oid_direct_arr, self.oid_table_arr,
                    self.clid_table_arr, self.queue_arr, self.events_arr):
            total += arr.nbytes
        for ents in self.ladder_segments:
            total += ents.nbytes
        total += self.sym_arr.nbytes + sum(a.nbytes for a in self.acct_arr.values())
        return total

    # -- SNAPSHOT STATE --

    SCALARS = ("next_order_id", "next_trade_id", "clock_ns", "live_orders", "used_slots", "free_head",
               "level_free_head", "day_head", "day_tail", "gtd_head", "gtd_tail", "table_mask", "slot_hwm",
               "level_hwm")

    def ladder_pool(self):
        """The ladder pool: segments, entries in them, and entries held by ladders' chunks."""
        cdef int64_t held = 0
        cdef int32_t i
        for i in range(self.max_symbols * 4):
            held += self.ladders[i].cap
        return dict(segments=len(self.ladder_segments), entries=sum(len(k) for k in self.ladder_segments),
                    held=held, levels=sum(int(self.ladders[i].count) for i in range(self.max_symbols * 4)))

    def export_state(self):
        """The whole matching state as {name: numpy array (a view, not a copy, except the ladders'
        entries, gathered here ladder by ladder) or int}. Only meaningful between commands (no event
        pending)."""
        if self.ev_count:
            raise RuntimeError("drain events before exporting state")
        state = {"capacity": np.array([self.max_orders, self.max_accounts, self.max_symbols, self.max_levels,
                                       self.max_level_slots], dtype=np.int64)}
        state["scalars"] = np.array([      # the u64 counters as their int64 bit patterns (import casts back)
            <int64_t>self.next_order_id, <int64_t>self.next_trade_id, self.clock_ns, self.live_orders, self.used_slots,
            self.free_head, self.level_free_head, self.day_head, self.day_tail, self.gtd_head, self.gtd_tail,
            <int64_t>self.table_mask, self.slot_hwm, self.level_hwm], dtype=np.int64)   # order: SCALARS
        # order slots and levels are taken lowest index first and never touched above the high-water
        # mark, so only the used prefix is state (a thin book's snapshot is small, whatever the capacity)
        state["orders_arr"] = self.orders_arr[:self.slot_hwm]
        state["levels_arr"] = self.levels_arr[:self.level_hwm]
        # the ladders: each one's entries, in ladder order (where its chunk lies is not state)
        cdef int32_t ladder, nladders = self.max_symbols * 4
        cdef int64_t at = 0, total = int(self.ladders_arr["count"].sum())
        keys = np.empty(total, dtype=np.int64)
        lvls = np.empty(total, dtype=np.int32)
        cdef int64_t* k = <int64_t*>_data(keys)
        cdef int32_t* v = <int32_t*>_data(lvls)
        cdef int32_t pos
        for ladder in range(nladders):
            for pos in range(self.ladders[ladder].count):
                k[at] = self.ladders[ladder].ent[pos].key
                v[at] = self.ladders[ladder].ent[pos].level
                at += 1
        state["ladder_counts"] = self.ladders_arr["count"].copy()
        state["ladder_keys"] = keys
        state["ladder_levels"] = lvls
        for name in ("oid_direct_arr", "oid_table_arr", "clid_table_arr"):
            state[name] = getattr(self, name)
        for col in SYMBOL_STATE_COLUMNS:
            state["sym." + col] = self.sym_arr[col]         # (a strided view of the records)
        for col, arr in self.acct_arr.items():
            state["acct." + col] = arr
        if self.risk is not None:
            state.update(self.risk.export_state())
        if self.algos is not None:
            state.update(self.algos.export_state())
        return state

    def import_state(self, state):
        """Load a state made by export_state() into this engine (same capacities)."""
        cap = [int(x) for x in state["capacity"]]
        mine = [self.max_orders, self.max_accounts, self.max_symbols, self.max_levels, self.max_level_slots]
        if cap != mine:
            raise ValueError(f"snapshot capacities {cap} differ from this engine's {mine}")
        targets = {name: getattr(self, name) for name in (
            "orders_arr", "levels_arr",
            "oid_direct_arr", "oid_table_arr", "clid_table_arr")}
        for col in SYMBOL_STATE_COLUMNS:
            targets["sym." + col] = self.sym_arr[col]
        for col, arr in self.acct_arr.items():
            targets["acct." + col] = arr
        prefix = ("orders_arr", "levels_arr")      # may hold only the used prefix (export_state)
        for name, dst in targets.items():
            src = state[name]
            if src.dtype != dst.dtype or (src.shape != dst.shape and not (
                    name in prefix and src.ndim == 1 and src.shape[0] <= dst.shape[0])):
                raise ValueError(f"snapshot array {name}: {src.dtype}{src.shape} != {dst.dtype}{dst.shape}")
        counts = state["ladder_counts"]
        keys = np.ascontiguousarray(state["ladder_keys"], dtype=np.int64)
        lvls = np.ascontiguousarray(state["ladder_levels"], dtype=np.int32)
        if counts.dtype != np.int32 or counts.shape != (self.max_symbols * 4,) or (counts < 0).any() or \
                (counts > self.max_levels).any() or \
                len(keys) != int(counts.sum()) or len(lvls) != len(keys):
            raise ValueError("snapshot ladders do not fit this engine")
        for name, dst in targets.items():
            dst[:len(state[name])] = state[name]
        cdef const int64_t[:] sc = np.ascontiguousarray(state["scalars"], dtype=np.int64)
        self.slot_hwm = <int32_t>len(state["orders_arr"])
        self.level_hwm = <int32_t>len(state["levels_arr"])
        cdef int32_t ladder, n, c
        cdef int64_t at = 0
        cdef int64_t* k = <int64_t*>_data(keys)
        cdef int32_t* v = <int32_t*>_data(lvls)
        # the ladder pool anew (the engine may have been used): slots above the high-water marks
        # may be dirty, but only the free lists lead to slots, and new_slot/level_get clear them
        self.ladder_segments = []
        self.ladders_arr[:] = 0
        self.ladders_arr["count"] = counts
        for c in range(32):
            self.chunk_free[c] = NULL
        self.seg_ent = NULL
        self.seg_used = self.seg_size = 0
        for ladder in range(self.max_symbols * 4):          # each ladder in a chunk just big enough
            n = self.ladders[ladder].count
            if n == 0:
                continue
            c = LADDER_MIN_CHUNK
            while c < n:
                c *= 2
            self.ladders[ladder].count = 0
            self.ladder_grow(ladder, c)
            for c in range(n):
                self.ladders[ladder].ent[c].key = k[at + c]
                self.ladders[ladder].ent[c].level = v[at + c]
            self.ladders[ladder].count = n
            if (ladder & 3) <= LADDER_ASKS:
                set_best(&self.syms[ladder >> 2], ladder & 3, k[at + n - 1])
            at += n
        self.next_order_id = sc[0]
        self.next_trade_id = sc[1]
        self.clock_ns = sc[2]
        self.live_orders = <int32_t>sc[3]
        self.used_slots = <int32_t>sc[4]
        self.free_head = <int32_t>sc[5]
        self.level_free_head = <int32_t>sc[6]
        self.day_head = <int32_t>sc[7]
        self.day_tail = <int32_t>sc[8]
        self.gtd_head = <int32_t>sc[9]
        self.gtd_tail = <int32_t>sc[10]
        # (not state: whether NEW_ORDER walks its inserts first changes no outcome below DISP_MAX - 1)
        self.long_runs = max(int(self.oid_table_arr["disp"].max()),
                             int(self.clid_table_arr["disp"].max())) >= DISP_MAX - 1
        if <uint64_t>sc[11] != self.table_mask:
            raise ValueError("snapshot table size differs")
        if (self.risk is not None) != ("risk.capacity" in state):
            raise ValueError("snapshot and engine differ in whether risk is on")
        if self.risk is not None:
            self.risk.import_state(state)
            self.count_reduce_only()
        if ("algos.scalars" in state) and self.algos is None:
            raise ValueError("the snapshot holds parent orders but this engine has no execution algorithms")
        if self.algos is not None:
            self.algos.import_state(state)          # (a snapshot from before them: none live)
        self.q_head = self.q_tail = 0
        self.ev_count = 0

    cdef void count_reduce_only(self) noexcept:
        """Risk's reduce-only counts, from the live orders (they are derived, never snapshotted)."""
        cdef int32_t a
        cdef slot_t s
        for a in range(self.max_accounts):
            s = self.acct_head[a]
            while s >= 0:
                if self.orders[s].flags & FLAG_REDUCE_ONLY:
                    ro_count(self.risk, a, self.orders[s].symbol, self.orders[s].side, 1)
                s = self.orders[s].acct_next

    # -- CHECKS --

    def state_hash(self):
        """A 64-bit hash of the whole matching state: books in priority order, stops, counters."""
        cdef uint64_t h = <uint64_t>0xcbf29ce484222325ULL
        cdef int32_t sym, ladder, pos
        cdef Level* lv
        cdef slot_t m
        cdef Order* o
        _fnv(&h, self.next_order_id)
        _fnv(&h, self.next_trade_id)
        _fnv(&h, <uint64_t>self.clock_ns)
        for sym in range(self.max_symbols):
            if self.syms[sym].state == 0:
                continue
            _fnv(&h, sym)
            _fnv(&h, self.syms[sym].state)
            _fnv(&h, self.syms[sym].has_last)
            _fnv(&h, <uint64_t>self.syms[sym].last)
            for ladder in range(sym * 4, sym * 4 + 4):
                for pos in range(self.ladders[ladder].count - 1, -1, -1):
                    lv = &self.levels[self.ladders[ladder].ent[pos].level]
                    _fnv(&h, <uint64_t>lv.price)
                    m = lv.head
                    while m >= 0:
                        o = &self.orders[m]
                        # typed C casts, no Python ints: the full u64 range of the ids hashes
                        # (a Python int through <int64_t> overflowed at 2**63)
                        _fnv(&h, o.order_id)
                        _fnv(&h, o.client_order_id)
                        _fnv(&h, o.account)
                        _fnv(&h, o.side)
                        _fnv(&h, o.order_type)
                        _fnv(&h, o.tif)
                        _fnv(&h, o.stp)
                        _fnv(&h, o.flags)
                        _fnv(&h, <uint64_t>o.price)
                        _fnv(&h, <uint64_t>o.stop_price)
                        _fnv(&h, <uint64_t>o.qty)
                        _fnv(&h, <uint64_t>o.leaves)
                        _fnv(&h, <uint64_t>o.shown)
                        _fnv(&h, <uint64_t>o.display)
                        _fnv(&h, <uint64_t>o.filled)
                        _fnv(&h, <uint64_t>o.expire_ts_ns)
                        _fnv(&h, o.strategy)
                        m = o.next
        for sym in range(self.max_accounts):
            if self.acct_defined[sym]:
                _fnv(&h, sym)
                _fnv(&h, self.acct_last_clid[sym])
                _fnv(&h, <uint64_t>self.acct_stp_key[sym])
        if self.risk is not None:
            import hashlib
            _fnv(&h, int.from_bytes(hashlib.blake2b(self.risk.state_bytes(), digest_size=8).digest(), "little"))
        if self.algos is not None:
            import hashlib
            _fnv(&h, int.from_bytes(hashlib.blake2b(self.algos.state_bytes(), digest_size=8).digest(), "little"))
        return h

    def validate(self):
        """Check every internal invariant; raise AssertionError naming the first broken one."""
        cdef int32_t sym, ladder, pos, n, cnt, cap
        cdef int64_t shown, total
        cdef LadderEntry* ent
        cdef Level* lv
        cdef slot_t m, prev
        cdef Order* o
        on_book = 0
        for sym in range(self.max_symbols):
            for ladder in range(sym * 4, sym * 4 + 4):
                n = self.ladders[ladder].count
                cap = self.ladders[ladder].cap
                ent = self.ladders[ladder].ent
                assert 0 <= n <= self.max_levels, f"ladder {ladder}: count {n}"
                assert n <= cap and (cap == 0 or (cap >= LADDER_MIN_CHUNK and cap & (cap - 1) == 0)), \
                    f"ladder {ladder}: count {n} in a chunk of {cap}"
                if n and self.syms[sym].state == 0:
                    raise AssertionError(f"ladder {ladder} of undefined symbol {sym} holds levels")
                for pos in range(n):
                    if pos:
                        assert ent[pos - 1].key < ent[pos].key, f"ladder {ladder}: keys not strictly ascending at {pos}"
                    assert 0 <= ent[pos].level < self.level_hwm, \
                        f"ladder {ladder}: level {ent[pos].level} never handed out"
                    lv = &self.levels[ent[pos].level]
                    assert lv.ladder == <uint32_t>ladder, f"level on ladder {ladder} says {lv.ladder}"
                    key = lv.price if (ladder & 3) in (LADDER_BIDS, LADDER_SELL_STOPS) else -lv.price
                    assert key == ent[pos].key, f"ladder {ladder}: key/price mismatch"
                    assert lv.count > 0, f"ladder {ladder}: empty level at {lv.price}"
                    cnt = 0
                    shown = total = 0
                    prev = -1
                    m = lv.head
                    while m >= 0:
                        o = &self.orders[m]
                        assert o.prev == prev, f"order {o.order_id}: broken FIFO back link"
                        assert o.level == ent[pos].level, f"order {o.order_id}: wrong level"
                        assert o.symbol == <uint32_t>sym, f"order {o.order_id}: on another symbol's ladder"
                        assert o.registered, f"order {o.order_id}: on a ladder but not registered"
                        assert o.leaves > 0, f"order {o.order_id}: on a ladder with no leaves"
                        assert o.qty == o.filled + o.leaves, f"order {o.order_id}: qty != filled + leaves"
                        if (ladder & 3) < 2:
                            assert o.state == OS_RESTING, f"order {o.order_id}: on the book but not RESTING"
                            assert o.side == (SIDE_BUY if (ladder & 3) == LADDER_BIDS else SIDE_SELL), \
                                f"order {o.order_id}: wrong side"
                            assert o.price == lv.price, f"order {o.order_id}: price != level price"
                            assert 0 < o.shown <= o.leaves, f"order {o.order_id}: shown {o.shown}"
                            if o.display == 0:
                                assert o.shown == o.leaves, f"order {o.order_id}: not fully shown"
                            else:
                                assert o.shown <= o.display, f"order {o.order_id}: shown above display"
                        else:
                            assert o.state == OS_UNTRIGGERED, f"order {o.order_id}: on a stop ladder, not UNTRIGGERED"
                            assert o.stop_price == lv.price, f"order {o.order_id}: stop != level price"
                        shown += o.shown
                        total += o.leaves
                        cnt += 1
                        prev = m
                        m = o.next
                    assert lv.tail == prev, f"level {lv.price}: tail mismatch"
                    assert cnt == lv.count, f"level {lv.price}: count {lv.count} != {cnt}"
                    assert shown == lv.shown, f"level {lv.price}: shown {lv.shown} != {shown}"
                    assert total == lv.total, f"level {lv.price}: total {lv.total} != {total}"
                    on_book += cnt
                if n and (ladder & 3) <= LADDER_ASKS:
                    assert ent[n - 1].key == (self.syms[sym].best_bid if (ladder & 3) == LADDER_BIDS else
                                              self.syms[sym].best_ask_key), f"symbol {sym}: cached best != ladder {ladder}'s"
            bids = sym * 4 + LADDER_BIDS
            asks = sym * 4 + LADDER_ASKS
            if self.ladders[bids].count and self.ladders[asks].count:
                bb = self.levels[self.ladders[bids].ent[self.ladders[bids].count - 1].level].price
                ba = self.levels[self.ladders[asks].ent[self.ladders[asks].count - 1].level].price
                assert bb < ba, f"symbol {sym}: crossed book at rest (bid {bb} >= ask {ba})"
        assert on_book == self.live_orders, f"{on_book} orders on ladders, live_orders {self.live_orders}"
        listed = 0
        for a in range(self.max_accounts):
            m = self.acct_head[a]
            prev = -1
            cnt = 0
            while m >= 0:
                o = &self.orders[m]
                assert o.account == <uint32_t>a and o.registered, f"account {a}: foreign or unregistered order"
                assert o.acct_prev == prev, f"account {a}: broken back link"
                assert self.find_order(a, o.order_id, 0) == m, f"order {o.order_id}: not found by id"
                assert self.find_order(a, 0, o.client_order_id) == m, f"order {o.order_id}: not found by client id"
                if prev >= 0:
                    assert self.orders[prev].order_id < o.order_id, f"account {a}: list not in acceptance order"
                prev = m
                m = o.acct_next
                cnt += 1
            assert cnt == self.acct_open[a], f"account {a}: open {self.acct_open[a]} != {cnt}"
            listed += cnt
        assert listed == self.live_orders, f"accounts list {listed} orders, live_orders {self.live_orders}"
        free = 0
        m = self.free_head
        while m >= 0:
            assert m < self.slot_hwm, f"slot {m}: on the free list but never handed out"
            assert self.orders[m].state == OS_FREE, f"slot {m}: on the free list but in use"
            free += 1
            m = self.orders[m].acct_next
        assert free + self.used_slots == self.slot_hwm <= self.max_orders, \
            f"free {free} + used {self.used_slots} != slots ever used {self.slot_hwm}"
        free = 0
        m = self.level_free_head
        while m >= 0:
            assert m < self.level_hwm, f"level slot {m}: on the free list but never handed out"
            free += 1
            m = self.levels[m].next_free
        on_ladders = int(self.ladders_arr["count"].sum())
        assert free + on_ladders == self.level_hwm <= self.max_level_slots, \
            f"free levels {free} + on ladders {on_ladders} != level slots ever used {self.level_hwm}"
        assert self.used_slots == self.live_orders, f"used slots {self.used_slots} != live orders {self.live_orders}"
        tabled = int((self.oid_direct_arr != 0).sum()) + int((self.oid_table_arr["ref"] != 0).sum())
        assert tabled == self.live_orders, f"order id table holds {tabled}, live {self.live_orders}"
        tabled = int((self.clid_table_arr["ref"] != 0).sum())
        assert tabled == self.live_orders, f"client id table holds {tabled}, live {self.live_orders}"
        self._validate_table(True)
        self._validate_table(False)
        if self.risk is not None:
            self._validate_risk()

    def _validate_table(self, bint oid):
        """Every id-table entry is a registered order's, at its displacement from its key's home, with
        its key's tag; a run never has an entry further from home than its predecessor plus one."""
        cdef IdEntry* t = self.oid_table if oid else self.clid_table
        cdef uint64_t i, h, n = self.table_mask + 1
        cdef Order* o
        cdef int32_t r
        if oid:
            for i in range(self.oid_direct_mask + 1):
                r = self.oid_direct[i]
                if r:
                    assert 0 < r <= self.slot_hwm and self.orders[r - 1].registered, f"direct entry {i}: slot {r - 1}"
                    assert (self.orders[r - 1].order_id & self.oid_direct_mask) == i, f"direct entry {i}: order id"
        for i in range(n):
            if t[i].ref == 0:
                assert t[i].disp == 0, f"empty entry {i} with a displacement"
                continue
            assert 0 < t[i].ref <= self.slot_hwm and self.orders[t[i].ref - 1].registered, f"entry {i}: ref {t[i].ref}"
            o = &self.orders[t[i].ref - 1]
            h = oid_hash(o.order_id) if oid else clid_hash(o.account, o.client_order_id)
            assert ((h + t[i].disp) & self.table_mask) == i, f"entry {i}: displacement {t[i].disp} off its home"
            assert t[i].tag == id_tag(h), f"entry {i}: tag"
            assert t[i].disp <= t[(i - 1) & self.table_mask].disp + 1, f"entry {i}: Robin Hood order"

    def _validate_risk(self):
        """Risk's open quantities equal the live orders' leaves, its reduce-only counts their
        reduce-only orders; its cached sums equal its figures; its pool, index and lists agree."""
        want = {}
        for a in range(self.max_accounts):
            for o in self.open_orders(a):
                w = want.setdefault((a, int(o["symbol"])), [0, 0, 0, 0])
                w[o["side"] - 1] += o["leaves"]
                if o["flags"] & FLAG_REDUCE_ONLY:
                    w[o["side"] + 1] += 1
        r = self.risk
        ent, accts, syms = r.entries()
        n_used, hwm, cap = r.position_count()
        assert len(ent) == n_used <= hwm <= cap, f"risk pool counts {n_used, hwm, cap}, {len(ent)} entries in use"
        assert np.count_nonzero(r.index_arr) == n_used, "risk index entries != the pool's entries in use"
        have = {}
        for k in range(len(ent)):
            key = (int(accts[k]), int(syms[k]))
            have[key] = [int(ent["open_buy"][k]), int(ent["open_sell"][k]), int(ent["ro_buy"][k]),
                         int(ent["ro_sell"][k])]
            assert r.has_entry(*key), f"risk entry {key} not found through the index"
            e = ent[k]
            assert e["listed"] or (e["pos"] == 0 and e["open_buy"] == 0 and e["open_sell"] == 0), \
                f"risk entry {key} holds a position or open orders but is not listed"
            assert e["listed"] or e["realized"] or e["fees"] or e["restricted"], \
                f"risk entry {key} holds nothing and is not listed (it should have been released)"
        for key, w in want.items():
            assert have.get(key, [0, 0, 0, 0]) == w, f"risk open qty / reduce-only counts of {key}: " \
                                                     f"{have.get(key)} != live orders' {w}"
        for key, h in have.items():
            assert key in want or h == [0, 0, 0, 0], f"risk open qty of {key}: {h} with no live order"
        for name, col in (("upnl_sum", "upnl"), ("expo_sum", "expo"), ("wexpo_sum", "wexpo"),
                          ("im_sum", "im"), ("mm_sum", "mm")):
            sums = np.zeros(self.max_accounts, dtype=np.int64)
            np.add.at(sums, accts, ent[col])
            assert (sums == r.acct_cols[name]).all(), f"risk {name} != the sum of its figures"
        for i, col in enumerate(("realized", "fees")):
            sums = np.zeros(self.max_accounts, dtype=np.int64)
            np.add.at(sums, accts, ent[col])
            assert (sums == r.sums_arr[i]).all(), f"risk {col} sums != the sum of its entries"
        listed = np.bincount(accts[ent["listed"] == 1], minlength=self.max_accounts)
        assert (listed == r.acct_cols["n_active"]).all(), "risk active lists out of step"
        dirty = np.bincount(accts[ent["dirty"] != 0], minlength=self.max_accounts)
        assert (dirty == r.acct_cols["n_dirty"]).all(), "risk dirty lists out of step"
        ro_total = np.zeros(self.max_accounts, dtype=np.int64)
        np.add.at(ro_total, accts, ent["ro_buy"].astype(np.int64) + ent["ro_sell"])
        assert (ro_total == r.ro_total_arr).all(), "risk reduce-only totals out of step"
        # between commands every resting reduce-only order is covered by its position (RISK.md)
        for k in np.nonzero((ent["ro_buy"] != 0) | (ent["ro_sell"] != 0))[0]:
            p, ob, os_ = int(ent["pos"][k]), int(ent["open_buy"][k]), int(ent["open_sell"][k])
            key = (int(accts[k]), int(syms[k]))
            assert not ent["ro_buy"][k] or (p < 0 and ob <= -p), f"uncovered reduce-only buy at {key}"
            assert not ent["ro_sell"][k] or (p > 0 and os_ <= p), f"uncovered reduce-only sell at {key}"


# What a RISK_TICK acts on (cmd_risk) and what makes one due (risk_tick_due): one definition.
cdef inline bint mark_behind(Engine e, Risk r, int32_t s) noexcept:
    """The symbol's mark lags its last trade, and marks follow trades (no EXTERNAL_MARK)."""
    return e.syms[s].has_last and e.syms[s].last != r.mark[s] and not r.override(LIM_EXTERNAL_MARK, 0, s)


cdef inline bint cooloff_over(Risk r, int32_t s, int64_t now) noexcept:
    """The symbol's breaker halt has a cool-off, and it is over at now."""
    return r.brk_tripped[s] and r.brk_resume[s] and now >= r.brk_resume[s]
