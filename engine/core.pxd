# The matching core's contract: data layout and the C-level entry points.
# Rules it implements: engine/RULES.md. Record layouts: protocol/records.py.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from protocol.cdefs cimport Command, Event
from engine.risk cimport Risk

# -- DOMAIN SCALARS --
ctypedef int64_t ticks_t    # a price in the symbol's price units
ctypedef int64_t lots_t     # a quantity in the symbol's qty units
ctypedef int32_t slot_t     # index into an array; -1 = none

# Order.flags bit of a child order an execution algorithm placed (engine/algos.pyx); also Command.flags
# of that child's NEW_ORDER, honoured only while the algorithms run it (Engine.algo_depth > 0).
cdef enum:
    OFLAG_ALGO_CHILD = 0x40

# The execution algorithms' hooks (engine/algos.pyx sets them when attached): (algos, engine, first event).
ctypedef int (*algo_hook)(object algos, object eng, Py_ssize_t start) except -1

# Ladder kinds: symbol s owns ladders s*4 + kind (also read by engine/marketdata.pyx).
cdef enum:
    LADDER_BIDS = 0        # key = price: best (highest) last
    LADDER_ASKS = 1        # key = -price: best (lowest) last
    LADDER_BUY_STOPS = 2   # key = -stop: the lowest stop (first to trigger on a rise) last
    LADDER_SELL_STOPS = 3  # key = stop: the highest stop (first to trigger on a fall) last

# -- LAYOUT --
# One order slot: 128 bytes, two cache lines, naturally aligned.
cdef packed struct Order:
    int64_t price            # @0   limit price (0 for market / stop-market)
    int64_t stop_price       # @8   trigger price of a stop (kept after trigger)
    int64_t qty              # @16  filled + leaves (what the order is for, after amends)
    int64_t leaves           # @24  remaining quantity, hidden part included
    int64_t shown            # @32  matchable displayed slice while RESTING, else 0
    int64_t display          # @40  iceberg slice size, 0 = fully displayed
    int64_t filled           # @48  cumulative filled quantity
    int64_t expire_ts_ns     # @56  GTD expiry
    uint64_t order_id        # @64  engine-assigned, 1, 2, ...
    uint64_t client_order_id # @72  client-assigned, increasing per account
    int32_t next             # @80  next order in its level's FIFO (towards the back), -1 = tail
    int32_t prev             # @84  previous order (towards the head), -1 = head
    int32_t level            # @88  level pool index while on a ladder, else -1
    int32_t acct_next        # @92  account's live orders, acceptance order; also free-list link
    int32_t acct_prev        # @96
    int32_t tif_next         # @100 DAY or GTD list, acceptance order
    int32_t tif_prev         # @104
    uint32_t account         # @108
    uint32_t symbol          # @112
    uint32_t strategy        # @116
    uint8_t side             # @120 Side
    uint8_t order_type       # @121 OrderType (a triggered stop becomes LIMIT / MARKET)
    uint8_t tif              # @122 TimeInForce
    uint8_t stp              # @123 SelfTradePrevention
    uint8_t flags            # @124 OrderFlag bits; OFLAG_LIQUIDATION (core.pyx) for engine liquidation orders
    uint8_t state            # @125 OrderState
    uint8_t registered       # @126 1 while in the id tables and the account/TIF lists
    uint8_t _pad             # @127

# One id-table entry: 8 bytes, so a block of 16 entries is one 128-byte pair of cache lines and a
# probe reads one array (the slot and its displacement used to be in two arrays, two lines).
cdef packed struct IdEntry:
    int32_t ref              # @0   order slot + 1, 0 = empty (zeroed memory: pages cost nothing until used)
    uint16_t disp            # @4   distance from its home position
    uint16_t tag             # @6   16 bits of the key's hash (id_tag): a lookup reads the order slot
                             #      only when they match, never for the other keys of the run

# One price level: 64 bytes, one cache line (the pool is 64-byte aligned). A FIFO of orders linked
# through Order.next/prev.
cdef packed struct Level:
    int64_t price            # @0
    int64_t shown            # @8   sum of the orders' shown qty (what depth publishes)
    int64_t total            # @16  sum of the orders' leaves
    int32_t head             # @24  oldest order slot
    int32_t tail             # @28  newest order slot
    int32_t count            # @32  orders in the FIFO
    int32_t next_free        # @36  free-list link while unused
    uint32_t ladder          # @40  ladder index: symbol * 4 + LADDER_*
    uint32_t _pad            # @44
    int64_t _pad2            # @48
    int64_t _pad3            # @56

# One entry of a ladder: a price key and its level, 16 bytes (4 to a cache line: the best entry's key
# and level are read together).
cdef packed struct LadderEntry:
    int64_t key              # @0   price (bids, sell stops) or -price (asks, buy stops)
    int32_t level            # @8   its level pool index
    int32_t _pad             # @12

# One ladder's header: 16 bytes, so a symbol's 4 ladders share one cache line (the array is aligned).
cdef packed struct Ladder:
    LadderEntry* ent         # @0   its chunk's entries, keys ascending; best = last
    int32_t count            # @8   prices on the ladder
    int32_t cap              # @12  its chunk's entries (a power of two; 0 = no chunk yet)

# One symbol's checks and best prices: 64 bytes, one cache line (the array is aligned): what a new
# order's checks read, and the best bid and ask (so an order that does not cross reads nothing of the
# opposite ladder but its count).
cdef packed struct Symbol:
    int64_t tick             # @0
    int64_t lot              # @8
    int64_t max_price        # @16
    int64_t max_qty          # @24
    int64_t best_bid         # @32  the bids' last key (the best bid) while they hold a price
    int64_t best_ask_key     # @40  the asks' last key (-the best ask) likewise
    int64_t last             # @48  last trade price (valid if has_last)
    uint8_t has_last         # @56
    uint8_t state            # @57  0 = not defined, else SymbolState
    uint8_t _pad[6]          # @58


cdef class Engine:
    # -- CAPACITY (readonly) --
    cdef readonly int32_t max_orders
    """Order slots."""
    cdef readonly int32_t max_accounts
    cdef readonly int32_t max_symbols
    cdef readonly int32_t max_levels
    """Prices per ladder (each symbol has 4 ladders: bids, asks, buy stops, sell stops)."""
    cdef readonly int32_t max_level_slots
    """Price levels of all ladders together: the shared level pool (engine/CAPACITY.md)."""

    # -- ARRAYS (numpy-owned; raw pointers below) --
    cdef readonly object orders_arr, levels_arr, ladders_arr
    cdef readonly object oid_direct_arr, oid_table_arr, clid_table_arr, queue_arr, events_arr
    cdef readonly object sym_arr, acct_arr
    cdef readonly list ladder_segments  # the ladder pool: [LadderEntry arrays], chunks carved from them
    cdef Order* orders
    cdef Level* levels
    # Ladders grow: each ladder's entries live in a chunk of the ladder pool (a power of two of
    # entries, from LADDER_MIN_CHUNK up), moved to a chunk twice as big when full.
    cdef Ladder* ladders          # per ladder (symbol * 4 + LADDER_*)
    cdef LadderEntry* chunk_free[32]  # per chunk size class (log2): free chunks, linked through their first key
    cdef LadderEntry* seg_ent     # the newest segment: chunks are carved from [seg_used, seg_size)
    cdef int64_t seg_used, seg_size
    # Order ids are assigned 1, 2, 3, ...: the order-id map is direct, order_id & oid_direct_mask ->
    # slot + 1 (0 = none), so the recent orders' entries are neighbours; an entry still held by a live
    # order one map size (or more) older when its id comes round again moves that order to the
    # spill table, oid_table (engine/CAPACITY.md "Id tables").
    cdef int32_t* oid_direct
    cdef uint64_t oid_direct_mask
    cdef IdEntry* oid_table       # the spill table: order_id -> slot, Robin Hood linear probing
    cdef IdEntry* clid_table      # (account, client_order_id) -> slot, likewise
    cdef bint long_runs           # an entry was placed DISP_MAX - 1 from home: NEW_ORDER asks ids_fit
    cdef uint64_t table_mask
    cdef int32_t* queue           # stop trigger FIFO (slots)
    cdef int32_t q_head, q_tail

    # per symbol: one 64-byte record (sym_arr, SYMBOL_DTYPE)
    cdef Symbol* syms
    # per account
    cdef uint64_t* acct_last_clid
    cdef int64_t* acct_stp_key
    cdef int32_t* acct_head
    cdef int32_t* acct_tail
    cdef int32_t* acct_open
    cdef uint8_t* acct_defined

    # -- RISK --
    cdef readonly Risk risk
    """Pre-trade risk, positions and margin (engine/risk.pyx), or None: matching only."""

    # -- EXECUTION ALGORITHMS (engine/algos.pyx, engine/ALGOS.md) --
    cdef readonly object algos
    """The parent orders (engine/algos.pyx Algos), or None: ALGO_* commands are rejected ALGOS_OFF."""
    cdef algo_hook algo_command     # ALGO_* commands
    cdef algo_hook algo_observe     # after every other command: its events (children's fills, volume)
    cdef int32_t algo_depth         # > 0 while the algorithms run a child command

    # -- COUNTERS --
    cdef readonly uint64_t next_order_id
    cdef readonly uint64_t next_trade_id
    cdef readonly int64_t clock_ns
    """Greatest EXPIRE time seen."""
    cdef readonly int32_t live_orders
    """Orders resting or untriggered."""
    cdef readonly int32_t used_slots
    cdef readonly int32_t slot_hwm
    """Order slots ever used: [0, slot_hwm) (taken lowest first)."""
    cdef readonly int32_t level_hwm
    """Level slots ever used: [0, level_hwm) (taken lowest first)."""
    cdef int32_t free_head        # released order slots (last released first); then slot_hwm, never used
    cdef int32_t level_free_head  # released level slots; then level_hwm
    cdef int32_t day_head, day_tail, gtd_head, gtd_tail

    # -- EVENTS --
    cdef Event* ev_buf
    cdef readonly Py_ssize_t ev_count
    cdef Py_ssize_t ev_cap
    cdef const Command* cur     # the command being processed

    # -- SWEEP STATE --
    cdef int64_t sw_lo, sw_hi
    cdef bint sw_traded

    # -- ENTRY POINTS --
    cdef int process_one(self, const Command* cmd) except -1
    cdef int grow_events(self) except -1

    # -- COMMANDS --
    cdef bint account_ok(self, uint32_t a) noexcept
    cdef bint symbol_ok(self, uint32_t sym) noexcept
    cdef int cmd_new(self) except -1
    cdef int cmd_cancel(self) except -1
    cdef int cmd_amend(self) except -1
    cdef int cmd_mass_cancel(self) except -1
    cdef int cmd_end_of_day(self) except -1
    cdef int cmd_expire(self) except -1
    cdef int cmd_symbol_state(self, uint8_t state) except -1
    cdef int cmd_risk(self) except -1
    cdef int cmd_add_account(self) except -1
    cdef int cmd_kyc(self) except -1
    cdef int cmd_disposition(self) except -1
    cdef int cmd_var_update(self) except -1
    cdef slot_t new_slot(self, uint32_t account, uint32_t symbol, uint8_t side, uint8_t order_type, uint8_t tif,
                         uint8_t stp, uint8_t flags, int64_t price, int64_t stop_price, int64_t qty,
                         int64_t display, int64_t expire_ts_ns, uint64_t client_order_id, uint32_t strategy) noexcept

    # -- RISK ORCHESTRATION (engine/RISK.md) --
    cdef int risk_after(self, Py_ssize_t start) except -1
    cdef int risk_act(self, Risk r) except -1
    cdef int reduce_only_step(self, uint32_t a) except -1
    cdef void count_reduce_only(self) noexcept
    cdef int margin_step(self, uint32_t a) except -1
    cdef int place_liquidation(self, uint32_t a, uint32_t symbol, uint8_t side, int64_t qty) except -1
    cdef int cancel_account(self, uint32_t a, uint16_t reason) except -1
    cdef int set_symbol_state(self, uint32_t symbol, uint8_t state) except -1
    cdef Event* emit_account(self, uint8_t kind, uint32_t a) except NULL

    # -- MATCHING --
    cdef int execute(self, slot_t s) except -1
    cdef bint fok_can_fill(self, slot_t s, int64_t bound) noexcept
    cdef int trigger_stops(self, uint32_t symbol) except -1
    cdef int run_triggers(self) except -1
    cdef bint crosses(self, uint32_t symbol, uint8_t side, int64_t price) noexcept
    cdef int64_t best_price(self, uint32_t symbol, uint8_t side) noexcept

    # -- BOOK MAINTENANCE --
    cdef int32_t ladder_find(self, int32_t ladder, int64_t key, bint* found) noexcept
    cdef bint ladder_has_room(self, int32_t ladder, int64_t key) noexcept
    cdef int ladder_grow(self, int32_t ladder, int32_t cap) except -1
    cdef int new_segment(self, int64_t size) except -1
    cdef int32_t level_get(self, int32_t ladder, int64_t price) except -1
    cdef void level_drop(self, int32_t lv) noexcept
    cdef void fifo_append(self, int32_t lv, slot_t s) noexcept
    cdef void fifo_unlink(self, slot_t s) noexcept
    cdef int rest(self, slot_t s) except -1
    cdef void unrest(self, slot_t s) noexcept

    # -- ORDER LIFECYCLE --
    cdef void register(self, slot_t s) noexcept
    cdef void release(self, slot_t s) noexcept
    cdef int cancel_order(self, slot_t s, uint16_t reason) except -1
    cdef slot_t find_order(self, uint32_t account, uint64_t order_id, uint64_t client_order_id) noexcept

    # -- ID TABLES --
    cdef void table_insert(self, IdEntry* table, slot_t s, uint64_t h) noexcept
    cdef void table_erase(self, IdEntry* table, slot_t s, uint64_t h) noexcept
    cdef bint table_fits(self, IdEntry* table, uint64_t h) noexcept
    cdef bint ids_fit(self, uint32_t account, uint64_t client_order_id) noexcept
    cdef slot_t find_by_id(self, uint64_t order_id) noexcept

    # -- EVENTS --
    cdef Event* emit(self, uint8_t kind, slot_t s) except NULL
    cdef int reject(self, uint16_t reason) except -1
    cdef dict _order_dict(self, slot_t s)
