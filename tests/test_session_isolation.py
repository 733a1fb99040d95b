"""One client must not stall everyone (issue 18, items 5, 6 and 18), over raw sockets against a
real server subprocess: a session frame or query never makes the event loop wait for a journal
commit, and its answer keeps wire order; unauthenticated sockets from a few addresses cannot
take every logon slot; a slow consumer is told why it is cut off."""
import resource
import shutil
import socket
import subprocess
import time

import pytest

from protocol import wire
from protocol.codes import Reject, Side
from protocol.wire import MdFlag, MsgType
from tests.server_proc import SECRETS
from tests.test_server_session import Raw
from tests.test_tls import cert, client_context, tls_server   # noqa: F401 (cert: a fixture)

NO_SNAPSHOTS = "snapshot_every = 0"


class HeldCommits:
    """strace attached to the server, delaying every fdatasync (the journal commit's) by
    `delay_s`: a commit stays in flight that long. Skips where strace cannot attach."""

    def __init__(self, srv, delay_s):
        if shutil.which("strace") is None:
            pytest.skip("strace not installed: cannot hold a commit (apt-get install strace)")
        self.log = srv.dir / "strace.log"
        self.proc = subprocess.Popen(["strace", "-f", "-qq", "-p", str(srv.proc.pid), "-e", "trace=fdatasync",
                                      "-e", f"inject=fdatasync:delay_exit={int(delay_s * 1e6)}",
                                      "-o", str(self.log)], stderr=subprocess.PIPE)

    def wait_attached(self, trader, clid):
        """Orders from `trader` until a commit shows in strace's log (it is attached)."""
        deadline = time.monotonic() + 20
        while not (self.log.exists() and self.log.stat().st_size):
            if self.proc.poll() is not None:
                pytest.skip(f"strace cannot attach here: {self.proc.stderr.read().decode().strip()}")
            assert time.monotonic() < deadline, "strace never saw a commit"
            clid += 1
            trader.order(clid, Side.SELL, 1, 5000 + clid)
            trader.until(MsgType.ACCEPTED, timeout=20)
        return clid

    def stop(self):
        self.proc.terminate()                    # detaches: commits run at full speed again
        self.proc.wait(10)


def nothing_received(c):
    """True when nothing has arrived on c's socket yet (a non-blocking peek)."""
    c.sock.setblocking(False)
    try:
        return not c.buf and not c.sock.recv(1 << 16, 2)       # 2: MSG_PEEK
    except BlockingIOError:
        return True
    finally:
        c.sock.setblocking(True)


def status_request(rid, clid):
    return wire.encode(MsgType.ORDER_STATUS_REQUEST, request_id=rid, client_order_id=clid)


# -- item 5: session frames and queries never wait for a commit on the loop --

@pytest.mark.parametrize("follow", ["heartbeat", "order_status"])
def test_session_frame_when_commit_in_flight_then_loop_serves_others_meanwhile(server_factory, follow):
    """An order, then a heartbeat (or an ORDER_STATUS for it): while the order's commit is held
    by a slow fdatasync, another connection is answered at once. Before the fix the frame after
    the order made the loop wait for the commit (flush()), so the other connection's answer came
    only after the order's ACCEPTED had been written."""
    srv = server_factory(journal_extra=NO_SNAPSHOTS).start()
    noisy = Raw(srv.port)
    assert noisy.logon(1, heartbeat_ms=60000)[0] == MsgType.LOGON_ACCEPTED     # no server heartbeats
    held = HeldCommits(srv, delay_s=3.0)
    try:
        clid = held.wait_attached(noisy, 0) + 1
        second = wire.encode(MsgType.HEARTBEAT) if follow == "heartbeat" else status_request(77, clid)
        noisy.send(wire.encode(MsgType.NEW_ORDER, client_order_id=clid, symbol=1, side=Side.SELL, order_type=1,
                               tif=1, stp=1, price=9000, qty=1) + second)
        time.sleep(0.3)                          # the server has read both frames; the commit is held
        other = Raw(srv.port)                    # a frame before logon: answered by the loop alone
        other.order(1, Side.BUY, 1, 100)
        t, body, _ = other.next(timeout=20)
        assert (t, int(body["reason"])) == (MsgType.PROTOCOL_ERROR, Reject.NOT_LOGGED_ON)
        assert nothing_received(noisy), "the loop waited for the held commit before answering"
        t, body, _ = noisy.next(timeout=20)      # then, once the commit returns, in wire order
        assert (t, int(body["client_order_id"])) == (MsgType.ACCEPTED, clid)
        if follow == "order_status":
            t, body, ents = noisy.next(timeout=20)
            assert (t, int(body["request_id"]), int(body["status"])) == (MsgType.ORDER_STATUS, 77, 0)
            assert [int(e["client_order_id"]) for e in ents] == [clid]
    finally:
        held.stop()


def test_recent_trades_when_batch_open_behind_held_commit_then_answered_at_its_seal_in_wire_order(server_factory):
    """A sell's commit is held; meanwhile a buy crossing it and a RECENT_TRADES_REQUEST arrive from
    another session: the buy goes into the open batch and only that connection waits for the batch
    to be sealed; the loop answers others meanwhile; the answer follows the buy's reports and shows
    its trade. Before, the request made the loop wait for both commits."""
    srv = server_factory(journal_extra=NO_SNAPSHOTS).start()
    seller, buyer = Raw(srv.port), Raw(srv.port)
    assert seller.logon(2, heartbeat_ms=60000)[0] == buyer.logon(1, heartbeat_ms=60000)[0] == MsgType.LOGON_ACCEPTED
    held = HeldCommits(srv, delay_s=3.0)
    try:
        clid = held.wait_attached(seller, 0) + 1
        seller.order(clid, Side.SELL, 1, 9000)
        time.sleep(0.3)                          # its commit is held
        buyer.send(wire.encode(MsgType.NEW_ORDER, client_order_id=1, symbol=1, side=Side.BUY, order_type=1, tif=1,
                               stp=1, price=9000, qty=1)
                   + wire.encode(MsgType.RECENT_TRADES_REQUEST, request_id=5, symbol=1, count=10))
        time.sleep(0.3)
        other = Raw(srv.port)
        other.order(1, Side.BUY, 1, 100)
        t, body, _ = other.next(timeout=20)
        assert (t, int(body["reason"])) == (MsgType.PROTOCOL_ERROR, Reject.NOT_LOGGED_ON)
        assert nothing_received(buyer), "the loop waited for the held commits before answering"
        kinds = []
        while True:
            t, body, ents = buyer.next(timeout=20)
            kinds.append(t)
            if t == MsgType.RECENT_TRADES:
                break
        assert kinds == [MsgType.ACCEPTED, MsgType.FILL, MsgType.RECENT_TRADES]
        assert int(body["request_id"]) == 5 and len(ents) == 1          # the buy's trade (with a resting sell)
    finally:
        held.stop()


def test_replies_when_pipelined_with_orders_then_in_wire_order_and_after_earlier_commands(server_factory):
    """Orders, queries and heartbeats pipelined in one write while another session keeps commits
    in flight: every answer comes after the reports of the orders before it and shows them."""
    srv = server_factory(journal_extra=NO_SNAPSHOTS).start()
    a, b = Raw(srv.port), Raw(srv.port)
    assert a.logon(1)[0] == b.logon(2)[0] == MsgType.LOGON_ACCEPTED
    n = 300
    b.send(b"".join(wire.encode(MsgType.NEW_ORDER, client_order_id=i, symbol=2, side=Side.SELL, order_type=1,
                                tif=1, stp=1, price=200 * 100 + i * 100, qty=1) for i in range(1, 2 * n)))
    frames = []
    for i in range(1, n + 1):
        frames.append(wire.encode(MsgType.NEW_ORDER, client_order_id=i, symbol=1, side=Side.BUY, order_type=1,
                                  tif=1, stp=1, price=100 + i, qty=1))
        frames.append(status_request(i, i))
        if i % 3 == 0:
            frames.append(wire.encode(MsgType.HEARTBEAT))
        if i % 10 == 0:
            frames.append(wire.encode(MsgType.OPEN_ORDERS_REQUEST, request_id=100000 + i))
    a.send(b"".join(frames))
    accepted = listed = 0
    while True:
        t, body, ents = a.next(timeout=20)
        if t == MsgType.ACCEPTED:
            accepted += 1
            assert int(body["client_order_id"]) == accepted
        elif t == MsgType.ORDER_STATUS:
            assert int(body["request_id"]) == accepted          # right after its order's report
            assert [int(e["client_order_id"]) for e in ents] == [accepted]
        elif t == MsgType.OPEN_ORDERS:
            assert int(body["request_id"]) == 100000 + accepted      # (split in frames of up to MAX_FRAME)
            listed += int(body["count"])
            if not int(body["more"]):
                assert listed == accepted
                listed = 0
                if accepted == n:
                    break
        else:
            assert t == MsgType.HEARTBEAT, t


# -- item 18: a slow consumer is told why it is cut off --

def test_slow_consumer_when_cut_off_then_reads_every_report_then_logout_with_reason(server_factory):
    """A session of account 1 stops reading while another session of the account trades; once
    its unsent output passes the cap it is cut off. Reading afterwards, it finds whole reports in
    sequence, then LOGOUT (SLOW_CONSUMER), then the end of the stream. Before: a reset, no reason."""
    srv = server_factory(output_buffer_bytes=128 << 10, server_extra="socket_send_buffer_bytes = 16384").start()
    slow = Raw(srv.port, rcvbuf=4096)
    assert slow.logon(1, heartbeat_ms=60000)[0] == MsgType.LOGON_ACCEPTED
    busy = Raw(srv.port)
    assert busy.logon(1, heartbeat_ms=60000)[0] == MsgType.LOGON_ACCEPTED
    clid = 0
    deadline = time.monotonic() + 30
    while "slow consumer" not in srv.output():
        assert time.monotonic() < deadline, "never cut off"
        busy.send(b"".join(wire.encode(MsgType.NEW_ORDER, client_order_id=clid + i, symbol=1, side=Side.SELL,
                                       order_type=1, tif=3, stp=1, price=100, qty=1) for i in range(1, 501)))
        clid += 500
        want = 500 * 2 * wire.frame_size(MsgType.ACCEPTED)      # IOC without liquidity: ACCEPTED, CANCELLED
        got = bytearray()
        busy.sock.settimeout(20)
        while len(got) < want:                   # (raw bytes: decoding as it comes would be slower
            got += busy.sock.recv(want - len(got))   # than the slow consumer's 5 s to read its LOGOUT)
        frames, _ = wire.decode(bytes(got))
        assert (frames[-1][0], int(frames[-1][1]["client_order_id"])) == (MsgType.CANCELLED, clid)
    data = bytearray(slow.buf)
    slow.sock.settimeout(20)
    while True:                                  # everything up to the end of the stream, fast
        try:
            chunk = slow.sock.recv(1 << 20)
        except ConnectionResetError:             # (before the fix: a reset)
            break
        if not chunk:
            break
        data += chunk
    frames, used = wire.decode(bytes(data))
    assert used == len(data), "the stream ends inside a frame"
    reports = frames[:-1]
    assert [int(b["seq"]) for _, b, _ in reports] == list(range(1, len(reports) + 1))
    assert {t for t, _, _ in reports} <= {MsgType.ACCEPTED, MsgType.CANCELLED}
    t, body, _ = frames[-1]
    assert (t, int(body["reason"])) == (MsgType.LOGOUT, Reject.SLOW_CONSUMER)
    busy.send(wire.encode(MsgType.HEARTBEAT))    # the account's other session trades on
    busy.order(clid + 1, Side.BUY, 1, 50)
    assert busy.until(MsgType.ACCEPTED) is not None


# -- item 6: unauthenticated sockets from a few addresses cannot take every logon slot --

HOSTILE_ADDRESSES = [f"127.0.0.{i}" for i in range(2, 10)]


@pytest.fixture
def many_fds():
    """Room for a thousand sockets here and in the server (a subprocess inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 8192)
    if want < 2600:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard}: too few descriptors for 1,000 sockets")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def hostile_socket(port, address, half_logon):
    s = socket.socket()
    s.bind((address, 0))
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", port))
    if half_logon:
        try:
            s.send(Raw.logon_frame(None, 1, "wrong")[:40])      # a LOGON cut short: never completes
        except OSError:
            pass                                           # (not connected yet: then it stays idle)
    return s


def test_logon_when_thousand_idle_or_half_logon_sockets_from_other_addresses_then_succeeds(
        server_factory, many_fds):
    """1,000 sockets from 127.0.0.2..9 that never log on (idle, or half a LOGON), opened again as
    the server closes them, while accounts log on from 127.0.0.1: every logon succeeds. Before,
    the first 64 took every pending-logon slot and each logon got TOO_MANY_CONNECTIONS."""
    srv = server_factory().start()
    hostile = []
    for i in range(1000):
        hostile.append(hostile_socket(srv.port, HOSTILE_ADDRESSES[i % len(HOSTILE_ADDRESSES)], i % 2))
        if i % 100 == 99:
            time.sleep(0.05)                               # (the listen backlog)
    try:
        for n in range(20):
            for i, s in enumerate(hostile):                # the server closed some: open them again
                try:
                    closed = s.recv(1 << 12) == b""
                except BlockingIOError:
                    closed = False
                except OSError:
                    closed = True
                if closed:
                    s.close()
                    hostile[i] = hostile_socket(srv.port, HOSTILE_ADDRESSES[i % len(HOSTILE_ADDRESSES)], i % 2)
            c = Raw(srv.port)
            t, body, _ = c.logon(1 + n % 4)
            assert t == MsgType.LOGON_ACCEPTED, (n, t, int(body["reason"]) if "reason" in body.dtype.names else 0)
            c.close()
    finally:
        for s in hostile:
            s.close()


def test_pending_logons_when_half_the_slots_taken_then_shorter_timeout_and_cap_per_address(server_factory):
    """With logon_timeout_s = 60 s: of 40 idle sockets (5 from each of 8 addresses, over half of
    the 64 slots) the oldest are closed after logon_timeout_busy_s (1 s) until under half are
    taken; a 9th from one address is refused at once (TOO_MANY_CONNECTIONS) while another
    address still connects."""
    srv = server_factory()
    srv.config.write_text(srv.config.read_text().replace("logon_timeout_s = 2.0", "logon_timeout_s = 60.0"))
    srv.start()
    idle = [hostile_socket(srv.port, HOSTILE_ADDRESSES[i % 8], False) for i in range(40)]
    closed = set()
    deadline = time.monotonic() + 15                       # well before 60 s
    while len(closed) < 40 - 31:
        assert time.monotonic() < deadline, f"only {len(closed)} closed"
        for i, s in enumerate(idle):
            try:
                if i not in closed and s.recv(1 << 12) == b"":
                    closed.add(i)
            except BlockingIOError:
                pass
        time.sleep(0.05)
    for s in idle:
        s.close()
    same = [hostile_socket(srv.port, "127.0.0.2", False) for _ in range(8)]
    ninth = Raw.__new__(Raw)
    ninth.sock, ninth.buf = hostile_socket(srv.port, "127.0.0.2", False), b""
    ninth.sock.setblocking(True)
    t, body, _ = ninth.next(timeout=10)
    assert (t, int(body["reason"])) == (MsgType.PROTOCOL_ERROR, Reject.TOO_MANY_CONNECTIONS)
    assert Raw(srv.port).logon(1)[0] == MsgType.LOGON_ACCEPTED
    for s in same:
        s.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command line tool (a test certificate)")
def test_tls_logon_when_hundreds_of_stalled_handshakes_from_other_addresses_then_succeeds(server_factory, cert):
    """Over TLS the slots are taken before logon, by handshakes in progress: 300 sockets from
    127.0.0.2..9 that never start theirs; TLS logons from 127.0.0.1 still succeed."""
    srv = tls_server(server_factory, cert, "tls_handshakes_per_s = 1e6\ntls_handshake_burst = 1e6")
    hostile = []
    try:
        for i in range(300):
            hostile.append(hostile_socket(srv.port, HOSTILE_ADDRESSES[i % len(HOSTILE_ADDRESSES)], False))
            if i % 100 == 99:
                time.sleep(0.05)
        time.sleep(0.5)
        ctx = client_context(cert[0])
        for n in range(5):
            raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(Raw.logon_frame(None, 1 + n % 4, SECRETS[1 + n % 4]))
                data = b""
                while len(data) < 8:
                    chunk = s.recv(4096)
                    assert chunk, "closed before an answer"
                    data += chunk
                assert data[2] == MsgType.LOGON_ACCEPTED, data[:16]
    finally:
        for s in hostile:
            s.close()


def test_replies_when_commit_fails_then_refusals_and_answers_in_wire_order(server_factory):
    """An order, a query, an order, a query in one write while every fdatasync fails (strace):
    the refusals and the answers (JOURNAL_UNAVAILABLE: what they would show was never committed)
    come in the order of the frames. Before, the answers went out at once and the first order's
    refusal only after the rebuild, behind them."""
    if shutil.which("strace") is None:
        pytest.skip("strace not installed: cannot inject an fdatasync error (apt-get install strace)")
    srv = server_factory(journal_extra="snapshot_every = 0\nretry_interval_ms = 100").start()
    c = Raw(srv.port)
    assert c.logon(1, heartbeat_ms=60000)[0] == MsgType.LOGON_ACCEPTED
    log = srv.dir / "strace.log"
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-p", str(srv.proc.pid), "-e", "trace=fdatasync",
                               "-e", "inject=fdatasync:error=EIO", "-o", str(log)], stderr=subprocess.PIPE)
    try:
        clid = 0
        deadline = time.monotonic() + 20
        while True:
            assert time.monotonic() < deadline, "no commit failed under injection"
            if tracer.poll() is not None:
                pytest.skip(f"strace cannot attach here: {tracer.stderr.read().decode().strip()}")
            clid += 2
            c.send(wire.encode(MsgType.NEW_ORDER, client_order_id=clid - 1, symbol=1, side=Side.SELL, order_type=1,
                               tif=1, stp=1, price=5000 + clid, qty=1) + status_request(clid - 1, clid - 1)
                   + wire.encode(MsgType.NEW_ORDER, client_order_id=clid, symbol=1, side=Side.SELL, order_type=1,
                                 tif=1, stp=1, price=5000 + clid, qty=1)
                   + wire.encode(MsgType.OPEN_ORDERS_REQUEST, request_id=clid))
            got = []
            while len(got) < 4:
                t, body, _ = c.next(timeout=20)
                if t == MsgType.OPEN_ORDERS and int(body["more"]):
                    continue
                got.append((t, body))
            kinds = [t for t, _ in got]
            assert kinds[1] == MsgType.ORDER_STATUS and kinds[3] == MsgType.OPEN_ORDERS, kinds
            assert kinds[0] in (MsgType.ACCEPTED, MsgType.REJECTED) and kinds[2] in (MsgType.ACCEPTED, MsgType.REJECTED)
            assert [int(got[i][1]["client_order_id"]) for i in (0, 2)] == [clid - 1, clid]
            if kinds[0] == MsgType.REJECTED:
                break
        unavailable = int(Reject.JOURNAL_UNAVAILABLE)
        assert int(got[0][1]["reason"]) == unavailable
        # an answer shows nothing refused: JOURNAL_UNAVAILABLE (held behind the failed commit), or
        # once the engine is rebuilt, the state without the refused orders
        assert int(got[1][1]["status"]) in (unavailable, Reject.UNKNOWN_ORDER)
    finally:
        tracer.terminate()
        tracer.wait(10)


def test_subscribe_when_batch_open_behind_held_commit_then_no_update_before_its_answer_and_image(server_factory):
    """A watched symbol changes in the batch in flight (its commit held) and again in the open batch;
    then a SUBSCRIBE arrives, answered when the open batch is sealed, i.e. when the first commit
    returns, while the update of the first batch is published just then: the new subscriber's first
    frames are still SUBSCRIPTIONS, then the image (TOP_OF_BOOK, DEPTH), never that older update."""
    srv = server_factory(journal_extra=NO_SNAPSHOTS).start()
    watcher, trader, new = Raw(srv.port), Raw(srv.port), Raw(srv.port)
    for c, acct in ((watcher, 1), (trader, 2), (new, 3)):
        assert c.logon(acct, heartbeat_ms=60000)[0] == MsgType.LOGON_ACCEPTED
    flags = int(MdFlag.TOP_OF_BOOK | MdFlag.DEPTH | MdFlag.TRADES)
    watcher.send(wire.encode(MsgType.SUBSCRIBE, request_id=1, symbol=1, flags=flags, levels=5))
    assert watcher.until(MsgType.SUBSCRIPTIONS) is not None
    held = HeldCommits(srv, delay_s=1.5)
    try:
        clid = held.wait_attached(trader, 0)
        trader.order(clid + 1, Side.BUY, 1, 3000)          # the batch in flight: changes symbol 1
        time.sleep(0.3)
        trader.order(clid + 2, Side.BUY, 1, 3001)          # the open batch
        time.sleep(0.1)
        new.send(wire.encode(MsgType.SUBSCRIBE, request_id=7, symbol=1, flags=flags, levels=5))
        kinds = []
        while len(kinds) < 3:
            t, body, _ = new.next(timeout=20)
            if t in (MsgType.SUBSCRIPTIONS, MsgType.TOP_OF_BOOK, MsgType.DEPTH, MsgType.TRADES, MsgType.TRADE_SUMMARY):
                kinds.append(t)
        assert kinds == [MsgType.SUBSCRIPTIONS, MsgType.TOP_OF_BOOK, MsgType.DEPTH], kinds
    finally:
        held.stop()
