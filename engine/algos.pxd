# Execution algorithms: parent orders (TWAP, VWAP, IS, POV) as engine state. Rules: engine/ALGOS.md.
# The core calls in through two hooks it holds as C function pointers (Engine.algo_command for the
# ALGO_* commands, Engine.algo_observe after every other command); children enter the core as
# ordinary NEW_ORDER / CANCEL commands through Engine.process_one, risk checks and all.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from protocol.cdefs cimport Command, Event
from engine.core cimport Engine

# -- LAYOUT --
# One parent: 232 bytes, naturally aligned (algos.pyx PARENT_DTYPE mirrors it; a test compares sizes).
cdef packed struct Parent:
    uint64_t parent_id        # @0   engine-assigned 1, 2, ...; 0 = a free slot
    uint64_t client_order_id  # @8   the client's id of the parent; its children carry it too
    uint64_t child_oid        # @16  the working (resting) child's order id, 0 = none
    uint64_t rng              # @24  splitmix64 state (randomization), seeded at acceptance
    int64_t qty               # @32  total, qty units
    int64_t filled            # @40
    int64_t notional          # @48  sum of price * qty of the children's fills (price units x qty units)
    int64_t child_leaves      # @56  the working child's remaining qty
    int64_t limit             # @64  0 = none
    int64_t arrival           # @72  mid (else last trade) at acceptance, 0 = none
    int64_t start_ns          # @80
    int64_t end_ns            # @88
    int64_t next_ns           # @96  POV: the end of its current participation interval
    int64_t expected          # @104 what the schedule expected filled at the last clock
    int64_t vol_base          # @112 the symbol's traded volume when the parent started (market VWAP)
    int64_t last_target       # @120 the target of the slice before the last one due (catch-up line)
    uint32_t account          # @128
    uint32_t symbol           # @132
    uint32_t strategy         # @136 the children's strategy id
    uint32_t children         # @140 children sent
    int32_t offset_ticks      # @144 passive children: ticks behind the own-side touch
    uint16_t slices           # @148
    uint16_t slice_idx        # @150 slices due so far
    uint16_t rand_bps         # @152
    uint16_t aggr_bps         # @154
    uint16_t part_bps         # @156
    uint16_t pause_reason     # @158 the Reject code that refused a child (0 = paused by its owner)
    uint16_t risk_aversion    # @160 IS lambda, 1e-6 per bp
    uint16_t volatility       # @162 IS sigma, 1/100 bp per sqrt(s)
    uint16_t impact           # @164 IS eta, 1/100 bp per (share of the order per second)
    uint8_t side              # @166
    uint8_t algo              # @167 AlgoKind
    uint8_t state             # @168 AlgoState
    uint8_t end_action        # @169 AlgoEnd CANCEL / SWEEP
    uint8_t kick              # @170 1: act on the current slice at the next clock (resume, amend)
    uint8_t _pad0             # @171
    uint32_t _pad1            # @172
    uint64_t notional_base    # @176 the symbol's traded notional when the parent started (market VWAP)
    # the current interval (POV: window / slices; VWAP: the slice): the participation cap and interval VWAP
    int64_t iv_vol_base       # @184 the symbol's traded volume when the interval began
    int64_t iv_filled         # @192 the parent's filled when the interval began
    uint64_t iv_notional_base # @200 the symbol's traded notional when the interval began (mod 2**64)
    int64_t iv_notional       # @208 the parent's notional when the interval began
    int64_t bench_notional    # @216 the parent's notional of its fills in closed intervals with market volume
    int64_t bench_market      # @224 those fills' quantity priced at their interval's market VWAP (floored)


cdef class Algos:
    # -- CAPACITY (readonly) --
    cdef readonly int32_t max_parents
    cdef readonly int32_t max_slices
    """Schedule entries per parent."""
    cdef readonly int32_t max_symbols, max_accounts

    # -- ARRAYS (numpy-owned; raw pointers below) --
    cdef readonly object parents_arr, sched_t_arr, sched_q_arr, map_key_arr, map_val_arr
    cdef readonly object sym_volume_arr, sym_notional_arr, acct_parents_arr, bucket_arr, bucket_px_arr, profile_arr
    cdef Parent* P
    cdef int64_t* sched_t         # [parent * max_slices + i]: when slice i is due (ns)
    cdef int64_t* sched_q         # [parent * max_slices + i]: cumulative quantity due by slice i
    cdef uint64_t* map_key        # working child order id -> parent slot (linear probing, 0 = empty)
    cdef int32_t* map_val
    cdef uint64_t map_mask
    cdef int64_t* sym_volume      # per symbol: traded quantity since the start (every FILL)
    cdef uint64_t* sym_notional   # per symbol: sum of price * qty, modulo 2**64 (windows take differences)
    cdef int32_t* acct_parents    # per account: live parents (0: its fills need no lookup)
    cdef int64_t* bucket          # per symbol, N_BUCKETS ring of traded volume per bucket_ns (VWAP profile)
    cdef int64_t* bucket_px       # per symbol, beside it: the last trade price when each bucket closed (IS sigma)
    cdef int64_t* profile         # configured VWAP profile weights (n_profile of them)

    # -- STATE --
    cdef readonly uint64_t next_parent_id
    cdef readonly int64_t clock_ns
    """The greatest ALGO_CLOCK time seen."""
    cdef readonly int64_t bucket_start_ns
    cdef readonly int32_t bucket_head
    cdef readonly int32_t active
    """Live parents."""
    cdef readonly int32_t hwm
    """Parent slots ever used: [0, hwm)."""
    cdef readonly uint64_t children_spawned
    # -- METRICS (not state: counted as parents end, the replayed journal tail included) --
    cdef readonly object slip_counts_arr
    cdef uint64_t* slip_counts    # ALGO_DONE slippage histogram over SLIP_BOUNDS_CBPS (+ one above)
    cdef readonly int64_t slip_sum_cbps

    # -- CONFIG (not state: the same config replays the same journal) --
    cdef readonly uint64_t seed
    cdef readonly int32_t default_slices
    cdef readonly int64_t max_duration_ns
    cdef readonly int64_t bucket_ns
    cdef readonly int32_t n_profile

    # -- ENTRY POINTS (the core's hooks) --
    cdef int command(self, Engine eng) except -1
    cdef int observe(self, Engine eng, Py_ssize_t start) except -1

    # -- COMMANDS --
    cdef int cmd_new(self, Engine eng) except -1
    cdef int cmd_clock(self, Engine eng) except -1
    cdef int cmd_action(self, Engine eng) except -1
    cdef int32_t find(self, uint32_t account, uint64_t parent_id, uint64_t clid) noexcept
    cdef uint16_t volatility(self, uint32_t symbol) noexcept

    # -- SCHEDULES --
    cdef int plan(self, Engine eng, int32_t i) except -1
    cdef int step(self, Engine eng, int32_t i, int64_t now) except -1
    cdef void interval(self, int32_t i) noexcept
    cdef int64_t allowance(self, int32_t i, int64_t lot) noexcept
    cdef int work(self, Engine eng, int32_t i, int64_t target, int64_t catchup) except -1
    cdef int finish(self, Engine eng, int32_t i) except -1

    # -- CHILDREN --
    cdef int send_child(self, Engine eng, int32_t i, int64_t price, int64_t qty, uint8_t tif) except -1
    cdef int cancel_child(self, Engine eng, int32_t i) except -1
    cdef int on_fill(self, Engine eng, int32_t i, int64_t price, int64_t qty, int64_t leaves) except -1

    # -- REPORTS AND SLOTS --
    cdef Event* report(self, Engine eng, uint8_t kind, int32_t i, uint16_t reason) except NULL
    cdef int release(self, Engine eng, int32_t i, uint16_t reason) except -1
    cdef void map_put(self, uint64_t oid, int32_t i) noexcept
    cdef int32_t map_get(self, uint64_t oid) noexcept
    cdef void map_del(self, uint64_t oid) noexcept
