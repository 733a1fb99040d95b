"""The LMDB event journal: one record per processing batch, committed before any reply.

A batch record holds the batch's inbound core Commands (96 bytes each, with their
engine sequence numbers and receive times) and the Events the core produced for
them (128 bytes each), so the journal is both the recovery log and the audit trail.

    key    8 bytes   big-endian seq of the batch's first command (put with append=True)
    value  n_cmds u32 | n_events u32 | prev_digest 16 bytes | commands | events | digest 16 bytes
           digest = BLAKE2b-128 (keyed if configured) of everything before it, and prev_digest is
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
  3. every journal.retry_interval_ms the disk is probed (Journal.probe: write one page beside the
     journal and fdatasync it, the call LMDB commits with); when that works, trading resumes at
     the next sequence number: as soon as a commit can succeed. A commit that fails again
     starts over at 1.
A snapshot never halts trading (engine/snapshot.py): it is skipped when the disk lacks room
for it plus journal.snapshot_min_free_bytes, and its .tmp file is removed on any error; no
snapshot is taken while the journal is down, and a shutdown never crashes on one.
Sessions stay logged on throughout; no commit is retried blindly.

Files in the journal directory, and what each one detects:
- data.mdb, lock.mdb: LMDB's. Before the file is mapped its size is checked against what LMDB's
  newer meta page says is in use ((last page + 1) * page size): a truncated data.mdb is refused
  with a message naming the file and the size expected (mapping it would die with SIGBUS).
  (LMDB can, in principle, leave a page it freed in the same transaction unwritten at the end of
  the file, which this check would take for a truncation; with this journal's append-only
  transactions that was never seen in 45,000 commits each checked. Damage LMDB itself finds,
  such as a bad meta page, is reported as journal damage too, never a traceback.)
- journal.id: written once when the journal is created (JSON: format, creation time, whether the
  chain is keyed and a check value of the key). It tells a new venue from a journal that has gone:
  a directory holding nothing of a journal (missing, empty, or only an empty snapshots/) is a new
  venue and is created; one holding journal.id, a tail, lock.mdb or snapshots but no data.mdb, or
  an empty data.mdb, is refused ("the journal has gone") instead of silently starting an empty
  engine that deposits the initial cash again. To start afresh on purpose, move the directory away.
- tail: the last committed seq and the digest of the record that ends there (the chain head),
  kept outside LMDB: two 64-byte slots written alternately with pwrite after each commit, each
  with its own checksum (keyed when the chain is), fsync'd at open, at every async-durability
  sync and at close, otherwise flushed by the kernel's writeback. Start-up and `journal verify`
  refuse a journal that ends before the tail's seq (records deleted or lost: deleting records
  through LMDB, or restoring an older data.mdb, leaves the tail ahead), or whose record ending at
  the tail's seq has another digest (the end was replaced). A journal ahead of its tail is
  accepted: after a crash or power cut the last tail writes may not have reached the disk (the
  tail is not fsync'd per commit: that would double a `sync` commit's cost). It does not detect
  a rollback of both data.mdb and the tail to an older consistent copy, nor a deletion of the
  tail file together with journal.id of an unkeyed journal (that is how a journal made before
  these files is adopted; a keyed one is not adopted): only a copy kept elsewhere (replication,
  the te_journal_last_seq metric scraped off the box) finds those.
- writer.lock: flock'd exclusively by the one process that writes the journal, for its whole
  life, before anything is read; it holds that process's pid. A second server is refused with
  the holder's pid. Read-only tools (`trading-engine journal ...`) never take it.

The chain is unkeyed by default: it finds damage, and an edited record that was not re-chained;
one edited and re-chained to the end is found by the tail (the last digest differs), but anyone
who can write the files can rewrite the tail too, since its checksum needs no key. With a
key ([journal] key_file or key_env: at least 16 bytes), every record digest and the tail's
checksum are keyed BLAKE2b (BLAKE2's built-in MAC mode, RFC 7693: a keyed hash that needs no
HMAC construction, at the unkeyed cost): an edited and re-chained record, and a forged tail,
fail verification without the key. A key is fixed when the journal is created (journal.id keeps a check value, so a
missing or wrong key is refused by name); the tools take it with --key-file/--key-env.

LMDB rules followed: writemap stays off (a full disk must be an error, not SIGBUS);
a False from put(append=True) is fatal; the map size is always passed on open;
MapFullError grows the map and retries the same batch; no long-lived read
transactions; a failed commit raises JournalUnavailable and nothing is acknowledged.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import struct
import time

import lmdb
import numpy as np

from protocol.records import COMMAND, EVENT

DIGEST = 16
HEAD = struct.Struct("<II")
MARKER = "journal.id"
TAIL = "tail"
WRITER_LOCK = "writer.lock"
TAIL_MAGIC = b"TETAIL01"
TAIL_SLOT = struct.Struct("<8sQ16s32s")       # magic, last seq, chain head digest, check: 64 bytes
LMDB_META = struct.Struct("<II")              # at offset 16 of a meta page: magic, version
LMDB_MAGIC = 0xBEEFC0DE
LMDB_DAMAGE = (lmdb.CorruptedError, lmdb.InvalidError, lmdb.PageNotFoundError, lmdb.VersionMismatchError,
               lmdb.IncompatibleError)


class JournalError(Exception):
    """The journal is damaged: verification failed at `seq`."""

    def __init__(self, message, seq=None):
        super().__init__(message)
        self.seq = seq


class JournalUnavailable(Exception):
    """A write failed (disk full, I/O error): state changes must stop."""


class JournalRefused(Exception):
    """The journal cannot be opened as asked (another server holds it, its key is missing or
    wrong); the message is one line naming why."""


def has_journal_files(path: str) -> bool:
    """Whether `path` holds anything of a journal besides its writer lock and an empty
    snapshots/ (so a missing or empty data.mdb there means a journal that has gone)."""
    if any(os.path.exists(os.path.join(path, n)) for n in ("data.mdb", "lock.mdb", MARKER, TAIL)):
        return True
    snaps = os.path.join(path, "snapshots")
    return os.path.isdir(snaps) and any(n.endswith((".snap", ".tmp")) for n in os.listdir(snaps))


def check_data_size(path: str, empty_ok: bool = False) -> None:
    """JournalError unless data.mdb is at least as long as its newer LMDB meta page says it
    is in use ((last page + 1) * page size); mapping a shorter file dies with SIGBUS on the
    first read past its end. The metas are read before the size is taken: a live writer grows
    the file before it writes the meta that covers the growth. empty_ok: a missing or empty
    data.mdb passes (LMDB makes it afresh): the stores beside the journal (logons, alerts)."""
    data = os.path.join(path, "data.mdb")
    if empty_ok and (not os.path.exists(data) or os.path.getsize(data) == 0):
        return
    with open(data, "rb") as f:
        head = f.read(2 * 65536)
        size = os.fstat(f.fileno()).st_size
    if size == 0:
        raise JournalError(f"{data} is empty (0 bytes): the journal has gone; restore it from a backup "
                           "(to start a new venue on purpose, move the journal directory away)")
    metas = []
    psize = struct.unpack_from("<I", head, 40)[0] if len(head) >= 44 else 0
    if psize not in (1 << n for n in range(9, 17)):
        psize = 0
    for off in (0, psize):
        if psize and off + 160 <= len(head):
            magic, version = LMDB_META.unpack_from(head, off + 16)
            if magic == LMDB_MAGIC:
                last_pg, txnid = struct.unpack_from("<QQ", head, off + 136)
                metas.append((txnid, last_pg))
    if not metas:
        if size < 2 * 4096:
            raise JournalError(f"{data} is {size} bytes, shorter than LMDB's two meta pages: truncated")
        return                              # not LMDB's layout: lmdb.open says so (an error, not SIGBUS)
    need = max(metas)[1] * psize + psize
    if size < need:
        raise JournalError(f"{data} is truncated: {size} bytes, LMDB's meta page says {need} bytes are in use")


def decode_record(first: int, value: bytes, prev: bytes | None, key: bytes = b"", layouts=(COMMAND, EVENT)):
    """(commands, events, digest) of one journal value keyed `first`, checked: size, digest
    (keyed BLAKE2b with `key`), the chain link to `prev` (if given) and consecutive command seqs
    starting at `first`. layouts: the (command, event) record layouts (the router's journal
    uses its own, protocol/records.py ROUTE_INPUT / ROUTE_OUTPUT)."""
    cmd_layout, event_layout = layouts
    if len(value) < HEAD.size + 2 * DIGEST:
        raise JournalError(f"journal record at seq {first} is truncated", first)
    n_cmds, n_events = HEAD.unpack_from(value)
    size = HEAD.size + DIGEST + n_cmds * cmd_layout.size + n_events * event_layout.size + DIGEST
    if len(value) != size or n_cmds == 0:
        raise JournalError(f"journal record at seq {first}: {len(value)} bytes, expected {size}", first)
    body, digest = memoryview(value)[:-DIGEST], bytes(value[-DIGEST:])     # (a view: no copy of the body)
    if hashlib.blake2b(body, digest_size=DIGEST, key=key).digest() != digest:
        raise JournalError(f"journal record at seq {first}: checksum mismatch"
                           f"{' (or not written with this key)' if key else ''}", first)
    if prev is not None and value[HEAD.size:HEAD.size + DIGEST] != prev:
        raise JournalError(f"journal record at seq {first}: hash chain broken", first)
    cmds = np.frombuffer(body, dtype=cmd_layout.dtype, count=n_cmds, offset=HEAD.size + DIGEST)
    seqs = cmds["seq"]
    if seqs[0] != first or (n_cmds > 1 and np.any(np.diff(seqs.astype(np.int64)) != 1)):
        raise JournalError(f"journal sequence gap at seq {first}", first)
    events = np.frombuffer(body, dtype=event_layout.dtype, count=n_events,
                           offset=HEAD.size + DIGEST + n_cmds * cmd_layout.size)
    return cmds, events, digest


class Journal:
    def __init__(self, path: str, durability: str = "sync", map_size: int = 1 << 30, readonly: bool = False,
                 lock: bool = True, key: bytes | None = None, layouts=(COMMAND, EVENT)):
        """readonly: a reader beside a live writer (LMDB's lock file registers it, so the writer
        never reuses pages it reads). lock=False only for a copied journal no process writes.
        A writer takes writer.lock first (JournalRefused naming the holder's pid if another has
        it), creates a new journal only where there is nothing of one (see the module docstring),
        and checks the journal's end against its tail. key: the chain's key (None: unkeyed).
        layouts: the (command, event) record layouts; each needs a u64 `seq` command field."""
        self.layouts = layouts
        if durability not in ("sync", "async"):
            raise ValueError(f"journal durability {durability!r}: 'sync' or 'async' ('none' means no Journal)")
        self.path = path
        self.durability = durability
        self.map_size = map_size
        self.readonly = readonly
        self.lmdb_lock = lock
        self.key = key or b""
        self.lock_fd = None
        self.tail_fd = None
        self.env = None
        if not readonly:
            self._take_writer_lock()
        try:
            self._open()
        except BaseException:
            if getattr(self, "env", None) is not None:
                self.env.close()
            self.release()
            raise

    def _take_writer_lock(self):
        os.makedirs(self.path, exist_ok=True)
        fd = os.open(os.path.join(self.path, WRITER_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise JournalRefused(f"journal {self.path} is in use by another process (pid {holder}): "
                                 "one server per journal") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.lock_fd = fd

    def release(self) -> None:
        """Close the tail and give up the writer lock (close() and a failed open do this)."""
        for name in ("tail_fd", "lock_fd"):
            fd = getattr(self, name)
            if fd is not None:
                setattr(self, name, None)
                os.close(fd)

    def drop_inherited(self) -> None:
        """In a forked child (the snapshot writer): close its copies of the writer lock and the
        tail (closing, never unlocking: the lock stays the parent's, and dies with the parent
        even while the child still writes)."""
        self.release()

    def _open(self):
        path = self.path
        data = os.path.join(path, "data.mdb")
        marker = self._read_marker()
        if not os.path.exists(data):
            if has_journal_files(path):
                what = ", ".join(n for n in (MARKER, TAIL, "lock.mdb", "snapshots")
                                 if os.path.exists(os.path.join(path, n)))
                raise JournalError(f"journal {path} has gone: no data.mdb beside {what}; restore it from a "
                                   "backup (to start a new venue on purpose, move the directory away)")
            new = True
        else:
            check_data_size(path)
            new = False
        self._check_key(marker)
        try:                      # damage LMDB itself finds (a bad meta page, a page of the wrong kind)
            self.env = lmdb.open(path, map_size=self.map_size, subdir=True, readonly=self.readonly,
                                 lock=self.lmdb_lock, sync=self.durability == "sync",
                                 metasync=self.durability == "sync", writemap=False, max_dbs=0,
                                 create=not self.readonly)
            self.last_digest = bytes(DIGEST)
            self.last_seq = 0
            self.records = 0
            with self.env.begin() as txn:
                cur = txn.cursor()
                if cur.last():
                    value = bytes(cur.value())
                    self.last_digest = value[-DIGEST:]
                    n_cmds, _ = HEAD.unpack_from(value)
                    cmds = np.frombuffer(value, dtype=self.layouts[0].dtype, count=n_cmds,
                                         offset=HEAD.size + DIGEST)
                    self.last_seq = int(cmds["seq"][-1]) if n_cmds else struct.unpack(">Q", cur.key())[0] - 1
                self.records = txn.stat()["entries"]
        except LMDB_DAMAGE as e:
            raise JournalError(f"journal {path}: LMDB finds data.mdb damaged: {e}") from None
        if self.readonly:
            return
        tail = self.read_tail()
        if tail is not None:
            self.check_tail(tail)
        elif marker is not None and self.records:
            raise JournalError(f"journal {path}: its tail file is missing (the journal's end cannot be checked)")
        elif marker is None and self.key and self.records:
            raise JournalRefused(f"journal {path} was written without a key: a [journal] key applies to a new "
                                 "journal only")
        if new:
            self.env.sync(True)
        self.tail_fd = os.open(os.path.join(path, TAIL), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.tail_slot = 0
        self._write_tail()
        os.fsync(self.tail_fd)
        if marker is None:            # new, or made before journal.id existed: adopted as it is
            self._write_marker()

    # -- journal.id and the key --
    def _key_check(self) -> str:
        return hashlib.blake2b(b"trading-engine journal key", digest_size=16, key=self.key).hexdigest()

    def _read_marker(self):
        try:
            with open(os.path.join(self.path, MARKER), "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise JournalError(f"journal {self.path}: {MARKER} is unreadable: {e}") from None

    def _check_key(self, marker):
        if marker is None:
            return
        if marker.get("keyed") and not self.key:
            raise JournalRefused(f"journal {self.path} is keyed: its key is needed ([journal] key_file or key_env; "
                                 "the journal tool's --key-file or --key-env)")
        if self.key and not marker.get("keyed"):
            raise JournalRefused(f"journal {self.path} was created without a key: a [journal] key applies to a new "
                                 "journal only")
        if self.key and marker.get("key_check") != self._key_check():
            raise JournalRefused(f"journal {self.path}: the key given is not the one it was created with")

    def _write_marker(self):
        doc = {"format": 1, "created_ns": time.time_ns(), "keyed": bool(self.key)}
        if self.key:
            doc["key_check"] = self._key_check()
        final = os.path.join(self.path, MARKER)
        with open(final + ".tmp", "w") as f:
            f.write(json.dumps(doc) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(final + ".tmp", final)
        dfd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    # -- the tail: the journal's end, kept outside LMDB --
    def _tail_check(self, head: bytes) -> bytes:
        return hashlib.blake2b(head, digest_size=32, key=self.key).digest()

    def _write_tail(self):
        head = TAIL_MAGIC + struct.pack("<Q", self.last_seq) + self.last_digest
        os.pwrite(self.tail_fd, head + self._tail_check(head), self.tail_slot * TAIL_SLOT.size)
        self.tail_slot ^= 1

    def read_tail(self):
        """(seq, digest) of the newest intact tail slot, None if there is no tail file; JournalError
        if it has no intact slot."""
        try:
            with open(os.path.join(self.path, TAIL), "rb") as f:
                raw = f.read(2 * TAIL_SLOT.size)
        except FileNotFoundError:
            return None
        best = None
        for off in (0, TAIL_SLOT.size):
            if off + TAIL_SLOT.size <= len(raw):
                magic, seq, digest, check = TAIL_SLOT.unpack_from(raw, off)
                if magic == TAIL_MAGIC and check == self._tail_check(raw[off:off + 32]) and \
                        (best is None or seq > best[0]):
                    best = (seq, digest)
        if best is None:
            raise JournalError(f"journal {self.path}: its tail file is damaged"
                               f"{' (or not written with this key)' if self.key else ''}")
        return best

    def check_tail(self, tail) -> None:
        """JournalError unless the journal reaches the tail's seq and the record ending there
        has the tail's digest (the journal may be ahead: the last tail writes of a crash)."""
        seq, digest = tail
        if seq == 0:
            return
        with self._txn() as txn:
            cur = txn.cursor()
            found = None
            if cur.set_range(struct.pack(">Q", seq)) and struct.unpack(">Q", cur.key())[0] == seq:
                found = (seq, cur.value())
            elif cur.prev() if cur.key() else cur.last():
                found = (struct.unpack(">Q", cur.key())[0], cur.value())
        if found is None:
            raise JournalError(f"journal {self.path} is empty but its tail says seq {seq} was committed: "
                               "records were deleted or lost", 1)
        first, value = found
        cmds, _, got = decode_record(first, value, None, self.key, self.layouts)
        end = int(cmds["seq"][-1])
        if end < seq:
            raise JournalError(f"journal {self.path} ends at seq {end} but its tail says seq {seq} was committed: "
                               "records were deleted or lost", end + 1)
        if end != seq or got != digest:
            raise JournalError(f"journal {self.path}: the record ending at seq {seq} is not the one committed "
                               "there (its digest differs from the tail's): the journal was rewritten", first)

    def append(self, cmds: np.ndarray, events: np.ndarray) -> bytes:
        """Commit one batch (cmds must carry consecutive seqs after last_seq). Returns after the
        commit, the record as stored (what replication ships; engine/replication.py)."""
        n = len(cmds)
        if n == 0:
            return b""
        return self.append_packed(int(cmds["seq"][0]), int(cmds["seq"][-1]), n, len(events), cmds.tobytes(),
                                  events.tobytes())

    def append_packed(self, first: int, last: int, n_cmds: int, n_events: int, *packed: bytes,
                      tail: bool = True) -> bytes:
        """append() of a batch whose records are already packed: `packed` holds its n_cmds commands
        (seqs first..last) then its n_events events, as bytes (the router packs its records in C:
        engine/routing/decide.pyx, no numpy array per batch). tail: as append_records."""
        if first != self.last_seq + 1:
            raise JournalError(f"batch starts at seq {first}, journal ends at {self.last_seq}", first)
        body = b"".join((HEAD.pack(n_cmds, n_events), self.last_digest, *packed))
        value = body + hashlib.blake2b(body, digest_size=DIGEST, key=self.key).digest()
        self.append_records(((first, last, value),), tail)
        return value

    def append_records(self, records, tail: bool = True) -> None:
        """Commit records in one transaction: (first seq, last seq, value) each, chained onto this
        journal's end (append's one; a standby's records off the stream, made by the primary's
        journal with the same key and checked by decode_record against the previous digest).
        tail=False: the tail is not written now; the caller calls write_tail() soon after, e.g. once
        what the commit releases has left (the router: its children). A kill in between leaves the
        journal ahead of its tail, which start-up accepts (the tail is never fsync'd per commit)."""
        if not records:
            return
        if records[0][0] != self.last_seq + 1:
            raise JournalError(f"batch starts at seq {records[0][0]}, journal ends at {self.last_seq}", records[0][0])
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for first, _, value in records:
                        if not txn.put(struct.pack(">Q", first), value, append=True):
                            raise JournalError(f"journal key {first} not after the last key", first)
                break
            except lmdb.MapFullError:
                self.map_size *= 2
                self.env.set_mapsize(self.map_size)
            except lmdb.Error as e:
                raise JournalUnavailable(f"journal commit failed at seq {records[0][0]}: {e}") from e
        self.last_digest = bytes(records[-1][2][-DIGEST:])
        self.last_seq = records[-1][1]
        self.records += len(records)
        if tail:
            self.write_tail()

    def write_tail(self) -> None:
        """Record the journal's end in the tail (append_records does, unless told not to)."""
        try:
            self._write_tail()            # a pwrite into the page cache: ~1 us, no fsync (module docstring)
        except OSError as e:              # committed, but not recorded as the end: the server rebuilds
            raise JournalUnavailable(f"journal tail write failed at seq {self.last_seq}: {e}") from e

    def sync(self) -> None:
        """Flush to disk (async durability's timer and close), the tail too."""
        self.env.sync(True)
        if self.tail_fd is not None:
            os.fsync(self.tail_fd)

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
                cmds, events, digest = decode_record(first, value, prev, self.key, self.layouts)
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
                if cur.set_range(struct.pack(">Q", from_seq)):   # a record starting at from_seq, or the one before
                    if struct.unpack(">Q", cur.key())[0] == from_seq or cur.prev():
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
                cmds, events, _ = decode_record(first, value, None, self.key, self.layouts)
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
        try:
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
        except LMDB_DAMAGE as e:
            seq = struct.unpack(">Q", key)[0]
            raise JournalError(f"journal {self.path}: LMDB finds data.mdb damaged after seq {seq}: {e}", seq) from None
        return rows

    def probe(self, nbytes: int = 4096) -> None:
        """Raise OSError unless the journal's filesystem takes `nbytes` more (one page: what a
        commit may need; a commit that fails again halts again) and an fdatasync (the call LMDB
        commits with): how a halted server knows it may resume."""
        path = os.path.join(self.path, "probe.tmp")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            block = bytes(min(nbytes, 1 << 16))
            for _ in range(max(1, -(-nbytes // len(block)))):
                os.write(fd, block)
            os.fdatasync(fd)
        finally:
            os.close(fd)
            os.unlink(path)

    def reopen(self) -> None:
        """Close and open the environment again (after a failed commit: a fresh handle, and the
        last record re-read from what the file really holds)."""
        self.env.close()
        if self.tail_fd is not None:
            os.close(self.tail_fd)
            self.tail_fd = None
        self._open()                      # the writer lock stays held

    def close(self) -> None:
        try:
            if self.durability == "async" and not self.readonly:
                self.env.sync(True)
            if self.tail_fd is not None:
                os.fsync(self.tail_fd)
            self.env.close()
        finally:
            self.release()
