# The wire -> core step of the hot path: walk the complete frames of one read and
# turn order-entry messages into core Command records, with no Python object per
# message. Session and query frames are left to Python (they are rare): the walk
# stops in front of one and says so.
#
# Hot-module directives (setup.py): every read of `buf` is bounds-checked against
# `end` by hand below before it happens (header first, then the whole frame
# length); `cmds` has room for every frame the caller can pass (a frame is at
# least 16 bytes, so len(buf) // 16 records).
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.string cimport memset

from protocol.cdefs cimport *

cimport numpy as cnp
import numpy as np

from protocol.records import COMMAND

cnp.import_array()

# walk() / Hot.step() stop reasons
cdef enum:
    S_END = 0         # every complete frame consumed (a partial one may remain)
    S_SESSION = 1     # in front of a frame Python handles (its type in `msg_type`)
    S_ERROR = 2       # a malformed frame: `reason` is the Reject code, `consumed` its offset
STOP_END, STOP_SESSION, STOP_ERROR = S_END, S_SESSION, S_ERROR


cdef inline uint16_t rd16(const uint8_t* p) noexcept:
    return p[0] | (<uint16_t>p[1] << 8)


cdef inline bint body_size_ok(uint8_t t, Py_ssize_t length) noexcept:
    if t == MSG_NEW_ORDER:
        return length == sizeof(FrameHeader) + sizeof(NewOrder)
    if t == MSG_CANCEL:
        return length == sizeof(FrameHeader) + sizeof(Cancel)
    if t == MSG_AMEND:
        return length == sizeof(FrameHeader) + sizeof(Amend)
    if t == MSG_MASS_CANCEL:
        return length == sizeof(FrameHeader) + sizeof(MassCancel)
    if t == MSG_LOGON:
        return length == sizeof(FrameHeader) + sizeof(Logon)
    if t == MSG_LOGOUT:
        return length == sizeof(FrameHeader) + sizeof(Logout)
    if t == MSG_HEARTBEAT:
        return length == sizeof(FrameHeader) + sizeof(Heartbeat)
    if MSG_SYMBOL_DIRECTORY_REQUEST <= t <= MSG_BOOK_DEPTH_REQUEST or t == MSG_POSITIONS_REQUEST or \
            t == MSG_PORTFOLIO_REQUEST:
        return length == sizeof(FrameHeader) + sizeof(Query)
    if MSG_RISK_METRICS_REQUEST <= t <= MSG_STRESS_REQUEST:
        return length == sizeof(FrameHeader) + sizeof(RiskQuery)
    if t == MSG_SUBSCRIBE or t == MSG_UNSUBSCRIBE:
        return length == sizeof(FrameHeader) + sizeof(Subscribe)
    if t == MSG_RECENT_TRADES_REQUEST:
        return length == sizeof(FrameHeader) + sizeof(RecentTradesRequest)
    if t == MSG_ALGO_NEW:
        return length == sizeof(FrameHeader) + sizeof(AlgoNew)
    if MSG_ALGO_CANCEL <= t <= MSG_ALGO_AMEND:
        return length == sizeof(FrameHeader) + sizeof(AlgoAction)
    if t == MSG_ALGOS_REQUEST:
        return length == sizeof(FrameHeader) + sizeof(Query)
    return False


# budgets[] slots: frames the session may still send, by class (throttling tiers)
cdef enum:
    B_NEW = 0         # NEW_ORDER and AMEND (tier 1)
    B_CANCEL = 1      # CANCEL and MASS_CANCEL (their own budget)
    B_ALL = 2         # every frame (tier 2)
BUDGET_NEW, BUDGET_CANCEL, BUDGET_ALL = B_NEW, B_CANCEL, B_ALL


cdef int walk_frames(const uint8_t* buf, Py_ssize_t start, Py_ssize_t end, Command* out, Py_ssize_t* n_io,
                     Py_ssize_t cap, uint32_t account, uint32_t session, bint logged_on, bint orders_allowed,
                     int64_t* budgets, Py_ssize_t* consumed, uint8_t* msg_type, uint16_t* reason,
                     const uint8_t* foreign=NULL, uint32_t n_foreign=0) noexcept:
    """The walk itself (see walk()); the caller guarantees 0 <= start <= end <= len(buf) and
    room for cap records in out. Returns the stop reason; *n_io is advanced per command.
    foreign (symbol shards: n_foreign flags by symbol id, NULL when not sharded): the walk stops
    (S_SESSION, reason WRONG_SHARD) in front of a NEW_ORDER for a symbol another shard owns."""
    cdef Py_ssize_t pos = start, length, n_cmds = n_io[0]
    cdef const uint8_t* p
    cdef const NewOrder* no
    cdef const Cancel* cx
    cdef const Amend* am
    cdef const MassCancel* mc
    cdef Command* c
    cdef uint8_t t
    cdef Py_ssize_t klass
    cdef int stop = S_END
    msg_type[0] = 0
    reason[0] = 0
    while end - pos >= <Py_ssize_t>sizeof(FrameHeader):
        p = &buf[pos]
        length = rd16(p)
        t = p[2]
        msg_type[0] = t
        if length < <Py_ssize_t>sizeof(FrameHeader) or length > MAX_FRAME:
            reason[0] = REJ_BAD_LENGTH
            stop = S_ERROR
            break
        if p[3] != SCHEMA_VERSION:
            reason[0] = REJ_UNSUPPORTED_VERSION
            stop = S_ERROR
            break
        if not (t == MSG_LOGON or t == MSG_LOGOUT or t == MSG_HEARTBEAT or MSG_NEW_ORDER <= t <= MSG_MASS_CANCEL
                or MSG_SYMBOL_DIRECTORY_REQUEST <= t <= MSG_BOOK_DEPTH_REQUEST or t == MSG_POSITIONS_REQUEST
                or t == MSG_PORTFOLIO_REQUEST or MSG_RISK_METRICS_REQUEST <= t <= MSG_STRESS_REQUEST
                or MSG_SUBSCRIBE <= t <= MSG_RECENT_TRADES_REQUEST
                or MSG_ALGO_NEW <= t <= MSG_ALGO_AMEND or t == MSG_ALGOS_REQUEST):   # (algos: Python's)
            reason[0] = REJ_UNKNOWN_MSG_TYPE
            stop = S_ERROR
            break
        if not body_size_ok(t, length):
            reason[0] = REJ_BAD_LENGTH
            stop = S_ERROR
            break
        if end - pos < length:
            msg_type[0] = 0
            break                                   # a partial frame: wait for more bytes
        if not logged_on and t != MSG_LOGON:
            reason[0] = REJ_NOT_LOGGED_ON
            stop = S_ERROR
            break
        if t < MSG_NEW_ORDER or t > MSG_MASS_CANCEL or not orders_allowed or n_cmds == cap:
            stop = S_SESSION
            break
        if foreign != NULL and t == MSG_NEW_ORDER:
            no = <const NewOrder*>(p + sizeof(FrameHeader))
            if no.symbol < n_foreign and foreign[no.symbol]:
                reason[0] = REJ_WRONG_SHARD
                stop = S_SESSION
                break
        klass = B_NEW if (t == MSG_NEW_ORDER or t == MSG_AMEND) else B_CANCEL
        if budgets[klass] <= 0 or budgets[<Py_ssize_t>B_ALL] <= 0:
            stop = S_SESSION
            break
        budgets[klass] -= 1
        budgets[<Py_ssize_t>B_ALL] -= 1
        c = &out[n_cmds]
        memset(c, 0, sizeof(Command))
        c.account = account
        c.session = session
        p += sizeof(FrameHeader)
        if t == MSG_NEW_ORDER:
            no = <const NewOrder*>p
            c.kind = CMD_NEW_ORDER
            c.client_order_id = no.client_order_id
            c.symbol = no.symbol
            c.side = no.side
            c.order_type = no.order_type
            c.tif = no.tif
            c.stp = no.stp
            c.flags = no.flags
            c.price = no.price
            c.qty = no.qty
            c.stop_price = no.stop_price
            c.display_qty = no.display_qty
            c.expire_ts_ns = no.expire_ts_ns
            c.strategy = no.strategy
        elif t == MSG_CANCEL:
            cx = <const Cancel*>p
            c.kind = CMD_CANCEL
            c.client_order_id = cx.client_order_id
            c.order_id = cx.order_id
        elif t == MSG_AMEND:
            am = <const Amend*>p
            c.kind = CMD_AMEND
            c.client_order_id = am.client_order_id
            c.order_id = am.order_id
            c.price = am.price
            c.qty = am.qty
            c.stop_price = am.stop_price
        else:
            mc = <const MassCancel*>p
            c.kind = CMD_MASS_CANCEL
            c.symbol = mc.symbol
            c.side = mc.side
        n_cmds += 1
        pos += length
    if stop == S_END:
        msg_type[0] = 0
    consumed[0] = pos - start
    n_io[0] = n_cmds
    return stop


cdef int check_walk_args(const uint8_t[::1] buf, Py_ssize_t start, Py_ssize_t end,
                         int64_t[::1] budgets) except -1:
    if budgets.shape[0] != 3:
        raise ValueError("budgets: 3 slots")
    if end > buf.shape[0] or start < 0 or start > end:
        raise ValueError("bad range")
    return 0


def walk(const uint8_t[::1] buf not None, Py_ssize_t start, Py_ssize_t end, cnp.ndarray cmds not None,
         Py_ssize_t n_cmds, uint32_t account, uint32_t session, bint logged_on, bint orders_allowed,
         int64_t[::1] budgets not None):
    """Walk frames in buf[start:end]; append order-entry Commands to cmds[n_cmds:].

    Returns (consumed, n_cmds, stop, msg_type, reason). Each order-entry frame taken
    spends one unit of its class's budget and of BUDGET_ALL; the walk stops
    (STOP_SESSION) in front of an order-entry frame whose budget is spent, or of any
    frame when orders_allowed is False, so Python can answer it. (The server uses
    Hot.step, which walks the same way and also applies and encodes.)
    """
    if cmds.dtype != COMMAND.dtype or not cmds.flags.c_contiguous:
        raise TypeError("cmds must be a contiguous COMMAND array")
    check_walk_args(buf, start, end, budgets)
    if n_cmds < 0 or n_cmds > cmds.shape[0]:
        raise ValueError("bad n_cmds")
    cdef Py_ssize_t consumed = 0, n = n_cmds
    cdef uint8_t t = 0
    cdef uint16_t reason = 0
    cdef const uint8_t* base = &buf[0] if buf.shape[0] else NULL
    cdef int stop = S_END
    if end > start:
        stop = walk_frames(base, start, end, <Command*>cnp.PyArray_DATA(cmds), &n, cmds.shape[0], account,
                           session, logged_on, orders_allowed, &budgets[0], &consumed, &t, &reason)
    return consumed, n, stop, t, reason


# -- core events -> execution reports --

from engine.core cimport Engine

cdef uint8_t[64] REPORT_TYPE
REPORT_TYPE[:] = [0] * 64
REPORT_TYPE[EV_ACCEPTED] = MSG_ACCEPTED
REPORT_TYPE[EV_REJECTED] = MSG_REJECTED
REPORT_TYPE[EV_FILL] = MSG_FILL
REPORT_TYPE[EV_CANCELLED] = MSG_CANCELLED
REPORT_TYPE[EV_REPLACED] = MSG_REPLACED
REPORT_TYPE[EV_TRIGGERED] = MSG_TRIGGERED
REPORT_TYPE[EV_RESTATED] = MSG_RESTATED
REPORT_TYPE[EV_MASS_CANCEL_DONE] = MSG_MASS_CANCEL_DONE
REPORT_TYPE[EV_BALANCE] = MSG_BALANCE
REPORT_TYPE[EV_ACCOUNT_STATE] = MSG_ACCOUNT_STATE
REPORT_TYPE[EV_ALGO_ACCEPTED] = MSG_ALGO_ACCEPTED       # parent reports (engine/ALGOS.md)
REPORT_TYPE[EV_ALGO_PROGRESS] = MSG_ALGO_PROGRESS
REPORT_TYPE[EV_ALGO_DONE] = MSG_ALGO_DONE
REPORT_TYPE[EV_ALGO_PAUSED] = MSG_ALGO_PAUSED
REPORT_TYPE[EV_ALGO_RESUMED] = MSG_ALGO_RESUMED
REPORT_TYPE[EV_ALGO_AMENDED] = MSG_ALGO_AMENDED

cdef enum:
    REPORT_FRAME = 104    # FrameHeader (8) + ExecReport (96); checked at import below

if REPORT_FRAME != sizeof(FrameHeader) + sizeof(ExecReport):
    raise ImportError("gateway: REPORT_FRAME is not the size of an execution report frame")


cdef inline uint32_t report_count(const Event* e) noexcept:
    if e.kind >= 64 or REPORT_TYPE[e.kind] == 0 or e.account == 0:
        return 0
    return 2 if e.kind == EV_FILL else 1


cdef inline void put_report(uint8_t* p, uint8_t msg_type, uint64_t seq, const Event* e, bint maker) noexcept:
    cdef FrameHeader* h = <FrameHeader*>p
    cdef ExecReport* r = <ExecReport*>(p + sizeof(FrameHeader))
    memset(p, 0, REPORT_FRAME)
    h.length = REPORT_FRAME
    h.msg_type = msg_type
    h.version = SCHEMA_VERSION
    r.seq = seq
    r.symbol = e.symbol
    r.reason = e.reason
    r.price = e.price
    r.qty = e.qty
    r.trade_id = e.trade_id
    r.cmd_kind = e.cmd_kind
    r.ts_ns = e.ts_ns                                   # the command's journaled receive time
    if maker:
        r.order_id = e.other_order_id
        r.client_order_id = e.other_client_order_id
        r.side = SIDE_SELL if e.side == SIDE_BUY else SIDE_BUY
        r.leaves = e.other_leaves
        r.liquidity = LIQ_MAKER
        r.fee = e.other_fee
    else:
        r.order_id = e.order_id
        r.client_order_id = e.client_order_id
        r.side = e.side
        r.leaves = e.leaves
        r.liquidity = LIQ_TAKER if e.kind == EV_FILL else 0
        r.fee = e.fee                                   # 0 but in a FILL
        r.flags = e.flags & (EVFLAG_LIQUIDATION | EVFLAG_ALGO_CHILD)   # the flags belong to order_id's side


# -- the per-read hot path: walk + apply + encode, and the metrics counted on it --
#
# Hot owns the open batch (the COMMAND array the walk appends to). step() walks one
# read's complete frames, stamps each command with its sequence number and the read's
# receive time, applies it in the engine at once, counts it, and encodes the reports
# of the events it caused, grouped per account, straight into one bytes object per
# account. The events stay in the engine's buffer until the batch is sealed for the
# journal (seal()), or, without a journal, until done() after the replies are written.
#
# Metrics are integer arrays incremented here (numpy-owned, read by engine/ops.py at
# scrape time): commands by kind / order type / outcome, rejects by reason, fills and
# traded quantity by symbol, bytes in, and three histograms of fixed integer buckets
# (receive -> acknowledgement written, journal commit time, commands per batch).

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from libc.stdlib cimport malloc, free
from posix.time cimport clock_gettime, timespec, CLOCK_REALTIME

cdef enum:
    N_KINDS = 40          # CommandKind slots (codes.py; a kind beyond counts as 0)
    N_OTYPES = 8          # OrderType slots (0 for commands that are not NEW_ORDER)
    N_REASONS = 7000      # Reject codes are < 7000 (protocol/codes.py ranges)

# Histogram bucket upper bounds (inclusive); one more bucket counts everything above.
LATENCY_BOUNDS_NS = np.array([1_000 * x for x in (5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 200, 300, 500, 750, 1_000,
                                                  2_000, 5_000, 10_000, 20_000, 50_000, 100_000)], dtype=np.int64)
BATCH_BOUNDS = np.array([1 << k for k in range(17)], dtype=np.int64)


cdef inline int64_t now_ns() noexcept:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef class Histogram:
    """Fixed integer buckets: counts[i] = observations <= bounds[i] (and > bounds[i-1]);
    counts[len(bounds)] the rest. Read at scrape time (buckets(), sum)."""
    cdef readonly object bounds_arr, counts_arr
    cdef const int64_t* bounds
    cdef uint64_t* counts
    cdef Py_ssize_t n
    cdef readonly int64_t sum
    cdef readonly uint64_t count

    def __cinit__(self, bounds):
        self.bounds_arr = np.ascontiguousarray(bounds, dtype=np.int64)
        self.n = self.bounds_arr.shape[0]
        self.counts_arr = np.zeros(self.n + 1, dtype=np.uint64)
        self.bounds = <const int64_t*>cnp.PyArray_DATA(self.bounds_arr)
        self.counts = <uint64_t*>cnp.PyArray_DATA(self.counts_arr)

    cdef inline void add(self, int64_t v) noexcept:
        cdef Py_ssize_t i = 0
        while i < self.n and v > self.bounds[i]:
            i += 1
        self.counts[i] += 1
        self.sum += v
        self.count += 1

    def observe(self, int64_t v):
        self.add(v)

    def buckets(self):
        """[(upper bound or None for +Inf, cumulative count)]"""
        out = []
        cdef uint64_t acc = 0
        cdef Py_ssize_t i
        for i in range(self.n + 1):
            acc += self.counts[i]
            out.append((self.bounds[i] if i < self.n else None, acc))
        return out


cdef class Throttle:
    """A session's token buckets [new orders and amends, cancels, every frame] (the two
    throttling tiers), refilled per read and spent by Hot.step, in C doubles."""
    cdef double tok[3]
    cdef double rate[3]
    cdef double burst[3]
    cdef double last

    def __cinit__(self, rates, bursts, double now):
        cdef int i
        for i in range(3):
            self.rate[i] = rates[i]
            self.burst[i] = bursts[i]
            self.tok[i] = bursts[i]
        self.last = now

    cdef inline void refill(self, double now) noexcept:
        cdef double dt = now - self.last
        cdef int i
        if dt > 0:
            for i in range(3):
                self.tok[i] = min(self.tok[i] + dt * self.rate[i], self.burst[i])
        self.last = now

    def level(self, int i):
        """Tokens left in bucket i (BUDGET_NEW, BUDGET_CANCEL, BUDGET_ALL)."""
        if i < 0 or i > 2:
            raise IndexError(i)
        return self.tok[i]

    def spend(self, int i):
        if i < 0 or i > 2:
            raise IndexError(i)
        self.tok[i] -= 1


cdef class Hot:
    cdef Engine eng
    cdef readonly object pending
    """The open batch: a COMMAND array; commands [0, n_pending) are applied, not yet sealed."""
    cdef Command* cmds
    cdef Py_ssize_t cap
    cdef readonly Py_ssize_t n_pending
    cdef public uint64_t next_cmd_seq
    """Sequence number the next command gets."""
    cdef Py_ssize_t ev_mark           # events of the open batch already encoded
    cdef readonly bint journaled
    cdef object next_seq_arr
    cdef int64_t* next_seq
    cdef uint32_t* counts             # per account scratch, zero between calls
    cdef char** bases                 # per account scratch: where its reports go
    cdef uint32_t na
    # -- metrics --
    cdef readonly object commands_arr  # [kind][order type][0 = accepted, 1 = rejected]
    cdef readonly object rejects_arr   # [reason]
    cdef readonly object fills_arr, volume_arr   # [symbol]
    cdef uint64_t* m_commands
    cdef uint64_t* m_rejects
    cdef uint64_t* m_fills
    cdef uint64_t* m_volume
    cdef uint32_t n_symbols
    cdef public uint64_t bytes_in, bytes_out
    cdef readonly Histogram latency, commit, batch
    """receive -> acknowledgement written (ns); journal commit (ns); commands per batch."""
    cdef object foreign_arr           # symbol shards: 1 per symbol id another shard owns (None: not sharded)
    cdef const uint8_t* foreign

    def __cinit__(self, Engine eng not None, int64_t[::1] next_seq not None, Py_ssize_t capacity, bint journaled):
        self.eng = eng
        self.pending = np.zeros(capacity, dtype=COMMAND.dtype)
        self.cmds = <Command*>cnp.PyArray_DATA(self.pending)
        self.cap = capacity
        self.next_cmd_seq = 1
        self.journaled = journaled
        self.next_seq_arr = next_seq.base if next_seq.base is not None else next_seq
        self.next_seq = &next_seq[0]
        self.na = <uint32_t>next_seq.shape[0]
        self.counts = <uint32_t*>malloc(self.na * sizeof(uint32_t))
        self.bases = <char**>malloc(self.na * sizeof(char*))
        if self.counts == NULL or self.bases == NULL:
            raise MemoryError()
        memset(self.counts, 0, self.na * sizeof(uint32_t))
        self.commands_arr = np.zeros((N_KINDS, N_OTYPES, 2), dtype=np.uint64)
        self.rejects_arr = np.zeros(N_REASONS, dtype=np.uint64)
        self.n_symbols = <uint32_t>eng.max_symbols
        self.fills_arr = np.zeros(self.n_symbols, dtype=np.uint64)
        self.volume_arr = np.zeros(self.n_symbols, dtype=np.uint64)
        self.m_commands = <uint64_t*>cnp.PyArray_DATA(self.commands_arr)
        self.m_rejects = <uint64_t*>cnp.PyArray_DATA(self.rejects_arr)
        self.m_fills = <uint64_t*>cnp.PyArray_DATA(self.fills_arr)
        self.m_volume = <uint64_t*>cnp.PyArray_DATA(self.volume_arr)
        self.latency = Histogram(LATENCY_BOUNDS_NS)
        self.commit = Histogram(LATENCY_BOUNDS_NS)
        self.batch = Histogram(BATCH_BOUNDS)

    def __dealloc__(self):
        free(self.counts)
        free(self.bases)

    def set_foreign(self, symbols):
        """Symbol shards: new orders for these symbol ids stop the walk (WRONG_SHARD, answered by Python)."""
        arr = np.zeros(self.n_symbols, dtype=np.uint8)
        for sym in symbols:
            arr[sym] = 1
        self.foreign_arr = arr if len(symbols) else None
        self.foreign = <const uint8_t*>cnp.PyArray_DATA(arr) if len(symbols) else NULL

    def bind(self, Engine eng not None):
        """Apply to another engine from now on (one rebuilt from the journal, with the same
        capacities); the open batch must be empty."""
        if self.n_pending or self.ev_mark:
            raise RuntimeError("the open batch is not empty")
        if eng.max_symbols != self.eng.max_symbols or eng.max_accounts != self.eng.max_accounts:
            raise ValueError("a differently sized engine")
        self.eng = eng

    # -- applying --
    cdef int apply(self, Py_ssize_t n0, Py_ssize_t n1, int64_t ts) except -1:
        """Sequence, stamp (ts > 0), apply and count commands [n0, n1) of the open batch."""
        cdef Py_ssize_t i, j, e0
        cdef Command* c
        cdef const Event* e
        cdef uint8_t kind, ot
        for i in range(n0, n1):
            c = &self.cmds[i]
            c.seq = self.next_cmd_seq
            self.next_cmd_seq += 1
            if ts > 0:
                c.ts_ns = <uint64_t>ts
            e0 = self.eng.ev_count
            self.eng.process_one(c)
            kind = c.kind if c.kind < N_KINDS else 0
            ot = c.order_type if (kind == CMD_NEW_ORDER and c.order_type < N_OTYPES) else 0
            e = &self.eng.ev_buf[e0]
            self.m_commands[(kind * N_OTYPES + ot) * 2 + (1 if (self.eng.ev_count > e0 and e.kind == EV_REJECTED)
                                                         else 0)] += 1
            for j in range(e0, self.eng.ev_count):
                e = &self.eng.ev_buf[j]
                if e.kind == EV_REJECTED:
                    self.m_rejects[e.reason if e.reason < N_REASONS else 0] += 1
                elif e.kind == EV_FILL and e.symbol < self.n_symbols:
                    self.m_fills[e.symbol] += 1
                    self.m_volume[e.symbol] += <uint64_t>e.qty
        self.n_pending = n1
        return 0

    def step(self, const uint8_t[::1] buf not None, Py_ssize_t start, Py_ssize_t end, uint32_t account,
             uint32_t session, bint logged_on, bint orders_allowed, Throttle throttle not None, double now,
             Py_ssize_t nbytes):
        """One read of nbytes at monotonic time `now` (0 bytes: resuming after a session
        frame): refill the session's buckets, walk buf[start:end] as walk() does spending
        them, apply what it took, encode. Returns (consumed, stop, msg_type, reason, groups),
        groups as encode()."""
        if end > buf.shape[0] or start < 0 or start > end:
            raise ValueError("bad range")
        cdef int64_t budgets[3]
        cdef int i
        if nbytes:
            self.bytes_in += <uint64_t>nbytes
            throttle.refill(now)
        for i in range(3):
            budgets[i] = <int64_t>throttle.tok[i] if throttle.tok[i] > 0 else 0
        cdef int64_t b0 = budgets[0], b1 = budgets[1], b2 = budgets[2]
        cdef Py_ssize_t consumed = 0, n0 = self.n_pending, n = self.n_pending
        cdef uint8_t t = 0
        cdef uint16_t reason = 0
        cdef int stop = S_END
        if end > start:
            stop = walk_frames(&buf[0], start, end, self.cmds, &n, self.cap, account, session, logged_on,
                               orders_allowed, budgets, &consumed, &t, &reason, self.foreign, self.n_symbols)
        throttle.tok[0] -= b0 - budgets[0]
        throttle.tok[1] -= b1 - budgets[1]
        throttle.tok[2] -= b2 - budgets[2]
        if n == n0:
            return consumed, stop, t, reason, None
        self.apply(n0, n, now_ns())
        return consumed, stop, t, reason, self.encode()

    def apply_last(self):
        """Apply the command Python wrote at pending[n_pending] (timers, cancel on disconnect,
        admin); returns groups as encode()."""
        return self.apply_written(self.n_pending + 1)

    def apply_written(self, Py_ssize_t n):
        """Apply the commands Python wrote at pending[n_pending:n] (the open batch becomes n long);
        returns groups as encode()."""
        if n > self.cap:
            raise OverflowError("the open batch is full: seal it first")
        if n <= self.n_pending:
            raise ValueError("nothing written after the open batch")
        self.apply(self.n_pending, n, now_ns())
        return self.encode()

    @property
    def full(self):
        return self.n_pending >= self.cap

    # -- encoding --
    def encode(self):
        """Reports for the events not yet encoded (all of them after a replay feed), one
        bytes object per account, each account's reports in event order, a FILL giving
        the taker's then the maker's, numbered from next_seq[account] (advanced).
        Returns [(account, first_seq, bytes)] or None when there is nothing to send."""
        cdef Engine eng = self.eng
        cdef Py_ssize_t i, n = eng.ev_count, m = self.ev_mark
        cdef const Event* e
        cdef uint32_t a, k, na = self.na
        cdef int step
        cdef list touched = None
        cdef list groups = []
        cdef bytes chunk
        # a counting sort: step 0 counts each account's reports, then one bytes object per
        # account is allocated; step 1 writes the reports into them (counts = write index)
        for step in range(2):
            for i in range(m, n):
                e = &eng.ev_buf[i]
                k = report_count(e)
                if k == 0:
                    continue
                a = e.account
                if step == 0:
                    if a >= na or (k == 2 and e.other_account >= na):
                        self.clear_counts(touched)
                        raise ValueError("event for an account outside next_seq")
                    if touched is None:
                        touched = []
                    if self.counts[a] == 0:
                        touched.append(a)
                    self.counts[a] += 1
                    if k == 2:
                        a = e.other_account
                        if self.counts[a] == 0:
                            touched.append(a)
                        self.counts[a] += 1
                    continue
                put_report(<uint8_t*>self.bases[a] + self.counts[a] * REPORT_FRAME, REPORT_TYPE[e.kind],
                           self.next_seq[a], e, False)
                self.counts[a] += 1
                self.next_seq[a] += 1
                if k == 2:
                    a = e.other_account
                    put_report(<uint8_t*>self.bases[a] + self.counts[a] * REPORT_FRAME, MSG_FILL,
                               self.next_seq[a], e, True)
                    self.counts[a] += 1
                    self.next_seq[a] += 1
            if step == 0:
                self.ev_mark = n
                if touched is None:
                    return None
                for a in touched:
                    chunk = PyBytes_FromStringAndSize(NULL, self.counts[a] * REPORT_FRAME)
                    self.bases[a] = PyBytes_AS_STRING(chunk)
                    groups.append((a, self.next_seq[a], chunk))
                    self.counts[a] = 0
        self.clear_counts(touched)
        return groups

    cdef void clear_counts(self, list touched) noexcept:
        cdef uint32_t a
        if touched is not None:
            for a in touched:
                self.counts[a] = 0

    # -- the end of a batch --
    def seal(self):
        """Close the open batch for the journal: (first_seq, commands bytes, events bytes);
        the next command starts a new batch. None if it is empty."""
        cdef Py_ssize_t n = self.n_pending
        if n == 0:
            return None
        cdef uint64_t first = self.cmds[0].seq
        cmds = PyBytes_FromStringAndSize(<char*>self.cmds, n * sizeof(Command))
        events = PyBytes_FromStringAndSize(<char*>self.eng.ev_buf, self.eng.ev_count * sizeof(Event))
        self.batch.add(n)
        self.n_pending = 0
        self.eng.ev_count = 0
        self.ev_mark = 0
        return first, cmds, events

    def done(self):
        """Without a journal: the replies of the open batch are written; count it and start the next."""
        if self.n_pending:
            self.batch.add(self.n_pending)
            self.observe_acked(self.cmds, self.n_pending)
        self.n_pending = 0
        self.eng.ev_count = 0
        self.ev_mark = 0

    def discard(self):
        """Drop the open batch's commands and events (a failed journal, or after a replay feed)."""
        self.n_pending = 0
        self.eng.ev_count = 0
        self.ev_mark = 0

    def acked(self, const uint8_t[::1] commands not None):
        """The replies of a committed batch (its commands bytes from seal()) are written."""
        if commands.shape[0] % sizeof(Command):
            raise ValueError("not a whole number of commands")
        if commands.shape[0]:
            self.observe_acked(<const Command*>&commands[0], commands.shape[0] // sizeof(Command))

    cdef void observe_acked(self, const Command* c, Py_ssize_t n) noexcept:
        cdef int64_t t = now_ns()
        cdef Py_ssize_t i
        for i in range(n):
            self.latency.add(t - <int64_t>c[i].ts_ns)

    def count_reject(self, uint16_t reason):
        """A session-level reject answered in Python (THROTTLED, JOURNAL_UNAVAILABLE)."""
        self.m_rejects[reason if reason < N_REASONS else 0] += 1


def encode_account_reports(const uint8_t[::1] events not None, uint32_t account, uint64_t first_seq,
                           uint8_t[::1] out not None):
    """The execution reports of one account for journaled events (EVENT records, as bytes): what
    Hot.encode wrote for that account when the events were live, in the same order, with
    the same put_report, numbered from first_seq (the account's sequence before these events).
    Gap replay after a restart rebuilds old reports with it. Returns the number of reports
    written, or minus the number of bytes `out` needs if it is too small."""
    if events.shape[0] % sizeof(Event):
        raise ValueError("events: not a whole number of EVENT records")
    cdef Py_ssize_t i, n = events.shape[0] // sizeof(Event), total = 0
    cdef const Event* evs = <const Event*>&events[0] if n else NULL
    cdef const Event* e
    cdef uint32_t k
    for i in range(n):
        e = &evs[i]
        k = report_count(e)
        if k and e.account == account:
            total += 1
        if k == 2 and e.other_account == account:
            total += 1
    if total * REPORT_FRAME > out.shape[0]:
        return -(total * REPORT_FRAME)
    cdef uint8_t* p = &out[0] if total else NULL
    cdef uint64_t seq = first_seq
    for i in range(n):
        e = &evs[i]
        k = report_count(e)
        if k and e.account == account:
            put_report(p, REPORT_TYPE[e.kind], seq, e, False)
            p += REPORT_FRAME
            seq += 1
        if k == 2 and e.other_account == account:
            put_report(p, MSG_FILL, seq, e, True)
            p += REPORT_FRAME
            seq += 1
    return total
