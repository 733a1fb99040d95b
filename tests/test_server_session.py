"""The server over raw bytes: logon, bad input, isolation, cancel on disconnect, slow consumers,
crash recovery (kill -9), graceful shutdown. A real server subprocess on 127.0.0.1."""
import hashlib
import hmac
import os
import socket
import time

import pytest

from protocol import wire
from protocol.codes import CancelReason, Reject, Side
from protocol.wire import MsgType
from tests.server_proc import SECRETS, ServerProc


def key(secret):
    return hmac.new(secret.encode(), b"trading-engine signing key", hashlib.sha256).digest()


# How long Raw waits for a frame. Generous: no test here waits for a frame that should not come, and at load
# 6-8 on this 2-core machine (other engineers' builds, NATS clusters) a sync commit took longer than 5 s.
WAIT_S = 20.0


class Raw:
    """A hand-driven client: frames in, frames out."""

    def __init__(self, port, rcvbuf=None):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(WAIT_S)
        self.buf = b""

    def logon_frame(self, account, secret, ts=None, nonce=None, flags=0, next_seq=1, heartbeat_ms=1000):
        f = bytearray(wire.encode(MsgType.LOGON, account=account, heartbeat_ms=heartbeat_ms, next_seq=next_seq,
                                  timestamp_ns=ts if ts is not None else time.time_ns(), flags=flags,
                                  proto_version=wire.SCHEMA_VERSION, nonce=nonce if nonce is not None else
                                  int.from_bytes(os.urandom(4), "little")))
        f[40:72] = hmac.new(key(secret), bytes(f[8:40]), hashlib.sha256).digest()
        return bytes(f)

    def logon(self, account, **kw):
        self.send(self.logon_frame(account, SECRETS[account], **kw))
        return self.next()

    def send(self, data):
        self.sock.sendall(data)

    def next(self, timeout=WAIT_S):
        """The next frame (type, body, entries); None when the server closed the connection."""
        deadline = time.monotonic() + timeout
        while True:
            frames, used = wire.decode(self.buf)
            if frames:
                t, body, ents = frames[0]
                self.buf = self.buf[wire.frame_size(t, 0 if ents is None else len(ents)):]
                return t, body, ents
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(1 << 16)
            except (socket.timeout, ConnectionResetError):
                data = b"" if time.monotonic() < deadline else None
                if data is None:
                    raise TimeoutError("no frame")
            if not data:
                return None
            self.buf += data

    def until(self, msg_type, timeout=WAIT_S):
        return self.until_any((msg_type,), timeout)

    def until_any(self, msg_types, timeout=WAIT_S):
        while True:
            f = self.next(timeout)
            if f is None or f[0] in msg_types:
                return f

    def order(self, clid, side, qty, price, symbol=1, **kw):
        self.send(wire.encode(MsgType.NEW_ORDER, client_order_id=clid, symbol=symbol, side=side, order_type=1,
                              tif=kw.pop("tif", 1), stp=kw.pop("stp", 1), price=price, qty=qty, **kw))

    def close(self):
        self.sock.close()


def test_logon_when_signed_then_accepted_with_next_ids(server):
    c = Raw(server.port)
    t, body, _ = c.logon(1)
    assert t == MsgType.LOGON_ACCEPTED
    assert (int(body["next_seq"]), int(body["next_client_order_id"])) == (1, 1) and int(body["session_id"]) > 0


@pytest.mark.parametrize("account,secret", [(1, "wrong"), (9, "whatever")])
def test_logon_when_bad_signature_or_unknown_account_then_same_rejection(server, account, secret):
    c = Raw(server.port)
    c.send(c.logon_frame(account, secret))
    t, body, _ = c.next()
    assert (t, int(body["reason"])) == (MsgType.LOGON_REJECTED, Reject.AUTH_FAILED)
    assert c.next() is None


def test_logon_when_stale_or_replayed_then_refused(server):
    c = Raw(server.port)
    t, body, _ = c.logon(1, ts=time.time_ns() - 120 * 10**9)
    assert (t, int(body["reason"])) == (MsgType.LOGON_REJECTED, Reject.STALE_TIMESTAMP)
    frame = Raw(server.port).logon_frame(2, SECRETS[2])
    first = Raw(server.port)
    first.send(frame)
    assert first.next()[0] == MsgType.LOGON_ACCEPTED
    again = Raw(server.port)
    again.send(frame)
    t, body, _ = again.next()
    assert (t, int(body["reason"])) == (MsgType.LOGON_REJECTED, Reject.REPLAYED_LOGON)


def test_logon_when_failures_repeat_then_locked_out_even_with_right_secret(server):
    for _ in range(3):
        c = Raw(server.port)
        c.send(c.logon_frame(3, "wrong"))
        assert int(c.next()[1]["reason"]) == Reject.AUTH_FAILED
    t, body, _ = Raw(server.port).logon(3)
    assert (t, int(body["reason"])) == (MsgType.LOGON_REJECTED, Reject.LOCKED_OUT)


def test_order_when_sent_before_logon_then_protocol_error_and_close(server):
    c = Raw(server.port)
    c.order(1, Side.BUY, 1, 100)
    t, body, _ = c.next()
    assert (t, int(body["reason"])) == (MsgType.PROTOCOL_ERROR, Reject.NOT_LOGGED_ON)
    assert c.next() is None


@pytest.mark.parametrize("bad", [
    b"\x04\x00\x03\x01\x00\x00\x00\x00",                               # length below the header
    (5000).to_bytes(2, "little") + b"\x0a\x01" + bytes(4),              # above MAX_FRAME
    wire.encode(MsgType.HEARTBEAT)[:2] + b"\xc8" + wire.encode(MsgType.HEARTBEAT)[3:],   # unknown type
    (32).to_bytes(2, "little") + b"\x0a\x01" + bytes(28),               # NEW_ORDER of the wrong size
    wire.encode(MsgType.FILL),                                          # a server message from a client
    os.urandom(64),                                                     # garbage
])
def test_malformed_frame_when_received_then_only_that_connection_closes(server, bad):
    good = Raw(server.port)
    assert good.logon(1)[0] == MsgType.LOGON_ACCEPTED
    evil = Raw(server.port)
    assert evil.logon(2)[0] == MsgType.LOGON_ACCEPTED
    evil.send(bad)
    f = evil.next()
    assert f is None or f[0] == MsgType.PROTOCOL_ERROR
    if f is not None:
        assert evil.next() is None
    good.order(1, Side.SELL, 5, 100)
    t, body, _ = good.until(MsgType.ACCEPTED)
    assert int(body["seq"]) == 1 and int(body["client_order_id"]) == 1


def test_cancel_when_other_accounts_order_then_unknown_order(server):
    a, b = Raw(server.port), Raw(server.port)
    a.logon(1)
    b.logon(2)
    a.order(1, Side.SELL, 5, 100)
    oid = int(a.until(MsgType.ACCEPTED)[1]["order_id"])
    b.send(wire.encode(MsgType.CANCEL, order_id=oid))
    t, body, _ = b.until(MsgType.REJECTED)
    assert int(body["reason"]) == Reject.UNKNOWN_ORDER
    a.send(wire.encode(MsgType.OPEN_ORDERS_REQUEST, request_id=7))
    t, body, ents = a.until(MsgType.OPEN_ORDERS)
    assert [int(e["order_id"]) for e in ents] == [oid]


def test_fill_when_orders_cross_then_both_accounts_get_sequenced_reports(server):
    a, b = Raw(server.port), Raw(server.port)
    a.logon(1)
    b.logon(2)
    a.order(1, Side.SELL, 5, 100)
    a.until(MsgType.ACCEPTED)
    b.order(1, Side.BUY, 3, 101)
    t, body, _ = a.until(MsgType.FILL)
    assert (int(body["seq"]), int(body["qty"]), int(body["leaves"]), int(body["liquidity"])) == \
        (2, 3, 2, wire.Liquidity.MAKER)
    b.until(MsgType.ACCEPTED)
    t, body, _ = b.until(MsgType.FILL)
    assert (int(body["seq"]), int(body["price"]), int(body["liquidity"])) == (2, 100, wire.Liquidity.TAKER)


def test_disconnect_when_cancel_on_disconnect_then_orders_cancelled(server):
    a = Raw(server.port)
    a.logon(1, flags=wire.LogonFlag.CANCEL_ON_DISCONNECT)
    a.order(1, Side.SELL, 5, 100)
    a.until(MsgType.ACCEPTED)
    a.close()
    watcher = Raw(server.port)
    watcher.logon(2)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        watcher.send(wire.encode(MsgType.BOOK_DEPTH_REQUEST, request_id=1, symbol=1, levels=5))
        ents = watcher.until(MsgType.BOOK_DEPTH)[2]
        if len(ents) == 0:
            break
        time.sleep(0.05)
    assert len(ents) == 0
    again = Raw(server.port)
    t, body, _ = again.logon(1, next_seq=2)                  # the replay shows why
    t, body, _ = again.until(MsgType.CANCELLED)
    assert int(body["reason"]) == CancelReason.MASS_CANCEL


def test_reconnect_when_reports_missed_then_gap_replayed(server):
    a = Raw(server.port)
    a.logon(1)
    for clid in range(1, 6):
        a.order(clid, Side.SELL, 1, 100 + clid)
    for _ in range(5):
        a.until(MsgType.ACCEPTED)
    a.close()
    b = Raw(server.port)
    t, body, _ = b.logon(1, next_seq=3)
    assert (int(body["next_seq"]), int(body["next_client_order_id"])) == (6, 6)
    seqs = [int(b.until(MsgType.ACCEPTED)[1]["seq"]) for _ in range(3)]
    assert seqs == [3, 4, 5]


def test_slow_consumer_when_not_reading_then_disconnected_and_others_trade(server_factory):
    srv = server_factory(output_buffer_bytes=256 << 10).start()
    slow = Raw(srv.port, rcvbuf=4096)
    slow.logon(1)
    frames = b"".join(wire.encode(MsgType.NEW_ORDER, client_order_id=i, symbol=1, side=Side.SELL, order_type=1,
                                  tif=3, stp=1, price=100, qty=1) for i in range(1, 60001))   # IOC: no liquidity
    slow.sock.settimeout(20)
    try:
        slow.sock.sendall(frames)
    except (BrokenPipeError, ConnectionResetError):
        pass
    other = Raw(srv.port)
    assert other.logon(2)[0] == MsgType.LOGON_ACCEPTED
    other.order(1, Side.BUY, 1, 50)
    assert other.until(MsgType.ACCEPTED) is not None
    assert "slow consumer" in srv.output()


def test_kill9_when_orders_acknowledged_then_restart_recovers_them(server_factory):
    srv = server_factory().start()
    a = Raw(srv.port)
    a.logon(1)
    acked = []
    for clid in range(1, 201):
        a.order(clid, Side.SELL if clid % 2 else Side.BUY, 1 + clid % 3, 100 + clid % 7 if clid % 2 else 99 - clid % 5)
    while len(acked) < 200:
        t, body, _ = a.next()
        if t in (MsgType.ACCEPTED, MsgType.REJECTED):
            acked.append(int(body["client_order_id"]))
    a.send(wire.encode(MsgType.OPEN_ORDERS_REQUEST, request_id=1))
    before = sorted((int(e["order_id"]), int(e["leaves"])) for e in a.until(MsgType.OPEN_ORDERS)[2])
    srv.kill9()
    srv.start()
    b = Raw(srv.port)
    t, body, _ = b.logon(1, next_seq=10**6)
    assert (int(body["next_client_order_id"]), int(body["next_seq"])) == (201, 201)
    b.send(wire.encode(MsgType.OPEN_ORDERS_REQUEST, request_id=1))
    after = sorted((int(e["order_id"]), int(e["leaves"])) for e in b.until(MsgType.OPEN_ORDERS)[2])
    assert after == before and len(after) > 0
    assert "recovered" in srv.output()


def test_sigterm_when_sessions_open_then_end_of_session_and_exit_0(server_factory):
    srv = server_factory().start()
    a = Raw(srv.port)
    a.logon(1)
    a.order(1, Side.SELL, 1, 100)
    a.until(MsgType.ACCEPTED)
    assert srv.terminate() == 0
    t, body, _ = a.until(MsgType.END_OF_SESSION)
    assert int(body["last_seq"]) == 1


THROTTLE = "orders_per_s = 1.0\norders_burst = 10\ncancels_per_s = 1.0\ncancels_burst = 40\n" \
           "logout_per_s = 1.0\nlogout_burst = 100"


def test_throttle_when_burst_exceeded_then_throttled_but_cancels_pass(server_factory):
    srv = server_factory(server_extra=THROTTLE).start()
    a = Raw(srv.port)
    a.logon(1)
    a.send(b"".join(wire.encode(MsgType.NEW_ORDER, client_order_id=i, symbol=1, side=Side.SELL, order_type=1,
                                tif=1, stp=1, price=100 + i, qty=1) for i in range(1, 31)))
    got = [a.until_any((MsgType.ACCEPTED, MsgType.REJECTED)) for _ in range(30)]
    accepted = [int(b["order_id"]) for t, b, _ in got if t == MsgType.ACCEPTED]
    throttled = [(int(b["seq"]), int(b["reason"])) for t, b, _ in got if t == MsgType.REJECTED]
    assert len(accepted) == 10 and throttled == [(0, Reject.THROTTLED)] * 20      # not sequenced
    echoed = [tuple(int(b[f]) for f in ("client_order_id", "symbol", "side", "price", "qty"))
              for t, b, _ in got if t == MsgType.REJECTED]
    assert echoed == [(i, 1, Side.SELL, 100 + i, 1) for i in range(11, 31)]      # what was sent
    a.send(b"".join(wire.encode(MsgType.CANCEL, order_id=o) for o in accepted))   # their own budget
    assert [a.until(MsgType.CANCELLED)[0] for _ in accepted] == [MsgType.CANCELLED] * 10


def test_throttle_when_second_tier_exceeded_then_logged_out_and_orders_cancelled(server_factory):
    srv = server_factory(server_extra=THROTTLE).start()
    a = Raw(srv.port)
    a.logon(1, flags=wire.LogonFlag.CANCEL_ON_DISCONNECT)
    a.order(1, Side.SELL, 1, 150)
    a.until(MsgType.ACCEPTED)
    a.send(wire.encode(MsgType.HEARTBEAT) * 150)
    t, body, _ = a.until(MsgType.LOGOUT)
    assert int(body["reason"]) == Reject.RATE_LIMIT_LOGOUT
    b = Raw(srv.port)
    b.logon(2)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        b.send(wire.encode(MsgType.BOOK_DEPTH_REQUEST, request_id=1, symbol=1, levels=5))
        if len(b.until(MsgType.BOOK_DEPTH)[2]) == 0:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("orders of the logged-out session were not cancelled")


def test_idle_session_when_silent_then_heartbeats_then_timeout_logout(server_factory):
    srv = server_factory(heartbeat_ms=100).start()
    a = Raw(srv.port)
    t, body, _ = a.logon(1, heartbeat_ms=100)
    assert int(body["heartbeat_ms"]) == 100
    kinds = []
    while True:                                  # the client stays silent
        f = a.next(timeout=5)
        if f is None:
            break
        kinds.append((f[0], int(f[1]["reason"]) if f[0] == MsgType.LOGOUT else 0))
    assert kinds.count((MsgType.HEARTBEAT, 0)) >= 1
    assert kinds[-1] == (MsgType.LOGOUT, Reject.HEARTBEAT_TIMEOUT)


def test_unauthenticated_connections_when_over_cap_then_refused_and_idle_ones_closed(server_factory):
    srv = server_factory(server_extra="max_pending_logons = 2").start()
    idle = [Raw(srv.port), Raw(srv.port)]
    time.sleep(0.2)
    third = Raw(srv.port)
    t, body, _ = third.next()
    assert (t, int(body["reason"])) == (MsgType.PROTOCOL_ERROR, Reject.TOO_MANY_CONNECTIONS)
    for c in idle:                               # closed after logon_timeout_s (2 s) without a logon
        assert c.next(timeout=5) is None
    assert Raw(srv.port).logon(1)[0] == MsgType.LOGON_ACCEPTED     # the slots are free again
