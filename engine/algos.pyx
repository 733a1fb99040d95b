# Execution algorithms: parent orders as engine state. Rules, parameters and units: engine/ALGOS.md.
# Layout and entry points: algos.pxd.
#
# Hot-module directives (setup.py): boundscheck/wraparound/initializedcheck off. What makes that safe:
# parent slots come from this module's own scan of [0, max_parents), schedule indexes are
# slot * max_slices + i with i < Parent.slices <= max_slices (checked at ALGO_NEW), and accounts and
# symbols are range-checked (Engine.account_ok / symbol_ok) before any array use; events' accounts and
# symbols were checked by the core before it emitted them.
#
# Determinism: the engine's outputs stay a function of the journaled commands.
#   - Time is ALGO_CLOCK.expire_ts_ns (and a parent's start/end, journaled in ALGO_NEW); nothing here
#     reads a clock.
#   - Randomization (TWAP) comes from a splitmix64 generator per parent, seeded from the configured
#     seed and the parent id, its state kept in the parent (snapshotted, hashed).
#   - Quantities and prices are integers; products go through 128-bit integers.
#   - The one floating-point computation, the Almgren-Chriss trajectory of an IS parent, runs once at
#     acceptance and its result is kept as the integer schedule (sched_q). It uses only IEEE-754
#     + - * / and sqrt (exp and log are evaluated here by series, not by libm), compiled with
#     -ffp-contract=off (setup.py), so any IEEE-754 machine replaying the journal computes the same bits.
#
# Order of work in one ALGO_CLOCK: parents in slot order; per parent (step): start, end, then the due
# slice (work): cancel the working child, an IOC at the far touch for the aggressive share and any
# catch-up, then a passive child for the rest. Every child is a NEW_ORDER (or CANCEL) run through
# Engine.process_one: every core and risk check applies, and its events are observed (observe) there.
cimport cython
cimport numpy as cnp
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.string cimport memset
from libc.math cimport sqrt

from protocol.cdefs cimport *
from engine.core cimport Engine, OFLAG_ALGO_CHILD
from engine.risk cimport Risk, check_order

import numpy as np

cnp.import_array()

cdef extern from *:
    """
    #include <stdint.h>
    #include <math.h>
    typedef __int128 ta_i128;

    /* splitmix64 (Steele, Lea, Flood 2014): the generator of a parent's randomization. */
    static inline uint64_t ta_next(uint64_t* s) {
        uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }
    /* floor(a * b / d) in 128 bits (d > 0), saturated to int64. */
    static inline int64_t ta_muldiv(int64_t a, int64_t b, int64_t d) {
        ta_i128 x = (ta_i128)a * (ta_i128)b;
        ta_i128 q = x / d;
        if ((x % d) != 0 && x < 0) q -= 1;
        if (q > INT64_MAX) return INT64_MAX;
        if (q < INT64_MIN) return INT64_MIN;
        return (int64_t)q;
    }
    /* (n - a * q) * 10**6 / (a * q), rounded toward zero, saturated: slippage in 1/100 bp. */
    static inline int64_t ta_slip(int64_t notional, int64_t arrival, int64_t qty) {
        ta_i128 base = (ta_i128)arrival * (ta_i128)qty;
        if (base <= 0) return 0;
        ta_i128 x = ((ta_i128)notional - base) * 1000000 / base;
        if (x > INT64_MAX) return INT64_MAX;
        if (x < INT64_MIN) return INT64_MIN;
        return (int64_t)x;
    }
    /* exp and log from + - * / only (no libm: its last bit differs between machines). exp: x = k ln2 + r,
       |r| <= ln2/2 (Cody-Waite split of ln2), a degree-27 Taylor polynomial in Horner form, scaled by
       2**k (ldexp is exact). log1p: 2 atanh(z / (2 + z)) by its series after halving into [0.7, 1.4]. */
    static double ta_exp(double x) {
        const double LN2_HI = 6.93147180369123816490e-01, LN2_LO = 1.90821492927058770002e-10;
        if (x > 700.0) x = 700.0;
        if (x < -700.0) x = -700.0;
        double kd = x * 1.44269504088896338700e+00;
        long k = (long)(kd >= 0 ? kd + 0.5 : kd - 0.5);
        double r = (x - (double)k * LN2_HI) - (double)k * LN2_LO;
        double s = 1.0;
        for (int n = 27; n >= 1; n--) s = 1.0 + s * r / (double)n;
        return ldexp(s, (int)k);
    }
    static double ta_log(double x) {      /* x > 0 */
        int e;
        double m = frexp(x, &e);          /* exact: x = m 2**e, m in [0.5, 1) */
        if (m < 0.70710678118654752440) { m = m * 2.0; e -= 1; }
        double u = (m - 1.0) / (m + 1.0), u2 = u * u, s = 0.0;
        for (int n = 41; n >= 1; n -= 2) s = 1.0 / (double)n + u2 * s;
        return (double)e * 6.93147180559945286227e-01 + 2.0 * u * s;
    }
    static double ta_log1p(double z) {    /* z >= 0 */
        if (z > 0.4) return ta_log(1.0 + z);
        double u = z / (2.0 + z), u2 = u * u, s = 0.0;
        for (int n = 41; n >= 1; n -= 2) s = 1.0 / (double)n + u2 * s;
        return 2.0 * u * s;
    }
    static double ta_sinh(double x) {     /* x >= 0 */
        if (x < 1e-5) return x + x * x * x / 6.0;
        double e = ta_exp(x);
        return (e - 1.0 / e) / 2.0;
    }
    /* Almgren-Chriss (2000): with kt2 = lambda sigma**2 / eta (per s**2) and slices of tau seconds,
       cosh(kappa tau) = 1 + kt2 tau**2 / 2; the holdings after slice j of n are
       X sinh(kappa tau (n - j)) / sinh(kappa tau n). Returns kappa tau. */
    static double ta_kappa_tau(double kt2, double tau) {
        double a = kt2 * tau * tau / 2.0;
        return ta_log1p(a + sqrt(a * (2.0 + a)));   /* acosh(1 + a) */
    }
    """
    uint64_t ta_next(uint64_t* s) noexcept nogil
    int64_t ta_muldiv(int64_t a, int64_t b, int64_t d) noexcept nogil
    int64_t ta_slip(int64_t notional, int64_t arrival, int64_t qty) noexcept nogil
    double ta_sinh(double x) noexcept nogil
    double ta_kappa_tau(double kt2, double tau) noexcept nogil
    double ta_exp(double x) noexcept nogil
    double ta_log1p(double z) noexcept nogil
    const uint64_t CLID_RESERVED "UINT64_MAX"

cdef enum:
    N_BUCKETS = 64          # per symbol: traded volume of the last 64 buckets (VWAP profile from volume)
    MAX_RAND_BPS = 5000
    MAX_PART_BPS = 5000

PARENT_DTYPE = np.dtype([
    ("parent_id", "<u8"), ("client_order_id", "<u8"), ("child_oid", "<u8"), ("rng", "<u8"),
    ("qty", "<i8"), ("filled", "<i8"), ("notional", "<i8"), ("child_leaves", "<i8"), ("limit", "<i8"),
    ("arrival", "<i8"), ("start_ns", "<i8"), ("end_ns", "<i8"), ("next_ns", "<i8"), ("expected", "<i8"),
    ("vol_base", "<i8"), ("last_target", "<i8"), ("account", "<u4"), ("symbol", "<u4"), ("strategy", "<u4"),
    ("children", "<u4"), ("offset_ticks", "<i4"), ("slices", "<u2"), ("slice_idx", "<u2"), ("rand_bps", "<u2"),
    ("aggr_bps", "<u2"), ("part_bps", "<u2"), ("pause_reason", "<u2"), ("risk_aversion", "<u2"),
    ("volatility", "<u2"), ("impact", "<u2"), ("side", "u1"), ("algo", "u1"), ("state", "u1"),
    ("end_action", "u1"), ("kick", "u1"), ("_pad0", "u1"), ("_pad1", "<u4"), ("notional_base", "<u8"),
    ("iv_vol_base", "<i8"), ("iv_filled", "<i8"), ("iv_notional_base", "<u8"), ("iv_notional", "<i8"),
    ("bench_notional", "<i8"), ("bench_market", "<i8"),
])
SIZEOF_PARENT = sizeof(Parent)
# The ALGO_DONE slippage histogram's bucket bounds (inclusive), 1/100 bp (/metrics: bp).
SLIP_BOUNDS_CBPS = np.array([-5000, -2000, -1000, -500, -200, 0, 200, 500, 1000, 2000, 5000, 10000], dtype=np.int64)
cdef int64_t[12] SLIP_BOUNDS
SLIP_BOUNDS[:] = [-5000, -2000, -1000, -500, -200, 0, 200, 500, 1000, 2000, 5000, 10000]
SCALARS = ("next_parent_id", "clock_ns", "bucket_start_ns", "bucket_head", "active", "hwm", "children_spawned")


def pack_params(slices=0, randomization_bps=0, aggressiveness_bps=0, participation_bps=0, offset_ticks=0,
                risk_aversion=0, volatility=0, impact=0):
    """ALGO_NEW's parameters as the two Command fields that carry them: (display_qty, order_id)."""
    a = (slices & 0xFFFF) | (randomization_bps & 0xFFFF) << 16 | (aggressiveness_bps & 0xFFFF) << 32 | \
        (participation_bps & 0xFFFF) << 48
    b = (offset_ticks & 0xFFFF) | (risk_aversion & 0xFFFF) << 16 | (volatility & 0xFFFF) << 32 | \
        (impact & 0xFFFF) << 48
    return a - (1 << 64) if a >= 1 << 63 else a, b


def is_schedule(qty, lot, slices, duration_ns, risk_aversion, volatility, impact):
    """The IS parent's cumulative targets (what algos.pyx keeps as its schedule), from Python: for tests
    and tools; the same arithmetic as plan()."""
    cdef int64_t out[1024]
    if slices > 1024:
        raise ValueError("slices")
    _is_targets(qty, lot, slices, duration_ns, risk_aversion, volatility, impact, out)
    return [out[i] for i in range(slices)]


cdef inline int64_t lot_floor(int64_t q, int64_t lot) noexcept:
    return q - q % lot if q > 0 else 0


cdef void _is_targets(int64_t qty, int64_t lot, int32_t n, int64_t dur_ns, uint16_t lam, uint16_t vol,
                      uint16_t eta, int64_t* out) noexcept:
    """Cumulative quantity due after each of n slices on the Almgren-Chriss trajectory (lot-floored)."""
    # lambda = lam 1e-6 / bp, sigma = vol / 100 bp / sqrt(s), eta = eta / 100 bp s: kt2 in 1 / s**2
    cdef double kt2 = (<double>lam * 1e-6) * (<double>vol / 100.0) * (<double>vol / 100.0) / (<double>eta / 100.0)
    cdef double tau = <double>dur_ns / <double>n / 1e9
    cdef double kt = ta_kappa_tau(kt2, tau) if kt2 > 0 else 0.0
    cdef double total = ta_sinh(kt * n) if kt > 0 else 0.0
    cdef int32_t j
    cdef double left
    for j in range(1, n + 1):
        if kt > 0:
            left = <double>qty * ta_sinh(kt * (n - j)) / total
        else:
            left = <double>qty * (n - j) / n
        out[j - 1] = lot_floor(qty - <int64_t>left, lot) if j < n else qty
        if j > 1 and out[j - 1] < out[j - 2]:
            out[j - 1] = out[j - 2]


cdef int _hook_command(object algos, object eng, Py_ssize_t start) except -1:
    return (<Algos>algos).command(<Engine>eng)


cdef int _hook_observe(object algos, object eng, Py_ssize_t start) except -1:
    return (<Algos>algos).observe(<Engine>eng, start)


cdef inline void* _data(object arr) noexcept:
    return cnp.PyArray_DATA(<cnp.ndarray>arr)


@cython.final
cdef class Algos:
    """The parent orders of one engine (engine/ALGOS.md). Attach to an Engine with attach()."""

    def __cinit__(self, int32_t max_parents=1024, int32_t max_accounts=1024, int32_t max_symbols=64,
                  int32_t max_slices=256, uint64_t seed=0, int32_t default_slices=10,
                  int64_t max_duration_ms=7 * 86_400_000, int64_t bucket_ms=60_000, profile=None):
        if max_parents < 1 or max_slices < 1 or not 1 <= default_slices <= max_slices or bucket_ms <= 0:
            raise ValueError("max_parents, max_slices, bucket_ms must be positive; default_slices within 1..max_slices")
        self.max_parents = max_parents
        self.max_slices = max_slices
        self.max_accounts = max_accounts
        self.max_symbols = max_symbols
        self.seed = seed
        self.default_slices = default_slices
        self.max_duration_ns = max_duration_ms * 1_000_000
        self.bucket_ns = bucket_ms * 1_000_000
        self.parents_arr = np.zeros(max_parents, dtype=PARENT_DTYPE)
        self.sched_t_arr = np.zeros(<int64_t>max_parents * max_slices, dtype=np.int64)
        self.sched_q_arr = np.zeros(<int64_t>max_parents * max_slices, dtype=np.int64)
        cdef uint64_t size = 16
        while size < <uint64_t>max_parents * 2:
            size <<= 1
        self.map_mask = size - 1
        self.map_key_arr = np.zeros(size, dtype=np.uint64)
        self.map_val_arr = np.full(size, -1, dtype=np.int32)
        self.sym_volume_arr = np.zeros(max_symbols, dtype=np.int64)
        self.sym_notional_arr = np.zeros(max_symbols, dtype=np.uint64)
        self.acct_parents_arr = np.zeros(max_accounts, dtype=np.int32)
        self.bucket_arr = np.zeros(<int64_t>max_symbols * N_BUCKETS, dtype=np.int64)
        self.bucket_px_arr = np.zeros(<int64_t>max_symbols * N_BUCKETS, dtype=np.int64)
        prof = np.ascontiguousarray(profile if profile is not None and len(profile) else [0], dtype=np.int64)
        if (prof < 0).any():
            raise ValueError("profile weights must be >= 0")
        self.profile_arr = prof
        self.n_profile = <int32_t>len(prof) if profile is not None and len(profile) else 0
        self.P = <Parent*>_data(self.parents_arr)
        self.sched_t = <int64_t*>_data(self.sched_t_arr)
        self.sched_q = <int64_t*>_data(self.sched_q_arr)
        self.map_key = <uint64_t*>_data(self.map_key_arr)
        self.map_val = <int32_t*>_data(self.map_val_arr)
        self.sym_volume = <int64_t*>_data(self.sym_volume_arr)
        self.sym_notional = <uint64_t*>_data(self.sym_notional_arr)
        self.acct_parents = <int32_t*>_data(self.acct_parents_arr)
        self.bucket = <int64_t*>_data(self.bucket_arr)
        self.bucket_px = <int64_t*>_data(self.bucket_px_arr)
        self.profile = <int64_t*>_data(self.profile_arr)
        self.slip_counts_arr = np.zeros(13, dtype=np.uint64)
        self.slip_counts = <uint64_t*>_data(self.slip_counts_arr)
        self.next_parent_id = 1

    def attach(self, Engine eng not None):
        """Turn the execution algorithms on in `eng` (before any command; capacities must match)."""
        eng.check_attach("algos", self.max_accounts, self.max_symbols)
        eng.algos = self
        eng.algo_command = _hook_command
        eng.algo_observe = _hook_observe

    # -- ENTRY POINTS --

    cdef int command(self, Engine eng) except -1:
        cdef uint8_t k = eng.cur.kind
        if k == CMD_ALGO_CLOCK:
            return self.cmd_clock(eng)
        if k == CMD_ALGO_NEW:
            return self.cmd_new(eng)
        return self.cmd_action(eng)

    cdef int observe(self, Engine eng, Py_ssize_t start) except -1:
        """The events ev_buf[start:] of one (non-ALGO) command: every FILL adds to its symbol's volume;
        fills and cancels of working children update their parents (which may report or end)."""
        cdef Py_ssize_t j, n = eng.ev_count
        cdef Event* e
        cdef int32_t i
        cdef uint32_t a, oa
        cdef uint64_t oid, ooid
        cdef int64_t price, qty, leaves, oleaves
        for j in range(start, n):
            e = &eng.ev_buf[j]                  # (re-read each time: reports below may grow the buffer)
            if e.kind == EV_FILL:
                qty = e.qty
                self.sym_volume[e.symbol] += qty
                self.sym_notional[e.symbol] += <uint64_t>e.price * <uint64_t>qty      # (wraps: differences hold)
                self.bucket[<int64_t>e.symbol * N_BUCKETS + self.bucket_head] += qty
                if self.active == 0:
                    continue
                a = e.account
                oa = e.other_account
                if self.acct_parents[a] == 0 and self.acct_parents[oa] == 0:
                    continue
                price = e.price
                oid = e.order_id
                ooid = e.other_order_id
                leaves = e.leaves
                oleaves = e.other_leaves
                if self.acct_parents[a]:
                    i = self.map_get(oid)
                    if i >= 0:
                        self.on_fill(eng, i, price, qty, leaves)
                if self.acct_parents[oa]:
                    i = self.map_get(ooid)
                    if i >= 0:
                        self.on_fill(eng, i, price, qty, oleaves)
            elif e.kind == EV_CANCELLED and self.active and self.acct_parents[e.account]:
                i = self.map_get(e.order_id)
                if i >= 0:
                    self.map_del(e.order_id)
                    self.P[i].child_oid = 0
                    self.P[i].child_leaves = 0
        return 0

    # -- COMMANDS --

    cdef int cmd_new(self, Engine eng) except -1:
        cdef const Command* c = eng.cur
        cdef uint32_t a = c.account, sym = c.symbol
        if not eng.account_ok(a):
            return _reject(eng, REJ_UNKNOWN_ACCOUNT)
        if c.client_order_id == CLID_RESERVED:
            return _reject(eng, REJ_CLIENT_ORDER_ID_RESERVED)
        if c.client_order_id <= eng.acct_last_clid[a]:
            return _reject(eng, REJ_DUPLICATE_CLIENT_ORDER_ID)
        eng.acct_last_clid[a] = c.client_order_id          # one id space with NEW_ORDER
        if not eng.symbol_ok(sym):
            return _reject(eng, REJ_UNKNOWN_SYMBOL)
        if eng.syms[sym].state == SYM_HALTED:
            return _reject(eng, REJ_SYMBOL_HALTED)
        if c.side != SIDE_BUY and c.side != SIDE_SELL:
            return _reject(eng, REJ_INVALID_SIDE)
        cdef uint8_t algo = c.order_type
        if algo < ALGO_TWAP or algo > ALGO_POV:
            return _reject(eng, REJ_INVALID_ALGO)
        if c.qty <= 0:
            return _reject(eng, REJ_INVALID_QTY)
        if c.qty % eng.syms[sym].lot:
            return _reject(eng, REJ_QTY_NOT_LOT_MULTIPLE)
        if c.qty > eng.syms[sym].max_qty:
            return _reject(eng, REJ_QTY_ABOVE_MAX)
        if c.price < 0:
            return _reject(eng, REJ_INVALID_PRICE)
        if c.price and c.price % eng.syms[sym].tick:
            return _reject(eng, REJ_PRICE_NOT_TICK_MULTIPLE)
        if c.price > eng.syms[sym].max_price:
            return _reject(eng, REJ_PRICE_ABOVE_MAX)
        cdef uint64_t pa = <uint64_t>c.display_qty, pb = c.order_id
        cdef int32_t slices = <int32_t>(pa & 0xFFFF)
        cdef uint16_t rand_bps = (pa >> 16) & 0xFFFF, aggr = (pa >> 32) & 0xFFFF, part = (pa >> 48) & 0xFFFF
        cdef int32_t offset = <int32_t>(pb & 0xFFFF)
        cdef uint16_t lam = (pb >> 16) & 0xFFFF, vol = (pb >> 32) & 0xFFFF, eta = (pb >> 48) & 0xFFFF
        cdef uint8_t end_action = c.tif if c.tif else AEND_CANCEL
        if slices == 0:
            slices = self.default_slices
        if (slices > self.max_slices or rand_bps > MAX_RAND_BPS or aggr > 10000 or part > MAX_PART_BPS or
                offset > 32767 or (end_action != AEND_CANCEL and end_action != AEND_SWEEP) or
                (algo == ALGO_POV and part == 0) or (algo == ALGO_IS and eta == 0)):
            return _reject(eng, REJ_INVALID_ALGO_PARAMS)
        cdef int64_t start = c.stop_price, end = c.expire_ts_ns
        if end <= start or end <= self.clock_ns or end - start > self.max_duration_ns:
            return _reject(eng, REJ_INVALID_ALGO_WINDOW)
        cdef int32_t i
        for i in range(self.max_parents):
            if self.P[i].parent_id == 0:
                break
        else:
            return _reject(eng, REJ_ALGO_CAPACITY_EXHAUSTED)
        cdef int64_t bid = eng.best_price(sym, SIDE_BUY), ask = eng.best_price(sym, SIDE_SELL), arrival = 0
        if bid and ask:
            arrival = bid + (ask - bid) // 2
        elif eng.syms[sym].has_last:
            arrival = eng.syms[sym].last
        if algo == ALGO_IS and arrival == 0:
            return _reject(eng, REJ_NO_REFERENCE_PRICE_FOR_ALGO)
        if algo == ALGO_IS and vol == 0:
            vol = self.volatility(sym)           # from the symbol's price history
            if vol == 0:
                return _reject(eng, REJ_INVALID_ALGO_PARAMS)
        cdef int code
        if eng.risk is not None:              # the parent's total, up front (the children are checked again)
            code = check_order(eng.risk, a, sym, c.strategy, c.side, OT_LIMIT if c.price else OT_MARKET, TIF_GTC,
                               0, c.price, 0, c.qty, c.qty, eng.acct_open[a], <int64_t>c.ts_ns, eng.syms[sym].tick)
            if code:
                return _reject(eng, code)
        cdef Parent* p = &self.P[i]
        memset(p, 0, sizeof(Parent))
        p.parent_id = self.next_parent_id
        self.next_parent_id += 1
        p.client_order_id = c.client_order_id
        p.rng = self.seed ^ (p.parent_id * <uint64_t>0xd1342543de82ef95ULL)
        p.qty = c.qty
        p.limit = c.price
        p.arrival = arrival
        p.start_ns = start
        p.end_ns = end
        p.account = a
        p.symbol = sym
        p.strategy = c.strategy
        p.offset_ticks = offset
        p.slices = <uint16_t>slices
        p.rand_bps = rand_bps
        p.aggr_bps = aggr
        p.part_bps = part
        p.risk_aversion = lam
        p.volatility = vol
        p.impact = eta
        p.side = c.side
        p.algo = algo
        p.state = AST_WAITING
        p.end_action = end_action
        if i >= self.hwm:
            self.hwm = i + 1
        self.active += 1
        self.acct_parents[a] += 1
        self.plan(eng, i)
        cdef Event* e = self.report(eng, EV_ALGO_ACCEPTED, i, 0)
        e.price = arrival
        return 0

    cdef int cmd_clock(self, Engine eng) except -1:
        cdef int64_t now = eng.cur.expire_ts_ns
        if now > self.clock_ns:
            self.clock_ns = now
        now = self.clock_ns
        cdef int64_t behind
        cdef int32_t k, i
        if self.bucket_start_ns == 0:
            self.bucket_start_ns = now
        behind = (now - self.bucket_start_ns) // self.bucket_ns
        if behind > 0:                      # close and roll the buckets (at most all of them)
            for k in range(<int32_t>(behind if behind < N_BUCKETS else N_BUCKETS)):
                for i in range(self.max_symbols):
                    self.bucket_px[<int64_t>i * N_BUCKETS + self.bucket_head] = \
                        eng.syms[i].last if eng.syms[i].has_last else 0
                self.bucket_head = (self.bucket_head + 1) % N_BUCKETS
                for i in range(self.max_symbols):
                    self.bucket[<int64_t>i * N_BUCKETS + self.bucket_head] = 0
            self.bucket_start_ns += behind * self.bucket_ns
        if self.active == 0:
            return 0
        for i in range(self.hwm):
            if self.P[i].parent_id:
                self.step(eng, i, now)
        return 0

    cdef int cmd_action(self, Engine eng) except -1:
        """ALGO_CANCEL, ALGO_PAUSE, ALGO_RESUME, ALGO_AMEND."""
        cdef const Command* c = eng.cur
        cdef uint8_t k = c.kind
        cdef uint32_t a = c.account
        if not eng.account_ok(a):
            return _reject(eng, REJ_UNKNOWN_ACCOUNT, False)
        cdef int32_t i = self.find(a, c.order_id, c.client_order_id)
        if i < 0:
            return _reject(eng, REJ_UNKNOWN_ALGO, False)
        cdef Parent* p = &self.P[i]
        cdef uint64_t pid = p.parent_id
        cdef int64_t qty, lot = eng.syms[p.symbol].lot, t0, old_qty, old_end
        cdef int32_t j, base = i * self.max_slices
        if k == CMD_ALGO_CANCEL:
            self.cancel_child(eng, i)
            if p.parent_id == pid:
                self.release(eng, i, AEND_CANCELLED)
        elif k == CMD_ALGO_PAUSE:
            self.cancel_child(eng, i)
            if p.parent_id == pid:
                p.state = AST_PAUSED
                p.pause_reason = 0
                self.report(eng, EV_ALGO_PAUSED, i, 0)
        elif k == CMD_ALGO_RESUME:
            if p.state == AST_PAUSED:
                p.state = AST_WAITING if self.clock_ns < p.start_ns else AST_ACTIVE
                p.pause_reason = 0
                p.kick = 1
            self.report(eng, EV_ALGO_RESUMED, i, 0)
        elif k == CMD_ALGO_AMEND:
            qty = c.qty if c.qty else p.qty
            if qty < p.filled or qty < 0:
                return _reject(eng, REJ_INVALID_ALGO_AMEND, False)
            if qty % lot:
                return _reject(eng, REJ_QTY_NOT_LOT_MULTIPLE, False)
            if qty > eng.syms[p.symbol].max_qty:
                return _reject(eng, REJ_QTY_ABOVE_MAX, False)
            if c.price < 0 or (c.price and c.price % eng.syms[p.symbol].tick) or c.price > eng.syms[p.symbol].max_price:
                return _reject(eng, REJ_INVALID_ALGO_AMEND, False)
            if c.expire_ts_ns and (c.expire_ts_ns <= self.clock_ns or c.expire_ts_ns <= p.start_ns or
                                   c.expire_ts_ns - p.start_ns > self.max_duration_ns):
                return _reject(eng, REJ_INVALID_ALGO_AMEND, False)
            self.cancel_child(eng, i)             # (its price or size may not fit any more)
            if p.parent_id != pid:
                return 0
            old_qty = p.qty
            old_end = p.end_ns
            if c.price:
                p.limit = c.price
            if qty != old_qty and p.algo != ALGO_POV:
                for j in range(p.slices):
                    self.sched_q[base + j] = lot_floor(ta_muldiv(self.sched_q[base + j], qty, old_qty), lot)
                self.sched_q[base + p.slices - 1] = qty
            p.qty = qty
            if c.expire_ts_ns and c.expire_ts_ns != old_end:
                t0 = self.clock_ns if self.clock_ns > p.start_ns else p.start_ns
                if p.algo != ALGO_POV and old_end > t0:
                    for j in range(p.slice_idx, p.slices):
                        if self.sched_t[base + j] > t0:
                            self.sched_t[base + j] = t0 + ta_muldiv(self.sched_t[base + j] - t0,
                                                                     c.expire_ts_ns - t0, old_end - t0)
                p.end_ns = c.expire_ts_ns
            p.kick = 1
            self.report(eng, EV_ALGO_AMENDED, i, 0)
            if p.filled >= p.qty:
                self.release(eng, i, AEND_FILLED)
        return 0

    cdef int32_t find(self, uint32_t account, uint64_t parent_id, uint64_t clid) noexcept:
        """The live parent of `account` with that id (or, if 0, that client order id); -1 if none."""
        cdef int32_t i
        cdef Parent* p
        for i in range(self.hwm):
            p = &self.P[i]
            if p.parent_id and p.account == account and (
                    p.parent_id == parent_id if parent_id else p.client_order_id == clid):
                return i
        return -1

    cdef uint16_t volatility(self, uint32_t sym) noexcept:
        """sigma in 1/100 bp per sqrt(s), from the returns between the closing prices of the symbol's last
        N_BUCKETS - 1 closed buckets (each bucket_ns long; a bucket without a price breaks the chain):
        sqrt(mean(r**2) / bucket seconds), r in 1/100 bp. 0 with fewer than two returns."""
        cdef int64_t base = <int64_t>sym * N_BUCKETS, prev = 0, px, r, sumsq = 0
        cdef int32_t k, n = 0
        cdef double sigma
        for k in range(1, N_BUCKETS):       # oldest closed bucket first: head + 1 .. head - 1
            px = self.bucket_px[base + (self.bucket_head + k) % N_BUCKETS]
            if px > 0 and prev > 0:
                r = ta_muldiv(px - prev, 1_000_000, prev)
                sumsq += r * r
                n += 1
            prev = px
        if n < 2:
            return 0
        sigma = sqrt(<double>sumsq / <double>n / (<double>self.bucket_ns / 1e9))   # IEEE: correctly rounded
        if sigma >= 65535.0:
            return 65535
        return <uint16_t>(sigma + 0.5) if sigma >= 0.5 else 1

    # -- SCHEDULES --

    cdef int plan(self, Engine eng, int32_t i) except -1:
        """The parent's schedule at acceptance: when each slice is due (sched_t) and the cumulative
        quantity due by it (sched_q, lot multiples, the last = the total). POV has none."""
        cdef Parent* p = &self.P[i]
        cdef int32_t n = p.slices, j, base = i * self.max_slices, k, lo, hi
        cdef int64_t lot = eng.syms[p.symbol].lot, dur = p.end_ns - p.start_ns, step = dur // n, q, prev = 0, jit
        cdef int64_t total, acc, w
        cdef uint64_t r, rng = p.rng          # (a local: the packed field's address may be unaligned)
        cdef uint32_t sym = p.symbol
        if p.algo == ALGO_POV:
            p.next_ns = p.start_ns
            return 0
        for j in range(n):
            self.sched_t[base + j] = p.start_ns + ta_muldiv(dur, j, n)
        if p.algo == ALGO_TWAP:
            for j in range(n):
                q = ta_muldiv(p.qty, j + 1, n)
                if p.rand_bps:
                    # a slice's time within +-rand/2 of a slice interval, its size within +-rand of a slice
                    if j > 0:
                        r = ta_next(&rng) % (2 * <uint64_t>p.rand_bps + 1)
                        jit = <int64_t>r - p.rand_bps
                        self.sched_t[base + j] += ta_muldiv(step, jit, 20000)
                    r = ta_next(&rng) % (2 * <uint64_t>p.rand_bps + 1)
                    q += ta_muldiv(p.qty // n, <int64_t>r - p.rand_bps, 10000)
                q = lot_floor(q, lot)
                if q < prev:
                    q = prev
                if q > p.qty or j == n - 1:
                    q = p.qty
                self.sched_q[base + j] = q
                prev = q
            p.rng = rng
        elif p.algo == ALGO_VWAP:
            # weights: the configured profile resampled onto the slices, else the symbol's traded volume
            # over the last `slices` buckets (oldest first), else equal
            total = 0
            for j in range(n):
                if self.n_profile:
                    lo = <int32_t>(<int64_t>j * self.n_profile // n)
                    hi = <int32_t>(<int64_t>(j + 1) * self.n_profile // n)
                    w = 0
                    for k in range(lo, hi if hi > lo else lo + 1):
                        w += self.profile[k]
                else:
                    lo = n if n < N_BUCKETS else N_BUCKETS      # buckets looked back over
                    k = (self.bucket_head - lo + 1 + <int32_t>(<int64_t>j * lo // n)) % N_BUCKETS
                    if k < 0:
                        k += N_BUCKETS
                    w = self.bucket[<int64_t>sym * N_BUCKETS + k]
                self.sched_q[base + j] = w                  # (the weight, for now)
                total += w
            acc = 0
            for j in range(n):
                acc += self.sched_q[base + j] if total else 1
                q = lot_floor(ta_muldiv(p.qty, acc, total if total else n), lot)
                self.sched_q[base + j] = q if j < n - 1 else p.qty
        else:                                               # IS
            _is_targets(p.qty, lot, n, dur, p.risk_aversion, p.volatility, p.impact, &self.sched_q[base])
        return 0

    cdef int step(self, Engine eng, int32_t i, int64_t now) except -1:
        """One parent at one clock: start, end, the slice due (or POV's interval and resize)."""
        cdef Parent* p = &self.P[i]
        cdef int32_t base = i * self.max_slices
        cdef int64_t target, catchup, cap, lot, ivl
        cdef uint64_t pid = p.parent_id
        cdef bint due = False, capped
        if p.state == AST_WAITING:
            if now < p.start_ns:
                return 0
            p.state = AST_ACTIVE
            p.vol_base = self.sym_volume[p.symbol]
            p.notional_base = self.sym_notional[p.symbol]
            self.interval(i)
        if now >= p.end_ns:
            return self.finish(eng, i)
        if p.state == AST_PAUSED:
            return 0
        lot = eng.syms[p.symbol].lot
        if p.algo == ALGO_POV:
            if now >= p.next_ns:
                # a new interval (window / slices, from the start): its cap starts from nothing, so the
                # working child (sized to the last interval's allowance) goes first
                self.cancel_child(eng, i)
                if p.parent_id != pid:
                    return 0
                self.interval(i)
                ivl = (p.end_ns - p.start_ns) // p.slices
                if ivl < 1:
                    ivl = 1
                p.next_ns = p.start_ns + ((now - p.start_ns) // ivl + 1) * ivl
            cap = self.allowance(i, lot)
            if cap > p.qty:
                cap = p.qty
            p.expected = cap
            if p.kick or cap - p.filled - p.child_leaves >= lot:
                p.kick = 0
                self.work(eng, i, cap, 0)
            return 0
        while p.slice_idx < p.slices and self.sched_t[base + p.slice_idx] <= now:
            p.slice_idx += 1
            due = True
        if p.slice_idx == 0:
            return 0
        capped = p.algo == ALGO_VWAP and p.part_bps != 0
        if due:                                 # a new interval: the slice
            if capped:
                self.cancel_child(eng, i)
                if p.parent_id != pid:
                    return 0
            self.interval(i)
        elif not (p.kick or capped):
            return 0
        target = self.sched_q[base + p.slice_idx - 1]
        catchup = self.sched_q[base + p.slice_idx - 2] if p.slice_idx >= 2 else 0
        p.expected = target
        p.last_target = catchup
        if capped:
            # at most the allowance of this slice's market volume so far; topped up at every clock
            cap = self.allowance(i, lot)
            target = target if target < cap else cap
            catchup = catchup if catchup < cap else cap
            if not (due or p.kick) and target - p.filled - p.child_leaves < lot:
                return 0
        cdef bint report = due or p.kick
        p.kick = 0
        cdef int64_t filled = p.filled
        self.work(eng, i, target, catchup)
        if report and p.parent_id == pid and p.filled == filled and p.state != AST_PAUSED:   # (else reported already)
            self.report(eng, EV_ALGO_PROGRESS, i, 0)
        return 0

    cdef void interval(self, int32_t i) noexcept:
        """Close the parent's interval (its fills in it priced at the interval's market VWAP, for the
        slippage against interval VWAP) and begin the next (the participation cap starts from here)."""
        cdef Parent* p = &self.P[i]
        cdef int64_t own = p.filled - p.iv_filled
        cdef int64_t mvol = self.sym_volume[p.symbol] - p.iv_vol_base - own
        cdef int64_t mnot
        if own > 0 and mvol > 0:
            mnot = <int64_t>(self.sym_notional[p.symbol] - p.iv_notional_base) - (p.notional - p.iv_notional)
            p.bench_market += ta_muldiv(own, mnot, mvol)
            p.bench_notional += p.notional - p.iv_notional
        p.iv_vol_base = self.sym_volume[p.symbol]
        p.iv_notional_base = self.sym_notional[p.symbol]
        p.iv_filled = p.filled
        p.iv_notional = p.notional

    cdef int64_t allowance(self, int32_t i, int64_t lot) noexcept:
        """The participation cap as a filled total: filled when the interval began, plus the rate times
        the market volume of the interval so far (its own fills left out), lot-floored."""
        cdef Parent* p = &self.P[i]
        return p.iv_filled + lot_floor(ta_muldiv(self.sym_volume[p.symbol] - p.iv_vol_base - (p.filled - p.iv_filled),
                                                 p.part_bps, 10000), lot)

    cdef int work(self, Engine eng, int32_t i, int64_t target, int64_t catchup) except -1:
        """Bring the parent towards `target` filled: cancel its working child; send the aggressive
        share (and whatever is behind `catchup`, the previous slice's target) as an IOC at the far
        touch; rest the remainder passively at the own-side touch less the offset. Every price is
        clamped to the limit."""
        cdef Parent* p = &self.P[i]
        cdef uint64_t pid = p.parent_id
        cdef uint32_t sym = p.symbol
        cdef int64_t lot = eng.syms[sym].lot, tick = eng.syms[sym].tick, need, aggr, px
        cdef bint buy = p.side == SIDE_BUY
        if p.child_oid:
            self.cancel_child(eng, i)
            if p.parent_id != pid:
                return 0
        need = lot_floor(target - p.filled, lot)
        if need <= 0:
            return 0
        aggr = lot_floor(ta_muldiv(need, p.aggr_bps, 10000), lot)
        if catchup - p.filled > aggr:
            aggr = lot_floor(catchup - p.filled, lot)
        if aggr > need:
            aggr = need
        if aggr > 0:
            px = eng.best_price(sym, SIDE_SELL if buy else SIDE_BUY)
            if px:
                px = _clamp(p, px)
                self.send_child(eng, i, px, aggr, TIF_IOC)
                if p.parent_id != pid or p.state == AST_PAUSED:
                    return 0
        need = lot_floor(target - p.filled, lot)
        if need <= 0:
            return 0
        px = eng.best_price(sym, SIDE_BUY if buy else SIDE_SELL)
        if px:
            px = px - p.offset_ticks * tick if buy else px + p.offset_ticks * tick
        else:
            px = eng.best_price(sym, SIDE_SELL if buy else SIDE_BUY)
            if px:
                px = px - tick if buy else px + tick            # inside an empty side: one tick off the far touch
            elif eng.syms[sym].has_last:
                px = eng.syms[sym].last
            else:
                px = p.limit
        if px <= 0:
            if p.limit == 0:
                return 0                # no price to rest at: the next slice tries again
            px = tick if buy else p.limit
        px = _clamp(p, px)
        if px > eng.syms[sym].max_price:
            px = eng.syms[sym].max_price - eng.syms[sym].max_price % tick
        self.send_child(eng, i, px, need, TIF_GTC)
        return 0

    cdef int finish(self, Engine eng, int32_t i) except -1:
        """The end of the window: cancel the working child; sweep the rest (an IOC at the limit, a
        market IOC without one) or leave it; then ALGO_DONE."""
        cdef Parent* p = &self.P[i]
        cdef uint64_t pid = p.parent_id
        self.cancel_child(eng, i)
        if p.parent_id != pid:
            return 0
        if p.end_action == AEND_SWEEP and p.state != AST_PAUSED and p.qty > p.filled:
            self.send_child(eng, i, p.limit, p.qty - p.filled, TIF_IOC)
            if p.parent_id != pid:
                return 0
            return self.release(eng, i, AEND_SWEPT)
        return self.release(eng, i, AEND_EXPIRED)

    # -- CHILDREN --

    cdef int send_child(self, Engine eng, int32_t i, int64_t price, int64_t qty, uint8_t tif) except -1:
        """A NEW_ORDER of the parent's account (price 0: a market order), through process_one. A child
        refused by any check pauses the parent (ALGO_PAUSED, reason = the Reject code): no retry."""
        cdef Parent* p = &self.P[i]
        cdef const Command* outer = eng.cur
        cdef Command c
        memset(&c, 0, sizeof(Command))
        c.kind = CMD_NEW_ORDER
        c.account = p.account
        c.symbol = p.symbol
        c.side = p.side
        c.order_type = OT_LIMIT if price else OT_MARKET
        c.tif = tif
        c.flags = OFLAG_ALGO_CHILD
        c.price = price
        c.qty = qty
        c.client_order_id = p.client_order_id
        c.strategy = p.strategy
        c.seq = outer.seq
        c.ts_ns = outer.ts_ns
        cdef uint64_t pid = p.parent_id, oid = eng.next_order_id
        cdef Py_ssize_t e0 = eng.ev_count
        # known as the working child before it runs: its own sweep's fills are observed inside
        self.map_put(oid, i)
        p.child_oid = oid
        p.child_leaves = qty
        self.children_spawned += 1
        eng.algo_depth += 1
        try:
            eng.process_one(&c)
        finally:
            eng.algo_depth -= 1
            eng.cur = outer
        if p.parent_id != pid:
            return 0                    # filled in full by its own sweep: released
        if eng.ev_buf[e0].kind == EV_REJECTED:
            if p.child_oid == oid:
                self.map_del(oid)
                p.child_oid = 0
                p.child_leaves = 0
            p.state = AST_PAUSED
            p.pause_reason = eng.ev_buf[e0].reason
            self.report(eng, EV_ALGO_PAUSED, i, p.pause_reason)
            return 0
        p.children += 1
        return 0

    cdef int cancel_child(self, Engine eng, int32_t i) except -1:
        """Cancel the working child (a CANCEL through process_one); its CANCELLED clears it (observe)."""
        cdef Parent* p = &self.P[i]
        if p.child_oid == 0:
            return 0
        cdef const Command* outer = eng.cur
        cdef Command c
        cdef uint64_t oid = p.child_oid
        memset(&c, 0, sizeof(Command))
        c.kind = CMD_CANCEL
        c.account = p.account
        c.order_id = oid
        c.seq = outer.seq
        c.ts_ns = outer.ts_ns
        eng.algo_depth += 1
        try:
            eng.process_one(&c)
        finally:
            eng.algo_depth -= 1
            eng.cur = outer
        if p.child_oid == oid:          # not live any more (cannot happen: its end is observed)
            self.map_del(oid)
            p.child_oid = 0
            p.child_leaves = 0
        return 0

    cdef int on_fill(self, Engine eng, int32_t i, int64_t price, int64_t qty, int64_t leaves) except -1:
        cdef Parent* p = &self.P[i]
        p.filled += qty
        p.notional += price * qty
        p.child_leaves = leaves
        if leaves == 0:
            self.map_del(p.child_oid)
            p.child_oid = 0
        if p.filled >= p.qty:
            return self.release(eng, i, AEND_FILLED)
        self.report(eng, EV_ALGO_PROGRESS, i, 0)
        return 0

    # -- REPORTS AND SLOTS --

    cdef Event* report(self, Engine eng, uint8_t kind, int32_t i, uint16_t reason) except NULL:
        """A parent report (EventKind ALGO_*: the fields in protocol/codes.py), for the current command."""
        cdef Parent* p = &self.P[i]
        cdef Event* e = eng.emit(kind, -1)
        e.account = p.account
        e.symbol = p.symbol
        e.side = p.side
        e.order_id = p.parent_id
        e.client_order_id = p.client_order_id
        e.other_order_id = p.child_oid
        e.reason = reason
        e.qty = p.filled
        e.leaves = p.qty - p.filled
        e.price = (p.notional + p.filled // 2) // p.filled if p.filled else 0
        e.trade_id = <uint64_t>p.expected
        e.other_leaves = p.arrival
        if p.arrival and p.filled:
            e.fee = ta_slip(p.notional, p.arrival, p.filled) if p.side == SIDE_BUY else \
                -ta_slip(p.notional, p.arrival, p.filled)
        return e

    cdef int release(self, Engine eng, int32_t i, uint16_t reason) except -1:
        """ALGO_DONE, then the slot is free."""
        cdef Parent* p = &self.P[i]
        if p.filled >= p.qty:
            p.expected = p.qty
        cdef Event* e = self.report(eng, EV_ALGO_DONE, i, reason)
        cdef int32_t b = 0
        if p.filled and p.arrival:
            while b < 12 and e.fee > SLIP_BOUNDS[b]:
                b += 1
            self.slip_counts[b] += 1
            self.slip_sum_cbps += e.fee
        if p.child_oid:
            self.map_del(p.child_oid)
        self.acct_parents[p.account] -= 1
        self.active -= 1
        memset(p, 0, sizeof(Parent))
        return 0

    # child order id -> parent slot: linear probing, backward-shift deletion, key 0 = empty
    cdef void map_put(self, uint64_t oid, int32_t i) noexcept:
        cdef uint64_t k = (oid * <uint64_t>0x9e3779b97f4a7c15ULL) & self.map_mask
        while self.map_key[k] != 0:
            k = (k + 1) & self.map_mask
        self.map_key[k] = oid
        self.map_val[k] = i

    cdef int32_t map_get(self, uint64_t oid) noexcept:
        cdef uint64_t k = (oid * <uint64_t>0x9e3779b97f4a7c15ULL) & self.map_mask
        while self.map_key[k] != 0:
            if self.map_key[k] == oid:
                return self.map_val[k]
            k = (k + 1) & self.map_mask
        return -1

    cdef void map_del(self, uint64_t oid) noexcept:
        cdef uint64_t mask = self.map_mask, k = (oid * <uint64_t>0x9e3779b97f4a7c15ULL) & mask, j, home
        while self.map_key[k] != oid:
            if self.map_key[k] == 0:
                return
            k = (k + 1) & mask
        j = k
        while True:                     # shift back every later entry of the run that may move
            j = (j + 1) & mask
            if self.map_key[j] == 0:
                break
            home = (self.map_key[j] * <uint64_t>0x9e3779b97f4a7c15ULL) & mask
            if ((j - home) & mask) >= ((j - k) & mask):
                self.map_key[k] = self.map_key[j]
                self.map_val[k] = self.map_val[j]
                k = j
        self.map_key[k] = 0
        self.map_val[k] = -1

    # -- QUERIES AND STATE --

    def parents(self, uint32_t account=0):
        """Live parents (of one account, or all with 0) as dicts, ascending parent id."""
        out = []
        cdef int32_t i
        for i in range(self.hwm):
            if self.P[i].parent_id and (account == 0 or self.P[i].account == account):
                row = {name: int(self.parents_arr[i][name]) for name in PARENT_DTYPE.names if not name.startswith("_")}
                f = row["filled"]
                row["avg_price"] = (row["notional"] + f // 2) // f if f else 0
                row["slippage_cbps"] = 0
                if row["arrival"] and f:
                    s = ta_slip(row["notional"], row["arrival"], f)
                    row["slippage_cbps"] = s if row["side"] == SIDE_BUY else -s
                # the market's VWAP since the parent started, its own fills left out
                mvol = int(self.sym_volume_arr[row["symbol"]]) - row["vol_base"] - f
                mnot = (int(self.sym_notional_arr[row["symbol"]]) - row["notional_base"] - row["notional"]) % (1 << 64)
                row["market_vwap"] = (mnot + mvol // 2) // mvol if mvol > 0 and row["state"] != AST_WAITING else 0
                row["slippage_vwap_cbps"] = 0
                if row["market_vwap"] and f:
                    s = (row["notional"] * mvol - mnot * f) * 1_000_000 // (mnot * f)
                    row["slippage_vwap_cbps"] = s if row["side"] == SIDE_BUY else -s
                # the current interval's market VWAP; the fills against their own intervals' VWAPs
                own = f - row["iv_filled"]
                ivol = int(self.sym_volume_arr[row["symbol"]]) - row["iv_vol_base"] - own
                inot = (int(self.sym_notional_arr[row["symbol"]]) - row["iv_notional_base"]
                        - (row["notional"] - row["iv_notional"])) % (1 << 64)
                row["interval_vwap"] = (inot + ivol // 2) // ivol if ivol > 0 and row["state"] != AST_WAITING else 0
                bn, bm = row["bench_notional"], row["bench_market"]
                if own > 0 and ivol > 0 and row["state"] != AST_WAITING:
                    bn += row["notional"] - row["iv_notional"]
                    bm += own * inot // ivol
                row["slippage_interval_cbps"] = 0
                if bm > 0:
                    s = abs(bn - bm) * 1_000_000 // bm * (1 if bn >= bm else -1)     # toward zero, as ta_slip
                    row["slippage_interval_cbps"] = s if row["side"] == SIDE_BUY else -s
                out.append(row)
        out.sort(key=lambda r: r["parent_id"])
        return out

    def schedule(self, uint64_t parent_id):
        """(times, cumulative quantities) of a live parent's schedule, or None."""
        cdef int32_t i
        for i in range(self.hwm):
            if self.P[i].parent_id == parent_id:
                n = self.P[i].slices if self.P[i].algo != ALGO_POV else 0
                b = i * self.max_slices
                return self.sched_t_arr[b:b + n].tolist(), self.sched_q_arr[b:b + n].tolist()
        return None

    def slippage_buckets(self):
        """[(upper bound in bp or None for +Inf, cumulative count)] of the parents that ended with fills."""
        out, acc = [], 0
        for i in range(13):
            acc += int(self.slip_counts_arr[i])
            out.append((int(SLIP_BOUNDS_CBPS[i]) / 100 if i < 12 else None, acc))
        return out

    def symbol_volume(self, uint32_t symbol):
        return int(self.sym_volume_arr[symbol]) if symbol < <uint32_t>self.max_symbols else 0

    def export_state(self):
        """The algorithms' state as {name: array} (views), keys prefixed "algos."."""
        n = self.hwm
        return {
            "algos.capacity": np.array([self.max_parents, self.max_slices, self.max_accounts, self.max_symbols],
                                       dtype=np.int64),
            "algos.scalars": np.array([<int64_t>self.next_parent_id, self.clock_ns, self.bucket_start_ns,
                                       self.bucket_head, self.active, self.hwm, <int64_t>self.children_spawned],
                                      dtype=np.int64),     # order: SCALARS
            "algos.parents": self.parents_arr[:n],
            "algos.sched_t": self.sched_t_arr[:n * self.max_slices],
            "algos.sched_q": self.sched_q_arr[:n * self.max_slices],
            "algos.sym_volume": self.sym_volume_arr,
            "algos.sym_notional": self.sym_notional_arr,
            "algos.bucket": self.bucket_arr,
            "algos.bucket_px": self.bucket_px_arr,
        }

    def import_state(self, state):
        """Load what export_state() made (nothing when the snapshot predates the algorithms); the child
        map and the per-account counts are derived from the parents."""
        if "algos.scalars" not in state:
            return
        cap = [int(x) for x in state["algos.capacity"]]
        if cap != [self.max_parents, self.max_slices, self.max_accounts, self.max_symbols]:
            raise ValueError(f"snapshot algos capacities {cap} differ from this engine's")
        sc = [int(x) for x in state["algos.scalars"]]
        n = sc[5]
        self.parents_arr[:] = 0
        self.parents_arr[:n] = state["algos.parents"]
        self.sched_t_arr[:] = 0
        self.sched_q_arr[:] = 0
        self.sched_t_arr[:n * self.max_slices] = state["algos.sched_t"]
        self.sched_q_arr[:n * self.max_slices] = state["algos.sched_q"]
        self.sym_volume_arr[:] = state["algos.sym_volume"]
        self.sym_notional_arr[:] = state["algos.sym_notional"]
        self.bucket_arr[:] = state["algos.bucket"]
        self.bucket_px_arr[:] = state["algos.bucket_px"]
        self.next_parent_id = sc[0]
        self.clock_ns = sc[1]
        self.bucket_start_ns = sc[2]
        self.bucket_head = sc[3]
        self.active = sc[4]
        self.hwm = n
        self.children_spawned = sc[6]
        self.map_key_arr[:] = 0
        self.map_val_arr[:] = -1
        self.acct_parents_arr[:] = 0
        cdef int32_t i
        for i in range(n):
            if self.P[i].parent_id:
                self.acct_parents[self.P[i].account] += 1
                if self.P[i].child_oid:
                    self.map_put(self.P[i].child_oid, i)

    def state_bytes(self):
        """Everything that is state, as bytes (Engine.state_hash folds a digest of it in)."""
        st = self.export_state()
        return b"".join(st[k].tobytes() for k in ("algos.scalars", "algos.parents", "algos.sched_t",
                                                 "algos.sched_q", "algos.sym_volume", "algos.sym_notional",
                                                 "algos.bucket", "algos.bucket_px"))


cdef inline int64_t _clamp(Parent* p, int64_t px) noexcept:
    """A child's price never worse than the parent's limit."""
    if p.limit:
        if p.side == SIDE_BUY and px > p.limit:
            return p.limit
        if p.side == SIDE_SELL and px < p.limit:
            return p.limit
    return px


cdef int _reject(Engine eng, uint16_t code, bint params=True) except -1:
    """REJECTED for an ALGO_* command: as the core's (ALGO_NEW without its packed parameters: order_id 0),
    folded into risk as any reject is (the engine-wide error rate; the core folds the events of the
    children, not those of the ALGO_* command itself)."""
    eng.reject(code)
    cdef Py_ssize_t i = eng.ev_count - 1
    if params:
        eng.ev_buf[i].order_id = 0
    if eng.risk is not None:
        eng.risk_after(i)
    return 0
