"""Snapshots of the matching state: a checksummed file per snapshot, written by a fork.

File layout (little-endian):
    magic        8 bytes   b"TESNAP05" (the layout of the engine's state: a change bumps it; a file with
                           another magic is not read, and recovery replays the journal instead.
                           02: ladders as each one's entries, order-id hash by blocks, level pool
                           size in the capacities; engine/CAPACITY.md)
                           03: algos parent rows of 232 bytes (participation intervals; engine/ALGOS.md)
                           04: risk positions as a pool of 128-byte entries made on demand (engine/CAPACITY.md)
                           05: id tables of 8-byte entries (slot, displacement, tag; no disp arrays); price levels of 64 bytes,
                               one cache line each (engine/core.pxd Level)
    header_len   8 bytes   u64, length of the header
    header       JSON (msgspec): last_seq, the state's arrays (name, dtype, shape,
                 offset, nbytes) and any extra sections the caller adds
    arrays       each array's raw bytes at its offset (8-byte aligned)
    digest       32 bytes  BLAKE2b-256 of everything before it

A file is written to `<name>.tmp`, fsync'd, renamed to `<name>` and the directory
fsync'd, so a crash leaves either the old set of snapshots or the new one, never a
half file under a final name. A truncated or corrupt file fails the digest check
and `load_latest` falls back to the next older one.

A snapshot must never take the journal's disk: before writing, the older snapshots beyond
`keep` - 1 and stray .tmp files are pruned, then the free space is checked (the file's size plus
`min_free` must be available, else SnapshotSkipped: the server logs a warning, counts it and
trades on; the journal alone is enough to recover), and on any error the .tmp file is removed.

Writing never stalls matching for the copy: `fork_write` forks, the child writes
its copy-on-write view of the arrays and exits with os._exit (it never touches the
LMDB environment or the event loop), and the parent only pays for fork() itself
(page-table copy: measured by perf/ as the snapshot pause).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import msgspec
import numpy as np

MAGIC = b"TESNAP05"
DIGEST_SIZE = 32
PREFIX = "snapshot-"
SUFFIX = ".snap"


class SnapshotError(Exception):
    """A snapshot file is truncated, corrupt or of another layout."""


class SnapshotSkipped(Exception):
    """Not written: the disk lacks room for it plus the free space it must leave."""


SKIPPED_EXIT = 3      # fork_write's child: exit status of a skipped snapshot (1: failed)


class ArrayEntry(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    dtype: str            # numpy dtype descr, as msgspec-encodable JSON text
    shape: list[int]
    offset: int
    nbytes: int


class Header(msgspec.Struct, forbid_unknown_fields=True):
    last_seq: int
    arrays: list[ArrayEntry]
    extra: dict[str, int] = {}


def _dtype_text(dt: np.dtype) -> str:
    return msgspec.json.encode(dt.descr if dt.fields else dt.str).decode()


def _dtype_from(text: str) -> np.dtype:
    descr = msgspec.json.decode(text)
    if isinstance(descr, str):
        return np.dtype(descr)
    return np.dtype([tuple(f) if len(f) == 2 else (f[0], f[1], tuple(f[2])) for f in descr])


def snapshot_name(last_seq: int) -> str:
    return f"{PREFIX}{last_seq:020d}{SUFFIX}"


def write(directory: str | os.PathLike, state: dict, last_seq: int, extra: dict[str, int] | None = None,
          keep: int | None = None, min_free: int = 0) -> Path:
    """Write `state` (name -> numpy array) as the snapshot at `last_seq`; return its path.
    keep: prune to keep - 1 (at least 1) older snapshots first. SnapshotSkipped if the disk
    would be left with less than min_free bytes; nothing is left behind on any error."""
    directory = Path(directory)
    entries = []
    offset = 0
    arrays = []
    for name, arr in state.items():
        arr = np.ascontiguousarray(arr)
        entries.append(ArrayEntry(name, _dtype_text(arr.dtype), list(arr.shape), offset, arr.nbytes))
        arrays.append(arr)
        offset += (arr.nbytes + 7) & ~7
    header = msgspec.json.encode(Header(last_seq, entries, extra or {}))
    final = directory / snapshot_name(last_seq)
    tmp = final.with_suffix(".tmp")
    if keep is not None:
        prune(directory, max(keep - 1, 1))
    size = 16 + len(header) + offset + DIGEST_SIZE
    st = os.statvfs(directory)
    if st.f_bavail * st.f_frsize < size + min_free:
        raise SnapshotSkipped(f"snapshot at seq {last_seq} skipped: {size} bytes plus {min_free} to leave free, "
                              f"{st.f_bavail * st.f_frsize} bytes available in {directory}")
    try:
        _write_file(tmp, header, arrays)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(directory)
    return final


def fsync_dir(directory) -> None:
    """Make a file created or renamed in `directory` durable (its entry, not only its data)."""
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _write_file(tmp: Path, header: bytes, arrays: list) -> None:
    h = hashlib.blake2b(digest_size=DIGEST_SIZE)
    with open(tmp, "wb") as f:
        def put(b):
            h.update(b)
            f.write(b)
        put(MAGIC)
        put(len(header).to_bytes(8, "little"))
        put(header)
        for arr in arrays:
            put(memoryview(arr).cast("B"))
            pad = (-arr.nbytes) % 8
            if pad:
                put(b"\0" * pad)
        f.write(h.digest())
        f.flush()
        os.fsync(f.fileno())


def read(path: str | os.PathLike) -> tuple[int, dict, dict[str, int]]:
    """(last_seq, state arrays, extra) of one snapshot file; SnapshotError if it is not intact."""
    data = Path(path).read_bytes()
    if len(data) < len(MAGIC) + 8 + DIGEST_SIZE or data[:8] != MAGIC:
        raise SnapshotError(f"{path}: not a snapshot (bad magic or truncated)")
    body, digest = data[:-DIGEST_SIZE], data[-DIGEST_SIZE:]
    if hashlib.blake2b(body, digest_size=DIGEST_SIZE).digest() != digest:
        raise SnapshotError(f"{path}: checksum mismatch (corrupt or truncated)")
    hlen = int.from_bytes(body[8:16], "little")
    try:
        header = msgspec.json.decode(body[16:16 + hlen], type=Header)
    except msgspec.DecodeError as e:
        raise SnapshotError(f"{path}: bad header: {e}") from None
    base = 16 + hlen
    state = {}
    for e in header.arrays:
        dt = _dtype_from(e.dtype)
        start = base + e.offset
        if start + e.nbytes > len(body):
            raise SnapshotError(f"{path}: array {e.name} runs past the end")
        state[e.name] = np.frombuffer(body, dtype=dt, count=e.nbytes // dt.itemsize if dt.itemsize else 0,
                                      offset=start).reshape(e.shape)
    return header.last_seq, state, dict(header.extra)


def list_snapshots(directory: str | os.PathLike) -> list[Path]:
    """Snapshot files in `directory`, newest (highest last_seq) first."""
    directory = Path(directory)
    if not directory.exists():
        return []
    return sorted(directory.glob(f"{PREFIX}*{SUFFIX}"), reverse=True)


def load_latest(directory: str | os.PathLike, on_bad=None):
    """The newest intact snapshot as (path, last_seq, state, extra), or None.
    Each corrupt one is reported to on_bad(path, error) and skipped."""
    for path in list_snapshots(directory):
        try:
            last_seq, state, extra = read(path)
        except (SnapshotError, OSError) as e:
            if on_bad is not None:
                on_bad(path, e)
            continue
        return path, last_seq, state, extra
    return None


def prune(directory: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest `keep` snapshots (and stray .tmp files)."""
    directory = Path(directory)
    for path in list_snapshots(directory)[keep:]:
        path.unlink(missing_ok=True)
    for tmp in directory.glob(f"{PREFIX}*.tmp"):
        tmp.unlink(missing_ok=True)


def fork_write(directory: str | os.PathLike, state: dict, last_seq: int, extra: dict[str, int] | None = None,
               on_child=None, keep: int | None = None, min_free: int = 0) -> int:
    """Fork a child that writes the snapshot from its copy-on-write view; return its pid
    (its exit status: 0 written, SKIPPED_EXIT skipped for room, 1 failed).
    The caller reaps it (os.waitpid(pid, os.WNOHANG)) and must not change how `state`'s arrays
    are allocated meanwhile (writes are fine: the child's pages are copied on write).
    on_child: called first in the child (the server moves it off the engine's core)."""
    pid = os.fork()
    if pid == 0:  # child: write and leave without running any parent cleanup
        code = 0
        try:
            if on_child is not None:
                on_child()
            write(directory, state, last_seq, extra, keep=keep, min_free=min_free)
        except SnapshotSkipped:
            code = SKIPPED_EXIT
        except BaseException:
            code = 1
        os._exit(code)
    return pid
