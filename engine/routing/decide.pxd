# The router's decision in C (engine/ROUTING.md "Speed"): the venues' shown books as preallocated
# arrays, the split of an order over them (a merge of the venues' ladders by all-in price, then venue
# rank), its child orders packed as wire frames, and the journal batch's records packed beside them.
# Python (engine/routing/router.py) owns the state; this reads it (the next child client order id
# per venue) and writes only into its own buffers, which the router commits, then writes.
from libc.stdint cimport uint8_t, uint32_t, int32_t, int64_t, uint64_t


cdef class Split:
    # -- BOOKS --
    cdef readonly int n_venues
    """venues, indexed 1..n_venues ([[venues]] order); 0 unused"""
    cdef readonly int n_levels
    """levels kept per side per venue (router.toml depth_levels): deeper levels are not seen"""
    cdef readonly int n_slots
    """symbols (the router's [[symbols]], each a slot 0..n_slots-1)"""
    cdef int64_t[:, :, :, ::1] px       # [slot, venue, side (0 bid, 1 ask), level] price, best first
    cdef int64_t[:, :, :, ::1] qt       # ... quantity shown (> 0)
    cdef int32_t[:, :, ::1] nlev        # [slot, venue, side] levels held
    cdef int64_t[:, ::1] vsym           # [slot, venue] the venue's symbol id, -1: the venue does not trade it
    cdef int64_t[::1] taker             # [venue] taker fee, basis points
    cdef int64_t[::1] rank              # [venue] tie-break order among venues up (lower first), -1: down
    cdef uint64_t[::1] next_clid        # [venue] next child client order id (the router State's array)

    # -- THE SPLIT --
    cdef uint64_t[:, ::1] out           # [child, (venue, client order id, qty, worst price)]
    cdef readonly int64_t left
    """quantity the last split could not place"""

    # -- THE CLIENT'S NEW_ORDER (the whole accepted path in one call: Split.new_orders) --
    cdef int32_t[::1] sym_slot          # [router symbol id] -> slot, -1: not a symbol of the router
    cdef int64_t[:, ::1] rule           # [slot, (lot, tick, max qty, max price)]
    cdef uint64_t max_clid              # the highest client order id a client may use
    cdef uint64_t[:, ::1] fast          # [order, (input index, first output, outputs, quantity left)]
    cdef readonly int64_t n_fast
    """orders new_orders took whose state the router has not applied yet (Router.settle)"""
    cdef object _fast

    # -- THE BATCH --
    cdef uint8_t[::1] ibuf              # RouteInput records, 120 bytes each
    cdef uint8_t[::1] obuf              # RouteOutput records, 128 bytes each
    cdef uint8_t[:, ::1] vbuf           # [venue, byte]: frames to write to each venue, in order
    cdef int64_t[::1] vpos              # [venue] bytes used in vbuf
    cdef uint64_t[:, ::1] meta          # [frame, (venue, client order id, msg type, qty, offset, recv ns)]
    cdef readonly int64_t n_in
    """RouteInput records in the open batch"""
    cdef readonly int64_t n_out
    """RouteOutput records in the open batch"""
    cdef readonly int64_t n_frames
    """frames to venues in the open batch"""
    cdef object _ibuf, _obuf, _vbuf, _meta   # the numpy arrays behind the views (grown by doubling)

    cdef int _walk(self, Py_ssize_t slot, int side, int64_t qty, int64_t limit, bint has_limit) noexcept nogil
    cdef void _emit(self, Py_ssize_t slot, int n, int side, uint8_t tif, uint32_t account, uint64_t seq,
                    uint64_t parent, int64_t recv_ns, bint advance) noexcept
    cdef int _accepts(self, const uint8_t* o, uint64_t last_clid) noexcept nogil
    cdef void _meta_row(self, uint64_t venue, uint64_t clid, uint64_t msg_type, int64_t qty, int64_t offset,
                        int64_t recv_ns) noexcept
    cdef int _room(self, int64_t n_in, int64_t n_out, int64_t frames, int64_t venue_bytes) except -1
