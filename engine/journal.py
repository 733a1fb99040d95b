"""The LMDB event journal: one record per processing batch, committed before any reply.

A batch record holds the batch's inbound core Commands (96 bytes each, with their
engine sequence numbers and receive times) and the Events the core produced for
them (128 bytes each), so the journal is both the recovery log and the audit trail.

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

When a commit fails (ENOSPC, EIO) the server (engine/server.py, journal_failed/rebuild/
probe_journal) does this, and nothing else:
  1. nothing of the failed batch is acknowledged; from that moment every order-entry message is
     answered with a session-level REJECTED JOURNAL_UNAVAILABLE (seq 0), Python-queued commands
     (admin actions, timers, cancel on disconnect) are dropped, /health/ready answers 503 and
     /health/detailed says why (journal.writable false, journal.error, journal.rebuilding);
  2. the engine has already applied the failed batch, so it is rebuilt: the environment is
     reopened, a fresh engine loads the newest intact snapshot and replays the journal after
     it, i.e. exactly what the journal holds (queries answer JOURNAL_UNAVAILABLE meanwhile). If
     the "failed" batch is found in the journal after all (the commit landed), its reports are
     delivered; otherwise its commands get JOURNAL_UNAVAILABLE;
  3. every journal.retry_interval_ms the disk is probed (Journal.probe: write 1 MiB beside the
     journal and fdatasync it, the call LMDB commits with); when that works, trading resumes at
     the next sequence number. A commit that fails again starts over at 1.
Sessions stay logged on throughout; no commit is retried blindly.

LMDB rules followed: writemap stays off (a full disk must be an error, not SIGBUS);
a False from put(append=True) is fatal; the map size is always passed on open;
MapFullError grows the map and retries the same batch; no long-lived read
transactions; a failed commit raises JournalUnavailable and nothing is acknowledged.
"""
from __future__ import annotations

import hashlib
import os
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


def decode_record(first: int, value: bytes, prev: bytes | None):
    """(commands, events, digest) of one journal value keyed `first`, checked: size, digest,
    the chain link to `prev` (if given) and consecutive command seqs starting at `first`."""
    if len(value) < HEAD.size + 2 * DIGEST:
        raise JournalError(f"journal record at seq {first} is truncated", first)
    n_cmds, n_events = HEAD.unpack_from(value)
    size = HEAD.size + DIGEST + n_cmds * COMMAND.size + n_events * EVENT.size + DIGEST
    if len(value) != size or n_cmds == 0:
        raise JournalError(f"journal record at seq {first}: {len(value)} bytes, expected {size}", first)
    body, digest = value[:-DIGEST], value[-DIGEST:]
    if hashlib.blake2b(body, digest_size=DIGEST).digest() != digest:
        raise JournalError(f"journal record at seq {first}: checksum mismatch", first)
    if prev is not None and value[HEAD.size:HEAD.size + DIGEST] != prev:
        raise JournalError(f"journal record at seq {first}: hash chain broken", first)
    cmds = np.frombuffer(body, dtype=COMMAND.dtype, count=n_cmds, offset=HEAD.size + DIGEST)
    seqs = cmds["seq"]
    if seqs[0] != first or (n_cmds > 1 and np.any(np.diff(seqs.astype(np.int64)) != 1)):
        raise JournalError(f"journal sequence gap at seq {first}", first)
    events = np.frombuffer(body, dtype=EVENT.dtype, count=n_events, offset=HEAD.size + DIGEST + n_cmds * COMMAND.size)
    return cmds, events, digest


class Journal:
    def __init__(self, path: str, durability: str = "sync", map_size: int = 1 << 30, readonly: bool = False,
                 lock: bool = True):
        """readonly: a reader beside a live writer (LMDB's lock file registers it, so the writer
        never reuses pages it reads). lock=False only for a copied journal no process writes."""
        if durability not in ("sync", "async"):
            raise ValueError(f"journal durability {durability!r}: 'sync' or 'async' ('none' means no Journal)")
        self.path = path
        self.durability = durability
        self.map_size = map_size
        self.readonly = readonly
        self.env = lmdb.open(path, map_size=map_size, subdir=True, readonly=readonly, lock=lock,
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

    def batches(self, from_seq: int = 1, anchor: bytes | None = None, to_seq: int | None = None,
                chunk: int = 256):
        """Verified batches (commands, events) from the batch containing from_seq up to the one
        containing to_seq; JournalError on damage. Records are read in chunks of `chunk`, each in
        its own short read transaction (never one held across the whole scan, so a live writer's
        file does not grow behind a reader, and a scan can yield to an event loop between records).

        Without `anchor` every record from the first is verified (digest, chain, sequence); with
        `anchor` (the digest of the record that ends at from_seq - 1, e.g. kept in a snapshot) the
        scan starts at the record keyed from_seq and the chain is checked from the anchor on."""
        prev = anchor
        expect = from_seq if anchor is not None else None
        key = struct.pack(">Q", from_seq if anchor is not None else 0)
        first_record = True
        while True:
            rows = self._read_chunk(key, chunk, skip_first=not first_record)
            if not rows:
                if anchor is not None and first_record and from_seq <= self.last_seq:
                    raise JournalError(f"journal has no record at seq {from_seq} (the snapshot's next)", from_seq)
                return
            for k, value in rows:
                first = struct.unpack(">Q", k)[0]
                if first_record and anchor is not None and first != from_seq:
                    raise JournalError(f"journal has no record at seq {from_seq} (the snapshot's next)", from_seq)
                first_record = False
                cmds, events, digest = decode_record(first, value, prev)
                seqs = cmds["seq"]
                if expect is not None and first != expect:
                    raise JournalError(f"journal sequence gap at seq {first}", first)
                prev = digest
                expect = int(seqs[-1]) + 1
                if to_seq is not None and first > to_seq:
                    return
                if expect - 1 < from_seq:
                    continue
                yield cmds, events
            key = rows[-1][0]

    def read_from(self, from_seq: int = 1, chunk: int = 256):
        """(commands, events) of each batch from the one containing from_seq, each record's digest
        checked but not the chain (for readers that start in the middle: gap replay, tools).
        Chunked like batches()."""
        key = struct.pack(">Q", 0)
        if from_seq > 1:        # the batch containing from_seq starts at or before it
            with self._txn() as txn:
                cur = txn.cursor()
                if cur.set_range(struct.pack(">Q", from_seq)):
                    if struct.unpack(">Q", cur.key())[0] != from_seq and cur.prev():
                        key = bytes(cur.key())
                elif cur.last():
                    key = bytes(cur.key())
        skip = False
        while True:
            rows = self._read_chunk(key, chunk, skip_first=skip)
            if not rows:
                return
            for k, value in rows:
                first = struct.unpack(">Q", k)[0]
                cmds, events, _ = decode_record(first, value, None)
                if int(cmds["seq"][-1]) >= from_seq:
                    yield cmds, events
            key, skip = rows[-1][0], True

    def _txn(self):
        try:
            return self.env.begin(buffers=False)
        except lmdb.MapResizedError:        # a live writer grew the map: adopt its size
            self.env.set_mapsize(0)
            return self.env.begin(buffers=False)

    def _read_chunk(self, key: bytes, n: int, skip_first: bool):
        """Up to n (key, value) pairs from `key` (after it if skip_first), in one short read txn."""
        rows = []
        with self._txn() as txn:
            cur = txn.cursor()
            if not cur.set_range(key):
                return rows
            if skip_first and cur.key() == key and not cur.next():
                return rows
            while len(rows) < n:
                rows.append((cur.key(), cur.value()))
                if not cur.next():
                    break
        return rows

    def probe(self, nbytes: int = 1 << 20) -> None:
        """Raise OSError unless the journal's filesystem takes `nbytes` more and an fdatasync
        (the call LMDB commits with): how a halted server knows it may resume."""
        path = os.path.join(self.path, "probe.tmp")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            block = bytes(1 << 16)
            for _ in range(max(1, nbytes >> 16)):
                os.write(fd, block)
            os.fdatasync(fd)
        finally:
            os.close(fd)
            os.unlink(path)

    def reopen(self) -> None:
        """Close and open the environment again (after a failed commit: a fresh handle, and the
        last record re-read from what the file really holds)."""
        self.env.close()
        self.__init__(self.path, self.durability, self.map_size)

    def close(self) -> None:
        if self.durability == "async":
            self.env.sync(True)
        self.env.close()
