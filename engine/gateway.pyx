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
    if MSG_SYMBOL_DIRECTORY_REQUEST <= t <= MSG_BOOK_DEPTH_REQUEST:
        return length == sizeof(FrameHeader) + sizeof(Query)
    return False


def walk(const uint8_t[::1] buf not None, Py_ssize_t start, Py_ssize_t end, cnp.ndarray cmds not None,
         Py_ssize_t n_cmds, uint32_t account, uint32_t session, bint logged_on, bint orders_allowed):
    """Walk frames in buf[start:end]; append order-entry Commands to cmds[n_cmds:].

    Returns (consumed, n_cmds, stop, msg_type, reason). orders_allowed False (throttled)
    stops in front of each order-entry frame too (STOP_SESSION), so Python can reject it.
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
                or MSG_SYMBOL_DIRECTORY_REQUEST <= t <= MSG_BOOK_DEPTH_REQUEST):
            return pos - start, n_cmds, STOP_ERROR, t, REJ_UNKNOWN_MSG_TYPE
        if not body_size_ok(t, length):
            return pos - start, n_cmds, STOP_ERROR, t, REJ_BAD_LENGTH
        if end - pos < length:
            break                                   # a partial frame: wait for more bytes
        if not logged_on and t != MSG_LOGON:
            return pos - start, n_cmds, STOP_ERROR, t, REJ_NOT_LOGGED_ON
        if t < MSG_NEW_ORDER or t > MSG_MASS_CANCEL or not orders_allowed or n_cmds == cap:
            return pos - start, n_cmds, STOP_SESSION, t, 0
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
