"""Journal damage is found, never served; one venue never splits (issue 18, items 3 and 14-17).

A second server on a journal in use is refused naming the holder's pid, while the read-only
tools keep working beside the live one; a journal that has gone (data.mdb missing or empty) is
refused, not started afresh; a truncated data.mdb is refused before it is mapped (no SIGBUS); a
deleted last record is found against the tail file; a keyed chain finds an edited and re-chained
record; a snapshot the disk has no room for is skipped, never halting trading or crashing stop()."""
import errno
import hashlib
import json
import os
import re
import struct
import subprocess
import sys

import lmdb
import numpy as np
import pytest

from engine import snapshot
from engine.journal import Journal, JournalError, JournalRefused
from protocol.codes import Side
from protocol.wire import MsgType
from tests.server_proc import ROOT, ServerProc
from tests.test_journal import batch
from tests.test_journal_failure import Trader, fill, halted_by_full_disk, open_orders, wait_ready
from tests.test_journal_failure import tmpfs  # noqa: F401  (a fixture)
from tests.test_ops import get, metric
from tests.test_server_session import Raw

KEY = b"k" * 32


def tool(*args, env=None):
    return subprocess.run([sys.executable, "-m", "engine.cli", "journal", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, **(env or {})))


def place(srv, n, account=1, first=1):
    a = Raw(srv.port)
    a.logon(account, next_seq=10**9)
    for clid in range(first, first + n):
        a.order(clid, Side.SELL, 1, 1000 + clid)
        assert a.until_any((MsgType.ACCEPTED, MsgType.REJECTED))[0] == MsgType.ACCEPTED
    return a


def sharing(first: ServerProc, other: ServerProc) -> ServerProc:
    """`other` with its config pointed at `first`'s journal (its own port files and log)."""
    text = other.config.read_text().replace(f'path = "{other.dir}/journal"', f'path = "{first.dir}/journal"')
    other.config.write_text(text)
    return other


# -- 18.3: one server per journal --

def test_second_server_when_journal_in_use_then_refused_naming_pid_and_tools_still_read(server_factory):
    a = server_factory().start()
    place(a, 5)
    b = sharing(a, server_factory())
    with pytest.raises(RuntimeError, match="exited"):
        b.start(timeout=20)
    assert b.proc.returncode != 0
    out = b.output().strip()
    assert len(out.splitlines()) == 1 and "Traceback" not in out, out
    assert "in use" in out and f"pid {a.proc.pid}" in out
    place(a, 5, first=6)                        # the first server trades on, undisturbed
    path = str(a.dir / "journal")
    for args in (["verify", path], ["stats", path], ["dump", path, "--format", "jsonl"]):
        r = tool(*args)                         # read-only tools beside the live server
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    assert tool("replay", path, "--config", str(a.config)).returncode == 0
    assert a.terminate() == 0
    b.start()                                   # the lock dies with its holder
    assert len(Raw(b.port).logon(1, next_seq=10**9)) == 3


def test_writer_when_lock_held_then_second_writer_refused_before_opening_lmdb(tmp_path):
    j = Journal(str(tmp_path / "j"))
    j.append(*batch(1, 3))
    with pytest.raises(JournalRefused, match=f"pid {os.getpid()}"):
        Journal(str(tmp_path / "j"))
    j.close()
    Journal(str(tmp_path / "j")).close()        # released at close


def test_writer_lock_when_forked_child_dropped_it_then_released_with_the_parent(tmp_path):
    """The snapshot writer is a fork: it must not keep the lock alive after its parent died
    (a restart after kill -9 would be refused while the child still writes)."""
    j = Journal(str(tmp_path / "j"))
    go, done = os.pipe()
    dropped, say_dropped = os.pipe()
    pid = os.fork()
    if pid == 0:                                 # the child: what Server._snapshot_child_setup does
        j.drop_inherited()
        os.write(say_dropped, b"x")
        os.read(go, 1)                           # until the parent has checked
        os._exit(0)
    try:
        assert os.read(dropped, 1) == b"x"
        j.close()                                # the parent's end (its death, as far as the lock goes)
        Journal(str(tmp_path / "j")).close()     # free although the child lives
    finally:
        os.write(done, b"x")
        os.waitpid(pid, 0)
        for fd in (go, done, dropped, say_dropped):
            os.close(fd)


# -- 18.14: a new venue vs a journal that has gone --

@pytest.mark.parametrize("how", ["missing", "empty"])
def test_server_when_data_mdb_gone_and_no_snapshot_then_refused_not_started_afresh(server_factory, how):
    srv = server_factory().start()
    place(srv, 3)
    srv.kill9()                                  # no snapshot: the journal alone held the history
    data = srv.dir / "journal" / "data.mdb"
    if how == "missing":
        data.unlink()
    else:
        data.write_bytes(b"")
    with pytest.raises(RuntimeError, match="exited"):
        srv.start(timeout=20)
    out = srv.output()
    assert "has gone" in out or "is empty" in out, out
    assert "Traceback" not in out
    r = tool("verify", str(srv.dir / "journal"))
    assert r.returncode == 1 and "DAMAGED" in r.stdout, (r.stdout, r.stderr)


def test_journal_when_directory_new_or_empty_then_created_and_reopens(tmp_path):
    for path in (tmp_path / "absent" / "j", tmp_path / "empty"):
        if path.name == "empty":
            path.mkdir()
            (path / "snapshots").mkdir()             # an empty snapshots/ is still nothing of a journal
        j = Journal(str(path))
        j.append(*batch(1, 2))
        j.close()
        assert json.loads((path / "journal.id").read_text())["keyed"] is False
        j = Journal(str(path))
        assert j.last_seq == 2
        j.close()


def test_serve_when_demo_config_on_fresh_directory_then_first_run_creates_journal(tmp_path):
    """The README's first command: `trading-engine serve` on the embedded demo config in a fresh
    directory creates its journal, and the next run opens it (port 0 via a copy of the demo
    config: the demo's port may be taken on a shared machine)."""
    from importlib import resources
    text = resources.files("engine").joinpath("default_config.toml").read_text()
    text = re.sub(r"(?m)^port = \d+", "port = 0", text, count=1)
    (tmp_path / "demo.toml").write_text(text)
    for run in range(2):
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--config", str(tmp_path / "demo.toml")],
                                cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            lines = []
            while not lines or (lines[-1] and b'"listening"' not in lines[-1]):
                lines.append(proc.stdout.readline())
            assert b'"listening"' in lines[-1], lines
            assert (tmp_path / "trading-engine-journal" / "journal.id").exists()
        finally:
            proc.kill()
            proc.wait(30)


# -- 18.15: a truncated data.mdb --

def big_journal(path, batches=200):
    j = Journal(str(path))
    for i in range(batches):
        j.append(*batch(1 + 20 * i, 20))
    j.close()
    return os.path.getsize(path / "data.mdb")


@pytest.mark.parametrize("to", ["half", "8k"])
def test_verify_and_server_when_data_mdb_truncated_then_refused_naming_file_and_size(server_factory, to):
    srv = server_factory()
    path = srv.dir / "journal"
    size = big_journal(path)
    assert size > 64 << 10
    data = path / "data.mdb"
    os.truncate(data, size // 2 if to == "half" else 8192)
    r = tool("verify", str(path))
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)       # not -SIGBUS
    assert str(data) in r.stdout and f"{size} bytes" in r.stdout and "truncated" in r.stdout
    with pytest.raises(RuntimeError, match="exited"):
        srv.start(timeout=20)
    assert srv.proc.returncode == 1
    assert "truncated" in srv.output() and str(data) in srv.output()


def test_server_when_logon_store_truncated_then_refused_naming_it_not_sigbus(server_factory):
    """The last-logon store (<journal>/logons, engine/auth.py) gets the journal's size check: a data.mdb
    shorter than its meta page says stops the start with the file named (it died of SIGBUS before)."""
    from clients import SyncClient
    from tests.server_proc import SECRETS
    srv = server_factory().start()
    for account in SECRETS:                            # rows enough for a page beyond the two metas
        with SyncClient.connect("127.0.0.1", srv.port, account=account, secret=SECRETS[account]):
            pass
    srv.stop()
    data = srv.dir / "journal" / "logons" / "data.mdb"
    assert os.path.getsize(data) > 8192
    os.truncate(data, 8192)
    with pytest.raises(RuntimeError, match="exited"):
        srv.start(timeout=20)
    assert srv.proc.returncode == 1, srv.output()
    assert "truncated" in srv.output() and str(data) in srv.output()


def test_verify_and_open_when_lmdb_meta_pages_garbage_then_damage_reported_not_raised(tmp_path):
    path = tmp_path / "j"
    big_journal(path, batches=20)
    with open(path / "data.mdb", "r+b") as f:          # both meta pages overwritten, the size kept
        f.write(b"\xa5" * 8192)
    r = tool("verify", str(path))
    assert r.returncode == 1 and "DAMAGED" in r.stdout and "Traceback" not in r.stderr, (r.stdout, r.stderr)
    with pytest.raises(JournalError, match="LMDB finds data.mdb damaged"):
        Journal(str(path))


# -- 18.16: the journal's end, and a keyed chain --

def delete_key(path, seq, key=None):
    env = lmdb.open(str(path), map_size=1 << 30)
    with env.begin(write=True) as txn:
        assert txn.delete(struct.pack(">Q", seq))
    env.close()


def test_journal_when_last_record_deleted_then_open_and_verify_refuse(tmp_path):
    j = Journal(str(tmp_path / "j"))
    for first in (1, 4, 7):
        j.append(*batch(first, 3))
    j.close()
    delete_key(tmp_path / "j", 7)
    with pytest.raises(JournalError, match="ends at seq 6 but its tail says seq 9"):
        Journal(str(tmp_path / "j"))
    r = tool("verify", str(tmp_path / "j"))
    assert r.returncode == 1 and "tail says seq 9" in r.stdout, r.stdout


def test_journal_when_tail_file_deleted_then_refused(tmp_path):
    j = Journal(str(tmp_path / "j"))
    j.append(*batch(1, 3))
    j.close()
    (tmp_path / "j" / "tail").unlink()
    with pytest.raises(JournalError, match="tail file is missing"):
        Journal(str(tmp_path / "j"))
    assert tool("verify", str(tmp_path / "j")).returncode == 1


def test_journal_when_crash_left_tail_behind_then_accepted(tmp_path):
    """The tail is written after the commit without an fsync: a journal ahead of it is fine."""
    j = Journal(str(tmp_path / "j"))
    j.append(*batch(1, 3))
    old = (tmp_path / "j" / "tail").read_bytes()
    j.append(*batch(4, 3))
    j.close()
    (tmp_path / "j" / "tail").write_bytes(old)
    assert Journal(str(tmp_path / "j"), readonly=True).read_tail()[0] == 3
    j = Journal(str(tmp_path / "j"))
    assert j.last_seq == 6 and j.read_tail()[0] == 6          # caught up at open
    j.close()


def test_server_when_last_record_deleted_after_kill_then_refuses_to_serve_shorter_history(server_factory):
    srv = server_factory().start()
    place(srv, 5)
    srv.kill9()
    env = lmdb.open(str(srv.dir / "journal"), map_size=1 << 30)
    with env.begin(write=True) as txn:
        cur = txn.cursor()
        assert cur.last()
        cur.delete()
    env.close()
    with pytest.raises(RuntimeError, match="exited"):
        srv.start(timeout=20)
    assert "records were deleted or lost" in srv.output()


def rechain(path, edit_seq, key=b""):
    """Edit record edit_seq (its first command's price) and recompute every digest from it on
    with `key` (b"": what someone without the journal's key can do)."""
    env = lmdb.open(str(path), map_size=1 << 30)
    with env.begin(write=True) as txn:
        rows = [(bytes(k), bytearray(v)) for k, v in txn.cursor()]
        prev = None
        for k, v in rows:
            if prev is not None:
                v[8:24] = prev
            if struct.unpack(">Q", k)[0] == edit_seq:
                v[24 + 48] ^= 1
            if prev is not None or struct.unpack(">Q", k)[0] == edit_seq:
                v[-16:] = hashlib.blake2b(bytes(v[:-16]), digest_size=16, key=key).digest()
                txn.put(k, bytes(v))
            prev = bytes(v[-16:]) if prev is not None or struct.unpack(">Q", k)[0] == edit_seq else None
    env.close()


def test_keyed_journal_when_record_edited_and_rechained_then_verify_fails(tmp_path):
    path = tmp_path / "j"
    j = Journal(str(path), key=KEY)
    for first in (1, 4, 7):
        j.append(*batch(first, 3))
    j.close()
    keyfile = tmp_path / "key"
    keyfile.write_bytes(KEY)
    keyfile.chmod(0o600)
    assert tool("verify", str(path), "--key-file", str(keyfile)).returncode == 0
    r = tool("verify", str(path))
    assert r.returncode == 2 and "is keyed" in r.stderr
    r = tool("verify", str(path), "--key-env", "TE_K", env={"TE_K": "x" * 20})
    assert r.returncode == 2 and "not the one it was created with" in r.stderr
    rechain(path, 4)                             # edited, re-chained without the key
    r = tool("verify", str(path), "--key-file", str(keyfile))
    assert r.returncode == 1 and "first bad seq 4: journal record at seq 4: checksum mismatch" in r.stdout, r.stdout
    with pytest.raises(JournalRefused, match="is keyed"):
        Journal(str(path))
    with pytest.raises(JournalError):
        list(Journal(str(path), key=KEY, readonly=True).batches())


def test_unkeyed_journal_when_record_edited_and_rechained_then_only_the_tail_can_tell(tmp_path):
    """What the unkeyed chain does not detect (documented): a re-chained edit of an earlier record
    verifies, except that the last record's new digest no longer matches the tail's."""
    path = tmp_path / "j"
    j = Journal(str(path))
    for first in (1, 4, 7):
        j.append(*batch(first, 3))
    j.close()
    rechain(path, 4)
    r = tool("verify", str(path))
    assert r.returncode == 1 and "rewritten" in r.stdout


def test_server_when_journal_key_configured_then_records_keyed_and_tool_needs_it(server_factory, tmp_path):
    srv = server_factory(journal_extra='key_env = "TE_TEST_JOURNAL_KEY"')
    srv.start(env_extra={"TE_TEST_JOURNAL_KEY": KEY.decode()})
    place(srv, 3)
    assert srv.terminate() == 0
    path = str(srv.dir / "journal")
    assert tool("verify", path, "--key-env", "K", env={"K": KEY.decode()}).returncode == 0
    assert tool("verify", path).returncode == 2
    with pytest.raises(RuntimeError, match="exited"):
        srv.start(timeout=20)                   # its key not given
    assert "TE_TEST_JOURNAL_KEY is not set" in srv.output()
    with pytest.raises(RuntimeError, match="exited"):
        srv.start(timeout=20, env_extra={"TE_TEST_JOURNAL_KEY": "short"})
    assert "at least 16 needed" in srv.output()
    with pytest.raises(RuntimeError, match="exited"):
        srv.start(timeout=20, env_extra={"TE_TEST_JOURNAL_KEY": "another key, long enough"})
    assert "not the one it was created with" in srv.output() and "Traceback" not in srv.output()
    srv.start(env_extra={"TE_TEST_JOURNAL_KEY": KEY.decode()})


# -- 18.17: a snapshot the disk has no room for --

def test_snapshot_write_when_it_fails_then_no_temp_file_left(tmp_path):
    state = {"a": np.arange(1000, dtype=np.int64)}
    (tmp_path / snapshot.snapshot_name(7)).mkdir()     # the final name is taken: os.replace fails
    with pytest.raises(OSError):
        snapshot.write(tmp_path, state, 7)
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(snapshot.SnapshotSkipped):
        snapshot.write(tmp_path, state, 8, min_free=1 << 62)
    assert not list(tmp_path.glob("snapshot-*08.*"))


def test_snapshot_write_when_disk_fills_midway_then_no_temp_file_left(tmp_path, tmpfs):
    disk = tmpfs(tmp_path / "small", "1m")
    state = {"a": np.zeros(4 << 20, dtype=np.uint8)}
    with pytest.raises(OSError) as e:            # the free-space check waived: the write itself fails
        snapshot.write(disk, state, 9, min_free=-(16 << 20))
    assert e.value.errno == errno.ENOSPC
    assert not list(disk.iterdir())
    with pytest.raises(snapshot.SnapshotSkipped):
        snapshot.write(disk, state, 9)
    assert not list(disk.iterdir())


def test_server_when_sigterm_while_halted_on_full_disk_then_stops_cleanly(server_factory, tmpfs):
    srv, t, disk, filler = halted_by_full_disk(server_factory, tmpfs)
    assert srv.terminate() == 0                  # no snapshot of a state the journal refused
    assert "Traceback" not in srv.output()
    assert not list((disk / "snapshots").glob("*"))
    filler.unlink()
    srv.start()
    assert open_orders(srv) == t.acked


def test_server_when_snapshot_does_not_fit_then_skipped_trading_goes_on_and_stop_is_clean(server_factory, tmpfs):
    srv = server_factory(journal_extra="snapshot_every = 20\nretry_interval_ms = 100\n"
                                       "snapshot_min_free_bytes = 1048576")
    disk = tmpfs(srv.dir / "journal", "16m")
    srv.start()
    filler = fill(disk)
    with open(filler, "r+b") as f:               # leave 768 KiB: room for commits, not for a snapshot
        f.truncate(os.path.getsize(filler) - (768 << 10))
    t = Trader(srv)
    for _ in range(60):                          # three periodic snapshots due
        assert t.order()
    deadline = 50
    while metric(get(srv, "/metrics")[1], "te_snapshots_skipped_total") < 1 and deadline:
        t.order()
        deadline -= 1
    assert metric(get(srv, "/metrics")[1], "te_snapshots_skipped_total") >= 1
    assert not list((disk / "snapshots").glob("*.tmp"))
    assert "skipped" in srv.output()
    wait_ready(srv, True)
    for _ in range(5):
        assert t.order()
    assert srv.terminate() == 0
    assert "Traceback" not in srv.output()
    assert not list((disk / "snapshots").glob("*.tmp"))
    srv.start()                                  # nothing lost: recovered from the journal alone
    assert open_orders(srv) == t.acked


def test_server_when_disk_full_then_resumes_once_a_page_is_free_and_stops_cleanly(server_factory, tmpfs):
    srv, t, disk, filler = halted_by_full_disk(server_factory, tmpfs)
    with open(filler, "r+b") as f:               # 256 KiB free again: far less than the old 1 MiB probe
        f.truncate(os.path.getsize(filler) - (256 << 10))
    wait_ready(srv, True)
    assert t.order()
    fill(disk)                                   # full again: the shutdown snapshot cannot be written
    assert srv.terminate() == 0                  # skipped (or refused while halted), never a traceback
    assert "Traceback" not in srv.output()
