"""Gap replay from the journal: a client that asks for reports older than its account's ring
(or than the restart) gets them rebuilt from the journal, byte for byte what it saw live, with
the same per-account sequence numbers, then the live stream without a gap or a double."""
import random

import numpy as np

from engine.server import SeqIndex
from protocol import wire
from protocol.codes import Side
from protocol.wire import MsgType
from tests.test_server_session import Raw

REPORTS = {MsgType.ACCEPTED, MsgType.REJECTED, MsgType.FILL, MsgType.CANCELLED, MsgType.REPLACED,
           MsgType.TRIGGERED, MsgType.RESTATED, MsgType.MASS_CANCEL_DONE, MsgType.BALANCE, MsgType.ACCOUNT_STATE}


class Tap(Raw):
    """Raw frames as bytes: every sequenced execution report kept exactly as received."""

    def __init__(self, port):
        super().__init__(port)
        self.reports = []

    def pump(self, until_type=None, until_seq=None, timeout=10.0):
        while True:
            f = self.next(timeout)
            assert f is not None, "server closed the connection"
            t, body, ents = f
            if t in REPORTS and int(body["seq"]):
                self.reports.append(wire.encode(t, **{k: int(body[k]) for k in body.dtype.names
                                                      if not k.startswith("_")}))
                if until_seq is not None and int(body["seq"]) >= until_seq:
                    return
            if t == until_type:
                return

    def sync(self):
        """Read up to a query's answer: every report of earlier commands is in by then."""
        self.send(wire.encode(MsgType.OPEN_ORDERS_REQUEST, request_id=1))
        self.pump(until_type=MsgType.OPEN_ORDERS)


def flow(srv, taps, rng, rounds, clids):
    """Rounds of resting orders and crossing orders between two accounts: accepts, maker and
    taker fills, cancels."""
    for _ in range(rounds):
        for acct, tap in taps.items():
            for _ in range(rng.randint(3, 12)):
                clids[acct] += 1
                side = rng.choice((Side.BUY, Side.SELL))
                price = rng.randint(95, 105)
                tap.order(clids[acct], side, rng.randint(1, 4), price)
            if rng.random() < 0.5:
                tap.send(wire.encode(MsgType.MASS_CANCEL, symbol=1))
        for _ in range(2):      # twice: the second pass catches reports caused by the other account
            for tap in taps.values():
                tap.sync()


def test_reconnect_after_kill9_when_next_seq_1_then_every_report_byte_identical(server_factory):
    srv = server_factory(server_extra="replay_ring = 4\nreplay_index_every = 16",
                         journal_extra="snapshot_every = 40").start()
    rng = random.Random(7)
    taps = {1: Tap(srv.port), 2: Tap(srv.port)}
    for acct, tap in taps.items():
        assert tap.logon(acct)[0] == MsgType.LOGON_ACCEPTED
    clids = {1: 0, 2: 0}
    flow(srv, taps, rng, 12, clids)
    live = {acct: tap.reports for acct, tap in taps.items()}
    assert all(len(r) > 60 for r in live.values())
    # while the server runs: the ring holds 4 reports, the rest comes from the journal
    late = Tap(srv.port)
    t, body, _ = late.logon(1, next_seq=1)
    late.pump(until_seq=len(live[1]))
    assert late.reports == live[1]
    srv.kill9()
    assert list((srv.dir / "journal" / "snapshots").glob("*.snap")), "no snapshot: the test needs one"
    srv.start()
    assert "loaded snapshot" in srv.output()
    for acct in (1, 2):
        again = Tap(srv.port)
        t, body, _ = again.logon(acct, next_seq=1)
        assert int(body["next_seq"]) == len(live[acct]) + 1          # the sequence survived the restart
        again.pump(until_seq=len(live[acct]))
        assert again.reports == live[acct], f"account {acct}: replayed reports differ from the live ones"
        taps[acct] = again
    mid = Tap(srv.port)                                               # from the middle, not only from 1
    mid.logon(2, next_seq=len(live[2]) // 2)
    mid.pump(until_seq=len(live[2]))
    assert mid.reports == live[2][len(live[2]) // 2 - 1:]
    # and the replayed sessions go on live, numbered on from there
    flow(srv, taps, rng, 2, clids)
    for acct, tap in taps.items():
        seqs = [int.from_bytes(r[8:16], "little") for r in tap.reports]
        assert seqs == list(range(1, len(seqs) + 1))


def test_seq_index_when_full_then_thinned_and_finds_a_row_at_or_before():
    idx = SeqIndex(3, every=2, cap=4)
    seqs = np.ones(3, dtype=np.int64)
    noted = []
    for cmd in range(1, 200, 3):
        if cmd - idx.last >= idx.every:
            noted.append((cmd, int(seqs[1])))
        idx.note(cmd, seqs)
        seqs[1] += cmd % 5
    assert idx.n <= 4 and idx.every > 2 and idx.rows[0, 0] == 1          # the first row always stays
    for want in range(1, int(seqs[1])):
        cmd, at = idx.find(1, want)
        assert at <= want and (cmd, at) in noted
