# Pre-trade risk, positions, P&L and margin: data layout and the C-level entry points.
# Rules and arithmetic: engine/RISK.md. The matching core (core.pyx) owns a Risk and calls
# it: check_order before an order is accepted, on_event for every event it emits, and the
# margin/breaker hooks after each command. Risk never calls back into the core.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from protocol.cdefs cimport *

# Exact integer helpers (C) and the limit-table constants: here, not in risk.pyx, because the
# core compiles the order checks (check_order below) and the open quantity fold inline.
cdef extern from *:
    """
    #include <stdint.h>
    typedef __int128 te_i128;
    #define TE_I128_MAX ((te_i128)(((unsigned __int128)1 << 127) - 1))
    #define TE_I128_MIN (-TE_I128_MAX - 1)

    /* Each helper has a 64-bit fast path (every product checked with __builtin_mul_overflow,
       which is one imul and a jump) and falls back to exact 128-bit arithmetic, which
       saturates instead of wrapping. Only the final division rounds. */
    static inline te_i128 te_mul(te_i128 a, te_i128 b) {
        te_i128 r;
        if (__builtin_mul_overflow(a, b, &r)) return ((a < 0) != (b < 0)) ? TE_I128_MIN : TE_I128_MAX;
        return r;
    }
    static inline int64_t te_sat64(te_i128 x) {
        return x > INT64_MAX ? INT64_MAX : (x < INT64_MIN ? INT64_MIN : (int64_t)x);
    }
    static inline int64_t te_div64(int64_t x, int64_t d, int mode) {
        int64_t q = x / d, r = x % d;
        if (r != 0 && ((mode == 0 && x < 0) || (mode == 1 && x > 0))) q += mode ? 1 : -1;
        return q;
    }
    static __attribute__((noinline)) int64_t te_muldiv_slow(int64_t a, int64_t b, int64_t c, int64_t e,
                                                           int64_t d1, int64_t d2, int mode) {
        te_i128 x = te_mul(te_mul(te_mul(a, b), c), e);
        te_i128 d = (te_i128)d1 * (te_i128)d2;
        te_i128 q = x / d, r = x % d;
        if (r != 0 && ((mode == 0 && x < 0) || (mode == 1 && x > 0))) q += mode ? 1 : -1;
        return te_sat64(q);
    }
    /* round(a * b * c * e / (d1 * d2)), d1, d2 > 0; mode 0 = floor, 1 = ceil. Saturating. */
    static inline int64_t te_muldiv(int64_t a, int64_t b, int64_t c, int64_t e, int64_t d1, int64_t d2, int mode) {
        int64_t x, d;
        if (!__builtin_mul_overflow(a, b, &x) && !__builtin_mul_overflow(x, c, &x) &&
                !__builtin_mul_overflow(x, e, &x) && !__builtin_mul_overflow(d1, d2, &d))
            return te_div64(x, d, mode);
        return te_muldiv_slow(a, b, c, e, d1, d2, mode);
    }
    /* a * b > c * d, exactly (int64 x int64 always fits 128 bits). */
    static inline int te_gt(int64_t a, int64_t b, int64_t c, int64_t d) {
        int64_t x, y;
        if (!__builtin_mul_overflow(a, b, &x) && !__builtin_mul_overflow(c, d, &y)) return x > y;
        return (te_i128)a * b > (te_i128)c * d;
    }
    /* a * b * c > x * y (a saturated product compares as an infinity) */
    static inline int te_gt3(int64_t a, int64_t b, int64_t c, int64_t x, int64_t y) {
        int64_t l, r;
        if (!__builtin_mul_overflow(a, b, &l) && !__builtin_mul_overflow(l, c, &l) &&
                !__builtin_mul_overflow(x, y, &r)) return l > r;
        return te_mul(te_mul(a, b), c) > (te_i128)x * y;
    }
    /* Division by a symbol's den, which is fixed once the symbol is defined: a multiply-high and
       shifts instead of a hardware divide (the invariant-divisor method of Granlund and
       Montgomery, as in Hacker's Delight 10-9; magic 0 means den is a power of two). */
    #define TE_DIV_ADD 0x40
    static inline void te_udiv_gen(uint64_t d, uint64_t* magic, uint8_t* more) {
        if ((d & (d - 1)) == 0) { *magic = 0; *more = (uint8_t)__builtin_ctzll(d); return; }
        uint32_t l = 63 - __builtin_clzll(d);
        unsigned __int128 n = (unsigned __int128)1 << (64 + l);
        uint64_t m = (uint64_t)(n / d), rem = (uint64_t)(n % d);
        if (d - rem < ((uint64_t)1 << l)) {
            *more = (uint8_t)l;
        } else {
            uint64_t twice = rem + rem;
            m += m;
            if (twice >= d || twice < rem) m += 1;
            *more = (uint8_t)(l | TE_DIV_ADD);
        }
        *magic = m + 1;
    }
    static inline uint64_t te_udiv(uint64_t n, uint64_t magic, uint8_t more) {
        if (magic == 0) return n >> more;
        uint64_t q = (uint64_t)(((unsigned __int128)magic * n) >> 64);
        if (more & TE_DIV_ADD) return (((n - q) >> 1) + q) >> (more & 0x3F);
        return q >> more;
    }
    /* floor (mode 0) or ceil (mode 1) of x / d, d > 0, with d's magic */
    static inline int64_t te_qdiv(int64_t x, uint64_t d, uint64_t magic, uint8_t more, int mode) {
        uint64_t n;
        if (x >= 0) {
            n = (uint64_t)x + (mode ? d - 1 : 0);
            return (int64_t)te_udiv(n, magic, more);
        }
        n = (uint64_t)0 - (uint64_t)x + (mode ? 0 : d - 1);
        return (int64_t)((uint64_t)0 - te_udiv(n, magic, more));
    }
    /* round(a * b * c * e / den) with den's magic: the notional helper of every valuation */
    static inline int64_t te_mulq(int64_t a, int64_t b, int64_t c, int64_t e, int64_t den, uint64_t magic,
                                  uint8_t more, int mode) {
        int64_t x;
        if (!__builtin_mul_overflow(a, b, &x) && !__builtin_mul_overflow(x, c, &x) &&
                !__builtin_mul_overflow(x, e, &x))
            return te_qdiv(x, (uint64_t)den, magic, more, mode);
        return te_muldiv_slow(a, b, c, e, den, 1, mode);
    }
    /* the new average entry price: (avg * n + price * q) / (n + q), rounded half up (all >= 0) */
    static inline int64_t te_avg(int64_t avg, int64_t n, int64_t price, int64_t q) {
        int64_t t1, t2, t, m = n + q;
        if (!__builtin_mul_overflow(avg, n, &t1) && !__builtin_mul_overflow(price, q, &t2) &&
                !__builtin_add_overflow(t1, t2, &t) && !__builtin_add_overflow(t, m / 2, &t))
            return t / m;
        te_i128 total = (te_i128)avg * n + (te_i128)price * q;
        return te_sat64((total + m / 2) / m);
    }
    """
    int64_t te_muldiv(int64_t a, int64_t b, int64_t c, int64_t e, int64_t d1, int64_t d2, int mode) noexcept nogil
    bint te_gt(int64_t a, int64_t b, int64_t c, int64_t d) noexcept nogil
    bint te_gt3(int64_t a, int64_t b, int64_t c, int64_t x, int64_t y) noexcept nogil
    int64_t te_avg(int64_t avg, int64_t n, int64_t price, int64_t q) noexcept nogil
    void te_udiv_gen(uint64_t d, uint64_t* magic, uint8_t* more) noexcept nogil
    int64_t te_qdiv(int64_t x, uint64_t d, uint64_t magic, uint8_t more, int mode) noexcept nogil
    int64_t te_mulq(int64_t a, int64_t b, int64_t c, int64_t e, int64_t den, uint64_t magic, uint8_t more,
                    int mode) noexcept nogil
    int64_t te_div64(int64_t x, int64_t d, int mode) noexcept nogil

cdef enum:
    FLOOR = 0
    CEIL = 1

# Compile-time constants (C macros), not module variables: the compiler folds them into the checks.
cdef extern from *:
    """
    #define TE_UNSET INT64_MIN
    #define TE_NO_CAP INT64_MAX
    #define TE_QTY_BOUND ((int64_t)1 << 62)
    """
    const int64_t UNSET "TE_UNSET"            # a limit table entry no one set
    const int64_t NO_CAP "TE_NO_CAP"          # a CAP no scope sets (eff tables)
    const int64_t QTY_BOUND "TE_QTY_BOUND"    # no worst-case position beyond this is ever accepted
    const uint32_t NO_STRATEGY "UINT32_MAX"   # Risk.cap() without the strategy scope


# -- DOMAIN SCALARS --
ctypedef int64_t cash_t     # quote-currency minor units (risk.cash_decimals)
ctypedef int64_t bps_t      # basis points, 1/10000

# The not-set value of a limit table entry (0 is a real value: e.g. a zero fee).
cdef enum:
    N_LIMITS = 25           # LimitKind values are 1..24; index 0 unused
    DIRTY_OPEN = 1          # Position.dirty: open quantities changed (wexpo, im stale)
    DIRTY_ALL = 3           # position, mark or margin rates changed: every cached figure stale
    WHI_UNKNOWN = -1        # Risk.whi: no bound known (overflowed, or a mark changed) until refresh()

# One (account, symbol) entry: 128 bytes, two cache lines; what an order's checks and its open
# quantity fold read (key .. ro counts) is the first. Entries live in a pool of max_positions, made
# on demand (engine/CAPACITY.md "Risk positions") and found through a 4-byte index per pair.
cdef packed struct Position:
    uint64_t key             # @0  account << 32 | symbol
    int64_t pos              # @8  signed qty units (long > 0)
    int64_t open_buy         # @16 leaves of the account's live buy orders (resting, untriggered, in flight)
    int64_t open_sell        # @24 same, sell
    int64_t worst            # @32 max(|pos + open_buy|, |pos - open_sell|), kept current on every change
    int32_t anext            # @40 the account's active list: next entry (pool index), -1 = end; free list link
    int32_t aprev            # @44 the account's active list: previous entry, -1 = first
    int32_t dnext            # @48 the account's dirty list: next entry, -1 = end
    uint8_t dirty            # @52 DIRTY_* bits: cached figures stale (on the dirty list while nonzero)
    uint8_t listed           # @53 1 = on the account's active list
    uint8_t restricted       # @54 1 = the account may not trade this symbol
    uint8_t _pad             # @55
    int32_t ro_buy           # @56 the account's resting/waiting reduce-only buy orders here (derived, not state)
    int32_t ro_sell          # @60 same, sell
    int64_t avg_price        # @64 average entry price, price units (0 when flat)
    int64_t realized         # @72 cumulative realized P&L, cash units (fees not included)
    int64_t fees             # @80 cumulative fees, cash units (negative: rebates)
    int64_t upnl             # @88 cached: unrealized P&L at the mark, rounded down
    int64_t expo             # @96 cached: |pos| at the mark, rounded up
    int64_t wexpo            # @104 cached: worst-case qty (with open orders) at the mark, rounded up
    int64_t im               # @112 cached: initial margin of wexpo
    int64_t mm               # @120 cached: maintenance margin of expo


cdef class Risk:
    # -- CAPACITY (readonly) --
    cdef readonly int32_t max_accounts
    cdef readonly int32_t max_symbols
    cdef readonly int32_t max_strategies
    cdef readonly int32_t cash_decimals
    """Cash units are 10**-cash_decimals of the quote currency."""
    cdef readonly int64_t max_positions
    """(account, symbol) entries at most (the pool's size; engine/CAPACITY.md)."""

    # -- POSITIONS: a pool of entries made on demand, found through an index --
    cdef readonly object pool_arr, index_arr
    cdef Position* P                 # the pool: entries below pool_hwm are or were in use
    cdef int32_t* index              # [account * max_symbols + symbol]: pool index + 1, 0 = no entry
                                     # (zeroed memory: a page is written only when a pair in it is used)
    cdef readonly int64_t pool_hwm   # entries ever taken at once (the pool is written up to here)
    cdef readonly int64_t n_positions
    cdef int32_t free_head           # released entries (linked by anext), reused first; -1 = none
    cdef Position zero               # what an absent entry reads as (never written)

    # -- ARRAYS (numpy-owned; raw pointers below) --
    cdef readonly object acct_cols, sym_cols, sums_arr
    cdef readonly object lim_default_arr, lim_acct_arr, lim_sym_arr, lim_strat_arr
    cdef object eff_acct_arr, eff_sym_arr, eff_strat_arr
    cdef int32_t* act_head           # per account: its active list (entries with a position or open orders)
    cdef int32_t* dirty_head         # per account: its dirty list (entries whose cached figures are stale)
    cdef int64_t* realized_sum       # per account: sum of its entries' realized and fees (wrapping, as
    cdef int64_t* fees_sum           # numpy sums them; derived, recomputed on import, not state)
    cdef int64_t* lim_default        # [kind]
    cdef int64_t* lim_acct           # [account * N_LIMITS + kind]
    cdef int64_t* lim_sym            # [symbol * N_LIMITS + kind]
    cdef int64_t* lim_strat          # [strategy * N_LIMITS + kind]
    # The same tables pre-combined for the checks (rebuilt by every SET_LIMIT; derived, never
    # snapshotted): eff_acct = default combined with the account's value, eff_sym = the symbol's
    # value (OVERRIDE kinds: combined with the default), eff_strat = the strategy's; a CAP that no
    # scope sets is NO_CAP, a FLOOR 0, an OVERRIDE in eff_acct UNSET (then eff_sym decides).
    cdef int64_t* eff_acct
    cdef int64_t* eff_sym
    cdef int64_t* eff_strat

    # per account (sums of the cached Position figures, valid after refresh())
    cdef int64_t* cash
    cdef int64_t* upnl_sum
    cdef int64_t* expo_sum
    cdef int64_t* wexpo_sum
    cdef int64_t* im_sum
    cdef int64_t* mm_sum
    cdef int64_t* day_base           # equity at the last END_OF_DAY plus net deposits since
    cdef int64_t* slack              # a lower bound on equity - sum(mm), so on equity too: exact after each
                                     # refresh, lowered by every fill (fill()); INT64_MIN = unknown
    cdef int64_t* whi                # an upper bound on sum(wexpo), now and after any refresh: the exact
                                     # sum over the active entries of worst x wunit; WHI_UNKNOWN
    cdef int32_t* n_active
    cdef int32_t* n_dirty
    cdef uint32_t* liq_cursor        # liquidation: the last symbol a liquidation order was sent for
    cdef uint8_t* state              # AccountState
    cdef uint8_t* prev_state         # the state to return to when a liquidation ends
    cdef uint8_t* kill
    cdef uint8_t* kyc                # KycState set for the account, 0 = it follows kyc[0], the default
    cdef uint8_t* touched            # queued for a margin check
    # reject-rate lockout (RISK.md "Circuit breakers"), in journaled time (the commands' receive ns)
    cdef int64_t* rej_ts             # start of the account's current one-second window
    cdef int64_t* rej_count          # rejects it caused in that window
    cdef int64_t* lock_until         # locked out while now < lock_until (0 = not; INT64_MAX = until reset)
    cdef int64_t* err_seen           # the engine-wide window (err_epoch) its rejects were last counted in
    # compliance gate (derived from kyc and LARGE_REJECT by rebuild_gate, never snapshotted): 1 when an
    # order of the account needs compliance() (KYC not VERIFIED, or a LARGE_* threshold may reject)
    cdef object _gate_arr
    cdef uint8_t* gate
    # pre-trade VaR limit (RISK.md "Pre-trade VaR limit"): the account's VaR bound is var_off + var_charged
    cdef int64_t* var_charged        # every incremental VaR charged to its accepted orders, ever (cash units)
    cdef int64_t* var_off            # the last VAR_UPDATE's VaR minus var_charged as of its model's seq
    cdef int64_t* var_ts             # the last VAR_UPDATE's model time (journaled ns; 0 = none yet)
    # per symbol
    cdef int64_t* num                # notional(price, qty) = price * qty * num / den, cash units
    cdef int64_t* den
    cdef uint64_t* den_magic         # den's invariant-divisor multiplier (risk.pyx te_udiv_gen)
    cdef uint8_t* den_more
    cdef uint8_t* den_shift          # floor(log2(den)): x >> den_shift over-estimates x / den cheaply
    cdef int64_t* mark
    cdef int64_t* wunit              # ceil(notional(mark, 1)): worst x wunit >= an entry's wexpo
    cdef int64_t* brk_ts             # circuit breaker: start of the current window (journaled ns)
    cdef int64_t* brk_ref            # first trade price of the window
    cdef int64_t* brk_resume         # cool-off end (0 = resume only by admin)
    cdef uint8_t* brk_tripped        # halted by the breaker
    cdef int64_t* var_sens           # VaR per cash unit of exposure, 1e-9 units (the last VAR_UPDATE; 0 = none)
    # derived from var_sens, num, den (var_derive): incremental VaR = ceil(added x mark x var_num / var_den),
    # var_den = den x 1e9 with its invariant-divisor magic; var_den 0 = too large: two steps (var_increment)
    cdef int64_t* var_num
    cdef int64_t* var_den
    cdef uint64_t* var_magic
    cdef uint8_t* var_more

    # -- QUEUES (between commands always empty) --
    cdef object _touch_arr, _trip_arr, _chg_arr
    cdef uint8_t* chg                # scratch of RISK_TICK: symbols whose mark changed (zero between commands)
    cdef int32_t* touch_q            # accounts waiting for a margin check (a ring; each at most once)
    cdef int32_t touch_head, touch_n
    cdef int32_t* trip_q             # symbols whose breaker tripped in this command
    cdef int32_t n_trip
    cdef int32_t* ro_q               # accounts waiting for a reduce-only check (a ring; each at most once)
    cdef int32_t ro_head, ro_n

    # -- REDUCE-ONLY ORDERS (derived from the core's live orders: counted by the core as they
    # register and release, recounted after a snapshot import, never snapshotted; per entry:
    # Position.ro_buy / ro_sell) --
    cdef readonly object ro_total_arr
    cdef object _ro_q_arr, _ro_queued_arr
    cdef int32_t* ro_total           # per account
    cdef uint8_t* ro_queued

    # -- ENGINE-WIDE --
    cdef readonly uint8_t kill_all
    cdef readonly uint8_t breaker
    """1 while the engine-wide error-rate breaker is tripped."""
    cdef readonly uint8_t breaker_new
    cdef int32_t lock_new            # an account this command locked out (its BREAKER event is due), or 0
    cdef int64_t err_ts, err_count
    cdef int64_t err_epoch, err_accts  # the engine-wide window's number, and the accounts counted in it
    cdef int64_t fig_max             # every cached figure is clamped to +-fig_max = 2**62 / max_symbols
    cdef int64_t im_rate_sym_max     # the largest INITIAL_MARGIN rate any symbol sets (eff_sym)

    # -- POSITIONS --
    cdef Position* create(self, uint32_t a, uint32_t s) noexcept
    cdef void release(self, Position* p) noexcept
    cdef bint pool_full(self) noexcept
    cdef void reclaim(self) noexcept
    cdef int set_restricted(self, uint32_t a, uint32_t s, bint on) noexcept

    # -- LIMITS --
    cdef int64_t notional(self, int64_t a, int64_t b, uint32_t s, int mode) noexcept
    cdef int64_t cap(self, int k, uint32_t a, uint32_t s, uint32_t t) noexcept
    cdef int64_t floor_(self, int k, uint32_t a, uint32_t s) noexcept
    cdef int64_t override(self, int k, uint32_t a, uint32_t s) noexcept

    # -- CHECKS --
    cdef bint far_from_limits(self, uint32_t a, uint32_t s, const int64_t* ra, const int64_t* rs,
                              const int64_t* rt, int64_t worst, int64_t worst2) noexcept
    cdef int check_amend(self, uint32_t a, uint32_t s, uint32_t strategy, uint8_t side, uint8_t order_type,
                         uint8_t tif, uint8_t flags, int64_t price, int64_t stop_price, int64_t qty, int64_t added,
                         int64_t now, int64_t tick) noexcept
    cdef int check_account(self, uint32_t a, uint32_t s, const Position* p, const int64_t* ra, const int64_t* rs,
                           const int64_t* rt, int64_t m, int64_t worst, int64_t worst2, int64_t added) noexcept
    cdef int compliance(self, uint32_t a, uint32_t s, uint8_t side, int64_t qty, int64_t added) noexcept
    cdef int64_t market_bound(self, uint32_t a, uint32_t s, uint8_t side, int64_t tick, uint32_t t) noexcept

    # -- STATE CHANGES --
    cdef int on_event(self, Event* e, int64_t ts) except -1
    cdef void count_reject(self, const Event* e, int64_t ts) noexcept
    cdef int64_t fill(self, uint32_t a, uint32_t s, uint8_t side, int64_t qty, int64_t price, bint maker) noexcept
    cdef void breaker_check(self, uint32_t s, int64_t price, int64_t ts) noexcept
    cdef void end_breaker(self, uint32_t s) noexcept
    cdef void touch(self, uint32_t a) noexcept
    cdef void refresh(self, uint32_t a) noexcept
    cdef void refresh_one(self, uint32_t a, Position* p) noexcept
    cdef void figures(self, uint32_t a, uint32_t s, Position* q) noexcept
    cdef void set_wunit(self, uint32_t s) noexcept
    cdef int set_mark(self, uint32_t s, int64_t price) except -1
    cdef int revalue(self) except -1
    cdef int64_t equity(self, uint32_t a) noexcept
    cdef int64_t available(self, uint32_t a) noexcept
    cdef int32_t pop_touched(self) noexcept
    cdef int32_t pop_ro(self) noexcept
    cdef uint8_t ro_violation(self, uint32_t a, uint32_t s) noexcept
    cdef bint ro_violated(self, uint32_t a) noexcept
    cdef bint below_maintenance(self, uint32_t a) noexcept
    cdef uint32_t next_liquidation(self, uint32_t a, int64_t* qty, uint8_t* side) noexcept
    cdef void end_of_day(self) noexcept
    cdef int set_limit(self, uint8_t scope, uint8_t kind, uint32_t target, int64_t value, bint clear) except -1
    cdef int var_update(self, uint32_t a, uint32_t s, int64_t value, int64_t charged_at, int64_t ts) except -1
    cdef void var_derive(self, uint32_t s) noexcept
    cdef void rebuild_eff(self, uint8_t kind) noexcept
    cdef void rebuild_gate(self) noexcept
    cdef int set_kyc(self, uint32_t a, uint8_t st, bint clear) except -1
    cdef uint8_t kyc_state(self, uint32_t a) noexcept


# -- HOT HELPERS --
# Inline here, not methods (Cython emits methods without `inline`), so that the core compiles them
# into its own code: the fold of every ACCEPTED and CANCELLED event (most of all events), and
# checks 1-13 of every order (check_order; checks 14-18, for an order that adds risk, are the
# method check_account, which keeps check_order small enough to be inlined).

cdef extern from *:
    bint __builtin_mul_overflow(int64_t a, int64_t b, int64_t* r) noexcept nogil
    bint __builtin_add_overflow(int64_t a, int64_t b, int64_t* r) noexcept nogil


cdef inline int64_t iabs(int64_t x) noexcept:
    return -x if x < 0 else x


cdef inline int64_t imax(int64_t a, int64_t b) noexcept:
    return a if a > b else b


cdef inline Position* find(Risk r, uint32_t a, uint32_t s) noexcept:
    """The entry of (a, s), or NULL when it has none (its position, open quantities, P&L and
    restriction are all 0)."""
    cdef int32_t k = r.index[<int64_t>a * r.max_symbols + s]
    return &r.P[k - 1] if k else NULL


cdef inline void mark_dirty(Risk r, uint32_t a, Position* p, uint8_t bits) noexcept:
    """Entry p of account a has stale cached figures (bits): listed as active and as dirty."""
    cdef int32_t i = <int32_t>(p - r.P), h
    if not p.listed:
        p.listed = 1
        h = r.act_head[a]
        p.anext = h
        p.aprev = -1
        if h >= 0:
            r.P[h].aprev = i
        r.act_head[a] = i
        r.n_active[a] += 1
    if p.dirty == 0:
        p.dnext = r.dirty_head[a]
        r.dirty_head[a] = i
        r.n_dirty[a] += 1
    p.dirty |= bits


cdef inline void open_change(Risk r, uint32_t a, uint32_t s, uint8_t side, int64_t delta) noexcept:
    """The account's open qty on one side moves by delta (ACCEPTED +qty, CANCELLED -qty, REPLACED).
    The entry exists: check_order made it before the order was accepted."""
    cdef Position* p = find(r, a, s)
    if side == SIDE_BUY:
        p.open_buy += delta
    else:
        p.open_sell += delta
    cdef int64_t w = imax(iabs(p.pos + p.open_buy), iabs(p.pos - p.open_sell))
    if w != p.worst:              # an order on the side that is not the worst changes no figure
        whi_move(r, a, s, w - p.worst)
        p.worst = w
        mark_dirty(r, a, p, DIRTY_OPEN)
    if delta > 0 and r.ro_total[a]:
        ro_touch(r, a)            # more open on a side: the account's reduce-only orders may no longer fit


cdef inline void ro_count(Risk r, uint32_t a, uint32_t s, uint8_t side, int32_t d) noexcept:
    """A reduce-only order of the account starts (d = 1) or stops (d = -1) resting or waiting."""
    cdef Position* p = find(r, a, s)
    if side == SIDE_BUY:
        p.ro_buy += d
    else:
        p.ro_sell += d
    r.ro_total[a] += d


cdef inline void ro_touch(Risk r, uint32_t a) noexcept:
    """Queue the account for a reduce-only check (once) after this command's events."""
    queue_add(r.ro_q, r.ro_head, &r.ro_n, r.max_accounts, r.ro_queued, a)


# A queue of accounts, each in it at most once (queued[a] while it is): a ring q[cap] of n[0]
# accounts from head, cap = max_accounts, so it never overflows. Margin checks (Risk.touch) and
# reduce-only checks (ro_touch) use one each.

cdef inline void queue_add(int32_t* q, int32_t head, int32_t* n, int32_t cap, uint8_t* queued,
                           int32_t a) noexcept:
    cdef int32_t i
    if not queued[a]:
        queued[a] = 1
        i = head + n[0]
        if i >= cap:
            i -= cap
        q[i] = a
        n[0] += 1


cdef inline int32_t queue_take(int32_t* q, int32_t* head, int32_t* n, int32_t cap, uint8_t* queued) noexcept:
    """The first account of the queue, removed (first in, first out), or 0 when it is empty."""
    if n[0] == 0:
        return 0
    cdef int32_t a = q[head[0]]
    head[0] += 1
    if head[0] == cap:
        head[0] = 0
    n[0] -= 1
    queued[a] = 0
    return a


cdef inline void whi_move(Risk r, uint32_t a, uint32_t s, int64_t dw) noexcept:
    """An entry's worst-case qty moves by dw: the account's bound of sum(wexpo) with it."""
    cdef int64_t t
    if r.whi[a] >= 0:
        if __builtin_mul_overflow(dw, r.wunit[s], &t) or __builtin_add_overflow(r.whi[a], t, &t):
            t = WHI_UNKNOWN
        r.whi[a] = t


cdef inline int64_t cap3(const int64_t* ra, const int64_t* rs, const int64_t* rt, int k) noexcept:
    """Risk.cap() over rows already located: the account's, the symbol's and the strategy's."""
    cdef int64_t v = ra[k], x = rs[k], y = rt[k]
    v = x if x < v else v
    return y if y < v else v


cdef inline int check_order(Risk self, uint32_t a, uint32_t s, uint32_t strategy, uint8_t side, uint8_t order_type,
                            uint8_t tif, uint8_t flags, int64_t price, int64_t stop_price, int64_t qty,
                            int64_t added, int32_t open_orders, int64_t now, int64_t tick) noexcept:
    """check_order_ over the account's entry for s; an order that passes and has none gets one
    (check_order_ made sure there is room), for the ACCEPTED event's fold."""
    cdef Position* p = find(self, a, s)
    cdef int code = check_order_(self, a, s, strategy, side, order_type, tif, flags, price, stop_price, qty, added,
                                 open_orders, now, tick, p if p != NULL else &self.zero, p == NULL)
    if code == 0 and p == NULL:
        self.create(a, s)
    return code


cdef inline int check_order_(Risk self, uint32_t a, uint32_t s, uint32_t strategy, uint8_t side, uint8_t order_type,
                             uint8_t tif, uint8_t flags, int64_t price, int64_t stop_price, int64_t qty,
                             int64_t added, int32_t open_orders, int64_t now, int64_t tick, const Position* p,
                             bint absent) noexcept:
    """0, or the Reject code of the first failing check (RISK.md "Checks, in order").
    qty: the order's (new) remaining qty; added: what it adds to the account's open qty on
    its side (a new order: qty; an amend: new - old remaining); open_orders: the account's
    live orders, or -1 for an amend (MAX_OPEN_ORDERS applies to new resting orders only);
    now: the command's journaled receive time (the reject-rate lockout's clock); tick: the symbol's
    (a market order is valued at its band bound, which is on a tick, as its sweep's); p: the
    account's entry for s (absent: an all-zero one, and the order needs a new entry)."""
    if self.kill_all or self.kill[a]:
        return REJ_KILL_SWITCH
    if self.breaker:
        return REJ_CIRCUIT_BREAKER
    if self.lock_until[a] > now:
        return REJ_REJECT_RATE_LOCKOUT
    cdef uint8_t st = self.state[a]
    if st == ACCT_SUSPENDED:
        return REJ_ACCOUNT_SUSPENDED
    if st == ACCT_LIQUIDATING:
        return REJ_ACCOUNT_LIQUIDATING
    if p.restricted:
        return REJ_SYMBOL_RESTRICTED
    if absent and self.pool_full():
        return REJ_POSITION_CAPACITY_EXHAUSTED
    if strategy >= <uint32_t>self.max_strategies:
        return REJ_INVALID_STRATEGY
    cdef int64_t m = self.mark[s]
    if m == 0:
        return REJ_NO_REFERENCE_PRICE
    cdef int64_t vp, lim
    if order_type == OT_MARKET:
        vp = self.market_bound(a, s, side, tick, strategy)
        if vp == 0:
            vp = m
    elif order_type == OT_STOP:
        vp = stop_price
    else:
        vp = price
    # the rows of the three scopes' combined tables (the strategy id was checked above); a kind
    # no scope caps reads NO_CAP = INT64_MAX, which a qty, an order count or a clamped figure
    # never exceeds: those comparisons need no NO_CAP test
    cdef const int64_t* ra = self.eff_acct + <int64_t>a * N_LIMITS
    cdef const int64_t* rs = self.eff_sym + <int64_t>s * N_LIMITS
    cdef const int64_t* rt = self.eff_strat + <int64_t>strategy * N_LIMITS
    if qty > cap3(ra, rs, rt, LIM_MAX_ORDER_QTY):
        return REJ_MAX_ORDER_QTY
    lim = cap3(ra, rs, rt, LIM_MAX_ORDER_VALUE)
    if lim != NO_CAP and te_gt3(vp, qty, self.num[s], lim, self.den[s]):
        return REJ_MAX_ORDER_VALUE
    if order_type == OT_LIMIT or order_type == OT_STOP_LIMIT:
        lim = cap3(ra, rs, rt, LIM_PRICE_COLLAR)
        if lim != NO_CAP and te_gt(iabs(price - m), 10000, lim, m):
            return REJ_PRICE_COLLAR
    if open_orders >= 0 and (tif == TIF_GTC or tif == TIF_DAY or tif == TIF_GTD or
                             order_type == OT_STOP or order_type == OT_STOP_LIMIT):
        if open_orders >= cap3(ra, rs, rt, LIM_MAX_OPEN_ORDERS):
            return REJ_MAX_OPEN_ORDERS
    cdef int64_t ob = p.open_buy, os = p.open_sell, pos = p.pos
    if flags & FLAG_REDUCE_ONLY:
        if side == SIDE_BUY:
            if not (pos < 0 and ob + added <= -pos):
                return REJ_REDUCE_ONLY_VIOLATION
        elif not (pos > 0 and os + added <= pos):
            return REJ_REDUCE_ONLY_VIOLATION
    # worst case of the position if every open order filled (RISK.md "Valuation")
    cdef int64_t worst = p.worst, worst2
    if side == SIDE_BUY:
        worst2 = imax(iabs(pos + ob + added), iabs(pos - os))
    else:
        worst2 = imax(iabs(pos + ob), iabs(pos - os - added))
    if worst2 <= worst:
        return 0                   # does not add risk: nothing below applies
    if st == ACCT_REDUCE_ONLY:
        return REJ_ACCOUNT_REDUCE_ONLY
    return self.check_account(a, s, p, ra, rs, rt, m, worst, worst2, added)


cdef inline int var_check(Risk self, uint32_t a, uint32_t s, const int64_t* ra, const int64_t* rs,
                          const int64_t* rt, int64_t m, int64_t added) noexcept:
    """Check 18, MAX_VAR (RISK.md "Pre-trade VaR limit"), last, for an order that adds risk and passed
    every other check: its incremental VaR = the symbol's journaled sensitivity x the growth of the
    worst-case exposure on its side (added x mark, in cash units), rounded up. Passing charges it
    to the account (var_charged), so the next order sees it, until the worker's next VAR_UPDATE."""
    cdef int64_t lim, incr, used
    if self.var_sens[s] == 0 or added <= 0:
        return 0
    lim = cap3(ra, rs, rt, LIM_MAX_VAR)
    incr = var_increment(self, s, m, added)
    if lim != NO_CAP:
        used = self.var_off[a] + self.var_charged[a]     # >= 0; both within +-2**62 (var_update, var_charge)
        if used > lim or incr > lim - used:
            return REJ_MAX_VAR
    var_charge(self, a, incr)
    return 0


cdef inline int64_t var_increment(Risk self, uint32_t s, int64_t m, int64_t added) noexcept:
    """An order's incremental VaR: ceil(added x m x num x k / (den x 1e9)) cash units (saturating)."""
    if self.var_den[s]:
        return te_mulq(added, m, self.var_num[s], 1, self.var_den[s], self.var_magic[s], self.var_more[s], CEIL)
    return te_muldiv(te_mulq(added, m, self.num[s], 1, self.den[s], self.den_magic[s], self.den_more[s], CEIL),
                     self.var_sens[s], 1, 1, 1000000000, 1, CEIL)


cdef inline void var_charge(Risk self, uint32_t a, int64_t incr) noexcept:
    """var_charged += incr, kept within 2**62 (beyond, every MAX_VAR is exceeded anyway)."""
    cdef int64_t c
    if __builtin_add_overflow(self.var_charged[a], incr, &c) or c > QTY_BOUND:
        c = QTY_BOUND
    self.var_charged[a] = c
