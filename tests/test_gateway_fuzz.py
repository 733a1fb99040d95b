"""The server's decoder (engine/gateway.pyx walk) on arbitrary bytes: it never reads past
the buffer, never crashes, and either consumes whole valid frames or names the bad one."""
import numpy as np
from hypothesis import given, settings, strategies as st

from engine import gateway
from protocol import wire
from protocol.codes import Reject
from protocol.records import COMMAND
from protocol.wire import MsgType

VALID = [wire.encode(MsgType.NEW_ORDER, client_order_id=1, symbol=1, side=1, order_type=1, tif=1, stp=1,
                     price=10, qty=1),
         wire.encode(MsgType.CANCEL, order_id=5), wire.encode(MsgType.AMEND, order_id=5, qty=2),
         wire.encode(MsgType.MASS_CANCEL), wire.encode(MsgType.HEARTBEAT),
         wire.encode(MsgType.BOOK_DEPTH_REQUEST, request_id=1, symbol=1, levels=5)]


def walk(data, logged_on=True, budgets=(10**9, 10**9, 10**9)):
    buf = np.frombuffer(bytes(data) + b"\0" * 8, dtype=np.uint8)[:len(data)]   # exact-length view
    cmds = np.zeros(max(1, len(data) // 16), dtype=COMMAND.dtype)
    return gateway.walk(buf, 0, len(data), cmds, 0, 7, 3, logged_on, True, np.array(budgets, dtype=np.int64)), cmds


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.lists(st.one_of(st.sampled_from(VALID), st.binary(max_size=80)), max_size=12))
def test_walk_when_fuzzed_then_consistent_result(parts):
    data = b"".join(parts)
    (consumed, n, stop, mtype, reason), cmds = walk(data)
    assert 0 <= consumed <= len(data) and 0 <= n <= len(cmds)
    assert stop in (gateway.STOP_END, gateway.STOP_SESSION, gateway.STOP_ERROR)
    if stop == gateway.STOP_ERROR:
        assert reason in (Reject.BAD_LENGTH, Reject.UNSUPPORTED_VERSION, Reject.UNKNOWN_MSG_TYPE)
    # whatever was consumed decodes as whole valid frames with the Python codec
    frames, used = wire.decode(data[:consumed], client_types_only=True)
    assert used == consumed
    assert n == sum(t in (MsgType.NEW_ORDER, MsgType.CANCEL, MsgType.AMEND, MsgType.MASS_CANCEL) for t, _, _ in frames)
    assert all(c["account"] == 7 and c["session"] == 3 for c in cmds[:n])


def test_walk_when_not_logged_on_then_only_logon_passes():
    (consumed, n, stop, mtype, reason), _ = walk(VALID[0], logged_on=False)
    assert (consumed, n, stop, reason) == (0, 0, gateway.STOP_ERROR, Reject.NOT_LOGGED_ON)


def test_walk_when_budget_spent_then_stops_in_front_of_the_frame():
    (consumed, n, stop, mtype, _), _ = walk(VALID[0] * 3, budgets=(2, 10, 10))
    assert (consumed, n, stop, mtype) == (2 * len(VALID[0]), 2, gateway.STOP_SESSION, MsgType.NEW_ORDER)
