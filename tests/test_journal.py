"""The journal: round trip, damage detection (checksum, chain, gaps), map growth, refusal to
start on a damaged journal, and the verify/stats tool on a journal made by a real server."""
import struct
import subprocess
import sys

import lmdb
import numpy as np
import pytest

from engine.journal import Journal, JournalError
from protocol.codes import CommandKind
from protocol.records import COMMAND, EVENT
from tests.server_proc import ROOT


def batch(first, n):
    cmds = np.zeros(n, dtype=COMMAND.dtype)
    cmds["seq"] = np.arange(first, first + n)
    cmds["kind"] = CommandKind.EXPIRE
    cmds["ts_ns"] = 1_000 + cmds["seq"]
    events = np.zeros(n // 2, dtype=EVENT.dtype)
    events["seq"] = cmds["seq"][: n // 2]
    return cmds, events


def test_append_when_reopened_then_batches_read_back_verified(tmp_path):
    j = Journal(str(tmp_path / "j"))
    for first in (1, 5, 12):
        j.append(*batch(first, {1: 4, 5: 7, 12: 3}[first]))
    j.close()
    j = Journal(str(tmp_path / "j"))
    got = list(j.batches())
    assert [int(c["seq"][0]) for c, _ in got] == [1, 5, 12] and j.last_seq == 14
    assert sum(len(e) for _, e in got) == 2 + 3 + 1
    with pytest.raises(JournalError, match="starts at seq 16"):
        j.append(*batch(16, 2))                 # a gap is refused before anything is written


def damaged_journal(path, seq, damage):
    """Three batches of three commands (seqs 1, 4, 7), then record `seq` damaged: one bit
    flipped ("flip"), or re-digested so that it is consistent but does not chain ("chain")."""
    j = Journal(str(path))
    for first in (1, 4, 7):
        j.append(*batch(first, 3))
    j.close()
    env = lmdb.open(str(path), map_size=1 << 30)
    with env.begin(write=True) as txn:
        key = struct.pack(">Q", seq)
        value = bytearray(txn.get(key))
        if damage == "flip":
            value[100] ^= 1
        else:
            import hashlib
            value[8:24] = bytes(16)
            value[-16:] = hashlib.blake2b(bytes(value[:-16]), digest_size=16).digest()
        txn.put(key, bytes(value))
    env.close()


@pytest.mark.parametrize("damage", ["flip", "chain"])
def test_batches_when_record_damaged_then_error_names_its_seq(tmp_path, damage):
    damaged_journal(tmp_path / "j", 4, damage)
    with pytest.raises(JournalError) as e:
        list(Journal(str(tmp_path / "j")).batches())
    assert e.value.seq == 4 and ("checksum" in str(e.value) or "chain" in str(e.value))



def test_read_from_when_seq_starts_a_record_then_reads_from_that_record_not_the_journals_start(tmp_path):
    """A reader resuming at a record's first seq (surveil --follow, every cycle) starts at that record: with
    an earlier record damaged it reads on (it used to read, and check, the journal again from its start)."""
    damaged_journal(tmp_path / "j", 1, "flip")
    j = Journal(str(tmp_path / "j"), readonly=True)
    assert [int(c["seq"][0]) for c, _ in j.read_from(4)] == [4, 7]
    assert [int(c["seq"][0]) for c, _ in j.read_from(7)] == [7]
    assert [int(c["seq"][0]) for c, _ in j.read_from(5)] == [4, 7]      # the record containing seq 5
    with pytest.raises(JournalError) as e:
        list(j.read_from(2))
    assert e.value.seq == 1

def test_append_when_map_full_then_grows_and_loses_nothing(tmp_path):
    j = Journal(str(tmp_path / "j"), map_size=64 << 10)
    first = 1
    for _ in range(40):
        j.append(*batch(first, 50))             # ~7 KB a batch: far past 64 KiB
        first += 50
    assert j.map_size > 64 << 10
    assert sum(len(c) for c, _ in j.batches()) == 2000


def test_server_when_journal_damaged_then_refuses_to_start(server_factory):
    srv = server_factory().start()
    srv.kill9()                                 # an empty journal is fine; write into it by hand:
    j = Journal(str(srv.dir / "journal"))
    j.append(*batch(1, 3))
    j.close()
    env = lmdb.open(str(srv.dir / "journal"), map_size=1 << 30)
    with env.begin(write=True) as txn:
        value = bytearray(txn.get(struct.pack(">Q", 1)))
        value[50] ^= 0xFF
        txn.put(struct.pack(">Q", 1), bytes(value))
    env.close()
    with pytest.raises(RuntimeError, match="exited"):
        srv.start(timeout=10)
    assert "checksum mismatch" in srv.output()


def test_tool_when_run_on_server_journal_then_stats_and_verify(server):
    from tests.test_server_session import Raw
    from protocol.codes import Side
    from protocol.wire import MsgType
    a = Raw(server.port)
    a.logon(1)
    for clid in range(1, 11):
        a.order(clid, Side.SELL, 1, 100 + clid)
    for _ in range(10):
        a.until(MsgType.ACCEPTED)
    path = str(server.dir / "journal")
    run = lambda *args: subprocess.run([sys.executable, "-m", "engine.cli", "journal", *args], cwd=ROOT,
                                       capture_output=True, text=True, timeout=60)
    v = run("verify", path)                     # read-only, while the server runs
    assert v.returncode == 0 and v.stdout.startswith("ok: ")
    n = int(v.stdout.split()[1])                # the 10 orders, plus any EXPIRE timer commands
    assert n >= 10
    s = run("stats", path)
    stats = dict(line.split(None, 1) for line in s.stdout.splitlines())
    assert s.returncode == 0 and int(stats["commands"]) >= n            # the live server keeps writing
    assert stats["seq"] == f"1..{stats['commands']}"


def test_tool_when_journal_damaged_then_every_action_refuses_naming_the_seq(tmp_path, capsys):
    from engine import journal_tool
    damaged_journal(tmp_path / "j", 7, "flip")
    for argv in (["verify"], ["stats"], ["dump"], ["dump", "--format", "jsonl"], ["audit", "1"]):
        path = str(tmp_path / "j")
        assert journal_tool.main([argv[0], path] + argv[1:]) == 1, argv
        assert "first bad seq 7" in capsys.readouterr().out
