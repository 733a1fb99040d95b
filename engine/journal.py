"""The LMDB event journal: one record per processing batch, committed before any reply.

A batch record holds the batch's inbound core Commands (96 bytes each, with their
engine sequence numbers and receive times) and the Events the core produced for
them (104 bytes each), so the journal is both the recovery log and the audit trail.

    key    8 bytes   big-endian seq of the batch's first command (put with append=True)
    value  n_cmds u32 | n_events u32 | prev_digest 16 bytes | commands | events | digest 16 bytes
           digest = BLAKE2b-128 of everything before it in the value, and prev_digest is
           the previous batch's digest: a hash chain, so a damaged or edited record is found

One LMDB write transaction per batch (group commit); py-lmdb needs a Python object
per put, so a whole batch is one put (the records themselves are numpy buffers,
never per-record Python objects).

Durability (config `journal.durability`):
- sync: fsync on every commit (LMDB's default). Survives power loss.
- async: no fsync per commit (LMDB sync=False), `env.sync(True)` on a timer and at
  close. Survives a killed process; on power loss it may lose more than the interval
  and may leave the journal corrupt (measured here: corrupt or empty every time in
  simulated power cuts), so it is process-crash-safe only.
- none: no journal at all. Tests and benchmarks only; refused unless allow_none.

LMDB rules followed: writemap stays off (a full disk must be an error, not SIGBUS);
a False from put(append=True) is fatal; the map size is always passed on open;
MapFullError grows the map and retries the same batch; no long-lived read
transactions; a failed commit raises JournalUnavailable and nothing is acknowledged.
"""
from __future__ import annotations

import hashlib
import struct

import lmdb
import numpy as np

from protocol.records import COMMAND, EVENT

DIGEST = 16
HEAD = struct.Struct("<II")


class JournalError(Exception):
    """The journal is damaged: verification failed at `seq`."""

    def __init__(self, message, seq=None):
        super().__init__(message)
        self.seq = seq


class JournalUnavailable(Exception):
    """A write failed (disk full, I/O error): state changes must stop."""


class Journal:
    def __init__(self, path: str, durability: str = "sync", map_size: int = 1 << 30, readonly: bool = False):
        if durability not in ("sync", "async"):
            raise ValueError(f"journal durability {durability!r}: 'sync' or 'async' ('none' means no Journal)")
        self.path = path
        self.durability = durability
        self.map_size = map_size
        self.env = lmdb.open(path, map_size=map_size, subdir=True, readonly=readonly, lock=True,
                             sync=durability == "sync", metasync=durability == "sync", writemap=False,
                             max_dbs=0, create=not readonly)
        self.last_digest = bytes(DIGEST)
        self.last_seq = 0
        self.records = 0
        with self.env.begin() as txn:
            cur = txn.cursor()
            if cur.last():
                value = bytes(cur.value())
                self.last_digest = value[-DIGEST:]
                n_cmds, _ = HEAD.unpack_from(value)
                cmds = np.frombuffer(value, dtype=COMMAND.dtype, count=n_cmds, offset=HEAD.size + DIGEST)
                self.last_seq = int(cmds["seq"][-1]) if n_cmds else struct.unpack(">Q", cur.key())[0] - 1
            self.records = txn.stat()["entries"]

    def append(self, cmds: np.ndarray, events: np.ndarray) -> None:
        """Commit one batch (cmds must carry consecutive seqs after last_seq). Returns after the commit."""
        n = len(cmds)
        if n == 0:
            return
        first = int(cmds["seq"][0])
        if first != self.last_seq + 1:
            raise JournalError(f"batch starts at seq {first}, journal ends at {self.last_seq}", first)
        body = b"".join((HEAD.pack(n, len(events)), self.last_digest, cmds.tobytes(), events.tobytes()))
        digest = hashlib.blake2b(body, digest_size=DIGEST).digest()
        value = body + digest
        key = struct.pack(">Q", first)
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    if not txn.put(key, value, append=True):
                        raise JournalError(f"journal key {first} not after the last key", first)
                break
            except lmdb.MapFullError:
                self.map_size *= 2
                self.env.set_mapsize(self.map_size)
            except lmdb.Error as e:
                raise JournalUnavailable(f"journal commit failed at seq {first}: {e}") from e
        self.last_digest = digest
        self.last_seq = int(cmds["seq"][-1])
        self.records += 1

    def sync(self) -> None:
        """Flush to disk (async durability's timer and close)."""
        self.env.sync(True)

    def batches(self, from_seq: int = 1):
        """Verified batches (commands, events) from the batch containing from_seq; JournalError on damage."""
        prev = None
        expect = None
        with self.env.begin(buffers=False) as txn:
            cur = txn.cursor()
            if not cur.first():
                return
            for key, value in cur.iternext():
                first = struct.unpack(">Q", key)[0]
                if len(value) < HEAD.size + 2 * DIGEST:
                    raise JournalError(f"journal record at seq {first} is truncated", first)
                n_cmds, n_events = HEAD.unpack_from(value)
                size = HEAD.size + DIGEST + n_cmds * COMMAND.size + n_events * EVENT.size + DIGEST
                if len(value) != size:
                    raise JournalError(f"journal record at seq {first}: {len(value)} bytes, expected {size}", first)
                body, digest = value[:-DIGEST], value[-DIGEST:]
                if hashlib.blake2b(body, digest_size=DIGEST).digest() != digest:
                    raise JournalError(f"journal record at seq {first}: checksum mismatch", first)
                if prev is not None and value[HEAD.size:HEAD.size + DIGEST] != prev:
                    raise JournalError(f"journal record at seq {first}: hash chain broken", first)
                prev = digest
                cmds = np.frombuffer(body, dtype=COMMAND.dtype, count=n_cmds, offset=HEAD.size + DIGEST)
                seqs = cmds["seq"]
                if seqs[0] != first or (expect is not None and first != expect) or \
                        np.any(np.diff(seqs.astype(np.int64)) != 1):
                    raise JournalError(f"journal sequence gap at seq {first}", first)
                expect = int(seqs[-1]) + 1
                if expect - 1 < from_seq:
                    continue
                events = np.frombuffer(body, dtype=EVENT.dtype, count=n_events,
                                       offset=HEAD.size + DIGEST + n_cmds * COMMAND.size)
                yield cmds, events

    def close(self) -> None:
        if self.durability == "async":
            self.env.sync(True)
        self.env.close()


def main(argv=None) -> int:
    """`trading-engine journal stats|verify PATH`: read-only, safe on a live journal."""
    import argparse
    import os
    import sys
    p = argparse.ArgumentParser(prog="trading-engine journal")
    p.add_argument("action", choices=["stats", "verify"])
    p.add_argument("path")
    args = p.parse_args(argv)
    if not os.path.exists(os.path.join(args.path, "data.mdb")):
        print(f"trading-engine journal: no journal at {args.path}", file=sys.stderr)
        return 2
    j = Journal(args.path, readonly=True)
    batches = commands = events = 0
    first_seq = last_seq = first_ts = last_ts = None
    try:
        for cmds, evs in j.batches():
            batches += 1
            commands += len(cmds)
            events += len(evs)
            if first_seq is None:
                first_seq, first_ts = int(cmds["seq"][0]), int(cmds["ts_ns"][0])
            last_seq, last_ts = int(cmds["seq"][-1]), int(cmds["ts_ns"][-1])
    except JournalError as e:
        print(f"journal DAMAGED: first bad seq {e.seq}: {e}")
        return 1
    finally:
        j.env.close()
    size = os.path.getsize(os.path.join(args.path, "data.mdb"))
    if args.action == "verify":
        print(f"ok: {commands} commands in {batches} batches, seq {first_seq}..{last_seq}, checksums and chain intact")
        return 0
    print(f"batches   {batches}\ncommands  {commands}\nevents    {events}\nseq       {first_seq}..{last_seq}\n"
          f"time_ns   {first_ts}..{last_ts}\nbytes     {size}")
    return 0
