"""Recovery through snapshots: a graceful stop snapshots and the next start replays nothing;
periodic forked snapshots plus the journal tail after kill -9; a damaged snapshot falls back."""
import time

from protocol import wire
from protocol.codes import Side
from protocol.wire import MsgType
from tests.test_server_session import Raw


def trade(srv, first_clid, n, account=1):
    a = Raw(srv.port)
    a.logon(account, next_seq=10**9)
    for start in range(first_clid, first_clid + n, 50):   # acked 50 at a time: several batches, so several
        end = min(start + 50, first_clid + n)               # periodic snapshots (one read could take all n)
        for clid in range(start, end):
            side = Side.SELL if clid % 2 else Side.BUY
            a.order(clid, side, 1 + clid % 4, 100 + clid % 9 if side == Side.SELL else 99 - clid % 6)
        for _ in range(end - start):
            a.until_any((MsgType.ACCEPTED, MsgType.REJECTED))
    return a


def book_state(srv):
    c = Raw(srv.port)
    t, body, _ = c.logon(2, next_seq=10**9)
    c.send(wire.encode(MsgType.BOOK_DEPTH_REQUEST, request_id=1, symbol=1, levels=50))
    depth = [(int(e["side"]), int(e["price"]), int(e["qty"]), int(e["orders"])) for e in c.until(MsgType.BOOK_DEPTH)[2]]
    return depth, int(body["next_seq"])


def test_restart_when_stopped_gracefully_then_snapshot_loaded_and_nothing_replayed(server_factory):
    srv = server_factory().start()
    trade(srv, 1, 300)
    before = book_state(srv)
    assert srv.terminate() == 0
    srv.start()
    assert "loaded snapshot" in srv.output()
    assert "recovered: 0 commands replayed" in srv.output()
    assert book_state(srv)[0] == before[0]
    a = Raw(srv.port)
    t, body, _ = a.logon(1, next_seq=10**9)
    assert int(body["next_client_order_id"]) == 301


def test_restart_when_killed_after_periodic_snapshots_then_snapshot_plus_tail(server_factory):
    srv = server_factory(journal_extra="snapshot_every = 100").start()
    trade(srv, 1, 450)
    before = book_state(srv)
    srv.kill9()
    snaps = sorted((srv.dir / "journal" / "snapshots").glob("snapshot-*.snap"))
    assert snaps, "no periodic snapshot was written"
    srv.start()
    out = srv.output()
    assert "loaded snapshot" in out
    assert book_state(srv)[0] == before[0]


def test_restart_when_newest_snapshot_damaged_then_older_state_plus_longer_replay(server_factory):
    srv = server_factory(journal_extra="snapshot_every = 100").start()
    trade(srv, 1, 150)
    snap_dir = srv.dir / "journal" / "snapshots"
    deadline = time.monotonic() + 20
    while not list(snap_dir.glob("snapshot-*.snap")) and time.monotonic() < deadline:
        time.sleep(0.02)                         # the periodic (forked) snapshot of the first round
    trade(srv, 151, 300)                         # so the shutdown snapshot is a second, newer one
    before = book_state(srv)
    assert srv.terminate() == 0                  # the shutdown snapshot is the newest
    snaps = sorted((srv.dir / "journal" / "snapshots").glob("snapshot-*.snap"))
    assert len(snaps) >= 2
    data = bytearray(snaps[-1].read_bytes())
    data[len(data) // 2] ^= 0xFF
    snaps[-1].write_bytes(bytes(data))
    srv.start()
    out = srv.output()
    assert "skipping damaged snapshot" in out
    assert book_state(srv)[0] == before[0]
