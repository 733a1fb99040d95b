"""Free-text notes of alert dispositions (engine/SURVEILLANCE.md "Dispositions").

The journaled ALERT_DISPOSITION command has a fixed layout, so a note's text cannot be in it. The text lives
in `alert_notes.jsonl` beside the journal (the service's state directory, like added_accounts.json), one JSON
line per note, {"digest": hex, "note": text}, appended and fsynced by the admin listener *before* the command
is journaled; the command carries the note's 128-bit BLAKE2b digest (Command.price and stop_price, copied to
the event's price and leaves). So the journal proves the text: a reader looks the digest up in the file and
accepts only a line whose text hashes to it (an edited line matches nothing: the note shows as missing, with
its digest). The file is content-addressed: a crash between the append and the journal write leaves a line
no command refers to (harmless); the same text twice is one line's content twice.

Readers: `trading-engine surveil` (the store's disposition trail, `surveil alerts`) and `report audit
--dispositions`, both given the journal's directory.
"""
from __future__ import annotations

import hashlib
import os

import msgspec

from engine.snapshot import fsync_dir

NOTES = "alert_notes.jsonl"
MAX_NOTE = 2000                      # characters


def digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def to_fields(d: bytes) -> tuple[int, int]:
    """The digest as the command's two int64 fields (price, stop_price)."""
    return int.from_bytes(d[:8], "little", signed=True), int.from_bytes(d[8:], "little", signed=True)


def hexdigest(a: int, b: int) -> str:
    """The digest from the record's two int64 fields; "" when both are 0 (no note)."""
    if a == 0 and b == 0:
        return ""
    return (int(a).to_bytes(8, "little", signed=True) + int(b).to_bytes(8, "little", signed=True)).hex()


def check(text: str) -> str | None:
    """Why a note is refused, or None."""
    if not text or len(text) > MAX_NOTE or not text.isprintable():
        return f"note: 1..{MAX_NOTE} printable characters (one line)"
    return None


def append(journal_dir: str, text: str) -> bytes:
    """Append the note (if its text is not there yet), fsynced; its digest."""
    d = digest(text)
    path = os.path.join(journal_dir, NOTES)
    if d.hex() in load(journal_dir):
        return d
    new = not os.path.exists(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)   # as readable as the journal
    try:
        line = msgspec.json.encode({"digest": d.hex(), "note": text}) + b"\n"
        if not new and os.fstat(fd).st_size and not _ends_with_newline(path):
            line = b"\n" + line             # after a torn last line (a crash mid-append): a line of its own
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:
        fsync_dir(journal_dir)
    return d


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def load(journal_dir: str) -> dict[str, str]:
    """hex digest -> text, for every line whose text hashes to its digest (others, and a torn line, skipped)."""
    out: dict[str, str] = {}
    try:
        with open(os.path.join(journal_dir, NOTES), "rb") as f:
            for line in f:
                try:
                    text = msgspec.json.decode(line)["note"]
                except (msgspec.DecodeError, KeyError, TypeError):
                    continue
                if isinstance(text, str):
                    out[digest(text).hex()] = text
    except FileNotFoundError:
        pass
    return out


class Reader:
    """Notes by digest for a reader of a journal that grows (surveil --follow): the file is read again when
    a digest is not found (the note is appended before its command is journaled)."""

    def __init__(self, journal_dir: str):
        self.dir = journal_dir
        self.notes = load(journal_dir)

    def get(self, hexd: str) -> str | None:
        if not hexd:
            return None
        if hexd not in self.notes:
            self.notes = load(self.dir)
        return self.notes.get(hexd)
