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

# walk() stop reasons
STOP_END = 0          # every complete frame consumed (a partial one may remain)
STOP_SESSION = 1      # in front of a frame Python handles (its type in `msg_type`)
STOP_ERROR = 2        # a malformed frame: `reason` is the Reject code, `consumed` its offset


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
    if t == MSG_SUBSCRIBE or t == MSG_UNSUBSCRIBE:
        return length == sizeof(FrameHeader) + sizeof(Subscribe)
    if t == MSG_RECENT_TRADES_REQUEST:
        return length == sizeof(FrameHeader) + sizeof(RecentTradesRequest)
    return False


# budgets[] slots: frames the session may still send, by class (throttling tiers)
cdef enum:
    B_NEW = 0         # NEW_ORDER and AMEND (tier 1)
    B_CANCEL = 1      # CANCEL and MASS_CANCEL (their own budget)
    B_ALL = 2         # every frame (tier 2)
BUDGET_NEW, BUDGET_CANCEL, BUDGET_ALL = B_NEW, B_CANCEL, B_ALL


def walk(const uint8_t[::1] buf not None, Py_ssize_t start, Py_ssize_t end, cnp.ndarray cmds not None,
         Py_ssize_t n_cmds, uint32_t account, uint32_t session, bint logged_on, bint orders_allowed,
         int64_t[::1] budgets not None):
    """Walk frames in buf[start:end]; append order-entry Commands to cmds[n_cmds:].

    Returns (consumed, n_cmds, stop, msg_type, reason). Each order-entry frame taken
    spends one unit of its class's budget and of BUDGET_ALL; the walk stops
    (STOP_SESSION) in front of an order-entry frame whose budget is spent, or of any
    frame when orders_allowed is False, so Python can answer it.
    """
    if cmds.dtype != COMMAND.dtype or not cmds.flags.c_contiguous:
        raise TypeError("cmds must be a contiguous COMMAND array")
    cdef Command* out = <Command*>cnp.PyArray_DATA(cmds)
    cdef Py_ssize_t cap = cmds.shape[0]
    cdef Py_ssize_t pos = start, length
    cdef const uint8_t* p
    cdef const NewOrder* no
    cdef const Cancel* cx
    cdef const Amend* am
    cdef const MassCancel* mc
    cdef Command* c
    cdef uint8_t t
    cdef Py_ssize_t klass
    if budgets.shape[0] != 3:
        raise ValueError("budgets: 3 slots")
    if end > buf.shape[0] or start < 0 or start > end:
        raise ValueError("bad range")
    while end - pos >= <Py_ssize_t>sizeof(FrameHeader):
        p = &buf[pos]
        length = rd16(p)
        t = p[2]
        if length < <Py_ssize_t>sizeof(FrameHeader) or length > MAX_FRAME:
            return pos - start, n_cmds, STOP_ERROR, t, REJ_BAD_LENGTH
        if p[3] != SCHEMA_VERSION:
            return pos - start, n_cmds, STOP_ERROR, t, REJ_UNSUPPORTED_VERSION
        if not (t == MSG_LOGON or t == MSG_LOGOUT or t == MSG_HEARTBEAT or MSG_NEW_ORDER <= t <= MSG_MASS_CANCEL
                or MSG_SYMBOL_DIRECTORY_REQUEST <= t <= MSG_BOOK_DEPTH_REQUEST or t == MSG_POSITIONS_REQUEST
                or t == MSG_PORTFOLIO_REQUEST or MSG_SUBSCRIBE <= t <= MSG_RECENT_TRADES_REQUEST):
            return pos - start, n_cmds, STOP_ERROR, t, REJ_UNKNOWN_MSG_TYPE
        if not body_size_ok(t, length):
            return pos - start, n_cmds, STOP_ERROR, t, REJ_BAD_LENGTH
        if end - pos < length:
            break                                   # a partial frame: wait for more bytes
        if not logged_on and t != MSG_LOGON:
            return pos - start, n_cmds, STOP_ERROR, t, REJ_NOT_LOGGED_ON
        if t < MSG_NEW_ORDER or t > MSG_MASS_CANCEL or not orders_allowed or n_cmds == cap:
            return pos - start, n_cmds, STOP_SESSION, t, 0
        klass = B_NEW if (t == MSG_NEW_ORDER or t == MSG_AMEND) else B_CANCEL
        if budgets[klass] <= 0 or budgets[<Py_ssize_t>B_ALL] <= 0:
            return pos - start, n_cmds, STOP_SESSION, t, 0
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
    return pos - start, n_cmds, STOP_END, 0, 0


# -- core events -> execution reports --

from engine.core cimport Engine

cdef uint8_t[32] REPORT_TYPE
REPORT_TYPE[:] = [0] * 32
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

cdef enum:
    REPORT_FRAME = 88     # FrameHeader (8) + ExecReport (80); checked in encode_reports


cdef inline uint32_t report_count(const Event* e) noexcept:
    if e.kind >= 32 or REPORT_TYPE[e.kind] == 0 or e.account == 0:
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
    if maker:
        r.order_id = e.other_order_id
        r.client_order_id = e.other_client_order_id
        r.side = SIDE_SELL if e.side == SIDE_BUY else SIDE_BUY
        r.leaves = e.other_leaves
        r.liquidity = LIQ_MAKER
    else:
        r.order_id = e.order_id
        r.client_order_id = e.client_order_id
        r.side = e.side
        r.leaves = e.leaves
        r.liquidity = LIQ_TAKER if e.kind == EV_FILL else 0
        r.flags = e.flags & EVFLAG_LIQUIDATION          # the flag belongs to order_id's side


def encode_reports(Engine eng, int64_t[::1] next_seq not None, uint32_t[::1] counts not None,
                   uint8_t[::1] out not None):
    """Write the execution reports for the events in eng's buffer into `out`, grouped by
    account (a counting sort: each account's reports contiguous, in event order, a FILL
    giving the taker's then the maker's), numbered from next_seq[account] (advanced).

    `counts` is scratch, one slot per account, all zero on entry and on return.
    Returns [(account, first_seq, start, end)] per account, or the byte size `out`
    needs (an int) if it is too small."""
    if sizeof(FrameHeader) + sizeof(ExecReport) != REPORT_FRAME:
        raise AssertionError("report layout changed")
    cdef Py_ssize_t i, n = eng.ev_count, total = 0
    cdef const Event* e
    cdef uint32_t a, k, na = next_seq.shape[0]
    cdef list touched = []
    for i in range(n):
        e = &eng.ev_buf[i]
        k = report_count(e)
        if k == 0:
            continue
        a = e.account
        if a >= na or (k == 2 and e.other_account >= na):
            raise ValueError("event for an account outside next_seq")
        if counts[a] == 0:
            touched.append(a)
        counts[a] += 1
        total += 1
        if k == 2:
            a = e.other_account
            if counts[a] == 0:
                touched.append(a)
            counts[a] += 1
            total += 1
    if total * REPORT_FRAME > out.shape[0]:
        for a in touched:
            counts[a] = 0
        return total * REPORT_FRAME
    # offsets: counts[a] becomes the next write index of account a
    cdef list groups = []
    cdef Py_ssize_t pos = 0, c
    for a in touched:
        c = counts[a]
        groups.append((a, next_seq[a], pos * REPORT_FRAME, (pos + c) * REPORT_FRAME))
        counts[a] = <uint32_t>pos
        pos += c
    cdef uint8_t* base = &out[0]
    for i in range(n):
        e = &eng.ev_buf[i]
        k = report_count(e)
        if k == 0:
            continue
        a = e.account
        put_report(base + counts[a] * REPORT_FRAME, REPORT_TYPE[e.kind], next_seq[a], e, False)
        counts[a] += 1
        next_seq[a] += 1
        if k == 2:
            a = e.other_account
            put_report(base + counts[a] * REPORT_FRAME, MSG_FILL, next_seq[a], e, True)
            counts[a] += 1
            next_seq[a] += 1
    for a in touched:
        counts[a] = 0
    return groups


def encode_account_reports(const uint8_t[::1] events not None, uint32_t account, uint64_t first_seq,
                           uint8_t[::1] out not None):
    """The execution reports of one account for journaled events (EVENT records, as bytes): what
    encode_reports wrote for that account when the events were live, in the same order, with
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


def stamp(cnp.ndarray cmds not None, Py_ssize_t n, uint64_t first_seq, uint64_t ts_ns):
    """Give cmds[:n] consecutive sequence numbers from first_seq and the receive time ts_ns."""
    if cmds.dtype != COMMAND.dtype or not cmds.flags.c_contiguous or n > cmds.shape[0] or n < 0:
        raise TypeError("cmds must be a contiguous COMMAND array with at least n records")
    cdef Command* c = <Command*>cnp.PyArray_DATA(cmds)
    cdef Py_ssize_t i
    for i in range(n):
        c[i].seq = first_seq + <uint64_t>i
        c[i].ts_ns = ts_ns
