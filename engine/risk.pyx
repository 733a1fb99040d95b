# Pre-trade risk, positions, P&L, margin and circuit breakers over preallocated numpy
# arrays. Rules, units and rounding: engine/RISK.md. Layout and entry points: risk.pxd.
#
# Hot-module directives (setup.py): boundscheck/wraparound off. What makes that safe:
# every account and symbol id reaching this module comes from the core after its own
# range checks (UNKNOWN_ACCOUNT / UNKNOWN_SYMBOL) or from range-checked admin commands
# (check_target), and strategy ids are checked here (INVALID_STRATEGY) before any table
# lookup. All 128-bit arithmetic is done by the C helpers below, which saturate instead of
# wrapping; every cached figure is clamped to +-fig_max so that per-account sums of up to
# max_symbols figures can never overflow int64.
cimport cython
cimport numpy as cnp
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t, INT64_MIN, INT64_MAX
from libc.string cimport memset

from protocol.cdefs cimport *

import numpy as np

cnp.import_array()

# LimitKind -> how the scopes combine (RISK.md "Limits")
cdef uint8_t[N_LIMITS] KIND_CLASS       # 1 = CAP, 2 = FLOOR, 3 = OVERRIDE, 4 = DEFAULT only
for _k in (LIM_MAX_ORDER_QTY, LIM_MAX_ORDER_VALUE, LIM_MAX_POSITION_VALUE, LIM_MAX_OPEN_ORDERS, LIM_MAX_LEVERAGE,
           LIM_MAX_DAILY_LOSS, LIM_PRICE_COLLAR, LIM_MARKET_BAND, LIM_MAX_VAR, LIM_LARGE_ORDER_QTY,
           LIM_LARGE_POSITION_QTY):
    KIND_CLASS[_k] = 1
KIND_CLASS[LIM_INITIAL_MARGIN] = 2
KIND_CLASS[LIM_MAINTENANCE_MARGIN] = 2
for _k in (LIM_MAKER_FEE, LIM_TAKER_FEE, LIM_BREAKER_BAND, LIM_BREAKER_WINDOW_MS, LIM_BREAKER_COOLOFF_MS,
           LIM_EXTERNAL_MARK, LIM_ACCOUNT_REJECT_LIMIT, LIM_ACCOUNT_LOCKOUT_MS, LIM_LARGE_REJECT):
    KIND_CLASS[_k] = 3
KIND_CLASS[LIM_ERROR_THRESHOLD] = 4
KIND_CLASS[LIM_ERROR_ACCOUNTS] = 4

POSITION_DTYPE = np.dtype([
    ("key", "<u8"), ("pos", "<i8"), ("open_buy", "<i8"), ("open_sell", "<i8"), ("worst", "<i8"),
    ("anext", "<i4"), ("aprev", "<i4"), ("dnext", "<i4"), ("dirty", "u1"), ("listed", "u1"), ("restricted", "u1"),
    ("_pad", "u1"), ("ro_buy", "<i4"), ("ro_sell", "<i4"),
    ("avg_price", "<i8"), ("realized", "<i8"), ("fees", "<i8"), ("upnl", "<i8"), ("expo", "<i8"), ("wexpo", "<i8"),
    ("im", "<i8"), ("mm", "<i8"),
])
MAX_POSITIONS_DEFAULT = 1 << 20       # max_positions 0: max_accounts x max_symbols, at most this
ACCOUNT_COLUMNS = (("cash", np.int64), ("upnl_sum", np.int64), ("expo_sum", np.int64), ("wexpo_sum", np.int64),
                   ("im_sum", np.int64), ("mm_sum", np.int64), ("day_base", np.int64), ("slack", np.int64),
                   ("whi", np.int64),
                   ("n_active", np.int32),
                   ("n_dirty", np.int32), ("liq_cursor", np.uint32), ("state", np.uint8), ("prev_state", np.uint8),
                   ("kill", np.uint8), ("touched", np.uint8), ("kyc", np.uint8),
                   ("rej_ts", np.int64), ("rej_count", np.int64), ("lock_until", np.int64), ("err_seen", np.int64),
                   ("var_charged", np.int64), ("var_off", np.int64), ("var_ts", np.int64),
                   ("act_head", np.int32), ("dirty_head", np.int32))
SYMBOL_COLUMNS = (("num", np.int64), ("den", np.int64), ("den_magic", np.uint64), ("mark", np.int64),
                  ("wunit", np.int64),
                  ("brk_ts", np.int64), ("brk_ref", np.int64), ("brk_resume", np.int64),
                  ("brk_tripped", np.uint8), ("den_more", np.uint8), ("den_shift", np.uint8),
                  ("var_sens", np.int64), ("var_num", np.int64), ("var_den", np.int64), ("var_magic", np.uint64),
                  ("var_more", np.uint8))
SIZEOF_POSITION = sizeof(Position)
assert POSITION_DTYPE.itemsize == SIZEOF_POSITION


cdef inline void* _data(object arr) noexcept:
    return cnp.PyArray_DATA(<cnp.ndarray>arr)


cdef inline int64_t sat_add(int64_t a, int64_t b) noexcept:
    cdef int64_t r
    if __builtin_add_overflow(a, b, &r):
        return INT64_MAX if b > 0 else INT64_MIN
    return r


cdef inline int64_t clamp(int64_t v, int64_t m) noexcept:
    """v within +-m (every cached figure within +-fig_max: RISK.md "Units and rounding")."""
    return m if v > m else (-m if v < -m else v)


cdef inline int64_t moved(int64_t* total, int64_t old, int64_t v) noexcept:
    """v, a cached figure's new value; its account sum moves by the change from old."""
    total[0] += v - old
    return v


@cython.final
cdef class Risk:
    """Per-account cash, positions, P&L and margin, limits per scope, circuit breakers."""

    def __cinit__(self, int32_t max_accounts, int32_t max_symbols, int32_t max_strategies=256,
                  int32_t cash_decimals=2, int64_t max_positions=0):
        if max_accounts < 2 or max_symbols < 2 or max_strategies < 1 or not 0 <= cash_decimals <= 12:
            raise ValueError("risk: max_accounts/max_symbols >= 2, max_strategies >= 1, cash_decimals 0..12")
        if max_positions < 0 or max_positions >= (<int64_t>1 << 30):
            raise ValueError("risk: max_positions 0 .. 2**30 - 1 (0: max_accounts x max_symbols, at most 2**20)")
        self.max_accounts = max_accounts
        self.max_symbols = max_symbols
        self.max_strategies = max_strategies
        self.cash_decimals = cash_decimals
        self.fig_max = (<int64_t>1 << 62) // max_symbols
        cdef int64_t n = <int64_t>max_accounts * max_symbols
        if max_positions == 0:
            max_positions = min(n, MAX_POSITIONS_DEFAULT)
        self.max_positions = max_positions
        # the pool is zeroed memory never written above pool_hwm, so only the entries in use cost
        # pages; the index (pool index + 1 per pair, 0 = none) too starts untouched
        self.pool_arr = np.zeros(max_positions, dtype=POSITION_DTYPE)
        self.index_arr = np.zeros(n, dtype=np.int32)
        self.free_head = -1
        self.sums_arr = np.zeros((2, max_accounts), dtype=np.int64)
        self.acct_cols = {name: np.zeros(max_accounts, dtype=t) for name, t in ACCOUNT_COLUMNS}
        self.sym_cols = {name: np.zeros(max_symbols, dtype=t) for name, t in SYMBOL_COLUMNS}
        self.acct_cols["state"][:] = ACCT_ACTIVE
        self.acct_cols["prev_state"][:] = ACCT_ACTIVE
        self.acct_cols["kyc"][0] = KYC_VERIFIED     # the default KYC state (SET_KYC account 0 changes it)
        self.acct_cols["act_head"][:] = -1
        self.acct_cols["dirty_head"][:] = -1
        self._gate_arr = np.zeros(max_accounts, dtype=np.uint8)
        self.sym_cols["den"][:] = 1
        self.lim_default_arr = np.full(N_LIMITS, UNSET, dtype=np.int64)
        self.lim_acct_arr = np.full(<int64_t>max_accounts * N_LIMITS, UNSET, dtype=np.int64)
        self.lim_sym_arr = np.full(<int64_t>max_symbols * N_LIMITS, UNSET, dtype=np.int64)
        self.lim_strat_arr = np.full(<int64_t>max_strategies * N_LIMITS, UNSET, dtype=np.int64)
        self.eff_acct_arr = np.zeros(<int64_t>max_accounts * N_LIMITS, dtype=np.int64)
        self.eff_sym_arr = np.zeros(<int64_t>max_symbols * N_LIMITS, dtype=np.int64)
        self.eff_strat_arr = np.zeros(<int64_t>max_strategies * N_LIMITS, dtype=np.int64)
        self._touch_arr = np.zeros(max_accounts, dtype=np.int32)
        self.ro_total_arr = np.zeros(max_accounts, dtype=np.int32)
        self._ro_q_arr = np.zeros(max_accounts, dtype=np.int32)
        self._ro_queued_arr = np.zeros(max_accounts, dtype=np.uint8)
        self._trip_arr = np.zeros(max_symbols, dtype=np.int32)
        self._chg_arr = np.zeros(max_symbols, dtype=np.uint8)
        self._bind()

    def _bind(self):
        self.P = <Position*>_data(self.pool_arr)
        self.index = <int32_t*>_data(self.index_arr)
        self.realized_sum = <int64_t*>_data(self.sums_arr[0])
        self.fees_sum = <int64_t*>_data(self.sums_arr[1])
        self.lim_default = <int64_t*>_data(self.lim_default_arr)
        self.lim_acct = <int64_t*>_data(self.lim_acct_arr)
        self.lim_sym = <int64_t*>_data(self.lim_sym_arr)
        self.lim_strat = <int64_t*>_data(self.lim_strat_arr)
        self.eff_acct = <int64_t*>_data(self.eff_acct_arr)
        self.eff_sym = <int64_t*>_data(self.eff_sym_arr)
        self.eff_strat = <int64_t*>_data(self.eff_strat_arr)
        cdef int k
        for k in range(1, N_LIMITS):
            self.rebuild_eff(k)
        a, s = self.acct_cols, self.sym_cols
        self.cash = <int64_t*>_data(a["cash"])
        self.upnl_sum = <int64_t*>_data(a["upnl_sum"])
        self.expo_sum = <int64_t*>_data(a["expo_sum"])
        self.wexpo_sum = <int64_t*>_data(a["wexpo_sum"])
        self.im_sum = <int64_t*>_data(a["im_sum"])
        self.mm_sum = <int64_t*>_data(a["mm_sum"])
        self.day_base = <int64_t*>_data(a["day_base"])
        self.slack = <int64_t*>_data(a["slack"])
        self.whi = <int64_t*>_data(a["whi"])
        self.n_active = <int32_t*>_data(a["n_active"])
        self.act_head = <int32_t*>_data(a["act_head"])
        self.dirty_head = <int32_t*>_data(a["dirty_head"])
        self.n_dirty = <int32_t*>_data(a["n_dirty"])
        self.liq_cursor = <uint32_t*>_data(a["liq_cursor"])
        self.state = <uint8_t*>_data(a["state"])
        self.prev_state = <uint8_t*>_data(a["prev_state"])
        self.kill = <uint8_t*>_data(a["kill"])
        self.touched = <uint8_t*>_data(a["touched"])
        self.kyc = <uint8_t*>_data(a["kyc"])
        self.gate = <uint8_t*>_data(self._gate_arr)
        self.rej_ts = <int64_t*>_data(a["rej_ts"])
        self.rej_count = <int64_t*>_data(a["rej_count"])
        self.lock_until = <int64_t*>_data(a["lock_until"])
        self.err_seen = <int64_t*>_data(a["err_seen"])
        self.var_charged = <int64_t*>_data(a["var_charged"])
        self.var_off = <int64_t*>_data(a["var_off"])
        self.var_ts = <int64_t*>_data(a["var_ts"])
        self.num = <int64_t*>_data(s["num"])
        self.den = <int64_t*>_data(s["den"])
        self.den_magic = <uint64_t*>_data(s["den_magic"])
        self.den_more = <uint8_t*>_data(s["den_more"])
        self.den_shift = <uint8_t*>_data(s["den_shift"])
        self.mark = <int64_t*>_data(s["mark"])
        self.wunit = <int64_t*>_data(s["wunit"])
        self.brk_ts = <int64_t*>_data(s["brk_ts"])
        self.brk_ref = <int64_t*>_data(s["brk_ref"])
        self.brk_resume = <int64_t*>_data(s["brk_resume"])
        self.brk_tripped = <uint8_t*>_data(s["brk_tripped"])
        self.var_sens = <int64_t*>_data(s["var_sens"])
        self.var_num = <int64_t*>_data(s["var_num"])
        self.var_den = <int64_t*>_data(s["var_den"])
        self.var_magic = <uint64_t*>_data(s["var_magic"])
        self.var_more = <uint8_t*>_data(s["var_more"])
        self.touch_q = <int32_t*>_data(self._touch_arr)
        self.ro_total = <int32_t*>_data(self.ro_total_arr)
        self.ro_q = <int32_t*>_data(self._ro_q_arr)
        self.ro_queued = <uint8_t*>_data(self._ro_queued_arr)
        self.trip_q = <int32_t*>_data(self._trip_arr)
        self.chg = <uint8_t*>_data(self._chg_arr)
        self.rebuild_gate()

    # -- POSITIONS (engine/CAPACITY.md "Risk positions") --

    cdef bint pool_full(self) noexcept:
        """No entry is free, even after every account's flat entries are released (reclaim)."""
        if self.free_head >= 0 or self.pool_hwm < self.max_positions:
            return False
        self.reclaim()
        return self.free_head < 0

    cdef void reclaim(self) noexcept:
        """Bring every account's cached figures up to date: refresh_one releases each entry gone
        empty (an entry that goes flat with nothing open is always on its account's dirty list), so
        that capacity counts exactly the entries that hold something."""
        cdef int32_t a
        for a in range(1, self.max_accounts):
            if self.n_dirty[a]:
                self.refresh(a)

    cdef Position* create(self, uint32_t a, uint32_t s) noexcept:
        """A new all-zero entry for (a, s), which has none; NULL when the pool is full."""
        cdef int32_t idx
        if self.free_head >= 0:
            idx = self.free_head
            self.free_head = self.P[idx].anext
        elif self.pool_hwm < self.max_positions:
            idx = <int32_t>self.pool_hwm
            self.pool_hwm += 1
        else:
            return NULL
        cdef Position* p = &self.P[idx]
        memset(p, 0, sizeof(Position))
        p.key = (<uint64_t>a << 32) | s
        p.anext = p.aprev = p.dnext = -1
        self.index[<int64_t>a * self.max_symbols + s] = idx + 1
        self.n_positions += 1
        return p

    cdef void release(self, Position* p) noexcept:
        """Return an empty entry (not listed, not dirty) to the pool: out of the index, onto the free list."""
        cdef int32_t idx = <int32_t>(p - self.P)
        self.index[<int64_t>(p.key >> 32) * self.max_symbols + (p.key & 0xFFFFFFFF)] = 0
        memset(p, 0, sizeof(Position))
        p.anext = self.free_head
        self.free_head = idx
        self.n_positions -= 1

    cdef int set_restricted(self, uint32_t a, uint32_t s, bint on) noexcept:
        """RESTRICT_SYMBOL: 0, or POSITION_CAPACITY_EXHAUSTED (a restriction needs an entry)."""
        cdef Position* p = find(self, a, s)
        if on:
            if p == NULL:
                if self.pool_full():
                    return REJ_POSITION_CAPACITY_EXHAUSTED
                p = self.create(a, s)
            p.restricted = 1
        elif p != NULL:
            p.restricted = 0
            if not p.listed and p.realized == 0 and p.fees == 0:
                self.release(p)           # holds nothing else (an entry with a position or open orders is listed)
        return 0

    def has_entry(self, uint32_t account, uint32_t symbol):
        """Whether (account, symbol) has an entry (found through the index)."""
        return find(self, account, symbol) != NULL

    def position_count(self):
        """(entries in use, the most ever in use at once, max_positions)."""
        return self.n_positions, self.pool_hwm, self.max_positions

    def memory_bytes(self):
        """Bytes of risk's arrays allocated, and of the position pool written so far."""
        arrs = [self.pool_arr, self.index_arr, self.sums_arr, self.lim_default_arr, self.lim_acct_arr,
                self.lim_sym_arr, self.lim_strat_arr, self.eff_acct_arr, self.eff_sym_arr, self.eff_strat_arr,
                self._touch_arr, self.ro_total_arr, self._ro_q_arr, self._ro_queued_arr, self._trip_arr,
                self._chg_arr, self._gate_arr, *self.acct_cols.values(), *self.sym_cols.values()]
        return dict(allocated=sum(x.nbytes for x in arrs), pool_written=self.pool_hwm * sizeof(Position))

    # -- CONFIGURATION --

    def define_symbol(self, uint32_t symbol, int price_decimals, int qty_decimals, int64_t multiplier=1):
        """notional(price, qty) in cash units = price * qty * multiplier * 10**cash_decimals
        / 10**(price_decimals + qty_decimals), as an exact fraction num/den."""
        if symbol == 0 or symbol >= <uint32_t>self.max_symbols:
            raise ValueError(f"symbol id {symbol} outside 1..{self.max_symbols - 1}")
        if multiplier <= 0 or price_decimals < 0 or qty_decimals < 0 or price_decimals + qty_decimals > 18:
            raise ValueError("risk: multiplier > 0, decimals >= 0, price + qty decimals <= 18")
        from math import gcd
        num = int(multiplier) * 10 ** int(self.cash_decimals)      # Python ints: exact
        den = 10 ** int(price_decimals + qty_decimals)
        g = gcd(num, den)
        num //= g
        den //= g
        if num > INT64_MAX:
            raise ValueError("risk: multiplier * 10**cash_decimals too large")
        self.num[symbol] = num
        self.den[symbol] = den
        te_udiv_gen(<uint64_t>den, &self.den_magic[symbol], &self.den_more[symbol])
        self.den_shift[symbol] = den.bit_length() - 1
        self.set_wunit(symbol)
        self.var_derive(symbol)

    cdef inline int64_t notional(self, int64_t a, int64_t b, uint32_t s, int mode) noexcept:
        """a * b (a price and a qty) in cash units of symbol s, rounded down (FLOOR) or up (CEIL)."""
        return te_mulq(a, b, self.num[s], 1, self.den[s], self.den_magic[s], self.den_more[s], mode)

    cdef void set_wunit(self, uint32_t s) noexcept:
        """wunit := the notional of one qty unit at the mark, rounded up (saturated: still >= any
        clamped figure it bounds)."""
        self.wunit[s] = self.notional(self.mark[s], 1, s, CEIL)

    # -- LIMITS --

    cdef inline int64_t cap(self, int k, uint32_t a, uint32_t s, uint32_t t) noexcept:
        """The tightest set value over default, account, symbol and (t < max_strategies) strategy;
        NO_CAP if none is set."""
        cdef int64_t v = self.eff_acct[<int64_t>a * N_LIMITS + k], x = self.eff_sym[<int64_t>s * N_LIMITS + k]
        if x < v:
            v = x
        if t < <uint32_t>self.max_strategies:
            x = self.eff_strat[<int64_t>t * N_LIMITS + k]
            if x < v:
                v = x
        return v

    cdef inline int64_t floor_(self, int k, uint32_t a, uint32_t s) noexcept:
        """The largest set value over default, account and symbol (0 if none)."""
        cdef int64_t v = self.eff_acct[<int64_t>a * N_LIMITS + k], x = self.eff_sym[<int64_t>s * N_LIMITS + k]
        return x if x > v else v

    cdef inline int64_t override(self, int k, uint32_t a, uint32_t s) noexcept:
        """The most specific set value: account, then symbol, then default (0 if none)."""
        cdef int64_t x = self.eff_acct[<int64_t>a * N_LIMITS + k]
        return x if x != UNSET else self.eff_sym[<int64_t>s * N_LIMITS + k]

    cdef void rebuild_eff(self, uint8_t k) noexcept:
        """Re-combine kind k's tables into eff_acct / eff_sym / eff_strat (O(accounts + symbols))."""
        cdef uint8_t klass = KIND_CLASS[k]
        cdef int64_t d = self.lim_default[k], x
        cdef int32_t i
        for i in range(self.max_accounts):
            x = self.lim_acct[<int64_t>i * N_LIMITS + k]
            if klass == 2:
                x = imax(0 if x == UNSET else x, 0 if d == UNSET else d)
            elif klass == 3:
                pass                                  # the account's own value, or UNSET
            elif x == UNSET or (d != UNSET and d < x):
                x = NO_CAP if d == UNSET else d       # CAP (and DEFAULT-only kinds)
            self.eff_acct[<int64_t>i * N_LIMITS + k] = x
        for i in range(self.max_symbols):
            x = self.lim_sym[<int64_t>i * N_LIMITS + k]
            if x == UNSET:
                x = NO_CAP if klass == 1 or klass == 4 else (0 if klass == 2 else (0 if d == UNSET else d))
            self.eff_sym[<int64_t>i * N_LIMITS + k] = x
        for i in range(self.max_strategies):
            x = self.lim_strat[<int64_t>i * N_LIMITS + k]
            self.eff_strat[<int64_t>i * N_LIMITS + k] = NO_CAP if x == UNSET else x
        if k == LIM_INITIAL_MARGIN:
            self.im_rate_sym_max = 0
            for i in range(self.max_symbols):
                self.im_rate_sym_max = imax(self.im_rate_sym_max, self.eff_sym[<int64_t>i * N_LIMITS + k])

    # -- COMPLIANCE (RISK.md "KYC") --

    cdef uint8_t kyc_state(self, uint32_t a) noexcept:
        """The KycState in force for account a: its own, or the default (kyc[0])."""
        return self.kyc[a] if self.kyc[a] else self.kyc[0]

    cdef void rebuild_gate(self) noexcept:
        """gate[a] := whether an order of account a needs compliance(): its KYC state is not VERIFIED,
        or LARGE_REJECT = 1 may apply to it (its own value, or some symbol's when it sets none)."""
        cdef bint sym_rej = False
        cdef int32_t i
        cdef int64_t x
        for i in range(1, self.max_symbols):
            if self.eff_sym[<int64_t>i * N_LIMITS + LIM_LARGE_REJECT] == 1:
                sym_rej = True
                break
        for i in range(self.max_accounts):
            x = self.eff_acct[<int64_t>i * N_LIMITS + LIM_LARGE_REJECT]
            self.gate[i] = self.kyc_state(i) != KYC_VERIFIED or x == 1 or (x == UNSET and sym_rej)

    cdef int set_kyc(self, uint32_t a, uint8_t st, bint clear) except -1:
        """Returns 0, or REJ_INVALID_STATE (a bad KycState, or clearing the default)."""
        if clear:
            if a == 0:
                return REJ_INVALID_STATE
            self.kyc[a] = 0
        elif st < KYC_PENDING or st > KYC_BLOCKED:
            return REJ_INVALID_STATE
        else:
            self.kyc[a] = st
        self.rebuild_gate()
        return 0

    cdef int compliance(self, uint32_t a, uint32_t s, uint8_t side, int64_t qty, int64_t added) noexcept:
        """The compliance checks of an order (check_order calls it only where gate[a] is set): 0 or
        KYC_PENDING, KYC_BLOCKED, LARGE_ORDER, LARGE_POSITION."""
        cdef uint8_t k = self.kyc_state(a)
        if k == KYC_PENDING:
            return REJ_KYC_PENDING
        if k != KYC_VERIFIED:
            return REJ_KYC_BLOCKED
        if self.override(LIM_LARGE_REJECT, a, s) != 1:
            return 0
        if added > 0 and qty > self.cap(LIM_LARGE_ORDER_QTY, a, s, NO_STRATEGY):
            return REJ_LARGE_ORDER
        cdef const Position* p = find(self, a, s)
        cdef int64_t worst2
        if p == NULL:
            p = &self.zero
        if side == SIDE_BUY:
            worst2 = imax(iabs(p.pos + p.open_buy + added), iabs(p.pos - p.open_sell))
        else:
            worst2 = imax(iabs(p.pos + p.open_buy), iabs(p.pos - p.open_sell - added))
        if worst2 > p.worst and worst2 > self.cap(LIM_LARGE_POSITION_QTY, a, s, NO_STRATEGY):
            return REJ_LARGE_POSITION
        return 0

    cdef int set_limit(self, uint8_t scope, uint8_t kind, uint32_t target, int64_t value, bint clear) except -1:
        """Returns 0, or REJ_INVALID_LIMIT."""
        if kind == 0 or kind >= N_LIMITS:
            return REJ_INVALID_LIMIT
        cdef uint8_t klass = KIND_CLASS[kind]
        cdef int64_t* row
        if scope == SCOPE_DEFAULT:
            if target != 0 or kind == LIM_LARGE_ORDER_QTY or kind == LIM_LARGE_POSITION_QTY:
                return REJ_INVALID_LIMIT
            row = self.lim_default
        elif scope == SCOPE_ACCOUNT:
            if target == 0 or target >= <uint32_t>self.max_accounts or klass == 4 or \
                    kind in (LIM_BREAKER_BAND, LIM_BREAKER_WINDOW_MS, LIM_BREAKER_COOLOFF_MS, LIM_EXTERNAL_MARK,
                             LIM_LARGE_ORDER_QTY, LIM_LARGE_POSITION_QTY):
                return REJ_INVALID_LIMIT
            row = self.lim_acct + <int64_t>target * N_LIMITS
        elif scope == SCOPE_SYMBOL:
            if target == 0 or target >= <uint32_t>self.max_symbols or klass == 4 or \
                    kind == LIM_ACCOUNT_REJECT_LIMIT or kind == LIM_ACCOUNT_LOCKOUT_MS:
                return REJ_INVALID_LIMIT
            row = self.lim_sym + <int64_t>target * N_LIMITS
        elif scope == SCOPE_STRATEGY:
            if target >= <uint32_t>self.max_strategies or klass != 1 or kind == LIM_LARGE_ORDER_QTY or \
                    kind == LIM_LARGE_POSITION_QTY:
                return REJ_INVALID_LIMIT
            row = self.lim_strat + <int64_t>target * N_LIMITS
        else:
            return REJ_INVALID_LIMIT
        if not clear:
            if kind in (LIM_MAKER_FEE, LIM_TAKER_FEE):
                if value < -10000 or value > 10000:
                    return REJ_INVALID_LIMIT
            elif value < 0 or (klass == 2 and value > 1000000) or (kind == LIM_LARGE_REJECT and value > 1):
                return REJ_INVALID_LIMIT
        row[kind] = UNSET if clear else value
        self.rebuild_eff(kind)
        if kind == LIM_LARGE_REJECT:
            self.rebuild_gate()
        cdef int32_t a, i
        if kind == LIM_INITIAL_MARGIN or kind == LIM_MAINTENANCE_MARGIN:
            # margin rates changed: re-value every entry they apply to
            for a in range(1, self.max_accounts):
                if scope == SCOPE_ACCOUNT and <uint32_t>a != target:
                    continue
                i = self.act_head[a]
                while i >= 0:
                    if scope != SCOPE_SYMBOL or <uint32_t>(self.P[i].key & 0xFFFFFFFF) == target:
                        mark_dirty(self, a, &self.P[i], DIRTY_ALL)
                    i = self.P[i].anext
                if self.n_active[a]:
                    self.touch(a)
        return 0

    cdef int var_update(self, uint32_t a, uint32_t s, int64_t value, int64_t charged_at, int64_t ts) except -1:
        """A VAR_UPDATE (RISK.md "Pre-trade VaR limit"), ids already checked: account a's VaR bound := value
        plus what was charged since the model's seq (s == 0; charged_at = var_charged at that seq), symbol
        s's sensitivity := value (a == 0), or with a == s == 0 the model's time (var_ts[0]: account 0 is
        never an account). Returns 0, or REJ_INVALID_LIMIT."""
        if value < 0 or value > QTY_BOUND:
            return REJ_INVALID_LIMIT
        if s == 0:
            if charged_at < 0 or charged_at > self.var_charged[a] or ts < self.var_ts[a] or \
                    (a == 0 and value != 0):
                return REJ_INVALID_LIMIT           # not a seq this engine has been at, or an older model
            self.var_off[a] = value - charged_at
            self.var_ts[a] = ts
        else:
            self.var_sens[s] = value
            self.var_derive(s)
        return 0

    cdef void var_derive(self, uint32_t s) noexcept:
        """var_num, var_den and its magic from var_sens, num and den (one division per increment)."""
        cdef int64_t x, d
        self.var_num[s] = self.var_den[s] = 0
        self.var_magic[s] = self.var_more[s] = 0
        if self.var_sens[s] == 0:
            return                                 # no sensitivity: nothing is charged
        if __builtin_mul_overflow(self.var_sens[s], self.num[s], &x) or \
                __builtin_mul_overflow(self.den[s], <int64_t>1000000000, &d):
            self.var_den[s] = 0                    # the two-step path (var_increment)
            return
        self.var_num[s] = x
        self.var_den[s] = d
        te_udiv_gen(<uint64_t>d, &self.var_magic[s], &self.var_more[s])

    def var_state(self, uint32_t account):
        """The account's VaR limit state: the bound in force (cash units), every charge ever, the model's time."""
        if account == 0 or account >= <uint32_t>self.max_accounts:
            raise ValueError(f"account {account} outside 1..{self.max_accounts - 1}")
        return dict(var=self.var_off[account] + self.var_charged[account], charged=self.var_charged[account],
                    model_ts_ns=self.var_ts[account], engine_model_ts_ns=self.var_ts[0])

    def var_sensitivity(self, uint32_t symbol):
        """The symbol's VaR sensitivity, 1e-9 of its cash exposure (0 = none)."""
        return self.var_sens[symbol] if 0 < symbol < <uint32_t>self.max_symbols else 0

    # -- CHECKS --

    cdef int64_t market_bound(self, uint32_t a, uint32_t s, uint8_t side, int64_t tick, uint32_t t) noexcept:
        """The worst price a market order of strategy t (NO_STRATEGY: none) may trade at (0 = no band),
        a multiple of tick."""
        cdef int64_t band = self.cap(LIM_MARKET_BAND, a, s, t), m = self.mark[s], b
        if band == NO_CAP or m == 0:
            return 0
        if side == SIDE_BUY:
            b = te_muldiv(m, 10000 + band, 1, 1, 10000, tick, FLOOR)
            return b * tick if b > 0 else tick
        b = te_muldiv(m, 10000 - band, 1, 1, 10000, tick, CEIL) if band < 10000 else 1
        return (b if b > 0 else 1) * tick

    cdef int check_amend(self, uint32_t a, uint32_t s, uint32_t strategy, uint8_t side, uint8_t order_type,
                         uint8_t tif, uint8_t flags, int64_t price, int64_t stop_price, int64_t qty, int64_t added,
                         int64_t now, int64_t tick) noexcept:
        """check_order for an AMEND (no MAX_OPEN_ORDERS), out of line: the core then has one call of
        check_order, which the compiler inlines into NEW_ORDER's path whatever its size."""
        return check_order(self, a, s, strategy, side, order_type, tif, flags, price, stop_price, qty, added, -1, now,
                           tick)

    cdef int check_account(self, uint32_t a, uint32_t s, const Position* p, const int64_t* ra, const int64_t* rs,
                           const int64_t* rt, int64_t m, int64_t worst, int64_t worst2, int64_t added) noexcept:
        """Checks 14-18 (RISK.md "Checks, in order") of an order that raises entry p's worst-case
        qty from worst to worst2 and adds `added` on its side (the limit rows and the mark as
        check_order located them): 0 or the Reject code of the first that fails."""
        cdef int64_t lim
        if self.far_from_limits(a, s, ra, rs, rt, worst, worst2):
            return var_check(self, a, s, ra, rs, rt, m, added)     # 14-17 pass on bounds alone: no refresh
        # Checks 14-17 read equity and the account's sums with this entry's wexpo and im replaced by
        # the new ones. When the only stale entry is this one, and only its open quantities changed
        # (DIRTY_OPEN: its wexpo and im, recomputed below anyway), equity and the sums of the others
        # are current: no refresh (the common case of an add after the account's own add or cancel).
        if (self.n_dirty[a] and not (self.n_dirty[a] == 1 and p.dirty == DIRTY_OPEN)) or self.whi[a] < 0:
            self.refresh(a)
        cdef int64_t eq = self.cash[a] + self.upnl_sum[a]
        self.slack[a] = eq - self.mm_sum[a]           # exact again: the next fills may skip their check
        lim = cap3(ra, rs, rt, LIM_MAX_DAILY_LOSS)
        if lim != NO_CAP and eq - self.day_base[a] < -lim:
            return REJ_MAX_DAILY_LOSS
        if worst2 > QTY_BOUND:
            return REJ_MAX_POSITION_VALUE
        cdef int64_t w2 = clamp(self.notional(worst2, m, s, CEIL), self.fig_max)
        if w2 > cap3(ra, rs, rt, LIM_MAX_POSITION_VALUE):
            return REJ_MAX_POSITION_VALUE
        lim = cap3(ra, rs, rt, LIM_MAX_LEVERAGE)
        if lim != NO_CAP and te_gt(self.wexpo_sum[a] - p.wexpo + w2, 10000, lim, eq):
            return REJ_MAX_LEVERAGE
        cdef int64_t im2 = te_muldiv(w2, self.floor_(LIM_INITIAL_MARGIN, a, s), 1, 1, 10000, 1, CEIL)
        if self.im_sum[a] - p.im + im2 > eq:
            return REJ_INSUFFICIENT_MARGIN
        return var_check(self, a, s, ra, rs, rt, m, added)

    cdef inline bint far_from_limits(self, uint32_t a, uint32_t s, const int64_t* ra, const int64_t* rs,
                                     const int64_t* rt, int64_t worst, int64_t worst2) noexcept:
        """Checks 14-17 pass for an order that raises the entry's worst-case qty from worst to
        worst2, shown from bounds alone, with no figure refreshed: equity >= slack; every entry's
        wexpo <= its worst x wunit, so sum(wexpo) <= whi; every im <= wexpo x rate / 10000 + 1.
        Each check only gets easier as equity grows and as the sums shrink, so an order that
        passes here passes the exact checks; False only means the exact checks must decide."""
        cdef int64_t eq = self.slack[a], u = self.wunit[s], wb = self.whi[a], t, lim
        if eq <= 0 or wb < 0 or worst2 > QTY_BOUND:
            return False
        lim = cap3(ra, rs, rt, LIM_MAX_DAILY_LOSS)
        if lim != NO_CAP and eq - self.day_base[a] < -lim:
            return False
        if __builtin_mul_overflow(worst2, u, &t) or t > cap3(ra, rs, rt, LIM_MAX_POSITION_VALUE):
            return False
        if __builtin_mul_overflow(worst2 - worst, u, &t) or __builtin_add_overflow(wb, t, &wb):
            return False
        lim = cap3(ra, rs, rt, LIM_MAX_LEVERAGE)
        if lim != NO_CAP and te_gt(wb, 10000, lim, eq):
            return False
        # sum(im) <= whi x (the largest rate in force) / 10000 + one unit per entry (at most
        # n_active + 1 with this one)
        t = imax(self.eff_acct[<int64_t>a * N_LIMITS + LIM_INITIAL_MARGIN], self.im_rate_sym_max)
        return not te_gt(wb, t, eq - self.n_active[a] - 1, 10000)

    # -- STATE CHANGES --

    cdef inline int on_event(self, Event* e, int64_t ts) except -1:
        """Fold one core event into open quantities, positions, cash, breakers and the error rate.
        A FILL gets the two sides' fees written into it (fee, other_fee: what its reports carry).
        ACCEPTED and CANCELLED only move open quantities: the core folds those itself with
        open_change (risk.pxd), inline, and sends every other kind here."""
        cdef uint8_t k = e.kind
        cdef int64_t thr
        if k == EV_FILL:
            e.fee = self.fill(e.account, e.symbol, e.side, e.qty, e.price, False)
            e.other_fee = self.fill(e.other_account, e.symbol, SIDE_SELL if e.side == SIDE_BUY else SIDE_BUY, e.qty,
                                    e.price, True)
            if self.eff_sym[<int64_t>e.symbol * N_LIMITS + LIM_BREAKER_BAND] > 0:
                self.breaker_check(e.symbol, e.price, ts)
        elif k == EV_REPLACED:
            open_change(self, e.account, e.symbol, e.side, e.qty - e.other_leaves)
        elif k == EV_REJECTED:
            self.count_reject(e, ts)
        return 0

    cdef void count_reject(self, const Event* e, int64_t ts) noexcept:
        """A REJECTED event against the account's reject budget and the engine-wide error rate
        (RISK.md "Circuit breakers"). What a breaker or a lockout itself refuses counts nowhere, nor
        does anything a locked-out account causes: one account's errors lock out that account only."""
        if e.reason == REJ_CIRCUIT_BREAKER or e.reason == REJ_REJECT_RATE_LOCKOUT:
            return
        cdef uint32_t a = e.account
        cdef bint own = 0 < a < <uint32_t>self.max_accounts      # (an UNKNOWN_ACCOUNT reject: any id)
        cdef int64_t lim, ms
        if own:
            if self.lock_until[a] > ts:
                return
            lim = self.override(LIM_ACCOUNT_REJECT_LIMIT, a, 0)
            if lim > 0 and e.cmd_kind >= CMD_NEW_ORDER and e.cmd_kind <= CMD_MASS_CANCEL:  # its own order entry
                if self.rej_count[a] == 0 or ts - self.rej_ts[a] >= 1000000000:
                    self.rej_ts[a] = ts
                    self.rej_count[a] = 0
                self.rej_count[a] += 1
                if self.rej_count[a] > lim:
                    ms = self.override(LIM_ACCOUNT_LOCKOUT_MS, a, 0)
                    self.lock_until[a] = ts + ms * 1000000 if ms > 0 else INT64_MAX
                    self.rej_count[a] = 0
                    self.lock_new = a
        cdef int64_t thr = self.lim_default[LIM_ERROR_THRESHOLD], need = self.lim_default[LIM_ERROR_ACCOUNTS]
        if thr <= 0 or self.breaker:
            return
        if self.err_count == 0 or ts - self.err_ts >= 1000000000:
            self.err_ts = ts
            self.err_count = 0
            self.err_epoch += 1
            self.err_accts = 0
        self.err_count += 1
        if own and self.err_seen[a] != self.err_epoch:
            self.err_seen[a] = self.err_epoch
            self.err_accts += 1
        if self.err_count > thr and (need <= 0 or self.err_accts >= need):
            self.breaker = 1
            self.breaker_new = 1

    cdef int64_t fill(self, uint32_t a, uint32_t s, uint8_t side, int64_t qty, int64_t price, bint maker) noexcept:
        """One side of a trade: the order's open qty, position, average entry price, realized P&L,
        fee, cash. Returns the fee charged (cash units, negative = rebate)."""
        cdef Position* p = find(self, a, s)      # (the order filled is open: its entry exists)
        if side == SIDE_BUY:
            p.open_buy -= qty
        else:
            p.open_sell -= qty
        cdef int64_t pos = p.pos, d = qty if side == SIDE_BUY else -qty, npos = pos + d
        cdef int64_t realized = 0, fee, closed, bps
        if pos == 0:
            p.avg_price = price
        elif (pos > 0) == (d > 0):
            p.avg_price = te_avg(p.avg_price, iabs(pos), price, qty)
        else:
            closed = qty if qty < iabs(pos) else iabs(pos)
            realized = te_mulq(price - p.avg_price if pos > 0 else p.avg_price - price, closed, self.num[s], 1,
                               self.den[s], self.den_magic[s], self.den_more[s], FLOOR)
            if npos == 0:
                p.avg_price = 0
            elif (npos > 0) != (pos > 0):
                p.avg_price = price        # flipped: the remainder opens at the fill price
        p.pos = npos
        if self.ro_total[a]:
            ro_touch(self, a)          # the position moved: its reduce-only orders may no longer fit
        cdef int64_t w = imax(iabs(npos + p.open_buy), iabs(npos - p.open_sell))
        whi_move(self, a, s, w - p.worst)
        p.worst = w
        bps = self.override(LIM_MAKER_FEE if maker else LIM_TAKER_FEE, a, s)
        # ceil(ceil(x / den) / 10000) == ceil(x / (den * 10000)) for integer x and positive divisors
        fee = te_div64(te_mulq(price, qty, self.num[s], bps, self.den[s], self.den_magic[s], self.den_more[s],
                               CEIL), 10000, CEIL) if bps else 0
        realized = clamp(realized, self.fig_max)
        fee = clamp(fee, self.fig_max)
        cdef int64_t was = p.realized
        p.realized = sat_add(p.realized, realized)
        self.realized_sum[a] = <int64_t>(<uint64_t>self.realized_sum[a] + <uint64_t>p.realized - <uint64_t>was)
        was = p.fees
        p.fees = sat_add(p.fees, fee)
        self.fees_sum[a] = <int64_t>(<uint64_t>self.fees_sum[a] + <uint64_t>p.fees - <uint64_t>was)
        self.cash[a] = sat_add(self.cash[a], realized - fee)
        mark_dirty(self, a, p, DIRTY_ALL)
        # Margin monitoring: queue the account for a full check (refresh and compare) unless its
        # slack covers the most this fill can take off equity - maintenance (RISK.md "Liquidation":
        # the skip never changes an outcome, it only avoids re-valuing an account far from it):
        #   |price - mark| x qty x r    the fill's mark-to-market
        # + mark x mm x qty x r         the maintenance margin it can add
        # + |pos| x r / 2               the average price's rounding
        # + fee + 5                     the fee, and one unit per rounded figure
        # each x r over-estimated as (x * num) >> den_shift (den >= 2**den_shift).
        cdef int64_t m = self.mark[s], k = self.den_shift[s], b1, b2
        if self.state[a] != ACCT_LIQUIDATING and self.slack[a] > 0 and \
                not __builtin_mul_overflow(iabs(price - m) + te_div64(m * self.floor_(LIM_MAINTENANCE_MARGIN, a, s),
                                                                      10000, CEIL) + 1, qty, &b1) and \
                not __builtin_mul_overflow(b1, self.num[s], &b1) and \
                not __builtin_mul_overflow(iabs(npos), self.num[s], &b2):
            b1 = (b1 >> k) + (b2 >> (k + 1)) + 7 + (fee if fee > 0 else 0)
            if b1 < self.slack[a]:
                self.slack[a] -= b1
                return fee
        self.slack[a] = INT64_MIN      # unknown until the margin check (of this same command) makes it exact
        self.touch(a)
        return fee

    cdef void end_breaker(self, uint32_t s) noexcept:
        """s is no longer halted by its breaker; the next trade starts a new window."""
        self.brk_tripped[s] = 0
        self.brk_ref[s] = 0

    cdef void breaker_check(self, uint32_t s, int64_t price, int64_t ts) noexcept:
        cdef int64_t band = self.override(LIM_BREAKER_BAND, 0, s), window, cool
        if band <= 0 or self.brk_tripped[s]:
            return
        window = self.override(LIM_BREAKER_WINDOW_MS, 0, s) * 1000000
        if self.brk_ref[s] == 0 or ts - self.brk_ts[s] > window:
            self.brk_ts[s] = ts
            self.brk_ref[s] = price
            return
        if te_gt(iabs(price - self.brk_ref[s]), 10000, band, self.brk_ref[s]):
            self.brk_tripped[s] = 1
            self.brk_ref[s] = price            # the trade that tripped it (reported in the BREAKER event)
            cool = self.override(LIM_BREAKER_COOLOFF_MS, 0, s)
            self.brk_resume[s] = ts + cool * 1000000 if cool > 0 else 0
            self.trip_q[self.n_trip] = s
            self.n_trip += 1

    cdef inline void touch(self, uint32_t a) noexcept:
        queue_add(self.touch_q, self.touch_head, &self.touch_n, self.max_accounts, self.touched, a)

    cdef int32_t pop_touched(self) noexcept:
        """The next account queued for a margin check (first in, first out), or 0."""
        return queue_take(self.touch_q, &self.touch_head, &self.touch_n, self.max_accounts, self.touched)

    cdef int32_t pop_ro(self) noexcept:
        """The next account queued for a reduce-only check (first in, first out), or 0."""
        return queue_take(self.ro_q, &self.ro_head, &self.ro_n, self.max_accounts, self.ro_queued)

    cdef uint8_t ro_violation(self, uint32_t a, uint32_t s) noexcept:
        """The sides of entry (a, s) whose resting reduce-only orders the position no longer covers
        (1 = buy, 2 = sell; RISK.md "Reduce-only orders"): any on the side that would increase the
        position (both sides when flat), or, on the side that reduces it, open qty beyond it."""
        cdef const Position* p = find(self, a, s)
        cdef uint8_t v = 0
        if p == NULL:
            return 0
        if p.ro_buy and (p.pos >= 0 or p.open_buy > -p.pos):
            v |= 1
        if p.ro_sell and (p.pos <= 0 or p.open_sell > p.pos):
            v |= 2
        return v

    cdef bint ro_violated(self, uint32_t a) noexcept:
        """Some entry of the account has a reduce-only order its position no longer covers."""
        cdef int32_t i = self.act_head[a]
        while i >= 0:
            if self.ro_violation(a, <uint32_t>(self.P[i].key & 0xFFFFFFFF)):
                return True
            i = self.P[i].anext
        return False

    cdef void refresh(self, uint32_t a) noexcept:
        """Bring the account's cached figures and sums up to date."""
        cdef int32_t i = self.dirty_head[a], nxt
        self.dirty_head[a] = -1
        while i >= 0:
            nxt = self.P[i].dnext
            self.refresh_one(a, &self.P[i])      # (may release the entry: its link was read first)
            i = nxt
        self.n_dirty[a] = 0
        cdef int64_t t = 0, x
        cdef uint32_t s
        if self.whi[a] < 0:            # the bound again: sum of worst x wunit over the active entries
            i = self.act_head[a]
            while i >= 0:
                s = <uint32_t>(self.P[i].key & 0xFFFFFFFF)
                if __builtin_mul_overflow(self.P[i].worst, self.wunit[s], &x) or \
                        __builtin_add_overflow(t, x, &t):
                    t = WHI_UNKNOWN
                    break
                i = self.P[i].anext
            self.whi[a] = t

    cdef inline void figures(self, uint32_t a, uint32_t s, Position* q) noexcept:
        """Bring the cached figures of q, a copy of entry (a, s) or the entry itself, up to date by its
        dirty bits; touches nothing else (no account sum: queries use it on a copy, RISK.md "Queries")."""
        cdef int64_t m = self.mark[s], fm = self.fig_max
        if q.dirty & 2:
            q.upnl = clamp(self.notional(m - q.avg_price, q.pos, s, FLOOR) if q.pos else 0, fm)
            q.expo = clamp(self.notional(iabs(q.pos), m, s, CEIL), fm)
            # expo <= 2**62 / max_symbols and bps <= 1e6: the product fits
            q.mm = clamp(te_div64(q.expo * self.floor_(LIM_MAINTENANCE_MARGIN, a, s), 10000, CEIL), fm)
        q.wexpo = clamp(self.notional(q.worst, m, s, CEIL), fm)
        q.im = clamp(te_div64(q.wexpo * self.floor_(LIM_INITIAL_MARGIN, a, s), 10000, CEIL), fm)
        q.dirty = 0

    cdef void refresh_one(self, uint32_t a, Position* p) noexcept:
        """Entry p's cached figures and its account's sums up to date (p is off the dirty list: the
        caller took the whole list); a flat entry with nothing open leaves the active list, and the
        pool too when it holds no P&L, fee or restriction."""
        cdef Position q = p[0]
        self.figures(a, <uint32_t>(p.key & 0xFFFFFFFF), &q)
        if p.dirty & 2:
            p.upnl = moved(&self.upnl_sum[a], p.upnl, q.upnl)
            p.expo = moved(&self.expo_sum[a], p.expo, q.expo)
            p.mm = moved(&self.mm_sum[a], p.mm, q.mm)
        p.wexpo = moved(&self.wexpo_sum[a], p.wexpo, q.wexpo)
        p.im = moved(&self.im_sum[a], p.im, q.im)
        p.dirty = 0
        if p.pos == 0 and p.open_buy == 0 and p.open_sell == 0 and p.listed:
            # flat with nothing open: every cached figure is 0; drop it from the active list
            if p.aprev >= 0:
                self.P[p.aprev].anext = p.anext
            else:
                self.act_head[a] = p.anext
            if p.anext >= 0:
                self.P[p.anext].aprev = p.aprev
            p.anext = p.aprev = -1
            p.listed = 0
            self.n_active[a] -= 1
            if p.realized == 0 and p.fees == 0 and not p.restricted:
                self.release(p)

    cdef int set_mark(self, uint32_t s, int64_t price) except -1:
        """mark := price; every account holding s is re-valued and queued for a margin check."""
        self.mark[s] = price
        self.set_wunit(s)
        cdef int32_t a
        cdef Position* p
        for a in range(1, self.max_accounts):
            p = find(self, a, s)
            if p != NULL and p.listed:
                mark_dirty(self, a, p, DIRTY_ALL)
                self.whi[a] = WHI_UNKNOWN
                self.touch(a)
        return 0

    cdef int revalue(self) except -1:
        """After marks changed (chg[s] set): re-value and queue every account holding such a symbol,
        in one pass over the active lists (O(positions), not O(accounts x symbols)); clears chg."""
        cdef int32_t a, i
        cdef uint32_t s
        for i in range(1, self.max_symbols):
            if self.chg[i]:
                self.set_wunit(i)
        for a in range(1, self.max_accounts):
            i = self.act_head[a]
            while i >= 0:
                s = <uint32_t>(self.P[i].key & 0xFFFFFFFF)
                if self.chg[s]:
                    mark_dirty(self, a, &self.P[i], DIRTY_ALL)
                    self.whi[a] = WHI_UNKNOWN
                    self.touch(a)
                i = self.P[i].anext
        memset(self.chg, 0, self.max_symbols)
        return 0

    cdef inline int64_t equity(self, uint32_t a) noexcept:
        self.refresh(a)
        return self.cash[a] + self.upnl_sum[a]

    cdef int64_t available(self, uint32_t a) noexcept:
        """Equity not used by initial margin (what may be withdrawn, at most the cash)."""
        cdef int64_t free = self.equity(a) - self.im_sum[a]
        return free if free < self.cash[a] else self.cash[a]

    cdef bint below_maintenance(self, uint32_t a) noexcept:
        cdef int64_t free = self.equity(a) - self.mm_sum[a]
        self.slack[a] = free
        return free < 0

    cdef uint32_t next_liquidation(self, uint32_t a, int64_t* qty, uint8_t* side) noexcept:
        """The smallest symbol above the account's liquidation cursor with a position (0 = none);
        qty/side: the reduce-only order that closes it."""
        cdef int32_t i = self.act_head[a], at = -1
        cdef uint32_t s, best = 0
        while i >= 0:
            s = <uint32_t>(self.P[i].key & 0xFFFFFFFF)
            if s > self.liq_cursor[a] and self.P[i].pos != 0 and (best == 0 or s < best):
                best = s
                at = i
            i = self.P[i].anext
        if best:
            self.liq_cursor[a] = best
            qty[0] = iabs(self.P[at].pos)
            side[0] = SIDE_SELL if self.P[at].pos > 0 else SIDE_BUY
        return best

    cdef void end_of_day(self) noexcept:
        """The daily loss baseline of every account := its equity now."""
        cdef int32_t a
        for a in range(1, self.max_accounts):
            self.day_base[a] = self.equity(a)

    # -- PYTHON-FRIENDLY VIEWS (queries, tools, tests; not the hot path) --

    def effective(self, int kind, uint32_t account, uint32_t symbol, uint32_t strategy=0xFFFFFFFF):
        """The limit in force for (account, symbol[, strategy]), None where no scope sets a cap."""
        if kind <= 0 or kind >= N_LIMITS or account >= <uint32_t>self.max_accounts or \
                symbol >= <uint32_t>self.max_symbols:
            raise ValueError("bad limit kind, account or symbol")
        if KIND_CLASS[kind] == 1:
            v = self.cap(kind, account, symbol, strategy)
            return None if v == NO_CAP else v
        if KIND_CLASS[kind] == 2:
            return self.floor_(kind, account, symbol)
        if KIND_CLASS[kind] == 4:
            v = self.lim_default[kind]
            return 0 if v == UNSET else v
        return self.override(kind, account, symbol)

    def limits(self):
        """Every set limit as (scope, target, kind, value)."""
        out = []
        for scope, arr in ((SCOPE_DEFAULT, self.lim_default_arr.reshape(1, N_LIMITS)),
                           (SCOPE_ACCOUNT, self.lim_acct_arr.reshape(-1, N_LIMITS)),
                           (SCOPE_SYMBOL, self.lim_sym_arr.reshape(-1, N_LIMITS)),
                           (SCOPE_STRATEGY, self.lim_strat_arr.reshape(-1, N_LIMITS))):
            for target, kind in zip(*np.nonzero(arr != UNSET)):
                out.append((scope, int(target), int(kind), int(arr[target, kind])))
        return out

    def positions(self, uint32_t account):
        """The account's entries with a position or open orders, ascending symbol, as dicts."""
        if account == 0 or account >= <uint32_t>self.max_accounts:
            return []
        cdef int32_t i = self.act_head[account]
        listed = []
        while i >= 0:
            listed.append((self.P[i].key & 0xFFFFFFFF, i))
            i = self.P[i].anext
        out = []
        cdef Position q
        cdef Position* p = &q
        for s, i in sorted(listed):
            q = self.P[i]                  # a copy: a query changes no state (RISK.md "Queries")
            self.figures(account, s, &q)
            if q.pos == 0 and q.open_buy == 0 and q.open_sell == 0:
                continue                   # what refresh() would drop from the active list
            out.append(dict(symbol=s, position=p.pos, avg_price=p.avg_price, mark=self.mark[s],
                            open_buy=p.open_buy, open_sell=p.open_sell, realized=p.realized, fees=p.fees,
                            unrealized=p.upnl, exposure=p.expo, worst_exposure=p.wexpo, initial_margin=p.im,
                            maintenance_margin=p.mm))
        return out

    def portfolio(self, uint32_t account):
        """Cash, equity, margin, leverage, P&L and state of one account (cash units, bps)."""
        if account == 0 or account >= <uint32_t>self.max_accounts:
            raise ValueError(f"account {account} outside 1..{self.max_accounts - 1}")
        # the sums refresh() would make, computed on copies of the entries: a query changes no state
        # (RISK.md "Queries"); an entry not on the active list has every figure 0
        cdef int64_t upnl = 0, expo = 0, wexpo = 0, im = 0, mm = 0
        cdef Position q
        cdef int32_t i = self.act_head[account]
        while i >= 0:
            q = self.P[i]
            i = q.anext
            self.figures(account, <uint32_t>(q.key & 0xFFFFFFFF), &q)
            upnl += q.upnl
            expo += q.expo
            wexpo += q.wexpo
            im += q.im
            mm += q.mm
        cdef int64_t eq = self.cash[account] + upnl
        return dict(cash=self.cash[account], equity=eq, unrealized=upnl,
                    realized=self.realized_sum[account], fees=self.fees_sum[account], exposure=expo,
                    worst_exposure=wexpo, initial_margin=im,
                    maintenance_margin=mm, available=eq - im,
                    # gross exposure over equity in bps, rounded up; None when equity <= 0
                    leverage_bps=-(-expo * 10000 // eq) if eq > 0 else None,
                    daily_pnl=eq - self.day_base[account], state=self.state[account], kill=self.kill[account],
                    kill_all=self.kill_all, kyc=self.kyc_state(account), kyc_own=bool(self.kyc[account]))

    def kyc_default(self):
        """The KycState of accounts that have none of their own (SET_KYC account 0)."""
        return self.kyc[0]

    @staticmethod
    def _divide(int64_t x, int64_t d, int mode):
        """The invariant-divisor division used for notionals (tests check it against Python)."""
        cdef uint64_t magic
        cdef uint8_t more
        if d <= 0:
            raise ValueError("d > 0")
        te_udiv_gen(<uint64_t>d, &magic, &more)
        return te_qdiv(x, <uint64_t>d, magic, more, mode)

    def mark_price(self, uint32_t symbol):
        return self.mark[symbol] if 0 < symbol < <uint32_t>self.max_symbols else 0

    def breaker_state(self, uint32_t symbol):
        """(tripped, resume_ns) of a symbol's circuit breaker."""
        return bool(self.brk_tripped[symbol]), self.brk_resume[symbol]

    # -- SNAPSHOT STATE --

    def export_state(self):
        """Every array (views) and scalar, under names import_state() takes back."""
        state = {"risk.capacity": np.array([self.max_accounts, self.max_symbols, self.max_strategies,
                                            self.cash_decimals, self.max_positions], dtype=np.int64),
                 "risk.scalars": self._scalars(),
                 # entries are taken lowest index first (released ones reused first): the used prefix
                 # is the whole pool's state, links and free list included (the index is rebuilt)
                 "risk.pool": self.pool_arr[:self.pool_hwm],
                 "risk.lim_default": self.lim_default_arr, "risk.lim_acct": self.lim_acct_arr,
                 "risk.lim_sym": self.lim_sym_arr, "risk.lim_strat": self.lim_strat_arr}
        for name, arr in self.acct_cols.items():
            state["risk.acct." + name] = arr
        for name, arr in self.sym_cols.items():
            state["risk.sym." + name] = arr
        return state

    def import_state(self, state):
        cap = [int(x) for x in state["risk.capacity"]]
        mine = [self.max_accounts, self.max_symbols, self.max_strategies, self.cash_decimals, self.max_positions]
        if cap != mine:
            raise ValueError(f"snapshot risk capacities {cap} differ from this engine's {mine}")
        pool = state["risk.pool"]
        if pool.dtype != POSITION_DTYPE or pool.ndim != 1 or len(pool) > self.max_positions:
            raise ValueError(f"snapshot array risk.pool: {pool.dtype}{pool.shape} is not {self.max_positions} "
                             f"entries at most of this layout")
        targets = {"risk.lim_default": self.lim_default_arr, "risk.lim_acct": self.lim_acct_arr,
                   "risk.lim_sym": self.lim_sym_arr, "risk.lim_strat": self.lim_strat_arr}
        targets.update({"risk.acct." + n: a for n, a in self.acct_cols.items()})
        targets.update({"risk.sym." + n: a for n, a in self.sym_cols.items()})
        state = dict(state)
        if "risk.acct.whi" not in state:       # a snapshot from before these existed: derive them
            state["risk.acct.whi"] = np.full(self.max_accounts, WHI_UNKNOWN, dtype=np.int64)
            state["risk.sym.wunit"] = np.zeros(self.max_symbols, dtype=np.int64)
        for name in ("rej_ts", "rej_count", "lock_until", "err_seen"):    # before the reject-rate lockout
            state.setdefault("risk.acct." + name, np.zeros(self.max_accounts, dtype=np.int64))
        if "risk.acct.kyc" not in state:       # before KYC: every account follows the default, VERIFIED
            state["risk.acct.kyc"] = np.zeros(self.max_accounts, dtype=np.uint8)
            state["risk.acct.kyc"][0] = KYC_VERIFIED
        for name in ("var_charged", "var_off", "var_ts"):                  # before the pre-trade VaR limit
            state.setdefault("risk.acct." + name, np.zeros(self.max_accounts, dtype=np.int64))
        state.setdefault("risk.sym.var_sens", np.zeros(self.max_symbols, dtype=np.int64))
        for name, t in (("var_num", np.int64), ("var_den", np.int64), ("var_magic", np.uint64), ("var_more", np.uint8)):
            state.setdefault("risk.sym." + name, np.zeros(self.max_symbols, dtype=t))
        for name in ("risk.lim_default", "risk.lim_acct", "risk.lim_sym", "risk.lim_strat"):
            rows = targets[name].size // N_LIMITS
            for old_n in (19, 22):              # fewer kinds then: the newer ones unset
                if state[name].size != targets[name].size and state[name].size == rows * old_n:
                    old = state[name].reshape(-1, old_n)
                    state[name] = np.concatenate([old, np.full((len(old), N_LIMITS - old_n), UNSET, dtype=np.int64)],
                                                 axis=1).ravel()
        for name, dst in targets.items():
            src = state[name]
            if src.dtype != dst.dtype or src.shape != dst.shape:
                raise ValueError(f"snapshot array {name}: {src.dtype}{src.shape} != {dst.dtype}{dst.shape}")
        for name, dst in targets.items():
            dst[...] = state[name]
        sc = [int(x) for x in state["risk.scalars"]]
        if len(sc) < 9:     # before the engine-wide error window (4), before the pool's (6): derived
            free = np.nonzero(pool["key"] == 0)[0]
            linked = set(pool["anext"][free].tolist())
            heads = [int(i) for i in free if int(i) not in linked]
            sc = (sc + [0, 0])[:6] + [len(pool), len(pool) - len(free), heads[0] if heads else -1]
        self.kill_all, self.breaker, self.err_ts, self.err_count, self.err_epoch, self.err_accts = sc[:6]
        self.pool_arr[:] = 0
        self.pool_arr[:len(pool)] = pool
        self.pool_arr["ro_buy"] = 0           # recounted by the core from its live orders
        self.pool_arr["ro_sell"] = 0
        self.pool_hwm, self.n_positions, self.free_head = sc[6:9]
        self.rebuild_index()
        for s in range(1, self.max_symbols):
            self.set_wunit(s)
            self.var_derive(s)
        cdef int k
        for k in range(1, N_LIMITS):
            self.rebuild_eff(k)
        self.rebuild_gate()
        self.breaker_new = 0
        self.lock_new = 0
        self.touch_head = self.touch_n = self.n_trip = self.ro_head = self.ro_n = 0
        self.ro_total_arr[:] = 0           # recounted by the core from its live orders
        self._ro_queued_arr[:] = 0

    def _scalars(self):
        return np.array([self.kill_all, self.breaker, self.err_ts, self.err_count, self.err_epoch, self.err_accts,
                         self.pool_hwm, self.n_positions, self.free_head], dtype=np.int64)

    def rebuild_index(self):
        """The index and the per-account realized / fee sums from the pool's entries (after an import)."""
        self.index_arr[np.flatnonzero(self.index_arr)] = 0    # (reads leave untouched pages unwritten)
        self.sums_arr[:] = 0
        cdef int64_t idx
        cdef uint32_t a
        for idx in range(self.pool_hwm):
            if self.P[idx].key == 0:
                continue                   # a released entry (on the free list)
            a = <uint32_t>(self.P[idx].key >> 32)
            self.index[<int64_t>a * self.max_symbols + (self.P[idx].key & 0xFFFFFFFF)] = <int32_t>idx + 1
            self.realized_sum[a] = <int64_t>(<uint64_t>self.realized_sum[a] + <uint64_t>self.P[idx].realized)
            self.fees_sum[a] = <int64_t>(<uint64_t>self.fees_sum[a] + <uint64_t>self.P[idx].fees)

    def entries(self):
        """Every entry in use, ascending (account, symbol), as (entries: a structured array, a copy;
        their accounts; their symbols) (tools, tests, the core's validate)."""
        pool = self.pool_arr[:self.pool_hwm]
        used = pool[pool["key"] != 0]
        used = used[np.argsort(used["key"], kind="stable")]
        return used, (used["key"] >> np.uint64(32)).astype(np.int64), (used["key"] & np.uint64(0xFFFFFFFF)).astype(np.int64)

    def state_bytes(self):
        """Every byte of risk state, in a fixed order (for state hashes)."""
        pool = self.pool_arr[:self.pool_hwm].copy()
        pool["ro_buy"] = 0                 # derived from the core's orders (which the hash covers)
        pool["ro_sell"] = 0
        parts = [pool.tobytes(), self.lim_default_arr.tobytes(), self.lim_acct_arr.tobytes(),
                 self.lim_sym_arr.tobytes(), self.lim_strat_arr.tobytes(), self._scalars().tobytes()]
        for name, _ in ACCOUNT_COLUMNS:
            parts.append(self.acct_cols[name].tobytes())
        for name, _ in SYMBOL_COLUMNS:
            parts.append(self.sym_cols[name].tobytes())
        return b"".join(parts)
