"""struct codecs of the wire frames the router writes and reads per order, derived from the
protocol/wire.py layouts (the one description; numpy's wire.encode/decode cost microseconds
a frame, a precompiled struct a fraction of one)."""
from __future__ import annotations

import struct

from protocol import records, wire
from protocol.layout import Layout
from protocol.wire import MsgType

_FMT = {"u8": "B", "u16": "H", "u32": "I", "u64": "Q", "i32": "i", "i64": "q"}


def _fmt(layout: Layout) -> str:
    return "".join(_FMT.get(t) or f"{t[1:]}s" for _, t, _ in layout.fields)


class Body:
    """A layout's body as a struct: unpack into a tuple in field order, `fields[name]` its index."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.struct = struct.Struct("<" + _fmt(layout))
        self.fields = {name: i for i, (name, _, _) in enumerate(layout.fields)}
        self.size = layout.size

    def unpack(self, buf, offset: int = 0) -> tuple:
        return self.struct.unpack_from(buf, offset)


class Frame:
    """A whole frame of `msg_type` packed from the named fields (in that order), the others 0."""

    def __init__(self, msg_type: MsgType, names: tuple[str, ...]):
        layout = wire.BODY[msg_type]
        self.size = wire.frame_size(msg_type)
        fmt, self.order = "<HBBI", []
        pad = 0
        for name, t, _ in layout.fields:
            if name in names:
                if pad:
                    fmt += f"{pad}x"
                    pad = 0
                fmt += _FMT[t]
                self.order.append(name)
            else:
                pad += struct.calcsize("<" + (_FMT.get(t) or f"{t[1:]}s"))
        if pad:
            fmt += f"{pad}x"
        if tuple(self.order) != names:
            raise ValueError(f"{msg_type.name}: fields {names} not in layout order {self.order}")
        self.struct = struct.Struct(fmt)
        assert self.struct.size == self.size, (msg_type, self.struct.size, self.size)
        self.head = (self.size, int(msg_type), wire.SCHEMA_VERSION, 0)

    def pack(self, *values) -> bytes:
        return self.struct.pack(*self.head, *values)

    def pack_into(self, buf, offset: int, *values) -> None:
        self.struct.pack_into(buf, offset, *self.head, *values)


EXEC_REPORT = Body(wire.EXEC_REPORT)
NEW_ORDER = Body(wire.NEW_ORDER)
CANCEL = Body(wire.CANCEL)
AMEND = Body(wire.AMEND)
MASS_CANCEL = Body(wire.MASS_CANCEL)
QUERY = Body(wire.QUERY)
SUBSCRIBE = Body(wire.SUBSCRIBE)
LOGON = Body(wire.LOGON)

NEW_ORDER_FRAME = Frame(MsgType.NEW_ORDER, ("client_order_id", "symbol", "side", "order_type", "tif", "price", "qty"))
CANCEL_FRAME = Frame(MsgType.CANCEL, ("client_order_id", "order_id"))
AMEND_FRAME = Frame(MsgType.AMEND, ("client_order_id", "order_id", "price", "qty", "stop_price"))
# every ExecReport field but the padding, in layout order
REPORT_FIELDS = tuple(n for n, _, _ in wire.EXEC_REPORT.fields if not n.startswith("_"))
REPORT_FRAMES = {t: Frame(t, REPORT_FIELDS) for t in (MsgType.ACCEPTED, MsgType.REJECTED, MsgType.FILL,
                                                      MsgType.CANCELLED, MsgType.REPLACED, MsgType.MASS_CANCEL_DONE)}
R = EXEC_REPORT.fields                 # ExecReport field -> index in an unpacked tuple
# the router journal's records (protocol/records.py); a bytes field shorter than its size is zero padded
ROUTE_INPUT = Body(records.ROUTE_INPUT)
ROUTE_OUTPUT = Body(records.ROUTE_OUTPUT)
