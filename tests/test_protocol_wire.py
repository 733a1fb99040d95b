"""The wire layouts and the Python codec: sizes, alignment, round trips, framing errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from protocol import wire
from protocol.codes import Reject, Side
from protocol.wire import MsgType, ProtocolViolation


def test_layouts_when_built_then_fixed_sizes_multiple_of_8_and_aligned():
    for layout in set(wire.BODY.values()) | set(wire.ENTRY.values()) | {wire.HEADER}:
        assert layout.size % 8 == 0 and layout.dtype.itemsize == layout.size
    assert wire.frame_size(MsgType.BOOK_DEPTH, 2 * wire.MAX_DEPTH_LEVELS) <= wire.MAX_FRAME


def test_logon_when_signed_then_hmac_covers_bytes_8_to_39():
    assert wire.HEADER.size + wire.LOGON.offsets["hmac"] == 40


def test_encode_decode_when_round_trip_then_fields_equal():
    frames = (wire.encode(MsgType.NEW_ORDER, client_order_id=7, symbol=2, side=Side.SELL, price=-5, qty=10**15)
              + wire.encode(MsgType.BOOK_DEPTH, entries=[dict(price=100, qty=5, orders=1, side=1)] * 3,
                            request_id=9, count=3))
    got, consumed = wire.decode(frames)
    assert consumed == len(frames) and [t for t, _, _ in got] == [MsgType.NEW_ORDER, MsgType.BOOK_DEPTH]
    assert (int(got[0][1]["client_order_id"]), int(got[0][1]["price"]), int(got[0][1]["qty"])) == (7, -5, 10**15)
    assert len(got[1][2]) == 3 and int(got[1][2][2]["price"]) == 100


def test_decode_when_partial_frame_then_left_for_next_read():
    f = wire.encode(MsgType.CANCEL, order_id=3)
    got, consumed = wire.decode(f + f[:5])
    assert len(got) == 1 and consumed == len(f)


@pytest.mark.parametrize("mutate,reason", [
    (lambda f: (7).to_bytes(2, "little") + f[2:], Reject.BAD_LENGTH),
    (lambda f: (5000).to_bytes(2, "little") + f[2:], Reject.BAD_LENGTH),
    (lambda f: (len(f) + 8).to_bytes(2, "little") + f[2:] + bytes(8), Reject.BAD_LENGTH),
    (lambda f: f[:2] + bytes([200]) + f[3:], Reject.UNKNOWN_MSG_TYPE),
    (lambda f: f[:3] + bytes([9]) + f[4:], Reject.UNSUPPORTED_VERSION),
])
def test_decode_when_malformed_then_protocol_violation_names_reason_and_offset(mutate, reason):
    good = wire.encode(MsgType.HEARTBEAT)
    with pytest.raises(ProtocolViolation) as e:
        wire.decode(good + mutate(wire.encode(MsgType.CANCEL)))
    assert (e.value.reason, e.value.offset) == (reason, len(good))


def test_decode_when_server_type_from_client_then_refused():
    with pytest.raises(ProtocolViolation) as e:
        wire.decode(wire.encode(MsgType.FILL), client_types_only=True)
    assert e.value.reason == Reject.UNKNOWN_MSG_TYPE


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=600))
def test_decode_when_fuzzed_then_frames_or_protocol_violation_only(data):
    try:
        frames, consumed = wire.decode(data)
    except ProtocolViolation as e:
        assert 0 <= e.offset < len(data)
        return
    assert 0 <= consumed <= len(data)
    assert consumed == sum(wire.frame_size(t, 0 if ents is None else len(ents)) for t, _, ents in frames)
