"""Sustained order flow from several clients, each keeping every sequenced report it received
exactly as received, and the check a crash test needs: after a restart, every report any client
saw is replayed byte for byte at the same sequence number (so every acknowledged order, fill and
cancel is there)."""
from __future__ import annotations

import random
import socket
import threading
import time

from engine.testing import read_reports, split_reports
from protocol import wire
from protocol.codes import Side
from protocol.wire import MsgType
from tests.test_server_session import Raw


class Client(threading.Thread):
    """One account: pipelined windows of orders around a mid (so they rest and cross), now and
    then cancels of its own earlier orders, reading everything the server sends."""

    def __init__(self, port, account, seed, reports: dict):
        super().__init__(daemon=True)
        self.port, self.account, self.rng = port, account, random.Random(seed)
        self.reports = reports                 # shared across restarts: {seq: bytes}
        self.stop = threading.Event()
        self.sent = 0

    def run(self):
        try:
            raw = Raw(self.port)
            t, body, _ = raw.logon(self.account, next_seq=10**9)
            clid = int(body["next_client_order_id"]) - 1
            sock, buf = raw.sock, bytearray(raw.buf)
            sock.settimeout(0.002)
            while not self.stop.is_set():
                frames = []
                for _ in range(self.rng.randint(1, 16)):
                    if clid and self.rng.random() < 0.2:
                        frames.append(wire.encode(MsgType.CANCEL, client_order_id=self.rng.randint(1, clid)))
                        continue
                    clid += 1
                    side = self.rng.choice((Side.BUY, Side.SELL))
                    frames.append(wire.encode(MsgType.NEW_ORDER, client_order_id=clid, symbol=1, side=side,
                                              order_type=1, tif=1, stp=4, qty=self.rng.randint(1, 5),
                                              price=self.rng.randint(95, 105)))
                sock.sendall(b"".join(frames))
                self.sent += len(frames)
                if not read_reports(sock, buf, self.reports):
                    return
        except OSError:
            pass                                # the server was killed: what was received is kept


def run_load(port, reports: dict, seconds: float, seed: int, kill):
    """Clients on accounts 1-3 for `seconds`, then kill() while they are still sending."""
    clients = [Client(port, a, seed * 10 + a, reports[a]) for a in (1, 2, 3)]
    for c in clients:
        c.start()
    time.sleep(seconds)
    kill()
    for c in clients:
        c.stop.set()
        c.join(10)
    return sum(c.sent for c in clients)


def lost_reports(port, reports: dict) -> list[str]:
    """What a restarted server no longer has: for each account, every report seen live must come
    back from a replay from seq 1, identical. Returns the differences (empty: nothing lost)."""
    problems = []
    for account, seen in reports.items():
        raw = Raw(port)
        t, body, _ = raw.logon(account, next_seq=1)
        last = int(body["next_seq"]) - 1
        if seen and max(seen) > last:
            problems.append(f"account {account}: saw report {max(seen)} live, the server is at {last}")
        got: dict = {}
        buf = bytearray(raw.buf)
        raw.sock.settimeout(10)
        while len(got) < last:
            data = raw.sock.recv(1 << 16)
            if not data:
                problems.append(f"account {account}: connection closed during replay")
                break
            buf += data
            split_reports(buf, got)
        raw.close()
        for seq, frame in seen.items():
            if got.get(seq) != frame:
                problems.append(f"account {account}: report {seq} " + ("missing" if seq not in got else "differs"))
    return problems
