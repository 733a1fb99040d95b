# The surveillance loop's per-event bookkeeping in C++ (engine/surveil_core.pyx; the rules: engine/SURVEILLANCE.md).
from libc.stdint cimport int64_t
from libcpp.deque cimport deque
from libcpp.map cimport map as cmap
from libcpp.unordered_map cimport unordered_map

from protocol.cdefs cimport Event

# -- STATE --
# A live order, as surveillance.State.orders keeps it ([account, symbol, side, ...], the same order).
cdef struct Order:
    int64_t account
    int64_t symbol
    int64_t side
    int64_t price          # price units
    int64_t qty            # qty units, as accepted
    int64_t leaves
    int64_t filled
    int64_t ts             # ns, when accepted
    int64_t seq            # the command that placed it
    int64_t on_book        # 1: rests in a level (a LIMIT, or a triggered STOP_LIMIT)
    int64_t away           # 1: behind its side's best price when placed (spoofing)
    int64_t otype          # OrderType

# One of an owner's recent orders in a symbol (wash's opposite orders): State.recent's rows.
cdef struct Recent:
    int64_t ts
    int64_t side
    int64_t price
    int64_t order_id
    int64_t account
    int64_t seq

# One of an owner's fills in a symbol, either side (spoofing's and layering's window): State.fills' rows.
cdef struct FillRow:
    int64_t ts
    int64_t side           # the owner's side in it
    int64_t order_id       # the owner's order
    int64_t price
    int64_t qty
    int64_t seq

# One of an owner's aggressive fills in a symbol (momentum's window): State.aggr's rows.
cdef struct Aggr:
    int64_t ts
    int64_t side
    int64_t price
    int64_t qty
    int64_t order_id
    int64_t seq

# A momentum run that awaits its reversal: State.ignition's values.
cdef struct Ignition:
    int64_t side
    int64_t start          # ns, its first fill
    int64_t ts             # ns, its latest fill
    int64_t from_price
    int64_t to_price
    int64_t trades
    int64_t qty
    int64_t first_seq
    int64_t seq

ctypedef fused Row:        # the windows' rows, each starting with its ts
    Recent
    FillRow
    Aggr


cdef class Core:
    cdef object det                       # the surveillance.Detectors it serves (its Python detectors, its State)
    cdef dict wash_pending                # det.wash_pending (flushed at each command boundary)
    cdef dict large                       # det.s.large: symbol -> [LARGE_ORDER_QTY, LARGE_POSITION_QTY]
    cdef dict close_trades, close_ref     # det.s's, kept in Python (the close iterates them in their order)
    cdef unordered_map[int64_t, Order] orders                       # order id -> live order
    cdef unordered_map[int64_t, cmap[int64_t, int64_t]] levels      # symbol*4+side -> price -> resting qty
    cdef unordered_map[int64_t, deque[Recent]] recent               # owner index << 32 | symbol -> its orders
    # the same rows by price and side (price*4+side), each in recent's order: wash's scan for an opposite
    # order at one price reads only those (recent's rows leave from the front, so do these)
    cdef unordered_map[int64_t, unordered_map[int64_t, deque[Recent]]] recent_at
    cdef unordered_map[int64_t, deque[int64_t]] msgs                # account -> order-entry message times
    cdef unordered_map[int64_t, deque[int64_t]] trades              # account -> trade times
    cdef unordered_map[int64_t, int64_t] msg_episode                # account -> ts of an open episode's last breach
    cdef unordered_map[int64_t, int64_t] acct_owner                 # account -> owner index (det.owner_index)
    cdef unordered_map[int64_t, deque[FillRow]] fills               # owner index << 32 | symbol -> its fills
    cdef unordered_map[int64_t, deque[Aggr]] aggr                   # owner index << 32 | symbol -> as taker
    cdef unordered_map[int64_t, Ignition] ignition                  # owner index << 32 | symbol -> its run
    cdef bint large_on, wash_on, spoof_on, layering_on, msg_on, close_on, momentum_on
    cdef int64_t spoof_min_qty, min_away, wash_window_ns, cancel_ns, fill_keep
    cdef int64_t momo_window_ns, reversal_ns, min_trades, momo_min_qty, min_move_bps, close_window_ns
    cdef int64_t msg_window_ns, max_messages, min_messages, max_order_to_trade
    cdef int64_t close_tod                # ns into the day of close.close_time; -1: none

    # -- EVENTS --
    cdef int accepted(self, const Event* e, int64_t otype) except -1
    cdef int cancelled(self, const Event* e) except -1
    cdef int fill(self, const Event* e) except -1
    cdef int reduce(self, int64_t oid, int64_t qty, int64_t leaves) except -1
    cdef int level_add(self, int64_t symbol, int64_t side, int64_t price, int64_t qty) except -1
    cdef int other_event(self, const Event* e, int64_t otype) except -1
    cdef int momentum(self, int64_t taker, int64_t maker, int64_t taker_owner, int64_t maker_owner, int64_t sym,
                      int64_t side, int64_t price, int64_t qty, int64_t oid, int64_t seq, int64_t ts) except -1
    cdef int close_trade(self, int64_t sym, int64_t price, int64_t qty, int64_t taker, int64_t side, int64_t seq,
                         int64_t ts) except -1
    # -- MESSAGING --
    cdef int message(self, int64_t acct, int64_t seq, int64_t ts) except -1
    # -- OWNERS --
    cdef int64_t owner_key(self, int64_t acct, int64_t symbol) except -1
    cdef int64_t owner_of(self, int64_t acct) except -1
    cdef str key_name(self, int64_t key)
